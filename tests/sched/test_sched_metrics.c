/*
 * test_sched_metrics.c: deltas, window, derived metrics, summaries, block
 * validation and claiming, each checked against values computed by hand (or
 * by a different formula) from known counter increments.
 */
#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sched/sched.h"
#include "sched/sched_producer.h"

#define NBLOCKS 8

static void *new_area(size_t n)
{
    void *a = aligned_alloc(OBSD_SCHED_BLOCK_BYTES, n * OBSD_SCHED_BLOCK_BYTES);
    memset(a, 0, n * OBSD_SCHED_BLOCK_BYTES);
    return a;
}

static struct sched_worker_sample wsample(int64_t index, const uint64_t c[OBSD_SCHED_N_COUNTERS],
                                          uint64_t completed)
{
    struct sched_worker_sample w;
    memset(&w, 0, sizeof w);
    w.worker_index = index;
    memcpy(w.counter, c, sizeof w.counter);
    w.completed = completed;
    return w;
}

START_TEST(delta_subtracts_every_counter)
{
    uint64_t a[OBSD_SCHED_N_COUNTERS], b[OBSD_SCHED_N_COUNTERS];
    for (int i = 0; i < OBSD_SCHED_N_COUNTERS; i++) {
        a[i] = 100 + i;
        b[i] = 100 + i + 7 * i + 1;
    }
    struct sched_worker_sample warm = wsample(3, a, 40), end = wsample(3, b, 95), d;
    end.last_completion_ns = 555;
    ck_assert_int_eq(sched_worker_delta(&end, &warm, &d), 0);
    for (int i = 0; i < OBSD_SCHED_N_COUNTERS; i++)
        ck_assert_uint_eq(d.counter[i], (uint64_t)(7 * i + 1));
    ck_assert_uint_eq(d.completed, 55);
    ck_assert_uint_eq(d.last_completion_ns, 555);
    ck_assert_int_eq(d.worker_index, 3);
    /* no baseline: the block was claimed inside the window */
    ck_assert_int_eq(sched_worker_delta(&end, NULL, &d), 0);
    ck_assert_uint_eq(d.completed, 95);
    ck_assert_uint_eq(d.counter[OBSD_SCHED_PARKED], b[OBSD_SCHED_PARKED]);
    /* a counter that went backwards is refused */
    end.counter[OBSD_SCHED_PARKED] = 0;
    ck_assert_int_eq(sched_worker_delta(&end, &warm, &d), -1);
    end.counter[OBSD_SCHED_PARKED] = b[OBSD_SCHED_PARKED];
    end.completed = 1;
    ck_assert_int_eq(sched_worker_delta(&end, &warm, &d), -1);
}
END_TEST

START_TEST(window_from_reads_closed_at_last_completion)
{
    ck_assert_uint_eq(sched_window_ns(1000, 5000, 4000), 3000);  /* workers done early */
    ck_assert_uint_eq(sched_window_ns(1000, 5000, 5000), 4000);  /* still running */
    ck_assert_uint_eq(sched_window_ns(1000, 5000, 0), 4000);     /* no completion */
    ck_assert_uint_eq(sched_window_ns(1000, 5000, 900), 4000);   /* last one before the window */
    ck_assert_uint_eq(sched_window_ns(5000, 5000, 0), 0);
    ck_assert_uint_eq(sched_window_ns(6000, 5000, 0), 0);
}
END_TEST

/* Gini by the mean absolute difference: sum |xi - xj| / (2 n^2 mean). */
static double gini_mad(const uint64_t *v, size_t n)
{
    double s = 0, sum = 0;
    for (size_t i = 0; i < n; i++) {
        sum += (double)v[i];
        for (size_t j = 0; j < n; j++)
            s += fabs((double)v[i] - (double)v[j]);
    }
    return s / (2.0 * (double)n * (double)n * (sum / (double)n));
}

