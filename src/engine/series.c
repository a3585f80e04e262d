/* series.c: series statistics, raw values with spill, snapshot export. */
#include "engine/series.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void series_env_init(struct series_env *env, const char *spill_dir, uint64_t raw_memory_cap)
{
    memset(env, 0, sizeof *env);
    env->spill_dir = spill_dir;
    env->raw_memory_cap = raw_memory_cap;
}

int series_init(struct series *s, const char *name, bool exact, struct series_env *env)
{
    memset(s, 0, sizeof *s);
    s->name = strdup(name);
    if (!s->name)
        return -1;
    s->exact = exact;
    s->env = env;
    s->spill_fd = -1;
    hist_init(&s->hist);
    return 0;
}

static void release_raw(struct series *s)
{
    if (s->raw && s->env)
        s->env->raw_memory_used -= s->cap_raw * sizeof *s->raw;
    free(s->raw);
    s->raw = NULL;
    s->n_raw = s->cap_raw = 0;
    if (s->spill_fd >= 0)
        close(s->spill_fd);
    s->spill_fd = -1;
    s->n_spilled = 0;
}

/* The state behind series_live_view. */
struct series_view {
    bool valid;                  /* out describes the histogram at count */
    bool edges_valid;            /* edges are hist_log_edges(min, max, n_buckets) */
    uint64_t count;              /* hist.count when out was made */
    uint64_t min, max;
    uint32_t n_buckets;
    double *edges;               /* n_buckets + 1 */
    uint64_t *bins;              /* scratch of the full recomputation */
    struct snap_bucket *buckets; /* n_buckets, out.buckets when count > 0 */
    /* per percentile: the bucket holding its rank, the observations in
     * lower buckets and in that bucket (before <= rank < before + in) */
    uint32_t idx[OBSD_N_PERCENTILES];
    uint64_t before[OBSD_N_PERCENTILES], in[OBSD_N_PERCENTILES];
    /* what the last call changed in its out (series_view_changes) */
    uint64_t changed;            /* bucket counts: bit i for bucket i, all bits if unknown */
    bool edges_moved;            /* edges or number of buckets */
};

static void view_free(struct series_view *v)
{
    if (!v)
        return;
    free(v->edges);
    free(v->bins);
    free(v->buckets);
    free(v);
}

void series_reset(struct series *s)
{
    if (s->view)
        s->view->valid = false;
    s->n_recent = 0;
    release_raw(s);
    hist_reset(&s->hist);
    s->count = 0;
    s->total = 0;
    s->sum_sq = 0;
    s->restored = false;
}

void series_destroy(struct series *s)
{
    series_reset(s);
    view_free(s->view);
    s->view = NULL;
    free(s->name);
    s->name = NULL;
}

/* An unlinked file in the spill dir: nothing to clean up after a crash. */
static int open_spill(const struct series_env *env)
{
    const char *dir = env->spill_dir;
    if (!dir || !*dir) {
        dir = getenv("TMPDIR");
        if (!dir || !*dir)
            dir = "/tmp";
    }
    int fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd >= 0)
        return fd;
    char path[4096];
    if (snprintf(path, sizeof path, "%s/obsd-spill.XXXXXX", dir) >= (int)sizeof path)
        return -1;
    fd = mkostemp(path, O_CLOEXEC);
    if (fd >= 0)
        unlink(path);
    return fd;
}

static int write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static int spill(struct series *s)
{
    if (s->spill_fd < 0) {
        s->spill_fd = open_spill(s->env);
        if (s->spill_fd < 0)
            return -1;
    }
    if (write_all(s->spill_fd, s->raw, s->n_raw * sizeof *s->raw) < 0)
        return -1;
    s->n_spilled += s->n_raw;
    s->env->values_spilled += s->n_raw;
    s->n_raw = 0;
    return 0;
}

