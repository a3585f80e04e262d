/*
 * cmd_compare.c: 'obsctl compare', the throughput / speedup / efficiency
 * table over a sweep: either runs of a store (their "sched" sections) or a
 * chain_ring results file (--sweep FILE).
 *
 * Runs are grouped into points by their worker count (the number of worker
 * blocks in the sched section), in the order the points first appear; the
 * runs of one point are its repeats. Speedup is each point's mean throughput
 * over the first point's; efficiency is speedup / (workers / first workers)
 * on the workers axis and is not defined on other axes (their "speedup" is
 * the throughput relative to the first point). When the first point is
 * missing, failed, or the run/sweep was interrupted, speedup and efficiency
 * are left out with a note.
 */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "cli/cli_store.h"
#include "cli/commands.h"
#include "sched/sched.h"

struct point {
    char label[64];
    double workers;             /* 0: unknown */
    size_t n;                   /* repeats (runs) with a throughput */
    double *values;
    char error[160];            /* "" when fine */
    bool interrupted;
};

struct table {
    char axis[32];
    size_t n, cap;
    struct point *pts;
    bool interrupted;           /* the whole sweep */
};

static struct point *add_point(struct table *t, const char *label, double workers)
{
    if (t->n == t->cap) {
        t->cap = t->cap ? 2 * t->cap : 8;
        t->pts = realloc(t->pts, t->cap * sizeof *t->pts);
    }
    struct point *p = &t->pts[t->n++];
    memset(p, 0, sizeof *p);
    snprintf(p->label, sizeof p->label, "%s", label);
    p->workers = workers;
    return p;
}

static void add_value(struct point *p, double v)
{
    p->values = realloc(p->values, (p->n + 1) * sizeof *p->values);
    p->values[p->n++] = v;
}

/* ---- sources ---------------------------------------------------------- */

static int load_sweep(const char *path, struct table *t)
{
    json_error_t e;
    json_t *doc = json_load_file(path, 0, &e);
    if (!doc) {
        fprintf(stderr, "obsctl compare: %s: %s (line %d)\n", path, e.text, e.line);
        return 1;
    }
    json_t *ver = json_object_get(doc, "schema_version");
    if (!json_is_integer(ver) || json_integer_value(ver) != 1) {
        fprintf(stderr, "obsctl compare: %s: schema_version %lld is not supported (this obsctl reads 1)\n",
                path, json_is_integer(ver) ? (long long)json_integer_value(ver) : -1LL);
        json_decref(doc);
        return 2;
    }
    const char *axis = json_string_value(json_object_get(json_object_get(doc, "sweep"), "axis"));
    snprintf(t->axis, sizeof t->axis, "%s", axis ? axis : "none");
    t->interrupted = json_is_true(json_object_get(json_object_get(doc, "metadata"), "interrupted"));
    json_t *points = json_object_get(doc, "points");
    if (!json_is_array(points)) {
        fprintf(stderr, "obsctl compare: %s: no \"points\" array\n", path);
        json_decref(doc);
        return 2;
    }
    size_t i;
    json_t *pt;
    json_array_foreach(points, i, pt) {
        json_t *in = json_object_get(pt, "inputs");
        const char *label = json_string_value(json_object_get(pt, "label"));
        char buf[64];
        if (!label) {
            snprintf(buf, sizeof buf, "%zu", i + 1);
            label = buf;
        }
        json_t *w = json_object_get(in, "workers");
        struct point *p = add_point(t, label, json_is_integer(w) ? (double)json_integer_value(w) : 0);
        json_t *err = json_object_get(pt, "error");
        if (json_is_object(err)) {
            const char *m = json_string_value(json_object_get(err, "message"));
            snprintf(p->error, sizeof p->error, "%s", m ? m : "failed");
            p->interrupted = m && !strcmp(m, "interrupted");
        }
        size_t k;
        json_t *rep;
        json_array_foreach(json_object_get(pt, "repeats"), k, rep) {
            json_t *tp = json_object_get(rep, "throughput");
            if (json_is_number(tp) && !json_is_true(json_object_get(rep, "interrupted")))
                add_value(p, json_number_value(tp));
        }
        if (!p->n && !p->error[0])
            snprintf(p->error, sizeof p->error, "no repeats");
    }
    json_decref(doc);
    return 0;
}

