/*
 * test_cli_names.c: names that are not UTF-8 (a producer's bytes, a damaged
 * store) in the output of obsctl show, export, get, runs and compare, as real
 * processes against the cli_fixture store. JSON must stay valid JSON with
 * every metric in it (jansson refuses strings that are not UTF-8): such
 * names come out with U+FFFD for each bad byte, well-formed ones byte for
 * byte; CSV likewise; the text tables print the name as it is, padded by
 * the columns it takes on a terminal.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "cli_fixture.h"
#include "publisher/store.h"
#include "test_util.h"

/* U+FFFD */
#define R "\xEF\xBF\xBD"
#define BAD_UTF8_SERIES_JSON "bad" R R " utf8"
/* bench-4: a run name and counter names that are not UTF-8; the counters'
 * names all come out as "x" R, so the export must keep them apart */
#define BAD_RUN_NAME "sweep \xff\xC3"
#define BAD_RUN_NAME_JSON "sweep " R R

static char dir[512], store_dir[600];

static void setup(void)
{
    make_temp_dir(dir, sizeof dir, "names");
    snprintf(store_dir, sizeof store_dir, "%s/store", dir);
    cli_write_store(store_dir);
    char err[512];
    struct store *st = store_open(store_dir, 0, false, false, err, sizeof err);
    ck_assert_msg(st != NULL, "%s", err);
    const uint64_t t = 1763890000000000000ULL + 400000000000ULL;
    ck_assert_int_eq(store_begin_run(st, "bench-4", BAD_RUN_NAME, t), STORE_OK);
    struct snapshot *s = snapshot_new("bench-4", 0, OBSD_RUN_COMPLETE);
    s->timestamp_ns = t + 1000;
    snapshot_add_counter(s, "x\xff", 1);
    snapshot_add_counter(s, "x\xfe", 2);
    snapshot_add_counter(s, "x" R, 3);   /* well-formed: its own name */
    snapshot_add_gauge(s, "g\xE2\x82", 0.5);
    ck_assert_int_eq(store_persist(st, s, true), STORE_OK);
    snapshot_free(s);
    store_close(st);
}

static void teardown(void)
{
    rm_rf(dir);
}

/* stdout of the last run as JSON (valid UTF-8 first); fails the test if not */
static json_t *out_json(void)
{
    ck_assert_msg(cli_valid_utf8(cli_out, cli_out_len), "output is not UTF-8");
    json_error_t je;
    json_t *j = json_loads(cli_out, 0, &je);
    ck_assert_msg(j != NULL, "not JSON: %s: %.300s", je.text, cli_out);
    return j;
}

static json_t *find_metric(const json_t *snap, const char *name)
{
    size_t i;
    json_t *m;
    json_array_foreach(json_object_get(snap, "metrics"), i, m) {
        const char *n = json_string_value(json_object_get(m, "name"));
        if (n && !strcmp(n, name))
            return m;
    }
    return NULL;
}

/* The metrics of a bench-1 snapshot: all of them, the bad name repaired and
 * the well-formed hostile ones byte for byte. */
static void check_bench1_snapshot(const json_t *snap)
{
    ck_assert_ptr_nonnull(snap);
    ck_assert_str_eq(json_string_value(json_object_get(snap, "run")), "bench-1");
    ck_assert_int_eq(json_array_size(json_object_get(snap, "metrics")), 9 + FIXTURE_N_SERIES);
    json_t *m = find_metric(snap, BAD_UTF8_SERIES_JSON);
    ck_assert_msg(m != NULL, "no series " BAD_UTF8_SERIES_JSON);
    ck_assert_str_eq(json_string_value(json_object_get(m, "type")), "series");
    ck_assert_int_gt(json_integer_value(json_object_get(m, "count")), 0);
    /* the fixture gives HOSTILE_SERIES the same values: all but the name alike */
    json_t *twin = find_metric(snap, HOSTILE_SERIES);
    ck_assert_ptr_nonnull(twin);
    json_t *a = json_deep_copy(m), *b = json_deep_copy(twin);
    json_object_del(a, "name");
    json_object_del(b, "name");
    ck_assert(json_equal(a, b));
    json_decref(a);
    json_decref(b);
    ck_assert_ptr_nonnull(find_metric(snap, "span.\xC2\xB5s"));
    ck_assert_ptr_nonnull(find_metric(snap, HOSTILE_COUNTER));
    ck_assert_ptr_nonnull(find_metric(snap, "empty_series"));
}

static void show_bench1(const char *const *args)
{
    int rc = cli_obsctl(dir, args);
    ck_assert_msg(rc == 0, "show %s: exit %d: %s", args[3], rc, cli_err);
    json_t *j = out_json();
    check_bench1_snapshot(j);
    json_decref(j);
}

