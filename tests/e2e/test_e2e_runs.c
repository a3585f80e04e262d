/*
 * test_e2e_runs.c: whole runs with real processes: obsd, span_storm producers
 * and obsctl, from OBSD_BUILD_DIR.
 *
 *  - a normal run ends complete, with every span accounted for:
 *    storm.span count + obsd_dropped_records == spans written by the storm;
 *  - SIGTERM mid-run: the final snapshot is marked interrupted;
 *  - SIGKILL of obsd mid-run: the producers keep running without blocking,
 *    the store stays readable, a restarted obsd re-attaches to the same
 *    segment and the same run and completes it, with every span accounted
 *    for exactly (the rings' tails move only after a store commit);
 *  - a copied store (cp -r) is read by obsctl with no daemon.
 */
#include <check.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "e2e.h"

static struct e2e t;

static void setup(void)
{
    e2e_setup(&t, "run");
}

static void teardown(void)
{
    e2e_teardown(&t);
}

/* The JSON summary line span_storm prints at exit. */
static json_t *storm_result(const char *out_path)
{
    char *text = e2e_read_file(out_path);
    ck_assert_ptr_nonnull(text);
    json_t *j = e2e_last_json_line(text);
    ck_assert_msg(j != NULL, "span_storm printed no summary: %s", text);
    free(text);
    return j;
}

static long long jint(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    ck_assert_msg(json_is_integer(v), "no integer \"%s\"", key);
    return (long long)json_integer_value(v);
}

static const char *jstr(json_t *o, const char *key)
{
    const char *v = json_string_value(json_object_get(o, key));
    ck_assert_msg(v != NULL, "no string \"%s\"", key);
    return v;
}

/* Waits until the daemon reports a live run and returns its id. */
static char *wait_for_live_run(void)
{
    for (int i = 0; i < 500; i++) {
        json_t *st = e2e_status(&t);
        if (st) {
            const char *state = json_string_value(json_object_get(st, "state"));
            const char *run = json_string_value(json_object_get(st, "run"));
            if (state && run && *run && !strcmp(state, "live")) {
                char *id = strdup(run);
                json_decref(st);
                return id;
            }
            json_decref(st);
        }
        e2e_sleep_ms(20);
    }
    ck_abort_msg("no live run appeared");
    return NULL;
}

START_TEST(normal_run_completes_with_every_record_accounted_for)
{
    e2e_start_obsd(&t, NULL);
    /* A watcher subscribed before the run follows it to its end. */
    char watch_out[512];
    snprintf(watch_out, sizeof watch_out, "%s/watch.out", t.dir);
    char *watcher[] = {"obsctl", "watch", "--plain", "--until-end", "--name", t.name,
                       "--store", t.store, NULL};
    pid_t watch_pid = e2e_spawn(&t, watcher, NULL, watch_out);
    e2e_sleep_ms(200);
    char out[512];
    snprintf(out, sizeof out, "%s/storm.out", t.dir);
    char *storm[] = {"span_storm", "--name", t.name, "--records", "200000", "--threads", "2", NULL};
    pid_t pid = e2e_spawn(&t, storm, NULL, out);
    ck_assert_int_eq(e2e_wait(pid, 60), 0);
    ck_assert_int_eq(e2e_wait(watch_pid, 60), 0);
    char *watched = e2e_read_output(watch_out);
    ck_assert_msg(strstr(watched, "storm.span") && strstr(watched, "state complete"), "%s", watched);
    free(watched);
    json_t *res = storm_result(out);
    long long written = jint(res, "written"), dropped = jint(res, "dropped");
    ck_assert_int_eq(written + dropped, 200000);

    json_t *snap = e2e_final_snapshot(&t, t.store, 30);
    ck_assert_msg(snap != NULL, "no final snapshot: %s", e2e_last_show_output());
    ck_assert_str_eq(jstr(snap, "state"), "complete");
    long long received = e2e_series_count(snap, "storm.span");
    long long lost = e2e_counter(snap, "obsd_dropped_records");
    ck_assert_int_ge(lost, 0);
    ck_assert_int_eq(received, written);
    ck_assert_int_eq(received + lost, written + dropped);

    /* The live views see the daemon and the finished run. */
    json_t *st = e2e_status(&t);
    ck_assert_ptr_nonnull(st);
    ck_assert_str_eq(jstr(st, "name"), t.name);
    ck_assert_str_eq(jstr(st, "run"), jstr(snap, "run"));
    json_decref(st);
    char *view = NULL;
    char *watch[] = {"obsctl", "watch", "--once", "--name", t.name, "--store", t.store, NULL};
    ck_assert_int_eq(e2e_run(&t, watch, NULL, 20, &view), 0);
    ck_assert_msg(strstr(view, "storm.span") && strstr(view, "complete"), "%s", view);
    free(view);

    ck_assert_int_eq(e2e_stop_obsd(&t, SIGTERM), 0);
    json_decref(snap);
    json_decref(res);
}
END_TEST

