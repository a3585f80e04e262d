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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "e2e.h"

static struct e2e t;

static void setup(void)
{
    e2e_setup(&t, "sched");
}

static void teardown(void)
{
    e2e_teardown(&t);
}

/* Waits until n runs have their final snapshot; returns the runs array. */
static json_t *wait_runs(size_t n)
{
    char *runs_json[] = {"obsctl", "runs", "--store", t.store, "--json", NULL};
    for (int i = 0; i < 300; i++) {
        char *out = NULL;
        if (e2e_run_split(&t, runs_json, NULL, 10, &out, NULL) == 0) {
            json_t *a = json_loads(out, 0, NULL);
            size_t done = 0, k;
            json_t *r;
            json_array_foreach(a, k, r) done += json_is_true(json_object_get(r, "final"));
            if (json_array_size(a) == n && done == n) {
                free(out);
                return a;
            }
            json_decref(a);
        }
        free(out);
        e2e_sleep_ms(100);
    }
    char *log = e2e_obsd_log(&t), *runs = NULL;
    char *runs_table[] = {"obsctl", "runs", "--store", t.store, NULL};
    e2e_run(&t, runs_table, NULL, 10, &runs);
    size_t len = strlen(log);
    ck_abort_msg("%zu final runs did not appear in the store; daemon log and runs:\n%s\n%s", n,
                 log + (len > 1500 ? len - 1500 : 0), runs);
    return NULL;
}

START_TEST(chain_ring_sweep_through_the_collector)
{
    e2e_start_obsd(&t, NULL);
    char sweep_file[300];
    snprintf(sweep_file, sizeof sweep_file, "%s/sweep.json", t.dir);
    char *sweep[] = {"chain_ring", "--name", t.name, "--sweep-axis", "workers", "--sweep-values", "1,2",
                     "--repeats", "2", "--duration", "0.4", "--warmup", "0.1", "--iters", "5",
                     "--ring-size", "32", "--output", sweep_file, "--quiet", NULL};
    ck_assert_int_eq(e2e_run(&t, sweep, NULL, 60, NULL), 0);

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
        char *show[] = {"obsctl", "show", (char *)id, "--final", "--store", t.store, "--json", NULL};
        json_t *snap = e2e_run_json(&t, show, 10);
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
    char *cmp_sweep[] = {"obsctl", "compare", "--sweep", sweep_file, NULL};
    ck_assert_int_eq(e2e_run_split(&t, cmp_sweep, NULL, 10, &out, NULL), 0);
    ck_assert_ptr_nonnull(strstr(out, "speedup"));
    ck_assert_ptr_nonnull(strstr(out, "1.00x"));
    ck_assert_ptr_nonnull(strstr(out, "100%"));
    free(out);
    /* the same five words ahead of the run ids in both */
    char *cmp_runs[16] = {"obsctl", "compare", "--store", t.store, "--json"};
    char *cmp_nobase[16] = {"obsctl", "compare", "--store", t.store, "no-such-run"};
    size_t nargs = 5;
    json_array_foreach(runs, k, r) {
        ck_assert_uint_lt(nargs, 15);
        cmp_runs[nargs] = cmp_nobase[nargs] = (char *)json_string_value(json_object_get(r, "run"));
        nargs++;
    }
    json_t *cmp = e2e_run_json(&t, cmp_runs, 10);
    json_t *cp = json_object_get(cmp, "points");
    ck_assert_int_eq(json_array_size(cp), 2);
    ck_assert_int_eq(json_integer_value(json_object_get(json_array_get(cp, 0), "repeats")), 2);
    ck_assert_double_eq_tol(json_number_value(json_object_get(json_array_get(cp, 0), "speedup")), 1.0, 1e-12);
    json_t *eff = json_object_get(json_array_get(cp, 1), "efficiency");
    json_t *sp = json_object_get(json_array_get(cp, 1), "speedup");
    ck_assert_double_eq_tol(json_number_value(eff), json_number_value(sp) / 2.0, 1e-12);
    json_decref(cmp);
    /* a missing baseline suppresses speedup, with a note */
    ck_assert_int_eq(e2e_run_split(&t, cmp_nobase, NULL, 10, &out, NULL), 1);
    ck_assert_ptr_nonnull(strstr(out, "note: speedup/efficiency left out"));
    ck_assert_ptr_null(strstr(out, "1.00x"));
    free(out);
    json_decref(runs);
}
END_TEST

