/*
 * snapshot.c: the snapshot model and its JSON form (snapshot.h).
 *
 * The JSON form is what `obsctl show --json` prints and what live subscribers
 * receive: the fixed fields, then "metrics" (counters first, then series, in
 * the order they were added), then one top-level key per section. Floats that
 * are not finite print as null and names that are not UTF-8 get U+FFFD for
 * their bad bytes (obsd_json_text), so the output is strict JSON.
 */
#include "publisher/snapshot.h"

#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <utf8proc.h>

const double obsd_percentile_grid[OBSD_N_PERCENTILES] = {
    99.9, 99.0, 97.0, 95.0, 90.0, 80.0, 75.0, 50.0, 25.0, 10.0, 5.0, 1.0,
};

static const char *const state_names[] = {
    [OBSD_RUN_INITIALIZE] = "initialize",
    [OBSD_RUN_LIVE] = "live",
    [OBSD_RUN_DRAINING] = "draining",
    [OBSD_RUN_COMPLETE] = "complete",
    [OBSD_RUN_INTERRUPTED] = "interrupted",
};

const char *obsd_run_state_name(enum obsd_run_state s)
{
    if ((unsigned)s < sizeof state_names / sizeof state_names[0])
        return state_names[s];
    return "unknown";
}

int obsd_run_state_parse(const char *name)
{
    if (!name)
        return -1;
    for (size_t i = 0; i < sizeof state_names / sizeof state_names[0]; i++)
        if (!strcmp(name, state_names[i]))
            return (int)i;
    return -1;
}

struct snapshot *snapshot_new(const char *run, uint64_t seq, enum obsd_run_state state)
{
    struct snapshot *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->sections = json_object();
    if (!s->sections) {
        free(s);
        return NULL;
    }
    s->schema_version = OBSD_SNAPSHOT_SCHEMA_VERSION;
    snprintf(s->run, sizeof s->run, "%s", run ? run : "");
    s->seq = seq;
    s->state = state;
    return s;
}

void snapshot_free(struct snapshot *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->n_counters; i++)
        free(s->counters[i].name);
    for (size_t i = s->n_borrowed; i < s->n_series; i++) {
        free(s->series[i].name);
        free(s->series[i].buckets);
    }
    free(s->counters);
    free(s->series);
    json_decref(s->sections);
    free(s);
}

uint64_t snapshot_hint_epoch_new(void)
{
    /* process-wide, so that two kept snapshots (or one laid out anew) never
     * share an epoch that a store could take for the one it persisted */
    static _Atomic uint64_t next = 1;
    return atomic_fetch_add_explicit(&next, 1, memory_order_relaxed);
}

static int grow(void **arr, size_t *cap, size_t n, size_t elem)
{
    if (n < *cap)
        return 0;
    size_t ncap = *cap ? *cap * 2 : 16;
    void *p = realloc(*arr, ncap * elem);
    if (!p)
        return -1;
    *arr = p;
    *cap = ncap;
    return 0;
}

/* The series array on a 256-byte boundary (see struct snap_series). */
static int grow_series(struct snapshot *s)
{
    if (s->n_series < s->cap_series)
        return 0;
    size_t ncap = s->cap_series ? s->cap_series * 2 : 16;
    void *p = aligned_alloc(256, ncap * sizeof *s->series);
    if (!p)
        return -1;
    if (s->n_series)
        memcpy(p, s->series, s->n_series * sizeof *s->series);
    free(s->series);
    s->series = p;
    s->cap_series = ncap;
    return 0;
}

static int add_counter(struct snapshot *s, const char *name, bool is_float, int64_t iv, double fv)
{
    if (!name || grow((void **)&s->counters, &s->cap_counters, s->n_counters, sizeof *s->counters))
        return -1;
    char *copy = strdup(name);
    if (!copy)
        return -1;
    s->counters[s->n_counters++] = (struct snap_counter){
        .name = copy, .is_float = is_float, .ivalue = iv, .fvalue = fv};
    return 0;
}

int snapshot_add_counter(struct snapshot *s, const char *name, int64_t value)
{
    return add_counter(s, name, false, value, (double)value);
}

