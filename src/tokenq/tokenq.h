/*
 * tokenq.h: the token batch queue. Texts whose tokens must be counted are
 * pushed in O(1) by the (single-threaded) engine; a live lane of worker
 * threads counts them in slices while the run goes on, and a drain counts
 * everything left at the end of the run on a pool of threads, one pinned per
 * CPU the process may use. Results come back only through tokenq_poll_results,
 * called from the engine's own thread, so the engine stays single-threaded.
 *
 * Nothing is lost: a live slice that fails goes back to the front of the
 * queue; a drain that fails or times out leaves the rest pending
 * (tokenq_pending says how many). Pending text beyond a memory cap spills to
 * an unlinked file in a given directory and is read back at the drain.
 *
 * Threading: tokenq_push, tokenq_live_flush, tokenq_drain, tokenq_poll_results,
 * tokenq_pending and tokenq_destroy are called from one thread (the engine's).
 */
#ifndef OBSD_TOKENQ_TOKENQ_H
#define OBSD_TOKENQ_TOKENQ_H

#include <stddef.h>
#include <stdint.h>

#include "tokenq/tokenizer.h"

typedef struct tokenq tokenq;

/* Counts one text; returns the count or a negative error. Default: tokenizer_count. */
typedef int64_t (*tokenq_count_fn)(void *ctx, const char *text, size_t len);

/* Receives one result on the caller's thread. */
typedef void (*tokenq_result_fn)(void *ctx, uint64_t target, uint64_t count);

typedef struct tokenq_config {
    const tokenizer *tok;      /* used when count is NULL */
    tokenq_count_fn count;     /* optional override (tests, other counters) */
    void *count_ctx;
    unsigned live_workers;     /* live lane threads; 0 defers everything to the drain */
    size_t memory_cap;         /* bytes of pending text kept in memory; 0 = 64 MiB */
    const char *spill_dir;     /* where text beyond the cap goes; NULL = /tmp */
} tokenq_config;

#define TOKENQ_SLICE_MAX 1024 /* items per live slice */

/* Creates a queue (and starts the live lane). NULL with errno set on failure. */
tokenq *tokenq_create(const tokenq_config *cfg);

/* Stops the live lane (finishing its slice) and frees everything, pending
 * items included. Undelivered results are dropped: poll first. */
void tokenq_destroy(tokenq *q);

/* Queues a copy of text for counting, result tagged with target. O(1).
 * Returns 0, or -1 with errno (ENOMEM; EIO if spilling failed). */
int tokenq_push(tokenq *q, const char *text, size_t len, uint64_t target);

/* Hands the live lane a slice of at most TOKENQ_SLICE_MAX in-memory items,
 * unless it is still busy with the previous one. Never blocks. Returns the
 * number of items handed over. Call once per publish interval. */
size_t tokenq_live_flush(tokenq *q);

/* Counts everything pending on one thread per allowed CPU (each pinned),
 * after waiting for the live lane's slice. timeout_ns 0 = unlimited. Returns
 * 0 when nothing is left, -1 with errno ETIMEDOUT (time ran out) or the
 * count error's cause (EIO, ENOMEM); unfinished items stay pending. */
int tokenq_drain(tokenq *q, uint64_t timeout_ns);

/* Delivers the results completed so far through fn on this thread; returns
 * how many were delivered. */
size_t tokenq_poll_results(tokenq *q, tokenq_result_fn fn, void *ctx);

/* Items pushed and not yet counted (queued, in a live slice, or spilled). */
uint64_t tokenq_pending(const tokenq *q);

/* Pending items whose text is in the spill file right now. */
uint64_t tokenq_spilled(const tokenq *q);

#endif