static int load_runs(struct store *st, char **ids, int n, struct table *t)
{
    snprintf(t->axis, sizeof t->axis, "workers");
    int rc = 0;
    for (int i = 0; i < n; i++) {
        struct snapshot *s = NULL;
        struct store_run_info info;
        const char *why = NULL;
        bool interrupted = false;
        double workers = 0, tp = NAN;
        if (store_find_run(st, ids[i], &info) != STORE_OK) {
            why = "run not found";
            rc = 1;
        } else if (store_final(st, ids[i], &s) != STORE_OK) {
            why = "no final snapshot (run still going or collector killed)";
        } else if (s->state == OBSD_RUN_INTERRUPTED) {
            why = "interrupted";
            interrupted = true;
        }
        json_t *sec = s ? json_object_get(s->sections, "sched") : NULL;
        json_t *d = json_object_get(sec, "derived");
        if (json_is_integer(json_object_get(d, "workers")))
            workers = (double)json_integer_value(json_object_get(d, "workers"));
        if (json_is_number(json_object_get(d, "throughput")))
            tp = json_number_value(json_object_get(d, "throughput"));
        else if (!why)
            why = sec ? "throughput undefined (see the run's sched notes)" : "no sched section";
        /* the point of this worker count, or a new one */
        char label[64];
        snprintf(label, sizeof label, "%g", workers);
        struct point *p = NULL;
        for (size_t k = 0; k < t->n && workers > 0; k++)
            if (t->pts[k].workers == workers)
                p = &t->pts[k];
        if (!p)
            p = add_point(t, workers > 0 ? label : ids[i], workers);
        if (why) {
            snprintf(p->error, sizeof p->error, "%s: %s", ids[i], why);
            p->interrupted |= interrupted;
        } else {
            add_value(p, tp);
        }
        snapshot_free(s);
    }
    return rc;
}

/* ---- the table -------------------------------------------------------- */

static int render(const struct table *t, bool as_json)
{
    bool workers_axis = !strcmp(t->axis, "workers");
    const struct point *base = t->n ? &t->pts[0] : NULL;
    struct sched_summary bs = {0};
    if (base)
        sched_summarize(base->values, base->n, &bs);
    const char *note = NULL;
    if (!base || !bs.has_mean || bs.mean <= 0 || base->error[0] || base->interrupted)
        note = "speedup/efficiency left out: the baseline (first) point is missing, failed or interrupted";
    else if (t->interrupted)
        note = "speedup/efficiency left out: the sweep was interrupted";
    bool speed = note == NULL;

    json_t *rows = json_array();
    if (!as_json) {
        printf("%-12s %7s %14s %12s", t->axis, "repeats", "throughput", "stdev");
        if (speed)
            printf(" %9s %11s", "speedup", "efficiency");
        printf("\n");
    }
    for (size_t i = 0; i < t->n; i++) {
        const struct point *p = &t->pts[i];
        struct sched_summary s;
        sched_summarize(p->values, p->n, &s);
        bool failed = p->error[0] != '\0';
        double speedup = NAN, eff = NAN;
        if (speed && !failed && s.has_mean) {
            speedup = s.mean / bs.mean;
            if (workers_axis && p->workers > 0 && base->workers > 0)
                eff = speedup / (p->workers / base->workers);
        }
        json_t *r = json_object();
        json_object_set_new(r, "label", obsd_json_text(p->label));
        json_object_set_new(r, "repeats", json_integer((json_int_t)p->n));
        json_object_set_new(r, "throughput_mean", !failed && s.has_mean ? json_real(s.mean) : json_null());
        json_object_set_new(r, "throughput_stdev", !failed && s.has_spread ? json_real(s.stdev) : json_null());
        json_object_set_new(r, "speedup", isnan(speedup) ? json_null() : json_real(speedup));
        json_object_set_new(r, "efficiency", isnan(eff) ? json_null() : json_real(eff));
        json_object_set_new(r, "error", failed ? obsd_json_text(p->error) : json_null());
        json_array_append_new(rows, r);
        if (as_json)
            continue;
        cli_print_padded(stdout, p->label, 12);
        printf(" %7zu ", p->n);
        if (failed) {
            printf("%14s %12s", "ERROR", "-");
            if (speed)
                printf(" %9s %11s", "-", "-");
            printf("  (%s)\n", p->error);
            continue;
        }
        printf("%14.1f ", s.mean);
        if (s.has_spread)
            printf("%12.1f", s.stdev);
        else
            printf("%12s", "-");
        if (speed) {
            char sp[32] = "-", ef[32] = "-";
            if (!isnan(speedup))
                snprintf(sp, sizeof sp, "%.2fx", speedup);
            if (!isnan(eff))
                snprintf(ef, sizeof ef, "%.0f%%", eff * 100);
            printf(" %9s %11s", sp, ef);
        }
        printf("\n");
    }
    if (as_json) {
        json_t *o = json_pack("{s:o, s:o, s:o}", "axis", obsd_json_text(t->axis), "points", rows,
                              "note", note ? json_string(note) : json_null());
        cli_print_json(stdout, o);
        return 0;
    }
    json_decref(rows);
    if (note)
        printf("note: %s\n", note);
    else if (!workers_axis)
        printf("note: efficiency is defined on the workers axis only; speedup here is the\n"
               "      throughput relative to the first point\n");
    return 0;
}

