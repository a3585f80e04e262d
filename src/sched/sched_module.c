/*
 * sched_module.c: the engine module of the scheduler counters.
 *
 * It owns no record types: the counters are read straight from the segment's
 * sched area. Samples are taken when the engine hands over session events:
 * STARTED (fallback baseline), TRACKING_START (the warmup mark: the
 * baseline), TRACKING_STOP or else ENDED/INTERRUPTED (the end). Between the
 * baseline and the end every snapshot shows the running deltas; after the
 * end, the final ones.
 */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/module.h"
#include "sched/sched.h"

#include "obsd/obsd.h"

enum phase { PH_NONE, PH_STARTED, PH_TRACKING, PH_DONE };

struct sched_state {
    void *area;
    size_t bytes, cap;
    uint64_t run_start_ns;          /* 0: unknown (collector attached mid-run) */
    enum phase phase;
    struct sched_sample start, warm, end, cur;
    struct sched_worker_sample *deltas;
    uint64_t invalid_blocks;        /* blocks failing validation, at the last read */
    uint64_t nonmonotonic;          /* workers dropped because a counter went backwards */
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
        !(st->deltas = calloc(st->cap ? st->cap : 1, sizeof *st->deltas))) {
        sched_sample_free(&st->start);
        sched_sample_free(&st->warm);
        sched_sample_free(&st->end);
        sched_sample_free(&st->cur);
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
}

static void sched_on_session(void *state, int event, uint64_t ts_ns)
{
    struct sched_state *st = state;
    switch (event) {
    case OBSD_SESSION_STARTED:
        st->run_start_ns = ts_ns;
        take(st, &st->start);
        st->phase = PH_STARTED;
        break;
    case OBSD_SESSION_TRACKING_START:
        if (st->phase == PH_DONE)
            break;
        take(st, &st->warm);
        st->phase = PH_TRACKING;
        break;
    case OBSD_SESSION_TRACKING_STOP:
    case OBSD_SESSION_ENDED:
    case OBSD_SESSION_INTERRUPTED:
        if (st->phase == PH_DONE)
            break;
        take(st, &st->end);
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

static int sched_on_record(void *state, const struct shm_producer *from,
                           const struct shm_record *rec)
{
    (void)state;
    (void)from;
    (void)rec;
    return -1;  /* the module owns no record types */
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
    .type_first = 0,
    .type_last = 0,
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
