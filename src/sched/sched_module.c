/*
 * sched_module.c: the engine module of the scheduler counters.
 *
 * The counters live in the segment's sched area. The module needs samples of
 * it at session events: STARTED (fallback baseline), TRACKING_START (the
 * warmup mark: the baseline), TRACKING_STOP or else ENDED/INTERRUPTED (the
 * end). Between the baseline and the end every snapshot shows the running
 * deltas; after the end, the final ones.
 *
 * A sample is the producer's own when it sent one with the event (record
 * OBSD_REC_SCHED_SAMPLE, sched_wire.h: read by libobsd at the call, so the
 * window is exactly the producer's). The record comes just before its event
 * in the same ring (STARTED's just after), and is held in a short pending list
 * until the engine hands over the event with the same code and timestamp.
 * Without one (an older libobsd, a dropped or rejected record, a collector
 * that attached after the event was sent) the module reads the area when it
 * processes the event, as before, and the section says the window is
 * approximate. Which events count is the same either way.
 */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/module.h"
#include "sched/sched.h"
#include "sched/sched_wire.h"

#include "obsd/obsd.h"

enum phase { PH_NONE, PH_STARTED, PH_TRACKING, PH_DONE };

/* Producer samples waiting for their event: a few suffice, since a sample is
 * written right next to its event; the oldest goes when the list is full. */
#define SCHED_PENDING_MAX 8

struct pending {
    bool used;
    uint32_t event;
    uint64_t event_ts;
    uint64_t arrival;               /* order of arrival, for eviction */
    struct sched_sample s;          /* sized to what it holds */
};

struct sched_state {
    void *area;
    size_t bytes, cap;
    uint64_t run_start_ns;          /* 0: unknown (collector attached mid-run) */
    enum phase phase;
    struct sched_sample start, warm, end, cur;
    struct sched_sample scratch;    /* a sample record being decoded */
    struct sched_worker_sample *deltas;
    uint64_t invalid_blocks;        /* blocks failing validation, at the last read */
    uint64_t nonmonotonic;          /* workers dropped because a counter went backwards */
    bool started_seen;              /* the STARTED whose late sample start may still take */
    uint64_t started_ts;
    struct pending pending[SCHED_PENDING_MAX];
    uint64_t arrivals;
    /* producer sample records, over the module's life */
    uint64_t samples_received, samples_used, samples_rejected, samples_unmatched;
    void (*log)(int level, const char *fmt, ...);
};

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static bool pid_alive(int32_t pid)
{
    return kill(pid, 0) == 0 || errno != ESRCH;
}

static bool run_filter(void *ctx, int32_t pid, uint64_t claim_ns)
{
    struct sched_state *st = ctx;
    /* run start unknown (no STARTED seen yet): live processes only */
    return (st->run_start_ns && claim_ns >= st->run_start_ns) || pid_alive(pid);
}

static void take(struct sched_state *st, struct sched_sample *s)
{
    sched_read(st->area, st->bytes, s, run_filter, st, mono_ns());
    st->invalid_blocks = s->rejected;
}

/* A producer's sample as the module's sample: the blocks of this run only,
 * by the same filter as take(), applied now. */
static void install(struct sched_state *st, struct sched_sample *dst,
                    const struct sched_sample *src)
{
    sched_sample_clear(dst);
    dst->taken = true;
    dst->by_producer = true;
    dst->taken_ns = src->taken_ns;
    dst->read_ns = src->read_ns;
    dst->sampler_pid = src->sampler_pid;
    dst->rejected = src->rejected;
    for (size_t i = 0; i < src->n_workers && dst->n_workers < dst->cap; i++) {
        const struct sched_worker_sample *w = &src->workers[i];
        if (!run_filter(st, w->pid, w->claim_ns))
            continue;
        dst->workers[dst->n_workers++] = *w;
        dst->torn += w->torn;
    }
    for (size_t i = 0; i < src->n_queues && dst->n_queues < dst->cap; i++)
        if (run_filter(st, src->queues[i].pid, src->queues[i].claim_ns))
            dst->queues[dst->n_queues++] = src->queues[i];
    st->invalid_blocks = dst->rejected;
    st->samples_used++;
}

static void pending_drop(struct pending *p)
{
    sched_sample_free(&p->s);
    p->used = false;
}

