/*
 * obsctl.c: entry point of obsctl, the reader of obsd stores and live daemons.
 *
 * Only dispatch lives here; each subcommand is one cmd_<name>.c (commands.h).
 */
#include <stdio.h>
#include <string.h>

#include "cli/commands.h"

struct command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
};

static const struct command commands[] = {
    {"runs",     cmd_runs,     "list the runs of a store in start order"},
    {"show",     cmd_show,     "print a run's latest, final or n-th snapshot"},
    {"get",      cmd_get,      "print one metric's time series over a run"},
    {"export",   cmd_export,   "export a run as JSON or CSV"},
    {"status",   cmd_status,   "live state of a running obsd: producers, rings, drops"},
    {"watch",    cmd_watch,    "live refreshing view of a running obsd"},
    {"tokenize", cmd_tokenize, "count tokens of JSON lines with a tokenizer.json"},
    {"budget",   cmd_budget,   "FLOP budget summaries of a run"},
    {"compare",  cmd_compare,  "speedup and efficiency table over a sweep of runs"},
    {"report",   cmd_report,   "a run as a self-contained HTML page (tables, charts)"},
    {"metrics",  cmd_metrics,  "a run in the OpenMetrics format, printed or served over HTTP"},
};

static void usage(FILE *out)
{
    fprintf(out, "usage: obsctl COMMAND [OPTIONS]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(out, "  %-9s %s\n", commands[i].name, commands[i].summary);
    fprintf(out, "\n'obsctl COMMAND --help' describes each command; see also obsctl(1).\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("obsctl %s\n", OBSD_VERSION);
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name))
            return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "obsctl: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
