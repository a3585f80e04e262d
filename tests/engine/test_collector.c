/*
 * test_collector: the embedded collector end to end, across real processes:
 * a fork()ed producer writes spans, counters, gauges and session events; the
 * collector (in a thread, or in a child for SIGTERM and kill -9) drains them;
 * the final snapshot in the store has exact counts and the right state.
 * Also: stop() and SIGTERM interrupt, the INTERRUPTED marker is latched, runs
 * follow runs with one final each, malformed records are counted as rejected,
 * the control socket answers status/watch/unknown, a watcher that connects
 * after a run ended gets its final snapshot as stored, and a collector
 * restarted after kill -9 continues the same run.
 */
#include <jansson.h>
#include <math.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>

#include "engine_test.h"
#include "shm/producer_internal.h"
#include "shm/wire.h"

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* A connection to the collector's control socket, or -1. */
static int control_connect(const struct eng_fixture *f)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s.sock", f->dir, f->name);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(fd, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    ck_assert_uint_lt(strlen(path), sizeof sa.sun_path);
    memcpy(sa.sun_path, path, strlen(path) + 1);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Sends one command line, returns everything the server wrote (first line). */
static json_t *control_cmd(const struct eng_fixture *f, const char *cmd)
{
    int fd = control_connect(f);
    if (fd < 0)
        return NULL;
    ck_assert_int_eq(write(fd, cmd, strlen(cmd)), (ssize_t)strlen(cmd));
    char buf[65536];
    size_t n = 0;
    for (;;) {
        struct pollfd p = {fd, POLLIN, 0};
        ck_assert_int_gt(poll(&p, 1, 10000), 0);
        ssize_t r = read(fd, buf + n, sizeof buf - 1 - n);
        if (r <= 0)
            break;
        n += (size_t)r;
        if (memchr(buf, '\n', n) || n == sizeof buf - 1)
            break;
    }
    close(fd);
    buf[n] = '\0';
    json_error_t je;
    json_t *j = json_loads(buf, JSON_DISABLE_EOF_CHECK, &je);
    ck_assert_msg(j != NULL, "bad JSON from the control socket: %s (%s)", buf, je.text);
    return j;
}

/* Sends "watch"; returns the stream of its snapshot lines. */
static FILE *watch_open(const struct eng_fixture *f)
{
    int fd = control_connect(f);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, "watch\n", 6), 6);
    FILE *in = fdopen(fd, "r");
    ck_assert_ptr_nonnull(in);
    return in;
}

/* The next watch line, parsed. */
static json_t *watch_line(FILE *in)
{
    char *line = NULL;
    size_t cap = 0;
    ck_assert_int_gt(getline(&line, &cap, in), 0);
    json_error_t je;
    json_t *j = json_loads(line, 0, &je);
    ck_assert_msg(j != NULL, "watch line is not JSON: %s", je.text);
    free(line);
    return j;
}

/* Polls status until records >= want (and the state, if given). */
static void wait_status(const struct eng_fixture *f, uint64_t want_records, const char *want_state)
{
    for (int i = 0; i < 1000; i++) {
        json_t *j = control_cmd(f, "status\n");
        if (j) {
            uint64_t rec = (uint64_t)json_integer_value(json_object_get(j, "records"));
            const char *state = json_string_value(json_object_get(j, "state"));
            bool ok = rec >= want_records && (!want_state || (state && !strcmp(state, want_state)));
            json_decref(j);
            if (ok)
                return;
        }
        sleep_ms(10);
    }
    ck_abort_msg("collector never reached %llu records / state %s", (unsigned long long)want_records,
                 want_state ? want_state : "-");
}

enum { P_START = 1, P_END = 2, P_INTERRUPT = 4, P_BAD = 8 };

/* One run's records on h: n spans of 1..1000 ns, n counter adds of 3, a
 * gauge, and the session events (and bad records) flags ask for. */
