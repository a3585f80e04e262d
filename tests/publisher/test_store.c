/* test_store.c: snapshots through the LMDB store. */
#include <check.h>
#include <lmdb.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "publisher/store.h"
#include "test_util.h"

static char dir[512];
static char err[512];

static void setup(void) { make_temp_dir(dir, sizeof dir, "store"); }
static void teardown(void) { rm_rf(dir); }

static struct store *open_rw(uint64_t map_size)
{
    struct store *st = store_open(dir, map_size, false, false, err, sizeof err);
    ck_assert_msg(st != NULL, "%s", err);
    return st;
}

static void assert_same(const struct snapshot *a, const struct snapshot *b)
{
    char *ta = snapshot_text(a), *tb = snapshot_text(b);
    ck_assert_str_eq(ta, tb);
    free(ta);
    free(tb);
}

START_TEST(round_trip_latest_final_seq)
{
    struct store *st = open_rw(0);
    store_set_history_full_every(st, 4);
    ck_assert_int_eq(store_begin_run(st, "run-a", "bench a", 1700000000000000000ULL), STORE_OK);
    struct snapshot *snaps[10];
    for (int i = 0; i < 10; i++) {
        snaps[i] = make_snapshot("run-a", (uint64_t)i, i < 9 ? OBSD_RUN_LIVE : OBSD_RUN_COMPLETE,
                                 6, 5, (size_t)(i % 3) + 1, 8);
        snapshot_set_section(snaps[i], "budget", json_pack("{s:i,s:s}", "calls", i / 3, "ns", "x"));
        ck_assert_msg(store_persist(st, snaps[i], i == 9) == STORE_OK, "%s", store_error(st));
        struct snapshot *latest;
        ck_assert_int_eq(store_latest(st, "run-a", &latest), STORE_OK);
        assert_same(latest, snaps[i]);
        snapshot_free(latest);
    }
    struct snapshot *fin;
    ck_assert_int_eq(store_final(st, "run-a", &fin), STORE_OK);
    assert_same(fin, snaps[9]);
    ck_assert_str_eq(json_string_value(json_object_get(json_object_get(fin->sections, "budget"), "ns")), "x");
    snapshot_free(fin);

    /* keyframes (0, 4, 8, final 9) come back whole; the others carry the
     * summary of what changed and the keyframe's state of the rest */
    for (int i = 0; i < 10; i++) {
        struct snapshot *at;
        ck_assert_msg(store_snapshot_at(st, "run-a", (uint64_t)i, &at) == STORE_OK, "%s", store_error(st));
        if (i % 4 == 0 || i == 9) {
            assert_same(at, snaps[i]);
        } else {
            ck_assert_int_eq(at->seq, i);
            ck_assert_int_eq(at->timestamp_ns, snaps[i]->timestamp_ns);
            ck_assert_int_eq(at->n_counters, snaps[i]->n_counters);
            ck_assert_int_eq(at->n_series, snaps[i]->n_series);
            for (size_t c = 0; c < at->n_counters; c++)
                ck_assert(at->counters[c].fvalue == snaps[i]->counters[c].fvalue);
            for (size_t k = 0; k < at->n_series; k++) {
                ck_assert_int_eq(at->series[k].count, snaps[i]->series[k].count);
                ck_assert(at->series[k].total == snaps[i]->series[k].total);
                ck_assert(at->series[k].percentiles[7] == snaps[i]->series[k].percentiles[7]);
            }
            ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(at->sections, "budget"), "calls")), i / 3);
        }
        snapshot_free(at);
    }
    struct snapshot *none;
    ck_assert_int_eq(store_snapshot_at(st, "run-a", 99, &none), STORE_NOT_FOUND);
    ck_assert_int_eq(store_latest(st, "no-such-run", &none), STORE_NOT_FOUND);
    ck_assert_ptr_nonnull(strstr(store_error(st), "no-such-run"));

    uint64_t *seqs;
    size_t n;
    ck_assert_int_eq(store_list_seqs(st, "run-a", &seqs, &n), STORE_OK);
    ck_assert_int_eq(n, 10);
    ck_assert_int_eq(seqs[9], 9);
    free(seqs);

    struct store_run_info ri;
    ck_assert_int_eq(store_find_run(st, "run-a", &ri), STORE_OK);
    ck_assert_str_eq(ri.name, "bench a");
    ck_assert_int_eq(ri.n_snapshots, 10);
    ck_assert(ri.has_final);
    ck_assert_int_eq(ri.final_seq, 9);
    ck_assert_int_eq(ri.state, OBSD_RUN_COMPLETE);
    for (int i = 0; i < 10; i++)
        snapshot_free(snaps[i]);
    store_close(st);
}
END_TEST

