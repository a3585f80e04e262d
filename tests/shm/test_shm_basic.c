/*
 * test_shm_basic: what a producer sees on one thread: open errors, the ABI
 * check, every record type end to end, key interning (also across a collector
 * restart), exact drop counting, refusals, slot reuse, abandoned fragments.
 */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <stddef.h>
#include <sys/wait.h>

#include "shm_test.h"
#include "shm/segment.h"

static void patch_header(const char *name, size_t off, const void *v, size_t n)
{
    char path[128];
    snprintf(path, sizeof path, "/dev/shm/obsd.%s", name);
    int fd = open(path, O_RDWR);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(pwrite(fd, v, n, (off_t)off), (ssize_t)n);
    close(fd);
}

START_TEST(open_missing_segment_names_it)
{
    obsd_t *h = obsd_open("no-such-segment-xyz");
    ck_assert_ptr_null(h);
    ck_assert_ptr_nonnull(strstr(obsd_last_error(), "obsd.no-such-segment-xyz"));
    ck_assert_ptr_null(obsd_open("../etc/passwd"));
    ck_assert_ptr_nonnull(strstr(obsd_last_error(), "bad segment name"));
    ck_assert_ptr_null(obsd_open(""));
}
END_TEST

START_TEST(abi_mismatch_is_refused_naming_both_versions)
{
    /* 1: a segment of a libobsd/obsd from before the key table's size was
     * configurable; OBSD_ABI_VERSION + 1: one from a newer release. */
    const uint32_t others[] = {1, OBSD_ABI_VERSION + 1};
    ck_assert_int_eq(OBSD_ABI_VERSION, 2);
    for (size_t i = 0; i < sizeof others / sizeof others[0]; i++) {
        struct shm_config cfg;
        shm_config_defaults(&cfg, test_seg_name("abi"));
        cfg.ring_bytes = 64 << 10;
        struct shm_segment *seg = test_segment(&cfg);
        patch_header(cfg.name, offsetof(struct seg_header, abi_version), &others[i], sizeof others[i]);

        obsd_t *h = obsd_open(cfg.name);
        ck_assert_ptr_null(h);
        char want[160];
        snprintf(want, sizeof want, "segment obsd.%s has ABI version %u, this libobsd speaks %d",
                 cfg.name, others[i], OBSD_ABI_VERSION);
        ck_assert_str_eq(obsd_last_error(), want);

        /* A collector refuses to re-attach to it too, with the same words. */
        shm_segment_close(seg, false);
        char err[256];
        ck_assert_ptr_null(shm_segment_create(&cfg, err, sizeof err));
        ck_assert_ptr_nonnull(strstr(err, want));

        uint32_t ours = OBSD_ABI_VERSION;
        patch_header(cfg.name, offsetof(struct seg_header, abi_version), &ours, sizeof ours);
        seg = test_segment(&cfg);
        h = obsd_open(cfg.name);
        ck_assert_ptr_nonnull(h);
        obsd_close(h);
        shm_segment_close(seg, true);
    }
}
END_TEST