static void produce_on(obsd_t *h, int n, int flags)
{
    obsd_key_t ks = obsd_key(h, "work.span"), kc = obsd_key(h, "items"), kg = obsd_key(h, "temp");
    if (flags & P_START)
        obsd_session(h, OBSD_SESSION_STARTED);
    for (int i = 0; i < n; i++) {
        if (obsd_span(h, ks, 1000, 1000 + (uint64_t)(i % 1000) + 1) != OBSD_OK)
            _exit(4);
        if (obsd_counter_add(h, kc, 3) != OBSD_OK)
            _exit(5);
    }
    obsd_gauge_set(h, kg, 36.5);
    if (flags & P_BAD) {
        obsd_span(h, ks, 2000, 1000);                            /* end before start */
        int32_t half = 1;
        obsd__write(h, OBSD_REC_COUNTER, 0, kc, &half, sizeof half); /* short payload */
        uint64_t v = 1;
        obsd__write(h, 7, 0, kc, &v, sizeof v);                 /* a type nobody owns */
        obsd__write(h, OBSD_REC_VALUE, 0, 4000, &v, sizeof v);  /* a key never interned */
    }
    if (flags & P_INTERRUPT)
        obsd_session(h, OBSD_SESSION_INTERRUPTED);
    if (flags & P_END)
        obsd_session(h, OBSD_SESSION_ENDED);
}

/* The producer process: one run's records (produce_on) on a handle of its own. */
static void produce(const char *name, int n, int flags)
{
    obsd_t *h = obsd_open(name);
    if (!h) {
        fprintf(stderr, "obsd_open: %s\n", obsd_last_error());
        _exit(3);
    }
    produce_on(h, n, flags);
    obsd_flush(h);
    obsd_close(h);
}

static pid_t fork_producer(const char *name, int n, int flags)
{
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        produce(name, n, flags);
        _exit(0);
    }
    return pid;
}

/* Producers wait on a full ring instead of dropping: the counts are exact. */
static void blocking_fixture(struct eng_fixture *f, const char *tag)
{
    eng_fixture_init(f, tag);
    f->cfg.ring_full_block = true;
    f->cfg.ring_block_timeout_ms = 10000;
}

static struct obsd_collector *new_collector(struct eng_fixture *f)
{
    char err[256];
    struct obsd_collector *c = obsd_collector_new(&f->cfg, err, sizeof err);
    ck_assert_msg(c != NULL, "obsd_collector_new: %s", err);
    return c;
}

static void stop_collector(struct eng_runner *r)
{
    obsd_collector_stop(r->c);
    eng_join(r);
    obsd_collector_free(r->c);
}

/* The collector in a child process (for signals), once its control socket
 * answers. */
static pid_t fork_collector(const struct eng_fixture *f)
{
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        char err[256];
        struct obsd_collector *c = obsd_collector_new(&f->cfg, err, sizeof err);
        if (!c) {
            fprintf(stderr, "%s\n", err);
            _exit(2);
        }
        int rc = obsd_collector_run(c);
        obsd_collector_free(c);
        _exit(rc == 0 ? 0 : 1);
    }
    json_t *j = NULL;
    for (int i = 0; i < 500 && !(j = control_cmd(f, "status\n")); i++)
        sleep_ms(10);
    ck_assert_ptr_nonnull(j);
    json_decref(j);
    return pid;
}

/* The store's runs, asserted: want of them, each with a final snapshot and
 * nothing after it. finals[i] gets run i's (the caller frees them). */
static struct store_run_info *final_runs(const char *dir, size_t want, struct snapshot **finals)
{
    struct store *st = eng_store_ro(dir);
    struct store_run_info *runs = NULL;
    size_t n = 0;
    ck_assert_int_eq(store_list_runs(st, &runs, &n), STORE_OK);
    ck_assert_uint_eq(n, want);
    for (size_t i = 0; i < n; i++) {
        ck_assert_msg(runs[i].has_final, "run %zu has no final snapshot", i + 1);
        ck_assert_uint_eq(runs[i].final_seq, runs[i].last_seq);
        finals[i] = NULL;
        ck_assert_int_eq(store_final(st, runs[i].id, &finals[i]), STORE_OK);
    }
    store_close(st);
    return runs;
}

/* The only run of the store (asserted) and its final snapshot. */
static struct snapshot *only_final(const char *dir, struct store_run_info *info_out)
{
    struct snapshot *s;
    struct store_run_info *runs = final_runs(dir, 1, &s);
    if (info_out)
        *info_out = runs[0];
    free(runs);
    return s;
}

/* c in a thread and one producer process until the run ends (the config
 * has exit_after_run); returns the run's final snapshot. */
static struct snapshot *run_until_final(struct eng_fixture *f, struct obsd_collector *c, int n, int flags)
{
    struct eng_runner r;
    eng_start(&r, c);
    eng_wait_child(fork_producer(f->name, n, flags));
    eng_join(&r);
    obsd_collector_free(c);
    return only_final(f->dir, NULL);
}

