/*
 * test_sched_sample.c: the producer's samples of the counter area, from the
 * record libobsd writes to the window the module reports.
 *
 *   - encoding and decoding: a sample taken with sched_wire_take() decodes to
 *     exactly what the collector's own sched_read() gives for the same area;
 *   - the module driven through its ops as the engine does, with the sample
 *     records next to their events and the area changing after the samples
 *     were taken (the collector's lag): the deltas and the window are the
 *     samples', and which events count is unchanged (the last TRACKING_START
 *     before the end, the first of TRACKING_STOP/ENDED/INTERRUPTED);
 *   - the fallback without samples, marked approximate;
 *   - hostile records: every malformed field rejected and counted, and
 *     random corruption of a good record never read out of bounds.
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "engine/module.h"
#include "obsd/obsd.h"
#include "sched/sched.h"
#include "sched/sched_producer.h"
#include "sched/sched_wire.h"

#define NBLOCKS 16
#define BYTES (NBLOCKS * OBSD_SCHED_BLOCK_BYTES)

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void *new_area(void)
{
    void *a = aligned_alloc(OBSD_SCHED_BLOCK_BYTES, BYTES);
    memset(a, 0, BYTES);
    return a;
}

static struct obsd_sched_block *worker(void *area, int idx)
{
    struct obsd_sched_block *b = sched_area_claim(area, BYTES, OBSD_SCHED_KIND_WORKER, idx, NULL, NULL);
    ck_assert_ptr_nonnull(b);
    return b;
}

static void work(struct obsd_sched_block *b, int pops, int completions, uint64_t *last)
{
    obsd_sched_add(b, OBSD_SCHED_POPPED_LOCAL, (uint64_t)pops);
    for (int i = 0; i < completions; i++) {
        uint64_t t = now_ns();
        obsd_sched_completed(b, t);
        if (last)
            *last = t;
    }
}

/* A sample record of the area now, as libobsd builds it. */
struct rec {
    unsigned char buf[sizeof(struct sched_pl_sample) + NBLOCKS * sizeof(struct sched_pl_entry)];
    struct shm_record r;
    uint64_t taken_ns;
};

static void take_rec(struct rec *out, const void *area, uint32_t event, uint64_t event_ts)
{
    out->taken_ns = now_ns();
    size_t len = sched_wire_take(area, BYTES, sched_wire_in_use(area, BYTES), event_ts,
                                 out->taken_ns, out->buf);
    out->r = (struct shm_record){OBSD_REC_SCHED_SAMPLE, 0, event, out->buf, len};
}

static int feed(void *st, const struct rec *r)
{
    struct shm_producer from = {0, 1, 1};
    return sched_module_ops.on_record(st, &from, &r->r);
}

static json_int_t wint(json_t *sec, size_t worker, const char *key)
{
    return json_integer_value(json_object_get(json_array_get(json_object_get(sec, "workers"), worker), key));
}

static const char *sstr(json_t *sec, const char *key)
{
    return json_string_value(json_object_get(sec, key));
}

static json_int_t samples(json_t *sec, const char *key)
{
    return json_integer_value(json_object_get(json_object_get(sec, "producer_samples"), key));
}

static bool has_note(json_t *sec, const char *part)
{
    size_t i;
    json_t *n;
    json_array_foreach(json_object_get(json_object_get(sec, "derived"), "notes"), i, n)
        if (strstr(json_string_value(n), part))
            return true;
    return false;
}

