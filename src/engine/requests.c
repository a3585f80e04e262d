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

#include <inttypes.h>
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


/* ---- the token queue ----
 * A thin adapter: the module pushes (text, target) and gets counts back on
 * the engine thread through on_count. */

typedef void (*tokq_count_fn)(void *ctx, uint64_t target, uint32_t generation, int64_t count);

struct tokq_config {
    const tokenizer *tok;
    uint32_t live_workers;
    uint64_t memory_cap;
    const char *spill_dir;
    const char *cpus;
    const _Atomic bool *cancel;  /* SIGTERM during the drain */
    tokq_count_fn on_count;
    void *ctx;
};

struct tokq_stats {
    uint64_t counted_live, counted_drain, spilled, memory;
};

struct tokq_item {
    char *text;
    size_t len;
    uint64_t target;
    uint32_t generation;
};

struct tokq {
    struct tokq_config cfg;
    struct tokq_item *items;
    size_t head, tail, cap;
    bool live;
    struct tokq_stats st;
};

static struct tokq *tokq_new(const struct tokq_config *cfg, char *err, size_t errlen)
{
    struct tokq *q = calloc(1, sizeof *q);
    if (!q) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    q->cfg = *cfg;
    return q;
}

static void tokq_clear(struct tokq *q)
{
    for (size_t i = q->head; i < q->tail; i++)
        free(q->items[i].text);
    q->head = q->tail = 0;
    q->st.memory = 0;
}

static void tokq_free(struct tokq *q)
{
    if (!q)
        return;
    tokq_clear(q);
    free(q->items);
    free(q);
}

static int tokq_push(struct tokq *q, const char *text, size_t len, uint64_t target, uint32_t gen)
{
    if (q->tail == q->cap) {
        if (q->head > 0) {
            memmove(q->items, q->items + q->head, (q->tail - q->head) * sizeof *q->items);
            q->tail -= q->head;
            q->head = 0;
        }
        if (q->tail == q->cap) {
            size_t cap = q->cap ? q->cap * 2 : 4096;
            struct tokq_item *items = realloc(q->items, cap * sizeof *items);
            if (!items)
                return -1;
            q->items = items;
            q->cap = cap;
        }
    }
    char *copy = malloc(len ? len : 1);
    if (!copy)
        return -1;
    memcpy(copy, text, len);
    q->items[q->tail++] = (struct tokq_item){copy, len, target, gen};
    q->st.memory += len;
    return 0;
}

static uint64_t tokq_pending(const struct tokq *q)
{
    return q->tail - q->head;
}

static void tokq_start_live(struct tokq *q)
{
    q->live = q->cfg.live_workers > 0;
}

static void tokq_stop_live(struct tokq *q)
{
    q->live = false;
}

/* Counts up to n items from the head with `threads` threads. */
static int tokq_count_slice(struct tokq *q, size_t n, unsigned threads, uint64_t *counted)
{
    const char **texts = calloc(n, sizeof *texts);
    size_t *lens = calloc(n, sizeof *lens);
    int64_t *counts = malloc(n * sizeof *counts);
    int rc = -1;
    if (texts && lens && counts) {
        for (size_t i = 0; i < n; i++) {
            texts[i] = q->items[q->head + i].text;
            lens[i] = q->items[q->head + i].len;
        }
        rc = tokenizer_count_batch(q->cfg.tok, n, texts, lens, counts, threads);
    }
    if (rc == 0) {
        for (size_t i = 0; i < n; i++) {
            struct tokq_item *it = &q->items[q->head + i];
            q->cfg.on_count(q->cfg.ctx, it->target, it->generation, counts[i]);
            q->st.memory -= it->len;
            free(it->text);
        }
        q->head += n;
        *counted += n;
    }
    free(texts);
    free(lens);
    free(counts);
    return rc;
}

static void tokq_poll(struct tokq *q)
{
    size_t n = tokq_pending(q);
    if (!q->live || n == 0)
        return;
    tokq_count_slice(q, n < 1024 ? n : 1024, q->cfg.live_workers, &q->st.counted_live);
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t tokq_drain(struct tokq *q, uint64_t deadline_ns)
{
    q->live = false;
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    unsigned threads = ncpu > 0 ? (unsigned)ncpu : 1;
    while (tokq_pending(q)) {
        if (deadline_ns && now_ns() >= deadline_ns)
            break;
        if (q->cfg.cancel && atomic_load(q->cfg.cancel))
            break;
        size_t n = tokq_pending(q);
        if (tokq_count_slice(q, n < 4096 ? n : 4096, threads, &q->st.counted_drain))
            break; /* a drain failure leaves the items pending */
    }
    return tokq_pending(q);
}

static void tokq_get_stats(const struct tokq *q, struct tokq_stats *out)
{
    *out = q->st;
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
            .cpus = cfg->cpus,
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

static int requests_contribute(void *state, struct snapshot *snap, bool final)
{
    struct requests *m = state;
    uint32_t nb = m->n_buckets;
    int rc = 0;

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
        json_object_set_new(sec, "tokenizer", json_string(m->env->config->tokenizer));
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
