/*
 * test_shm_concurrent: producers in several threads and processes write
 * while a reader drains; every record is accounted for (received + counted
 * drops == written) and each thread's order is kept. Also: 1 MiB payloads
 * arrive intact while the reader keeps up, block mode waits for the reader,
 * and the doorbell wakes a sleeping reader.
 */
#include <errno.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>

#include "shm_test.h"

#define SPAN_TAG 0x5eed000000000000ull

static void nap_us(long us)
{
    struct timespec ts = {0, us * 1000};
    nanosleep(&ts, NULL);
}

struct writer_arg {
    const char *name;
    obsd_t *h;              /* shared handle, or NULL to open one */
    long n;
    int id;
    atomic_ulong written, dropped;
};

/* Span payload: start = thread-local sequence number, end = start ^ tag. */
static void *span_writer(void *p)
{
    struct writer_arg *a = p;
    obsd_t *h = a->h ? a->h : obsd_open(a->name);
    ck_assert_ptr_nonnull(h);
    obsd_key_t k = obsd_key(h, "conc.span");
    unsigned long w = 0, d = 0;
    for (long i = 0; i < a->n; i++) {
        int rc = obsd_span(h, k, (uint64_t)i, (uint64_t)i ^ SPAN_TAG);
        if (rc == OBSD_OK)
            w++;
        else if (rc == OBSD_DROPPED)
            d++;
        else
            ck_abort_msg("rc %d", rc);
        if ((i & 1023) == 1023)
            nap_us(10);  /* some work between records */
    }
    atomic_store(&a->written, w);
    atomic_store(&a->dropped, d);
    if (!a->h)
        obsd_close(h);
    return NULL;
}

/* Checks per-(pid,tid) order and payload integrity; returns spans seen. */
static size_t check_order(const struct sink *s)
{
    struct last { pid_t pid, tid; uint64_t seq; bool any; } last[256];
    size_t nl = 0, spans = 0;
    for (size_t i = 0; i < s->n; i++) {
        const struct got *g = &s->v[i];
        if (g->type != OBSD_REC_SPAN)
            continue;
        spans++;
        uint64_t seq = got_u64(g, 0);
        ck_assert_uint_eq(got_u64(g, 1), seq ^ SPAN_TAG);
        size_t j;
        for (j = 0; j < nl && !(last[j].pid == g->pid && last[j].tid == g->tid); j++)
            ;
        if (j == nl) {
            ck_assert_uint_lt(nl, 256);
            last[nl++] = (struct last){g->pid, g->tid, seq, true};
            continue;
        }
        ck_assert_msg(seq > last[j].seq, "thread %d: seq %llu after %llu", (int)g->tid,
                      (unsigned long long)seq, (unsigned long long)last[j].seq);
        last[j].seq = seq;
    }
    return spans;
}

START_TEST(threads_write_while_reader_drains)
{
    struct shm_config cfg;
    shm_config_defaults(&cfg, test_seg_name("thr"));
    cfg.ring_bytes = 16 << 10;  /* small, so some drops may happen */
    struct shm_segment *seg = test_segment(&cfg);
    obsd_t *shared = obsd_open(cfg.name);
    enum { T = 4 };
    struct writer_arg args[T];
    pthread_t tid[T];
    for (int i = 0; i < T; i++) {
        args[i] = (struct writer_arg){.name = cfg.name, .h = i < 2 ? shared : NULL, .n = 40000, .id = i};
        pthread_create(&tid[i], NULL, span_writer, &args[i]);
    }
    struct sink s = {0};
    for (int i = 0; i < 200000 && s.n < (size_t)T * 40000; i++) {
        if (!shm_drain(seg, sink_fn, &s, 0))
            nap_us(50);
        struct shm_stats st;
        shm_get_stats(seg, &st);
        if (s.n + st.dropped == (size_t)T * 40000)
            break;
    }
    unsigned long written = 0, dropped = 0;
    for (int i = 0; i < T; i++) {
        pthread_join(tid[i], NULL);
        written += atomic_load(&args[i].written);
        dropped += atomic_load(&args[i].dropped);
    }
    shm_drain(seg, sink_fn, &s, 0);
    ck_assert_uint_eq(written + dropped, (unsigned long)T * 40000);
    ck_assert_uint_eq(check_order(&s), written);
    struct shm_stats st;
    shm_get_stats(seg, &st);
    ck_assert_uint_eq(st.records, written);
    ck_assert_uint_eq(st.dropped, dropped);
    ck_assert_uint_eq(st.rejected, 0);
    struct obsd_producer_stats ps;
    obsd_stats(shared, &ps);
    ck_assert_uint_eq(ps.records_written + ps.records_dropped, 2 * 40000);
    sink_free(&s);
    obsd_close(shared);
    shm_segment_close(seg, true);
}
END_TEST

