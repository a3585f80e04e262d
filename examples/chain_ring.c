/*
 * chain_ring: a behavior workload instrumented with obsd scheduler counters.
 *
 * A C rendition of bocpy's chain-ring microbenchmark. Rings of resources (each
 * a lock and a payload matrix) are walked by chains: one step of a chain is a
 * behavior that acquires a window of group_size resources spaced stride apart
 * (two-phase locking, in address order), does iters x group_size matrix
 * products into the window's first matrix (none with --null-payload), and
 * dispatches the chain's next step. Worker threads run behaviors from a
 * one-deep pending slot and a lock-free work-stealing queue of their own, and
 * steal from each other when they run dry; every scheduler decision bumps the
 * worker's obsd counter block.
 *
 * Every repeat of every sweep point runs in a child process of its own and is
 * its own run in obsd: session started, tracking start after the warmup,
 * tracking stop after the duration, ended. The parent gathers the children's
 * results into one JSON document (--output, rewritten atomically after each
 * point) and prints the sweep table.
 *
 *   chain_ring --name bench --sweep-axis workers --sweep-values 1,2 \
 *              --duration 2 --repeats 3 --output sweep.json
 *   obsctl compare --sweep sweep.json
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "obsd/obsd.h"
#include "sched/sched.h"
#include "sched/sched_producer.h"

#define SCHEMA_VERSION 1
#define BATCH_SIZE 100          /* pending pops before the own queue must progress */
#define FAIRNESS_PERIOD 256     /* local pops between fairness steals */
#define MAX_WORKERS 256

/* ---- configuration ---------------------------------------------------- */

struct config {
    int workers;
    double duration, warmup;
    bool warmup_set;
    int iters, group_size, stride, ring_size;
    int rings, chains_per_ring;        /* 0: derived */
    int payload_rows, payload_cols;
    bool null_payload;
};

static void derive_sizes(struct config *c)
{
    if (!c->warmup_set)
        c->warmup = fmin(1.0, 0.1 * c->duration);
    if (c->chains_per_ring <= 0) {
        int cpr = c->ring_size / (c->group_size * c->stride * 8);
        c->chains_per_ring = cpr > 1 ? cpr : 1;
    }
    if (c->rings <= 0) {
        int a = c->workers * 16 / c->chains_per_ring, b = c->workers * 4;
        c->rings = a > b ? a : b;
    }
}

/* NULL if valid, else what is wrong (naming the option). */
static const char *validate(const struct config *c)
{
    static char msg[160];
    if (c->workers < 1 || c->workers > MAX_WORKERS)
        return "--workers must be 1..256";
    if (!(c->duration > 0))
        return "--duration must be > 0 seconds";
    if (c->warmup < 0)
        return "--warmup must be >= 0 seconds";
    if (c->iters < 0)
        return "--iters must be >= 0";
    if (c->group_size < 1)
        return "--group-size must be >= 1";
    if (c->stride < 1)
        return "--stride must be >= 1";
    if (c->ring_size < 2)
        return "--ring-size must be >= 2";
    if (c->payload_rows < 1 || c->payload_cols < 1 || c->payload_rows > 4096 ||
        c->payload_cols > 4096)
        return "--payload-rows/--payload-cols must be 1..4096";
    if ((long)c->group_size * c->stride * 2 > c->ring_size) {
        snprintf(msg, sizeof msg,
                 "--group-size x --stride x 2 = %ld exceeds --ring-size %d (windows would overlap themselves)",
                 (long)c->group_size * c->stride * 2, c->ring_size);
        return msg;
    }
    if ((long)c->rings * c->ring_size > 4000000)
        return "--rings x --ring-size must stay below 4,000,000 resources";
    return NULL;
}

static json_t *config_json(const struct config *c)
{
    json_t *o = json_object();
    json_object_set_new(o, "workers", json_integer(c->workers));
    json_object_set_new(o, "duration", json_real(c->duration));
    json_object_set_new(o, "warmup", json_real(c->warmup));
    json_object_set_new(o, "iters", json_integer(c->iters));
    json_object_set_new(o, "group_size", json_integer(c->group_size));
    json_object_set_new(o, "stride", json_integer(c->stride));
    json_object_set_new(o, "ring_size", json_integer(c->ring_size));
    json_object_set_new(o, "rings", json_integer(c->rings));
    json_object_set_new(o, "chains_per_ring", json_integer(c->chains_per_ring));
    json_object_set_new(o, "payload_rows", json_integer(c->payload_rows));
    json_object_set_new(o, "payload_cols", json_integer(c->payload_cols));
    json_object_set_new(o, "null_payload", json_boolean(c->null_payload));
    return o;
}

/* ---- the workload ----------------------------------------------------- */

struct resource {
    pthread_mutex_t lock;
    double *m;                          /* payload_rows x payload_cols */
} __attribute__((aligned(64)));

struct chain {
    int ring;
    int head;
    _Atomic uint64_t count;             /* steps done; read by the main thread */
};

/* Bounded lock-free MPMC queue (sequence-numbered cells). Its CAS failures
 * are the counters' enqueue/dequeue CAS retries. */
struct cell {
    _Atomic size_t seq;
    struct chain *item;
};

struct mpmc {
    struct cell *cells;
    size_t mask;
    _Alignas(64) _Atomic size_t enq;
    _Alignas(64) _Atomic size_t deq;
};

static int mpmc_init(struct mpmc *q, size_t min_cap)
{
    size_t cap = 2;
    while (cap < min_cap)
        cap <<= 1;
    q->cells = calloc(cap, sizeof *q->cells);
    if (!q->cells)
        return -1;
    for (size_t i = 0; i < cap; i++)
        atomic_init(&q->cells[i].seq, i);
    q->mask = cap - 1;
    atomic_init(&q->enq, 0);
    atomic_init(&q->deq, 0);
    return 0;
}

