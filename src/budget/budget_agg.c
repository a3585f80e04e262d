/*
 * budget_agg.c: aggregation of budget records into the "budget" section.
 *
 * A context is identified by (pid, context id). Its PROGRESS and CLOSE
 * records are cumulative, so each one replaces the rows it had. Once closed,
 * a context's JSON is built once and kept, and its totals are folded into the
 * session accumulator; only open contexts are recomputed at each snapshot.
 */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "budget/budget.h"
#include "budget/budget_wire.h"
#include "obsd/obsd_budget.h"

/* ---- totals: a context's, a namespace's or the session's ---- */

struct op_tot {
    char *name;
    uint64_t flop_cost, calls, backend_ns, overhead_ns, dispatch_ns;
};

struct ns_tot {
    char *name;               /* "" for none */
    uint64_t flop_cost, calls, backend_ns, overhead_ns, dispatch_ns;
    struct op_tot *ops;
    size_t n_ops, cap_ops;
};

struct totals {
    uint64_t flop_budget, flops_used, flops_remaining;
    uint64_t wall_ns, dispatch_ns, backend_ns, overhead_ns, residual_ns;
    uint64_t participant_spans, refused_charges;
    uint64_t contexts, open_contexts, exhausted_contexts;
    struct op_tot *ops;
    size_t n_ops, cap_ops;
    struct ns_tot *nss;
    size_t n_ns, cap_ns;
};

static void ops_free(struct op_tot *ops, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(ops[i].name);
    free(ops);
}

static void totals_free(struct totals *t)
{
    ops_free(t->ops, t->n_ops);
    for (size_t i = 0; i < t->n_ns; i++) {
        free(t->nss[i].name);
        ops_free(t->nss[i].ops, t->nss[i].n_ops);
    }
    free(t->nss);
    memset(t, 0, sizeof *t);
}

static struct op_tot *op_get(struct op_tot **ops, size_t *n, size_t *cap, const char *name)
{
    for (size_t i = 0; i < *n; i++)
        if (strcmp((*ops)[i].name, name) == 0)
            return &(*ops)[i];
    if (*n == *cap) {
        size_t nc = *cap ? *cap * 2 : 8;
        struct op_tot *p = realloc(*ops, nc * sizeof *p);
        if (!p)
            return NULL;
        *ops = p;
        *cap = nc;
    }
    struct op_tot *o = &(*ops)[*n];
    memset(o, 0, sizeof *o);
    o->name = strdup(name);
    if (!o->name)
        return NULL;
    (*n)++;
    return o;
}

static struct ns_tot *ns_get(struct totals *t, const char *name)
{
    for (size_t i = 0; i < t->n_ns; i++)
        if (strcmp(t->nss[i].name, name) == 0)
            return &t->nss[i];
    if (t->n_ns == t->cap_ns) {
        size_t nc = t->cap_ns ? t->cap_ns * 2 : 8;
        struct ns_tot *p = realloc(t->nss, nc * sizeof *p);
        if (!p)
            return NULL;
        t->nss = p;
        t->cap_ns = nc;
    }
    struct ns_tot *s = &t->nss[t->n_ns];
    memset(s, 0, sizeof *s);
    s->name = strdup(name);
    if (!s->name)
        return NULL;
    t->n_ns++;
    return s;
}

static void op_add(struct op_tot *dst, const struct op_tot *src)
{
    dst->flop_cost += src->flop_cost;
    dst->calls += src->calls;
    dst->backend_ns += src->backend_ns;
    dst->overhead_ns += src->overhead_ns;
    dst->dispatch_ns += src->dispatch_ns;
}

/* Session += context: every figure adds up, overheads included (each context
 * clamped its own). Returns -1 when out of memory. */
