/*
 * test_tokenizer_split.c: the fast paths against the plain ones, for the
 * three real tokenizers.
 * - The hand-written matchers of the Llama-3, Qwen3 and DeepSeek-V3 split
 *   patterns (tok_split.c) give the same ids as the PCRE2 path on random
 *   texts drawn from the characters that decide the splits: every Unicode
 *   16.0 category (new ones included), the white space of Oniguruma's \s and
 *   its neighbours, CR/LF, apostrophes and contraction letters, digits of
 *   several scripts, the CJK ranges of DeepSeek's second split and ASCII
 *   punctuation before letters.
 * - The rank-group merge of long pieces gives what rescanning gives, on
 *   concatenated vocabulary entries and long runs of a repeated unit.
 * - \w, \W, \b and \B outside a character class match as the word table
 *   says, in Hugging Face and in tiktoken patterns.
 */
#include "tok_testutil.h"
#include "tokenq/tok_internal.h"

static const char *const NAMES[] = {"llama3", "qwen3", "deepseek_v3"};

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint32_t rnd(uint32_t n)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state % n);
}

/* A code point of general category gc, or of any category if gc < 0
 * (surrogates excepted: they cannot be in UTF-8). */
static uint32_t cp_of_category(int gc)
{
    if (gc == TOK_GC_CS)
        gc = -1;
    for (;;) {
        size_t r = rnd((uint32_t)tok_ucd_gc_nruns);
        if (gc >= 0 && (int)(tok_ucd_gc_runs[r] & 31) != gc)
            continue;
        uint32_t lo = tok_ucd_gc_runs[r] >> 5;
        uint32_t hi = r + 1 < tok_ucd_gc_nruns ? tok_ucd_gc_runs[r + 1] >> 5 : 0x110000;
        uint32_t cp = lo + rnd(hi - lo);
        if (cp < 0xD800 || cp > 0xDFFF)
            return cp;
    }
}

static uint32_t interesting_cp(void)
{
    static const uint32_t SPECIAL[] = {
        ' ',    '\t',   '\n',   '\r',   '\v',    '\f',    0x85,    0xA0,    0x1680,  0x180E,  0x2000,  0x200A,
        0x200B, 0x2028, 0x2029, 0x202F, 0x205F,  0x3000,  0xFEFF,  0x1C,    0,       '\'',    0x2019,  's',
        'S',    't',    'T',    'r',    'R',     'e',     'E',     'v',     'V',     'm',     'M',     'l',
        'L',    'd',    'D',    0x17F,  0x212A,  '0',     '7',     0x663,   0x967,   0xFF15,  0x2163,  0xBD,
        0x4E00, 0x9FA5, 0x9FA6, 0x3040, 0x309F,  0x30A0,  0x30FF,  0x3100,  0x3005,  0x30FC,  0x301,   0x1AC0,
        0xFE0F, 0x200D, 0x1F600, 0x1FAE8, 0x138E5, 0x31350, 0x11F50, 0xE000, 0x10FFFF, 0xFFFE, '.', '-',
        '!',    '~',    '`',    '[',    '\\',    'a',     'Z',     'x',     0xE9,    0x44F,   0x5D0,   0x627};
    unsigned r = rnd(10);
    if (r < 5)
        return SPECIAL[rnd(sizeof SPECIAL / sizeof SPECIAL[0])];
    if (r < 7)
        return 0x20 + rnd(0x5F); /* printable ASCII */
    return cp_of_category(r < 9 ? (int)rnd(TOK_GC_COUNT) : -1);
}

static size_t random_text(uint8_t *buf)
{
    size_t n = 0, len = 1 + rnd(rnd(2) ? 8 : 48);
    for (size_t i = 0; i < len; i++) {
        uint32_t cp = interesting_cp();
        size_t rep = rnd(6) == 0 ? 1 + rnd(5) : 1; /* runs of the same character */
        for (size_t k = 0; k < rep; k++)
            n += tok_utf8_encode(cp, buf + n);
    }
    return n;
}

START_TEST(hand_written_splits_equal_pcre2)
{
    char file[256], err[512];
    snprintf(file, sizeof file, "%s.tokenizer.json.gz", NAMES[_i]);
    tokenizer *fast = tokenizer_load_file(tt_path(file), err, sizeof err);
    ck_assert_msg(fast != NULL, "%s", err);
    tokenizer *slow = tokenizer_load_file(tt_path(file), err, sizeof err);
    ck_assert_msg(slow != NULL, "%s", err);
    slow->regex_only = true;
    size_t known = 0;
    for (size_t i = 0; i < fast->npretoks; i++)
        known += fast->pretoks[i].split_kind != TOK_SPLIT_REGEX;
    ck_assert_uint_eq(known, _i == 2 ? 3 : 1); /* every Split of these files has a matcher */
    tokenizer_ids a = {0}, b = {0};
    uint8_t buf[48 * 6 * 4];
    for (int k = 0; k < 30000; k++) {
        size_t n = random_text(buf);
        ck_assert_int_eq(tokenizer_encode(fast, (const char *)buf, n, &a), 0);
        ck_assert_int_eq(tokenizer_encode(slow, (const char *)buf, n, &b), 0);
        bool same = a.len == b.len && (a.len == 0 || memcmp(a.ids, b.ids, a.len * sizeof *a.ids) == 0);
        if (!same) {
            fprintf(stderr, "%s: text", NAMES[_i]);
            for (size_t j = 0; j < n; j++)
                fprintf(stderr, " %02x", buf[j]);
            fprintf(stderr, "\n");
        }
        ck_assert_msg(same, "%s: hand-written split differs from PCRE2 (%zu vs %zu ids)", NAMES[_i], a.len, b.len);
    }
    tokenizer_ids_free(&a);
    tokenizer_ids_free(&b);
    tokenizer_free(fast);
    tokenizer_free(slow);
}
END_TEST

