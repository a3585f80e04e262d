/*
 * sched_metrics.c: deltas, the window, derived metrics and repeat summaries.
 * Pure functions of their arguments (tests/sched/test_sched_metrics.c checks
 * each against values computed by hand).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sched/sched.h"

const char *const sched_counter_names[OBSD_SCHED_N_COUNTERS] = {
    [OBSD_SCHED_PUSHED_LOCAL] = "pushed_local",
    [OBSD_SCHED_DISPATCHED_TO_PENDING] = "dispatched_to_pending",
    [OBSD_SCHED_PUSHED_REMOTE] = "pushed_remote",
    [OBSD_SCHED_POPPED_LOCAL] = "popped_local",
    [OBSD_SCHED_POPPED_VIA_STEAL] = "popped_via_steal",
    [OBSD_SCHED_ENQUEUE_CAS_RETRIES] = "enqueue_cas_retries",
    [OBSD_SCHED_DEQUEUE_CAS_RETRIES] = "dequeue_cas_retries",
    [OBSD_SCHED_BATCH_RESETS] = "batch_resets",
    [OBSD_SCHED_STEAL_ATTEMPTS] = "steal_attempts",
    [OBSD_SCHED_STEAL_FAILURES] = "steal_failures",
    [OBSD_SCHED_PARKED] = "parked",
    [OBSD_SCHED_FAIRNESS_ARM_FIRES] = "fairness_arm_fires",
};

int sched_worker_delta(const struct sched_worker_sample *end,
                       const struct sched_worker_sample *warm,
                       struct sched_worker_sample *out)
{
    *out = *end;
    if (!warm)
        return 0;
    for (int c = 0; c < OBSD_SCHED_N_COUNTERS; c++) {
        if (end->counter[c] < warm->counter[c])
            return -1;
        out->counter[c] = end->counter[c] - warm->counter[c];
    }
    if (end->completed < warm->completed)
        return -1;
    out->completed = end->completed - warm->completed;
    out->torn = end->torn || warm->torn;
    return 0;
}

uint64_t sched_window_ns(uint64_t warm_ns, uint64_t end_ns, uint64_t max_last_completion_ns)
{
    if (end_ns <= warm_ns)
        return 0;
    if (max_last_completion_ns > warm_ns && max_last_completion_ns < end_ns)
        end_ns = max_last_completion_ns;
    return end_ns - warm_ns;
}

bool sched_fairness_cv(const uint64_t *v, size_t n, double *out)
{
    if (n == 0)
        return false;
    double sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += (double)v[i];
    if (sum == 0)
        return false;
    double mean = sum / (double)n, ss = 0;
    for (size_t i = 0; i < n; i++)
        ss += ((double)v[i] - mean) * ((double)v[i] - mean);
    *out = sqrt(ss / (double)n) / mean;
    return true;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

bool sched_fairness_gini(const uint64_t *v, size_t n, double *out)
{
    if (n == 0)
        return false;
    uint64_t *s = malloc(n * sizeof *s);
    if (!s)
        return false;
    memcpy(s, v, n * sizeof *s);
    qsort(s, n, sizeof *s, cmp_u64);
    double sum = 0, weighted = 0;
    for (size_t i = 0; i < n; i++) {
        sum += (double)s[i];
        weighted += (double)(i + 1) * (double)s[i];
    }
    free(s);
    if (sum == 0)
        return false;
    *out = 2.0 * weighted / ((double)n * sum) - ((double)n + 1.0) / (double)n;
    return true;
}

void sched_derive(const struct sched_worker_sample *d, size_t n, uint64_t window_ns,
                  struct sched_derived *out)
{
    memset(out, 0, sizeof *out);
    out->n_workers = n;
    out->window_ns = window_ns;
    out->producer_worker_index = -1;
    if (n == 0)
        out->notes |= SCHED_NOTE_NO_WORKERS;
    uint64_t *pops = calloc(n ? n : 1, sizeof *pops);
    uint64_t best_pushes = 0;
    for (size_t i = 0; i < n; i++) {
        const struct sched_worker_sample *w = &d[i];
        out->completed += w->completed;
        out->steals += w->counter[OBSD_SCHED_POPPED_VIA_STEAL];
        out->steal_attempts += w->counter[OBSD_SCHED_STEAL_ATTEMPTS];
        out->steal_failures += w->counter[OBSD_SCHED_STEAL_FAILURES];
        uint64_t pushes = w->counter[OBSD_SCHED_PUSHED_LOCAL] +
                          w->counter[OBSD_SCHED_DISPATCHED_TO_PENDING];
        if (pushes > best_pushes) {   /* first worker wins ties */
            best_pushes = pushes;
            out->producer_worker_index = w->worker_index;
            out->producer_pushes = pushes;
            out->producer_enqueue_cas_retries = w->counter[OBSD_SCHED_ENQUEUE_CAS_RETRIES];
        }
        uint64_t p = w->counter[OBSD_SCHED_POPPED_LOCAL] + w->counter[OBSD_SCHED_POPPED_VIA_STEAL];
        if (pops)
            pops[i] = p;
        if (i == 0 || p < out->pop_min)
            out->pop_min = p;
        if (p > out->pop_max)
            out->pop_max = p;
        out->pop_mean += (double)p;
    }
    if (n)
        out->pop_mean /= (double)n;

    if (window_ns > 0) {
        out->has_throughput = true;
        out->throughput = (double)out->completed / ((double)window_ns / 1e9);
    } else {
        out->notes |= SCHED_NOTE_NO_WINDOW;
    }
    if (out->completed > 0) {
        out->has_steal_yield = true;
        out->steal_yield = (double)out->steals / (double)out->completed;
    } else {
        out->notes |= SCHED_NOTE_NO_COMPLETIONS;
    }
    if (out->steal_attempts > 0) {
        out->has_idle_ratio = true;
        out->idle_ratio = (double)out->steal_failures / (double)out->steal_attempts;
    } else {
        out->notes |= SCHED_NOTE_NO_STEAL_ATTEMPTS;
    }
    if (out->producer_pushes > 0) {
        out->has_enq_retry_ratio = true;
        out->enq_retry_ratio = (double)out->producer_enqueue_cas_retries /
                               (double)out->producer_pushes;
    } else {
        out->notes |= SCHED_NOTE_NO_PUSHES;
    }
    if (pops && sched_fairness_cv(pops, n, &out->fairness_cv) &&
        sched_fairness_gini(pops, n, &out->fairness_gini))
        out->has_fairness = true;
    else if (n)
        out->notes |= SCHED_NOTE_NO_POPS;
    free(pops);
}

