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
    int64_t counter;
    double gauge;
    struct series series;       /* name lives in series.name for every kind */
    struct snap_series snap;    /* last snapshot form of the series (engine series are
                                   histogram-only, so live == final): reused while
                                   the series has not changed */
    bool snap_valid;
    struct metric *next;        /* hash chain */
    struct metric *order_next;  /* creation order (snapshot order) */
};

#define METRICS_MAX_CACHED_KEY 65536u

struct metric_table {
    struct metric **buckets;
    size_t n_buckets, n_entries;
    struct metric *first, *last;            /* creation order */
    struct metric *(*by_key)[METRIC_KINDS]; /* index = key id */
    size_t n_by_key;
    struct series_env *env;
};

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
 * and applied in stages that prefetch each record's metric, histogram group
 * and count before touching them, so the cache misses of a batch overlap.
 * Flush before handling any record that must be seen in order after them. */
#define METRICS_BATCH 32
struct metrics_batch {
    size_t n;
    uint32_t key[METRICS_BATCH];
    uint64_t value[METRICS_BATCH];
    uint64_t rejected;           /* unknown keys, malformed spans/values */
};
/* Queues a span or value. Returns 0, or -2 for another type (not queued). */
int metrics_batch_record(struct metric_table *t, struct metrics_batch *b, const struct shm_record *rec,
                         metrics_key_name_fn name_fn, void *ctx);
void metrics_batch_flush(struct metric_table *t, struct metrics_batch *b,
                         metrics_key_name_fn name_fn, void *ctx);

/* Forgets the key-id cache (after re-attaching to a segment). */
void metrics_forget_keys(struct metric_table *t);

/* Adds the entries touched in this run to snap, in creation order: counters
 * and gauges, then series (n_buckets: config histogram_buckets). What the
 * collector does at every publish; *n_counters and *n_series get how many
 * were added. Returns 0, or -1 if some series could not be built (out of
 * memory: the snapshot lacks them). */
int metrics_snapshot(struct metric_table *t, struct snapshot *snap, bool final, uint32_t n_buckets,
                     size_t *n_counters, size_t *n_series);

#endif
