/*
 * obsd_budget.h: FLOP budget contexts and the wall = backend + overhead +
 * residual timing split. Included by obsd.h.
 *
 * A harness that grades participant code under a compute budget bills each
 * participant for its own work only: the FLOPs its operations cost and the
 * wall time its own code took outside the framework. Framework cost
 * (marshaling, round trips, materializing results) lands in "overhead",
 * never in the billed "residual".
 *
 *   obsd_budget_op_t mm = obsd_budget_op("matmul");      // once
 *   obsd_budget_open(h, 1e9, 0.0, "estimator");         // one per thread
 *   obsd_budget_dispatch_begin(mm, 0);                  // framework work
 *     struct obsd_budget_refusal why;
 *     if (obsd_budget_charge(mm, obsd_flops_matmul(m, k, n, OBSD_DTYPE_F32), &why) == OBSD_OK) {
 *         obsd_budget_kernel_begin(mm);  gemm(...);  obsd_budget_kernel_end();
 *     }
 *   obsd_budget_dispatch_end();
 *   struct obsd_budget_summary s;
 *   obsd_budget_close(&s);     // backend, overhead, residual, per-op rows
 *
 * Timing split at close (and live, in progress records):
 *   backend  = kernel time (kernel spans: the pure computation)
 *   overhead = max(0, dispatch - backend)
 *   residual = max(0, wall - dispatch)
 * Dispatch spans nest; each instant inside any number of nested framework
 * spans counts once: the dispatch clock runs while at least one framework span
 * is open, so only the outermost begin and end read the clock, and the time
 * goes to the outermost span's op. A span opened with OBSD_SPAN_PARTICIPANT
 * adds nothing (framework spans inside it still count) and is counted in
 * participant_spans, so participant code cannot shave its residual by opening
 * spans of its own. Kernel spans nest the same way.
 *
 * Threading: each thread has at most one open context (thread-local state);
 * every function below acts on the calling thread's context. The hot paths
 * (charge, span begin/end) touch thread-local memory only; the collector sees
 * a context through an open record, progress records (at most one per
 * progress interval, sent from a span end or a wall-limited charge, or on
 * obsd_budget_flush) and a close record with the per-op and per-namespace
 * tables.
 */
#ifndef OBSD_OBSD_BUDGET_H
#define OBSD_OBSD_BUDGET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct obsd;

/* An interned operation name ("matmul", "fft", ...). 0 is never valid. */
typedef uint16_t obsd_budget_op_t;
#define OBSD_BUDGET_MAX_OPS 512          /* distinct op names per process */
#define OBSD_BUDGET_MAX_NAMESPACES 256   /* distinct namespace labels per context */
#define OBSD_BUDGET_MAX_NS_DEPTH 32      /* namespace_push nesting */
#define OBSD_BUDGET_MAX_SPAN_DEPTH 64    /* dispatch (and kernel) span nesting */
#define OBSD_BUDGET_LABEL_MAX 255        /* bytes of a namespace label */

/* Interns an op name (1..OBSD_KEY_MAX bytes of [A-Za-z0-9_.:-]) for the whole
 * process; the same name always gives the same id. Slow path: call it once and
 * keep the id. Returns 0 with a message on failure. */
obsd_budget_op_t obsd_budget_op(const char *name);
/* The name of an id, NULL if unknown. */
const char *obsd_budget_op_name(obsd_budget_op_t op);

/*
 * Opens the calling thread's context on handle h (which receives its records;
 * NULL: accounting only, no records).
 * flop_budget > 0; wall_time_limit_s 0 means none (else > 0); ns is the root
 * namespace label (NULL or "" for none; dotted segments of [A-Za-z0-9_:-]).
 * Returns OBSD_ESTATE if the thread already has an open context (contexts do
 * not nest), OBSD_EINVAL on a bad argument; OBSD_OK otherwise, also when the
 * open record could not be delivered (the context works without a collector).
 */
int obsd_budget_open(struct obsd *h, uint64_t flop_budget, double wall_time_limit_s, const char *ns);
int obsd_budget_open_at(struct obsd *h, uint64_t flop_budget, double wall_time_limit_s,
                        const char *ns, uint64_t now_ns);