/* A child process: 3 threads writing spans; reports totals through a pipe. */
static void child_writes(const char *name, int fd)
{
    enum { T = 3 };
    struct writer_arg args[T];
    pthread_t tid[T];
    obsd_t *h = obsd_open(name);
    if (!h)
        _exit(3);
    for (int i = 0; i < T; i++) {
        args[i] = (struct writer_arg){.name = name, .h = h, .n = 20000, .id = i};
        pthread_create(&tid[i], NULL, span_writer, &args[i]);
    }
    for (int i = 0; i < T; i++)
        pthread_join(tid[i], NULL);
    struct obsd_producer_stats ps;
    obsd_stats(h, &ps);
    obsd_close(h);
    if (write(fd, &ps, sizeof ps) != (ssize_t)sizeof ps)
        _exit(4);
    _exit(0);
}

START_TEST(processes_and_threads_write_while_reader_drains)
{
    struct shm_config cfg;
    shm_config_defaults(&cfg, test_seg_name("proc"));
    cfg.ring_bytes = 32 << 10;
    struct shm_segment *seg = test_segment(&cfg);
    enum { P = 3 };
    pid_t pids[P];
    int fds[P][2];
    for (int p = 0; p < P; p++) {
        ck_assert_int_eq(pipe(fds[p]), 0);
        pids[p] = fork();
        ck_assert_int_ge(pids[p], 0);
        if (pids[p] == 0) {
            close(fds[p][0]);
            child_writes(cfg.name, fds[p][1]);
        }
        close(fds[p][1]);
    }
    struct sink s = {0};
    int alive = P;
    while (alive) {
        if (!shm_drain(seg, sink_fn, &s, 0))
            nap_us(50);
        for (int p = 0; p < P; p++) {
            int status;
            if (pids[p] > 0 && waitpid(pids[p], &status, WNOHANG) == pids[p]) {
                ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %d", status);
                shm_producer_exited(seg, pids[p], sink_fn, &s);
                pids[p] = -1;
                alive--;
            }
        }
    }
    shm_drain(seg, sink_fn, &s, 0);
    uint64_t written = 0, dropped = 0;
    for (int p = 0; p < P; p++) {
        struct obsd_producer_stats ps;
        ck_assert_int_eq(read(fds[p][0], &ps, sizeof ps), (ssize_t)sizeof ps);
        close(fds[p][0]);
        written += ps.records_written;
        dropped += ps.records_dropped;
    }
    ck_assert_uint_eq(written + dropped, (uint64_t)P * 3 * 20000);
    ck_assert_uint_eq(check_order(&s), written);
    struct shm_stats st;
    shm_get_stats(seg, &st);
    ck_assert_uint_eq(st.dropped, dropped);
    ck_assert_uint_eq(st.rejected, 0);
    ck_assert_uint_eq(st.producers, 0);
    sink_free(&s);
    shm_segment_close(seg, true);
}
END_TEST

/* 1 MiB texts: byte i of text t is (i * 31 + t) & 0xff. */
static void fill_text(char *p, size_t n, int t)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (char)((i * 31 + (size_t)t) & 0xff);
}

struct big_arg {
    const char *name;
    int count;
    atomic_int rc_ok, done;
};

static void *big_writer(void *p)
{
    struct big_arg *a = p;
    obsd_t *h = obsd_open(a->name);
    size_t n = 1 << 20;
    char *text = malloc(n);
    for (int t = 0; t < a->count; t++) {
        fill_text(text, n, t);
        if (obsd_request_complete(h, (uint64_t)t, 100 + (uint64_t)t, "length", text, n) == OBSD_OK)
            atomic_fetch_add(&a->rc_ok, 1);
    }
    free(text);
    obsd_close(h);
    atomic_store(&a->done, 1);
    return NULL;
}

START_TEST(megabyte_texts_arrive_intact)
{
    struct shm_config cfg;
    shm_config_defaults(&cfg, test_seg_name("big"));
    cfg.ring_bytes = 256 << 10;  /* the text is 4x the ring: it streams */
    struct shm_segment *seg = test_segment(&cfg);
    struct big_arg a = {.name = cfg.name, .count = 4};
    pthread_t t;
    pthread_create(&t, NULL, big_writer, &a);
    struct sink s = {.keep_payloads = true};
    while (s.n < 4) {
        bool done = atomic_load(&a.done);
        if (!shm_drain(seg, sink_fn, &s, 0)) {
            if (done)
                break;
            nap_us(100);
        }
    }
    pthread_join(t, NULL);
    ck_assert_uint_eq(s.n, 4);
    ck_assert_int_eq(atomic_load(&a.rc_ok), 4);
    size_t n = 1 << 20;
    char *want = malloc(n);
    for (int i = 0; i < 4; i++) {
        ck_assert_int_eq(s.v[i].type, OBSD_REC_REQ_COMPLETE);
        struct obsd_pl_req_complete c;
        ck_assert_uint_eq(s.v[i].len, sizeof c + 6 + n);
        memcpy(&c, s.v[i].payload, sizeof c);
        ck_assert_uint_eq(c.request_id, (uint64_t)i);
        ck_assert_uint_eq(c.reason_len, 6);
        ck_assert_mem_eq(s.v[i].payload + sizeof c, "length", 6);
        fill_text(want, n, i);
        ck_assert(memcmp(s.v[i].payload + sizeof c + 6, want, n) == 0);
    }
    struct shm_stats st;
    shm_get_stats(seg, &st);
    ck_assert_uint_eq(st.discarded, 0);
    ck_assert_uint_eq(st.rejected, 0);
    ck_assert_uint_eq(st.dropped, 0);
    free(want);
    sink_free(&s);
    shm_segment_close(seg, true);
}
END_TEST

