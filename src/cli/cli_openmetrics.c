/*
 * cli_openmetrics.c: snapshot exposition in the OpenMetrics and Prometheus
 * text formats (cli_openmetrics.h).
 *
 * The text is built in memory (open_memstream) so that an HTTP response is
 * one buffer and a failure leaves nothing half-written.
 */
#include "cli/cli_openmetrics.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "publisher/snapshot.h"

const char *om_content_type(enum om_format fmt)
{
    return fmt == OM_PROMETHEUS ? OM_CONTENT_TYPE_PROMETHEUS : OM_CONTENT_TYPE_OPENMETRICS;
}

/* ---- names ---- */

/* Every name a family of base name b may emit, whatever its type: a family
 * owns all of them, so that no sample name of one family can be another's. */
static const char *const owned_suffixes[] = {"", "_total", "_created", "_count", "_sum", "_bucket", "_info"};
#define N_OWNED (sizeof owned_suffixes / sizeof *owned_suffixes)

struct names {
    json_t *used;    /* object used as a set of taken names */
};

static bool names_free(struct names *nm, const char *base)
{
    char buf[4096];
    for (size_t i = 0; i < N_OWNED; i++) {
        snprintf(buf, sizeof buf, "%s%s", base, owned_suffixes[i]);
        if (json_object_get(nm->used, buf))
            return false;
    }
    return true;
}

static int names_take(struct names *nm, const char *base)
{
    char buf[4096];
    for (size_t i = 0; i < N_OWNED; i++) {
        snprintf(buf, sizeof buf, "%s%s", base, owned_suffixes[i]);
        if (json_object_set_new_nocheck(nm->used, buf, json_null()))
            return -1;
    }
    return 0;
}

/* "obsd_" + name mapped to [a-zA-Z0-9_:] (one '_' per character that is not,
 * or per byte of malformed UTF-8), minus a trailing "_total" when strip_total;
 * then made unique. Returns a malloc'd name, or NULL when out of memory. */
