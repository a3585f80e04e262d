/* histogram.c: log-linear histogram with lazily allocated chunks. */
#include "engine/histogram.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>


void hist_init(struct hist *h)
{
    memset(h, 0, sizeof *h);
}

void hist_reset(struct hist *h)
{
    for (unsigned g = 0; g < HIST_GROUPS; g++) {
        struct hist_group *grp = h->groups[g];
        if (!grp)
            continue;
        for (unsigned c = 0; c < HIST_CHUNKS_PER_GROUP; c++) {
            free(grp->ck[c].counts);
            free(grp->ck[c].high);
        }
        free(grp);
    }
    hist_init(h);
}

int hist_record_n(struct hist *h, uint64_t v, uint64_t n)
{
    if (n == 0)
        return 0;      /* nothing observed: keeps occupied bits == non-zero counts */
    uint32_t idx = hist_index(v);
    uint32_t g = idx >> HIST_SUB_BITS;
    uint32_t c = (idx >> HIST_CHUNK_BITS) & (HIST_CHUNKS_PER_GROUP - 1);
    struct hist_group *grp = h->groups[g];
    if (__builtin_expect(!grp, 0)) {
        grp = calloc(1, sizeof *grp);
        if (!grp)
            return -1;
        h->groups[g] = grp;
        h->bytes += sizeof *grp;
    }
    struct hist_chunk *ck = &grp->ck[c];
    if (__builtin_expect(!ck->counts, 0)) {
        ck->counts = calloc(HIST_CHUNK, sizeof *ck->counts);
        if (!ck->counts)
            return -1;
        h->bytes += HIST_CHUNK * sizeof *ck->counts;
    }
    uint32_t i = idx & (HIST_CHUNK - 1);
    uint64_t now = hist_chunk_count(ck, i) + n;
    if ((now >> 32) && !ck->high) {
        ck->high = calloc(HIST_CHUNK, sizeof *ck->high);
        if (!ck->high)
            return -1;
        h->bytes += HIST_CHUNK * sizeof *ck->high;
    }
    ck->counts[i] = (uint32_t)now;
    if (ck->high)
        ck->high[i] = (uint32_t)(now >> 32);
    ck->total += n;
    ck->occupied |= UINT64_C(1) << i;
    if (h->count == 0 || v < h->min)
        h->min = v;
    if (h->count == 0 || v > h->max)
        h->max = v;
    h->count += n;
    return 0;
}

uint64_t hist_bucket_count(const struct hist *h, uint32_t index)
{
    if (index >= HIST_N_INDEX)
        return 0;
    const struct hist_group *grp = h->groups[index >> HIST_SUB_BITS];
    if (!grp)
        return 0;
    const struct hist_chunk *ck = &grp->ck[(index >> HIST_CHUNK_BITS) & (HIST_CHUNKS_PER_GROUP - 1)];
    return ck->counts ? hist_chunk_count(ck, index & (HIST_CHUNK - 1)) : 0;
}

int hist_foreach(const struct hist *h, hist_bucket_fn fn, void *ctx)
{
    for (uint32_t g = 0; g < HIST_GROUPS; g++) {
        const struct hist_group *grp = h->groups[g];
        if (!grp)
            continue;
        for (uint32_t c = 0; c < HIST_CHUNKS_PER_GROUP; c++) {
            const struct hist_chunk *ck = &grp->ck[c];
            if (!ck->counts || ck->total == 0)
                continue;
            uint32_t base = g * HIST_SUB_BUCKETS + c * HIST_CHUNK;
            for (uint64_t occ = ck->occupied; occ; occ &= occ - 1) {
                uint32_t i = (uint32_t)__builtin_ctzll(occ);
                int rc = fn(ctx, base + i, hist_chunk_count(ck, i));
                if (rc)
                    return rc;
            }
        }
    }
    return 0;
}

uint64_t hist_rank(uint64_t count, double p)
{
    if (count == 0 || p <= 0)
        return 0;
    if (p >= 100)
        return count - 1;
    /* in double, as numpy computes q * (n - 1) for method="lower" */
    double r = floor(p / 100.0 * (double)(count - 1));
    if (r < 0)
        return 0;
    if (r > (double)(count - 1))
        return count - 1;
    return (uint64_t)r;
}

double hist_bucket_value(const struct hist *h, uint32_t index)
{
    uint64_t lo = hist_bucket_lo(index), hi = hist_bucket_hi(index);
    uint64_t mid = lo + (hi - lo) / 2;
    if (mid < h->min)
        mid = h->min;
    if (mid > h->max)
        mid = h->max;
    return (double)mid;
}

