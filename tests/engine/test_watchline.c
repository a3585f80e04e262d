/*
 * test_watchline: the control socket's watch line (engine/control.h,
 * watchline.c): a snapshot of 10,000 series becomes one parseable line with
 * every series' summary; a renderer that reuses the text of unchanged
 * entries gives exactly the line a fresh one gives, also when series change,
 * appear, disappear or another series takes an index; names are escaped so
 * the line always parses; a number that is not finite is null, any other
 * is the same double when read back.
 */
#include <check.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/control.h"
#include "engine/metrics.h"
#include "engine/series.h"
#include "publisher/snapshot.h"

static void add_series(struct snapshot *s, const char *name, uint64_t count, double base)
{
    struct snap_bucket b[3] = {{base, base * 2, count / 2}, {base * 2, base * 4, count - count / 2 - 1},
                               {base * 4, base * 8, 1}};
    struct snap_series sr = {
        .name = (char *)name,
        .count = count,
        .total = base * 2.5 * (double)count,
        .min = base,
        .max = base * 7.75,
        .sum_sq = base * base * 7 * (double)count,
        .n_buckets = 3,
        .buckets = b,
    };
    for (int i = 0; i < OBSD_N_PERCENTILES; i++)
        sr.percentiles[i] = base * (1 + obsd_percentile_grid[i] / 15.0);
    ck_assert_int_eq(snapshot_add_series(s, &sr), 0);
}

static struct snapshot *big_snapshot(size_t n)
{
    struct snapshot *s = snapshot_new("20261202-070000-w-1", 3, OBSD_RUN_LIVE);
    ck_assert_ptr_nonnull(s);
    ck_assert_int_eq(snapshot_add_counter(s, "obsd_dropped_records", 7), 0);
    ck_assert_int_eq(snapshot_add_counter(s, "obsd_rejected_records", 0), 0);
    ck_assert_int_eq(snapshot_add_gauge(s, "qps", 12.5), 0);
    for (size_t i = 0; i < n; i++) {
        char name[48];
        snprintf(name, sizeof name, "bench.series.%05zu", i);
        add_series(s, name, 100 + i, 1000.0 + (double)i * 3.3);
    }
    return s;
}

/* A line: ends with its only newline, and parses. */
static json_t *parse_line(const struct control_line *l)
{
    ck_assert_ptr_nonnull(l);
    ck_assert_uint_gt(l->len, 1);
    ck_assert_int_eq(l->data[l->len - 1], '\n');
    ck_assert_ptr_eq(memchr(l->data, '\n', l->len), l->data + l->len - 1);
    json_error_t je;
    json_t *j = json_loadb(l->data, l->len, 0, &je);
    ck_assert_msg(j != NULL, "watch line is not JSON: %s at %d", je.text, je.position);
    return j;
}

static void ck_num(json_t *v, double want, const char *what)
{
    if (!isfinite(want)) {
        ck_assert_msg(json_is_null(v), "%s: expected null", what);
        return;
    }
    ck_assert_msg(json_is_number(v), "%s: not a number", what);
    ck_assert_msg(json_number_value(v) == want, "%s: %.17g, want %.17g", what, json_number_value(v),
                  want);
}

static void check_summary(json_t *j, const struct snapshot *s)
{
    ck_assert_str_eq(json_string_value(json_object_get(j, "form")), "watch");
    ck_assert_str_eq(json_string_value(json_object_get(j, "run")), s->run);
    ck_assert_int_eq(json_integer_value(json_object_get(j, "seq")), (json_int_t)s->seq);
    ck_assert_str_eq(json_string_value(json_object_get(j, "state")), obsd_run_state_name(s->state));
    json_t *metrics = json_object_get(j, "metrics");
    ck_assert_uint_eq(json_array_size(metrics), s->n_counters + s->n_series);
    for (size_t i = 0; i < s->n_counters; i++) {
        json_t *m = json_array_get(metrics, i);
        ck_assert_str_eq(json_string_value(json_object_get(m, "type")), "counter");
        ck_assert_str_eq(json_string_value(json_object_get(m, "name")), s->counters[i].name);
        ck_num(json_object_get(m, "value"),
               s->counters[i].is_float ? s->counters[i].fvalue : (double)s->counters[i].ivalue, "value");
    }
    for (size_t i = 0; i < s->n_series; i++) {
        const struct snap_series *sr = &s->series[i];
        json_t *m = json_array_get(metrics, s->n_counters + i);
        ck_assert_str_eq(json_string_value(json_object_get(m, "type")), "series");
        ck_assert_str_eq(json_string_value(json_object_get(m, "name")), sr->name);
        ck_assert_int_eq(json_integer_value(json_object_get(m, "count")), (json_int_t)sr->count);
        ck_num(json_object_get(m, "total"), sr->total, "total");
        ck_num(json_object_get(m, "min"), sr->min, "min");
        ck_num(json_object_get(m, "max"), sr->max, "max");
        ck_num(json_object_get(m, "mean"), sr->count ? sr->total / (double)sr->count : NAN, "mean");
        json_t *pct = json_object_get(m, "percentiles");
        ck_assert_uint_eq(json_object_size(pct), 2);
        ck_num(json_object_get(pct, "50.0"), sr->percentiles[7], "p50");
        ck_num(json_object_get(pct, "99.0"), sr->percentiles[1], "p99");
        ck_assert_ptr_null(json_object_get(m, "histogram"));
        ck_assert_ptr_null(json_object_get(m, "sum_sq"));
    }
}