/* Whether the calling thread has an open context. */
bool obsd_budget_is_open(void);

/* Why a charge was refused. op points at the interned name (valid for the
 * life of the process). */
struct obsd_budget_refusal {
    const char *op;
    uint64_t flop_cost;        /* the refused charge */
    uint64_t flops_remaining;  /* what was left (unchanged by the refusal) */
    uint64_t wall_ns;          /* OBSD_EWALL: time since open */
    uint64_t wall_limit_ns;    /* OBSD_EWALL: the limit */
};

/*
 * Charges flop_cost FLOPs for one call of op, in the current namespace.
 * OBSD_EBUDGET: the charge would exceed the remaining budget; nothing is
 * charged or recorded, the context is marked exhausted. OBSD_EWALL: the
 * context's wall-time limit has passed (checked at every charge; the clock is
 * read only when a limit is set). Both fill *why when it is not NULL.
 * OBSD_ESTATE: no open context; OBSD_EINVAL: unknown op.
 */
int obsd_budget_charge(obsd_budget_op_t op, uint64_t flop_cost, struct obsd_budget_refusal *why);
int obsd_budget_charge_at(obsd_budget_op_t op, uint64_t flop_cost, uint64_t now_ns,
                          struct obsd_budget_refusal *why);

/* Namespaces: push appends ".segment" to the current label (segment
 * non-empty, no '.'); pop restores the previous one. Labels only: the budget
 * is one pool. */
int obsd_budget_namespace_push(const char *segment);
int obsd_budget_namespace_pop(void);
/* The current label ("" when none); valid until the next namespace call. */
const char *obsd_budget_namespace(void);

/* Span flags. */
#define OBSD_SPAN_PARTICIPANT 1u  /* not framework: adds nothing to dispatch */

/*
 * Dispatch spans: the framework's own work around an op (marshaling, round
 * trips, reconstructing results). op may be 0 (context totals only) or an op
 * whose per-op overhead the span's time feeds (for the outermost span; inner
 * spans only count depth). Spans nest up to
 * OBSD_BUDGET_MAX_SPAN_DEPTH; begin beyond that or end without begin returns
 * OBSD_ESTATE. The _at variants take the caller's timestamps (tests, replays).
 */
int obsd_budget_dispatch_begin(obsd_budget_op_t op, unsigned flags);
int obsd_budget_dispatch_end(void);
int obsd_budget_dispatch_begin_at(obsd_budget_op_t op, unsigned flags, uint64_t now_ns);
int obsd_budget_dispatch_end_at(uint64_t now_ns);

/* Kernel spans: the pure computation of op (its backend time). They nest the
 * same way (depth counted, the outermost span's op gets the time). */
int obsd_budget_kernel_begin(obsd_budget_op_t op);
int obsd_budget_kernel_end(void);
int obsd_budget_kernel_begin_at(obsd_budget_op_t op, uint64_t now_ns);
int obsd_budget_kernel_end_at(uint64_t now_ns);

/* The split of a context, in nanoseconds. */
struct obsd_budget_summary {
    char ns[OBSD_BUDGET_LABEL_MAX + 1];   /* root namespace, "" if none */
    uint64_t flop_budget, flops_used, flops_remaining;
    bool exhausted;           /* a charge was refused, or nothing remains */
    bool wall_exceeded;       /* a charge was refused by the wall-time limit */
    bool open;                /* from obsd_budget_status: still open */
    uint64_t refused_charges; /* charges refused (budget or wall) */
    uint64_t participant_spans;
    uint64_t wall_ns, dispatch_ns;
    uint64_t backend_ns, overhead_ns, residual_ns;
    size_t n_ops;             /* rows for obsd_budget_summary_op() */
    size_t n_namespaces;      /* rows for obsd_budget_summary_namespace() */
};

/* Per-op (or per-namespace) details of the last summary. */
struct obsd_budget_op_summary {
    const char *name;         /* op name (or namespace label, "" for none) */
    uint64_t flop_cost;       /* FLOPs charged */
    uint64_t calls;           /* charges accepted */
    uint64_t backend_ns;      /* kernel time */
    uint64_t overhead_ns;     /* max(0, dispatch - kernel) */
};

