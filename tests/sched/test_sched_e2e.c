/*
 * test_sched_e2e.c: the scheduler counters across real processes.
 *
 * Starts the obsd daemon on a private segment and store, runs the chain_ring
 * example as a sweep over 1 and 2 workers with 2 repeats (every repeat a
 * child process and its own run), then reads the store with obsctl as a
 * process: each run's final snapshot must carry a sched section whose values
 * agree with each other and with the workload, and obsctl compare must print
 * the table for the sweep file and for the runs.
 */
#include <check.h>
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

static char build[4096], name[64], store[256], sweep_file[300];

static void msleep(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

/* Runs a shell command, returns its exit status and (if out) its stdout. */
static int run(char **out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int run(char **out, const char *fmt, ...)
{
    char cmd[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    FILE *p = popen(cmd, "r");
    ck_assert_ptr_nonnull(p);
    size_t len = 0, cap = 1 << 16;
    char *buf = malloc(cap);
    size_t r;
    while ((r = fread(buf + len, 1, cap - len - 1, p)) > 0) {
        len += r;
        if (cap - len < 4096)
            buf = realloc(buf, cap *= 2);
    }
    buf[len] = '\0';
    int st = pclose(p);
    if (out)
        *out = buf;
    else
        free(buf);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* Unchecked fixture (runs in the test process, also after a failed test):
 * names, and the cleanup of the daemon, its segment and the store. */
static void setup(void)
{
    const char *b = getenv("OBSD_BUILD_DIR");
    snprintf(build, sizeof build, "%s", b ? b : ".");
    snprintf(name, sizeof name, "schede2e%d", (int)getpid());
    snprintf(store, sizeof store, "/tmp/obsd-sched-e2e-%d", (int)getpid());
    snprintf(sweep_file, sizeof sweep_file, "%s/sweep.json", store);
    mkdir(store, 0700);
}

static void teardown(void)
{
    char path[400];
    snprintf(path, sizeof path, "%s/obsd.pid", store);
    FILE *f = fopen(path, "r");
    int pid = 0;
    if (f) {
        if (fscanf(f, "%d", &pid) != 1)
            pid = 0;
        fclose(f);
    }
    if (pid > 0 && kill(pid, SIGTERM) == 0) {
        for (int i = 0; i < 100 && kill(pid, 0) == 0; i++)
            msleep(20);
        kill(pid, SIGKILL);
    }
    char seg[128];
    snprintf(seg, sizeof seg, "/dev/shm/obsd.%s", name);
    unlink(seg);
    run(NULL, "rm -rf '%s'", store);
}

static void start_daemon(void)
{
    ck_assert_msg(getenv("OBSD_BUILD_DIR") != NULL, "OBSD_BUILD_DIR not set");
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        char path[4200], log[400], pidfile[400];
        snprintf(path, sizeof path, "%s/src/daemon/obsd", build);
        snprintf(log, sizeof log, "%s/obsd.log", store);
        snprintf(pidfile, sizeof pidfile, "%s/obsd.pid", store);
        if (!freopen(log, "w", stderr))
            _exit(126);
        execl(path, "obsd", "--foreground", "--name", name, "--store", store, "--pidfile", pidfile,
              (char *)NULL);
        _exit(127);
    }
    char seg[128];
    snprintf(seg, sizeof seg, "/dev/shm/obsd.%s", name);
    for (int i = 0; i < 200 && access(seg, F_OK) != 0; i++)
        msleep(25);
    ck_assert_msg(access(seg, F_OK) == 0, "the daemon did not create %s", seg);
}

/* Waits until n runs have their final snapshot; returns the runs array. */
static json_t *wait_runs(size_t n)
{
    for (int i = 0; i < 300; i++) {
        char *out = NULL;
        if (run(&out, "%s/src/cli/obsctl runs --store %s --json 2>/dev/null", build, store) == 0) {
            json_t *a = json_loads(out, 0, NULL);
            free(out);
            size_t done = 0, k;
            json_t *r;
            json_array_foreach(a, k, r) done += json_is_true(json_object_get(r, "final"));
            if (json_array_size(a) == n && done == n)
                return a;
            json_decref(a);
        } else {
            free(out);
        }
        msleep(100);
    }
    char *log = NULL;
    run(&log, "tail -c 1500 %s/obsd.log; %s/src/cli/obsctl runs --store %s", store, build, store);
    ck_abort_msg("%zu final runs did not appear in the store; daemon log and runs:\n%s", n, log);
    return NULL;
}

START_TEST(chain_ring_sweep_through_the_collector)
{
    start_daemon();
    int rc = run(NULL,
                 "%s/examples/chain_ring --name %s --sweep-axis workers --sweep-values 1,2 "
                 "--repeats 2 --duration 0.4 --warmup 0.1 --iters 5 --ring-size 32 "
                 "--output %s --quiet 2>/dev/null",
                 build, name, sweep_file);
    ck_assert_int_eq(rc, 0);

    /* the results file */
    json_t *doc = json_load_file(sweep_file, 0, NULL);
    ck_assert_ptr_nonnull(doc);
    ck_assert_int_eq(json_integer_value(json_object_get(doc, "schema_version")), 1);
    ck_assert_str_eq(json_string_value(json_object_get(json_object_get(doc, "sweep"), "axis")), "workers");
    json_t *points = json_object_get(doc, "points");
    ck_assert_int_eq(json_array_size(points), 2);
    for (size_t i = 0; i < 2; i++) {
        json_t *pt = json_array_get(points, i);
        ck_assert(json_is_null(json_object_get(pt, "error")));
        ck_assert_int_eq(json_array_size(json_object_get(pt, "repeats")), 2);
        ck_assert(json_number_value(json_object_get(pt, "throughput_mean")) > 0);
        ck_assert(json_is_number(json_object_get(pt, "throughput_stdev")));
        double mn = json_number_value(json_object_get(pt, "throughput_min"));
        double mx = json_number_value(json_object_get(pt, "throughput_max"));
        double mean = json_number_value(json_object_get(pt, "throughput_mean"));
        ck_assert(mn <= mean && mean <= mx);
        json_t *rep = json_array_get(json_object_get(pt, "repeats"), 0);
        ck_assert(json_is_true(json_object_get(rep, "obsd")));
        ck_assert_int_eq(json_array_size(json_object_get(rep, "scheduler_stats")), i + 1);
    }
    json_decref(doc);

    /* four runs, each with a consistent sched section */
    json_t *runs = wait_runs(4);
    size_t k;
    json_t *r;
    json_array_foreach(runs, k, r) {
        const char *id = json_string_value(json_object_get(r, "run"));
        ck_assert_str_eq(json_string_value(json_object_get(r, "state")), "complete");
        char *out = NULL;
        ck_assert_int_eq(run(&out, "%s/src/cli/obsctl show %s --final --store %s --json 2>/dev/null",
                             build, id, store), 0);
        json_t *snap = json_loads(out, 0, NULL);
        free(out);
        ck_assert_ptr_nonnull(snap);
        json_t *sec = json_object_get(snap, "sched");
        ck_assert_msg(json_is_object(sec), "run %s has no sched section", id);
        ck_assert_str_eq(json_string_value(json_object_get(sec, "baseline")), "tracking_start");
        ck_assert_str_eq(json_string_value(json_object_get(sec, "phase")), "done");
        json_t *d = json_object_get(sec, "derived");
        json_t *workers = json_object_get(sec, "workers");
        size_t nw = k < 2 ? 1 : 2;   /* runs in sweep order: 1, 1, 2, 2 workers */
        ck_assert_int_eq(json_array_size(workers), nw);
        ck_assert_int_eq(json_integer_value(json_object_get(d, "workers")), nw);
        json_int_t completed = json_integer_value(json_object_get(d, "behaviors_completed"));
        ck_assert(completed > 0);
        double window = json_number_value(json_object_get(sec, "window_s"));
        ck_assert(window > 0.2 && window < 5.0);
        double tp = json_number_value(json_object_get(d, "throughput"));
        ck_assert_double_eq_tol(tp, (double)completed / window, tp * 1e-6);
        json_int_t sum = 0, pops = 0, steals = 0;
        size_t w;
        json_t *wk;
        json_array_foreach(workers, w, wk) {
            ck_assert_int_eq(json_integer_value(json_object_get(wk, "worker_index")), w);
            sum += json_integer_value(json_object_get(wk, "behaviors_completed"));
            pops += json_integer_value(json_object_get(wk, "popped_local")) +
                    json_integer_value(json_object_get(wk, "popped_via_steal"));
            steals += json_integer_value(json_object_get(wk, "popped_via_steal"));
            ck_assert(!json_is_true(json_object_get(wk, "torn")));
        }
        ck_assert_int_eq(sum, completed);
        /* every completed behavior was popped first; at most one in flight per worker */
        ck_assert(pops >= completed - (json_int_t)nw && pops <= completed + (json_int_t)nw);
        ck_assert_int_eq(steals, json_integer_value(json_object_get(d, "steals")));
        /* one queue block per worker queue; the queues' pushes in the window
         * are the workers' local pushes (read in one pass, a few apart) */
        json_t *queues = json_object_get(sec, "queues");
        ck_assert_int_eq(json_array_size(queues), nw);
        json_int_t qpushed = 0, lpushed = 0;
        json_array_foreach(queues, w, wk) {
            ck_assert_ptr_nonnull(strstr(json_string_value(json_object_get(wk, "tag")), "wsq."));
            qpushed += json_integer_value(json_object_get(wk, "pushed_total"));
        }
        json_array_foreach(workers, w, wk) lpushed += json_integer_value(json_object_get(wk, "pushed_local"));
        ck_assert_msg(llabs(qpushed - lpushed) <= 4, "queue pushes %lld vs local pushes %lld",
                      (long long)qpushed, (long long)lpushed);
        if (nw == 1) {
            ck_assert_int_eq(steals, 0);
            ck_assert(json_is_null(json_object_get(d, "idle_ratio")));   /* no steal attempts */
            ck_assert_double_eq_tol(json_number_value(json_object_get(d, "fairness_cv")), 0, 1e-12);
        }
        json_decref(snap);
    }

    /* compare: the sweep file and the runs */
    char *out = NULL;
    ck_assert_int_eq(run(&out, "%s/src/cli/obsctl compare --sweep %s", build, sweep_file), 0);
    ck_assert_ptr_nonnull(strstr(out, "speedup"));
    ck_assert_ptr_nonnull(strstr(out, "1.00x"));
    ck_assert_ptr_nonnull(strstr(out, "100%"));
    free(out);
    char ids[1024] = "";
    json_array_foreach(runs, k, r) {
        strcat(ids, " ");
        strcat(ids, json_string_value(json_object_get(r, "run")));
    }
    ck_assert_int_eq(run(&out, "%s/src/cli/obsctl compare --store %s --json%s", build, store, ids), 0);
    json_t *cmp = json_loads(out, 0, NULL);
    free(out);
    ck_assert_ptr_nonnull(cmp);
    json_t *cp = json_object_get(cmp, "points");
    ck_assert_int_eq(json_array_size(cp), 2);
    ck_assert_int_eq(json_integer_value(json_object_get(json_array_get(cp, 0), "repeats")), 2);
    ck_assert_double_eq_tol(json_number_value(json_object_get(json_array_get(cp, 0), "speedup")), 1.0, 1e-12);
    json_t *eff = json_object_get(json_array_get(cp, 1), "efficiency");
    json_t *sp = json_object_get(json_array_get(cp, 1), "speedup");
    ck_assert_double_eq_tol(json_number_value(eff), json_number_value(sp) / 2.0, 1e-12);
    json_decref(cmp);
    /* a missing baseline suppresses speedup, with a note */
    ck_assert_int_eq(run(&out, "%s/src/cli/obsctl compare --store %s no-such-run%s", build, store, ids), 1);
    ck_assert_ptr_nonnull(strstr(out, "note: speedup/efficiency left out"));
    ck_assert_ptr_null(strstr(out, "1.00x"));
    free(out);
    json_decref(runs);
}
END_TEST

START_TEST(chain_ring_bad_arguments)
{
    const char *b = getenv("OBSD_BUILD_DIR");
    ck_assert_ptr_nonnull(b);
    char *out = NULL;
    ck_assert_int_eq(run(&out, "%s/examples/chain_ring --sweep-axis cores --sweep-values 1 2>&1", b), 2);
    ck_assert_ptr_nonnull(strstr(out, "--sweep-axis"));
    free(out);
    ck_assert_int_eq(run(&out, "%s/examples/chain_ring --group-size 40 --ring-size 64 2>&1", b), 2);
    ck_assert_ptr_nonnull(strstr(out, "--ring-size"));
    free(out);
    ck_assert_int_eq(run(&out, "%s/examples/chain_ring --workers zero 2>&1", b), 2);
    ck_assert_ptr_nonnull(strstr(out, "--workers"));
    free(out);
    ck_assert_int_eq(run(&out, "%s/src/cli/obsctl compare 2>&1", b), 2);
    free(out);
}
END_TEST

/* compare on sweep files: a failed baseline suppresses speedup; a newer
 * schema is refused naming both versions; other axes have no efficiency. */
START_TEST(compare_sweep_files)
{
    const char *b = getenv("OBSD_BUILD_DIR");
    ck_assert_ptr_nonnull(b);
    char path[128];
    snprintf(path, sizeof path, "/tmp/obsd-sched-cmp-%d.json", (int)getpid());
    FILE *f = fopen(path, "w");
    fputs("{\"schema_version\":1,\"metadata\":{\"interrupted\":false},"
          "\"sweep\":{\"axis\":\"workers\"},\"points\":["
          "{\"label\":\"1\",\"inputs\":{\"workers\":1},\"repeats\":[],"
          "\"error\":{\"message\":\"child exited with status 1\",\"stderr_tail\":\"\"}},"
          "{\"label\":\"2\",\"inputs\":{\"workers\":2},\"repeats\":[{\"throughput\":10.0},"
          "{\"throughput\":14.0}],\"error\":null}]}", f);
    fclose(f);
    char *out = NULL;
    ck_assert_int_eq(run(&out, "%s/src/cli/obsctl compare --sweep %s", b, path), 0);
    ck_assert_ptr_nonnull(strstr(out, "ERROR"));
    ck_assert_ptr_nonnull(strstr(out, "12.0"));      /* mean of 10 and 14 */
    ck_assert_ptr_nonnull(strstr(out, "2.8"));       /* sample stdev sqrt(8) */
    ck_assert_ptr_nonnull(strstr(out, "note: speedup/efficiency left out"));
    free(out);
    f = fopen(path, "w");
    fputs("{\"schema_version\":1,\"sweep\":{\"axis\":\"iters\"},\"points\":["
          "{\"label\":\"100\",\"repeats\":[{\"throughput\":50.0}],\"error\":null},"
          "{\"label\":\"200\",\"repeats\":[{\"throughput\":25.0}],\"error\":null}]}", f);
    fclose(f);
    ck_assert_int_eq(run(&out, "%s/src/cli/obsctl compare --sweep %s --json", b, path), 0);
    json_t *j = json_loads(out, 0, NULL);
    free(out);
    json_t *p1 = json_array_get(json_object_get(j, "points"), 1);
    ck_assert_double_eq_tol(json_number_value(json_object_get(p1, "speedup")), 0.5, 1e-12);
    ck_assert(json_is_null(json_object_get(p1, "efficiency")));
    ck_assert(json_is_null(json_object_get(p1, "throughput_stdev")));
    json_decref(j);
    f = fopen(path, "w");
    fputs("{\"schema_version\":7,\"points\":[]}", f);
    fclose(f);
    ck_assert_int_eq(run(&out, "%s/src/cli/obsctl compare --sweep %s 2>&1", b, path), 2);
    ck_assert_ptr_nonnull(strstr(out, "schema_version 7"));
    free(out);
    unlink(path);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("sched_e2e");
    TCase *tc = tcase_create("processes");
    tcase_set_timeout(tc, 120);
    tcase_add_unchecked_fixture(tc, setup, teardown);
    tcase_add_test(tc, chain_ring_sweep_through_the_collector);
    tcase_add_test(tc, chain_ring_bad_arguments);
    tcase_add_test(tc, compare_sweep_files);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
