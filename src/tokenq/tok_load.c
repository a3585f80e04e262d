/*
 * tok_load.c: building a tokenizer from tokenizer.json or a tiktoken rank
 * file, and the public entry points of tokenizer.h.
 *
 * Every field that changes the ids is either implemented exactly or refused
 * here with its path in the message, so nothing can fail at encode time.
 */
#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>
#include <zlib.h>

#include "tokenq/tok_internal.h"

#define MAX_AFFIX 64 /* longest continuing_subword_prefix / end_of_word_suffix */

static void fail(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || !errlen)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* Reads a whole file, gunzipping it if it is gzip-compressed. */
static char *read_file(const char *path, size_t *len, char *err, size_t errlen)
{
    gzFile f = gzopen(path, "rb");
    if (!f) {
        fail(err, errlen, "%s: %s", path, strerror(errno ? errno : ENOENT));
        return NULL;
    }
    size_t cap = 1 << 20, n = 0;
    char *buf = malloc(cap + 1);
    for (;;) {
        if (!buf) {
            gzclose(f);
            fail(err, errlen, "%s: out of memory", path);
            return NULL;
        }
        if (n == cap) {
            cap *= 2;
            char *b = realloc(buf, cap + 1);
            if (!b) {
                free(buf);
                buf = NULL;
                continue;
            }
            buf = b;
        }
        size_t want = cap - n > (1u << 30) ? (1u << 30) : cap - n;
        int r = gzread(f, buf + n, (unsigned)want);
        if (r < 0) {
            int e;
            const char *m = gzerror(f, &e);
            fail(err, errlen, "%s: read error: %s", path, e == Z_ERRNO ? strerror(errno) : m);
            free(buf);
            gzclose(f);
            return NULL;
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    gzclose(f);
    buf[n] = 0;
    *len = n;
    return buf;
}

static tokenizer *tok_new(void)
{
    tokenizer *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    pthread_mutex_init(&t->ws_lock, NULL);
    t->unk_id = TOK_NONE;
    t->linear_max = TOK_LINEAR_MAX;
    for (int i = 0; i < 256; i++)
        t->fallback_byte[i] = TOK_NONE;
    return t;
}

static void trie_free(tok_trie *t)
{
    free(t->edge_keys);
    free(t->edge_vals);
    free(t->terminal);
    free(t->tokens);
    memset(t, 0, sizeof *t);
}

void tokenizer_free(tokenizer *t)
{
    if (!t)
        return;
    tok_strmap_free(&t->vocab);
    tok_pairmap_free(&t->pairs);
    free(t->prefix);
    free(t->suffix);
    trie_free(&t->added_raw);
    trie_free(&t->added_norm);
    free(t->nfc_inert);
    free(t->nfc_barrier);
    free(t->whole_ok);
    free(t->byte_pair);
    free(t->pair8);
    free(t->rank_newid);
    for (size_t i = 0; i < t->npretoks; i++) {
        pcre2_code_free(t->pretoks[i].re);
        free(t->pretoks[i].literal);
    }
    free(t->pretoks);
    tok_ws_destroy_all(t);
    pthread_mutex_destroy(&t->ws_lock);
    free(t);
}

/* ---------------- added-token trie ---------------- */

static int trie_init(tok_trie *t)
{
    memset(t, 0, sizeof *t);
    t->edge_mask = (1u << 10) - 1;
    t->edge_keys = malloc((t->edge_mask + 1) * sizeof *t->edge_keys);
    t->edge_vals = malloc((t->edge_mask + 1) * sizeof *t->edge_vals);
    t->capnodes = 64;
    t->terminal = malloc(t->capnodes * sizeof *t->terminal);
    if (!t->edge_keys || !t->edge_vals || !t->terminal)
        return -1;
    memset(t->edge_keys, 0xFF, (t->edge_mask + 1) * sizeof *t->edge_keys);
    t->nnodes = 1;
    t->terminal[0] = -1;
    return 0;
}

static void trie_edge_put(tok_trie *t, uint64_t key, uint32_t val)
{
    for (uint64_t i = (key * 0x9E3779B97F4A7C15ull) >> 24;; i++) {
        uint64_t *k = &t->edge_keys[i & t->edge_mask];
        if (*k == UINT64_MAX) {
            *k = key;
            t->edge_vals[i & t->edge_mask] = val;
            return;
        }
    }
}

static uint32_t trie_edge_get(const tok_trie *t, uint64_t key)
{
    for (uint64_t i = (key * 0x9E3779B97F4A7C15ull) >> 24;; i++) {
        uint64_t k = t->edge_keys[i & t->edge_mask];
        if (k == key)
            return t->edge_vals[i & t->edge_mask];
        if (k == UINT64_MAX)
            return 0;
    }
}

static int trie_add(tok_trie *t, const uint8_t *s, size_t n, tok_added a)
{
    if (n == 0)
        return 0;
    uint32_t node = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t key = ((uint64_t)node << 8) | s[i];
        uint32_t child = trie_edge_get(t, key);
        if (!child) {
            if (t->nnodes == t->capnodes) {
                int32_t *q = realloc(t->terminal, t->capnodes * 2 * sizeof *q);
                if (!q)
                    return -1;
                t->terminal = q;
                t->capnodes *= 2;
            }
            /* nodes - 1 edges; keep the edge table at most half full */
            if ((uint64_t)t->nnodes * 2 > t->edge_mask) {
                uint64_t cap = (t->edge_mask + 1) * 2;
                uint64_t *ok = t->edge_keys;
                uint32_t *ov = t->edge_vals;
                uint64_t omask = t->edge_mask;
                t->edge_keys = malloc(cap * sizeof *t->edge_keys);
                t->edge_vals = malloc(cap * sizeof *t->edge_vals);
                if (!t->edge_keys || !t->edge_vals) {
                    free(t->edge_keys);
                    free(t->edge_vals);
                    t->edge_keys = ok;
                    t->edge_vals = ov;
                    return -1;
                }
                memset(t->edge_keys, 0xFF, cap * sizeof *t->edge_keys);
                t->edge_mask = cap - 1;
                for (uint64_t j = 0; j <= omask; j++)
                    if (ok[j] != UINT64_MAX)
                        trie_edge_put(t, ok[j], ov[j]);
                free(ok);
                free(ov);
            }
            child = t->nnodes++;
            t->terminal[child] = -1;
            trie_edge_put(t, key, child);
        }
        node = child;
    }
    if (t->terminal[node] < 0) {
        tok_added *q = realloc(t->tokens, (t->ntokens + 1) * sizeof *q);
        if (!q)
            return -1;
        t->tokens = q;
        t->terminal[node] = (int32_t)t->ntokens++;
    }
    t->tokens[t->terminal[node]] = a;
    t->first[s[0]] = 1;
    if (n > t->maxlen)
        t->maxlen = n;
    return 0;
}

/* ---------------- NFC ---------------- */

/* Marks the code points NFC can neither change nor compose with what precedes
 * them: no decomposition, combining class 0, never the second element of a
 * canonical composition. A text made only of such code points is already NFC.
 * Hugging Face's NFC has Unicode 9.0 tables: a later code point that utf8proc
 * would decompose, reorder or compose is left alone there and blocks
 * everything around it, so it is a barrier, and inert too. */
static int build_nfc_tables(tokenizer *t)
{
    t->nfc_inert = calloc(0x110000 / 8, 1);
    t->nfc_barrier = calloc(0x110000 / 8, 1);
    uint8_t *second = calloc(0x110000 / 8, 1);
    if (!t->nfc_inert || !t->nfc_barrier || !second) {
        free(second);
        return -1;
    }
    for (uint32_t cp = 0; cp < 0x110000; cp++) {
        if (cp >= 0xD800 && cp <= 0xDFFF)
            continue;
        const utf8proc_property_t *p = utf8proc_get_property((utf8proc_int32_t)cp);
        if (p->decomp_seqindex != UINT16_MAX && p->decomp_type == 0) {
            utf8proc_int32_t buf[16];
            int last = 0;
            utf8proc_ssize_t k = utf8proc_decompose_char((utf8proc_int32_t)cp, buf, 16, UTF8PROC_DECOMPOSE, &last);
            for (utf8proc_ssize_t i = 1; i < k && i < 16; i++)
                second[buf[i] >> 3] |= (uint8_t)(1u << (buf[i] & 7));
        }
    }
    for (uint32_t cp = 0; cp < 0x110000; cp++) {
        if (cp >= 0xD800 && cp <= 0xDFFF)
            continue;
        if (cp >= 0x1100 && cp <= 0x11FF)
            continue; /* Hangul jamo compose algorithmically */
        if (cp >= 0xAC00 && cp <= 0xD7A3)
            continue; /* Hangul syllables decompose algorithmically */
        const utf8proc_property_t *p = utf8proc_get_property((utf8proc_int32_t)cp);
        uint8_t bit = (uint8_t)(1u << (cp & 7));
        if (p->combining_class != 0 || p->decomp_seqindex != UINT16_MAX || (second[cp >> 3] & bit)) {
            if (tok_toggle_member(tok_ucd_unicode9_toggles, tok_ucd_unicode9_ntoggles, cp))
                continue;
            t->nfc_barrier[cp >> 3] |= bit;
        }
        t->nfc_inert[cp >> 3] |= bit;
    }
    /* U+11A7 (the jamo before the first trailing consonant) composes with
     * nothing, but utf8proc 2.8 takes it for one and drops it after an LV
     * syllable: keep it away from utf8proc */
    t->nfc_barrier[0x11A7 >> 3] |= 1u << (0x11A7 & 7);
    free(second);
    return 0;
}

/* ---------------- JSON helpers ---------------- *//* ---------------- JSON helpers ---------------- */

typedef struct {
    char *err;
    size_t errlen;
} ctx;

static bool get_bool(json_t *obj, const char *key, bool dflt, bool *out, const char *path, ctx *c)
{
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v)) {
        *out = dflt;
        return true;
    }
    if (!json_is_boolean(v)) {
        fail(c->err, c->errlen, "%s.%s: expected true or false", path, key);
        return false;
    }
    *out = json_is_true(v);
    return true;
}

