/* metrics.c: metric table (chained hash on name+kind) and key-id cache. */
#include "engine/metrics.h"

#include "engine/engine_internal.h"
#include "shm/wire.h"

#include <math.h>
#include <stddef.h>
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
        series_destroy(&m->series);
        free(m);
        m = next;
    }
    free(t->buckets);
    free(t->by_key);
    free(t->scratch);
    free(t->dirty);
    struct series_env *env = t->env;
    metrics_init(t, env);
}

void metrics_reset(struct metric_table *t)
{
    for (struct metric *m = t->first; m; m = m->order_next) {
        m->touched = false;
        m->dirty = false;
        m->snap_pos = METRICS_NO_POS;
        m->counter = 0;
        m->gauge = 0;
        series_reset(&m->series);
    }
    t->n_dirty = 0;
    t->dirty_lost = false;
    t->snap = NULL;      /* the next snapshot starts a fresh layout */
}

void metrics_mark_dirty(struct metric_table *t, struct metric *m)
{
    m->dirty = true;
    m->touched = true;
    if (t->n_dirty == t->cap_dirty) {
        size_t cap = t->cap_dirty ? 2 * t->cap_dirty : 256;
        struct metric **p = realloc(t->dirty, cap * sizeof *p);
        if (!p) {
            t->dirty_lost = true;   /* the next snapshot lays out (and so visits) every entry */
            return;
        }
        t->dirty = p;
        t->cap_dirty = cap;
    }
    t->dirty[t->n_dirty++] = m;
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
    m->ord = t->n_entries;
    m->snap_pos = METRICS_NO_POS;
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
        metrics_touch(t, m);
        series_add(&m->series, pl.end_ns - pl.start_ns);
        return 0;
    }
    case OBSD_REC_VALUE: {
        struct obsd_pl_value pl;
        if (rec->len != sizeof pl || !(m = metrics_by_key(t, rec->key, METRIC_SERIES, name_fn, ctx)))
            return -1;
        memcpy(&pl, rec->payload, sizeof pl);
        metrics_touch(t, m);
        series_add(&m->series, pl.value);
        return 0;
    }
    case OBSD_REC_COUNTER: {
        struct obsd_pl_counter pl;
        if (rec->len != sizeof pl || !(m = metrics_by_key(t, rec->key, METRIC_COUNTER, name_fn, ctx)))
            return -1;
        memcpy(&pl, rec->payload, sizeof pl);
        metrics_touch(t, m);
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
        metrics_touch(t, m);
        m->gauge = pl.value;
        return 0;
    }
    default:
        return -2;
    }
}

/* The cached entry of a series key, or NULL (then metrics_by_key). */
static inline struct metric *cached_series(const struct metric_table *t, uint32_t key)
{
    return key < t->n_by_key ? t->by_key[key][METRIC_SERIES] : NULL;
}

void metrics_batch_flush(struct metric_table *t, struct metrics_batch *b,
                         metrics_key_name_fn name_fn, void *ctx)
{
    struct metric *m[METRICS_BATCH];
    uint32_t idx[METRICS_BATCH];
    uint32_t n = b->n;
    for (uint32_t i = 0; i < n; i++) {
        struct metric *e = cached_series(t, b->key[i]);
        if (__builtin_expect(!e, 0))
            e = metrics_by_key(t, b->key[i], METRIC_SERIES, name_fn, ctx);
        m[i] = e;
        idx[i] = hist_index(b->value[i]);
        if (e) {
            __builtin_prefetch(&e->dirty);
            __builtin_prefetch(&e->series.sum_sq, 1);
            __builtin_prefetch(&e->series.hist.max, 1);
            __builtin_prefetch(&e->series.hist.groups[idx[i] >> HIST_SUB_BITS]);
        }
    }
    for (uint32_t i = 0; i < n; i++) {
        if (!m[i])
            continue;
        const struct hist_group *grp = m[i]->series.hist.groups[idx[i] >> HIST_SUB_BITS];
        if (grp)
            __builtin_prefetch(&grp->ck[(idx[i] >> HIST_CHUNK_BITS) & (HIST_CHUNKS_PER_GROUP - 1)], 1);
    }
    for (uint32_t i = 0; i < n; i++)
        if (m[i])
            hist_prefetch_bucket(&m[i]->series.hist, idx[i]);
    for (uint32_t i = 0; i < n; i++) {
        struct metric *e = m[i];
        if (!e) {
            b->rejected++;
            continue;
        }
        metrics_touch(t, e);
        if (__builtin_expect(!series_add_existing(&e->series, b->value[i], idx[i]), 0))
            series_add(&e->series, b->value[i]);
    }
    b->n = 0;
}

