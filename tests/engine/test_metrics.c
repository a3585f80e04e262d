/*
 * test_metrics: the metric table's part of a snapshot that the collector
 * keeps from publish to publish (metrics_snapshot updates only what changed)
 * is, after every publish of long random sequences, exactly what building it
 * from scratch gives: every touched counter and gauge with its value, every
 * touched series with its statistics from series_snapshot (the slow path), in
 * creation order; entries added after the table's part are dropped at the
 * next publish; a new run starts over; records through the batched path and
 * the per-record path aggregate identically.
 */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/metrics.h"
#include "shm/wire.h"

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

#define N_KEYS 48
static char key_names[N_KEYS][16];

static const char *name_of(void *ctx, uint32_t key)
{
    (void)ctx;
    return key < N_KEYS ? key_names[key] : NULL;
}

static void records_of(uint32_t key, uint8_t type, const void *pl, size_t len, struct shm_record *rec)
{
    rec->type = type;
    rec->flags = 0;
    rec->key = key;
    rec->payload = pl;
    rec->len = len;
}

/* One random record into the table, through the batch (spans, values) or
 * the per-record path (everything). */
static void random_record(struct metric_table *t, struct metrics_batch *b, uint32_t hi_key)
{
    uint32_t key = (uint32_t)(rnd() % hi_key);
    struct shm_record rec;
    /* a key's kind is fixed by its number: series, counter or gauge */
    switch (key % 4) {
    case 0:
    case 1: {
        struct obsd_pl_span sp = {1000, 1000 + 500 * (key + 1) + rnd() % (100 * (key + 1))};
        records_of(key, OBSD_REC_SPAN, &sp, sizeof sp, &rec);
        if (rnd() % 2)
            ck_assert_int_eq(metrics_batch_record(t, b, &rec, name_of, NULL), 0);
        else
            ck_assert_int_eq(metrics_core_record(t, &rec, name_of, NULL), 0);
        break;
    }
    case 2: {
        struct obsd_pl_counter c = {(int64_t)(rnd() % 7)};
        records_of(key, OBSD_REC_COUNTER, &c, sizeof c, &rec);
        ck_assert_int_eq(metrics_core_record(t, &rec, name_of, NULL), 0);
        break;
    }
    default: {
        struct obsd_pl_gauge g = {(double)(rnd() % 1000) / 8};
        records_of(key, OBSD_REC_GAUGE, &g, sizeof g, &rec);
        ck_assert_int_eq(metrics_core_record(t, &rec, name_of, NULL), 0);
        break;
    }
    }
}

static void assert_same_series(const struct snap_series *got, const struct snap_series *want, int step)
{
    ck_assert_str_eq(got->name, want->name);
    ck_assert_msg(got->count == want->count, "step %d, %s: count %llu vs %llu", step, want->name,
                  (unsigned long long)got->count, (unsigned long long)want->count);
    ck_assert(got->exact == want->exact);
    ck_assert_mem_eq(&got->total, &want->total, sizeof(double));
    ck_assert_mem_eq(&got->min, &want->min, sizeof(double));
    ck_assert_mem_eq(&got->max, &want->max, sizeof(double));
    ck_assert_mem_eq(&got->sum_sq, &want->sum_sq, sizeof(double));
    ck_assert_mem_eq(got->percentiles, want->percentiles, sizeof got->percentiles);
    ck_assert_uint_eq(got->n_buckets, want->n_buckets);
    if (want->n_buckets)
        ck_assert_mem_eq(got->buckets, want->buckets, want->n_buckets * sizeof *want->buckets);
}

