/*
 * cli_fixture.c: see cli_fixture.h.
 */
#include "cli_fixture.h"

#include <check.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>

#include "publisher/store.h"

char cli_out[1 << 22], cli_err[1 << 16];
size_t cli_out_len;

const char *const fixture_series[FIXTURE_N_SERIES] = {
    "ttft_ns", "span.\xC2\xB5s", HOSTILE_SERIES, BAD_UTF8_SERIES, "empty_series"};

const char *cli_obsctl_path(void)
{
    static char exe[1024];
    const char *build = getenv("OBSD_BUILD_DIR");
    ck_assert_msg(build != NULL, "OBSD_BUILD_DIR is not set (run the suite through ctest)");
    snprintf(exe, sizeof exe, "%s/src/cli/obsctl", build);
    return exe;
}

static size_t slurp(const char *path, char *buf, size_t cap)
{
    FILE *f = fopen(path, "r");
    ck_assert_ptr_nonnull(f);
    size_t k = fread(buf, 1, cap - 1, f);
    buf[k] = 0;
    fclose(f);
    return k;
}

int cli_obsctl(const char *dir, const char *const *args)
{
    const char *exe = cli_obsctl_path();
    char po[700], pe[700];
    snprintf(po, sizeof po, "%s/obsctl.stdout", dir);
    snprintf(pe, sizeof pe, "%s/obsctl.stderr", dir);
    const char *argv[40] = {"obsctl"};
    int n = 1;
    for (; args[n - 1] && n < 39; n++)
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
    cli_out_len = slurp(po, cli_out, sizeof cli_out);
    slurp(pe, cli_err, sizeof cli_err);
    ck_assert_msg(WIFEXITED(status), "obsctl did not exit normally (signal %d)", WTERMSIG(status));
    return WEXITSTATUS(status);
}

static void add_series(struct snapshot *s, const char *name, uint64_t k, bool exact)
{
    /* values from 1000 up; buckets log-spaced over [1000, 16000) */
    struct snap_bucket b[4] = {{1000, 2000, k}, {2000, 4000, 3 * k}, {4000, 8000, 2 * k}, {8000, 16000, k}};
    struct snap_series sr = {.name = (char *)name, .exact = exact, .count = 7 * k,
                             .total = 30000.0 * (double)k, .min = 1000, .max = 15000,
                             .sum_sq = 2e8 * (double)k, .n_buckets = 4, .buckets = b};
    for (int i = 0; i < OBSD_N_PERCENTILES; i++)
        sr.percentiles[i] = 1000 + 100 * obsd_percentile_grid[i] + (double)k;
    ck_assert_int_eq(snapshot_add_series(s, &sr), 0);
}

static json_t *budget_section(void)
{
    return json_pack(
        "{s:[{s:s,s:I,s:I,s:I,s:b,s:b,s:f,s:f,s:f,s:f,s:{},s:{}},"
        "    {s:s,s:I,s:I,s:I,s:b,s:b,s:f,s:f,s:f,s:f,s:{},s:{}}],"
        " s:{s:I,s:I,s:f,s:f,s:f,s:f,s:{s:{s:I,s:I,s:f,s:f}}}}",
        "contexts",
        "namespace", "participant0", "flop_budget", (json_int_t)1000, "flops_used", (json_int_t)800,
        "flops_remaining", (json_int_t)200, "exhausted", 0, "open", 0, "wall_s", 0.5, "backend_s", 0.1,
        "overhead_s", 0.15, "residual_s", 0.25, "operations", "by_namespace",
        "namespace", HOSTILE_NAMESPACE, "flop_budget", (json_int_t)1000, "flops_used", (json_int_t)1000,
        "flops_remaining", (json_int_t)0, "exhausted", 1, "open", 1, "wall_s", 0.4, "backend_s", 0.2,
        "overhead_s", 0.1, "residual_s", 0.1, "operations", "by_namespace",
        "session", "flop_budget", (json_int_t)2000, "flops_used", (json_int_t)1800, "wall_s", 0.9,
        "backend_s", 0.3, "overhead_s", 0.25, "residual_s", 0.35, "operations", "matmul", "flop_cost",
        (json_int_t)1800, "calls", (json_int_t)4, "backend_s", 0.3, "overhead_s", 0.01);
}

static json_t *sched_section(void)
{
    return json_pack(
        "{s:s,s:s,s:f,s:[{s:i,s:I,s:I,s:I,s:I,s:b,s:b},{s:i,s:I,s:I,s:I,s:I,s:b,s:b}],"
        " s:{s:i,s:I,s:f,s:f,s:f,s:f,s:[s]},s:[]}",
        "phase", "done", "baseline", "tracking_start", "window_s", 2.0, "workers",
        "worker_index", 0, "behaviors_completed", (json_int_t)1035, "popped_local", (json_int_t)1031,
        "steal_attempts", (json_int_t)4, "pid", (json_int_t)4242, "released", 0, "torn", 0,
        "worker_index", 1, "behaviors_completed", (json_int_t)1166, "popped_local", (json_int_t)1161,
        "steal_attempts", (json_int_t)5, "pid", (json_int_t)4242, "released", 0, "torn", 0,
        "derived", "workers", 2, "behaviors_completed", (json_int_t)2201, "throughput", 1100.5,
        "steal_yield", 0.004, "fairness_cv", 0.06, "fairness_gini", 0.03, "notes", "<u>a note</u>",
        "queues");
}