/* What a fresh renderer makes of s must be what r (with its cache) makes. */
static struct control_line *render_checked(struct watch_render *r, const struct snapshot *s)
{
    struct control_line *l = watch_render(r, s);
    struct watch_render *fresh = watch_render_new();
    struct control_line *f = watch_render(fresh, s);
    ck_assert_ptr_nonnull(l);
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(l->len, f->len);
    ck_assert_msg(!memcmp(l->data, f->data, l->len), "a reused entry differs from a fresh render");
    control_line_put(f);
    watch_render_free(fresh);
    return l;
}

START_TEST(ten_thousand_series_in_one_line)
{
    struct snapshot *s = big_snapshot(10000);
    struct watch_render *r = watch_render_new();
    ck_assert_ptr_nonnull(r);
    struct control_line *l = watch_render(r, s);
    json_t *j = parse_line(l);
    check_summary(j, s);
    /* a summary: far smaller than the full form with its histograms */
    json_t *full = snapshot_to_json(s);
    char *text = json_dumps(full, JSON_COMPACT);
    ck_assert_uint_lt(l->len, strlen(text));
    free(text);
    json_decref(full);
    json_decref(j);
    control_line_put(l);
    watch_render_free(r);
    snapshot_free(s);
}
END_TEST

START_TEST(reused_entries_match_a_fresh_render)
{
    struct snapshot *s = big_snapshot(2000);
    struct watch_render *r = watch_render_new();
    struct control_line *l = render_checked(r, s);
    /* unchanged: the same line */
    s->seq++;
    control_line_put(l);
    l = render_checked(r, s);
    /* a few series change, a counter changes, one gets a non-finite value */
    for (size_t i = 0; i < s->n_series; i += 97) {
        s->series[i].count += 3;
        s->series[i].total += 3000;
        s->series[i].percentiles[7] += 0.25;
    }
    s->series[5].max = INFINITY;
    s->series[7].percentiles[1] += 1;     /* only its p99 */
    s->series[6].count = 0;
    s->series[6].total = 0;
    s->series[6].min = NAN;
    s->counters[0].ivalue = 123456789012345;
    s->counters[2].fvalue = 1.0 / 3.0;
    s->seq++;
    s->state = OBSD_RUN_DRAINING;
    control_line_put(l);
    l = render_checked(r, s);
    json_t *j = parse_line(l);
    check_summary(j, s);
    json_decref(j);
    /* another series at an index (a new layout), fewer series, then more */
    free(s->series[10].name);
    s->series[10].name = strdup("bench.series.moved");
    snapshot_truncate(s, s->n_counters, 1500);
    control_line_put(l);
    l = render_checked(r, s);
    add_series(s, "bench.series.new", 1, 17);
    s->series[3].exact = true;
    control_line_put(l);
    l = render_checked(r, s);
    j = parse_line(l);
    check_summary(j, s);
    json_decref(j);
    control_line_put(l);
    watch_render_free(r);
    snapshot_free(s);
}
END_TEST

START_TEST(names_are_escaped)
{
    struct snapshot *s = snapshot_new("run \"q\"", 0, OBSD_RUN_COMPLETE);
    add_series(s, "quote\"back\\slash", 1, 5);
    add_series(s, "tab\tnewline\ncontrol\x01", 2, 5);
    add_series(s, "utf8 \xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", 3, 5);
    add_series(s, "bad \xff \xc3 \xed\xa0\x80 \xc0\xaf end", 4, 5);
    struct watch_render *r = watch_render_new();
    struct control_line *l = watch_render(r, s);
    json_t *j = parse_line(l);
    ck_assert_str_eq(json_string_value(json_object_get(j, "run")), "run \"q\"");
    json_t *m = json_object_get(j, "metrics");
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(m, 0), "name")),
                     "quote\"back\\slash");
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(m, 1), "name")),
                     "tab\tnewline\ncontrol\x01");
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(m, 2), "name")),
                     "utf8 \xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80");
    const char *bad = json_string_value(json_object_get(json_array_get(m, 3), "name"));
    ck_assert_ptr_nonnull(bad);
    ck_assert_msg(!strncmp(bad, "bad \xef\xbf\xbd ", 7) && strstr(bad, " end"), "%s", bad);
    json_decref(j);
    control_line_put(l);
    watch_render_free(r);
    snapshot_free(s);
}
END_TEST

