/*
 * tok_regex.c: compiling Oniguruma-dialect split patterns with PCRE2.
 *
 * Hugging Face runs its Split patterns through Oniguruma. PCRE2 (UTF, UCP)
 * splits identically once the constructs whose meaning differs are rewritten
 * (see ../shared/research/bpe_tokenizer.md, section 3c):
 *   \s \S   Oniguruma's \s is White_Space; PCRE2's also holds U+180E.
 *   \w \W   Oniguruma's \w is Alphabetic|M|Nd|Pc plus a few No digits.
 *   \b \B   word boundaries over that \w.
 *   \h \H   a hex digit in Oniguruma, horizontal space in PCRE2.
 *   ^ $     line anchors in Oniguruma: compiled with PCRE2_MULTILINE.
 *   &&      class intersection, which PCRE2 10.42 reads as a literal '&': refused.
 * tiktoken patterns (fancy-regex) use the same \s and \w, but ^ and $ anchor
 * at the ends of the text.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenq/tok_internal.h"

#define SPACE_MEMBERS "\\x{9}-\\x{d}\\x{20}\\x{85}\\x{a0}\\x{1680}\\x{2000}-\\x{200a}\\x{2028}\\x{2029}\\x{202f}\\x{205f}\\x{3000}"
/* The complement of SPACE_MEMBERS, for \S inside a class. */
#define NONSPACE_MEMBERS                                                                                    \
    "\\x{0}-\\x{8}\\x{e}-\\x{1f}\\x{21}-\\x{84}\\x{86}-\\x{9f}\\x{a1}-\\x{167f}\\x{1681}-\\x{1fff}"         \
    "\\x{200b}-\\x{2027}\\x{202a}-\\x{202e}\\x{2030}-\\x{205e}\\x{2060}-\\x{2fff}\\x{3001}-\\x{10ffff}"
#define WORD_MEMBERS "\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}\\x{b2}\\x{b3}\\x{b9}\\x{bc}-\\x{be}"
#define HEX_MEMBERS "0-9a-fA-F"

typedef struct {
    char *p;
    size_t len, cap;
    bool oom;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t c = b->cap ? b->cap * 2 : 256;
        while (c < b->len + n + 1)
            c *= 2;
        char *q = realloc(b->p, c);
        if (!q) {
            b->oom = true;
            return;
        }
        b->p = q;
        b->cap = c;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
}
#define SB_LIT(b, s) sb_put((b), (s), sizeof(s) - 1)