static bool mpmc_push(struct mpmc *q, struct chain *item, uint64_t *retries)
{
    size_t pos = atomic_load_explicit(&q->enq, memory_order_relaxed);
    for (;;) {
        struct cell *c = &q->cells[pos & q->mask];
        size_t seq = atomic_load_explicit(&c->seq, memory_order_acquire);
        intptr_t diff = (intptr_t)seq - (intptr_t)pos;
        if (diff == 0) {
            if (atomic_compare_exchange_weak_explicit(&q->enq, &pos, pos + 1, memory_order_relaxed,
                                                      memory_order_relaxed)) {
                c->item = item;
                atomic_store_explicit(&c->seq, pos + 1, memory_order_release);
                return true;
            }
            (*retries)++;
        } else if (diff < 0) {
            return false;   /* full: cannot happen, capacity covers every chain */
        } else {
            pos = atomic_load_explicit(&q->enq, memory_order_relaxed);
            (*retries)++;
        }
    }
}

static struct chain *mpmc_pop(struct mpmc *q, uint64_t *retries)
{
    size_t pos = atomic_load_explicit(&q->deq, memory_order_relaxed);
    for (;;) {
        struct cell *c = &q->cells[pos & q->mask];
        size_t seq = atomic_load_explicit(&c->seq, memory_order_acquire);
        intptr_t diff = (intptr_t)seq - (intptr_t)(pos + 1);
        if (diff == 0) {
            if (atomic_compare_exchange_weak_explicit(&q->deq, &pos, pos + 1, memory_order_relaxed,
                                                      memory_order_relaxed)) {
                struct chain *item = c->item;
                atomic_store_explicit(&c->seq, pos + q->mask + 1, memory_order_release);
                return item;
            }
            (*retries)++;
        } else if (diff < 0) {
            return NULL;
        } else {
            pos = atomic_load_explicit(&q->deq, memory_order_relaxed);
            (*retries)++;
        }
    }
}

static bool mpmc_maybe_nonempty(struct mpmc *q)
{
    return atomic_load_explicit(&q->deq, memory_order_relaxed) !=
           atomic_load_explicit(&q->enq, memory_order_relaxed);
}

struct worker {
    int idx;
    pthread_t thread;
    struct mpmc q;
    struct chain *pending;
    int batch;
    uint64_t local_pops;
    struct obsd_sched_block *blk;
    struct obsd_sched_block *qblk;      /* the queue's own block ("wsq.N"), or NULL */
    double *scratch;
};

static struct config cfg;
static struct resource *resources;      /* rings x ring_size */
static struct chain *chains;
static int n_chains;
static struct worker *workers;
static obsd_t *obsd;
static void *private_area;               /* counting without a collector */
static size_t private_bytes;
static _Atomic int stop_flag;
static _Atomic int parked_workers;
static _Atomic int claimed;
static _Atomic int claim_failed;
static pthread_mutex_t park_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t park_cond = PTHREAD_COND_INITIALIZER;
static volatile sig_atomic_t interrupted;

static void wake_parked(void)
{
    if (atomic_load_explicit(&parked_workers, memory_order_relaxed) > 0) {
        pthread_mutex_lock(&park_lock);
        pthread_cond_broadcast(&park_cond);
        pthread_mutex_unlock(&park_lock);
    }
}

/* A behavior finished on w and dispatches its successor. */
static void dispatch_local(struct worker *w, struct chain *next)
{
    if (!w->pending) {
        w->pending = next;
        obsd_sched_inc(w->blk, OBSD_SCHED_DISPATCHED_TO_PENDING);
        return;
    }
    uint64_t retries = 0;
    mpmc_push(&w->q, w->pending, &retries);
    if (w->qblk)
        obsd_sched_queue_pushed(w->qblk, retries);
    obsd_sched_inc(w->blk, OBSD_SCHED_PUSHED_LOCAL);
    if (retries)
        obsd_sched_add(w->blk, OBSD_SCHED_ENQUEUE_CAS_RETRIES, retries);
    w->pending = next;
    wake_parked();
}

/* The main thread's dispatch onto a worker's queue. */
static void dispatch_remote(struct worker *target, struct chain *c)
{
    uint64_t retries = 0;
    mpmc_push(&target->q, c, &retries);
    if (target->qblk)
        obsd_sched_queue_pushed(target->qblk, retries);
    obsd_sched_add_shared(target->blk, OBSD_SCHED_PUSHED_REMOTE, 1);
    wake_parked();
}

static struct chain *pop_own(struct worker *w)
{
    uint64_t retries = 0;
    struct chain *c = mpmc_pop(&w->q, &retries);
    if (c && w->qblk)
        obsd_sched_queue_popped(w->qblk, retries);
    if (retries)
        obsd_sched_add(w->blk, OBSD_SCHED_DEQUEUE_CAS_RETRIES, retries);
    return c;
}

static struct chain *steal_one(struct worker *w, int victim_idx)
{
    uint64_t retries = 0;
    struct worker *v = &workers[victim_idx];
    struct chain *c = victim_idx == w->idx ? NULL : mpmc_pop(&v->q, &retries);
    if (c && v->qblk)
        obsd_sched_queue_popped(v->qblk, retries);
    if (retries)
        obsd_sched_add(w->blk, OBSD_SCHED_DEQUEUE_CAS_RETRIES, retries);
    obsd_sched_steal(w->blk, obsd_now(), c != NULL);
    return c;
}

static struct chain *next_behavior(struct worker *w)
{
    struct chain *c;
    /* Fairness: now and then take from a victim although we have work, so
     * chains queued behind a busy worker move on. */
    if (cfg.workers > 1 && w->local_pops >= FAIRNESS_PERIOD && mpmc_maybe_nonempty(&w->q)) {
        w->local_pops = 0;
        obsd_sched_inc(w->blk, OBSD_SCHED_FAIRNESS_ARM_FIRES);
        if ((c = steal_one(w, (w->idx + 1) % cfg.workers)))
            return c;
    }
    if (w->pending) {
        if (w->batch >= BATCH_SIZE) {
            w->batch = 0;
            if ((c = pop_own(w))) {
                obsd_sched_inc(w->blk, OBSD_SCHED_BATCH_RESETS);
                obsd_sched_inc(w->blk, OBSD_SCHED_POPPED_LOCAL);
                w->local_pops++;
                return c;
            }
        }
        c = w->pending;
        w->pending = NULL;
        w->batch++;
        obsd_sched_inc(w->blk, OBSD_SCHED_POPPED_LOCAL);
        w->local_pops++;
        return c;
    }
    if ((c = pop_own(w))) {
        w->batch = 0;
        obsd_sched_inc(w->blk, OBSD_SCHED_POPPED_LOCAL);
        w->local_pops++;
        return c;
    }
    for (int i = 1; i < cfg.workers; i++)
        if ((c = steal_one(w, (w->idx + i) % cfg.workers)))
            return c;
    return NULL;
}