/* The run's state, and exactly what produce_on() wrote with n. */
static void check_run(const struct snapshot *s, enum obsd_run_state state, int n)
{
    ck_assert_int_eq(s->state, state);
    const struct snap_series *sp = snapshot_find_series(s, "work.span");
    ck_assert_ptr_nonnull(sp);
    ck_assert_uint_eq(sp->count, (uint64_t)n);
    double total = 0;
    for (int i = 0; i < n; i++)
        total += (double)(i % 1000 + 1);
    ck_assert_double_eq(sp->total, total);
    ck_assert_double_eq(sp->min, 1);
    ck_assert_double_eq(sp->max, n < 1000 ? n : 1000);
    ck_assert(!sp->exact);                      /* core spans: histogram only */
    ck_assert_int_eq(eng_counter(s, "items"), 3 * (int64_t)n);
    const struct snap_counter *g = snapshot_find_counter(s, "temp");
    ck_assert_ptr_nonnull(g);
    ck_assert(g->is_float);
    ck_assert_double_eq(g->fvalue, 36.5);
}

START_TEST(ended_run_is_complete_with_exact_counts)
{
    struct eng_fixture f;
    blocking_fixture(&f, "c");
    f.cfg.exit_after_run = true;
    struct snapshot *s = run_until_final(&f, new_collector(&f), 20000, P_START | P_END);
    check_run(s, OBSD_RUN_COMPLETE, 20000);
    ck_assert_uint_eq(s->n_pending_tasks, 0);
    ck_assert_int_eq(eng_counter(s, "obsd_dropped_records"), 0);
    ck_assert_int_eq(eng_counter(s, "obsd_rejected_records"), 0);
    snapshot_free(s);
    eng_fixture_done(&f);
}
END_TEST

START_TEST(timeout_poll_fallback_collects_the_same)
{
    /* as on a kernel without io_uring FUTEX_WAIT (before 6.7) */
    setenv("OBSD_ENGINE_NO_FUTEX", "1", 1);
    struct eng_fixture f;
    blocking_fixture(&f, "p");
    f.cfg.exit_after_run = true;
    struct obsd_collector *c = new_collector(&f);
    unsetenv("OBSD_ENGINE_NO_FUTEX");
    struct snapshot *s = run_until_final(&f, c, 20000, P_START | P_END);
    check_run(s, OBSD_RUN_COMPLETE, 20000);
    snapshot_free(s);
    eng_fixture_done(&f);
}
END_TEST

START_TEST(stop_ends_the_run_interrupted)
{
    struct eng_fixture f;
    blocking_fixture(&f, "s");
    struct eng_runner r;
    eng_start(&r, new_collector(&f));
    eng_wait_child(fork_producer(f.name, 5000, P_START));
    wait_status(&f, 1 + 2 * 5000 + 1, "live");
    stop_collector(&r);

    struct snapshot *s = only_final(f.dir, NULL);
    check_run(s, OBSD_RUN_INTERRUPTED, 5000);
    snapshot_free(s);
    eng_fixture_done(&f);
}
END_TEST

START_TEST(sigterm_ends_the_run_interrupted)
{
    struct eng_fixture f;
    blocking_fixture(&f, "t");
    pid_t coll = fork_collector(&f);
    eng_wait_child(fork_producer(f.name, 3000, P_START));
    wait_status(&f, 1 + 2 * 3000 + 1, "live");
    ck_assert_int_eq(kill(coll, SIGTERM), 0);
    eng_wait_child(coll);

    struct snapshot *s = only_final(f.dir, NULL);
    check_run(s, OBSD_RUN_INTERRUPTED, 3000);
    snapshot_free(s);
    eng_fixture_done(&f);
}
END_TEST

START_TEST(interrupted_marker_is_latched_until_ended)
{
    struct eng_fixture f;
    blocking_fixture(&f, "i");
    f.cfg.exit_after_run = true;
    struct snapshot *s = run_until_final(&f, new_collector(&f), 100, P_START | P_INTERRUPT | P_END);
    check_run(s, OBSD_RUN_INTERRUPTED, 100);
    snapshot_free(s);
    eng_fixture_done(&f);
}
END_TEST

START_TEST(malformed_records_are_rejected_and_counted)
{
    struct eng_fixture f;
    blocking_fixture(&f, "r");
    f.cfg.exit_after_run = true;
    struct snapshot *s = run_until_final(&f, new_collector(&f), 10, P_START | P_BAD | P_END);
    check_run(s, OBSD_RUN_COMPLETE, 10);   /* the good records all count */
    ck_assert_int_eq(eng_counter(s, "obsd_rejected_records"), 4);
    snapshot_free(s);
    eng_fixture_done(&f);
}
END_TEST

