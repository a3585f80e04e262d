/*
 * sched.h: the collector side of the scheduler counters.
 *
 * Three layers, each usable alone:
 *   - reading (sched_sample.h, shared with libobsd, which takes the same
 *     samples at session events): sched_read() copies every valid block of
 *     the segment's sched area into a sample without torn values, validating
 *     each block (the area is untrusted shared memory);
 *   - arithmetic: pure functions for per-worker deltas, the measurement
 *     window, derived metrics (throughput, steal_yield, idle_ratio,
 *     enq_retry_ratio, fairness CV and Gini) and repeat summaries, so tests can
 *     check them against hand-computed values;
 *   - the engine module (sched_module_ops): uses the samples the producer took
 *     when it sent TRACKING_START and TRACKING_STOP/ENDED (sched_wire.h), or
 *     reads the area itself when no sample came, and contributes the "sched"
 *     snapshot section.
 *
 * Undefined ratios (a division by zero) are reported as JSON null with a note
 * naming the reason; the has_* flags below say whether a value is defined.
 */
#ifndef OBSD_SCHED_SCHED_H
#define OBSD_SCHED_SCHED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "obsd/obsd_sched.h"
#include "sched/sched_sample.h"

/* Names of the worker counters in JSON, indexed by enum obsd_sched_counter. */
extern const char *const sched_counter_names[OBSD_SCHED_N_COUNTERS];

/* end - warm for every counter and the completion count; the timestamps are
 * end's. warm NULL: the block was claimed inside the window (baseline 0).
 * Returns -1 (out untouched beyond the copy) if a counter went backwards,
 * which only a corrupt or reset block can do. */
int sched_worker_delta(const struct sched_worker_sample *end,
                       const struct sched_worker_sample *warm,
                       struct sched_worker_sample *out);

/* The measurement window: from the warm read to the end read, closed early at
 * the last completion when every worker had finished before the end read
 * (idle time after the last completion is not part of it; with a read by the
 * collector, which lags the event, it would be its lag). Returns 0 when
 * end <= start. The reads' times are the producer's samples' when they came
 * with the events (sched_wire.h). */
uint64_t sched_window_ns(uint64_t warm_ns, uint64_t end_ns, uint64_t max_last_completion_ns);

/* Fairness over per-worker values: population coefficient of variation
 * (stdev / mean; 0 for one worker) and Gini coefficient (0 = equal, (n-1)/n =
 * one worker did everything). Return false when undefined (n == 0 or every
 * value 0). */
bool sched_fairness_cv(const uint64_t *v, size_t n, double *out);
bool sched_fairness_gini(const uint64_t *v, size_t n, double *out);

enum sched_note {
    SCHED_NOTE_NO_WINDOW = 1u << 0,        /* window length 0: throughput null */
    SCHED_NOTE_NO_COMPLETIONS = 1u << 1,   /* steal_yield null */
    SCHED_NOTE_NO_STEAL_ATTEMPTS = 1u << 2,/* idle_ratio null */
    SCHED_NOTE_NO_PUSHES = 1u << 3,        /* enq_retry_ratio null, no producer */
    SCHED_NOTE_NO_POPS = 1u << 4,          /* fairness null */
    SCHED_NOTE_NO_WORKERS = 1u << 5,
};

struct sched_derived {
    size_t n_workers;
    uint64_t window_ns;
    uint64_t completed;             /* Σ completed */
    uint64_t steals;                /* Σ popped_via_steal */
    uint64_t steal_attempts, steal_failures;
    bool has_throughput, has_steal_yield, has_idle_ratio, has_enq_retry_ratio, has_fairness;
    double throughput;              /* completed / window seconds */
    double steal_yield;             /* steals / completed */
    double idle_ratio;              /* steal_failures / steal_attempts */
    int64_t producer_worker_index;  /* the worker with the most pushes (-1: none) */
    uint64_t producer_pushes;       /* its pushed_local + dispatched_to_pending */
    uint64_t producer_enqueue_cas_retries;
    double enq_retry_ratio;         /* producer enqueue_cas_retries / producer_pushes */
    double fairness_cv, fairness_gini;
    uint64_t pop_min, pop_max;      /* per-worker popped_local + popped_via_steal */
    double pop_mean;
    unsigned notes;                 /* enum sched_note */
};

/* Derived metrics over per-worker deltas and a window. */
void sched_derive(const struct sched_worker_sample *deltas, size_t n, uint64_t window_ns,
                  struct sched_derived *out);

/* The note texts of a notes mask, one per set bit (for JSON and tables). */
size_t sched_note_texts(unsigned notes, const char **out, size_t max);

/* Summary of repeats: mean over n >= 1; sample stdev, min and max need n >= 2
 * (has_spread false below that, reported as null). */
struct sched_summary {
    size_t n;
    bool has_mean, has_spread;
    double mean, stdev, min, max;
};
void sched_summarize(const double *v, size_t n, struct sched_summary *out);

/* JSON of one worker sample / delta (worker_index, block, pid, counters,
 * completions) and of derived metrics (null where undefined, plus "notes"). */
json_t *sched_worker_json(const struct sched_worker_sample *w);
json_t *sched_queue_json(const struct sched_queue_sample *q);
json_t *sched_derived_json(const struct sched_derived *d);

/* The engine module (module.h); registered in engine/modules.c. */
struct module_ops;
extern const struct module_ops sched_module_ops;

/* The module's state on a given area (what create does with the segment's
 * sched area); tests drive the ops with it. */
void *sched_module_create_on(void *area, size_t bytes,
                             void (*log)(int level, const char *fmt, ...));

/* The "sched" snapshot section for the module's current state: final deltas
 * once the end was sampled, running deltas before (reads the area now).
 * NULL when the run has no blocks. d_out (may be NULL) gets the metrics. */
json_t *sched_module_section(void *state, struct sched_derived *d_out);

#endif
