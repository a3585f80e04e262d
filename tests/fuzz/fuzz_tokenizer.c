/*
 * fuzz_tokenizer.c: arbitrary bytes as text for every tokenizer in tests/data
 * (the three real ones and the small feature tokenizers). Encoding must never
 * fail, and count must agree with encode. For the real ones, the fast paths
 * (hand-written split matchers, rank-group merge of long pieces) must give
 * what PCRE2 and rescanning give on a second copy of the tokenizer.
 * Data directory: $OBSD_TEST_DATA, else tests/data next to this file.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenq/tok_internal.h"

static tokenizer *toks[8], *plain[8]; /* plain[i]: PCRE2 and rescanning only, or NULL */
static size_t ntoks;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    static const char *const files[] = {"tokenizer_mini_bytelevel.json", "tokenizer_mini_meta.json",
                                        "tokenizer_mini_split.json",     "llama3.tokenizer.json.gz",
                                        "qwen3.tokenizer.json.gz",       "deepseek_v3.tokenizer.json.gz"};
    char dir[1024];
    const char *env = getenv("OBSD_TEST_DATA");
    if (env)
        snprintf(dir, sizeof dir, "%s", env);
    else {
        snprintf(dir, sizeof dir, "%s", __FILE__);
        char *slash = strrchr(dir, '/');
        snprintf(slash ? slash : dir, sizeof dir - (size_t)(slash ? slash - dir : 0), "%s", slash ? "/../data" : "tests/data");
    }
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        char path[1200], err[512];
        snprintf(path, sizeof path, "%s/%s", dir, files[i]);
        tokenizer *t = tokenizer_load_file(path, err, sizeof err);
        if (!t) {
            fprintf(stderr, "fuzz_tokenizer: %s\n", err);
            abort();
        }
        if (strstr(files[i], ".gz")) {
            plain[ntoks] = tokenizer_load_file(path, err, sizeof err);
            if (!plain[ntoks])
                abort();
            plain[ntoks]->regex_only = true;
            plain[ntoks]->linear_max = SIZE_MAX;
        }
        toks[ntoks++] = t;
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static tokenizer_ids v;
    for (size_t i = 0; i < ntoks; i++) {
        if (tokenizer_encode(toks[i], (const char *)data, size, &v) != 0)
            abort();
        if (tokenizer_count(toks[i], (const char *)data, size) != (int64_t)v.len)
            abort();
        for (size_t k = 0; k < v.len; k++)
            if (v.ids[k] >= tokenizer_vocab_size(toks[i]))
                abort();
        if (plain[i]) {
            static tokenizer_ids w;
            if (tokenizer_encode(plain[i], (const char *)data, size, &w) != 0 || w.len != v.len ||
                (v.len && memcmp(w.ids, v.ids, v.len * sizeof *v.ids) != 0))
                abort();
        }
    }
    return 0;
}
