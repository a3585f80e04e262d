/*
 * tok_split.c: hand-written matchers for the split patterns of the Llama-3,
 * Qwen2/3 and DeepSeek-V3 tokenizer files.
 *
 * Pre-tokenizing dominates encoding; these do what PCRE2 does for exactly
 * these patterns (leftmost-first alternation with backtracking, as in
 * Oniguruma) with one table lookup per character. The character classes come
 * from the same Unicode 16.0 tables (tok_ucd.c) that the regex rewrite uses,
 * so they give the same pieces as Hugging Face's Oniguruma. Any other
 * pattern goes to PCRE2.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "tokenq/tok_internal.h"

/* Per code point: letter, number, mark, punctuation, symbol, Oniguruma \s. */
enum { C_L = 1, C_N = 2, C_M = 4, C_P = 8, C_S = 16, C_WS = 32 };

/* Two-stage table: block index per 256 code points, then 256 flag bytes per
 * distinct block. */
static uint16_t *cls_index;
static uint8_t *cls_blocks;
static pthread_once_t cls_once = PTHREAD_ONCE_INIT;

static uint8_t gc_flags(unsigned gc)
{
    if (gc <= 4)
        return C_L;
    if (gc <= 7)
        return C_M;
    if (gc <= 10)
        return C_N;
    if (gc <= 17)
        return C_P;
    if (gc <= 21)
        return C_S;
    return 0;
}

static void cls_build(void)
{
    enum { NBLK = 0x110000 / 256 };
    uint16_t *index = malloc(NBLK * sizeof *index);
    uint8_t *blocks = malloc((size_t)NBLK * 256); /* shrunk below */
    uint8_t cur[256];
    if (!index || !blocks) {
        free(index);
        free(blocks);
        return;
    }
    size_t nb = 0, r = 0;
    for (uint32_t b = 0; b < NBLK; b++) {
        for (uint32_t k = 0; k < 256; k++) {
            uint32_t cp = b << 8 | k;
            while (r + 1 < tok_ucd_gc_nruns && tok_ucd_gc_runs[r + 1] >> 5 <= cp)
                r++;
            cur[k] = (uint8_t)(gc_flags(tok_ucd_gc_runs[r] & 31) | (tok_is_space(cp) ? C_WS : 0));
        }
        /* most blocks repeat the previous one or are uniform; comparing with
         * the last few distinct blocks keeps the table small */
        size_t found = nb;
        for (size_t j = nb > 8 ? nb - 8 : 0; j < nb; j++)
            if (memcmp(blocks + j * 256, cur, 256) == 0)
                found = j;
        if (found == nb)
            memcpy(blocks + nb++ * 256, cur, 256);
        index[b] = (uint16_t)found;
    }
    uint8_t *shrunk = realloc(blocks, nb * 256);
    cls_blocks = shrunk ? shrunk : blocks;
    cls_index = index;
}

int tok_split_init(void)
{
    pthread_once(&cls_once, cls_build);
    return cls_index ? 0 : -1;
}

/* Class flags and length of the character at p[i] (valid UTF-8). */
static inline unsigned cls_at(const uint8_t *p, size_t i, uint32_t *cpo, size_t *len)
{
    uint32_t cp = p[i];
    if (cp < 0x80) {
        *len = 1;
    } else {
        cp = tok_utf8_decode(p + i, len);
    }
    *cpo = cp;
    return cls_blocks[(size_t)cls_index[cp >> 8] * 256 + (cp & 0xFF)];
}

static inline unsigned cls_of(const uint8_t *p, size_t i)
{
    uint32_t cp;
    size_t l;
    return cls_at(p, i, &cp, &l);
}

/* End of the run of characters whose flags intersect want, from i. */
static inline size_t run_end(const uint8_t *p, size_t n, size_t i, unsigned want)
{
    while (i < n) {
        uint32_t cp;
        size_t l;
        if (!(cls_at(p, i, &cp, &l) & want))
            break;
        i += l;
    }
    return i;
}

/* Characters that are none of want, with the same run rule. */
static inline size_t run_end_not(const uint8_t *p, size_t n, size_t i, unsigned reject)
{
    while (i < n) {
        uint32_t cp;
        size_t l;
        if (cls_at(p, i, &cp, &l) & reject)
            break;
        i += l;
    }
    return i;
}

