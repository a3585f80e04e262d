/* test_store_hour.c (label slow): a one-hour run persisted every 250 ms (the
 * collector's default publish interval) in which all 1,000 series and 20
 * counters change at every persist, the worst case for the change-only
 * history, must stay under 512 MiB of store. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>

#include "publisher/store.h"
#include "test_util.h"

static int count_points(const struct store_point *p, void *ctx)
{
    size_t *n = ctx;
    n[0]++;
    n[1] = p->count;
    return 0;
}

START_TEST(one_hour_all_active)
{
    char dir[512], err[512];
    make_temp_dir(dir, sizeof dir, "hour");
    struct store *st = store_open(dir, 0, false, false, err, sizeof err);
    ck_assert_msg(st != NULL, "%s", err);
    struct snapshot *s = make_snapshot("hour", 0, OBSD_RUN_LIVE, 20, 1000, 1020, 30);
    const uint64_t n = 4 * 3600;
    for (uint64_t seq = 0; seq < n; seq++) {
        s->seq = seq;
        s->timestamp_ns += 250000000ULL;
        if (seq == n - 1)
            s->state = OBSD_RUN_COMPLETE;
        for (size_t i = 0; i < s->n_series; i++) {
            struct snap_series *sr = &s->series[i];
            sr->count += 60;
            sr->total += 60.0 * 48213;
            sr->max += (double)(seq % 3);
            sr->percentiles[7] = 48000 + (double)(seq % 17);
            sr->percentiles[1] = 91000 + (double)(seq % 101);
        }
        for (size_t i = 0; i < s->n_counters; i++)
            s->counters[i].ivalue += 60;
        ck_assert_msg(store_persist(st, s, seq == n - 1) == STORE_OK, "%s", store_error(st));
    }
    store_close(st);

    /* obsctl get on that run: one metric's time series is one range scan
     * of its chunk rows (a completed run has no history tail), so it reads
     * in a fraction of a second; every second has its point */
    st = store_open(dir, 0, false, true, err, sizeof err);
    ck_assert_msg(st != NULL, "%s", err);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    size_t pts[2] = {0, 0};
    ck_assert_int_eq(store_metric_series(st, "hour", "s500_latency_ns", count_points, pts), STORE_OK);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
    fprintf(stderr, "one_hour_all_active: one metric's series: %zu points in %.1f ms\n", pts[0], ms);
    ck_assert_uint_ge(pts[0], 3600);
    ck_assert_uint_le(pts[0], 3601);
    ck_assert_uint_eq(pts[1], s->series[500].count);   /* the last point is the final */
    ck_assert_msg(ms < 1000, "%.1f ms", ms);
    store_close(st);
    char path[600];
    snprintf(path, sizeof path, "%s/data.mdb", dir);
    struct stat sb;
    ck_assert_int_eq(stat(path, &sb), 0);
    uint64_t used = (uint64_t)sb.st_blocks * 512;
    fprintf(stderr, "one_hour_all_active: data.mdb uses %.1f MiB\n", (double)used / (1 << 20));
    ck_assert_uint_lt(used, 512ULL << 20);
    snapshot_free(s);
    rm_rf(dir);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("store_hour");
    TCase *tc = tcase_create("size");
    tcase_set_timeout(tc, 900);
    tcase_add_test(tc, one_hour_all_active);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
