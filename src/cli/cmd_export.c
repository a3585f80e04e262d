/*
 * cmd_export.c: 'obsctl export', a whole run as JSON or CSV.
 *
 * JSON: one object {"schema_version", "run": {...as obsctl runs --json, less
 * last_timestamp_ns and incomplete_drain}, "final": snapshot or null,
 * "latest": snapshot, "time_series": {metric: {"type", "points": [...as
 * obsctl get --json]}}} and, with --snapshots, "snapshots": every persisted
 * snapshot rebuilt from the history.
 * CSV: a header line, then one row per (metric, seq) at which the metric
 * changed, metric by metric in first-seen order, seqs ascending.
 */
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli_store.h"
#include "cli/commands.h"

static void export_usage(FILE *out)
{
    fprintf(out,
        "usage: obsctl export RUN --format json|csv [--snapshots] [--output FILE] [--store DIR]\n"
        "\n"
        "Writes a whole run to standard output (or FILE). RUN may be 'last'.\n"
        "  json  one object: \"run\" (the run record), \"final\" (the final snapshot\n"
        "        or null), \"latest\" (the latest snapshot) and \"time_series\" (per\n"
        "        metric its type and every point at which it changed: seq,\n"
        "        timestamp_ns, value, or count/total/min/max/percentiles 99.9, 99.0,\n"
        "        90.0, 50.0/exact). --snapshots adds \"snapshots\", every persisted\n"
        "        snapshot rebuilt from the history.\n"
        "  csv   header then one row per time series point (metric, seq), as for get:\n"
        "        run,seq,timestamp_ns,metric,type,value,count,total,min,max,\n"
        "        p50,p90,p99,p99.9,exact (empty cells where a column does not apply).\n"
        "\n"
        "  --format F   json or csv (required)\n"
        "  --snapshots  json only: include every persisted snapshot\n"
        "  --output F   write to F instead of standard output\n"
        CLI_STORE_HELP
        "  --help       this text\n"
        "\n"
        "Exit status: 0, 1 when the store or run cannot be read or FILE written, 2\n"
        "for bad arguments.\n");
}

struct export_ctx {
    FILE *out;
    const char *run;
    json_t *series;        /* json: metric -> {type, points} */
    json_t *renamed;       /* json: the keys of series that are not their metric's name */
    char *name;            /* json: the metric of the points being added, */
    json_t *points;        /* and its points array */
};

/* Export failed: out of memory while building the JSON (the scan stops
 * with it; 1 stops the CSV scan on a write error). */
#define EXPORT_NO_MEMORY 2

/* The points array of the time_series entry of metric name (added when
 * new), or NULL when out of memory. The key is the name as obsd_json_text
 * writes it. Two metrics never share an entry: when a name is not UTF-8 and
 * its key is taken, or a name's key is taken by an entry under another name,
 * it gets the first free one of key_2, key_3, ... */
static json_t *series_points(struct export_ctx *c, const char *name, bool is_series)
{
    bool repair = !obsd_utf8_valid(name, strlen(name));
    char *base = repair ? obsd_utf8_repair(name) : strdup(name);
    if (!base)
        return NULL;
    json_t *m = json_object_get(c->series, base);
    if (m && !repair && !json_object_get(c->renamed, base)) {
        free(base);
        return json_object_get(m, "points");   /* a series and a counter of one name */
    }
    size_t len = strlen(base) + 16;
    char *key = malloc(len);
    if (!key) {
        free(base);
        return NULL;
    }
    snprintf(key, len, "%s", base);
    for (unsigned k = 2; json_object_get(c->series, key); k++)
        snprintf(key, len, "%s_%u", base, k);
    free(base);
    json_t *points = json_array();
    int bad = json_object_set_new(c->series, key,
                                  json_pack("{s:s,s:o}", "type", is_series ? "series" : "counter", "points", points));
    if (!bad && strcmp(key, name))
        bad = json_object_set_new(c->renamed, key, json_true());
    free(key);
    return bad ? NULL : points;
}