static void park(struct worker *w)
{
    obsd_sched_inc(w->blk, OBSD_SCHED_PARKED);
    atomic_fetch_add(&parked_workers, 1);
    pthread_mutex_lock(&park_lock);
    if (!atomic_load(&stop_flag)) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 1000000;            /* re-scan every millisecond at most */
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&park_cond, &park_lock, &ts);
    }
    pthread_mutex_unlock(&park_lock);
    atomic_fetch_sub(&parked_workers, 1);
}

static int cmp_ptr(const void *a, const void *b)
{
    uintptr_t x = (uintptr_t)*(struct resource *const *)a, y = (uintptr_t)*(struct resource *const *)b;
    return (x > y) - (x < y);
}

/* out[r][s] = sum_k a[r][k] * b[s][k], then fold a trace back into a so the
 * next product depends on this one. */
static void matmul_into(double *a, const double *b, double *scratch, int rows, int cols)
{
    double trace = 0;
    for (int r = 0; r < rows; r++)
        for (int s = 0; s < rows; s++) {
            double acc = 0;
            for (int k = 0; k < cols; k++)
                acc += a[r * cols + k] * b[s * cols + k];
            scratch[r * rows + s] = acc;
            if (r == s)
                trace += acc;
        }
    a[0] = fmod(a[0] + trace * 1e-9, 1.0);
}

static void run_step(struct worker *w, struct chain *c)
{
    struct resource *window[cfg.group_size], *order[cfg.group_size];
    struct resource *ring = &resources[(size_t)c->ring * cfg.ring_size];
    for (int k = 0; k < cfg.group_size; k++)
        window[k] = order[k] = &ring[(c->head + k * cfg.stride) % cfg.ring_size];
    /* two-phase locking: grow (all locks, in address order), work, shrink */
    qsort(order, cfg.group_size, sizeof order[0], cmp_ptr);
    for (int k = 0; k < cfg.group_size; k++)
        pthread_mutex_lock(&order[k]->lock);
    if (!cfg.null_payload)
        for (int it = 0; it < cfg.iters; it++)
            for (int k = 0; k < cfg.group_size; k++)
                matmul_into(window[0]->m, window[k]->m, w->scratch, cfg.payload_rows,
                            cfg.payload_cols);
    for (int k = cfg.group_size - 1; k >= 0; k--)
        pthread_mutex_unlock(&order[k]->lock);
    c->head = (c->head + cfg.stride) % cfg.ring_size;
    atomic_store_explicit(&c->count, atomic_load_explicit(&c->count, memory_order_relaxed) + 1,
                          memory_order_relaxed);
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    if (obsd)
        w->blk = obsd_sched_worker(obsd, w->idx);
    else
        w->blk = sched_area_claim(private_area, private_bytes, OBSD_SCHED_KIND_WORKER, w->idx,
                                  NULL, NULL);
    if (!w->blk) {
        fprintf(stderr, "chain_ring: worker %d: cannot claim a counter block: %s\n", w->idx,
                obsd_last_error());
        atomic_store(&claim_failed, 1);
        atomic_fetch_add(&claimed, 1);
        return NULL;
    }
    atomic_fetch_add(&claimed, 1);
    while (!atomic_load_explicit(&stop_flag, memory_order_relaxed)) {
        struct chain *c = next_behavior(w);
        if (!c) {
            park(w);
            continue;
        }
        run_step(w, c);
        obsd_sched_completed(w->blk, obsd_now());
        dispatch_local(w, c);
    }
    if (obsd)
        obsd_sched_release(w->blk);
    return NULL;
}

/* ---- one run (a child process) ---------------------------------------- */

static void on_signal(int sig)
{
    (void)sig;
    interrupted = 1;
}

static uint64_t mono_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t real_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Sleeps seconds, waking early on a signal. Returns false if interrupted. */
static bool sleep_s(double seconds)
{
    uint64_t end = mono_now() + (uint64_t)(seconds * 1e9);
    while (!interrupted) {
        uint64_t now = mono_now();
        if (now >= end)
            return true;
        uint64_t left = end - now;
        if (left > 50000000)
            left = 50000000;
        struct timespec ts = {0, (long)left};
        nanosleep(&ts, NULL);
    }
    return false;
}

static uint64_t total_count(void)
{
    uint64_t n = 0;
    for (int i = 0; i < n_chains; i++)
        n += atomic_load_explicit(&chains[i].count, memory_order_relaxed);
    return n;
}

static void sample_workers(struct sched_worker_sample *out)
{
    for (int i = 0; i < cfg.workers; i++) {
        memset(&out[i], 0, sizeof out[i]);
        out[i].worker_index = i;
        sched_read_worker_block(workers[i].blk, &out[i]);
    }
}

static void session(enum obsd_session_event ev)
{
    if (obsd && obsd_session(obsd, ev) < 0)
        fprintf(stderr, "chain_ring: session event %d: %s\n", (int)ev, obsd_last_error());
}