START_TEST(every_record_type_round_trips)
{
    struct shm_config cfg;
    shm_config_defaults(&cfg, test_seg_name("types"));
    cfg.ring_bytes = 64 << 10;
    struct shm_segment *seg = test_segment(&cfg);
    obsd_t *h = obsd_open(cfg.name);
    ck_assert_ptr_nonnull(h);

    obsd_key_t k = obsd_key(h, "kernel.gemm");
    ck_assert_uint_ne(k, 0);
    ck_assert_uint_eq(obsd_key(h, "kernel.gemm"), k);
    obsd_key_t c = obsd_key(h, "items:total");
    ck_assert_uint_ne(c, k);

    ck_assert_int_eq(obsd_session_at(h, OBSD_SESSION_STARTED, 5), OBSD_OK);
    ck_assert_int_eq(obsd_span(h, k, 100, 250), OBSD_OK);
    ck_assert_int_eq(obsd_value(h, k, 77), OBSD_OK);
    ck_assert_int_eq(obsd_counter_add(h, c, -3), OBSD_OK);
    ck_assert_int_eq(obsd_gauge_set(h, c, 2.5), OBSD_OK);
    ck_assert_int_eq(obsd_request_issued(h, 9, 1000, "hello", 5), OBSD_OK);
    ck_assert_int_eq(obsd_request_issued_tokens(h, 10, 1001, 42), OBSD_OK);
    ck_assert_int_eq(obsd_request_first_chunk(h, 9, 1100, "wo", 2), OBSD_OK);
    ck_assert_int_eq(obsd_request_chunk(h, 9, 1200), OBSD_OK);
    ck_assert_int_eq(obsd_request_error(h, 10, 1300, "boom", 4), OBSD_OK);
    ck_assert_int_eq(obsd_request_complete(h, 9, 1400, "stop", "world", 5), OBSD_OK);
    ck_assert_int_eq(obsd_flush(h), OBSD_OK);

    struct sink s = {.keep_payloads = true};
    ck_assert_uint_eq(shm_drain(seg, sink_fn, &s, 0), 11);
    ck_assert_uint_eq(s.n, 11);
    ck_assert_int_eq(s.v[0].type, OBSD_REC_SESSION);
    ck_assert_uint_eq(s.v[0].key, OBSD_SESSION_STARTED);
    ck_assert_uint_eq(got_u64(&s.v[0], 0), 5);
    ck_assert_int_eq(s.v[1].type, OBSD_REC_SPAN);
    ck_assert_str_eq(shm_key_name(seg, s.v[1].key), "kernel.gemm");
    ck_assert_uint_eq(got_u64(&s.v[1], 0), 100);
    ck_assert_uint_eq(got_u64(&s.v[1], 1), 250);
    ck_assert_int_eq(s.v[1].pid, getpid());
    ck_assert_int_eq(s.v[2].type, OBSD_REC_VALUE);
    ck_assert_uint_eq(got_u64(&s.v[2], 0), 77);
    ck_assert_int_eq(s.v[3].type, OBSD_REC_COUNTER);
    ck_assert_int_eq((int64_t)got_u64(&s.v[3], 0), -3);
    ck_assert_str_eq(shm_key_name(seg, s.v[3].key), "items:total");
    ck_assert_int_eq(s.v[4].type, OBSD_REC_GAUGE);
    double g;
    memcpy(&g, s.v[4].payload, sizeof g);
    ck_assert(g == 2.5);
    ck_assert_int_eq(s.v[5].type, OBSD_REC_REQ_ISSUED);
    ck_assert_uint_eq(s.v[5].len, sizeof(struct obsd_pl_req_issued) + 5);
    ck_assert_uint_eq(got_u64(&s.v[5], 2), OBSD_PROMPT_TOKENS_FROM_TEXT);
    ck_assert_mem_eq(s.v[5].payload + 24, "hello", 5);
    ck_assert_uint_eq(got_u64(&s.v[6], 2), 42);
    ck_assert_int_eq(s.v[7].type, OBSD_REC_REQ_FIRST);
    ck_assert_mem_eq(s.v[7].payload + 16, "wo", 2);
    ck_assert_int_eq(s.v[8].type, OBSD_REC_REQ_CHUNK);
    ck_assert_uint_eq(got_u64(&s.v[8], 1), 1200);
    ck_assert_int_eq(s.v[9].type, OBSD_REC_REQ_ERROR);
    ck_assert_mem_eq(s.v[9].payload + 16, "boom", 4);
    ck_assert_int_eq(s.v[10].type, OBSD_REC_REQ_COMPLETE);
    struct obsd_pl_req_complete rc;
    memcpy(&rc, s.v[10].payload, sizeof rc);
    ck_assert_uint_eq(rc.reason_len, 4);
    ck_assert_mem_eq(s.v[10].payload + sizeof rc, "stopworld", 9);

    struct obsd_producer_stats ps;
    obsd_stats(h, &ps);
    ck_assert_uint_eq(ps.records_written, 11);
    ck_assert_uint_eq(ps.records_dropped, 0);
    struct shm_stats st;
    shm_get_stats(seg, &st);
    ck_assert_uint_eq(st.records, 11);
    ck_assert_uint_eq(st.rejected, 0);
    ck_assert_uint_eq(st.producers, 1);
    ck_assert_uint_eq(st.bytes_pending, 0);

    sink_free(&s);
    obsd_close(h);
    shm_segment_close(seg, true);
}
END_TEST

