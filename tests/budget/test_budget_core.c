/*
 * test_budget_core.c: the producer's accounting (with explicit timestamps, so
 * every figure is exact) and the collector's aggregation of the records it
 * sends, without a segment (fake_writer.c captures the records).
 */
#include <check.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "budget/budget.h"
#include "budget/budget_wire.h"
#include "budget_test.h"
#include "fake_writer.h"
#include "obsd/obsd.h"

#define MS 1000000ull

/* Feeds every captured record into a fresh aggregator and returns its section. */
static json_t *aggregate(struct budget_agg **out_agg)
{
    struct budget_agg *a = budget_agg_new();
    char err[256];
    for (size_t i = 0; i < fake_count(); i++) {
        const struct fake_record *r = fake_get(i);
        ck_assert_msg(budget_agg_record(a, 4242, r->type, r->key, r->payload, r->len, err, sizeof err) == 0,
                      "record %zu rejected: %s", i, err);
    }
    json_t *j = budget_agg_json(a);
    ck_assert_ptr_nonnull(j);
    if (out_agg)
        *out_agg = a;
    else
        budget_agg_free(a);
    return j;
}

START_TEST(nested_open_is_refused)
{
    ck_assert_int_eq(obsd_budget_open(fake_handle(), 1000, 0, "outer"), OBSD_OK);
    ck_assert_int_eq(obsd_budget_open(fake_handle(), 1000, 0, "inner"), OBSD_ESTATE);
    ck_assert_ptr_nonnull(strstr(obsd_last_error(), "already open"));
    ck_assert_str_eq(obsd_budget_namespace(), "outer");
    ck_assert_int_eq(obsd_budget_close(NULL), OBSD_OK);
    ck_assert_int_eq(obsd_budget_close(NULL), OBSD_ESTATE);
    ck_assert_int_eq(obsd_budget_open(fake_handle(), 1000, 0, "again"), OBSD_OK);
    ck_assert_int_eq(obsd_budget_close(NULL), OBSD_OK);
}
END_TEST

static void *other_thread(void *arg)
{
    (void)arg;
    /* Each thread has its own context: this one is not nested. */
    intptr_t rc = obsd_budget_open(fake_handle(), 10, 0, "thread");
    struct obsd_budget_summary s;
    obsd_budget_op_t op = obsd_budget_op("t_op");
    if (rc == OBSD_OK)
        rc = obsd_budget_charge(op, 7, NULL);
    if (rc == OBSD_OK)
        rc = obsd_budget_close(&s);
    if (rc == OBSD_OK && s.flops_used != 7)
        rc = -100;
    fake_reset();
    return (void *)rc;
}

START_TEST(contexts_are_per_thread)
{
    ck_assert_int_eq(obsd_budget_open(fake_handle(), 1000, 0, "main"), OBSD_OK);
    pthread_t t;
    void *rc;
    ck_assert_int_eq(pthread_create(&t, NULL, other_thread, NULL), 0);
    ck_assert_int_eq(pthread_join(t, &rc), 0);
    ck_assert_int_eq((intptr_t)rc, OBSD_OK);
    struct obsd_budget_summary s;
    ck_assert_int_eq(obsd_budget_close(&s), OBSD_OK);
    ck_assert_uint_eq(s.flops_used, 0);
}
END_TEST

static void *intern_and_charge(void *arg)
{
    intptr_t rc = obsd_budget_open(fake_handle(), 1u << 30, 0, "t");
    for (int round = 0; rc == OBSD_OK && round < 200; round++) {
        char name[32];
        snprintf(name, sizeof name, "op%d", (round + (int)(intptr_t)arg) % 20);
        obsd_budget_op_t op = obsd_budget_op(name);
        if (!op || strcmp(obsd_budget_op_name(op), name) != 0)
            rc = -100;
        else
            rc = obsd_budget_charge(op, 1, NULL);
    }
    struct obsd_budget_summary s;
    if (rc == OBSD_OK)
        rc = obsd_budget_close(&s);
    if (rc == OBSD_OK && (s.flops_used != 200 || s.n_ops != 20))
        rc = -101;
    fake_reset();
    return (void *)rc;
}

/* Threads intern the same names concurrently: one id per name, and each
 * thread's context sees only its own charges. */