uint32_t hist_next_nonempty(const struct hist *h, uint32_t index)
{
    if (index + 1 >= HIST_N_INDEX)
        return HIST_N_INDEX;
    uint32_t i = index + 1;
    uint32_t g = i >> HIST_SUB_BITS;
    uint32_t c = (i >> HIST_CHUNK_BITS) & (HIST_CHUNKS_PER_GROUP - 1);
    uint64_t above = ~UINT64_C(0) << (i & (HIST_CHUNK - 1));   /* buckets >= i in its chunk */
    for (; g < HIST_GROUPS; g++, c = 0, above = ~UINT64_C(0)) {
        const struct hist_group *grp = h->groups[g];
        if (!grp)
            continue;
        for (; c < HIST_CHUNKS_PER_GROUP; c++, above = ~UINT64_C(0)) {
            uint64_t occ = grp->ck[c].occupied & above;
            if (occ)
                return g * HIST_SUB_BUCKETS + c * HIST_CHUNK + (uint32_t)__builtin_ctzll(occ);
        }
    }
    return HIST_N_INDEX;
}

uint32_t hist_prev_nonempty(const struct hist *h, uint32_t index)
{
    if (index == 0 || index > HIST_N_INDEX)
        return HIST_N_INDEX;
    uint32_t i = index - 1;
    int g = (int)(i >> HIST_SUB_BITS);
    int c = (int)((i >> HIST_CHUNK_BITS) & (HIST_CHUNKS_PER_GROUP - 1));
    unsigned j = i & (HIST_CHUNK - 1);
    uint64_t below = j == HIST_CHUNK - 1 ? ~UINT64_C(0) : (UINT64_C(1) << (j + 1)) - 1;  /* <= i */
    for (; g >= 0; g--, c = HIST_CHUNKS_PER_GROUP - 1, below = ~UINT64_C(0)) {
        const struct hist_group *grp = h->groups[g];
        if (!grp)
            continue;
        for (; c >= 0; c--, below = ~UINT64_C(0)) {
            uint64_t occ = grp->ck[c].occupied & below;
            if (occ)
                return (uint32_t)g * HIST_SUB_BUCKETS + (uint32_t)c * HIST_CHUNK +
                       (uint32_t)(63 - __builtin_clzll(occ));
        }
    }
    return HIST_N_INDEX;
}

/* Resolves every rank in two passes. The first walks the chunk headers
 * (totals only) to the chunk holding each rank; the second reads the counts
 * of those few chunks, asked for all at once beforehand: they are separate
 * allocations, cold after a busy interval, and read one after the other
 * each would cost a full miss. */
void hist_locate_ranks(const struct hist *h, const uint64_t *ranks, size_t n,
                       uint32_t *out_index, uint64_t *out_before)
{
    size_t order_small[32];
    struct target { const struct hist_chunk *ck; uint32_t base; uint64_t seen; } tgt_small[32];
    size_t *order = n <= 32 ? order_small : malloc(n * sizeof *order);
    struct target *tgt = n <= 32 ? tgt_small : malloc(n * sizeof *tgt);
    for (size_t i = 0; i < n; i++) {
        out_index[i] = 0;
        out_before[i] = 0;
    }
    if (!order || !tgt)
        goto out;
    for (size_t i = 0; i < n; i++)
        order[i] = i;
    /* insertion sort of positions by rank: n is tiny (the percentile grid) */
    for (size_t i = 1; i < n; i++) {
        size_t v = order[i], j = i;
        while (j > 0 && ranks[order[j - 1]] > ranks[v]) {
            order[j] = order[j - 1];
            j--;
        }
        order[j] = v;
    }
    /* pass 1: the chunk of each rank (tgt[k] for the k-th smallest), from
     * the totals; ranks past the last observation find none. The headers
     * are asked for first, all of them: each group is an allocation of its
     * own, so the walk would otherwise wait for them one by one. */
    for (uint32_t g = 0; g < HIST_GROUPS; g++)
        if (h->groups[g])
            for (size_t l = 0; l < sizeof *h->groups[g]; l += 64)
                __builtin_prefetch((const char *)h->groups[g] + l);
    size_t found = 0;
    uint64_t seen = 0;
    for (uint32_t g = 0; g < HIST_GROUPS && found < n; g++) {
        const struct hist_group *grp = h->groups[g];
        if (!grp)
            continue;
        for (uint32_t c = 0; c < HIST_CHUNKS_PER_GROUP && found < n; c++) {
            uint64_t total = grp->ck[c].total;
            if (!total)
                continue;
            while (found < n && ranks[order[found]] < seen + total) {
                tgt[found] = (struct target){&grp->ck[c], g * HIST_SUB_BUCKETS + c * HIST_CHUNK, seen};
                if (!found || tgt[found - 1].ck != tgt[found].ck) {
                    const char *q = (const char *)grp->ck[c].counts;
                    for (size_t l = 0; l < HIST_CHUNK * sizeof(uint32_t); l += 64)
                        __builtin_prefetch(q + l);
                }
                found++;
            }
            seen += total;
        }
    }
    /* pass 2: the bucket of each rank within its chunk */
    for (size_t k = 0; k < found;) {
        const struct hist_chunk *ck = tgt[k].ck;
        uint64_t in_seen = tgt[k].seen;
        for (uint64_t occ = ck->occupied; occ && k < found && tgt[k].ck == ck; occ &= occ - 1) {
            uint32_t i = (uint32_t)__builtin_ctzll(occ);
            uint64_t in = hist_chunk_count(ck, i);
            while (k < found && tgt[k].ck == ck && ranks[order[k]] < in_seen + in) {
                out_index[order[k]] = tgt[k].base + i;
                out_before[order[k]] = in_seen;
                k++;
            }
            in_seen += in;
        }
        /* a chunk whose counts disagree with its total: leave its ranks at 0 */
        while (k < found && tgt[k].ck == ck)
            k++;
    }
out:
    if (order && order != order_small)
        free(order);
    if (tgt && tgt != tgt_small)
        free(tgt);
}

