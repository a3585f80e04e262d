/*
 * budget.h: the collector side of FLOP budgets.
 *
 * The aggregator turns the budget records of every producer (budget_wire.h)
 * into per-context, per-op and per-namespace summaries plus a session summary
 * (every closed context and every open one as of its last progress record),
 * and renders them as the "budget" section of each snapshot:
 *
 *   {"contexts":[{"namespace","flop_budget","flops_used","flops_remaining",
 *                 "exhausted","wall_s","backend_s","overhead_s","residual_s",
 *                 "operations":{op:{"flop_cost","calls","backend_s","overhead_s"}},
 *                 "by_namespace":{label:{"flops_used","calls","backend_s",
 *                                        "overhead_s","operations":{...}}},
 *                 ...extras: "open","pid","id","wall_time_limit_s",
 *                 "wall_exceeded","refused_charges","participant_spans","dispatch_s"}],
 *    "session":{"contexts","open_contexts","exhausted_contexts","flop_budget",
 *               "flops_used","flops_remaining","wall_s","backend_s",
 *               "overhead_s","residual_s","operations","by_namespace"},
 *    "rejected_records": n}
 *
 * A context without a namespace has "namespace": null; rows charged outside
 * any namespace are listed under the label "" in by_namespace.
 *
 * budget_module_ops plugs the aggregator into the engine (engine/module.h).
 * budget_report_* print what `obsctl budget` shows, from a snapshot's section.
 */
#ifndef OBSD_BUDGET_BUDGET_H
#define OBSD_BUDGET_BUDGET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

struct budget_agg;

struct budget_agg *budget_agg_new(void);
void budget_agg_free(struct budget_agg *a);
/* Forgets every context and count (a new run starts). */
void budget_agg_reset(struct budget_agg *a);

/* One budget record written by process pid. Returns 0, or -1 when it is
 * malformed (nothing is changed; the reason goes to err). */
int budget_agg_record(struct budget_agg *a, uint32_t pid, uint8_t type, uint32_t key,
                      const void *payload, size_t len, char *err, size_t errlen);

/* Records rejected so far in this run. */
uint64_t budget_agg_rejected(const struct budget_agg *a);
/* Records of this run, accepted or rejected (0: the run used no budgets). */
uint64_t budget_agg_records(const struct budget_agg *a);

/* The "budget" section (a new reference), NULL when out of memory. */
json_t *budget_agg_json(struct budget_agg *a);

/* The engine's handle on the module (registered in engine/modules.c). */
struct module_ops;
extern const struct module_ops budget_module_ops;

/* The `obsctl budget --json` document built from a snapshot's section: the
 * contexts and session with exactly the documented keys (no extras). A new
 * reference; NULL with a message in err if the section is malformed. */
json_t *budget_report_json(const json_t *section, char *err, size_t errlen);

/* The human-readable tables of `obsctl budget`. Returns 0, or -1 with a
 * message in err if the section is malformed. */
int budget_report_print(FILE *out, const json_t *section, char *err, size_t errlen);

#endif
