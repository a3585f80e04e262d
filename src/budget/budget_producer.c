/*
 * budget_producer.c: budget contexts in the producer (libobsd).
 *
 * All accounting happens in the calling thread's own context, so charge and
 * span begin/end touch thread-local memory only: no atomics, no locks, no
 * record per call. Per-op statistics live in one table per namespace label,
 * indexed by op id; the first use of a (namespace, op) pair lists it as a row
 * so that encoding a state walks only what was used. The collector learns
 * about a context through the three records of budget_wire.h.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "budget/budget_wire.h"
#include "shm/producer_internal.h"

#include "obsd/obsd.h"

#define TLS_MODEL __attribute__((tls_model("initial-exec")))
#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)

/* ---- op names: one registry per process ---- */

static pthread_mutex_t op_lock = PTHREAD_MUTEX_INITIALIZER;
static const char *_Atomic op_names[OBSD_BUDGET_MAX_OPS];
static _Atomic uint32_t op_count = 1;  /* ids start at 1 */

static bool name_char_ok(char ch, bool allow_dot)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           ch == '_' || ch == ':' || ch == '-' || (allow_dot && ch == '.');
}

obsd_budget_op_t obsd_budget_op(const char *name)
{
    if (!name || !*name) {
        obsd__set_error("obsd_budget_op: empty op name");
        return 0;
    }
    size_t len = strlen(name);
    if (len > OBSD_KEY_MAX) {
        obsd__set_error("obsd_budget_op: op name longer than %d bytes", OBSD_KEY_MAX);
        return 0;
    }
    for (size_t i = 0; i < len; i++) {
        if (!name_char_ok(name[i], true)) {
            obsd__set_error("obsd_budget_op: op name '%s' has a character outside [A-Za-z0-9_.:-]", name);
            return 0;
        }
    }
    pthread_mutex_lock(&op_lock);
    uint32_t n = atomic_load_explicit(&op_count, memory_order_relaxed);
    for (uint32_t i = 1; i < n; i++) {
        const char *s = atomic_load_explicit(&op_names[i], memory_order_relaxed);
        if (strcmp(s, name) == 0) {
            pthread_mutex_unlock(&op_lock);
            return (obsd_budget_op_t)i;
        }
    }
    obsd_budget_op_t id = 0;
    if (n >= OBSD_BUDGET_MAX_OPS) {
        obsd__set_error("obsd_budget_op: more than %d op names", OBSD_BUDGET_MAX_OPS - 1);
    } else {
        char *copy = strdup(name);
        if (!copy) {
            obsd__set_error("obsd_budget_op: out of memory");
        } else {
            atomic_store_explicit(&op_names[n], copy, memory_order_release);
            atomic_store_explicit(&op_count, n + 1, memory_order_release);
            id = (obsd_budget_op_t)n;
        }
    }
    pthread_mutex_unlock(&op_lock);
    return id;
}

const char *obsd_budget_op_name(obsd_budget_op_t op)
{
    if (op == 0 || op >= OBSD_BUDGET_MAX_OPS)
        return NULL;
    return atomic_load_explicit(&op_names[op], memory_order_acquire);
}

/* ---- the context ---- */

struct op_stats {
    uint64_t flop_cost, calls, kernel_ns, dispatch_ns;
    uint16_t ns, op;
    uint32_t listed;
};

/* A span clock: it runs while depth > 0, so however deep spans nest each
 * instant counts once, and only the outermost begin and end read the clock.
 * The time goes to the op of the outermost span. */
struct span_clock {
    uint32_t depth;           /* framework spans open */
    uint64_t t0;              /* when depth went 0 -> 1 */
    struct op_stats *st;      /* op of the outermost span, NULL: none */
};

struct ns_entry {
    char *label;              /* full dotted label, "" for none */
    struct op_stats *ops;     /* OBSD_BUDGET_MAX_OPS entries */
};

struct budget_ctx {
    /* hot */
    uint64_t flop_budget, flops_used;
    uint64_t wall_limit_ns, open_ns;
    struct op_stats *cur_ops;
    uint64_t dispatch_ns, kernel_ns;
    struct span_clock dispatch, kernel;
    uint32_t d_depth;         /* dispatch spans open, participant ones included */
    uint64_t d_participant;   /* bit i: dispatch span at depth i is a participant's */
    uint64_t next_progress_ns;
    uint64_t participant_spans, refused_charges;
    bool refused_budget, wall_exceeded;
    /* cold */
    obsd_t *h;
    uint32_t id;
    uint32_t n_ns;
    struct ns_entry ns[OBSD_BUDGET_MAX_NAMESPACES];
    uint16_t ns_stack[OBSD_BUDGET_MAX_NS_DEPTH];
    uint32_t ns_depth;        /* entries of ns_stack in use; current = top or 0 */
    struct op_stats **rows;
    uint32_t n_rows, cap_rows;
    unsigned char *buf;
    size_t buf_cap;
};