START_TEST(a_sample_decodes_to_what_sched_read_reads)
{
    void *area = new_area();
    ck_assert_uint_eq(sched_wire_in_use(area, BYTES), 0);
    struct obsd_sched_block *w0 = worker(area, 0), *w1 = worker(area, 5);
    struct obsd_sched_block *q = sched_area_claim(area, BYTES, OBSD_SCHED_KIND_QUEUE, 0, "q.tag", NULL);
    struct obsd_sched_block *gone = worker(area, 2);
    ck_assert_uint_eq(sched_wire_in_use(area, BYTES), 4);
    work(w0, 10, 3, NULL);
    work(w1, 4, 1, NULL);
    obsd_sched_steal(w1, 12345, false);
    obsd_sched_queue_pushed(q, 2);
    obsd_sched_queue_popped(q, 1);
    work(gone, 1, 1, NULL);
    sched_block_release(gone);
    struct obsd_sched_block *blocks = area;
    blocks[4].state = OBSD_SCHED_ACTIVE;    /* garbage: counted as rejected */
    blocks[4].magic = 7;
    ck_assert_uint_eq(sched_wire_in_use(area, BYTES), 5);

    struct sched_sample mine, theirs;
    ck_assert_int_eq(sched_sample_init(&mine, NBLOCKS), 0);
    ck_assert_int_eq(sched_sample_init(&theirs, NBLOCKS), 0);
    sched_read(area, BYTES, &mine, NULL, NULL, 1);
    struct rec r;
    take_rec(&r, area, OBSD_SESSION_TRACKING_START, 777);
    ck_assert_uint_eq(r.r.len, sizeof(struct sched_pl_sample) + 4 * sizeof(struct sched_pl_entry));
    uint64_t ev_ts = 0;
    ck_assert_ptr_null(sched_wire_decode(r.buf, r.r.len, r.r.key, area, BYTES, now_ns(), &theirs, &ev_ts));
    ck_assert_uint_eq(ev_ts, 777);
    ck_assert(theirs.taken && theirs.by_producer);
    ck_assert_uint_eq(theirs.taken_ns, r.taken_ns);
    ck_assert_int_eq(theirs.sampler_pid, getpid());
    ck_assert_uint_eq(theirs.rejected, 1);
    ck_assert_uint_eq(theirs.rejected, mine.rejected);
    ck_assert_uint_eq(theirs.n_workers, 3);
    ck_assert_uint_eq(theirs.n_workers, mine.n_workers);
    ck_assert_uint_eq(theirs.n_queues, mine.n_queues);
    /* field by field (the samples have padding, so no memcmp) */
    for (size_t i = 0; i < mine.n_workers; i++) {
        const struct sched_worker_sample *a = &mine.workers[i], *b = &theirs.workers[i];
        ck_assert_uint_eq(a->block, b->block);
        ck_assert_uint_eq(a->generation, b->generation);
        ck_assert_int_eq(a->pid, b->pid);
        ck_assert_int_eq(a->tid, b->tid);
        ck_assert_int_eq(a->worker_index, b->worker_index);
        ck_assert_uint_eq(a->claim_ns, b->claim_ns);
        ck_assert_uint_eq(a->state, b->state);
        ck_assert_int_eq(a->torn, b->torn);
        ck_assert_mem_eq(a->counter, b->counter, sizeof a->counter);
        ck_assert_uint_eq(a->last_steal_attempt_ns, b->last_steal_attempt_ns);
        ck_assert_uint_eq(a->completed, b->completed);
        ck_assert_uint_eq(a->first_completion_ns, b->first_completion_ns);
        ck_assert_uint_eq(a->last_completion_ns, b->last_completion_ns);
    }
    ck_assert_uint_eq(theirs.workers[2].state, OBSD_SCHED_RETIRED);
    const struct sched_queue_sample *qa = &mine.queues[0], *qb = &theirs.queues[0];
    ck_assert_str_eq(qb->tag, "q.tag");
    ck_assert_uint_eq(qa->block, qb->block);
    ck_assert_uint_eq(qa->pushed_total, qb->pushed_total);
    ck_assert_uint_eq(qb->popped_total, 1);
    ck_assert_uint_eq(qb->enqueue_cas_retries, 2);
    ck_assert_uint_eq(qb->dequeue_cas_retries, 1);

    /* Blocks in use are a prefix (claims take the lowest FREE block): the
     * sampler stops at the first FREE one, whatever lies beyond it. */
    blocks[9].state = OBSD_SCHED_ACTIVE;
    blocks[9].magic = 7;
    ck_assert_uint_eq(sched_wire_in_use(area, BYTES), 5);
    take_rec(&r, area, OBSD_SESSION_TRACKING_STOP, 778);
    ck_assert_ptr_null(sched_wire_decode(r.buf, r.r.len, r.r.key, area, BYTES, now_ns(), &theirs, &ev_ts));
    ck_assert_uint_eq(theirs.rejected, 1);
    ck_assert_uint_eq(theirs.n_workers + theirs.n_queues, 4);
    sched_sample_free(&mine);
    sched_sample_free(&theirs);
    free(area);
}
END_TEST

