/*
 * test_e2e_watch.c: `watch` on the control socket with real processes: obsd,
 * a producer process writing N_SERIES series (the 10,000 of the collector
 * benchmark; the key table holds obsd.conf max_keys, 16384 by default), and
 * watchers.
 *
 *  - a watcher that reads slower than snapshots come keeps getting whole
 *    lines with every series (it skips snapshots: latest wins) and is not
 *    disconnected; it gets the run's final snapshot, whose counts are the
 *    stored final's; `obsctl watch --once` shows all the series;
 *  - a watcher that never reads does not make obsd's memory grow with the
 *    snapshots published meanwhile, and is still served when it reads,
 *    with the final snapshot of each of the two runs that ended meanwhile.
 */
#include <check.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "e2e.h"
#include "obsd/obsd.h"

#define N_SERIES 10000

static struct e2e t;

static void setup(void)
{
    e2e_setup(&t, "watch");
}

static void teardown(void)
{
    e2e_teardown(&t);
}

struct producer {
    pid_t pid;
    int stop_fd;     /* closing it ends the run */
    int go_fd;       /* a byte on it: the next short run */
};

/* A session event that a full ring would drop is written again. */
static void session(obsd_t *h, enum obsd_session_event ev)
{
    for (int i = 0; i < 3000; i++) {
        if (obsd_session(h, ev) == OBSD_OK && obsd_flush(h) == OBSD_OK)
            return;
        e2e_sleep_ms(10);
    }
    _exit(12);
}

/* A producer process: STARTED, then one span in each of N_SERIES series per
 * round until stop_fd's other end closes, then ENDED; then runs - 1 more
 * short runs (STARTED, one round, ENDED) at once. */
static struct producer start_producer(int runs)
{
    int p[2], g[2];
    ck_assert_int_eq(pipe(p), 0);
    ck_assert_int_eq(pipe(g), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        close(p[1]);
        close(g[1]);
        obsd_t *h = obsd_open(t.name);
        if (!h)
            _exit(10);
        static obsd_key_t keys[N_SERIES];
        for (int i = 0; i < N_SERIES; i++) {
            char name[48];
            snprintf(name, sizeof name, "watch.series.%04d", i);
            keys[i] = obsd_key(h, name);
            if (!keys[i])
                _exit(11);
        }
        session(h, OBSD_SESSION_STARTED);
        for (uint64_t round = 0;; round++) {
            for (int i = 0; i < N_SERIES; i++)
                obsd_span(h, keys[i], 1000, 1000 + 100 * (uint64_t)(i + 1) + round % 50);
            obsd_flush(h);
            struct pollfd pf = {p[0], POLLIN, 0};
            if (poll(&pf, 1, 20) > 0)
                break;           /* EOF: the test closed its end */
        }
        session(h, OBSD_SESSION_ENDED);
        for (int r = 1; r < runs; r++) {
            char b;
            if (read(g[0], &b, 1) != 1)    /* after the previous run's final */
                _exit(13);
            session(h, OBSD_SESSION_STARTED);
            for (int i = 0; i < N_SERIES; i++)
                obsd_span(h, keys[i], 1000, 2000);
            session(h, OBSD_SESSION_ENDED);
        }
        obsd_close(h);
        _exit(0);
    }
    close(p[0]);
    close(g[0]);
    return (struct producer){pid, p[1], g[1]};
}

/* Waits until status shows a complete run other than not_run (NULL: any). */
static void wait_complete(const char *not_run)
{
    char seen[256] = "";
    for (int i = 0; i < 1500; i++) {
        json_t *st = e2e_status(&t);
        const char *run = st ? json_string_value(json_object_get(st, "run")) : NULL;
        const char *state = st ? json_string_value(json_object_get(st, "state")) : NULL;
        bool done = run && state && (!not_run || strcmp(run, not_run)) && !strcmp(state, "complete");
        snprintf(seen, sizeof seen, "%s %s", run ? run : "-", state ? state : "-");
        json_decref(st);
        if (done)
            return;
        e2e_sleep_ms(20);
    }
    ck_abort_msg("no run completed (status: %s)", seen);
}

static void stop_producer(struct producer *p)
{
    close(p->stop_fd);
}

static void wait_producer(struct producer *p)
{
    close(p->go_fd);
    ck_assert_int_eq(e2e_wait(p->pid, 30), 0);
}