static int run_child(const char *name)
{
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    if (name) {
        obsd = obsd_open(name);
        if (!obsd)
            fprintf(stderr, "chain_ring: obsd segment '%s' not available (%s): counting locally only\n",
                    name, obsd_last_error());
    }
    if (!obsd) {
        private_bytes = 2 * (size_t)cfg.workers * OBSD_SCHED_BLOCK_BYTES;   /* worker + queue */
        private_area = aligned_alloc(OBSD_SCHED_BLOCK_BYTES, private_bytes);
        if (!private_area)
            return 1;
        memset(private_area, 0, private_bytes);
    }

    size_t n_res = (size_t)cfg.rings * cfg.ring_size;
    size_t cells = (size_t)cfg.payload_rows * cfg.payload_cols;
    resources = calloc(n_res, sizeof *resources);
    double *payload = malloc(n_res * cells * sizeof(double));
    n_chains = cfg.rings * cfg.chains_per_ring;
    chains = calloc((size_t)n_chains, sizeof *chains);
    workers = calloc((size_t)cfg.workers, sizeof *workers);
    if (!resources || !payload || !chains || !workers) {
        fprintf(stderr, "chain_ring: out of memory for %zu resources\n", n_res);
        return 1;
    }
    unsigned seed = 12345;
    for (size_t i = 0; i < n_res; i++) {
        pthread_mutex_init(&resources[i].lock, NULL);
        resources[i].m = &payload[i * cells];
        for (size_t k = 0; k < cells; k++)
            resources[i].m[k] = (double)(rand_r(&seed) % 1000) / 1000.0;
    }
    int gap = cfg.ring_size / cfg.chains_per_ring;
    for (int r = 0, k = 0; r < cfg.rings; r++)
        for (int j = 0; j < cfg.chains_per_ring; j++, k++) {
            chains[k].ring = r;
            chains[k].head = (j * gap) % cfg.ring_size;
        }

    session(OBSD_SESSION_STARTED);
    for (int i = 0; i < cfg.workers; i++) {
        workers[i].idx = i;
        workers[i].scratch = malloc((size_t)cfg.payload_rows * cfg.payload_rows * sizeof(double));
        if (!workers[i].scratch || mpmc_init(&workers[i].q, (size_t)n_chains + 1) < 0) {
            fprintf(stderr, "chain_ring: out of memory for worker queues\n");
            return 1;
        }
    }
    for (int i = 0; i < cfg.workers; i++) {
        char tag[32];
        snprintf(tag, sizeof tag, "wsq.%d", i);
        workers[i].qblk = obsd ? obsd_sched_queue(obsd, tag)
                               : sched_area_claim(private_area, private_bytes, OBSD_SCHED_KIND_QUEUE,
                                                  0, tag, NULL);
    }
    for (int i = 0; i < cfg.workers; i++)
        pthread_create(&workers[i].thread, NULL, worker_main, &workers[i]);
    while (atomic_load(&claimed) < cfg.workers)
        sched_yield();
    int rc = 0;
    if (atomic_load(&claim_failed)) {
        atomic_store(&stop_flag, 1);
        wake_parked();
        for (int i = 0; i < cfg.workers; i++)
            pthread_join(workers[i].thread, NULL);
        session(OBSD_SESSION_INTERRUPTED);
        session(OBSD_SESSION_ENDED);
        obsd_close(obsd);
        return 1;
    }
    for (int k = 0; k < n_chains; k++)
        dispatch_remote(&workers[k % cfg.workers], &chains[k]);

    struct sched_worker_sample *warm = calloc((size_t)cfg.workers, sizeof *warm);
    struct sched_worker_sample *end = calloc((size_t)cfg.workers, sizeof *end);
    struct sched_worker_sample *delta = calloc((size_t)cfg.workers, sizeof *delta);
    bool ok = sleep_s(cfg.warmup);
    uint64_t wall_start = real_now();
    uint64_t t0 = mono_now();
    uint64_t c0 = total_count();
    sample_workers(warm);
    session(OBSD_SESSION_TRACKING_START);
    ok = ok && sleep_s(cfg.duration);
    sample_workers(end);
    uint64_t c1 = total_count();
    uint64_t t1 = mono_now();
    session(OBSD_SESSION_TRACKING_STOP);
    atomic_store(&stop_flag, 1);
    wake_parked();
    for (int i = 0; i < cfg.workers; i++)
        pthread_join(workers[i].thread, NULL);
    if (!ok || interrupted)
        session(OBSD_SESSION_INTERRUPTED);
    session(OBSD_SESSION_ENDED);
    for (int i = 0; obsd && i < cfg.workers; i++)
        obsd_sched_release(workers[i].qblk);
    if (obsd)
        obsd_flush(obsd);

    /* The repeat: our own count of completed steps over our own window, plus
     * the counter deltas over the same window. */
    double elapsed = (double)(t1 - t0) / 1e9;
    json_t *rep = json_object();
    json_object_set_new(rep, "completed_behaviors", json_integer((json_int_t)(c1 - c0)));
    json_object_set_new(rep, "elapsed_s", json_real(elapsed));
    json_object_set_new(rep, "throughput", json_real(elapsed > 0 ? (double)(c1 - c0) / elapsed : 0));
    json_object_set_new(rep, "wall_clock_ns_start", json_integer((json_int_t)wall_start));
    json_object_set_new(rep, "obsd", json_boolean(obsd != NULL));
    json_t *stats = json_array();
    for (int i = 0; i < cfg.workers; i++) {
        sched_worker_delta(&end[i], &warm[i], &delta[i]);
        json_array_append_new(stats, sched_worker_json(&delta[i]));
    }
    json_object_set_new(rep, "scheduler_stats", stats);
    struct sched_derived d;
    sched_derive(delta, (size_t)cfg.workers, t1 - t0, &d);
    json_object_set_new(rep, "derived", sched_derived_json(&d));
    if (!ok || interrupted) {
        json_object_set_new(rep, "interrupted", json_true());
        rc = 130;
    }
    char *text = json_dumps(rep, JSON_COMPACT);
    printf("%s\n", text);
    fflush(stdout);
    free(text);
    json_decref(rep);
    free(warm);
    free(end);
    free(delta);
    obsd_close(obsd);
    return rc;
}

/* ---- the sweep (parent) ----------------------------------------------- */

enum axis { AXIS_NONE, AXIS_WORKERS, AXIS_ITERS, AXIS_GROUP, AXIS_PAYLOAD };
static const char *const axis_names[] = {"none", "workers", "iters", "group-size", "payload"};

struct point_value {
    int v, rows, cols;
};

static void apply_axis(struct config *c, enum axis a, const struct point_value *pv)
{
    switch (a) {
    case AXIS_WORKERS: c->workers = pv->v; break;
    case AXIS_ITERS: c->iters = pv->v; break;
    case AXIS_GROUP: c->group_size = pv->v; break;
    case AXIS_PAYLOAD: c->payload_rows = pv->rows; c->payload_cols = pv->cols; break;
    default: break;
    }
}

static bool parse_int(const char *s, long lo, long hi, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return false;
    *out = (int)v;
    return true;
}

