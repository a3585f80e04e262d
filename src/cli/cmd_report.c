/*
 * cmd_report.c: 'obsctl report', one run as a self-contained HTML page.
 *
 * The page is for a person to open in a browser or attach to a benchmark
 * pull request: the run header with the state notes every reader must give
 * (incomplete drain, interrupted, no final snapshot), drops and rejected
 * records up front, counters and series tables, per series a histogram of the
 * shown snapshot's buckets and its p50/p99 over time, counters over time, and
 * the requests, budget and sched sections. No script and no external
 * resource: CSS is inline, charts are inline SVG. Everything read from the
 * store is escaped (cli_html.h); the same store gives the same bytes.
 */
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli_html.h"
#include "cli/cli_output.h"
#include "cli/cli_store.h"
#include "cli/cli_svg.h"
#include "cli/commands.h"

#ifndef OBSD_VERSION
#define OBSD_VERSION "?"
#endif

#define DEFAULT_MAX_CHARTS 100
/* Points per drawn line; longer time series are thinned evenly (the last
 * point always kept). */
#define MAX_LINE_POINTS 1200

/* Percentile grid indices (obsd_percentile_grid). */
enum { P999 = 0, P99 = 1, P90 = 4, P50 = 7 };

static void report_usage(FILE *out)
{
    fprintf(out,
        "usage: obsctl report [RUN] [--store DIR] [--output FILE] [--max-charts N]\n"
        "\n"
        "Writes one run (default: the most recently started run; RUN may be 'last')\n"
        "as a self-contained HTML page: the run header (id, name, state, start,\n"
        "duration, pending tasks) with a banner for an incomplete drain, an\n"
        "interrupted run or a missing final snapshot, dropped and rejected records,\n"
        "the counters and series tables (count, min, p50, p90, p99, p99.9, max,\n"
        "exact or approximate), per series a histogram of the snapshot's buckets\n"
        "and its p50 and p99 over time, counters over time, and the requests,\n"
        "budget and sched sections when the run has them. The snapshot shown is\n"
        "the final one, or the latest when the run has no final snapshot yet. No\n"
        "script and no external resource: open it anywhere, attach it anywhere.\n"
        "\n"
        "  --output FILE   write to FILE (atomically: a temporary file renamed over\n"
        "                  FILE once complete) instead of standard output\n"
        "  --max-charts N  draw charts for the first N series and the first N\n"
        "                  counters (default %d; 0: tables only); the tables\n"
        "                  always list every metric\n"
        CLI_STORE_HELP
        "  --help          this text\n"
        "\n"
        "Exit status: 0, 1 when the store or run cannot be read or FILE written, 2\n"
        "for bad arguments.\n",
        DEFAULT_MAX_CHARTS);
}

struct report {
    FILE *f;
    struct store *st;
    const struct store_run_info *run;
    const struct snapshot *snap;
    bool is_final;
    size_t max_charts;
    bool *charted;        /* per series: gets a chart card (has values, among the first max_charts) */
    size_t n_charted, n_empty;
    int failed;           /* 1: a store read failed (store_error()); 2: out of memory (said) */
};

/* ---- small writers ---- */

static void num_raw(FILE *f, double v)
{
    char buf[64];
    cli_format_number(v, buf, sizeof buf);
    fputs(buf, f);
}

/* A table cell with v for a person; the exact value in its tooltip when the
 * text is rounded. */
static void num_cell(FILE *f, double v, enum cli_unit unit)
{
    char human[64], raw[64];
    cli_format_number(v, raw, sizeof raw);
    if (unit == CLI_UNIT_NONE) {
        fprintf(f, "<td>%s</td>", raw);
        return;
    }
    cli_format_human(v, unit, human, sizeof human);
    if (isfinite(v))
        fprintf(f, "<td title=\"%s\">%s</td>", raw, human);
    else
        fprintf(f, "<td>%s</td>", human);
}

static double jnum(const json_t *o, const char *k)
{
    const json_t *v = json_object_get(o, k);
    return json_is_number(v) ? json_number_value(v) : NAN;
}

/* A JSON value of a section as cell text: strings escaped, numbers for a
 * person (unit from the key), containers as compact JSON. */
static void json_cell(FILE *f, const char *key, const json_t *v)
{
    if (json_is_string(v)) {
        fputs("<td class=\"text\">", f);
        html_text(f, json_string_value(v));
        fputs("</td>", f);
    } else if (json_is_number(v)) {
        num_cell(f, json_number_value(v), cli_unit_of(key));
    } else if (json_is_boolean(v)) {
        fprintf(f, "<td>%s</td>", json_is_true(v) ? "yes" : "no");
    } else if (json_is_null(v) || !v) {
        fputs("<td>-</td>", f);
    } else {
        char *text = json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS);
        fputs("<td class=\"text\">", f);
        html_text_trunc(f, text ? text : "", 200);
        fputs("</td>", f);
        free(text);
    }
}

static void kv_row(FILE *f, const char *key, const json_t *v)
{
    fputs("<tr><th scope=\"row\">", f);
    html_text(f, key);
    fputs("</th>", f);
    json_cell(f, key, v);
    fputs("</tr>\n", f);
}

/* Rows for the listed keys first (those present), then every other key of o
 * that is not in skip. */
static void kv_table(FILE *f, const json_t *o, const char *const *first, const char *const *skip)
{
    fputs("<table class=\"kv\"><tbody>\n", f);
    for (size_t i = 0; first && first[i]; i++)
        if (json_object_get(o, first[i]))
            kv_row(f, first[i], json_object_get(o, first[i]));
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)o, key, v) {
        bool listed = false;
        for (size_t i = 0; first && first[i] && !listed; i++)
            listed = !strcmp(key, first[i]);
        for (size_t i = 0; skip && skip[i] && !listed; i++)
            listed = !strcmp(key, skip[i]);
        if (!listed)
            kv_row(f, key, v);
    }
    fputs("</tbody></table>\n", f);
}

static const struct snap_counter *counter(const struct snapshot *s, const char *name)
{
    return snapshot_find_counter(s, name);
}

static double counter_value(const struct snap_counter *c)
{
    return c->is_float ? c->fvalue : (double)c->ivalue;
}

/* ---- time series from the store ---- */

struct tsbuf {
    bool want_series;
    uint64_t start_ns;
    size_t n, cap;
    double *x, *a, *b;    /* seconds since the run start; p50 or value; p99 */
    bool oom;
};

