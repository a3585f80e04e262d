/* test_cli_store.c: obsctl runs/show/get/export as real processes against a
 * store this test writes through the store API, and against a copy of it. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "publisher/store.h"
#include "test_util.h"

static char dir[512], store_dir[600];
static char out[1 << 20], errbuf[1 << 16];
static struct snapshot *final1;

/* Runs obsctl with args (NULL-terminated); captures stdout/stderr; returns
 * the exit status. */
static int obsctl(const char *const *args)
{
    const char *build = getenv("OBSD_BUILD_DIR");
    ck_assert_msg(build != NULL, "OBSD_BUILD_DIR is not set");
    char exe[1024], po[700], pe[700];
    snprintf(exe, sizeof exe, "%s/src/cli/obsctl", build);
    snprintf(po, sizeof po, "%s/stdout", dir);
    snprintf(pe, sizeof pe, "%s/stderr", dir);
    const char *argv[32] = {"obsctl"};
    int n = 1;
    for (; args[n - 1]; n++)
        argv[n] = args[n - 1];
    argv[n] = NULL;
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        int fo = open(po, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        int fe = open(pe, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        dup2(fo, 1);
        dup2(fe, 2);
        execv(exe, (char *const *)argv);
        _exit(127);
    }
    int status;
    waitpid(pid, &status, 0);
    FILE *f = fopen(po, "r");
    size_t k = fread(out, 1, sizeof out - 1, f);
    out[k] = 0;
    fclose(f);
    f = fopen(pe, "r");
    k = fread(errbuf, 1, sizeof errbuf - 1, f);
    errbuf[k] = 0;
    fclose(f);
    ck_assert_msg(WIFEXITED(status), "obsctl did not exit normally");
    return WEXITSTATUS(status);
}

#define RUN(...) obsctl((const char *const[]){__VA_ARGS__, NULL})

static void add_metrics(struct snapshot *s, uint64_t k)
{
    snapshot_add_counter(s, "total_samples_issued", (int64_t)(100 * k));
    snapshot_add_gauge(s, "qps", 12.5 * (double)k);
    struct snap_bucket b[3] = {{1000, 2000, k}, {2000, 4000, 2 * k}, {4000, 8000, k}};
    struct snap_series sr = {.name = "ttft_ns", .count = 4 * k, .total = 12000.0 * (double)k,
                             .min = 1500, .max = 7000 + (double)k, .sum_sq = 4e7 * (double)k,
                             .n_buckets = 3, .buckets = b};
    for (int i = 0; i < OBSD_N_PERCENTILES; i++)
        sr.percentiles[i] = 1000 + 60 * obsd_percentile_grid[i] + (double)k;
    snapshot_add_series(s, &sr);
}

static void write_store(void)
{
    char err[512];
    struct store *st = store_open(store_dir, 0, false, false, err, sizeof err);
    ck_assert_msg(st != NULL, "%s", err);
    store_set_history_full_every(st, 3);
    store_set_series_interval(st, 0); /* a point at every 250 ms persist */
    /* bench-1: complete with 3 tokenizations pending (incomplete drain) */
    ck_assert_int_eq(store_begin_run(st, "bench-1", "sweep a", 1763890000000000000ULL), STORE_OK);
    for (uint64_t seq = 0; seq < 5; seq++) {
        bool fin = seq == 4;
        struct snapshot *s = snapshot_new("bench-1", seq, fin ? OBSD_RUN_COMPLETE : OBSD_RUN_LIVE);
        s->timestamp_ns = 1763890000000000000ULL + seq * 250000000ULL;
        s->n_pending_tasks = fin ? 3 : 10;
        add_metrics(s, seq + 1);
        snapshot_set_section(s, "budget", json_pack("{s:i}", "calls", (int)seq));
        ck_assert_int_eq(store_persist(st, s, fin), STORE_OK);
        if (fin)
            final1 = s;
        else
            snapshot_free(s);
    }
    /* bench-2: interrupted */
    struct snapshot *s = snapshot_new("bench-2", 0, OBSD_RUN_INTERRUPTED);
    s->timestamp_ns = 1763890100000000000ULL;
    add_metrics(s, 1);
    ck_assert_int_eq(store_persist(st, s, true), STORE_OK);
    snapshot_free(s);
    /* bench-3: still live, no final */
    s = snapshot_new("bench-3", 0, OBSD_RUN_LIVE);
    s->timestamp_ns = 1763890200000000000ULL;
    add_metrics(s, 2);
    ck_assert_int_eq(store_persist(st, s, false), STORE_OK);
    snapshot_free(s);
    store_close(st);
}

static void setup(void)
{
    make_temp_dir(dir, sizeof dir, "cli");
    snprintf(store_dir, sizeof store_dir, "%s/store", dir);
    write_store();
}

static void teardown(void)
{
    snapshot_free(final1);
    final1 = NULL;
    rm_rf(dir);
}

START_TEST(runs_lists_in_start_order)
{
    ck_assert_int_eq(RUN("runs", "--store", store_dir), 0);
    char *a = strstr(out, "bench-1"), *b = strstr(out, "bench-2"), *c = strstr(out, "bench-3");
    ck_assert_msg(a && b && c && a < b && b < c, "%s", out);
    ck_assert_msg(strstr(out, "incomplete drain: 3 tokenizations pending"), "%s", out);
    ck_assert_msg(strstr(out, "interrupted"), "%s", out);
    ck_assert_msg(strstr(out, "no final snapshot yet"), "%s", out);
    ck_assert_msg(strstr(out, "2025-11-23T09:26:40.000Z"), "%s", out);

    ck_assert_int_eq(RUN("runs", "--store", store_dir, "--json"), 0);
    json_t *j = json_loads(out, 0, NULL);
    ck_assert_int_eq(json_array_size(j), 3);
    json_t *r0 = json_array_get(j, 0);
    ck_assert_str_eq(json_string_value(json_object_get(r0, "run")), "bench-1");
    ck_assert_str_eq(json_string_value(json_object_get(r0, "name")), "sweep a");
    ck_assert_int_eq(json_integer_value(json_object_get(r0, "snapshots")), 5);
    ck_assert(json_is_true(json_object_get(r0, "incomplete_drain")));
    ck_assert(json_is_null(json_object_get(json_array_get(j, 2), "final_seq")));
    json_decref(j);

    /* $OBSD_STORE is the default */
    setenv("OBSD_STORE", store_dir, 1);
    ck_assert_int_eq(RUN("runs"), 0);
    ck_assert_ptr_nonnull(strstr(out, "bench-2"));
    unsetenv("OBSD_STORE");
}
END_TEST

START_TEST(show_tables_and_notes)
{
    /* default: latest snapshot of the last started run */
    ck_assert_int_eq(RUN("show", "--store", store_dir), 0);
    ck_assert_msg(strstr(out, "run bench-3") && strstr(out, "state live"), "%s", out);
    ck_assert_msg(strstr(out, "no final snapshot"), "%s", out);

    ck_assert_int_eq(RUN("show", "bench-1", "--final", "--store", store_dir), 0);
    ck_assert_msg(strstr(out, "incomplete drain: 3 tokenizations pending"), "%s", out);
    ck_assert_msg(strstr(out, "total_samples_issued") && strstr(out, "500"), "%s", out);
    ck_assert_msg(strstr(out, "qps") && strstr(out, "62.5"), "%s", out);
    /* ttft_ns: count 20, p50 = 1000 + 60*50 + 5 = 4005, p90 6405, p99 6945, max 7005 */
    char *row = strstr(out, "ttft_ns");
    ck_assert_msg(row && strstr(row, "20") && strstr(row, "4005") && strstr(row, "6405") &&
                      strstr(row, "6945") && strstr(row, "7005"), "%s", out);
    ck_assert_msg(strstr(out, "budget: {\"calls\":4}"), "%s", out);

    ck_assert_int_eq(RUN("show", "bench-2", "--store", store_dir), 0);
    ck_assert_msg(strstr(out, "interrupted: the run was stopped early"), "%s", out);
}
END_TEST

START_TEST(show_json_is_the_snapshot)
{
    ck_assert_int_eq(RUN("show", "bench-1", "--final", "--json", "--store", store_dir), 0);
    json_error_t je;
    json_t *got = json_loads(out, 0, &je);
    ck_assert_msg(got != NULL, "%s: %s", je.text, out);
    json_t *want = snapshot_to_json(final1);
    ck_assert(json_equal(got, want));
    ck_assert_msg(strstr(errbuf, "incomplete drain: 3 tokenizations pending"), "%s", errbuf);
    json_decref(got);
    json_decref(want);

    /* the snapshot at a seq, rebuilt from the history */
    ck_assert_int_eq(RUN("show", "bench-1", "--seq", "1", "--json", "--store", store_dir), 0);
    got = json_loads(out, 0, NULL);
    ck_assert_int_eq(json_integer_value(json_object_get(got, "seq")), 1);
    json_t *m = json_object_get(got, "metrics");
    ck_assert_int_eq(json_integer_value(json_object_get(json_array_get(m, 0), "value")), 200);
    ck_assert_int_eq(json_integer_value(json_object_get(json_array_get(m, 2), "count")), 8);
    ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(got, "budget"), "calls")), 1);
    json_decref(got);

    ck_assert_int_eq(RUN("show", "bench-1", "--seq", "99", "--store", store_dir), 1);
    ck_assert_msg(strstr(errbuf, "no snapshot with seq 99"), "%s", errbuf);
    ck_assert_int_eq(RUN("show", "bench-3", "--final", "--store", store_dir), 1);
    ck_assert_msg(strstr(errbuf, "has no final snapshot"), "%s", errbuf);
    ck_assert_int_eq(RUN("show", "nope", "--store", store_dir), 1);
    ck_assert_msg(strstr(errbuf, "no run 'nope'"), "%s", errbuf);
}
END_TEST