START_TEST(bad_arguments_are_refused_and_counted)
{
    struct shm_config cfg;
    shm_config_defaults(&cfg, test_seg_name("args"));
    cfg.ring_bytes = 64 << 10;
    cfg.max_text_bytes = 1000;
    struct shm_segment *seg = test_segment(&cfg);
    obsd_t *h = obsd_open(cfg.name);
    ck_assert_ptr_nonnull(h);

    ck_assert_uint_eq(obsd_key(h, ""), 0);
    ck_assert_uint_eq(obsd_key(h, "has space"), 0);
    ck_assert_ptr_nonnull(strstr(obsd_last_error(), "character 4"));
    char longname[OBSD_KEY_MAX + 2];
    memset(longname, 'a', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    ck_assert_uint_eq(obsd_key(h, longname), 0);
    longname[OBSD_KEY_MAX] = '\0';
    obsd_key_t lk = obsd_key(h, longname);
    ck_assert_uint_ne(lk, 0);
    ck_assert_str_eq(shm_key_name(seg, lk), longname);

    ck_assert_int_eq(obsd_span(h, 0, 1, 2), OBSD_EINVAL);
    ck_assert_int_eq(obsd_span(NULL, 1, 1, 2), OBSD_EINVAL);
    ck_assert_int_eq(obsd_session(h, (enum obsd_session_event)9), OBSD_EINVAL);
    char text[2000];
    memset(text, 'x', sizeof text);
    ck_assert_int_eq(obsd_request_complete(h, 1, 1, "stop", text, sizeof text), OBSD_ETOOBIG);
    ck_assert_ptr_nonnull(strstr(obsd_last_error(), "max_text_bytes"));
    ck_assert_int_eq(obsd_request_issued(h, 1, 1, NULL, 5), OBSD_EINVAL);

    struct obsd_producer_stats ps;
    obsd_stats(h, &ps);
    ck_assert_uint_eq(ps.records_refused, 4);
    ck_assert_uint_eq(ps.records_written, 0);
    obsd_close(h);
    shm_segment_close(seg, true);
}
END_TEST

/* A thread of the child below: writes more spans than its 1 MiB ring holds
 * (nothing drains), so every page of a ring it got is written. */
#define ROOMLESS_SPANS 50000
struct roomless_writer {
    obsd_t *h;
    obsd_key_t k;
    pthread_barrier_t *all_written;
    int ok, dropped, other;
    char err[256];
};

static void *roomless_write(void *p)
{
    struct roomless_writer *w = p;
    for (int i = 0; i < ROOMLESS_SPANS; i++) {
        int rc = obsd_span(w->h, w->k, (uint64_t)i, (uint64_t)i + 1);
        if (rc == OBSD_OK) {
            w->ok++;
        } else if (rc == OBSD_ENOSLOT) {    /* no ring for this thread: dropped, counted */
            if (!w->err[0])
                snprintf(w->err, sizeof w->err, "%s", obsd_last_error());
            w->dropped++;
        } else if (rc == OBSD_DROPPED) {    /* its ring is full */
            w->dropped++;
        } else {
            w->other++;
        }
    }
    /* keep the ring claimed until every thread has written: released rings
     * are reused, and the point is four rings at once */
    pthread_barrier_wait(w->all_written);
    return NULL;
}

/* In the child: a private mount namespace with a 3 MiB /dev/shm (as small as
 * a container's, relative to the rings), a segment of 8 rings of 1 MiB, and
 * four writer threads that fill their rings. Two rings fit; the other
 * threads' claims must be refused with a message and counted drops, never
 * SIGBUS. Exit 77: the
 * machine does not let the test make a mount namespace. */
static int roomless_child(void)
{
    if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
        mount("tmpfs", "/dev/shm", "tmpfs", 0, "size=3m") < 0)
        return 77;
    struct shm_config cfg;
    shm_config_defaults(&cfg, test_seg_name("roomless"));
    cfg.ring_bytes = 1 << 20;
    cfg.max_producers = 8;
    char err[256];
    struct shm_segment *seg = shm_segment_create(&cfg, err, sizeof err);
    if (!seg) {
        fprintf(stderr, "roomless: %s\n", err);
        return 1;
    }
    obsd_t *h = obsd_open(cfg.name);
    if (!h)
        return 2;
    struct roomless_writer w[4];
    pthread_t t[4];
    pthread_barrier_t all_written;
    pthread_barrier_init(&all_written, NULL, 4);
    obsd_key_t k = obsd_key(h, "s");
    for (int i = 0; i < 4; i++) {
        w[i] = (struct roomless_writer){.h = h, .k = k, .all_written = &all_written};
        pthread_create(&t[i], NULL, roomless_write, &w[i]);
    }
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    pthread_barrier_destroy(&all_written);
    int ok = 0, dropped = 0, refused_threads = 0;
    for (int i = 0; i < 4; i++) {
        if (w[i].other)
            return 3;
        ok += w[i].ok;
        dropped += w[i].dropped;
        if (w[i].ok == 0) {
            refused_threads++;
            if (!strstr(w[i].err, "no room in /dev/shm for another ring")) {
                fprintf(stderr, "roomless: message: %s\n", w[i].err);
                return 4;
            }
        }
    }
    struct obsd_producer_stats ps;
    obsd_stats(h, &ps);
    if (ps.records_written != (uint64_t)ok || ps.records_dropped != (uint64_t)dropped ||
        ok + dropped != 4 * ROOMLESS_SPANS) {
        fprintf(stderr, "roomless: written %llu dropped %llu ok %d dropped %d\n",
                (unsigned long long)ps.records_written, (unsigned long long)ps.records_dropped, ok,
                dropped);
        return 5;
    }
    if (refused_threads < 1 || ok < ROOMLESS_SPANS / 2) {
        fprintf(stderr, "roomless: %d threads refused, %d spans written\n", refused_threads, ok);
        return 6;
    }
    /* what fitted is read back */
    struct sink s = {0};
    uint64_t n = shm_drain(seg, sink_fn, &s, 0);
    obsd_close(h);
    shm_segment_close(seg, true);
    return n == (uint64_t)ok ? 0 : 7;
}