int metrics_batch_record(struct metric_table *t, struct metrics_batch *b, const struct shm_record *rec,
                         metrics_key_name_fn name_fn, void *ctx)
{
    uint64_t v;
    if (rec->type == OBSD_REC_SPAN && rec->len == sizeof(struct obsd_pl_span)) {
        struct obsd_pl_span pl;
        memcpy(&pl, rec->payload, sizeof pl);
        if (pl.end_ns < pl.start_ns) {
            b->rejected++;
            return 0;
        }
        v = pl.end_ns - pl.start_ns;
    } else if (rec->type == OBSD_REC_VALUE && rec->len == sizeof(struct obsd_pl_value)) {
        struct obsd_pl_value pl;
        memcpy(&pl, rec->payload, sizeof pl);
        v = pl.value;
    } else if (rec->type == OBSD_REC_SPAN || rec->type == OBSD_REC_VALUE) {
        b->rejected++;       /* wrong length */
        return 0;
    } else {
        return -2;
    }
    b->key[b->n] = rec->key;
    b->value[b->n] = v;
    if (++b->n == METRICS_BATCH)
        metrics_batch_flush(t, b, name_fn, ctx);
    return 0;
}

/* ---- the table's part of a kept snapshot ---- */

static int class_of(const struct metric *m)
{
    return m->kind == METRIC_SERIES;
}

static void set_counter(struct snap_counter *e, const struct metric *m)
{
    if (m->kind == METRIC_GAUGE) {
        e->is_float = true;
        e->ivalue = 0;
        e->fvalue = m->gauge;
    } else {
        e->is_float = false;
        e->ivalue = m->counter;
        e->fvalue = (double)m->counter;
    }
}

/* count, total, min, max, sum_sq and the percentiles: consecutive words */
#define HINT_FIELDS (5 + OBSD_N_PERCENTILES)
_Static_assert(offsetof(struct snap_series, percentiles) == offsetof(struct snap_series, count) + 40 &&
                   sizeof(double) == sizeof(uint64_t),
               "snap_series summary layout");

/* Change hints (snapshot.h): every call of metrics_snapshot is one version
 * of the snapshot; an entry laid out is placed at it, an entry brought up to
 * date changed at it, with the buckets its live view says it changed. The
 * store trusts them to skip what did not change, so an entry written here
 * must always get its hint_changed (and, for a series, its mask and edges). */
static void hint_series_changed(struct snap_series *e, const struct series *s, uint64_t ver,
                                const uint64_t before[HINT_FIELDS])
{
    uint64_t mask;
    bool edges;
    series_view_changes(s, &mask, &edges);
    uint64_t now[HINT_FIELDS];
    memcpy(now, &e->count, sizeof now);
    uint32_t fields = 0;
    for (int k = 0; k < HINT_FIELDS; k++)
        fields |= (uint32_t)(now[k] != before[k]) << k;
    e->hint_fields = fields;
    e->hint_changed = ver;
    e->hint_mask = mask;
    if (edges)
        e->hint_edges = ver;
    /* the few counts that moved, from the lines the view just wrote */
    if (__builtin_popcountll(mask) <= SNAP_HINT_NCOUNTS)
        for (int k = 0; mask; k++, mask &= mask - 1)
            e->hint_counts[k] = e->buckets[__builtin_ctzll(mask)].count;
}