static inline size_t crlf_end(const uint8_t *p, size_t n, size_t i)
{
    while (i < n && (p[i] == '\r' || p[i] == '\n'))
        i++;
    return i;
}

/* \s*[\r\n]+|\s+(?!\S)|\s+ at i, where p[i] is white space. */
static size_t space_match(const uint8_t *p, size_t n, size_t i)
{
    size_t j = i, last_nl = 0, last_start = i, count = 0;
    while (j < n) {
        uint32_t cp;
        size_t l;
        if (!(cls_at(p, j, &cp, &l) & C_WS))
            break;
        if (cp == '\r' || cp == '\n')
            last_nl = j + 1;
        last_start = j;
        count++;
        j += l;
    }
    if (last_nl) /* \s* gives back up to the last line break */
        return last_nl;
    if (j == n || count < 2) /* (?!\S) holds at the end; else \s+ */
        return j;
    return last_start; /* leave the last space for the next word */
}

/* (?i:'s|'t|'re|'ve|'m|'ll|'d) at i (p[i] == '\''): length, or 0. Oniguruma
 * folds s with S and U+017F; the others only with their upper case. */
static size_t contraction(const uint8_t *p, size_t n, size_t i)
{
    if (i + 1 >= n)
        return 0;
    uint8_t a = p[i + 1] | 0x20;
    if (a == 's' || a == 't' || a == 'm' || a == 'd')
        return 2;
    if (p[i + 1] == 0xC5 && i + 2 < n && p[i + 2] == 0xBF)
        return 3; /* U+017F */
    if (i + 2 >= n)
        return 0;
    uint8_t b = p[i + 2] | 0x20;
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l'))
        return 3;
    return 0;
}

/* The Llama-3 pattern (digits3) or the Qwen one: every position starts a match. */
static size_t llama_match(const uint8_t *p, size_t n, size_t i, bool digits3)
{
    uint32_t cp;
    size_t l;
    unsigned c = cls_at(p, i, &cp, &l);
    if (cp == '\'') {
        size_t k = contraction(p, n, i);
        if (k)
            return i + k;
    }
    /* [^\r\n\p{L}\p{N}]?\p{L}+ */
    if (c & C_L)
        return run_end(p, n, i + l, C_L);
    if (!(c & C_N) && cp != '\r' && cp != '\n' && i + l < n && (cls_of(p, i + l) & C_L))
        return run_end(p, n, i + l, C_L);
    /* \p{N}{1,3} or \p{N} */
    if (c & C_N) {
        size_t j = i + l;
        for (int k = 1; digits3 && k < 3 && j < n; k++) {
            uint32_t cp2;
            size_t l2;
            if (!(cls_at(p, j, &cp2, &l2) & C_N))
                break;
            j += l2;
        }
        return j;
    }
    /*  ?[^\s\p{L}\p{N}]+[\r\n]* */
    if (cp == ' ' && i + 1 < n && !(cls_of(p, i + 1) & (C_WS | C_L | C_N)))
        return crlf_end(p, n, run_end_not(p, n, i + 1, C_WS | C_L | C_N));
    if (!(c & C_WS))
        return crlf_end(p, n, run_end_not(p, n, i, C_WS | C_L | C_N));
    return space_match(p, n, i);
}

static bool ascii_punct(uint32_t cp)
{
    return (cp >= '!' && cp <= '/') || (cp >= ':' && cp <= '@') || (cp >= '[' && cp <= '`') ||
           (cp >= '{' && cp <= '~');
}

static bool ascii_letter(uint8_t b)
{
    return (b | 0x20) >= 'a' && (b | 0x20) <= 'z';
}