/* Keeps a copy of the decoded sample until its event comes. */
static void pending_add(struct sched_state *st, uint32_t event, uint64_t event_ts,
                        const struct sched_sample *s)
{
    struct pending *slot = NULL;
    for (size_t i = 0; i < SCHED_PENDING_MAX && !slot; i++)
        if (!st->pending[i].used)
            slot = &st->pending[i];
    if (!slot) {
        slot = &st->pending[0];
        for (size_t i = 1; i < SCHED_PENDING_MAX; i++)
            if (st->pending[i].arrival < slot->arrival)
                slot = &st->pending[i];
        pending_drop(slot);
        st->samples_unmatched++;   /* its event never came (dropped, or ignored by the engine) */
    }
    size_t n = s->n_workers > s->n_queues ? s->n_workers : s->n_queues;
    if (sched_sample_init(&slot->s, n) < 0) {
        st->samples_unmatched++;
        return;
    }
    struct sched_sample *d = &slot->s;
    size_t cap = d->cap;
    struct sched_worker_sample *ws = d->workers;
    struct sched_queue_sample *qs = d->queues;
    *d = *s;
    d->cap = cap;
    d->workers = ws;
    d->queues = qs;
    memcpy(ws, s->workers, s->n_workers * sizeof *ws);
    memcpy(qs, s->queues, s->n_queues * sizeof *qs);
    slot->used = true;
    slot->event = event;
    slot->event_ts = event_ts;
    slot->arrival = ++st->arrivals;
}

/* The pending sample of this event (the earliest, if a thread sent the same
 * event twice with one timestamp), or NULL. */
static struct pending *pending_find(struct sched_state *st, uint32_t event, uint64_t ts)
{
    struct pending *best = NULL;
    for (size_t i = 0; i < SCHED_PENDING_MAX; i++) {
        struct pending *p = &st->pending[i];
        if (p->used && p->event == event && p->event_ts == ts &&
            (!best || p->arrival < best->arrival))
            best = p;
    }
    return best;
}

/* The sample of a session event: the producer's if it sent one, else a read
 * of the area now. A pending sample of the event is consumed either way. */
static void sample_for(struct sched_state *st, int event, uint64_t ts, struct sched_sample *dst,
                       bool wanted)
{
    struct pending *p = pending_find(st, (uint32_t)event, ts);
    if (wanted) {
        if (p)
            install(st, dst, &p->s);
        else
            take(st, dst);
    }
    if (p)
        pending_drop(p);
}

void *sched_module_create_on(void *area, size_t bytes,
                             void (*log)(int level, const char *fmt, ...))
{
    struct sched_state *st = calloc(1, sizeof *st);
    if (!st)
        return NULL;
    st->area = area;
    st->bytes = area ? bytes : 0;
    st->cap = st->bytes / OBSD_SCHED_BLOCK_BYTES;
    st->log = log;
    if (sched_sample_init(&st->start, st->cap) || sched_sample_init(&st->warm, st->cap) ||
        sched_sample_init(&st->end, st->cap) || sched_sample_init(&st->cur, st->cap) ||
        sched_sample_init(&st->scratch, st->cap) ||
        !(st->deltas = calloc(st->cap ? st->cap : 1, sizeof *st->deltas))) {
        sched_sample_free(&st->start);
        sched_sample_free(&st->warm);
        sched_sample_free(&st->end);
        sched_sample_free(&st->cur);
        sched_sample_free(&st->scratch);
        free(st);
        return NULL;
    }
    return st;
}

static void *sched_create(const struct module_env *env, char *err, size_t errlen)
{
    size_t bytes = 0;
    void *area = env->segment ? shm_sched_area(env->segment, &bytes) : NULL;
    void *st = sched_module_create_on(area, bytes, env->log);
    if (!st)
        snprintf(err, errlen, "sched: out of memory for %zu counter blocks",
                 bytes / OBSD_SCHED_BLOCK_BYTES);
    return st;
}

static void sched_destroy(void *state)
{
    struct sched_state *st = state;
    if (!st)
        return;
    sched_sample_free(&st->start);
    sched_sample_free(&st->warm);
    sched_sample_free(&st->end);
    sched_sample_free(&st->cur);
    sched_sample_free(&st->scratch);
    for (size_t i = 0; i < SCHED_PENDING_MAX; i++)
        if (st->pending[i].used)
            pending_drop(&st->pending[i]);
    free(st->deltas);
    free(st);
}