START_TEST(runs_follow_runs_with_one_final_each)
{
    struct eng_fixture f;
    blocking_fixture(&f, "m");
    struct eng_runner r;
    eng_start(&r, new_collector(&f));
    eng_wait_child(fork_producer(f.name, 10, P_START | P_END));
    wait_status(&f, 1, "complete");
    /* a stray ENDED and a duplicate STARTED after the final change nothing */
    {
        pid_t p = fork();
        if (p == 0) {
            obsd_t *h = obsd_open(f.name);
            obsd_session(h, OBSD_SESSION_ENDED);
            obsd_close(h);
            _exit(0);
        }
        eng_wait_child(p);
    }
    sleep_ms(100);
    json_t *j = control_cmd(&f, "status\n");
    ck_assert_str_eq(json_string_value(json_object_get(j, "state")), "complete");
    char first_run[64];
    snprintf(first_run, sizeof first_run, "%s", json_string_value(json_object_get(j, "run")));
    json_decref(j);

    eng_wait_child(fork_producer(f.name, 5, P_START | P_END));
    for (int i = 0; i < 500; i++) {
        j = control_cmd(&f, "status\n");
        bool next = strcmp(json_string_value(json_object_get(j, "run")), first_run) &&
                    !strcmp(json_string_value(json_object_get(j, "state")), "complete");
        json_decref(j);
        if (next)
            break;
        sleep_ms(10);
    }
    stop_collector(&r);     /* no run open: stopping writes nothing more */

    struct snapshot *fin[2];
    struct store_run_info *runs = final_runs(f.dir, 2, fin);
    ck_assert_str_eq(runs[0].id, first_run);
    ck_assert_str_ne(runs[0].id, runs[1].id);
    for (size_t i = 0; i < 2; i++) {
        check_run(fin[i], OBSD_RUN_COMPLETE, i == 0 ? 10 : 5);   /* metrics reset between runs */
        snapshot_free(fin[i]);
    }
    free(runs);
    eng_fixture_done(&f);
}
END_TEST

/* Two whole runs already in one ring when the collector first drains it
 * (ENDED, STARTED, spans, ENDED back to back): the second run's records wait
 * for its own run, and its ENDED ends it. */
START_TEST(back_to_back_runs_in_one_ring)
{
    struct eng_fixture f;
    eng_fixture_init(&f, "b");
    struct obsd_collector *c = new_collector(&f);
    pid_t p = fork();
    ck_assert_int_ge(p, 0);
    if (p == 0) {
        /* one handle, one thread: one ring, so the order of the two runs is
         * the ring's (across rings there is none) */
        obsd_t *h = obsd_open(f.name);
        if (!h)
            _exit(3);
        produce_on(h, 10, P_START | P_END);
        produce_on(h, 5, P_START | P_END);
        obsd_flush(h);
        obsd_close(h);
        _exit(0);
    }
    eng_wait_child(p);          /* everything is in the ring before the loop runs */
    struct eng_runner r;
    eng_start(&r, c);
    /* all 36 records (per run: STARTED, the spans and counter adds, the
     * gauge, ENDED) delivered and the run complete: only the second run can
     * be, since its records wait until it is open. The store is read once
     * the collector is gone (one LMDB environment per process). */
    wait_status(&f, 2 * 3 + 2 * 10 + 2 * 5, "complete");
    stop_collector(&r);
    struct snapshot *fin[2];
    free(final_runs(f.dir, 2, fin));
    for (size_t i = 0; i < 2; i++) {
        check_run(fin[i], OBSD_RUN_COMPLETE, i == 0 ? 10 : 5);   /* each run its own records */
        snapshot_free(fin[i]);
    }
    eng_fixture_done(&f);
}
END_TEST