/*
 * Closes the calling thread's context: ends spans still open at the close
 * time, fills *out (may be NULL) and sends the close record (then flushes the
 * thread's ring). OBSD_ESTATE without an open context. The per-op and
 * per-namespace rows stay readable through the accessors below until the
 * thread opens its next context.
 */
int obsd_budget_close(struct obsd_budget_summary *out);
int obsd_budget_close_at(struct obsd_budget_summary *out, uint64_t now_ns);

/* The summary of the open context so far (live wall and split; open = true).
 * The accessors then read its rows. */
int obsd_budget_status(struct obsd_budget_summary *out);

/* Row i (0 <= i < n_ops) of the calling thread's last summary: per-op totals
 * over every namespace, in first-use order. OBSD_EINVAL past the end. */
int obsd_budget_summary_op(size_t i, struct obsd_budget_op_summary *out);
/* Row i of the per-namespace totals (name = full label). */
int obsd_budget_summary_namespace(size_t i, struct obsd_budget_op_summary *out);

/* Sends a progress record of the open context now and flushes the ring. */
int obsd_budget_flush(void);

/* Minimum time between progress records sent from the hot paths, for every
 * thread of the process (default 100 ms; 0 turns them off: only open, flush
 * and close send records). */
void obsd_budget_set_progress_interval_ms(uint32_t ms);

/*
 * Cost helpers: pure functions, FMA = 2. A 64-bit element type (int64,
 * uint64, float64, complex128) doubles the rate; complex types bill their real
 * arithmetic (add 2, multiply 6, divide 11; contractions 6 per multiply and 2
 * per add exactly). Transcendentals weigh 16, sorts 4. Results saturate at
 * UINT64_MAX.
 */
enum obsd_dtype {
    OBSD_DTYPE_BOOL = 0,
    OBSD_DTYPE_I8, OBSD_DTYPE_I16, OBSD_DTYPE_I32, OBSD_DTYPE_I64,
    OBSD_DTYPE_U8, OBSD_DTYPE_U16, OBSD_DTYPE_U32, OBSD_DTYPE_U64,
    OBSD_DTYPE_F16, OBSD_DTYPE_F32, OBSD_DTYPE_F64,
    OBSD_DTYPE_C64, OBSD_DTYPE_C128,
};

enum obsd_elementwise_op {
    OBSD_EW_ADD = 0,          /* add, subtract, compare, min/max: 1 (complex 2) */
    OBSD_EW_MULTIPLY,         /* 1 (complex 6) */
    OBSD_EW_DIVIDE,           /* 1 (complex 11) */
    OBSD_EW_TRANSCENDENTAL,   /* sin, exp, log, ...: 16 */
    OBSD_EW_COPY,             /* sequential writes: 1 */
};

/* (2mkn - mn) for real types; 6mkn + 2mn(k-1) for complex ones. */
uint64_t obsd_flops_matmul(uint64_t m, uint64_t k, uint64_t n, enum obsd_dtype dt);
/* n output elements of one ufunc. */
uint64_t obsd_flops_elementwise(enum obsd_elementwise_op op, uint64_t n, enum obsd_dtype dt);
/* Complex FFT of length n (input dtype dt; integer and 64-bit inputs are
 * computed in complex128): 5 n ceil(log2 n). */
uint64_t obsd_flops_fft(uint64_t n, enum obsd_dtype dt);
/* A reduction (sum, prod, max, ...) of n elements to one: n - 1 additions in
 * the accumulator type (integers narrower than 64 bits accumulate in int64). */
uint64_t obsd_flops_reduce(uint64_t n, enum obsd_dtype dt);
/* The same along axes: n_in elements to n_out. */
uint64_t obsd_flops_reduce_to(uint64_t n_in, uint64_t n_out, enum obsd_dtype dt);
/* Sort of n elements: n ceil(log2 n) at weight 4. */
uint64_t obsd_flops_sort(uint64_t n, enum obsd_dtype dt);

#ifdef __cplusplus
}
#endif

#endif