START_TEST(full_dev_shm_refuses_a_ring_instead_of_sigbus)
{
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0)
        _exit(roomless_child());
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert_msg(WIFEXITED(st), "the writer died of signal %d (SIGBUS: a page /dev/shm had no room for)",
                  WIFSIGNALED(st) ? WTERMSIG(st) : 0);
    if (WEXITSTATUS(st) == 77) {
        fprintf(stderr, "test_shm_basic: no mount namespace here: full /dev/shm case skipped\n");
        return;
    }
    ck_assert_int_eq(WEXITSTATUS(st), 0);
}
END_TEST

START_TEST(full_ring_drops_exactly_and_returns)
{
    struct shm_config cfg;
    shm_config_defaults(&cfg, test_seg_name("drop"));
    cfg.ring_bytes = 4096;
    struct shm_segment *seg = test_segment(&cfg);
    obsd_t *h = obsd_open(cfg.name);
    obsd_key_t k = obsd_key(h, "s");

    /* 4096 / 24 = 170 spans fit; the rest of the 1000 are dropped. */
    int ok = 0, dropped = 0;
    for (int i = 0; i < 1000; i++) {
        int rc = obsd_span(h, k, (uint64_t)i, (uint64_t)i + 1);
        if (rc == OBSD_OK)
            ok++;
        else if (rc == OBSD_DROPPED)
            dropped++;
        else
            ck_abort_msg("unexpected rc %d", rc);
    }
    ck_assert_int_eq(ok, 170);
    ck_assert_int_eq(dropped, 830);
    struct obsd_producer_stats ps;
    obsd_stats(h, &ps);
    ck_assert_uint_eq(ps.records_written, 170);
    ck_assert_uint_eq(ps.records_dropped, 830);

    struct sink s = {0};
    ck_assert_uint_eq(shm_drain(seg, sink_fn, &s, 0), 170);
    for (size_t i = 0; i < s.n; i++)
        ck_assert_uint_eq(got_u64(&s.v[i], 0), i);
    struct shm_stats st;
    shm_get_stats(seg, &st);
    ck_assert_uint_eq(st.dropped, 830);

    /* Drained: writing works again, across the wrap (PAD record). */
    for (int i = 0; i < 300; i++) {
        ck_assert_int_eq(obsd_span(h, k, 5000 + (uint64_t)i, 0), OBSD_OK);
        if (i % 100 == 99)
            shm_drain(seg, sink_fn, &s, 0);
    }
    shm_drain(seg, sink_fn, &s, 0);
    ck_assert_uint_eq(s.n, 470);
    for (size_t i = 170; i < s.n; i++)
        ck_assert_uint_eq(got_u64(&s.v[i], 0), 5000 + (i - 170));
    shm_get_stats(seg, &st);
    ck_assert_uint_eq(st.rejected, 0);
    sink_free(&s);
    obsd_close(h);
    shm_segment_close(seg, true);
}
END_TEST