static void usage(FILE *out)
{
    fprintf(out,
            "usage: obsctl compare [--store DIR] [--json] RUN...\n"
            "       obsctl compare --sweep FILE [--json]\n"
            "\n"
            "Throughput, stdev, speedup over the first point and efficiency of a sweep.\n"
            "RUN... are run ids of the store (obsctl runs); each run's throughput is the\n"
            "sched section's derived throughput of its final snapshot, and runs with the same\n"
            "worker count are the repeats of one point. --sweep reads a chain_ring --output file.\n"
            "Efficiency = speedup / (workers / first point's workers) on the workers axis.\n"
            "\n"
            CLI_STORE_HELP
            "  --sweep FILE  a chain_ring results file (schema_version 1) instead of runs\n"
            "  --json        the table as JSON\n"
            "  --help        this text\n");
}

int cmd_compare(int argc, char **argv)
{
    static const struct option opts[] = {
        {"store", required_argument, 0, 's'},
        {"sweep", required_argument, 0, 'w'},
        {"json", no_argument, 0, 'j'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    const char *store_opt = NULL, *sweep = NULL;
    bool as_json = false;
    int o;
    opterr = 0;
    optind = 1;
    /* ':' first: a missing value comes back as ':', not as '?' with optopt
     * set to the option's val (which reads as an unknown option '-s') */
    while ((o = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
        switch (o) {
        case 's': store_opt = optarg; break;
        case 'w': sweep = optarg; break;
        case 'j': as_json = true; break;
        case 'h': usage(stdout); return 0;
        default: return cli_bad_option("compare", o, optopt, argv, optind);
        }
    }
    struct table t = {0};
    int rc;
    if (sweep) {
        if (optind < argc) {
            fprintf(stderr, "obsctl compare: give either --sweep FILE or RUN ids, not both\n");
            return 2;
        }
        rc = load_sweep(sweep, &t);
        if (rc)
            return rc;
    } else {
        if (optind >= argc) {
            fprintf(stderr, "obsctl compare: no RUN given (and no --sweep FILE)\n");
            usage(stderr);
            return 2;
        }
        struct store *st = cli_store_open("compare", store_opt, &rc);
        if (!st)
            return rc;
        rc = load_runs(st, argv + optind, argc - optind, &t);
        store_close(st);
    }
    render(&t, as_json);
    for (size_t i = 0; i < t.n; i++)
        free(t.pts[i].values);
    free(t.pts);
    return rc;
}
