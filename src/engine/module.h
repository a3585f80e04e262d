/*
 * module.h: how the engine drives the collector-side modules (budget, sched,
 * requests, ...).
 *
 * The engine owns the loop, the run state machine and the snapshot; a module
 * owns the records of its type range and the metrics and JSON section they
 * produce. Every callback runs on the engine's thread, so a module needs no
 * locking of its own (a module with worker threads, like tokenq, hands results
 * back through its own queue and picks them up in on_tick).
 *
 * A module is registered by adding its ops to the list in modules.c.
 */
#ifndef OBSD_ENGINE_MODULE_H
#define OBSD_ENGINE_MODULE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "publisher/snapshot.h"
#include "shm/shm.h"

#include "obsd/obsd_collector.h"

/* What a module may use from its host. */
struct module_env {
    const struct obsd_collector_config *config;
    struct shm_segment *segment;
    const char *store_dir;          /* for spill files */
    void (*log)(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
    /* Becomes true while drain() runs when SIGTERM or obsd_collector_stop()
     * arrives: drain() should return promptly (what is left stays pending). */
    const _Atomic bool *drain_cancel;
};

struct module_ops {
    const char *name;               /* also the snapshot section name */
    uint8_t type_first, type_last;  /* record types it owns (inclusive); 0,0 = none */

    /* Returns NULL with a message in err on failure (a startup error). */
    void *(*create)(const struct module_env *env, char *err, size_t errlen);
    void (*destroy)(void *state);

    /* A new run starts (session started): forget the previous run. */
    void (*reset)(void *state);

    /* One record of the module's types. Return 0, or -1 if it is malformed:
     * the engine counts it as rejected. */
    int (*on_record)(void *state, const struct shm_producer *from, const struct shm_record *rec);

    /* Every session event, after the engine applied it to the run state. */
    void (*on_session)(void *state, int event /* enum obsd_session_event */, uint64_t ts_ns);

    /* Once per publish interval, before a snapshot is built. */
    void (*on_tick)(void *state);

    /* Work to finish between session end and the final snapshot (the token
     * drain). Returns the number of tasks still pending afterwards. Called once;
     * NULL means nothing to do. deadline_ns is CLOCK_MONOTONIC, 0 = none. */
    uint64_t (*drain)(void *state, uint64_t deadline_ns);

    /* Tasks not yet done (n_pending_tasks is the sum over modules). */
    uint64_t (*pending)(void *state);

    /* Adds the module's counters, series and section. final: the last
     * snapshot of the run (exact statistics where the module has them). */
    int (*contribute)(void *state, struct snapshot *snap, bool final);
};

#endif