/* Refuses keys of obj not in the NULL-terminated list. */
static bool only_keys(json_t *obj, const char *path, ctx *c, const char *const *keys)
{
    const char *k;
    json_t *v;
    json_object_foreach(obj, k, v) {
        bool known = false;
        for (size_t i = 0; keys[i]; i++)
            if (strcmp(k, keys[i]) == 0)
                known = true;
        if (!known) {
            fail(c->err, c->errlen, "%s.%s: unsupported field", path, k);
            return false;
        }
    }
    return true;
}

/* Converts a ByteLevel-alphabet string to raw bytes; false if a char is outside it. */
static bool chars_to_bytes(const char *s, size_t n, uint8_t *out, size_t *outlen)
{
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        size_t l;
        if (tok_utf8_valid_prefix((const uint8_t *)s + i, tok_utf8_len((uint8_t)s[i])) !=
                tok_utf8_len((uint8_t)s[i]) ||
            i + tok_utf8_len((uint8_t)s[i]) > n)
            return false;
        uint32_t cp = tok_utf8_decode((const uint8_t *)s + i, &l);
        int b = tok_char_to_byte(cp);
        if (b < 0)
            return false;
        out[o++] = (uint8_t)b;
        i += l;
    }
    *outlen = o;
    return true;
}

/* ---------------- normalizer ---------------- */