/* The table's part of kept, against what a fresh build gives. */
static void assert_like_fresh(struct metric_table *t, const struct snapshot *kept, size_t nc, size_t ns,
                              uint32_t nb, int step)
{
    size_t ic = 2, is = 0;
    for (struct metric *m = t->first; m; m = m->order_next) {
        if (!m->touched || m->kind == METRIC_SERIES)
            continue;
        ck_assert_uint_lt(ic, 2 + nc);
        const struct snap_counter *c = &kept->counters[ic++];
        ck_assert_str_eq(c->name, m->series.name);
        if (m->kind == METRIC_GAUGE) {
            ck_assert(c->is_float);
            ck_assert_double_eq(c->fvalue, m->gauge);
        } else {
            ck_assert(!c->is_float);
            ck_assert_int_eq(c->ivalue, m->counter);
        }
    }
    ck_assert_uint_eq(ic, 2 + nc);
    for (struct metric *m = t->first; m; m = m->order_next) {
        if (!m->touched || m->kind != METRIC_SERIES)
            continue;
        ck_assert_uint_lt(is, ns);
        struct snap_series want;
        ck_assert_int_eq(series_snapshot(&m->series, false, nb, &want), 0);
        assert_same_series(&kept->series[is++], &want, step);
        series_snap_release(&want);
    }
    ck_assert_uint_eq(is, ns);
}

START_TEST(kept_snapshot_equals_a_fresh_build)
{
    for (int k = 0; k < N_KEYS; k++)
        snprintf(key_names[k], sizeof key_names[k], "k.%02d", k);
    struct series_env env;
    series_env_init(&env, NULL, 0);
    struct metric_table t;
    metrics_init(&t, &env);
    struct metrics_batch b = {0};
    struct snapshot *kept = snapshot_new("run", 0, OBSD_RUN_LIVE);
    ck_assert_int_eq(snapshot_add_counter(kept, "base0", 0), 0);
    ck_assert_int_eq(snapshot_add_counter(kept, "base1", 0), 0);
    uint32_t hi_key = 8;            /* keys come into use over time: new entries */
    size_t nc = 0, ns = 0;
    for (int step = 0; step < 3000; step++) {
        if (step % 500 == 499) {
            metrics_reset(&t);      /* a new run: its entries come in another order */
            b.n = 0;
        }
        if (hi_key < N_KEYS && rnd() % 20 == 0)
            hi_key++;
        uint64_t r = rnd() % 100;
        size_t n = r < 20 ? 0 : r < 85 ? 1 + rnd() % 5 : rnd() % 300;
        for (size_t i = 0; i < n; i++)
            random_record(&t, &b, hi_key);
        metrics_batch_flush(&t, &b, name_of, NULL);
        /* what the collector adds after the table's part, gone next time */
        snapshot_truncate(kept, 2 + nc, ns);
        kept->seq = (uint64_t)step;
        ck_assert_int_eq(metrics_snapshot(&t, kept, 2, 30, &nc, &ns), 0);
        ck_assert_uint_eq(kept->n_counters, 2 + nc);
        ck_assert_uint_eq(kept->n_series, ns);
        assert_like_fresh(&t, kept, nc, ns, 30, step);
        ck_assert_str_eq(kept->counters[0].name, "base0");
        struct snap_bucket bk = {1, 2, 3};
        struct snap_series module = {.name = "module.series", .count = 1, .n_buckets = 1, .buckets = &bk};
        ck_assert_int_eq(snapshot_add_series(kept, &module), 0);
        ck_assert_int_eq(snapshot_add_counter(kept, "module.counter", step), 0);
    }
    ck_assert_uint_eq(b.rejected, 0);
    snapshot_free(kept);
    metrics_free(&t);
}
END_TEST

START_TEST(another_snapshot_gets_a_full_layout)
{
    for (int k = 0; k < N_KEYS; k++)
        snprintf(key_names[k], sizeof key_names[k], "k.%02d", k);
    struct series_env env;
    series_env_init(&env, NULL, 0);
    struct metric_table t;
    metrics_init(&t, &env);
    struct metrics_batch b = {0};
    for (int i = 0; i < 2000; i++)
        random_record(&t, &b, N_KEYS);
    metrics_batch_flush(&t, &b, name_of, NULL);
    size_t nc, ns;
    struct snapshot *a = snapshot_new("run", 0, OBSD_RUN_LIVE);
    snapshot_add_counter(a, "base0", 0);
    snapshot_add_counter(a, "base1", 0);
    ck_assert_int_eq(metrics_snapshot(&t, a, 2, 30, &nc, &ns), 0);
    snapshot_free(a);
    metrics_forget_snapshot(&t);
    /* nothing changed since, but this snapshot holds none of it yet */
    struct snapshot *c = snapshot_new("run", 1, OBSD_RUN_LIVE);
    snapshot_add_counter(c, "base0", 0);
    snapshot_add_counter(c, "base1", 0);
    ck_assert_int_eq(metrics_snapshot(&t, c, 2, 30, &nc, &ns), 0);
    ck_assert_uint_gt(ns, 0);
    ck_assert_uint_gt(nc, 0);
    assert_like_fresh(&t, c, nc, ns, 30, 0);
    snapshot_free(c);
    metrics_free(&t);
}
END_TEST

