/*
 * cmd_show.c: 'obsctl show', one snapshot of a run: the latest by default,
 * the final one, or the one persisted with a given seq.
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli_store.h"
#include "cli/commands.h"

static void show_usage(FILE *out)
{
    fprintf(out,
        "usage: obsctl show [RUN] [--seq N | --final] [--store DIR] [--json]\n"
        "\n"
        "Prints one snapshot of RUN (default: the most recently started run): the\n"
        "latest persisted one, the final one (--final) or the one persisted with\n"
        "seq N (--seq, rebuilt from the history). The table lists the counters and\n"
        "the series with count, p50, p90, p99 and max; a series marked exact has\n"
        "percentiles computed from raw values. State notes follow the header: an\n"
        "incomplete drain (state complete with tokenizations pending), an\n"
        "interrupted run, or a run without a final snapshot.\n"
        "\n"
        "  --seq N      the snapshot persisted with seq N\n"
        "  --final      the final snapshot (an error if the run has none)\n"
        CLI_STORE_HELP
        "  --json       the snapshot in its JSON form (see obsctl(1)); state notes\n"
        "               then go to standard error\n"
        "  --help       this text\n"
        "\n"
        "Exit status: 0, 1 when the store, run or snapshot cannot be read, 2 for\n"
        "bad arguments.\n");
}

static void print_snapshot(const struct snapshot *s, const struct store_run_info *r, const char *which)
{
    char when[64], num[6][32];
    cli_format_time(s->timestamp_ns, when, sizeof when);
    printf("run %s", s->run);
    if (strcmp(r->name, r->id))
        printf(" (%s)", r->name);
    printf("  seq %" PRIu64 "  %s  state %s  [%s]\n", s->seq, when, obsd_run_state_name(s->state), which);
    printf("pending tasks %" PRIu64 "\n", s->n_pending_tasks);
    cli_print_state_notes(stdout, "", s->state, s->n_pending_tasks,
                          r->has_final && r->final_seq == s->seq, r->has_final);

    size_t w = 24;
    for (size_t i = 0; i < s->n_counters + s->n_series; i++) {
        size_t nw = obsd_utf8_width(i < s->n_counters ? s->counters[i].name : s->series[i - s->n_counters].name);
        if (nw > w)
            w = nw;
    }
    int wi = (int)w;

    if (s->n_counters) {
        printf("\n%-*s %16s\n", wi, "COUNTER", "VALUE");
        for (size_t i = 0; i < s->n_counters; i++) {
            const struct snap_counter *c = &s->counters[i];
            if (c->is_float)
                cli_format_number(c->fvalue, num[0], sizeof num[0]);
            else
                snprintf(num[0], sizeof num[0], "%" PRId64, c->ivalue);
            cli_print_padded(stdout, c->name, w);
            printf(" %16s\n", num[0]);
        }
    }
    if (s->n_series) {
        printf("\n%-*s %12s %12s %12s %12s %12s %s\n", wi, "SERIES", "COUNT", "P50", "P90", "P99",
               "MAX", "");
        for (size_t i = 0; i < s->n_series; i++) {
            const struct snap_series *sr = &s->series[i];
            snprintf(num[0], sizeof num[0], "%" PRIu64, sr->count);
            cli_format_number(sr->percentiles[7], num[1], sizeof num[1]);
            cli_format_number(sr->percentiles[4], num[2], sizeof num[2]);
            cli_format_number(sr->percentiles[1], num[3], sizeof num[3]);
            cli_format_number(sr->max, num[4], sizeof num[4]);
            cli_print_padded(stdout, sr->name, w);
            printf(" %12s %12s %12s %12s %12s %s\n", num[0], num[1], num[2], num[3], num[4],
                   sr->exact ? "exact" : "");
        }
    }
    if (!s->n_counters && !s->n_series)
        printf("\n(no metrics)\n");
    const char *key;
    json_t *value;
    bool first = true;
    json_object_foreach(s->sections, key, value) {
        if (first)
            printf("\nSECTIONS (full content: --json)\n");
        first = false;
        char *text = json_dumps(value, JSON_COMPACT | JSON_SORT_KEYS);
        size_t len = text ? strlen(text) : 0;
        printf("%s: %.*s%s\n", key, len > 160 ? 160 : (int)len, text ? text : "",
               len > 160 ? " ..." : "");
        free(text);
    }
    /* where the readable form of a section is */
    if (json_object_get(s->sections, "budget"))
        printf("budget table: obsctl budget %s\n", s->run);
    if (!first)
        printf("charts and every section as a page: obsctl report %s --output %s.html\n", s->run,
               s->run);
}

int cmd_show(int argc, char **argv)
{
    static const struct option options[] = {
        {"store", required_argument, NULL, 's'},
        {"seq", required_argument, NULL, 'n'},
        {"final", no_argument, NULL, 'f'},
        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        {0, 0, 0, 0},
    };
    struct cli_args a = {.cmd = "show", .usage = show_usage};
    const char *run_id;
    bool as_json = false, final = false, have_seq = false;
    uint64_t seq = 0;
    int opt;
    while ((opt = cli_next_option(&a, argc, argv, options)) > 0) {
        switch (opt) {
        case 'n':
            if (!cli_parse_u64(optarg, &seq)) {
                fprintf(stderr, "obsctl show: --seq needs a non-negative integer, not '%s'\n", optarg);
                return 2;
            }
            have_seq = true;
            break;
        case 'f': final = true; break;
        case 'j': as_json = true; break;
        }
    }
    if (opt < 0)
        return a.status;
    if (have_seq && final) {
        fprintf(stderr, "obsctl show: --seq and --final exclude each other\n");
        return 2;
    }
    if (cli_run_operand("show", argc, argv, &run_id))
        return 2;

    struct store_run_info r;
    int rc;
    struct store *st = cli_store_open_run("show", a.store, run_id, &r, &rc);
    if (!st)
        return rc;
    struct snapshot *s = NULL;
    const char *which;
    if (final) {
        rc = store_final(st, r.id, &s);
        which = "final";
    } else if (have_seq) {
        rc = store_snapshot_at(st, r.id, seq, &s);
        which = r.has_final && r.final_seq == seq ? "final" : "at seq";
    } else {
        rc = store_latest(st, r.id, &s);
        which = r.has_final ? "latest = final" : "latest";
    }
    if (rc) {
        rc = cli_store_failed("show", st);
        store_close(st);
        return rc;
    }
    store_close(st);

    if (as_json) {
        json_t *j = snapshot_to_json(s);
        if (!j)
            fprintf(stderr, "obsctl show: out of memory\n");
        rc = cli_print_json(stdout, j);
        cli_print_state_notes(stderr, "obsctl show: ", s->state, s->n_pending_tasks,
                              r.has_final && r.final_seq == s->seq, r.has_final);
    } else {
        print_snapshot(s, &r, which);
    }
    snapshot_free(s);
    return rc;
}
