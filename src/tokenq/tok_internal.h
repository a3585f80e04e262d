/*
 * tok_internal.h: the tokenizer's internal structures, shared by its files.
 * Not part of the module's interface (that is tokenizer.h).
 */
#ifndef OBSD_TOKENQ_TOK_INTERNAL_H
#define OBSD_TOKENQ_TOK_INTERNAL_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "tokenq/tokenizer.h"

#define TOK_NONE UINT32_MAX
#define TOK_LINEAR_MAX 48
/* at most this many Splits cut pieces on the direct path (tokenizer.direct_kinds) */
#define TOK_MAX_DIRECT 4

/* ---- byte-string -> id hash (vocab, pre-token cache) ---- */
typedef struct {
    uint32_t off, len, id, hash;
} tok_slot;

typedef struct {
    tok_slot *slots; /* len == UINT32_MAX: empty */
    uint32_t mask;
    uint32_t count;
    uint8_t *bytes; /* key storage */
    size_t nbytes, capbytes;
} tok_strmap;

uint32_t tok_hash(const uint8_t *p, size_t n);

/* a[0..n) == b[0..n): most keys are a few bytes, where a memcmp call costs
 * more than the comparison. */
static inline bool tok_key_eq(const uint8_t *a, const uint8_t *b, size_t n)
{
    if (n >= 8 && n <= 16) {
        uint64_t x0, x1, y0, y1;
        memcpy(&x0, a, 8);
        memcpy(&y0, b, 8);
        memcpy(&x1, a + n - 8, 8);
        memcpy(&y1, b + n - 8, 8);
        return ((x0 ^ y0) | (x1 ^ y1)) == 0;
    }
    if (n >= 4 && n < 8) {
        uint32_t x0, x1, y0, y1;
        memcpy(&x0, a, 4);
        memcpy(&y0, b, 4);
        memcpy(&x1, a + n - 4, 4);
        memcpy(&y1, b + n - 4, 4);
        return ((x0 ^ y0) | (x1 ^ y1)) == 0;
    }
    if (n < 4) {
        for (size_t i = 0; i < n; i++)
            if (a[i] != b[i])
                return false;
        return true;
    }
    return memcmp(a, b, n) == 0;
}
int tok_strmap_init(tok_strmap *m, size_t expected);
void tok_strmap_free(tok_strmap *m);
/* Inserts or overwrites; returns 0 or -1 (ENOMEM). */
int tok_strmap_put(tok_strmap *m, const uint8_t *key, size_t len, uint32_t id);
uint32_t tok_strmap_get(const tok_strmap *m, const uint8_t *key, size_t len);
/* The same with h == tok_hash(key, len) already known. */
uint32_t tok_strmap_get_hashed(const tok_strmap *m, const uint8_t *key, size_t len, uint32_t h);

/* ---- (left, right) -> (rank, new id) ---- */
typedef struct {
    uint64_t key; /* UINT64_MAX: empty */
    uint32_t rank, new_id;
} tok_pair;

typedef struct {
    tok_pair *slots;
    uint64_t mask;
    size_t count;
} tok_pairmap;

int tok_pairmap_init(tok_pairmap *m, size_t expected);
void tok_pairmap_free(tok_pairmap *m);
int tok_pairmap_put(tok_pairmap *m, uint32_t a, uint32_t b, uint32_t rank, uint32_t new_id);

static inline const tok_pair *tok_pairmap_get(const tok_pairmap *m, uint32_t a, uint32_t b)
{
    uint64_t key = ((uint64_t)a << 32) | b;
    uint64_t i = (key * 0x9E3779B97F4A7C15ull) >> 20;
    for (;; i++) {
        const tok_pair *p = &m->slots[i & m->mask];
        if (p->key == key)
            return p;
        if (p->key == UINT64_MAX)
            return NULL;
    }
}

/* ---- added tokens: a byte trie matched leftmost-longest ---- */
typedef struct {
    uint32_t id;
    bool single_word, lstrip, rstrip;
} tok_added;

typedef struct {
    /* trie edges: (node << 8 | byte) -> child, in a hash; node 0 is the root */
    uint64_t *edge_keys; /* UINT64_MAX: empty */
    uint32_t *edge_vals;
    uint64_t edge_mask;
    int32_t *terminal; /* per node: index into tokens, or -1 */
    uint32_t nnodes, capnodes;
    tok_added *tokens;
    uint32_t ntokens;
    uint8_t first[256]; /* bytes that can start a token */
    size_t maxlen;
} tok_trie;

/* ---- pre-tokenizers ---- */
enum tok_pt_kind { PT_SPLIT, PT_BYTELEVEL, PT_DIGITS, PT_METASPACE };
enum tok_behavior { B_REMOVED, B_ISOLATED, B_MERGED_PREV, B_MERGED_NEXT, B_CONTIGUOUS };
enum tok_prepend { PREPEND_ALWAYS, PREPEND_FIRST, PREPEND_NEVER };

