/*
 * test_shm_kill: a producer process killed with SIGKILL while it writes, 200
 * times over. The reader never sees a partial or corrupt record (spans carry
 * a checkable payload, fragmented texts a checkable pattern), everything the
 * producer published before it died is read, and its slot is freed.
 */
#include <signal.h>
#include <sys/wait.h>
#include <time.h>

#include "shm_test.h"

#define TAG 0x0bad0bad00000000ull
#define TEXT_BYTES 40000  /* three fragments in a 64 KiB ring */

/* 200 kills. Under TSan a fork costs ~250 ms and TSan cannot see across
 * processes anyway, so that build kills 40 times to stay fast. */
#if defined(__SANITIZE_THREAD__)
#define ROUNDS 40
#else
#define ROUNDS 200
#endif

static void fill(char *p, uint64_t id)
{
    for (size_t i = 0; i < TEXT_BYTES; i++)
        p[i] = (char)('a' + (id + i) % 26);
}

static void child(const char *name)
{
    obsd_t *h = obsd_open(name);
    if (!h)
        _exit(3);
    obsd_key_t k = obsd_key(h, "kill.span");
    static char text[TEXT_BYTES];
    for (uint64_t i = 0;; i++) {
        obsd_span(h, k, i, i ^ TAG);
        if (i % 64 == 63) {
            fill(text, i);
            obsd_request_error(h, i, i, text, TEXT_BYTES);
        }
    }
}

START_TEST(sigkill_mid_write_never_yields_a_partial_record)
{
    struct shm_config cfg;
    shm_config_defaults(&cfg, test_seg_name("kill"));
    cfg.ring_bytes = 64 << 10;
    cfg.max_producers = 4;
    /* Block mode: the producer waits for the reader instead of dropping, so
     * every sequence number must arrive. */
    cfg.full_policy = SHM_FULL_BLOCK;
    cfg.block_timeout_ns = 20ull * 1000 * 1000 * 1000;
    struct shm_segment *seg = test_segment(&cfg);
    unsigned seed = 12345;
    char *want = malloc(TEXT_BYTES);
    uint64_t total_spans = 0, total_texts = 0;
    for (int round = 0; round < ROUNDS; round++) {
        pid_t pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0)
            child(cfg.name);
        struct sink s = {.keep_payloads = true};
        /* Kill it while it writes: once its first records are in, after a
         * random further 0..2 ms of draining. */
        uint64_t deadline = obsd_now() + 10ull * 1000 * 1000 * 1000;
        while (s.n == 0 && obsd_now() < deadline)
            shm_drain(seg, sink_fn, &s, 0);
        ck_assert_uint_gt(s.n, 0);
        uint64_t until = obsd_now() + (uint64_t)(rand_r(&seed) % 2000) * 1000;
        while (obsd_now() < until)
            shm_drain(seg, sink_fn, &s, 0);
        ck_assert_int_eq(kill(pid, SIGKILL), 0);
        int status;
        ck_assert_int_eq(waitpid(pid, &status, 0), pid);
        ck_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
        shm_producer_exited(seg, pid, sink_fn, &s);

        uint64_t next = 0;
        for (size_t i = 0; i < s.n; i++) {
            struct got *g = &s.v[i];
            ck_assert_int_eq(g->pid, pid);
            if (g->type == OBSD_REC_SPAN) {
                ck_assert_uint_eq(g->len, 16);
                /* in order, none missing, none torn */
                ck_assert_uint_eq(got_u64(g, 0), next);
                ck_assert_uint_eq(got_u64(g, 1), next ^ TAG);
                next++;
                total_spans++;
            } else {
                ck_assert_int_eq(g->type, OBSD_REC_REQ_ERROR);
                ck_assert_uint_eq(g->len, 16 + TEXT_BYTES);
                uint64_t id = got_u64(g, 0);
                ck_assert_uint_eq(id % 64, 63);
                ck_assert_uint_eq(id, next - 1);  /* right after its span */
                fill(want, id);
                ck_assert(memcmp(g->payload + 16, want, TEXT_BYTES) == 0);
                total_texts++;
            }
        }
        struct shm_stats st;
        shm_get_stats(seg, &st);
        ck_assert_uint_eq(st.rejected, 0);
        ck_assert_uint_eq(st.dropped, 0);
        if (st.producers) {
            struct shm_slot_info si[4];
            size_t n = shm_list_slots(seg, si, 4);
            for (size_t i = 0; i < n && i < 4; i++)
                fprintf(stderr, "round %d child %d: slot %u pid %d tid %d pending %llu dead %d\n", round,
                        (int)pid, si[i].slot, (int)si[i].pid, (int)si[i].tid,
                        (unsigned long long)si[i].pending_bytes, si[i].dead);
        }
        ck_assert_uint_eq(st.producers, 0);     /* slot freed */
        ck_assert_uint_eq(st.bytes_pending, 0); /* everything published was read */
        sink_free(&s);
    }
    /* The runs did write (not all killed before the first record). */
    ck_assert_uint_gt(total_spans, ROUNDS);
    ck_assert_uint_gt(total_texts, 0);
    free(want);
    shm_segment_close(seg, true);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("shm_kill");
    TCase *tc = tcase_create("kill");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, sigkill_mid_write_never_yields_a_partial_record);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return test_run_suite(suite());
}