START_TEST(concurrent_interning)
{
    pthread_t t[4];
    for (intptr_t i = 0; i < 4; i++)
        ck_assert_int_eq(pthread_create(&t[i], NULL, intern_and_charge, (void *)(i * 7)), 0);
    for (int i = 0; i < 4; i++) {
        void *rc;
        ck_assert_int_eq(pthread_join(t[i], &rc), 0);
        ck_assert_int_eq((intptr_t)rc, OBSD_OK);
    }
    obsd_budget_op_t a = obsd_budget_op("op3");
    ck_assert_int_eq(obsd_budget_op("op3"), a);
}
END_TEST

START_TEST(bad_arguments)
{
    ck_assert_int_eq(obsd_budget_open(fake_handle(), 0, 0, NULL), OBSD_EINVAL);
    ck_assert_int_eq(obsd_budget_open(fake_handle(), 10, -1.0, NULL), OBSD_EINVAL);
    ck_assert_int_eq(obsd_budget_open(fake_handle(), 10, 0, "bad label"), OBSD_EINVAL);
    ck_assert_int_eq(obsd_budget_open(fake_handle(), 10, 0, "a..b"), OBSD_EINVAL);
    ck_assert_int_eq(obsd_budget_op("has space"), 0);
    ck_assert_int_eq(obsd_budget_op(""), 0);
    obsd_budget_op_t a = obsd_budget_op("same");
    ck_assert_int_ne(a, 0);
    ck_assert_int_eq(obsd_budget_op("same"), a);
    ck_assert_str_eq(obsd_budget_op_name(a), "same");
    /* everything needs an open context */
    ck_assert_int_eq(obsd_budget_charge(a, 1, NULL), OBSD_ESTATE);
    ck_assert_int_eq(obsd_budget_dispatch_begin(a, 0), OBSD_ESTATE);
    ck_assert_int_eq(obsd_budget_namespace_push("x"), OBSD_ESTATE);
    ck_assert_int_eq(obsd_budget_open(fake_handle(), 10, 0, NULL), OBSD_OK);
    ck_assert_int_eq(obsd_budget_charge(500, 1, NULL), OBSD_EINVAL);
    ck_assert_int_eq(obsd_budget_dispatch_end(), OBSD_ESTATE);
    ck_assert_int_eq(obsd_budget_kernel_end(), OBSD_ESTATE);
    ck_assert_int_eq(obsd_budget_namespace_pop(), OBSD_ESTATE);
    ck_assert_int_eq(obsd_budget_namespace_push("a.b"), OBSD_EINVAL);
    for (int i = 0; i < OBSD_BUDGET_MAX_SPAN_DEPTH; i++)
        ck_assert_int_eq(obsd_budget_dispatch_begin_at(0, 0, (uint64_t)i), OBSD_OK);
    ck_assert_int_eq(obsd_budget_dispatch_begin_at(0, 0, 100), OBSD_ESTATE);
    ck_assert_int_eq(obsd_budget_close_at(NULL, 1000), OBSD_OK);
}
END_TEST