struct late_reader {
    struct shm_segment *seg;
    struct sink *s;
    atomic_int started;
};

static void *drain_later(void *p)
{
    struct late_reader *r = p;
    atomic_store(&r->started, 1);
    nap_us(20000);
    shm_drain(r->seg, sink_fn, r->s, 0);
    return NULL;
}

START_TEST(block_mode_waits_for_the_reader)
{
    struct shm_config cfg;
    shm_config_defaults(&cfg, test_seg_name("block"));
    cfg.ring_bytes = 4096;
    cfg.full_policy = SHM_FULL_BLOCK;
    cfg.block_timeout_ns = 30ull * 1000 * 1000 * 1000; /* never reached */
    struct shm_segment *seg = test_segment(&cfg);
    obsd_t *h = obsd_open(cfg.name);
    obsd_key_t k = obsd_key(h, "s");
    for (int i = 0; i < 170; i++)
        ck_assert_int_eq(obsd_span(h, k, (uint64_t)i, 0), OBSD_OK);
    struct sink s = {0};
    struct late_reader r = {seg, &s, 0};
    pthread_t t;
    pthread_create(&t, NULL, drain_later, &r);
    while (!atomic_load(&r.started))
        nap_us(100);
    /* The ring is full: this waits until the reader drains, then succeeds. */
    ck_assert_int_eq(obsd_span(h, k, 170, 0), OBSD_OK);
    pthread_join(t, NULL);
    shm_drain(seg, sink_fn, &s, 0);
    ck_assert_uint_eq(s.n, 171);
    ck_assert_uint_eq(got_u64(&s.v[170], 0), 170);
    struct shm_stats st;
    shm_get_stats(seg, &st);
    ck_assert_uint_eq(st.dropped, 0);
    sink_free(&s);
    obsd_close(h);
    shm_segment_close(seg, true);
}
END_TEST

struct bell_arg {
    const char *name;
    atomic_int go;
    int mode;  /* 0: session event, 1: fill half the ring */
};

static void *ring_the_bell(void *p)
{
    struct bell_arg *a = p;
    obsd_t *h = obsd_open(a->name);
    obsd_key_t k = obsd_key(h, "bell");
    while (!atomic_load(&a->go))
        nap_us(100);
    nap_us(2000);
    if (a->mode == 0) {
        obsd_session(h, OBSD_SESSION_TRACKING_START);
    } else {
        for (int i = 0; i < 100; i++) /* 2400 bytes of a 4096-byte ring */
            obsd_span(h, k, 1, 2);
    }
    obsd_close(h);
    return NULL;
}

START_TEST(doorbell_wakes_a_sleeping_reader)
{
    for (int mode = 0; mode < 2; mode++) {
        struct shm_config cfg;
        shm_config_defaults(&cfg, test_seg_name("bell"));
        cfg.ring_bytes = 4096;
        struct shm_segment *seg = test_segment(&cfg);
        struct bell_arg a = {.name = cfg.name, .mode = mode};
        pthread_t t;
        pthread_create(&t, NULL, ring_the_bell, &a);
        uint32_t expect;
        uint32_t *word = shm_reader_sleeping(seg, &expect);
        atomic_store(&a.go, 1);
        /* Far longer than the test may take: a timeout means no wake. */
        struct timespec ts = {20, 0};
        long rc = syscall(SYS_futex, word, FUTEX_WAIT, expect, &ts, NULL, 0);
        int e = errno;
        shm_reader_awake(seg);
        ck_assert_msg(rc == 0 || e == EAGAIN, "mode %d: futex wait ended with %s", mode, strerror(e));
        pthread_join(t, NULL);
        struct sink s = {0};
        ck_assert_uint_eq(shm_drain(seg, sink_fn, &s, 0), mode == 0 ? 1 : 100);
        sink_free(&s);
        shm_segment_close(seg, true);
    }
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("shm_concurrent");
    TCase *tc = tcase_create("concurrent");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, threads_write_while_reader_drains);
    tcase_add_test(tc, processes_and_threads_write_while_reader_drains);
    tcase_add_test(tc, megabyte_texts_arrive_intact);
    tcase_add_test(tc, block_mode_waits_for_the_reader);
    tcase_add_test(tc, doorbell_wakes_a_sleeping_reader);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return test_run_suite(suite());
}