START_TEST(get_time_series)
{
    ck_assert_int_eq(RUN("get", "bench-1", "ttft_ns", "--store", store_dir), 0);
    int lines = 0;
    for (char *p = out; (p = strchr(p, '\n')); p++)
        lines++;
    ck_assert_int_eq(lines, 6); /* header + 5 persists */
    ck_assert_msg(strstr(out, "COUNT") && strstr(out, "P99"), "%s", out);
    ck_assert_msg(strstr(out, "2025-11-23T09:26:41.000Z"), "%s", out);
    ck_assert_msg(strstr(errbuf, "incomplete drain"), "%s", errbuf);

    ck_assert_int_eq(RUN("get", "bench-1", "total_samples_issued", "--json", "--store", store_dir), 0);
    json_t *j = json_loads(out, 0, NULL);
    ck_assert_str_eq(json_string_value(json_object_get(j, "type")), "counter");
    json_t *pts = json_object_get(j, "points");
    ck_assert_int_eq(json_array_size(pts), 5);
    ck_assert_int_eq(json_integer_value(json_object_get(json_array_get(pts, 4), "value")), 500);
    ck_assert_int_eq(json_integer_value(json_object_get(json_array_get(pts, 4), "seq")), 4);
    json_decref(j);

    ck_assert_int_eq(RUN("get", "last", "qps", "--store", store_dir), 0);
    ck_assert_msg(strstr(out, "25"), "%s", out);
    ck_assert_int_eq(RUN("get", "bench-1", "nope", "--store", store_dir), 1);
    ck_assert_msg(strstr(errbuf, "no metric 'nope'"), "%s", errbuf);
}
END_TEST

