/*
 * test_tokenq.c: the token batch queue. Live slices and the drain count every
 * pushed text exactly once, results arrive through poll on the caller's
 * thread, failures put items back, timeouts leave them pending, and text past
 * the memory cap spills to a file and comes back intact.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <unistd.h>

#include "tok_testutil.h"
#include "tokenq/tokenq.h"

/* The "count" of a text is a checksum of its bytes plus its length, so a
 * result proves the text arrived intact. */
static uint64_t digest(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (uint8_t)s[i]) * 1099511628211ull;
    return (h & 0xFFFF) + n;
}

typedef struct {
    atomic_int calls;
    atomic_int fail_first; /* fail this many calls on text "FAIL..." */
    bool always_fail;
    unsigned sleep_us;
} fake;

static int64_t fake_count(void *ctx, const char *text, size_t len)
{
    fake *f = ctx;
    atomic_fetch_add(&f->calls, 1);
    if (f->sleep_us)
        usleep(f->sleep_us);
    if (len >= 4 && memcmp(text, "FAIL", 4) == 0) {
        if (f->always_fail)
            return -EIO;
        if (atomic_fetch_sub(&f->fail_first, 1) > 0)
            return -EIO;
    }
    return (int64_t)digest(text, len);
}

#define N 3000
static char texts[N][64];
static size_t lens[N];
static uint64_t got[N];
static int seen[N];

static void make(void)
{
    for (int i = 0; i < N; i++) {
        lens[i] = (size_t)snprintf(texts[i], sizeof texts[i], "%stext number %d %s", i == 5 ? "FAIL " : "", i,
                                   i % 3 ? "abc" : "a longer tail of words");
        got[i] = 0;
        seen[i] = 0;
    }
}

static void on_result(void *ctx, uint64_t target, uint64_t count)
{
    (void)ctx;
    ck_assert_uint_lt(target, N);
    got[target] = count;
    seen[target]++;
}

static void check_all_once(void)
{
    for (int i = 0; i < N; i++) {
        ck_assert_msg(seen[i] == 1, "target %d delivered %d times", i, seen[i]);
        ck_assert_uint_eq(got[i], digest(texts[i], lens[i]));
    }
}

START_TEST(live_lane_counts_everything_once)
{
    make();
    fake f = {0};
    atomic_init(&f.fail_first, 2); /* target 5 fails twice in live slices */
    tokenq_config cfg = {.count = fake_count, .count_ctx = &f, .live_workers = 2};
    tokenq *q = tokenq_create(&cfg);
    ck_assert_ptr_nonnull(q);
    for (int i = 0; i < N; i++)
        ck_assert_int_eq(tokenq_push(q, texts[i], lens[i], (uint64_t)i), 0);
    ck_assert_uint_eq(tokenq_pending(q), N);
    size_t delivered = 0;
    for (int round = 0; round < 100000 && tokenq_pending(q) > 0; round++) {
        size_t n = tokenq_live_flush(q);
        ck_assert_uint_le(n, TOKENQ_SLICE_MAX);
        delivered += tokenq_poll_results(q, on_result, NULL);
        usleep(200);
    }
    delivered += tokenq_poll_results(q, on_result, NULL);
    ck_assert_uint_eq(tokenq_pending(q), 0);
    ck_assert_uint_eq(delivered, N);
    check_all_once();
    ck_assert_int_eq(atomic_load(&f.calls), N + 2);
    tokenq_destroy(q);
}
END_TEST

START_TEST(zero_live_workers_defers_everything_to_the_drain)
{
    make();
    fake f = {0};
    tokenq_config cfg = {.count = fake_count, .count_ctx = &f, .live_workers = 0};
    tokenq *q = tokenq_create(&cfg);
    for (int i = 0; i < N; i++)
        ck_assert_int_eq(tokenq_push(q, texts[i], lens[i], (uint64_t)i), 0);
    ck_assert_uint_eq(tokenq_live_flush(q), 0);
    ck_assert_uint_eq(tokenq_poll_results(q, on_result, NULL), 0);
    ck_assert_int_eq(atomic_load(&f.calls), 0);
    ck_assert_int_eq(tokenq_drain(q, 0), 0);
    ck_assert_uint_eq(tokenq_pending(q), 0);
    ck_assert_uint_eq(tokenq_poll_results(q, on_result, NULL), N);
    check_all_once();
    tokenq_destroy(q);
}
END_TEST