START_TEST(exhausted_budget_refuses_before_charging)
{
    obsd_budget_op_t mm = obsd_budget_op("matmul");
    ck_assert_int_eq(obsd_budget_open_at(fake_handle(), 1000, 0, "grader", 0), OBSD_OK);
    struct obsd_budget_refusal why;
    ck_assert_int_eq(obsd_budget_charge(mm, 960, &why), OBSD_OK);
    ck_assert_int_eq(obsd_budget_charge(mm, 960, &why), OBSD_EBUDGET);
    ck_assert_str_eq(why.op, "matmul");
    ck_assert_uint_eq(why.flop_cost, 960);
    ck_assert_uint_eq(why.flops_remaining, 40);
    ck_assert_ptr_nonnull(strstr(obsd_last_error(), "matmul"));
    /* a charge that fits still goes through */
    ck_assert_int_eq(obsd_budget_charge(mm, 40, &why), OBSD_OK);
    ck_assert_int_eq(obsd_budget_charge(mm, 1, &why), OBSD_EBUDGET);
    ck_assert_uint_eq(why.flops_remaining, 0);
    struct obsd_budget_summary s;
    ck_assert_int_eq(obsd_budget_close_at(&s, 10 * MS), OBSD_OK);
    ck_assert_uint_eq(s.flops_used, 1000);
    ck_assert_uint_eq(s.flops_remaining, 0);
    ck_assert(s.exhausted);
    ck_assert_uint_eq(s.refused_charges, 2);
    ck_assert_uint_eq(s.n_ops, 1);
    struct obsd_budget_op_summary o;
    ck_assert_int_eq(obsd_budget_summary_op(0, &o), OBSD_OK);
    ck_assert_str_eq(o.name, "matmul");
    ck_assert_uint_eq(o.calls, 2);       /* refused calls are not recorded */
    ck_assert_uint_eq(o.flop_cost, 1000);
    ck_assert_int_eq(obsd_budget_summary_op(1, &o), OBSD_EINVAL);

    json_t *sec = aggregate(NULL);
    const json_t *c = budget_context(sec, 0);
    ck_assert(json_is_true(json_object_get(c, "exhausted")));
    ck_assert_int_eq(json_integer_value(json_object_get(c, "flops_used")), 1000);
    ck_assert_int_eq(json_integer_value(json_object_get(c, "flops_remaining")), 0);
    ck_assert_int_eq(json_integer_value(json_object_get(c, "refused_charges")), 2);
    const json_t *op = json_object_get(json_object_get(c, "operations"), "matmul");
    ck_assert_int_eq(json_integer_value(json_object_get(op, "calls")), 2);
    json_decref(sec);
}
END_TEST

START_TEST(refusal_without_exhausting_everything)
{
    obsd_budget_op_t mm = obsd_budget_op("matmul");
    ck_assert_int_eq(obsd_budget_open(fake_handle(), 2000, 0, NULL), OBSD_OK);
    ck_assert_int_eq(obsd_budget_charge(mm, 960, NULL), OBSD_OK);
    struct obsd_budget_summary s;
    ck_assert_int_eq(obsd_budget_status(&s), OBSD_OK);
    ck_assert(s.open);
    ck_assert(!s.exhausted);
    ck_assert_int_eq(obsd_budget_charge(mm, 1920, NULL), OBSD_EBUDGET);
    ck_assert_int_eq(obsd_budget_close(&s), OBSD_OK);
    ck_assert(s.exhausted);
    ck_assert_uint_eq(s.flops_used, 960);   /* unchanged by the refused op */
    json_t *sec = aggregate(NULL);
    ck_assert(json_is_true(json_object_get(budget_context(sec, 0), "exhausted")));
    ck_assert_int_eq(json_integer_value(json_object_get(budget_context(sec, 0), "flops_used")), 960);
    ck_assert(json_is_null(json_object_get(budget_context(sec, 0), "namespace")));
    json_decref(sec);
}
END_TEST

START_TEST(wall_limit_checked_at_each_charge)
{
    obsd_budget_op_t add = obsd_budget_op("add");
    ck_assert_int_eq(obsd_budget_open_at(fake_handle(), 1000000, 1.0, "timed", 5 * MS), OBSD_OK);
    struct obsd_budget_refusal why;
    ck_assert_int_eq(obsd_budget_charge_at(add, 10, 500 * MS, &why), OBSD_OK);
    ck_assert_int_eq(obsd_budget_charge_at(add, 10, 1500 * MS, &why), OBSD_EWALL);
    ck_assert_uint_eq(why.wall_ns, 1495 * MS);
    ck_assert_uint_eq(why.wall_limit_ns, 1000 * MS);
    ck_assert_uint_eq(why.flops_remaining, 1000000 - 10);
    struct obsd_budget_summary s;
    ck_assert_int_eq(obsd_budget_close_at(&s, 1600 * MS), OBSD_OK);
    ck_assert(s.wall_exceeded);
    ck_assert(!s.exhausted);
    ck_assert_uint_eq(s.flops_used, 10);
}
END_TEST

/* The unit test of the baseline/delta rule: an inner 300 ns span inside an
 * outer 500 ns span counts 500 ns, not 800. */
