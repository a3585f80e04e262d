/*
 * budget_wire.h: the budget records (types OBSD_REC_BUDGET_FIRST..LAST of
 * shm/wire.h), shared by the producer (libobsd) and the collector.
 *
 * A context costs the ring three kinds of record, never one per call:
 *
 *   OPEN      at obsd_budget_open: struct obsd_pl_budget_open + root label.
 *   PROGRESS  cumulative state of an open context, at most once per progress
 *             interval (sent from a span end or a wall-limited charge) and on
 *             obsd_budget_flush.
 *   CLOSE     the final state, same layout as PROGRESS.
 *
 * PROGRESS and CLOSE are self-contained (every total is cumulative), so a
 * dropped record only costs freshness, and the collector simply replaces what
 * it had. Their payload is
 *
 *   struct obsd_pl_budget_state
 *   n_rows  x struct obsd_pl_budget_row     one per (namespace, op) used
 *   names_bytes of NUL-terminated strings   ns_name/op_name are byte offsets
 *
 * and may exceed one record; the fragmenting writer carries it.
 * The header key is the context id (unique per producer process, from 1).
 * Everything is untrusted on the collector side: budget_wire_check validates it.
 */
#ifndef OBSD_BUDGET_WIRE_H
#define OBSD_BUDGET_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include "shm/wire.h"

enum {
    OBSD_REC_BUDGET_OPEN = OBSD_REC_BUDGET_FIRST,      /* 32 */
    OBSD_REC_BUDGET_PROGRESS = OBSD_REC_BUDGET_FIRST + 1,
    OBSD_REC_BUDGET_CLOSE = OBSD_REC_BUDGET_FIRST + 2,
};

#define OBSD_BUDGET_NO_NAME UINT32_MAX   /* row/context without a namespace */

struct obsd_pl_budget_open {
    uint64_t open_ns;
    uint64_t flop_budget;
    uint64_t wall_limit_ns;    /* 0: none */
    uint32_t ns_len;           /* root label bytes that follow (no NUL) */
    uint32_t reserved;
};

enum obsd_budget_state_flags {
    OBSD_BUDGET_EXHAUSTED = 1u << 0,
    OBSD_BUDGET_WALL_EXCEEDED = 1u << 1,
};

struct obsd_pl_budget_state {
    uint64_t open_ns;
    uint64_t ts_ns;            /* when this state was taken (close time) */
    uint64_t flop_budget;
    uint64_t flops_used;
    uint64_t wall_limit_ns;
    uint64_t dispatch_ns;      /* framework time, each instant once */
    uint64_t kernel_ns;        /* kernel time */
    uint64_t participant_spans;
    uint64_t refused_charges;
    uint32_t flags;            /* enum obsd_budget_state_flags */
    uint32_t ns_name;          /* root label (string index) or OBSD_BUDGET_NO_NAME */
    uint32_t n_rows;
    uint32_t names_bytes;
};

struct obsd_pl_budget_row {
    uint32_t ns_name;          /* full label, or OBSD_BUDGET_NO_NAME */
    uint32_t op_name;
    uint64_t flop_cost;
    uint64_t calls;
    uint64_t kernel_ns;
    uint64_t dispatch_ns;      /* exclusive framework time of spans tagged with op */
};

_Static_assert(sizeof(struct obsd_pl_budget_open) == 32, "open payload layout");
_Static_assert(sizeof(struct obsd_pl_budget_state) == 88, "state payload layout");
_Static_assert(sizeof(struct obsd_pl_budget_row) == 40, "row payload layout");

/* The timing split, shared by the producer's summary and the collector:
 * backend = kernel, overhead = max(0, dispatch - backend),
 * residual = max(0, wall - dispatch). When kernel <= dispatch <= wall the
 * three add up to wall exactly; a clamp makes them add up to more. */
static inline void budget_split(uint64_t wall_ns, uint64_t dispatch_ns, uint64_t kernel_ns,
                                uint64_t *backend_ns, uint64_t *overhead_ns, uint64_t *residual_ns)
{
    *backend_ns = kernel_ns;
    *overhead_ns = dispatch_ns > kernel_ns ? dispatch_ns - kernel_ns : 0;
    *residual_ns = wall_ns > dispatch_ns ? wall_ns - dispatch_ns : 0;
}

#endif