START_TEST(drain_failure_leaves_items_pending)
{
    make();
    fake f = {.always_fail = true};
    tokenq_config cfg = {.count = fake_count, .count_ctx = &f};
    tokenq *q = tokenq_create(&cfg);
    for (int i = 0; i < N; i++)
        ck_assert_int_eq(tokenq_push(q, texts[i], lens[i], (uint64_t)i), 0);
    /* the failing item stops the drain; everything not counted stays */
    ck_assert_int_eq(tokenq_drain(q, 0), -1);
    ck_assert_int_eq(errno, EIO);
    size_t n = tokenq_poll_results(q, on_result, NULL);
    ck_assert_uint_eq(tokenq_pending(q), N - n);
    ck_assert_uint_ge(tokenq_pending(q), 1);
    ck_assert_int_eq(seen[5], 0);
    /* once the cause is gone, a second drain finishes */
    f.always_fail = false;
    atomic_store(&f.fail_first, 0);
    ck_assert_int_eq(tokenq_drain(q, 0), 0);
    tokenq_poll_results(q, on_result, NULL);
    check_all_once();
    tokenq_destroy(q);
}
END_TEST

START_TEST(drain_timeout_leaves_the_rest_pending)
{
    make();
    fake f = {.sleep_us = 2000};
    tokenq_config cfg = {.count = fake_count, .count_ctx = &f};
    tokenq *q = tokenq_create(&cfg);
    for (int i = 0; i < 400; i++)
        ck_assert_int_eq(tokenq_push(q, texts[i + 10], lens[i + 10], (uint64_t)i + 10), 0);
    ck_assert_int_eq(tokenq_drain(q, 5 * 1000000ull), -1);
    ck_assert_int_eq(errno, ETIMEDOUT);
    size_t n = tokenq_poll_results(q, on_result, NULL);
    ck_assert_uint_gt(tokenq_pending(q), 0);
    ck_assert_uint_eq(tokenq_pending(q) + n, 400);
    f.sleep_us = 0;
    ck_assert_int_eq(tokenq_drain(q, 0), 0);
    ck_assert_uint_eq(n + tokenq_poll_results(q, on_result, NULL), 400);
    tokenq_destroy(q);
}
END_TEST

START_TEST(text_past_the_memory_cap_spills_and_comes_back)
{
    make();
    char dir[] = "/tmp/obsd-tokenq-test.XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    fake f = {0};
    tokenq_config cfg = {.count = fake_count, .count_ctx = &f, .live_workers = 1, .memory_cap = 2000, .spill_dir = dir};
    tokenq *q = tokenq_create(&cfg);
    for (int i = 0; i < N; i++)
        ck_assert_int_eq(tokenq_push(q, texts[i], lens[i], (uint64_t)i), 0);
    ck_assert_uint_gt(tokenq_spilled(q), N - 100);
    /* the spill file is unlinked: the directory stays empty */
    char cmd[128];
    snprintf(cmd, sizeof cmd, "test -z \"$(ls -A %s)\"", dir);
    ck_assert_int_eq(system(cmd), 0);
    tokenq_live_flush(q);
    ck_assert_int_eq(tokenq_drain(q, 0), 0);
    ck_assert_uint_eq(tokenq_spilled(q), 0);
    ck_assert_uint_eq(tokenq_poll_results(q, on_result, NULL), N);
    check_all_once();
    tokenq_destroy(q);
    ck_assert_int_eq(rmdir(dir), 0);
}
END_TEST

START_TEST(with_the_real_tokenizer)
{
    char err[512];
    tokenizer *tok = tokenizer_load_file(tt_path("tokenizer_mini_bytelevel.json"), err, sizeof err);
    ck_assert_msg(tok != NULL, "%s", err);
    make();
    tokenq_config cfg = {.tok = tok, .live_workers = 2};
    tokenq *q = tokenq_create(&cfg);
    for (int i = 0; i < 500; i++)
        ck_assert_int_eq(tokenq_push(q, texts[i], lens[i], (uint64_t)i), 0);
    tokenq_live_flush(q);
    ck_assert_int_eq(tokenq_drain(q, 0), 0);
    ck_assert_uint_eq(tokenq_poll_results(q, on_result, NULL), 500);
    for (int i = 0; i < 500; i++)
        ck_assert_uint_eq(got[i], (uint64_t)tokenizer_count(tok, texts[i], lens[i]));
    tokenq_destroy(q);
    tokenizer_free(tok);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("tokenq");
    TCase *tc = tcase_create("queue");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, live_lane_counts_everything_once);
    tcase_add_test(tc, zero_live_workers_defers_everything_to_the_drain);
    tcase_add_test(tc, drain_failure_leaves_items_pending);
    tcase_add_test(tc, drain_timeout_leaves_the_rest_pending);
    tcase_add_test(tc, text_past_the_memory_cap_spills_and_comes_back);
    tcase_add_test(tc, with_the_real_tokenizer);
    suite_add_tcase(s, tc);
    SRunner *r = srunner_create(s);
    srunner_run_all(r, CK_NORMAL);
    int failed = srunner_ntests_failed(r);
    srunner_free(r);
    return failed ? 1 : 0;
}