START_TEST(export_json_and_csv)
{
    ck_assert_int_eq(RUN("export", "bench-1", "--format", "csv", "--store", store_dir), 0);
    static const char header[] =
        "run,seq,timestamp_ns,metric,type,value,count,total,min,max,p50,p90,p99,p99.9,exact\n";
    ck_assert_msg(!strncmp(out, header, strlen(header)), "%s", out);
    int lines = 0;
    for (char *p = out; (p = strchr(p, '\n')); p++)
        lines++;
    ck_assert_int_eq(lines, 1 + 3 * 5);
    ck_assert_msg(strstr(out, "bench-1,4,1763890001000000000,total_samples_issued,counter,500,"), "%s", out);
    ck_assert_msg(strstr(out, "bench-1,4,1763890001000000000,ttft_ns,series,,20,60000,1500,7005,4005,6405,6945,6999,false"), "%s", out);

    ck_assert_int_eq(RUN("export", "bench-1", "--format", "json", "--snapshots", "--store", store_dir), 0);
    json_t *j = json_loads(out, 0, NULL);
    ck_assert_ptr_nonnull(j);
    json_t *want = snapshot_to_json(final1);
    ck_assert(json_equal(json_object_get(j, "final"), want));
    ck_assert(json_equal(json_object_get(j, "latest"), want));
    json_decref(want);
    json_t *ts = json_object_get(json_object_get(j, "time_series"), "ttft_ns");
    ck_assert_str_eq(json_string_value(json_object_get(ts, "type")), "series");
    ck_assert_int_eq(json_array_size(json_object_get(ts, "points")), 5);
    ck_assert_int_eq(json_array_size(json_object_get(j, "snapshots")), 5);
    json_decref(j);

    char path[700];
    snprintf(path, sizeof path, "%s/bench-3.json", dir);
    ck_assert_int_eq(RUN("export", "bench-3", "--format", "json", "--output", path, "--store", store_dir), 0);
    FILE *f = fopen(path, "r");
    j = json_loadf(f, 0, NULL);
    fclose(f);
    ck_assert(json_is_null(json_object_get(j, "final")));
    json_decref(j);
}
END_TEST

