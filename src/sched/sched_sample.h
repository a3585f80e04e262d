/*
 * sched_sample.h: consistent reads of the scheduler counter area.
 *
 * Shared by both sides: the collector (sched module) reads the area when it
 * needs a sample of its own, and libobsd reads it when a producer sends a
 * session event (sched_wire.h), so the two take their samples with the same
 * validation and the same memory ordering. No dependency beyond libc and
 * obsd_sched.h, so libobsd can carry it.
 *
 * Memory ordering (sched_read.c): every load of a block is an acquire load
 * (a plain move on x86-64). The block's state is loaded first and pairs with
 * the claimer's release store of ACTIVE, so the identity it wrote is visible;
 * the generation is loaded before and after the copy and a block reclaimed
 * in between is dropped from the read; the completion group is read under its
 * sequence counter (see obsd_sched.h). A counter store that happens-before
 * the read is seen by it, one that happens-after it is not (read-write
 * coherence); a store concurrent with the read lands on either side.
 */
#ifndef OBSD_SCHED_SCHED_SAMPLE_H
#define OBSD_SCHED_SCHED_SAMPLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "obsd/obsd_sched.h"

/* How many times a reader retries a completion group whose writer is in the
 * middle of an update before it gives up and marks the worker torn (a writer
 * killed mid-update leaves the sequence odd forever). */
#define SCHED_READ_RETRIES 64

struct sched_worker_sample {
    uint32_t block;                 /* position in the area */
    uint32_t generation;
    int32_t pid, tid;
    int64_t worker_index;
    uint64_t claim_ns;
    uint8_t state;                  /* OBSD_SCHED_ACTIVE or RETIRED */
    bool torn;                      /* completion group not read consistently */
    uint64_t counter[OBSD_SCHED_N_COUNTERS];
    uint64_t last_steal_attempt_ns;
    uint64_t completed;
    uint64_t first_completion_ns;
    uint64_t last_completion_ns;
};

struct sched_queue_sample {
    uint32_t block;
    uint32_t generation;
    int32_t pid;
    uint8_t state;
    uint64_t claim_ns;
    char tag[OBSD_SCHED_TAG_MAX + 1];
    uint64_t pushed_total, popped_total, enqueue_cas_retries, dequeue_cas_retries;
};

struct sched_sample {
    bool taken;
    bool by_producer;               /* taken by libobsd at a session event (sched_wire.h) */
    uint64_t taken_ns;              /* CLOCK_MONOTONIC when read */
    uint64_t read_ns;               /* producer samples: how long the read took */
    int32_t sampler_pid;            /* producer samples: the process that read */
    size_t n_workers, n_queues, cap;
    struct sched_worker_sample *workers;
    struct sched_queue_sample *queues;
    uint64_t rejected;              /* blocks that failed validation in this read */
    uint64_t torn;                  /* workers marked torn in this read */
};

/* cap: the number of blocks of the area. Returns 0 or -1 (out of memory). */
int sched_sample_init(struct sched_sample *s, size_t cap);
void sched_sample_free(struct sched_sample *s);
void sched_sample_clear(struct sched_sample *s);

/* Which claimed blocks belong to the current run: blocks claimed at or after
 * run_start_ns, and blocks of processes still alive. NULL keeps every valid
 * block. */
typedef bool (*sched_block_filter)(void *ctx, int32_t pid, uint64_t claim_ns);

/* What sched_read_block() found. */
enum sched_block_read {
    SCHED_BLOCK_UNUSED,             /* free or being claimed */
    SCHED_BLOCK_INVALID,            /* failed validation (counts as rejected) */
    SCHED_BLOCK_FILTERED,           /* valid, but the filter left it out */
    SCHED_BLOCK_RECLAIMED,          /* reclaimed while it was read: not in this read */
    SCHED_BLOCK_WORKER,             /* *w holds the block */
    SCHED_BLOCK_QUEUE,              /* *q holds the block */
};

/* Reads block b, at position pos of its area, into *w (a worker) or *q (a
 * queue), validating its identity (magic, layout version, kind, owner pid,
 * index, queue tag). filter may be NULL. */
enum sched_block_read sched_read_block(const struct obsd_sched_block *b, uint32_t pos,
                                       sched_block_filter filter, void *filter_ctx,
                                       struct sched_worker_sample *w,
                                       struct sched_queue_sample *q);

/* Reads every block of area (bytes long; the tail that is not a whole block is
 * ignored) into out, which must have cap >= bytes / OBSD_SCHED_BLOCK_BYTES.
 * Blocks that are free or being claimed are skipped; blocks with a bad magic,
 * version, kind, owner, index or tag are skipped and counted in
 * out->rejected. taken_ns is the time to record as the moment of the read. */
void sched_read(const void *area, size_t bytes, struct sched_sample *out,
                sched_block_filter filter, void *filter_ctx, uint64_t taken_ns);

/* Copies one worker block's counters (the caller's own block, e.g. a harness
 * reading its workers) without validation; the completion group as in
 * sched_read. Returns false if the completion group could not be read
 * consistently (out->torn). */
bool sched_read_worker_block(const struct obsd_sched_block *b, struct sched_worker_sample *out);

/* A queue tag as claims write it: 1..OBSD_SCHED_TAG_MAX printable ASCII bytes,
 * NUL-terminated within the field. */
bool sched_tag_valid(const char *tag);

#endif