START_TEST(nested_spans_count_once)
{
    obsd_budget_op_t op = obsd_budget_op("op");
    ck_assert_int_eq(obsd_budget_open_at(fake_handle(), 100, 0, NULL, 0), OBSD_OK);
    ck_assert_int_eq(obsd_budget_dispatch_begin_at(op, 0, 1000), OBSD_OK);
    ck_assert_int_eq(obsd_budget_dispatch_begin_at(op, 0, 1100), OBSD_OK);
    ck_assert_int_eq(obsd_budget_dispatch_end_at(1400), OBSD_OK);
    ck_assert_int_eq(obsd_budget_dispatch_end_at(1500), OBSD_OK);
    struct obsd_budget_summary s;
    ck_assert_int_eq(obsd_budget_close_at(&s, 2000), OBSD_OK);
    ck_assert_uint_eq(s.dispatch_ns, 500);
    ck_assert_uint_eq(s.wall_ns, 2000);
    ck_assert_uint_eq(s.overhead_ns, 500);
    ck_assert_uint_eq(s.residual_ns, 1500);
    struct obsd_budget_op_summary o;
    ck_assert_int_eq(obsd_budget_summary_op(0, &o), OBSD_OK);
    ck_assert_uint_eq(o.overhead_ns, 500);
}
END_TEST

START_TEST(identity_when_nothing_clamps)
{
    obsd_budget_op_t mm = obsd_budget_op("matmul"), fft = obsd_budget_op("fft");
    ck_assert_int_eq(obsd_budget_open_at(fake_handle(), 1u << 30, 0, "est", 0), OBSD_OK);
    /* matmul: dispatch 100..900 with its kernel 300..700 */
    obsd_budget_dispatch_begin_at(mm, 0, 100);
    ck_assert_int_eq(obsd_budget_charge(mm, 960, NULL), OBSD_OK);
    obsd_budget_kernel_begin_at(mm, 300);
    obsd_budget_kernel_end_at(700);
    obsd_budget_dispatch_end_at(900);
    /* participant code 900..2000, then fft in a namespace: dispatch 2000..2500, kernel 2100..2200 */
    ck_assert_int_eq(obsd_budget_namespace_push("layer1"), OBSD_OK);
    ck_assert_str_eq(obsd_budget_namespace(), "est.layer1");
    obsd_budget_dispatch_begin_at(fft, 0, 2000);
    ck_assert_int_eq(obsd_budget_charge(fft, 51200, NULL), OBSD_OK);
    obsd_budget_kernel_begin_at(fft, 2100);
    obsd_budget_kernel_end_at(2200);
    obsd_budget_dispatch_end_at(2500);
    ck_assert_int_eq(obsd_budget_namespace_pop(), OBSD_OK);
    ck_assert_str_eq(obsd_budget_namespace(), "est");
    struct obsd_budget_summary s;
    ck_assert_int_eq(obsd_budget_close_at(&s, 3000), OBSD_OK);
    ck_assert_uint_eq(s.wall_ns, 3000);
    ck_assert_uint_eq(s.backend_ns, 500);
    ck_assert_uint_eq(s.overhead_ns, 800);
    ck_assert_uint_eq(s.residual_ns, 1700);
    ck_assert_uint_eq(s.backend_ns + s.overhead_ns + s.residual_ns, s.wall_ns);
    ck_assert_uint_eq(s.n_ops, 2);
    ck_assert_uint_eq(s.n_namespaces, 2);
    struct obsd_budget_op_summary o;
    ck_assert_int_eq(obsd_budget_summary_op(1, &o), OBSD_OK);
    ck_assert_str_eq(o.name, "fft");
    ck_assert_uint_eq(o.backend_ns, 100);
    ck_assert_uint_eq(o.overhead_ns, 400);
    ck_assert_int_eq(obsd_budget_summary_namespace(1, &o), OBSD_OK);
    ck_assert_str_eq(o.name, "est.layer1");
    ck_assert_uint_eq(o.flop_cost, 51200);

    json_t *sec = aggregate(NULL);
    const json_t *c = budget_context(sec, 0);
    ck_assert_str_eq(json_string_value(json_object_get(c, "namespace")), "est");
    ck_assert_double_eq_tol(budget_num(c, "wall_s"), 3e-6, 1e-12);
    ck_assert_double_eq_tol(budget_num(c, "backend_s"), 5e-7, 1e-12);
    ck_assert_double_eq_tol(budget_num(c, "overhead_s"), 8e-7, 1e-12);
    ck_assert_double_eq_tol(budget_num(c, "residual_s"), 1.7e-6, 1e-12);
    const json_t *ns = json_object_get(json_object_get(c, "by_namespace"), "est.layer1");
    ck_assert_int_eq(json_integer_value(json_object_get(ns, "flops_used")), 51200);
    ck_assert_ptr_nonnull(json_object_get(json_object_get(ns, "operations"), "fft"));
    const json_t *mm_row = json_object_get(json_object_get(c, "operations"), "matmul");
    ck_assert_double_eq_tol(budget_num(mm_row, "overhead_s"), 4e-7, 1e-12);
    ck_assert_double_eq_tol(budget_num(mm_row, "backend_s"), 4e-7, 1e-12);
    json_decref(sec);
}
END_TEST

