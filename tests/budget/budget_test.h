/* budget_test.h: readers of a budget section (`obsctl budget --json` or
 * budget_agg_json), shared by the unit and the e2e suites. */
#ifndef OBSD_TESTS_BUDGET_TEST_H
#define OBSD_TESTS_BUDGET_TEST_H

#include <check.h>
#include <stddef.h>

#include <jansson.h>

/* Context i of the section (asserted). */
static inline const json_t *budget_context(const json_t *section, size_t i)
{
    const json_t *c = json_array_get(json_object_get(section, "contexts"), i);
    ck_assert_ptr_nonnull(c);
    return c;
}

/* The number o[k] (asserted). */
static inline double budget_num(const json_t *o, const char *k)
{
    const json_t *v = json_object_get(o, k);
    ck_assert_msg(json_is_number(v), "no number '%s'", k);
    return json_number_value(v);
}

#endif