static FILE *watch_connect(int rcvbuf)
{
    char path[400];
    snprintf(path, sizeof path, "%s/%s.sock", t.store, t.name);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(fd, 0);
    if (rcvbuf)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    ck_assert_uint_lt(strlen(path), sizeof sa.sun_path);
    memcpy(sa.sun_path, path, strlen(path) + 1);
    ck_assert_int_eq(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    ck_assert_int_eq(write(fd, "watch\n", 6), 6);
    FILE *in = fdopen(fd, "r");
    ck_assert_ptr_nonnull(in);
    return in;
}

/* The next watch line, parsed; fails the test if the daemon closed the
 * connection (a dropped watcher). */
static json_t *next_line(FILE *in, const char *who)
{
    static char *line;
    static size_t cap;
    ssize_t n = getline(&line, &cap, in);
    ck_assert_msg(n > 0, "%s: obsd closed the watch connection", who);
    ck_assert_msg(line[n - 1] == '\n', "%s: a line cut short", who);
    json_error_t je;
    json_t *j = json_loads(line, 0, &je);
    ck_assert_msg(j != NULL, "%s: the watch line is not JSON: %s", who, je.text);
    ck_assert_msg(json_object_get(j, "error") == NULL, "%s: %s", who, line);
    return j;
}

static size_t n_series(json_t *snap)
{
    size_t n = 0, i;
    json_t *m;
    json_array_foreach(json_object_get(snap, "metrics"), i, m) {
        const char *type = json_string_value(json_object_get(m, "type"));
        const char *name = json_string_value(json_object_get(m, "name"));
        if (type && !strcmp(type, "series") && name && !strncmp(name, "watch.series.", 13))
            n++;
    }
    return n;
}

static long long seq_of(json_t *snap)
{
    return (long long)json_integer_value(json_object_get(snap, "seq"));
}

static bool is_final(json_t *snap)
{
    const char *st = json_string_value(json_object_get(snap, "state"));
    return st && (!strcmp(st, "complete") || !strcmp(st, "interrupted"));
}

/* Reads until a line with all N_SERIES series; returns it. */
static json_t *line_with_all_series(FILE *in, const char *who)
{
    for (int i = 0; i < 400; i++) {
        json_t *j = next_line(in, who);
        if (n_series(j) == N_SERIES)
            return j;
        json_decref(j);
    }
    ck_abort_msg("%s: no watch line with all %d series", who, N_SERIES);
    return NULL;
}

START_TEST(a_slow_watcher_of_thousands_of_series_is_served_latest_first)
{
    e2e_start_obsd(&t, NULL);
    struct producer p = start_producer(1);
    FILE *in = watch_connect(0);
    json_t *j = line_with_all_series(in, "slow watcher");
    long long seq = seq_of(j);
    json_decref(j);

    /* Read one line in 300 ms, six snapshots' time (publish_interval_ms=50):
     * the watcher is not disconnected and skips to newer snapshots. */
    bool skipped = false;
    for (int i = 0; i < 8; i++) {
        e2e_sleep_ms(300);
        j = next_line(in, "slow watcher");
        ck_assert_uint_eq(n_series(j), N_SERIES);
        ck_assert_int_gt(seq_of(j), seq);
        skipped |= seq_of(j) > seq + 1;
        seq = seq_of(j);
        json_decref(j);
    }
    ck_assert_msg(skipped, "a slow watcher got every snapshot in turn (no latest-wins)");

    /* The view shows them all, as many as there are. */
    char *view = NULL;
    char *watch[] = {"obsctl", "watch", "--once", "--name", t.name, "--store", t.store, NULL};
    ck_assert_int_eq(e2e_run(&t, watch, NULL, 60, &view), 0);
    char more[64];
    snprintf(more, sizeof more, "... %d more series", N_SERIES - 10);
    ck_assert_msg(strstr(view, "watch.series.") && strstr(view, more), "%s", view);
    free(view);

    /* The end of the run reaches the watcher: its final line is the store's. */
    stop_producer(&p);
    wait_producer(&p);
    json_t *fin = NULL;
    for (int i = 0; i < 400 && !fin; i++) {
        j = next_line(in, "slow watcher");
        if (is_final(j))
            fin = j;
        else
            json_decref(j);
    }
    ck_assert_msg(fin != NULL, "no final snapshot reached the watcher");
    json_t *stored = e2e_final_snapshot(&t, t.store, 30);
    ck_assert_msg(stored != NULL, "%s", e2e_last_show_output());
    ck_assert_int_eq(seq_of(fin), seq_of(stored));
    ck_assert_uint_eq(n_series(fin), N_SERIES);
    for (int i = 0; i < N_SERIES; i += 97) {
        char name[48];
        snprintf(name, sizeof name, "watch.series.%04d", i);
        ck_assert_int_eq(e2e_series_count(fin, name), e2e_series_count(stored, name));
        ck_assert_int_gt(e2e_series_count(fin, name), 0);
    }
    json_decref(fin);
    json_decref(stored);
    fclose(in);
    ck_assert_int_eq(e2e_stop_obsd(&t, SIGTERM), 0);
}
END_TEST

/* obsd's private (anonymous) resident memory in kB. */
static long rss_anon_kb(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    char *text = e2e_read_file(path);
    ck_assert_ptr_nonnull(text);
    char *p = strstr(text, "RssAnon:");
    ck_assert_ptr_nonnull(p);
    long kb = strtol(p + 8, NULL, 10);
    free(text);
    return kb;
}

START_TEST(a_watcher_that_does_not_read_does_not_grow_obsd)
{
    /* In an ASan build freed memory waits in a quarantine (256 MB) before
     * it is reused: obsd would grow by what it frees. Measure without it. */
    const char *asan = getenv("ASAN_OPTIONS");
    char opts[512];
    snprintf(opts, sizeof opts, "%s%squarantine_size_mb=0", asan ? asan : "", asan && *asan ? ":" : "");
    setenv("ASAN_OPTIONS", opts, 1);
    e2e_start_obsd(&t, NULL);
    struct producer p = start_producer(2);
    /* a reader that keeps up tells how many snapshots went by */
    FILE *reader = watch_connect(0);
    json_t *j = line_with_all_series(reader, "reader");
    char first_run[64];
    snprintf(first_run, sizeof first_run, "%s", json_string_value(json_object_get(j, "run")));
    char *text = json_dumps(j, JSON_COMPACT);
    size_t line_bytes = strlen(text);
    free(text);
    json_decref(j);
    FILE *stuck = watch_connect(4096);     /* never reads until the end */

    /* warm-up: the stuck watcher's socket buffer fills */
    long long seq0 = 0;
    for (int i = 0; i < 10; i++) {
        j = next_line(reader, "reader");
        seq0 = seq_of(j);
        json_decref(j);
    }
    long before = rss_anon_kb(t.obsd);
    long long seq = seq0;
    while (seq < seq0 + 100) {
        j = next_line(reader, "reader");
        seq = seq_of(j);
        json_decref(j);
    }
    long after = rss_anon_kb(t.obsd);
    /* 100 lines queued for the stuck watcher would be 100 x line_bytes; it
     * holds at most three lines. The bound leaves room for the allocator
     * (and a sanitizer's shadow memory), a fifth of the unbounded growth. */
    long grown_kb = after - before;
    long bound_kb = (long)(20 * line_bytes / 1024);
    fprintf(stderr, "obsd grew by %ld kB over 100 snapshots of %zu bytes (bound %ld kB)\n", grown_kb,
            line_bytes, bound_kb);
    ck_assert_msg(grown_kb < bound_kb,
                  "obsd grew by %ld kB over 100 snapshots of %zu bytes with a watcher that does not read",
                  grown_kb, line_bytes);

    /* The run ends and a second one runs to its end while it still does not
     * read; then it is still served: whole lines, newer ones, and the final
     * snapshot of each run (a run's final is not skipped). */
    stop_producer(&p);
    wait_complete(NULL);
    ck_assert_int_eq(write(p.go_fd, "g", 1), 1);
    wait_producer(&p);
    wait_complete(first_run);
    int finals = 0;
    long long last = -1;
    for (int i = 0; i < 400 && finals < 2; i++) {
        j = next_line(stuck, "stuck watcher");
        const char *run = json_string_value(json_object_get(j, "run"));
        ck_assert_ptr_nonnull(run);
        if (finals == 0 && !strcmp(run, first_run)) {
            ck_assert_int_gt(seq_of(j), last);
            last = seq_of(j);
        }
        if (is_final(j)) {
            ck_assert_msg(finals == 0 ? !strcmp(run, first_run) : strcmp(run, first_run) != 0,
                          "final %d is of run %s", finals, run);
            ck_assert_uint_eq(n_series(j), N_SERIES);
            finals++;
        }
        json_decref(j);
    }
    ck_assert_msg(finals == 2, "the stuck watcher got %d of the 2 runs' final snapshots", finals);
    fclose(stuck);
    fclose(reader);
    ck_assert_int_eq(e2e_stop_obsd(&t, SIGTERM), 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("e2e_watch");
    TCase *tc = tcase_create("watch");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 180);
    tcase_add_test(tc, a_slow_watcher_of_thousands_of_series_is_served_latest_first);
    tcase_add_test(tc, a_watcher_that_does_not_read_does_not_grow_obsd);
    suite_add_tcase(s, tc);
    return e2e_run_suite(s);
}