START_TEST(final_written_once)
{
    struct store *st = open_rw(0);
    struct snapshot *a = make_snapshot("r1", 1, OBSD_RUN_COMPLETE, 2, 2, 4, 3);
    struct snapshot *b = make_snapshot("r1", 2, OBSD_RUN_INTERRUPTED, 2, 2, 4, 3);
    ck_assert_int_eq(store_persist(st, a, true), STORE_OK);
    ck_assert_int_eq(store_persist(st, b, true), STORE_EXISTS);
    ck_assert_ptr_nonnull(strstr(store_error(st), "final"));
    ck_assert_int_eq(store_persist(st, b, false), STORE_EXISTS);
    store_close(st);
    /* also across a reopen (a restarted collector) */
    st = open_rw(0);
    ck_assert_int_eq(store_persist(st, b, true), STORE_EXISTS);
    struct snapshot *fin;
    ck_assert_int_eq(store_final(st, "r1", &fin), STORE_OK);
    ck_assert_int_eq(fin->seq, 1);
    ck_assert_int_eq(fin->state, OBSD_RUN_COMPLETE);
    snapshot_free(fin);
    snapshot_free(a);
    snapshot_free(b);
    store_close(st);
}
END_TEST

START_TEST(seq_must_grow_and_resume)
{
    struct store *st = open_rw(0);
    struct snapshot *a = make_snapshot("r", 5, OBSD_RUN_LIVE, 3, 3, 6, 4);
    ck_assert_int_eq(store_persist(st, a, false), STORE_OK);
    ck_assert_int_eq(store_persist(st, a, false), STORE_ERROR);
    ck_assert_ptr_nonnull(strstr(store_error(st), "seq 5"));
    store_close(st);

    st = open_rw(0);
    struct snapshot *b = make_snapshot("r", 6, OBSD_RUN_LIVE, 3, 4, 7, 4);
    ck_assert_int_eq(store_begin_run(st, "r", NULL, 0), STORE_OK);
    ck_assert_msg(store_persist(st, b, false) == STORE_OK, "%s", store_error(st));
    struct snapshot *at;
    ck_assert_int_eq(store_snapshot_at(st, "r", 6, &at), STORE_OK);
    ck_assert_int_eq(at->n_series, 4);
    ck_assert_int_eq(at->series[3].count, b->series[3].count);
    snapshot_free(at);
    struct store_run_info ri;
    ck_assert_int_eq(store_find_run(st, "r", &ri), STORE_OK);
    ck_assert_int_eq(ri.n_snapshots, 2);
    ck_assert_int_eq(ri.run_seq, 1);
    snapshot_free(a);
    snapshot_free(b);
    store_close(st);
}
END_TEST

START_TEST(overlong_name_refused)
{
    struct store *st = open_rw(0);
    struct snapshot *s = make_snapshot("long", 0, OBSD_RUN_LIVE, 1, 1, 2, 2);
    char name[460];
    memset(name, 'x', sizeof name - 1);
    name[sizeof name - 1] = 0;
    snapshot_add_counter(s, name, 1);
    ck_assert_int_eq(store_persist(st, s, false), STORE_ERROR);
    ck_assert_msg(strstr(store_error(st), "more than 400"), "%s", store_error(st));
    snapshot_free(s);
    s = make_snapshot("long", 1, OBSD_RUN_LIVE, 1, 1, 2, 2);
    ck_assert_msg(store_persist(st, s, false) == STORE_OK, "%s", store_error(st));
    snapshot_free(s);
    store_close(st);
}
END_TEST