/* Random vocabulary entries (those that are valid UTF-8) end to end, or a
 * unit of one to four of them repeated, perturbed now and then. */
static size_t vocab_text(const tokenizer *t, uint8_t *buf, size_t cap)
{
    const tok_strmap *v = &t->vocab;
    uint8_t unit[64 * 32]; /* up to 64 entries of up to 32 bytes */
    size_t ul = 0, n = 0;
    bool repeat = rnd(2);
    size_t parts = repeat ? 1 + rnd(4) : 5 + rnd(60);
    while (parts) {
        const tok_slot *sl = &v->slots[rnd(v->mask + 1)];
        if (sl->len == UINT32_MAX || sl->len == 0 || sl->len > 32 ||
            tok_utf8_valid_prefix(v->bytes + sl->off, sl->len) != sl->len)
            continue;
        memcpy(unit + ul, v->bytes + sl->off, sl->len);
        ul += sl->len;
        parts--;
    }
    if (!repeat) {
        memcpy(buf, unit, ul < cap ? ul : cap);
        return ul < cap ? ul : cap;
    }
    size_t times = 10 + rnd(300);
    for (size_t k = 0; k < times && n + ul + 1 <= cap; k++) {
        memcpy(buf + n, unit, ul);
        n += ul;
        if (rnd(50) == 0)
            buf[n++] = (uint8_t)('a' + rnd(26));
    }
    return n;
}

START_TEST(rank_group_merge_equals_rescanning)
{
    char file[256], err[512];
    snprintf(file, sizeof file, "%s.tokenizer.json.gz", NAMES[_i]);
    tokenizer *groups = tokenizer_load_file(tt_path(file), err, sizeof err);
    ck_assert_msg(groups != NULL, "%s", err);
    tokenizer *rescan = tokenizer_load_file(tt_path(file), err, sizeof err);
    ck_assert_msg(rescan != NULL, "%s", err);
    groups->linear_max = 0;
    rescan->linear_max = SIZE_MAX;
    tokenizer_ids a = {0}, b = {0};
    static uint8_t buf[1 << 16];
    for (int k = 0; k < 3000; k++) {
        size_t n = vocab_text(groups, buf, sizeof buf);
        ck_assert_int_eq(tokenizer_encode(groups, (const char *)buf, n, &a), 0);
        ck_assert_int_eq(tokenizer_encode(rescan, (const char *)buf, n, &b), 0);
        bool same = a.len == b.len && (a.len == 0 || memcmp(a.ids, b.ids, a.len * sizeof *a.ids) == 0);
        ck_assert_msg(same, "%s: rank-group merge differs from rescanning on '%.*s' (%zu vs %zu ids)", NAMES[_i],
                      (int)(n < 200 ? n : 200), buf, a.len, b.len);
    }
    tokenizer_ids_free(&a);
    tokenizer_ids_free(&b);
    tokenizer_free(groups);
    tokenizer_free(rescan);
}
END_TEST

/* Merges whose rank order differs from the order the tokens can form in
 * (rank 0 needs the token of rank 1), as in files converted from tiktoken:
 * merging a pair of rank 1 queues one of rank 0, which Hugging Face takes
 * before the next pair of rank 1. Expected ids from Hugging Face. */