static bool parse_double(const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v))
        return false;
    *out = v;
    return true;
}

static int parse_values(enum axis a, const char *csv, struct point_value **out, size_t *n)
{
    char *copy = strdup(csv), *save = NULL;
    size_t cap = 8;
    *out = calloc(cap, sizeof **out);
    *n = 0;
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        while (*tok == ' ')
            tok++;
        if (!*tok)
            continue;
        if (*n == cap)
            *out = realloc(*out, (cap *= 2) * sizeof **out);
        struct point_value *pv = &(*out)[(*n)++];
        if (a == AXIS_PAYLOAD) {
            char *x = strchr(tok, 'x');
            if (!x) {
                fprintf(stderr, "chain_ring: --sweep-values: payload value '%s' must look like RxC\n", tok);
                free(copy);
                return -1;
            }
            *x = '\0';
            if (!parse_int(tok, 1, 4096, &pv->rows) || !parse_int(x + 1, 1, 4096, &pv->cols)) {
                fprintf(stderr, "chain_ring: --sweep-values: payload rows and cols must be integers 1..4096\n");
                free(copy);
                return -1;
            }
        } else if (!parse_int(tok, a == AXIS_ITERS ? 0 : 1, 1000000000, &pv->v)) {
            fprintf(stderr, "chain_ring: --sweep-values: '%s' is not a valid integer for axis %s\n",
                    tok, axis_names[a]);
            free(copy);
            return -1;
        }
    }
    free(copy);
    if (*n == 0) {
        fprintf(stderr, "chain_ring: --sweep-values is empty\n");
        return -1;
    }
    return 0;
}

static int physical_cpu_count(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) != 0)
        return (int)sysconf(_SC_NPROCESSORS_ONLN);
    int firsts[CPU_SETSIZE], n = 0;
    for (int cpu = 0; cpu < CPU_SETSIZE; cpu++) {
        if (!CPU_ISSET(cpu, &set))
            continue;
        char path[128];
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu%d/topology/thread_siblings_list", cpu);
        FILE *f = fopen(path, "r");
        int first = cpu;
        if (f) {
            if (fscanf(f, "%d", &first) != 1)
                first = cpu;
            fclose(f);
        }
        bool seen = false;
        for (int i = 0; i < n; i++)
            seen |= firsts[i] == first;
        if (!seen)
            firsts[n++] = first;
    }
    return n > 0 ? n : 1;
}

static const char *self_exe;

struct child_result {
    json_t *repeat;        /* NULL on error */
    char message[256];
    char stderr_tail[2048];
    bool was_interrupted;
};

static void append_tail(char *tail, size_t cap, const char *buf, size_t n)
{
    size_t have = strlen(tail);
    if (n >= cap - 1) {
        buf += n - (cap - 1);
        n = cap - 1;
        have = 0;
    } else if (have + n >= cap) {
        size_t drop = have + n - (cap - 1);
        memmove(tail, tail + drop, have - drop);
        have -= drop;
    }
    memcpy(tail + have, buf, n);
    tail[have + n] = '\0';
}

static void run_repeat(const struct config *c, const char *name, int repeat_index,
                       struct child_result *res)
{
    memset(res, 0, sizeof *res);
    char a[12][32];
    snprintf(a[0], 32, "%d", c->workers);
    snprintf(a[1], 32, "%.17g", c->duration);
    snprintf(a[2], 32, "%.17g", c->warmup);
    snprintf(a[3], 32, "%d", c->iters);
    snprintf(a[4], 32, "%d", c->group_size);
    snprintf(a[5], 32, "%d", c->stride);
    snprintf(a[6], 32, "%d", c->ring_size);
    snprintf(a[7], 32, "%d", c->rings);
    snprintf(a[8], 32, "%d", c->chains_per_ring);
    snprintf(a[9], 32, "%d", c->payload_rows);
    snprintf(a[10], 32, "%d", c->payload_cols);
    const char *argv[40];
    int k = 0;
    argv[k++] = self_exe;
    argv[k++] = "--child";
    argv[k++] = "--workers"; argv[k++] = a[0];
    argv[k++] = "--duration"; argv[k++] = a[1];
    argv[k++] = "--warmup"; argv[k++] = a[2];
    argv[k++] = "--iters"; argv[k++] = a[3];
    argv[k++] = "--group-size"; argv[k++] = a[4];
    argv[k++] = "--stride"; argv[k++] = a[5];
    argv[k++] = "--ring-size"; argv[k++] = a[6];
    argv[k++] = "--rings"; argv[k++] = a[7];
    argv[k++] = "--chains-per-ring"; argv[k++] = a[8];
    argv[k++] = "--payload-rows"; argv[k++] = a[9];
    argv[k++] = "--payload-cols"; argv[k++] = a[10];
    if (c->null_payload)
        argv[k++] = "--null-payload";
    if (name) {
        argv[k++] = "--name";
        argv[k++] = name;
    }
    argv[k] = NULL;

