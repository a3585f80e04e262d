/*
 * sched_wire.c: encoding a producer's sample of the counter area (libobsd)
 * and decoding it as untrusted input (the sched module). See sched_wire.h.
 */
#include <stdatomic.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "obsd/obsd.h"
#include "sched/sched_wire.h"

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Blocks in use form a prefix of the area: a claim takes the lowest FREE
 * block, and no block returns to FREE (sched_producer.c), so a block is
 * claimed only after every block before it was. A scan can stop at the first
 * FREE block: one claimed after that load was claimed after the scan began,
 * and falls on the side of the sample any concurrent claim may fall on. So a
 * sample costs the blocks in use, not the size of the area. The loads are
 * relaxed: they only decide where to stop; sched_read_block() orders its own. */
static bool is_free(const struct obsd_sched_block *b)
{
    return atomic_load_explicit((_Atomic uint32_t *)&b->state, memory_order_relaxed) ==
           OBSD_SCHED_FREE;
}

size_t sched_wire_in_use(const void *area, size_t bytes)
{
    size_t n = area ? bytes / OBSD_SCHED_BLOCK_BYTES : 0, k = 0;
    const struct obsd_sched_block *blocks = area;
    while (k < n && !is_free(&blocks[k]))
        k++;
    return k;
}

size_t sched_wire_take(const void *area, size_t bytes, size_t scan, uint64_t event_ts_ns,
                       uint64_t taken_ns, void *buf)
{
    size_t n = area ? bytes / OBSD_SCHED_BLOCK_BYTES : 0;
    const struct obsd_sched_block *blocks = area;
    if (scan > n)
        scan = n;
    struct sched_pl_sample hdr;
    memset(&hdr, 0, sizeof hdr);
    hdr.version = SCHED_WIRE_VERSION;
    hdr.area_blocks = (uint32_t)n;
    hdr.event_ts_ns = event_ts_ns;
    hdr.taken_ns = taken_ns;
    hdr.pid = (int32_t)getpid();
    unsigned char *p = (unsigned char *)buf + sizeof hdr;
    for (size_t i = 0; i < scan && !is_free(&blocks[i]); i++) {
        struct sched_worker_sample w;
        struct sched_queue_sample q;
        struct sched_pl_entry e;
        enum sched_block_read r = sched_read_block(&blocks[i], (uint32_t)i, NULL, NULL, &w, &q);
        if (r == SCHED_BLOCK_INVALID)
            hdr.rejected++;
        if (r != SCHED_BLOCK_WORKER && r != SCHED_BLOCK_QUEUE)
            continue;
        memset(&e, 0, sizeof e);
        e.block = (uint32_t)i;
        if (r == SCHED_BLOCK_WORKER) {
            e.generation = w.generation;
            e.pid = w.pid;
            e.tid = w.tid;
            e.index = w.worker_index;
            e.claim_ns = w.claim_ns;
            e.kind = OBSD_SCHED_KIND_WORKER;
            e.state = w.state;
            e.flags = w.torn ? SCHED_PL_TORN : 0;
            memcpy(e.u.w.counter, w.counter, sizeof e.u.w.counter);
            e.u.w.last_steal_attempt_ns = w.last_steal_attempt_ns;
            e.u.w.completed = w.completed;
            e.u.w.first_completion_ns = w.first_completion_ns;
            e.u.w.last_completion_ns = w.last_completion_ns;
        } else {
            e.generation = q.generation;
            e.pid = q.pid;
            e.claim_ns = q.claim_ns;
            e.kind = OBSD_SCHED_KIND_QUEUE;
            e.state = q.state;
            memcpy(e.u.q.tag, q.tag, sizeof e.u.q.tag);
            e.u.q.pushed_total = q.pushed_total;
            e.u.q.popped_total = q.popped_total;
            e.u.q.enqueue_cas_retries = q.enqueue_cas_retries;
            e.u.q.dequeue_cas_retries = q.dequeue_cas_retries;
        }
        memcpy(p, &e, sizeof e);
        p += sizeof e;
        hdr.n_entries++;
    }
    uint64_t end = mono_ns();
    hdr.read_ns = end > taken_ns ? end - taken_ns : 0;
    memcpy(buf, &hdr, sizeof hdr);
    return (size_t)(p - (unsigned char *)buf);
}

/* The block an entry names, as the area holds it now: NULL when it agrees
 * (or was reclaimed since, which a newer generation shows), else why not.
 * Same loads and generation re-check as sched_read_block(). */
static const char *cross_check(const struct obsd_sched_block *cb, const struct sched_pl_entry *e)
{
    struct obsd_sched_block *b = (struct obsd_sched_block *)cb;
    uint32_t state = atomic_load_explicit(&b->state, memory_order_acquire);
    if (state != OBSD_SCHED_ACTIVE && state != OBSD_SCHED_RETIRED)
        return NULL;   /* being reclaimed */
    uint32_t gen = atomic_load_explicit(&b->generation, memory_order_acquire);
    if (gen != e->generation)
        return NULL;   /* reclaimed since the sample */
    uint16_t kind = __atomic_load_n(&b->kind, __ATOMIC_ACQUIRE);
    int32_t pid = __atomic_load_n(&b->owner_pid, __ATOMIC_ACQUIRE);
    int64_t index = __atomic_load_n(&b->index, __ATOMIC_ACQUIRE);
    if (atomic_load_explicit(&b->generation, memory_order_acquire) != gen)
        return NULL;
    if (kind != e->kind || pid != e->pid ||
        (e->kind == OBSD_SCHED_KIND_WORKER && index != e->index))
        return "an entry disagrees with its block's owner, kind or index in the area";
    return NULL;
}

