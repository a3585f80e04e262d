/*
 * histogram.h: a log-linear (HDR-style) histogram of uint64 values.
 *
 * Every power of two [2^e, 2^(e+1)) is split into HIST_SUB_BUCKETS equal
 * sub-buckets, so a bucket is at most 1/1024 of its values wide: a value read
 * back (the bucket's midpoint, clamped to the observed min/max) is within
 * 0.05% of every value recorded in that bucket, i.e. 3 significant digits
 * (HdrHistogram's 3-digit precision). Values below 2^11 are counted exactly.
 *
 * Memory follows the values seen: counts live in chunks of HIST_CHUNK
 * sub-buckets (256 B, 6% of a power of two) that are allocated the first time
 * a value falls into their range, so a series whose values stay within 10% of
 * one another costs a few chunks. Counts are 32-bit (half the memory, so the
 * chunks of 1,000 busy series stay in a 2 MiB L2 cache); a chunk whose bucket
 * passes 2^32 gets the high 32 bits of all its buckets beside them, so every
 * count stays exact. Walks (percentiles, binning) skip
 * empty chunks by their totals and empty buckets by the chunk's occupancy
 * bitmap, and bin whole chunks at once.
 *
 * Not thread-safe: one writer (the collector thread) per histogram.
 */
#ifndef OBSD_ENGINE_HISTOGRAM_H
#define OBSD_ENGINE_HISTOGRAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HIST_SUB_BITS 10
#define HIST_SUB_BUCKETS (1u << HIST_SUB_BITS)        /* 1024 per power of two */
#define HIST_CHUNK_BITS 6
#define HIST_CHUNK (1u << HIST_CHUNK_BITS)             /* 64 counts per chunk */
#define HIST_CHUNKS_PER_GROUP (HIST_SUB_BUCKETS / HIST_CHUNK)
/* Group 0 holds 0..2^10-1 exactly; group g >= 1 holds [2^(g+9), 2^(g+10)). */
#define HIST_GROUPS (64 - HIST_SUB_BITS + 1)
#define HIST_N_INDEX ((uint32_t)HIST_GROUPS * HIST_SUB_BUCKETS)

/* One power of two: its chunks, each with its total and a bitmap of its
 * non-empty buckets (walks skip by them), side by side in 32 bytes so a
 * record touches one line here. */
struct hist_chunk {
    uint32_t *counts;           /* HIST_CHUNK counts (low 32 bits), NULL until used */
    uint64_t total;
    uint64_t occupied;          /* bit i: bucket i is not empty */
    uint32_t *high;             /* their high 32 bits, NULL until a count passes 2^32 */
};

struct hist_group {
    struct hist_chunk ck[HIST_CHUNKS_PER_GROUP];
};

/* Count i of a chunk that exists. */
static inline uint64_t hist_chunk_count(const struct hist_chunk *ck, uint32_t i)
{
    uint64_t v = ck->counts[i];
    if (__builtin_expect(ck->high != NULL, 0))
        v |= (uint64_t)ck->high[i] << 32;
    return v;
}

struct hist {
    uint64_t count;
    uint64_t min, max;                 /* valid when count > 0 */
    size_t bytes;                      /* memory held by chunks */
    struct hist_group *groups[HIST_GROUPS];
};

void hist_init(struct hist *h);
/* Frees every chunk; the histogram is empty and usable again. */
void hist_reset(struct hist *h);

/* Index of the bucket holding v, and the range [lo, hi] of that bucket. */
static inline uint32_t hist_index(uint64_t v)
{
    if (v < HIST_SUB_BUCKETS)
        return (uint32_t)v;
    unsigned e = 63u - (unsigned)__builtin_clzll(v);          /* >= HIST_SUB_BITS */
    unsigned shift = e - HIST_SUB_BITS;
    uint32_t sub = (uint32_t)(v >> shift) & (HIST_SUB_BUCKETS - 1);
    return (uint32_t)(e - HIST_SUB_BITS + 1) * HIST_SUB_BUCKETS + sub;
}
/* Inline: the binning walk asks them of every chunk. A bucket of group
 * g >= 1 is 2^(g-1) wide and starts at (HIST_SUB_BUCKETS + sub) << (g-1). */
static inline uint64_t hist_bucket_lo(uint32_t index)
{
    uint32_t g = index >> HIST_SUB_BITS, sub = index & (HIST_SUB_BUCKETS - 1);
    if (g == 0)
        return sub;
    return ((uint64_t)HIST_SUB_BUCKETS + sub) << (g - 1);
}
static inline uint64_t hist_bucket_hi(uint32_t index)     /* inclusive */
{
    uint32_t g = index >> HIST_SUB_BITS;
    if (g == 0)
        return index;
    return hist_bucket_lo(index) + ((UINT64_C(1) << (g - 1)) - 1);
}

