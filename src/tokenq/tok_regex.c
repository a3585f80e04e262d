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
 *   \p{..}  general categories (and \d = \p{Nd}): Hugging Face's Oniguruma has
 *           Unicode 16.0 tables, Debian 12's PCRE2 Unicode 14.0 (9,272 letters,
 *           773 symbols, ... more). Each category becomes PCRE2's own \p plus
 *           the code points that PCRE2 places elsewhere, found once per process
 *           by asking the linked PCRE2 (explicit ranges if it has any the
 *           other way round), so the split does not depend on PCRE2's version.
 *   \w      Oniguruma's \w, as explicit ranges from the same tables.
 * Other \p{..} properties (scripts, binary properties) are PCRE2's own.
 * tiktoken patterns (fancy-regex) use the same \s and \w, but ^ and $ anchor
 * at the ends of the text.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenq/tok_internal.h"

#define SPACE_MEMBERS "\\x{9}-\\x{d}\\x{20}\\x{85}\\x{a0}\\x{1680}\\x{2000}-\\x{200a}\\x{2028}\\x{2029}\\x{202f}\\x{205f}\\x{3000}"
/* The complement of SPACE_MEMBERS, for \S inside a class. */
#define NONSPACE_MEMBERS                                                                                    \
    "\\x{0}-\\x{8}\\x{e}-\\x{1f}\\x{21}-\\x{84}\\x{86}-\\x{9f}\\x{a1}-\\x{167f}\\x{1681}-\\x{1fff}"         \
    "\\x{200b}-\\x{2027}\\x{202a}-\\x{202e}\\x{2030}-\\x{205e}\\x{2060}-\\x{2fff}\\x{3001}-\\x{10ffff}"
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
/* s must be a string literal: the "" on both sides make anything else (a
 * pointer, a ?: of two literals, whose sizeof is a pointer's) a syntax error */
#define SB_LIT(b, s) sb_put((b), "" s "", sizeof("" s "") - 1)

static void sb_range(sbuf *b, uint32_t lo, uint32_t hi)
{
    char t[40];
    int n = lo == hi ? snprintf(t, sizeof t, "\\x{%x}", (unsigned)lo)
                     : snprintf(t, sizeof t, "\\x{%x}-\\x{%x}", (unsigned)lo, (unsigned)hi);
    sb_put(b, t, (size_t)n);
}

/* ---------------- general categories ---------------- */

/* The linked PCRE2's general category of every code point, as runs
 * (start << 5 | category), asked once per process. */
static uint32_t *p2_runs;
static size_t p2_nruns;
static pthread_once_t p2_once = PTHREAD_ONCE_INIT;

static void p2_build(void)
{
    uint8_t *s = malloc(0x110000 * 4), *gc = malloc(0x110000);
    uint32_t *runs = NULL;
    sbuf pat = {0};
    pcre2_code *re = NULL;
    pcre2_match_data *md = NULL;
    if (!s || !gc)
        goto out;
    size_t n = 0;
    for (uint32_t cp = 0; cp < 0x110000; cp++) {
        gc[cp] = cp >= 0xD800 && cp <= 0xDFFF ? TOK_GC_CS : TOK_GC_COUNT - 1;
        if (gc[cp] != TOK_GC_CS)
            n += tok_utf8_encode(cp, s + n);
    }
    /* one group per category: the group that matched names the run's category */
    for (int g = 0; g < TOK_GC_COUNT; g++) {
        if (g)
            SB_LIT(&pat, "|");
        SB_LIT(&pat, "(\\p{");
        sb_put(&pat, tok_ucd_gc_names[g], 2);
        SB_LIT(&pat, "}+)");
    }
    int ec;
    PCRE2_SIZE eo;
    if (pat.oom || !(re = pcre2_compile((PCRE2_SPTR)pat.p, pat.len, PCRE2_UTF | PCRE2_UCP, &ec, &eo, NULL)))
        goto out;
    (void)pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);
    if (!(md = pcre2_match_data_create_from_pattern(re, NULL)))
        goto out;
    PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
    for (size_t pos = 0; pos < n;) {
        int rc = pcre2_match(re, s, n, pos, PCRE2_NO_UTF_CHECK, md, NULL);
        if (rc < 2)
            break;
        for (size_t i = ov[0], l; i < ov[1]; i += l)
            gc[tok_utf8_decode(s + i, &l)] = (uint8_t)(rc - 2);
        pos = ov[1] > ov[0] ? ov[1] : ov[0] + tok_utf8_len(s[ov[0]]);
    }
    size_t nr = 0;
    for (uint32_t cp = 0; cp < 0x110000; cp++)
        nr += cp == 0 || gc[cp] != gc[cp - 1];
    if (!(runs = malloc(nr * sizeof *runs)))
        goto out;
    nr = 0;
    for (uint32_t cp = 0; cp < 0x110000; cp++)
        if (cp == 0 || gc[cp] != gc[cp - 1])
            runs[nr++] = cp << 5 | gc[cp];
    p2_runs = runs;
    p2_nruns = nr;
