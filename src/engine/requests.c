/*
 * requests.c: the request-metrics module (see requests.h for the metrics).
 *
 * Requests in flight live in an open-addressing table keyed by request id
 * (linear probing, backward-shift deletion, so no tombstones pile up over a
 * long run). A row is removed at its complete record; what a token count
 * still has to do travels with the count's target, so a count that arrives
 * after its row is gone still lands in the right series.
 */
#include "engine/requests.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "engine/series.h"
#include "obsd/obsd.h"
#include "shm/wire.h"
#include "tokenq/tokenizer.h"

/* ---- finish reasons ---- */

static const char *const finish_reasons[] = {
    "stop", "length", "tool_calls", "content_filter", "function_call", "other",
};
#define N_REASONS (sizeof finish_reasons / sizeof finish_reasons[0])
#define REASON_OTHER (N_REASONS - 1)

static size_t reason_index(const char *s, size_t len)
{
    for (size_t i = 0; i < REASON_OTHER; i++)
        if (strlen(finish_reasons[i]) == len && !memcmp(finish_reasons[i], s, len))
            return i;
    return REASON_OTHER;
}

/* ---- a float series (tpot_ns) ----
 * The engine's series hold integers. TPOT is a quotient, so its exact values
 * are kept here as doubles (8 bytes a completion) and the live view rounds
 * them into an integer series for the histogram. */

struct fseries {
    struct series live;
    double *raw;
    size_t n, cap;
    double total, sum_sq, min, max;
};

static int fseries_add(struct fseries *f, double v)
{
    if (f->n == f->cap) {
        size_t cap = f->cap ? f->cap * 2 : 1024;
        double *raw = realloc(f->raw, cap * sizeof *raw);
        if (!raw)
            return -1;
        f->raw = raw;
        f->cap = cap;
    }
    f->raw[f->n++] = v;
    f->total += v;
    f->sum_sq += v * v;
    if (f->n == 1 || v < f->min)
        f->min = v;
    if (f->n == 1 || v > f->max)
        f->max = v;
    return series_add(&f->live, (uint64_t)llround(v));
}