/* Makes room for one more raw value: grow within the cap, else spill. */
static int raw_room(struct series *s)
{
    if (s->n_raw < s->cap_raw)
        return 0;
    struct series_env *env = s->env;
    size_t want = s->cap_raw ? s->cap_raw * 2 : SERIES_MIN_BUFFER;
    uint64_t extra = (uint64_t)(want - s->cap_raw) * sizeof *s->raw;
    bool may_grow = s->cap_raw == 0 || env->raw_memory_used + extra <= env->raw_memory_cap;
    if (may_grow) {
        uint64_t *p = realloc(s->raw, want * sizeof *p);
        if (p) {
            s->raw = p;
            s->cap_raw = want;
            env->raw_memory_used += extra;
            return 0;
        }
    }
    return spill(s);
}

int series_add(struct series *s, uint64_t v)
{
    if (s->exact) {
        if (raw_room(s) < 0) {
            s->env->errors++;
            return -1;
        }
    }
    if (hist_record(&s->hist, v) < 0) {
        if (s->env)
            s->env->errors++;
        return -1;
    }
    if (s->exact)
        s->raw[s->n_raw++] = v;
    series_count_value(s, v);
    return 0;
}

static double total_of(const struct series *s)
{
    return (double)s->total;
}

void series_snap_release(struct snap_series *out)
{
    free(out->buckets);
    out->buckets = NULL;
    out->n_buckets = 0;
}

/* Streams every raw value (spilled first, then in memory) to fn. */
typedef void (*raw_fn)(void *ctx, const uint64_t *v, size_t n);

static int raw_foreach(const struct series *s, raw_fn fn, void *ctx)
{
    if (s->n_spilled > 0) {
        enum { BATCH = 8192 };
        uint64_t *buf = malloc(BATCH * sizeof *buf);
        if (!buf)
            return -1;
        uint64_t done = 0;
        while (done < s->n_spilled) {
            size_t want = s->n_spilled - done < BATCH ? (size_t)(s->n_spilled - done) : BATCH;
            ssize_t n = pread(s->spill_fd, buf, want * sizeof *buf, (off_t)(done * sizeof *buf));
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0 || (size_t)n % sizeof *buf) {
                free(buf);
                return -1;
            }
            fn(ctx, buf, (size_t)n / sizeof *buf);
            done += (size_t)n / sizeof *buf;
        }
        free(buf);
    }
    if (s->n_raw)
        fn(ctx, s->raw, s->n_raw);
    return 0;
}

/* One pass over the raw values: collect the values of the buckets holding
 * the wanted ranks, and bin every value into the snapshot histogram. */
struct exact_target {
    uint32_t index;
    uint64_t *values;
    size_t n, cap;
};

struct exact_ctx {
    struct exact_target t[OBSD_N_PERCENTILES];
    size_t n_targets;
    const double *edges;
    size_t n_bins;
    uint64_t *bins;
};

