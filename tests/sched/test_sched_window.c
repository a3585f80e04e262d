/*
 * test_sched_window.c: the tracking window is the producer's, exactly.
 *
 * Across real processes: the obsd daemon (a child of the test, so it can be
 * stopped with SIGSTOP and waited for with WUNTRACED), a worker process with
 * 100 worker blocks and a queue block, and the test process as the harness.
 * The collector is held stopped while the session events are sent and while
 * the worker counts right after TRACKING_START returns (in another process)
 * and right before and after its own TRACKING_STOP, so it processes every
 * event well after the counting around it: the deltas must be exactly the
 * window's increments, the window must open at the TRACKING_START call and
 * close at the last completion inside it, and throughput must be their
 * ratio. The sample of 101 blocks (17 KiB) is larger than one record of the
 * 64 KiB rings, so it also travels in fragments.
 *
 * The fallback: the same script with session events written as an older
 * libobsd does (no sample) gives the collector's late reads, marked
 * approximate. Hostile sample records are rejected and counted, and do not
 * disturb the exact window of the real events around them.
 */
#include <check.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "e2e.h"
#include "obsd/obsd.h"
#include "sched/sched_wire.h"
#include "shm/producer_internal.h"

#define NW 100                     /* worker blocks of the worker process */

/* t.obsd is a child of the test: it can be stopped and waited for. */
static struct e2e t;

static void setup(void)
{
    e2e_setup(&t, "win");
}

static void teardown(void)
{
    e2e_teardown(&t);
}

static void start_daemon(void)
{
    char *extra[] = {"--set", "exit_after_run=true", "--set", "publish_interval_ms=20",
                     "--set", "ring_size=65536", NULL};
    e2e_start_obsd(&t, extra);
}

/* Stops the collector and waits until it is stopped, so nothing it does
 * can happen before the next step of the test. */
static void collector_stop(void)
{
    int st;
    ck_assert_int_eq(kill(t.obsd, SIGSTOP), 0);
    ck_assert_int_eq(waitpid(t.obsd, &st, WUNTRACED), t.obsd);
    ck_assert(WIFSTOPPED(st));
}

static void collector_continue(void)
{
    ck_assert_int_eq(kill(t.obsd, SIGCONT), 0);
}

/* The latest snapshot's sched phase ("" when there is none yet). */
static void wait_phase(const char *phase)
{
    for (int i = 0; i < 1000; i++) {
        json_t *j = e2e_latest_snapshot(&t, t.store);
        const char *p = json_string_value(json_object_get(json_object_get(j, "sched"), "phase"));
        bool ok = p && !strcmp(p, phase);
        json_decref(j);
        if (ok)
            return;
        e2e_sleep_ms(10);
    }
    ck_abort_msg("the sched section never reached phase %s", phase);
}

/* Waits for the daemon to finish its run and exit; returns the final
 * snapshot of its only run. */