out:
    pcre2_match_data_free(md);
    pcre2_code_free(re);
    free(pat.p);
    free(gc);
    free(s);
}

static const struct {
    const char *name; /* lower case, without ' ', '-', '_' (Oniguruma ignores them) */
    uint32_t mask;
} GC_NAMES[] = {
    {"l", 0x1f}, {"letter", 0x1f}, {"lc", 0x7}, {"l&", 0x7}, {"casedletter", 0x7},
    {"lu", 1u << 0}, {"uppercaseletter", 1u << 0}, {"ll", 1u << 1}, {"lowercaseletter", 1u << 1},
    {"lt", 1u << 2}, {"titlecaseletter", 1u << 2}, {"lm", 1u << 3}, {"modifierletter", 1u << 3},
    {"lo", 1u << 4}, {"otherletter", 1u << 4},
    {"m", 0xe0}, {"mark", 0xe0}, {"combiningmark", 0xe0}, {"mn", 1u << 5}, {"nonspacingmark", 1u << 5},
    {"mc", 1u << 6}, {"spacingmark", 1u << 6}, {"me", 1u << 7}, {"enclosingmark", 1u << 7},
    {"n", 0x700}, {"number", 0x700}, {"nd", 1u << 8}, {"decimalnumber", 1u << 8}, {"nl", 1u << 9},
    {"letternumber", 1u << 9}, {"no", 1u << 10}, {"othernumber", 1u << 10},
    {"p", 0x3f800}, {"punctuation", 0x3f800}, {"pc", 1u << 11}, {"connectorpunctuation", 1u << 11},
    {"pd", 1u << 12}, {"dashpunctuation", 1u << 12}, {"ps", 1u << 13}, {"openpunctuation", 1u << 13},
    {"pe", 1u << 14}, {"closepunctuation", 1u << 14}, {"pi", 1u << 15}, {"initialpunctuation", 1u << 15},
    {"pf", 1u << 16}, {"finalpunctuation", 1u << 16}, {"po", 1u << 17}, {"otherpunctuation", 1u << 17},
    {"s", 0x3c0000}, {"symbol", 0x3c0000}, {"sm", 1u << 18}, {"mathsymbol", 1u << 18}, {"sc", 1u << 19},
    {"currencysymbol", 1u << 19}, {"sk", 1u << 20}, {"modifiersymbol", 1u << 20}, {"so", 1u << 21},
    {"othersymbol", 1u << 21},
    {"z", 0x1c00000}, {"separator", 0x1c00000}, {"zs", 1u << 22}, {"spaceseparator", 1u << 22},
    {"zl", 1u << 23}, {"lineseparator", 1u << 23}, {"zp", 1u << 24}, {"paragraphseparator", 1u << 24},
    {"c", 0x3e000000}, {"other", 0x3e000000}, {"cc", 1u << 25}, {"control", 1u << 25}, {"cf", 1u << 26},
    {"format", 1u << 26}, {"cs", 1u << 27}, {"surrogate", 1u << 27}, {"co", 1u << 28}, {"privateuse", 1u << 28},
    {"cn", 1u << 29}, {"unassigned", 1u << 29},
};
#define GC_ALL ((1u << TOK_GC_COUNT) - 1)