static void exact_step(void *vctx, const uint64_t *v, size_t n)
{
    struct exact_ctx *x = vctx;
    for (size_t i = 0; i < n; i++) {
        uint32_t idx = hist_index(v[i]);
        for (size_t k = 0; k < x->n_targets; k++) {
            struct exact_target *t = &x->t[k];
            if (t->index == idx && t->n < t->cap) {
                t->values[t->n++] = v[i];
                break;
            }
        }
        if (x->n_bins)
            x->bins[hist_bin_of(x->edges, x->n_bins, (double)v[i])]++;
    }
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

static int exact_final(struct series *s, struct snap_series *out, const double *edges,
                       size_t n_bins, uint64_t *bins)
{
    uint64_t ranks[OBSD_N_PERCENTILES], before[OBSD_N_PERCENTILES];
    uint32_t index[OBSD_N_PERCENTILES];
    for (size_t i = 0; i < OBSD_N_PERCENTILES; i++)
        ranks[i] = hist_rank(s->count, obsd_percentile_grid[i]);
    hist_locate_ranks(&s->hist, ranks, OBSD_N_PERCENTILES, index, before);

    struct exact_ctx x = {.edges = edges, .n_bins = n_bins, .bins = bins};
    int rc = -1;
    size_t which[OBSD_N_PERCENTILES];
    for (size_t i = 0; i < OBSD_N_PERCENTILES; i++) {
        size_t k = 0;
        while (k < x.n_targets && x.t[k].index != index[i])
            k++;
        if (k == x.n_targets) {
            struct exact_target *t = &x.t[x.n_targets++];
            t->index = index[i];
            t->cap = hist_bucket_count(&s->hist, index[i]);
            t->values = malloc((t->cap ? t->cap : 1) * sizeof *t->values);
            if (!t->values)
                goto out;
        }
        which[i] = k;
    }
    for (size_t i = 0; i < n_bins; i++)
        bins[i] = 0;
    if (raw_foreach(s, exact_step, &x) < 0)
        goto out;
    for (size_t k = 0; k < x.n_targets; k++)
        qsort(x.t[k].values, x.t[k].n, sizeof *x.t[k].values, cmp_u64);
    for (size_t i = 0; i < OBSD_N_PERCENTILES; i++) {
        struct exact_target *t = &x.t[which[i]];
        uint64_t at = ranks[i] - before[i];
        if (at >= t->n)   /* raw values and histogram disagree: cannot happen unless I/O lost data */
            goto out;
        out->percentiles[i] = (double)t->values[at];
    }
    rc = 0;
out:
    for (size_t k = 0; k < x.n_targets; k++)
        free(x.t[k].values);
    return rc;
}

int series_snapshot(struct series *s, bool final, uint32_t n_buckets, struct snap_series *out)
{
    memset(out, 0, sizeof *out);
    out->name = s->name;
    out->count = s->count;
    if (s->count == 0)
        return 0;     /* empty: all zeros, histogram [] */
    out->total = total_of(s);
    out->min = (double)s->hist.min;
    out->max = (double)s->hist.max;
    out->sum_sq = s->sum_sq;

    size_t n = n_buckets;
    double *edges = NULL;
    uint64_t *bins = NULL;
    if (n > 0) {
        edges = malloc((n + 1) * sizeof *edges);
        bins = calloc(n, sizeof *bins);
        out->buckets = calloc(n, sizeof *out->buckets);
        if (!edges || !bins || !out->buckets)
            goto fail;
        hist_log_edges(out->min, out->max, n, edges);
    }
    bool use_raw = final && s->exact && !s->restored;
    if (use_raw) {
        if (exact_final(s, out, edges, n, bins) < 0)
            goto fail;
        out->exact = true;
    } else {
        hist_percentiles(&s->hist, obsd_percentile_grid, OBSD_N_PERCENTILES, out->percentiles);
        if (n > 0)
            hist_bin(&s->hist, n, edges, bins);
    }
    for (size_t i = 0; i < n; i++) {
        out->buckets[i].lo = edges[i];
        out->buckets[i].hi = edges[i + 1];
        out->buckets[i].count = bins[i];
    }
    out->n_buckets = n;
    free(edges);
    free(bins);
    return 0;
fail:
    free(edges);
    free(bins);
    series_snap_release(out);
    return -1;
}

static void view_ranks(const struct hist *h, uint64_t *ranks)
{
    for (size_t k = 0; k < OBSD_N_PERCENTILES; k++)
        ranks[k] = hist_rank(h->count, obsd_percentile_grid[k]);
}

/* The percentile values as hist_percentiles() gives them, from the located
 * buckets (the extremes are known exactly). */
static void view_percentiles(const struct hist *h, const struct series_view *v, const uint64_t *ranks,
                             double *out)
{
    for (size_t k = 0; k < OBSD_N_PERCENTILES; k++) {
        uint64_t r = ranks[k];
        out[k] = r == 0 ? (double)h->min
                                : r == h->count - 1 ? (double)h->max
                                                     : hist_bucket_value(h, v->idx[k]);
    }
}

static void view_full(struct series *s, struct series_view *v, const uint64_t *ranks)
{
    const struct hist *h = &s->hist;
    size_t n = v->n_buckets;
    v->changed = SNAP_HINT_ALL_BUCKETS;
    if (n && (!v->edges_valid || v->min != h->min || v->max != h->max)) {
        v->edges_moved = true;
        hist_log_edges((double)h->min, (double)h->max, n, v->edges);
        for (size_t i = 0; i < n; i++) {
            v->buckets[i].lo = v->edges[i];
            v->buckets[i].hi = v->edges[i + 1];
        }
    }
    v->edges_valid = true;
    v->min = h->min;
    v->max = h->max;
    hist_locate_ranks(h, ranks, OBSD_N_PERCENTILES, v->idx, v->before);
    for (size_t k = 0; k < OBSD_N_PERCENTILES; k++)
        v->in[k] = hist_bucket_count(h, v->idx[k]);
    if (n) {
        hist_bin(h, n, v->edges, v->bins);
        for (size_t i = 0; i < n; i++)
            v->buckets[i].count = v->bins[i];
    }
}

/* Applies the values added since the view (all in recent[], min and max
 * unchanged, so the edges and every older bucket's bin stand). Returns false
 * if the histogram does not agree with the view (then recompute). */
static bool view_update(struct series *s, struct series_view *v, size_t added, const uint64_t *ranks)
{
    const struct hist *h = &s->hist;
    size_t n = v->n_buckets;
    for (size_t j = 0; j < added; j++) {
        uint32_t b = hist_index(s->recent[j]);
        for (size_t k = 0; k < OBSD_N_PERCENTILES; k++) {
            if (b < v->idx[k])
                v->before[k]++;
            else if (b == v->idx[k])
                v->in[k]++;
        }
        if (n) {   /* binned as hist_bin() bins its bucket */
            size_t bin = hist_bin_of(v->edges, n, hist_bucket_value(h, b));
            v->buckets[bin].count++;
            v->changed |= n <= 64 ? 1ULL << bin : SNAP_HINT_ALL_BUCKETS;
        }
    }
    /* Each rank moved by a few observations at most: step it to the
     * neighbouring non-empty bucket until it holds the rank. All ranks step
     * together, so the (cold) counts of their new buckets load in parallel. */
    for (int round = 0;; round++) {
        bool moved = false;
        for (size_t k = 0; k < OBSD_N_PERCENTILES; k++) {
            uint64_t r = ranks[k];
            uint32_t to;
            if (r >= v->before[k] + v->in[k]) {
                to = hist_next_nonempty(h, v->idx[k]);
                v->before[k] += v->in[k];
            } else if (r < v->before[k]) {
                to = hist_prev_nonempty(h, v->idx[k]);
            } else {
                continue;
            }
            if (to == HIST_N_INDEX || round > 4 * SERIES_RECENT)
                return false;
            v->idx[k] = to;
            v->in[k] = UINT64_MAX;      /* loaded below */
            hist_prefetch_bucket(h, to);
            moved = true;
        }
        if (!moved)
            break;
        for (size_t k = 0; k < OBSD_N_PERCENTILES; k++) {
            if (v->in[k] != UINT64_MAX)
                continue;
            v->in[k] = hist_bucket_count(h, v->idx[k]);
            if (ranks[k] < v->before[k]) {     /* stepped down: the bucket is below */
                if (v->in[k] > v->before[k])
                    return false;
                v->before[k] -= v->in[k];
            }
        }
    }
    return true;
}

void series_view_changes(const struct series *s, uint64_t *buckets, bool *edges_moved)
{
    const struct series_view *v = s->view;
    *buckets = v ? v->changed : SNAP_HINT_ALL_BUCKETS;
    *edges_moved = v ? v->edges_moved : true;
}

void series_prefetch_view(const struct series *s)
{
    const struct series_view *v = s->view;
    if (!v)
        return;
    __builtin_prefetch(v);
    __builtin_prefetch(&v->before[0]);
    __builtin_prefetch(&v->in[0]);
    __builtin_prefetch(&v->in[8]);
    __builtin_prefetch(&s->recent[0]);
    /* the group pointers of the range seen, for series_prefetch_ranks */
    if (s->hist.count) {
        const char *lo = (const char *)&s->hist.groups[hist_index(s->hist.min) >> HIST_SUB_BITS];
        const char *hi = (const char *)&s->hist.groups[hist_index(s->hist.max) >> HIST_SUB_BITS];
        for (const char *q = lo; q <= hi; q += 64)
            __builtin_prefetch(q);
        __builtin_prefetch(hi);
    }
}

void series_prefetch_ranks(const struct series *s)
{
    const struct series_view *v = s->view;
    if (!v || !v->valid)
        return;
    for (size_t k = 0; k < OBSD_N_PERCENTILES; k++) {
        uint32_t i = v->idx[k];
        const struct hist_group *grp = i < HIST_N_INDEX ? s->hist.groups[i >> HIST_SUB_BITS] : NULL;
        if (grp)
            __builtin_prefetch(&grp->ck[(i >> HIST_CHUNK_BITS) & (HIST_CHUNKS_PER_GROUP - 1)]);
    }
}

int series_live_view(struct series *s, uint32_t n_buckets, struct snap_series *out)
{
    struct series_view *v = s->view;
    if (!v) {
        v = calloc(1, sizeof *v);
        if (!v)
            return -1;
        s->view = v;
    }
    v->changed = 0;
    v->edges_moved = false;
    if (v->n_buckets != n_buckets || (n_buckets && !v->buckets)) {
        v->changed = SNAP_HINT_ALL_BUCKETS;
        v->edges_moved = true;
        free(v->edges);
        free(v->bins);
        free(v->buckets);
        v->edges = NULL;
        v->bins = NULL;
        v->buckets = NULL;
        v->n_buckets = 0;
        v->valid = v->edges_valid = false;
        if (n_buckets) {
            v->edges = malloc((n_buckets + 1) * sizeof *v->edges);
            v->bins = malloc(n_buckets * sizeof *v->bins);
            v->buckets = malloc(n_buckets * sizeof *v->buckets);
            if (!v->edges || !v->bins || !v->buckets)
                return -1;
        }
        v->n_buckets = n_buckets;
    }
    const struct hist *h = &s->hist;
    out->name = s->name;
    out->count = s->count;
    out->exact = false;
    if (h->count == 0) {      /* empty: all zeros, histogram [] */
        v->changed = SNAP_HINT_ALL_BUCKETS;   /* rare: say everything moved */
        v->edges_moved = true;
        out->total = out->min = out->max = out->sum_sq = 0;
        memset(out->percentiles, 0, sizeof out->percentiles);
        out->n_buckets = 0;
        out->buckets = NULL;
    } else {
        uint64_t ranks[OBSD_N_PERCENTILES];
        view_ranks(h, ranks);
        if (!v->valid || v->count == 0) {   /* the out before was empty, or none */
            v->changed = SNAP_HINT_ALL_BUCKETS;
            v->edges_moved = true;
        }
        if (!v->valid || v->count != h->count) {
            uint64_t added = h->count - v->count;
            bool inc = v->valid && v->count > 0 && added == s->n_recent && v->edges_valid &&
                       v->min == h->min && v->max == h->max;
            if (!inc || !view_update(s, v, (size_t)added, ranks))
                view_full(s, v, ranks);
        }
        view_percentiles(h, v, ranks, out->percentiles);
        out->total = total_of(s);
        out->min = (double)h->min;
        out->max = (double)h->max;
        out->sum_sq = s->sum_sq;
        out->n_buckets = v->n_buckets;
        out->buckets = v->n_buckets ? v->buckets : NULL;
    }
    v->count = h->count;
    v->valid = true;
    s->n_recent = 0;
    return 0;
}

int series_restore(struct series *s, const struct snap_series *from)
{
    series_reset(s);
    if (from->count == 0)
        return 0;
    uint64_t placed = 0;
    for (size_t i = 0; i < from->n_buckets; i++) {
        const struct snap_bucket *b = &from->buckets[i];
        if (b->count == 0)
            continue;
        double mid = sqrt(b->lo * b->hi);
        if (!(mid >= from->min))
            mid = from->min;
        if (mid > from->max)
            mid = from->max;
        if (hist_record_n(&s->hist, (uint64_t)mid, b->count) < 0)
            return -1;
        placed += b->count;
    }
    if (placed < from->count && hist_record_n(&s->hist, (uint64_t)from->min, from->count - placed) < 0)
        return -1;
    /* the observed extremes are exact; the histogram keeps them */
    if (from->min >= 0)
        s->hist.min = (uint64_t)from->min;
    if (from->max >= 0)
        s->hist.max = (uint64_t)from->max;
    s->hist.count = from->count;
    s->count = from->count;
    s->total = (unsigned __int128)(from->total < 0 ? 0 : from->total);
    s->sum_sq = from->sum_sq;
    s->restored = true;
    return 0;
}
