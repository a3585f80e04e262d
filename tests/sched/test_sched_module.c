/*
 * test_sched_module.c: the engine module driven through its ops on an area of
 * counter blocks, as the engine does: session events, live snapshots with
 * running deltas, the final deltas of the tracking window, which blocks
 * belong to the run, and the counters it adds to a snapshot.
 */
#include <check.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "engine/module.h"
#include "obsd/obsd.h"
#include "sched/sched.h"
#include "sched/sched_producer.h"

#define NBLOCKS 8
#define BYTES (NBLOCKS * OBSD_SCHED_BLOCK_BYTES)

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static json_int_t wint(json_t *sec, size_t worker, const char *key)
{
    return json_integer_value(json_object_get(json_array_get(json_object_get(sec, "workers"), worker), key));
}

static void work(struct obsd_sched_block *b, int pops, int completions)
{
    obsd_sched_add(b, OBSD_SCHED_POPPED_LOCAL, (uint64_t)pops);
    for (int i = 0; i < completions; i++)
        obsd_sched_completed(b, now_ns());
}

START_TEST(window_deltas_live_and_final)
{
    void *area = aligned_alloc(OBSD_SCHED_BLOCK_BYTES, BYTES);
    memset(area, 0, BYTES);
    /* a block left behind by a dead process of an earlier run */
    struct obsd_sched_block *stale = sched_area_claim(area, BYTES, OBSD_SCHED_KIND_WORKER, 0, NULL, NULL);
    pid_t dead = fork();
    if (dead == 0)
        _exit(0);
    waitpid(dead, NULL, 0);
    stale->owner_pid = dead;
    work(stale, 1000, 1000);

    void *st = sched_module_create_on(area, BYTES, NULL);
    ck_assert_ptr_nonnull(st);
    sched_module_ops.reset(st);
    ck_assert_ptr_null(sched_module_section(st, NULL));   /* nothing of this run yet */
    sched_module_ops.on_session(st, OBSD_SESSION_STARTED, now_ns());

    struct obsd_sched_block *w0 = sched_area_claim(area, BYTES, OBSD_SCHED_KIND_WORKER, 0, NULL, NULL);
    struct obsd_sched_block *w1 = sched_area_claim(area, BYTES, OBSD_SCHED_KIND_WORKER, 1, NULL, NULL);
    struct obsd_sched_block *q = sched_area_claim(area, BYTES, OBSD_SCHED_KIND_QUEUE, 0, "snap", NULL);
    work(w0, 10, 10);
    work(w1, 20, 20);
    obsd_sched_queue_pushed(q, 0);

    /* warmup: deltas since the session started (blocks claimed after it) */
    json_t *sec = sched_module_section(st, NULL);
    ck_assert_ptr_nonnull(sec);
    ck_assert_str_eq(json_string_value(json_object_get(sec, "phase")), "warmup");
    ck_assert_str_eq(json_string_value(json_object_get(sec, "baseline")), "session_start");
    ck_assert_int_eq(json_array_size(json_object_get(sec, "workers")), 2);   /* not the stale one */
    ck_assert_int_eq(wint(sec, 0, "popped_local"), 10);
    ck_assert_int_eq(wint(sec, 1, "behaviors_completed"), 20);
    json_decref(sec);

    sched_module_ops.on_session(st, OBSD_SESSION_TRACKING_START, now_ns());
    work(w0, 5, 4);
    work(w1, 7, 6);
    obsd_sched_steal(w1, now_ns(), false);
    obsd_sched_queue_pushed(q, 3);
    sec = sched_module_section(st, NULL);   /* live: running deltas */
    ck_assert_str_eq(json_string_value(json_object_get(sec, "phase")), "tracking");
    ck_assert_int_eq(wint(sec, 0, "popped_local"), 5);
    ck_assert_int_eq(wint(sec, 1, "popped_local"), 7);
    json_decref(sec);
    work(w0, 1, 1);

    sched_module_ops.on_session(st, OBSD_SESSION_TRACKING_STOP, now_ns());
    work(w0, 100, 100);   /* after the window: not counted */
    sched_module_ops.on_session(st, OBSD_SESSION_ENDED, now_ns());
    struct sched_derived d;
    sec = sched_module_section(st, &d);
    ck_assert_str_eq(json_string_value(json_object_get(sec, "phase")), "done");
    ck_assert_str_eq(json_string_value(json_object_get(sec, "baseline")), "tracking_start");
    ck_assert_int_eq(wint(sec, 0, "popped_local"), 6);
    ck_assert_int_eq(wint(sec, 0, "behaviors_completed"), 5);
    ck_assert_int_eq(wint(sec, 1, "behaviors_completed"), 6);
    ck_assert_int_eq(wint(sec, 1, "steal_failures"), 1);
    ck_assert_uint_eq(d.completed, 11);
    ck_assert(d.has_idle_ratio);
    ck_assert_double_eq(d.idle_ratio, 1.0);
    ck_assert(d.has_throughput);
    double window = json_real_value(json_object_get(sec, "window_s"));
    ck_assert(window > 0);
    ck_assert_double_eq_tol(d.throughput, 11.0 / window, d.throughput * 1e-9);
    json_t *qs = json_array_get(json_object_get(sec, "queues"), 0);
    ck_assert_str_eq(json_string_value(json_object_get(qs, "tag")), "snap");
    ck_assert_int_eq(json_integer_value(json_object_get(qs, "pushed_total")), 1);
    ck_assert_int_eq(json_integer_value(json_object_get(qs, "enqueue_cas_retries")), 3);
    json_decref(sec);

    /* what the engine's final snapshot gets */
    struct snapshot *snap = snapshot_new("run-1", 3, OBSD_RUN_COMPLETE);
    ck_assert_int_eq(sched_module_ops.contribute(st, snap, true), 0);
    ck_assert_int_eq(snapshot_find_counter(snap, "sched_workers")->ivalue, 2);
    ck_assert_int_eq(snapshot_find_counter(snap, "sched_behaviors_completed")->ivalue, 11);
    ck_assert_ptr_nonnull(snapshot_find_counter(snap, "sched_throughput"));
    ck_assert_ptr_nonnull(snapshot_find_counter(snap, "sched_idle_ratio"));
    ck_assert(json_is_object(json_object_get(snap->sections, "sched")));
    snapshot_free(snap);

    sched_module_ops.destroy(st);
    free(area);
}
END_TEST

START_TEST(no_blocks_no_section)
{
    void *st = sched_module_create_on(NULL, 0, NULL);
    ck_assert_ptr_nonnull(st);
    sched_module_ops.on_session(st, OBSD_SESSION_STARTED, now_ns());
    sched_module_ops.on_session(st, OBSD_SESSION_ENDED, now_ns());
    struct snapshot *snap = snapshot_new("run-2", 1, OBSD_RUN_COMPLETE);
    ck_assert_int_eq(sched_module_ops.contribute(st, snap, true), 0);
    ck_assert_ptr_null(json_object_get(snap->sections, "sched"));
    ck_assert_ptr_null(snapshot_find_counter(snap, "sched_workers"));
    snapshot_free(snap);
    sched_module_ops.destroy(st);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("sched_module");
    TCase *tc = tcase_create("module");
    tcase_add_test(tc, window_deltas_live_and_final);
    tcase_add_test(tc, no_blocks_no_section);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