static void fseries_reset(struct fseries *f)
{
    series_reset(&f->live);
    free(f->raw);
    f->raw = NULL;
    f->n = f->cap = 0;
    f->total = f->sum_sq = f->min = f->max = 0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int fseries_snapshot(struct fseries *f, bool final, uint32_t n_buckets,
                            struct snap_series *out)
{
    if (series_snapshot(&f->live, final, n_buckets, out))
        return -1;
    out->count = f->n;
    out->total = f->total;
    out->sum_sq = f->sum_sq;
    out->min = f->n ? f->min : 0;
    out->max = f->n ? f->max : 0;
    out->exact = false;
    if (!final || f->n == 0)
        return 0;

    /* Exact: observed values of the sorted raw doubles ("lower" method) and
     * a histogram binned from them. */
    double *sorted = malloc(f->n * sizeof *sorted);
    double *edges = malloc((n_buckets + 1) * sizeof *edges);
    struct snap_bucket *b = calloc(n_buckets ? n_buckets : 1, sizeof *b);
    if (!sorted || !edges || !b) {
        free(sorted);
        free(edges);
        free(b);
        return 0; /* the live view stands; it is not marked exact */
    }
    memcpy(sorted, f->raw, f->n * sizeof *sorted);
    qsort(sorted, f->n, sizeof *sorted, cmp_double);
    for (int i = 0; i < OBSD_N_PERCENTILES; i++)
        out->percentiles[i] = sorted[hist_rank(f->n, obsd_percentile_grid[i])];
    if (n_buckets) {
        hist_log_edges(f->min, f->max, n_buckets, edges);
        for (size_t i = 0; i < n_buckets; i++) {
            b[i].lo = edges[i];
            b[i].hi = edges[i + 1];
        }
        for (size_t i = 0; i < f->n; i++)
            b[hist_bin_of(edges, n_buckets, sorted[i])].count++;
        free(out->buckets);
        out->buckets = b;
        out->n_buckets = n_buckets;
    } else {
        free(b);
    }
    out->exact = true;
    free(sorted);
    free(edges);
    return 0;
}

/* ---- the table of requests in flight ---- */

enum {
    ROW_USED = 1u << 0,
    ROW_TRACKED = 1u << 1,
    ROW_FIRST = 1u << 2,
    ROW_FAILED = 1u << 3,
};

struct row {
    uint64_t id;
    uint64_t issued_ns;
    uint64_t first_ns;
    uint64_t last_recv_ns;  /* first chunk or latest chunk */
    uint64_t first_len;     /* bytes of the first chunk: the output after it is TPOT's text */
    uint32_t block;         /* tracking window the request was issued in */
    uint32_t flags;
};

struct table {
    struct row *rows;
    size_t mask, used;
};

static size_t id_hash(uint64_t id)
{
    id ^= id >> 33;
    id *= 0xff51afd7ed558ccdULL;
    id ^= id >> 33;
    return (size_t)id;
}

static int table_init(struct table *t, size_t cap)
{
    t->rows = calloc(cap, sizeof *t->rows);
    t->mask = cap - 1;
    t->used = 0;
    return t->rows ? 0 : -1;
}

static struct row *table_find(struct table *t, uint64_t id)
{
    for (size_t i = id_hash(id) & t->mask;; i = (i + 1) & t->mask) {
        struct row *r = &t->rows[i];
        if (!(r->flags & ROW_USED))
            return NULL;
        if (r->id == id)
            return r;
    }
}

static int table_grow(struct table *t)
{
    struct table n;
    if (table_init(&n, (t->mask + 1) * 2))
        return -1;
    for (size_t i = 0; i <= t->mask; i++) {
        struct row *r = &t->rows[i];
        if (!(r->flags & ROW_USED))
            continue;
        size_t j = id_hash(r->id) & n.mask;
        while (n.rows[j].flags & ROW_USED)
            j = (j + 1) & n.mask;
        n.rows[j] = *r;
        n.used++;
    }
    free(t->rows);
    *t = n;
    return 0;
}

/* A new row for id (which must not be in the table), or NULL when out of memory. */
static struct row *table_insert(struct table *t, uint64_t id)
{
    if ((t->used + 1) * 4 > (t->mask + 1) * 3 && table_grow(t))
        return NULL;
    size_t i = id_hash(id) & t->mask;
    while (t->rows[i].flags & ROW_USED)
        i = (i + 1) & t->mask;
    struct row *r = &t->rows[i];
    memset(r, 0, sizeof *r);
    r->id = id;
    r->flags = ROW_USED;
    t->used++;
    return r;
}

static void table_remove(struct table *t, struct row *r)
{
    size_t i = (size_t)(r - t->rows);
    /* Backward shift: pull later members of the probe run into the hole. */
    for (size_t j = (i + 1) & t->mask; t->rows[j].flags & ROW_USED; j = (j + 1) & t->mask) {
        size_t home = id_hash(t->rows[j].id) & t->mask;
        /* rows[j] may move to i if i lies cyclically in [home, j). */
        if (((j - home) & t->mask) >= ((j - i) & t->mask)) {
            t->rows[i] = t->rows[j];
            i = j;
        }
    }
    t->rows[i].flags = 0;
    t->used--;
}

static void table_clear(struct table *t)
{
    memset(t->rows, 0, (t->mask + 1) * sizeof *t->rows);
    t->used = 0;
}


/* ---- the token batch queue ----
 *
 * The tokenizer engineer's src/tokenq/tokenq.h had not landed when this was
 * written, so the module carries the minimum it needs here (DESIGN.md,
 * "tokenq"):
 *
 *  - tokq_push() appends (text, target) in O(1) on the engine thread; text
 *    beyond the memory cap is appended to an unlinked spill file in the store
 *    directory instead of being held in memory.
 *  - The live lane: at each tick the engine thread hands a slice of at most
 *    TOKQ_LIVE_SLICE items to a coordinator thread, which counts it with
 *    tokenizer_workers threads on the collector's CPU mask (the coordinator
 *    is started from the engine thread, so it inherits that mask); the counts
 *    come back at a later tick. A failed slice goes back to the queue's front.
 *  - The drain, after the run: one thread pinned to each CPU the process may
 *    use pulls items off a shared cursor until the queue is empty, the
 *    deadline passes or the engine cancels (SIGTERM). Uncounted items stay
 *    pending.
 *
 * Counts reach the module through on_count, always on the engine thread.
 */

#define TOKQ_LIVE_SLICE 1024
#define TOKQ_SPILL_BUFFER (1u << 20)

typedef void (*tokq_count_fn)(void *ctx, uint64_t target, uint32_t generation, int64_t count);

struct tokq_config {
    const tokenizer *tok;
    uint32_t live_workers;
    uint64_t memory_cap;
    const char *spill_dir;
    const _Atomic bool *cancel;  /* set by the engine on SIGTERM during the drain */
    tokq_count_fn on_count;
    void *ctx;
};

struct tokq_stats {
    uint64_t counted_live, counted_drain, spilled, memory;
};

struct tokq_item {
    char *text;              /* NULL: spilled at spill_off */
    uint64_t spill_off;
    uint64_t target;
    uint32_t len;
    uint32_t generation;
};

struct tokq_slice {
    struct tokq_item *items;
    int64_t *counts;
    size_t n;
};

struct tokq {
    struct tokq_config cfg;
    cpu_set_t drain_cpus;        /* what the process may use, taken at creation */

    /* FIFO of pending items (engine thread only) */
    struct tokq_item *items;
    size_t head, len, cap;       /* ring buffer */
    uint64_t memory;             /* bytes of text held in memory */

    /* spill file: appended through a buffer, read back with pread */
    int spill_fd;
    uint64_t spill_end;          /* bytes written to the file */
    char *spill_buf;
    size_t spill_buf_len;

    /* live lane: one slice at a time, handed to the coordinator */
    bool live;
    pthread_t coord;
    bool coord_running;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct tokq_slice slice;     /* guarded by mu while in flight */
    bool slice_queued, slice_done, quit;
    int slice_rc;

    struct tokq_stats st;
};

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static struct tokq *tokq_new(const struct tokq_config *cfg, char *err, size_t errlen)
{
    struct tokq *q = calloc(1, sizeof *q);
    if (!q) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    q->cfg = *cfg;
    q->spill_fd = -1;
    if (sched_getaffinity(0, sizeof q->drain_cpus, &q->drain_cpus) != 0) {
        CPU_ZERO(&q->drain_cpus);
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        for (long i = 0; i < n && i < CPU_SETSIZE; i++)
            CPU_SET((int)i, &q->drain_cpus);
    }
    pthread_mutex_init(&q->mu, NULL);
    pthread_cond_init(&q->cv, NULL);
    return q;
}

/* ---- the FIFO ---- */

static struct tokq_item *tokq_at(struct tokq *q, size_t i)
{
    return &q->items[(q->head + i) & (q->cap - 1)];
}

static int tokq_reserve(struct tokq *q, size_t extra)
{
    if (q->len + extra <= q->cap)
        return 0;
    size_t cap = q->cap ? q->cap : 4096;
    while (cap < q->len + extra)
        cap *= 2;
    struct tokq_item *items = malloc(cap * sizeof *items);
    if (!items)
        return -1;
    for (size_t i = 0; i < q->len; i++)
        items[i] = *tokq_at(q, i);
    free(q->items);
    q->items = items;
    q->cap = cap;
    q->head = 0;
    return 0;
}

/* Puts items back at the front, in their order (a failed live slice). */
static int tokq_unshift(struct tokq *q, const struct tokq_item *items, size_t n)
{
    if (tokq_reserve(q, n))
        return -1;
    q->head = (q->head - n) & (q->cap - 1);
    q->len += n;
    for (size_t i = 0; i < n; i++)
        *tokq_at(q, i) = items[i];
    return 0;
}

/* ---- spill ---- */

static int spill_flush(struct tokq *q)
{
    size_t off = 0;
    while (off < q->spill_buf_len) {
        ssize_t w = write(q->spill_fd, q->spill_buf + off, q->spill_buf_len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        off += (size_t)w;
    }
    q->spill_buf_len = 0;
    return 0;
}

static int spill_open(struct tokq *q)
{
    const char *dir = q->cfg.spill_dir ? q->cfg.spill_dir : "/tmp";
    q->spill_fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (q->spill_fd < 0) {
        char path[4096];
        snprintf(path, sizeof path, "%s/tokq-spill-XXXXXX", dir);
        q->spill_fd = mkostemp(path, O_CLOEXEC);
        if (q->spill_fd < 0)
            return -1;
        unlink(path);
    }
    q->spill_buf = malloc(TOKQ_SPILL_BUFFER);
    return q->spill_buf ? 0 : -1;
}

/* Appends text to the spill file; *off receives its offset. */
static int spill_write(struct tokq *q, const char *text, size_t len, uint64_t *off)
{
    if (q->spill_fd < 0 && spill_open(q))
        return -1;
    *off = q->spill_end;
    q->spill_end += len;
    if (q->spill_buf_len + len > TOKQ_SPILL_BUFFER && spill_flush(q))
        return -1;
    if (len > TOKQ_SPILL_BUFFER) {
        size_t done = 0;
        while (done < len) {
            ssize_t w = write(q->spill_fd, text + done, len - done);
            if (w < 0 && errno == EINTR)
                continue;
            if (w <= 0)
                return -1;
            done += (size_t)w;
        }
        return 0;
    }
    memcpy(q->spill_buf + q->spill_buf_len, text, len);
    q->spill_buf_len += len;
    return 0;
}

/* The text of an item: in memory, or read from the spill file into *buf. */
static const char *item_text(int spill_fd, const struct tokq_item *it, char **buf, size_t *cap)
{
    if (it->text || it->len == 0)
        return it->text ? it->text : "";
    if (*cap < it->len) {
        char *b = realloc(*buf, it->len);
        if (!b)
            return NULL;
        *buf = b;
        *cap = it->len;
    }
    size_t done = 0;
    while (done < it->len) {
        ssize_t r = pread(spill_fd, *buf + done, it->len - done, (off_t)(it->spill_off + done));
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return NULL;
        done += (size_t)r;
    }
    return *buf;
}

static void item_release(struct tokq *q, struct tokq_item *it)
{
    if (it->text) {
        q->memory -= it->len;
        free(it->text);
        it->text = NULL;
    }
}

static int tokq_push(struct tokq *q, const char *text, size_t len, uint64_t target, uint32_t gen)
{
    if (len > UINT32_MAX || tokq_reserve(q, 1))
        return -1;
    struct tokq_item it = {.target = target, .len = (uint32_t)len, .generation = gen};
    if (q->memory + len <= q->cfg.memory_cap) {
        it.text = malloc(len ? len : 1);
        if (!it.text)
            return -1;
        memcpy(it.text, text, len);
        q->memory += len;
    } else {
        if (spill_write(q, text, len, &it.spill_off))
            return -1;
        q->st.spilled++;
    }
    *tokq_at(q, q->len++) = it;
    return 0;
}

/* ---- the live lane ---- */

static void *tokq_coordinator(void *arg)
{
    struct tokq *q = arg;
    pthread_mutex_lock(&q->mu);
    for (;;) {
        while (!q->slice_queued && !q->quit)
            pthread_cond_wait(&q->cv, &q->mu);
        if (q->quit)
            break;
        struct tokq_slice s = q->slice;
        pthread_mutex_unlock(&q->mu);

        /* Spilled texts are read here, off the engine thread. */
        const char **texts = calloc(s.n, sizeof *texts);
        size_t *lens = calloc(s.n, sizeof *lens);
        char **owned = calloc(s.n, sizeof *owned);
        int rc = texts && lens && owned ? 0 : -1;
        for (size_t i = 0; i < s.n && rc == 0; i++) {
            lens[i] = s.items[i].len;
            if (s.items[i].text || !s.items[i].len) {
                texts[i] = s.items[i].text ? s.items[i].text : "";
                continue;
            }
            size_t c = 0;
            texts[i] = item_text(q->spill_fd, &s.items[i], &owned[i], &c);
            if (!texts[i])
                rc = -1;
        }
        if (rc == 0)
            rc = tokenizer_count_batch(q->cfg.tok, s.n, texts, lens, s.counts, q->cfg.live_workers);
        for (size_t i = 0; owned && i < s.n; i++)
            free(owned[i]);
        free(owned);
        free(texts);
        free(lens);

        pthread_mutex_lock(&q->mu);
        q->slice_rc = rc;
        q->slice_queued = false;
        q->slice_done = true;
        pthread_cond_broadcast(&q->cv);
    }
    pthread_mutex_unlock(&q->mu);
    return NULL;
}

/* Delivers a finished live slice (engine thread). wait: block until the
 * slice in flight, if any, is done. Returns true if no slice is in flight. */
static bool tokq_collect(struct tokq *q, bool wait)
{
    pthread_mutex_lock(&q->mu);
    while (wait && q->slice_queued)
        pthread_cond_wait(&q->cv, &q->mu);
    bool done = q->slice_done, busy = q->slice_queued;
    struct tokq_slice s = q->slice;
    int rc = q->slice_rc;
    if (done) {
        q->slice_done = false;
        memset(&q->slice, 0, sizeof q->slice);
    }
    pthread_mutex_unlock(&q->mu);
    if (!done)
        return !busy;
    if (rc == 0) {
        for (size_t i = 0; i < s.n; i++) {
            q->cfg.on_count(q->cfg.ctx, s.items[i].target, s.items[i].generation, s.counts[i]);
            item_release(q, &s.items[i]);
        }
        q->st.counted_live += s.n;
    } else if (tokq_unshift(q, s.items, s.n)) {
        /* No memory to put them back: they are lost, and counted as errors. */
        for (size_t i = 0; i < s.n; i++) {
            q->cfg.on_count(q->cfg.ctx, s.items[i].target, s.items[i].generation, -1);
            item_release(q, &s.items[i]);
        }
    }
    free(s.items);
    free(s.counts);
    return true;
}

static void tokq_start_live(struct tokq *q)
{
    if (q->cfg.live_workers == 0)
        return;
    if (!q->coord_running)
        q->coord_running = pthread_create(&q->coord, NULL, tokq_coordinator, q) == 0;
    q->live = q->coord_running;
}

static void tokq_stop_live(struct tokq *q)
{
    q->live = false;
}

/* Once per tick: collect the finished slice, hand out the next one. */
static void tokq_poll(struct tokq *q)
{
    if (!q->coord_running)
        return;
    if (!tokq_collect(q, false) || !q->live || q->len == 0)
        return;
    size_t n = q->len < TOKQ_LIVE_SLICE ? q->len : TOKQ_LIVE_SLICE;
    struct tokq_slice s = {malloc(n * sizeof *s.items), malloc(n * sizeof *s.counts), n};
    if (!s.items || !s.counts || (q->spill_buf_len && spill_flush(q))) {
        free(s.items);
        free(s.counts);
        return;
    }
    for (size_t i = 0; i < n; i++)
        s.items[i] = *tokq_at(q, i);
    q->head = (q->head + n) & (q->cap - 1);
    q->len -= n;
    pthread_mutex_lock(&q->mu);
    q->slice = s;
    q->slice_queued = true;
    pthread_cond_signal(&q->cv);
    pthread_mutex_unlock(&q->mu);
}

static uint64_t tokq_pending(struct tokq *q)
{
    pthread_mutex_lock(&q->mu);
    uint64_t in_flight = q->slice_queued || q->slice_done ? q->slice.n : 0;
    pthread_mutex_unlock(&q->mu);
    return q->len + in_flight;
}

/* ---- the drain ---- */

struct drain_job {
    struct tokq *q;              /* its FIFO is read in place: the engine thread waits */
    int64_t *counts;             /* INT64_MIN: not counted */
    size_t n;
    _Atomic size_t next;
    uint64_t deadline_ns;
    _Atomic bool stop;
};

struct drain_worker {
    struct drain_job *job;
    int cpu;                     /* -1: not pinned */
    pthread_t th;
    uint64_t counted;
};

#define DRAIN_GRAB 8  /* items a worker takes at a time */

static void *drain_worker_main(void *arg)
{
    struct drain_worker *w = arg;
    struct drain_job *j = w->job;
    if (w->cpu >= 0) {
        cpu_set_t one;
        CPU_ZERO(&one);
        CPU_SET(w->cpu, &one);
        pthread_setaffinity_np(pthread_self(), sizeof one, &one);
    }
    char *buf = NULL;
    size_t cap = 0;
    for (;;) {
        if (atomic_load_explicit(&j->stop, memory_order_relaxed))
            break;
        if ((j->deadline_ns && now_ns() >= j->deadline_ns) ||
            (j->q->cfg.cancel && atomic_load(j->q->cfg.cancel))) {
            atomic_store(&j->stop, true);
            break;
        }
        size_t i = atomic_fetch_add(&j->next, DRAIN_GRAB);
        if (i >= j->n)
            break;
        size_t end = i + DRAIN_GRAB < j->n ? i + DRAIN_GRAB : j->n;
        for (; i < end; i++) {
            const struct tokq_item *it = tokq_at(j->q, i);
            const char *t = item_text(j->q->spill_fd, it, &buf, &cap);
            if (!t)
                continue; /* unreadable: stays pending */
            int64_t c = tokenizer_count(j->q->cfg.tok, t, it->len);
            if (c < 0)
                continue; /* a failed count stays pending */
            j->counts[i] = c;
            w->counted++;
        }
    }
    free(buf);
    return NULL;
}

static uint64_t tokq_drain(struct tokq *q, uint64_t deadline_ns)
{
    q->live = false;
    if (q->coord_running)
        tokq_collect(q, true);
    if (q->len == 0)
        return 0;
    if (q->spill_buf_len && spill_flush(q))
        return tokq_pending(q);

    struct drain_job j = {.q = q, .n = q->len, .deadline_ns = deadline_ns};
    j.counts = malloc(j.n * sizeof *j.counts);
    int ncpu = CPU_COUNT(&q->drain_cpus);
    struct drain_worker *w = calloc(ncpu > 0 ? (size_t)ncpu : 1, sizeof *w);
    if (!j.counts || !w) {
        free(j.counts);
        free(w);
        return tokq_pending(q);
    }
    for (size_t i = 0; i < j.n; i++)
        j.counts[i] = INT64_MIN;
    int nw = 0;
    for (int cpu = 0; cpu < CPU_SETSIZE && nw < (ncpu > 0 ? ncpu : 1); cpu++) {
        if (ncpu > 0 && !CPU_ISSET(cpu, &q->drain_cpus))
            continue;
        w[nw] = (struct drain_worker){.job = &j, .cpu = ncpu > 0 ? cpu : -1};
        if (pthread_create(&w[nw].th, NULL, drain_worker_main, &w[nw]) == 0)
            nw++;
    }
    if (nw == 0) {
        /* No thread could start: count on this one. */
        w[0] = (struct drain_worker){.job = &j, .cpu = -1};
        drain_worker_main(&w[0]);
    }
    for (int i = 0; i < nw; i++)
        pthread_join(w[i].th, NULL);

    /* Deliver what was counted; the rest stays queued, in order. */
    size_t kept = 0;
    for (size_t i = 0; i < j.n; i++) {
        struct tokq_item *it = tokq_at(q, i);
        if (j.counts[i] != INT64_MIN) {
            q->cfg.on_count(q->cfg.ctx, it->target, it->generation, j.counts[i]);
            item_release(q, it);
            q->st.counted_drain++;
        } else {
            *tokq_at(q, kept++) = *it;
        }
    }
    q->len = kept;
    free(j.counts);
    free(w);
    return q->len;
}

static void tokq_clear(struct tokq *q)
{
    if (q->coord_running) {
        /* A slice in flight belongs to the old run: wait for it, drop it. */
        pthread_mutex_lock(&q->mu);
        while (q->slice_queued)
            pthread_cond_wait(&q->cv, &q->mu);
        struct tokq_slice s = q->slice;
        bool done = q->slice_done;
        q->slice_done = false;
        memset(&q->slice, 0, sizeof q->slice);
        pthread_mutex_unlock(&q->mu);
        if (done) {
            for (size_t i = 0; i < s.n; i++)
                item_release(q, &s.items[i]);
            free(s.items);
            free(s.counts);
        }
    }
    for (size_t i = 0; i < q->len; i++)
        item_release(q, tokq_at(q, i));
    q->head = q->len = 0;
    q->live = false;
    if (q->spill_fd >= 0 && ftruncate(q->spill_fd, 0) == 0) {
        lseek(q->spill_fd, 0, SEEK_SET);
        q->spill_end = 0;
        q->spill_buf_len = 0;
    }
    memset(&q->st, 0, sizeof q->st);
}

static void tokq_free(struct tokq *q)
{
    if (!q)
        return;
    tokq_clear(q);
    if (q->coord_running) {
        pthread_mutex_lock(&q->mu);
        q->quit = true;
        pthread_cond_broadcast(&q->cv);
        pthread_mutex_unlock(&q->mu);
        pthread_join(q->coord, NULL);
    }
    if (q->spill_fd >= 0)
        close(q->spill_fd);
    free(q->spill_buf);
    free(q->items);
    pthread_mutex_destroy(&q->mu);
    pthread_cond_destroy(&q->cv);
    free(q);
}

static void tokq_get_stats(struct tokq *q, struct tokq_stats *out)
{
    *out = q->st;
    out->memory = q->memory;
}

/* ---- the module ---- */

enum count_kind { COUNT_ISL = 0, COUNT_OSL = 1, COUNT_TPOT = 2 };

struct block {
    uint64_t start_ns, last_complete_ns;
};

enum {
    C_TOTAL_ISSUED, C_TOTAL_COMPLETED, C_TOTAL_FAILED,
    C_TRACKED_ISSUED, C_TRACKED_COMPLETED, C_TRACKED_FAILED,
    C_IGNORED, C_REJECTED, C_TOKEN_ERRORS,
    N_COUNTERS,
};
static const char *const counter_names[N_COUNTERS] = {
    "total_samples_issued", "total_samples_completed", "total_samples_failed",
    "tracked_samples_issued", "tracked_samples_completed", "tracked_samples_failed",
    "requests_ignored_records", "requests_rejected_records", "requests_token_errors",
};

struct requests {
    const struct module_env *env;
    uint32_t n_buckets;
    tokenizer *tok;             /* NULL: token metrics off */
    struct tokq *q;
    uint32_t generation;        /* run number: counts of an earlier run are dropped */

    struct series_env senv;
    struct series latency, ttft, chunk_delta, isl, osl;
    struct fseries tpot;

    struct table inflight;
    uint64_t counters[N_COUNTERS];
    uint64_t reasons[N_REASONS];

    bool started, tracking;
    uint64_t started_ns, total_duration_ns;
    struct block *blocks;
    size_t n_blocks, cap_blocks;
};

static void see_time(struct requests *m, uint64_t ts)
{
    if (m->started && ts > m->started_ns && ts - m->started_ns > m->total_duration_ns)
        m->total_duration_ns = ts - m->started_ns;
}

static uint64_t tracked_duration(const struct requests *m)
{
    uint64_t d = 0;
    for (size_t i = 0; i < m->n_blocks; i++)
        if (m->blocks[i].last_complete_ns > m->blocks[i].start_ns)
            d += m->blocks[i].last_complete_ns - m->blocks[i].start_ns;
    return d;
}

/* Target of a token count: what to do with it, for which run. TPOT carries
 * its numerator (complete - first chunk), so no row has to outlive the
 * request. */
static uint64_t make_target(enum count_kind kind, uint64_t arg)
{
    return (arg << 2) | (uint64_t)kind;
}

static void on_count(void *ctx, uint64_t target, uint32_t generation, int64_t count)
{
    struct requests *m = ctx;
    if (generation != m->generation)
        return;
    if (count < 0) {
        m->counters[C_TOKEN_ERRORS]++;
        return;
    }
    uint64_t arg = target >> 2;
    switch ((enum count_kind)(target & 3)) {
    case COUNT_ISL:
        series_add(&m->isl, (uint64_t)count);
        break;
    case COUNT_OSL:
        series_add(&m->osl, (uint64_t)count);
        break;
    case COUNT_TPOT:
        if (count > 0)
            fseries_add(&m->tpot, (double)arg / (double)count);
        break;
    }
}

static void count_text(struct requests *m, enum count_kind kind, uint64_t arg, const char *text,
                       size_t len)
{
    if (!m->q)
        return;
    if (tokq_push(m->q, text, len, make_target(kind, arg), m->generation))
        m->counters[C_TOKEN_ERRORS]++;
}

static void *requests_create(const struct module_env *env, char *err, size_t errlen)
{
    struct requests *m = calloc(1, sizeof *m);
    if (!m) {
        snprintf(err, errlen, "requests: out of memory");
        return NULL;
    }
    const struct obsd_collector_config *cfg = env->config;
    m->env = env;
    m->n_buckets = cfg->histogram_buckets ? cfg->histogram_buckets : 30;
    series_env_init(&m->senv, env->store_dir, cfg->raw_values_memory);
    if (series_init(&m->latency, "sample_latency_ns", true, &m->senv) ||
        series_init(&m->ttft, "ttft_ns", true, &m->senv) ||
        series_init(&m->chunk_delta, "chunk_delta_ns", true, &m->senv) ||
        series_init(&m->isl, "isl", true, &m->senv) ||
        series_init(&m->osl, "osl", true, &m->senv) ||
        series_init(&m->tpot.live, "tpot_ns", false, &m->senv) ||
        table_init(&m->inflight, 1024)) {
        snprintf(err, errlen, "requests: out of memory");
        goto fail;
    }
    if (cfg->tokenizer && *cfg->tokenizer) {
        char terr[256];
        m->tok = tokenizer_load_file(cfg->tokenizer, terr, sizeof terr);
        if (!m->tok) {
            snprintf(err, errlen, "tokenizer %s: %s", cfg->tokenizer, terr);
            goto fail;
        }
        struct tokq_config qc = {
            .tok = m->tok,
            .live_workers = cfg->tokenizer_workers,
            .memory_cap = cfg->token_queue_memory,
            .spill_dir = env->store_dir,
            .cancel = env->drain_cancel,
            .on_count = on_count,
            .ctx = m,
        };
        m->q = tokq_new(&qc, terr, sizeof terr);
        if (!m->q) {
            snprintf(err, errlen, "token queue: %s", terr);
            goto fail;
        }
    }
    return m;
fail:
    tokq_free(m->q);
    tokenizer_free(m->tok);
    series_destroy(&m->latency);
    series_destroy(&m->ttft);
    series_destroy(&m->chunk_delta);
    series_destroy(&m->isl);
    series_destroy(&m->osl);
    series_destroy(&m->tpot.live);
    free(m->inflight.rows);
    free(m);
    return NULL;
}

static void requests_destroy(void *state)
{
    struct requests *m = state;
    if (!m)
        return;
    tokq_free(m->q);
    tokenizer_free(m->tok);
    series_destroy(&m->latency);
    series_destroy(&m->ttft);
    series_destroy(&m->chunk_delta);
    series_destroy(&m->isl);
    series_destroy(&m->osl);
    fseries_reset(&m->tpot);
    series_destroy(&m->tpot.live);
    free(m->inflight.rows);
    free(m->blocks);
    free(m);
}

static void requests_reset(void *state)
{
    struct requests *m = state;
    m->generation++;
    if (m->q)
        tokq_clear(m->q);
    series_reset(&m->latency);
    series_reset(&m->ttft);
    series_reset(&m->chunk_delta);
    series_reset(&m->isl);
    series_reset(&m->osl);
    fseries_reset(&m->tpot);
    table_clear(&m->inflight);
    memset(m->counters, 0, sizeof m->counters);
    memset(m->reasons, 0, sizeof m->reasons);
    m->started = m->tracking = false;
    m->started_ns = m->total_duration_ns = 0;
    m->n_blocks = 0;
}

/* ---- records ---- */

static int on_issued(struct requests *m, const struct shm_record *rec)
{
    struct obsd_pl_req_issued p;
    if (rec->len < sizeof p)
        return -1;
    memcpy(&p, rec->payload, sizeof p);
    see_time(m, p.ts_ns);
    if (table_find(&m->inflight, p.request_id)) {
        m->counters[C_IGNORED]++;
        return 0;
    }
    struct row *r = table_insert(&m->inflight, p.request_id);
    if (!r)
        return -1;
    r->issued_ns = p.ts_ns;
    m->counters[C_TOTAL_ISSUED]++;
    if (!m->tracking)
        return 0;
    r->flags |= ROW_TRACKED;
    r->block = (uint32_t)(m->n_blocks - 1);
    m->counters[C_TRACKED_ISSUED]++;
    if (p.prompt_tokens != OBSD_PROMPT_TOKENS_FROM_TEXT)
        series_add(&m->isl, p.prompt_tokens);
    else
        count_text(m, COUNT_ISL, 0, (const char *)rec->payload + sizeof p, rec->len - sizeof p);
    return 0;
}

/* The row of a first/chunk/error record, or NULL (ignored, or rejected when
 * the payload is short: *bad is set). */
static struct row *request_row(struct requests *m, const struct shm_record *rec,
                               struct obsd_pl_req *p, bool *bad)
{
    *bad = rec->len < sizeof *p;
    if (*bad)
        return NULL;
    memcpy(p, rec->payload, sizeof *p);
    struct row *r = table_find(&m->inflight, p->request_id);
    if (!r) {
        m->counters[C_IGNORED]++;
        return NULL;
    }
    if (p->ts_ns < r->issued_ns) {
        *bad = true;
        return NULL;
    }
    see_time(m, p->ts_ns);
    return r;
}

static int on_first(struct requests *m, const struct shm_record *rec)
{
    struct obsd_pl_req p;
    bool bad;
    struct row *r = request_row(m, rec, &p, &bad);
    if (!r)
        return bad ? -1 : 0;
    if (r->flags & ROW_FIRST) {
        m->counters[C_IGNORED]++;
        return 0;
    }
    r->flags |= ROW_FIRST;
    r->first_ns = r->last_recv_ns = p.ts_ns;
    r->first_len = rec->len - sizeof p;
    return 0;
}

static int on_chunk(struct requests *m, const struct shm_record *rec)
{
    struct obsd_pl_req p;
    bool bad;
    struct row *r = request_row(m, rec, &p, &bad);
    if (!r)
        return bad ? -1 : 0;
    if (!(r->flags & ROW_FIRST)) {
        /* A chunk before any first chunk: there is no previous receive. */
        m->counters[C_IGNORED]++;
        return 0;
    }
    if (p.ts_ns < r->last_recv_ns)
        return -1;
    if (r->flags & ROW_TRACKED)
        series_add(&m->chunk_delta, p.ts_ns - r->last_recv_ns);
    r->last_recv_ns = p.ts_ns;
    return 0;
}

static int on_error(struct requests *m, const struct shm_record *rec)
{
    struct obsd_pl_req p;
    bool bad;
    struct row *r = request_row(m, rec, &p, &bad);
    if (!r)
        return bad ? -1 : 0;
    if (r->flags & ROW_FAILED) {
        m->counters[C_IGNORED]++;
        return 0;
    }
    r->flags |= ROW_FAILED;
    m->counters[C_TOTAL_FAILED]++;
    if (r->flags & ROW_TRACKED)
        m->counters[C_TRACKED_FAILED]++;
    return 0;
}

static int on_complete(struct requests *m, const struct shm_record *rec)
{
    struct obsd_pl_req_complete p;
    if (rec->len < sizeof p)
        return -1;
    memcpy(&p, rec->payload, sizeof p);
    if (p.reason_len > rec->len - sizeof p)
        return -1;
    struct row *r = table_find(&m->inflight, p.request_id);
    if (!r) {
        m->counters[C_IGNORED]++;
        return 0;
    }
    if (p.ts_ns < r->issued_ns || ((r->flags & ROW_FIRST) && p.ts_ns < r->first_ns))
        return -1;
    see_time(m, p.ts_ns);
    const char *reason = (const char *)rec->payload + sizeof p;
    const char *output = reason + p.reason_len;
    size_t output_len = rec->len - sizeof p - p.reason_len;

    m->counters[C_TOTAL_COMPLETED]++;
    if (r->flags & ROW_TRACKED) {
        m->counters[C_TRACKED_COMPLETED]++;
        m->reasons[reason_index(reason, p.reason_len)]++;
        struct block *b = &m->blocks[r->block];
        if (p.ts_ns > b->last_complete_ns)
            b->last_complete_ns = p.ts_ns;
        if (!(r->flags & ROW_FAILED)) {
            series_add(&m->latency, p.ts_ns - r->issued_ns);
            count_text(m, COUNT_OSL, 0, output, output_len);
            if (r->flags & ROW_FIRST) {
                series_add(&m->ttft, r->first_ns - r->issued_ns);
                /* TPOT: the output after the first chunk, tokenized on its own. */
                if (output_len > r->first_len)
                    count_text(m, COUNT_TPOT, p.ts_ns - r->first_ns, output + r->first_len,
                               output_len - r->first_len);
            }
        }
    }
    table_remove(&m->inflight, r);
    return 0;
}

static int requests_on_record(void *state, const struct shm_producer *from,
                              const struct shm_record *rec)
{
    struct requests *m = state;
    (void)from;
    int rc;
    switch (rec->type) {
    case OBSD_REC_REQ_ISSUED: rc = on_issued(m, rec); break;
    case OBSD_REC_REQ_FIRST: rc = on_first(m, rec); break;
    case OBSD_REC_REQ_CHUNK: rc = on_chunk(m, rec); break;
    case OBSD_REC_REQ_ERROR: rc = on_error(m, rec); break;
    case OBSD_REC_REQ_COMPLETE: rc = on_complete(m, rec); break;
    default: rc = -1; break;
    }
    if (rc)
        m->counters[C_REJECTED]++;
    return rc;
}

static void requests_on_session(void *state, int event, uint64_t ts_ns)
{
    struct requests *m = state;
    switch (event) {
    case OBSD_SESSION_STARTED:
        if (m->started)
            break; /* a duplicate start is a producer bug: keep the first */
        m->started = true;
        m->started_ns = ts_ns;
        if (m->q)
            tokq_start_live(m->q);
        break;
    case OBSD_SESSION_TRACKING_START:
        if (m->tracking)
            break;
        if (m->n_blocks == m->cap_blocks) {
            size_t cap = m->cap_blocks ? m->cap_blocks * 2 : 4;
            struct block *b = realloc(m->blocks, cap * sizeof *b);
            if (!b) {
                m->env->log(0, "requests: out of memory: tracking window ignored");
                break;
            }
            m->blocks = b;
            m->cap_blocks = cap;
        }
        m->blocks[m->n_blocks++] = (struct block){ts_ns, 0};
        m->tracking = true;
        break;
    case OBSD_SESSION_TRACKING_STOP:
        m->tracking = false;
        break;
    case OBSD_SESSION_ENDED:
        if (m->q)
            tokq_stop_live(m->q);
        break;
    default:
        break;
    }
    see_time(m, ts_ns);
}

static void requests_on_tick(void *state)
{
    struct requests *m = state;
    if (m->q)
        tokq_poll(m->q);
}

static uint64_t requests_drain(void *state, uint64_t deadline_ns)
{
    struct requests *m = state;
    if (!m->q)
        return 0;
    return tokq_drain(m->q, deadline_ns);
}

static uint64_t requests_pending(void *state)
{
    struct requests *m = state;
    return m->q ? tokq_pending(m->q) : 0;
}

static int add_series(struct snapshot *snap, struct series *s, bool final, uint32_t nb)
{
    struct snap_series out;
    if (series_snapshot(s, final, nb, &out))
        return -1;
    int rc = snapshot_add_series(snap, &out);
    series_snap_release(&out);
    return rc;
}

/* Whether any request record reached this run: issued, completed, or one
 * that was ignored or rejected (every request record lands in a counter). */
static bool saw_requests(const struct requests *m)
{
    for (int i = 0; i < N_COUNTERS; i++)
        if (m->counters[i])
            return true;
    return m->inflight.used > 0;
}

static int requests_contribute(void *state, struct snapshot *snap, bool final)
{
    struct requests *m = state;
    uint32_t nb = m->n_buckets;
    int rc = 0;

    /* A run of spans, budgets or scheduler counters gets no page of zero
     * request metrics; without a tokenizer it gets no requests section
     * either. With one, the section still says token metrics are on. */
    if (!saw_requests(m)) {
        if (!m->q)
            return 0;
        json_t *sec = json_pack("{s:s, s:I}", "token_metrics", "on", "requests", (json_int_t)0);
        if (sec)
            json_object_set_new(sec, "tokenizer", obsd_json_text(m->env->config->tokenizer));
        return !sec || snapshot_set_section(snap, "requests", sec) ? -1 : 0;
    }

    for (int i = 0; i < N_COUNTERS; i++)
        rc |= snapshot_add_counter(snap, counter_names[i], (int64_t)m->counters[i]);
    char name[64];
    for (size_t i = 0; i < N_REASONS; i++) {
        snprintf(name, sizeof name, "tracked_finish_reason_%s", finish_reasons[i]);
        rc |= snapshot_add_counter(snap, name, (int64_t)m->reasons[i]);
    }
    uint64_t tracked_ns = tracked_duration(m);
    rc |= snapshot_add_counter(snap, "tracked_duration_ns", (int64_t)tracked_ns);
    rc |= snapshot_add_counter(snap, "total_duration_ns", (int64_t)m->total_duration_ns);

    double secs = (double)tracked_ns / 1e9;
    double qps = secs > 0 ? (double)m->counters[C_TRACKED_COMPLETED] / secs : 0;
    double osl_total = (double)m->osl.total;
    json_t *tps = m->q && secs > 0 ? json_real(osl_total / secs) : json_null();
    rc |= snapshot_add_gauge(snap, "qps", qps);
    if (m->q)
        rc |= snapshot_add_gauge(snap, "tps", secs > 0 ? osl_total / secs : 0);

    rc |= add_series(snap, &m->latency, final, nb);
    rc |= add_series(snap, &m->ttft, final, nb);
    rc |= add_series(snap, &m->chunk_delta, final, nb);
    if (m->q || m->isl.count)
        rc |= add_series(snap, &m->isl, final, nb);
    if (m->q) {
        rc |= add_series(snap, &m->osl, final, nb);
        struct snap_series out;
        if (fseries_snapshot(&m->tpot, final, nb, &out) == 0) {
            rc |= snapshot_add_series(snap, &out);
            series_snap_release(&out);
        } else {
            rc = -1;
        }
    }

    json_t *sec = json_pack("{s:s, s:I, s:I, s:I, s:f, s:o, s:I}",
                            "token_metrics", m->q ? "on" : "off",
                            "in_flight", (json_int_t)m->inflight.used,
                            "pending_tokenizations", (json_int_t)(m->q ? tokq_pending(m->q) : 0),
                            "tracked_duration_ns", (json_int_t)tracked_ns,
                            "qps", qps,
                            "tps", tps,
                            "tracking_windows", (json_int_t)m->n_blocks);
    if (sec && m->q) {
        struct tokq_stats st;
        tokq_get_stats(m->q, &st);
        json_object_set_new(sec, "tokenizer", obsd_json_text(m->env->config->tokenizer));
        json_object_set_new(sec, "tokens_counted_live", json_integer((json_int_t)st.counted_live));
        json_object_set_new(sec, "tokens_counted_drain", json_integer((json_int_t)st.counted_drain));
        json_object_set_new(sec, "token_queue_spilled", json_integer((json_int_t)st.spilled));
        json_object_set_new(sec, "token_queue_memory", json_integer((json_int_t)st.memory));
    }
    if (!sec || snapshot_set_section(snap, "requests", sec))
        rc = -1;
    return rc ? -1 : 0;
}

const struct module_ops requests_module_ops = {
    .name = "requests",
    .type_first = OBSD_REC_REQ_ISSUED,
    .type_last = 31,
    .create = requests_create,
    .destroy = requests_destroy,
    .reset = requests_reset,
    .on_record = requests_on_record,
    .on_session = requests_on_session,
    .on_tick = requests_on_tick,
    .drain = requests_drain,
    .pending = requests_pending,
    .contribute = requests_contribute,
};
