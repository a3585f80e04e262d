/*
 * budget_overhead: what the budget hot paths cost a producer thread.
 *
 *   budget_overhead [--iterations N] [--name NAME]
 *
 * Measures ns per obsd_budget_charge (without and with a wall-time limit),
 * per dispatch span begin+end (outermost: two clock reads; nested pair; inner
 * span inside an open one: no clock read) and per kernel span begin+end,
 * against two
 * baselines measured in the same run: an empty loop and a bare pair of
 * obsd_now() calls (what any span must pay for its two timestamps). Each
 * figure is the median of 5 rounds. Prints one JSON object per result.
 * Without --name the context has no segment (accounting only); with it, its
 * progress records go to the collector of NAME as in a real run.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "obsd/obsd.h"

#define ROUNDS 5

static uint64_t iterations = 5000000;
static obsd_budget_op_t op;
static volatile uint64_t sink;

static uint64_t mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void empty_loop(uint64_t n)
{
    for (uint64_t i = 0; i < n; i++)
        __asm__ __volatile__("" ::: "memory");
}

static void now_pair(uint64_t n)
{
    uint64_t acc = 0;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t a = obsd_now();
        acc += obsd_now() - a;
    }
    sink = acc;
}

static void charge(uint64_t n)
{
    for (uint64_t i = 0; i < n; i++)
        obsd_budget_charge(op, 2, NULL);
}

static void dispatch_span(uint64_t n)
{
    for (uint64_t i = 0; i < n; i++) {
        obsd_budget_dispatch_begin(op, 0);
        obsd_budget_dispatch_end();
    }
}

static void nested_dispatch_span(uint64_t n)
{
    for (uint64_t i = 0; i < n; i++) {
        obsd_budget_dispatch_begin(op, 0);
        obsd_budget_dispatch_begin(op, 0);
        obsd_budget_dispatch_end();
        obsd_budget_dispatch_end();
    }
}

/* Spans inside an already open one only count depth: no clock read. */
static void inner_dispatch_span(uint64_t n)
{
    obsd_budget_dispatch_begin(op, 0);
    for (uint64_t i = 0; i < n; i++) {
        obsd_budget_dispatch_begin(op, 0);
        obsd_budget_dispatch_end();
    }
    obsd_budget_dispatch_end();
}

static void kernel_span(uint64_t n)
{
    for (uint64_t i = 0; i < n; i++) {
        obsd_budget_kernel_begin(op);
        obsd_budget_kernel_end();
    }
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Median ns per call of fn over ROUNDS rounds. */
static double measure(void (*fn)(uint64_t), uint64_t n)
{
    double r[ROUNDS];
    fn(n / 10);  /* warm up */
    for (int i = 0; i < ROUNDS; i++) {
        uint64_t t0 = mono();
        fn(n);
        r[i] = (double)(mono() - t0) / (double)n;
    }
    qsort(r, ROUNDS, sizeof *r, cmp_double);
    return r[ROUNDS / 2];
}

static void report(const char *name, double ns, const char *baseline, double base_ns)
{
    printf("{\"bench\":\"budget_overhead\",\"name\":\"%s\",\"iterations\":%llu,\"ns_per_op\":%.2f,"
           "\"baseline\":\"%s\",\"baseline_ns\":%.2f,\"ratio\":%.3f,\"excess_ns\":%.2f}\n",
           name, (unsigned long long)iterations, ns, baseline, base_ns, base_ns > 0 ? ns / base_ns : 0.0,
           ns - base_ns);
}

int main(int argc, char **argv)
{
    static const struct option lo[] = {
        {"iterations", required_argument, NULL, 'i'},
        {"name", required_argument, NULL, 'n'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *name = NULL;
    int ch;
    opterr = 0;
    while ((ch = getopt_long(argc, argv, ":i:n:h", lo, NULL)) != -1) {
        switch (ch) {
        case 'i': {
            char *end;
            errno = 0;
            unsigned long long v = strtoull(optarg, &end, 10);
            if (errno || *end || end == optarg || v < 1000 || optarg[0] == '-') {
                fprintf(stderr, "budget_overhead: --iterations wants an integer >= 1000, not '%s'\n", optarg);
                return 2;
            }
            iterations = v;
            break;
        }
        case 'n':
            name = optarg;
            break;
        case 'h':
            printf("usage: budget_overhead [--iterations N] [--name NAME]\n"
                   "  --iterations N  calls per round (default 5000000; median of 5 rounds)\n"
                   "  --name NAME     send the context's records to the collector of segment NAME\n");
            return 0;
        case ':':
            fprintf(stderr, "budget_overhead: option %s needs an argument\n", argv[optind - 1]);
            return 2;
        default:
            fprintf(stderr, "budget_overhead: unknown option '%s'\n", argv[optind - 1]);
            return 2;
        }
    }
    obsd_t *h = NULL;
    if (name && !(h = obsd_open(name))) {
        fprintf(stderr, "budget_overhead: %s\n", obsd_last_error());
        return 1;
    }
    op = obsd_budget_op("bench");

    double empty = measure(empty_loop, iterations);
    double pair = measure(now_pair, iterations);

    if (obsd_budget_open(h, UINT64_MAX, 0, "bench") != OBSD_OK) {
        fprintf(stderr, "budget_overhead: %s\n", obsd_last_error());
        return 1;
    }
    double c = measure(charge, iterations);
    double d = measure(dispatch_span, iterations);
    double nd = measure(nested_dispatch_span, iterations);
    double inner = measure(inner_dispatch_span, iterations);
    double k = measure(kernel_span, iterations);
    obsd_budget_close(NULL);

    if (obsd_budget_open(h, UINT64_MAX, 3600.0, "bench_wall") != OBSD_OK) {
        fprintf(stderr, "budget_overhead: %s\n", obsd_last_error());
        return 1;
    }
    double cw = measure(charge, iterations);
    obsd_budget_close(NULL);

    report("empty_loop", empty, "empty_loop", empty);
    report("now_pair", pair, "empty_loop", empty);
    report("charge", c, "empty_loop", empty);
    report("charge_with_wall_limit", cw, "now_pair", pair / 2);
    report("dispatch_span_begin_end", d, "now_pair", pair);
    report("nested_dispatch_span_pair", nd, "now_pair", pair);
    report("inner_dispatch_span_begin_end", inner, "empty_loop", empty);
    report("kernel_span_begin_end", k, "now_pair", pair);
    if (h)
        obsd_close(h);
    return 0;
}
