/*
 * budgeted_kernels: a grading harness in miniature. Each context bills one
 * "participant" for real matrix multiplies under a FLOP budget, while the
 * framework's own work (marshaling the arguments, reconstructing the result as
 * text, like a tolist()) runs inside dispatch spans, so it lands in overhead and
 * never in the participant's residual.
 *
 *   budgeted_kernels --name bench --contexts 3 --residual-sleep-ms 200
 *
 * Prints one JSON line per context with the split the producer computed.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "obsd/obsd.h"

struct opts {
    const char *name;
    unsigned contexts;
    unsigned size;
    unsigned matmuls;
    unsigned reconstructions;
    unsigned residual_sleep_ms;
    uint64_t budget;          /* 0: enough for everything */
    double wall_limit_s;
    bool no_participant_work;
    bool mixed;
    bool no_session;
};

static void usage(FILE *out)
{
    fprintf(out,
        "usage: budgeted_kernels --name NAME [options]\n"
        "\n"
        "Runs budget contexts of real float64 matrix multiplies against the obsd\n"
        "collector of segment NAME, between session started and session ended.\n"
        "Per multiply: a dispatch span (framework) marshals A and B, charges\n"
        "2mkn-mn FLOPs x2 (float64), runs the kernel in a kernel span and copies the\n"
        "result back. Between multiplies the participant updates A from the result\n"
        "(its own work, outside every span). Prints one JSON line per context.\n"
        "\n"
        "  --name NAME              segment /dev/shm/obsd.NAME (required)\n"
        "  --contexts N             budget contexts, one after another (default 3)\n"
        "  --size N                 matrix dimension (default 64)\n"
        "  --matmuls M              multiplies per context (default 4)\n"
        "  --reconstructions K      times the last result is reconstructed as text\n"
        "                           inside a dispatch span, per context (default 1)\n"
        "  --residual-sleep-ms MS   participant-only sleep of MS in each context\n"
        "  --no-participant-work    skip the participant's update between multiplies\n"
        "  --budget FLOPS           FLOP budget of each context (default: enough);\n"
        "                           a multiply that would exceed it is refused and skipped\n"
        "  --wall-limit S           wall-time limit of each context in seconds\n"
        "  --mixed                  also elementwise, reduce and fft-costed ops in\n"
        "                           namespaces layer0.., and a participant span\n"
        "  --no-session             do not send session started/ended\n"
        "  -h, --help               this help\n"
        "Exit status: 0, 1 when the segment cannot be opened, 2 for bad arguments.\n");
}

