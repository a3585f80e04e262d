/*
 * budget_cost.c: FLOP cost formulas (pure functions, part of libobsd).
 *
 * The conventions: a fused multiply-add counts 2; element types of 64 bits
 * (and complex128, whose parts are 64-bit) bill at rate 2, narrower ones at 1;
 * complex arithmetic bills the real operations it takes (add 2, multiply 6,
 * divide 11), and complex contractions count 6 per multiply and 2 per add
 * exactly; transcendentals weigh 16 and sorts 4. Every product saturates.
 */
#include "obsd/obsd.h"

static uint64_t sat_mul(uint64_t a, uint64_t b)
{
    uint64_t r;
    return __builtin_mul_overflow(a, b, &r) ? UINT64_MAX : r;
}

static uint64_t sat_add(uint64_t a, uint64_t b)
{
    uint64_t r;
    return __builtin_add_overflow(a, b, &r) ? UINT64_MAX : r;
}

static bool is_complex(enum obsd_dtype dt)
{
    return dt == OBSD_DTYPE_C64 || dt == OBSD_DTYPE_C128;
}

static bool is_integer(enum obsd_dtype dt)
{
    return dt <= OBSD_DTYPE_U64;   /* bool and the signed/unsigned integers */
}

static uint64_t dtype_rate(enum obsd_dtype dt)
{
    switch (dt) {
    case OBSD_DTYPE_I64:
    case OBSD_DTYPE_U64:
    case OBSD_DTYPE_F64:
    case OBSD_DTYPE_C128:
        return 2;
    default:
        return 1;
    }
}

static uint64_t ceil_log2(uint64_t n)
{
    if (n <= 1)
        return 0;
    return 64 - (uint64_t)__builtin_clzll(n - 1);
}

uint64_t obsd_flops_matmul(uint64_t m, uint64_t k, uint64_t n, enum obsd_dtype dt)
{
    if (m == 0 || k == 0 || n == 0)
        return 0;
    uint64_t mn = sat_mul(m, n);
    uint64_t mkn = sat_mul(mn, k);
    uint64_t cost;
    if (is_complex(dt)) {
        /* mkn complex multiplies and mn(k-1) complex adds */
        cost = sat_add(sat_mul(6, mkn), sat_mul(2, sat_mul(mn, k - 1)));
    } else {
        uint64_t two = sat_mul(2, mkn);
        cost = two == UINT64_MAX ? two : two - mn;
    }
    return sat_mul(cost, dtype_rate(dt));
}

uint64_t obsd_flops_elementwise(enum obsd_elementwise_op op, uint64_t n, enum obsd_dtype dt)
{
    uint64_t per = 1;
    switch (op) {
    case OBSD_EW_ADD:
        per = is_complex(dt) ? 2 : 1;
        break;
    case OBSD_EW_MULTIPLY:
        per = is_complex(dt) ? 6 : 1;
        break;
    case OBSD_EW_DIVIDE:
        per = is_complex(dt) ? 11 : 1;
        break;
    case OBSD_EW_TRANSCENDENTAL:
        per = 16;
        break;
    case OBSD_EW_COPY:
        per = 1;
        break;
    }
    return sat_mul(sat_mul(n, per), dtype_rate(dt));
}

uint64_t obsd_flops_fft(uint64_t n, enum obsd_dtype dt)
{
    /* numpy computes float16/float32/complex64 input in complex64 and
     * everything else (integers, float64) in complex128. */
    uint64_t rate = (dt == OBSD_DTYPE_F16 || dt == OBSD_DTYPE_F32 || dt == OBSD_DTYPE_C64) ? 1 : 2;
    return sat_mul(sat_mul(sat_mul(5, n), ceil_log2(n)), rate);
}

uint64_t obsd_flops_reduce_to(uint64_t n_in, uint64_t n_out, enum obsd_dtype dt)
{
    if (n_out >= n_in)
        return 0;
    /* The accumulator is what is billed: integers narrower than 64 bits (and
     * bool) accumulate in int64. */
    enum obsd_dtype acc = is_integer(dt) ? OBSD_DTYPE_I64 : dt;
    uint64_t per = is_complex(dt) ? 2 : 1;
    return sat_mul(sat_mul(n_in - n_out, per), dtype_rate(acc));
}

uint64_t obsd_flops_reduce(uint64_t n, enum obsd_dtype dt)
{
    return obsd_flops_reduce_to(n, n ? 1 : 0, dt);
}

uint64_t obsd_flops_sort(uint64_t n, enum obsd_dtype dt)
{
    return sat_mul(sat_mul(sat_mul(n, ceil_log2(n)), 4), dtype_rate(dt));
}