START_TEST(clamp_kernel_over_dispatch)
{
    obsd_budget_op_t k = obsd_budget_op("k");
    ck_assert_int_eq(obsd_budget_open_at(fake_handle(), 100, 0, NULL, 0), OBSD_OK);
    obsd_budget_kernel_begin_at(k, 0);
    obsd_budget_kernel_end_at(800);       /* kernel 800 outside any dispatch */
    obsd_budget_dispatch_begin_at(k, 0, 900);
    obsd_budget_dispatch_end_at(1100);    /* dispatch 200 */
    struct obsd_budget_summary s;
    ck_assert_int_eq(obsd_budget_close_at(&s, 1000 + 200), OBSD_OK);
    ck_assert_uint_eq(s.backend_ns, 800);
    ck_assert_uint_eq(s.overhead_ns, 0);
    ck_assert_uint_eq(s.residual_ns, 1000);
    ck_assert_uint_gt(s.backend_ns + s.overhead_ns + s.residual_ns, s.wall_ns);
}
END_TEST

START_TEST(clamp_dispatch_over_wall)
{
    ck_assert_int_eq(obsd_budget_open_at(fake_handle(), 100, 0, NULL, 1000), OBSD_OK);
    obsd_budget_dispatch_begin_at(0, 0, 0);   /* the caller's clock started earlier */
    obsd_budget_dispatch_end_at(1800);
    struct obsd_budget_summary s;
    ck_assert_int_eq(obsd_budget_close_at(&s, 1500), OBSD_OK);
    ck_assert_uint_eq(s.wall_ns, 500);
    ck_assert_uint_eq(s.dispatch_ns, 1800);
    ck_assert_uint_eq(s.overhead_ns, 1800);
    ck_assert_uint_eq(s.residual_ns, 0);
    json_t *sec = aggregate(NULL);
    ck_assert_double_eq_tol(budget_num(budget_context(sec, 0), "residual_s"), 0.0, 1e-15);
    json_decref(sec);
}
END_TEST

START_TEST(participant_spans_add_nothing)
{
    obsd_budget_op_t op = obsd_budget_op("op");
    ck_assert_int_eq(obsd_budget_open_at(fake_handle(), 100, 0, NULL, 0), OBSD_OK);
    obsd_budget_dispatch_begin_at(op, OBSD_SPAN_PARTICIPANT, 0);
    obsd_budget_dispatch_begin_at(op, 0, 100);      /* framework work inside counts */
    obsd_budget_dispatch_end_at(300);
    obsd_budget_dispatch_end_at(1000);
    struct obsd_budget_summary s;
    ck_assert_int_eq(obsd_budget_close_at(&s, 1000), OBSD_OK);
    ck_assert_uint_eq(s.dispatch_ns, 200);
    ck_assert_uint_eq(s.residual_ns, 800);
    ck_assert_uint_eq(s.participant_spans, 1);
}
END_TEST

START_TEST(close_ends_open_spans)
{
    ck_assert_int_eq(obsd_budget_open_at(fake_handle(), 100, 0, NULL, 0), OBSD_OK);
    obsd_budget_dispatch_begin_at(0, 0, 100);
    obsd_budget_kernel_begin_at(0, 200);
    struct obsd_budget_summary s;
    ck_assert_int_eq(obsd_budget_close_at(&s, 400), OBSD_OK);
    ck_assert_uint_eq(s.dispatch_ns, 300);
    ck_assert_uint_eq(s.backend_ns, 200);
    ck_assert_uint_eq(s.residual_ns, 100);
}
END_TEST