static const char *const note_texts[] = {
    "throughput: window length is 0 (no tracking window observed)",
    "steal_yield: no behavior completed in the window",
    "idle_ratio: no steal attempt in the window",
    "enq_retry_ratio: no worker pushed in the window",
    "fairness: no worker popped in the window",
    "no worker blocks in the run",
};

size_t sched_note_texts(unsigned notes, const char **out, size_t max)
{
    size_t k = 0;
    for (size_t i = 0; i < sizeof note_texts / sizeof note_texts[0] && k < max; i++)
        if (notes & (1u << i))
            out[k++] = note_texts[i];
    return k;
}

void sched_summarize(const double *v, size_t n, struct sched_summary *out)
{
    memset(out, 0, sizeof *out);
    out->n = n;
    if (n == 0)
        return;
    double sum = 0;
    out->min = out->max = v[0];
    for (size_t i = 0; i < n; i++) {
        sum += v[i];
        if (v[i] < out->min)
            out->min = v[i];
        if (v[i] > out->max)
            out->max = v[i];
    }
    out->has_mean = true;
    out->mean = sum / (double)n;
    if (n < 2)
        return;
    double ss = 0;
    for (size_t i = 0; i < n; i++)
        ss += (v[i] - out->mean) * (v[i] - out->mean);
    out->has_spread = true;
    out->stdev = sqrt(ss / (double)(n - 1));
}

/* ---- JSON ---- */

static json_t *real_or_null(bool has, double v)
{
    return has && isfinite(v) ? json_real(v) : json_null();
}