static int collect(const struct store_point *p, void *arg)
{
    struct tsbuf *t = arg;
    if (p->is_series != t->want_series)
        return 0;
    if (t->n == t->cap) {
        size_t cap = t->cap ? 2 * t->cap : 256;
        double *x = realloc(t->x, cap * sizeof *x);
        if (x)
            t->x = x;
        double *a = x ? realloc(t->a, cap * sizeof *a) : NULL;
        if (a)
            t->a = a;
        double *b = a ? realloc(t->b, cap * sizeof *b) : NULL;
        if (!b) {
            t->oom = true;
            return 1;
        }
        t->b = b;
        t->cap = cap;
    }
    t->x[t->n] = (double)(int64_t)(p->timestamp_ns - t->start_ns) / 1e9;
    if (p->is_series) {
        /* no values yet: no percentiles to draw (a gap, not a zero) */
        t->a[t->n] = p->count ? p->pct[STORE_POINT_P50] : NAN;
        t->b[t->n] = p->count ? p->pct[STORE_POINT_P99] : NAN;
    } else {
        t->a[t->n] = p->is_float ? p->fvalue : (double)p->ivalue;
        t->b[t->n] = NAN;
    }
    t->n++;
    return 0;
}

static void thin(struct tsbuf *t)
{
    if (t->n <= MAX_LINE_POINTS)
        return;
    size_t k = 0;
    for (size_t i = 0; i < MAX_LINE_POINTS; i++) {
        size_t j = i * (t->n - 1) / (MAX_LINE_POINTS - 1);
        t->x[k] = t->x[j];
        t->a[k] = t->a[j];
        t->b[k] = t->b[j];
        k++;
    }
    t->n = k;
}

static void ts_free(struct tsbuf *t)
{
    free(t->x);
    free(t->a);
    free(t->b);
}

/* Reads one metric's time series; false (with r->failed set) when the store
 * could not be read. A metric without points is not an error. */
static bool read_series(struct report *r, const char *name, bool series, struct tsbuf *t)
{
    memset(t, 0, sizeof *t);
    t->want_series = series;
    t->start_ns = r->run->start_ns;
    int rc = store_metric_series(r->st, r->run->id, name, collect, t);
    if (t->oom) {
        fprintf(stderr, "obsctl report: out of memory\n");
        r->failed = 2;
        return false;
    }
    if (rc == STORE_NOT_FOUND)
        t->n = 0;
    else if (rc != STORE_OK) {
        r->failed = 1;
        return false;
    }
    thin(t);
    return true;
}

static double x_end(const struct report *r)
{
    return (double)(int64_t)(r->snap->timestamp_ns - r->run->start_ns) / 1e9;
}

/* ---- page parts ---- */

static const char css[] =
    ":root{--fg:#1f2328;--muted:#59636e;--line:#d1d9e0;--alt:#f6f8fa;--ok:#1a7f37;--warn:#9a6700;"
    "--bad:#cf222e;--info:#0969da}\n"
    "*{box-sizing:border-box}\n"
    "body{font:14px/1.45 system-ui,-apple-system,\"Segoe UI\",Roboto,\"DejaVu Sans\",sans-serif;"
    "color:var(--fg);background:#fff;margin:0}\n"
    "main{max-width:1200px;margin:0 auto;padding:24px}\n"
    "h1{font-size:22px;margin:0 0 2px}\n"
    "h2{font-size:18px;margin:32px 0 10px;padding-bottom:4px;border-bottom:1px solid var(--line)}\n"
    "h3{font-size:15px;margin:0 0 2px;overflow-wrap:anywhere}\n"
    "h4{font-size:14px;margin:16px 0 6px}\n"
    ".sub{color:var(--muted);margin:0 0 16px;overflow-wrap:anywhere}\n"
    "dl.run{display:grid;grid-template-columns:max-content minmax(0,1fr) max-content minmax(0,1fr);"
    "gap:4px 18px;margin:0}\n"
    "dt{color:var(--muted)}dd{margin:0;font-variant-numeric:tabular-nums;overflow-wrap:anywhere}\n"
    ".banner{border-left:4px solid;padding:8px 12px;margin:12px 0;border-radius:4px}\n"
    ".banner.bad{border-color:var(--bad);background:#ffebe9}"
    ".banner.warn{border-color:#d4a72c;background:#fff8c5}"
    ".banner.info{border-color:var(--info);background:#ddf4ff}\n"
    ".tiles{display:flex;gap:12px;flex-wrap:wrap;margin:16px 0}\n"
    ".tile{border:1px solid var(--line);border-radius:6px;padding:8px 16px;min-width:160px}\n"
    ".tile .v{font-size:24px;font-weight:600;font-variant-numeric:tabular-nums}\n"
    ".tile .k{color:var(--muted);font-size:12px}\n"
    ".tile.alert{border-color:var(--bad);background:#ffebe9}.tile.alert .v{color:var(--bad)}\n"
    "nav.toc{margin:8px 0 0}nav.toc a{margin-right:14px;color:var(--info)}\n"
    "table{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums;margin:4px 0 8px}\n"
    "th,td{padding:4px 8px;border-bottom:1px solid var(--line);text-align:right;white-space:nowrap}\n"
    "th:first-child,td:first-child,td.text{text-align:left;white-space:normal;overflow-wrap:anywhere}\n"
    "thead th{background:var(--alt);font-weight:600}\n"
    "tbody tr:nth-child(even){background:#fafbfc}\n"
    "table.kv{width:auto;min-width:360px}table.kv th{font-weight:normal;color:var(--muted)}\n"
    "a{color:var(--info);text-decoration:none}a:hover{text-decoration:underline}\n"
    ".badge{display:inline-block;padding:0 7px;border-radius:10px;font-size:11px;font-weight:600;"
    "border:1px solid;vertical-align:middle;white-space:nowrap}\n"
    ".badge.ok{color:var(--ok)}.badge.warn{color:var(--warn)}.badge.bad{color:var(--bad)}"
    ".badge.info{color:var(--info)}.badge.muted{color:var(--muted)}\n"
    ".muted{color:var(--muted)}\n"
    ".cards{display:grid;gap:16px}\n"
    ".card{border:1px solid var(--line);border-radius:6px;padding:12px 14px}\n"
    ".card .meta{color:var(--muted);margin:0 0 8px;font-size:12px}\n"
    ".pair{display:grid;grid-template-columns:minmax(0,1fr) minmax(0,1fr);gap:14px}\n"
    "@media (max-width:900px){.pair{grid-template-columns:minmax(0,1fr)}}\n"
    ".small{display:grid;grid-template-columns:repeat(auto-fill,minmax(340px,1fr));gap:12px}\n"
    "table.narrow{width:auto;min-width:60%}\n"
    "table.wide{font-size:12px}table.wide th{white-space:normal;vertical-align:bottom}"
    "table.wide td:first-child,table.wide th:first-child{white-space:nowrap}\n"
    "figure{margin:0}figcaption{color:var(--muted);font-size:12px;margin-bottom:2px}\n"
    "svg.chart{width:100%;height:auto;display:block;max-width:100%}\n"
    "svg.chart text{font-family:system-ui,-apple-system,\"Segoe UI\",Roboto,\"DejaVu Sans\",sans-serif;"
    "font-size:11px;fill:var(--muted)}\n"
    "svg.chart text.rowlab{fill:var(--fg);font-size:12px}svg.chart text.empty{font-size:13px}\n"
    ".grid{stroke:#eaeef2}.axis{stroke:#8c959f}\n"
    "path.line{fill:none;stroke-width:1.6}line.line{stroke-width:2}\n"
    ".c0{stroke:#0969da;fill:#0969da}.c1{stroke:#cf222e;fill:#cf222e}.c2{stroke:#1a7f37;fill:#1a7f37}"
    ".c3{stroke:#bf8700;fill:#bf8700}.c4{stroke:#8250df;fill:#8250df}.c5{stroke:#57606a;fill:#57606a}\n"
    "svg.chart text.marklab{font-weight:600}svg.chart text.c0{fill:#0969da}svg.chart text.c1{fill:#cf222e}\n"
    "rect.bar{stroke:none}rect.bar.c0{fill:#54aeff}rect.bar.c1{fill:#ffa657}rect.bar.c2{fill:#4ac26b}"
    "rect.bar.c3{fill:#d4a72c}\n"
    "line.mark{stroke-dasharray:4 3;stroke-width:1.3}\n"
    "line.wallmark{stroke:#1f2328;stroke-width:2}\n"
    "pre{background:var(--alt);padding:8px 10px;overflow:auto;max-height:420px;font-size:12px}\n"
    "details{margin:6px 0}summary{cursor:pointer}\n"
    "footer{color:var(--muted);font-size:12px;margin-top:40px;border-top:1px solid var(--line);"
    "padding-top:8px}\n"
    "@media print{main{max-width:none}.card{break-inside:avoid}}\n";