START_TEST(runs_in_start_order)
{
    struct store *st = open_rw(0);
    const char *ids[] = {"zeta", "alpha", "mid"};
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(store_begin_run(st, ids[i], NULL, 100 + (uint64_t)i), STORE_OK);
        struct snapshot *s = make_snapshot(ids[i], 0, OBSD_RUN_LIVE, 1, 1, 2, 2);
        ck_assert_int_eq(store_persist(st, s, false), STORE_OK);
        snapshot_free(s);
    }
    struct store_run_info *runs;
    size_t n;
    ck_assert_int_eq(store_list_runs(st, &runs, &n), STORE_OK);
    ck_assert_int_eq(n, 3);
    for (int i = 0; i < 3; i++) {
        ck_assert_str_eq(runs[i].id, ids[i]);
        ck_assert_int_eq(runs[i].run_seq, i + 1);
    }
    free(runs);
    struct store_run_info last;
    ck_assert_int_eq(store_last_run(st, &last), STORE_OK);
    ck_assert_str_eq(last.id, "mid");
    store_close(st);
}
END_TEST

static int count_points(const struct store_point *p, void *ctx)
{
    size_t *n = ctx;
    n[0]++;
    if (p->is_series)
        n[1] = p->count;
    return 0;
}

START_TEST(metric_time_series)
{
    struct store *st = open_rw(0);
    for (uint64_t i = 0; i < 20; i++) {
        /* s0 changes every persist, s1 never after the first */
        struct snapshot *s = make_snapshot("ts", i, OBSD_RUN_LIVE, 0, 2, 1, 4);
        ck_assert_int_eq(store_persist(st, s, false), STORE_OK);
        snapshot_free(s);
    }
    size_t n[2] = {0, 0};
    ck_assert_int_eq(store_metric_series(st, "ts", "s0_latency_ns", count_points, n), STORE_OK);
    ck_assert_int_eq(n[0], 20);
    ck_assert_int_eq(n[1], 2000);
    n[0] = 0;
    ck_assert_int_eq(store_metric_series(st, "ts", "s1_latency_ns", count_points, n), STORE_OK);
    ck_assert_int_eq(n[0], 1);
    n[0] = 0;
    ck_assert_int_eq(store_metric_series(st, "ts", NULL, count_points, n), STORE_OK);
    ck_assert_int_eq(n[0], 21);
    ck_assert_int_eq(store_metric_series(st, "ts", "nope", count_points, n), STORE_NOT_FOUND);
    store_close(st);
}
END_TEST

static int collect_seqs(const struct store_point *p, void *ctx)
{
    uint64_t *v = ctx;
    v[1 + v[0]++] = p->seq;
    return 0;
}

/* Persists every 250 ms: one point per metric and second, plus the final. */
START_TEST(series_interval_thins_points)
{
    struct store *st = open_rw(0);
    store_set_history_full_every(st, 1000);
    for (uint64_t i = 0; i < 20; i++) {
        struct snapshot *s = make_snapshot("thin", i, i == 19 ? OBSD_RUN_COMPLETE : OBSD_RUN_LIVE, 0, 2, 1, 4);
        s->timestamp_ns = 1700000000000000000ULL + i * 250000000ULL;
        ck_assert_int_eq(store_persist(st, s, i == 19), STORE_OK);
        snapshot_free(s);
    }
    uint64_t v[64] = {0};
    ck_assert_int_eq(store_metric_series(st, "thin", "s0_latency_ns", collect_seqs, v), STORE_OK);
    ck_assert_int_eq(v[0], 6);
    uint64_t want[] = {0, 4, 8, 12, 16, 19};
    for (int i = 0; i < 6; i++)
        ck_assert_int_eq(v[1 + i], want[i]);
    /* seq 6 shows the value of its last point (seq 4); the latest is exact */
    struct snapshot *at;
    ck_assert_int_eq(store_snapshot_at(st, "thin", 6, &at), STORE_OK);
    ck_assert_int_eq(at->series[0].count, 100 * 5);
    snapshot_free(at);
    ck_assert_int_eq(store_snapshot_at(st, "thin", 18, &at), STORE_OK);
    ck_assert_int_eq(at->series[0].count, 100 * 17);
    ck_assert_int_eq(at->seq, 18);
    snapshot_free(at);
    ck_assert_int_eq(store_final(st, "thin", &at), STORE_OK);
    ck_assert_int_eq(at->series[0].count, 100 * 20);
    snapshot_free(at);
    store_close(st);
}
END_TEST

