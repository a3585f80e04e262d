/*
 * cmd_get.c: 'obsctl get', one metric's time series over a run.
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli_store.h"
#include "cli/commands.h"

static void get_usage(FILE *out)
{
    fprintf(out,
        "usage: obsctl get RUN METRIC [--store DIR] [--json]\n"
        "\n"
        "Prints the time series of METRIC over RUN, one line per point: the store\n"
        "keeps a point when the metric changed, at most one per second of snapshot\n"
        "time, and at the final snapshot. Each line has seq, time (UTC) and, for a\n"
        "counter, its value; for a series, count, min, p50, p99 and max. RUN may\n"
        "be 'last' for the most recently started run. If a series has the name of\n"
        "a counter too, the series is shown. A name whose bytes that are not UTF-8\n"
        "show as U+FFFD (as --json output prints them) is found as printed, when it\n"
        "stands for one metric of the run's latest snapshot.\n"
        "\n"
        CLI_STORE_HELP
        "  --json       one JSON object: run, metric, type and points\n"
        "  --help       this text\n"
        "\n"
        "Exit status: 0, 1 when the store, run or metric cannot be read, 2 for bad\n"
        "arguments.\n");
}

struct get_ctx {
    bool as_json, header_done;
    json_t *points;
    const char *type;
};

static int print_point(const struct store_point *p, void *arg)
{
    struct get_ctx *c = arg;
    char when[64], num[5][32];
    c->type = p->is_series ? "series" : "counter";
    if (c->as_json) {
        json_array_append_new(c->points, cli_point_json(p));
        return 0;
    }
    cli_format_time(p->timestamp_ns, when, sizeof when);
    if (!c->header_done) {
        if (p->is_series)
            printf("%8s  %-24s %12s %12s %12s %12s %12s\n", "SEQ", "TIME", "COUNT", "MIN", "P50",
                   "P99", "MAX");
        else
            printf("%8s  %-24s %16s\n", "SEQ", "TIME", "VALUE");
        c->header_done = true;
    }
    if (p->is_series) {
        snprintf(num[0], sizeof num[0], "%" PRIu64, p->count);
        cli_format_number(p->min, num[1], sizeof num[1]);
        cli_format_number(p->pct[STORE_POINT_P50], num[2], sizeof num[2]);
        cli_format_number(p->pct[STORE_POINT_P99], num[3], sizeof num[3]);
        cli_format_number(p->max, num[4], sizeof num[4]);
        printf("%8" PRIu64 "  %-24s %12s %12s %12s %12s %12s%s\n", p->seq, when, num[0], num[1],
               num[2], num[3], num[4], p->exact ? "  exact" : "");
    } else {
        if (p->is_float)
            cli_format_number(p->fvalue, num[0], sizeof num[0]);
        else
            snprintf(num[0], sizeof num[0], "%" PRId64, p->ivalue);
        printf("%8" PRIu64 "  %-24s %16s\n", p->seq, when, num[0]);
    }
    return 0;
}

/* The metric of the run's latest snapshot whose name, its bytes that are
 * not UTF-8 replaced by U+FFFD as JSON output prints it, is shown: so that
 * a name copied from `show --json` can be passed back. Returns how many
 * distinct stored names match (*raw: a malloc'd copy of the first). */
static int find_repaired_name(struct store *st, const char *run_id, const char *shown, char **raw)
{
    *raw = NULL;
    if (!strstr(shown, OBSD_UTF8_REPLACEMENT))
        return 0;
    struct snapshot *s;
    if (store_latest(st, run_id, &s) != STORE_OK)
        return 0;
    int n = 0;
    for (size_t i = 0; i < s->n_counters + s->n_series; i++) {
        const char *name = i < s->n_counters ? s->counters[i].name : s->series[i - s->n_counters].name;
        if (obsd_utf8_valid(name, strlen(name)) || (*raw && !strcmp(*raw, name)))
            continue;
        char *fixed = obsd_utf8_repair(name);
        if (fixed && !strcmp(fixed, shown)) {
            if (!n++)
                *raw = strdup(name);
        }
        free(fixed);
    }
    snapshot_free(s);
    return n;
}

int cmd_get(int argc, char **argv)
{
    static const struct option options[] = {
        {"store", required_argument, NULL, 's'},
        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        {0, 0, 0, 0},
    };
    struct cli_args a = {.cmd = "get", .usage = get_usage};
    struct get_ctx c = {0};
    int opt;
    while ((opt = cli_next_option(&a, argc, argv, options)) > 0)
        if (opt == 'j')
            c.as_json = true;
    if (opt < 0)
        return a.status;
    if (argc - optind != 2)
        return cli_usage_error("get", "%s", argc - optind < 2 ? "needs RUN and METRIC" : "too many arguments");
    const char *run_id = argv[optind], *metric = argv[optind + 1];
    struct store_run_info r;
    int rc;
    struct store *st = cli_store_open_run("get", a.store, run_id, &r, &rc);
    if (!st)
        return rc;
    if (c.as_json)
        c.points = json_array();
    rc = store_metric_series(st, r.id, metric, print_point, &c);
    char *raw = NULL;
    if (rc == STORE_NOT_FOUND) {
        int n = find_repaired_name(st, r.id, metric, &raw);
        if (n == 1 && raw) {
            metric = raw;
            rc = store_metric_series(st, r.id, metric, print_point, &c);
        } else if (n > 1) {
            fprintf(stderr, "obsctl get: '%s' stands for %d metrics of run '%s' whose names are not UTF-8; "
                            "pass the name's own bytes\n", metric, n, r.id);
            free(raw);
            store_close(st);
            json_decref(c.points);
            return 1;
        }
    }
    if (rc) {
        rc = cli_store_failed("get", st);
        free(raw);
        store_close(st);
        json_decref(c.points);
        return rc;
    }
    store_close(st);
    if (c.as_json) {
        json_t *o = json_pack("{s:o,s:o,s:s,s:o}", "run", obsd_json_text(r.id), "metric", obsd_json_text(metric),
                              "type", c.type ? c.type : "counter", "points", c.points);
        if (!o)
            fprintf(stderr, "obsctl get: out of memory\n");
        rc = cli_print_json(stdout, o);
    }
    free(raw);
    cli_print_state_notes(stderr, "obsctl get: ", r.state, r.n_pending_tasks, false, r.has_final);
    return rc;
}