START_TEST(fairness_cv_and_gini)
{
    uint64_t v[] = {30, 10, 20};
    double cv, g;
    ck_assert(sched_fairness_cv(v, 3, &cv));
    ck_assert_double_eq_tol(cv, sqrt(200.0 / 3.0) / 20.0, 1e-12);
    ck_assert(sched_fairness_gini(v, 3, &g));
    ck_assert_double_eq_tol(g, 2.0 / 9.0, 1e-12);
    ck_assert_double_eq_tol(g, gini_mad(v, 3), 1e-12);

    uint64_t skew[] = {0, 0, 0, 100};
    ck_assert(sched_fairness_gini(skew, 4, &g));
    ck_assert_double_eq_tol(g, 0.75, 1e-12);   /* (n-1)/n */
    ck_assert(sched_fairness_cv(skew, 4, &cv));
    ck_assert_double_eq_tol(cv, sqrt(3.0), 1e-12);

    uint64_t even[] = {7, 7, 7, 7, 7};
    ck_assert(sched_fairness_gini(even, 5, &g));
    ck_assert_double_eq_tol(g, 0.0, 1e-12);
    ck_assert(sched_fairness_cv(even, 5, &cv));
    ck_assert_double_eq_tol(cv, 0.0, 1e-12);

    uint64_t one[] = {42};
    ck_assert(sched_fairness_cv(one, 1, &cv));
    ck_assert_double_eq_tol(cv, 0.0, 1e-12);

    uint64_t zeros[] = {0, 0};
    ck_assert(!sched_fairness_cv(zeros, 2, &cv));
    ck_assert(!sched_fairness_gini(zeros, 2, &g));
    ck_assert(!sched_fairness_cv(NULL, 0, &cv));
}
END_TEST

/* Known increments through the real counting API, read back, differenced
 * and derived; every expected value is computed here from the increments. */
