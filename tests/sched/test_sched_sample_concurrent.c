/*
 * test_sched_sample_concurrent.c: session-event samples taken while workers
 * count (run under TSan, label tsan).
 *
 * Worker threads bump their own blocks by 0x100000001 at a time (a torn
 * 64-bit read would not be a multiple of it) and complete with timestamps
 * k * 1000 (a consistent completion group has last == completed * 1000),
 * while another thread sends session events through libobsd on a real
 * segment and the test drains it like the collector: every sample record
 * must decode, hold untorn, monotonic values, and sit right before its event
 * in the sender's ring with the event's timestamp (STARTED's right after).
 */
#include <check.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "obsd/obsd.h"
#include "sched/sched_wire.h"
#include "shm/shm.h"

#define NWORKERS 3
#define NBLOCKS 8
#define EVENTS 300
#define STEP 0x100000001ull

static obsd_t *h;
static _Atomic int claimed, stop;
static uint64_t iters[NWORKERS];

static void *worker(void *arg)
{
    int idx = (int)(intptr_t)arg;
    struct obsd_sched_block *b = obsd_sched_worker(h, idx);
    ck_assert_ptr_nonnull(b);
    atomic_fetch_add(&claimed, 1);
    uint64_t k = 0;
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        k++;
        for (int c = 0; c < OBSD_SCHED_N_COUNTERS; c++)
            obsd_sched_add(b, c, STEP);
        obsd_sched_completed(b, k * 1000);
    }
    iters[idx] = k;
    return NULL;
}

/* Sends EVENTS session events, cycling through the five codes. */
static void *sender(void *arg)
{
    (void)arg;
    for (int i = 0; i < EVENTS; i++) {
        int rc = obsd_session(h, (enum obsd_session_event)(OBSD_SESSION_STARTED + i % 5));
        ck_assert(rc == OBSD_OK || rc == OBSD_DROPPED);
    }
    return NULL;
}

struct reader {
    void *area;
    size_t bytes;
    struct sched_sample s;
    uint64_t last[NWORKERS][OBSD_SCHED_N_COUNTERS + 1];
    /* the sender's ring, in order */
    bool have_sample;               /* the previous record was a sample */
    uint32_t sample_event;
    uint64_t sample_ts;
    bool started_pending;           /* a STARTED whose sample must come next */
    uint64_t started_ts;
    size_t samples, events, workers_seen;
};

static void check_sample(struct reader *r, const struct shm_record *rec, uint64_t *ts)
{
    const char *why = sched_wire_decode(rec->payload, rec->len, rec->key, r->area, r->bytes,
                                        obsd_now(), &r->s, ts);
    ck_assert_msg(!why, "sample rejected: %s", why);
    ck_assert_uint_eq(r->s.rejected, 0);
    ck_assert_uint_le(r->s.n_workers, NWORKERS);
    for (size_t i = 0; i < r->s.n_workers; i++) {
        const struct sched_worker_sample *w = &r->s.workers[i];
        ck_assert(w->worker_index >= 0 && w->worker_index < NWORKERS);
        uint64_t *prev = r->last[w->worker_index];
        for (int c = 0; c < OBSD_SCHED_N_COUNTERS; c++) {
            ck_assert_uint_eq(w->counter[c] % STEP, 0);
            ck_assert_uint_ge(w->counter[c], prev[c]);
            prev[c] = w->counter[c];
        }
        if (!w->torn) {
            ck_assert_uint_eq(w->last_completion_ns, w->completed * 1000);
            ck_assert_uint_ge(w->completed, prev[OBSD_SCHED_N_COUNTERS]);
            prev[OBSD_SCHED_N_COUNTERS] = w->completed;
        }
        r->workers_seen++;
    }
    r->samples++;
}