static void write_head(struct report *r)
{
    FILE *f = r->f;
    fputs("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
          "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
          "<meta name=\"generator\" content=\"obsctl report " OBSD_VERSION "\">\n<title>obsd run ", f);
    html_text(f, r->run->id);
    fputs("</title>\n<style>\n", f);
    fputs(css, f);
    fputs("</style>\n</head>\n<body>\n<main>\n", f);
}

static const char *state_badge(const struct snapshot *s)
{
    switch (s->state) {
    case OBSD_RUN_COMPLETE: return s->n_pending_tasks ? "warn" : "ok";
    case OBSD_RUN_INTERRUPTED: return "bad";
    default: return "info";
    }
}

static void write_header(struct report *r)
{
    FILE *f = r->f;
    const struct snapshot *s = r->snap;
    char when[64], start[64], dur[64];
    cli_format_time(s->timestamp_ns, when, sizeof when);
    cli_format_time(r->run->start_ns, start, sizeof start);
    cli_format_human(x_end(r), CLI_UNIT_S, dur, sizeof dur);

    fputs("<header>\n<h1>obsd run ", f);
    html_text(f, r->run->id);
    fputs("</h1>\n<p class=\"sub\">", f);
    if (strcmp(r->run->name, r->run->id)) {
        html_text(f, r->run->name);
        fputs(" &middot; ", f);
    }
    fprintf(f, "%s snapshot, seq %" PRIu64 "</p>\n", r->is_final ? "final" : "latest", s->seq);
    fputs("<dl class=\"run\">\n<dt>run</dt><dd>", f);
    html_text(f, r->run->id);
    fputs("</dd>\n<dt>name</dt><dd>", f);
    html_text(f, r->run->name);
    fprintf(f, "</dd>\n<dt>state</dt><dd><span class=\"badge %s\">%s</span>%s</dd>\n", state_badge(s),
            obsd_run_state_name(s->state),
            s->state == OBSD_RUN_COMPLETE && s->n_pending_tasks ? " <span class=\"badge warn\">incomplete drain</span>" : "");
    fprintf(f, "<dt>started</dt><dd>%s</dd>\n", start);
    fprintf(f, "<dt>snapshot</dt><dd>seq %" PRIu64 ", %s (%s)</dd>\n", s->seq, when,
            r->is_final ? "final" : "latest; no final snapshot yet");
    fprintf(f, "<dt>duration</dt><dd title=\"from the run's start to this snapshot\">%s</dd>\n", dur);
    fprintf(f, "<dt>pending tasks</dt><dd>%" PRIu64 "</dd>\n", s->n_pending_tasks);
    fprintf(f, "<dt>snapshots persisted</dt><dd>%" PRIu64 "</dd>\n", r->run->n_snapshots);
    fputs("</dl>\n", f);
}