static int json_point(const struct store_point *p, void *arg)
{
    struct export_ctx *c = arg;
    /* the store gives the points metric by metric */
    if (!c->name || strcmp(c->name, p->name)) {
        free(c->name);
        c->name = strdup(p->name);
        c->points = c->name ? series_points(c, p->name, p->is_series) : NULL;
        if (!c->points)
            return EXPORT_NO_MEMORY;
    }
    return json_array_append_new(c->points, cli_point_json(p)) ? EXPORT_NO_MEMORY : 0;
}

/* A CSV field: quoted when needed, and as obsd_json_text writes it, so that
 * the file is UTF-8 and names read as in the JSON export. */
static void csv_field(FILE *out, const char *s)
{
    char *repaired = NULL;
    if (!obsd_utf8_valid(s, strlen(s)) && (repaired = obsd_utf8_repair(s)))
        s = repaired;
    if (!strpbrk(s, ",\"\n\r")) {
        fputs(s, out);
        free(repaired);
        return;
    }
    fputc('"', out);
    for (const char *q = s; *q; q++) {
        if (*q == '"')
            fputc('"', out);
        fputc(*q, out);
    }
    fputc('"', out);
    free(repaired);
}

static void csv_num(FILE *out, double v)
{
    fputc(',', out);
    if (isfinite(v))
        fprintf(out, "%.17g", v);
}

static int csv_point(const struct store_point *p, void *arg)
{
    struct export_ctx *c = arg;
    csv_field(c->out, c->run);
    fprintf(c->out, ",%" PRIu64 ",%" PRIu64 ",", p->seq, p->timestamp_ns);
    csv_field(c->out, p->name);
    if (p->is_series) {
        fprintf(c->out, ",series,,%" PRIu64, p->count);
        csv_num(c->out, p->total);
        csv_num(c->out, p->min);
        csv_num(c->out, p->max);
        csv_num(c->out, p->pct[STORE_POINT_P50]);
        csv_num(c->out, p->pct[STORE_POINT_P90]);
        csv_num(c->out, p->pct[STORE_POINT_P99]);
        csv_num(c->out, p->pct[STORE_POINT_P999]);
        fprintf(c->out, ",%s\n", p->exact ? "true" : "false");
    } else if (p->is_float) {
        fputs(",counter", c->out);
        csv_num(c->out, p->fvalue);
        fputs(",,,,,,,,,\n", c->out);
    } else {
        fprintf(c->out, ",counter,%" PRId64 ",,,,,,,,,\n", p->ivalue);
    }
    return ferror(c->out) ? 1 : 0;
}

/* The record of obsctl runs --json without last_timestamp_ns and
 * incomplete_drain, which exports have never carried. */
static json_t *run_record(const struct store_run_info *r)
{
    json_t *o = cli_run_json(r);
    json_object_del(o, "last_timestamp_ns");
    json_object_del(o, "incomplete_drain");
    return o;
}

/* Sets o[key] = v (stolen); a NULL v (out of memory) sets *bad. */
static void put(json_t *o, const char *key, json_t *v, bool *bad)
{
    if (json_object_set_new(o, key, v))
        *bad = true;
}