static bool parse_normalizer(tokenizer *t, json_t *n, const char *path, ctx *c)
{
    if (!n || json_is_null(n))
        return true;
    if (!json_is_object(n)) {
        fail(c->err, c->errlen, "%s: expected an object", path);
        return false;
    }
    const char *type = json_string_value(json_object_get(n, "type"));
    if (!type) {
        fail(c->err, c->errlen, "%s.type: missing", path);
        return false;
    }
    if (strcmp(type, "NFC") == 0) {
        t->nfc = true;
        if (!t->nfc_inert && build_nfc_tables(t)) {
            fail(c->err, c->errlen, "out of memory");
            return false;
        }
        return only_keys(n, path, c, (const char *[]){"type", NULL});
    }
    if (strcmp(type, "Sequence") == 0) {
        json_t *arr = json_object_get(n, "normalizers");
        if (!json_is_array(arr)) {
            fail(c->err, c->errlen, "%s.normalizers: expected an array", path);
            return false;
        }
        size_t i;
        json_t *ch;
        json_array_foreach(arr, i, ch) {
            char sub[256];
            snprintf(sub, sizeof sub, "%s.normalizers[%zu]", path, i);
            if (!parse_normalizer(t, ch, sub, c))
                return false;
        }
        return only_keys(n, path, c, (const char *[]){"type", "normalizers", NULL});
    }
    fail(c->err, c->errlen, "%s.type: normalizer \"%s\" is not supported (supported: NFC, Sequence)", path, type);
    return false;
}

/* ---------------- pre-tokenizers ---------------- */

static tok_pretok *add_pretok(tokenizer *t, ctx *c)
{
    tok_pretok *q = realloc(t->pretoks, (t->npretoks + 1) * sizeof *q);
    if (!q) {
        fail(c->err, c->errlen, "out of memory");
        return NULL;
    }
    t->pretoks = q;
    tok_pretok *p = &q[t->npretoks++];
    memset(p, 0, sizeof *p);
    return p;
}