/* The module with its samples: the area moves on after each sample (the
 * collector processes the event late), and none of that shows. */
START_TEST(the_module_uses_the_producers_samples)
{
    void *area = new_area();
    void *st = sched_module_create_on(area, BYTES, NULL);
    sched_module_ops.reset(st);
    struct obsd_sched_block *w0 = worker(area, 0), *w1 = worker(area, 1);
    uint64_t t = now_ns();
    /* STARTED: event first, its sample after */
    struct rec r;
    take_rec(&r, area, OBSD_SESSION_STARTED, t);
    sched_module_ops.on_session(st, OBSD_SESSION_STARTED, t);
    ck_assert_int_eq(feed(st, &r), 0);
    work(w0, 100, 5, NULL);                       /* warmup */

    uint64_t t_start = now_ns();
    struct rec rs;
    take_rec(&rs, area, OBSD_SESSION_TRACKING_START, t_start);
    ck_assert_int_eq(feed(st, &rs), 0);           /* the sample before its event */
    uint64_t last = 0;
    work(w0, 3, 2, NULL);                         /* inside the window, before the */
    work(w1, 4, 1, &last);                        /* collector gets to the event  */
    sched_module_ops.on_session(st, OBSD_SESSION_TRACKING_START, t_start);
    work(w1, 5, 1, &last);
    json_t *sec = sched_module_section(st, NULL);  /* live */
    ck_assert_str_eq(sstr(sec, "phase"), "tracking");
    ck_assert_str_eq(sstr(sec, "baseline_sampled_by"), "producer");
    ck_assert_str_eq(sstr(sec, "end_sampled_by"), "live");
    ck_assert(json_is_true(json_object_get(sec, "window_exact")));
    ck_assert_int_eq(wint(sec, 0, "popped_local"), 3);
    ck_assert_int_eq(wint(sec, 1, "popped_local"), 9);
    json_decref(sec);

    uint64_t t_stop = now_ns();
    struct rec re;
    take_rec(&re, area, OBSD_SESSION_TRACKING_STOP, t_stop);
    ck_assert_int_eq(feed(st, &re), 0);
    work(w0, 1000, 10, NULL);                     /* after the window, before the */
    work(w1, 1000, 10, NULL);                     /* collector gets to the event  */
    sched_module_ops.on_session(st, OBSD_SESSION_TRACKING_STOP, t_stop);
    struct rec rx;
    take_rec(&rx, area, OBSD_SESSION_ENDED, t_stop + 1);
    ck_assert_int_eq(feed(st, &rx), 0);
    sched_module_ops.on_session(st, OBSD_SESSION_ENDED, t_stop + 1);   /* not the end */

    struct sched_derived d;
    sec = sched_module_section(st, &d);
    ck_assert_str_eq(sstr(sec, "phase"), "done");
    ck_assert_str_eq(sstr(sec, "baseline"), "tracking_start");
    ck_assert_str_eq(sstr(sec, "baseline_sampled_by"), "producer");
    ck_assert_str_eq(sstr(sec, "end_sampled_by"), "producer");
    ck_assert(json_is_true(json_object_get(sec, "window_exact")));
    ck_assert(!has_note(sec, "approximate"));
    ck_assert_int_eq(wint(sec, 0, "popped_local"), 3);
    ck_assert_int_eq(wint(sec, 0, "behaviors_completed"), 2);
    ck_assert_int_eq(wint(sec, 1, "popped_local"), 9);
    ck_assert_int_eq(wint(sec, 1, "behaviors_completed"), 2);
    ck_assert_uint_eq(d.completed, 4);
    /* window: the TRACKING_START sample to the last completion in the window */
    ck_assert_int_eq(json_integer_value(json_object_get(sec, "window_start_ns")), rs.taken_ns);
    ck_assert_int_eq(json_integer_value(json_object_get(sec, "window_end_ns")), last);
    ck_assert_uint_eq(d.window_ns, last - rs.taken_ns);
    ck_assert_double_eq(d.throughput, 4.0 / ((double)(last - rs.taken_ns) / 1e9));
    ck_assert_int_eq(samples(sec, "received"), 4);
    ck_assert_int_eq(samples(sec, "used"), 3);   /* STARTED, TRACKING_START, TRACKING_STOP */
    ck_assert_int_eq(samples(sec, "rejected"), 0);
    ck_assert_int_eq(samples(sec, "unmatched"), 0);
    json_decref(sec);
    sched_module_ops.destroy(st);
    free(area);
}
END_TEST

