/* test_store.c: snapshots through the LMDB store. */
#include <check.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <lmdb.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "publisher/store.h"
#include "raw_lmdb.h"
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

/* A series whose histogram alone changes (another histogram_buckets after a
 * restart, with no new value) is rewritten: the latest is what was persisted
 * last, not the old bucket layout. */
START_TEST(bucket_layout_change_alone_is_persisted)
{
    struct store *st = open_rw(0);
    struct snapshot *a = make_snapshot("rb", 1, OBSD_RUN_LIVE, 1, 3, 0, 8);
    struct snapshot *b = make_snapshot("rb", 2, OBSD_RUN_LIVE, 1, 3, 0, 5);
    ck_assert_msg(store_persist(st, a, false) == STORE_OK, "%s", store_error(st));
    ck_assert_msg(store_persist(st, b, false) == STORE_OK, "%s", store_error(st));
    struct snapshot *latest;
    ck_assert_int_eq(store_latest(st, "rb", &latest), STORE_OK);
    ck_assert_uint_eq(latest->series[1].n_buckets, 5);
    assert_same(latest, b);
    snapshot_free(latest);
    snapshot_free(a);
    snapshot_free(b);
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

/* Every flush to disk LMDB asks for: fdatasync, and a write through a
 * descriptor opened O_DSYNC (LMDB's way to write the meta page synchronously).
 * These definitions are found before libc's by liblmdb too. */
static int n_flushes;
int fdatasync(int fd)
{
    static int (*real)(int);
    if (!real)
        *(void **)&real = dlsym(RTLD_NEXT, "fdatasync");
    n_flushes++;
    return real ? real(fd) : 0;
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off)
{
    static ssize_t (*real)(int, const void *, size_t, off_t);
    if (!real)
        *(void **)&real = dlsym(RTLD_NEXT, "pwrite");
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0 && (fl & O_DSYNC) == O_DSYNC)
        n_flushes++;
    return real ? real(fd, buf, n, off) : -1;
}

static int flushes_of_persist(struct store *st, const struct snapshot *s, bool final)
{
    n_flushes = 0;
    ck_assert_int_eq(store_persist(st, s, final), STORE_OK);
    return n_flushes;
}

/* With store_sync a live commit costs the disk one flush (its pages; the
 * meta page goes out with the next commit's), the final two (its meta page
 * too: a run's end must survive a crash of the machine), and closing the
 * store flushes the last meta page. Without store_sync, none. */
