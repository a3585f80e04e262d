/*
 * cmd_budget.c: 'obsctl budget', the FLOP budget contexts of a run and their
 * wall = backend + overhead + residual split, read from the store (no daemon
 * needed): the final snapshot of the run if it has one, else its latest.
 */
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "budget/budget.h"
#include "cli/cli_store.h"
#include "cli/commands.h"
#include "daemon/config.h"
#include "publisher/store.h"

static void budget_usage(FILE *out)
{
    fprintf(out,
        "usage: obsctl budget [RUN] [--store DIR] [--config FILE] [--json]\n"
        "\n"
        "Prints the FLOP budget contexts of RUN (a run id or run name; default the\n"
        "most recent run of the store): per context its namespace, FLOPs used of\n"
        "the budget, whether it was exhausted, and the timing split wall = backend\n"
        "(kernels) + overhead (framework) + residual (participant code), then the\n"
        "session's per-op and per-namespace totals. Open contexts are marked '*'\n"
        "and show their state as of their last progress record. Reads the run's\n"
        "final snapshot if it has one, else its latest; no daemon needed.\n"
        "  --store DIR    store directory (default: store_dir of obsd.conf, the\n"
        "                 OBSD_STORE_DIR environment, else /var/lib/obsd)\n"
        "  --config FILE  obsd.conf to take store_dir from (default /etc/obsd/obsd.conf\n"
        "                 when it exists)\n"
        "  --json         print {\"contexts\":[...],\"session\":{...}} instead of tables\n"
        "Exit status: 0, 1 when the store or run cannot be read, 2 for bad arguments.\n");
}

/* store_dir from --store, else obsd.conf and OBSD_<KEY> like obsd(8). */
static int resolve_store(char *out, size_t outlen, const char *config, const char *store)
{
    struct obsd_collector_config cfg;
    char err[1024];
    memset(&cfg, 0, sizeof cfg);
    cfg.store_dir = "/var/lib/obsd";
    int rc = 0;
    if (!config && access(OBSD_CONFIG_DEFAULT_PATH, R_OK) == 0)
        config = OBSD_CONFIG_DEFAULT_PATH;
    if (!store && ((config && obsd_config_load(&cfg, config, err, sizeof err) < 0) ||
                   obsd_config_load_env(&cfg, NULL, err, sizeof err) < 0)) {
        fprintf(stderr, "obsctl budget: %s\n", err);
        rc = 2;
    } else {
        snprintf(out, outlen, "%s", store ? store : cfg.store_dir);
    }
    obsd_config_free_strings();
    return rc;
}

/* RUN is a run id, or else the name of the most recent run so named. */
static int find_run(struct store *st, const char *run, struct store_run_info *info)
{
    if (!run)
        return store_last_run(st, info);
    int rc = store_find_run(st, run, info);
    if (rc != STORE_NOT_FOUND)
        return rc;
    struct store_run_info *runs = NULL;
    size_t n = 0;
    rc = store_list_runs(st, &runs, &n);
    if (rc != STORE_OK)
        return rc;
    rc = STORE_NOT_FOUND;
    for (size_t i = n; i-- > 0;) {
        if (strcmp(runs[i].name, run) == 0) {
            *info = runs[i];
            rc = STORE_OK;
            break;
        }
    }
    free(runs);
    return rc;
}

int cmd_budget(int argc, char **argv)
{
    static const struct option opts[] = {
        {"store", required_argument, NULL, 's'},
        {"config", required_argument, NULL, 'c'},
        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *store_opt = NULL, *config = NULL;
    bool as_json = false;
    int ch;
    optind = 1;
    opterr = 0;
    while ((ch = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        switch (ch) {
        case 's':
            store_opt = optarg;
            break;
        case 'c':
            config = optarg;
            break;
        case 'j':
            as_json = true;
            break;
        case 'h':
            budget_usage(stdout);
            return 0;
        default:
            return cli_bad_option("budget", ch, optopt, argv, optind);
        }
    }
    if (argc - optind > 1) {
        fprintf(stderr, "obsctl budget: one RUN at most, got '%s' and '%s'\n", argv[optind], argv[optind + 1]);
        return 2;
    }
    const char *run = optind < argc ? argv[optind] : NULL;
    char dir[4096];
    int rc = resolve_store(dir, sizeof dir, config, store_opt);
    if (rc)
        return rc;

    char err[1024];
    struct store *st = store_open(dir, 0, false, true, err, sizeof err);
    if (!st) {
        fprintf(stderr, "obsctl budget: cannot open store %s: %s\n", dir, err);
        return 1;
    }
    struct store_run_info info;
    struct snapshot *snap = NULL;
    rc = find_run(st, run, &info);
    if (rc == STORE_NOT_FOUND) {
        fprintf(stderr, run ? "obsctl budget: no run '%s' in store %s\n" : "obsctl budget: %sno run in store %s\n",
                run ? run : "", dir);
        store_close(st);
        return 1;
    }
    if (rc == STORE_OK)
        rc = info.has_final ? store_final(st, info.id, &snap) : store_latest(st, info.id, &snap);
    if (rc != STORE_OK) {
        fprintf(stderr, "obsctl budget: cannot read run %s: %s\n", run ? run : "(latest)", store_error(st));
        store_close(st);
        return 1;
    }
    store_close(st);

    const json_t *section = json_object_get(snap->sections, "budget");
    int status = 0;
    if (!section) {
        fprintf(stderr, "obsctl budget: run %s has no budget section (it sent no budget records)\n",
                info.id);
        status = 1;
    } else if (as_json) {
        json_t *doc = budget_report_json(section, err, sizeof err);
        if (!doc) {
            fprintf(stderr, "obsctl budget: run %s: %s\n", info.id, err);
            status = 1;
        } else {
            json_dumpf(doc, stdout, JSON_COMPACT | JSON_REAL_PRECISION(17));
            fputc('\n', stdout);
            json_decref(doc);
        }
    } else {
        printf("run %s (%s), %s snapshot %llu, state %s\n\n", info.id, info.name, info.has_final ? "final" : "latest",
               (unsigned long long)snap->seq, obsd_run_state_name(snap->state));
        if (budget_report_print(stdout, section, err, sizeof err) < 0) {
            fprintf(stderr, "obsctl budget: run %s: %s\n", info.id, err);
            status = 1;
        }
    }
    if (snap->state == OBSD_RUN_COMPLETE && snap->n_pending_tasks > 0)
        fprintf(stderr, "obsctl budget: note: run %s completed with %llu tasks pending (incomplete drain)\n", info.id,
                (unsigned long long)snap->n_pending_tasks);
    snapshot_free(snap);
    return status;
}
