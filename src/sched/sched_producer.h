/*
 * sched_producer.h: claiming scheduler counter blocks in an area of memory.
 *
 * obsd_sched_worker() and obsd_sched_queue() call these on the segment's
 * sched area; tests, benchmarks and the chain_ring example (when it runs
 * without a collector) call them on an area of their own.
 *
 * Claim protocol: a claimer moves a block FREE -> CLAIMING (CAS), bumps its
 * generation, writes identity and zero counters, then publishes ACTIVE with a
 * release store. Release moves it to RETIRED with its values kept. A new claim
 * takes a FREE block first, else the RETIRED block, or the ACTIVE block of a
 * dead process, released longest ago.
 */
#ifndef OBSD_SCHED_SCHED_PRODUCER_H
#define OBSD_SCHED_SCHED_PRODUCER_H

#include <stddef.h>
#include <stdint.h>

#include "obsd/obsd_sched.h"

/* kind: OBSD_SCHED_KIND_WORKER (index >= 0, or OBSD_SCHED_AUTO) or
 * OBSD_SCHED_KIND_QUEUE (tag required). NULL when no block is available or an
 * argument is bad; *why (if not NULL) then says which. */
struct obsd_sched_block *sched_area_claim(void *area, size_t bytes, int kind, int index,
                                          const char *tag, const char **why);

void sched_block_release(struct obsd_sched_block *b);

#endif
