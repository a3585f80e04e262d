/* metrics.c: metric table (chained hash on name+kind) and key-id cache. */
#include "engine/metrics.h"

#include "engine/engine_internal.h"
#include "shm/wire.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void metrics_init(struct metric_table *t, struct series_env *env)
{
    memset(t, 0, sizeof *t);
    t->env = env;
}

void metrics_free(struct metric_table *t)
{
    struct metric *m = t->first;
    while (m) {
        struct metric *next = m->order_next;
        series_snap_release(&m->snap);
        series_destroy(&m->series);
        free(m);
        m = next;
    }
    free(t->buckets);
    free(t->by_key);
    struct series_env *env = t->env;
    metrics_init(t, env);
}

void metrics_reset(struct metric_table *t)
{
    for (struct metric *m = t->first; m; m = m->order_next) {
        m->touched = false;
        m->counter = 0;
        m->gauge = 0;
        series_reset(&m->series);
        series_snap_release(&m->snap);
        m->snap_valid = false;
    }
}

void metrics_forget_keys(struct metric_table *t)
{
    free(t->by_key);
    t->by_key = NULL;
    t->n_by_key = 0;
}

static size_t hash_name(const char *s, enum metric_kind kind)
{
    uint64_t h = 1469598103934665603ull ^ (uint64_t)kind;   /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return (size_t)h;
}

static int grow(struct metric_table *t)
{
    size_t n = t->n_buckets ? t->n_buckets * 2 : 256;
    struct metric **b = calloc(n, sizeof *b);
    if (!b)
        return -1;
    for (struct metric *m = t->first; m; m = m->order_next) {
        size_t i = hash_name(m->series.name, m->kind) & (n - 1);
        m->next = b[i];
        b[i] = m;
    }
    free(t->buckets);
    t->buckets = b;
    t->n_buckets = n;
    return 0;
}

struct metric *metrics_get(struct metric_table *t, const char *name, enum metric_kind kind)
{
    if (t->n_buckets) {
        size_t i = hash_name(name, kind) & (t->n_buckets - 1);
        for (struct metric *m = t->buckets[i]; m; m = m->next)
            if (m->kind == kind && !strcmp(m->series.name, name))
                return m;
    }
    if (t->n_entries + 1 > t->n_buckets / 2 && grow(t) < 0)
        return NULL;
    struct metric *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    /* engine series are histogram-only: exact series belong to modules */
    if (series_init(&m->series, name, false, t->env) < 0) {
        free(m);
        return NULL;
    }
    m->kind = kind;
    size_t i = hash_name(name, kind) & (t->n_buckets - 1);
    m->next = t->buckets[i];
    t->buckets[i] = m;
    if (t->last)
        t->last->order_next = m;
    else
        t->first = m;
    t->last = m;
    t->n_entries++;
    return m;
}

struct metric *metrics_by_key(struct metric_table *t, uint32_t key, enum metric_kind kind,
                              metrics_key_name_fn name_fn, void *ctx)
{
    if (key < t->n_by_key && t->by_key[key][kind])
        return t->by_key[key][kind];
    const char *name = name_fn(ctx, key);
    if (!name)
        return NULL;
    struct metric *m = metrics_get(t, name, kind);
    if (!m || key >= METRICS_MAX_CACHED_KEY)
        return m;
    if (key >= t->n_by_key) {
        size_t n = t->n_by_key ? t->n_by_key : 64;
        while (n <= key)
            n *= 2;
        void *p = realloc(t->by_key, n * sizeof *t->by_key);
        if (!p)
            return m;
        t->by_key = p;
        memset(&t->by_key[t->n_by_key], 0, (n - t->n_by_key) * sizeof *t->by_key);
        t->n_by_key = n;
    }
    t->by_key[key][kind] = m;
    return m;
}