static int totals_add(struct totals *dst, const struct totals *src)
{
    dst->flop_budget += src->flop_budget;
    dst->flops_used += src->flops_used;
    dst->flops_remaining += src->flops_remaining;
    dst->wall_ns += src->wall_ns;
    dst->dispatch_ns += src->dispatch_ns;
    dst->backend_ns += src->backend_ns;
    dst->overhead_ns += src->overhead_ns;
    dst->residual_ns += src->residual_ns;
    dst->participant_spans += src->participant_spans;
    dst->refused_charges += src->refused_charges;
    dst->contexts += src->contexts;
    dst->open_contexts += src->open_contexts;
    dst->exhausted_contexts += src->exhausted_contexts;
    for (size_t i = 0; i < src->n_ops; i++) {
        struct op_tot *o = op_get(&dst->ops, &dst->n_ops, &dst->cap_ops, src->ops[i].name);
        if (!o)
            return -1;
        op_add(o, &src->ops[i]);
    }
    for (size_t i = 0; i < src->n_ns; i++) {
        const struct ns_tot *s = &src->nss[i];
        struct ns_tot *d = ns_get(dst, s->name);
        if (!d)
            return -1;
        d->flop_cost += s->flop_cost;
        d->calls += s->calls;
        d->backend_ns += s->backend_ns;
        d->overhead_ns += s->overhead_ns;
        d->dispatch_ns += s->dispatch_ns;
        for (size_t j = 0; j < s->n_ops; j++) {
            struct op_tot *o = op_get(&d->ops, &d->n_ops, &d->cap_ops, s->ops[j].name);
            if (!o)
                return -1;
            op_add(o, &s->ops[j]);
        }
    }
    return 0;
}

/* ---- contexts ---- */

struct row {
    char *ns;                 /* "" for none */
    char *op;
    uint64_t flop_cost, calls, kernel_ns, dispatch_ns;
};

struct ctx {
    uint32_t pid, id;
    bool open;
    char *ns;                 /* NULL: none */
    uint64_t open_ns, ts_ns, flop_budget, flops_used, wall_limit_ns;
    uint64_t dispatch_ns, kernel_ns, participant_spans, refused_charges;
    uint32_t flags;
    struct row *rows;
    size_t n_rows;
    json_t *json;             /* built once the context is closed */
};

struct budget_agg {
    struct ctx **ctxs;        /* in open order */
    size_t n_ctxs, cap_ctxs;
    struct totals closed;     /* session totals of the closed contexts */
    uint64_t rejected;
    uint64_t records;         /* every record of the run, rejected ones too */
};

static void rows_free(struct row *rows, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(rows[i].ns);
        free(rows[i].op);
    }
    free(rows);
}

static void ctx_free(struct ctx *c)
{
    if (!c)
        return;
    free(c->ns);
    rows_free(c->rows, c->n_rows);
    json_decref(c->json);
    free(c);
}

struct budget_agg *budget_agg_new(void)
{
    return calloc(1, sizeof(struct budget_agg));
}

void budget_agg_reset(struct budget_agg *a)
{
    for (size_t i = 0; i < a->n_ctxs; i++)
        ctx_free(a->ctxs[i]);
    a->n_ctxs = 0;
    totals_free(&a->closed);
    a->rejected = 0;          /* a new run owes nothing to the previous one */
    a->records = 0;
}

void budget_agg_free(struct budget_agg *a)
{
    if (!a)
        return;
    budget_agg_reset(a);
    free(a->ctxs);
    free(a);
}

uint64_t budget_agg_rejected(const struct budget_agg *a)
{
    return a->rejected;
}

uint64_t budget_agg_records(const struct budget_agg *a)
{
    return a->records;
}

/* Open contexts are few and recent: search from the end, open ones only. */
static struct ctx *ctx_find_open(struct budget_agg *a, uint32_t pid, uint32_t id)
{
    for (size_t i = a->n_ctxs; i-- > 0;) {
        struct ctx *c = a->ctxs[i];
        if (c->open && c->pid == pid && c->id == id)
            return c;
    }
    return NULL;
}

static struct ctx *ctx_add(struct budget_agg *a, uint32_t pid, uint32_t id)
{
    if (a->n_ctxs == a->cap_ctxs) {
        size_t nc = a->cap_ctxs ? a->cap_ctxs * 2 : 16;
        struct ctx **p = realloc(a->ctxs, nc * sizeof *p);
        if (!p)
            return NULL;
        a->ctxs = p;
        a->cap_ctxs = nc;
    }
    struct ctx *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->pid = pid;
    c->id = id;
    c->open = true;
    a->ctxs[a->n_ctxs++] = c;
    return c;
}