/* The collector's snapshot, kept and brought up to date by the metric table,
 * carries change hints: a renderer that trusts them still gives the line a
 * fresh one gives, through changed and unchanged series and counters, new
 * series, a publish it did not render, and a new run. */
START_TEST(change_hints_give_the_same_line)
{
    struct series_env env;
    struct metric_table t;
    series_env_init(&env, NULL, 0);
    metrics_init(&t, &env);
    struct metric *m[600];
    for (size_t i = 0; i < 500; i++) {
        char name[48];
        snprintf(name, sizeof name, "hint.series.%03zu", i);
        m[i] = metrics_get(&t, name, METRIC_SERIES);
        ck_assert_ptr_nonnull(m[i]);
    }
    struct metric *cnt = metrics_get(&t, "hint.counter", METRIC_COUNTER);
    struct snapshot *s = snapshot_new("hint-run", 0, OBSD_RUN_LIVE);
    snapshot_add_counter(s, "obsd_dropped_records", 0);
    snapshot_add_counter(s, "obsd_rejected_records", 0);
    struct watch_render *r = watch_render_new();
    size_t nc, ns, n = 500;
    for (int round = 0; round < 12; round++) {
        for (size_t i = 0; i < n; i++) {
            if (round > 0 && (i + (size_t)round) % 5)
                continue;                /* most stay unchanged */
            metrics_touch(&t, m[i]);
            series_add(&m[i]->series, 1000 + i * 7 + (size_t)round * 13);
        }
        if (round % 3 == 0) {
            metrics_touch(&t, cnt);
            cnt->counter += round + 1;
        }
        if (round == 6) {                 /* new series, after the others */
            for (size_t i = 500; i < 600; i++) {
                char name[48];
                snprintf(name, sizeof name, "hint.series.new.%03zu", i);
                m[i] = metrics_get(&t, name, METRIC_SERIES);
                metrics_touch(&t, m[i]);
                series_add(&m[i]->series, 5 + i);
            }
            n = 600;
        }
        if (round == 9) {                 /* a new run: everything back to zero */
            metrics_reset(&t);
            for (size_t i = 0; i < n; i += 3) {
                metrics_touch(&t, m[i]);
                series_add(&m[i]->series, 77 + i);
            }
        }
        s->seq = (uint64_t)round;
        ck_assert_int_eq(metrics_snapshot(&t, s, 2, 30, &nc, &ns), 0);
        if (round == 4)
            continue;                     /* a publish nobody watched */
        control_line_put(render_checked(r, s));
    }
    ck_assert_uint_ne(s->hint_epoch, 0);
    watch_render_free(r);
    snapshot_free(s);
    metrics_free(&t);
}
END_TEST

/* Every number is the same double when read back: gauges and series fields
 * over many magnitudes, whole and not, positive and negative. */
START_TEST(numbers_read_back_exactly)
{
    struct snapshot *s = snapshot_new("r", 0, OBSD_RUN_LIVE);
    uint64_t x = 88172645463325252ull;
    enum { N = 20000 };
    static double want[N];
    for (int i = 0; i < N; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        double mant = (double)(x >> 11) / 9007199254740992.0;   /* [0, 1) */
        int e = (int)(x % 48) - 12;                               /* 1e-12 .. 1e35 */
        double v = (mant + 0.1) * pow(10.0, e);
        if (i % 7 == 0)
            v = floor(v);
        if (i % 5 == 0)
            v = -v;
        if (i % 11 == 0)
            v = nextafter(1e15, 0) - (double)(x % 1000) / 8;      /* near the edge */
        want[i] = v;
        char name[32];
        snprintf(name, sizeof name, "g%05d", i);
        ck_assert_int_eq(snapshot_add_gauge(s, name, v), 0);
    }
    struct watch_render *r = watch_render_new();
    struct control_line *l = watch_render(r, s);
    json_t *j = parse_line(l);
    json_t *m = json_object_get(j, "metrics");
    ck_assert_uint_eq(json_array_size(m), N);
    for (int i = 0; i < N; i++) {
        json_t *v = json_object_get(json_array_get(m, (size_t)i), "value");
        ck_assert_msg(json_is_number(v) && json_number_value(v) == want[i], "%.17g read back as %.17g",
                      want[i], json_number_value(v));
    }
    json_decref(j);
    control_line_put(l);
    watch_render_free(r);
    snapshot_free(s);
}
END_TEST

int main(void)
{
    Suite *su = suite_create("watchline");
    TCase *tc = tcase_create("render");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, ten_thousand_series_in_one_line);
    tcase_add_test(tc, reused_entries_match_a_fresh_render);
    tcase_add_test(tc, names_are_escaped);
    tcase_add_test(tc, numbers_read_back_exactly);
    tcase_add_test(tc, change_hints_give_the_same_line);
    suite_add_tcase(su, tc);
    SRunner *sr = srunner_create(su);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