START_TEST(chain_ring_bad_arguments)
{
    char *out = NULL;
    char *axis[] = {"chain_ring", "--sweep-axis", "cores", "--sweep-values", "1", NULL};
    ck_assert_int_eq(e2e_run(&t, axis, NULL, 10, &out), 2);
    ck_assert_ptr_nonnull(strstr(out, "--sweep-axis"));
    free(out);
    char *ring[] = {"chain_ring", "--group-size", "40", "--ring-size", "64", NULL};
    ck_assert_int_eq(e2e_run(&t, ring, NULL, 10, &out), 2);
    ck_assert_ptr_nonnull(strstr(out, "--ring-size"));
    free(out);
    char *workers[] = {"chain_ring", "--workers", "zero", NULL};
    ck_assert_int_eq(e2e_run(&t, workers, NULL, 10, &out), 2);
    ck_assert_ptr_nonnull(strstr(out, "--workers"));
    free(out);
    char *compare[] = {"obsctl", "compare", NULL};
    ck_assert_int_eq(e2e_run(&t, compare, NULL, 10, &out), 2);
    free(out);
}
END_TEST

/* compare on sweep files: a failed baseline suppresses speedup; a newer
 * schema is refused naming both versions; other axes have no efficiency. */
START_TEST(compare_sweep_files)
{
    char path[300];
    snprintf(path, sizeof path, "%s/cmp.json", t.dir);
    char *cmp[] = {"obsctl", "compare", "--sweep", path, NULL};
    char *cmp_json[] = {"obsctl", "compare", "--sweep", path, "--json", NULL};
    FILE *f = fopen(path, "w");
    fputs("{\"schema_version\":1,\"metadata\":{\"interrupted\":false},"
          "\"sweep\":{\"axis\":\"workers\"},\"points\":["
          "{\"label\":\"1\",\"inputs\":{\"workers\":1},\"repeats\":[],"
          "\"error\":{\"message\":\"child exited with status 1\",\"stderr_tail\":\"\"}},"
          "{\"label\":\"2\",\"inputs\":{\"workers\":2},\"repeats\":[{\"throughput\":10.0},"
          "{\"throughput\":14.0}],\"error\":null}]}", f);
    fclose(f);
    char *out = NULL;
    ck_assert_int_eq(e2e_run_split(&t, cmp, NULL, 10, &out, NULL), 0);
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
    json_t *j = e2e_run_json(&t, cmp_json, 10);
    json_t *p1 = json_array_get(json_object_get(j, "points"), 1);
    ck_assert_double_eq_tol(json_number_value(json_object_get(p1, "speedup")), 0.5, 1e-12);
    ck_assert(json_is_null(json_object_get(p1, "efficiency")));
    ck_assert(json_is_null(json_object_get(p1, "throughput_stdev")));
    json_decref(j);
    f = fopen(path, "w");
    fputs("{\"schema_version\":7,\"points\":[]}", f);
    fclose(f);
    ck_assert_int_eq(e2e_run(&t, cmp, NULL, 10, &out), 2);
    ck_assert_ptr_nonnull(strstr(out, "schema_version 7"));
    free(out);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("sched_e2e");
    TCase *tc = tcase_create("processes");
    tcase_set_timeout(tc, 120);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, chain_ring_sweep_through_the_collector);
    tcase_add_test(tc, chain_ring_bad_arguments);
    tcase_add_test(tc, compare_sweep_files);
    suite_add_tcase(s, tc);
    return e2e_run_suite(s);
}