/* Appends m's entry at the end of its part. */
static int lay_out(struct metric_table *t, struct snapshot *snap, struct metric *m)
{
    int rc;
    uint64_t ver = snap->hint_version;
    if (class_of(m)) {
        struct snap_series v = {0};
        rc = series_live_view(&m->series, t->snap_nb, &v);
        v.hint_placed = v.hint_changed = v.hint_edges = ver;
        v.hint_mask = SNAP_HINT_ALL_BUCKETS;
        v.hint_fields = UINT32_MAX;
        if (rc == 0)
            rc = snapshot_add_series_ref(snap, &v);   /* the view stays until the next call */
        if (rc == 0)
            m->snap_pos = t->snap_ns++;
    } else {
        rc = m->kind == METRIC_GAUGE ? snapshot_add_gauge(snap, m->series.name, m->gauge)
                                     : snapshot_add_counter(snap, m->series.name, m->counter);
        if (rc == 0) {
            m->snap_pos = t->snap_base + t->snap_nc++;
            snap->counters[m->snap_pos].hint_placed = snap->counters[m->snap_pos].hint_changed = ver;
        }
    }
    if (rc == 0)
        t->next_ord[class_of(m)] = m->ord + 1;
    else
        engine_log(1, "%s %s: cannot add it to the snapshot (out of memory)",
                   class_of(m) ? "series" : "counter", m->series.name);
    return rc;
}

static int update(struct metric_table *t, struct snapshot *snap, struct metric *m)
{
    uint64_t ver = snap->hint_version;
    if (!class_of(m)) {
        set_counter(&snap->counters[m->snap_pos], m);
        snap->counters[m->snap_pos].hint_changed = ver;
        return 0;
    }
    /* the table's series are borrowed: the view fills its entry in place */
    if (m->snap_pos < snap->n_borrowed) {
        struct snap_series *e = &snap->series[m->snap_pos];
        uint64_t before[HINT_FIELDS];
        memcpy(before, &e->count, sizeof before);
        int rc = series_live_view(&m->series, t->snap_nb, e);
        if (rc == 0) {
            hint_series_changed(e, &m->series, ver, before);
            return 0;
        }
        /* whatever the view did to the entry, nobody may take it as it was */
        e->hint_changed = e->hint_edges = ver;
        e->hint_mask = SNAP_HINT_ALL_BUCKETS;
        e->hint_fields = UINT32_MAX;
    }
    engine_log(1, "series %s: cannot build its statistics (out of memory)", m->series.name);
    return -1;
}

/* Every touched entry, in creation order: counters and gauges, then series. */
static int full_layout(struct metric_table *t, struct snapshot *snap, size_t base, uint32_t n_buckets)
{
    snapshot_truncate(snap, base, 0);
    /* other indexes: what a store saw of the old layout says nothing of this one */
    snap->hint_epoch = snapshot_hint_epoch_new();
    snap->hint_version = 1;
    t->snap = snap;
    t->snap_base = base;
    t->snap_nb = n_buckets;
    t->snap_nc = t->snap_ns = 0;
    t->next_ord[0] = t->next_ord[1] = 0;
    int rc = 0;
    for (int cls = 0; cls < 2; cls++)
        for (struct metric *m = t->first; m; m = m->order_next) {
            if (class_of(m) != cls)
                continue;
            m->snap_pos = METRICS_NO_POS;
            if (m->touched && lay_out(t, snap, m) < 0)
                rc = -1;
        }
    if (rc)
        t->snap = NULL;     /* what is missing gets its place next time */
    return rc;
}

static int by_ord(const void *a, const void *b)
{
    const struct metric *x = *(struct metric *const *)a, *y = *(struct metric *const *)b;
    return (x->ord > y->ord) - (x->ord < y->ord);
}

