/* test_snapshot.c: the snapshot model and its JSON form. */
#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "publisher/snapshot.h"

static struct snapshot *sample(void)
{
    struct snapshot *s = snapshot_new("run-1", 7, OBSD_RUN_COMPLETE);
    s->timestamp_ns = 1763890000123456789ULL;
    s->n_pending_tasks = 3;
    snapshot_add_counter(s, "total_samples_issued", 1200);
    snapshot_add_gauge(s, "qps", 431.5);
    snapshot_add_gauge(s, "tps", NAN);
    struct snap_bucket b[2] = {{1, 10, 4}, {10, 100, 6}};
    struct snap_series sr = {.name = "ttft_ns", .exact = true, .count = 10, .total = 400,
                             .min = 2, .max = 90, .sum_sq = 30000, .n_buckets = 2, .buckets = b};
    for (int i = 0; i < OBSD_N_PERCENTILES; i++)
        sr.percentiles[i] = 100 - i;
    sr.percentiles[3] = INFINITY;
    snapshot_add_series(s, &sr);
    snapshot_set_section(s, "budget", json_pack("{s:i}", "calls", 4));
    return s;
}

START_TEST(json_form)
{
    struct snapshot *s = sample();
    json_t *j = snapshot_to_json(s);
    ck_assert_ptr_nonnull(j);
    ck_assert_int_eq(json_integer_value(json_object_get(j, "schema_version")), OBSD_SNAPSHOT_SCHEMA_VERSION);
    ck_assert_str_eq(json_string_value(json_object_get(j, "state")), "complete");
    ck_assert_int_eq(json_integer_value(json_object_get(j, "n_pending_tasks")), 3);
    json_t *m = json_object_get(j, "metrics");
    ck_assert_int_eq(json_array_size(m), 4);
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(m, 0), "type")), "counter");
    ck_assert(json_is_integer(json_object_get(json_array_get(m, 0), "value")));
    ck_assert(json_is_real(json_object_get(json_array_get(m, 1), "value")));
    ck_assert(json_is_null(json_object_get(json_array_get(m, 2), "value")));
    json_t *sr = json_array_get(m, 3);
    ck_assert_str_eq(json_string_value(json_object_get(sr, "type")), "series");
    json_t *pct = json_object_get(sr, "percentiles");
    ck_assert_int_eq(json_object_size(pct), OBSD_N_PERCENTILES);
    ck_assert(json_is_real(json_object_get(pct, "99.9")));
    ck_assert(json_is_null(json_object_get(pct, "95.0")));
    ck_assert(json_is_real(json_object_get(pct, "1.0")));
    json_t *h = json_object_get(sr, "histogram");
    ck_assert_int_eq(json_array_size(h), 2);
    ck_assert_int_eq(json_integer_value(json_array_get(json_array_get(h, 1), 2)), 6);
    ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(j, "budget"), "calls")), 4);
    /* strict JSON: no NaN/Infinity tokens */
    char *text = json_dumps(j, JSON_COMPACT);
    ck_assert_ptr_null(strstr(text, "nan"));
    ck_assert_ptr_null(strstr(text, "inf"));
    free(text);
    json_decref(j);
    snapshot_free(s);
}
END_TEST

START_TEST(json_round_trip)
{
    struct snapshot *s = sample();
    json_t *j = snapshot_to_json(s);
    char err[256];
    struct snapshot *back = snapshot_from_json(j, err, sizeof err);
    ck_assert_msg(back != NULL, "%s", err);
    json_t *j2 = snapshot_to_json(back);
    ck_assert(json_equal(j, j2));
    ck_assert_int_eq(back->n_counters, 3);
    ck_assert(!back->counters[0].is_float);
    ck_assert(back->counters[1].is_float);
    ck_assert(snapshot_find_series(back, "ttft_ns")->exact);
    ck_assert_ptr_nonnull(json_object_get(back->sections, "budget"));
    json_decref(j);
    json_decref(j2);
    snapshot_free(s);
    snapshot_free(back);
}
END_TEST

START_TEST(json_rejects_bad_input)
{
    char err[256];
    const char *bad[] = {
        "[]",
        "{\"run\":\"r\",\"seq\":-1,\"schema_version\":1,\"timestamp_ns\":0,\"metrics\":[]}",
        "{\"run\":\"r\",\"seq\":1,\"schema_version\":1,\"timestamp_ns\":0,\"state\":\"bogus\",\"metrics\":[]}",
        "{\"run\":\"r\",\"seq\":1,\"schema_version\":1,\"timestamp_ns\":0,\"metrics\":[{\"type\":\"series\",\"name\":\"x\",\"count\":1,\"total\":1,\"min\":1,\"max\":1,\"sum_sq\":1,\"percentiles\":{},\"histogram\":[[1,2]]}]}",
        "{\"run\":\"r\",\"seq\":1,\"schema_version\":1,\"timestamp_ns\":0,\"metrics\":[{\"type\":\"gauge\",\"name\":\"x\",\"value\":1}]}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        json_t *j = json_loads(bad[i], 0, NULL);
        ck_assert_ptr_nonnull(j);
        err[0] = 0;
        ck_assert_ptr_null(snapshot_from_json(j, err, sizeof err));
        ck_assert_msg(err[0], "no message for input %zu", i);
        json_decref(j);
    }
}
END_TEST

/* U+FFFD, the replacement of a byte that is not part of well-formed UTF-8 */
#define R "\xEF\xBF\xBD"