int snapshot_add_gauge(struct snapshot *s, const char *name, double value)
{
    return add_counter(s, name, true, 0, value);
}

int snapshot_add_series(struct snapshot *s, const struct snap_series *series)
{
    if (!series || !series->name ||
        grow_series(s))
        return -1;
    if (series->n_buckets && !series->buckets)
        return -1;
    struct snap_series copy = *series;
    copy.name = strdup(series->name);
    copy.buckets = NULL;
    /* a copy is nobody's kept entry: its hints would speak for another one */
    copy.hint_placed = copy.hint_changed = copy.hint_edges = 0;
    copy.hint_mask = SNAP_HINT_ALL_BUCKETS;
    copy.hint_fields = UINT32_MAX;
    if (!copy.name)
        return -1;
    if (series->n_buckets) {
        copy.buckets = malloc(series->n_buckets * sizeof *copy.buckets);
        if (!copy.buckets) {
            free(copy.name);
            return -1;
        }
        memcpy(copy.buckets, series->buckets, series->n_buckets * sizeof *copy.buckets);
    }
    s->series[s->n_series++] = copy;
    return 0;
}

void snapshot_truncate(struct snapshot *s, size_t n_counters, size_t n_series)
{
    for (size_t i = n_counters; i < s->n_counters; i++)
        free(s->counters[i].name);
    if (n_counters < s->n_counters)
        s->n_counters = n_counters;
    for (size_t i = n_series > s->n_borrowed ? n_series : s->n_borrowed; i < s->n_series; i++) {
        free(s->series[i].name);
        free(s->series[i].buckets);
    }
    if (n_series < s->n_series)
        s->n_series = n_series;
    if (n_series < s->n_borrowed)
        s->n_borrowed = n_series;
}

int snapshot_update_series(struct snapshot *s, size_t i, const struct snap_series *from)
{
    if (i >= s->n_series || (from->n_buckets && !from->buckets))
        return -1;
    struct snap_series *to = &s->series[i];
    if (i < s->n_borrowed) {
        *to = *from;
        return 0;
    }
    struct snap_bucket *b = to->buckets;
    if (from->n_buckets != to->n_buckets) {
        b = from->n_buckets ? malloc(from->n_buckets * sizeof *b) : NULL;
        if (from->n_buckets && !b)
            return -1;
        free(to->buckets);
    }
    if (from->n_buckets)
        memcpy(b, from->buckets, from->n_buckets * sizeof *b);
    char *name = to->name;
    *to = *from;
    to->name = name;
    to->buckets = b;
    to->hint_placed = to->hint_changed = to->hint_edges = 0;   /* see snapshot_add_series */
    to->hint_mask = SNAP_HINT_ALL_BUCKETS;
    to->hint_fields = UINT32_MAX;
    return 0;
}

int snapshot_add_series_ref(struct snapshot *s, const struct snap_series *series)
{
    if (!series || !series->name || s->n_series != s->n_borrowed ||
        (series->n_buckets && !series->buckets) ||
        grow_series(s))
        return -1;
    s->series[s->n_series++] = *series;
    s->n_borrowed++;
    return 0;
}

int snapshot_set_section(struct snapshot *s, const char *name, json_t *value)
{
    if (!name || !value)
        return -1;
    return json_object_set_new(s->sections, name, value) ? -1 : 0;
}

const struct snap_counter *snapshot_find_counter(const struct snapshot *s, const char *name)
{
    for (size_t i = 0; i < s->n_counters; i++)
        if (!strcmp(s->counters[i].name, name))
            return &s->counters[i];
    return NULL;
}

const struct snap_series *snapshot_find_series(const struct snapshot *s, const char *name)
{
    for (size_t i = 0; i < s->n_series; i++)
        if (!strcmp(s->series[i].name, name))
            return &s->series[i];
    return NULL;
}

/* ---- text from producers (snapshot.h) ---- */

size_t obsd_utf8_decode(const unsigned char *s, size_t n, uint32_t *cp)
{
    utf8proc_int32_t c;
    utf8proc_ssize_t len = utf8proc_iterate(s, (utf8proc_ssize_t)n, &c);
    if (len <= 0)
        return 0;
    *cp = (uint32_t)c;
    return (size_t)len;
}