static int parse_uint(const char *opt, const char *text, uint64_t max, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(text, &end, 10);
    if (errno || end == text || *end || text[0] == '-' || v > max) {
        fprintf(stderr, "budgeted_kernels: %s wants an integer 0..%" PRIu64 ", not '%s'\n", opt, max, text);
        return -1;
    }
    *out = v;
    return 0;
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

/* ---- the "framework" ---- */

struct frame_work {
    unsigned n;
    double *a, *b, *c;        /* the participant's view */
    double *wa, *wb, *wc;     /* the server's copies */
    unsigned char *wire;      /* marshaled arguments */
    char *text;               /* a reconstructed result */
    size_t text_cap;
};

static void marshal(struct frame_work *f)
{
    size_t bytes = (size_t)f->n * f->n * sizeof(double);
    uint32_t hdr[2] = {f->n, f->n};
    memcpy(f->wire, hdr, sizeof hdr);
    memcpy(f->wire + sizeof hdr, f->a, bytes);
    memcpy(f->wire + sizeof hdr + bytes, f->b, bytes);
    memcpy(f->wa, f->wire + sizeof hdr, bytes);
    memcpy(f->wb, f->wire + sizeof hdr + bytes, bytes);
}

static void gemm(unsigned n, const double *a, const double *b, double *c)
{
    for (unsigned i = 0; i < n; i++) {
        double *ci = c + (size_t)i * n;
        memset(ci, 0, n * sizeof *ci);
        for (unsigned k = 0; k < n; k++) {
            double aik = a[(size_t)i * n + k];
            const double *bk = b + (size_t)k * n;
            for (unsigned j = 0; j < n; j++)
                ci[j] += aik * bk[j];
        }
    }
}

/* Materializes the result the way a tolist()/repr would: every element as text. */
static size_t reconstruct(struct frame_work *f)
{
    size_t pos = 0;
    size_t n2 = (size_t)f->n * f->n;
    for (size_t i = 0; i < n2; i++)
        pos += (size_t)snprintf(f->text + pos, f->text_cap - pos, "%.17g,", f->wc[i]);
    memcpy(f->c, f->wc, n2 * sizeof(double));
    return pos;
}

static int run_context(obsd_t *h, const struct opts *o, unsigned idx, struct frame_work *f)
{
    static obsd_budget_op_t mm, tolist, mul, sum, fft;
    if (!mm) {
        mm = obsd_budget_op("matmul");
        tolist = obsd_budget_op("tolist");
        mul = obsd_budget_op("multiply");
        sum = obsd_budget_op("sum");
        fft = obsd_budget_op("fft");
    }
    unsigned n = o->size;
    uint64_t mm_cost = obsd_flops_matmul(n, n, n, OBSD_DTYPE_F64);
    uint64_t n2 = (uint64_t)n * n;
    uint64_t budget = o->budget;
    if (!budget)
        budget = (mm_cost + obsd_flops_elementwise(OBSD_EW_MULTIPLY, n2, OBSD_DTYPE_F64) +
                  obsd_flops_reduce(n2, OBSD_DTYPE_F64) + obsd_flops_fft(n2, OBSD_DTYPE_F64)) * (o->matmuls + 1);
    char ns[64];
    snprintf(ns, sizeof ns, "participant%u", idx);
    int rc = obsd_budget_open(h, budget, o->wall_limit_s, ns);
    if (rc != OBSD_OK) {
        fprintf(stderr, "budgeted_kernels: obsd_budget_open: %s\n", obsd_last_error());
        return -1;
    }
    unsigned refused = 0;
    for (unsigned m = 0; m < o->matmuls; m++) {
        if (o->mixed)
            obsd_budget_namespace_push(m % 2 ? "layer1" : "layer0");
        struct obsd_budget_refusal why;
        obsd_budget_dispatch_begin(mm, 0);
        marshal(f);
        rc = obsd_budget_charge(mm, mm_cost, &why);
        if (rc == OBSD_OK) {
            obsd_budget_kernel_begin(mm);
            gemm(n, f->wa, f->wb, f->wc);
            obsd_budget_kernel_end();
            memcpy(f->c, f->wc, n2 * sizeof(double));
        }
        obsd_budget_dispatch_end();
        if (rc != OBSD_OK) {
            refused++;
            fprintf(stderr, "budgeted_kernels: context %u: %s refused (%s): cost %" PRIu64 ", remaining %" PRIu64 "\n",
                    idx, why.op, rc == OBSD_EBUDGET ? "budget" : "wall-time limit", why.flop_cost,
                    why.flops_remaining);
        }
        if (o->mixed && rc == OBSD_OK) {
            /* elementwise multiply and a sum reduction, each a dispatched kernel */
            obsd_budget_dispatch_begin(mul, 0);
            if (obsd_budget_charge(mul, obsd_flops_elementwise(OBSD_EW_MULTIPLY, n2, OBSD_DTYPE_F64), NULL) ==
                OBSD_OK) {
                obsd_budget_kernel_begin(mul);
                for (uint64_t i = 0; i < n2; i++)
                    f->wc[i] *= 0.5;
                obsd_budget_kernel_end();
            }
            obsd_budget_dispatch_end();
            obsd_budget_dispatch_begin(sum, 0);
            double total = 0;
            if (obsd_budget_charge(sum, obsd_flops_reduce(n2, OBSD_DTYPE_F64), NULL) == OBSD_OK) {
                obsd_budget_kernel_begin(sum);
                for (uint64_t i = 0; i < n2; i++)
                    total += f->wc[i];
                obsd_budget_kernel_end();
            }
            obsd_budget_dispatch_end();
            /* an fft-costed op whose kernel is a cheap stand-in */
            obsd_budget_dispatch_begin(fft, 0);
            if (obsd_budget_charge(fft, obsd_flops_fft(n2, OBSD_DTYPE_F64), NULL) == OBSD_OK) {
                obsd_budget_kernel_begin(fft);
                for (uint64_t i = 0; i < n2; i++)
                    f->wc[i] = f->wc[i] * 0.999 + total * 1e-12;
                obsd_budget_kernel_end();
            }
            obsd_budget_dispatch_end();
            /* a span the participant opens itself: adds nothing to dispatch */
            obsd_budget_dispatch_begin(0, OBSD_SPAN_PARTICIPANT);
            sleep_ms(2);
            obsd_budget_dispatch_end();
        }
        if (o->mixed)
            obsd_budget_namespace_pop();
        if (!o->no_participant_work) {
            /* the participant's own code: billed as residual */
            for (uint64_t i = 0; i < n2; i++)
                f->a[i] = 0.5 * f->a[i] + 1e-3 * tanh(f->c[i]);
        }
    }
    for (unsigned r = 0; r < o->reconstructions; r++) {
        obsd_budget_dispatch_begin(tolist, 0);
        reconstruct(f);
        obsd_budget_dispatch_end();
    }
    if (o->residual_sleep_ms)
        sleep_ms(o->residual_sleep_ms);

    struct obsd_budget_summary s;
    obsd_budget_close(&s);
    printf("{\"context\":%u,\"namespace\":\"%s\",\"flop_budget\":%" PRIu64 ",\"flops_used\":%" PRIu64
           ",\"exhausted\":%s,\"refused\":%u,\"wall_s\":%.9f,\"backend_s\":%.9f,\"overhead_s\":%.9f,"
           "\"residual_s\":%.9f,\"participant_spans\":%" PRIu64 "}\n",
           idx, s.ns, s.flop_budget, s.flops_used, s.exhausted ? "true" : "false", refused, s.wall_ns / 1e9,
           s.backend_ns / 1e9, s.overhead_ns / 1e9, s.residual_ns / 1e9, s.participant_spans);
    fflush(stdout);
    return 0;
}

int main(int argc, char **argv)
{
    struct opts o = {.contexts = 3, .size = 64, .matmuls = 4, .reconstructions = 1};
    enum { O_CONTEXTS = 256, O_SIZE, O_MATMULS, O_RECON, O_SLEEP, O_NOWORK, O_BUDGET, O_WALL, O_MIXED, O_NOSESSION };
    static const struct option lo[] = {
        {"name", required_argument, NULL, 'n'},
        {"contexts", required_argument, NULL, O_CONTEXTS},
        {"size", required_argument, NULL, O_SIZE},
        {"matmuls", required_argument, NULL, O_MATMULS},
        {"reconstructions", required_argument, NULL, O_RECON},
        {"residual-sleep-ms", required_argument, NULL, O_SLEEP},
        {"no-participant-work", no_argument, NULL, O_NOWORK},
        {"budget", required_argument, NULL, O_BUDGET},
        {"wall-limit", required_argument, NULL, O_WALL},
        {"mixed", no_argument, NULL, O_MIXED},
        {"no-session", no_argument, NULL, O_NOSESSION},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int ch;
    uint64_t v;
    opterr = 0;
    while ((ch = getopt_long(argc, argv, ":n:h", lo, NULL)) != -1) {
        switch (ch) {
        case 'n':
            o.name = optarg;
            break;
        case O_CONTEXTS:
            if (parse_uint("--contexts", optarg, 1000000, &v) < 0)
                return 2;
            o.contexts = (unsigned)v;
            break;
        case O_SIZE:
            if (parse_uint("--size", optarg, 4096, &v) < 0)
                return 2;
            if (v == 0) {
                fprintf(stderr, "budgeted_kernels: --size must be at least 1\n");
                return 2;
            }
            o.size = (unsigned)v;
            break;
        case O_MATMULS:
            if (parse_uint("--matmuls", optarg, 1000000, &v) < 0)
                return 2;
            o.matmuls = (unsigned)v;
            break;
        case O_RECON:
            if (parse_uint("--reconstructions", optarg, 1000000, &v) < 0)
                return 2;
            o.reconstructions = (unsigned)v;
            break;
        case O_SLEEP:
            if (parse_uint("--residual-sleep-ms", optarg, 3600000, &v) < 0)
                return 2;
            o.residual_sleep_ms = (unsigned)v;
            break;
        case O_NOWORK:
            o.no_participant_work = true;
            break;
        case O_BUDGET:
            if (parse_uint("--budget", optarg, UINT64_MAX, &o.budget) < 0)
                return 2;
            if (o.budget == 0) {
                fprintf(stderr, "budgeted_kernels: --budget must be at least 1\n");
                return 2;
            }
            break;
        case O_WALL: {
            char *end;
            o.wall_limit_s = strtod(optarg, &end);
            if (end == optarg || *end || !(o.wall_limit_s > 0) || !isfinite(o.wall_limit_s)) {
                fprintf(stderr, "budgeted_kernels: --wall-limit wants a positive number of seconds, not '%s'\n",
                        optarg);
                return 2;
            }
            break;
        }
        case O_MIXED:
            o.mixed = true;
            break;
        case O_NOSESSION:
            o.no_session = true;
            break;
        case 'h':
            usage(stdout);
            return 0;
        case ':':
            fprintf(stderr, "budgeted_kernels: option %s needs an argument\n", argv[optind - 1]);
            return 2;
        default:
            fprintf(stderr, "budgeted_kernels: unknown option '%s' (see --help)\n", argv[optind - 1]);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "budgeted_kernels: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    if (!o.name) {
        fprintf(stderr, "budgeted_kernels: --name is required (see --help)\n");
        return 2;
    }

    obsd_t *h = obsd_open(o.name);
    if (!h) {
        fprintf(stderr, "budgeted_kernels: %s\n", obsd_last_error());
        return 1;
    }
    size_t n2 = (size_t)o.size * o.size;
    struct frame_work f = {.n = o.size};
    f.a = malloc(n2 * sizeof(double));
    f.b = malloc(n2 * sizeof(double));
    f.c = calloc(n2, sizeof(double));
    f.wa = malloc(n2 * sizeof(double));
    f.wb = malloc(n2 * sizeof(double));
    f.wc = calloc(n2, sizeof(double));
    f.wire = malloc(8 + 2 * n2 * sizeof(double));
    f.text_cap = n2 * 32 + 1;
    f.text = malloc(f.text_cap);
    if (!f.a || !f.b || !f.c || !f.wa || !f.wb || !f.wc || !f.wire || !f.text) {
        fprintf(stderr, "budgeted_kernels: out of memory for %u x %u matrices\n", o.size, o.size);
        return 1;
    }
    for (size_t i = 0; i < n2; i++) {
        f.a[i] = (double)(i % 17) / 17.0;
        f.b[i] = (double)(i % 13) / 13.0 - 0.5;
    }

    if (!o.no_session)
        obsd_session(h, OBSD_SESSION_STARTED);
    int status = 0;
    for (unsigned i = 0; i < o.contexts && status == 0; i++)
        if (run_context(h, &o, i, &f) < 0)
            status = 1;
    if (!o.no_session)
        obsd_session(h, OBSD_SESSION_ENDED);
    obsd_close(h);
    free(f.a);
    free(f.b);
    free(f.c);
    free(f.wa);
    free(f.wb);
    free(f.wc);
    free(f.wire);
    free(f.text);
    return status;
}