START_TEST(show_json)
{
    show_bench1((const char *const[]){"show", "bench-1", "--json", "--store", store_dir, NULL});
    show_bench1((const char *const[]){"show", "bench-1", "--json", "--final", "--store", store_dir, NULL});
    show_bench1((const char *const[]){"show", "bench-1", "--json", "--seq", "2", "--store", store_dir, NULL});
    ck_assert_int_eq(OBSCTL(dir, "show", "bench-4", "--json", "--store", store_dir), 0);
    json_t *j = out_json();
    ck_assert_int_eq(json_array_size(json_object_get(j, "metrics")), 4);
    ck_assert_ptr_nonnull(find_metric(j, "x" R));
    ck_assert_ptr_nonnull(find_metric(j, "g" R R));
    json_decref(j);
}
END_TEST

START_TEST(export_json)
{
    int rc = OBSCTL(dir, "export", "bench-1", "--format", "json", "--snapshots", "--store", store_dir);
    ck_assert_msg(rc == 0, "exit %d: %s", rc, cli_err);
    json_t *j = out_json();
    check_bench1_snapshot(json_object_get(j, "final"));
    check_bench1_snapshot(json_object_get(j, "latest"));
    json_t *ts = json_object_get(j, "time_series");
    json_t *bad = json_object_get(ts, BAD_UTF8_SERIES_JSON);
    ck_assert_msg(bad != NULL, "no time series " BAD_UTF8_SERIES_JSON);
    ck_assert_str_eq(json_string_value(json_object_get(bad, "type")), "series");
    ck_assert_int_eq(json_array_size(json_object_get(bad, "points")), 6);
    ck_assert_int_eq(json_array_size(json_object_get(json_object_get(ts, "span.\xC2\xB5s"), "points")), 6);
    ck_assert_ptr_nonnull(json_object_get(ts, HOSTILE_SERIES));
    ck_assert_ptr_nonnull(json_object_get(ts, HOSTILE_COUNTER));
    json_t *snaps = json_object_get(j, "snapshots");
    ck_assert_int_eq(json_array_size(snaps), 6);
    for (size_t i = 0; i < 6; i++)
        check_bench1_snapshot(json_array_get(snaps, i));
    json_decref(j);

    /* names that come out alike keep their own time series */
    ck_assert_int_eq(OBSCTL(dir, "export", "bench-4", "--format", "json", "--store", store_dir), 0);
    j = out_json();
    ck_assert_str_eq(json_string_value(json_object_get(json_object_get(j, "run"), "name")), BAD_RUN_NAME_JSON);
    ck_assert_int_eq(json_array_size(json_object_get(json_object_get(j, "final"), "metrics")), 4);
    ts = json_object_get(j, "time_series");
    ck_assert_int_eq(json_object_size(ts), 4);
    const char *keys[] = {"x" R, "x" R "_2", "x" R "_3"};
    int seen = 0;
    for (size_t i = 0; i < 3; i++) {
        json_t *pts = json_object_get(json_object_get(ts, keys[i]), "points");
        ck_assert_msg(json_array_size(pts) == 1, "time series %s: %zu points", keys[i], json_array_size(pts));
        json_int_t v = json_integer_value(json_object_get(json_array_get(pts, 0), "value"));
        ck_assert(v >= 1 && v <= 3);
        seen |= 1 << v;
    }
    ck_assert_int_eq(seen, 2 | 4 | 8);
    ck_assert_ptr_nonnull(json_object_get(ts, "g" R R));
    json_decref(j);
}
END_TEST

/* A complete run of one snapshot with counters names[i] = i + 1, started
 * at_s seconds after the fixture's runs. */
static void add_counters_run(const char *run, const char *name, uint64_t at_s, const char *const *names, size_t n)
{
    char err[512];
    struct store *st = store_open(store_dir, 0, false, false, err, sizeof err);
    ck_assert_msg(st != NULL, "%s", err);
    const uint64_t t = 1763890000000000000ULL + at_s * 1000000000ULL;
    ck_assert_int_eq(store_begin_run(st, run, name, t), STORE_OK);
    struct snapshot *s = snapshot_new(run, 0, OBSD_RUN_COMPLETE);
    s->timestamp_ns = t + 1000;
    for (size_t i = 0; i < n; i++)
        snapshot_add_counter(s, names[i], (int64_t)i + 1);
    ck_assert_int_eq(store_persist(st, s, true), STORE_OK);
    snapshot_free(s);
    store_close(st);
}

/* obsctl get bench-1 NAME --json gives the not-UTF-8 series: its name
 * repaired, its 6 points. */