/* Builds the totals of one context from its rows. */
static int ctx_totals(const struct ctx *c, struct totals *t)
{
    memset(t, 0, sizeof *t);
    t->flop_budget = c->flop_budget;
    t->flops_used = c->flops_used;
    t->flops_remaining = c->flop_budget - c->flops_used;
    t->wall_ns = c->ts_ns > c->open_ns ? c->ts_ns - c->open_ns : 0;
    t->dispatch_ns = c->dispatch_ns;
    budget_split(t->wall_ns, c->dispatch_ns, c->kernel_ns, &t->backend_ns, &t->overhead_ns, &t->residual_ns);
    t->participant_spans = c->participant_spans;
    t->refused_charges = c->refused_charges;
    t->contexts = 1;
    t->open_contexts = c->open;
    t->exhausted_contexts = (c->flags & OBSD_BUDGET_EXHAUSTED) != 0;
    for (size_t i = 0; i < c->n_rows; i++) {
        const struct row *r = &c->rows[i];
        struct op_tot *o = op_get(&t->ops, &t->n_ops, &t->cap_ops, r->op);
        struct ns_tot *s = ns_get(t, r->ns);
        struct op_tot *so = s ? op_get(&s->ops, &s->n_ops, &s->cap_ops, r->op) : NULL;
        if (!o || !so)
            return -1;
        struct op_tot add = {
            .flop_cost = r->flop_cost, .calls = r->calls,
            .backend_ns = r->kernel_ns, .dispatch_ns = r->dispatch_ns,
        };
        op_add(o, &add);
        op_add(so, &add);
        s->flop_cost += r->flop_cost;
        s->calls += r->calls;
        s->backend_ns += r->kernel_ns;
        s->dispatch_ns += r->dispatch_ns;
    }
    /* Within a context, overhead of a group = max(0, its dispatch - its kernel). */
#define CLAMP_OVERHEAD(x) ((x).overhead_ns = (x).dispatch_ns > (x).backend_ns ? (x).dispatch_ns - (x).backend_ns : 0)
    for (size_t i = 0; i < t->n_ops; i++)
        CLAMP_OVERHEAD(t->ops[i]);
    for (size_t i = 0; i < t->n_ns; i++) {
        CLAMP_OVERHEAD(t->nss[i]);
        for (size_t j = 0; j < t->nss[i].n_ops; j++)
            CLAMP_OVERHEAD(t->nss[i].ops[j]);
    }
#undef CLAMP_OVERHEAD
    return 0;
}

/* ---- JSON ---- */

static double secs(uint64_t ns)
{
    return (double)ns / 1e9;
}

static int set_new(json_t *o, const char *k, json_t *v)
{
    return v ? json_object_set_new(o, k, v) : -1;
}

static json_t *ops_json(const struct op_tot *ops, size_t n)
{
    json_t *o = json_object();
    for (size_t i = 0; o && i < n; i++) {
        json_t *e = json_pack("{s:I,s:I,s:f,s:f}", "flop_cost", (json_int_t)ops[i].flop_cost, "calls",
                              (json_int_t)ops[i].calls, "backend_s", secs(ops[i].backend_ns), "overhead_s",
                              secs(ops[i].overhead_ns));
        if (set_new(o, ops[i].name, e) < 0) {
            json_decref(o);
            return NULL;
        }
    }
    return o;
}

static json_t *by_ns_json(const struct totals *t)
{
    json_t *o = json_object();
    for (size_t i = 0; o && i < t->n_ns; i++) {
        const struct ns_tot *s = &t->nss[i];
        json_t *e = json_pack("{s:I,s:I,s:f,s:f,s:o}", "flops_used", (json_int_t)s->flop_cost, "calls",
                              (json_int_t)s->calls, "backend_s", secs(s->backend_ns), "overhead_s",
                              secs(s->overhead_ns), "operations", ops_json(s->ops, s->n_ops));
        if (set_new(o, s->name, e) < 0) {
            json_decref(o);
            return NULL;
        }
    }
    return o;
}