/* Split patterns with a hand-written matcher (tok_split.c). */
enum { TOK_SPLIT_REGEX, TOK_SPLIT_LLAMA3, TOK_SPLIT_QWEN, TOK_SPLIT_DIGITS3, TOK_SPLIT_CJK, TOK_SPLIT_DEEPSEEK };

typedef struct {
    enum tok_pt_kind kind;
    pcre2_code *re;     /* Split with a regex; ByteLevel use_regex */
    int split_kind;     /* TOK_SPLIT_*: a matcher that gives what re gives, faster */
    uint8_t *literal;   /* Split with a String pattern */
    size_t literal_len;
    enum tok_behavior behavior;
    bool invert;
    bool add_prefix_space; /* ByteLevel */
    bool individual;       /* Digits */
    uint8_t repl[4];       /* Metaspace replacement (one char) */
    uint8_t repl_len;
    enum tok_prepend prepend;
    bool split;
} tok_pretok;

/* ---- the tokenizer ---- */
struct tok_ws;

struct tokenizer {
    /* model */
    tok_strmap vocab;   /* key bytes (raw bytes in byte-level mode) -> id */
    tok_pairmap pairs;
    /* the same pairs packed as a << 38 | b << 20 | rank, 8 bytes a slot (a
     * quarter of the memory: lookups miss the caches less), and the new id of
     * each rank; NULL if ids or ranks do not fit (pairs is used then) */
    uint64_t *pair8;
    uint64_t pair8_mask;
    uint32_t *rank_newid;
    bool byte_level;    /* a ByteLevel pre-tokenizer maps bytes to chars */
    bool ignore_merges; /* whole-piece vocab hit wins */
    bool byte_fallback, fuse_unk;
    uint32_t unk_id;    /* TOK_NONE if no unk token */
    uint8_t *prefix, *suffix; /* continuing_subword_prefix / end_of_word_suffix, NULL if none */
    size_t prefix_len, suffix_len;
    uint32_t byte_id[256];    /* byte-level, no prefix/suffix: initial symbol per byte */
    bool simple_bytes;        /* byte_id covers every byte */
    uint64_t *byte_pair;      /* simple_bytes: [b1 << 8 | b2] -> rank << 32 | new id, UINT64_MAX none */
    uint32_t fallback_byte[256]; /* byte_fallback: id of "<0xXX>", TOK_NONE if missing */
    uint32_t vocab_size;
    /* bitmap over ids: BPE of the token's own bytes gives the token itself, so a
     * piece equal to it needs no merging (what ignore_merges does for all) */
    uint8_t *whole_ok;
    uint32_t whole_ok_bits;

    /* added tokens: matched on raw text, then (normalized:true) on normalized text */
    tok_trie added_raw, added_norm;

    /* normalizer */
    bool nfc;
    uint8_t *nfc_inert;   /* bitmap over code points: never changed by NFC and never composes */
    uint8_t *nfc_barrier; /* bitmap: after Unicode 9.0 and normalized by utf8proc, not by HF */

    /* pre-tokenizers */
    tok_pretok *pretoks;
    size_t npretoks;
    bool regex_only; /* tests: PCRE2 even where a hand-written matcher exists */
    /* When the pre-tokenizer is only Splits with hand-written matchers
     * (Isolated, not inverted) and then a ByteLevel without regex or prefix
     * space, their kinds in order: encoding cuts each piece by the next
     * matcher and runs BPE on the pieces directly. ndirect 0: the general path. */
    int direct_kinds[TOK_MAX_DIRECT];
    size_t ndirect;   /* <= TOK_MAX_DIRECT */
    /* pieces of up to this many symbols merge by rescanning, longer ones by
     * rank groups (TOK_LINEAR_MAX; tests move it to compare the two) */
    size_t linear_max;

    /* workspaces, one per concurrent caller */
    pthread_mutex_t ws_lock;
    struct tok_ws *ws_free; /* idle workspaces */
    struct tok_ws *ws_all;  /* every workspace, for freeing */
};

/* The (rank, new id) of the merge of a and b; false if there is none. */
static inline bool tok_pair_find(const tokenizer *t, uint32_t a, uint32_t b, uint32_t *rank, uint32_t *new_id)
{
    if (t->pair8) {
        uint64_t key = (uint64_t)a << 18 | b;
        for (uint64_t i = (key * 0x9E3779B97F4A7C15ull) >> 24;; i++) {
            uint64_t e = t->pair8[i & t->pair8_mask];
            if (e >> 20 == key) {
                *rank = (uint32_t)(e & 0xFFFFF);
                *new_id = t->rank_newid[*rank];
                return true;
            }
            if (e == UINT64_MAX)
                return false;
        }
    }
    const tok_pair *p = tok_pairmap_get(&t->pairs, a, b);
    if (!p)
        return false;
    *rank = p->rank;
    *new_id = p->new_id;
    return true;
}

/* tok_regex.c */
/* Compiles an Oniguruma-dialect pattern (Hugging Face) or, with tiktoken set,
 * a fancy-regex one, rewriting what PCRE2 reads differently. */