void hist_percentiles(const struct hist *h, const double *p, size_t n, double *out)
{
    if (h->count == 0) {
        for (size_t i = 0; i < n; i++)
            out[i] = 0;
        return;
    }
    uint64_t ranks[64];
    uint32_t index[64];
    uint64_t before[64];
    for (size_t done = 0; done < n; done += 64) {
        size_t m = n - done < 64 ? n - done : 64;
        for (size_t i = 0; i < m; i++)
            ranks[i] = hist_rank(h->count, p[done + i]);
        hist_locate_ranks(h, ranks, m, index, before);
        for (size_t i = 0; i < m; i++)   /* the extremes are known exactly */
            out[done + i] = ranks[i] == 0 ? (double)h->min
                            : ranks[i] == h->count - 1 ? (double)h->max
                                                        : hist_bucket_value(h, index[i]);
    }
}

void hist_log_edges(double min, double max, size_t n, double *edges)
{
    double lo = min < 1 ? 1 : min;
    double hi = max < 10 * lo ? 10 * lo : max;
    double ratio = log(hi / lo);
    edges[0] = lo;
    for (size_t i = 1; i < n; i++)
        edges[i] = lo * exp(ratio * (double)i / (double)n);
    edges[n] = hi;
}

size_t hist_bin_of(const double *edges, size_t n, double v)
{
    if (n == 0 || v < edges[1])
        return 0;
    if (v >= edges[n - 1])
        return n - 1;
    size_t lo = 1, hi = n - 1;          /* answer in [1, n-2]: edges[ans] <= v < edges[ans+1] */
    while (lo < hi) {
        size_t mid = lo + (hi - lo + 1) / 2;
        if (edges[mid] <= v)
            lo = mid;
        else
            hi = mid - 1;
    }
    return lo;
}

/* Buckets come in increasing order of their (clamped) midpoints and the
 * edges increase, so one walk over both bins them: the bin only moves up,
 * never searched for. It stays where hist_bin_of would put each bucket: the
 * last bin whose lower edge is <= the value (bin 0 below edges[1], bin n-1
 * from edges[n-1] on). A chunk whose last bucket is still below the next
 * edge goes into the bin whole, by its total. */
void hist_bin(const struct hist *h, size_t n, const double *edges, uint64_t *counts)
{
    for (size_t i = 0; i < n; i++)
        counts[i] = 0;
    if (n == 0 || h->count == 0)
        return;
    size_t bin = 0;
    for (uint32_t g = 0; g < HIST_GROUPS; g++) {
        const struct hist_group *grp = h->groups[g];
        if (!grp)
            continue;
        for (uint32_t c = 0; c < HIST_CHUNKS_PER_GROUP; c++) {
            uint64_t total = grp->ck[c].total;
            if (!total)
                continue;
            uint32_t base = g * HIST_SUB_BUCKETS + c * HIST_CHUNK;
            const struct hist_chunk *ck = &grp->ck[c];
            if (!ck->occupied) {        /* cannot be with a total; no bucket to place */
                counts[bin] += total;
                continue;
            }
            double first = hist_bucket_value(h, base + (uint32_t)__builtin_ctzll(ck->occupied));
            while (bin + 1 < n && edges[bin + 1] <= first)
                bin++;
            if (bin + 1 == n ||
                hist_bucket_value(h, base + (uint32_t)(63 - __builtin_clzll(ck->occupied))) < edges[bin + 1]) {
                counts[bin] += total;
                continue;
            }
            for (uint64_t occ = ck->occupied; occ; occ &= occ - 1) {
                uint32_t i = (uint32_t)__builtin_ctzll(occ);
                double v = hist_bucket_value(h, base + i);
                while (bin + 1 < n && edges[bin + 1] <= v)
                    bin++;
                counts[bin] += hist_chunk_count(ck, i);
            }
        }
    }
}