START_TEST(usage_errors)
{
    ck_assert_int_eq(RUN("show", "--help"), 0);
    ck_assert_ptr_nonnull(strstr(out, "usage: obsctl show"));
    ck_assert_int_eq(RUN("runs", "--help"), 0);
    ck_assert_int_eq(RUN("get", "--help"), 0);
    ck_assert_int_eq(RUN("export", "--help"), 0);
    ck_assert_int_eq(RUN("show", "--seq", "abc", "--store", store_dir), 2);
    ck_assert_msg(strstr(errbuf, "--seq"), "%s", errbuf);
    ck_assert_int_eq(RUN("show", "--seq", "1", "--final", "--store", store_dir), 2);
    ck_assert_int_eq(RUN("show", "--bogus", "--store", store_dir), 2);
    ck_assert_msg(strstr(errbuf, "unknown option '--bogus'"), "%s", errbuf);
    ck_assert_int_eq(RUN("runs", "--store"), 2);
    ck_assert_msg(strstr(errbuf, "needs a value"), "%s", errbuf);
    ck_assert_int_eq(RUN("get", "bench-1", "--store", store_dir), 2);
    ck_assert_int_eq(RUN("export", "bench-1", "--store", store_dir), 2);
    ck_assert_msg(strstr(errbuf, "--format"), "%s", errbuf);
    ck_assert_int_eq(RUN("export", "bench-1", "--format", "xml", "--store", store_dir), 2);
    ck_assert_msg(strstr(errbuf, "'xml'"), "%s", errbuf);
    char missing[700];
    snprintf(missing, sizeof missing, "%s/none", dir);
    ck_assert_int_eq(RUN("runs", "--store", missing), 1);
    ck_assert_msg(strstr(errbuf, "no store at"), "%s", errbuf);
}
END_TEST

START_TEST(reads_a_copy)
{
    char copy[700], cmd[1600];
    snprintf(copy, sizeof copy, "%s/copy", dir);
    snprintf(cmd, sizeof cmd, "cp -r '%s' '%s'", store_dir, copy);
    ck_assert_int_eq(system(cmd), 0);
    /* the original goes away: the copy stands alone */
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", store_dir);
    ck_assert_int_eq(system(cmd), 0);
    ck_assert_int_eq(RUN("show", "bench-1", "--final", "--json", "--store", copy), 0);
    json_t *got = json_loads(out, 0, NULL), *want = snapshot_to_json(final1);
    ck_assert(json_equal(got, want));
    json_decref(got);
    json_decref(want);
    ck_assert_int_eq(RUN("get", "bench-1", "ttft_ns", "--store", copy), 0);
    ck_assert_int_eq(RUN("export", "bench-1", "--format", "csv", "--store", copy), 0);

    /* a copy without its lock file in a directory we may not write */
    if (geteuid() != 0) {
        snprintf(cmd, sizeof cmd, "rm -f '%s/lock.mdb' && chmod 0555 '%s'", copy, copy);
        ck_assert_int_eq(system(cmd), 0);
        ck_assert_int_eq(RUN("runs", "--store", copy), 0);
        ck_assert_msg(strstr(out, "bench-3"), "%s", out);
        snprintf(cmd, sizeof cmd, "chmod 0755 '%s'", copy);
        ck_assert_int_eq(system(cmd), 0);
    }
}
END_TEST

START_TEST(newer_schema_named)
{
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    mdb_env_create(&env);
    mdb_env_set_maxdbs(env, 16);
    ck_assert_int_eq(mdb_env_open(env, store_dir, 0, 0640), 0);
    mdb_txn_begin(env, NULL, 0, &txn);
    ck_assert_int_eq(mdb_dbi_open(txn, "meta", 0, &dbi), 0);
    const uint8_t newer = OBSD_STORE_SCHEMA_VERSION + 1;
    uint8_t vn[4] = {newer, 0, 0, 0};
    MDB_val k = {14, "schema_version"}, v = {4, vn};
    mdb_put(txn, dbi, &k, &v, 0);
    mdb_txn_commit(txn);
    mdb_env_close(env);
    ck_assert_int_eq(RUN("runs", "--store", store_dir), 1);
    char want[96];
    snprintf(want, sizeof want, "store schema %u is newer than this obsctl (%u)", (unsigned)newer,
             (unsigned)OBSD_STORE_SCHEMA_VERSION);
    ck_assert_msg(strstr(errbuf, want), "%s", errbuf);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("cli_store");
    TCase *tc = tcase_create("obsctl");
    tcase_add_unchecked_fixture(tc, temp_root_begin, temp_root_end);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, runs_lists_in_start_order);
    tcase_add_test(tc, show_tables_and_notes);
    tcase_add_test(tc, show_json_is_the_snapshot);
    tcase_add_test(tc, get_time_series);
    tcase_add_test(tc, export_json_and_csv);
    tcase_add_test(tc, usage_errors);
    tcase_add_test(tc, reads_a_copy);
    tcase_add_test(tc, newer_schema_named);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