START_TEST(block_mode_times_out_and_counts)
{
    struct shm_config cfg;
    shm_config_defaults(&cfg, test_seg_name("blockto"));
    cfg.ring_bytes = 4096;
    cfg.full_policy = SHM_FULL_BLOCK;
    cfg.block_timeout_ns = 2 * 1000 * 1000;
    struct shm_segment *seg = test_segment(&cfg);
    obsd_t *h = obsd_open(cfg.name);
    obsd_key_t k = obsd_key(h, "s");
    for (int i = 0; i < 170; i++)
        ck_assert_int_eq(obsd_span(h, k, 1, 2), OBSD_OK);
    uint64_t t0 = obsd_now();
    ck_assert_int_eq(obsd_span(h, k, 1, 2), OBSD_ETIMEDOUT);
    /* It waited (at least the timeout) before giving up. */
    ck_assert_uint_ge(obsd_now() - t0, cfg.block_timeout_ns);
    ck_assert_ptr_nonnull(strstr(obsd_last_error(), "ring full"));
    struct shm_stats st;
    shm_get_stats(seg, &st);
    ck_assert_uint_eq(st.dropped, 1);
    obsd_close(h);
    shm_segment_close(seg, true);
}
END_TEST

START_TEST(keys_and_pending_records_survive_a_collector_restart)
{
    struct shm_config cfg;
    shm_config_defaults(&cfg, test_seg_name("restart"));
    cfg.ring_bytes = 64 << 10;
    struct shm_segment *seg = test_segment(&cfg);
    obsd_t *h = obsd_open(cfg.name);
    obsd_key_t k = obsd_key(h, "before.restart");
    ck_assert_int_eq(obsd_span(h, k, 1, 2), OBSD_OK);
    struct sink s = {0};
    ck_assert_uint_eq(shm_drain(seg, sink_fn, &s, 0), 1);
    ck_assert_int_eq(obsd_span(h, k, 3, 4), OBSD_OK);
    shm_segment_close(seg, false);  /* collector gone, key name already read */

    /* Written while no collector runs: kept in the ring; drops still counted. */
    ck_assert_int_eq(obsd_span(h, k, 5, 6), OBSD_OK);
    seg = test_segment(&cfg);
    ck_assert_uint_eq(shm_drain(seg, sink_fn, &s, 0), 2);
    ck_assert_uint_eq(got_u64(&s.v[1], 0), 3);
    ck_assert_uint_eq(got_u64(&s.v[2], 0), 5);
    ck_assert_str_eq(shm_key_name(seg, s.v[2].key), "before.restart");

    /* Another layout is refused by name. */
    shm_segment_close(seg, false);
    struct shm_config other = cfg;
    other.ring_bytes = 128 << 10;
    char err[256];
    ck_assert_ptr_null(shm_segment_create(&other, err, sizeof err));
    ck_assert_ptr_nonnull(strstr(err, "another layout"));
    /* So is another key table size, naming the one the segment has. */
    other = cfg;
    other.keys_count = 512;
    ck_assert_ptr_null(shm_segment_create(&other, err, sizeof err));
    ck_assert_ptr_nonnull(strstr(err, "another layout"));
    ck_assert_ptr_nonnull(strstr(err, "max_keys 16384"));
    seg = test_segment(&cfg);
    sink_free(&s);
    obsd_close(h);
    shm_segment_close(seg, true);
}
END_TEST

/* The key table holds the collector's keys_count names (header), not a
 * compile-time count: the next name is refused with a message naming the size
 * and the setting, and the names that fit keep working. */
