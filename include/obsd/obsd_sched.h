/*
 * obsd_sched.h: per-worker scheduler counter blocks of behavior runtimes.
 * Included by obsd.h.
 *
 * A work-stealing runtime gives each worker thread a counter block in the
 * shared-memory segment and bumps its fields where the scheduler does the
 * matching thing (a local push, a steal attempt, a park, ...). Every block is
 * read at the warmup mark (OBSD_SESSION_TRACKING_START) and at the end
 * (TRACKING_STOP, or ENDED): by obsd_session() itself, at the call, which
 * sends the sample with the event, so the window is exactly the caller's
 * (by the collector when it processes the event, if no sample came). The
 * collector reports per-worker deltas plus throughput, steal yield, idle
 * ratio and fairness in the snapshot section "sched" (see libobsd(3),
 * obsctl(1)).
 *
 *   struct obsd_sched_block *w = obsd_sched_worker(h, OBSD_SCHED_AUTO);
 *   ...
 *   obsd_sched_inc(w, OBSD_SCHED_POPPED_LOCAL);       // ~ one plain increment
 *   run_behavior(b);
 *   obsd_sched_completed(w, obsd_now());
 *
 * Cost: a worker block has a single writer (its worker thread), so an
 * increment is a relaxed atomic load and store of the worker's own cache
 * line: no read-modify-write, no fence. Queue blocks (obsd_sched_queue) are
 * shared by every thread that uses the queue and count with relaxed
 * fetch-add.
 *
 * Consistency: every field is a naturally aligned 64-bit atomic, so the
 * collector never reads a torn value. Counters are independent and monotonic;
 * a live read is not a point-in-time view across fields (identities such as
 * pushes = pops hold at quiescence only). The one multi-field update whose
 * fields are used together, a completion (count, first and last completion
 * time, which give the throughput window), is wrapped in a per-block sequence
 * counter, so the collector reads those three consistently.
 *
 * Blocks live in the segment as long as it exists: a block keeps its values
 * after its owner releases it or exits, and a new claim prefers never-used
 * blocks, then the least recently released. Claim blocks after
 * obsd_session(OBSD_SESSION_STARTED): the collector counts the blocks of live
 * processes and the blocks claimed after the run started.
 */
#ifndef OBSD_OBSD_SCHED_H
#define OBSD_OBSD_SCHED_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct obsd obsd_t;

/* Layout of the scheduler area: blocks of OBSD_SCHED_BLOCK_BYTES, each
 * aligned to its size, so no two blocks share a cache line. */
#define OBSD_SCHED_BLOCK_BYTES 256u
#define OBSD_SCHED_MAGIC 0x44484353u      /* "SCHD" */
#define OBSD_SCHED_LAYOUT_VERSION 1u
#define OBSD_SCHED_AUTO (-1)              /* obsd_sched_worker: next free index */
#define OBSD_SCHED_TAG_MAX 47             /* bytes of a queue tag, without NUL */

/* Worker counters, in the order the snapshot reports them. */
enum obsd_sched_counter {
    OBSD_SCHED_PUSHED_LOCAL = 0,        /* dispatch moved the pending behavior onto own queue */
    OBSD_SCHED_DISPATCHED_TO_PENDING,   /* dispatch into an empty pending slot */
    OBSD_SCHED_PUSHED_REMOTE,           /* off-worker dispatch landed on this worker's queue */
    OBSD_SCHED_POPPED_LOCAL,            /* taken from own pending slot or own queue */
    OBSD_SCHED_POPPED_VIA_STEAL,        /* taken from a victim's queue */
    OBSD_SCHED_ENQUEUE_CAS_RETRIES,     /* failed CAS while pushing */
    OBSD_SCHED_DEQUEUE_CAS_RETRIES,     /* failed CAS while popping */
    OBSD_SCHED_BATCH_RESETS,            /* batch budget forced queue progress */
    OBSD_SCHED_STEAL_ATTEMPTS,          /* single-victim steal tries */
    OBSD_SCHED_STEAL_FAILURES,          /* tries that found nothing */
    OBSD_SCHED_PARKED,                  /* entries into the park wait */
    OBSD_SCHED_FAIRNESS_ARM_FIRES,      /* pops that honoured the fairness flag */
    OBSD_SCHED_N_COUNTERS
};

/* Block states (the first word of a block). */
enum obsd_sched_state {
    OBSD_SCHED_FREE = 0,      /* never claimed (segment is zero-filled) */
    OBSD_SCHED_CLAIMING = 1,  /* an owner is initializing it */
    OBSD_SCHED_ACTIVE = 2,    /* owned; counting */
    OBSD_SCHED_RETIRED = 3,   /* released; values kept until the block is reclaimed */
};

enum obsd_sched_kind {
    OBSD_SCHED_KIND_WORKER = 1,
    OBSD_SCHED_KIND_QUEUE = 2,
};

struct obsd_sched_worker_fields {
    _Atomic uint64_t counter[OBSD_SCHED_N_COUNTERS];
    _Atomic uint64_t last_steal_attempt_ns;  /* a timestamp (obsd_now), 0 = never */
    /* Completions, under completion_seq (odd while the worker updates them). */
    _Atomic uint64_t completion_seq;
    _Atomic uint64_t completed;
    _Atomic uint64_t first_completion_ns;
    _Atomic uint64_t last_completion_ns;
};

struct obsd_sched_queue_fields {
    char tag[OBSD_SCHED_TAG_MAX + 1];         /* NUL-terminated, set at claim */
    _Atomic uint64_t pushed_total;
    _Atomic uint64_t popped_total;
    _Atomic uint64_t enqueue_cas_retries;
    _Atomic uint64_t dequeue_cas_retries;
};