static json_t *final_snapshot(void)
{
    int st = e2e_wait_obsd(&t, 60);
    ck_assert_msg(st == 0, "obsd exit status %d: %s", st, e2e_obsd_log(&t));
    char *show[] = {"obsctl", "show", "--final", "--json", "--store", t.store, NULL};
    return e2e_run_json(&t, show, 10);
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

/* ---- the worker process ------------------------------------------------ */

/* A session event as an older libobsd writes it: the event record alone. */
static int old_session(obsd_t *h, enum obsd_session_event ev)
{
    uint64_t ts = obsd_now();
    return obsd__write(h, OBSD_REC_SESSION, 0, (uint32_t)ev, &ts, sizeof ts);
}

struct reply {
    uint64_t last_completion_ns;    /* of this step */
};

/* Runs steps read from cmd, answering each on ack:
 *   c  claim NW worker blocks and the queue "win.q"
 *   w  warmup counts (before TRACKING_START)
 *   a  the first counts of the window (right after TRACKING_START returned)
 *   b  the last counts of the window, then TRACKING_STOP from this process
 *   p  counts after TRACKING_STOP
 *   x  exit */
static void worker_process(int cmd, int ack, bool old)
{
    obsd_t *h = obsd_open(t.name);
    if (!h)
        _exit(3);
    struct obsd_sched_block *w[NW], *q = NULL;
    char op;
    while (read(cmd, &op, 1) == 1) {
        struct reply r = {0};
        switch (op) {
        case 'c':
            for (int i = 0; i < NW; i++)
                if (!(w[i] = obsd_sched_worker(h, i)))
                    _exit(4);
            if (!(q = obsd_sched_queue(h, "win.q")))
                _exit(4);
            break;
        case 'w':
            for (int i = 0; i < NW; i++) {
                obsd_sched_add(w[i], OBSD_SCHED_POPPED_LOCAL, 100 + (uint64_t)i);
                obsd_sched_steal(w[i], obsd_now(), true);
                obsd_sched_completed(w[i], obsd_now());
            }
            for (int k = 0; k < 3; k++)
                obsd_sched_queue_pushed(q, 1);
            break;
        case 'a':
            for (int i = 0; i < NW; i++) {
                obsd_sched_add(w[i], OBSD_SCHED_POPPED_LOCAL, (uint64_t)i + 1);
                obsd_sched_steal(w[i], obsd_now(), i % 2);
                for (int k = 0; k < 1 + i % 3; k++)
                    obsd_sched_completed(w[i], r.last_completion_ns = obsd_now());
            }
            for (int k = 0; k < NW; k++)
                obsd_sched_queue_pushed(q, k % 10 == 0);
            break;
        case 'b':
            for (int i = 0; i < NW; i++) {
                obsd_sched_add(w[i], OBSD_SCHED_POPPED_LOCAL, 2 * ((uint64_t)i + 1));
                obsd_sched_inc(w[i], OBSD_SCHED_PARKED);
                obsd_sched_completed(w[i], r.last_completion_ns = obsd_now());
            }
            for (int k = 0; k < 5; k++)
                obsd_sched_queue_popped(q, 0);
            if ((old ? old_session(h, OBSD_SESSION_TRACKING_STOP)
                     : obsd_session(h, OBSD_SESSION_TRACKING_STOP)) != OBSD_OK)
                _exit(5);
            break;
        case 'p':
            for (int i = 0; i < NW; i++) {
                obsd_sched_add(w[i], OBSD_SCHED_POPPED_LOCAL, 1000);
                obsd_sched_completed(w[i], obsd_now());
                obsd_sched_completed(w[i], obsd_now());
            }
            obsd_sched_queue_pushed(q, 0);
            break;
        case 'x':
            obsd_close(h);
            _exit(0);
        default:
            _exit(6);
        }
        if (write(ack, &r, sizeof r) != (ssize_t)sizeof r)
            _exit(7);
    }
    _exit(8);
}

struct worker {
    pid_t pid;
    int cmd, ack;
};

static void worker_start(struct worker *wk, bool old)
{
    int c[2], a[2];
    ck_assert_int_eq(pipe(c), 0);
    ck_assert_int_eq(pipe(a), 0);
    wk->pid = fork();
    ck_assert_int_ge(wk->pid, 0);
    if (wk->pid == 0) {
        close(c[1]);
        close(a[0]);
        worker_process(c[0], a[1], old);
    }
    close(c[0]);
    close(a[1]);
    wk->cmd = c[1];
    wk->ack = a[0];
}

static struct reply step(struct worker *wk, char op)
{
    struct reply r;
    ck_assert_int_eq(write(wk->cmd, &op, 1), 1);
    ck_assert_int_eq(read(wk->ack, &r, sizeof r), (ssize_t)sizeof r);
    return r;
}

static void worker_end(struct worker *wk)
{
    char op = 'x';
    int st;
    ck_assert_int_eq(write(wk->cmd, &op, 1), 1);
    ck_assert_int_eq(waitpid(wk->pid, &st, 0), wk->pid);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "worker exit status %d", st);
    close(wk->cmd);
    close(wk->ack);
}

/* ---- the window script ------------------------------------------------- */

struct script {
    uint64_t t_start_before, t_start_after;   /* around the TRACKING_START call */
    uint64_t last_in_window;                  /* the last completion before TRACKING_STOP */
};

static void session(obsd_t *h, enum obsd_session_event ev, bool old)
{
    ck_assert_int_eq(old ? old_session(h, ev) : obsd_session(h, ev), OBSD_OK);
}

/* The whole run with the collector stopped around every event and the
 * counting next to it. old: session events without samples. */