START_TEST(grows_on_map_full)
{
    struct store *st = open_rw(64 * 1024);
    uint64_t before = store_map_size(st);
    struct snapshot *last = NULL;
    for (uint64_t i = 0; i < 40; i++) {
        snapshot_free(last);
        last = make_snapshot("big", i, OBSD_RUN_LIVE, 50, 200, 250, 30);
        ck_assert_msg(store_persist(st, last, false) == STORE_OK, "%s", store_error(st));
    }
    ck_assert_uint_gt(store_map_size(st), before);
    struct snapshot *latest;
    ck_assert_int_eq(store_latest(st, "big", &latest), STORE_OK);
    assert_same(latest, last);
    snapshot_free(latest);
    snapshot_free(last);
    store_close(st);
}
END_TEST

/* Writes a raw value with LMDB directly, as a damaged or foreign file would. */
static void raw_put(const char *db, const void *key, size_t klen, const void *val, size_t vlen)
{
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    ck_assert_int_eq(mdb_env_create(&env), 0);
    mdb_env_set_maxdbs(env, 16);
    ck_assert_int_eq(mdb_env_open(env, dir, 0, 0640), 0);
    ck_assert_int_eq(mdb_txn_begin(env, NULL, 0, &txn), 0);
    ck_assert_int_eq(mdb_dbi_open(txn, db, 0, &dbi), 0);
    MDB_val k = {klen, (void *)key}, v = {vlen, (void *)val};
    ck_assert_int_eq(mdb_put(txn, dbi, &k, &v, 0), 0);
    ck_assert_int_eq(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
}

static size_t raw_get(const char *db, const void *key, size_t klen, void *out, size_t cap)
{
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    mdb_env_create(&env);
    mdb_env_set_maxdbs(env, 16);
    ck_assert_int_eq(mdb_env_open(env, dir, MDB_RDONLY, 0640), 0);
    ck_assert_int_eq(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), 0);
    ck_assert_int_eq(mdb_dbi_open(txn, db, 0, &dbi), 0);
    MDB_val k = {klen, (void *)key}, v;
    ck_assert_int_eq(mdb_get(txn, dbi, &k, &v), 0);
    size_t n = v.mv_size < cap ? v.mv_size : cap;
    memcpy(out, v.mv_data, n);
    mdb_txn_abort(txn);
    mdb_env_close(env);
    return n;
}

START_TEST(newer_schema_refused)
{
    store_close(open_rw(0));
    uint8_t v[4] = {3, 0, 0, 0};
    raw_put("meta", "schema_version", 14, v, 4);
    struct store *st = store_open(dir, 0, false, true, err, sizeof err);
    ck_assert_ptr_null(st);
    ck_assert_msg(strstr(err, "store schema 3 is newer than this") && strstr(err, "(1)"), "%s", err);
    st = store_open(dir, 0, false, false, err, sizeof err);
    ck_assert_ptr_null(st);
    ck_assert_msg(strstr(err, "store schema 3 is newer"), "%s", err);
}
END_TEST