/* Rewrites pattern into out; returns 0 or -1 with err set. */
static int rewrite(const char *pat, size_t n, bool tiktoken, sbuf *out, char *err, size_t errlen)
{
    int in_class = 0; /* 1 inside [...] */
    for (size_t i = 0; i < n; i++) {
        char c = pat[i];
        if (c == '\\') {
            if (i + 1 >= n) {
                snprintf(err, errlen, "pattern ends with a lone backslash");
                return -1;
            }
            char e = pat[++i];
            switch (e) {
            case 's':
                if (in_class)
                    SB_LIT(out, SPACE_MEMBERS);
                else
                    SB_LIT(out, "[" SPACE_MEMBERS "]");
                continue;
            case 'S':
                if (in_class)
                    SB_LIT(out, NONSPACE_MEMBERS);
                else
                    SB_LIT(out, "[^" SPACE_MEMBERS "]");
                continue;
            case 'w':
                if (in_class)
                    SB_LIT(out, WORD_MEMBERS);
                else
                    SB_LIT(out, "[" WORD_MEMBERS "]");
                continue;
            case 'W':
                if (in_class) {
                    snprintf(err, errlen, "\\W inside a character class is not supported");
                    return -1;
                }
                SB_LIT(out, "[^" WORD_MEMBERS "]");
                continue;
            case 'h':
                if (tiktoken)
                    break;
                if (in_class)
                    SB_LIT(out, HEX_MEMBERS);
                else
                    SB_LIT(out, "[" HEX_MEMBERS "]");
                continue;
            case 'H':
                if (tiktoken)
                    break;
                if (in_class) {
                    snprintf(err, errlen, "\\H inside a character class is not supported");
                    return -1;
                }
                SB_LIT(out, "[^" HEX_MEMBERS "]");
                continue;
            case 'b':
                if (in_class)
                    break; /* backspace in a class in both */
                SB_LIT(out, "(?:(?<=[" WORD_MEMBERS "])(?![" WORD_MEMBERS "])|(?<![" WORD_MEMBERS "])(?=[" WORD_MEMBERS
                            "]))");
                continue;
            case 'B':
                if (in_class)
                    break;
                SB_LIT(out, "(?:(?<=[" WORD_MEMBERS "])(?=[" WORD_MEMBERS "])|(?<![" WORD_MEMBERS "])(?![" WORD_MEMBERS
                            "]))");
                continue;
            case 'p':
            case 'P':
            case 'x':
                /* copy \p{...} and \x{...} whole so their contents are not rewritten */
                if (i + 1 < n && pat[i + 1] == '{') {
                    const char *close = memchr(pat + i, '}', n - i);
                    if (!close) {
                        snprintf(err, errlen, "unterminated \\%c{", e);
                        return -1;
                    }
                    sb_put(out, pat + i - 1, (size_t)(close - (pat + i - 1)) + 1);
                    i = (size_t)(close - pat);
                    continue;
                }
                break;
            default:
                break;
            }
            char esc[2] = {'\\', e};
            sb_put(out, esc, 2);
            continue;
        }
        if (in_class) {
            if (c == '[') {
                if (i + 1 < n && pat[i + 1] == ':') {
                    /* POSIX bracket [:alpha:] (ASCII-only in both engines with these flags? refuse to be safe) */
                    snprintf(err, errlen, "POSIX bracket expressions are not supported");
                    return -1;
                }
                snprintf(err, errlen, "nested character classes are not supported");
                return -1;
            }
            if (c == '&' && i + 1 < n && pat[i + 1] == '&') {
                snprintf(err, errlen, "character class intersection (&&) is not supported");
                return -1;
            }
            if (c == ']')
                in_class = 0;
            sb_put(out, &c, 1);
            continue;
        }
        if (c == '[') {
            in_class = 1;
            sb_put(out, &c, 1);
            /* a ']' right after '[' or '[^' is a literal member */
            if (i + 1 < n && pat[i + 1] == '^') {
                sb_put(out, "^", 1);
                i++;
            }
            if (i + 1 < n && pat[i + 1] == ']') {
                SB_LIT(out, "\\]");
                i++;
            }
            continue;
        }
        sb_put(out, &c, 1);
    }
    if (in_class) {
        snprintf(err, errlen, "unterminated character class");
        return -1;
    }
    if (out->oom) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    return 0;
}

pcre2_code *tok_regex_compile(const char *pattern, size_t len, bool tiktoken, char *err, size_t errlen)
{
    sbuf out = {0};
    if (rewrite(pattern, len, tiktoken, &out, err, errlen)) {
        free(out.p);
        return NULL;
    }
    if (!out.p)
        SB_LIT(&out, "");
    pcre2_compile_context *cc = pcre2_compile_context_create(NULL);
    if (!cc) {
        free(out.p);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    pcre2_set_newline(cc, PCRE2_NEWLINE_LF);
    uint32_t opts = PCRE2_UTF | PCRE2_UCP;
    if (!tiktoken)
        opts |= PCRE2_MULTILINE;
    int ec;
    PCRE2_SIZE eo;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)out.p, out.len, opts, &ec, &eo, cc);
    pcre2_compile_context_free(cc);
    if (!re) {
        PCRE2_UCHAR msg[160];
        pcre2_get_error_message(ec, msg, sizeof msg);
        snprintf(err, errlen, "regex does not compile: %s", (const char *)msg);
        free(out.p);
        return NULL;
    }
    free(out.p);
    /* JIT is an optimisation: without it the interpreter gives the same splits */
    (void)pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);
    return re;
}