    int out[2], err[2];
    if (pipe(out) < 0 || pipe(err) < 0) {
        snprintf(res->message, sizeof res->message, "pipe: %s", strerror(errno));
        return;
    }
    pid_t pid = fork();
    if (pid < 0) {
        snprintf(res->message, sizeof res->message, "fork: %s", strerror(errno));
        return;
    }
    if (pid == 0) {
        dup2(out[1], 1);
        dup2(err[1], 2);
        close(out[0]);
        close(out[1]);
        close(err[0]);
        close(err[1]);
        execv(self_exe, (char *const *)argv);
        fprintf(stderr, "exec %s: %s\n", self_exe, strerror(errno));
        _exit(127);
    }
    close(out[1]);
    close(err[1]);
    double limit = fmax(3 * c->duration + 30, c->duration + c->warmup + 60);
    uint64_t deadline = mono_now() + (uint64_t)(limit * 1e9);
    size_t olen = 0, ocap = 4096;
    char *obuf = malloc(ocap);
    bool open_out = true, open_err = true, timed_out = false, forwarded = false;
    while (open_out || open_err) {
        if (interrupted && !forwarded) {
            kill(pid, SIGINT);        /* the child ends its run as interrupted */
            forwarded = true;
        }
        struct pollfd p[2] = {{open_out ? out[0] : -1, POLLIN, 0}, {open_err ? err[0] : -1, POLLIN, 0}};
        uint64_t now = mono_now();
        if (now >= deadline) {
            timed_out = true;
            kill(pid, SIGKILL);
            break;
        }
        int pr = poll(p, 2, 200);
        if (pr < 0 && errno != EINTR)
            break;
        char buf[4096];
        if (open_out && (p[0].revents & (POLLIN | POLLHUP))) {
            ssize_t r = read(out[0], buf, sizeof buf);
            if (r <= 0) {
                open_out = false;
            } else {
                if (olen + (size_t)r + 1 > ocap)
                    obuf = realloc(obuf, ocap = 2 * (olen + (size_t)r + 1));
                memcpy(obuf + olen, buf, (size_t)r);
                olen += (size_t)r;
            }
        }
        if (open_err && (p[1].revents & (POLLIN | POLLHUP))) {
            ssize_t r = read(err[0], buf, sizeof buf);
            if (r <= 0)
                open_err = false;
            else
                append_tail(res->stderr_tail, sizeof res->stderr_tail, buf, (size_t)r);
        }
    }
    close(out[0]);
    close(err[0]);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    obuf[olen] = '\0';
    json_error_t jerr;
    json_t *rep = olen ? json_loads(obuf, 0, &jerr) : NULL;
    free(obuf);
    if (timed_out) {
        snprintf(res->message, sizeof res->message, "child timed out after %.0f s", limit);
    } else if (interrupted || (WIFEXITED(status) && WEXITSTATUS(status) == 130)) {
        res->was_interrupted = true;
        snprintf(res->message, sizeof res->message, "interrupted");
        if (json_is_object(rep)) {     /* keep the partial repeat, marked */
            json_object_set_new(rep, "repeat_index", json_integer(repeat_index));
            res->repeat = rep;
            return;
        }
    } else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        if (WIFSIGNALED(status))
            snprintf(res->message, sizeof res->message, "child killed by signal %d", WTERMSIG(status));
        else
            snprintf(res->message, sizeof res->message, "child exited with status %d",
                     WEXITSTATUS(status));
    } else if (!json_is_object(rep)) {
        snprintf(res->message, sizeof res->message, "child printed no result");
    } else {
        json_object_set_new(rep, "repeat_index", json_integer(repeat_index));
        res->repeat = rep;
        return;
    }
    json_decref(rep);
}

static char *iso_now(char *buf, size_t len)
{
    time_t t = time(NULL);
    struct tm tm;
    localtime_r(&t, &tm);
    strftime(buf, len, "%Y-%m-%dT%H:%M:%S", &tm);
    return buf;
}

/* tmp + rename, so a reader never sees a half-written document. */
static int write_atomic(const char *path, json_t *doc)
{
    size_t n = strlen(path) + 8;
    char *tmp = malloc(n);
    snprintf(tmp, n, "%s.tmp", path);
    int rc = json_dump_file(doc, tmp, JSON_INDENT(2) | JSON_SORT_KEYS);
    if (rc == 0) {
        FILE *f = fopen(tmp, "r+");
        if (f) {
            fflush(f);
            fsync(fileno(f));
            fclose(f);
        }
        rc = rename(tmp, path);
    }
    if (rc != 0) {
        fprintf(stderr, "chain_ring: cannot write %s: %s\n", path, strerror(errno));
        unlink(tmp);
    }
    free(tmp);
    return rc;
}

static void print_table(json_t *doc)
{
    const char *axis = json_string_value(json_object_get(json_object_get(doc, "sweep"), "axis"));
    json_t *points = json_object_get(doc, "points");
    printf("%-10s %14s %12s\n", axis, "throughput", "stdev");
    size_t i;
    json_t *pt;
    json_array_foreach(points, i, pt) {
        const char *label = json_string_value(json_object_get(pt, "label"));
        json_t *mean = json_object_get(pt, "throughput_mean"), *sd = json_object_get(pt, "throughput_stdev");
        if (!json_is_null(json_object_get(pt, "error")))
            printf("%-10s %14s %12s\n", label, "ERROR", "-");
        else if (json_is_number(sd))
            printf("%-10s %14.1f %12.1f\n", label, json_number_value(mean), json_number_value(sd));
        else
            printf("%-10s %14.1f %12s\n", label, json_number_value(mean), "-");
    }
    printf("(obsctl compare --sweep FILE adds speedup and efficiency)\n");
}

static void usage(FILE *out)
{
    fprintf(out,
            "usage: chain_ring [--name NAME] [OPTIONS]\n"
            "\n"
            "Behaviors walk rings of locked resources on work-stealing worker threads,\n"
            "counted with obsd scheduler counters. Each repeat of each sweep point runs in a\n"
            "child process and is its own run in the obsd collector NAME.\n"
            "\n"
            "  --name NAME            obsd segment to write to (without it, or when it is\n"
            "                         not available, counters stay local)\n"
            "  --workers N            worker threads (default 1; the workers axis sets it)\n"
            "  --duration S           measured seconds per repeat (default 5)\n"
            "  --warmup S             seconds before the tracking window (default min(1, 0.1*duration))\n"
            "  --iters N              matrix products per window slot (default 2000)\n"
            "  --group-size N         resources per behavior (default 2)\n"
            "  --stride N             spacing of the window on the ring (default 1)\n"
            "  --ring-size N          resources per ring (default 128)\n"
            "  --rings N              rings (default max(workers*16/chains_per_ring, workers*4))\n"
            "  --chains-per-ring N    chains per ring (default max(1, ring_size/(group*stride*8)))\n"
            "  --payload-rows N, --payload-cols N   payload matrix shape (default 16x16)\n"
            "  --null-payload         skip the matrix work (pure scheduling overhead)\n"
            "  --sweep-axis A         none (default), workers, iters, group-size or payload\n"
            "  --sweep-values LIST    comma-separated values of the axis (payload: RxC,...)\n"
            "  --repeats R            repeats per point (default 1)\n"
            "  --output FILE          write the results JSON (schema_version 1) to FILE,\n"
            "                         atomically after each point\n"
            "  --quiet                no table\n"
            "  --help                 this text\n"
            "\n"
            "Exit status: 0 done, 1 a point failed, 2 bad arguments, 130 interrupted.\n");
}

