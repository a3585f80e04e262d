/*
 * test_sched_concurrent.c: reads while workers count are never torn.
 *
 * Worker threads bump their own blocks as fast as they can while a reader
 * samples the whole area over and over. Every counter is bumped by
 * 0x100000001 at a time, so a value assembled from two different writes (a
 * torn 64-bit read) would not be a multiple of it; the completion group must
 * always satisfy last_completion_ns == completed * 1000 and first == 1000;
 * every value must be monotonic from read to read. Queue blocks, shared by
 * all threads, must end with exact totals. Run under TSan (label tsan).
 */
#include <check.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "sched/sched.h"
#include "sched/sched_producer.h"

#define NWORKERS 4
#define NBLOCKS 16
#define MIN_READS 500
#define STEP 0x100000001ull

static void *area;
static struct obsd_sched_block *queue;
static _Atomic int running, stop;
static uint64_t iters[NWORKERS];

/* Counts until told to stop; iters[idx] is read after the join. */
static void *worker(void *arg)
{
    int idx = (int)(intptr_t)arg;
    struct obsd_sched_block *b = sched_area_claim(area, NBLOCKS * OBSD_SCHED_BLOCK_BYTES,
                                                  OBSD_SCHED_KIND_WORKER, idx, NULL, NULL);
    ck_assert_ptr_nonnull(b);
    uint64_t k = 0;
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        k++;
        for (int c = 0; c < OBSD_SCHED_N_COUNTERS; c++)
            obsd_sched_add(b, c, STEP);
        obsd_sched_completed(b, k * 1000);
        obsd_sched_queue_pushed(queue, 1);
        obsd_sched_queue_popped(queue, 2);
    }
    iters[idx] = k;
    atomic_fetch_sub(&running, 1);
    return NULL;
}

START_TEST(reads_under_increments_are_never_torn)
{
    area = aligned_alloc(OBSD_SCHED_BLOCK_BYTES, NBLOCKS * OBSD_SCHED_BLOCK_BYTES);
    memset(area, 0, NBLOCKS * OBSD_SCHED_BLOCK_BYTES);
    queue = sched_area_claim(area, NBLOCKS * OBSD_SCHED_BLOCK_BYTES, OBSD_SCHED_KIND_QUEUE, 0,
                             "shared", NULL);
    ck_assert_ptr_nonnull(queue);
    struct sched_sample s;
    ck_assert_int_eq(sched_sample_init(&s, NBLOCKS), 0);
    uint64_t last[NWORKERS][OBSD_SCHED_N_COUNTERS + 1];
    memset(last, 0, sizeof last);

    atomic_store(&running, NWORKERS);
    pthread_t t[NWORKERS];
    for (int i = 0; i < NWORKERS; i++)
        pthread_create(&t[i], NULL, worker, (void *)(intptr_t)i);
    unsigned long reads = 0, full_reads = 0, consistent = 0;
    int done = 0;
    while (!done) {
        done = atomic_load(&running) == 0;   /* one more read after the last write */
        if (full_reads >= MIN_READS)     /* reads that saw every worker counting */
            atomic_store(&stop, 1);
        sched_read(area, NBLOCKS * OBSD_SCHED_BLOCK_BYTES, &s, NULL, NULL, 0);
        reads++;
        if (s.n_workers == NWORKERS)
            full_reads++;
        ck_assert_uint_eq(s.rejected, 0);
        for (size_t i = 0; i < s.n_workers; i++) {
            const struct sched_worker_sample *w = &s.workers[i];
            ck_assert(w->worker_index >= 0 && w->worker_index < NWORKERS);
            uint64_t *prev = last[w->worker_index];
            for (int c = 0; c < OBSD_SCHED_N_COUNTERS; c++) {
                ck_assert_uint_eq(w->counter[c] % STEP, 0);
                ck_assert_uint_ge(w->counter[c], prev[c]);
                prev[c] = w->counter[c];
            }
            if (!w->torn) {
                consistent++;
                ck_assert_uint_eq(w->last_completion_ns, w->completed * 1000);
                ck_assert_uint_eq(w->first_completion_ns, w->completed ? 1000 : 0);
                ck_assert_uint_ge(w->completed, prev[OBSD_SCHED_N_COUNTERS]);
                prev[OBSD_SCHED_N_COUNTERS] = w->completed;
            }
        }
    }
    for (int i = 0; i < NWORKERS; i++)
        pthread_join(t[i], NULL);
    sched_read(area, NBLOCKS * OBSD_SCHED_BLOCK_BYTES, &s, NULL, NULL, 0);
    ck_assert_uint_eq(s.n_workers, NWORKERS);
    uint64_t total = 0;
    for (size_t i = 0; i < s.n_workers; i++) {
        ck_assert(!s.workers[i].torn);
        uint64_t k = iters[s.workers[i].worker_index];
        total += k;
        ck_assert_uint_eq(s.workers[i].completed, k);
        ck_assert_uint_eq(s.workers[i].last_completion_ns, k * 1000);
        for (int c = 0; c < OBSD_SCHED_N_COUNTERS; c++)
            ck_assert_uint_eq(s.workers[i].counter[c], k * STEP);
    }
    ck_assert_uint_eq(s.n_queues, 1);
    ck_assert_uint_eq(s.queues[0].pushed_total, total);
    ck_assert_uint_eq(s.queues[0].popped_total, total);
    ck_assert_uint_eq(s.queues[0].dequeue_cas_retries, 2 * total);
    ck_assert_uint_ge(full_reads, MIN_READS);
    ck_assert_uint_gt(consistent, 0);
    sched_sample_free(&s);
    free(area);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("sched_concurrent");
    TCase *tc = tcase_create("tsan");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, reads_under_increments_are_never_torn);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