int metrics_core_record(struct metric_table *t, const struct shm_record *rec,
                        metrics_key_name_fn name_fn, void *ctx)
{
    struct metric *m;
    switch (rec->type) {
    case OBSD_REC_SPAN: {
        struct obsd_pl_span pl;
        if (rec->len != sizeof pl)
            return -1;
        memcpy(&pl, rec->payload, sizeof pl);
        if (pl.end_ns < pl.start_ns || !(m = metrics_by_key(t, rec->key, METRIC_SERIES, name_fn, ctx)))
            return -1;
        m->touched = true;
        series_add(&m->series, pl.end_ns - pl.start_ns);
        return 0;
    }
    case OBSD_REC_VALUE: {
        struct obsd_pl_value pl;
        if (rec->len != sizeof pl || !(m = metrics_by_key(t, rec->key, METRIC_SERIES, name_fn, ctx)))
            return -1;
        memcpy(&pl, rec->payload, sizeof pl);
        m->touched = true;
        series_add(&m->series, pl.value);
        return 0;
    }
    case OBSD_REC_COUNTER: {
        struct obsd_pl_counter pl;
        if (rec->len != sizeof pl || !(m = metrics_by_key(t, rec->key, METRIC_COUNTER, name_fn, ctx)))
            return -1;
        memcpy(&pl, rec->payload, sizeof pl);
        m->touched = true;
        m->counter = (int64_t)((uint64_t)m->counter + (uint64_t)pl.delta);   /* wraps, never UB */
        return 0;
    }
    case OBSD_REC_GAUGE: {
        struct obsd_pl_gauge pl;
        if (rec->len != sizeof pl)
            return -1;
        memcpy(&pl, rec->payload, sizeof pl);
        if (!isfinite(pl.value) || !(m = metrics_by_key(t, rec->key, METRIC_GAUGE, name_fn, ctx)))
            return -1;
        m->touched = true;
        m->gauge = pl.value;
        return 0;
    }
    default:
        return -2;
    }
}

void metrics_batch_flush(struct metric_table *t, struct metrics_batch *b,
                         metrics_key_name_fn name_fn, void *ctx)
{
    struct metric *m[METRICS_BATCH];
    size_t n = b->n;
    for (size_t i = 0; i < n; i++) {
        m[i] = metrics_by_key(t, b->key[i], METRIC_SERIES, name_fn, ctx);
        if (m[i])
            hist_prefetch(&m[i]->series.hist, b->value[i], 0);
    }
    for (size_t i = 0; i < n; i++)
        if (m[i])
            hist_prefetch(&m[i]->series.hist, b->value[i], 1);
    for (size_t i = 0; i < n; i++)
        if (m[i])
            hist_prefetch(&m[i]->series.hist, b->value[i], 2);
    for (size_t i = 0; i < n; i++) {
        if (!m[i]) {
            b->rejected++;
            continue;
        }
        m[i]->touched = true;
        series_add(&m[i]->series, b->value[i]);
    }
    b->n = 0;
}

int metrics_batch_record(struct metric_table *t, struct metrics_batch *b, const struct shm_record *rec,
                         metrics_key_name_fn name_fn, void *ctx)
{
    uint64_t v;
    if (rec->type == OBSD_REC_SPAN) {
        struct obsd_pl_span pl;
        if (rec->len != sizeof pl) {
            b->rejected++;
            return 0;
        }
        memcpy(&pl, rec->payload, sizeof pl);
        if (pl.end_ns < pl.start_ns) {
            b->rejected++;
            return 0;
        }
        v = pl.end_ns - pl.start_ns;
    } else if (rec->type == OBSD_REC_VALUE) {
        struct obsd_pl_value pl;
        if (rec->len != sizeof pl) {
            b->rejected++;
            return 0;
        }
        memcpy(&pl, rec->payload, sizeof pl);
        v = pl.value;
    } else {
        return -2;
    }
    b->key[b->n] = rec->key;
    b->value[b->n] = v;
    if (++b->n == METRICS_BATCH)
        metrics_batch_flush(t, b, name_fn, ctx);
    return 0;
}

int metrics_snapshot(struct metric_table *t, struct snapshot *snap, bool final, uint32_t n_buckets,
                     size_t *n_counters, size_t *n_series)
{
    int rc = 0;
    size_t nc = 0, ns = 0;
    for (struct metric *m = t->first; m; m = m->order_next) {
        if (!m->touched)
            continue;
        if (m->kind == METRIC_COUNTER) {
            rc |= snapshot_add_counter(snap, m->series.name, m->counter);
            nc++;
        } else if (m->kind == METRIC_GAUGE) {
            rc |= snapshot_add_gauge(snap, m->series.name, m->gauge);
            nc++;
        }
    }
    for (struct metric *m = t->first; m; m = m->order_next) {
        if (!m->touched || m->kind != METRIC_SERIES)
            continue;
        /* an unchanged series is not recomputed (engine series: live == final) */
        if (!m->snap_valid || m->snap.count != m->series.count || m->series.exact) {
            series_snap_release(&m->snap);
            m->snap_valid = false;
            if (series_snapshot(&m->series, final, n_buckets, &m->snap) < 0) {
                engine_log(1, "series %s: cannot build its statistics", m->series.name);
                rc = -1;
                continue;
            }
            m->snap_valid = true;
        }
        rc |= snapshot_add_series(snap, &m->snap);
        ns++;
    }
    *n_counters = nc;
    *n_series = ns;
    return rc ? -1 : 0;
}