/* What the last summary of this thread left for the accessors. */
struct budget_rows {
    size_t n_ops, n_ns;
    struct obsd_budget_op_summary *ops, *nss;
    char *labels;             /* storage of the namespace labels */
};

static TLS_MODEL __thread struct budget_ctx *tls_ctx;
static TLS_MODEL __thread struct budget_rows tls_rows;
static _Atomic uint32_t ctx_ids;
static _Atomic uint64_t progress_interval_ns = 100u * 1000000u;

void obsd_budget_set_progress_interval_ms(uint32_t ms)
{
    atomic_store_explicit(&progress_interval_ns, (uint64_t)ms * 1000000u, memory_order_relaxed);
}

static inline uint64_t budget_clock(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int no_context(const char *fn)
{
    obsd__set_error("%s: no budget context is open on this thread", fn);
    return OBSD_ESTATE;
}

static uint64_t next_progress(uint64_t now)
{
    uint64_t iv = atomic_load_explicit(&progress_interval_ns, memory_order_relaxed);
    return iv ? now + iv : UINT64_MAX;
}

/* Lists a (namespace, op) pair on its first use. Slow path. */
static __attribute__((noinline)) void list_row(struct budget_ctx *c, struct op_stats *st, uint16_t op)
{
    if (c->n_rows == c->cap_rows) {
        uint32_t cap = c->cap_rows ? c->cap_rows * 2 : 32;
        struct op_stats **rows = realloc(c->rows, cap * sizeof *rows);
        if (!rows)
            return;  /* stays unlisted: counted in the totals, not in the rows */
        c->rows = rows;
        c->cap_rows = cap;
    }
    st->ns = c->ns_depth ? c->ns_stack[c->ns_depth - 1] : 0;
    st->op = op;
    st->listed = 1;
    c->rows[c->n_rows++] = st;
}

/* ---- encoding a state record ---- */

static int reserve(struct budget_ctx *c, size_t need)
{
    if (need <= c->buf_cap)
        return 0;
    size_t cap = c->buf_cap ? c->buf_cap : 4096;
    while (cap < need)
        cap *= 2;
    unsigned char *b = realloc(c->buf, cap);
    if (!b)
        return -1;
    c->buf = b;
    c->buf_cap = cap;
    return 0;
}

/* Builds the PROGRESS/CLOSE payload in c->buf; returns its length, 0 on OOM. */
static size_t encode_state(struct budget_ctx *c, uint64_t now, uint32_t flags)
{
    uint32_t op_off[OBSD_BUDGET_MAX_OPS];
    uint32_t ns_off[OBSD_BUDGET_MAX_NAMESPACES];
    size_t names = 0;
    for (uint32_t i = 0; i < OBSD_BUDGET_MAX_OPS; i++)
        op_off[i] = OBSD_BUDGET_NO_NAME;
    for (uint32_t i = 0; i < c->n_ns; i++) {
        if (c->ns[i].label[0]) {
            ns_off[i] = (uint32_t)names;
            names += strlen(c->ns[i].label) + 1;
        } else {
            ns_off[i] = OBSD_BUDGET_NO_NAME;
        }
    }
    for (uint32_t r = 0; r < c->n_rows; r++) {
        uint16_t op = c->rows[r]->op;
        if (op_off[op] == OBSD_BUDGET_NO_NAME) {
            op_off[op] = (uint32_t)names;
            names += strlen(obsd_budget_op_name(op)) + 1;
        }
    }
    size_t rows_bytes = (size_t)c->n_rows * sizeof(struct obsd_pl_budget_row);
    size_t total = sizeof(struct obsd_pl_budget_state) + rows_bytes + names;
    if (reserve(c, total) < 0)
        return 0;

    struct obsd_pl_budget_state st = {
        .open_ns = c->open_ns,
        .ts_ns = now,
        .flop_budget = c->flop_budget,
        .flops_used = c->flops_used,
        .wall_limit_ns = c->wall_limit_ns,
        .dispatch_ns = c->dispatch_ns,
        .kernel_ns = c->kernel_ns,
        .participant_spans = c->participant_spans,
        .refused_charges = c->refused_charges,
        .flags = flags,
        .ns_name = ns_off[0],
        .n_rows = c->n_rows,
        .names_bytes = (uint32_t)names,
    };
    memcpy(c->buf, &st, sizeof st);
    unsigned char *p = c->buf + sizeof st;
    for (uint32_t r = 0; r < c->n_rows; r++) {
        const struct op_stats *s = c->rows[r];
        struct obsd_pl_budget_row row = {
            .ns_name = ns_off[s->ns],
            .op_name = op_off[s->op],
            .flop_cost = s->flop_cost,
            .calls = s->calls,
            .kernel_ns = s->kernel_ns,
            .dispatch_ns = s->dispatch_ns,
        };
        memcpy(p, &row, sizeof row);
        p += sizeof row;
    }
    for (uint32_t i = 0; i < c->n_ns; i++) {
        if (ns_off[i] != OBSD_BUDGET_NO_NAME) {
            size_t l = strlen(c->ns[i].label) + 1;
            memcpy(c->buf + sizeof st + rows_bytes + ns_off[i], c->ns[i].label, l);
        }
    }
    for (uint32_t i = 1; i < OBSD_BUDGET_MAX_OPS; i++) {
        if (op_off[i] != OBSD_BUDGET_NO_NAME) {
            const char *s = obsd_budget_op_name((obsd_budget_op_t)i);
            memcpy(c->buf + sizeof st + rows_bytes + op_off[i], s, strlen(s) + 1);
        }
    }
    return total;
}

static uint32_t state_flags(const struct budget_ctx *c)
{
    uint32_t f = 0;
    if (c->refused_budget || c->flops_used >= c->flop_budget)
        f |= OBSD_BUDGET_EXHAUSTED;
    if (c->wall_exceeded)
        f |= OBSD_BUDGET_WALL_EXCEEDED;
    return f;
}

static void send_state(struct budget_ctx *c, uint8_t type, uint64_t now)
{
    if (!c->h)
        return;
    size_t len = encode_state(c, now, state_flags(c));
    if (len)
        obsd__write(c->h, type, 0, c->id, c->buf, len);
}

static __attribute__((noinline)) void send_progress(struct budget_ctx *c, uint64_t now)
{
    c->next_progress_ns = next_progress(now);
    send_state(c, OBSD_REC_BUDGET_PROGRESS, now);
}

/* ---- namespaces ---- */

static int valid_label(const char *s, bool allow_dot)
{
    size_t len = strlen(s);
    if (len == 0 || len > OBSD_BUDGET_LABEL_MAX)
        return 0;
    for (size_t i = 0; i < len; i++) {
        if (!name_char_ok(s[i], allow_dot))
            return 0;
        if (s[i] == '.' && (i == 0 || i == len - 1 || s[i - 1] == '.'))
            return 0;
    }
    return 1;
}

/* The index of label in c->ns, added when missing; -1 when full or OOM. */
static int ns_index(struct budget_ctx *c, const char *label)
{
    for (uint32_t i = 0; i < c->n_ns; i++)
        if (strcmp(c->ns[i].label, label) == 0)
            return (int)i;
    if (c->n_ns >= OBSD_BUDGET_MAX_NAMESPACES)
        return -1;
    char *copy = strdup(label);
    struct op_stats *ops = calloc(OBSD_BUDGET_MAX_OPS, sizeof *ops);
    if (!copy || !ops) {
        free(copy);
        free(ops);
        return -1;
    }
    c->ns[c->n_ns].label = copy;
    c->ns[c->n_ns].ops = ops;
    return (int)c->n_ns++;
}

static uint16_t cur_ns(const struct budget_ctx *c)
{
    return c->ns_depth ? c->ns_stack[c->ns_depth - 1] : 0;
}

int obsd_budget_namespace_push(const char *segment)
{
    struct budget_ctx *c = tls_ctx;
    if (!c)
        return no_context("obsd_budget_namespace_push");
    if (!segment || !valid_label(segment, false)) {
        obsd__set_error("obsd_budget_namespace_push: segment '%s' must be 1..%d bytes of [A-Za-z0-9_:-] (no '.')",
                        segment ? segment : "(null)", OBSD_BUDGET_LABEL_MAX);
        return OBSD_EINVAL;
    }
    if (c->ns_depth >= OBSD_BUDGET_MAX_NS_DEPTH) {
        obsd__set_error("obsd_budget_namespace_push: more than %d nested namespaces", OBSD_BUDGET_MAX_NS_DEPTH);
        return OBSD_ESTATE;
    }
    const char *base = c->ns[cur_ns(c)].label;
    char label[2 * OBSD_BUDGET_LABEL_MAX + 2];
    int n = snprintf(label, sizeof label, "%s%s%s", base, base[0] ? "." : "", segment);
    if (n < 0 || n > OBSD_BUDGET_LABEL_MAX) {
        obsd__set_error("obsd_budget_namespace_push: label '%s.%s' longer than %d bytes", base, segment,
                        OBSD_BUDGET_LABEL_MAX);
        return OBSD_EINVAL;
    }
    int idx = ns_index(c, label);
    if (idx < 0) {
        obsd__set_error("obsd_budget_namespace_push: more than %d namespace labels in one context",
                        OBSD_BUDGET_MAX_NAMESPACES);
        return OBSD_ESTATE;
    }
    c->ns_stack[c->ns_depth++] = (uint16_t)idx;
    c->cur_ops = c->ns[idx].ops;
    return OBSD_OK;
}

int obsd_budget_namespace_pop(void)
{
    struct budget_ctx *c = tls_ctx;
    if (!c)
        return no_context("obsd_budget_namespace_pop");
    if (c->ns_depth == 0) {
        obsd__set_error("obsd_budget_namespace_pop: no namespace was pushed");
        return OBSD_ESTATE;
    }
    c->ns_depth--;
    c->cur_ops = c->ns[cur_ns(c)].ops;
    return OBSD_OK;
}

const char *obsd_budget_namespace(void)
{
    struct budget_ctx *c = tls_ctx;
    return c ? c->ns[cur_ns(c)].label : "";
}

/* ---- open and close ---- */

static void ctx_free(struct budget_ctx *c)
{
    if (!c)
        return;
    for (uint32_t i = 0; i < c->n_ns; i++) {
        free(c->ns[i].label);
        free(c->ns[i].ops);
    }
    free(c->rows);
    free(c->buf);
    free(c);
}

static void rows_clear(void)
{
    free(tls_rows.ops);
    free(tls_rows.nss);
    free(tls_rows.labels);
    memset(&tls_rows, 0, sizeof tls_rows);
}

/* A thread that exits frees its context and rows (pthread key destructor). */
static pthread_key_t exit_key;
static pthread_once_t exit_key_once = PTHREAD_ONCE_INIT;

static void thread_exit(void *unused)
{
    (void)unused;
    ctx_free(tls_ctx);
    tls_ctx = NULL;
    rows_clear();
}

static void exit_key_make(void)
{
    pthread_key_create(&exit_key, thread_exit);
}

int obsd_budget_open_at(obsd_t *h, uint64_t flop_budget, double wall_time_limit_s, const char *ns,
                        uint64_t now_ns)
{
    if (tls_ctx) {
        obsd__set_error("obsd_budget_open: a budget context is already open on this thread "
                        "(namespace '%s'); contexts do not nest", tls_ctx->ns[0].label);
        return OBSD_ESTATE;
    }
    if (flop_budget == 0) {
        obsd__set_error("obsd_budget_open: flop_budget must be > 0");
        return OBSD_EINVAL;
    }
    if (!(wall_time_limit_s >= 0.0) || wall_time_limit_s > 1e9) {
        obsd__set_error("obsd_budget_open: wall_time_limit_s must be 0 (none) or a positive number of seconds");
        return OBSD_EINVAL;
    }
    if (ns && *ns && !valid_label(ns, true)) {
        obsd__set_error("obsd_budget_open: namespace '%s' must be dotted segments of [A-Za-z0-9_:-], "
                        "at most %d bytes", ns, OBSD_BUDGET_LABEL_MAX);
        return OBSD_EINVAL;
    }
    struct budget_ctx *c = calloc(1, sizeof *c);
    if (!c || ns_index(c, ns ? ns : "") != 0) {
        ctx_free(c);
        obsd__set_error("obsd_budget_open: out of memory");
        return OBSD_ESYS;
    }
    c->h = h;
    c->id = atomic_fetch_add_explicit(&ctx_ids, 1, memory_order_relaxed) + 1;
    c->flop_budget = flop_budget;
    c->wall_limit_ns = (uint64_t)(wall_time_limit_s * 1e9);
    if (wall_time_limit_s > 0 && c->wall_limit_ns == 0)
        c->wall_limit_ns = 1;
    c->open_ns = now_ns;
    c->cur_ops = c->ns[0].ops;
    c->next_progress_ns = next_progress(now_ns);
    rows_clear();
    tls_ctx = c;
    pthread_once(&exit_key_once, exit_key_make);
    pthread_setspecific(exit_key, c);

    if (h) {
        const char *label = c->ns[0].label;
        struct obsd_pl_budget_open op = {
            .open_ns = now_ns,
            .flop_budget = flop_budget,
            .wall_limit_ns = c->wall_limit_ns,
            .ns_len = (uint32_t)strlen(label),
        };
        obsd__write2(h, OBSD_REC_BUDGET_OPEN, 0, c->id, &op, sizeof op, label, op.ns_len);
    }
    return OBSD_OK;
}

int obsd_budget_open(obsd_t *h, uint64_t flop_budget, double wall_time_limit_s, const char *ns)
{
    return obsd_budget_open_at(h, flop_budget, wall_time_limit_s, ns, budget_clock());
}

bool obsd_budget_is_open(void)
{
    return tls_ctx != NULL;
}

/* ---- the hot paths ---- */

static __attribute__((noinline)) int refuse_wall(struct budget_ctx *c, obsd_budget_op_t op, uint64_t cost,
                                                 uint64_t now, struct obsd_budget_refusal *why)
{
    c->wall_exceeded = true;
    c->refused_charges++;
    uint64_t wall = now - c->open_ns;
    if (why) {
        why->op = obsd_budget_op_name(op);
        why->flop_cost = cost;
        why->flops_remaining = c->flop_budget - c->flops_used;
        why->wall_ns = wall;
        why->wall_limit_ns = c->wall_limit_ns;
    }
    obsd__set_error("obsd_budget_charge: wall-time limit of %.3f s passed (%.3f s since open); op '%s' refused",
                    c->wall_limit_ns / 1e9, wall / 1e9, obsd_budget_op_name(op));
    return OBSD_EWALL;
}

static __attribute__((noinline)) int refuse_budget(struct budget_ctx *c, obsd_budget_op_t op, uint64_t cost,
                                                   struct obsd_budget_refusal *why)
{
    uint64_t remaining = c->flop_budget - c->flops_used;
    c->refused_budget = true;
    c->refused_charges++;
    if (why) {
        why->op = obsd_budget_op_name(op);
        why->flop_cost = cost;
        why->flops_remaining = remaining;
        why->wall_ns = 0;
        why->wall_limit_ns = c->wall_limit_ns;
    }
    obsd__set_error("obsd_budget_charge: op '%s' costs %llu FLOPs but only %llu of %llu remain",
                    obsd_budget_op_name(op), (unsigned long long)cost, (unsigned long long)remaining,
                    (unsigned long long)c->flop_budget);
    return OBSD_EBUDGET;
}

static __attribute__((noinline)) int bad_op(const char *fn, obsd_budget_op_t op)
{
    obsd__set_error("%s: unknown op id %u", fn, (unsigned)op);
    return OBSD_EINVAL;
}

static inline int charge(struct budget_ctx *c, obsd_budget_op_t op, uint64_t cost, uint64_t now,
                         struct obsd_budget_refusal *why)
{
    if (unlikely(c->wall_limit_ns) && now > c->open_ns && now - c->open_ns > c->wall_limit_ns)
        return refuse_wall(c, op, cost, now, why);
    if (unlikely(cost > c->flop_budget - c->flops_used))
        return refuse_budget(c, op, cost, why);
    struct op_stats *st = &c->cur_ops[op];
    if (unlikely(!st->listed))
        list_row(c, st, op);
    c->flops_used += cost;
    st->flop_cost += cost;
    st->calls++;
    if (unlikely(c->wall_limit_ns) && now >= c->next_progress_ns)
        send_progress(c, now);
    return OBSD_OK;
}

static inline bool op_ok(obsd_budget_op_t op)
{
    return op != 0 && op < atomic_load_explicit(&op_count, memory_order_relaxed);
}

int obsd_budget_charge(obsd_budget_op_t op, uint64_t flop_cost, struct obsd_budget_refusal *why)
{
    struct budget_ctx *c = tls_ctx;
    if (unlikely(!c))
        return no_context("obsd_budget_charge");
    if (unlikely(!op_ok(op)))
        return bad_op("obsd_budget_charge", op);
    return charge(c, op, flop_cost, unlikely(c->wall_limit_ns) ? budget_clock() : 0, why);
}

int obsd_budget_charge_at(obsd_budget_op_t op, uint64_t flop_cost, uint64_t now_ns,
                          struct obsd_budget_refusal *why)
{
    struct budget_ctx *c = tls_ctx;
    if (unlikely(!c))
        return no_context("obsd_budget_charge");
    if (unlikely(!op_ok(op)))
        return bad_op("obsd_budget_charge", op);
    return charge(c, op, flop_cost, now_ns, why);
}

static __attribute__((noinline)) int too_deep(const char *fn)
{
    obsd__set_error("%s: more than %d nested spans", fn, OBSD_BUDGET_MAX_SPAN_DEPTH);
    return OBSD_ESTATE;
}

static __attribute__((noinline)) int not_begun(const char *fn)
{
    obsd__set_error("%s: no span is open", fn);
    return OBSD_ESTATE;
}

static inline struct op_stats *span_stats(struct budget_ctx *c, obsd_budget_op_t op)
{
    if (!op)
        return NULL;
    struct op_stats *st = &c->cur_ops[op];
    if (unlikely(!st->listed))
        list_row(c, st, op);
    return st;
}

static inline void clock_stop(struct span_clock *k, uint64_t *total, bool kernel, uint64_t now)
{
    uint64_t add = now > k->t0 ? now - k->t0 : 0;
    *total += add;
    if (k->st) {
        if (kernel)
            k->st->kernel_ns += add;
        else
            k->st->dispatch_ns += add;
    }
}

_Static_assert(OBSD_BUDGET_MAX_SPAN_DEPTH <= 64, "participant bits fit one word");

/* Pushes a dispatch span; *starts says whether it starts the clock (the
 * caller then supplies the time, so inner spans never read the clock). */
static inline int dispatch_push(struct budget_ctx *c, unsigned flags, bool *starts)
{
    *starts = false;
    if (unlikely(c->d_depth >= OBSD_BUDGET_MAX_SPAN_DEPTH))
        return too_deep("obsd_budget_dispatch_begin");
    uint64_t bit = 1ull << c->d_depth++;
    if (unlikely(flags & OBSD_SPAN_PARTICIPANT)) {
        c->d_participant |= bit;
        return OBSD_OK;
    }
    c->d_participant &= ~bit;
    *starts = c->dispatch.depth++ == 0;
    return OBSD_OK;
}

/* Pops a dispatch span; true when it stops the clock. */
static inline bool dispatch_pop(struct budget_ctx *c)
{
    uint64_t bit = 1ull << --c->d_depth;
    if (unlikely(c->d_participant & bit)) {
        c->participant_spans++;
        return false;
    }
    return --c->dispatch.depth == 0;
}

/* The span calls come in pairs: with the caller's timestamp (_at) and
 * reading the clock themselves, which they do only when the outermost span
 * starts or stops. One always-inlined body each, so that both keep their own
 * straight-line code (have_now is a constant at every call). */
#define SPAN_INLINE static inline __attribute__((always_inline))

SPAN_INLINE int dispatch_begin(obsd_budget_op_t op, unsigned flags, bool have_now, uint64_t now_ns)
{
    struct budget_ctx *c = tls_ctx;
    if (unlikely(!c))
        return no_context("obsd_budget_dispatch_begin");
    if (unlikely(op && !op_ok(op)))
        return bad_op("obsd_budget_dispatch_begin", op);
    bool starts;
    int rc = dispatch_push(c, flags, &starts);
    if (starts) {
        c->dispatch.t0 = have_now ? now_ns : budget_clock();
        c->dispatch.st = span_stats(c, op);
    }
    return rc;
}

SPAN_INLINE int dispatch_end(bool have_now, uint64_t now_ns)
{
    struct budget_ctx *c = tls_ctx;
    if (unlikely(!c))
        return no_context("obsd_budget_dispatch_end");
    if (unlikely(c->d_depth == 0))
        return not_begun("obsd_budget_dispatch_end");
    if (dispatch_pop(c)) {
        uint64_t now = have_now ? now_ns : budget_clock();
        clock_stop(&c->dispatch, &c->dispatch_ns, false, now);
        if (unlikely(now >= c->next_progress_ns))
            send_progress(c, now);
    }
    return OBSD_OK;
}

SPAN_INLINE int kernel_begin(obsd_budget_op_t op, bool have_now, uint64_t now_ns)
{
    struct budget_ctx *c = tls_ctx;
    if (unlikely(!c))
        return no_context("obsd_budget_kernel_begin");
    if (unlikely(op && !op_ok(op)))
        return bad_op("obsd_budget_kernel_begin", op);
    if (unlikely(c->kernel.depth >= OBSD_BUDGET_MAX_SPAN_DEPTH))
        return too_deep("obsd_budget_kernel_begin");
    if (c->kernel.depth++ == 0) {
        c->kernel.t0 = have_now ? now_ns : budget_clock();
        c->kernel.st = span_stats(c, op);
    }
    return OBSD_OK;
}

SPAN_INLINE int kernel_end(bool have_now, uint64_t now_ns)
{
    struct budget_ctx *c = tls_ctx;
    if (unlikely(!c))
        return no_context("obsd_budget_kernel_end");
    if (unlikely(c->kernel.depth == 0))
        return not_begun("obsd_budget_kernel_end");
    if (--c->kernel.depth == 0) {
        uint64_t now = have_now ? now_ns : budget_clock();
        clock_stop(&c->kernel, &c->kernel_ns, true, now);
        if (unlikely(now >= c->next_progress_ns))
            send_progress(c, now);
    }
    return OBSD_OK;
}

int obsd_budget_dispatch_begin_at(obsd_budget_op_t op, unsigned flags, uint64_t now_ns)
{
    return dispatch_begin(op, flags, true, now_ns);
}

int obsd_budget_dispatch_begin(obsd_budget_op_t op, unsigned flags)
{
    return dispatch_begin(op, flags, false, 0);
}

int obsd_budget_dispatch_end_at(uint64_t now_ns) { return dispatch_end(true, now_ns); }
int obsd_budget_dispatch_end(void) { return dispatch_end(false, 0); }

int obsd_budget_kernel_begin_at(obsd_budget_op_t op, uint64_t now_ns)
{
    return kernel_begin(op, true, now_ns);
}

int obsd_budget_kernel_begin(obsd_budget_op_t op) { return kernel_begin(op, false, 0); }
int obsd_budget_kernel_end_at(uint64_t now_ns) { return kernel_end(true, now_ns); }
int obsd_budget_kernel_end(void) { return kernel_end(false, 0); }

/* ---- summaries ---- */

/* Fills *out and the thread's rows from c as of now. */
static int summarize(struct budget_ctx *c, uint64_t now, bool open, struct obsd_budget_summary *out)
{
    struct obsd_budget_summary s;
    memset(&s, 0, sizeof s);
    snprintf(s.ns, sizeof s.ns, "%s", c->ns[0].label);
    s.flop_budget = c->flop_budget;
    s.flops_used = c->flops_used;
    s.flops_remaining = c->flop_budget - c->flops_used;
    uint32_t flags = state_flags(c);
    s.exhausted = flags & OBSD_BUDGET_EXHAUSTED;
    s.wall_exceeded = flags & OBSD_BUDGET_WALL_EXCEEDED;
    s.open = open;
    s.refused_charges = c->refused_charges;
    s.participant_spans = c->participant_spans;
    s.wall_ns = now > c->open_ns ? now - c->open_ns : 0;
    s.dispatch_ns = c->dispatch_ns;
    budget_split(s.wall_ns, c->dispatch_ns, c->kernel_ns, &s.backend_ns, &s.overhead_ns, &s.residual_ns);

    /* Per-op and per-namespace rows, in first-use order; overhead per group
     * is max(0, its dispatch - its kernel) like the context's. */
    rows_clear();
    int op_row[OBSD_BUDGET_MAX_OPS];
    int ns_row[OBSD_BUDGET_MAX_NAMESPACES];
    uint64_t op_disp[OBSD_BUDGET_MAX_OPS] = {0};
    uint64_t ns_disp[OBSD_BUDGET_MAX_NAMESPACES] = {0};
    memset(op_row, -1, sizeof op_row);
    memset(ns_row, -1, sizeof ns_row);
    size_t label_bytes = 0;
    for (uint32_t i = 0; i < c->n_ns; i++)
        label_bytes += strlen(c->ns[i].label) + 1;
    tls_rows.ops = calloc(c->n_rows ? c->n_rows : 1, sizeof *tls_rows.ops);
    tls_rows.nss = calloc(c->n_ns, sizeof *tls_rows.nss);
    tls_rows.labels = malloc(label_bytes);
    if (!tls_rows.ops || !tls_rows.nss || !tls_rows.labels) {
        rows_clear();
        obsd__set_error("obsd_budget: out of memory for the summary rows");
    } else {
        char *lp = tls_rows.labels;
        const char *label_of[OBSD_BUDGET_MAX_NAMESPACES];
        for (uint32_t i = 0; i < c->n_ns; i++) {
            size_t l = strlen(c->ns[i].label) + 1;
            memcpy(lp, c->ns[i].label, l);
            label_of[i] = lp;
            lp += l;
        }
        for (uint32_t r = 0; r < c->n_rows; r++) {
            const struct op_stats *st = c->rows[r];
            if (op_row[st->op] < 0) {
                op_row[st->op] = (int)tls_rows.n_ops++;
                tls_rows.ops[op_row[st->op]].name = obsd_budget_op_name(st->op);
            }
            if (ns_row[st->ns] < 0) {
                ns_row[st->ns] = (int)tls_rows.n_ns++;
                tls_rows.nss[ns_row[st->ns]].name = label_of[st->ns];
            }
            struct obsd_budget_op_summary *o = &tls_rows.ops[op_row[st->op]];
            struct obsd_budget_op_summary *n = &tls_rows.nss[ns_row[st->ns]];
            o->flop_cost += st->flop_cost;
            o->calls += st->calls;
            o->backend_ns += st->kernel_ns;
            op_disp[st->op] += st->dispatch_ns;
            n->flop_cost += st->flop_cost;
            n->calls += st->calls;
            n->backend_ns += st->kernel_ns;
            ns_disp[st->ns] += st->dispatch_ns;
        }
        for (uint32_t i = 1; i < OBSD_BUDGET_MAX_OPS; i++) {
            if (op_row[i] >= 0) {
                struct obsd_budget_op_summary *o = &tls_rows.ops[op_row[i]];
                o->overhead_ns = op_disp[i] > o->backend_ns ? op_disp[i] - o->backend_ns : 0;
            }
        }
        for (uint32_t i = 0; i < c->n_ns; i++) {
            if (ns_row[i] >= 0) {
                struct obsd_budget_op_summary *n = &tls_rows.nss[ns_row[i]];
                n->overhead_ns = ns_disp[i] > n->backend_ns ? ns_disp[i] - n->backend_ns : 0;
            }
        }
    }
    s.n_ops = tls_rows.n_ops;
    s.n_namespaces = tls_rows.n_ns;
    if (out)
        *out = s;
    return OBSD_OK;
}

int obsd_budget_status(struct obsd_budget_summary *out)
{
    struct budget_ctx *c = tls_ctx;
    if (!c)
        return no_context("obsd_budget_status");
    return summarize(c, budget_clock(), true, out);
}

int obsd_budget_close_at(struct obsd_budget_summary *out, uint64_t now_ns)
{
    struct budget_ctx *c = tls_ctx;
    if (!c)
        return no_context("obsd_budget_close");
    /* Spans still open end now, like a span whose body raised. */
    if (c->dispatch.depth)
        clock_stop(&c->dispatch, &c->dispatch_ns, false, now_ns);
    if (c->kernel.depth)
        clock_stop(&c->kernel, &c->kernel_ns, true, now_ns);
    while (c->d_depth)
        if (c->d_participant & (1ull << --c->d_depth))
            c->participant_spans++;
    summarize(c, now_ns, false, out);
    if (c->h) {
        send_state(c, OBSD_REC_BUDGET_CLOSE, now_ns);
        obsd_flush(c->h);
    }
    tls_ctx = NULL;
    ctx_free(c);
    return OBSD_OK;
}

int obsd_budget_close(struct obsd_budget_summary *out)
{
    return obsd_budget_close_at(out, budget_clock());
}

int obsd_budget_summary_op(size_t i, struct obsd_budget_op_summary *out)
{
    if (i >= tls_rows.n_ops || !out) {
        obsd__set_error("obsd_budget_summary_op: row %zu of %zu", i, tls_rows.n_ops);
        return OBSD_EINVAL;
    }
    *out = tls_rows.ops[i];
    return OBSD_OK;
}

int obsd_budget_summary_namespace(size_t i, struct obsd_budget_op_summary *out)
{
    if (i >= tls_rows.n_ns || !out) {
        obsd__set_error("obsd_budget_summary_namespace: row %zu of %zu", i, tls_rows.n_ns);
        return OBSD_EINVAL;
    }
    *out = tls_rows.nss[i];
    return OBSD_OK;
}

int obsd_budget_flush(void)
{
    struct budget_ctx *c = tls_ctx;
    if (!c)
        return no_context("obsd_budget_flush");
    if (!c->h)
        return OBSD_OK;
    send_progress(c, budget_clock());
    return obsd_flush(c->h);
}
