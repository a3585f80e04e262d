/*
 * sched_read.c: copying the scheduler counter blocks out of the segment.
 *
 * The area is shared with producers we do not trust: a block is accepted only
 * with the right magic, layout version and kind, a positive owner pid, a
 * non-negative index and (queues) a NUL-terminated printable tag. The
 * generation is read before and after the copy; a block reclaimed meanwhile
 * is dropped from this read rather than reported with mixed owners.
 *
 * Compiled into libobsd as well (a producer samples the area when it sends a
 * session event), so it depends on nothing but libc: see sched_sample.h.
 */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "sched/sched_sample.h"

int sched_sample_init(struct sched_sample *s, size_t cap)
{
    memset(s, 0, sizeof *s);
    s->cap = cap;
    s->workers = calloc(cap ? cap : 1, sizeof *s->workers);
    s->queues = calloc(cap ? cap : 1, sizeof *s->queues);
    if (!s->workers || !s->queues) {
        sched_sample_free(s);
        return -1;
    }
    return 0;
}

void sched_sample_free(struct sched_sample *s)
{
    free(s->workers);
    free(s->queues);
    memset(s, 0, sizeof *s);
}

void sched_sample_clear(struct sched_sample *s)
{
    s->taken = false;
    s->by_producer = false;
    s->taken_ns = 0;
    s->read_ns = 0;
    s->sampler_pid = 0;
    s->n_workers = s->n_queues = 0;
    s->rejected = s->torn = 0;
}

/* Every load of the reader is an acquire load (a plain move on x86-64), so
 * none of them can drift past the generation re-check that follows. */
#define LOAD(x) __atomic_load_n(&(x), __ATOMIC_ACQUIRE)

static uint64_t ld(const _Atomic uint64_t *p)
{
    return atomic_load_explicit((_Atomic uint64_t *)p, memory_order_acquire);
}

/* The completion group under its sequence counter (see obsd_sched.h). */
static bool read_completions(const struct obsd_sched_worker_fields *w,
                             struct sched_worker_sample *out)
{
    _Atomic uint64_t *seqp = (_Atomic uint64_t *)&w->completion_seq;
    for (int i = 0; i < SCHED_READ_RETRIES; i++) {
        uint64_t s1 = atomic_load_explicit(seqp, memory_order_acquire);
        /* acquire loads keep the second sequence load after the data */
        out->completed = ld(&w->completed);
        out->first_completion_ns = ld(&w->first_completion_ns);
        out->last_completion_ns = ld(&w->last_completion_ns);
        uint64_t s2 = atomic_load_explicit(seqp, memory_order_relaxed);
        if (s1 == s2 && !(s1 & 1))
            return true;
    }
    return false;
}

bool sched_read_worker_block(const struct obsd_sched_block *b, struct sched_worker_sample *w)
{
    for (int c = 0; c < OBSD_SCHED_N_COUNTERS; c++)
        w->counter[c] = ld(&b->u.w.counter[c]);
    w->last_steal_attempt_ns = ld(&b->u.w.last_steal_attempt_ns);
    w->torn = !read_completions(&b->u.w, w);
    return !w->torn;
}