static bool zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return false;
    return true;
}

const char *sched_wire_decode(const void *payload, size_t len, uint32_t event, const void *area,
                              size_t bytes, uint64_t now_ns, struct sched_sample *out,
                              uint64_t *event_ts)
{
    struct sched_pl_sample h;
    size_t blocks = area ? bytes / OBSD_SCHED_BLOCK_BYTES : 0;
    sched_sample_clear(out);
    if (len < sizeof h)
        return "shorter than its header";
    memcpy(&h, payload, sizeof h);
    if (h.version != SCHED_WIRE_VERSION)
        return "unknown version";
    if (h.reserved0 || h.reserved1)
        return "reserved header fields not zero";
    if (event < OBSD_SESSION_STARTED || event > OBSD_SESSION_INTERRUPTED)
        return "unknown session event";
    if (h.area_blocks != blocks || blocks > out->cap)
        return "taken on an area of another size";
    if (h.n_entries > blocks)
        return "more entries than blocks";
    if (len != sizeof h + (size_t)h.n_entries * sizeof(struct sched_pl_entry))
        return "length disagrees with the entry count";
    if (h.rejected > blocks - h.n_entries)
        return "more rejected blocks than blocks";
    if (h.pid <= 0)
        return "bad sampler pid";
    /* Same clock, same host: a real sample lies in the past. */
    if (h.taken_ns == 0 || h.taken_ns > now_ns || h.read_ns > now_ns - h.taken_ns)
        return "timestamps in the future";
    const unsigned char *p = (const unsigned char *)payload + sizeof h;
    const struct obsd_sched_block *area_blocks = area;
    int64_t prev = -1;
    for (uint32_t i = 0; i < h.n_entries; i++, p += sizeof(struct sched_pl_entry)) {
        struct sched_pl_entry e;
        memcpy(&e, p, sizeof e);
        if ((int64_t)e.block <= prev || e.block >= blocks)
            return "entries out of area order, repeated or beyond the area";
        prev = e.block;
        if (e.state != OBSD_SCHED_ACTIVE && e.state != OBSD_SCHED_RETIRED)
            return "an entry of a block not in use";
        if (e.pid <= 0 || !zero(e.reserved, sizeof e.reserved) || (e.flags & ~SCHED_PL_TORN))
            return "an entry with a bad pid, flags or reserved bytes";
        if (e.kind == OBSD_SCHED_KIND_WORKER) {
            if (e.index < 0 || e.index > INT32_MAX)
                return "a worker entry with a bad index";
        } else if (e.kind == OBSD_SCHED_KIND_QUEUE) {
            if (e.index != 0 || e.tid != 0 || e.flags || !sched_tag_valid(e.u.q.tag))
                return "a queue entry with a bad tag or fields a queue does not have";
        } else {
            return "an entry of unknown kind";
        }
        const char *why = cross_check(&area_blocks[e.block], &e);
        if (why)
            return why;
        if (e.kind == OBSD_SCHED_KIND_WORKER) {
            struct sched_worker_sample *w = &out->workers[out->n_workers++];
            memset(w, 0, sizeof *w);
            w->block = e.block;
            w->generation = e.generation;
            w->pid = e.pid;
            w->tid = e.tid;
            w->worker_index = e.index;
            w->claim_ns = e.claim_ns;
            w->state = e.state;
            w->torn = e.flags & SCHED_PL_TORN;
            memcpy(w->counter, e.u.w.counter, sizeof w->counter);
            w->last_steal_attempt_ns = e.u.w.last_steal_attempt_ns;
            w->completed = e.u.w.completed;
            w->first_completion_ns = e.u.w.first_completion_ns;
            w->last_completion_ns = e.u.w.last_completion_ns;
            out->torn += w->torn;
        } else {
            struct sched_queue_sample *q = &out->queues[out->n_queues++];
            memset(q, 0, sizeof *q);
            q->block = e.block;
            q->generation = e.generation;
            q->pid = e.pid;
            q->state = e.state;
            q->claim_ns = e.claim_ns;
            memcpy(q->tag, e.u.q.tag, sizeof q->tag);
            q->pushed_total = e.u.q.pushed_total;
            q->popped_total = e.u.q.popped_total;
            q->enqueue_cas_retries = e.u.q.enqueue_cas_retries;
            q->dequeue_cas_retries = e.u.q.dequeue_cas_retries;
        }
    }
    out->taken = true;
    out->by_producer = true;
    out->taken_ns = h.taken_ns;
    out->read_ns = h.read_ns;
    out->sampler_pid = h.pid;
    out->rejected = h.rejected;
    *event_ts = h.event_ts_ns;
    return NULL;
}