/* Fields common to a context and the session. */
static int totals_fill(json_t *o, const struct totals *t)
{
    int rc = 0;
    rc |= set_new(o, "flop_budget", json_integer((json_int_t)t->flop_budget));
    rc |= set_new(o, "flops_used", json_integer((json_int_t)t->flops_used));
    rc |= set_new(o, "flops_remaining", json_integer((json_int_t)t->flops_remaining));
    return rc;
}

static int times_fill(json_t *o, const struct totals *t)
{
    int rc = 0;
    rc |= set_new(o, "wall_s", json_real(secs(t->wall_ns)));
    rc |= set_new(o, "backend_s", json_real(secs(t->backend_ns)));
    rc |= set_new(o, "overhead_s", json_real(secs(t->overhead_ns)));
    rc |= set_new(o, "residual_s", json_real(secs(t->residual_ns)));
    rc |= set_new(o, "operations", ops_json(t->ops, t->n_ops));
    rc |= set_new(o, "by_namespace", by_ns_json(t));
    return rc;
}

static json_t *ctx_json(const struct ctx *c, const struct totals *t)
{
    json_t *o = json_object();
    if (!o)
        return NULL;
    int rc = set_new(o, "namespace", c->ns ? json_string(c->ns) : json_null());
    rc |= totals_fill(o, t);
    rc |= set_new(o, "exhausted", json_boolean(c->flags & OBSD_BUDGET_EXHAUSTED));
    rc |= times_fill(o, t);
    rc |= set_new(o, "open", json_boolean(c->open));
    rc |= set_new(o, "pid", json_integer(c->pid));
    rc |= set_new(o, "id", json_integer(c->id));
    rc |= set_new(o, "wall_time_limit_s", c->wall_limit_ns ? json_real(secs(c->wall_limit_ns)) : json_null());
    rc |= set_new(o, "wall_exceeded", json_boolean(c->flags & OBSD_BUDGET_WALL_EXCEEDED));
    rc |= set_new(o, "refused_charges", json_integer((json_int_t)c->refused_charges));
    rc |= set_new(o, "participant_spans", json_integer((json_int_t)c->participant_spans));
    rc |= set_new(o, "dispatch_s", json_real(secs(c->dispatch_ns)));
    if (rc) {
        json_decref(o);
        return NULL;
    }
    return o;
}

json_t *budget_agg_json(struct budget_agg *a)
{
    json_t *arr = json_array();
    struct totals session;
    memset(&session, 0, sizeof session);
    int rc = arr ? totals_add(&session, &a->closed) : -1;
    for (size_t i = 0; rc == 0 && i < a->n_ctxs; i++) {
        struct ctx *c = a->ctxs[i];
        if (c->json) {
            rc = json_array_append(arr, c->json);
            continue;
        }
        struct totals t;
        rc = ctx_totals(c, &t);
        json_t *j = rc ? NULL : ctx_json(c, &t);
        rc = j ? json_array_append_new(arr, j) : -1;
        if (rc == 0)
            rc = totals_add(&session, &t);
        totals_free(&t);
    }
    json_t *sess = rc ? NULL : json_object();
    if (sess) {
        rc |= set_new(sess, "contexts", json_integer((json_int_t)session.contexts));
        rc |= set_new(sess, "open_contexts", json_integer((json_int_t)session.open_contexts));
        rc |= set_new(sess, "exhausted_contexts", json_integer((json_int_t)session.exhausted_contexts));
        rc |= totals_fill(sess, &session);
        rc |= times_fill(sess, &session);
        rc |= set_new(sess, "refused_charges", json_integer((json_int_t)session.refused_charges));
        rc |= set_new(sess, "participant_spans", json_integer((json_int_t)session.participant_spans));
        rc |= set_new(sess, "dispatch_s", json_real(secs(session.dispatch_ns)));
    }
    totals_free(&session);
    json_t *out = (rc || !sess) ? NULL : json_object();
    if (out && (set_new(out, "contexts", arr) | set_new(out, "session", sess) |
                set_new(out, "rejected_records", json_integer((json_int_t)a->rejected)))) {
        json_decref(out);
        return NULL;
    }
    if (!out) {
        json_decref(arr);
        json_decref(sess);
    }
    return out;
}