START_TEST(progress_shows_the_open_context)
{
    obsd_budget_op_t op = obsd_budget_op("op");
    obsd_budget_set_progress_interval_ms(1);
    ck_assert_int_eq(obsd_budget_open_at(fake_handle(), 1000, 0, "live", 0), OBSD_OK);
    ck_assert_uint_eq(fake_count(), 1);
    ck_assert_uint_eq(fake_get(0)->type, OBSD_REC_BUDGET_OPEN);
    ck_assert_int_eq(obsd_budget_charge(op, 10, NULL), OBSD_OK);
    obsd_budget_dispatch_begin_at(op, 0, 100);
    obsd_budget_dispatch_end_at(200);            /* before the interval: no record */
    ck_assert_uint_eq(fake_count(), 1);
    obsd_budget_dispatch_begin_at(op, 0, 2 * MS);
    obsd_budget_dispatch_end_at(3 * MS);         /* past it: one progress record */
    ck_assert_uint_eq(fake_count(), 2);
    ck_assert_uint_eq(fake_get(1)->type, OBSD_REC_BUDGET_PROGRESS);
    json_t *sec = aggregate(NULL);
    const json_t *c = budget_context(sec, 0);
    ck_assert(json_is_true(json_object_get(c, "open")));
    ck_assert_int_eq(json_integer_value(json_object_get(c, "flops_used")), 10);
    ck_assert_double_eq_tol(budget_num(c, "wall_s"), 3e-3, 1e-12);
    const json_t *sess = json_object_get(sec, "session");
    ck_assert_int_eq(json_integer_value(json_object_get(sess, "open_contexts")), 1);
    ck_assert_int_eq(json_integer_value(json_object_get(sess, "flops_used")), 10);
    json_decref(sec);
    ck_assert_int_eq(obsd_budget_flush(), OBSD_OK);
    ck_assert_uint_eq(fake_count(), 3);
    ck_assert_int_eq(obsd_budget_close(NULL), OBSD_OK);
    ck_assert_uint_eq(fake_get(3)->type, OBSD_REC_BUDGET_CLOSE);
}
END_TEST

START_TEST(session_sums_closed_and_open)
{
    obsd_budget_op_t op = obsd_budget_op("op");
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(obsd_budget_open_at(fake_handle(), 100, 0, i == 1 ? "b" : "a", 0), OBSD_OK);
        ck_assert_int_eq(obsd_budget_charge(op, 10 * (uint64_t)(i + 1), NULL), OBSD_OK);
        obsd_budget_dispatch_begin_at(op, 0, 0);
        obsd_budget_dispatch_end_at(100);
        if (i < 2)
            ck_assert_int_eq(obsd_budget_close_at(NULL, 1000), OBSD_OK);
    }
    ck_assert_int_eq(obsd_budget_flush(), OBSD_OK);
    struct budget_agg *a;
    json_t *sec = aggregate(&a);
    const json_t *sess = json_object_get(sec, "session");
    ck_assert_int_eq(json_integer_value(json_object_get(sess, "contexts")), 3);
    ck_assert_int_eq(json_integer_value(json_object_get(sess, "open_contexts")), 1);
    ck_assert_int_eq(json_integer_value(json_object_get(sess, "flops_used")), 60);
    ck_assert_int_eq(json_integer_value(json_object_get(sess, "flop_budget")), 300);
    const json_t *by_ns = json_object_get(sess, "by_namespace");
    ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(by_ns, "a"), "flops_used")), 40);
    ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(by_ns, "b"), "calls")), 1);
    ck_assert_double_eq_tol(budget_num(json_object_get(json_object_get(sess, "operations"), "op"), "overhead_s"), 3e-7,
                            1e-12);
    json_decref(sec);
    /* a second snapshot gives the same session (closed totals are not added twice) */
    sec = budget_agg_json(a);
    ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(sec, "session"), "flops_used")), 60);
    json_decref(sec);
    budget_agg_reset(a);
    sec = budget_agg_json(a);
    ck_assert_uint_eq(json_array_size(json_object_get(sec, "contexts")), 0);
    json_decref(sec);
    budget_agg_free(a);
    obsd_budget_close(NULL);
}
END_TEST

