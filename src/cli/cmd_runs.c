/*
 * cmd_runs.c: 'obsctl runs', the runs of a store in start order.
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli_store.h"
#include "cli/commands.h"

static void runs_usage(FILE *out)
{
    fprintf(out,
        "usage: obsctl runs [--store DIR] [--json]\n"
        "\n"
        "Lists the runs of the store in start order: run id, state of the last\n"
        "persisted snapshot, start time (UTC), number of persisted snapshots, last\n"
        "seq, whether the final snapshot is written, and a note for runs whose\n"
        "drain was incomplete, that were interrupted or that have no final snapshot.\n"
        "Opens the store read-only; no daemon is needed and a copy of the store\n"
        "directory works the same.\n"
        "\n"
        CLI_STORE_HELP
        "  --json       one JSON array of run objects\n"
        "  --help       this text\n"
        "\n"
        "Exit status: 0, 1 when the store cannot be read, 2 for bad arguments.\n");
}

static void print_table(const struct store_run_info *runs, size_t n)
{
    printf("%-32s %-11s %-24s %9s %9s %-5s %s\n", "RUN", "STATE", "STARTED", "SNAPSHOTS",
           "LAST SEQ", "FINAL", "NOTE");
    for (size_t i = 0; i < n; i++) {
        const struct store_run_info *r = &runs[i];
        char started[64], note[128] = "";
        cli_format_time(r->start_ns, started, sizeof started);
        if (r->state == OBSD_RUN_COMPLETE && r->n_pending_tasks)
            snprintf(note, sizeof note, "incomplete drain: %" PRIu64 " tokenizations pending",
                     r->n_pending_tasks);
        else if (r->state == OBSD_RUN_INTERRUPTED)
            snprintf(note, sizeof note, "interrupted");
        else if (!r->has_final)
            snprintf(note, sizeof note, "no final snapshot yet");
        printf("%-32s %-11s %-24s %9" PRIu64 " %9" PRIu64 " %-5s %s\n", r->id,
               obsd_run_state_name(r->state), started, r->n_snapshots, r->last_seq,
               r->has_final ? "yes" : "no", note);
    }
}

int cmd_runs(int argc, char **argv)
{
    static const struct option options[] = {
        {"store", required_argument, NULL, 's'},
        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        {0, 0, 0, 0},
    };
    struct cli_args a = {.cmd = "runs", .usage = runs_usage};
    bool as_json = false;
    int opt;
    while ((opt = cli_next_option(&a, argc, argv, options)) > 0)
        if (opt == 'j')
            as_json = true;
    if (opt < 0)
        return a.status;
    if (optind < argc)
        return cli_usage_error("runs", "unexpected argument '%s'", argv[optind]);
    char dir[4096]; /* resolved here too: "no runs in DIR" names it */
    int status = cli_store_dir("runs", a.store, dir, sizeof dir);
    if (status)
        return status;
    struct store *st = cli_store_open("runs", dir, &status);
    if (!st)
        return status;
    struct store_run_info *runs;
    size_t n;
    if (store_list_runs(st, &runs, &n)) {
        int rc = cli_store_failed("runs", st);
        store_close(st);
        return rc;
    }
    store_close(st);

    int rc = 0;
    if (as_json) {
        json_t *arr = json_array();
        for (size_t i = 0; i < n; i++)
            json_array_append_new(arr, cli_run_json(&runs[i]));
        rc = cli_print_json(stdout, arr);
    } else if (!n) {
        printf("no runs in %s\n", dir);
    } else {
        print_table(runs, n);
    }
    free(runs);
    return rc;
}