START_TEST(synced_commits_flush_once_the_final_whole)
{
    struct store *st = store_open(dir, 0, true, false, err, sizeof err);
    ck_assert_msg(st != NULL, "%s", err);
    struct snapshot *s[4];
    for (int i = 0; i < 4; i++)
        s[i] = make_snapshot("r1", (uint64_t)i + 1, i == 3 ? OBSD_RUN_COMPLETE : OBSD_RUN_LIVE, 2, 2, 4, 3);
    ck_assert_int_eq(store_persist(st, s[0], false), STORE_OK);   /* the run's first rows */
    ck_assert_int_eq(flushes_of_persist(st, s[1], false), 1);
    ck_assert_int_eq(flushes_of_persist(st, s[2], false), 1);
    ck_assert_int_eq(flushes_of_persist(st, s[3], true), 2);
    n_flushes = 0;
    store_close(st);
    ck_assert_int_eq(n_flushes, 1);

    st = store_open(dir, 0, false, false, err, sizeof err);
    ck_assert_msg(st != NULL, "%s", err);
    struct snapshot *t[2] = {make_snapshot("r2", 1, OBSD_RUN_LIVE, 2, 2, 4, 3),
                             make_snapshot("r2", 2, OBSD_RUN_COMPLETE, 2, 2, 4, 3)};
    ck_assert_int_eq(flushes_of_persist(st, t[0], false), 0);
    ck_assert_int_eq(flushes_of_persist(st, t[1], true), 0);
    n_flushes = 0;
    store_close(st);
    ck_assert_int_eq(n_flushes, 0);
    for (int i = 0; i < 4; i++)
        snapshot_free(s[i]);
    snapshot_free(t[0]);
    snapshot_free(t[1]);
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

/* One handle that goes from run to run (a collector that starts the next
 * run, the previous one ended or not): each run's time series stands on its
 * own. */
START_TEST(runs_in_turn_keep_their_series)
{
    struct store *st = open_rw(0);
    store_set_series_interval(st, 0);
    const char *runs[] = {"first", "second", "third"};
    for (int r = 0; r < 3; r++)
        for (uint64_t i = 0; i < 6; i++) {
            bool final = r == 1 && i == 5;
            struct snapshot *s = make_snapshot(runs[r], i, final ? OBSD_RUN_COMPLETE : OBSD_RUN_LIVE,
                                               2, 3, 3 + (size_t)r, 4);
            ck_assert_msg(store_persist(st, s, final) == STORE_OK, "%s", store_error(st));
            snapshot_free(s);
        }
    for (int r = 0; r < 3; r++) {
        uint64_t v[64] = {0};
        ck_assert_msg(store_metric_series(st, runs[r], "s0_latency_ns", collect_seqs, v) == STORE_OK,
                      "%s", store_error(st));
        ck_assert_int_eq(v[0], 6);
        size_t n[2] = {0, 0};
        ck_assert_int_eq(store_metric_series(st, runs[r], "s0_latency_ns", count_points, n), STORE_OK);
        ck_assert_int_eq(n[1], 600);
        n[0] = 0;
        ck_assert_int_eq(store_metric_series(st, runs[r], NULL, count_points, n), STORE_OK);
        /* changing: 6 points each; the others: their first */
        size_t changing = 3 + (size_t)r, points = 0;
        for (size_t m = 0; m < 5; m++)
            points += m < changing ? 6 : 1;
        ck_assert_uint_eq(n[0], points);
    }
    store_close(st);
}
END_TEST

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

static int collect_counter_points(const struct store_point *p, void *ctx)
{
    int64_t *v = ctx;   /* v[0] points, then seq and value pairs */
    v[1 + 2 * v[0]] = (int64_t)p->seq;
    v[2 + 2 * v[0]++] = p->ivalue;
    return 0;
}

/* A metric that changed once and then stays as it is waits for its point
 * until series_interval has passed since its last one, while persists that
 * change only a few other metrics visit only those (store.c, sparse
 * staging): the wait must still end in its point. */
START_TEST(a_waiting_point_comes_when_due)
{
    struct store *st = open_rw(0);
    store_set_history_full_every(st, 1000);
    for (uint64_t i = 0; i < 10; i++) {
        struct snapshot *s = make_snapshot("wait", i, OBSD_RUN_LIVE, 1000, 0, 0, 0);
        s->counters[0].ivalue = (int64_t)i;          /* changes at every persist */
        s->counters[1].ivalue = i >= 1 ? 7 : 0;      /* changes once, at seq 1 */
        s->timestamp_ns = 1700000000000000000ULL + i * 250000000ULL;
        ck_assert_msg(store_persist(st, s, false) == STORE_OK, "%s", store_error(st));
        snapshot_free(s);
    }
    int64_t v[64] = {0};
    ck_assert_int_eq(store_metric_series(st, "wait", "c1", collect_counter_points, v), STORE_OK);
    ck_assert_int_eq(v[0], 2);
    ck_assert_int_eq(v[1], 0);
    ck_assert_int_eq(v[2], 0);
    ck_assert_int_eq(v[3], 4);   /* a second after the first, with the value of seq 1 */
    ck_assert_int_eq(v[4], 7);
    memset(v, 0, sizeof v);
    ck_assert_int_eq(store_metric_series(st, "wait", "c0", collect_counter_points, v), STORE_OK);
    ck_assert_int_eq(v[0], 3);
    ck_assert_int_eq(v[3], 4);
    ck_assert_int_eq(v[4], 4);
    ck_assert_int_eq(v[5], 8);
    ck_assert_int_eq(v[6], 8);
    struct snapshot *at;
    ck_assert_int_eq(store_latest(st, "wait", &at), STORE_OK);
    ck_assert_int_eq(at->seq, 9);
    ck_assert_int_eq(at->counters[0].ivalue, 9);
    ck_assert_int_eq(at->counters[1].ivalue, 7);
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

START_TEST(newer_schema_refused)
{
    store_close(open_rw(0));
    uint8_t v[4] = {OBSD_STORE_SCHEMA_VERSION + 1, 0, 0, 0};
    raw_put(dir, "meta", "schema_version", 14, v, 4);
    char want[64], ours[16];
    snprintf(want, sizeof want, "store schema %d is newer than this", OBSD_STORE_SCHEMA_VERSION + 1);
    snprintf(ours, sizeof ours, "(%d)", OBSD_STORE_SCHEMA_VERSION);
    struct store *st = store_open(dir, 0, false, true, err, sizeof err);
    ck_assert_ptr_null(st);
    ck_assert_msg(strstr(err, want) && strstr(err, ours), "%s", err);
    st = store_open(dir, 0, false, false, err, sizeof err);
    ck_assert_ptr_null(st);
    ck_assert_msg(strstr(err, want), "%s", err);
}
END_TEST

/* A store of an earlier layout is refused too, naming both versions. */
START_TEST(older_schema_refused)
{
    store_close(open_rw(0));
    uint8_t v[4] = {OBSD_STORE_SCHEMA_VERSION - 1, 0, 0, 0};
    raw_put(dir, "meta", "schema_version", 14, v, 4);
    char want[96];
    snprintf(want, sizeof want, "store schema %d is older than this test_store (%d)",
             OBSD_STORE_SCHEMA_VERSION - 1, OBSD_STORE_SCHEMA_VERSION);
    struct store *st = store_open(dir, 0, false, true, err, sizeof err);
    ck_assert_ptr_null(st);
    ck_assert_msg(strstr(err, want), "%s", err);
    st = store_open(dir, 0, false, false, err, sizeof err);
    ck_assert_ptr_null(st);
    ck_assert_msg(strstr(err, want), "%s", err);
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
    size_t n = raw_get(dir, "latest", key, 8, good, sizeof good);
    ck_assert_uint_lt(n, sizeof good);
    /* every truncation and a byte flip at every position: an error or a
     * snapshot, never a crash (ASan watches) */
    size_t rejected = 0;
    for (size_t cut = 0; cut < n; cut += (cut < 64 ? 1 : 7)) {
        raw_put(dir, "latest", key, 8, good, cut);
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
        raw_put(dir, "latest", key, 8, bad, n);
        st = store_open(dir, 0, false, true, err, sizeof err);
        struct snapshot *out = NULL;
        int rc = store_latest(st, "cr", &out);
        ck_assert(rc == STORE_OK || rc == STORE_ERROR);
        ck_assert(rc == STORE_OK ? out != NULL : strstr(store_error(st), "corrupt store") != NULL);
        snapshot_free(out);
        store_close(st);
    }
    ck_assert_uint_gt(rejected, 10);
    raw_put(dir, "latest", key, 8, good, n);
    /* a damaged metric row of the latest snapshot */
    uint8_t mkey[12] = {0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 2};
    size_t mn = raw_get(dir, "latest", mkey, 12, bad, sizeof bad);
    for (size_t cut = 0; cut < mn; cut++) {
        raw_put(dir, "latest", mkey, 12, bad, cut);
        st = store_open(dir, 0, false, true, err, sizeof err);
        struct snapshot *out = NULL;
        ck_assert_int_eq(store_latest(st, "cr", &out), STORE_ERROR);
        ck_assert_msg(strstr(store_error(st), "corrupt store: latest snapshot"), "%s", store_error(st));
        store_close(st);
    }
    /* a damaged run record */
    raw_put(dir, "runs", key, 8, "\001\005ab", 4);
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

/* ------------------------------------------------------------ a model run
 *
 * A run of many metrics that change in every way a snapshot can (counts only,
 * one bucket, moving edges, other bucket counts, gaps between buckets, the
 * exact flag, integer and float counters, -0.0 and huge values), leave for a
 * while and come back, or appear late. The model knows what the store must
 * give back: the latest snapshot is the last one persisted, byte for byte,
 * and with a series interval of 0 every change is a time series point. */

#define MODEL_BUCKETS 12

struct mpoint {
    uint64_t seq, ts, count;
    bool is_series, is_float, exact;
    int64_t ivalue;
    double fvalue, total, min, max, pct[STORE_POINT_NPCT];
};

struct mmetric {
    char name[32];
    bool is_series, present;
    uint64_t born;            /* first persist it is in */
    bool is_float;            /* counters */
    int64_t ivalue;
    double fvalue;
    bool exact;               /* series */
    uint64_t count;
    double total, min, max, sum_sq, pct[OBSD_N_PERCENTILES];
    size_t n_buckets;
    struct snap_bucket b[MODEL_BUCKETS];
    bool seen;                /* in the previous persist, with fingerprint fp */
    uint64_t fp[5];
    bool dirty;               /* changed since its last point */
    bool has_pt;              /* has a point, at pt_ts, from the current writer */
    uint64_t pt_ts;
    long id;                  /* the store's id order: first persisted first */
    uint8_t was[256];         /* present at seq (bit per seq) */
    struct mpoint *pts;
    size_t npts, cap;
};

struct model {
    struct mmetric *m;
    size_t n, n_counters;
    uint64_t rng;
    long next_id;
    const char *run;
    uint64_t step_ns;         /* between persists (0: 1 s) */
    uint64_t interval_ns;     /* the store's series_interval (0: a point at every change) */
};

static uint64_t rnd(struct model *md)
{
    md->rng ^= md->rng << 13;
    md->rng ^= md->rng >> 7;
    md->rng ^= md->rng << 17;
    return md->rng;
}

static double any_value(struct model *md)
{
    switch (rnd(md) % 8) {
    case 0: return 0.5 + (double)(rnd(md) % 1000);
    case 1: return 1e300 / (double)(1 + rnd(md) % 7);
    case 2: return -0.0;
    case 3: return -(double)(rnd(md) % 100000);
    default: return (double)(rnd(md) % 10000000);
    }
}

static void set_edges(struct model *md, struct mmetric *m, size_t n, bool gaps)
{
    m->n_buckets = n;
    double lo = m->min > 0 ? m->min : 1;
    for (size_t j = 0; j < n; j++) {
        m->b[j].lo = lo;
        m->b[j].hi = lo * 1.37;
        m->b[j].count = rnd(md) % (j % 3 ? 300 : 70000);
        lo = gaps && j % 2 ? m->b[j].hi * 1.1 : m->b[j].hi;
    }
}

static void model_init(struct model *md, const char *run, size_t n_counters, size_t n_series,
                       uint64_t seed)
{
    memset(md, 0, sizeof *md);
    md->run = run;
    md->rng = seed;
    md->n = n_counters + n_series;
    md->n_counters = n_counters;
    md->m = calloc(md->n, sizeof *md->m);
    for (size_t i = 0; i < md->n; i++) {
        struct mmetric *m = &md->m[i];
        m->is_series = i >= n_counters;
        m->id = -1;
        /* the last ones of each class appear later (in their order), so ids
         * are not in snapshot order */
        size_t k = m->is_series ? i - n_counters : i, of = m->is_series ? n_series : n_counters;
        size_t late = of - of / 10;
        m->born = k >= late ? 20 + (k - late) / 5 : 0;
        m->present = m->born == 0;
        snprintf(m->name, sizeof m->name, m->is_series ? "s%zu.latency_ns" : "c%zu", k);
        m->ivalue = (int64_t)(rnd(md) % 1000);
        m->count = 10 + rnd(md) % 100;
        m->total = (double)(m->count * 1000);
        m->min = 1 + (double)(rnd(md) % 50);
        m->max = m->min + 1000;
        m->sum_sq = 1e9;
        for (int p = 0; p < OBSD_N_PERCENTILES; p++)
            m->pct[p] = m->min + 10 * obsd_percentile_grid[p];
        set_edges(md, m, 4 + rnd(md) % (MODEL_BUCKETS - 4), false);
    }
}

static void model_free(struct model *md)
{
    for (size_t i = 0; i < md->n; i++)
        free(md->m[i].pts);
    free(md->m);
}

/* One step of the run; changes about `rate` percent of the metrics. */
static void model_step(struct model *md, uint64_t seq, unsigned rate)
{
    for (size_t i = 0; i < md->n; i++) {
        struct mmetric *m = &md->m[i];
        if (seq < m->born)
            continue;
        if (seq == m->born)
            m->present = true;
        else if (rnd(md) % 97 == 0)
            m->present = !m->present;    /* leaves, or comes back */
        if (rnd(md) % 100 >= rate)
            continue;
        if (!m->is_series) {
            if (rnd(md) % 13 == 0)
                m->is_float = !m->is_float;
            if (m->is_float)
                m->fvalue = any_value(md);
            else
                m->ivalue += (int64_t)(rnd(md) % 5000) - 100;
            continue;
        }
        uint64_t k = 1 + rnd(md) % 40;
        m->count += k;
        m->total += (double)(k * 1000);
        switch (rnd(md) % 9) {
        case 0: /* count and total only */
            break;
        case 1: /* edges move */
            m->min = any_value(md);
            m->max = m->min + 5000;
            set_edges(md, m, m->n_buckets, false);
            break;
        case 2: /* another number of buckets, perhaps none */
            set_edges(md, m, rnd(md) % (MODEL_BUCKETS + 1), rnd(md) % 2);
            break;
        case 3:
            m->exact = !m->exact;
            break;
        case 4:
            m->max = any_value(md);
            m->pct[rnd(md) % OBSD_N_PERCENTILES] = any_value(md);
            break;
        default: /* the common case: one bucket, the moments, some percentiles */
            if (m->n_buckets)
                m->b[rnd(md) % m->n_buckets].count += k;
            m->sum_sq += (double)k * 1e6;
            m->pct[7] += 1;
            m->pct[1] = any_value(md);
            break;
        }
    }
}

static struct snapshot *model_snapshot(struct model *md, uint64_t seq, enum obsd_run_state state)
{
    struct snapshot *s = snapshot_new(md->run, seq, state);
    s->timestamp_ns = 1700000000000000000ULL + seq * (md->step_ns ? md->step_ns : 1000000000ULL) + seq % 7;
    for (size_t i = 0; i < md->n; i++) {
        const struct mmetric *m = &md->m[i];
        if (!m->present)
            continue;
        if (!m->is_series) {
            if (m->is_float)
                snapshot_add_gauge(s, m->name, m->fvalue);
            else
                snapshot_add_counter(s, m->name, m->ivalue);
            continue;
        }
        struct snap_series sr = {.name = (char *)m->name, .exact = m->exact, .count = m->count,
                                 .total = m->total, .min = m->min, .max = m->max,
                                 .sum_sq = m->sum_sq, .n_buckets = m->n_buckets,
                                 .buckets = (struct snap_bucket *)m->b};
        memcpy(sr.percentiles, m->pct, sizeof sr.percentiles);
        snapshot_add_series(s, &sr);
    }
    if (seq % 5 == 0)
        snapshot_set_section(s, "budget", json_pack("{s:I}", "calls", (json_int_t)seq));
    else
        snapshot_set_section(s, "budget", json_pack("{s:I}", "calls", (json_int_t)(seq - seq % 5)));
    return s;
}

static uint64_t dbl(double d)
{
    uint64_t u;
    memcpy(&u, &d, 8);
    return u;
}

/* After a committed persist of seq: which metrics got a point (one that
 * changed since its last point, when series_interval has passed since it,
 * it has none, time went back, or at the final). */
static void model_persisted(struct model *md, uint64_t seq, uint64_t ts, bool final)
{
    for (size_t i = 0; i < md->n; i++) {
        struct mmetric *m = &md->m[i];
        if (m->present && seq < 8 * sizeof m->was)
            m->was[seq / 8] |= (uint8_t)(1u << (seq % 8));
        if (!m->present) {
            m->seen = false;
            continue;
        }
        uint64_t fp[5] = {0};
        if (m->is_series) {
            fp[0] = m->count;
            fp[1] = dbl(m->total);
            fp[2] = dbl(m->min);
            fp[3] = dbl(m->max);
            fp[4] = m->exact;
        } else {
            fp[0] = m->is_float;
            fp[1] = m->is_float ? dbl(m->fvalue) : (uint64_t)m->ivalue;
        }
        if (m->id < 0)
            m->id = md->next_id++;
        if (!m->seen || memcmp(fp, m->fp, sizeof fp))
            m->dirty = true;
        m->seen = true;
        memcpy(m->fp, fp, sizeof fp);
        if (!m->dirty || (m->has_pt && !final && ts - m->pt_ts < md->interval_ns && ts >= m->pt_ts))
            continue;
        m->dirty = false;
        m->has_pt = true;
        m->pt_ts = ts;
        if (m->npts == m->cap) {
            m->cap = m->cap ? 2 * m->cap : 16;
            m->pts = realloc(m->pts, m->cap * sizeof *m->pts);
        }
        struct mpoint *p = &m->pts[m->npts++];
        *p = (struct mpoint){.seq = seq, .ts = ts, .count = m->count, .is_series = m->is_series,
                             .is_float = m->is_float, .exact = m->exact, .ivalue = m->ivalue,
                             .fvalue = m->is_float ? m->fvalue : (double)m->ivalue,
                             .total = m->total, .min = m->min, .max = m->max};
        for (int k = 0; k < STORE_POINT_NPCT; k++)
            p->pct[k] = m->pct[(int[]){0, 1, 4, 7}[k]];
    }
}

struct collected {
    struct mpoint *p;
    const char **names;
    size_t n, cap;
};

static int collect_point(const struct store_point *sp, void *ctx)
{
    struct collected *c = ctx;
    if (c->n == c->cap) {
        c->cap = c->cap ? 2 * c->cap : 1024;
        c->p = realloc(c->p, c->cap * sizeof *c->p);
        c->names = realloc(c->names, c->cap * sizeof *c->names);
    }
    c->names[c->n] = strdup(sp->name);
    struct mpoint *p = &c->p[c->n++];
    *p = (struct mpoint){.seq = sp->seq, .ts = sp->timestamp_ns, .count = sp->count,
                         .is_series = sp->is_series, .is_float = sp->is_float, .exact = sp->exact,
                         .ivalue = sp->ivalue, .fvalue = sp->fvalue, .total = sp->total,
                         .min = sp->min, .max = sp->max};
    memcpy(p->pct, sp->pct, sizeof p->pct);
    return 0;
}

static void collected_free(struct collected *c)
{
    for (size_t i = 0; i < c->n; i++)
        free((char *)c->names[i]);
    free(c->p);
    free(c->names);
}

static void assert_point(const struct mpoint *want, const struct mpoint *got, const char *name)
{
    ck_assert_msg(got->seq == want->seq && got->ts == want->ts && got->is_series == want->is_series,
                  "%s: point seq %llu ts %llu, want seq %llu ts %llu", name,
                  (unsigned long long)got->seq, (unsigned long long)got->ts,
                  (unsigned long long)want->seq, (unsigned long long)want->ts);
    if (want->is_series) {
        ck_assert_msg(got->count == want->count && got->exact == want->exact &&
                          dbl(got->total) == dbl(want->total) && dbl(got->min) == dbl(want->min) &&
                          dbl(got->max) == dbl(want->max) &&
                          !memcmp(got->pct, want->pct, sizeof want->pct),
                      "%s: series point at seq %llu differs", name, (unsigned long long)want->seq);
    } else {
        ck_assert_msg(got->is_float == want->is_float &&
                          (want->is_float ? dbl(got->fvalue) == dbl(want->fvalue) : got->ivalue == want->ivalue),
                      "%s: counter point at seq %llu differs", name, (unsigned long long)want->seq);
    }
}

/* Every metric's time series, one by one and all at once, up to `upto`. */
static void model_check_series(struct store *st, const struct model *md, uint64_t upto, bool each)
{
    struct collected all = {0};
    ck_assert_msg(store_metric_series(st, md->run, NULL, collect_point, &all) == STORE_OK, "%s",
                  store_error(st));
    size_t at = 0;
    for (long id = 0; id < md->next_id; id++) {
        const struct mmetric *m = NULL;
        for (size_t i = 0; i < md->n && !m; i++)
            if (md->m[i].id == id)
                m = &md->m[i];
        ck_assert_ptr_nonnull(m);
        size_t want = 0;
        while (want < m->npts && m->pts[want].seq <= upto)
            want++;
        for (size_t k = 0; k < want; k++, at++) {
            ck_assert_msg(at < all.n, "%s: %zu points of %zu", m->name, k, want);
            ck_assert_str_eq(all.names[at], m->name);
            assert_point(&m->pts[k], &all.p[at], m->name);
        }
        if (each || id % 97 == 0) {
            struct collected one = {0};
            ck_assert_int_eq(store_metric_series(st, md->run, m->name, collect_point, &one), STORE_OK);
            /* a counter and a series may share a name: this one is a series if there is one */
            if (m->is_series || one.n == want) {
                ck_assert_msg(one.n == want, "%s: %zu points, want %zu", m->name, one.n, want);
                for (size_t k = 0; k < want; k++)
                    assert_point(&m->pts[k], &one.p[k], m->name);
            }
            collected_free(&one);
        }
    }
    ck_assert_uint_eq(at, all.n);
    collected_free(&all);
}

static void assert_latest(struct store *st, const char *run, const struct snapshot *want)
{
    struct snapshot *latest = NULL;
    ck_assert_msg(store_latest(st, run, &latest) == STORE_OK, "%s", store_error(st));
    char *ta = snapshot_text(latest), *tb = snapshot_text(want);
    ck_assert_msg(!strcmp(ta, tb), "latest of seq %llu differs from what was persisted",
                  (unsigned long long)want->seq);
    free(ta);
    free(tb);
    snapshot_free(latest);
}

/* The snapshot at seq: every metric present then shows its last point; a
 * metric absent then may show it (the history keeps no removals). */
static void model_check_at(struct store *st, const struct model *md, uint64_t seq)
{
    struct snapshot *at;
    ck_assert_msg(store_snapshot_at(st, md->run, seq, &at) == STORE_OK, "%s", store_error(st));
    ck_assert_int_eq(at->seq, seq);
    for (size_t i = 0; i < md->n; i++) {
        const struct mmetric *m = &md->m[i];
        const struct mpoint *p = NULL;
        for (size_t k = 0; k < m->npts && m->pts[k].seq <= seq; k++)
            p = &m->pts[k];
        if (!p)
            continue;
        bool was = m->was[seq / 8] & (1u << (seq % 8));
        if (m->is_series) {
            const struct snap_series *sr = snapshot_find_series(at, m->name);
            ck_assert_msg(sr || !was, "%s missing at seq %llu", m->name, (unsigned long long)seq);
            ck_assert_msg(!sr || (sr->count == p->count && dbl(sr->total) == dbl(p->total) &&
                                  dbl(sr->max) == dbl(p->max) && dbl(sr->percentiles[7]) == dbl(p->pct[3])),
                          "%s at seq %llu", m->name, (unsigned long long)seq);
        } else {
            const struct snap_counter *c = snapshot_find_counter(at, m->name);
            ck_assert_msg(c || !was, "%s missing at seq %llu", m->name, (unsigned long long)seq);
            ck_assert_msg(!c || (c->is_float == p->is_float && dbl(c->fvalue) == dbl(p->fvalue)),
                          "%s at seq %llu", m->name, (unsigned long long)seq);
        }
    }
    snapshot_free(at);
}

static struct store *open_model_store(void)
{
    struct store *st = open_rw(0);
    store_set_series_interval(st, 0);
    store_set_history_full_every(st, 7);
    return st;
}

/* 1,500 metrics over 24 chunk windows and 110 persists, with a restart of
 * the writer in the middle: after every persist the latest snapshot is the
 * persisted one; every metric's time series and the snapshots at earlier
 * seqs are what was persisted, while the run is live and after its end.
 * Persists step_ns apart, a point at most every interval_ns. */
static void follow_model(uint64_t step_ns, uint64_t interval_ns)
{
    struct model md;
    model_init(&md, "model", 40, 1460, 0x9e3779b97f4a7c15ULL);
    md.step_ns = step_ns;
    md.interval_ns = interval_ns;
    struct store *st = open_model_store();
    store_set_series_interval(st, interval_ns);
    const uint64_t n = 110;
    for (uint64_t seq = 0; seq < n; seq++) {
        unsigned rate = seq % 20 < 5 ? 100 : seq % 20 < 12 ? 3 : seq % 20 < 15 ? 0 : 40;
        model_step(&md, seq, rate);
        bool final = seq == n - 1;
        struct snapshot *s = model_snapshot(&md, seq, final ? OBSD_RUN_COMPLETE : OBSD_RUN_LIVE);
        ck_assert_msg(store_persist(st, s, final) == STORE_OK, "seq %llu: %s",
                      (unsigned long long)seq, store_error(st));
        model_persisted(&md, seq, s->timestamp_ns, final);
        assert_latest(st, md.run, s);
        snapshot_free(s);
        if (seq % 23 == 5)
            model_check_series(st, &md, seq, false);
        if (seq == 60) {
            /* a restarted collector resumes the run; it knows none of the
             * previous values, so its first persist gives every metric a point */
            store_close(st);
            st = open_model_store();
            store_set_series_interval(st, interval_ns);
            ck_assert_int_eq(store_begin_run(st, md.run, NULL, 0), STORE_OK);
            for (size_t i = 0; i < md.n; i++)
                md.m[i].seen = md.m[i].has_pt = false;
        }
    }
    model_check_series(st, &md, n, true);
    /* (with thinned points a snapshot at a seq is its keyframe's values and
     * the points since, which the model does not follow) */
    for (uint64_t seq = 3; seq < n && !interval_ns; seq += 11)
        model_check_at(st, &md, seq);
    store_close(st);
    /* the same from a read-only handle, as obsctl sees it */
    st = store_open(dir, 0, false, true, err, sizeof err);
    ck_assert_msg(st != NULL, "%s", err);
    model_check_series(st, &md, n, false);
    store_close(st);
    model_free(&md);
}

START_TEST(latest_and_series_follow_a_model)
{
    follow_model(1000000000ULL, 0);
}
END_TEST

/* The same with four persists a second and a point at most every second,
 * as the collector persists by default: most persists write no points. */
START_TEST(latest_and_thinned_series_follow_a_model)
{
    follow_model(250000000ULL, 1000000000ULL);
}
END_TEST

/* The collector is killed (SIGKILL) at an arbitrary moment of a live run:
 * everything a commit reported as done is in the store, as readers and a
 * resuming collector see it. */
START_TEST(kill9_loses_nothing_committed)
{
    int ack[2];
    ck_assert_int_eq(pipe(ack), 0);
    const uint64_t seed = 0x1234567887654321ULL;
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        close(ack[0]);
        struct model md;
        model_init(&md, "killed", 20, 700, seed);
        struct store *st = open_model_store();
        for (uint64_t seq = 0;; seq++) {
            model_step(&md, seq, seq % 9 < 4 ? 100 : 5);
            struct snapshot *s = model_snapshot(&md, seq, OBSD_RUN_LIVE);
            if (store_persist(st, s, false) != STORE_OK)
                _exit(3);
            snapshot_free(s);
            if (write(ack[1], &seq, sizeof seq) != (ssize_t)sizeof seq)
                _exit(4);
        }
    }
    close(ack[1]);
    uint64_t acked = 0, got;
    for (int i = 0; i < 75; i++) {
        ck_assert_int_eq(read(ack[0], &got, sizeof got), (ssize_t)sizeof got);
        acked = got;
    }
    kill(pid, SIGKILL);
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert(WIFSIGNALED(status));
    close(ack[0]);

    struct store *st = store_open(dir, 0, false, true, err, sizeof err);
    ck_assert_msg(st != NULL, "%s", err);
    struct store_run_info ri;
    ck_assert_int_eq(store_find_run(st, "killed", &ri), STORE_OK);
    ck_assert_uint_ge(ri.last_seq, acked);
    struct model md;
    model_init(&md, "killed", 20, 700, seed);
    struct snapshot *last = NULL;
    for (uint64_t seq = 0; seq <= ri.last_seq; seq++) {
        model_step(&md, seq, seq % 9 < 4 ? 100 : 5);
        snapshot_free(last);
        last = model_snapshot(&md, seq, OBSD_RUN_LIVE);
        model_persisted(&md, seq, last->timestamp_ns, false);
    }
    assert_latest(st, "killed", last);
    model_check_series(st, &md, ri.last_seq, true);
    model_check_at(st, &md, ri.last_seq);
    model_check_at(st, &md, ri.last_seq - 3);
    store_close(st);

    /* the restarted collector continues the run to its end */
    st = open_model_store();
    ck_assert_int_eq(store_begin_run(st, "killed", NULL, 0), STORE_OK);
    for (size_t i = 0; i < md.n; i++)
        md.m[i].seen = md.m[i].has_pt = false;
    uint64_t end = ri.last_seq + 30;
    for (uint64_t seq = ri.last_seq + 1; seq <= end; seq++) {
        model_step(&md, seq, seq % 9 < 4 ? 100 : 5);
        snapshot_free(last);
        last = model_snapshot(&md, seq, seq == end ? OBSD_RUN_COMPLETE : OBSD_RUN_LIVE);
        ck_assert_msg(store_persist(st, last, seq == end) == STORE_OK, "%s", store_error(st));
        model_persisted(&md, seq, last->timestamp_ns, seq == end);
    }
    assert_latest(st, "killed", last);
    model_check_series(st, &md, end, true);
    snapshot_free(last);
    store_close(st);
    model_free(&md);
}
END_TEST

/* How many keys of a table start with prefix. */
static size_t raw_count_prefix(const char *db, const void *prefix, size_t plen)
{
    struct raw r = raw_begin(dir, db);
    MDB_val k = {plen, (void *)prefix}, v;
    size_t n = 0;
    for (int rc = mdb_cursor_get(r.cur, &k, &v, MDB_SET_RANGE); !rc; rc = mdb_cursor_get(r.cur, &k, &v, MDB_NEXT)) {
        if (k.mv_size < plen || memcmp(k.mv_data, prefix, plen))
            break;
        n++;
    }
    raw_end(&r);
    return n;
}

/* The latest snapshot of a long run whose metrics change at rates from
 * every persist to every 41st: the delta rows it is read from stay bounded
 * (the folds pass every metric within 64 persists, and the rows before go),
 * a resumed run and the final start over from base rows alone, and what is
 * read back is what was persisted all along. */
START_TEST(delta_rows_folded_away)
{
    static const uint8_t deltas[12] = {0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff};
    struct store *st = open_rw(0);
    struct snapshot *s = make_snapshot("fold", 0, OBSD_RUN_LIVE, 50, 300, 0, 6);
    size_t most = 0;
    for (uint64_t seq = 0; seq < 120; seq++) {
        s->seq = seq;
        s->timestamp_ns += 1000000000ULL;
        for (size_t i = 0; i < s->n_series; i++) {
            struct snap_series *sr = &s->series[i];
            if ((seq + i) % (1 + i % 41))
                continue;
            sr->count += 3;
            sr->total += 30;
            sr->buckets[i % sr->n_buckets].count += 3;
        }
        for (size_t i = 0; i < s->n_counters; i++)
            if ((seq + i) % (1 + i % 37) == 0)
                s->counters[i].ivalue += (int64_t)i + 1;
        bool final = seq == 119;
        if (final)
            s->state = OBSD_RUN_COMPLETE;
        ck_assert_msg(store_persist(st, s, final) == STORE_OK, "%s", store_error(st));
        struct snapshot *latest;
        ck_assert_int_eq(store_latest(st, "fold", &latest), STORE_OK);
        assert_same(latest, s);
        snapshot_free(latest);
        size_t n = raw_count_prefix("latest", deltas, sizeof deltas);
        if (n > most)
            most = n;
        /* a fold pass starts with the first persist of a handle */
        if (seq == 0 || seq == 61 || final)
            ck_assert_uint_eq(n, 0);
        else
            ck_assert_uint_gt(n, 0);
        if (seq == 60) {
            store_close(st);
            st = open_rw(0);
        }
    }
    ck_assert_uint_le(most, 65);
    snapshot_free(s);
    store_close(st);
}
END_TEST

/* More than 64 parts of ids, so that the parts a persist folds wrap around
 * the end of the rotation (65 parts, two a persist: the pass that starts at
 * part 64 folds 64 and then 0). Metrics change at rates from every persist
 * to every 7th, some stop changing: a part whose fold went missing would
 * lose their last changes with the delta rows that go. */
START_TEST(fold_rotation_wraps_around)
{
    struct store *st = open_rw(0);
    struct snapshot *s = make_snapshot("wrap", 0, OBSD_RUN_LIVE, 40, 4100, 0, 4);
    for (uint64_t seq = 0; seq < 72; seq++) {
        s->seq = seq;
        s->timestamp_ns += 250000000ULL;
        for (size_t i = 0; i < s->n_series; i++) {
            struct snap_series *sr = &s->series[i];
            if ((seq + i) % (1 + i % 7) || (i % 5 == 0 && seq > 20))
                continue;
            sr->count += 1 + i % 3;
            sr->total += 10;
            sr->buckets[(i + seq) % sr->n_buckets].count += 1;
        }
        ck_assert_msg(store_persist(st, s, false) == STORE_OK, "%s", store_error(st));
        if (seq >= 33 && seq % 4 == 1) {
            struct snapshot *latest;
            ck_assert_int_eq(store_latest(st, "wrap", &latest), STORE_OK);
            assert_same(latest, s);
            snapshot_free(latest);
        }
    }
    snapshot_free(s);
    store_close(st);
}
END_TEST

/* The pieces of the delta row of persist seq of the first run: how many,
 * and the longest value of them. */
static size_t raw_delta_pieces(uint64_t seq, size_t *longest)
{
    uint8_t prefix[20] = {0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff};
    for (int i = 0; i < 8; i++)
        prefix[12 + i] = (uint8_t)(seq >> (56 - 8 * i));
    struct raw r = raw_begin(dir, "latest");
    MDB_val k = {sizeof prefix, prefix}, v;
    size_t n = 0;
    *longest = 0;
    for (int rc = mdb_cursor_get(r.cur, &k, &v, MDB_SET_RANGE); !rc; rc = mdb_cursor_get(r.cur, &k, &v, MDB_NEXT)) {
        if (k.mv_size != 24 || memcmp(k.mv_data, prefix, sizeof prefix))
            break;
        n++;
        if (v.mv_size > *longest)
            *longest = v.mv_size;
    }
    raw_end(&r);
    return n;
}

/* A delta row larger than a page is written in pieces of at most a page
 * each (a series whose entry alone is larger gets a piece of its own), all
 * read back; a missing piece is a corrupt store, not older values. */
START_TEST(delta_row_in_pieces)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    struct store *st = open_rw(0);
    struct {
        size_t n_series, n_buckets;
    } shapes[] = {{2000, 6}, {12, 1000}};
    for (uint64_t seq = 0; seq < 8; seq++) {
        /* the first four persists one shape, then the other: every series
         * changes every time */
        size_t sh = seq >= 4;
        struct snapshot *s = make_snapshot("pieces", seq, OBSD_RUN_LIVE, 0, shapes[sh].n_series,
                                           shapes[sh].n_series, shapes[sh].n_buckets);
        ck_assert_msg(store_persist(st, s, false) == STORE_OK, "%s", store_error(st));
        struct snapshot *latest;
        ck_assert_int_eq(store_latest(st, "pieces", &latest), STORE_OK);
        assert_same(latest, s);
        snapshot_free(latest);
        snapshot_free(s);
        if (seq == 0 || seq == 4)
            continue;       /* every series new: base rows */
        size_t longest, n = raw_delta_pieces(seq, &longest);
        if (sh == 0) {
            ck_assert_uint_gt(n, 10);
            ck_assert_uint_le(longest, page - 16);
        } else {
            ck_assert_uint_eq(n, shapes[1].n_series);
            ck_assert_uint_gt(longest, page);
        }
    }
    store_close(st);

    /* the second of seq 3's pieces gone: its metrics would read as at seq 2 */
    uint8_t key[24] = {0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 1};
    raw_put(dir, "latest", key, sizeof key, NULL, 0);
    st = store_open(dir, 0, false, true, err, sizeof err);
    ck_assert_msg(st != NULL, "%s", err);
    struct snapshot *latest = NULL;
    ck_assert_int_eq(store_latest(st, "pieces", &latest), STORE_ERROR);
    ck_assert_msg(strstr(store_error(st), "corrupt store") && strstr(store_error(st), "piece"), "%s",
                  store_error(st));
    store_close(st);
}
END_TEST

/* Reads what a damaged value feeds: the latest snapshot, or every time
 * series plus the snapshot at seq (which replays history entries). Returns
 * whether some read said "corrupt store"; fails on any other error. */
static bool read_damaged(bool latest, uint64_t seq)
{
    struct store *st = store_open(dir, 0, false, true, err, sizeof err);
    ck_assert_msg(st != NULL, "%s", err);
    bool corrupt = false;
    int rc[2];
    struct snapshot *out = NULL;
    struct collected got = {0};
    if (latest) {
        rc[0] = store_latest(st, "cs", &out);
        rc[1] = STORE_OK;
    } else {
        rc[0] = store_metric_series(st, "cs", NULL, collect_point, &got);
        rc[1] = store_snapshot_at(st, "cs", seq, &out);
    }
    for (int i = 0; i < 2; i++) {
        ck_assert_msg(rc[i] == STORE_OK || (rc[i] == STORE_ERROR && strstr(store_error(st), "corrupt store")),
                      "%d: %s", rc[i], store_error(st));
        corrupt |= rc[i] == STORE_ERROR;
    }
    snapshot_free(out);
    collected_free(&got);
    store_close(st);
    return corrupt;
}

/* Damaged time series values (history entries of a live run, its chunk
 * rows), a damaged header row and a damaged delta row of the latest
 * snapshot: every truncation is reported
 * as "corrupt store", a flipped byte gives data or that error, never a read
 * out of bounds (ASan watches). */
START_TEST(corrupt_series_rejected)
{
    struct model md;
    model_init(&md, "cs", 4, 200, 7);
    struct store *st = open_model_store();
    for (uint64_t seq = 0; seq < 12; seq++) {
        model_step(&md, seq, 60);
        struct snapshot *s = model_snapshot(&md, seq, OBSD_RUN_LIVE);
        ck_assert_int_eq(store_persist(st, s, false), STORE_OK);
        snapshot_free(s);
    }
    store_close(st);

    static uint8_t good[1 << 16], bad[1 << 16];
    struct {
        const char *db;
        uint8_t key[24];
        size_t klen;
        uint64_t seq;
    } cases[] = {
        {"history", {0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 11}, 16, 11},
        {"history", {0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 9}, 16, 9},
        {"latest", {0, 0, 0, 0, 0, 0, 0, 1}, 8, 0},
        {"series", {0}, 0, 11},
        {"latest", {0}, 0, 0},
    };
    cases[3].klen = raw_last_key(dir, "series", cases[3].key, sizeof cases[3].key);
    /* the last piece of the last delta row (the latest table's last key) */
    cases[4].klen = raw_last_key(dir, "latest", cases[4].key, sizeof cases[4].key);
    ck_assert_uint_eq(cases[4].klen, 24);
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        bool latest = !strcmp(cases[c].db, "latest");
        size_t n = raw_get(dir, cases[c].db, cases[c].key, cases[c].klen, good, sizeof good);
        ck_assert_uint_lt(n, sizeof good);
        ck_assert(!read_damaged(latest, cases[c].seq));
        for (size_t cut = 0; cut < n; cut += 1 + cut / 16) {
            raw_put(dir, cases[c].db, cases[c].key, cases[c].klen, good, cut);
            ck_assert_msg(read_damaged(latest, cases[c].seq), "%s cut at %zu of %zu", cases[c].db, cut, n);
        }
        for (size_t pos = 0; pos < n; pos += 1 + pos / 24) {
            memcpy(bad, good, n);
            bad[pos] ^= 0x5a;
            raw_put(dir, cases[c].db, cases[c].key, cases[c].klen, bad, n);
            read_damaged(latest, cases[c].seq);
        }
        raw_put(dir, cases[c].db, cases[c].key, cases[c].klen, good, n);
    }
    model_free(&md);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("store");
    TCase *tc = tcase_create("store");
    tcase_add_unchecked_fixture(tc, temp_root_begin, temp_root_end);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 240);
    tcase_add_test(tc, round_trip_latest_final_seq);
    tcase_add_test(tc, final_written_once);
    tcase_add_test(tc, synced_commits_flush_once_the_final_whole);
    tcase_add_test(tc, bucket_layout_change_alone_is_persisted);
    tcase_add_test(tc, seq_must_grow_and_resume);
    tcase_add_test(tc, overlong_name_refused);
    tcase_add_test(tc, runs_in_start_order);
    tcase_add_test(tc, metric_time_series);
    tcase_add_test(tc, series_interval_thins_points);
    tcase_add_test(tc, a_waiting_point_comes_when_due);
    tcase_add_test(tc, runs_in_turn_keep_their_series);
    tcase_add_test(tc, grows_on_map_full);
    tcase_add_test(tc, delta_row_in_pieces);
    tcase_add_test(tc, newer_schema_refused);
    tcase_add_test(tc, older_schema_refused);
    tcase_add_test(tc, corrupt_values_rejected);
    tcase_add_test(tc, one_hour_size_bound);
    tcase_add_test(tc, latest_and_series_follow_a_model);
    tcase_add_test(tc, latest_and_thinned_series_follow_a_model);
    tcase_add_test(tc, kill9_loses_nothing_committed);
    tcase_add_test(tc, corrupt_series_rejected);
    tcase_add_test(tc, delta_rows_folded_away);
    tcase_add_test(tc, fold_rotation_wraps_around);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