START_TEST(sigterm_mid_run_writes_an_interrupted_final_snapshot)
{
    e2e_start_obsd(&t, NULL);
    /* 2000 pauses of 5 ms per thread: runs far longer than the test needs. */
    char *storm[] = {"span_storm", "--name", t.name, "--records", "4000000", "--threads", "2",
                     "--pause-us", "5000", NULL};
    pid_t pid = e2e_spawn(&t, storm, NULL, NULL);
    char *run = wait_for_live_run();
    /* mid-run: spans persisted already (live comes with the session's first
     * event, which on a loaded machine can be a publish ahead of any span) */
    bool spans = false;
    for (int i = 0; i < 500 && !spans; i++) {
        json_t *latest = e2e_latest_snapshot(&t, t.store);
        spans = latest && e2e_series_count(latest, "storm.span") > 0;
        json_decref(latest);
        if (!spans)
            e2e_sleep_ms(20);
    }
    ck_assert_msg(spans, "no storm.span persisted in 10 s of a live run");
    ck_assert_int_eq(e2e_stop_obsd(&t, SIGTERM), 0);

    json_t *snap = e2e_final_snapshot(&t, t.store, 10);
    ck_assert_msg(snap != NULL, "no final snapshot after SIGTERM: %s", e2e_last_show_output());
    ck_assert_str_eq(jstr(snap, "run"), run);
    ck_assert_str_eq(jstr(snap, "state"), "interrupted");
    ck_assert_int_gt(e2e_series_count(snap, "storm.span"), 0);

    /* The producer never noticed: still running, not blocked. */
    ck_assert_int_eq(waitpid(pid, NULL, WNOHANG), 0);
    kill(pid, SIGKILL);
    e2e_wait(pid, 10);
    json_decref(snap);
    free(run);
}
END_TEST

START_TEST(sigkill_then_restart_continues_the_same_run)
{
    e2e_start_obsd(&t, NULL);
    char out[512];
    snprintf(out, sizeof out, "%s/storm.out", t.dir);
    /* 150 pauses of 20 ms per thread: about 3 s of spans. */
    char *storm[] = {"span_storm", "--name", t.name, "--records", "300000", "--threads", "2",
                     "--pause-us", "20000", NULL};
    pid_t pid = e2e_spawn(&t, storm, NULL, out);
    char *run = wait_for_live_run();
    e2e_sleep_ms(300);   /* let some snapshots reach the store */
    ck_assert_int_eq(e2e_stop_obsd(&t, SIGKILL), 128 + SIGKILL);

    /* No daemon: its socket refuses, the store is readable, the producer runs on. */
    char *msg = NULL;
    char *status[] = {"obsctl", "status", "--name", t.name, "--store", t.store, NULL};
    ck_assert_int_eq(e2e_run(&t, status, NULL, 20, &msg), 1);
    /* refused, or reset when the dead daemon's io_uring still held the
     * listening socket for an instant: either way, no obsd runs */
    ck_assert_msg(strstr(msg, "no obsd running for segment") &&
                      (strstr(msg, "connection refused") || strstr(msg, "connection reset")),
                  "%s", msg);
    free(msg);
    json_t *latest = e2e_latest_snapshot(&t, t.store);
    ck_assert_msg(latest != NULL, "store unreadable after SIGKILL: %s", e2e_last_show_output());
    ck_assert_str_eq(jstr(latest, "run"), run);
    long long before_kill = e2e_series_count(latest, "storm.span");
    json_decref(latest);
    ck_assert_int_eq(waitpid(pid, NULL, WNOHANG), 0);

    /* A new daemon on the same segment and store picks the run up. */
    e2e_start_obsd(&t, NULL);
    json_t *st = e2e_status(&t);
    ck_assert_ptr_nonnull(st);
    ck_assert_str_eq(jstr(st, "run"), run);
    json_decref(st);

    ck_assert_int_eq(e2e_wait(pid, 60), 0);
    json_t *res = storm_result(out);
    long long written = jint(res, "written"), dropped = jint(res, "dropped");
    ck_assert_int_eq(written + dropped, 300000);

    json_t *snap = e2e_final_snapshot(&t, t.store, 30);
    ck_assert_msg(snap != NULL, "no final snapshot after the restart: %s", e2e_last_show_output());
    ck_assert_str_eq(jstr(snap, "run"), run);
    ck_assert_str_eq(jstr(snap, "state"), "complete");
    long long received = e2e_series_count(snap, "storm.span");
    long long lost = e2e_counter(snap, "obsd_dropped_records");
    /* Exact across the kill: what the killed collector drained but had not
     * committed was still in the rings, and was read again exactly once. */
    ck_assert_msg(received == written && received + lost == written + dropped,
                  "received %lld + dropped %lld != written %lld + dropped by the storm %lld",
                  received, lost, written, dropped);
    ck_assert_int_gt(received, before_kill);
    ck_assert_int_eq(e2e_stop_obsd(&t, SIGTERM), 0);
    json_decref(snap);
    json_decref(res);
    free(run);
}
END_TEST