/* The category mask a \p{name} stands for, or 0 if it is not a category. */
static uint32_t gc_mask(const char *name, size_t n)
{
    char k[32];
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        char ch = name[i];
        if (ch == ' ' || ch == '_' || ch == '-')
            continue;
        if (o + 1 >= sizeof k)
            return 0;
        k[o++] = (char)(ch >= 'A' && ch <= 'Z' ? ch + 32 : ch);
    }
    k[o] = 0;
    for (size_t i = 0; i < sizeof GC_NAMES / sizeof GC_NAMES[0]; i++)
        if (strcmp(k, GC_NAMES[i].name) == 0)
            return GC_NAMES[i].mask;
    return 0;
}

/* Class members (no brackets) for the Unicode 16.0 code points whose category
 * is in mask. Returns 0, or -1 if PCRE2's categories could not be asked. */
static int gc_members(sbuf *out, uint32_t mask)
{
    pthread_once(&p2_once, p2_build);
    if (!p2_runs)
        return -1;
    /* walk both run lists: additions are in mask for Unicode 16.0 but not for
     * PCRE2; a code point the other way round means PCRE2's \p cannot be used */
    sbuf adds = {0};
    bool removals = false;
    size_t i = 0, j = 0;
    uint32_t add_lo = 0, add_hi = 0;
    bool in_add = false;
    for (uint32_t cp = 0; cp < 0x110000;) {
        while (i + 1 < tok_ucd_gc_nruns && tok_ucd_gc_runs[i + 1] >> 5 <= cp)
            i++;
        while (j + 1 < p2_nruns && p2_runs[j + 1] >> 5 <= cp)
            j++;
        uint32_t next = 0x110000;
        if (i + 1 < tok_ucd_gc_nruns && tok_ucd_gc_runs[i + 1] >> 5 < next)
            next = tok_ucd_gc_runs[i + 1] >> 5;
        if (j + 1 < p2_nruns && p2_runs[j + 1] >> 5 < next)
            next = p2_runs[j + 1] >> 5;
        bool u = mask >> (tok_ucd_gc_runs[i] & 31) & 1, p = mask >> (p2_runs[j] & 31) & 1;
        if (p && !u)
            removals = true;
        if (u && !p) {
            if (in_add && add_hi + 1 == cp) {
                add_hi = next - 1;
            } else {
                if (in_add)
                    sb_range(&adds, add_lo, add_hi);
                add_lo = cp;
                add_hi = next - 1;
                in_add = true;
            }
        }
        cp = next;
    }
    if (in_add)
        sb_range(&adds, add_lo, add_hi);
    if (removals) {
        /* the exact ranges, category by category merged */
        bool open = false;
        uint32_t lo = 0;
        for (size_t r = 0; r < tok_ucd_gc_nruns; r++) {
            bool in = mask >> (tok_ucd_gc_runs[r] & 31) & 1;
            uint32_t start = tok_ucd_gc_runs[r] >> 5;
            if (in && !open) {
                lo = start;
                open = true;
            } else if (!in && open) {
                sb_range(out, lo, start - 1);
                open = false;
            }
        }
        if (open)
            sb_range(out, lo, 0x10FFFF);
    } else {
        static const struct {
            char name;
            uint32_t bits;
        } MAJOR[] = {{'L', 0x1f}, {'M', 0xe0}, {'N', 0x700}, {'P', 0x3f800},
                     {'S', 0x3c0000}, {'Z', 0x1c00000}, {'C', 0x3e000000}};
        for (size_t m = 0; m < sizeof MAJOR / sizeof MAJOR[0]; m++) {
            if ((mask & MAJOR[m].bits) == MAJOR[m].bits) {
                char t[8] = {'\\', 'p', '{', MAJOR[m].name, '}'};
                sb_put(out, t, 5);
                continue;
            }
            for (int g = 0; g < TOK_GC_COUNT; g++)
                if ((MAJOR[m].bits & mask) >> g & 1) {
                    SB_LIT(out, "\\p{");
                    sb_put(out, tok_ucd_gc_names[g], 2);
                    SB_LIT(out, "}");
                }
        }
        if (adds.len)
            sb_put(out, adds.p, adds.len);
    }
    bool oom = adds.oom;
    free(adds.p);
    if (oom)
        out->oom = true;
    return 0;
}

