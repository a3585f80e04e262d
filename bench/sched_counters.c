/*
 * sched_counters: what the scheduler counters cost.
 *
 *   1. One counter increment (obsd_sched_inc: relaxed load + store on the
 *      worker's own block) against a plain non-atomic increment of a field in
 *      memory, in the same run; also the completion (sequence-locked group of
 *      three fields) and the shared fetch-add variant, against the same
 *      baseline.
 *   2. A consistent snapshot of 64 worker blocks (sched_read: validation,
 *      completion sequence check) against a plain memcpy of the same bytes,
 *      idle and while a worker thread keeps counting.
 *   3. A session event through libobsd on a real segment, which now carries
 *      a sample of the counter area (sched_wire.h): with 64 of 64 blocks in
 *      use and with 4 of the default 256, against the same event on a segment
 *      whose area was never used (no sample), in the same run, with a reader
 *      thread draining. Median of single calls, each timed with obsd_now().
 *
 * Prints one JSON object per result. Run: build/bench/sched_counters
 */
#include <pthread.h>
#include <stdio.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "obsd/obsd.h"
#include "sched/sched.h"
#include "sched/sched_producer.h"
#include "shm/shm.h"

#define INCS 100000000ull
#define SNAPS 200000
#define NBLOCKS 64

/* Keeps the compiler from folding a loop of increments into one add, in the
 * baseline and in the measured loop alike. */
#define BARRIER() __asm__ volatile("" ::: "memory")

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

struct plain {
    uint64_t pad[8];
    uint64_t counter;
} __attribute__((aligned(64)));

static double bench_plain(struct plain *p)
{
    double t0 = now_s();
    for (uint64_t i = 0; i < INCS; i++) {
        p->counter++;
        BARRIER();
    }
    return (now_s() - t0) * 1e9 / (double)INCS;
}

static double bench_inc(struct obsd_sched_block *b)
{
    double t0 = now_s();
    for (uint64_t i = 0; i < INCS; i++) {
        obsd_sched_inc(b, OBSD_SCHED_POPPED_LOCAL);
        BARRIER();
    }
    return (now_s() - t0) * 1e9 / (double)INCS;
}

static double bench_completed(struct obsd_sched_block *b)
{
    double t0 = now_s();
    for (uint64_t i = 0; i < INCS / 4; i++) {
        obsd_sched_completed(b, i);
        BARRIER();
    }
    return (now_s() - t0) * 1e9 / (double)(INCS / 4);
}

static double bench_shared(struct obsd_sched_block *b)
{
    double t0 = now_s();
    for (uint64_t i = 0; i < INCS / 4; i++) {
        obsd_sched_add_shared(b, OBSD_SCHED_PUSHED_REMOTE, 1);
        BARRIER();
    }
    return (now_s() - t0) * 1e9 / (double)(INCS / 4);
}

static _Atomic int stop;

static void *writer(void *arg)
{
    struct obsd_sched_block *b = arg;
    uint64_t k = 0;
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        obsd_sched_inc(b, OBSD_SCHED_POPPED_LOCAL);
        obsd_sched_completed(b, ++k);
    }
    return NULL;
}

static void bench_snapshot(void *area, size_t bytes, const char *label, double *ns_read,
                           double *ns_copy)
{
    struct sched_sample s;
    sched_sample_init(&s, NBLOCKS);
    void *copy = aligned_alloc(64, bytes);
    double t0 = now_s();
    for (int i = 0; i < SNAPS; i++) {
        memcpy(copy, area, bytes);
        BARRIER();
    }
    *ns_copy = (now_s() - t0) * 1e9 / SNAPS;
    t0 = now_s();
    for (int i = 0; i < SNAPS; i++) {
        sched_read(area, bytes, &s, NULL, NULL, 0);
        BARRIER();
    }
    *ns_read = (now_s() - t0) * 1e9 / SNAPS;
    if (s.n_workers != NBLOCKS) {
        fprintf(stderr, "sched_counters: %s: read %zu workers, expected %d\n", label, s.n_workers, NBLOCKS);
        exit(1);
    }
    free(copy);
    sched_sample_free(&s);
}