size_t obsd_utf8_width(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t n = strlen(s), w = 0;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t len = obsd_utf8_decode(p + i, n - i, &cp);
        if (!len) {
            w++;
            i++;
            continue;
        }
        int cw = utf8proc_charwidth((utf8proc_int32_t)cp);
        w += cw > 0 ? (size_t)cw : 0;
        i += len;
    }
    return w;
}

bool obsd_utf8_valid(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        if (p[i] < 0x80) {
            i++;
            continue;
        }
        uint32_t cp;
        size_t len = obsd_utf8_decode(p + i, n - i, &cp);
        if (!len)
            return false;
        i += len;
    }
    return true;
}

char *obsd_utf8_repair(const char *s)
{
    size_t n = strlen(s);
    /* at worst every byte becomes the 3 bytes of U+FFFD */
    char *out = malloc(3 * n + 1);
    if (!out)
        return NULL;
    const unsigned char *p = (const unsigned char *)s;
    size_t k = 0;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t len = obsd_utf8_decode(p + i, n - i, &cp);
        if (len) {
            memcpy(out + k, p + i, len);
            k += len;
            i += len;
        } else {
            memcpy(out + k, OBSD_UTF8_REPLACEMENT, 3);
            k += 3;
            i++;
        }
    }
    out[k] = '\0';
    return out;
}

json_t *obsd_json_text(const char *s)
{
    if (!s)
        return NULL;
    size_t n = strlen(s);
    if (obsd_utf8_valid(s, n))
        return json_stringn_nocheck(s, n);
    char *r = obsd_utf8_repair(s);
    json_t *j = r ? json_string_nocheck(r) : NULL;
    free(r);
    return j;
}

/* ---- JSON ---- */

static json_t *jreal(double v)
{
    return isfinite(v) ? json_real(v) : json_null();
}

void obsd_percentile_key(int i, char *buf, size_t len)
{
    snprintf(buf, len, "%.1f", obsd_percentile_grid[i]);
}

static int set(json_t *o, const char *k, json_t *v)
{
    return json_object_set_new(o, k, v);
}

/* Every helper below consumes what it is given, also on failure (set() and
 * json_array_append_new() release the value; a NULL value is a failure), so
 * one check at the end releases everything built so far. */
static json_t *bucket_to_json(const struct snap_bucket *b)
{
    json_t *a = json_array();
    int bad = json_array_append_new(a, jreal(b->lo));
    bad |= json_array_append_new(a, jreal(b->hi));
    bad |= json_array_append_new(a, json_integer((json_int_t)b->count));
    if (bad) {
        json_decref(a);
        return NULL;
    }
    return a;
}

static json_t *series_to_json(const struct snap_series *sr)
{
    json_t *o = json_object();
    json_t *pct = json_object();
    json_t *hist = json_array();
    int bad = 0;
    bad |= set(o, "type", json_string("series"));
    bad |= set(o, "name", obsd_json_text(sr->name));
    bad |= set(o, "count", json_integer((json_int_t)sr->count));
    bad |= set(o, "total", jreal(sr->total));
    bad |= set(o, "min", jreal(sr->min));
    bad |= set(o, "max", jreal(sr->max));
    bad |= set(o, "sum_sq", jreal(sr->sum_sq));
    bad |= set(o, "exact", json_boolean(sr->exact));
    for (int i = 0; i < OBSD_N_PERCENTILES && pct; i++) {
        char k[16];
        obsd_percentile_key(i, k, sizeof k);
        bad |= set(pct, k, jreal(sr->percentiles[i]));
    }
    for (size_t i = 0; i < sr->n_buckets && hist; i++)
        bad |= json_array_append_new(hist, bucket_to_json(&sr->buckets[i]));
    /* both handed over whatever happened above, so that neither leaks */
    bad |= set(o, "percentiles", pct);
    bad |= set(o, "histogram", hist);
    if (bad) {
        json_decref(o);
        return NULL;
    }
    return o;
}

static json_t *counter_to_json(const struct snap_counter *c)
{
    json_t *o = json_object();
    int bad = 0;
    bad |= set(o, "type", json_string("counter"));
    bad |= set(o, "name", obsd_json_text(c->name));
    bad |= set(o, "value", c->is_float ? jreal(c->fvalue) : json_integer(c->ivalue));
    if (bad) {
        json_decref(o);
        return NULL;
    }
    return o;
}

