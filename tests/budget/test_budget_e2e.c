/*
 * test_budget_e2e.c: the budget path across real processes. Each test starts
 * the obsd daemon on a segment and store of its own, runs the
 * budgeted_kernels example against it, lets the run complete, and checks what
 * `obsctl budget --json` reads back from the store.
 */
#include <check.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "budget_test.h"
#include "e2e.h"

static struct e2e t;

static void setup(void)
{
    e2e_setup(&t, "budget");
    char *extra[] = {"--set", "exit_after_run=true", NULL};
    e2e_start_obsd(&t, extra);
}

static void teardown(void)
{
    e2e_teardown(&t);
}

/* exit_after_run: the daemon exits once the final snapshot is written. */
static void wait_run_final(void)
{
    ck_assert_msg(e2e_wait_obsd(&t, 10) == 0, "obsd did not finish the run within 10 s: %s",
                  e2e_obsd_log(&t));
}

/* Runs budgeted_kernels with the given extra arguments (NULL-terminated),
 * waits for the run to complete and returns the `obsctl budget --json`
 * document. */
static json_t *run_example(const char *first, ...)
{
    char *argv[40] = {"budgeted_kernels", "--name", t.name};
    int argc = 3;
    va_list ap;
    va_start(ap, first);
    for (const char *a = first; a && argc < 38; a = va_arg(ap, const char *))
        argv[argc++] = (char *)a;
    va_end(ap);
    argv[argc] = NULL;
    ck_assert_int_eq(e2e_run(&t, argv, NULL, 60, NULL), 0);
    wait_run_final();
    char *budget[] = {"obsctl", "budget", "--store", t.store, "--json", NULL};
    return e2e_run_json(&t, budget, 10);
}

START_TEST(participant_sleep_is_residual)
{
    json_t *doc = run_example("--contexts", "1", "--matmuls", "2", "--size", "32", "--no-participant-work",
                              "--residual-sleep-ms", "200", NULL);
    const json_t *c = budget_context(doc, 0);
    ck_assert_msg(budget_num(c, "residual_s") >= 0.150, "residual %.6f s", budget_num(c, "residual_s"));
    ck_assert_double_le(budget_num(c, "residual_s"), budget_num(c, "wall_s"));
    json_decref(doc);
}
END_TEST

START_TEST(reconstruction_is_overhead_not_residual)
{
    json_t *doc = run_example("--contexts", "1", "--matmuls", "1", "--size", "128", "--reconstructions", "10",
                              "--no-participant-work", NULL);
    const json_t *c = budget_context(doc, 0);
    double residual = budget_num(c, "residual_s"), overhead = budget_num(c, "overhead_s");
    ck_assert_msg(residual < 0.010, "residual %.6f s", residual);
    ck_assert_msg(overhead > residual, "overhead %.6f s <= residual %.6f s", overhead, residual);
    const json_t *tolist = json_object_get(json_object_get(c, "operations"), "tolist");
    ck_assert_ptr_nonnull(tolist);
    ck_assert_double_gt(budget_num(tolist, "overhead_s"), 0.0);
    json_decref(doc);
}
END_TEST

START_TEST(mixed_run_identity)
{
    json_t *doc = run_example("--contexts", "3", "--mixed", "--matmuls", "4", "--size", "48",
                              "--residual-sleep-ms", "20", "--reconstructions", "2", NULL);
    const json_t *contexts = json_object_get(doc, "contexts");
    ck_assert_uint_eq(json_array_size(contexts), 3);
    for (size_t i = 0; i < 3; i++) {
        const json_t *c = budget_context(doc, i);
        double sum = budget_num(c, "backend_s") + budget_num(c, "overhead_s") + budget_num(c, "residual_s");
        ck_assert_msg(fabs(budget_num(c, "wall_s") - sum) <= 0.05, "context %zu: wall %.6f vs %.6f", i,
                      budget_num(c, "wall_s"), sum);
        ck_assert(json_is_false(json_object_get(c, "exhausted")));
        const json_t *by_ns = json_object_get(c, "by_namespace");
        char label[64];
        snprintf(label, sizeof label, "participant%zu.layer1", i);
        ck_assert_msg(json_object_get(by_ns, label) != NULL, "no namespace %s", label);
        ck_assert_uint_eq(json_object_size(json_object_get(c, "operations")), 5);
    }
    const json_t *s = json_object_get(doc, "session");
    double sum = budget_num(s, "backend_s") + budget_num(s, "overhead_s") + budget_num(s, "residual_s");
    ck_assert_msg(fabs(budget_num(s, "wall_s") - sum) <= 0.05, "session: wall %.6f vs %.6f", budget_num(s, "wall_s"),
                  sum);
    ck_assert_int_eq(json_integer_value(json_object_get(s, "contexts")), 3);
    const json_t *mm = json_object_get(json_object_get(s, "operations"), "matmul");
    ck_assert_int_eq(json_integer_value(json_object_get(mm, "calls")), 12);
    ck_assert_int_eq(json_integer_value(json_object_get(mm, "flop_cost")), 12 * (2 * 48 * 48 * 48 - 48 * 48) * 2);
    json_decref(doc);
}
END_TEST