/* ---- 3. session events ---------------------------------------------- */

#define EVENTS 4000

struct drainer {
    struct shm_segment *seg;
    _Atomic int stop;
    uint64_t records;
};

static void count_rec(void *ctx, const struct shm_producer *from, const struct shm_record *rec)
{
    (void)from;
    (void)rec;
    ((struct drainer *)ctx)->records++;
}

static void *drain_loop(void *arg)
{
    struct drainer *d = arg;
    while (!atomic_load_explicit(&d->stop, memory_order_relaxed))
        if (!shm_drain(d->seg, count_rec, d, 0)) {
            struct timespec ts = {0, 20000};
            nanosleep(&ts, NULL);
        }
    shm_drain(d->seg, count_rec, d, 0);
    return NULL;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* One segment with `blocks` counter blocks, `used` of them claimed. */
struct evseg {
    char name[64];
    struct shm_segment *seg;
    obsd_t *h;
    struct drainer d;
    pthread_t th;
};

static int evseg_open(struct evseg *e, const char *tag, uint32_t blocks, int used)
{
    snprintf(e->name, sizeof e->name, "bench-sched-%s-%d", tag, (int)getpid());
    struct shm_config cfg;
    shm_config_defaults(&cfg, e->name);
    cfg.sched_workers = blocks;
    char err[256];
    if (!(e->seg = shm_segment_create(&cfg, err, sizeof err))) {
        fprintf(stderr, "sched_counters: %s\n", err);
        return -1;
    }
    shm_set_collector_running(e->seg, true);
    if (!(e->h = obsd_open(e->name)))
        return -1;
    for (int i = 0; i < used; i++)
        if (!obsd_sched_worker(e->h, i))
            return -1;
    e->d.seg = e->seg;
    atomic_store(&e->d.stop, 0);
    e->d.records = 0;
    pthread_create(&e->th, NULL, drain_loop, &e->d);
    return 0;
}

static void evseg_close(struct evseg *e)
{
    atomic_store(&e->d.stop, 1);
    pthread_join(e->th, NULL);
    obsd_close(e->h);
    shm_segment_close(e->seg, true);
}

/* Median ns of one obsd_session(TRACKING_START) on h, over EVENTS calls
 * spaced by a short pause (so the reader keeps the ring empty). */
static double event_cost(obsd_t *h)
{
    static double v[EVENTS];
    for (int i = 0; i < EVENTS; i++) {
        uint64_t t0 = obsd_now();
        obsd_session(h, OBSD_SESSION_TRACKING_START);
        v[i] = (double)(obsd_now() - t0);
        struct timespec ts = {0, 30000};
        nanosleep(&ts, NULL);
    }
    qsort(v, EVENTS, sizeof v[0], cmp_double);
    return v[EVENTS / 2];
}

static int bench_session_events(void)
{
    struct evseg none, full, sparse;
    if (evseg_open(&none, "none", 64, 0) || evseg_open(&full, "full", 64, 64) ||
        evseg_open(&sparse, "sparse", 256, 4))
        return -1;
    double c_none = 1e12, c_full = 1e12, c_sparse = 1e12, v;
    for (int r = 0; r < 3; r++) {   /* interleaved, best of 3 medians */
        if ((v = event_cost(none.h)) < c_none) c_none = v;
        if ((v = event_cost(full.h)) < c_full) c_full = v;
        if ((v = event_cost(sparse.h)) < c_sparse) c_sparse = v;
    }
    struct obsd_producer_stats ps_full, ps_sparse;
    obsd_stats(full.h, &ps_full);
    obsd_stats(sparse.h, &ps_sparse);
    printf("{\"bench\":\"sched_counters\",\"case\":\"session event, 64 of 64 blocks in use "
           "(sample of 10.8 KB)\",\"ns_per_event\":%.0f,\"baseline\":\"session event, area "
           "never used (no sample)\",\"baseline_ns\":%.0f,\"over_baseline_ns\":%.0f,"
           "\"dropped\":%llu}\n",
           c_full, c_none, c_full - c_none, (unsigned long long)ps_full.records_dropped);
    printf("{\"bench\":\"sched_counters\",\"case\":\"session event, 4 of 256 blocks in use "
           "(sample of 720 B)\",\"ns_per_event\":%.0f,\"baseline\":\"session event, area "
           "never used (no sample)\",\"baseline_ns\":%.0f,\"over_baseline_ns\":%.0f,"
           "\"dropped\":%llu}\n",
           c_sparse, c_none, c_sparse - c_none, (unsigned long long)ps_sparse.records_dropped);
    evseg_close(&none);
    evseg_close(&full);
    evseg_close(&sparse);
    return 0;
}

int main(void)
{
    size_t bytes = NBLOCKS * OBSD_SCHED_BLOCK_BYTES;
    void *area = aligned_alloc(OBSD_SCHED_BLOCK_BYTES, bytes);
    memset(area, 0, bytes);
    struct obsd_sched_block *blocks[NBLOCKS];
    for (int i = 0; i < NBLOCKS; i++)
        blocks[i] = sched_area_claim(area, bytes, OBSD_SCHED_KIND_WORKER, i, NULL, NULL);
    struct plain *p = aligned_alloc(64, sizeof *p);
    memset(p, 0, sizeof *p);

    /* interleave baseline and measured runs; report the best of 3 each */
    double plain = 1e9, inc = 1e9, comp = 1e9, shared = 1e9;
    for (int r = 0; r < 3; r++) {
        double v;
        if ((v = bench_plain(p)) < plain) plain = v;
        if ((v = bench_inc(blocks[0])) < inc) inc = v;
        if ((v = bench_completed(blocks[0])) < comp) comp = v;
        if ((v = bench_shared(blocks[1])) < shared) shared = v;
    }
    printf("{\"bench\":\"sched_counters\",\"case\":\"increment\",\"ns_per_op\":%.3f,"
           "\"baseline\":\"plain non-atomic increment\",\"baseline_ns_per_op\":%.3f,\"ratio\":%.2f}\n",
           inc, plain, inc / plain);
    printf("{\"bench\":\"sched_counters\",\"case\":\"completed (seqlock group of 3)\",\"ns_per_op\":%.3f,"
           "\"baseline\":\"plain non-atomic increment\",\"baseline_ns_per_op\":%.3f,\"ratio\":%.2f}\n",
           comp, plain, comp / plain);
    printf("{\"bench\":\"sched_counters\",\"case\":\"shared fetch-add\",\"ns_per_op\":%.3f,"
           "\"baseline\":\"plain non-atomic increment\",\"baseline_ns_per_op\":%.3f,\"ratio\":%.2f}\n",
           shared, plain, shared / plain);

    double rd, cp;
    bench_snapshot(area, bytes, "idle", &rd, &cp);
    printf("{\"bench\":\"sched_counters\",\"case\":\"snapshot 64 workers, idle\",\"ns_per_snapshot\":%.1f,"
           "\"baseline\":\"memcpy of the 16 KiB area\",\"baseline_ns\":%.1f,\"ratio\":%.2f}\n",
           rd, cp, rd / cp);
    pthread_t th;
    pthread_create(&th, NULL, writer, blocks[5]);
    bench_snapshot(area, bytes, "busy", &rd, &cp);
    atomic_store(&stop, 1);
    pthread_join(th, NULL);
    printf("{\"bench\":\"sched_counters\",\"case\":\"snapshot 64 workers, one worker counting\","
           "\"ns_per_snapshot\":%.1f,\"baseline\":\"memcpy of the 16 KiB area\",\"baseline_ns\":%.1f,"
           "\"ratio\":%.2f}\n",
           rd, cp, rd / cp);
    free(p);
    free(area);
    return bench_session_events() ? 1 : 0;
}