START_TEST(report_json_has_exactly_the_documented_keys)
{
    obsd_budget_op_t op = obsd_budget_op("op");
    ck_assert_int_eq(obsd_budget_open_at(fake_handle(), 100, 0, "r", 0), OBSD_OK);
    ck_assert_int_eq(obsd_budget_charge(op, 1, NULL), OBSD_OK);
    ck_assert_int_eq(obsd_budget_close_at(NULL, 10), OBSD_OK);
    json_t *sec = aggregate(NULL);
    char err[256];
    json_t *rep = budget_report_json(sec, err, sizeof err);
    ck_assert_msg(rep != NULL, "%s", err);
    ck_assert_uint_eq(json_object_size(rep), 2);
    const json_t *c = json_array_get(json_object_get(rep, "contexts"), 0);
    static const char *keys[] = {"namespace", "flop_budget", "flops_used", "flops_remaining", "exhausted", "wall_s",
                                 "backend_s", "overhead_s", "residual_s", "operations", "by_namespace"};
    ck_assert_uint_eq(json_object_size(c), sizeof keys / sizeof *keys);
    for (size_t i = 0; i < sizeof keys / sizeof *keys; i++)
        ck_assert_ptr_nonnull(json_object_get(c, keys[i]));
    ck_assert(json_is_object(json_object_get(rep, "session")));
    FILE *devnull = fopen("/dev/null", "w");
    ck_assert_int_eq(budget_report_print(devnull, sec, err, sizeof err), 0);
    fclose(devnull);
    json_decref(rep);
    json_decref(sec);
    json_t *bad = json_object();
    ck_assert_ptr_null(budget_report_json(bad, err, sizeof err));
    json_decref(bad);
}
END_TEST

/* Shared memory is untrusted: malformed records are rejected and counted. */
START_TEST(malformed_records_are_rejected)
{
    obsd_budget_op_t op = obsd_budget_op("op");
    ck_assert_int_eq(obsd_budget_open_at(fake_handle(), 100, 0, "ns", 0), OBSD_OK);
    ck_assert_int_eq(obsd_budget_charge(op, 5, NULL), OBSD_OK);
    ck_assert_int_eq(obsd_budget_close_at(NULL, 10), OBSD_OK);
    const struct fake_record *open = fake_get(0), *close = fake_get(1);
    struct budget_agg *a = budget_agg_new();
    char err[256];
    unsigned char buf[4096];
    /* truncations of every length */
    for (size_t l = 0; l < close->len; l++)
        ck_assert_int_eq(budget_agg_record(a, 1, close->type, close->key, close->payload, l, err, sizeof err), -1);
    for (size_t l = 0; l < open->len; l++)
        ck_assert_int_eq(budget_agg_record(a, 1, open->type, open->key, open->payload, l, err, sizeof err), -1);
    /* a row name offset pointing into the middle of a name */
    memcpy(buf, close->payload, close->len);
    struct obsd_pl_budget_row row;
    memcpy(&row, buf + sizeof(struct obsd_pl_budget_state), sizeof row);
    row.op_name += 1;
    memcpy(buf + sizeof(struct obsd_pl_budget_state), &row, sizeof row);
    ck_assert_int_eq(budget_agg_record(a, 1, close->type, close->key, buf, close->len, err, sizeof err), -1);
    ck_assert_ptr_nonnull(strstr(err, "name offset"));
    /* names area without its final NUL */
    memcpy(buf, close->payload, close->len);
    buf[close->len - 1] = 'x';
    ck_assert_int_eq(budget_agg_record(a, 1, close->type, close->key, buf, close->len, err, sizeof err), -1);
    /* more used than budgeted */
    memcpy(buf, close->payload, close->len);
    struct obsd_pl_budget_state st;
    memcpy(&st, buf, sizeof st);
    st.flops_used = st.flop_budget + 1;
    memcpy(buf, &st, sizeof st);
    ck_assert_int_eq(budget_agg_record(a, 1, close->type, close->key, buf, close->len, err, sizeof err), -1);
    /* a huge row count */
    memcpy(&st, close->payload, sizeof st);
    st.n_rows = UINT32_MAX;
    memcpy(buf, &st, sizeof st);
    ck_assert_int_eq(budget_agg_record(a, 1, close->type, close->key, buf, close->len, err, sizeof err), -1);
    /* context id 0 and unknown types */
    ck_assert_int_eq(budget_agg_record(a, 1, close->type, 0, close->payload, close->len, err, sizeof err), -1);
    ck_assert_int_eq(budget_agg_record(a, 1, 40, 1, close->payload, close->len, err, sizeof err), -1);
    uint64_t rejected = budget_agg_rejected(a);
    ck_assert_uint_eq(rejected, close->len + open->len + 6);
    /* nothing of it was kept, and the collector still takes good records */
    json_t *sec = budget_agg_json(a);
    ck_assert_uint_eq(json_array_size(json_object_get(sec, "contexts")), 0);
    json_decref(sec);
    ck_assert_int_eq(budget_agg_record(a, 1, open->type, open->key, open->payload, open->len, err, sizeof err), 0);
    ck_assert_int_eq(budget_agg_record(a, 1, close->type, close->key, close->payload, close->len, err, sizeof err), 0);
    sec = budget_agg_json(a);
    ck_assert_uint_eq(json_array_size(json_object_get(sec, "contexts")), 1);
    ck_assert_int_eq(json_integer_value(json_object_get(sec, "rejected_records")), (json_int_t)rejected);
    json_decref(sec);
    ck_assert_uint_eq(budget_agg_records(a), rejected + 2);
    /* a new run starts from nothing: the rejections were the previous run's */
    budget_agg_reset(a);
    ck_assert_uint_eq(budget_agg_records(a), 0);
    sec = budget_agg_json(a);
    ck_assert_int_eq(json_integer_value(json_object_get(sec, "rejected_records")), 0);
    json_decref(sec);
    budget_agg_free(a);
}
END_TEST