START_TEST(key_table_size_is_the_headers)
{
    struct shm_config cfg;
    shm_config_defaults(&cfg, test_seg_name("keys"));
    cfg.ring_bytes = 64 << 10;
    cfg.keys_count = SEG_KEYS_MIN;
    struct shm_segment *seg = test_segment(&cfg);
    obsd_t *h = obsd_open(cfg.name);
    ck_assert_ptr_nonnull(h);
    obsd_key_t keys[SEG_KEYS_MIN];
    for (uint32_t i = 0; i < SEG_KEYS_MIN; i++) {
        char name[32];
        snprintf(name, sizeof name, "small.%u", i);
        keys[i] = obsd_key(h, name);
        ck_assert_msg(keys[i] == i + 1, "key %u: %s", i, obsd_last_error());
    }
    ck_assert_uint_eq(obsd_key(h, "one.too.many"), 0);
    char want[200];
    snprintf(want, sizeof want, "segment obsd.%s: key table full (%u names; the collector's "
             "max_keys in obsd.conf sets the size)", cfg.name, SEG_KEYS_MIN);
    ck_assert_str_eq(obsd_last_error(), want);
    /* An interned name is still found; a key past the table is refused. */
    ck_assert_uint_eq(obsd_key(h, "small.7"), keys[7]);
    ck_assert_int_eq(obsd_span(h, SEG_KEYS_MIN + 1, 1, 2), OBSD_EINVAL);
    ck_assert_int_eq(obsd_counter_add(h, SEG_KEYS_MIN + 1, 1), OBSD_EINVAL);

    struct sink s = {0};
    for (uint32_t i = 0; i < SEG_KEYS_MIN; i++)
        ck_assert_int_eq(obsd_span(h, keys[i], 0, i), OBSD_OK);
    ck_assert_uint_eq(shm_drain(seg, sink_fn, &s, 0), SEG_KEYS_MIN);
    for (uint32_t i = 0; i < SEG_KEYS_MIN; i++) {
        char name[32];
        snprintf(name, sizeof name, "small.%u", i);
        ck_assert_str_eq(shm_key_name(seg, s.v[i].key), name);
        ck_assert_uint_eq(got_u64(&s.v[i], 1), i);  /* end_ns */
    }
    ck_assert_ptr_null(shm_key_name(seg, SEG_KEYS_MIN + 1));
    sink_free(&s);
    obsd_close(h);
    shm_segment_close(seg, true);

    /* The maximum is accepted (the file is sparse: 128 MiB of key table
     * costs only the pages written); one past either end is refused. */
    cfg.name = test_seg_name("keys");
    cfg.keys_count = SEG_KEYS_MAX;
    seg = test_segment(&cfg);
    h = obsd_open(cfg.name);
    ck_assert_ptr_nonnull(h);
    obsd_key_t k = obsd_key(h, "big.table");
    ck_assert_uint_eq(k, 1);
    ck_assert_int_eq(obsd_span(h, SEG_KEYS_MAX, 1, 2), OBSD_OK);  /* in range; unknown to the collector */
    obsd_close(h);
    shm_segment_close(seg, true);
    const uint32_t bad[] = {0, SEG_KEYS_MIN - 1, SEG_KEYS_MAX + 1};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char err[256];
        cfg.name = test_seg_name("keys");
        cfg.keys_count = bad[i];
        ck_assert_ptr_null(shm_segment_create(&cfg, err, sizeof err));
        char want_range[80];
        snprintf(want_range, sizeof want_range, "keys_count %u out of range %u..%u", bad[i],
                 SEG_KEYS_MIN, SEG_KEYS_MAX);
        ck_assert_msg(strstr(err, want_range), "%s", err);
    }
}
END_TEST

START_TEST(keys_are_shared_by_handles_and_processes)
{
    struct shm_config cfg;
    shm_config_defaults(&cfg, test_seg_name("keys"));
    cfg.ring_bytes = 64 << 10;
    struct shm_segment *seg = test_segment(&cfg);
    obsd_t *a = obsd_open(cfg.name), *b = obsd_open(cfg.name);
    obsd_key_t ka = obsd_key(a, "shared.name");
    ck_assert_uint_eq(obsd_key(b, "shared.name"), ka);
    pid_t pid = fork();
    if (pid == 0) {
        obsd_t *c = obsd_open(cfg.name);
        _exit(obsd_key(c, "shared.name") == ka && obsd_key(c, "child.only") != 0 ? 0 : 1);
    }
    int status;
    waitpid(pid, &status, 0);
    ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    obsd_key_t kc = obsd_key(a, "child.only");
    ck_assert_uint_ne(kc, ka);
    ck_assert_str_eq(shm_key_name(seg, kc), "child.only");
    obsd_close(a);
    obsd_close(b);
    shm_segment_close(seg, true);
}
END_TEST

static void *write_one_and_exit(void *arg)
{
    obsd_t *h = arg;
    obsd_span(h, obsd_key(h, "t"), 1, 2);
    return NULL;
}