static const char GPT2_PATTERN[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

static bool parse_pretok(tokenizer *t, json_t *n, const char *path, ctx *c)
{
    if (!n || json_is_null(n))
        return true;
    if (!json_is_object(n)) {
        fail(c->err, c->errlen, "%s: expected an object", path);
        return false;
    }
    const char *type = json_string_value(json_object_get(n, "type"));
    if (!type) {
        fail(c->err, c->errlen, "%s.type: missing", path);
        return false;
    }
    if (t->byte_level) {
        fail(c->err, c->errlen, "%s: pre-tokenizers after ByteLevel are not supported", path);
        return false;
    }
    char sub[256];
    if (strcmp(type, "Sequence") == 0) {
        json_t *arr = json_object_get(n, "pretokenizers");
        if (!json_is_array(arr)) {
            fail(c->err, c->errlen, "%s.pretokenizers: expected an array", path);
            return false;
        }
        size_t i;
        json_t *ch;
        json_array_foreach(arr, i, ch) {
            snprintf(sub, sizeof sub, "%s.pretokenizers[%zu]", path, i);
            if (!parse_pretok(t, ch, sub, c))
                return false;
        }
        return only_keys(n, path, c, (const char *[]){"type", "pretokenizers", NULL});
    }
    if (strcmp(type, "Split") == 0) {
        if (!only_keys(n, path, c, (const char *[]){"type", "pattern", "behavior", "invert", NULL}))
            return false;
        tok_pretok *p = add_pretok(t, c);
        if (!p)
            return false;
        p->kind = PT_SPLIT;
        json_t *pat = json_object_get(n, "pattern");
        json_t *rx = json_object_get(pat, "Regex"), *st = json_object_get(pat, "String");
        if (json_is_string(rx)) {
            char e[200];
            p->re = tok_regex_compile(json_string_value(rx), json_string_length(rx), false, e, sizeof e);
            if (!p->re) {
                fail(c->err, c->errlen, "%s.pattern.Regex: %s", path, e);
                return false;
            }
            p->split_kind = tok_split_kind(json_string_value(rx), json_string_length(rx));
            if (p->split_kind != TOK_SPLIT_REGEX && tok_split_init()) {
                fail(c->err, c->errlen, "out of memory");
                return false;
            }
        } else if (json_is_string(st)) {
            p->literal_len = json_string_length(st);
            p->literal = malloc(p->literal_len + 1);
            if (!p->literal) {
                fail(c->err, c->errlen, "out of memory");
                return false;
            }
            memcpy(p->literal, json_string_value(st), p->literal_len + 1);
        } else {
            fail(c->err, c->errlen, "%s.pattern: expected {\"Regex\": ...} or {\"String\": ...}", path);
            return false;
        }
        const char *b = json_string_value(json_object_get(n, "behavior"));
        if (!b) {
            fail(c->err, c->errlen, "%s.behavior: missing", path);
            return false;
        }
        if (strcmp(b, "Removed") == 0)
            p->behavior = B_REMOVED;
        else if (strcmp(b, "Isolated") == 0)
            p->behavior = B_ISOLATED;
        else if (strcmp(b, "MergedWithPrevious") == 0)
            p->behavior = B_MERGED_PREV;
        else if (strcmp(b, "MergedWithNext") == 0)
            p->behavior = B_MERGED_NEXT;
        else if (strcmp(b, "Contiguous") == 0)
            p->behavior = B_CONTIGUOUS;
        else {
            fail(c->err, c->errlen, "%s.behavior: \"%s\" is not a split behavior", path, b);
            return false;
        }
        return get_bool(n, "invert", false, &p->invert, path, c);
    }
    if (strcmp(type, "ByteLevel") == 0) {
        if (!only_keys(n, path, c, (const char *[]){"type", "add_prefix_space", "trim_offsets", "use_regex", NULL}))
            return false;
        tok_pretok *p = add_pretok(t, c);
        if (!p)
            return false;
        p->kind = PT_BYTELEVEL;
        bool use_regex;
        if (!get_bool(n, "add_prefix_space", true, &p->add_prefix_space, path, c) ||
            !get_bool(n, "use_regex", true, &use_regex, path, c) ||
            !get_bool(n, "trim_offsets", true, &(bool){0}, path, c))
            return false;
        if (use_regex) {
            char e[200];
            p->re = tok_regex_compile(GPT2_PATTERN, sizeof GPT2_PATTERN - 1, false, e, sizeof e);
            if (!p->re) {
                fail(c->err, c->errlen, "%s: %s", path, e);
                return false;
            }
        }
        t->byte_level = true;
        return true;
    }
    if (strcmp(type, "Digits") == 0) {
        if (!only_keys(n, path, c, (const char *[]){"type", "individual_digits", NULL}))
            return false;
        tok_pretok *p = add_pretok(t, c);
        if (!p)
            return false;
        p->kind = PT_DIGITS;
        return get_bool(n, "individual_digits", false, &p->individual, path, c);
    }
    if (strcmp(type, "Metaspace") == 0) {
        if (!only_keys(n, path, c,
                       (const char *[]){"type", "replacement", "str_rep", "add_prefix_space", "prepend_scheme",
                                        "split", NULL}))
            return false;
        tok_pretok *p = add_pretok(t, c);
        if (!p)
            return false;
        p->kind = PT_METASPACE;
        json_t *r = json_object_get(n, "replacement");
        const char *rs = json_is_string(r) ? json_string_value(r) : "\xE2\x96\x81";
        size_t rl = json_is_string(r) ? json_string_length(r) : 3;
        if (rl == 0 || rl > 4 || tok_utf8_len((uint8_t)rs[0]) != rl) {
            fail(c->err, c->errlen, "%s.replacement: must be exactly one character", path);
            return false;
        }
        memcpy(p->repl, rs, rl);
        p->repl_len = (uint8_t)rl;
        p->prepend = PREPEND_ALWAYS;
        bool aps;
        if (!get_bool(n, "add_prefix_space", true, &aps, path, c))
            return false;
        if (!aps)
            p->prepend = PREPEND_NEVER;
        json_t *ps = json_object_get(n, "prepend_scheme");
        if (ps && !json_is_null(ps)) {
            const char *s = json_string_value(ps);
            if (s && strcmp(s, "always") == 0)
                p->prepend = PREPEND_ALWAYS;
            else if (s && strcmp(s, "first") == 0)
                p->prepend = PREPEND_FIRST;
            else if (s && strcmp(s, "never") == 0)
                p->prepend = PREPEND_NEVER;
            else {
                fail(c->err, c->errlen, "%s.prepend_scheme: expected \"always\", \"first\" or \"never\"", path);
                return false;
            }
        }
        return get_bool(n, "split", true, &p->split, path, c);
    }
    fail(c->err, c->errlen,
         "%s.type: pre-tokenizer \"%s\" is not supported (supported: Sequence, Split, ByteLevel, Digits, Metaspace)",
         path, type);
    return false;
}

/* ---------------- model ---------------- */

static bool affix(tokenizer *t, json_t *model, const char *key, uint8_t **out, size_t *outlen, ctx *c)
{
    json_t *v = json_object_get(model, key);
    if (!v || json_is_null(v))
        return true;
    if (!json_is_string(v)) {
        fail(c->err, c->errlen, "model.%s: expected a string or null", key);
        return false;
    }
    size_t n = json_string_length(v);
    if (n == 0)
        return true;
    if (n > MAX_AFFIX) {
        fail(c->err, c->errlen, "model.%s: longer than %d bytes", key, MAX_AFFIX);
        return false;
    }
    *out = malloc(n + 1);
    if (!*out) {
        fail(c->err, c->errlen, "out of memory");
        return false;
    }
    if (t->byte_level) {
        if (!chars_to_bytes(json_string_value(v), n, *out, outlen)) {
            fail(c->err, c->errlen, "model.%s: characters outside the ByteLevel alphabet", key);
            return false;
        }
    } else {
        memcpy(*out, json_string_value(v), n);
        *outlen = n;
    }
    return true;
}

/* Id of a vocab string (the JSON key as written), or TOK_NONE. */
static uint32_t json_vocab_id(json_t *vocab, const char *s, size_t n)
{
    json_t *v = json_object_getn(vocab, s, n);
    if (!json_is_integer(v))
        return TOK_NONE;
    return (uint32_t)json_integer_value(v);
}

static bool parse_model(tokenizer *t, json_t *m, ctx *c)
{
    if (!json_is_object(m)) {
        fail(c->err, c->errlen, "model: expected an object");
        return false;
    }
    const char *type = json_string_value(json_object_get(m, "type"));
    if (type && strcmp(type, "BPE") != 0) {
        fail(c->err, c->errlen, "model.type: model \"%s\" is not supported (supported: BPE)", type);
        return false;
    }
    if (!only_keys(m, "model",
                   c,
                   (const char *[]){"type", "dropout", "unk_token", "continuing_subword_prefix", "end_of_word_suffix",
                                    "fuse_unk", "byte_fallback", "ignore_merges", "vocab", "merges", NULL}))
        return false;
    json_t *d = json_object_get(m, "dropout");
    if (d && !json_is_null(d)) {
        if (!json_is_number(d)) {
            fail(c->err, c->errlen, "model.dropout: expected a number or null");
            return false;
        }
        if (json_number_value(d) > 0) {
            fail(c->err, c->errlen, "model.dropout: %g > 0 (random merges) is not supported", json_number_value(d));
            return false;
        }
    }
    if (!get_bool(m, "fuse_unk", false, &t->fuse_unk, "model", c) ||
        !get_bool(m, "byte_fallback", false, &t->byte_fallback, "model", c) ||
        !get_bool(m, "ignore_merges", false, &t->ignore_merges, "model", c))
        return false;
    if (!affix(t, m, "continuing_subword_prefix", &t->prefix, &t->prefix_len, c) ||
        !affix(t, m, "end_of_word_suffix", &t->suffix, &t->suffix_len, c))
        return false;

    json_t *vocab = json_object_get(m, "vocab");
    if (!json_is_object(vocab)) {
        fail(c->err, c->errlen, "model.vocab: expected an object");
        return false;
    }
    if (tok_strmap_init(&t->vocab, json_object_size(vocab))) {
        fail(c->err, c->errlen, "out of memory");
        return false;
    }
    const char *key;
    json_t *val;
    uint8_t *kb = NULL;
    size_t kbcap = 0;
    json_object_foreach(vocab, key, val) {
        if (!json_is_integer(val) || json_integer_value(val) < 0 || json_integer_value(val) >= UINT32_MAX) {
            fail(c->err, c->errlen, "model.vocab[\"%.40s\"]: id must be an integer in [0, 2^32-1)", key);
            free(kb);
            return false;
        }
        uint32_t id = (uint32_t)json_integer_value(val);
        if (id >= t->vocab_size)
            t->vocab_size = id + 1;
        size_t klen = strlen(key);
        if (t->byte_level) {
            if (klen > kbcap) {
                kbcap = klen * 2 + 16;
                uint8_t *q = realloc(kb, kbcap);
                if (!q) {
                    free(kb);
                    fail(c->err, c->errlen, "out of memory");
                    return false;
                }
                kb = q;
            }
            size_t bl;
            /* keys outside the byte alphabet (e.g. specials) can never be
             * formed from bytes: only added-token matching reaches them */
            if (!chars_to_bytes(key, klen, kb, &bl))
                continue;
            if (tok_strmap_put(&t->vocab, kb, bl, id)) {
                free(kb);
                fail(c->err, c->errlen, "out of memory");
                return false;
            }
        } else if (tok_strmap_put(&t->vocab, (const uint8_t *)key, klen, id)) {
            fail(c->err, c->errlen, "out of memory");
            return false;
        }
    }
    free(kb);

    json_t *unk = json_object_get(m, "unk_token");
    if (unk && !json_is_null(unk)) {
        if (!json_is_string(unk)) {
            fail(c->err, c->errlen, "model.unk_token: expected a string or null");
            return false;
        }
        t->unk_id = json_vocab_id(vocab, json_string_value(unk), json_string_length(unk));
        if (t->unk_id == TOK_NONE) {
            fail(c->err, c->errlen, "model.unk_token: \"%s\" is not in the vocab", json_string_value(unk));
            return false;
        }
    }

    json_t *merges = json_object_get(m, "merges");
    if (merges && !json_is_array(merges)) {
        fail(c->err, c->errlen, "model.merges: expected an array");
        return false;
    }
    if (tok_pairmap_init(&t->pairs, merges ? json_array_size(merges) : 0)) {
        fail(c->err, c->errlen, "out of memory");
        return false;
    }
    size_t i;
    json_t *mg;
    char *buf = NULL;
    size_t bufcap = 0;
    json_array_foreach(merges, i, mg) {
        const char *a, *b;
        size_t al, bl;
        if (json_is_string(mg)) {
            a = json_string_value(mg);
            size_t l = json_string_length(mg);
            const char *sp = memchr(a, ' ', l);
            if (!sp || memchr(sp + 1, ' ', l - (size_t)(sp + 1 - a))) {
                fail(c->err, c->errlen, "model.merges[%zu]: \"%.60s\" is not two tokens separated by one space", i, a);
                free(buf);
                return false;
            }
            al = (size_t)(sp - a);
            b = sp + 1;
            bl = l - al - 1;
        } else if (json_is_array(mg) && json_array_size(mg) == 2 && json_is_string(json_array_get(mg, 0)) &&
                   json_is_string(json_array_get(mg, 1))) {
            a = json_string_value(json_array_get(mg, 0));
            al = json_string_length(json_array_get(mg, 0));
            b = json_string_value(json_array_get(mg, 1));
            bl = json_string_length(json_array_get(mg, 1));
        } else {
            fail(c->err, c->errlen, "model.merges[%zu]: expected \"a b\" or [\"a\", \"b\"]", i);
            free(buf);
            return false;
        }
        uint32_t aid = json_vocab_id(vocab, a, al), bid = json_vocab_id(vocab, b, bl);
        if (aid == TOK_NONE || bid == TOK_NONE) {
            fail(c->err, c->errlen, "model.merges[%zu]: \"%.60s\" is not in the vocab", i, aid == TOK_NONE ? a : b);
            free(buf);
            return false;
        }
        /* Hugging Face drops the prefix's length from the right token unconditionally */
        size_t plen = 0;
        json_t *pj = json_object_get(m, "continuing_subword_prefix");
        if (json_is_string(pj))
            plen = json_string_length(pj);
        if (plen > bl) {
            fail(c->err, c->errlen, "model.merges[%zu]: right token shorter than continuing_subword_prefix", i);
            free(buf);
            return false;
        }
        if (al + bl + 1 > bufcap) {
            bufcap = (al + bl + 1) * 2;
            char *q = realloc(buf, bufcap);
            if (!q) {
                free(buf);
                fail(c->err, c->errlen, "out of memory");
                return false;
            }
            buf = q;
        }
        memcpy(buf, a, al);
        memcpy(buf + al, b + plen, bl - plen);
        uint32_t nid = json_vocab_id(vocab, buf, al + bl - plen);
        if (nid == TOK_NONE) {
            fail(c->err, c->errlen, "model.merges[%zu]: the merged token is not in the vocab", i);
            free(buf);
            return false;
        }
        if (i >= UINT32_MAX - 1 || tok_pairmap_put(&t->pairs, aid, bid, (uint32_t)i, nid)) {
            fail(c->err, c->errlen, "out of memory");
            free(buf);
            return false;
        }
    }
    free(buf);
    return true;
}

static bool parse_added(tokenizer *t, json_t *arr, ctx *c)
{
    if (trie_init(&t->added_raw) || trie_init(&t->added_norm)) {
        fail(c->err, c->errlen, "out of memory");
        return false;
    }
    if (!arr || json_is_null(arr))
        return true;
    if (!json_is_array(arr)) {
        fail(c->err, c->errlen, "added_tokens: expected an array");
        return false;
    }
    size_t i;
    json_t *a;
    json_array_foreach(arr, i, a) {
        char path[64];
        snprintf(path, sizeof path, "added_tokens[%zu]", i);
        json_t *id = json_object_get(a, "id"), *content = json_object_get(a, "content");
        if (!json_is_integer(id) || json_integer_value(id) < 0 || json_integer_value(id) >= UINT32_MAX) {
            fail(c->err, c->errlen, "%s.id: expected an integer in [0, 2^32-1)", path);
            return false;
        }
        if (!json_is_string(content)) {
            fail(c->err, c->errlen, "%s.content: expected a string", path);
            return false;
        }
        if (!only_keys(a, path, c,
                       (const char *[]){"id", "content", "single_word", "lstrip", "rstrip", "normalized", "special",
                                        NULL}))
            return false;
        tok_added ad = {.id = (uint32_t)json_integer_value(id)};
        bool normalized, special;
        if (!get_bool(a, "single_word", false, &ad.single_word, path, c) ||
            !get_bool(a, "lstrip", false, &ad.lstrip, path, c) || !get_bool(a, "rstrip", false, &ad.rstrip, path, c) ||
            !get_bool(a, "special", false, &special, path, c) ||
            !get_bool(a, "normalized", !special, &normalized, path, c))
            return false;
        if (ad.id >= t->vocab_size)
            t->vocab_size = ad.id + 1;
        const uint8_t *s = (const uint8_t *)json_string_value(content);
        size_t n = json_string_length(content);
        int rc;
        if (normalized && t->nfc) {
            size_t nl;
            uint8_t *ns = tok_nfc(t, s, n, &nl);
            if (!ns) {
                fail(c->err, c->errlen, "%s.content: cannot be normalized", path);
                return false;
            }
            rc = trie_add(&t->added_norm, ns, nl, ad);
            free(ns);
        } else {
            rc = trie_add(normalized ? &t->added_norm : &t->added_raw, s, n, ad);
        }
        if (rc) {
            fail(c->err, c->errlen, "out of memory");
            return false;
        }
    }
    return true;
}

/* Builds pair8 and rank_newid when every id fits 18 bits and every rank 20,
 * then drops the 16-byte table. Returns -1 only if out of memory. */
static int pack_pairs(tokenizer *t)
{
    const tok_pairmap *m = &t->pairs;
    uint32_t max_rank = 0;
    for (uint64_t i = 0; i <= m->mask; i++) {
        const tok_pair *p = &m->slots[i];
        if (p->key == UINT64_MAX)
            continue;
        if ((p->key >> 32) >= 1u << 18 || (p->key & 0xFFFFFFFF) >= 1u << 18 || p->rank >= 1u << 20)
            return 0; /* does not fit: keep the wide table */
        if (p->rank > max_rank)
            max_rank = p->rank;
    }
    uint64_t cap = 1024;
    while (cap * 3 < m->count * 5) /* load at most 0.6 */
        cap *= 2;
    uint64_t *slots = malloc(cap * sizeof *slots);
    uint32_t *newid = malloc(((size_t)max_rank + 1) * sizeof *newid);
    if (!slots || !newid) {
        free(slots);
        free(newid);
        return -1;
    }
    memset(slots, 0xFF, cap * sizeof *slots);
    for (uint64_t i = 0; i <= m->mask; i++) {
        const tok_pair *p = &m->slots[i];
        if (p->key == UINT64_MAX)
            continue;
        uint64_t key = (p->key >> 32) << 18 | (p->key & 0xFFFFFFFF);
        uint64_t j = (key * 0x9E3779B97F4A7C15ull) >> 24;
        while (slots[j & (cap - 1)] != UINT64_MAX)
            j++;
        slots[j & (cap - 1)] = key << 20 | p->rank;
        newid[p->rank] = p->new_id;
    }
    t->pair8 = slots;
    t->pair8_mask = cap - 1;
    t->rank_newid = newid;
    tok_pairmap_free(&t->pairs);
    return 0;
}

static bool finish_model(tokenizer *t, ctx *c)
{
    bool all_bytes = true;
    for (int b = 0; b < 256; b++) {
        uint8_t k = (uint8_t)b;
        t->byte_id[b] = tok_strmap_get(&t->vocab, &k, 1);
        if (t->byte_id[b] == TOK_NONE)
            all_bytes = false;
        char fb[8];
        snprintf(fb, sizeof fb, "<0x%02X>", b);
        t->fallback_byte[b] = tok_strmap_get(&t->vocab, (const uint8_t *)fb, 6);
    }
    t->simple_bytes = t->byte_level && !t->prefix && !t->suffix && all_bytes;
    if (t->simple_bytes) {
        t->byte_pair = malloc(65536 * sizeof *t->byte_pair);
        if (!t->byte_pair) {
            fail(c->err, c->errlen, "out of memory");
            return false;
        }
        for (size_t k = 0; k < 65536; k++) {
            const tok_pair *pr = tok_pairmap_get(&t->pairs, t->byte_id[k >> 8], t->byte_id[k & 0xFF]);
            t->byte_pair[k] = pr ? ((uint64_t)pr->rank << 32 | pr->new_id) : UINT64_MAX;
        }
    }
    const tok_pretok *pt = t->pretoks;
    size_t ns = 0;
    while (ns < t->npretoks && ns < TOK_MAX_DIRECT && pt[ns].kind == PT_SPLIT && pt[ns].re &&
           pt[ns].split_kind != TOK_SPLIT_REGEX && pt[ns].behavior == B_ISOLATED && !pt[ns].invert)
        ns++;
    if (ns > 0 && ns + 1 == t->npretoks && pt[ns].kind == PT_BYTELEVEL && !pt[ns].re && !pt[ns].add_prefix_space) {
        for (size_t i = 0; i < ns; i++)
            t->direct_kinds[i] = pt[i].split_kind;
        t->ndirect = ns;
    }
    if (pack_pairs(t)) {
        fail(c->err, c->errlen, "out of memory");
        return false;
    }
    if (tok_mark_whole_tokens(t)) {
        fail(c->err, c->errlen, "out of memory");
        return false;
    }
    return true;
}

tokenizer *tokenizer_load_json(const char *data, size_t len, char *err, size_t errlen)
{
    ctx c = {err, errlen};
    json_error_t je;
    json_t *root = json_loadb(data, len, JSON_ALLOW_NUL, &je);
    if (!root) {
        fail(err, errlen, "not valid JSON (line %d, column %d): %s", je.line, je.column, je.text);
        return NULL;
    }
    tokenizer *t = tok_new();
    bool ok = t != NULL;
    if (!t)
        fail(err, errlen, "out of memory");
    if (ok && !json_is_object(root)) {
        fail(err, errlen, "the document is not a JSON object");
        ok = false;
    }
    if (ok && !json_is_object(json_object_get(root, "model"))) {
        fail(err, errlen, "model: missing (not a tokenizer.json?)");
        ok = false;
    }
    const char *refused[] = {"truncation", "padding"};
    for (size_t i = 0; ok && i < 2; i++) {
        json_t *v = json_object_get(root, refused[i]);
        if (v && !json_is_null(v)) {
            fail(err, errlen, "%s: must be null (it would change the ids)", refused[i]);
            ok = false;
        }
    }
    ok = ok && parse_normalizer(t, json_object_get(root, "normalizer"), "normalizer", &c);
    ok = ok && parse_pretok(t, json_object_get(root, "pre_tokenizer"), "pre_tokenizer", &c);
    ok = ok && parse_model(t, json_object_get(root, "model"), &c);
    ok = ok && parse_added(t, json_object_get(root, "added_tokens"), &c);
    ok = ok && finish_model(t, &c);
    json_decref(root);
    if (!ok) {
        tokenizer_free(t);
        return NULL;
    }
    return t;
}

tokenizer *tokenizer_load_file(const char *path, char *err, size_t errlen)
{
    size_t len;
    char *buf = read_file(path, &len, err, errlen);
    if (!buf)
        return NULL;
    char e[512];
    tokenizer *t = tokenizer_load_json(buf, len, e, sizeof e);
    if (!t)
        fail(err, errlen, "%s: %s", path, e);
    free(buf);
    return t;
}

/* ---------------- tiktoken ---------------- */

static const char CL100K_PATTERN[] =
    "'(?i:[sdmt]|ll|ve|re)|[^\\r\\n\\p{L}\\p{N}]?+\\p{L}++|\\p{N}{1,3}+| ?[^\\s\\p{L}\\p{N}]++[\\r\\n]*+|\\s++$|"
    "\\s*[\\r\\n]|\\s+(?!\\S)|\\s";
static const char O200K_PATTERN[] =
    "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|"
    "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|"
    "\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

static int b64val(uint8_t ch)
{
    if (ch >= 'A' && ch <= 'Z')
        return ch - 'A';
    if (ch >= 'a' && ch <= 'z')
        return ch - 'a' + 26;
    if (ch >= '0' && ch <= '9')
        return ch - '0' + 52;
    if (ch == '+')
        return 62;
    if (ch == '/')
        return 63;
    return -1;
}

/* Decodes standard base64 (with '=' padding); returns the length or -1. */
static long b64decode(const uint8_t *s, size_t n, uint8_t *out)
{
    while (n && s[n - 1] == '=')
        n--;
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        int v = b64val(s[i]);
        if (v < 0)
            return -1;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (uint8_t)(acc >> bits);
        }
    }
    return (long)o;
}