/* The batched path (staged prefetch) and the per-record path give the same
 * count, total, min, max, sum_sq and histogram for the same records. */
START_TEST(batched_and_per_record_paths_aggregate_identically)
{
    for (int k = 0; k < N_KEYS; k++)
        snprintf(key_names[k], sizeof key_names[k], "k.%02d", k);
    struct series_env env;
    series_env_init(&env, NULL, 0);
    struct metric_table a, c;
    metrics_init(&a, &env);
    metrics_init(&c, &env);
    struct metrics_batch b = {0};
    for (int i = 0; i < 200000; i++) {
        uint32_t key = (uint32_t)(rnd() % N_KEYS);
        uint64_t start = rnd() % 1000000, len = rnd() % 4 == 0 ? rnd() % 50 : (rnd() >> (rnd() % 60));
        struct shm_record rec;
        struct obsd_pl_span sp = {start, start + len};
        struct obsd_pl_value v = {len};
        if (rnd() % 3)
            records_of(key, OBSD_REC_SPAN, &sp, sizeof sp, &rec);
        else
            records_of(key, OBSD_REC_VALUE, &v, sizeof v, &rec);
        if (rnd() % 1000 == 0)
            sp.end_ns = sp.start_ns - 1;        /* end before start: rejected by both */
        int rb = metrics_batch_record(&a, &b, &rec, name_of, NULL);
        int rc = metrics_core_record(&c, &rec, name_of, NULL);
        ck_assert_int_eq(rb, 0);
        if (rc != 0)
            ck_assert_int_eq(rc, -1);
    }
    metrics_batch_flush(&a, &b, name_of, NULL);
    for (int k = 0; k < N_KEYS; k++) {
        struct metric *ma = metrics_get(&a, key_names[k], METRIC_SERIES);
        struct metric *mc = metrics_get(&c, key_names[k], METRIC_SERIES);
        ck_assert_uint_eq(ma->series.count, mc->series.count);
        ck_assert(ma->series.total == mc->series.total);
        ck_assert_mem_eq(&ma->series.sum_sq, &mc->series.sum_sq, sizeof(double));
        ck_assert_uint_eq(ma->series.hist.min, mc->series.hist.min);
        ck_assert_uint_eq(ma->series.hist.max, mc->series.hist.max);
        ck_assert_uint_eq(ma->series.hist.count, mc->series.hist.count);
        for (uint32_t i = 0; i < HIST_N_INDEX; i = hist_next_nonempty(&mc->series.hist, i)) {
            ck_assert_uint_eq(hist_bucket_count(&ma->series.hist, i), hist_bucket_count(&mc->series.hist, i));
            ck_assert_uint_eq(hist_next_nonempty(&ma->series.hist, i), hist_next_nonempty(&mc->series.hist, i));
        }
        struct snap_series sa, sc;
        ck_assert_int_eq(series_snapshot(&ma->series, false, 30, &sa), 0);
        ck_assert_int_eq(series_snapshot(&mc->series, false, 30, &sc), 0);
        assert_same_series(&sa, &sc, k);
        series_snap_release(&sa);
        series_snap_release(&sc);
    }
    metrics_free(&a);
    metrics_free(&c);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("metrics");
    TCase *tc = tcase_create("metrics");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, kept_snapshot_equals_a_fresh_build);
    tcase_add_test(tc, another_snapshot_gets_a_full_layout);
    tcase_add_test(tc, batched_and_per_record_paths_aggregate_identically);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