int main(int argc, char **argv)
{
    cfg = (struct config){.workers = 1, .duration = 5, .iters = 2000, .group_size = 2,
                          .stride = 1, .ring_size = 128, .payload_rows = 16, .payload_cols = 16};
    const char *name = NULL, *output = NULL, *values = NULL;
    enum axis axis = AXIS_NONE;
    int repeats = 1;
    bool child = false, quiet = false;
    enum { O_NAME = 256, O_WORKERS, O_DURATION, O_WARMUP, O_ITERS, O_GROUP, O_STRIDE, O_RING,
           O_RINGS, O_CPR, O_ROWS, O_COLS, O_NULL, O_AXIS, O_VALUES, O_REPEATS, O_OUTPUT, O_CHILD,
           O_QUIET, O_HELP };
    static const struct option opts[] = {
        {"name", required_argument, 0, O_NAME},
        {"workers", required_argument, 0, O_WORKERS},
        {"duration", required_argument, 0, O_DURATION},
        {"warmup", required_argument, 0, O_WARMUP},
        {"iters", required_argument, 0, O_ITERS},
        {"group-size", required_argument, 0, O_GROUP},
        {"stride", required_argument, 0, O_STRIDE},
        {"ring-size", required_argument, 0, O_RING},
        {"rings", required_argument, 0, O_RINGS},
        {"chains-per-ring", required_argument, 0, O_CPR},
        {"payload-rows", required_argument, 0, O_ROWS},
        {"payload-cols", required_argument, 0, O_COLS},
        {"null-payload", no_argument, 0, O_NULL},
        {"sweep-axis", required_argument, 0, O_AXIS},
        {"sweep-values", required_argument, 0, O_VALUES},
        {"repeats", required_argument, 0, O_REPEATS},
        {"output", required_argument, 0, O_OUTPUT},
        {"child", no_argument, 0, O_CHILD},
        {"quiet", no_argument, 0, O_QUIET},
        {"help", no_argument, 0, O_HELP},
        {0, 0, 0, 0},
    };
    int o, li = -1;
    opterr = 0;
    while ((li = -1, o = getopt_long(argc, argv, "", opts, &li)) != -1) {
        bool ok = true;
        switch (o) {
        case O_NAME: name = optarg; break;
        case O_WORKERS: ok = parse_int(optarg, 1, MAX_WORKERS, &cfg.workers); break;
        case O_DURATION: ok = parse_double(optarg, &cfg.duration) && cfg.duration > 0; break;
        case O_WARMUP: ok = parse_double(optarg, &cfg.warmup) && cfg.warmup >= 0; cfg.warmup_set = true; break;
        case O_ITERS: ok = parse_int(optarg, 0, 1000000000, &cfg.iters); break;
        case O_GROUP: ok = parse_int(optarg, 1, 1000000, &cfg.group_size); break;
        case O_STRIDE: ok = parse_int(optarg, 1, 1000000, &cfg.stride); break;
        case O_RING: ok = parse_int(optarg, 2, 4000000, &cfg.ring_size); break;
        case O_RINGS: ok = parse_int(optarg, 1, 4000000, &cfg.rings); break;
        case O_CPR: ok = parse_int(optarg, 1, 4000000, &cfg.chains_per_ring); break;
        case O_ROWS: ok = parse_int(optarg, 1, 4096, &cfg.payload_rows); break;
        case O_COLS: ok = parse_int(optarg, 1, 4096, &cfg.payload_cols); break;
        case O_NULL: cfg.null_payload = true; break;
        case O_AXIS:
            ok = false;
            for (int i = 0; i < 5; i++)
                if (!strcmp(optarg, axis_names[i])) {
                    axis = (enum axis)i;
                    ok = true;
                }
            if (!ok) {
                fprintf(stderr, "chain_ring: --sweep-axis must be none, workers, iters, group-size or payload, not '%s'\n", optarg);
                return 2;
            }
            break;
        case O_VALUES: values = optarg; break;
        case O_REPEATS: ok = parse_int(optarg, 1, 1000, &repeats); break;
        case O_OUTPUT: output = optarg; break;
        case O_CHILD: child = true; break;
        case O_QUIET: quiet = true; break;
        case O_HELP: usage(stdout); return 0;
        default:
            fprintf(stderr, "chain_ring: unknown option or missing value: '%s'\n", argv[optind - 1]);
            usage(stderr);
            return 2;
        }
        if (!ok) {
            fprintf(stderr, "chain_ring: bad value '%s' for --%s\n", optarg,
                    li >= 0 ? opts[li].name : "?");
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "chain_ring: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    if (child) {
        derive_sizes(&cfg);
        const char *err = validate(&cfg);
        if (err) {
            fprintf(stderr, "chain_ring: %s\n", err);
            return 2;
        }
        return run_child(name);
    }

    if (axis == AXIS_NONE && values) {
        fprintf(stderr, "chain_ring: --sweep-values needs --sweep-axis\n");
        return 2;
    }
    if (axis != AXIS_NONE && !values) {
        fprintf(stderr, "chain_ring: --sweep-axis %s needs --sweep-values\n", axis_names[axis]);
        return 2;
    }
    struct point_value *pvs = NULL, none = {0};
    size_t n_points = 1;
    if (axis != AXIS_NONE) {
        if (parse_values(axis, values, &pvs, &n_points) < 0) {
            free(pvs);
            return 2;
        }
    } else {
        pvs = &none;
    }
    int phys = physical_cpu_count();
    struct config *pcfg = calloc(n_points, sizeof *pcfg);
    for (size_t i = 0; i < n_points; i++) {
        pcfg[i] = cfg;
        apply_axis(&pcfg[i], axis, &pvs[i]);
        derive_sizes(&pcfg[i]);
        const char *err = validate(&pcfg[i]);
        if (err) {
            fprintf(stderr, "chain_ring: sweep point %zu: %s\n", i + 1, err);
            free(pcfg);
            if (pvs != &none)
                free(pvs);
            return 2;
        }
        if (pcfg[i].workers > phys)
            fprintf(stderr, "chain_ring: warning: %d workers on %d physical cores: oversubscribed\n",
                    pcfg[i].workers, phys);
    }
    if (cfg.duration < 1)
        fprintf(stderr, "chain_ring: warning: --duration below 1 s gives noisy throughput\n");

    char selfbuf[4096];
    ssize_t sl = readlink("/proc/self/exe", selfbuf, sizeof selfbuf - 1);
    if (sl <= 0) {
        fprintf(stderr, "chain_ring: cannot find my own executable\n");
        return 1;
    }
    selfbuf[sl] = '\0';
    self_exe = selfbuf;
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    char host[256] = "", when[32];
    gethostname(host, sizeof host - 1);
    json_t *meta = json_object();
    json_object_set_new(meta, "hostname", json_string(host));
    json_object_set_new(meta, "platform", json_string("linux"));
    json_object_set_new(meta, "cpu_count", json_integer(sysconf(_SC_NPROCESSORS_ONLN)));
    json_object_set_new(meta, "physical_cpu_count", json_integer(phys));
    json_object_set_new(meta, "obsd_abi_version", json_integer(OBSD_ABI_VERSION));
    const char *sha = getenv("OBSD_GIT_SHA");
    json_object_set_new(meta, "git_sha", sha ? json_string(sha) : json_null());
    json_object_set_new(meta, "obsd_name", name ? json_string(name) : json_null());
    json_object_set_new(meta, "started_at", json_string(iso_now(when, sizeof when)));
    json_object_set_new(meta, "finished_at", json_null());
    json_t *jargv = json_array();
    for (int i = 0; i < argc; i++)
        json_array_append_new(jargv, json_string(argv[i]));
    json_object_set_new(meta, "argv", jargv);
    json_object_set_new(meta, "interrupted", json_false());

    json_t *sweep = json_object();
    json_object_set_new(sweep, "axis", json_string(axis_names[axis]));
    json_t *jvals = json_array();
    for (size_t i = 0; axis != AXIS_NONE && i < n_points; i++) {
        if (axis == AXIS_PAYLOAD)
            json_array_append_new(jvals, json_pack("[ii]", pvs[i].rows, pvs[i].cols));
        else
            json_array_append_new(jvals, json_integer(pvs[i].v));
    }
    json_object_set_new(sweep, "values", jvals);
    json_t *fixed = config_json(&pcfg[0]);
    const char *axis_keys[] = {NULL, "workers", "iters", "group_size", NULL};
    if (axis_keys[axis])
        json_object_del(fixed, axis_keys[axis]);
    if (axis == AXIS_PAYLOAD) {
        json_object_del(fixed, "payload_rows");
        json_object_del(fixed, "payload_cols");
    }
    json_object_set_new(fixed, "repeats", json_integer(repeats));
    json_object_set_new(sweep, "fixed", fixed);

    json_t *doc = json_object();
    json_object_set_new(doc, "schema_version", json_integer(SCHEMA_VERSION));
    json_object_set_new(doc, "metadata", meta);
    json_object_set_new(doc, "sweep", sweep);
    json_t *points = json_array();
    json_object_set_new(doc, "points", points);

    int exit_code = 0;
    for (size_t i = 0; i < n_points && !interrupted; i++) {
        json_t *pt = json_object();
        char label[64];
        switch (axis) {
        case AXIS_WORKERS: snprintf(label, sizeof label, "%d", pcfg[i].workers); break;
        case AXIS_ITERS: snprintf(label, sizeof label, "%d", pcfg[i].iters); break;
        case AXIS_GROUP: snprintf(label, sizeof label, "%d", pcfg[i].group_size); break;
        case AXIS_PAYLOAD: snprintf(label, sizeof label, "%dx%d", pcfg[i].payload_rows, pcfg[i].payload_cols); break;
        default: snprintf(label, sizeof label, "-"); break;
        }
        json_object_set_new(pt, "label", json_string(label));
        json_object_set_new(pt, "inputs", config_json(&pcfg[i]));
        json_t *reps = json_array();
        json_object_set_new(pt, "repeats", reps);
        json_t *error = json_null();
        double *tp = calloc((size_t)repeats, sizeof *tp);
        size_t n_ok = 0;
        for (int r = 0; r < repeats; r++) {
            struct child_result res;
            run_repeat(&pcfg[i], name, r, &res);
            if (res.repeat && res.was_interrupted) {
                json_array_append_new(reps, res.repeat);   /* partial: not in the mean */
                break;
            }
            if (!res.repeat) {
                json_decref(error);
                error = json_pack("{s:s, s:s}", "message", res.message, "stderr_tail", res.stderr_tail);
                if (!res.was_interrupted)
                    exit_code = 1;
                fprintf(stderr, "chain_ring: point %s repeat %d: %s\n%s", label, r, res.message,
                        res.stderr_tail);
                break;
            }
            json_t *t = json_object_get(res.repeat, "throughput");
            tp[n_ok++] = json_number_value(t);
            json_array_append_new(reps, res.repeat);
            if (interrupted)
                break;
        }
        if (interrupted && json_is_null(error))
            error = json_pack("{s:s, s:s}", "message", "interrupted", "stderr_tail", "");
        struct sched_summary s;
        sched_summarize(tp, n_ok, &s);
        free(tp);
        json_object_set_new(pt, "throughput_mean", s.has_mean ? json_real(s.mean) : json_null());
        json_object_set_new(pt, "throughput_stdev", s.has_spread ? json_real(s.stdev) : json_null());
        json_object_set_new(pt, "throughput_min", s.has_spread ? json_real(s.min) : json_null());
        json_object_set_new(pt, "throughput_max", s.has_spread ? json_real(s.max) : json_null());
        json_object_set_new(pt, "error", error);
        json_array_append_new(points, pt);
        if (output)
            write_atomic(output, doc);
    }
    json_object_set_new(meta, "finished_at", json_string(iso_now(when, sizeof when)));
    json_object_set_new(meta, "interrupted", json_boolean(interrupted));
    if (output && write_atomic(output, doc) != 0)
        exit_code = 1;
    if (!quiet)
        print_table(doc);
    json_decref(doc);
    free(pcfg);
    if (pvs != &none)
        free(pvs);
    return interrupted ? 130 : exit_code;
}