tokenizer *tokenizer_load_tiktoken(const char *data, size_t len, const char *pattern, char *err, size_t errlen)
{
    ctx c = {err, errlen};
    if (!pattern) {
        fail(err, errlen, "pattern: missing (give cl100k_base, o200k_base or a regex)");
        return NULL;
    }
    const char *pat = pattern;
    if (strcmp(pattern, "cl100k_base") == 0)
        pat = CL100K_PATTERN;
    else if (strcmp(pattern, "o200k_base") == 0)
        pat = O200K_PATTERN;
    tokenizer *t = tok_new();
    if (!t) {
        fail(err, errlen, "out of memory");
        return NULL;
    }
    t->byte_level = true; /* pieces are raw bytes */
    t->ignore_merges = true;
    tok_pretok *p = add_pretok(t, &c);
    if (!p) {
        tokenizer_free(t);
        return NULL;
    }
    p->kind = PT_SPLIT;
    p->behavior = B_ISOLATED;
    char e[200];
    p->re = tok_regex_compile(pat, strlen(pat), true, e, sizeof e);
    if (!p->re) {
        fail(err, errlen, "pattern: %s", e);
        tokenizer_free(t);
        return NULL;
    }
    /* pass 1: ranks into the vocab, remembering each token's bytes */
    size_t lines = 1;
    for (size_t i = 0; i < len; i++)
        lines += data[i] == '\n';
    uint8_t *tokbytes = malloc(len + 1);
    uint32_t *toff = malloc(lines * sizeof *toff), *tlen = malloc(lines * sizeof *tlen),
             *trank = malloc(lines * sizeof *trank);
    bool ok = tokbytes && toff && tlen && trank && !tok_strmap_init(&t->vocab, lines) &&
              !trie_init(&t->added_raw) && !trie_init(&t->added_norm);
    if (!ok)
        fail(err, errlen, "out of memory");
    size_t ntok = 0, nbytes = 0, lineno = 0;
    for (size_t i = 0; ok && i < len;) {
        const char *ln = data + i;
        const char *nl = memchr(ln, '\n', len - i);
        size_t ll = nl ? (size_t)(nl - ln) : len - i;
        i += ll + 1;
        lineno++;
        if (ll && ln[ll - 1] == '\r')
            ll--;
        if (ll == 0)
            continue;
        const char *sp = memchr(ln, ' ', ll);
        if (!sp) {
            fail(err, errlen, "line %zu: expected \"<base64> <rank>\"", lineno);
            ok = false;
            break;
        }
        long bl = b64decode((const uint8_t *)ln, (size_t)(sp - ln), tokbytes + nbytes);
        char *end;
        errno = 0;
        unsigned long long r = strtoull(sp + 1, &end, 10);
        if (bl <= 0 || end != ln + ll || errno || r >= UINT32_MAX || sp + 1 == end) {
            fail(err, errlen, "line %zu: expected \"<base64> <rank>\"", lineno);
            ok = false;
            break;
        }
        toff[ntok] = (uint32_t)nbytes;
        tlen[ntok] = (uint32_t)bl;
        trank[ntok] = (uint32_t)r;
        if (tok_strmap_put(&t->vocab, tokbytes + nbytes, (size_t)bl, (uint32_t)r)) {
            fail(err, errlen, "out of memory");
            ok = false;
            break;
        }
        if (r >= t->vocab_size)
            t->vocab_size = (uint32_t)r + 1;
        nbytes += (size_t)bl;
        ntok++;
    }
    if (ok && ntok == 0) {
        fail(err, errlen, "no tokens in the rank file");
        ok = false;
    }
    /* pass 2: every split of a token into two tokens merges into it, at its rank */
    if (ok && tok_pairmap_init(&t->pairs, ntok * 4)) {
        fail(err, errlen, "out of memory");
        ok = false;
    }
    for (size_t k = 0; ok && k < ntok; k++) {
        const uint8_t *s = tokbytes + toff[k];
        for (uint32_t cut = 1; cut < tlen[k]; cut++) {
            uint32_t a = tok_strmap_get(&t->vocab, s, cut);
            if (a == TOK_NONE)
                continue;
            uint32_t b = tok_strmap_get(&t->vocab, s + cut, tlen[k] - cut);
            if (b == TOK_NONE)
                continue;
            if (tok_pairmap_put(&t->pairs, a, b, trank[k], trank[k])) {
                fail(err, errlen, "out of memory");
                ok = false;
                break;
            }
        }
    }
    free(tokbytes);
    free(toff);
    free(tlen);
    free(trank);
    ok = ok && finish_model(t, &c);
    if (!ok) {
        tokenizer_free(t);
        return NULL;
    }
    return t;
}