/* The lines update() reads, a few entries ahead (the entries are cold: a
 * publish visits each once). */
static void prefetch_entry(const struct metric *m, const struct snapshot *snap, int stage)
{
    if (stage == 0) {
        __builtin_prefetch(&m->snap_pos);
        __builtin_prefetch(&m->series.count);
        __builtin_prefetch(&m->series.view);
        __builtin_prefetch(&m->series.hist.max);
    } else if (stage == 2) {
        if (m->snap_pos != METRICS_NO_POS && class_of(m))
            series_prefetch_ranks(&m->series);
    } else if (m->snap_pos != METRICS_NO_POS && class_of(m)) {
        series_prefetch_view(&m->series);
        if (m->snap_pos < snap->n_series) {
            const char *e = (const char *)&snap->series[m->snap_pos];
            __builtin_prefetch(e, 1);
            __builtin_prefetch(e + 64, 1);
            __builtin_prefetch(e + sizeof(struct snap_series) - 1, 1);
        }
    }
}

int metrics_snapshot(struct metric_table *t, struct snapshot *snap, size_t base, uint32_t n_buckets,
                     size_t *n_counters, size_t *n_series)
{
    bool fresh = t->snap != snap || t->snap_base != base || t->snap_nb != n_buckets ||
                 t->dirty_lost || snap->n_counters < base + t->snap_nc ||
                 snap->n_series < t->snap_ns;
    int rc = 0;
    size_t n_new = 0;
    if (!fresh) {
        snapshot_truncate(snap, base + t->snap_nc, t->snap_ns);
        snap->hint_version++;   /* this call's changes (a fresh layout starts an epoch) */
    }
    /* One pass: entries already laid out are brought up to date; the others
     * (touched for the first time since) are collected, to be appended if
     * they come after every laid-out one in creation order. */
    enum { AHEAD = 8 };
    for (size_t i = 0; i < t->n_dirty; i++) {
        if (i + AHEAD < t->n_dirty)
            prefetch_entry(t->dirty[i + AHEAD], snap, 0);
        if (i + AHEAD / 2 < t->n_dirty)
            prefetch_entry(t->dirty[i + AHEAD / 2], snap, 1);
        if (i + AHEAD / 4 < t->n_dirty)
            prefetch_entry(t->dirty[i + AHEAD / 4], snap, 2);
        struct metric *m = t->dirty[i];
        m->dirty = false;
        if (fresh)
            continue;
        if (m->snap_pos != METRICS_NO_POS) {
            if (update(t, snap, m) < 0)
                rc = -1;
            continue;
        }
        if (n_new == t->cap_scratch) {
            size_t cap = t->cap_scratch ? 2 * t->cap_scratch : 64;
            struct metric **p = realloc(t->scratch, cap * sizeof *p);
            if (!p) {
                fresh = true;
                continue;
            }
            t->scratch = p;
            t->cap_scratch = cap;
        }
        t->scratch[n_new++] = m;
    }
    t->n_dirty = 0;
    t->dirty_lost = false;
    if (!fresh && n_new) {
        qsort(t->scratch, n_new, sizeof *t->scratch, by_ord);
        bool seen[2] = {false, false};
        for (size_t i = 0; i < n_new && !fresh; i++) {
            int cls = class_of(t->scratch[i]);
            if (!seen[cls] && t->scratch[i]->ord < t->next_ord[cls])
                fresh = true;
            seen[cls] = true;
        }
    }
    if (fresh) {
        rc = full_layout(t, snap, base, n_buckets);
    } else {
        for (size_t i = 0; i < n_new; i++)      /* in creation order */
            if (lay_out(t, snap, t->scratch[i]) < 0)
                rc = -1;
        if (rc)
            t->snap = NULL;   /* a fresh layout next time brings everything in */
    }
    *n_counters = t->snap_nc;
    *n_series = t->snap_ns;
    return rc ? -1 : 0;
}