json_t *snapshot_to_json(const struct snapshot *s)
{
    json_t *o = json_object();
    json_t *metrics = json_array();
    int bad = 0;
    bad |= set(o, "schema_version", json_integer(s->schema_version));
    bad |= set(o, "run", obsd_json_text(s->run));
    bad |= set(o, "seq", json_integer((json_int_t)s->seq));
    bad |= set(o, "timestamp_ns", json_integer((json_int_t)s->timestamp_ns));
    bad |= set(o, "state", json_string(obsd_run_state_name(s->state)));
    bad |= set(o, "n_pending_tasks", json_integer((json_int_t)s->n_pending_tasks));
    for (size_t i = 0; i < s->n_counters && metrics; i++)
        bad |= json_array_append_new(metrics, counter_to_json(&s->counters[i]));
    for (size_t i = 0; i < s->n_series && metrics; i++)
        bad |= json_array_append_new(metrics, series_to_json(&s->series[i]));
    bad |= set(o, "metrics", metrics);
    const char *key;
    json_t *value;
    if (!bad) {
        json_object_foreach(s->sections, key, value) {
            if (!json_object_get(o, key)) /* a section never shadows a fixed field */
                bad |= json_object_set(o, key, value);
        }
    }
    if (bad) {
        json_decref(o);
        return NULL;
    }
    return o;
}

/* ---- parsing ---- */

static const char *const fixed_keys[] = {
    "schema_version", "run", "seq", "timestamp_ns", "state", "n_pending_tasks", "metrics",
};

static bool is_fixed_key(const char *k)
{
    for (size_t i = 0; i < sizeof fixed_keys / sizeof fixed_keys[0]; i++)
        if (!strcmp(k, fixed_keys[i]))
            return true;
    return false;
}

/* A number or null (NaN); false if v is something else. */
static bool get_double(const json_t *v, double *out)
{
    if (json_is_null(v)) {
        *out = NAN;
        return true;
    }
    if (!json_is_number(v))
        return false;
    *out = json_number_value(v);
    return true;
}

static bool get_uint(const json_t *o, const char *k, uint64_t *out)
{
    const json_t *v = json_object_get(o, k);
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return false;
    *out = (uint64_t)json_integer_value(v);
    return true;
}

#define FAIL(...)                                                                             \
    do {                                                                                      \
        snprintf(err, errlen, __VA_ARGS__);                                                   \
        goto fail;                                                                            \
    } while (0)

static int series_from_json(struct snapshot *s, const json_t *m, size_t idx, char *err, size_t errlen)
{
    struct snap_series sr = {0};
    const char *name = json_string_value(json_object_get(m, "name"));
    if (!name)
        FAIL("metrics[%zu]: missing \"name\"", idx);
    sr.name = (char *)name;
    if (!get_uint(m, "count", &sr.count))
        FAIL("series %s: \"count\" is not a non-negative integer", name);
    static const char *const dk[] = {"total", "min", "max", "sum_sq"};
    double *dv[] = {&sr.total, &sr.min, &sr.max, &sr.sum_sq};
    for (int i = 0; i < 4; i++)
        if (!get_double(json_object_get(m, dk[i]), dv[i]))
            FAIL("series %s: \"%s\" is not a number", name, dk[i]);
    sr.exact = json_is_true(json_object_get(m, "exact"));
    const json_t *pct = json_object_get(m, "percentiles");
    if (!json_is_object(pct))
        FAIL("series %s: \"percentiles\" is not an object", name);
    for (int i = 0; i < OBSD_N_PERCENTILES; i++) {
        char k[16];
        obsd_percentile_key(i, k, sizeof k);
        const json_t *v = json_object_get(pct, k);
        if (!v)
            sr.percentiles[i] = NAN;
        else if (!get_double(v, &sr.percentiles[i]))
            FAIL("series %s: percentile %s is not a number", name, k);
    }
    const json_t *hist = json_object_get(m, "histogram");
    if (hist && !json_is_array(hist))
        FAIL("series %s: \"histogram\" is not an array", name);
    sr.n_buckets = json_array_size(hist);
    if (sr.n_buckets) {
        sr.buckets = calloc(sr.n_buckets, sizeof *sr.buckets);
        if (!sr.buckets)
            FAIL("out of memory");
    }
    for (size_t i = 0; i < sr.n_buckets; i++) {
        const json_t *b = json_array_get(hist, i);
        const json_t *c = json_array_get(b, 2);
        if (json_array_size(b) != 3 || !get_double(json_array_get(b, 0), &sr.buckets[i].lo) ||
            !get_double(json_array_get(b, 1), &sr.buckets[i].hi) || !json_is_integer(c) ||
            json_integer_value(c) < 0)
            FAIL("series %s: histogram[%zu] is not [lo, hi, count]", name, i);
        sr.buckets[i].count = (uint64_t)json_integer_value(c);
    }
    if (snapshot_add_series(s, &sr))
        FAIL("out of memory");
    free(sr.buckets);
    return 0;
fail:
    free(sr.buckets);
    return -1;
}