static void on_rec(void *ctx, const struct shm_producer *from, const struct shm_record *rec)
{
    struct reader *r = ctx;
    (void)from;
    if (rec->type == OBSD_REC_SCHED_SAMPLE) {
        uint64_t ts;
        check_sample(r, rec, &ts);
        if (rec->key == OBSD_SESSION_STARTED) {
            ck_assert_msg(r->started_pending, "a STARTED sample not right after its event");
            ck_assert_uint_eq(ts, r->started_ts);
            r->started_pending = false;
        } else {
            ck_assert(!r->have_sample && !r->started_pending);
            r->have_sample = true;
            r->sample_event = rec->key;
            r->sample_ts = ts;
        }
        return;
    }
    ck_assert_uint_eq(rec->type, OBSD_REC_SESSION);
    ck_assert(!r->started_pending);
    uint64_t ts;
    memcpy(&ts, rec->payload, sizeof ts);
    r->events++;
    if (rec->key == OBSD_SESSION_STARTED) {
        ck_assert(!r->have_sample);
        r->started_pending = true;
        r->started_ts = ts;
    } else {
        ck_assert_msg(r->have_sample, "event %u without its sample right before", rec->key);
        ck_assert_uint_eq(r->sample_event, rec->key);
        ck_assert_uint_eq(r->sample_ts, ts);
        r->have_sample = false;
    }
}

START_TEST(samples_at_session_events_while_workers_count)
{
    char name[64];
    snprintf(name, sizeof name, "t-schedsmp-%d", (int)getpid());
    struct shm_config cfg;
    shm_config_defaults(&cfg, name);
    cfg.sched_workers = NBLOCKS;
    cfg.ring_bytes = 1u << 20;
    cfg.full_policy = SHM_FULL_BLOCK;
    cfg.block_timeout_ns = 10ull * 1000 * 1000 * 1000;
    char err[256];
    struct shm_segment *seg = shm_segment_create(&cfg, err, sizeof err);
    ck_assert_msg(seg != NULL, "%s", err);
    shm_set_collector_running(seg, true);
    h = obsd_open(name);
    ck_assert_ptr_nonnull(h);

    struct reader r;
    memset(&r, 0, sizeof r);
    r.area = shm_sched_area(seg, &r.bytes);
    ck_assert_int_eq(sched_sample_init(&r.s, NBLOCKS), 0);
    pthread_t w[NWORKERS], snd;
    for (int i = 0; i < NWORKERS; i++)
        pthread_create(&w[i], NULL, worker, (void *)(intptr_t)i);
    while (atomic_load(&claimed) < NWORKERS)
        sched_yield();
    pthread_create(&snd, NULL, sender, NULL);
    while (r.events < EVENTS) {
        if (!shm_drain(seg, on_rec, &r, 0)) {
            struct timespec ts = {0, 50000};
            nanosleep(&ts, NULL);
        }
    }
    pthread_join(snd, NULL);
    atomic_store(&stop, 1);
    for (int i = 0; i < NWORKERS; i++)
        pthread_join(w[i], NULL);
    shm_drain(seg, on_rec, &r, 0);
    ck_assert(!r.started_pending && !r.have_sample);
    ck_assert_uint_eq(r.samples, EVENTS);
    ck_assert_uint_eq(r.workers_seen, (size_t)EVENTS * NWORKERS);
    struct shm_stats st;
    shm_get_stats(seg, &st);
    ck_assert_uint_eq(st.rejected, 0);
    ck_assert_uint_eq(st.dropped, 0);

    /* and a sample taken now, quiescent, is exact */
    uint64_t now = obsd_now(), ts;
    unsigned char *buf = malloc(sched_wire_max_bytes(NBLOCKS));
    size_t len = sched_wire_take(r.area, r.bytes, NBLOCKS, now, now, buf);
    ck_assert_ptr_null(sched_wire_decode(buf, len, OBSD_SESSION_ENDED, r.area, r.bytes, obsd_now(),
                                         &r.s, &ts));
    ck_assert_uint_eq(r.s.n_workers, NWORKERS);
    for (size_t i = 0; i < r.s.n_workers; i++) {
        uint64_t k = iters[r.s.workers[i].worker_index];
        ck_assert_uint_eq(r.s.workers[i].completed, k);
        for (int c = 0; c < OBSD_SCHED_N_COUNTERS; c++)
            ck_assert_uint_eq(r.s.workers[i].counter[c], k * STEP);
    }
    free(buf);
    sched_sample_free(&r.s);
    obsd_close(h);
    shm_segment_close(seg, true);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("sched_sample_concurrent");
    TCase *tc = tcase_create("tsan");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, samples_at_session_events_while_workers_count);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