pcre2_code *tok_regex_compile(const char *pattern, size_t len, bool tiktoken, char *err, size_t errlen);

/* tok_split.c */
/* The TOK_SPLIT_* kind of a Split pattern (exact text of the known files). */
int tok_split_kind(const char *pattern, size_t len);
/* Builds the class table once per process; 0, or -1 if out of memory. */
int tok_split_init(void);
/* The first match of a hand-written kind in p[pos..n): true and its bounds,
 * or false if there is none. p is valid UTF-8. */
bool tok_split_next(int kind, const uint8_t *p, size_t n, size_t pos, size_t *ms, size_t *me);

/* tok_bpe.c */
struct tok_ws *tok_ws_acquire(const tokenizer *tok);
void tok_ws_release(const tokenizer *tok, struct tok_ws *ws);
void tok_ws_destroy(struct tok_ws *ws);
void tok_ws_destroy_all(tokenizer *tok);
/* Runs the whole pipeline; appends ids to out (if non-NULL) and adds the
 * number of ids to *count. */
int tok_run(const tokenizer *tok, struct tok_ws *ws, const uint8_t *text, size_t len,
            tokenizer_ids *out, uint64_t *count);
/* BPE of one piece in the model's own alphabet; used at load too. */
int tok_bpe_piece(const tokenizer *tok, struct tok_ws *ws, const uint8_t *p, size_t n,
                  tokenizer_ids *out, uint64_t *count);

/* Hugging Face's NFC (Unicode 9.0 tables) of valid UTF-8; malloc'ed, NULL if
 * out of memory. */
uint8_t *tok_nfc(const tokenizer *tok, const uint8_t *p, size_t n, size_t *outlen);

/* Marks whole_ok; run once at load. */
int tok_mark_whole_tokens(tokenizer *tok);

/* tok_utf8.c */
/* Returns the length of the valid UTF-8 prefix of s. */
size_t tok_utf8_valid_prefix(const uint8_t *s, size_t n);
/* Decodes one code point of valid UTF-8 at s; sets *len. */
static inline uint32_t tok_utf8_decode(const uint8_t *s, size_t *len)
{
    uint8_t c = s[0];
    if (c < 0x80) {
        *len = 1;
        return c;
    }
    if (c < 0xE0) {
        *len = 2;
        return ((uint32_t)(c & 0x1F) << 6) | (s[1] & 0x3F);
    }
    if (c < 0xF0) {
        *len = 3;
        return ((uint32_t)(c & 0x0F) << 12) | ((uint32_t)(s[1] & 0x3F) << 6) | (s[2] & 0x3F);
    }
    *len = 4;
    return ((uint32_t)(c & 0x07) << 18) | ((uint32_t)(s[1] & 0x3F) << 12) | ((uint32_t)(s[2] & 0x3F) << 6) |
           (s[3] & 0x3F);
}
static inline size_t tok_utf8_len(uint8_t c)
{
    return c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
}
size_t tok_utf8_encode(uint32_t cp, uint8_t *out);
/* Replaces invalid sequences by U+FFFD like from_utf8_lossy; malloc'ed result. */
uint8_t *tok_utf8_lossy(const uint8_t *s, size_t n, size_t *outlen);
/* tok_ucd.c (generated by tok_ucd_gen.py): Unicode 16.0 general categories
 * and \w as Hugging Face's Oniguruma has them, and the code points of Unicode
 * 9.0, the version of Hugging Face's NFC tables. */
enum { TOK_GC_COUNT = 30, TOK_GC_CS = 27 };
extern const char *const tok_ucd_gc_names[TOK_GC_COUNT]; /* "Lu", "Ll", ... "Cn" */
extern const uint32_t tok_ucd_gc_runs[];                /* start << 5 | category */
extern const size_t tok_ucd_gc_nruns;
extern const uint32_t tok_ucd_word_toggles[];           /* membership flips at each */
extern const size_t tok_ucd_word_ntoggles;
extern const uint32_t tok_ucd_unicode9_toggles[];
extern const size_t tok_ucd_unicode9_ntoggles;
/* General category (index into tok_ucd_gc_names) of a code point. */
unsigned tok_gc(uint32_t cp);
/* Membership in a toggle list. */
bool tok_toggle_member(const uint32_t *toggles, size_t n, uint32_t cp);

/* Unicode White_Space (Rust char::is_whitespace; equal to Oniguruma \s). */
bool tok_is_space(uint32_t cp);
/* Rust regex \w: Alphabetic, M, Nd, Pc, Join_Control (Unicode 16.0). */
bool tok_is_word(uint32_t cp);
/* char::is_numeric: Nd, Nl, No (Unicode 16.0). */
bool tok_is_numeric(uint32_t cp);

/* The GPT-2 byte <-> char map of ByteLevel. */
uint32_t tok_byte_to_char(uint8_t b);
/* Returns the byte for a ByteLevel char, or -1. */
int tok_char_to_byte(uint32_t cp);

#endif
