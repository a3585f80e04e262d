/*
 * test_tokenizer_ref.c: every text of the visible corpus, and the edge corpus
 * (megabyte runs of spaces, digits, newlines, CJK; added tokens; NFD; odd
 * whitespace), gives exactly the count, hash and ids that Hugging Face
 * tokenizers gives, for the three real tokenizers in tests/data.
 */
#include <jansson.h>

#include "tok_testutil.h"
#include "tokenq/tokenizer.h"

static const char *const NAMES[] = {"llama3", "qwen3", "deepseek_v3"};

static void check_corpus(const tokenizer *tok, const char *name, const char *corpus_file, const char *ref_file,
                         unsigned threads)
{
    char *cbuf = tt_read(tt_path(corpus_file), NULL), *rbuf = tt_read(tt_path(ref_file), NULL);
    char **clines, **rlines;
    size_t nc = tt_lines(cbuf, &clines), nr = tt_lines(rbuf, &rlines);
    ck_assert_uint_eq(nc, nr);
    ck_assert_uint_gt(nc, 0);
    const char **texts = malloc(nc * sizeof *texts);
    size_t *lens = malloc(nc * sizeof *lens);
    json_t **objs = malloc(nc * sizeof *objs);
    for (size_t i = 0; i < nc; i++) {
        objs[i] = json_loads(clines[i], JSON_ALLOW_NUL, NULL);
        ck_assert_ptr_nonnull(objs[i]);
        json_t *t = json_object_get(objs[i], "text");
        texts[i] = json_string_value(t);
        lens[i] = json_string_length(t);
    }
    tokenizer_ids *outs = calloc(nc, sizeof *outs);
    int64_t *counts = calloc(nc, sizeof *counts);
    ck_assert_int_eq(tokenizer_encode_batch(tok, nc, texts, lens, outs, threads), 0);
    ck_assert_int_eq(tokenizer_count_batch(tok, nc, texts, lens, counts, threads), 0);
    size_t with_ids = 0;
    for (size_t i = 0; i < nc; i++) {
        json_t *r = json_loads(rlines[i], 0, NULL);
        ck_assert_ptr_nonnull(r);
        size_t want = (size_t)json_integer_value(json_object_get(r, "count"));
        char hash[17];
        snprintf(hash, sizeof hash, "%016llx", (unsigned long long)tokenizer_fnv1a64(outs[i].ids, outs[i].len));
        ck_assert_msg(outs[i].len == want, "%s %s text %zu: %zu ids, reference %zu", name, corpus_file, i,
                      outs[i].len, want);
        ck_assert_msg(strcmp(hash, json_string_value(json_object_get(r, "fnv1a64"))) == 0,
                      "%s %s text %zu: hash %s differs from the reference", name, corpus_file, i, hash);
        ck_assert_int_eq(counts[i], (int64_t)want);
        json_t *ids = json_object_get(r, "ids");
        if (ids) {
            with_ids++;
            ck_assert_uint_eq(json_array_size(ids), outs[i].len);
            for (size_t k = 0; k < outs[i].len; k++)
                ck_assert_msg(outs[i].ids[k] == (uint32_t)json_integer_value(json_array_get(ids, k)),
                              "%s text %zu id %zu", name, i, k);
        }
        json_decref(r);
        tokenizer_ids_free(&outs[i]);
        json_decref(objs[i]);
    }
    if (strstr(corpus_file, "visible"))
        ck_assert_uint_eq(with_ids, 400);
    free(outs);
    free(counts);
    free(objs);
    free(texts);
    free(lens);
    free(clines);
    free(rlines);
    free(cbuf);
    free(rbuf);
}

START_TEST(reference_output)
{
    const char *name = NAMES[_i];
    char file[256], err[512];
    snprintf(file, sizeof file, "%s.tokenizer.json.gz", name);
    tokenizer *tok = tokenizer_load_file(tt_path(file), err, sizeof err);
    ck_assert_msg(tok != NULL, "%s", err);
    char ref[256];
    snprintf(ref, sizeof ref, "visible.%s.ref.jsonl.gz", name);
    check_corpus(tok, name, "visible.corpus.jsonl.gz", ref, 1);
    check_corpus(tok, name, "visible.corpus.jsonl.gz", ref, 2);
    snprintf(ref, sizeof ref, "tokenizer_edge.%s.ref.jsonl.gz", name);
    check_corpus(tok, name, "tokenizer_edge.corpus.jsonl.gz", ref, 2);
    tokenizer_free(tok);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("tokenizer_ref");
    TCase *tc = tcase_create("reference");
    tcase_add_loop_test(tc, reference_output, 0, 3);
    suite_add_tcase(s, tc);
    SRunner *r = srunner_create(s);
    srunner_run_all(r, CK_NORMAL);
    int failed = srunner_ntests_failed(r);
    srunner_free(r);
    return failed ? 1 : 0;
}