START_TEST(control_socket_status_watch_and_errors)
{
    struct eng_fixture f;
    blocking_fixture(&f, "k");
    struct eng_runner r;
    eng_start(&r, new_collector(&f));
    eng_wait_child(fork_producer(f.name, 50, P_START));
    wait_status(&f, 102, "live");

    json_t *j = control_cmd(&f, "status\n");
    ck_assert_str_eq(json_string_value(json_object_get(j, "name")), f.name);
    ck_assert_int_eq(json_integer_value(json_object_get(j, "pid")), getpid());
    ck_assert(json_is_integer(json_object_get(j, "dropped")));
    ck_assert(json_is_integer(json_object_get(j, "rejected")));
    ck_assert(json_is_integer(json_object_get(j, "n_pending_tasks")));
    ck_assert(json_is_array(json_object_get(j, "producers")));
    ck_assert_ptr_nonnull(strstr(json_string_value(json_object_get(j, "run")), f.name));
    json_decref(j);

    j = control_cmd(&f, "frobnicate\n");
    ck_assert_ptr_nonnull(strstr(json_string_value(json_object_get(j, "error")), "frobnicate"));
    json_decref(j);

    /* watch: snapshot lines keep coming with growing seq */
    FILE *in = watch_open(&f);
    int64_t last_seq = -1;
    for (int i = 0; i < 3; i++) {
        json_t *s = watch_line(in);
        ck_assert_str_eq(json_string_value(json_object_get(s, "state")), "live");
        int64_t seq = json_integer_value(json_object_get(s, "seq"));
        ck_assert_int_gt(seq, last_seq);
        last_seq = seq;
        json_decref(s);
    }
    fclose(in);
    stop_collector(&r);
    eng_fixture_done(&f);
}
END_TEST

/* Connects with "watch" and returns the first line, parsed. */
static json_t *watch_first_line(const struct eng_fixture *f)
{
    FILE *in = watch_open(f);
    json_t *j = watch_line(in);
    fclose(in);
    return j;
}

static double num_or_nan(json_t *v)
{
    return json_is_number(v) ? json_number_value(v) : NAN;
}

static void ck_same_double(double got, double want, const char *what, const char *name)
{
    ck_assert_msg((isnan(got) && isnan(want)) || got == want, "%s of %s: %.17g, stored %.17g",
                  what, name, got, want);
}

/* The watch line is the summary of that snapshot: the same run, seq and
 * state, every counter with its value, every series with count, total,
 * min, max, mean, p50 and p99, and no histograms. */
static void check_watch_line(json_t *w, const struct snapshot *s)
{
    ck_assert_str_eq(json_string_value(json_object_get(w, "form")), "watch");
    ck_assert_str_eq(json_string_value(json_object_get(w, "run")), s->run);
    ck_assert_int_eq(json_integer_value(json_object_get(w, "seq")), (json_int_t)s->seq);
    ck_assert_str_eq(json_string_value(json_object_get(w, "state")), obsd_run_state_name(s->state));
    json_t *metrics = json_object_get(w, "metrics");
    ck_assert_uint_eq(json_array_size(metrics), s->n_counters + s->n_series);
    for (size_t i = 0; i < s->n_counters; i++) {
        json_t *m = json_array_get(metrics, i);
        const struct snap_counter *c = &s->counters[i];
        ck_assert_str_eq(json_string_value(json_object_get(m, "type")), "counter");
        ck_assert_str_eq(json_string_value(json_object_get(m, "name")), c->name);
        if (c->is_float)
            ck_same_double(num_or_nan(json_object_get(m, "value")), c->fvalue, "value", c->name);
        else
            ck_assert_int_eq(json_integer_value(json_object_get(m, "value")), c->ivalue);
    }
    for (size_t i = 0; i < s->n_series; i++) {
        json_t *m = json_array_get(metrics, s->n_counters + i);
        const struct snap_series *sr = &s->series[i];
        ck_assert_str_eq(json_string_value(json_object_get(m, "type")), "series");
        ck_assert_str_eq(json_string_value(json_object_get(m, "name")), sr->name);
        ck_assert_int_eq(json_integer_value(json_object_get(m, "count")), (json_int_t)sr->count);
        ck_same_double(num_or_nan(json_object_get(m, "total")), sr->total, "total", sr->name);
        ck_same_double(num_or_nan(json_object_get(m, "min")), sr->min, "min", sr->name);
        ck_same_double(num_or_nan(json_object_get(m, "max")), sr->max, "max", sr->name);
        ck_same_double(num_or_nan(json_object_get(m, "mean")),
                       sr->count ? sr->total / (double)sr->count : NAN, "mean", sr->name);
        json_t *pct = json_object_get(m, "percentiles");
        ck_same_double(num_or_nan(json_object_get(pct, "50.0")), sr->percentiles[7], "p50", sr->name);
        ck_same_double(num_or_nan(json_object_get(pct, "99.0")), sr->percentiles[1], "p99", sr->name);
        ck_assert_ptr_null(json_object_get(m, "histogram"));
    }
}

