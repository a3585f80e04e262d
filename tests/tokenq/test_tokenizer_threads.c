/*
 * test_tokenizer_threads.c: one loaded tokenizer used from many threads at once
 * (batch forms and direct calls) gives the same ids as a single thread.
 */
#include <pthread.h>

#include "tok_testutil.h"
#include "tokenq/tokenizer.h"

#define NTEXTS 400

static char *texts[NTEXTS];
static size_t lens[NTEXTS];
static tokenizer_ids expected[NTEXTS];
static tokenizer *tok;

static void make_texts(void)
{
    static const char *const words[] = {"Hello", " world", " the", " café", "  ", "\n", "12", "<|x|>", " cafe\xCC\x81",
                                        "it's", " \xE4\xB8\xAD\xE6\x96\x87", "!!", "\xF0\x9F\x98\x80"};
    uint32_t x = 7;
    for (int i = 0; i < NTEXTS; i++) {
        size_t cap = 4096, n = 0;
        char *s = malloc(cap);
        int nw = 1 + i % 97;
        for (int w = 0; w < nw; w++) {
            x = x * 1103515245 + 12345;
            const char *word = words[(x >> 16) % (sizeof words / sizeof *words)];
            size_t l = strlen(word);
            memcpy(s + n, word, l);
            n += l;
        }
        texts[i] = s;
        lens[i] = n;
    }
}

static void setup(void)
{
    char err[512];
    tok = tokenizer_load_file(tt_path("tokenizer_mini_bytelevel.json"), err, sizeof err);
    ck_assert_msg(tok != NULL, "%s", err);
    make_texts();
    for (int i = 0; i < NTEXTS; i++)
        ck_assert_int_eq(tokenizer_encode(tok, texts[i], lens[i], &expected[i]), 0);
}

static void teardown(void)
{
    for (int i = 0; i < NTEXTS; i++) {
        free(texts[i]);
        tokenizer_ids_free(&expected[i]);
    }
    tokenizer_free(tok);
}

START_TEST(batch_on_many_threads_equals_one_thread)
{
    tokenizer_ids outs[NTEXTS] = {0};
    int64_t counts[NTEXTS];
    ck_assert_int_eq(tokenizer_encode_batch(tok, NTEXTS, (const char *const *)texts, lens, outs, 4), 0);
    ck_assert_int_eq(tokenizer_count_batch(tok, NTEXTS, (const char *const *)texts, lens, counts, 3), 0);
    for (int i = 0; i < NTEXTS; i++) {
        ck_assert_uint_eq(outs[i].len, expected[i].len);
        ck_assert_int_eq(counts[i], (int64_t)expected[i].len);
        ck_assert_mem_eq(outs[i].ids, expected[i].ids, outs[i].len * sizeof(uint32_t));
        tokenizer_ids_free(&outs[i]);
    }
}
END_TEST

static void *worker(void *arg)
{
    long k = (long)arg, bad = 0;
    tokenizer_ids v = {0};
    for (int r = 0; r < 3; r++)
        for (int i = (int)k; i < NTEXTS; i += 2) {
            if (tokenizer_encode(tok, texts[i], lens[i], &v) != 0 || v.len != expected[i].len ||
                memcmp(v.ids, expected[i].ids, v.len * sizeof(uint32_t)) != 0)
                bad++;
            if (tokenizer_count(tok, texts[i], lens[i]) != (int64_t)expected[i].len)
                bad++;
        }
    tokenizer_ids_free(&v);
    return (void *)bad;
}

START_TEST(direct_calls_from_threads)
{
    pthread_t th[4];
    for (long i = 0; i < 4; i++)
        ck_assert_int_eq(pthread_create(&th[i], NULL, worker, (void *)(i % 2)), 0);
    for (int i = 0; i < 4; i++) {
        void *bad;
        pthread_join(th[i], &bad);
        ck_assert_int_eq((long)bad, 0);
    }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("tokenizer_threads");
    TCase *tc = tcase_create("threads");
    tcase_set_timeout(tc, 120);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, batch_on_many_threads_equals_one_thread);
    tcase_add_test(tc, direct_calls_from_threads);
    suite_add_tcase(s, tc);
    SRunner *r = srunner_create(s);
    srunner_run_all(r, CK_NORMAL);
    int failed = srunner_ntests_failed(r);
    srunner_free(r);
    return failed ? 1 : 0;
}