/* The notes DESIGN.md has every reader give, plus drops and rejections. */
static void write_banners(struct report *r)
{
    FILE *f = r->f;
    const struct snapshot *s = r->snap;
    if (s->state == OBSD_RUN_COMPLETE && s->n_pending_tasks > 0)
        fprintf(f, "<div class=\"banner warn\" role=\"alert\"><strong>Incomplete drain:</strong> %" PRIu64
                   " tokenizations pending. The run is complete but its token counts are partial: isl, osl"
                   " and tpot_ns miss those texts.</div>\n", s->n_pending_tasks);
    if (s->state == OBSD_RUN_INTERRUPTED) {
        fputs("<div class=\"banner bad\" role=\"alert\"><strong>Interrupted:</strong> the run was stopped"
              " early (SIGTERM or the harness's interrupt marker); statistics are not exact", f);
        if (s->n_pending_tasks)
            fprintf(f, ", and %" PRIu64 " tokenizations were pending: token counts are partial", s->n_pending_tasks);
        fputs(".</div>\n", f);
    }
    if (!r->is_final && s->state != OBSD_RUN_COMPLETE && s->state != OBSD_RUN_INTERRUPTED)
        fprintf(f, "<div class=\"banner info\" role=\"status\"><strong>No final snapshot:</strong> the run is"
                   " still %s, or its collector stopped before the end. This report shows the latest"
                   " snapshot (seq %" PRIu64 ").</div>\n", obsd_run_state_name(s->state), s->seq);
    const struct snap_counter *d = counter(s, "obsd_dropped_records");
    const struct snap_counter *j = counter(s, "obsd_rejected_records");
    if (d && counter_value(d) > 0) {
        fputs("<div class=\"banner bad\" role=\"alert\"><strong>", f);
        num_raw(f, counter_value(d));
        fputs(" records dropped</strong>: a producer's ring was full. They are in no metric of this"
              " report.</div>\n", f);
    }
    if (j && counter_value(j) > 0) {
        fputs("<div class=\"banner warn\" role=\"alert\"><strong>", f);
        num_raw(f, counter_value(j));
        fputs(" records rejected</strong> as malformed (bad lengths, unknown keys, spans that end before"
              " they start, ...). They are in no metric of this report.</div>\n", f);
    }
}

static void tile(FILE *f, const char *key, const struct snap_counter *c, bool alert_if_nonzero)
{
    bool alert = c && alert_if_nonzero && counter_value(c) > 0;
    fprintf(f, "<div class=\"tile%s\"><div class=\"v\">", alert ? " alert" : "");
    if (c)
        num_raw(f, counter_value(c));
    else
        fputs("-", f);
    fprintf(f, "</div><div class=\"k\">%s</div></div>\n", key);
}

static bool is_module(const char *key)
{
    return !strcmp(key, "requests") || !strcmp(key, "budget") || !strcmp(key, "sched");
}

static void write_tiles_and_toc(struct report *r)
{
    FILE *f = r->f;
    const struct snapshot *s = r->snap;
    fputs("<div class=\"tiles\">\n", f);
    tile(f, "dropped records", counter(s, "obsd_dropped_records"), true);
    tile(f, "rejected records", counter(s, "obsd_rejected_records"), true);
    fprintf(f, "<div class=\"tile\"><div class=\"v\">%zu</div><div class=\"k\">series</div></div>\n", s->n_series);
    fprintf(f, "<div class=\"tile\"><div class=\"v\">%zu</div><div class=\"k\">counters and gauges</div></div>\n",
            s->n_counters);
    fputs("</div>\n<nav class=\"toc\">", f);
    if (s->n_series)
        fputs("<a href=\"#series\">Series</a>", f);
    if (s->n_counters)
        fputs("<a href=\"#counters\">Counters</a>", f);
    static const char *const mods[] = {"requests", "budget", "sched"};
    for (size_t i = 0; i < 3; i++)
        if (json_object_get(s->sections, mods[i]))
            fprintf(f, "<a href=\"#mod-%s\">%s</a>", mods[i], mods[i]);
    const char *key;
    json_t *v;
    bool other = false;
    json_object_foreach(s->sections, key, v)
        other |= !is_module(key);
    if (other)
        fputs("<a href=\"#other\">Other sections</a>", f);
    fputs("</nav>\n</header>\n", f);
}

static void exact_badge(FILE *f, const struct snap_series *sr)
{
    if (sr->exact)
        fputs("<span class=\"badge ok\" title=\"percentiles are observed values, from the raw values\">exact</span>", f);
    else
        fputs("<span class=\"badge muted\" title=\"percentiles read from the histogram, not from raw values\">approx.</span>", f);
}

static void write_series_table(struct report *r)
{
    FILE *f = r->f;
    const struct snapshot *s = r->snap;
    if (!s->n_series)
        return;
    fputs("<section id=\"series\">\n<h2>Series</h2>\n<table>\n<thead><tr><th scope=\"col\">series</th>"
          "<th scope=\"col\">count</th><th scope=\"col\">min</th><th scope=\"col\">p50</th>"
          "<th scope=\"col\">p90</th><th scope=\"col\">p99</th><th scope=\"col\">p99.9</th>"
          "<th scope=\"col\">max</th><th scope=\"col\">mean</th><th scope=\"col\">percentiles</th></tr></thead>\n<tbody>\n",
          f);
    for (size_t i = 0; i < s->n_series; i++) {
        const struct snap_series *sr = &s->series[i];
        enum cli_unit u = cli_unit_of(sr->name);
        fputs("<tr><td>", f);
        if (r->charted[i])
            fprintf(f, "<a href=\"#s%zu\">", i);
        html_text(f, sr->name);
        if (r->charted[i])
            fputs("</a>", f);
        fprintf(f, "</td><td>%" PRIu64 "</td>", sr->count);
        bool empty = sr->count == 0;
        num_cell(f, empty ? NAN : sr->min, u);
        num_cell(f, empty ? NAN : sr->percentiles[P50], u);
        num_cell(f, empty ? NAN : sr->percentiles[P90], u);
        num_cell(f, empty ? NAN : sr->percentiles[P99], u);
        num_cell(f, empty ? NAN : sr->percentiles[P999], u);
        num_cell(f, empty ? NAN : sr->max, u);
        num_cell(f, empty ? NAN : sr->total / (double)sr->count, u);
        fputs("<td>", f);
        exact_badge(f, sr);
        fputs("</td></tr>\n", f);
    }
    fputs("</tbody>\n</table>\n", f);
}