START_TEST(text_not_utf8_is_repaired)
{
    /* well-formed: byte for byte (controls and quotes are jansson's to escape) */
    const char *good[] = {"", "ttft_ns", "span.\xC2\xB5s", "\xE2\x82\xAC \xF0\x9F\x98\x80 \xEF\xBF\xBF",
                          "<b>\"q\"</b>\t\x01", "\xF4\x8F\xBF\xBF" R};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        ck_assert(obsd_utf8_valid(good[i], strlen(good[i])));
        json_t *j = obsd_json_text(good[i]);
        ck_assert_ptr_nonnull(j);
        ck_assert_uint_eq(json_string_length(j), strlen(good[i]));
        ck_assert(!memcmp(json_string_value(j), good[i], strlen(good[i])));
        json_decref(j);
        char *r = obsd_utf8_repair(good[i]);
        ck_assert_str_eq(r, good[i]);
        free(r);
    }
    /* one U+FFFD per byte that is not part of a well-formed sequence */
    static const struct {
        const char *in, *out;
    } bad[] = {
        {"bad\xff\xfe utf8", "bad" R R " utf8"},
        {"\x80", R},                                   /* lone continuation byte */
        {"a\xC0\xAF", "a" R R},                        /* overlong '/' */
        {"\xE0\x80\xAF", R R R},                        /* overlong, 3 bytes */
        {"\xED\xA0\x80x", R R R "x"},                   /* surrogate U+D800 */
        {"\xF4\x90\x80\x80", R R R R},                   /* past U+10FFFF */
        {"\xF5\x80", R R},
        {"end \xE2\x82", "end " R R},                  /* truncated at the end */
        {"\xE2\x82x\xC2\xB5", R R "x\xC2\xB5"},         /* truncated before a good one */
        {"\xF0\x9F\x98", R R R},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ck_assert_msg(!obsd_utf8_valid(bad[i].in, strlen(bad[i].in)), "case %zu", i);
        char *r = obsd_utf8_repair(bad[i].in);
        ck_assert_str_eq(r, bad[i].out);
        free(r);
        json_t *j = obsd_json_text(bad[i].in);
        ck_assert_msg(j != NULL, "case %zu", i);
        ck_assert_str_eq(json_string_value(j), bad[i].out);
        json_decref(j);
    }
    ck_assert_ptr_null(obsd_json_text(NULL));
}
END_TEST

START_TEST(json_names_not_utf8)
{
    /* every name comes out, repaired; the others stay as they are */
    struct snapshot *s = snapshot_new("run-\xff", 1, OBSD_RUN_LIVE);
    snapshot_add_counter(s, "ok", 1);
    snapshot_add_counter(s, "c\xE2\x82", 2);
    snapshot_add_gauge(s, "g\xC0", 0.5);
    struct snap_bucket b[1] = {{1, 2, 3}};
    struct snap_series sr = {.name = "bad\xff\xfe utf8", .count = 3, .n_buckets = 1, .buckets = b};
    snapshot_add_series(s, &sr);
    sr.name = "span.\xC2\xB5s";
    snapshot_add_series(s, &sr);
    json_t *j = snapshot_to_json(s);
    ck_assert_ptr_nonnull(j);
    ck_assert_str_eq(json_string_value(json_object_get(j, "run")), "run-" R);
    json_t *m = json_object_get(j, "metrics");
    ck_assert_int_eq(json_array_size(m), 5);
    const char *want[] = {"ok", "c" R R, "g" R, "bad" R R " utf8", "span.\xC2\xB5s"};
    for (size_t i = 0; i < 5; i++)
        ck_assert_str_eq(json_string_value(json_object_get(json_array_get(m, i), "name")), want[i]);
    ck_assert_int_eq(json_integer_value(json_object_get(json_array_get(m, 3), "count")), 3);
    char *text = json_dumps(j, JSON_COMPACT);
    ck_assert_ptr_nonnull(text);
    json_t *back = json_loads(text, 0, NULL);
    ck_assert(json_equal(j, back));
    json_decref(back);
    free(text);
    char err[256];
    struct snapshot *parsed = snapshot_from_json(j, err, sizeof err);
    ck_assert_msg(parsed != NULL, "%s", err);
    ck_assert_ptr_nonnull(snapshot_find_series(parsed, "bad" R R " utf8"));
    snapshot_free(parsed);
    json_decref(j);
    snapshot_free(s);
}
END_TEST

START_TEST(states_and_grid)
{
    for (int i = OBSD_RUN_INITIALIZE; i <= OBSD_RUN_INTERRUPTED; i++)
        ck_assert_int_eq(obsd_run_state_parse(obsd_run_state_name(i)), i);
    ck_assert_int_eq(obsd_run_state_parse("done"), -1);
    char k[8];
    obsd_percentile_key(0, k, sizeof k);
    ck_assert_str_eq(k, "99.9");
    obsd_percentile_key(7, k, sizeof k);
    ck_assert_str_eq(k, "50.0");
    obsd_percentile_key(OBSD_N_PERCENTILES - 1, k, sizeof k);
    ck_assert_str_eq(k, "1.0");
}
END_TEST

int main(void)
{
    Suite *s = suite_create("snapshot");
    TCase *tc = tcase_create("model");
    tcase_add_test(tc, json_form);
    tcase_add_test(tc, json_round_trip);
    tcase_add_test(tc, json_rejects_bad_input);
    tcase_add_test(tc, text_not_utf8_is_repaired);
    tcase_add_test(tc, json_names_not_utf8);
    tcase_add_test(tc, states_and_grid);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