json_t *sched_worker_json(const struct sched_worker_sample *w)
{
    json_t *o = json_object();
    json_object_set_new(o, "worker_index", json_integer(w->worker_index));
    json_object_set_new(o, "block", json_integer(w->block));
    json_object_set_new(o, "pid", json_integer(w->pid));
    json_object_set_new(o, "tid", json_integer(w->tid));
    json_object_set_new(o, "released", json_boolean(w->state == OBSD_SCHED_RETIRED));
    for (int c = 0; c < OBSD_SCHED_N_COUNTERS; c++)
        json_object_set_new(o, sched_counter_names[c], json_integer((json_int_t)w->counter[c]));
    json_object_set_new(o, "last_steal_attempt_ns", json_integer((json_int_t)w->last_steal_attempt_ns));
    json_object_set_new(o, "behaviors_completed", json_integer((json_int_t)w->completed));
    json_object_set_new(o, "first_completion_ns", json_integer((json_int_t)w->first_completion_ns));
    json_object_set_new(o, "last_completion_ns", json_integer((json_int_t)w->last_completion_ns));
    json_object_set_new(o, "torn", json_boolean(w->torn));
    return o;
}

json_t *sched_queue_json(const struct sched_queue_sample *q)
{
    json_t *o = json_object();
    json_object_set_new(o, "tag", json_string(q->tag));
    json_object_set_new(o, "block", json_integer(q->block));
    json_object_set_new(o, "pid", json_integer(q->pid));
    json_object_set_new(o, "pushed_total", json_integer((json_int_t)q->pushed_total));
    json_object_set_new(o, "popped_total", json_integer((json_int_t)q->popped_total));
    json_object_set_new(o, "enqueue_cas_retries", json_integer((json_int_t)q->enqueue_cas_retries));
    json_object_set_new(o, "dequeue_cas_retries", json_integer((json_int_t)q->dequeue_cas_retries));
    return o;
}

json_t *sched_derived_json(const struct sched_derived *d)
{
    json_t *o = json_object();
    json_object_set_new(o, "workers", json_integer((json_int_t)d->n_workers));
    json_object_set_new(o, "window_ns", json_integer((json_int_t)d->window_ns));
    json_object_set_new(o, "behaviors_completed", json_integer((json_int_t)d->completed));
    json_object_set_new(o, "steals", json_integer((json_int_t)d->steals));
    json_object_set_new(o, "steal_attempts", json_integer((json_int_t)d->steal_attempts));
    json_object_set_new(o, "steal_failures", json_integer((json_int_t)d->steal_failures));
    json_object_set_new(o, "throughput", real_or_null(d->has_throughput, d->throughput));
    json_object_set_new(o, "steal_yield", real_or_null(d->has_steal_yield, d->steal_yield));
    json_object_set_new(o, "idle_ratio", real_or_null(d->has_idle_ratio, d->idle_ratio));
    json_object_set_new(o, "producer_worker_index",
                        d->producer_worker_index >= 0 ? json_integer(d->producer_worker_index)
                                                      : json_null());
    json_object_set_new(o, "producer_pushes", json_integer((json_int_t)d->producer_pushes));
    json_object_set_new(o, "producer_enqueue_cas_retries",
                        json_integer((json_int_t)d->producer_enqueue_cas_retries));
    json_object_set_new(o, "enq_retry_ratio", real_or_null(d->has_enq_retry_ratio, d->enq_retry_ratio));
    json_object_set_new(o, "fairness_cv", real_or_null(d->has_fairness, d->fairness_cv));
    json_object_set_new(o, "fairness_gini", real_or_null(d->has_fairness, d->fairness_gini));
    bool pops = d->n_workers > 0;
    json_object_set_new(o, "worker_pop_min", pops ? json_integer((json_int_t)d->pop_min) : json_null());
    json_object_set_new(o, "worker_pop_max", pops ? json_integer((json_int_t)d->pop_max) : json_null());
    json_object_set_new(o, "worker_pop_mean", real_or_null(pops, d->pop_mean));
    json_t *notes = json_array();
    const char *texts[8];
    size_t k = sched_note_texts(d->notes, texts, 8);
    for (size_t i = 0; i < k; i++)
        json_array_append_new(notes, json_string(texts[i]));
    json_object_set_new(o, "notes", notes);
    return o;
}