static void sched_reset(void *state)
{
    struct sched_state *st = state;
    st->run_start_ns = 0;
    st->phase = PH_NONE;
    sched_sample_clear(&st->start);
    sched_sample_clear(&st->warm);
    sched_sample_clear(&st->end);
    sched_sample_clear(&st->cur);
    st->nonmonotonic = 0;
    st->started_seen = false;
    /* Pending samples stay: the next run's STARTED may have sent its sample
     * while this run was still draining (the engine replays the event after
     * the final). */
}

static void sched_on_session(void *state, int event, uint64_t ts_ns)
{
    struct sched_state *st = state;
    switch (event) {
    case OBSD_SESSION_STARTED:
        st->run_start_ns = ts_ns;
        sample_for(st, event, ts_ns, &st->start, true);
        st->phase = PH_STARTED;
        /* STARTED's sample follows its event: it may still come */
        st->started_seen = !st->start.by_producer;
        st->started_ts = ts_ns;
        break;
    case OBSD_SESSION_TRACKING_START:
        sample_for(st, event, ts_ns, &st->warm, st->phase != PH_DONE);
        if (st->phase != PH_DONE)
            st->phase = PH_TRACKING;
        break;
    case OBSD_SESSION_TRACKING_STOP:
    case OBSD_SESSION_ENDED:
    case OBSD_SESSION_INTERRUPTED:
        sample_for(st, event, ts_ns, &st->end, st->phase != PH_DONE);
        st->phase = PH_DONE;
        break;
    default:
        break;
    }
}

static const struct sched_sample *baseline(const struct sched_state *st)
{
    if (st->warm.taken)
        return &st->warm;
    if (st->start.taken)
        return &st->start;
    return NULL;
}

static const struct sched_worker_sample *find_worker(const struct sched_sample *s,
                                                     const struct sched_worker_sample *w)
{
    for (size_t i = 0; s && i < s->n_workers; i++)
        if (s->workers[i].block == w->block && s->workers[i].generation == w->generation)
            return &s->workers[i];
    return NULL;
}

static const struct sched_queue_sample *find_queue(const struct sched_sample *s,
                                                   const struct sched_queue_sample *q)
{
    for (size_t i = 0; s && i < s->n_queues; i++)
        if (s->queues[i].block == q->block && s->queues[i].generation == q->generation)
            return &s->queues[i];
    return NULL;
}

static int by_worker_index(const void *a, const void *b)
{
    const struct sched_worker_sample *x = a, *y = b;
    if (x->worker_index != y->worker_index)
        return (x->worker_index > y->worker_index) - (x->worker_index < y->worker_index);
    return (x->pid > y->pid) - (x->pid < y->pid);
}

/* Deltas of `now` against the baseline, the window and the derived metrics. */
static size_t compute(struct sched_state *st, const struct sched_sample *now,
                      struct sched_derived *d, uint64_t *win_start, uint64_t *win_end)
{
    const struct sched_sample *base = baseline(st);
    size_t n = 0;
    uint64_t max_last = 0;
    st->nonmonotonic = 0;
    for (size_t i = 0; i < now->n_workers; i++) {
        const struct sched_worker_sample *w = &now->workers[i];
        if (sched_worker_delta(w, find_worker(base, w), &st->deltas[n]) < 0) {
            st->nonmonotonic++;
            continue;
        }
        if (st->deltas[n].completed && w->last_completion_ns > max_last)
            max_last = w->last_completion_ns;
        n++;
    }
    qsort(st->deltas, n, sizeof *st->deltas, by_worker_index);
    *win_start = base ? base->taken_ns : st->run_start_ns;
    *win_end = now->taken_ns;
    uint64_t len = sched_window_ns(*win_start, *win_end, max_last);
    if (len)
        *win_end = *win_start + len;
    sched_derive(st->deltas, n, len, d);
    return n;
}

static const char *phase_name(enum phase p)
{
    switch (p) {
    case PH_STARTED: return "warmup";
    case PH_TRACKING: return "tracking";
    case PH_DONE: return "done";
    default: return "none";
    }
}

/* The "sched" section for the current state (NULL when the run has no
 * blocks). d_out gets the derived metrics. */