/* One block. The first cache line is the identity, written by the claimer
 * before it publishes state = ACTIVE; the counters start on the second. */
struct obsd_sched_block {
    _Atomic uint32_t state;          /* enum obsd_sched_state */
    uint32_t magic;                  /* OBSD_SCHED_MAGIC */
    uint16_t version;                /* OBSD_SCHED_LAYOUT_VERSION */
    uint16_t kind;                   /* enum obsd_sched_kind */
    _Atomic uint32_t generation;     /* bumped at every claim */
    int32_t owner_pid;
    int32_t owner_tid;
    int64_t index;                   /* worker index (queues: claim order) */
    uint64_t claim_ns;               /* obsd_now() at claim */
    _Atomic uint64_t release_ns;     /* obsd_now() at release, 0 while active */
    uint8_t reserved0[64 - 48];
    union {
        struct obsd_sched_worker_fields w;
        struct obsd_sched_queue_fields q;
        uint8_t bytes[OBSD_SCHED_BLOCK_BYTES - 64];
    } u;
} __attribute__((aligned(64)));

_Static_assert(sizeof(struct obsd_sched_block) == OBSD_SCHED_BLOCK_BYTES,
               "a scheduler block is 256 bytes");

/* Claims a worker block for the calling worker thread. index is the worker's
 * index in its runtime (reported as worker_index), or OBSD_SCHED_AUTO for the
 * next index of this process (0, 1, 2, ...). Counters start at 0. Returns
 * NULL, with obsd_last_error(), when the handle is NULL or every block is in
 * use by a live process. Slow path: call it once per worker. */
struct obsd_sched_block *obsd_sched_worker(obsd_t *h, int index);

/* Claims a queue block counting a message queue named tag (at most
 * OBSD_SCHED_TAG_MAX bytes of printable ASCII). Any thread may count on it. */
struct obsd_sched_block *obsd_sched_queue(obsd_t *h, const char *tag);

/* Releases a block: it keeps its values (the collector still reads them)
 * until a later claim reuses it. Not needed at process exit. */
void obsd_sched_release(struct obsd_sched_block *b);

/* Adds n to a worker counter. Only one thread may write a given field this
 * way: the block's worker, or (pushed_remote) a single dispatching thread. */
static inline void obsd_sched_add(struct obsd_sched_block *b, enum obsd_sched_counter c,
                                  uint64_t n)
{
    _Atomic uint64_t *p = &b->u.w.counter[c];
    atomic_store_explicit(p, atomic_load_explicit(p, memory_order_relaxed) + n,
                          memory_order_relaxed);
}

static inline void obsd_sched_inc(struct obsd_sched_block *b, enum obsd_sched_counter c)
{
    obsd_sched_add(b, c, 1);
}

/* Adds n to a worker counter that threads other than the owner also bump
 * (typically pushed_remote, counted on the target by whoever dispatches):
 * a relaxed fetch-add. A field must be bumped either only with this or only
 * by a single thread with obsd_sched_add. */
static inline void obsd_sched_add_shared(struct obsd_sched_block *b, enum obsd_sched_counter c,
                                         uint64_t n)
{
    atomic_fetch_add_explicit(&b->u.w.counter[c], n, memory_order_relaxed);
}

/* One steal try at now_ns: steal_attempts, last_steal_attempt_ns, and either
 * popped_via_steal (got a behavior) or steal_failures. */
static inline void obsd_sched_steal(struct obsd_sched_block *b, uint64_t now_ns, bool got)
{
    obsd_sched_inc(b, OBSD_SCHED_STEAL_ATTEMPTS);
    obsd_sched_inc(b, got ? OBSD_SCHED_POPPED_VIA_STEAL : OBSD_SCHED_STEAL_FAILURES);
    atomic_store_explicit(&b->u.w.last_steal_attempt_ns, now_ns, memory_order_relaxed);
}

/* One behavior completed at now_ns (count, first and last completion time,
 * written as one consistent group). Only the block's worker thread. */
static inline void obsd_sched_completed(struct obsd_sched_block *b, uint64_t now_ns)
{
    /* A sequence lock without fences (ThreadSanitizer models no fences): the
     * release stores keep the odd sequence ahead of the data and the data
     * ahead of the even sequence; on x86-64 all of them are plain moves. */
    struct obsd_sched_worker_fields *w = &b->u.w;
    uint64_t seq = atomic_load_explicit(&w->completion_seq, memory_order_relaxed);
    atomic_store_explicit(&w->completion_seq, seq + 1, memory_order_relaxed);
    uint64_t n = atomic_load_explicit(&w->completed, memory_order_relaxed);
    atomic_store_explicit(&w->completed, n + 1, memory_order_release);
    if (n == 0)
        atomic_store_explicit(&w->first_completion_ns, now_ns, memory_order_release);
    atomic_store_explicit(&w->last_completion_ns, now_ns, memory_order_release);
    atomic_store_explicit(&w->completion_seq, seq + 2, memory_order_release);
}

/* Queue counters: any thread (relaxed fetch-add). */
static inline void obsd_sched_queue_pushed(struct obsd_sched_block *q, uint64_t cas_retries)
{
    atomic_fetch_add_explicit(&q->u.q.pushed_total, 1, memory_order_relaxed);
    if (cas_retries)
        atomic_fetch_add_explicit(&q->u.q.enqueue_cas_retries, cas_retries, memory_order_relaxed);
}

static inline void obsd_sched_queue_popped(struct obsd_sched_block *q, uint64_t cas_retries)
{
    atomic_fetch_add_explicit(&q->u.q.popped_total, 1, memory_order_relaxed);
    if (cas_retries)
        atomic_fetch_add_explicit(&q->u.q.dequeue_cas_retries, cas_retries, memory_order_relaxed);
}

#ifdef __cplusplus
}
#endif

#endif