static void get_bad_series(const char *name)
{
    int rc = OBSCTL(dir, "get", "bench-1", name, "--json", "--store", store_dir);
    ck_assert_msg(rc == 0, "exit %d: %s", rc, cli_err);
    json_t *j = out_json();
    ck_assert_str_eq(json_string_value(json_object_get(j, "metric")), BAD_UTF8_SERIES_JSON);
    ck_assert_str_eq(json_string_value(json_object_get(j, "type")), "series");
    ck_assert_int_eq(json_array_size(json_object_get(j, "points")), 6);
    json_decref(j);
}

START_TEST(get_runs_and_compare_json)
{
    get_bad_series(BAD_UTF8_SERIES);

    ck_assert_int_eq(OBSCTL(dir, "runs", "--json", "--store", store_dir), 0);
    json_t *j = out_json();
    ck_assert_int_eq(json_array_size(j), 4);
    json_t *r4 = json_array_get(j, 3);
    ck_assert_str_eq(json_string_value(json_object_get(r4, "run")), "bench-4");
    ck_assert_str_eq(json_string_value(json_object_get(r4, "name")), BAD_RUN_NAME_JSON);
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(j, 0), "name")), HOSTILE_RUN_NAME);
    json_decref(j);

    /* a run id from the command line is a label of compare */
    ck_assert_int_eq(OBSCTL(dir, "compare", "--json", "--store", store_dir, "bench-1", "run\xff"), 1);
    j = out_json();
    json_t *pts = json_object_get(j, "points");
    ck_assert_int_eq(json_array_size(pts), 2);
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(pts, 1), "label")), "run" R);
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(pts, 1), "error")), "run" R ": run not found");
    json_decref(j);
}
END_TEST

/* A name as JSON output prints it (U+FFFD for its bytes that are not
 * UTF-8) can be passed back to get, when it stands for one metric; a name
 * that is stored as it is wins over one that only prints so. */
START_TEST(get_takes_a_name_as_printed)
{
    get_bad_series(BAD_UTF8_SERIES_JSON);

    /* "x" R is a name of its own in bench-4, beside "x\xff" and "x\xfe" */
    ck_assert_int_eq(OBSCTL(dir, "get", "bench-4", "x" R, "--json", "--store", store_dir), 0);
    json_t *j = out_json();
    json_t *pts = json_object_get(j, "points");
    ck_assert_int_eq(json_array_size(pts), 1);
    ck_assert_int_eq(json_integer_value(json_object_get(json_array_get(pts, 0), "value")), 3);
    json_decref(j);
    /* a gauge whose name ends in a truncated sequence */
    ck_assert_int_eq(OBSCTL(dir, "get", "bench-4", "g" R R, "--json", "--store", store_dir), 0);
    j = out_json();
    pts = json_object_get(j, "points");
    ck_assert_int_eq(json_array_size(pts), 1);
    ck_assert(json_real_value(json_object_get(json_array_get(pts, 0), "value")) == 0.5);
    json_decref(j);

    /* two names that print alike, and none stored so: refused, by name */
    const char *alike[] = {"y\xff", "y\xfe"};
    add_counters_run("bench-6", "alike", 600, alike, 2);
    ck_assert_int_eq(OBSCTL(dir, "get", "bench-6", "y" R, "--store", store_dir), 1);
    ck_assert_msg(strstr(cli_err, "stands for 2 metrics") != NULL, "%s", cli_err);
    ck_assert_int_eq(OBSCTL(dir, "get", "bench-6", "y\xfe", "--json", "--store", store_dir), 0);
    j = out_json();
    ck_assert_int_eq(json_integer_value(json_object_get(json_array_get(json_object_get(j, "points"), 0), "value")), 2);
    json_decref(j);
    /* an unknown name stays unknown */
    ck_assert_int_eq(OBSCTL(dir, "get", "bench-6", "z" R, "--store", store_dir), 1);
}
END_TEST