static void write_series_charts(struct report *r)
{
    FILE *f = r->f;
    const struct snapshot *s = r->snap;
    if (!s->n_series)
        return;
    if (r->n_empty || r->n_charted + r->n_empty < s->n_series) {
        fputs("<p class=\"muted\">", f);
        if (r->n_empty)
            fprintf(f, "%zu series ha%s no values (no chart). ", r->n_empty, r->n_empty == 1 ? "s" : "ve");
        if (r->n_charted + r->n_empty < s->n_series)
            fprintf(f, "Charts for the first %zu of %zu series with values (--max-charts).", r->n_charted,
                    s->n_series - r->n_empty);
        fputs("</p>\n", f);
    }
    fputs("<div class=\"cards\">\n", f);
    for (size_t i = 0; i < s->n_series && !r->failed; i++) {
        if (!r->charted[i])
            continue;
        const struct snap_series *sr = &s->series[i];
        enum cli_unit u = cli_unit_of(sr->name);
        char p50[64], p99[64], mx[64];
        cli_format_human(sr->percentiles[P50], u, p50, sizeof p50);
        cli_format_human(sr->percentiles[P99], u, p99, sizeof p99);
        cli_format_human(sr->count ? sr->max : NAN, u, mx, sizeof mx);
        fprintf(f, "<article class=\"card\" id=\"s%zu\">\n<h3>", i);
        html_text(f, sr->name);
        fputs(" ", f);
        exact_badge(f, sr);
        fprintf(f, "</h3>\n<p class=\"meta\">count %" PRIu64 " &middot; p50 %s &middot; p99 %s &middot; max %s</p>\n",
                sr->count, p50, p99, mx);

        fputs("<div class=\"pair\">\n<figure>\n<figcaption>distribution: the buckets of the ", f);
        fputs(r->is_final ? "final" : "latest", f);
        fputs(" snapshot</figcaption>\n", f);
        struct svg_mark marks[2] = {{"p50", sr->percentiles[P50], 0}, {"p99", sr->percentiles[P99], 1}};
        char aria[160];
        snprintf(aria, sizeof aria, "histogram of series %zu", i + 1);
        svg_histogram(f, 560, 210, aria, sr->buckets, sr->n_buckets, u, marks, sr->count ? 2 : 0);
        fputs("</figure>\n<figure>\n<figcaption>p50 and p99 over the run</figcaption>\n", f);
        struct tsbuf t;
        if (read_series(r, sr->name, true, &t)) {
            struct svg_line lines[2] = {{"p50", 0, t.n, t.x, t.a}, {"p99", 1, t.n, t.x, t.b}};
            snprintf(aria, sizeof aria, "p50 and p99 of series %zu over time", i + 1);
            svg_time_chart(f, 560, 210, aria, lines, 2, x_end(r), u);
        }
        ts_free(&t);
        fputs("</figure>\n</div>\n</article>\n", f);
    }
    fputs("</div>\n</section>\n", f);
}

static void write_counters(struct report *r)
{
    FILE *f = r->f;
    const struct snapshot *s = r->snap;
    if (!s->n_counters)
        return;
    fputs("<section id=\"counters\">\n<h2>Counters</h2>\n<table class=\"narrow\">\n<thead><tr><th scope=\"col\">counter</th>"
          "<th scope=\"col\">type</th><th scope=\"col\">value</th><th scope=\"col\"></th></tr></thead>\n<tbody>\n", f);
    for (size_t i = 0; i < s->n_counters; i++) {
        const struct snap_counter *c = &s->counters[i];
        enum cli_unit u = cli_unit_of(c->name);
        char human[64];
        fputs("<tr><td>", f);
        html_text(f, c->name);
        fprintf(f, "</td><td>%s</td><td>", c->is_float ? "gauge" : "counter");
        if (c->is_float)
            num_raw(f, c->fvalue);
        else
            fprintf(f, "%" PRId64, c->ivalue);
        fputs("</td><td class=\"muted\">", f);
        if (u != CLI_UNIT_NONE) {
            cli_format_human(counter_value(c), u, human, sizeof human);
            fprintf(f, "%s", human);
        }
        fputs("</td></tr>\n", f);
    }
    fputs("</tbody>\n</table>\n", f);

    /* Over time: only counters that changed during the run (two points or more). */
    size_t n = s->n_counters < r->max_charts ? s->n_counters : r->max_charts, drawn = 0, flat = 0;
    for (size_t i = 0; i < n && !r->failed; i++) {
        const struct snap_counter *c = &s->counters[i];
        struct tsbuf t;
        if (!read_series(r, c->name, false, &t)) {
            ts_free(&t);
            break;
        }
        if (t.n >= 2) {
            if (!drawn++)
                fputs("<h4>Over the run</h4>\n<div class=\"small\">\n", f);
            fputs("<figure class=\"card\">\n<figcaption>", f);
            html_text(f, c->name);
            fputs("</figcaption>\n", f);
            struct svg_line line = {c->is_float ? "value (gauge)" : "value", 0, t.n, t.x, t.a};
            char aria[160];
            snprintf(aria, sizeof aria, "counter %zu over time", i + 1);
            svg_time_chart(f, 380, 160, aria, &line, 1, x_end(r), cli_unit_of(c->name));
            fputs("</figure>\n", f);
        } else {
            flat++;
        }
        ts_free(&t);
    }
    if (drawn)
        fputs("</div>\n", f);
    if (flat || n < s->n_counters) {
        fputs("<p class=\"muted\">", f);
        if (flat)
            fprintf(f, "%zu counter%s kept one value for the whole run (no chart). ", flat, flat == 1 ? "" : "s");
        if (n < s->n_counters)
            fprintf(f, "Charts considered the first %zu of %zu counters (--max-charts).", n, s->n_counters);
        fputs("</p>\n", f);
    }
    fputs("</section>\n", f);
}

/* ---- module sections ---- */

static void write_requests(struct report *r, const json_t *sec)
{
    FILE *f = r->f;
    const struct snapshot *s = r->snap;
    fputs("<section id=\"mod-requests\">\n<h2>Requests</h2>\n", f);
    const char *tm = json_string_value(json_object_get(sec, "token_metrics"));
    bool on = tm && !strcmp(tm, "on");
    fprintf(f, "<p>token metrics <span class=\"badge %s\">%s</span>", on ? "ok" : "muted", on ? "on" : "off");
    if (!on)
        fputs(" <span class=\"muted\">obsd ran without a tokenizer: isl, osl and tpot_ns are not measured.</span>", f);
    fputs("</p>\n", f);
    static const char *const first[] = {"qps", "tps", "tracked_duration_ns", "tracking_windows", "in_flight",
                                        "pending_tokenizations", "tokenizer", "tokens_counted_live",
                                        "tokens_counted_drain", "token_queue_spilled", "token_queue_memory",
                                        NULL};
    static const char *const skip[] = {"token_metrics", NULL};
    const struct snap_counter *issued = counter(s, "total_samples_issued");
    if (!(jnum(sec, "tracking_windows") > 0) && !(jnum(sec, "in_flight") > 0) &&
        !(issued && counter_value(issued) > 0)) {
        fputs("<p class=\"muted\">No requests in this run.</p>\n</section>\n", f);
        return;
    }
    if (json_is_object(sec))
        kv_table(f, sec, first, skip);

    /* Samples and finish reasons from the counters, when the run has them. */
    static const char *const samples[][2] = {
        {"tracked_samples_issued", "issued"}, {"tracked_samples_completed", "completed"},
        {"tracked_samples_failed", "failed"}};
    static const char *const reasons[] = {"stop", "length", "tool_calls", "content_filter", "function_call", "other"};
    struct svg_bar_row rows[9];
    size_t n = 0;
    for (size_t i = 0; i < 3; i++) {
        const struct snap_counter *c = counter(s, samples[i][0]);
        if (c)
            rows[n++] = (struct svg_bar_row){samples[i][1], {counter_value(c)}, NAN};
    }
    char names[6][64];
    for (size_t i = 0; i < 6; i++) {
        char key[96];
        snprintf(key, sizeof key, "tracked_finish_reason_%s", reasons[i]);
        const struct snap_counter *c = counter(s, key);
        snprintf(names[i], sizeof names[i], "finish: %s", reasons[i]);
        if (c)
            rows[n++] = (struct svg_bar_row){names[i], {counter_value(c)}, NAN};
    }
    if (n) {
        fputs("<h4>Tracked requests</h4>\n", f);
        svg_bars(f, 760, "tracked requests and their finish reasons", rows, n, NULL, 1, NULL, CLI_UNIT_NONE);
    }
    fputs("</section>\n", f);
}