static json_t *run_script(bool old, struct script *s, void (*before_start)(obsd_t *h))
{
    start_daemon();
    struct worker wk;
    worker_start(&wk, old);
    obsd_t *h = obsd_open(t.name);
    ck_assert_ptr_nonnull(h);
    session(h, OBSD_SESSION_STARTED, old);
    step(&wk, 'c');
    step(&wk, 'w');
    if (before_start)
        before_start(h);

    collector_stop();
    s->t_start_before = obsd_now();
    session(h, OBSD_SESSION_TRACKING_START, old);
    s->t_start_after = obsd_now();
    step(&wk, 'a');                 /* the collector has not seen TRACKING_START yet */
    collector_continue();
    wait_phase("tracking");         /* it has now, long after the counts */

    collector_stop();
    s->last_in_window = step(&wk, 'b').last_completion_ns;   /* counts, then TRACKING_STOP */
    step(&wk, 'p');                 /* the collector has not seen TRACKING_STOP yet */
    collector_continue();
    /* Events of different processes travel in different rings, with no order
     * between them: let TRACKING_STOP be processed first, or the harness's
     * ENDED could be the end that counts. */
    wait_phase("done");
    session(h, OBSD_SESSION_ENDED, old);
    json_t *snap = final_snapshot();
    worker_end(&wk);
    obsd_close(h);
    return snap;
}

static json_int_t wget(json_t *w, const char *key)
{
    return json_integer_value(json_object_get(w, key));
}

/* The deltas of the window: steps a and b, exactly. */
static void check_exact(json_t *snap, const struct script *s)
{
    json_t *sec = json_object_get(snap, "sched");
    ck_assert_msg(json_is_object(sec), "no sched section");
    ck_assert_str_eq(json_string_value(json_object_get(sec, "phase")), "done");
    ck_assert_str_eq(json_string_value(json_object_get(sec, "baseline")), "tracking_start");
    ck_assert_str_eq(json_string_value(json_object_get(sec, "baseline_sampled_by")), "producer");
    ck_assert_str_eq(json_string_value(json_object_get(sec, "end_sampled_by")), "producer");
    ck_assert(json_is_true(json_object_get(sec, "window_exact")));
    ck_assert(!has_note(sec, "approximate"));
    json_t *workers = json_object_get(sec, "workers");
    ck_assert_int_eq(json_array_size(workers), NW);
    json_int_t completed = 0;
    for (int i = 0; i < NW; i++) {
        json_t *w = json_array_get(workers, (size_t)i);
        ck_assert_int_eq(wget(w, "worker_index"), i);
        ck_assert_int_eq(wget(w, "popped_local"), 3 * (i + 1));
        ck_assert_int_eq(wget(w, "steal_attempts"), 1);
        ck_assert_int_eq(wget(w, "popped_via_steal"), i % 2);
        ck_assert_int_eq(wget(w, "steal_failures"), 1 - i % 2);
        ck_assert_int_eq(wget(w, "parked"), 1);
        ck_assert_int_eq(wget(w, "behaviors_completed"), 1 + i % 3 + 1);
        ck_assert(!json_is_true(json_object_get(w, "torn")));
        completed += 1 + i % 3 + 1;
    }
    json_t *q = json_array_get(json_object_get(sec, "queues"), 0);
    ck_assert_str_eq(json_string_value(json_object_get(q, "tag")), "win.q");
    ck_assert_int_eq(wget(q, "pushed_total"), NW);
    ck_assert_int_eq(wget(q, "enqueue_cas_retries"), NW / 10);
    ck_assert_int_eq(wget(q, "popped_total"), 5);

    /* The window opens at the TRACKING_START call (obsd_session reads the
     * clock once: the event's timestamp is its sample's) and closes at the
     * last completion inside it; throughput is their ratio. */
    json_int_t ws = json_integer_value(json_object_get(sec, "window_start_ns"));
    json_int_t we = json_integer_value(json_object_get(sec, "window_end_ns"));
    ck_assert_msg((uint64_t)ws >= s->t_start_before && (uint64_t)ws <= s->t_start_after,
                  "window start %lld outside the call [%llu, %llu]", (long long)ws,
                  (unsigned long long)s->t_start_before, (unsigned long long)s->t_start_after);
    ck_assert_uint_eq((uint64_t)we, s->last_in_window);
    json_t *d = json_object_get(sec, "derived");
    ck_assert_int_eq(wget(d, "behaviors_completed"), completed);
    ck_assert_int_eq(wget(d, "window_ns"), we - ws);
    double tp = json_number_value(json_object_get(d, "throughput"));
    double want = (double)completed / ((double)(we - ws) / 1e9);
    ck_assert_double_eq_tol(tp, want, want * 1e-12);
    ck_assert(json_integer_value(json_object_get(sec, "baseline_read_ns")) > 0);
    ck_assert(json_integer_value(json_object_get(sec, "end_read_ns")) > 0);
}

