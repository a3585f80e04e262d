/*
 * test_tokenizer_unit.c: the tokenizer's features on small tokenizer.json files
 * (expected ids produced by Hugging Face tokenizers): Metaspace with byte
 * fallback, unk fusing and lstrip/rstrip/single_word added tokens; every Split
 * behavior, invert, Digits and subword prefix/suffix; ByteLevel with a prefix
 * space, the GPT-2 regex, NFC and normalized added tokens. Also the lossy
 * UTF-8 rule, tiktoken rank files, and load errors naming the field.
 */
#include <jansson.h>

#include "tok_testutil.h"
#include "tokenq/tokenizer.h"

static tokenizer *load_data(const char *name)
{
    char err[512];
    tokenizer *t = tokenizer_load_file(tt_path(name), err, sizeof err);
    ck_assert_msg(t != NULL, "%s", err);
    return t;
}

static void expect_ids(const tokenizer *tok, const char *text, size_t len, const uint32_t *want, size_t n)
{
    tokenizer_ids v = {0};
    ck_assert_int_eq(tokenizer_encode(tok, text, len, &v), 0);
    ck_assert_msg(v.len == n, "'%.*s': %zu ids, expected %zu", (int)len, text, v.len, n);
    for (size_t i = 0; i < n; i++)
        ck_assert_msg(v.ids[i] == want[i], "'%.*s' id %zu: %u, expected %u", (int)len, text, i, v.ids[i], want[i]);
    ck_assert_int_eq(tokenizer_count(tok, text, len), (int64_t)n);
    tokenizer_ids_free(&v);
}

static const char *const MINI[] = {"meta", "split", "bytelevel"};

START_TEST(mini_tokenizers_match_hugging_face)
{
    char file[128];
    snprintf(file, sizeof file, "tokenizer_mini_%s.json", MINI[_i]);
    tokenizer *tok = load_data(file);
    char *buf = tt_read(tt_path("tokenizer_mini.expected.json"), NULL);
    json_t *root = json_loads(buf, JSON_ALLOW_NUL, NULL);
    ck_assert_ptr_nonnull(root);
    snprintf(file, sizeof file, "mini_%s", MINI[_i]);
    json_t *cases = json_object_get(root, file);
    ck_assert_uint_gt(json_array_size(cases), 5);
    size_t i;
    json_t *c;
    json_array_foreach(cases, i, c) {
        json_t *text = json_object_get(c, "text"), *ids = json_object_get(c, "ids");
        uint32_t want[256];
        size_t n = json_array_size(ids);
        ck_assert_uint_lt(n, 256);
        for (size_t k = 0; k < n; k++)
            want[k] = (uint32_t)json_integer_value(json_array_get(ids, k));
        expect_ids(tok, json_string_value(text), json_string_length(text), want, n);
    }
    json_decref(root);
    free(buf);
    tokenizer_free(tok);
}
END_TEST

static void same_ids(const tokenizer *tok, const char *a, size_t al, const char *b, size_t bl)
{
    tokenizer_ids va = {0}, vb = {0};
    ck_assert_int_eq(tokenizer_encode(tok, a, al, &va), 0);
    ck_assert_int_eq(tokenizer_encode(tok, b, bl, &vb), 0);
    ck_assert_uint_eq(va.len, vb.len);
    ck_assert_uint_gt(va.len, 0);
    ck_assert_mem_eq(va.ids, vb.ids, va.len * sizeof *va.ids);
    tokenizer_ids_free(&va);
    tokenizer_ids_free(&vb);
}

#define S(x) x, sizeof(x) - 1
#define FFFD "\xEF\xBF\xBD"

START_TEST(invalid_utf8_is_replaced_like_from_utf8_lossy)
{
    tokenizer *tok = load_data("tokenizer_mini_bytelevel.json");
    /* a truncated sequence is one U+FFFD (maximal subpart) */
    same_ids(tok, S("a\xE2\x82" "b"), S("a" FFFD "b"));
    same_ids(tok, S("\xF0\x9F\x98x"), S(FFFD "x"));
    /* a surrogate encoding is one U+FFFD per byte */
    same_ids(tok, S("\xED\xA0\x80"), S(FFFD FFFD FFFD));
    /* overlong and out-of-range lead bytes are one U+FFFD each */
    same_ids(tok, S("\xC0\xAF z"), S(FFFD FFFD " z"));
    same_ids(tok, S("\xFF\xFE"), S(FFFD FFFD));
    same_ids(tok, S("ok\x80"), S("ok" FFFD));
    /* arbitrary bytes never fail */
    uint8_t junk[4096];
    uint32_t x = 12345;
    for (size_t i = 0; i < sizeof junk; i++) {
        x = x * 1103515245 + 12345;
        junk[i] = (uint8_t)(x >> 16);
    }
    tokenizer_ids v = {0};
    ck_assert_int_eq(tokenizer_encode(tok, (const char *)junk, sizeof junk, &v), 0);
    ck_assert_int_eq(tokenizer_count(tok, (const char *)junk, sizeof junk), (int64_t)v.len);
    tokenizer_ids_free(&v);
    tokenizer_free(tok);
}
END_TEST