/* ---- decoding (untrusted input) ---- */

static int reject(struct budget_agg *a, char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int reject(struct budget_agg *a, char *err, size_t errlen, const char *fmt, ...)
{
    a->rejected++;
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

static bool label_ok(const char *s, size_t len)
{
    if (len > OBSD_BUDGET_LABEL_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        char ch = s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '_' ||
              ch == ':' || ch == '-' || ch == '.'))
            return false;
    }
    return true;
}

/* The string at offset off of the names area, or NULL if off is not the start
 * of a valid name. The area ends with NUL (checked by the caller). */
static const char *name_at(const char *names, uint32_t names_bytes, uint32_t off, bool allow_none)
{
    if (off == OBSD_BUDGET_NO_NAME)
        return allow_none ? "" : NULL;
    if (off >= names_bytes || (off > 0 && names[off - 1] != '\0'))
        return NULL;
    const char *s = names + off;
    size_t len = strlen(s);
    if (len == 0 || !label_ok(s, len))
        return NULL;
    return s;
}

static int on_open(struct budget_agg *a, uint32_t pid, uint32_t key, const unsigned char *p, size_t len,
                   char *err, size_t errlen)
{
    struct obsd_pl_budget_open op;
    if (len < sizeof op)
        return reject(a, err, errlen, "budget open record of %zu bytes (at least %zu)", len, sizeof op);
    memcpy(&op, p, sizeof op);
    if ((uint64_t)op.ns_len != len - sizeof op)
        return reject(a, err, errlen, "budget open record: namespace of %u bytes in a payload of %zu",
                      op.ns_len, len);
    const char *ns = (const char *)p + sizeof op;
    if (!label_ok(ns, op.ns_len))
        return reject(a, err, errlen, "budget open record: namespace is not a valid label");
    if (op.flop_budget == 0)
        return reject(a, err, errlen, "budget open record: flop_budget 0");
    struct ctx *c = ctx_find_open(a, pid, key);
    char *copy = NULL;
    if (op.ns_len) {
        copy = strndup(ns, op.ns_len);
        if (!copy)
            return reject(a, err, errlen, "budget: out of memory");
    }
    if (!c)
        c = ctx_add(a, pid, key);
    if (!c) {
        free(copy);
        return reject(a, err, errlen, "budget: out of memory");
    }
    free(c->ns);
    c->ns = copy;
    c->open_ns = c->ts_ns = op.open_ns;
    c->flop_budget = op.flop_budget;
    c->wall_limit_ns = op.wall_limit_ns;
    return 0;
}