bool sched_tag_valid(const char *tag)
{
    size_t n = strnlen(tag, OBSD_SCHED_TAG_MAX + 1);
    if (n == 0 || n > OBSD_SCHED_TAG_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (tag[i] < 0x20 || tag[i] > 0x7e)
            return false;
    return true;
}

enum sched_block_read sched_read_block(const struct obsd_sched_block *cb, uint32_t pos,
                                       sched_block_filter filter, void *filter_ctx,
                                       struct sched_worker_sample *w,
                                       struct sched_queue_sample *q)
{
    struct obsd_sched_block *b = (struct obsd_sched_block *)cb;
    uint32_t state = atomic_load_explicit(&b->state, memory_order_acquire);
    if (state != OBSD_SCHED_ACTIVE && state != OBSD_SCHED_RETIRED)
        return state == OBSD_SCHED_FREE || state == OBSD_SCHED_CLAIMING ? SCHED_BLOCK_UNUSED
                                                                          : SCHED_BLOCK_INVALID;
    uint32_t gen = atomic_load_explicit(&b->generation, memory_order_acquire);
    /* Identity fields are plain memory written before state was
     * published (and rewritten by a reclaim, which the generation check
     * catches); copy them once with atomic loads, then check the copy. */
    uint32_t magic = LOAD(b->magic);
    uint16_t version = LOAD(b->version), kind = LOAD(b->kind);
    int32_t pid = LOAD(b->owner_pid), tid = LOAD(b->owner_tid);
    int64_t index = LOAD(b->index);
    uint64_t claim_ns = LOAD(b->claim_ns);
    if (magic != OBSD_SCHED_MAGIC || version != OBSD_SCHED_LAYOUT_VERSION ||
        (kind != OBSD_SCHED_KIND_WORKER && kind != OBSD_SCHED_KIND_QUEUE) ||
        pid <= 0 || index < 0 || index > INT32_MAX)
        return SCHED_BLOCK_INVALID;
    if (filter && !filter(filter_ctx, pid, claim_ns))
        return SCHED_BLOCK_FILTERED;
    if (kind == OBSD_SCHED_KIND_WORKER) {
        memset(w, 0, sizeof *w);
        w->block = pos;
        w->generation = gen;
        w->pid = pid;
        w->tid = tid;
        w->worker_index = index;
        w->claim_ns = claim_ns;
        w->state = (uint8_t)state;
        sched_read_worker_block(b, w);
        if (atomic_load_explicit(&b->generation, memory_order_acquire) != gen)
            return SCHED_BLOCK_RECLAIMED;
        return SCHED_BLOCK_WORKER;
    }
    memset(q, 0, sizeof *q);
    for (size_t k = 0; k < sizeof q->tag; k++)
        q->tag[k] = LOAD(b->u.q.tag[k]);
    if (!sched_tag_valid(q->tag))
        return SCHED_BLOCK_INVALID;
    q->block = pos;
    q->generation = gen;
    q->pid = pid;
    q->state = (uint8_t)state;
    q->claim_ns = claim_ns;
    q->pushed_total = ld(&b->u.q.pushed_total);
    q->popped_total = ld(&b->u.q.popped_total);
    q->enqueue_cas_retries = ld(&b->u.q.enqueue_cas_retries);
    q->dequeue_cas_retries = ld(&b->u.q.dequeue_cas_retries);
    if (atomic_load_explicit(&b->generation, memory_order_acquire) != gen)
        return SCHED_BLOCK_RECLAIMED;
    return SCHED_BLOCK_QUEUE;
}

void sched_read(const void *area, size_t bytes, struct sched_sample *out,
                sched_block_filter filter, void *filter_ctx, uint64_t taken_ns)
{
    sched_sample_clear(out);
    out->taken = true;
    out->taken_ns = taken_ns;
    size_t n = bytes / OBSD_SCHED_BLOCK_BYTES;
    if (n > out->cap)
        n = out->cap;
    const struct obsd_sched_block *blocks = area;
    for (size_t i = 0; i < n; i++) {
        struct sched_worker_sample *w = &out->workers[out->n_workers];
        struct sched_queue_sample *q = &out->queues[out->n_queues];
        switch (sched_read_block(&blocks[i], (uint32_t)i, filter, filter_ctx, w, q)) {
        case SCHED_BLOCK_INVALID:
            out->rejected++;
            break;
        case SCHED_BLOCK_WORKER:
            out->torn += w->torn;
            out->n_workers++;
            break;
        case SCHED_BLOCK_QUEUE:
            out->n_queues++;
            break;
        default:
            break;
        }
    }
}
