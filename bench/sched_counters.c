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
 *
 * Prints one JSON object per result. Run: build/bench/sched_counters
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sched/sched.h"
#include "sched/sched_producer.h"

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
    return 0;
}