json_t *sched_module_section(void *state, struct sched_derived *d_out)
{
    struct sched_state *st = state;
    const struct sched_sample *now;
    if (st->phase == PH_DONE) {
        now = &st->end;
    } else {
        take(st, &st->cur);
        now = &st->cur;
    }
    struct sched_derived d;
    uint64_t ws, we;
    size_t n = compute(st, now, &d, &ws, &we);
    if (d_out)
        *d_out = d;
    if (n == 0 && now->n_queues == 0 && st->nonmonotonic == 0)
        return NULL;

    json_t *sec = json_object();
    json_object_set_new(sec, "phase", json_string(phase_name(st->phase)));
    const char *base = st->warm.taken ? "tracking_start" : st->start.taken ? "session_start" : "none";
    json_object_set_new(sec, "baseline", json_string(base));
    /* Who read the two ends: the producer at the call (exact), or the
     * collector when it processed the event (late by its lag). */
    const struct sched_sample *bsm = baseline(st);
    bool done = st->phase == PH_DONE;
    bool base_exact = bsm && bsm->by_producer, end_exact = done && now->by_producer;
    json_object_set_new(sec, "baseline_sampled_by",
                        json_string(!bsm ? "none" : base_exact ? "producer" : "collector"));
    json_object_set_new(sec, "end_sampled_by",
                        json_string(!done ? "live" : end_exact ? "producer" : "collector"));
    json_object_set_new(sec, "window_exact", json_boolean(base_exact && (!done || end_exact)));
    if (base_exact)
        json_object_set_new(sec, "baseline_read_ns", json_integer((json_int_t)bsm->read_ns));
    if (end_exact)
        json_object_set_new(sec, "end_read_ns", json_integer((json_int_t)now->read_ns));
    json_t *ps = json_object();
    json_object_set_new(ps, "received", json_integer((json_int_t)st->samples_received));
    json_object_set_new(ps, "used", json_integer((json_int_t)st->samples_used));
    json_object_set_new(ps, "rejected", json_integer((json_int_t)st->samples_rejected));
    json_object_set_new(ps, "unmatched", json_integer((json_int_t)st->samples_unmatched));
    json_object_set_new(sec, "producer_samples", ps);
    json_object_set_new(sec, "window_start_ns", json_integer((json_int_t)ws));
    json_object_set_new(sec, "window_end_ns", json_integer((json_int_t)we));
    json_object_set_new(sec, "window_s", json_real((double)d.window_ns / 1e9));
    json_t *workers = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(workers, sched_worker_json(&st->deltas[i]));
    json_object_set_new(sec, "workers", workers);
    json_t *queues = json_array();
    const struct sched_sample *bs = baseline(st);
    for (size_t i = 0; i < now->n_queues; i++) {
        struct sched_queue_sample q = now->queues[i];
        const struct sched_queue_sample *b = find_queue(bs, &q);
        if (b && q.pushed_total >= b->pushed_total && q.popped_total >= b->popped_total &&
            q.enqueue_cas_retries >= b->enqueue_cas_retries &&
            q.dequeue_cas_retries >= b->dequeue_cas_retries) {
            q.pushed_total -= b->pushed_total;
            q.popped_total -= b->popped_total;
            q.enqueue_cas_retries -= b->enqueue_cas_retries;
            q.dequeue_cas_retries -= b->dequeue_cas_retries;
        }
        json_array_append_new(queues, sched_queue_json(&q));
    }
    json_object_set_new(sec, "queues", queues);
    json_t *dj = sched_derived_json(&d);
    json_t *notes = json_object_get(dj, "notes");
    if (strcmp(base, "tracking_start"))
        json_array_append_new(notes, json_string(
            "no TRACKING_START seen: deltas count from the session start or the block's claim"));
    if (bsm && !base_exact)
        json_array_append_new(notes, json_string(
            "the baseline was read by the collector when it processed the session event (no "
            "sample came from the producer with it): the window is approximate"));
    if (done && !end_exact)
        json_array_append_new(notes, json_string(
            "the end was read by the collector when it processed the session event or the final "
            "snapshot (no sample came from the producer with it): the window is approximate"));
    if (st->nonmonotonic)
        json_array_append_new(notes, json_string(
            "some workers were left out: a counter went backwards (block reset or corrupt)"));
    if (now->torn)
        json_array_append_new(notes, json_string(
            "some workers' completion times could not be read consistently (writer stuck)"));
    json_object_set_new(sec, "derived", dj);
    json_object_set_new(sec, "invalid_blocks", json_integer((json_int_t)st->invalid_blocks));
    json_object_set_new(sec, "workers_left_out", json_integer((json_int_t)st->nonmonotonic));
    return sec;
}