START_TEST(rank_group_merge_takes_a_newly_lower_rank_first)
{
    static const char JSON[] =
        "{\"version\":\"1.0\",\"truncation\":null,\"padding\":null,\"added_tokens\":[],\"normalizer\":null,"
        "\"pre_tokenizer\":null,\"post_processor\":null,\"decoder\":null,\"model\":{\"type\":\"BPE\","
        "\"dropout\":null,\"unk_token\":null,\"continuing_subword_prefix\":null,\"end_of_word_suffix\":null,"
        "\"fuse_unk\":false,\"byte_fallback\":false,\"ignore_merges\":false,\"vocab\":{\"a\":0,\"b\":1,"
        "\"ab\":2,\"aba\":3,\"c\":4,\"bc\":5,\"abc\":6},\"merges\":[\"ab a\",\"a b\",\"b c\",\"a bc\"]}}";
    static const struct {
        const char *text;
        uint32_t ids[8];
        size_t n;
    } CASES[] = {{"abab", {3, 1}, 2},
                 {"ababab", {3, 1, 2}, 3},
                 {"abababababab", {3, 1, 3, 1, 3, 1}, 6},
                 {"abcabab", {2, 4, 3, 1}, 4},
                 {"ababcab", {3, 5, 2}, 3}};
    char err[512];
    tokenizer_ids v = {0};
    for (int pass = 0; pass < 2; pass++) {
        /* a tokenizer for each: the pre-token cache would answer the second */
        tokenizer *t = tokenizer_load_json(JSON, sizeof JSON - 1, err, sizeof err);
        ck_assert_msg(t != NULL, "%s", err);
        t->linear_max = pass ? 0 : SIZE_MAX;
        for (size_t c = 0; c < sizeof CASES / sizeof CASES[0]; c++) {
            ck_assert_int_eq(tokenizer_encode(t, CASES[c].text, strlen(CASES[c].text), &v), 0);
            ck_assert_msg(v.len == CASES[c].n, "%s (%s): %zu ids", CASES[c].text, pass ? "groups" : "rescan", v.len);
            for (size_t k = 0; k < v.len; k++)
                ck_assert_msg(v.ids[k] == CASES[c].ids[k], "%s (%s) id %zu: %u", CASES[c].text,
                              pass ? "groups" : "rescan", k, v.ids[k]);
        }
        tokenizer_free(t);
    }
    tokenizer_ids_free(&v);
}
END_TEST

/* \w as the rewriter spells it (tok_regex.c word_members): the word table,
 * and for tiktoken patterns Rust's regex, without the No digits B2, B3, B9,
 * BC-BE and with ZWNJ and ZWJ. */
static bool is_word(uint32_t cp, bool rust)
{
    if (rust && (cp == 0xB2 || cp == 0xB3 || cp == 0xB9 || (cp >= 0xBC && cp <= 0xBE)))
        return false;
    if (rust && (cp == 0x200C || cp == 0x200D))
        return true;
    size_t k = 0;
    while (k < tok_ucd_word_ntoggles && tok_ucd_word_toggles[k] <= cp)
        k++;
    return k & 1;
}

/* The length of re's match anchored at byte at of s, or -1. */
static long match_at(const pcre2_code *re, const uint8_t *s, size_t n, size_t at)
{
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(re, NULL);
    ck_assert_ptr_nonnull(md);
    int rc = pcre2_match(re, s, n, at, PCRE2_ANCHORED, md, NULL);
    long len = -1;
    if (rc >= 0) {
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        len = (long)(ov[1] - ov[0]);
    }
    pcre2_match_data_free(md);
    return len;
}

START_TEST(word_classes_and_boundaries_outside_a_class)
{
    /* \w, \W, \b and \B outside [...] become a class and lookarounds over the
     * word table; each against that table, at every code point of random texts */
    bool rust = _i;
    static const char *const PATS[] = {"\\w", "\\W", "\\b", "\\B"};
    pcre2_code *re[4];
    char err[256];
    for (int p = 0; p < 4; p++) {
        re[p] = tok_regex_compile(PATS[p], strlen(PATS[p]), rust, err, sizeof err);
        ck_assert_msg(re[p] != NULL, "%s: %s", PATS[p], err);
    }
    uint8_t buf[48 * 6 * 4 + 8];
    for (int k = 0; k < 3000; k++) {
        size_t n = random_text(buf);
        bool prev = false;
        for (size_t at = 0; at <= n;) {
            size_t len = 0;
            uint32_t cp = at < n ? tok_utf8_decode(buf + at, &len) : 0;
            bool next = at < n && is_word(cp, rust);
            if (at < n) {
                ck_assert_msg(match_at(re[0], buf, n, at) == (next ? (long)len : -1), "\\w at U+%04X", cp);
                ck_assert_msg(match_at(re[1], buf, n, at) == (next ? -1 : (long)len), "\\W at U+%04X", cp);
            }
            ck_assert_msg(match_at(re[2], buf, n, at) == (prev != next ? 0 : -1), "\\b before U+%04X", cp);
            ck_assert_msg(match_at(re[3], buf, n, at) == (prev == next ? 0 : -1), "\\B before U+%04X", cp);
            prev = next;
            at += at < n ? len : 1;
        }
    }
    for (int p = 0; p < 4; p++)
        pcre2_code_free(re[p]);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("tokenizer_split");
    TCase *tc = tcase_create("split");
    tcase_set_timeout(tc, 300);
    tcase_add_loop_test(tc, hand_written_splits_equal_pcre2, 0, 3);
    tcase_add_loop_test(tc, rank_group_merge_equals_rescanning, 0, 3);
    tcase_add_test(tc, rank_group_merge_takes_a_newly_lower_rank_first);
    tcase_add_loop_test(tc, word_classes_and_boundaries_outside_a_class, 0, 2);
    suite_add_tcase(s, tc);
    SRunner *r = srunner_create(s);
    srunner_run_all(r, CK_NORMAL);
    int failed = srunner_ntests_failed(r);
    srunner_free(r);
    return failed ? 1 : 0;
}