START_TEST(empty_text_has_no_tokens)
{
    tokenizer *tok = load_data("tokenizer_mini_meta.json");
    ck_assert_int_eq(tokenizer_count(tok, "", 0), 0);
    tokenizer_ids v = {0};
    ck_assert_int_eq(tokenizer_encode(tok, "", 0, &v), 0);
    ck_assert_uint_eq(v.len, 0);
    tokenizer_ids_free(&v);
    tokenizer_free(tok);
}
END_TEST

START_TEST(long_runs_are_fast_and_do_not_fail)
{
    /* Megabytes of one character: one piece, merged by the heap; a regex with
     * backtracking over the run must not hit a match limit. */
    tokenizer *tok = load_data("tokenizer_mini_bytelevel.json");
    size_t n = 1u << 20;
    char *s = malloc(n + 1);
    const char fill[] = {' ', '7', 'x', '\n', '!'};
    for (size_t f = 0; f < sizeof fill; f++) {
        memset(s, fill[f], n);
        s[n] = 'a';
        int64_t c = tokenizer_count(tok, s, n + 1);
        ck_assert_msg(c > 0, "run of '%c': %lld", fill[f], (long long)c);
    }
    free(s);
    tokenizer_free(tok);
}
END_TEST

/* A rank file: all bytes, then ab, cd, abcd, bc (in that rank order). */
static char *small_rank_file(size_t *len)
{
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char *out = malloc(256 * 16 + 256);
    size_t o = 0;
    for (int b = 0; b < 256; b++) {
        o += (size_t)sprintf(out + o, "%c%c== %d\n", b64[b >> 2], b64[(b & 3) << 4], b);
    }
    o += (size_t)sprintf(out + o, "YWI= 256\nY2Q= 257\nYWJjZA== 258\nYmM= 259\n");
    *len = o;
    return out;
}

START_TEST(tiktoken_rank_file)
{
    size_t len;
    char *ranks = small_rank_file(&len), err[256];
    tokenizer *tok = tokenizer_load_tiktoken(ranks, len, "cl100k_base", err, sizeof err);
    ck_assert_msg(tok != NULL, "%s", err);
    /* ab (256) merges first, then cd (257), then ab+cd is the token abcd */
    static const uint32_t abcde[] = {258, 'e'};
    expect_ids(tok, S("abcde"), abcde, 2);
    /* cd (257) outranks bc (259); b+cd is not a token */
    static const uint32_t xbcd[] = {'x', 'b', 257};
    expect_ids(tok, S("xbcd"), xbcd, 3);
    /* cl100k pieces: " abcd" then "!!" */
    static const uint32_t sp[] = {' ', 258, '!', '!'};
    expect_ids(tok, S(" abcd!!"), sp, 4);
    ck_assert_uint_eq(tokenizer_vocab_size(tok), 260);
    tokenizer_free(tok);
    tok = tokenizer_load_tiktoken(ranks, len, "o200k_base", err, sizeof err);
    ck_assert_msg(tok != NULL, "%s", err);
    expect_ids(tok, S("abcde"), abcde, 2);
    tokenizer_free(tok);
    /* a caller's pattern: every char alone */
    tok = tokenizer_load_tiktoken(ranks, len, ".", err, sizeof err);
    ck_assert_msg(tok != NULL, "%s", err);
    static const uint32_t single[] = {'a', 'b'};
    expect_ids(tok, S("ab"), single, 2);
    tokenizer_free(tok);
    ck_assert_ptr_null(tokenizer_load_tiktoken(S("!!! 1\n"), "cl100k_base", err, sizeof err));
    ck_assert_ptr_nonnull(strstr(err, "line 1"));
    ck_assert_ptr_null(tokenizer_load_tiktoken(ranks, len, "[unclosed", err, sizeof err));
    ck_assert_ptr_nonnull(strstr(err, "pattern"));
    free(ranks);
}
END_TEST