static void write_budget(struct report *r, const json_t *sec)
{
    FILE *f = r->f;
    fputs("<section id=\"mod-budget\">\n<h2>FLOP budget</h2>\n", f);
    const json_t *ctxs = json_object_get(sec, "contexts"), *sess = json_object_get(sec, "session");
    size_t n = json_array_size(ctxs);
    if (!n) {
        fputs("<p class=\"muted\">No budget contexts in this run.</p>\n</section>\n", f);
        return;
    }
    fputs("<p>Each context's wall time splits into backend (kernel time), overhead (the framework's own work:"
          " dispatch beyond the kernels) and residual (the participant's code, the billed bucket):"
          " wall = backend + overhead + residual.</p>\n", f);
    fputs("<table>\n<thead><tr><th scope=\"col\">#</th><th scope=\"col\">namespace</th><th scope=\"col\">FLOPs used</th>"
          "<th scope=\"col\">FLOP budget</th><th scope=\"col\">used</th><th scope=\"col\">exhausted</th>"
          "<th scope=\"col\">wall</th><th scope=\"col\">backend</th><th scope=\"col\">overhead</th>"
          "<th scope=\"col\">residual</th></tr></thead>\n<tbody>\n", f);
    size_t clamped = 0;
    for (size_t i = 0; i < n; i++) {
        const json_t *c = json_array_get(ctxs, i);
        double used = jnum(c, "flops_used"), budget = jnum(c, "flop_budget");
        double wall = jnum(c, "wall_s"), sum = jnum(c, "backend_s") + jnum(c, "overhead_s") + jnum(c, "residual_s");
        if (isfinite(sum) && isfinite(wall) && sum > wall * 1.001 + 1e-9)
            clamped++;
        fprintf(f, "<tr><td>%zu%s</td><td class=\"text\">", i, json_is_true(json_object_get(c, "open")) ? "*" : "");
        html_text(f, json_string_value(json_object_get(c, "namespace")));
        fputs("</td>", f);
        num_cell(f, used, CLI_UNIT_NONE);
        num_cell(f, budget, CLI_UNIT_NONE);
        if (budget > 0)
            fprintf(f, "<td>%.1f%%</td>", 100.0 * used / budget);
        else
            fputs("<td>-</td>", f);
        fprintf(f, "<td>%s</td>", json_is_true(json_object_get(c, "exhausted")) ? "<span class=\"badge bad\">yes</span>" : "no");
        num_cell(f, wall, CLI_UNIT_S);
        num_cell(f, jnum(c, "backend_s"), CLI_UNIT_S);
        num_cell(f, jnum(c, "overhead_s"), CLI_UNIT_S);
        num_cell(f, jnum(c, "residual_s"), CLI_UNIT_S);
        fputs("</tr>\n", f);
    }
    if (json_is_object(sess)) {
        fputs("<tr><td>all</td><td class=\"text\">(session)</td>", f);
        num_cell(f, jnum(sess, "flops_used"), CLI_UNIT_NONE);
        num_cell(f, jnum(sess, "flop_budget"), CLI_UNIT_NONE);
        fputs("<td></td><td></td>", f);
        num_cell(f, jnum(sess, "wall_s"), CLI_UNIT_S);
        num_cell(f, jnum(sess, "backend_s"), CLI_UNIT_S);
        num_cell(f, jnum(sess, "overhead_s"), CLI_UNIT_S);
        num_cell(f, jnum(sess, "residual_s"), CLI_UNIT_S);
        fputs("</tr>\n", f);
    }
    fputs("</tbody>\n</table>\n<p class=\"muted\">* open context, as of its last progress record.</p>\n", f);
    if (clamped)
        fprintf(f, "<p class=\"muted\">%zu context%s add%s up to more than wall: a clamp fired (kernel time"
                   " beyond dispatch time, or dispatch beyond wall).</p>\n",
                clamped, clamped == 1 ? "" : "s", clamped == 1 ? "s" : "");

    /* The split as stacked bars; the line is the wall time the bar should reach. */
    size_t nb = n < 200 ? n : 200;
    struct svg_bar_row *rows = calloc(nb, sizeof *rows);
    char (*labels)[96] = calloc(nb, sizeof *labels);
    if (rows && labels) {
        for (size_t i = 0; i < nb; i++) {
            const json_t *c = json_array_get(ctxs, i);
            const char *ns = json_string_value(json_object_get(c, "namespace"));
            snprintf(labels[i], sizeof labels[i], "%zu %s", i, ns ? ns : "");
            rows[i] = (struct svg_bar_row){labels[i], {jnum(c, "backend_s"), jnum(c, "overhead_s"),
                                                       jnum(c, "residual_s")}, jnum(c, "wall_s")};
        }
        static const char *const segs[] = {"backend", "overhead", "residual"};
        fputs("<h4>Wall time per context</h4>\n", f);
        if (nb < n)
            fprintf(f, "<p class=\"muted\">The first %zu of %zu contexts.</p>\n", nb, n);
        svg_bars(f, 900, "wall time of each budget context split into backend, overhead and residual", rows, nb,
                 segs, 3, "wall", CLI_UNIT_S);
    }
    free(rows);
    free(labels);

    const json_t *ops = json_object_get(sess, "operations");
    if (json_object_size(ops)) {
        fputs("<h4>Per op (session)</h4>\n<table>\n<thead><tr><th scope=\"col\">op</th><th scope=\"col\">FLOP cost</th>"
              "<th scope=\"col\">calls</th><th scope=\"col\">backend</th><th scope=\"col\">overhead</th></tr></thead>\n<tbody>\n", f);
        const char *op;
        json_t *v;
        json_object_foreach((json_t *)ops, op, v) {
            fputs("<tr><td>", f);
            html_text(f, op);
            fputs("</td>", f);
            num_cell(f, jnum(v, "flop_cost"), CLI_UNIT_NONE);
            num_cell(f, jnum(v, "calls"), CLI_UNIT_NONE);
            num_cell(f, jnum(v, "backend_s"), CLI_UNIT_S);
            num_cell(f, jnum(v, "overhead_s"), CLI_UNIT_S);
            fputs("</tr>\n", f);
        }
        fputs("</tbody>\n</table>\n", f);
    }
    fputs("</section>\n", f);
}