START_TEST(derived_from_known_increments)
{
    void *area = new_area(NBLOCKS);
    struct obsd_sched_block *w[3];
    for (int i = 0; i < 3; i++) {
        w[i] = sched_area_claim(area, NBLOCKS * OBSD_SCHED_BLOCK_BYTES, OBSD_SCHED_KIND_WORKER, i,
                                NULL, NULL);
        ck_assert_ptr_nonnull(w[i]);
    }
    /* warmup activity, excluded by the delta */
    for (int i = 0; i < 3; i++) {
        obsd_sched_add(w[i], OBSD_SCHED_PUSHED_LOCAL, 1000);
        obsd_sched_add(w[i], OBSD_SCHED_POPPED_LOCAL, 1000);
        obsd_sched_steal(w[i], 10, false);
        obsd_sched_completed(w[i], 100);
    }
    struct sched_sample warm, end;
    ck_assert_int_eq(sched_sample_init(&warm, NBLOCKS), 0);
    ck_assert_int_eq(sched_sample_init(&end, NBLOCKS), 0);
    sched_read(area, NBLOCKS * OBSD_SCHED_BLOCK_BYTES, &warm, NULL, NULL, 1000000000ull);
    ck_assert_uint_eq(warm.n_workers, 3);

    /* window: worker i pushes 10*(i+1) locally, pops 20,30,50 locally,
     * steals: w1 3 tries (2 got), w2 5 tries (1 got); completions 20,32,51 */
    uint64_t pops_local[3] = {20, 30, 50}, completed[3] = {20, 32, 51};
    for (int i = 0; i < 3; i++) {
        obsd_sched_add(w[i], OBSD_SCHED_PUSHED_LOCAL, 10 * (uint64_t)(i + 1));
        obsd_sched_add(w[i], OBSD_SCHED_DISPATCHED_TO_PENDING, 5);
        obsd_sched_add(w[i], OBSD_SCHED_POPPED_LOCAL, pops_local[i]);
        for (uint64_t k = 0; k < completed[i]; k++)
            obsd_sched_completed(w[i], 2000000000ull + k);
    }
    obsd_sched_add(w[2], OBSD_SCHED_ENQUEUE_CAS_RETRIES, 7);
    obsd_sched_steal(w[1], 20, true);
    obsd_sched_steal(w[1], 21, true);
    obsd_sched_steal(w[1], 22, false);
    for (int k = 0; k < 5; k++)
        obsd_sched_steal(w[2], 30 + (uint64_t)k, k == 0);
    obsd_sched_inc(w[0], OBSD_SCHED_PARKED);

    sched_read(area, NBLOCKS * OBSD_SCHED_BLOCK_BYTES, &end, NULL, NULL, 3000000000ull);
    ck_assert_uint_eq(end.n_workers, 3);
    struct sched_worker_sample d[3];
    uint64_t max_last = 0;
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(end.workers[i].worker_index, i);
        ck_assert_int_eq(sched_worker_delta(&end.workers[i], &warm.workers[i], &d[i]), 0);
        if (end.workers[i].last_completion_ns > max_last)
            max_last = end.workers[i].last_completion_ns;
    }
    ck_assert_uint_eq(d[0].counter[OBSD_SCHED_PUSHED_LOCAL], 10);
    ck_assert_uint_eq(d[2].counter[OBSD_SCHED_PUSHED_LOCAL], 30);
    ck_assert_uint_eq(d[0].counter[OBSD_SCHED_PARKED], 1);
    ck_assert_uint_eq(d[1].counter[OBSD_SCHED_STEAL_ATTEMPTS], 3);
    ck_assert_uint_eq(d[1].counter[OBSD_SCHED_STEAL_FAILURES], 1);
    ck_assert_uint_eq(d[2].counter[OBSD_SCHED_POPPED_VIA_STEAL], 1);
    ck_assert_uint_eq(d[1].last_steal_attempt_ns, 22);
    ck_assert_uint_eq(end.workers[0].first_completion_ns, 100);
    ck_assert_uint_eq(end.workers[2].last_completion_ns, 2000000000ull + 50);

    /* every worker finished at 2.000000050 s, before the end read at 3 s */
    uint64_t window = sched_window_ns(warm.taken_ns, end.taken_ns, max_last);
    ck_assert_uint_eq(window, 1000000050ull);
    struct sched_derived m;
    sched_derive(d, 3, window, &m);
    ck_assert_uint_eq(m.completed, 20 + 32 + 51);
    ck_assert(m.has_throughput);
    ck_assert_double_eq_tol(m.throughput, 103.0 / 1.00000005, 1e-9);
    ck_assert_uint_eq(m.steals, 3);
    ck_assert(m.has_steal_yield);
    ck_assert_double_eq_tol(m.steal_yield, 3.0 / 103.0, 1e-12);
    ck_assert(m.has_idle_ratio);
    ck_assert_uint_eq(m.steal_attempts, 8);
    ck_assert_double_eq_tol(m.idle_ratio, 5.0 / 8.0, 1e-12);
    ck_assert_int_eq(m.producer_worker_index, 2);
    ck_assert_uint_eq(m.producer_pushes, 35);
    ck_assert(m.has_enq_retry_ratio);
    ck_assert_double_eq_tol(m.enq_retry_ratio, 7.0 / 35.0, 1e-12);
    uint64_t pops[3] = {20, 32, 51};   /* local pops + steals per worker */
    ck_assert_uint_eq(m.pop_min, 20);
    ck_assert_uint_eq(m.pop_max, 51);
    ck_assert_double_eq_tol(m.pop_mean, 103.0 / 3.0, 1e-12);
    ck_assert(m.has_fairness);
    double mean = 103.0 / 3.0, ss = 0;
    for (int i = 0; i < 3; i++)
        ss += ((double)pops[i] - mean) * ((double)pops[i] - mean);
    ck_assert_double_eq_tol(m.fairness_cv, sqrt(ss / 3.0) / mean, 1e-12);
    ck_assert_double_eq_tol(m.fairness_gini, gini_mad(pops, 3), 1e-12);
    ck_assert_uint_eq(m.notes, 0);

    json_t *j = sched_derived_json(&m);
    ck_assert_double_eq_tol(json_real_value(json_object_get(j, "idle_ratio")), 0.625, 1e-12);
    ck_assert_int_eq(json_array_size(json_object_get(j, "notes")), 0);
    json_decref(j);
    sched_sample_free(&warm);
    sched_sample_free(&end);
    free(area);
}
END_TEST