/* Loads mini_bytelevel with one field replaced; expects failure naming `field`. */
static void refused(const char *pointer_key, const char *sub, json_t *value, const char *field)
{
    char *buf = tt_read(tt_path("tokenizer_mini_bytelevel.json"), NULL);
    json_t *root = json_loads(buf, 0, NULL);
    json_t *obj = sub ? json_object_get(root, sub) : root;
    json_object_set_new(obj, pointer_key, value);
    char *doc = json_dumps(root, 0);
    char err[512] = "";
    tokenizer *t = tokenizer_load_json(doc, strlen(doc), err, sizeof err);
    ck_assert_msg(t == NULL, "loaded despite %s", field);
    ck_assert_msg(strstr(err, field) != NULL, "message '%s' does not name %s", err, field);
    free(doc);
    json_decref(root);
    free(buf);
}

START_TEST(unsupported_fields_fail_at_load_naming_them)
{
    refused("dropout", "model", json_real(0.1), "model.dropout");
    refused("type", "model", json_string("WordPiece"), "model.type");
    refused("frobnicate", "model", json_true(), "model.frobnicate");
    refused("truncation", NULL, json_pack("{s:i}", "max_length", 5), "truncation");
    refused("padding", NULL, json_pack("{s:s}", "strategy", "BatchLongest"), "padding");
    refused("normalizer", NULL, json_pack("{s:s}", "type", "Lowercase"), "normalizer.type");
    refused("normalizer", NULL, json_pack("{s:s,s:[{s:s},{s:s}]}", "type", "Sequence", "normalizers", "type", "NFC", "type", "NFKD"),
            "normalizer.normalizers[1].type");
    refused("pre_tokenizer", NULL, json_pack("{s:s}", "type", "Whitespace"), "pre_tokenizer.type");
    refused("pre_tokenizer", NULL,
            json_pack("{s:s,s:{s:s},s:s,s:b}", "type", "Split", "pattern", "Regex", "[a&&b]", "behavior", "Isolated",
                      "invert", 0),
            "pre_tokenizer.pattern.Regex");
    refused("pre_tokenizer", NULL,
            json_pack("{s:s,s:{s:s},s:s,s:b}", "type", "Split", "pattern", "Regex", "a", "behavior", "Sideways",
                      "invert", 0),
            "pre_tokenizer.behavior");
    refused("merges", "model", json_pack("[s]", "Q Z"), "model.merges[0]");
    refused("unk_token", "model", json_string("<nope>"), "model.unk_token");
    refused("added_tokens", NULL, json_pack("[{s:s,s:s}]", "id", "x", "content", "y"), "added_tokens[0].id");

    char err[512];
    ck_assert_ptr_null(tokenizer_load_json("{not json", 9, err, sizeof err));
    ck_assert_ptr_nonnull(strstr(err, "not valid JSON"));
    ck_assert_ptr_null(tokenizer_load_json("[]", 2, err, sizeof err));
    ck_assert_ptr_null(tokenizer_load_file("/nonexistent/tokenizer.json", err, sizeof err));
    ck_assert_ptr_nonnull(strstr(err, "/nonexistent/tokenizer.json"));
}
END_TEST

START_TEST(fnv1a64_of_the_reference_format)
{
    ck_assert_uint_eq(tokenizer_fnv1a64(NULL, 0), 0xcbf29ce484222325ull);
    uint32_t one = 1;
    /* bytes 01 00 00 00 */
    uint64_t h = 0xcbf29ce484222325ull;
    const uint8_t b[4] = {1, 0, 0, 0};
    for (int i = 0; i < 4; i++)
        h = (h ^ b[i]) * 0x100000001b3ull;
    ck_assert_uint_eq(tokenizer_fnv1a64(&one, 1), h);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("tokenizer_unit");
    TCase *tc = tcase_create("unit");
    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, mini_tokenizers_match_hugging_face, 0, 3);
    tcase_add_test(tc, invalid_utf8_is_replaced_like_from_utf8_lossy);
    tcase_add_test(tc, empty_text_has_no_tokens);
    tcase_add_test(tc, long_runs_are_fast_and_do_not_fail);
    tcase_add_test(tc, tiktoken_rank_file);
    tcase_add_test(tc, unsupported_fields_fail_at_load_naming_them);
    tcase_add_test(tc, fnv1a64_of_the_reference_format);
    suite_add_tcase(s, tc);
    SRunner *r = srunner_create(s);
    srunner_run_all(r, CK_NORMAL);
    int failed = srunner_ntests_failed(r);
    srunner_free(r);
    return failed ? 1 : 0;
}