static int export_json(struct store *st, const struct store_run_info *r, FILE *out, bool all)
{
    struct snapshot *s = NULL;
    bool bad = false;
    json_t *o = json_pack("{s:i,s:o}", "schema_version", OBSD_SNAPSHOT_SCHEMA_VERSION, "run", run_record(r));
    if (!o)
        goto no_memory;
    int rc = store_final(st, r->id, &s);
    if (rc == STORE_OK) {
        put(o, "final", snapshot_to_json(s), &bad);
        snapshot_free(s);
    } else if (rc == STORE_NOT_FOUND) {
        put(o, "final", json_null(), &bad);
    } else {
        goto fail;
    }
    if ((rc = store_latest(st, r->id, &s)))
        goto fail;
    put(o, "latest", snapshot_to_json(s), &bad);
    snapshot_free(s);
    struct export_ctx c = {.out = out, .run = r->id, .series = json_object(), .renamed = json_object()};
    put(o, "time_series", c.series, &bad);
    if (bad || !c.renamed) {
        json_decref(c.renamed);
        goto no_memory;
    }
    rc = store_metric_series(st, r->id, NULL, json_point, &c);
    free(c.name);
    json_decref(c.renamed);
    if (rc == EXPORT_NO_MEMORY)
        goto no_memory;
    if (rc && rc != STORE_NOT_FOUND)
        goto fail;
    if (all) {
        uint64_t *seqs;
        size_t n;
        if ((rc = store_list_seqs(st, r->id, &seqs, &n)))
            goto fail;
        json_t *arr = json_array();
        put(o, "snapshots", arr, &bad);
        for (size_t i = 0; i < n && !bad; i++) {
            if ((rc = store_snapshot_at(st, r->id, seqs[i], &s))) {
                free(seqs);
                goto fail;
            }
            bad = json_array_append_new(arr, snapshot_to_json(s)) != 0;
            snapshot_free(s);
        }
        free(seqs);
        if (bad)
            goto no_memory;
    }
    rc = json_dumpf(o, out, JSON_INDENT(2)) || fputc('\n', out) == EOF;
    json_decref(o);
    if (rc)
        fprintf(stderr, "obsctl export: cannot write the output\n");
    return rc ? 1 : 0;
fail:
    json_decref(o);
    return cli_store_failed("export", st);
no_memory:
    json_decref(o);
    fprintf(stderr, "obsctl export: out of memory\n");
    return 1;
}

int cmd_export(int argc, char **argv)
{
    static const struct option options[] = {
        {"store", required_argument, NULL, 's'},
        {"format", required_argument, NULL, 'f'},
        {"output", required_argument, NULL, 'o'},
        {"snapshots", no_argument, NULL, 'a'},
        {"help", no_argument, NULL, 'h'},
        {0, 0, 0, 0},
    };
    struct cli_args a = {.cmd = "export", .usage = export_usage};
    const char *format = NULL, *output = NULL;
    bool all = false;
    int opt;
    while ((opt = cli_next_option(&a, argc, argv, options)) > 0) {
        switch (opt) {
        case 'f': format = optarg; break;
        case 'o': output = optarg; break;
        case 'a': all = true; break;
        }
    }
    if (opt < 0)
        return a.status;
    if (!format || (strcmp(format, "json") && strcmp(format, "csv"))) {
        fprintf(stderr, "obsctl export: --format must be json or csv%s%s%s\n", format ? ", not '" : "",
                format ? format : "", format ? "'" : "");
        return 2;
    }
    if (all && strcmp(format, "json")) {
        fprintf(stderr, "obsctl export: --snapshots applies to --format json only\n");
        return 2;
    }
    if (argc - optind != 1)
        return cli_usage_error("export", "%s", argc == optind ? "needs RUN" : "too many arguments");
    const char *run_id = argv[optind];
    struct store_run_info r;
    int rc;
    struct store *st = cli_store_open_run("export", a.store, run_id, &r, &rc);
    if (!st)
        return rc;
    FILE *out = stdout;
    if (output && !(out = fopen(output, "w"))) {
        perror(output);
        store_close(st);
        return 1;
    }
    if (!strcmp(format, "json")) {
        rc = export_json(st, &r, out, all);
    } else {
        fputs("run,seq,timestamp_ns,metric,type,value,count,total,min,max,p50,p90,p99,p99.9,exact\n", out);
        struct export_ctx c = {.out = out, .run = r.id};
        int src = store_metric_series(st, r.id, NULL, csv_point, &c);
        if (src == 1)
            rc = 1, fprintf(stderr, "obsctl export: cannot write the output\n");
        else if (src)
            rc = cli_store_failed("export", st);
    }
    store_close(st);
    if (out != stdout && fclose(out)) {
        perror(output);
        rc = 1;
    }
    cli_print_state_notes(stderr, "obsctl export: ", r.state, r.n_pending_tasks, false, r.has_final);
    return rc;
}