START_TEST(division_by_zero_gives_null_with_notes)
{
    struct sched_worker_sample d[2];
    memset(d, 0, sizeof d);
    d[1].worker_index = 1;
    struct sched_derived m;
    sched_derive(d, 2, 0, &m);
    ck_assert(!m.has_throughput && !m.has_steal_yield && !m.has_idle_ratio);
    ck_assert(!m.has_enq_retry_ratio && !m.has_fairness);
    ck_assert_int_eq(m.producer_worker_index, -1);
    ck_assert_uint_eq(m.notes, SCHED_NOTE_NO_WINDOW | SCHED_NOTE_NO_COMPLETIONS |
                                   SCHED_NOTE_NO_STEAL_ATTEMPTS | SCHED_NOTE_NO_PUSHES |
                                   SCHED_NOTE_NO_POPS);
    json_t *j = sched_derived_json(&m);
    ck_assert(json_is_null(json_object_get(j, "throughput")));
    ck_assert(json_is_null(json_object_get(j, "steal_yield")));
    ck_assert(json_is_null(json_object_get(j, "idle_ratio")));
    ck_assert(json_is_null(json_object_get(j, "enq_retry_ratio")));
    ck_assert(json_is_null(json_object_get(j, "fairness_gini")));
    ck_assert(json_is_null(json_object_get(j, "producer_worker_index")));
    ck_assert_int_eq(json_array_size(json_object_get(j, "notes")), 5);
    json_decref(j);

    /* a window but nothing done: throughput is a real 0, not null */
    sched_derive(d, 2, 1000000000ull, &m);
    ck_assert(m.has_throughput);
    ck_assert_double_eq(m.throughput, 0.0);
    sched_derive(NULL, 0, 1, &m);
    ck_assert(m.notes & SCHED_NOTE_NO_WORKERS);
}
END_TEST

START_TEST(summary_of_repeats)
{
    double v[] = {4, 1, 3, 2};
    struct sched_summary s;
    sched_summarize(v, 4, &s);
    ck_assert(s.has_mean && s.has_spread);
    ck_assert_double_eq_tol(s.mean, 2.5, 1e-12);
    ck_assert_double_eq_tol(s.stdev, sqrt(5.0 / 3.0), 1e-12);   /* sample stdev */
    ck_assert_double_eq(s.min, 1);
    ck_assert_double_eq(s.max, 4);
    sched_summarize(v, 1, &s);
    ck_assert(s.has_mean && !s.has_spread);
    ck_assert_double_eq(s.mean, 4);
    sched_summarize(v, 0, &s);
    ck_assert(!s.has_mean && !s.has_spread);
}
END_TEST

START_TEST(reader_rejects_hostile_blocks)
{
    void *area = new_area(NBLOCKS);
    size_t bytes = NBLOCKS * OBSD_SCHED_BLOCK_BYTES;
    struct obsd_sched_block *blocks = area;
    struct obsd_sched_block *w0 = sched_area_claim(area, bytes, OBSD_SCHED_KIND_WORKER, 0, NULL, NULL);
    struct obsd_sched_block *w1 = sched_area_claim(area, bytes, OBSD_SCHED_KIND_WORKER, 1, NULL, NULL);
    struct obsd_sched_block *w2 = sched_area_claim(area, bytes, OBSD_SCHED_KIND_WORKER, 2, NULL, NULL);
    struct obsd_sched_block *q = sched_area_claim(area, bytes, OBSD_SCHED_KIND_QUEUE, 0, "snap", NULL);
    struct obsd_sched_block *q2 = sched_area_claim(area, bytes, OBSD_SCHED_KIND_QUEUE, 0, "bad", NULL);
    struct obsd_sched_block *w5 = sched_area_claim(area, bytes, OBSD_SCHED_KIND_WORKER, 5, NULL, NULL);
    ck_assert_ptr_nonnull(w0);
    ck_assert_ptr_nonnull(q2);
    ck_assert_ptr_eq(w0, &blocks[0]);
    obsd_sched_queue_pushed(q, 2);
    obsd_sched_queue_popped(q, 0);
    w1->magic ^= 1;                                  /* bad magic */
    w2->kind = 9;                                    /* bad kind */
    memset(q2->u.q.tag, 'x', sizeof q2->u.q.tag);   /* unterminated tag */
    atomic_store(&blocks[7].state, 77);              /* unknown state */
    atomic_store(&w5->u.w.completion_seq, 3);        /* writer died mid-update */
    struct sched_sample s;
    ck_assert_int_eq(sched_sample_init(&s, NBLOCKS), 0);
    sched_read(area, bytes + 100 /* a partial tail block is ignored */, &s, NULL, NULL, 1);
    ck_assert_uint_eq(s.rejected, 4);
    ck_assert_uint_eq(s.n_workers, 2);
    ck_assert_int_eq(s.workers[0].worker_index, 0);
    ck_assert(!s.workers[0].torn);
    ck_assert_int_eq(s.workers[1].worker_index, 5);
    ck_assert(s.workers[1].torn);
    ck_assert_uint_eq(s.torn, 1);
    ck_assert_uint_eq(s.n_queues, 1);
    ck_assert_str_eq(s.queues[0].tag, "snap");
    ck_assert_uint_eq(s.queues[0].pushed_total, 1);
    ck_assert_uint_eq(s.queues[0].enqueue_cas_retries, 2);
    ck_assert_uint_eq(s.queues[0].popped_total, 1);
    /* a negative index and a zero pid are rejected too */
    w0->index = -4;
    sched_read(area, bytes, &s, NULL, NULL, 1);
    ck_assert_uint_eq(s.rejected, 5);
    w0->index = 0;
    w0->owner_pid = 0;
    sched_read(area, bytes, &s, NULL, NULL, 1);
    ck_assert_uint_eq(s.rejected, 5);
    ck_assert_uint_eq(s.n_workers, 1);
    sched_sample_free(&s);
    free(area);
}
END_TEST

