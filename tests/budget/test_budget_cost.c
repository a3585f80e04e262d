/* test_budget_cost.c: the cost helpers reproduce the pinned FLOP counts. */
#include <check.h>
#include <stdlib.h>

#include "obsd/obsd.h"

START_TEST(matmul_8x8)
{
    ck_assert_uint_eq(obsd_flops_matmul(8, 8, 8, OBSD_DTYPE_F32), 960);
    ck_assert_uint_eq(obsd_flops_matmul(8, 8, 8, OBSD_DTYPE_F64), 1920);
    ck_assert_uint_eq(obsd_flops_matmul(8, 8, 8, OBSD_DTYPE_C64), 3968);
    ck_assert_uint_eq(obsd_flops_matmul(8, 8, 8, OBSD_DTYPE_C128), 7936);
}
END_TEST

START_TEST(multiply_100)
{
    ck_assert_uint_eq(obsd_flops_elementwise(OBSD_EW_MULTIPLY, 100, OBSD_DTYPE_F32), 100);
    ck_assert_uint_eq(obsd_flops_elementwise(OBSD_EW_MULTIPLY, 100, OBSD_DTYPE_F64), 200);
    ck_assert_uint_eq(obsd_flops_elementwise(OBSD_EW_MULTIPLY, 100, OBSD_DTYPE_C64), 600);
    ck_assert_uint_eq(obsd_flops_elementwise(OBSD_EW_MULTIPLY, 100, OBSD_DTYPE_C128), 1200);
}
END_TEST

START_TEST(sin_100_f32)
{
    ck_assert_uint_eq(obsd_flops_elementwise(OBSD_EW_TRANSCENDENTAL, 100, OBSD_DTYPE_F32), 1600);
}
END_TEST

START_TEST(fft_1024)
{
    ck_assert_uint_eq(obsd_flops_fft(1024, OBSD_DTYPE_F32), 51200);
    ck_assert_uint_eq(obsd_flops_fft(1024, OBSD_DTYPE_I32), 102400);
}
END_TEST

START_TEST(sum_1000_i32)
{
    ck_assert_uint_eq(obsd_flops_reduce(1000, OBSD_DTYPE_I32), 1998);
    ck_assert_uint_eq(obsd_flops_reduce(1000, OBSD_DTYPE_F32), 999);
}
END_TEST

START_TEST(other_factors)
{
    /* complex add 2, divide 11; a sequential copy 1 per element */
    ck_assert_uint_eq(obsd_flops_elementwise(OBSD_EW_ADD, 10, OBSD_DTYPE_C64), 20);
    ck_assert_uint_eq(obsd_flops_elementwise(OBSD_EW_DIVIDE, 10, OBSD_DTYPE_C128), 220);
    ck_assert_uint_eq(obsd_flops_elementwise(OBSD_EW_COPY, 10, OBSD_DTYPE_F32), 10);
    /* matrix-vector: m(2k-1) */
    ck_assert_uint_eq(obsd_flops_matmul(4, 3, 1, OBSD_DTYPE_F32), 4 * 5);
    /* sort: n ceil(log2 n) at weight 4 */
    ck_assert_uint_eq(obsd_flops_sort(8, OBSD_DTYPE_F32), 8 * 3 * 4);
    ck_assert_uint_eq(obsd_flops_reduce_to(100, 10, OBSD_DTYPE_F64), 180);
}
END_TEST

START_TEST(saturates)
{
    ck_assert_uint_eq(obsd_flops_matmul(UINT64_MAX, 2, 2, OBSD_DTYPE_F32), UINT64_MAX);
    ck_assert_uint_eq(obsd_flops_elementwise(OBSD_EW_TRANSCENDENTAL, UINT64_MAX / 2, OBSD_DTYPE_F64), UINT64_MAX);
    ck_assert_uint_eq(obsd_flops_matmul(0, 8, 8, OBSD_DTYPE_F32), 0);
    ck_assert_uint_eq(obsd_flops_reduce(0, OBSD_DTYPE_F32), 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("budget_cost");
    TCase *tc = tcase_create("pinned");
    tcase_add_test(tc, matmul_8x8);
    tcase_add_test(tc, multiply_100);
    tcase_add_test(tc, sin_100_f32);
    tcase_add_test(tc, fft_1024);
    tcase_add_test(tc, sum_1000_i32);
    tcase_add_test(tc, other_factors);
    tcase_add_test(tc, saturates);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