/* Worker columns: the scheduler counters in a reading order, then any other
 * integer field a newer obsd adds; identity and timestamps left out. */
static const char *const worker_first[] = {
    "behaviors_completed", "pushed_local", "pushed_remote", "dispatched_to_pending", "popped_local",
    "popped_via_steal", "steal_attempts", "steal_failures", "parked", NULL};

static bool worker_column(const char *key)
{
    static const char *const ids[] = {"worker_index", "block", "pid", "tid", NULL};
    for (size_t i = 0; ids[i]; i++)
        if (!strcmp(key, ids[i]))
            return false;
    size_t n = strlen(key);
    return !(n > 3 && !strcmp(key + n - 3, "_ns"));
}

static void write_sched(struct report *r, const json_t *sec)
{
    FILE *f = r->f;
    fputs("<section id=\"mod-sched\">\n<h2>Scheduler</h2>\n", f);
    const json_t *derived = json_object_get(sec, "derived"), *workers = json_object_get(sec, "workers");
    fputs("<div class=\"pair\">\n<div>\n<h4>Window</h4>\n", f);
    static const char *const wfirst[] = {"phase", "baseline", "window_s", "invalid_blocks", "workers_left_out", NULL};
    static const char *const wskip[] = {"derived", "workers", "queues", "window_start_ns", "window_end_ns", NULL};
    if (json_is_object(sec))
        kv_table(f, sec, wfirst, wskip);
    fputs("</div>\n<div>\n<h4>Derived metrics</h4>\n", f);
    static const char *const dfirst[] = {"workers", "behaviors_completed", "throughput", "steal_yield",
                                         "idle_ratio", "enq_retry_ratio", "fairness_cv", "fairness_gini",
                                         "steals", "steal_attempts", "steal_failures", NULL};
    static const char *const dskip[] = {"notes", NULL};
    if (json_is_object(derived))
        kv_table(f, derived, dfirst, dskip);
    fputs("</div>\n</div>\n", f);
    const json_t *notes = json_object_get(derived, "notes");
    if (json_array_size(notes)) {
        fputs("<ul>\n", f);
        size_t i;
        json_t *v;
        json_array_foreach(notes, i, v) {
            fputs("<li>", f);
            html_text(f, json_string_value(v));
            fputs("</li>\n", f);
        }
        fputs("</ul>\n", f);
    }

    size_t n = json_array_size(workers);
    if (n) {
        /* columns: the listed ones present in any worker, then the rest in first-seen order */
        json_t *cols = json_array();
        for (size_t k = 0; worker_first[k]; k++)
            for (size_t i = 0; i < n; i++)
                if (json_is_integer(json_object_get(json_array_get(workers, i), worker_first[k]))) {
                    json_array_append_new(cols, json_string(worker_first[k]));
                    break;
                }
        for (size_t i = 0; i < n; i++) {
            const char *key;
            json_t *v;
            json_object_foreach(json_array_get(workers, i), key, v) {
                if (!json_is_integer(v) || !worker_column(key))
                    continue;
                bool seen = false;
                for (size_t c = 0; c < json_array_size(cols) && !seen; c++)
                    seen = !strcmp(json_string_value(json_array_get(cols, c)), key);
                if (!seen)
                    json_array_append_new(cols, json_string(key));
            }
        }
        fputs("<h4>Per worker (deltas over the window)</h4>\n<div style=\"overflow-x:auto\">\n<table class=\"wide\">\n"
              "<thead><tr><th scope=\"col\">worker</th>", f);
        for (size_t c = 0; c < json_array_size(cols); c++) {
            /* long snake_case names may break after an underscore */
            const char *name = json_string_value(json_array_get(cols, c));
            fputs("<th scope=\"col\">", f);
            for (const char *p = name, *u; *p; p = u + 1) {
                char part[128];
                u = strchr(p, '_');
                size_t len = u ? (size_t)(u - p) + 1 : strlen(p);
                snprintf(part, sizeof part, "%.*s", (int)(len < sizeof part ? len : sizeof part - 1), p);
                html_text(f, part);
                if (!u)
                    break;
                fputs("<wbr>", f);
            }
            fputs("</th>", f);
        }
        fputs("</tr></thead>\n<tbody>\n", f);
        struct svg_bar_row *rows = calloc(n, sizeof *rows);
        char (*labels)[48] = calloc(n, sizeof *labels);
        for (size_t i = 0; i < n; i++) {
            const json_t *w = json_array_get(workers, i);
            double idx = jnum(w, "worker_index");
            fputs("<tr><td>", f);
            num_raw(f, idx);
            if (json_is_true(json_object_get(w, "released")))
                fputs(" <span class=\"badge muted\">released</span>", f);
            if (json_is_true(json_object_get(w, "torn")))
                fputs(" <span class=\"badge warn\">torn</span>", f);
            fputs("</td>", f);
            for (size_t c = 0; c < json_array_size(cols); c++)
                num_cell(f, jnum(w, json_string_value(json_array_get(cols, c))), CLI_UNIT_NONE);
            fputs("</tr>\n", f);
            if (rows && labels) {
                char idxs[32];
                cli_format_number(idx, idxs, sizeof idxs);
                snprintf(labels[i], sizeof labels[i], "worker %s", idxs);
                rows[i] = (struct svg_bar_row){labels[i], {jnum(w, "behaviors_completed")}, NAN};
            }
        }
        fputs("</tbody>\n</table>\n</div>\n", f);
        if (rows && labels) {
            fputs("<h4>Behaviors completed per worker</h4>\n", f);
            svg_bars(f, 760, "behaviors completed by each worker", rows, n < 256 ? n : 256, NULL, 1, NULL,
                     CLI_UNIT_NONE);
        }
        free(rows);
        free(labels);
        json_decref(cols);
    }

    const json_t *queues = json_object_get(sec, "queues");
    if (json_array_size(queues)) {
        static const char *const qcols[] = {"pushed_total", "popped_total", "enqueue_cas_retries", "dequeue_cas_retries"};
        fputs("<h4>Queues</h4>\n<table>\n<thead><tr><th scope=\"col\">queue</th>", f);
        for (size_t c = 0; c < 4; c++)
            fprintf(f, "<th scope=\"col\">%s</th>", qcols[c]);
        fputs("</tr></thead>\n<tbody>\n", f);
        size_t i;
        json_t *q;
        json_array_foreach(queues, i, q) {
            fputs("<tr><td>", f);
            html_text(f, json_string_value(json_object_get(q, "tag")));
            fputs("</td>", f);
            for (size_t c = 0; c < 4; c++)
                num_cell(f, jnum(q, qcols[c]), CLI_UNIT_NONE);
            fputs("</tr>\n", f);
        }
        fputs("</tbody>\n</table>\n", f);
    }
    fputs("</section>\n", f);
}