static char *family_name(struct names *nm, const char *name, const char *suffix, bool strip_total)
{
    size_t n = strlen(name);
    /* at most 3000 bytes of the name: a family name is a key of the set */
    if (n > 3000)
        n = 3000;
    char *out = malloc(n + strlen(suffix) + 32);
    if (!out)
        return NULL;
    size_t k = 0;
    if (strncmp(name, "obsd_", 5)) {
        memcpy(out, "obsd_", 5);
        k = 5;
    }
    const unsigned char *p = (const unsigned char *)name;
    for (size_t left = n; left;) {
        uint32_t cp;
        size_t len = obsd_utf8_decode(p, left, &cp);
        bool ok = len == 1 && ((cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z') ||
                               (cp >= '0' && cp <= '9') || cp == '_' || cp == ':');
        out[k++] = ok ? (char)cp : '_';
        len = len ? len : 1;
        p += len;
        left -= len;
    }
    out[k] = 0;
    if (strip_total && k > 6 + 5 && !strcmp(out + k - 6, "_total"))
        out[k -= 6] = 0;
    strcat(out, suffix);
    if (names_free(nm, out)) {
        if (names_take(nm, out)) {
            free(out);
            return NULL;
        }
        return out;
    }
    size_t base = strlen(out);
    for (unsigned i = 2;; i++) {
        snprintf(out + base, 24, "_%u", i);
        if (names_free(nm, out))
            break;
    }
    if (names_take(nm, out)) {
        free(out);
        return NULL;
    }
    return out;
}

/* ---- text ---- */

/* A label value (or, with help, a HELP text): \ " and LF escaped (a HELP of
 * the 0.0.4 format escapes only \ and LF), malformed UTF-8 as U+FFFD. */
static void escaped(FILE *f, const char *s, bool help, enum om_format fmt)
{
    const unsigned char *p = (const unsigned char *)(s ? s : "");
    size_t n = strlen((const char *)p);
    while (n) {
        uint32_t cp;
        size_t len = obsd_utf8_decode(p, n, &cp);
        if (!len) {
            fputs(OBSD_UTF8_REPLACEMENT, f);
            len = 1;
        } else if (cp == '\\') {
            fputs("\\\\", f);
        } else if (cp == '\n') {
            fputs("\\n", f);
        } else if (cp == '"' && !(help && fmt == OM_PROMETHEUS)) {
            fputs("\\\"", f);
        } else {
            fwrite(p, 1, len, f);
        }
        p += len;
        n -= len;
    }
}

static void number(FILE *f, double v)
{
    if (isnan(v)) {
        fputs("NaN", f);
    } else if (isinf(v)) {
        fputs(v > 0 ? "+Inf" : "-Inf", f);
    } else {
        /* the shortest of 15 or 17 significant digits that reads back as v */
        char buf[40];
        snprintf(buf, sizeof buf, "%.15g", v);
        if (strtod(buf, NULL) != v)
            snprintf(buf, sizeof buf, "%.17g", v);
        fputs(buf, f);
    }
}

/* A float label value (le, quantile) in canonical form: "2000.0", "0.99". */
static void label_number(FILE *f, double v)
{
    if (isfinite(v) && v == floor(v) && fabs(v) < 1e15)
        fprintf(f, "%.1f", v);
    else
        number(f, v);
}

struct om {
    FILE *f;
    enum om_format fmt;
    const char *run;
    struct names names;
};

static void meta(struct om *o, const char *family, const char *type, const char *help_prefix,
                 const char *help_name, const char *help_suffix)
{
    fprintf(o->f, "# HELP %s %s", family, help_prefix);
    if (help_name) {
        escaped(o->f, help_name, true, o->fmt);
        fputs(help_suffix, o->f);
    }
    fprintf(o->f, "\n# TYPE %s %s\n", family, type);
}

/* name{run="...", extra} (extra: already formatted labels, or NULL) */
static void sample_start(struct om *o, const char *name, const char *suffix)
{
    fprintf(o->f, "%s%s{run=\"", name, suffix);
    escaped(o->f, o->run, false, o->fmt);
    fputc('"', o->f);
}

static void gauge(struct om *o, const char *family, const char *help, double v)
{
    meta(o, family, "gauge", help, NULL, NULL);
    sample_start(o, family, "");
    fputs("} ", o->f);
    number(o->f, v);
    fputc('\n', o->f);
}

static int run_families(struct om *o, const struct snapshot *s, const struct store_run_info *run,
                        bool is_final)
{
    static const char *const builtin[] = {"obsd_run", "obsd_run_final", "obsd_run_pending_tasks",
                                          "obsd_run_incomplete_drain", "obsd_run_start_timestamp_seconds",
                                          "obsd_snapshot_seq", "obsd_snapshot_timestamp_seconds"};
    for (size_t i = 0; i < sizeof builtin / sizeof *builtin; i++)
        if (names_take(&o->names, builtin[i]))
            return -1;
    /* an info family: OpenMetrics has the type; the 0.0.4 format calls it a gauge */
    bool om = o->fmt == OM_OPENMETRICS;
    fprintf(o->f, "# HELP %s the run of this exposition: id, display name and state\n# TYPE %s %s\n",
            om ? "obsd_run" : "obsd_run_info", om ? "obsd_run" : "obsd_run_info", om ? "info" : "gauge");
    sample_start(o, "obsd_run_info", "");
    fputs(",name=\"", o->f);
    escaped(o->f, run->name, false, o->fmt);
    fprintf(o->f, "\",state=\"%s\"} 1\n", obsd_run_state_name(s->state));
    gauge(o, "obsd_run_final", "1 when this is the run's final snapshot, 0 while the run goes on", is_final);
    gauge(o, "obsd_run_pending_tasks", "tokenizations not yet counted", (double)s->n_pending_tasks);
    gauge(o, "obsd_run_incomplete_drain",
          "1 when the run is complete with tokenizations pending: token counts are partial",
          s->state == OBSD_RUN_COMPLETE && s->n_pending_tasks > 0);
    gauge(o, "obsd_run_start_timestamp_seconds", "when the run started (Unix time)", (double)run->start_ns / 1e9);
    gauge(o, "obsd_snapshot_seq", "seq of the exposed snapshot within the run", (double)s->seq);
    gauge(o, "obsd_snapshot_timestamp_seconds", "when the exposed snapshot was taken (Unix time)",
          (double)s->timestamp_ns / 1e9);
    return 0;
}

static int counter_family(struct om *o, const struct snap_counter *c)
{
    /* A negative total is not a counter (libobsd counters take signed deltas). */
    bool as_counter = !c->is_float && c->ivalue >= 0;
    char *fam = family_name(&o->names, c->name, "", as_counter);
    if (!fam)
        return -1;
    bool om = o->fmt == OM_OPENMETRICS;
    if (as_counter) {
        /* OpenMetrics names the family without _total, the 0.0.4 format with it */
        char *sample = malloc(strlen(fam) + 8);
        if (!sample) {
            free(fam);
            return -1;
        }
        sprintf(sample, "%s_total", fam);
        meta(o, om ? fam : sample, "counter", "counter ", c->name, "");
        sample_start(o, sample, "");
        fprintf(o->f, "} %" PRId64 "\n", c->ivalue);
        free(sample);
    } else {
        meta(o, fam, "gauge", c->is_float ? "gauge " : "counter (negative, so exposed as a gauge) ", c->name, "");
        sample_start(o, fam, "");
        fputs("} ", o->f);
        number(o->f, c->is_float ? c->fvalue : (double)c->ivalue);
        fputc('\n', o->f);
    }
    free(fam);
    return 0;
}

static int series_families(struct om *o, const struct snap_series *sr)
{
    char *sum = family_name(&o->names, sr->name, "", false);
    char *hist = sum ? family_name(&o->names, sr->name, "_histogram", false) : NULL;
    if (!hist) {
        free(sum);
        return -1;
    }
    FILE *f = o->f;
    static const struct { int idx; double q; } quantiles[] = {{7, 0.5}, {4, 0.9}, {1, 0.99}, {0, 0.999}};
    meta(o, sum, "summary", "series ", sr->name,
         sr->exact ? ": quantiles are observed values (exact)" : ": quantiles from the histogram (approximate)");
    for (size_t i = 0; i < 4; i++) {
        sample_start(o, sum, "");
        fputs(",quantile=\"", f);
        label_number(f, quantiles[i].q);
        fputs("\"} ", f);
        number(f, sr->count ? sr->percentiles[quantiles[i].idx] : NAN);
        fputc('\n', f);
    }
    sample_start(o, sum, "_sum");
    fputs("} ", f);
    number(f, sr->total);
    fputc('\n', f);
    sample_start(o, sum, "_count");
    fprintf(f, "} %" PRIu64 "\n", sr->count);

    /* Buckets must be cumulative with strictly increasing finite le and never
     * above the count; a bucket that would break that is merged into the next. */
    meta(o, hist, "histogram", "series ", sr->name,
         ": the snapshot's log-spaced buckets (edges follow the observed range, so they move between snapshots)");
    uint64_t cum = 0;
    double last_le = -INFINITY;
    for (size_t i = 0; i < sr->n_buckets; i++) {
        const struct snap_bucket *b = &sr->buckets[i];
        cum += b->count;
        if (cum > sr->count)
            cum = sr->count;
        if (!isfinite(b->hi) || b->hi <= last_le)
            continue;
        last_le = b->hi;
        sample_start(o, hist, "_bucket");
        fputs(",le=\"", f);
        label_number(f, b->hi);
        fprintf(f, "\"} %" PRIu64 "\n", cum);
    }
    sample_start(o, hist, "_bucket");
    fprintf(f, ",le=\"+Inf\"} %" PRIu64 "\n", sr->count);
    sample_start(o, hist, "_sum");
    fputs("} ", f);
    number(f, sr->total);
    fputc('\n', f);
    sample_start(o, hist, "_count");
    fprintf(f, "} %" PRIu64 "\n", sr->count);
    free(sum);
    free(hist);
    return 0;
}

char *om_render(const struct snapshot *snap, const struct store_run_info *run, bool is_final,
                enum om_format fmt, size_t *len)
{
    char *buf = NULL;
    size_t size = 0;
    FILE *f = open_memstream(&buf, &size);
    if (!f)
        return NULL;
    struct om o = {.f = f, .fmt = fmt, .run = run->id, .names = {json_object()}};
    int rc = o.names.used ? run_families(&o, snap, run, is_final) : -1;
    for (size_t i = 0; !rc && i < snap->n_counters; i++)
        rc = counter_family(&o, &snap->counters[i]);
    for (size_t i = 0; !rc && i < snap->n_series; i++)
        rc = series_families(&o, &snap->series[i]);
    if (fmt == OM_OPENMETRICS)
        fputs("# EOF\n", f);
    json_decref(o.names.used);
    if (fclose(f) || rc) {
        free(buf);
        return NULL;
    }
    *len = size;
    return buf;
}

/* ---- content negotiation ---- */

/* q of one Accept element ("type/sub;a=b;q=0.5"), 1 when absent. */
static double accept_q(const char *params, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (params[i] != ';')
            continue;
        size_t j = i + 1;
        while (j < n && (params[j] == ' ' || params[j] == '\t'))
            j++;
        if (j + 1 < n && (params[j] == 'q' || params[j] == 'Q') && params[j + 1] == '=') {
            char num[16];
            size_t k = 0;
            for (j += 2; j < n && k + 1 < sizeof num && params[j] != ';'; j++)
                num[k++] = params[j];
            num[k] = 0;
            char *end;
            double q = strtod(num, &end);
            return end != num && q >= 0 && q <= 1 ? q : 0;
        }
    }
    return 1;
}