START_TEST(thread_exit_releases_its_slot)
{
    struct shm_config cfg;
    shm_config_defaults(&cfg, test_seg_name("slots"));
    cfg.ring_bytes = 4096;
    cfg.max_producers = 2;
    struct shm_segment *seg = test_segment(&cfg);
    obsd_t *h = obsd_open(cfg.name);
    struct sink s = {0};
    /* Many more threads than slots, one after the other: each exit frees one. */
    for (int i = 0; i < 20; i++) {
        pthread_t t;
        pthread_create(&t, NULL, write_one_and_exit, h);
        pthread_join(t, NULL);
        shm_drain(seg, sink_fn, &s, 0);
    }
    ck_assert_uint_eq(s.n, 20);
    struct shm_stats st;
    shm_get_stats(seg, &st);
    ck_assert_uint_eq(st.producers, 0);
    ck_assert_uint_eq(st.dropped, 0);

    /* With both slots held, a third writer gets OBSD_ENOSLOT, counted. */
    ck_assert_int_eq(obsd_span(h, obsd_key(h, "t"), 1, 2), OBSD_OK);
    obsd_t *h2 = obsd_open(cfg.name);
    ck_assert_int_eq(obsd_span(h2, obsd_key(h2, "t"), 1, 2), OBSD_OK);
    obsd_t *h3 = obsd_open(cfg.name);
    ck_assert_int_eq(obsd_span(h3, obsd_key(h3, "t"), 1, 2), OBSD_ENOSLOT);
    ck_assert_ptr_nonnull(strstr(obsd_last_error(), "ring slots"));
    shm_get_stats(seg, &st);
    ck_assert_uint_eq(st.dropped, 1);
    obsd_thread_release(h2);
    shm_drain(seg, sink_fn, &s, 0);
    /* ENOSLOT retries only after a while; a fresh handle claims at once. */
    obsd_close(h3);
    h3 = obsd_open(cfg.name);
    ck_assert_int_eq(obsd_span(h3, obsd_key(h3, "t"), 1, 2), OBSD_OK);
    sink_free(&s);
    obsd_close(h);
    obsd_close(h2);
    obsd_close(h3);
    shm_segment_close(seg, true);
}
END_TEST

START_TEST(abandoned_fragmented_message_is_never_delivered)
{
    struct shm_config cfg;
    shm_config_defaults(&cfg, test_seg_name("abandon"));
    cfg.ring_bytes = 64 << 10;
    struct shm_segment *seg = test_segment(&cfg);
    obsd_t *h = obsd_open(cfg.name);
    /* No collector running: the 1 MiB text fills the ring, then gives up. */
    shm_set_collector_running(seg, false);
    size_t n = 1 << 20;
    char *text = malloc(n);
    memset(text, 'q', n);
    ck_assert_int_eq(obsd_request_complete(h, 1, 1, "stop", text, n), OBSD_DROPPED);
    shm_set_collector_running(seg, true);
    struct obsd_producer_stats ps;
    obsd_stats(h, &ps);
    ck_assert_uint_eq(ps.records_dropped, 1);
    ck_assert_uint_eq(ps.records_written, 0);

    struct sink s = {0};
    ck_assert_uint_eq(shm_drain(seg, sink_fn, &s, 0), 0);
    ck_assert_int_eq(obsd_request_chunk(h, 1, 2), OBSD_OK);
    ck_assert_uint_eq(shm_drain(seg, sink_fn, &s, 0), 1);
    ck_assert_int_eq(s.v[0].type, OBSD_REC_REQ_CHUNK);
    struct shm_stats st;
    shm_get_stats(seg, &st);
    ck_assert_uint_eq(st.discarded, 1);
    ck_assert_uint_eq(st.rejected, 0);
    ck_assert_uint_eq(st.records, 1);

    /* A text that fits the free space is written whole without a reader. */
    ck_assert_int_eq(obsd_request_complete(h, 2, 3, "stop", text, 40000), OBSD_OK);
    ck_assert_uint_eq(shm_drain(seg, sink_fn, &s, 0), 1);
    ck_assert_uint_eq(s.v[1].len, sizeof(struct obsd_pl_req_complete) + 4 + 40000);
    free(text);
    sink_free(&s);
    obsd_close(h);
    shm_segment_close(seg, true);
}
END_TEST