/* Without samples: reads at processing time, as before, and a note. */
START_TEST(without_samples_the_module_reads_the_area)
{
    void *area = new_area();
    void *st = sched_module_create_on(area, BYTES, NULL);
    sched_module_ops.reset(st);
    sched_module_ops.on_session(st, OBSD_SESSION_STARTED, now_ns());
    struct obsd_sched_block *w0 = worker(area, 0);
    work(w0, 7, 1, NULL);
    sched_module_ops.on_session(st, OBSD_SESSION_TRACKING_START, now_ns());
    work(w0, 5, 2, NULL);
    json_t *sec = sched_module_section(st, NULL);
    ck_assert_str_eq(sstr(sec, "baseline_sampled_by"), "collector");
    ck_assert(json_is_false(json_object_get(sec, "window_exact")));
    ck_assert(has_note(sec, "the baseline was read by the collector"));
    json_decref(sec);
    sched_module_ops.on_session(st, OBSD_SESSION_TRACKING_STOP, now_ns());
    sec = sched_module_section(st, NULL);
    ck_assert_str_eq(sstr(sec, "end_sampled_by"), "collector");
    ck_assert(has_note(sec, "the end was read by the collector"));
    ck_assert_int_eq(wint(sec, 0, "popped_local"), 5);
    ck_assert_ptr_null(json_object_get(sec, "baseline_read_ns"));
    json_decref(sec);
    sched_module_ops.destroy(st);

    /* an exact baseline, but no end event: the final snapshot reads the end */
    st = sched_module_create_on(area, BYTES, NULL);
    sched_module_ops.reset(st);
    uint64_t t = now_ns();
    sched_module_ops.on_session(st, OBSD_SESSION_STARTED, t - 1);
    struct rec rs;
    take_rec(&rs, area, OBSD_SESSION_TRACKING_START, t);
    ck_assert_int_eq(feed(st, &rs), 0);
    sched_module_ops.on_session(st, OBSD_SESSION_TRACKING_START, t);
    work(w0, 2, 1, NULL);
    struct snapshot *snap = snapshot_new("run-x", 1, OBSD_RUN_INTERRUPTED);
    ck_assert_int_eq(sched_module_ops.contribute(st, snap, true), 0);
    sec = json_object_get(snap->sections, "sched");
    ck_assert_str_eq(sstr(sec, "baseline_sampled_by"), "producer");
    ck_assert_str_eq(sstr(sec, "end_sampled_by"), "collector");
    ck_assert(json_is_false(json_object_get(sec, "window_exact")));
    ck_assert(!has_note(sec, "the baseline was read"));
    ck_assert(has_note(sec, "the end was read by the collector"));
    ck_assert_int_eq(wint(sec, 0, "popped_local"), 2);
    snapshot_free(snap);
    sched_module_ops.destroy(st);
    free(area);
}
END_TEST

/* Several producers: each event uses its own sample (paired by code and
 * timestamp, in any interleaving); a second TRACKING_START re-takes the
 * baseline as before; samples whose event never comes are dropped. */