enum om_format om_negotiate(const char *accept)
{
    if (!accept)
        return OM_OPENMETRICS;
    double q_om = -1, q_text = -1, q_any = -1, q_text_any = -1;
    const char *p = accept;
    while (*p) {
        const char *end = strchr(p, ',');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        while (n && (*p == ' ' || *p == '\t'))
            p++, n--;
        size_t type_len = 0;
        while (type_len < n && p[type_len] != ';' && p[type_len] != ' ')
            type_len++;
        double q = accept_q(p + type_len, n - type_len);
        if (type_len == 28 && !strncasecmp(p, "application/openmetrics-text", 28))
            q_om = fmax(q_om, q);
        else if (type_len == 10 && !strncasecmp(p, "text/plain", 10))
            q_text = fmax(q_text, q);
        else if (type_len == 3 && !strncmp(p, "*/*", 3))
            q_any = fmax(q_any, q);
        else if (type_len == 6 && !strncasecmp(p, "text/*", 6))
            q_text_any = fmax(q_text_any, q);
        p += n;
        if (*p == ',')
            p++;
    }
    /* a type named outright wins over a wildcard */
    if (q_om < 0)
        q_om = q_any;
    if (q_text < 0)
        q_text = q_text_any >= 0 ? q_text_any : q_any;
    return q_text > 0 && q_text > q_om ? OM_PROMETHEUS : OM_OPENMETRICS;
}