START_TEST(exhausted_budget_is_reported)
{
    /* 8x8 float64 matmul costs 1920: the second and third are refused */
    json_t *doc = run_example("--contexts", "1", "--matmuls", "3", "--size", "8", "--budget", "2000", NULL);
    const json_t *c = budget_context(doc, 0);
    ck_assert(json_is_true(json_object_get(c, "exhausted")));
    ck_assert_int_eq(json_integer_value(json_object_get(c, "flops_used")), 1920);
    ck_assert_int_eq(json_integer_value(json_object_get(c, "flops_remaining")), 80);
    ck_assert_int_eq(json_integer_value(json_object_get(c, "flop_budget")), 2000);
    const json_t *mm = json_object_get(json_object_get(c, "operations"), "matmul");
    ck_assert_int_eq(json_integer_value(json_object_get(mm, "calls")), 1);
    ck_assert_int_eq(json_integer_value(json_object_get(mm, "flop_cost")), 1920);
    ck_assert_str_eq(json_string_value(json_object_get(c, "namespace")), "participant0");
    json_decref(doc);
}
END_TEST

START_TEST(json_has_the_documented_shape)
{
    json_t *doc = run_example("--contexts", "2", "--matmuls", "1", "--size", "16", NULL);
    ck_assert_uint_eq(json_object_size(doc), 2);
    static const char *keys[] = {"namespace", "flop_budget", "flops_used", "flops_remaining", "exhausted", "wall_s",
                                 "backend_s", "overhead_s", "residual_s", "operations", "by_namespace"};
    for (size_t i = 0; i < 2; i++) {
        const json_t *c = budget_context(doc, i);
        ck_assert_uint_eq(json_object_size(c), sizeof keys / sizeof *keys);
        for (size_t k = 0; k < sizeof keys / sizeof *keys; k++)
            ck_assert_msg(json_object_get(c, keys[k]) != NULL, "context lacks %s", keys[k]);
        const json_t *mm = json_object_get(json_object_get(c, "operations"), "matmul");
        static const char *op_keys[] = {"flop_cost", "calls", "backend_s", "overhead_s"};
        ck_assert_uint_eq(json_object_size(mm), 4);
        for (size_t k = 0; k < 4; k++)
            ck_assert_ptr_nonnull(json_object_get(mm, op_keys[k]));
    }
    ck_assert(json_is_object(json_object_get(doc, "session")));
    json_decref(doc);

    /* the table form and bad arguments */
    char *table = NULL;
    char *targv[] = {"obsctl", "budget", "--store", t.store, NULL};
    ck_assert_int_eq(e2e_run_split(&t, targv, NULL, 10, &table, NULL), 0);
    ck_assert_ptr_nonnull(strstr(table, "participant1"));
    ck_assert_ptr_nonnull(strstr(table, "matmul"));
    free(table);
    char *bad[] = {"obsctl", "budget", "--store", t.store, "--bogus", NULL};
    ck_assert_int_eq(e2e_run(&t, bad, NULL, 10, NULL), 2);
    char *norun[] = {"obsctl", "budget", "no-such-run", "--store", t.store, NULL};
    ck_assert_int_eq(e2e_run(&t, norun, NULL, 10, NULL), 1);
}
END_TEST

/* A run that used no budgets has no budget section: `obsctl show` offers no
 * budget table and `obsctl budget` says why it has nothing to print. */
START_TEST(run_without_budgets_has_no_section)
{
    char *sargv[] = {"span_storm", "--name", t.name, "--records", "1000", NULL};
    ck_assert_int_eq(e2e_run(&t, sargv, NULL, 60, NULL), 0);
    wait_run_final();

    char *show[] = {"obsctl", "show", "--store", t.store, "--final", "--json", NULL};
    json_t *snap = e2e_run_json(&t, show, 10);
    ck_assert_ptr_null(json_object_get(snap, "budget"));
    ck_assert_ptr_nonnull(json_object_get(snap, "metrics"));   /* the run itself is there */
    json_decref(snap);
    char *out = NULL;
    char *table[] = {"obsctl", "show", "--store", t.store, "--final", NULL};
    ck_assert_int_eq(e2e_run_split(&t, table, NULL, 10, &out, NULL), 0);
    ck_assert_ptr_null(strstr(out, "obsctl budget"));
    free(out);
    char *budget[] = {"obsctl", "budget", "--store", t.store, NULL};
    ck_assert_int_eq(e2e_run(&t, budget, NULL, 10, &out), 1);
    ck_assert_msg(strstr(out, "no budget records") != NULL, "obsctl budget said: %s", out);
    free(out);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("budget_e2e");
    TCase *tc = tcase_create("daemon");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, participant_sleep_is_residual);
    tcase_add_test(tc, reconstruction_is_overhead_not_residual);
    tcase_add_test(tc, mixed_run_identity);
    tcase_add_test(tc, exhausted_budget_is_reported);
    tcase_add_test(tc, json_has_the_documented_shape);
    tcase_add_test(tc, run_without_budgets_has_no_section);
    suite_add_tcase(s, tc);
    return e2e_run_suite(s);
}