START_TEST(corrupt_values_rejected)
{
    struct store *st = open_rw(0);
    struct snapshot *s = make_snapshot("cr", 0, OBSD_RUN_LIVE, 4, 3, 7, 5);
    snapshot_set_section(s, "sched", json_pack("{s:f}", "idle_ratio", 0.25));
    ck_assert_int_eq(store_persist(st, s, true), STORE_OK);
    store_close(st);

    uint8_t key[8] = {0, 0, 0, 0, 0, 0, 0, 1};
    static uint8_t good[65536], bad[65536];
    size_t n = raw_get("latest", key, 8, good, sizeof good);
    ck_assert_uint_lt(n, sizeof good);
    /* every truncation and a byte flip at every position: an error or a
     * snapshot, never a crash (ASan watches) */
    size_t rejected = 0;
    for (size_t cut = 0; cut < n; cut += (cut < 64 ? 1 : 7)) {
        raw_put("latest", key, 8, good, cut);
        st = store_open(dir, 0, false, true, err, sizeof err);
        ck_assert_msg(st != NULL, "%s", err);
        struct snapshot *out = NULL;
        int rc = store_latest(st, "cr", &out);
        ck_assert_int_eq(rc, STORE_ERROR);
        ck_assert_msg(strstr(store_error(st), "corrupt store"), "%s", store_error(st));
        rejected++;
        store_close(st);
    }
    for (size_t pos = 0; pos < n; pos += 3) {
        memcpy(bad, good, n);
        bad[pos] ^= 0xa5;
        raw_put("latest", key, 8, bad, n);
        st = store_open(dir, 0, false, true, err, sizeof err);
        struct snapshot *out = NULL;
        int rc = store_latest(st, "cr", &out);
        ck_assert(rc == STORE_OK || rc == STORE_ERROR);
        ck_assert(rc == STORE_OK ? out != NULL : strstr(store_error(st), "corrupt store") != NULL);
        snapshot_free(out);
        store_close(st);
    }
    ck_assert_uint_gt(rejected, 10);
    raw_put("latest", key, 8, good, n);
    /* a damaged metric row of the latest snapshot */
    uint8_t mkey[12] = {0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 2};
    size_t mn = raw_get("latest", mkey, 12, bad, sizeof bad);
    for (size_t cut = 0; cut < mn; cut++) {
        raw_put("latest", mkey, 12, bad, cut);
        st = store_open(dir, 0, false, true, err, sizeof err);
        struct snapshot *out = NULL;
        ck_assert_int_eq(store_latest(st, "cr", &out), STORE_ERROR);
        ck_assert_msg(strstr(store_error(st), "corrupt store: latest snapshot"), "%s", store_error(st));
        store_close(st);
    }
    /* a damaged run record */
    raw_put("runs", key, 8, "\001\005ab", 4);
    st = store_open(dir, 0, false, true, err, sizeof err);
    struct store_run_info *runs;
    size_t nr;
    ck_assert_int_eq(store_list_runs(st, &runs, &nr), STORE_ERROR);
    ck_assert_msg(strstr(store_error(st), "corrupt store: run record"), "%s", store_error(st));
    store_close(st);
    snapshot_free(s);
}
END_TEST

/* A one-hour run at one persist per second with 1,000 series of which few
 * change per persist must stay far below 512 MiB. */
START_TEST(one_hour_size_bound)
{
    struct store *st = open_rw(0);
    struct snapshot *s = make_snapshot("hour", 0, OBSD_RUN_LIVE, 0, 1000, 1000, 30);
    for (uint64_t seq = 0; seq < 3600; seq++) {
        s->seq = seq;
        s->timestamp_ns += 1000000000ULL;
        if (seq == 3599)
            s->state = OBSD_RUN_COMPLETE;
        /* 20 series take new values each second, a rotating subset */
        for (int k = 0; k < 20; k++) {
            struct snap_series *sr = &s->series[(seq * 20 + (uint64_t)k) % 1000];
            sr->count += 7;
            sr->total += 700;
            sr->max += 1;
        }
        ck_assert_msg(store_persist(st, s, seq == 3599) == STORE_OK, "%s", store_error(st));
    }
    store_close(st);
    char path[600];
    snprintf(path, sizeof path, "%s/data.mdb", dir);
    struct stat sb;
    ck_assert_int_eq(stat(path, &sb), 0);
    /* file blocks actually used, not the sparse map size */
    uint64_t used = (uint64_t)sb.st_blocks * 512;
    fprintf(stderr, "one_hour_size_bound: data.mdb uses %.1f MiB\n", (double)used / (1 << 20));
    ck_assert_uint_lt(used, 512ULL << 20);
    snapshot_free(s);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("store");
    TCase *tc = tcase_create("store");
    tcase_add_unchecked_fixture(tc, temp_root_begin, temp_root_end);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, round_trip_latest_final_seq);
    tcase_add_test(tc, final_written_once);
    tcase_add_test(tc, seq_must_grow_and_resume);
    tcase_add_test(tc, overlong_name_refused);
    tcase_add_test(tc, runs_in_start_order);
    tcase_add_test(tc, metric_time_series);
    tcase_add_test(tc, series_interval_thins_points);
    tcase_add_test(tc, grows_on_map_full);
    tcase_add_test(tc, newer_schema_refused);
    tcase_add_test(tc, corrupt_values_rejected);
    tcase_add_test(tc, one_hour_size_bound);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