/* The third DeepSeek-V3 pattern at i: end of the match starting there, or i. */
static size_t deepseek_match(const uint8_t *p, size_t n, size_t i)
{
    uint32_t cp;
    size_t l;
    unsigned c = cls_at(p, i, &cp, &l);
    /* [!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+ */
    if (ascii_punct(cp) && i + 1 < n && ascii_letter(p[i + 1])) {
        size_t j = i + 2;
        while (j < n && ascii_letter(p[j]))
            j++;
        return j;
    }
    /* [^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+ */
    if (!(c & (C_L | C_P | C_S)) && cp != '\r' && cp != '\n' && i + l < n && (cls_of(p, i + l) & (C_L | C_M)))
        return run_end(p, n, i + l, C_L | C_M);
    if (c & (C_L | C_M))
        return run_end(p, n, i + l, C_L | C_M);
    /*  ?[\p{P}\p{S}]+[\r\n]* */
    if (cp == ' ' && i + 1 < n && (cls_of(p, i + 1) & (C_P | C_S)))
        return crlf_end(p, n, run_end(p, n, i + 1, C_P | C_S));
    if (c & (C_P | C_S))
        return crlf_end(p, n, run_end(p, n, i + l, C_P | C_S));
    if (c & C_WS)
        return space_match(p, n, i);
    return i;
}

static bool deepseek_cjk(uint32_t cp)
{
    return (cp >= 0x4E00 && cp <= 0x9FA5) || (cp >= 0x3040 && cp <= 0x30FF);
}

static const char LLAMA3[] = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
                             "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char QWEN[] = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| "
                           "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char DIGITS3[] = "\\p{N}{1,3}";
static const char CJK[] = "[\xe4\xb8\x80-\xe9\xbe\xa5\xe3\x81\x80-\xe3\x82\x9f\xe3\x82\xa0-\xe3\x83\xbf]+";
static const char DEEPSEEK[] = "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}"
                               "\\p{M}]+| ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+";

int tok_split_kind(const char *pat, size_t len)
{
    static const struct {
        const char *pat;
        size_t len;
        int kind;
    } K[] = {{LLAMA3, sizeof LLAMA3 - 1, TOK_SPLIT_LLAMA3},
             {QWEN, sizeof QWEN - 1, TOK_SPLIT_QWEN},
             {DIGITS3, sizeof DIGITS3 - 1, TOK_SPLIT_DIGITS3},
             {CJK, sizeof CJK - 1, TOK_SPLIT_CJK},
             {DEEPSEEK, sizeof DEEPSEEK - 1, TOK_SPLIT_DEEPSEEK}};
    for (size_t i = 0; i < sizeof K / sizeof K[0]; i++)
        if (len == K[i].len && memcmp(pat, K[i].pat, len) == 0)
            return K[i].kind;
    return TOK_SPLIT_REGEX;
}

bool tok_split_next(int kind, const uint8_t *p, size_t n, size_t pos, size_t *ms, size_t *me)
{
    switch (kind) {
    case TOK_SPLIT_LLAMA3:
    case TOK_SPLIT_QWEN:
        if (pos >= n)
            return false;
        *ms = pos;
        *me = llama_match(p, n, pos, kind == TOK_SPLIT_LLAMA3);
        return true;
    case TOK_SPLIT_DIGITS3:
        for (size_t i = pos; i < n;) {
            uint32_t cp;
            size_t l;
            if (cls_at(p, i, &cp, &l) & C_N) {
                size_t j = i + l;
                for (int k = 1; k < 3 && j < n; k++) {
                    size_t l2;
                    if (!(cls_at(p, j, &cp, &l2) & C_N))
                        break;
                    j += l2;
                }
                *ms = i;
                *me = j;
                return true;
            }
            i += l;
        }
        return false;
    case TOK_SPLIT_CJK:
        for (size_t i = pos; i < n;) {
            size_t l;
            uint32_t cp = tok_utf8_decode(p + i, &l);
            if (deepseek_cjk(cp)) {
                size_t j = i + l;
                while (j < n && deepseek_cjk(tok_utf8_decode(p + j, &l)))
                    j += l;
                *ms = i;
                *me = j;
                return true;
            }
            i += l;
        }
        return false;
    case TOK_SPLIT_DEEPSEEK:
        for (size_t i = pos; i < n; i += tok_utf8_len(p[i])) {
            size_t e = deepseek_match(p, n, i);
            if (e > i) {
                *ms = i;
                *me = e;
                return true;
            }
        }
        return false;
    default:
        return false;
    }
}