START_TEST(watch_after_the_run_gets_its_final_snapshot)
{
    struct eng_fixture f;
    blocking_fixture(&f, "w");
    struct eng_runner r;
    eng_start(&r, new_collector(&f));
    eng_wait_child(fork_producer(f.name, 300, P_START | P_END));
    wait_status(&f, 1, "complete");
    /* nobody watched while the run went on: the line is made on demand */
    json_t *w = watch_first_line(&f);
    json_t *again = watch_first_line(&f);
    stop_collector(&r);

    ck_assert_str_eq(json_string_value(json_object_get(w, "state")), "complete");
    struct store_run_info info;
    struct snapshot *fin = only_final(f.dir, &info);
    ck_assert_int_eq(json_integer_value(json_object_get(w, "seq")), (json_int_t)info.final_seq);
    check_run(fin, OBSD_RUN_COMPLETE, 300);
    check_watch_line(w, fin);
    ck_assert(json_equal(w, again));
    json_decref(w);
    json_decref(again);
    snapshot_free(fin);
    eng_fixture_done(&f);
}
END_TEST

/* work.span's count in the store's latest snapshot, -1 if there is none. */
static int64_t persisted_spans(const char *dir)
{
    struct store *st = eng_store_ro(dir);
    struct store_run_info info;
    struct snapshot *s = NULL;
    int64_t n = -1;
    if (store_last_run(st, &info) == STORE_OK && store_latest(st, info.id, &s) == STORE_OK) {
        const struct snap_series *sp = snapshot_find_series(s, "work.span");
        n = sp ? (int64_t)sp->count : -1;
        snapshot_free(s);
    }
    store_close(st);
    return n;
}

START_TEST(restarted_collector_continues_the_run)
{
    struct eng_fixture f;
    blocking_fixture(&f, "x");
    /* A long interval: the kill below comes after the collector drained
     * the second producer's records and before it committed them. */
    f.cfg.publish_interval_ms = 3000;
    pid_t coll = fork_collector(&f);
    eng_wait_child(fork_producer(f.name, 100, P_START));
    wait_status(&f, 202, "live");
    /* wait until a persisted snapshot holds them (what a restart continues from) */
    for (int i = 0; i < 1000 && persisted_spans(f.dir) != 100; i++)
        sleep_ms(10);
    ck_assert_int_eq(persisted_spans(f.dir), 100);
    /* drained (status counts them) but not yet in the store */
    eng_wait_child(fork_producer(f.name, 50, 0));
    wait_status(&f, 303, "live");
    ck_assert_int_eq(kill(coll, SIGKILL), 0);
    waitpid(coll, NULL, 0);
    int64_t kept = persisted_spans(f.dir);
    ck_assert_msg(kept == 100, "the kill came after a commit of the second producer (%lld spans stored)",
                  (long long)kept);

    /* The restarted collector reads them again from the rings, exactly once. */
    f.cfg.publish_interval_ms = 20;
    f.cfg.exit_after_run = true;
    struct snapshot *s = run_until_final(&f, new_collector(&f), 50, P_END);
    ck_assert_int_eq(s->state, OBSD_RUN_COMPLETE);
    const struct snap_series *sp = snapshot_find_series(s, "work.span");
    ck_assert_ptr_nonnull(sp);
    ck_assert_uint_eq(sp->count, 200);
    ck_assert_int_eq(eng_counter(s, "items"), 3 * 200);
    ck_assert(!sp->exact);
    snapshot_free(s);
    eng_fixture_done(&f);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("collector");
    TCase *tc = tcase_create("collector");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, ended_run_is_complete_with_exact_counts);
    tcase_add_test(tc, timeout_poll_fallback_collects_the_same);
    tcase_add_test(tc, stop_ends_the_run_interrupted);
    tcase_add_test(tc, sigterm_ends_the_run_interrupted);
    tcase_add_test(tc, interrupted_marker_is_latched_until_ended);
    tcase_add_test(tc, malformed_records_are_rejected_and_counted);
    tcase_add_test(tc, runs_follow_runs_with_one_final_each);
    tcase_add_test(tc, back_to_back_runs_in_one_ring);
    tcase_add_test(tc, control_socket_status_watch_and_errors);
    tcase_add_test(tc, watch_after_the_run_gets_its_final_snapshot);
    tcase_add_test(tc, restarted_collector_continues_the_run);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