START_TEST(config_errors_name_the_setting)
{
    struct shm_config cfg;
    shm_config_defaults(&cfg, test_seg_name("cfg"));
    char err[256];
    cfg.ring_bytes = 5000;
    ck_assert_ptr_null(shm_segment_create(&cfg, err, sizeof err));
    ck_assert_ptr_nonnull(strstr(err, "ring_bytes 5000"));
    shm_config_defaults(&cfg, "bad/name");
    ck_assert_ptr_null(shm_segment_create(&cfg, err, sizeof err));
    ck_assert_ptr_nonnull(strstr(err, "bad segment name"));
}
END_TEST

START_TEST(group_mode_is_0660_with_the_group)
{
    struct shm_config cfg;
    shm_config_defaults(&cfg, test_seg_name("group"));
    cfg.ring_bytes = 4096;
    struct shm_segment *seg = test_segment(&cfg);
    char path[128];
    snprintf(path, sizeof path, "/dev/shm/obsd.%s", cfg.name);
    struct stat st;
    ck_assert_int_eq(stat(path, &st), 0);
    ck_assert_uint_eq(st.st_mode & 0777, 0600);
    shm_segment_close(seg, true);

    cfg.name = test_seg_name("group");
    cfg.group = getgid();
    seg = test_segment(&cfg);
    snprintf(path, sizeof path, "/dev/shm/obsd.%s", cfg.name);
    ck_assert_int_eq(stat(path, &st), 0);
    ck_assert_uint_eq(st.st_mode & 0777, 0660);
    ck_assert_uint_eq(st.st_gid, getgid());
    shm_segment_close(seg, true);
}
END_TEST

START_TEST(a_forked_child_writes_into_its_own_ring)
{
    struct shm_config cfg;
    shm_config_defaults(&cfg, test_seg_name("fork"));
    cfg.ring_bytes = 4096;
    struct shm_segment *seg = test_segment(&cfg);
    obsd_t *h = obsd_open(cfg.name);
    obsd_key_t k = obsd_key(h, "f");
    ck_assert_int_eq(obsd_span(h, k, 1, 0), OBSD_OK);
    pid_t pid = fork();
    if (pid == 0) {
        int rc = obsd_span(h, k, 100, 0);  /* same handle, new process */
        obsd_close(h);                      /* must not release the parent's ring */
        _exit(rc == OBSD_OK ? 0 : 1);
    }
    int status;
    waitpid(pid, &status, 0);
    ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    ck_assert_int_eq(obsd_span(h, k, 2, 0), OBSD_OK);
    struct sink s = {0};
    ck_assert_uint_eq(shm_drain(seg, sink_fn, &s, 0), 3);
    int parent = 0, child = 0;
    uint64_t last = 0;
    for (size_t i = 0; i < s.n; i++) {
        if (s.v[i].pid == getpid()) {
            ck_assert_uint_eq(got_u64(&s.v[i], 0), ++last);
            parent++;
        } else {
            ck_assert_int_eq(s.v[i].pid, pid);
            ck_assert_uint_eq(got_u64(&s.v[i], 0), 100);
            child++;
        }
    }
    ck_assert_int_eq(parent, 2);
    ck_assert_int_eq(child, 1);
    struct shm_stats st;
    shm_get_stats(seg, &st);
    ck_assert_uint_eq(st.producers, 1);  /* the child's ring was released and freed */
    sink_free(&s);
    obsd_close(h);
    shm_segment_close(seg, true);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("shm_basic");
    TCase *tc = tcase_create("basic");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, open_missing_segment_names_it);
    tcase_add_test(tc, abi_mismatch_is_refused_naming_both_versions);
    tcase_add_test(tc, every_record_type_round_trips);
    tcase_add_test(tc, bad_arguments_are_refused_and_counted);
    tcase_add_test(tc, full_ring_drops_exactly_and_returns);
    tcase_add_test(tc, full_dev_shm_refuses_a_ring_instead_of_sigbus);
    tcase_add_test(tc, block_mode_times_out_and_counts);
    tcase_add_test(tc, keys_and_pending_records_survive_a_collector_restart);
    tcase_add_test(tc, key_table_size_is_the_headers);
    tcase_add_test(tc, keys_are_shared_by_handles_and_processes);
    tcase_add_test(tc, thread_exit_releases_its_slot);
    tcase_add_test(tc, abandoned_fragmented_message_is_never_delivered);
    tcase_add_test(tc, config_errors_name_the_setting);
    tcase_add_test(tc, group_mode_is_0660_with_the_group);
    tcase_add_test(tc, a_forked_child_writes_into_its_own_ring);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return test_run_suite(suite());
}