START_TEST(claims_prefer_fresh_then_oldest_released)
{
    size_t n = 3, bytes = n * OBSD_SCHED_BLOCK_BYTES;
    void *area = new_area(n);
    const char *why = NULL;
    struct obsd_sched_block *b[3];
    for (size_t i = 0; i < n; i++)
        b[i] = sched_area_claim(area, bytes, OBSD_SCHED_KIND_WORKER, OBSD_SCHED_AUTO, NULL, NULL);
    ck_assert_int_eq(b[1]->index, b[0]->index + 1);
    ck_assert_int_eq(b[2]->index, b[0]->index + 2);
    ck_assert_ptr_null(sched_area_claim(area, bytes, OBSD_SCHED_KIND_WORKER, 0, NULL, &why));
    ck_assert_ptr_nonnull(strstr(why, "in use"));
    obsd_sched_add(b[2], OBSD_SCHED_PARKED, 9);
    sched_block_release(b[2]);
    sched_block_release(b[1]);
    /* released blocks keep their values for the collector */
    struct sched_sample s;
    sched_sample_init(&s, n);
    sched_read(area, bytes, &s, NULL, NULL, 1);
    ck_assert_uint_eq(s.n_workers, 3);
    ck_assert_uint_eq(s.workers[2].counter[OBSD_SCHED_PARKED], 9);
    ck_assert_uint_eq(s.workers[2].state, OBSD_SCHED_RETIRED);
    uint32_t gen = atomic_load(&b[2]->generation);
    struct obsd_sched_block *again = sched_area_claim(area, bytes, OBSD_SCHED_KIND_WORKER, 4, NULL, NULL);
    ck_assert_ptr_eq(again, b[2]);   /* released first */
    ck_assert_uint_eq(atomic_load(&again->generation), gen + 1);
    ck_assert_uint_eq(atomic_load(&again->u.w.counter[OBSD_SCHED_PARKED]), 0);
    /* bad arguments */
    ck_assert_ptr_null(sched_area_claim(area, bytes, OBSD_SCHED_KIND_WORKER, -7, NULL, &why));
    ck_assert_ptr_null(sched_area_claim(area, bytes, OBSD_SCHED_KIND_QUEUE, 0, "", &why));
    ck_assert_ptr_null(sched_area_claim(area, bytes, OBSD_SCHED_KIND_QUEUE, 0, "a\nb", &why));
    ck_assert_ptr_null(sched_area_claim(NULL, 0, OBSD_SCHED_KIND_WORKER, 0, NULL, &why));
    sched_sample_free(&s);
    free(area);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("sched_metrics");
    TCase *tc = tcase_create("unit");
    tcase_add_test(tc, delta_subtracts_every_counter);
    tcase_add_test(tc, window_from_reads_closed_at_last_completion);
    tcase_add_test(tc, fairness_cv_and_gini);
    tcase_add_test(tc, derived_from_known_increments);
    tcase_add_test(tc, division_by_zero_gives_null_with_notes);
    tcase_add_test(tc, summary_of_repeats);
    tcase_add_test(tc, reader_rejects_hostile_blocks);
    tcase_add_test(tc, claims_prefer_fresh_then_oldest_released);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
