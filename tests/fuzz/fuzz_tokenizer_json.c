/*
 * fuzz_tokenizer_json.c: arbitrary bytes as a tokenizer.json. Loading either
 * fails with a message or gives a tokenizer that then encodes a few texts
 * without failing. The input's first byte picks tiktoken rank-file mode.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tokenq/tokenizer.h"

static const char *const TEXTS[] = {"Hello world, it's 1234567 caf\xC3\xA9!", "  \n\n  x\r\n", "<s>a</s>\xFF\xFE",
                                    ""};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[512];
    tokenizer *t;
    if (size > 0 && data[0] == 't')
        t = tokenizer_load_tiktoken((const char *)data + 1, size - 1, "cl100k_base", err, sizeof err);
    else
        t = tokenizer_load_json((const char *)data, size, err, sizeof err);
    if (!t) {
        if (!memchr(err, 0, sizeof err) || err[0] == 0)
            abort(); /* a failure always says why */
        return 0;
    }
    tokenizer_ids v = {0};
    for (size_t i = 0; i < sizeof TEXTS / sizeof *TEXTS; i++) {
        if (tokenizer_encode(t, TEXTS[i], strlen(TEXTS[i]), &v) != 0)
            abort();
        if (tokenizer_count(t, TEXTS[i], strlen(TEXTS[i])) != (int64_t)v.len)
            abort();
    }
    tokenizer_ids_free(&v);
    tokenizer_free(t);
    return 0;
}
