/*
 * sched_producer.c: claiming and releasing counter blocks (see
 * sched_producer.h). Slow path only; counting is inline in obsd_sched.h.
 */
#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "sched/sched_producer.h"

#define STORE(x, v) __atomic_store_n(&(x), (v), __ATOMIC_RELAXED)
#define LOAD(x) __atomic_load_n(&(x), __ATOMIC_RELAXED)

static _Atomic int auto_worker_index;
static _Atomic int64_t queue_index;

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static bool owner_dead(int32_t pid)
{
    return pid <= 0 || (kill(pid, 0) == -1 && errno == ESRCH);
}

static bool tag_ok(const char *tag)
{
    if (!tag)
        return false;
    size_t n = strnlen(tag, OBSD_SCHED_TAG_MAX + 1);
    if (n == 0 || n > OBSD_SCHED_TAG_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (tag[i] < 0x20 || tag[i] > 0x7e)
            return false;
    return true;
}

/* Takes ownership of one block (state CLAIMING on success). The lowest FREE
 * block first, and no block ever returns to FREE: the blocks in use stay a
 * prefix of the area, which the session-event sampler relies on to stop at
 * the first FREE block (sched_wire.c). */
static struct obsd_sched_block *grab(struct obsd_sched_block *blocks, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint32_t expect = OBSD_SCHED_FREE;
        if (atomic_load_explicit(&blocks[i].state, memory_order_relaxed) == OBSD_SCHED_FREE &&
            atomic_compare_exchange_strong(&blocks[i].state, &expect, OBSD_SCHED_CLAIMING))
            return &blocks[i];
    }
    /* No fresh block: reuse the one released longest ago. A few rounds in
     * case another claimer wins the race for our pick. */
    for (int round = 0; round < 8; round++) {
        struct obsd_sched_block *best = NULL;
        uint32_t best_state = 0;
        uint64_t best_age = UINT64_MAX;
        for (size_t i = 0; i < n; i++) {
            uint32_t st = atomic_load_explicit(&blocks[i].state, memory_order_acquire);
            uint64_t age;
            if (st == OBSD_SCHED_RETIRED)
                age = atomic_load_explicit(&blocks[i].release_ns, memory_order_relaxed);
            else if (st == OBSD_SCHED_ACTIVE && owner_dead(LOAD(blocks[i].owner_pid)))
                age = LOAD(blocks[i].claim_ns);
            else if (st == OBSD_SCHED_FREE)
                age = 0;
            else
                continue;
            if (age < best_age) {
                best = &blocks[i];
                best_state = st;
                best_age = age;
            }
        }
        if (!best)
            return NULL;
        if (atomic_compare_exchange_strong(&best->state, &best_state, OBSD_SCHED_CLAIMING))
            return best;
    }
    return NULL;
}

struct obsd_sched_block *sched_area_claim(void *area, size_t bytes, int kind, int index,
                                          const char *tag, const char **why)
{
    const char *dummy;
    if (!why)
        why = &dummy;
    if (!area || bytes < OBSD_SCHED_BLOCK_BYTES) {
        *why = "the segment has no scheduler area (sched_workers = 0)";
        return NULL;
    }
    if (kind == OBSD_SCHED_KIND_WORKER && index < 0 && index != OBSD_SCHED_AUTO) {
        *why = "worker index must be >= 0 or OBSD_SCHED_AUTO";
        return NULL;
    }
    if (kind == OBSD_SCHED_KIND_QUEUE && !tag_ok(tag)) {
        *why = "queue tag must be 1..47 bytes of printable ASCII";
        return NULL;
    }
    if (kind != OBSD_SCHED_KIND_WORKER && kind != OBSD_SCHED_KIND_QUEUE) {
        *why = "unknown block kind";
        return NULL;
    }
    struct obsd_sched_block *b = grab(area, bytes / OBSD_SCHED_BLOCK_BYTES);
    if (!b) {
        *why = "every scheduler block is in use by a live process (raise sched_workers)";
        return NULL;
    }
    /* Readers that copied the old owner see the generation change and drop
     * their copy (the seq_cst bump stays ahead of the rewrites below, which
     * the reader loads before its second, acquire, generation load). */
    atomic_fetch_add(&b->generation, 1);
    int64_t idx;
    if (kind == OBSD_SCHED_KIND_QUEUE)
        idx = atomic_fetch_add(&queue_index, 1);
    else if (index == OBSD_SCHED_AUTO)
        idx = atomic_fetch_add(&auto_worker_index, 1);
    else
        idx = index;
    STORE(b->magic, OBSD_SCHED_MAGIC);
    STORE(b->version, (uint16_t)OBSD_SCHED_LAYOUT_VERSION);
    STORE(b->kind, (uint16_t)kind);
    STORE(b->owner_pid, (int32_t)getpid());
    STORE(b->owner_tid, (int32_t)gettid());
    STORE(b->index, idx);
    STORE(b->claim_ns, mono_ns());
    atomic_store_explicit(&b->release_ns, 0, memory_order_relaxed);
    if (kind == OBSD_SCHED_KIND_WORKER) {
        struct obsd_sched_worker_fields *w = &b->u.w;
        for (int c = 0; c < OBSD_SCHED_N_COUNTERS; c++)
            atomic_store_explicit(&w->counter[c], 0, memory_order_relaxed);
        atomic_store_explicit(&w->last_steal_attempt_ns, 0, memory_order_relaxed);
        atomic_store_explicit(&w->completion_seq, 0, memory_order_relaxed);
        atomic_store_explicit(&w->completed, 0, memory_order_relaxed);
        atomic_store_explicit(&w->first_completion_ns, 0, memory_order_relaxed);
        atomic_store_explicit(&w->last_completion_ns, 0, memory_order_relaxed);
    } else {
        struct obsd_sched_queue_fields *q = &b->u.q;
        size_t n = strlen(tag);
        for (size_t i = 0; i < sizeof q->tag; i++)
            STORE(q->tag[i], i < n ? tag[i] : '\0');
        atomic_store_explicit(&q->pushed_total, 0, memory_order_relaxed);
        atomic_store_explicit(&q->popped_total, 0, memory_order_relaxed);
        atomic_store_explicit(&q->enqueue_cas_retries, 0, memory_order_relaxed);
        atomic_store_explicit(&q->dequeue_cas_retries, 0, memory_order_relaxed);
    }
    atomic_store_explicit(&b->state, OBSD_SCHED_ACTIVE, memory_order_release);
    return b;
}

void sched_block_release(struct obsd_sched_block *b)
{
    if (!b)
        return;
    atomic_store_explicit(&b->release_ns, mono_ns(), memory_order_relaxed);
    uint32_t expect = OBSD_SCHED_ACTIVE;
    atomic_compare_exchange_strong(&b->state, &expect, OBSD_SCHED_RETIRED);
}