static int on_state(struct budget_agg *a, uint32_t pid, uint32_t key, bool close, const unsigned char *p,
                    size_t len, char *err, size_t errlen)
{
    struct obsd_pl_budget_state st;
    if (len < sizeof st)
        return reject(a, err, errlen, "budget state record of %zu bytes (at least %zu)", len, sizeof st);
    memcpy(&st, p, sizeof st);
    uint64_t want = sizeof st + (uint64_t)st.n_rows * sizeof(struct obsd_pl_budget_row) + st.names_bytes;
    if (want != len)
        return reject(a, err, errlen, "budget state record: %u rows and %u name bytes need %llu bytes, got %zu",
                      st.n_rows, st.names_bytes, (unsigned long long)want, len);
    if (st.flop_budget == 0 || st.flops_used > st.flop_budget)
        return reject(a, err, errlen, "budget state record: flops_used %llu over flop_budget %llu",
                      (unsigned long long)st.flops_used, (unsigned long long)st.flop_budget);
    const char *names = (const char *)p + sizeof st + (size_t)st.n_rows * sizeof(struct obsd_pl_budget_row);
    if (st.names_bytes && names[st.names_bytes - 1] != '\0')
        return reject(a, err, errlen, "budget state record: names area does not end with NUL");
    const char *root = name_at(names, st.names_bytes, st.ns_name, true);
    if (!root)
        return reject(a, err, errlen, "budget state record: bad namespace offset %u", st.ns_name);

    struct row *rows = calloc(st.n_rows ? st.n_rows : 1, sizeof *rows);
    if (!rows)
        return reject(a, err, errlen, "budget: out of memory for %u rows", st.n_rows);
    const unsigned char *rp = p + sizeof st;
    for (uint32_t i = 0; i < st.n_rows; i++) {
        struct obsd_pl_budget_row r;
        memcpy(&r, rp + (size_t)i * sizeof r, sizeof r);
        const char *ns = name_at(names, st.names_bytes, r.ns_name, true);
        const char *op = name_at(names, st.names_bytes, r.op_name, false);
        if (!ns || !op) {
            rows_free(rows, i);
            return reject(a, err, errlen, "budget state record: row %u has a bad name offset", i);
        }
        rows[i].ns = strdup(ns);
        rows[i].op = strdup(op);
        rows[i].flop_cost = r.flop_cost;
        rows[i].calls = r.calls;
        rows[i].kernel_ns = r.kernel_ns;
        rows[i].dispatch_ns = r.dispatch_ns;
        if (!rows[i].ns || !rows[i].op) {
            rows_free(rows, i + 1);
            return reject(a, err, errlen, "budget: out of memory");
        }
    }
    char *ns_copy = root[0] ? strdup(root) : NULL;
    struct ctx *c = ctx_find_open(a, pid, key);
    if (!c)
        c = ctx_add(a, pid, key);  /* its open record was dropped */
    if (!c || (root[0] && !ns_copy)) {
        free(ns_copy);
        rows_free(rows, st.n_rows);
        return reject(a, err, errlen, "budget: out of memory");
    }
    free(c->ns);
    c->ns = ns_copy;
    rows_free(c->rows, c->n_rows);
    c->rows = rows;
    c->n_rows = st.n_rows;
    c->open_ns = st.open_ns;
    c->ts_ns = st.ts_ns;
    c->flop_budget = st.flop_budget;
    c->flops_used = st.flops_used;
    c->wall_limit_ns = st.wall_limit_ns;
    c->dispatch_ns = st.dispatch_ns;
    c->kernel_ns = st.kernel_ns;
    c->participant_spans = st.participant_spans;
    c->refused_charges = st.refused_charges;
    c->flags = st.flags;
    if (close) {
        /* Build the JSON once and fold the totals into the session; if memory
         * runs out the rows stay and the context is rebuilt at each snapshot. */
        c->open = false;
        struct totals t;
        if (ctx_totals(c, &t) == 0) {
            json_t *j = ctx_json(c, &t);
            if (j && totals_add(&a->closed, &t) == 0) {
                c->json = j;
                rows_free(c->rows, c->n_rows);
                c->rows = NULL;
                c->n_rows = 0;
            } else {
                json_decref(j);
            }
        }
        totals_free(&t);
    }
    return 0;
}

int budget_agg_record(struct budget_agg *a, uint32_t pid, uint8_t type, uint32_t key, const void *payload,
                      size_t len, char *err, size_t errlen)
{
    a->records++;
    if (key == 0)
        return reject(a, err, errlen, "budget record with context id 0");
    if (len && !payload)
        return reject(a, err, errlen, "budget record without payload");
    switch (type) {
    case OBSD_REC_BUDGET_OPEN:
        return on_open(a, pid, key, payload, len, err, errlen);
    case OBSD_REC_BUDGET_PROGRESS:
        return on_state(a, pid, key, false, payload, len, err, errlen);
    case OBSD_REC_BUDGET_CLOSE:
        return on_state(a, pid, key, true, payload, len, err, errlen);
    default:
        return reject(a, err, errlen, "unknown budget record type %u", type);
    }
}