START_TEST(csv_and_text)
{
    int rc = OBSCTL(dir, "export", "bench-1", "--format", "csv", "--store", store_dir);
    ck_assert_msg(rc == 0, "exit %d: %s", rc, cli_err);
    ck_assert(cli_valid_utf8(cli_out, cli_out_len));
    /* 15 columns on every line (no name here has a comma), the bad name's 6 points */
    int rows = 0, bad_rows = 0;
    for (char *line = cli_out; *line;) {
        char *end = strchr(line, '\n');
        ck_assert_ptr_nonnull(end);
        int commas = 0;
        for (char *p = line; p < end; p++)
            commas += *p == ',';
        ck_assert_msg(commas == 14, "%.*s", (int)(end - line), line);
        char *hit = strstr(line, "," BAD_UTF8_SERIES_JSON ",series,");
        if (!strncmp(line, "bench-1,", 8) && hit && hit < end)
            bad_rows++;
        rows++;
        line = end + 1;
    }
    ck_assert_int_gt(rows, 1);
    ck_assert_int_eq(bad_rows, 6);

    /* the tables print names as they are */
    ck_assert_int_eq(OBSCTL(dir, "show", "bench-1", "--store", store_dir), 0);
    char *line = strstr(cli_out, "\n" BAD_UTF8_SERIES " ");
    ck_assert_msg(line != NULL, "%s", cli_out);
    ck_assert_ptr_nonnull(strstr(cli_out, "\nempty_series "));
    ck_assert_int_eq(OBSCTL(dir, "get", "bench-1", BAD_UTF8_SERIES, "--store", store_dir), 0);
    int lines = 0;
    for (char *p = cli_out; (p = strchr(p, '\n')); p++)
        lines++;
    ck_assert_int_eq(lines, 1 + 6);
    ck_assert_int_eq(OBSCTL(dir, "runs", "--store", store_dir), 0);
    ck_assert_ptr_nonnull(strstr(cli_out, "bench-4"));
}
END_TEST

/* The length in bytes of the first line of out that starts with prefix. */
static size_t line_bytes(const char *out, const char *prefix)
{
    for (const char *line = out; *line;) {
        const char *end = strchr(line, '\n');
        ck_assert_ptr_nonnull(end);
        if (!strncmp(line, prefix, strlen(prefix)))
            return (size_t)(end - line);
        line = end + 1;
    }
    ck_abort_msg("no line starts with %s in:\n%s", prefix, out);
    return 0;
}

/* Multibyte names are padded by the columns a terminal gives them, so the
 * values of obsctl show (and compare's labels) line up: "µ" is 2 bytes and
 * one column, each of "延迟" 3 bytes and two columns. */
START_TEST(text_table_pads_by_columns)
{
    const char *names[] = {"plain_total", "\xC2\xB5s_total", "\xE5\xBB\xB6\xE8\xBF\x9F_total"};
    add_counters_run("bench-5", "widths", 500, names, 3);

    ck_assert_int_eq(OBSCTL(dir, "show", "bench-5", "--store", store_dir), 0);
    /* 24 columns of name, a space, 16 of value */
    ck_assert_uint_eq(line_bytes(cli_out, "plain_total "), 41);
    ck_assert_uint_eq(line_bytes(cli_out, "\xC2\xB5s_total "), 41 + 1);
    ck_assert_uint_eq(line_bytes(cli_out, "\xE5\xBB\xB6\xE8\xBF\x9F_total "), 41 + 2);

    /* and the labels of compare (from a sweep file, as chain_ring writes it) */
    char sweep[700];
    snprintf(sweep, sizeof sweep, "%s/sweep.json", dir);
    FILE *f = fopen(sweep, "w");
    ck_assert_ptr_nonnull(f);
    fputs("{\"schema_version\":1,\"sweep\":{\"axis\":\"workers\"},\"points\":["
          "{\"label\":\"plain\",\"inputs\":{\"workers\":1},\"repeats\":[{\"throughput\":10.0}]},"
          "{\"label\":\"\xC2\xB5s\",\"inputs\":{\"workers\":2},\"repeats\":[{\"throughput\":20.0}]},"
          "{\"label\":\"\xE5\xBB\xB6\xE8\xBF\x9F\",\"inputs\":{\"workers\":4},\"repeats\":[{\"throughput\":40.0}]}]}",
          f);
    ck_assert_int_eq(fclose(f), 0);
    int rc = OBSCTL(dir, "compare", "--sweep", sweep);
    ck_assert_msg(rc == 0, "exit %d: %s", rc, cli_err);
    size_t plain = line_bytes(cli_out, "plain ");
    ck_assert_uint_eq(line_bytes(cli_out, "\xC2\xB5s "), plain + 1);
    ck_assert_uint_eq(line_bytes(cli_out, "\xE5\xBB\xB6\xE8\xBF\x9F "), plain + 2);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("cli_names");
    TCase *tc = tcase_create("not_utf8");
    tcase_add_unchecked_fixture(tc, temp_root_begin, temp_root_end);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, show_json);
    tcase_add_test(tc, export_json);
    tcase_add_test(tc, get_runs_and_compare_json);
    tcase_add_test(tc, get_takes_a_name_as_printed);
    tcase_add_test(tc, csv_and_text);
    tcase_add_test(tc, text_table_pads_by_columns);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