/* A category class anywhere in a pattern: negated, inside [...] or not. */
static int gc_class(sbuf *out, uint32_t mask, bool negate, bool in_class)
{
    if (in_class)
        return gc_members(out, negate ? GC_ALL & ~mask : mask);
    SB_LIT(out, "[");
    if (negate)
        SB_LIT(out, "^");
    int rc = gc_members(out, mask);
    SB_LIT(out, "]");
    return rc;
}

/* Class members for \w: Oniguruma's, or with rust set Rust regex's (which
 * has the joiners and not U+00B2, B3, B9, BC-BE); complemented with negate. */
static void word_members(sbuf *out, bool negate, bool rust)
{
    size_t k = 0;
    bool open = false;
    uint32_t lo = 0;
    for (uint32_t cp = 0; cp <= 0x110000; cp++) {
        bool in = false;
        if (cp < 0x110000) {
            while (k < tok_ucd_word_ntoggles && tok_ucd_word_toggles[k] <= cp)
                k++;
            in = k & 1;
            if (rust && (cp == 0xB2 || cp == 0xB3 || cp == 0xB9 || (cp >= 0xBC && cp <= 0xBE)))
                in = false;
            if (rust && (cp == 0x200C || cp == 0x200D))
                in = true;
            in ^= negate;
        }
        if (in && !open) {
            lo = cp;
            open = true;
        } else if (!in && open) {
            sb_range(out, lo, cp - 1);
            open = false;
        }
    }
}

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
            case 'W':
                if (!in_class && e == 'W')
                    SB_LIT(out, "[^");
                else if (!in_class)
                    SB_LIT(out, "[");
                word_members(out, in_class && e == 'W', tiktoken);
                if (!in_class)
                    SB_LIT(out, "]");
                continue;
            case 'd':
            case 'D':
                if (gc_class(out, 1u << 8, e == 'D', in_class))
                    goto nomem;
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
            case 'B': {
                if (in_class)
                    break; /* backspace in a class in both */
                /* a boundary: word on one side only (\b) or on both or neither (\B) */
                sbuf w = {0};
                SB_LIT(&w, "[");
                word_members(&w, false, tiktoken);
                SB_LIT(&w, "]");
                if (w.oom) {
                    free(w.p);
                    goto nomem;
                }
                SB_LIT(out, "(?:(?<=");
                sb_put(out, w.p, w.len);
                if (e == 'b')
                    SB_LIT(out, ")(?!");
                else
                    SB_LIT(out, ")(?=");
                sb_put(out, w.p, w.len);
                SB_LIT(out, ")|(?<!");
                sb_put(out, w.p, w.len);
                if (e == 'b')
                    SB_LIT(out, ")(?=");
                else
                    SB_LIT(out, ")(?!");
                sb_put(out, w.p, w.len);
                SB_LIT(out, "))");
                free(w.p);
                continue;
            }
            case 'p':
            case 'P':
                if (i + 1 < n && pat[i + 1] == '{') {
                    const char *name = pat + i + 2, *close = memchr(pat + i, '}', n - i);
                    if (!close) {
                        snprintf(err, errlen, "unterminated \\%c{", e);
                        return -1;
                    }
                    bool negate = e == 'P';
                    if (name < close && *name == '^') {
                        negate = !negate;
                        name++;
                    }
                    uint32_t mask = gc_mask(name, (size_t)(close - name));
                    if (mask) {
                        if (gc_class(out, mask, negate, in_class))
                            goto nomem;
                        i = (size_t)(close - pat);
                        continue;
                    }
                }
                /* fall through - other properties are copied whole */
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
    if (out->oom)
        goto nomem;
    return 0;
nomem:
    snprintf(err, errlen, "out of memory");
    return -1;
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