START_TEST(window_is_the_producers_with_a_stopped_collector)
{
    struct script s;
    json_t *snap = run_script(false, &s, NULL);
    check_exact(snap, &s);
    json_t *ps = json_object_get(json_object_get(snap, "sched"), "producer_samples");
    ck_assert_int_eq(json_integer_value(json_object_get(ps, "rejected")), 0);
    /* TRACKING_START, TRACKING_STOP and ENDED carried samples (STARTED came
     * before any block was claimed, so it had none); the two that count
     * were used */
    ck_assert_int_eq(json_integer_value(json_object_get(ps, "received")), 3);
    ck_assert_int_eq(json_integer_value(json_object_get(ps, "used")), 2);
    ck_assert_int_eq(e2e_counter(snap, "obsd_rejected_records"), 0);
    json_decref(snap);
}
END_TEST

/* An older libobsd sends no samples: the collector reads when it processes
 * each event, here after the counting on both sides of it, and says so. */
START_TEST(without_samples_the_collector_reads_late_and_says_so)
{
    struct script s;
    json_t *snap = run_script(true, &s, NULL);
    json_t *sec = json_object_get(snap, "sched");
    ck_assert_str_eq(json_string_value(json_object_get(sec, "baseline")), "tracking_start");
    ck_assert_str_eq(json_string_value(json_object_get(sec, "baseline_sampled_by")), "collector");
    ck_assert_str_eq(json_string_value(json_object_get(sec, "end_sampled_by")), "collector");
    ck_assert(json_is_false(json_object_get(sec, "window_exact")));
    ck_assert(has_note(sec, "the baseline was read by the collector"));
    ck_assert(has_note(sec, "the end was read by the collector"));
    ck_assert_ptr_null(json_object_get(sec, "baseline_read_ns"));
    /* the late reads: step a fell into the baseline, step p into the end */
    json_t *workers = json_object_get(sec, "workers");
    ck_assert_int_eq(json_array_size(workers), NW);
    for (int i = 0; i < NW; i++) {
        json_t *w = json_array_get(workers, (size_t)i);
        ck_assert_int_eq(wget(w, "popped_local"), 2 * (i + 1) + 1000);
        ck_assert_int_eq(wget(w, "behaviors_completed"), 1 + 2);
        ck_assert_int_eq(wget(w, "steal_attempts"), 0);
    }
    ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(sec, "producer_samples"),
                                                        "received")), 0);
    json_decref(snap);
}
END_TEST

/* ---- hostile sample records -------------------------------------------- */

static int n_hostile;

static void send_raw(obsd_t *h, uint8_t type, uint32_t key, const void *p, size_t len)
{
    ck_assert_int_eq(obsd__write(h, type, 0, key, p, len), OBSD_OK);
    n_hostile++;
}

/* Well-formed samples of the real area, bent one way each, with the real
 * events' codes. */