tokenizer *tokenizer_load_tiktoken_file(const char *path, const char *pattern, char *err, size_t errlen)
{
    size_t len;
    char *buf = read_file(path, &len, err, errlen);
    if (!buf)
        return NULL;
    char e[512];
    tokenizer *t = tokenizer_load_tiktoken(buf, len, pattern, e, sizeof e);
    if (!t)
        fail(err, errlen, "%s: %s", path, e);
    free(buf);
    return t;
}

/* ---------------- public encode API ---------------- */

int64_t tokenizer_count(const tokenizer *tok, const char *text, size_t len)
{
    struct tok_ws *ws = tok_ws_acquire(tok);
    if (!ws)
        return TOKENIZER_ENOMEM;
    uint64_t n = 0;
    int rc = tok_run(tok, ws, (const uint8_t *)text, len, NULL, &n);
    tok_ws_release(tok, ws);
    return rc ? rc : (int64_t)n;
}

int tokenizer_encode(const tokenizer *tok, const char *text, size_t len, tokenizer_ids *out)
{
    struct tok_ws *ws = tok_ws_acquire(tok);
    if (!ws)
        return TOKENIZER_ENOMEM;
    uint64_t n = 0;
    out->len = 0;
    int rc = tok_run(tok, ws, (const uint8_t *)text, len, out, &n);
    tok_ws_release(tok, ws);
    return rc;
}