START_TEST(samples_pair_with_their_own_events)
{
    void *area = new_area();
    void *st = sched_module_create_on(area, BYTES, NULL);
    sched_module_ops.reset(st);
    sched_module_ops.on_session(st, OBSD_SESSION_STARTED, now_ns());
    struct obsd_sched_block *w0 = worker(area, 0);
    work(w0, 1, 0, NULL);
    struct rec a, b, e;
    take_rec(&a, area, OBSD_SESSION_TRACKING_START, 1000);   /* producer A */
    work(w0, 10, 0, NULL);
    take_rec(&b, area, OBSD_SESSION_TRACKING_START, 2000);   /* producer B */
    work(w0, 100, 0, NULL);
    ck_assert_int_eq(feed(st, &b), 0);    /* B's ring drained first */
    ck_assert_int_eq(feed(st, &a), 0);
    sched_module_ops.on_session(st, OBSD_SESSION_TRACKING_START, 1000);   /* A's event */
    sched_module_ops.on_session(st, OBSD_SESSION_TRACKING_START, 2000);   /* B's: the baseline */
    take_rec(&e, area, OBSD_SESSION_INTERRUPTED, 3000);
    work(w0, 1000, 0, NULL);
    ck_assert_int_eq(feed(st, &e), 0);
    sched_module_ops.on_session(st, OBSD_SESSION_INTERRUPTED, 3000);
    json_t *sec = sched_module_section(st, NULL);
    ck_assert_int_eq(wint(sec, 0, "popped_local"), 100);
    ck_assert(json_is_true(json_object_get(sec, "window_exact")));
    json_decref(sec);

    /* samples without their event: the oldest goes once the list is full */
    for (int i = 0; i < 10; i++) {
        struct rec x;
        take_rec(&x, area, OBSD_SESSION_TRACKING_STOP, 5000 + (uint64_t)i);
        ck_assert_int_eq(feed(st, &x), 0);
    }
    sec = sched_module_section(st, NULL);
    ck_assert_int_eq(samples(sec, "received"), 13);
    ck_assert_int_eq(samples(sec, "used"), 3);
    ck_assert_int_eq(samples(sec, "unmatched"), 2);
    json_decref(sec);
    sched_module_ops.destroy(st);
    free(area);
}
END_TEST

/* STARTED of the next run sent while this one drains: the engine hands the
 * event to the modules after this run's final (and reset); its sample,
 * which came earlier, still pairs with it. */
START_TEST(a_started_sample_waits_across_the_reset)
{
    void *area = new_area();
    void *st = sched_module_create_on(area, BYTES, NULL);
    sched_module_ops.reset(st);
    sched_module_ops.on_session(st, OBSD_SESSION_STARTED, 10);
    sched_module_ops.on_session(st, OBSD_SESSION_ENDED, 20);
    struct obsd_sched_block *w0 = worker(area, 0);
    work(w0, 4, 0, NULL);
    uint64_t t2 = now_ns();
    struct rec r;
    take_rec(&r, area, OBSD_SESSION_STARTED, t2);
    ck_assert_int_eq(feed(st, &r), 0);
    work(w0, 6, 0, NULL);
    sched_module_ops.reset(st);                                   /* the final of run 1 */
    sched_module_ops.on_session(st, OBSD_SESSION_STARTED, t2);    /* replayed */
    json_t *sec = sched_module_section(st, NULL);
    ck_assert_str_eq(sstr(sec, "baseline"), "session_start");
    ck_assert_str_eq(sstr(sec, "baseline_sampled_by"), "producer");
    ck_assert_int_eq(wint(sec, 0, "popped_local"), 6);
    json_decref(sec);
    sched_module_ops.destroy(st);
    free(area);
}
END_TEST

/* One field of a good record bent at a time: each is refused with a reason,
 * the module counts it and the engine gets -1 (its rejected counter). */