void cli_write_store(const char *store_dir)
{
    char err[512];
    mkdir(store_dir, 0700);
    struct store *st = store_open(store_dir, 0, false, false, err, sizeof err);
    ck_assert_msg(st != NULL, "%s", err);
    store_set_series_interval(st, 0);   /* a time series point at every persist */
    const uint64_t t0 = 1763890000000000000ULL;
    ck_assert_int_eq(store_begin_run(st, "bench-1", HOSTILE_RUN_NAME, t0), STORE_OK);
    for (uint64_t seq = 0; seq < 6; seq++) {
        bool fin = seq == 5;
        struct snapshot *s = snapshot_new("bench-1", seq, fin ? OBSD_RUN_COMPLETE : OBSD_RUN_LIVE);
        s->timestamp_ns = t0 + (seq + 1) * 500000000ULL;
        s->n_pending_tasks = fin ? 3 : 20;
        snapshot_add_counter(s, "obsd_dropped_records", 7);
        snapshot_add_counter(s, "obsd_rejected_records", 3);
        snapshot_add_counter(s, "items", (int64_t)(10 * seq));
        snapshot_add_counter(s, "pushed_total", 5);
        snapshot_add_gauge(s, "qps", 12.5 * (double)(seq + 1));
        snapshot_add_counter(s, "delta", -5);
        snapshot_add_counter(s, "dup.name", 1);
        snapshot_add_counter(s, "dup_name", 2);
        snapshot_add_counter(s, HOSTILE_COUNTER, 42);
        for (size_t i = 0; i < FIXTURE_N_SERIES_WITH_VALUES; i++)
            add_series(s, fixture_series[i], seq + 1, fin && i == 0);
        struct snap_series empty = {.name = "empty_series"};
        for (int i = 0; i < OBSD_N_PERCENTILES; i++)
            empty.percentiles[i] = 0;
        snapshot_add_series(s, &empty);
        snapshot_set_section(s, "requests", json_pack("{s:s,s:f,s:n,s:i,s:i}", "token_metrics", "off", "qps",
                                                      12.5, "tps", "tracking_windows", 1, "in_flight", 0));
        snapshot_set_section(s, "budget", budget_section());
        snapshot_set_section(s, "sched", sched_section());
        snapshot_set_section(s, HOSTILE_SECTION, json_pack("{s:s}", "k", "</pre><script>alert(2)</script>"));
        ck_assert_int_eq(store_persist(st, s, fin), STORE_OK);
        snapshot_free(s);
    }
    struct snapshot *s = snapshot_new("bench-2", 0, OBSD_RUN_INTERRUPTED);
    s->timestamp_ns = t0 + 100000000000ULL;
    snapshot_add_counter(s, "items", 1);
    add_series(s, "ttft_ns", 1, false);
    ck_assert_int_eq(store_persist(st, s, true), STORE_OK);
    snapshot_free(s);
    s = snapshot_new("bench-3", 0, OBSD_RUN_LIVE);
    s->timestamp_ns = t0 + 200000000000ULL;
    snapshot_add_counter(s, "items", 2);
    add_series(s, "ttft_ns", 2, false);
    ck_assert_int_eq(store_persist(st, s, false), STORE_OK);
    snapshot_free(s);
    store_close(st);
}

void cli_add_run(const char *store_dir, const char *id)
{
    char err[512];
    struct store *st = store_open(store_dir, 0, false, false, err, sizeof err);
    ck_assert_msg(st != NULL, "%s", err);
    struct snapshot *s = snapshot_new(id, 0, OBSD_RUN_LIVE);
    s->timestamp_ns = 1763890000000000000ULL + 300000000000ULL;
    snapshot_add_counter(s, "items", 1);
    ck_assert_int_eq(store_persist(st, s, false), STORE_OK);
    snapshot_free(s);
    store_close(st);
}

char *cli_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    size_t k = buf ? fread(buf, 1, (size_t)n, f) : 0;
    fclose(f);
    if (!buf)
        return NULL;
    buf[k] = 0;
    if (len)
        *len = k;
    return buf;
}

bool cli_valid_utf8(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        unsigned c = p[i];
        size_t len = c < 0x80 ? 1 : (c >= 0xC2 && c <= 0xDF) ? 2 : (c >= 0xE0 && c <= 0xEF) ? 3
                   : (c >= 0xF0 && c <= 0xF4) ? 4 : 0;
        if (!len || i + len > n)
            return false;
        for (size_t k = 1; k < len; k++)
            if ((p[i + k] & 0xC0) != 0x80)
                return false;
        i += len;
    }
    return true;
}