typedef struct {
    const tokenizer *tok;
    size_t n;
    const char *const *texts;
    const size_t *lens;
    int64_t *counts;
    tokenizer_ids *outs;
    atomic_size_t next;
    atomic_int rc;
} batch_job;

#define BATCH_CHUNK 8

static void *batch_worker(void *arg)
{
    batch_job *j = arg;
    struct tok_ws *ws = tok_ws_acquire(j->tok);
    if (!ws) {
        atomic_store(&j->rc, TOKENIZER_ENOMEM);
        return NULL;
    }
    for (;;) {
        size_t s = atomic_fetch_add(&j->next, BATCH_CHUNK);
        if (s >= j->n || atomic_load_explicit(&j->rc, memory_order_relaxed))
            break;
        size_t e = s + BATCH_CHUNK < j->n ? s + BATCH_CHUNK : j->n;
        for (size_t i = s; i < e; i++) {
            uint64_t cnt = 0;
            tokenizer_ids *o = j->outs ? &j->outs[i] : NULL;
            if (o)
                o->len = 0;
            int rc = tok_run(j->tok, ws, (const uint8_t *)j->texts[i], j->lens[i], o, &cnt);
            if (rc) {
                int zero = 0;
                atomic_compare_exchange_strong(&j->rc, &zero, rc);
                break;
            }
            if (j->counts)
                j->counts[i] = (int64_t)cnt;
        }
    }
    tok_ws_release(j->tok, ws);
    return NULL;
}