static int sched_contribute(void *state, struct snapshot *snap, bool final)
{
    struct sched_state *st = state;
    if (final && st->phase != PH_DONE && st->phase != PH_NONE) {
        take(st, &st->end);
        st->phase = PH_DONE;
    }
    struct sched_derived d;
    json_t *sec = sched_module_section(st, &d);
    int rc = 0;
    if (st->invalid_blocks)
        rc |= snapshot_add_counter(snap, "sched_invalid_blocks", (int64_t)st->invalid_blocks);
    if (st->samples_rejected)
        rc |= snapshot_add_counter(snap, "sched_samples_rejected", (int64_t)st->samples_rejected);
    if (!sec)
        return rc;
    rc |= snapshot_add_counter(snap, "sched_workers", (int64_t)d.n_workers);
    rc |= snapshot_add_counter(snap, "sched_behaviors_completed", (int64_t)d.completed);
    rc |= snapshot_add_counter(snap, "sched_steals", (int64_t)d.steals);
    rc |= snapshot_add_counter(snap, "sched_steal_attempts", (int64_t)d.steal_attempts);
    rc |= snapshot_add_counter(snap, "sched_steal_failures", (int64_t)d.steal_failures);
    if (d.has_throughput)
        rc |= snapshot_add_gauge(snap, "sched_throughput", d.throughput);
    if (d.has_steal_yield)
        rc |= snapshot_add_gauge(snap, "sched_steal_yield", d.steal_yield);
    if (d.has_idle_ratio)
        rc |= snapshot_add_gauge(snap, "sched_idle_ratio", d.idle_ratio);
    if (d.has_enq_retry_ratio)
        rc |= snapshot_add_gauge(snap, "sched_enq_retry_ratio", d.enq_retry_ratio);
    if (d.has_fairness) {
        rc |= snapshot_add_gauge(snap, "sched_fairness_cv", d.fairness_cv);
        rc |= snapshot_add_gauge(snap, "sched_fairness_gini", d.fairness_gini);
    }
    rc |= snapshot_set_section(snap, "sched", sec);
    return rc ? -1 : 0;
}

/* A producer's sample (sched_wire.h): validated as untrusted input, then
 * held until its event comes, or given to the STARTED it follows. */
static int sched_on_record(void *state, const struct shm_producer *from,
                           const struct shm_record *rec)
{
    struct sched_state *st = state;
    if (rec->type != OBSD_REC_SCHED_SAMPLE)
        return -1;   /* the rest of the range is reserved */
    st->samples_received++;
    uint64_t event_ts = 0;
    const char *why = sched_wire_decode(rec->payload, rec->len, rec->key, st->area, st->bytes,
                                        mono_ns(), &st->scratch, &event_ts);
    if (why) {
        st->samples_rejected++;
        if (st->log && st->samples_rejected <= 3)   /* a hostile producer cannot flood the log */
            st->log(1, "sched: sample record from pid %d rejected: %s", from ? (int)from->pid : 0,
                    why);
        return -1;   /* the engine counts it as rejected too */
    }
    if (rec->key == OBSD_SESSION_STARTED && st->started_seen && event_ts == st->started_ts) {
        install(st, &st->start, &st->scratch);
        st->started_seen = false;
        return 0;
    }
    pending_add(st, rec->key, event_ts, &st->scratch);
    return 0;
}

static void sched_on_tick(void *state)
{
    (void)state;
}

static uint64_t sched_pending(void *state)
{
    (void)state;
    return 0;
}

const struct module_ops sched_module_ops = {
    .name = "sched",
    .type_first = OBSD_REC_SCHED_FIRST,   /* OBSD_REC_SCHED_SAMPLE; the rest reserved */
    .type_last = OBSD_REC_SCHED_LAST,
    .create = sched_create,
    .destroy = sched_destroy,
    .reset = sched_reset,
    .on_record = sched_on_record,
    .on_session = sched_on_session,
    .on_tick = sched_on_tick,
    .drain = NULL,
    .pending = sched_pending,
    .contribute = sched_contribute,
};