static void write_other_sections(struct report *r)
{
    FILE *f = r->f;
    const char *key;
    json_t *v;
    bool first = true;
    json_object_foreach(r->snap->sections, key, v) {
        if (is_module(key))
            continue;
        if (first)
            fputs("<section id=\"other\">\n<h2>Other sections</h2>\n", f);
        first = false;
        char *text = json_dumps(v, JSON_INDENT(2) | JSON_SORT_KEYS);
        size_t len = text ? strlen(text) : 0;
        fputs("<details>\n<summary>", f);
        html_text(f, key);
        fputs("</summary>\n<pre>", f);
        if (len > 65536)
            text[65536] = 0;
        html_text(f, text ? text : "");
        if (len > 65536)
            fputs("\n... (cut at 64 KiB; obsctl show --json has it all)", f);
        fputs("</pre>\n</details>\n", f);
        free(text);
    }
    if (!first)
        fputs("</section>\n", f);
}

static void write_page(struct report *r)
{
    FILE *f = r->f;
    const struct snapshot *s = r->snap;
    write_head(r);
    write_header(r);
    write_banners(r);
    write_tiles_and_toc(r);
    write_series_table(r);
    write_series_charts(r);
    if (!r->failed)
        write_counters(r);
    const json_t *sec;
    if ((sec = json_object_get(s->sections, "requests")))
        write_requests(r, sec);
    if ((sec = json_object_get(s->sections, "budget")))
        write_budget(r, sec);
    if ((sec = json_object_get(s->sections, "sched")))
        write_sched(r, sec);
    write_other_sections(r);
    if (!s->n_series && !s->n_counters)
        fputs("<p class=\"muted\">This snapshot has no metrics.</p>\n", f);
    fprintf(f, "<footer>obsctl report %s &middot; the %s snapshot (seq %" PRIu64 ") of run ", OBSD_VERSION,
            r->is_final ? "final" : "latest", s->seq);
    html_text(f, r->run->id);
    fputs(" &middot; times are UTC, durations from the run's start</footer>\n</main>\n</body>\n</html>\n", f);
}

int cmd_report(int argc, char **argv)
{
    static const struct option options[] = {
        {"store", required_argument, NULL, 's'},
        {"output", required_argument, NULL, 'o'},
        {"max-charts", required_argument, NULL, 'm'},
        {"help", no_argument, NULL, 'h'},
        {0, 0, 0, 0},
    };
    struct cli_args a = {.cmd = "report", .usage = report_usage};
    const char *output = NULL, *run_id;
    uint64_t max_charts = DEFAULT_MAX_CHARTS;
    int opt;
    while ((opt = cli_next_option(&a, argc, argv, options)) > 0) {
        switch (opt) {
        case 'o': output = optarg; break;
        case 'm':
            if (!cli_parse_u64(optarg, &max_charts) || max_charts > 100000) {
                fprintf(stderr, "obsctl report: --max-charts needs an integer from 0 to 100000, not '%s'\n", optarg);
                return 2;
            }
            break;
        }
    }
    if (opt < 0)
        return a.status;
    if (cli_run_operand("report", argc, argv, &run_id))
        return 2;
    if (output && !*output) {
        fprintf(stderr, "obsctl report: --output needs a file name\n");
        return 2;
    }

    struct store_run_info run;
    int rc;
    struct store *st = cli_store_open_run("report", a.store, run_id, &run, &rc);
    if (!st)
        return rc;
    struct snapshot *snap = NULL;
    rc = run.has_final ? store_final(st, run.id, &snap) : store_latest(st, run.id, &snap);
    if (rc) {
        rc = cli_store_failed("report", st);
        store_close(st);
        return rc;
    }
    struct cli_output out;
    if (cli_output_open(&out, "report", output)) {
        snapshot_free(snap);
        store_close(st);
        return 1;
    }
    struct report r = {.f = out.f, .st = st, .run = &run, .snap = snap, .is_final = run.has_final,
                       .max_charts = (size_t)max_charts};
    r.charted = calloc(snap->n_series ? snap->n_series : 1, sizeof *r.charted);
    if (!r.charted) {
        fprintf(stderr, "obsctl report: out of memory\n");
        cli_output_abort(&out);
        snapshot_free(snap);
        store_close(st);
        return 1;
    }
    for (size_t i = 0; i < snap->n_series; i++) {
        if (!snap->series[i].count)
            r.n_empty++;
        else if (r.n_charted < r.max_charts)
            r.charted[i] = true, r.n_charted++;
    }
    write_page(&r);
    free(r.charted);
    if (r.failed) {
        if (r.failed == 1)
            cli_store_failed("report", st);
        cli_output_abort(&out);
        rc = 1;
    } else {
        rc = cli_output_commit(&out, "report");
    }
    cli_print_state_notes(stderr, "obsctl report: ", snap->state, snap->n_pending_tasks, r.is_final, run.has_final);
    snapshot_free(snap);
    store_close(st);
    return rc;
}