static int run_batch(batch_job *j, unsigned threads)
{
    if (threads <= 1 || j->n <= BATCH_CHUNK) {
        batch_worker(j);
        return atomic_load(&j->rc);
    }
    pthread_t *th = malloc(threads * sizeof *th);
    if (!th)
        return TOKENIZER_ENOMEM;
    unsigned started = 0;
    for (unsigned i = 1; i < threads; i++)
        if (pthread_create(&th[started], NULL, batch_worker, j) == 0)
            started++;
    batch_worker(j);
    for (unsigned i = 0; i < started; i++)
        pthread_join(th[i], NULL);
    free(th);
    return atomic_load(&j->rc);
}

int tokenizer_count_batch(const tokenizer *tok, size_t n, const char *const *texts, const size_t *lens,
                          int64_t *counts, unsigned threads)
{
    batch_job j = {.tok = tok, .n = n, .texts = texts, .lens = lens, .counts = counts};
    atomic_init(&j.next, 0);
    atomic_init(&j.rc, 0);
    return run_batch(&j, threads);
}

int tokenizer_encode_batch(const tokenizer *tok, size_t n, const char *const *texts, const size_t *lens,
                           tokenizer_ids *outs, unsigned threads)
{
    batch_job j = {.tok = tok, .n = n, .texts = texts, .lens = lens, .outs = outs};
    atomic_init(&j.next, 0);
    atomic_init(&j.rc, 0);
    return run_batch(&j, threads);
}

void tokenizer_ids_free(tokenizer_ids *v)
{
    free(v->ids);
    v->ids = NULL;
    v->len = v->cap = 0;
}

const char *tokenizer_strerror(int code)
{
    switch (code) {
    case TOKENIZER_OK:
        return "success";
    case TOKENIZER_ENOMEM:
        return "out of memory";
    case TOKENIZER_EINTERNAL:
        return "regex engine error";
    default:
        return "unknown error";
    }
}

uint32_t tokenizer_vocab_size(const tokenizer *tok)
{
    return tok->vocab_size;
}

uint64_t tokenizer_fnv1a64(const uint32_t *ids, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++)
        for (int k = 0; k < 4; k++) {
            h ^= (ids[i] >> (8 * k)) & 0xFF;
            h *= 0x100000001b3ull;
        }
    return h;
}