/* Adds n observations of v. Returns 0, or -1 when a chunk cannot be
 * allocated (the value is then not counted). */
int hist_record_n(struct hist *h, uint64_t v, uint64_t n);
static inline int hist_record(struct hist *h, uint64_t v) { return hist_record_n(h, v, 1); }

/* One observation of v, whose index is idx, when its chunk exists (the
 * common case, inlined into batched recording): returns false, counting
 * nothing, when the chunk must first be allocated or the count carries past
 * 32 bits (hist_record_n does both). */
static inline bool hist_record_existing(struct hist *h, uint64_t v, uint32_t idx)
{
    struct hist_group *grp = h->groups[idx >> HIST_SUB_BITS];
    if (__builtin_expect(!grp, 0))
        return false;
    uint32_t c = (idx >> HIST_CHUNK_BITS) & (HIST_CHUNKS_PER_GROUP - 1);
    uint32_t *count = grp->ck[c].counts;
    if (__builtin_expect(!count, 0))
        return false;
    count += idx & (HIST_CHUNK - 1);
    if (__builtin_expect(*count == UINT32_MAX, 0))
        return false;                 /* the carry into the high bits: hist_record_n */
    ++*count;
    grp->ck[c].total++;
    grp->ck[c].occupied |= UINT64_C(1) << (idx & (HIST_CHUNK - 1));
    /* a chunk exists only once something was counted: min and max are set */
    if (v < h->min)
        h->min = v;
    if (v > h->max)
        h->max = v;
    h->count++;
    return true;
}

/* Prefetch of one bucket's count (for a read of several cold buckets). */
static inline void hist_prefetch_bucket(const struct hist *h, uint32_t index)
{
    const struct hist_group *grp = index < HIST_N_INDEX ? h->groups[index >> HIST_SUB_BITS] : NULL;
    if (!grp)
        return;
    const uint32_t *chunk = grp->ck[(index >> HIST_CHUNK_BITS) & (HIST_CHUNKS_PER_GROUP - 1)].counts;
    if (chunk)
        __builtin_prefetch(&chunk[index & (HIST_CHUNK - 1)]);
}

/* Count in one bucket. */
uint64_t hist_bucket_count(const struct hist *h, uint32_t index);

/* The value a bucket stands for in percentiles and binning: its midpoint,
 * clamped to the observed [min, max]. */
double hist_bucket_value(const struct hist *h, uint32_t index);

/* The nearest non-empty bucket above (below) index, or HIST_N_INDEX when
 * there is none. Skip empty chunks and groups by their totals. */
uint32_t hist_next_nonempty(const struct hist *h, uint32_t index);
uint32_t hist_prev_nonempty(const struct hist *h, uint32_t index);

/* Walks the non-empty buckets in increasing value order. Stop by returning
 * nonzero (which hist_foreach returns). */
typedef int (*hist_bucket_fn)(void *ctx, uint32_t index, uint64_t count);
int hist_foreach(const struct hist *h, hist_bucket_fn fn, void *ctx);

/* Percentile ranks of the "lower" method: the observation at 0-based rank
 * floor(p / 100 * (count - 1)) of the sorted values. */
uint64_t hist_rank(uint64_t count, double p);

/* Values at n percentiles (any order): the midpoint of the bucket holding the
 * rank, clamped to [min, max]. All zeros for an empty histogram. */
void hist_percentiles(const struct hist *h, const double *p, size_t n, double *out);

/* The bucket index holding each rank (for exact selection from raw values):
 * out_index[i] gets the bucket, out_before[i] the number of observations in
 * lower buckets. ranks need not be sorted. */
void hist_locate_ranks(const struct hist *h, const uint64_t *ranks, size_t n,
                       uint32_t *out_index, uint64_t *out_before);

/* Edges of n log-spaced bins over [lo, hi] as the snapshot uses them: lo is
 * clamped to >= 1 and hi to >= 10 * lo. edges has n + 1 entries. */
void hist_log_edges(double min, double max, size_t n, double *edges);
/* The bin of value v among those edges (values outside go to the first or
 * last bin). */
size_t hist_bin_of(const double *edges, size_t n, double v);

/* Bins the histogram into n bins whose n + 1 edges increase (the log-spaced
 * ones of hist_log_edges): counts[i] for bin i, each bucket counted in the
 * bin hist_bin_of gives its clamped midpoint. One walk over chunks and bins
 * together, no search per bucket. */
void hist_bin(const struct hist *h, size_t n, const double *edges, uint64_t *counts);

#endif