static void *hostile_records(void *arg)
{
    obsd_t *h = arg;
    size_t bytes = 0;
    void *area = obsd__sched_area(h, &bytes);
    size_t blocks = bytes / OBSD_SCHED_BLOCK_BYTES;
    unsigned char *good = malloc(sched_wire_max_bytes(blocks) + 2 * sizeof(struct sched_pl_entry));
    unsigned char *bad = malloc(sched_wire_max_bytes(blocks) + 2 * sizeof(struct sched_pl_entry));
    uint64_t now = obsd_now();
    size_t len = sched_wire_take(area, bytes, blocks, now, now, good);
    struct sched_pl_sample hd;
    struct sched_pl_entry e;
    memcpy(&hd, good, sizeof hd);
    ck_assert_uint_eq(hd.n_entries, NW + 1);
    const size_t E0 = sizeof hd;   /* offset of the first entry */
    uint32_t ev = OBSD_SESSION_TRACKING_START;
    n_hostile = 0;

    send_raw(h, OBSD_REC_SCHED_SAMPLE, ev, good, 20);                       /* short */
#define BENT(stmt)                                   \
    do {                                             \
        memcpy(bad, good, len);                      \
        memcpy(&hd, bad, sizeof hd);                 \
        memcpy(&e, bad + E0, sizeof e);              \
        stmt;                                        \
        memcpy(bad, &hd, sizeof hd);                 \
        memcpy(bad + E0, &e, sizeof e);              \
        send_raw(h, OBSD_REC_SCHED_SAMPLE, ev, bad, len); \
    } while (0)
    BENT(hd.version = 2);
    BENT(hd.area_blocks = (uint32_t)blocks + 1);                            /* another area */
    BENT(hd.n_entries = NW + 5);                                            /* count vs length */
    BENT(hd.taken_ns = now + 3600ull * 1000000000);                         /* the future */
    BENT(hd.rejected = (uint32_t)blocks);                                   /* more than blocks */
    BENT(e.block = (uint32_t)blocks + 7);                                   /* beyond the area */
    BENT(e.pid = e.pid + 1);                                                /* not its owner */
    BENT(e.index = 77);                                                     /* not its index */
    BENT(e.kind = 9);
    BENT(e.state = OBSD_SCHED_FREE);
    BENT(e.reserved[2] = 1);
    /* the second entry repeats the first */
    memcpy(bad, good, len);
    memcpy(bad + E0 + sizeof e, good + E0, sizeof e);
    send_raw(h, OBSD_REC_SCHED_SAMPLE, ev, bad, len);
    /* an unknown event code as the key, and a reserved type of the range */
    send_raw(h, OBSD_REC_SCHED_SAMPLE, 9, good, len);
    int samples = n_hostile;
    send_raw(h, OBSD_REC_SCHED_FIRST + 1, ev, good, len);
    n_hostile = samples * 1000 + n_hostile;   /* samples, and every rejected record */
#undef BENT
    free(good);
    free(bad);
    return NULL;
}

/* In the run's warmup: the hostile records, from a thread of their own (so
 * the harness's ring keeps its room for the real samples while the collector
 * is stopped), then until the collector has seen them all. */
static void send_hostile(obsd_t *h)
{
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, hostile_records, h), 0);
    ck_assert_int_eq(pthread_join(th, NULL), 0);
    int samples = n_hostile / 1000;
    for (int i = 0; i < 1000; i++) {
        json_t *j = e2e_latest_snapshot(&t, t.store);
        json_int_t rej = j ? json_integer_value(json_object_get(
                                 json_object_get(json_object_get(j, "sched"), "producer_samples"), "rejected"))
                           : -1;
        json_decref(j);
        if (rej == samples)
            return;
        e2e_sleep_ms(10);
    }
    ck_abort_msg("the collector did not see the %d hostile samples", samples);
}

START_TEST(hostile_samples_are_rejected_and_counted)
{
    struct script s;
    json_t *snap = run_script(false, &s, send_hostile);
    int samples = n_hostile / 1000, records = n_hostile % 1000;
    ck_assert_int_eq(samples, 14);
    check_exact(snap, &s);          /* the real events' samples still give the exact window */
    json_t *sec = json_object_get(snap, "sched");
    json_t *ps = json_object_get(sec, "producer_samples");
    ck_assert_int_eq(json_integer_value(json_object_get(ps, "rejected")), samples);
    ck_assert_int_eq(json_integer_value(json_object_get(ps, "received")), samples + 3);
    ck_assert_int_eq(e2e_counter(snap, "sched_samples_rejected"), samples);
    ck_assert_int_eq(e2e_counter(snap, "obsd_rejected_records"), records);
    json_decref(snap);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("sched_window");
    TCase *tc = tcase_create("processes");
    tcase_set_timeout(tc, 120);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, window_is_the_producers_with_a_stopped_collector);
    tcase_add_test(tc, without_samples_the_collector_reads_late_and_says_so);
    tcase_add_test(tc, hostile_samples_are_rejected_and_counted);
    suite_add_tcase(s, tc);
    return e2e_run_suite(s);
}