struct snapshot *snapshot_from_json(const json_t *j, char *err, size_t errlen)
{
    struct snapshot *s = NULL;
    if (!json_is_object(j))
        FAIL("snapshot is not a JSON object");
    const char *run = json_string_value(json_object_get(j, "run"));
    if (!run)
        FAIL("missing \"run\"");
    if (strlen(run) >= sizeof s->run)
        FAIL("run id longer than %zu bytes", sizeof s->run - 1);
    const char *state_name = json_string_value(json_object_get(j, "state"));
    /* A snapshot with no state is treated as interrupted (see obsd-store(5)). */
    int state = state_name ? obsd_run_state_parse(state_name) : OBSD_RUN_INTERRUPTED;
    if (state < 0)
        FAIL("unknown state \"%s\"", state_name);
    uint64_t seq, v;
    if (!get_uint(j, "seq", &seq))
        FAIL("\"seq\" is not a non-negative integer");
    s = snapshot_new(run, seq, (enum obsd_run_state)state);
    if (!s)
        FAIL("out of memory");
    if (!get_uint(j, "schema_version", &v) || v > UINT32_MAX)
        FAIL("\"schema_version\" is not a non-negative integer");
    s->schema_version = (uint32_t)v;
    if (!get_uint(j, "timestamp_ns", &s->timestamp_ns))
        FAIL("\"timestamp_ns\" is not a non-negative integer");
    if (json_object_get(j, "n_pending_tasks") && !get_uint(j, "n_pending_tasks", &s->n_pending_tasks))
        FAIL("\"n_pending_tasks\" is not a non-negative integer");
    const json_t *metrics = json_object_get(j, "metrics");
    if (!json_is_array(metrics))
        FAIL("\"metrics\" is not an array");
    for (size_t i = 0; i < json_array_size(metrics); i++) {
        const json_t *m = json_array_get(metrics, i);
        const char *type = json_string_value(json_object_get(m, "type"));
        if (type && !strcmp(type, "series")) {
            if (series_from_json(s, m, i, err, errlen))
                goto fail;
            continue;
        }
        if (!type || strcmp(type, "counter"))
            FAIL("metrics[%zu]: \"type\" is neither \"counter\" nor \"series\"", i);
        const char *name = json_string_value(json_object_get(m, "name"));
        const json_t *val = json_object_get(m, "value");
        if (!name)
            FAIL("metrics[%zu]: missing \"name\"", i);
        int rc;
        if (json_is_integer(val))
            rc = snapshot_add_counter(s, name, json_integer_value(val));
        else if (json_is_real(val) || json_is_null(val))
            rc = snapshot_add_gauge(s, name, json_is_null(val) ? NAN : json_real_value(val));
        else
            FAIL("counter %s: \"value\" is not a number", name);
        if (rc)
            FAIL("out of memory");
    }
    const char *key;
    json_t *value;
    json_object_foreach((json_t *)j, key, value) {
        if (!is_fixed_key(key) && snapshot_set_section(s, key, json_incref(value)))
            FAIL("out of memory");
    }
    return s;
fail:
    snapshot_free(s);
    return NULL;
}
