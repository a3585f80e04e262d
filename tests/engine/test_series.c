/*
 * test_series: the histogram and series API: 3 significant digits on live
 * percentiles over a wide range, exact final percentiles ("lower" method)
 * against values sorted here, memory that follows the range of values,
 * raw-value spill beyond a tiny cap giving identical final statistics,
 * empty series, snapshot histogram edges and binning, restore, CPU list parsing; the
 * incrementally kept live view is identical to a fresh snapshot after every
 * step of long random sequences.
 */
#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/engine_internal.h"
#include "engine/histogram.h"
#include "engine/series.h"

static uint64_t rng_state = 88172645463325252ull;
static uint64_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

/* Log-uniform values over 1 .. 2^40 plus small ones. */
static uint64_t wide_value(void)
{
    unsigned e = (unsigned)(rnd() % 40);
    uint64_t base = UINT64_C(1) << e;
    return base + rnd() % base;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

static uint64_t lower(const uint64_t *sorted, size_t n, double p)
{
    return sorted[(size_t)floor(p / 100.0 * (double)(n - 1))];
}

START_TEST(index_roundtrip_and_bucket_width)
{
    for (int i = 0; i < 50000; i++) {
        uint64_t v = i < 3000 ? (uint64_t)i : wide_value() * (1 + rnd() % 3);
        uint32_t idx = hist_index(v);
        ck_assert_uint_lt(idx, HIST_N_INDEX);
        uint64_t lo = hist_bucket_lo(idx), hi = hist_bucket_hi(idx);
        ck_assert_uint_le(lo, v);
        ck_assert_uint_ge(hi, v);
        if (v < 2048)
            ck_assert_uint_eq(lo, hi);                      /* exact below 2^11 */
        else
            ck_assert_uint_le(hi - lo + 1, v / 1024 + 1);   /* <= 1/1024 of the value */
    }
    ck_assert_uint_eq(hist_bucket_hi(hist_index(UINT64_MAX)), UINT64_MAX);
}
END_TEST

START_TEST(live_percentiles_have_three_significant_digits)
{
    enum { N = 30001 };
    struct hist h;
    hist_init(&h);
    uint64_t *v = malloc(N * sizeof *v);
    for (size_t i = 0; i < N; i++) {
        v[i] = wide_value();
        ck_assert_int_eq(hist_record(&h, v[i]), 0);
    }
    qsort(v, N, sizeof *v, cmp_u64);
    double p[] = {0, 1, 5, 10, 25, 50, 75, 80, 90, 95, 97, 99, 99.9, 100};
    double out[sizeof p / sizeof p[0]];
    hist_percentiles(&h, p, sizeof p / sizeof p[0], out);
    for (size_t i = 0; i < sizeof p / sizeof p[0]; i++) {
        double exact = (double)lower(v, N, p[i]);
        ck_assert_msg(fabs(out[i] - exact) <= exact * 0.0005, "p%g: %g vs exact %g", p[i], out[i],
                      exact);
    }
    ck_assert_double_eq(out[0], (double)v[0]);          /* min and max are exact */
    ck_assert_double_eq(out[13], (double)v[N - 1]);
    free(v);
    hist_reset(&h);
}
END_TEST

START_TEST(memory_follows_the_range_seen)
{
    struct hist h;
    hist_init(&h);
    for (int i = 0; i < 100000; i++)
        hist_record(&h, 1000000 + rnd() % 50000);       /* within 5% of 1 ms */
    ck_assert_uint_le(h.bytes, 4 * 1024);               /* a few 512 B chunks */
    hist_reset(&h);
    ck_assert_uint_eq(h.bytes, 0);
    ck_assert_uint_eq(h.count, 0);
}
END_TEST

static void fill(struct series *s, uint64_t seed, size_t n, uint64_t *copy)
{
    rng_state = seed;
    for (size_t i = 0; i < n; i++) {
        uint64_t v = wide_value() % 5000000;
        copy[i] = v;
        ck_assert_int_eq(series_add(s, v), 0);
    }
}

/* Counts are kept in 32 bits until one passes 2^32; then exactly in 64. */
START_TEST(counts_past_2_to_the_32_stay_exact)
{
    struct series_env env;
    series_env_init(&env, NULL, 0);
    struct series s;
    ck_assert_int_eq(series_init(&s, "big", false, &env), 0);
    const uint64_t v = 123456, w = 5;
    uint32_t iv = hist_index(v);
    ck_assert_int_eq(series_add(&s, w), 0);
    ck_assert_int_eq(hist_record_n(&s.hist, v, UINT32_MAX - 2), 0);
    s.count += UINT32_MAX - 2;    /* (as series_restore places a restored count) */
    /* the inlined path counts up to 2^32 - 1, then leaves the carry to series_add */
    uint64_t added = 0;
    for (int i = 0; i < 4; i++) {
        if (!series_add_existing(&s, v, iv))
            ck_assert_int_eq(series_add(&s, v), 0);
        added++;
    }
    uint64_t want = (uint64_t)UINT32_MAX - 2 + added;
    ck_assert_uint_gt(want, UINT32_MAX);
    ck_assert_uint_eq(hist_bucket_count(&s.hist, iv), want);
    ck_assert_uint_eq(hist_bucket_count(&s.hist, hist_index(w)), 1);
    ck_assert_uint_eq(s.hist.count, want + 1);
    ck_assert_int_eq(hist_record_n(&s.hist, v, UINT64_C(3) << 33), 0);
    want += UINT64_C(3) << 33;
    ck_assert_uint_eq(hist_bucket_count(&s.hist, iv), want);
    uint64_t seen = 0;
    ck_assert_uint_eq(hist_next_nonempty(&s.hist, hist_index(w)), iv);
    ck_assert_uint_eq(hist_prev_nonempty(&s.hist, iv), hist_index(w));
    uint64_t ranks[2] = {0, 1};
    uint32_t idx[2];
    uint64_t before[2];
    hist_locate_ranks(&s.hist, ranks, 2, idx, before);
    ck_assert_uint_eq(idx[0], hist_index(w));
    ck_assert_uint_eq(idx[1], iv);
    ck_assert_uint_eq(before[1], 1);
    uint64_t bins[4];
    double e[5];
    hist_log_edges(1, 1e6, 4, e);
    hist_bin(&s.hist, 4, e, bins);
    for (int i = 0; i < 4; i++)
        seen += bins[i];
    ck_assert_uint_eq(seen, want + 1);
    series_destroy(&s);
}
END_TEST

START_TEST(exact_final_percentiles_are_observed_values)
{
    enum { N = 20021 };
    struct series_env env;
    series_env_init(&env, NULL, 64u << 20);
    struct series s;
    ck_assert_int_eq(series_init(&s, "latency_ns", true, &env), 0);
    uint64_t *v = malloc(N * sizeof *v);
    fill(&s, 7, N, v);
    qsort(v, N, sizeof *v, cmp_u64);

    struct snap_series live, fin;
    ck_assert_int_eq(series_snapshot(&s, false, 30, &live), 0);
    ck_assert(!live.exact);
    ck_assert_int_eq(series_snapshot(&s, true, 30, &fin), 0);
    ck_assert(fin.exact);
    ck_assert_uint_eq(fin.count, N);
    for (int i = 0; i < OBSD_N_PERCENTILES; i++) {
        double want = (double)lower(v, N, obsd_percentile_grid[i]);
        ck_assert_msg(fin.percentiles[i] == want, "p%g: %g vs %g", obsd_percentile_grid[i],
                      fin.percentiles[i], want);
        ck_assert(fabs(live.percentiles[i] - want) <= want * 0.0005);
    }
    /* the final histogram bins the raw values: every value, log-spaced edges */
    uint64_t total = 0;
    ck_assert_uint_eq(fin.n_buckets, 30);
    ck_assert_double_eq(fin.buckets[0].lo, v[0] < 1 ? 1 : (double)v[0]);
    for (size_t i = 0; i < fin.n_buckets; i++) {
        total += fin.buckets[i].count;
        if (i)
            ck_assert_double_eq(fin.buckets[i].lo, fin.buckets[i - 1].hi);
    }
    ck_assert_uint_eq(total, N);
    series_snap_release(&live);
    series_snap_release(&fin);
    series_destroy(&s);
    free(v);
}
END_TEST

START_TEST(spilled_raw_values_give_identical_final_stats)
{
    enum { N = 30000 };
    char dir[] = "/tmp/obsd-spill-XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    struct series_env big, tiny;
    series_env_init(&big, dir, 64u << 20);
    series_env_init(&tiny, dir, 1024);                  /* 128 values */
    struct series a, b;
    series_init(&a, "isl", true, &big);
    series_init(&b, "isl", true, &tiny);
    uint64_t *v = malloc(N * sizeof *v);
    fill(&a, 99, N, v);
    fill(&b, 99, N, v);
    ck_assert_uint_eq(big.values_spilled, 0);
    ck_assert_uint_gt(tiny.values_spilled, N / 2);
    ck_assert_uint_le(tiny.raw_memory_used, 1024 + SERIES_MIN_BUFFER * 8);
    struct snap_series fa, fb;
    ck_assert_int_eq(series_snapshot(&a, true, 30, &fa), 0);
    ck_assert_int_eq(series_snapshot(&b, true, 30, &fb), 0);
    ck_assert(fb.exact);
    ck_assert_uint_eq(fa.count, fb.count);
    ck_assert_double_eq(fa.total, fb.total);
    ck_assert_double_eq(fa.sum_sq, fb.sum_sq);
    ck_assert_double_eq(fa.min, fb.min);
    ck_assert_double_eq(fa.max, fb.max);
    ck_assert_mem_eq(fa.percentiles, fb.percentiles, sizeof fa.percentiles);
    ck_assert_uint_eq(fa.n_buckets, fb.n_buckets);
    ck_assert_mem_eq(fa.buckets, fb.buckets, fa.n_buckets * sizeof *fa.buckets);
    series_snap_release(&fa);
    series_snap_release(&fb);
    series_destroy(&a);
    series_destroy(&b);
    ck_assert_uint_eq(tiny.raw_memory_used, 0);
    free(v);
    ck_assert_int_eq(rmdir(dir), 0);                    /* spill files are unlinked */
}
END_TEST

START_TEST(empty_series_is_all_zeros)
{
    struct series_env env;
    series_env_init(&env, NULL, 1024);
    struct series s;
    series_init(&s, "nothing", true, &env);
    for (int final = 0; final < 2; final++) {
        struct snap_series o;
        ck_assert_int_eq(series_snapshot(&s, final, 30, &o), 0);
        ck_assert_uint_eq(o.count, 0);
        ck_assert_double_eq(o.total + o.min + o.max + o.sum_sq, 0);
        for (int i = 0; i < OBSD_N_PERCENTILES; i++)
            ck_assert_double_eq(o.percentiles[i], 0);
        ck_assert_uint_eq(o.n_buckets, 0);
        series_snap_release(&o);
    }
    series_destroy(&s);
}
END_TEST

START_TEST(histogram_edges_are_clamped)
{
    double e[31];
    hist_log_edges(0, 3, 30, e);           /* low edge >= 1, high >= 10x low */
    ck_assert_double_eq(e[0], 1);
    ck_assert_double_eq(e[30], 10);
    for (int i = 1; i <= 30; i++)
        ck_assert(e[i] > e[i - 1]);
    ck_assert_uint_eq(hist_bin_of(e, 30, 0), 0);
    ck_assert_uint_eq(hist_bin_of(e, 30, 10), 29);
    ck_assert_uint_eq(hist_bin_of(e, 30, 1e9), 29);
    hist_log_edges(100, 1e6, 4, e);
    ck_assert_double_eq(e[0], 100);
    ck_assert(fabs(e[1] - 1000) < 1e-6);
    ck_assert_uint_eq(hist_bin_of(e, 4, 999), 0);
    ck_assert_uint_eq(hist_bin_of(e, 4, 1001), 1);
}
END_TEST

/* The snapshot's histogram bins each bucket of the live histogram at its
 * clamped midpoint: bin i holds the buckets hist_bin_of puts there. Binned
 * by hand here, bucket by bucket, for histograms whose chunks straddle bin
 * edges, lie below the first edge or above the last, and for edges that
 * are not the histogram's own (as after a restore). */
START_TEST(binning_follows_each_buckets_midpoint)
{
    static const size_t ns[] = {1, 2, 3, 30, 64, 200};
    for (int round = 0; round < 60; round++) {
        struct hist h;
        hist_init(&h);
        size_t nv = 1 + rnd() % 3000;
        for (size_t i = 0; i < nv; i++) {
            uint64_t v = round % 3 == 0 ? wide_value() : round % 3 == 1 ? 1000 + rnd() % 900000 : rnd() % 5000;
            ck_assert_int_eq(hist_record_n(&h, v, 1 + rnd() % 3), 0);
        }
        size_t n = ns[(size_t)round % (sizeof ns / sizeof ns[0])];
        double edges[201];
        /* the histogram's own range, or a narrower one (buckets outside it) */
        double lo = (double)h.min, hi = (double)h.max;
        if (round & 1) {
            lo = lo + (hi - lo) / 4;
            hi = hi - (hi - lo) / 4;
        }
        hist_log_edges(lo, hi, n, edges);
        if (round % 6 == 5)          /* integral edges, on bucket midpoints below 1024 */
            for (size_t i = 0; i <= n; i++)
                edges[i] = (double)(i * 5000 / n);
        uint64_t got[200], want[200] = {0}, sum = 0;
        hist_bin(&h, n, edges, got);
        for (uint32_t b = hist_next_nonempty(&h, 0); b < HIST_N_INDEX; b = hist_next_nonempty(&h, b))
            want[hist_bin_of(edges, n, hist_bucket_value(&h, b))] += hist_bucket_count(&h, b);
        if (hist_bucket_count(&h, 0))
            want[hist_bin_of(edges, n, hist_bucket_value(&h, 0))] += hist_bucket_count(&h, 0);
        for (size_t i = 0; i < n; i++) {
            ck_assert_msg(got[i] == want[i], "round %d, %zu bins: bin %zu has %llu, not %llu", round, n, i,
                          (unsigned long long)got[i], (unsigned long long)want[i]);
            sum += got[i];
        }
        ck_assert_uint_eq(sum, h.count);
        hist_reset(&h);
    }
}
END_TEST

START_TEST(restore_keeps_exact_summary_and_drops_exactness)
{
    struct series_env env;
    series_env_init(&env, NULL, 1 << 20);
    struct series a, b;
    series_init(&a, "x", true, &env);
    series_init(&b, "x", true, &env);
    uint64_t v[1000];
    fill(&a, 3, 1000, v);
    struct snap_series sa, sb;
    series_snapshot(&a, false, 30, &sa);
    ck_assert_int_eq(series_restore(&b, &sa), 0);
    series_add(&b, 5);
    series_snapshot(&b, true, 30, &sb);
    ck_assert(!sb.exact);
    ck_assert_uint_eq(sb.count, 1001);
    ck_assert_double_eq(sb.total, sa.total + 5);
    ck_assert_double_eq(sb.max, sa.max);
    ck_assert_double_eq(sb.min, sa.min < 5 ? sa.min : 5);
    series_snap_release(&sa);
    series_snap_release(&sb);
    series_destroy(&a);
    series_destroy(&b);
}
END_TEST

static void assert_same_snap(const struct snap_series *got, const struct snap_series *want,
                             const char *what, int step)
{
    ck_assert_msg(got->count == want->count, "%s step %d: count %llu vs %llu", what, step,
                  (unsigned long long)got->count, (unsigned long long)want->count);
    ck_assert_str_eq(got->name, want->name);
    ck_assert(got->exact == want->exact);
    ck_assert_mem_eq(&got->total, &want->total, sizeof got->total);
    ck_assert_mem_eq(&got->min, &want->min, sizeof got->min);
    ck_assert_mem_eq(&got->max, &want->max, sizeof got->max);
    ck_assert_mem_eq(&got->sum_sq, &want->sum_sq, sizeof got->sum_sq);
    for (int i = 0; i < OBSD_N_PERCENTILES; i++)
        ck_assert_msg(!memcmp(&got->percentiles[i], &want->percentiles[i], sizeof(double)),
                      "%s step %d: p%g %.17g vs %.17g", what, step, obsd_percentile_grid[i],
                      got->percentiles[i], want->percentiles[i]);
    ck_assert_uint_eq(got->n_buckets, want->n_buckets);
    for (size_t i = 0; i < want->n_buckets; i++) {
        ck_assert_msg(got->buckets[i].count == want->buckets[i].count,
                      "%s step %d: bucket %zu holds %llu vs %llu", what, step, i,
                      (unsigned long long)got->buckets[i].count,
                      (unsigned long long)want->buckets[i].count);
        ck_assert_mem_eq(&got->buckets[i].lo, &want->buckets[i].lo, sizeof(double));
        ck_assert_mem_eq(&got->buckets[i].hi, &want->buckets[i].hi, sizeof(double));
    }
}

/* Values of one of several shapes: within 10% of 1 ms, log-uniform over
 * 2^0..2^40, small integers (exact buckets, many ties), a constant, and
 * values around 2^20 that cross a power of two (groups next to each other). */
static uint64_t shaped_value(int shape)
{
    switch (shape) {
    case 0:
        return 950000 + rnd() % 100000;
    case 1:
        return wide_value();
    case 2:
        return rnd() % 40;
    case 3:
        return 777;
    default:
        return (UINT64_C(1) << 20) - 3000 + rnd() % 6000;
    }
}

START_TEST(live_view_is_identical_to_a_fresh_snapshot)
{
    const uint32_t nbs[] = {30, 0, 7};
    for (int shape = 0; shape < 5; shape++) {
        for (size_t bi = 0; bi < sizeof nbs / sizeof nbs[0]; bi++) {
            uint32_t nb = nbs[bi];
            rng_state = 1234567 + (uint64_t)shape * 31 + bi;
            struct series_env env;
            series_env_init(&env, NULL, 0);
            struct series s;
            ck_assert_int_eq(series_init(&s, "view", false, &env), 0);
            for (int step = 0; step < 1500; step++) {
                /* mostly a few values (the incremental update), sometimes
                 * more than it remembers, now and then a new extreme */
                uint64_t r = rnd() % 100;
                size_t k = r < 10 ? 0 : r < 80 ? 1 + rnd() % 4 : r < 95 ? rnd() % (SERIES_RECENT + 1)
                                                                      : SERIES_RECENT + 1 + rnd() % 40;
                for (size_t i = 0; i < k; i++) {
                    uint64_t v = shaped_value(shape);
                    if (rnd() % 500 == 0)
                        v = rnd() % 2 ? v / 3 : v * 3 + 1;
                    ck_assert_int_eq(series_add(&s, v), 0);
                }
                if (step == 700)
                    series_reset(&s);          /* a new run: the view starts over */
                struct snap_series got, want;
                memset(&got, 0xa5, sizeof got);      /* every field gets filled */
                ck_assert_int_eq(series_live_view(&s, nb, &got), 0);
                ck_assert_int_eq(series_snapshot(&s, false, nb, &want), 0);
                char what[32];
                snprintf(what, sizeof what, "shape %d, %u bins", shape, nb);
                assert_same_snap(&got, &want, what, step);
                series_snap_release(&want);
            }
            series_destroy(&s);
        }
    }
}
END_TEST

START_TEST(live_view_of_a_restored_series_is_identical_too)
{
    struct series_env env;
    series_env_init(&env, NULL, 0);
    struct series a, b;
    series_init(&a, "r", false, &env);
    series_init(&b, "r", false, &env);
    rng_state = 42;
    for (int i = 0; i < 5000; i++)
        series_add(&a, shaped_value(0));
    struct snap_series va;
    ck_assert_int_eq(series_live_view(&a, 30, &va), 0);
    ck_assert_int_eq(series_restore(&b, &va), 0);
    for (int step = 0; step < 300; step++) {
        for (uint64_t k = rnd() % 4; k > 0; k--)
            series_add(&b, shaped_value(0));
        struct snap_series got, want;
        ck_assert_int_eq(series_live_view(&b, 30, &got), 0);
        ck_assert_int_eq(series_snapshot(&b, false, 30, &want), 0);
        assert_same_snap(&got, &want, "restored", step);
        series_snap_release(&want);
    }
    series_destroy(&a);
    series_destroy(&b);
}
END_TEST

START_TEST(cpu_lists)
{
    cpu_set_t set;
    char err[256];
    ck_assert_int_eq(engine_parse_cpus("0-1,3", &set, err, sizeof err), 0);
    ck_assert_int_eq(CPU_COUNT(&set), 3);
    ck_assert(CPU_ISSET(0, &set) && CPU_ISSET(1, &set) && CPU_ISSET(3, &set));
    ck_assert_int_eq(engine_parse_cpus("5", &set, err, sizeof err), 0);
    ck_assert(CPU_ISSET(5, &set));
    const char *bad[] = {"", "a", "1-", "3-1", "1,,2", "-1", "1 2", "99999"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ck_assert_int_eq(engine_parse_cpus(bad[i], &set, err, sizeof err), -1);
        ck_assert_ptr_nonnull(strstr(err, "cpus:"));
    }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("series");
    TCase *tc = tcase_create("series");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, index_roundtrip_and_bucket_width);
    tcase_add_test(tc, live_percentiles_have_three_significant_digits);
    tcase_add_test(tc, memory_follows_the_range_seen);
    tcase_add_test(tc, counts_past_2_to_the_32_stay_exact);
    tcase_add_test(tc, exact_final_percentiles_are_observed_values);
    tcase_add_test(tc, spilled_raw_values_give_identical_final_stats);
    tcase_add_test(tc, empty_series_is_all_zeros);
    tcase_add_test(tc, histogram_edges_are_clamped);
    tcase_add_test(tc, binning_follows_each_buckets_midpoint);
    tcase_add_test(tc, restore_keeps_exact_summary_and_drops_exactness);
    tcase_add_test(tc, live_view_is_identical_to_a_fresh_snapshot);
    tcase_add_test(tc, live_view_of_a_restored_series_is_identical_too);
    tcase_add_test(tc, cpu_lists);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