START_TEST(malformed_samples_are_rejected)
{
    void *area = new_area();
    struct obsd_sched_block *w0 = worker(area, 0);
    sched_area_claim(area, BYTES, OBSD_SCHED_KIND_QUEUE, 0, "qq", NULL);
    work(w0, 3, 1, NULL);
    struct rec good;
    take_rec(&good, area, OBSD_SESSION_TRACKING_START, 1);
    struct sched_sample out;
    ck_assert_int_eq(sched_sample_init(&out, NBLOCKS), 0);
    uint64_t ev, now = now_ns();
    const size_t E0 = sizeof(struct sched_pl_sample), ES = sizeof(struct sched_pl_entry);
    ck_assert_ptr_null(sched_wire_decode(good.buf, good.r.len, 2, area, BYTES, now, &out, &ev));

    unsigned char bad[sizeof good.buf];
    struct sched_pl_sample h;
    struct sched_pl_entry e0, e1;
    int n = 0;
#define BENT(stmt, why)                                                                     \
    do {                                                                                    \
        memcpy(bad, good.buf, good.r.len);                                                  \
        memcpy(&h, bad, sizeof h);                                                          \
        memcpy(&e0, bad + E0, ES);                                                          \
        memcpy(&e1, bad + E0 + ES, ES);                                                     \
        stmt;                                                                               \
        memcpy(bad, &h, sizeof h);                                                          \
        memcpy(bad + E0, &e0, ES);                                                          \
        memcpy(bad + E0 + ES, &e1, ES);                                                     \
        const char *r = sched_wire_decode(bad, good.r.len, 2, area, BYTES, now, &out, &ev); \
        ck_assert_msg(r && strstr(r, why), "%s: got %s", #stmt, r ? r : "accepted");        \
        n++;                                                                                \
    } while (0)
    BENT(h.version = 0, "version");
    BENT(h.reserved0 = 1, "reserved");
    BENT(h.reserved1 = 1, "reserved");
    BENT(h.area_blocks = NBLOCKS / 2, "another size");
    BENT(h.n_entries = 3, "length");
    BENT(h.n_entries = NBLOCKS + 1, "more entries");
    BENT(h.rejected = NBLOCKS - 1, "rejected");
    BENT(h.pid = 0, "pid");
    BENT(h.taken_ns = 0, "future");
    BENT(h.taken_ns = now + 1, "future");
    BENT(h.read_ns = now, "future");
    BENT(e0.block = NBLOCKS, "beyond");
    BENT(e1.block = e0.block, "repeated");
    BENT((e0.block = 5, e1.block = 1), "order");    /* block 5 is free: no owner to compare */
    BENT(e0.state = OBSD_SCHED_CLAIMING, "not in use");
    BENT(e0.pid = -3, "pid");
    BENT(e0.flags = 4, "flags");
    BENT(e0.reserved[4] = 9, "reserved");
    BENT(e0.kind = 3, "unknown kind");
    BENT(e0.index = -1, "index");
    BENT(e0.index = (int64_t)INT32_MAX + 1, "index");
    BENT(e0.index = 9, "disagrees");            /* block 0 is worker 0 */
    BENT(e0.pid = e0.pid + 1, "disagrees");
    BENT(e0.kind = OBSD_SCHED_KIND_QUEUE, "queue");   /* index 0, but a worker's tid */
    BENT(memset(e1.u.q.tag, 'x', sizeof e1.u.q.tag), "tag");
    BENT(e1.u.q.tag[0] = 0, "tag");
    BENT(e1.u.q.tag[1] = '\n', "tag");
    BENT(e1.flags = SCHED_PL_TORN, "queue");
    BENT(e1.tid = 5, "queue");
#undef BENT
    ck_assert_ptr_nonnull(sched_wire_decode(good.buf, 10, 2, area, BYTES, now, &out, &ev));
    ck_assert_ptr_nonnull(sched_wire_decode(good.buf, good.r.len - 1, 2, area, BYTES, now, &out, &ev));
    ck_assert_ptr_nonnull(sched_wire_decode(good.buf, good.r.len, 0, area, BYTES, now, &out, &ev));
    ck_assert_ptr_nonnull(sched_wire_decode(good.buf, good.r.len, 6, area, BYTES, now, &out, &ev));
    ck_assert_ptr_nonnull(sched_wire_decode(good.buf, good.r.len, 2, NULL, 0, now, &out, &ev));
    /* a block reclaimed since the sample (new generation, new owner): the
     * entry is not compared with the new owner, so the sample stays good */
    struct obsd_sched_block *blocks = area;
    atomic_fetch_add(&blocks[0].generation, 1);
    blocks[0].owner_pid = 1;
    blocks[0].index = 4;
    ck_assert_ptr_null(sched_wire_decode(good.buf, good.r.len, 2, area, BYTES, now, &out, &ev));
    ck_assert_int_eq(out.workers[0].worker_index, 0);   /* the sample's, not the area's */

    /* through the module */
    void *st = sched_module_create_on(area, BYTES, NULL);
    sched_module_ops.reset(st);
    struct rec r = good;
    r.r.payload = r.buf;
    r.r.len = 20;
    ck_assert_int_eq(feed(st, &r), -1);
    r.r.len = good.r.len;
    r.r.key = 17;
    ck_assert_int_eq(feed(st, &r), -1);
    r.r.key = 2;
    r.r.type = OBSD_REC_SCHED_FIRST + 3;          /* reserved type of the range */
    ck_assert_int_eq(feed(st, &r), -1);
    r.r.type = OBSD_REC_SCHED_SAMPLE;
    ck_assert_int_eq(feed(st, &r), 0);
    sched_module_ops.on_session(st, OBSD_SESSION_STARTED, 0);
    json_t *sec = sched_module_section(st, NULL);
    ck_assert_int_eq(samples(sec, "received"), 3);
    ck_assert_int_eq(samples(sec, "rejected"), 2);
    json_decref(sec);
    struct snapshot *snap = snapshot_new("run-h", 1, OBSD_RUN_LIVE);
    ck_assert_int_eq(sched_module_ops.contribute(st, snap, false), 0);
    ck_assert_int_eq(snapshot_find_counter(snap, "sched_samples_rejected")->ivalue, 2);
    snapshot_free(snap);
    sched_module_ops.destroy(st);
    sched_sample_free(&out);
    free(area);
    ck_assert_int_gt(n, 25);
}
END_TEST

/* Random corruption: decoding never reads or writes outside the record and
 * the sample (ASan), and what it accepts fits the area. */
START_TEST(corrupt_samples_never_overrun)
{
    void *area = new_area();
    for (int i = 0; i < 6; i++)
        work(worker(area, i), i, i, NULL);
    sched_area_claim(area, BYTES, OBSD_SCHED_KIND_QUEUE, 0, "fuzz", NULL);
    struct rec good;
    take_rec(&good, area, OBSD_SESSION_TRACKING_STOP, 1);
    struct sched_sample out;
    ck_assert_int_eq(sched_sample_init(&out, NBLOCKS), 0);
    unsigned seed = 42;
    uint64_t ev, now = now_ns();
    size_t accepted = 0;
    for (int it = 0; it < 20000; it++) {
        size_t len = good.r.len;
        unsigned char *bad = malloc(len);
        memcpy(bad, good.buf, len);
        int flips = 1 + rand_r(&seed) % 4;
        for (int k = 0; k < flips; k++)
            bad[(size_t)rand_r(&seed) % len] ^= (unsigned char)(1u << (rand_r(&seed) % 8));
        if (rand_r(&seed) % 8 == 0)
            len = (size_t)rand_r(&seed) % len;     /* truncated */
        if (!sched_wire_decode(bad, len, 3, area, BYTES, now, &out, &ev)) {
            accepted++;
            ck_assert_uint_le(out.n_workers + out.n_queues, NBLOCKS);
            for (size_t i = 0; i < out.n_workers; i++)
                ck_assert_uint_lt(out.workers[i].block, NBLOCKS);
        }
        free(bad);
    }
    ck_assert_uint_gt(accepted, 0);   /* flips of counter values are not detectable */
    sched_sample_free(&out);
    free(area);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("sched_sample");
    TCase *tc = tcase_create("sample");
    tcase_add_test(tc, a_sample_decodes_to_what_sched_read_reads);
    tcase_add_test(tc, the_module_uses_the_producers_samples);
    tcase_add_test(tc, without_samples_the_module_reads_the_area);
    tcase_add_test(tc, samples_pair_with_their_own_events);
    tcase_add_test(tc, a_started_sample_waits_across_the_reset);
    tcase_add_test(tc, malformed_samples_are_rejected);
    tcase_add_test(tc, corrupt_samples_never_overrun);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