START_TEST(dropped_open_record_still_counts)
{
    obsd_budget_op_t op = obsd_budget_op("op");
    ck_assert_int_eq(obsd_budget_open_at(fake_handle(), 100, 0, "d", 0), OBSD_OK);
    fake_reset();                                   /* the open record never arrived */
    ck_assert_int_eq(obsd_budget_charge(op, 5, NULL), OBSD_OK);
    ck_assert_int_eq(obsd_budget_close_at(NULL, 10), OBSD_OK);
    json_t *sec = aggregate(NULL);
    const json_t *c = budget_context(sec, 0);
    ck_assert(json_is_false(json_object_get(c, "open")));
    ck_assert_str_eq(json_string_value(json_object_get(c, "namespace")), "d");
    ck_assert_int_eq(json_integer_value(json_object_get(c, "flops_used")), 5);
    json_decref(sec);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("budget_core");
    TCase *tc = tcase_create("producer");
    tcase_add_test(tc, nested_open_is_refused);
    tcase_add_test(tc, contexts_are_per_thread);
    tcase_add_test(tc, concurrent_interning);
    tcase_add_test(tc, bad_arguments);
    tcase_add_test(tc, exhausted_budget_refuses_before_charging);
    tcase_add_test(tc, refusal_without_exhausting_everything);
    tcase_add_test(tc, wall_limit_checked_at_each_charge);
    tcase_add_test(tc, nested_spans_count_once);
    tcase_add_test(tc, identity_when_nothing_clamps);
    tcase_add_test(tc, clamp_kernel_over_dispatch);
    tcase_add_test(tc, clamp_dispatch_over_wall);
    tcase_add_test(tc, participant_spans_add_nothing);
    tcase_add_test(tc, close_ends_open_spans);
    tcase_add_test(tc, progress_shows_the_open_context);
    suite_add_tcase(s, tc);
    TCase *ta = tcase_create("aggregator");
    tcase_add_test(ta, session_sums_closed_and_open);
    tcase_add_test(ta, report_json_has_exactly_the_documented_keys);
    tcase_add_test(ta, malformed_records_are_rejected);
    tcase_add_test(ta, dropped_open_record_still_counts);
    suite_add_tcase(s, ta);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
