/*
 * series.h: one metric series (a distribution of uint64 observations), as the
 * engine's metric table and the request module keep them.
 *
 * A series keeps count, total, min, max and sum of squares exactly, and a
 * log-linear histogram (histogram.h, 3+ significant digits) for live
 * percentiles. A series created `exact` also keeps every raw value, so the
 * final snapshot reports observed values (numpy's "lower" method:
 * sorted[floor(p/100*(n-1))]) and a histogram binned from the raw values.
 * Raw values of all series of one series_env share a memory cap; past it a
 * series appends its buffer to an unlinked spill file in the env's directory
 * and reads it back for the final statistics (a series holds at most
 * SERIES_MIN_BUFFER values in memory when the cap is exhausted).
 *
 * Core span series run at millions of records per second and keep the
 * histogram only (exact = false).
 *
 * Not thread-safe: one thread owns a series and its env.
 */
#ifndef OBSD_ENGINE_SERIES_H
#define OBSD_ENGINE_SERIES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/histogram.h"
#include "publisher/snapshot.h"

#define SERIES_MIN_BUFFER 64
/* Values a series remembers since its live view was last brought up to date:
 * up to this many, the view is updated from them instead of recomputed. */
#define SERIES_RECENT 16

/* Shared by the series of one owner: the raw-value memory cap and spill dir. */
struct series_env {
    const char *spill_dir;       /* directory of spill files; NULL = $TMPDIR or /tmp */
    uint64_t raw_memory_cap;     /* bytes of raw values held in memory, all series */
    uint64_t raw_memory_used;    /* bytes of raw-value buffers allocated now */
    uint64_t values_spilled;     /* values written to spill files (statistics) */
    uint64_t errors;             /* allocation or spill I/O failures (values lost) */
};

void series_env_init(struct series_env *env, const char *spill_dir, uint64_t raw_memory_cap);

struct series_view;

struct series {
    char *name;
    bool exact;                  /* keeps raw values for exact final statistics */
    bool restored;               /* continued from a stored snapshot: raw values before
                                    the restart are gone, so the series is no longer exact */
    uint8_t n_recent;            /* values in recent[] */
    uint64_t count;
    unsigned __int128 total;
    double sum_sq;
    struct hist hist;            /* min and max live here */
    struct series_env *env;
    uint64_t *raw;               /* values not yet spilled */
    size_t n_raw, cap_raw;
    int spill_fd;                /* -1 until the first spill */
    uint64_t n_spilled;
    struct series_view *view;    /* series_live_view's state; NULL until asked */
    uint64_t recent[SERIES_RECENT];   /* the first values added since the view */
};

/* Returns 0, or -1 when out of memory. env is needed only when exact. */
int series_init(struct series *s, const char *name, bool exact, struct series_env *env);
/* Forgets every observation (a new run). */
void series_reset(struct series *s);
void series_destroy(struct series *s);

/* One observation. Returns 0, or -1 if it could not be stored (counted in
 * env->errors for exact series). */
int series_add(struct series *s, uint64_t v);

/* The summary part of an observation already in the histogram (and raw). */
static inline void series_count_value(struct series *s, uint64_t v)
{
    if (s->n_recent < SERIES_RECENT)
        s->recent[s->n_recent++] = v;
    s->count++;
    s->total += v;
    s->sum_sq += (double)v * (double)v;
}

/* series_add inlined for the hot path (idx = hist_index(v)): a histogram-only
 * series whose chunk for v exists. Returns false, having changed nothing,
 * when series_add must do it. */
static inline bool series_add_existing(struct series *s, uint64_t v, uint32_t idx)
{
    if (s->exact || !hist_record_existing(&s->hist, v, idx))
        return false;
    series_count_value(s, v);
    return true;
}

/* Fills out (name points into s; buckets are malloc'ed, free them with
 * series_snap_release). final selects exact statistics for exact series.
 * n_buckets is the snapshot histogram size (config histogram_buckets).
 * Returns 0, or -1 when out of memory or a spill file cannot be read. */
int series_snapshot(struct series *s, bool final, uint32_t n_buckets, struct snap_series *out);
void series_snap_release(struct snap_series *out);

/* Fills out with the live snapshot form of s (series_snapshot with final =
 * false), whose state is kept from one call to the next: unchanged, it costs
 * nothing to fill; after at most SERIES_RECENT new values that moved neither
 * min nor max, it is updated from those values (each percentile's bucket
 * moves to a neighbour, each value is binned) instead of walking the
 * histogram; otherwise it is recomputed, with the bin edges kept while min
 * and max stay. Always identical to what series_snapshot(s, false, n_buckets)
 * gives. out->name points into s and out->buckets into that state: valid
 * until the next call, series_reset or series_destroy. Returns 0, or -1 when
 * out of memory. */
int series_live_view(struct series *s, uint32_t n_buckets, struct snap_series *out);
/* What the last series_live_view changed in its out, against the call
 * before: the buckets whose count may have changed (bit i: bucket i; all
 * bits when unknown, or for more than 64 buckets) and whether the bucket
 * edges or their number may have. For the snapshot's change hints. */
void series_view_changes(const struct series *s, uint64_t *buckets, bool *edges_moved);
/* Prefetches what series_live_view reads first (for a loop over many series). */
void series_prefetch_view(const struct series *s);
/* After series_prefetch_view has had time: the chunk headers where the
 * view's percentile ranks stand, which a live view's next step reads. */
void series_prefetch_ranks(const struct series *s);

/* Continues a series from a stored snapshot after a collector restart:
 * count, total, min, max and sum_sq are restored exactly, the histogram from
 * the snapshot's buckets (each bucket's count at its geometric midpoint, so
 * percentiles are approximate), and the series stops being exact. */
int series_restore(struct series *s, const struct snap_series *from);

#endif