START_TEST(a_copied_store_is_read_without_a_daemon)
{
    e2e_start_obsd(&t, NULL);
    char *storm[] = {"span_storm", "--name", t.name, "--records", "5000", NULL};
    ck_assert_int_eq(e2e_run(&t, storm, NULL, 60, NULL), 0);
    json_t *snap = e2e_final_snapshot(&t, t.store, 30);
    ck_assert_ptr_nonnull(snap);
    ck_assert_int_eq(e2e_stop_obsd(&t, SIGTERM), 0);

    char copy[600], cmd[1400];
    snprintf(copy, sizeof copy, "%s/copied", t.dir);
    snprintf(cmd, sizeof cmd, "cp -r '%s' '%s'", t.store, copy);
    ck_assert_int_eq(system(cmd), 0);
    /* The original is gone: only the copy can answer. */
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", t.store);
    ck_assert_int_eq(system(cmd), 0);

    json_t *again = e2e_final_snapshot(&t, copy, 1);
    ck_assert_msg(again != NULL, "obsctl show cannot read the copied store");
    ck_assert_str_eq(jstr(again, "run"), jstr(snap, "run"));
    ck_assert_int_eq(e2e_series_count(again, "storm.span"), e2e_series_count(snap, "storm.span"));
    char *out = NULL;
    char *runs[] = {"obsctl", "runs", "--store", copy, NULL};
    ck_assert_int_eq(e2e_run(&t, runs, NULL, 20, &out), 0);
    ck_assert_msg(strstr(out, jstr(snap, "run")), "%s", out);
    free(out);
    json_decref(again);
    json_decref(snap);
}
END_TEST

/* Without --foreground obsd detaches and returns once it serves; a startup
 * failure is reported by the command itself. */
START_TEST(detached_daemon_reports_startup_and_writes_its_pidfile)
{
    char pidfile[600];
    snprintf(pidfile, sizeof pidfile, "%s/obsd.pid", t.dir);
    char *out = NULL;
    char *argv[] = {"obsd", "--name", t.name, "--store", t.store, "--pidfile", pidfile, NULL};
    ck_assert_int_eq(e2e_run(&t, argv, NULL, 30, &out), 0);
    free(out);
    char *text = e2e_read_file(pidfile);
    ck_assert_ptr_nonnull(text);
    pid_t pid = (pid_t)atol(text);
    free(text);
    ck_assert_int_gt(pid, 1);
    t.obsd = 0;
    json_t *st = e2e_status(&t);
    if (!st)
        kill(pid, SIGKILL);
    ck_assert_msg(st != NULL, "the detached obsd does not answer");
    ck_assert_int_eq(json_integer_value(json_object_get(st, "pid")), pid);
    json_decref(st);
    ck_assert_int_eq(kill(pid, SIGTERM), 0);
    /* Not our child: wait for its pidfile to go away. */
    int waited = 0;
    while (access(pidfile, F_OK) == 0 && waited++ < 1000)
        e2e_sleep_ms(20);
    ck_assert_msg(access(pidfile, F_OK) != 0, "pidfile still there after SIGTERM");

    char bad_store[700];
    snprintf(bad_store, sizeof bad_store, "%s/file", t.dir);
    FILE *f = fopen(bad_store, "w");
    ck_assert_ptr_nonnull(f);
    fclose(f);
    char *fail[] = {"obsd", "--name", t.name, "--store", bad_store, NULL};
    ck_assert_int_eq(e2e_run(&t, fail, NULL, 30, &out), 1);
    ck_assert_msg(strstr(out, "cannot create"), "%s", out);
    free(out);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("e2e_runs");
    TCase *tc = tcase_create("runs");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 180);
    tcase_add_test(tc, normal_run_completes_with_every_record_accounted_for);
    tcase_add_test(tc, sigterm_mid_run_writes_an_interrupted_final_snapshot);
    tcase_add_test(tc, sigkill_then_restart_continues_the_same_run);
    tcase_add_test(tc, a_copied_store_is_read_without_a_daemon);
    tcase_add_test(tc, detached_daemon_reports_startup_and_writes_its_pidfile);
    suite_add_tcase(s, tc);
    return e2e_run_suite(s);
}
