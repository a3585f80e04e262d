/*
 * metrics.h: the engine's metric table: counters, gauges and series keyed by
 * name, with a cache from segment key ids to entries.
 *
 * Key ids index the segment's append-only key table (segment.h), so an id
 * names the same key for the whole life of a segment and the cache needs no
 * invalidation while the collector stays attached. Ids above
 * METRICS_MAX_CACHED_KEY are looked up by name each time.
 *
 * Entries live until the table is freed; a new run resets them in place (so
 * cached pointers stay valid) and a snapshot lists only entries touched in
 * the current run.
 *
 * Snapshots are kept up to date rather than rebuilt: the table lays its
 * entries out in one snapshot that the caller keeps from publish to publish
 * (metrics_snapshot), and an entry written since the previous publish is on
 * the table's dirty list; only those are brought up to date, so a publish
 * costs in proportion to what changed. Whoever writes an entry other than
 * through the record functions below calls metrics_touch(). Each call also
 * sets the snapshot's change hints (snapshot.h) for the table's part: a
 * version per call, a new epoch per fresh layout, and per entry what it
 * changed, so that the store's persist need not find that out again.
 */
#ifndef OBSD_ENGINE_METRICS_H
#define OBSD_ENGINE_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/series.h"
#include "shm/shm.h"

enum metric_kind { METRIC_COUNTER, METRIC_GAUGE, METRIC_SERIES, METRIC_KINDS };

struct metric {
    enum metric_kind kind;
    bool touched;               /* written in the current run */
    bool dirty;                 /* written since the last metrics_snapshot */
    int64_t counter;
    double gauge;
    struct series series;       /* name lives in series.name for every kind */
    size_t ord;                 /* creation index */
    size_t snap_pos;            /* its entry in the table's snapshot (METRICS_NO_POS: none) */
    struct metric *next;        /* hash chain */
    struct metric *order_next;  /* creation order (snapshot order) */
};

#define METRICS_NO_POS ((size_t)-1)

#define METRICS_MAX_CACHED_KEY 65536u

struct metric_table {
    struct metric **buckets;
    size_t n_buckets, n_entries;
    struct metric *first, *last;            /* creation order */
    struct metric *(*by_key)[METRIC_KINDS]; /* index = key id */
    size_t n_by_key;
    struct series_env *env;
    struct metric **dirty;                  /* written since the last metrics_snapshot */
    size_t n_dirty, cap_dirty;
    bool dirty_lost;                        /* the list could not grow: lay out anew */
    /* the layout of the table's entries in the caller's snapshot */
    const struct snapshot *snap;            /* NULL: none yet (or forgotten) */
    size_t snap_base;                       /* index of its first counter */
    size_t snap_nc, snap_ns;                /* its counters and series */
    uint32_t snap_nb;                       /* histogram buckets of its series */
    size_t next_ord[2];                     /* 1 + highest laid-out creation index, for
                                               counters/gauges [0] and series [1] */
    struct metric **scratch;                /* newly touched entries (metrics_snapshot) */
    size_t cap_scratch;
};

void metrics_mark_dirty(struct metric_table *t, struct metric *m);
/* Marks m written in this run and since the last snapshot. */
static inline void metrics_touch(struct metric_table *t, struct metric *m)
{
    if (__builtin_expect(!m->dirty, 0))
        metrics_mark_dirty(t, m);
}

void metrics_init(struct metric_table *t, struct series_env *env);
void metrics_free(struct metric_table *t);
/* A new run: every entry back to zero and untouched. */
void metrics_reset(struct metric_table *t);

/* The entry of that name and kind, created on first use; NULL when out of
 * memory. */
struct metric *metrics_get(struct metric_table *t, const char *name, enum metric_kind kind);

/* Cached lookup by segment key id: *name_fn resolves an id not yet cached
 * (NULL: unknown key, the record is rejected). */
typedef const char *(*metrics_key_name_fn)(void *ctx, uint32_t key);
struct metric *metrics_by_key(struct metric_table *t, uint32_t key, enum metric_kind kind,
                              metrics_key_name_fn name_fn, void *ctx);

/* Applies one core record (span, value, counter, gauge) to the table.
 * Returns 0, -1 if it is malformed (bad length, end before start, unknown
 * key, non-finite gauge: count it as rejected), or -2 for another type. */
int metrics_core_record(struct metric_table *t, const struct shm_record *rec,
                        metrics_key_name_fn name_fn, void *ctx);

/* Batched spans and values: the hot path. Records are queued (key, value)
 * in two halves: when one is full, its records' entries are resolved and
 * their metric, histogram group, chunk entry and count prefetched, then the
 * other half (prefetched a whole half earlier, so its cache misses are over)
 * is applied. Flush before handling any record that must be seen in order
 * after them. */
#define METRICS_BATCH 64
struct metrics_batch {
    uint32_t n;
    uint32_t key[METRICS_BATCH];
    uint64_t value[METRICS_BATCH];
    uint64_t rejected;
};
void metrics_batch_flush(struct metric_table *t, struct metrics_batch *b,
                         metrics_key_name_fn name_fn, void *ctx);

/* Queues a span or value (a malformed one is counted as rejected). Returns
 * 0, or -2 for another type (not queued). */
int metrics_batch_record(struct metric_table *t, struct metrics_batch *b, const struct shm_record *rec,
                         metrics_key_name_fn name_fn, void *ctx);

/* The next metrics_snapshot lays the entries out anew, in whatever snapshot. */
static inline void metrics_forget_snapshot(struct metric_table *t)
{
    t->snap = NULL;
}

/* Forgets the key-id cache (after re-attaching to a segment). */
void metrics_forget_keys(struct metric_table *t);

/* Brings the table's part of snap up to date: the entries touched in this
 * run, in creation order, as counters from index base on (counters and
 * gauges) and series from index 0 on (their live views, n_buckets: config
 * histogram_buckets; engine series are histogram-only, so that is also the
 * final form). What the collector does at every publish. snap is the same
 * snapshot from call to call, the caller having added only its own first
 * base counters and, after the table's part, whatever it adds after each call
 * (dropped here first). Another snapshot, or one after a new run
 * (metrics_reset), gets a fresh layout; so does an entry touched for the
 * first time before one laid out later in creation order. (Another snapshot
 * is told by its address and sizes: after freeing the kept one, call
 * metrics_forget_snapshot before passing a new one.) *n_counters and
 * *n_series get the size of the table's part. Returns 0, or -1 if some entry
 * could not be brought up to date (out of memory: it is retried next time). */
int metrics_snapshot(struct metric_table *t, struct snapshot *snap, size_t base, uint32_t n_buckets,
                     size_t *n_counters, size_t *n_series);

#endif
