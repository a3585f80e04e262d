/* tok_utf8.c: UTF-8 validation and lossy repair, character classes, the
 * ByteLevel byte map, and the hash tables the tokenizer is built on. */
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "tokenq/tok_internal.h"

/* Length of the well-formed sequence starting at s[0] (Unicode Table 3-7), or
 * 0 if it is ill-formed; *bad receives the length of the maximal subpart to
 * replace by one U+FFFD (at least 1). */
static size_t utf8_seq(const uint8_t *s, size_t n, size_t *bad)
{
    uint8_t c = s[0];
    uint8_t lo = 0x80, hi = 0xBF;
    size_t need;
    *bad = 1;
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF)
        need = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        need = 3;
        if (c == 0xE0)
            lo = 0xA0;
        else if (c == 0xED)
            hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        need = 4;
        if (c == 0xF0)
            lo = 0x90;
        else if (c == 0xF4)
            hi = 0x8F;
    } else
        return 0;
    for (size_t i = 1; i < need; i++) {
        if (i >= n)
            return 0;
        uint8_t b = s[i];
        if (i == 1 ? (b < lo || b > hi) : (b < 0x80 || b > 0xBF))
            return 0;
        *bad = i + 1;
    }
    return need;
}

size_t tok_utf8_valid_prefix(const uint8_t *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        /* ASCII fast path, 8 bytes at a time */
        while (i + 8 <= n) {
            uint64_t w;
            memcpy(&w, s + i, 8);
            if (w & 0x8080808080808080ull)
                break;
            i += 8;
        }
        if (i >= n)
            break;
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        size_t bad, k = utf8_seq(s + i, n - i, &bad);
        if (!k)
            return i;
        i += k;
    }
    return n;
}

uint8_t *tok_utf8_lossy(const uint8_t *s, size_t n, size_t *outlen)
{
    /* every bad byte becomes at most 3 bytes */
    uint8_t *out = malloc(n * 3 + 1);
    if (!out)
        return NULL;
    size_t o = 0, i = 0;
    while (i < n) {
        size_t bad, k = utf8_seq(s + i, n - i, &bad);
        if (k) {
            memcpy(out + o, s + i, k);
            o += k;
            i += k;
        } else {
            out[o++] = 0xEF;
            out[o++] = 0xBF;
            out[o++] = 0xBD;
            i += bad;
        }
    }
    *outlen = o;
    return out;
}

size_t tok_utf8_encode(uint32_t cp, uint8_t *out)
{
    if (cp < 0x80) {
        out[0] = (uint8_t)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (uint8_t)(0xC0 | (cp >> 6));
        out[1] = (uint8_t)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (uint8_t)(0xE0 | (cp >> 12));
        out[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (uint8_t)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (uint8_t)(0xF0 | (cp >> 18));
    out[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (uint8_t)(0x80 | (cp & 0x3F));
    return 4;
}

bool tok_is_space(uint32_t cp)
{
    return (cp >= 0x9 && cp <= 0xD) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
           (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F ||
           cp == 0x205F || cp == 0x3000;
}

unsigned tok_gc(uint32_t cp)
{
    size_t lo = 0, hi = tok_ucd_gc_nruns; /* last run starting at or before cp */
    while (hi - lo > 1) {
        size_t mid = (lo + hi) / 2;
        if (tok_ucd_gc_runs[mid] >> 5 <= cp)
            lo = mid;
        else
            hi = mid;
    }
    return tok_ucd_gc_runs[lo] & 31;
}

bool tok_toggle_member(const uint32_t *toggles, size_t n, uint32_t cp)
{
    size_t lo = 0, hi = n; /* number of toggles at or before cp */
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (toggles[mid] <= cp)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo & 1;
}

/* Rust regex \w (single_word): Oniguruma's \w has U+00B2, B3, B9 and BC-BE
 * besides and lacks the joiners, which Rust counts as Join_Control. */
bool tok_is_word(uint32_t cp)
{
    if (cp < 0x80)
        return (cp >= '0' && cp <= '9') || (cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z') || cp == '_';
    if (cp == 0x200C || cp == 0x200D)
        return true;
    if (cp == 0xB2 || cp == 0xB3 || cp == 0xB9 || (cp >= 0xBC && cp <= 0xBE))
        return false;
    return tok_toggle_member(tok_ucd_word_toggles, tok_ucd_word_ntoggles, cp);
}

/* char::is_numeric: Nd, Nl, No. */
bool tok_is_numeric(uint32_t cp)
{
    if (cp < 0x80)
        return cp >= '0' && cp <= '9';
    unsigned c = tok_gc(cp);
    return c >= 8 && c <= 10;
}

/* GPT-2: printable Latin-1 bytes map to themselves, the other 68 to U+0100.. in order. */
static bool byte_is_printable(unsigned b)
{
    return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
}

uint32_t tok_byte_to_char(uint8_t b)
{
    if (byte_is_printable(b))
        return b;
    unsigned n = 0;
    for (unsigned x = 0; x < b; x++)
        if (!byte_is_printable(x))
            n++;
    return 0x100 + n;
}

int tok_char_to_byte(uint32_t cp)
{
    if (cp < 0x100)
        return byte_is_printable(cp) ? (int)cp : -1;
    if (cp >= 0x100 + 68)
        return -1;
    unsigned n = cp - 0x100;
    for (unsigned x = 0; x < 256; x++)
        if (!byte_is_printable(x) && n-- == 0)
            return (int)x;
    return -1;
}

/* ---- hashing ---- */

static inline uint64_t mix64(uint64_t x)
{
    x ^= x >> 32;
    x *= 0xD6E8FEB86659FD93ull;
    x ^= x >> 32;
    return x;
}

/* The last 1..7 bytes as one little-endian word, without a variable-length
 * memcpy: two overlapping loads (4..7 bytes) or first, middle and last byte
 * (1..3); the length is mixed in separately. */
static inline uint64_t tail_word(const uint8_t *p, size_t n)
{
    if (n >= 4) {
        uint32_t a, b;
        memcpy(&a, p, 4);
        memcpy(&b, p + n - 4, 4);
        return a | (uint64_t)b << (8 * (n - 4));
    }
    return (uint64_t)p[0] | (uint64_t)p[n / 2] << 8 | (uint64_t)p[n - 1] << 16;
}

uint32_t tok_hash(const uint8_t *p, size_t n)
{
    uint64_t h = 0x9E3779B97F4A7C15ull ^ (n * 0xFF51AFD7ED558CCDull);
    size_t len = n;
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        h = mix64(h ^ w) * 0x9E3779B97F4A7C15ull;
        p += 8;
        n -= 8;
    }
    uint64_t w = 0;
    if (n) /* an empty key may come with a NULL pointer */
        w = len >= 8 ? 0 : tail_word(p, n);
    if (n && len >= 8)
        memcpy(&w, p + n - 8, 8); /* the last 8 bytes, overlapping the loop's */
    h = mix64(h ^ w ^ ((uint64_t)n << 56));
    return (uint32_t)(h ^ (h >> 32));
}

int tok_strmap_init(tok_strmap *m, size_t expected)
{
    size_t cap = 16;
    while (cap < expected * 2)
        cap <<= 1;
    memset(m, 0, sizeof *m);
    m->slots = malloc(cap * sizeof *m->slots);
    if (!m->slots)
        return -1;
    for (size_t i = 0; i < cap; i++)
        m->slots[i].len = UINT32_MAX;
    m->mask = (uint32_t)(cap - 1);
    return 0;
}

void tok_strmap_free(tok_strmap *m)
{
    free(m->slots);
    free(m->bytes);
    memset(m, 0, sizeof *m);
}

static int strmap_grow(tok_strmap *m)
{
    size_t cap = ((size_t)m->mask + 1) * 2;
    tok_slot *s = malloc(cap * sizeof *s);
    if (!s)
        return -1;
    for (size_t i = 0; i < cap; i++)
        s[i].len = UINT32_MAX;
    for (size_t i = 0; i <= m->mask; i++) {
        tok_slot *o = &m->slots[i];
        if (o->len == UINT32_MAX)
            continue;
        size_t j = o->hash & (cap - 1);
        while (s[j].len != UINT32_MAX)
            j = (j + 1) & (cap - 1);
        s[j] = *o;
    }
    free(m->slots);
    m->slots = s;
    m->mask = (uint32_t)(cap - 1);
    return 0;
}

int tok_strmap_put(tok_strmap *m, const uint8_t *key, size_t len, uint32_t id)
{
    if (len >= UINT32_MAX)
        return -1;
    if ((m->count + 1) * 2 > (size_t)m->mask + 1 && strmap_grow(m))
        return -1;
    uint32_t h = tok_hash(key, len);
    for (uint32_t i = h & m->mask;; i = (i + 1) & m->mask) {
        tok_slot *s = &m->slots[i];
        if (s->len == UINT32_MAX) {
            if (m->nbytes + len > m->capbytes) {
                size_t c = m->capbytes ? m->capbytes * 2 : 4096;
                while (c < m->nbytes + len)
                    c *= 2;
                uint8_t *b = realloc(m->bytes, c);
                if (!b)
                    return -1;
                m->bytes = b;
                m->capbytes = c;
            }
            if (len)
                memcpy(m->bytes + m->nbytes, key, len);
            s->off = (uint32_t)m->nbytes;
            s->len = (uint32_t)len;
            s->id = id;
            s->hash = h;
            m->nbytes += len;
            m->count++;
            return 0;
        }
        if (s->hash == h && s->len == len && tok_key_eq(m->bytes + s->off, key, len)) {
            s->id = id;
            return 0;
        }
    }
}

uint32_t tok_strmap_get(const tok_strmap *m, const uint8_t *key, size_t len)
{
    return tok_strmap_get_hashed(m, key, len, tok_hash(key, len));
}

uint32_t tok_strmap_get_hashed(const tok_strmap *m, const uint8_t *key, size_t len, uint32_t h)
{
    for (uint32_t i = h & m->mask;; i = (i + 1) & m->mask) {
        const tok_slot *s = &m->slots[i];
        if (s->len == UINT32_MAX)
            return TOK_NONE;
        if (s->hash == h && s->len == len && tok_key_eq(m->bytes + s->off, key, len))
            return s->id;
    }
}

int tok_pairmap_init(tok_pairmap *m, size_t expected)
{
    size_t cap = 1u << 12;
    while (cap < expected * 2)
        cap <<= 1;
    m->slots = malloc(cap * sizeof *m->slots);
    if (!m->slots)
        return -1;
    for (size_t i = 0; i < cap; i++)
        m->slots[i].key = UINT64_MAX;
    m->mask = cap - 1;
    m->count = 0;
    return 0;
}

void tok_pairmap_free(tok_pairmap *m)
{
    free(m->slots);
    m->slots = NULL;
}

static int pairmap_grow(tok_pairmap *m)
{
    size_t cap = (m->mask + 1) * 2;
    tok_pair *s = malloc(cap * sizeof *s);
    if (!s)
        return -1;
    for (size_t i = 0; i < cap; i++)
        s[i].key = UINT64_MAX;
    for (size_t i = 0; i <= m->mask; i++) {
        if (m->slots[i].key == UINT64_MAX)
            continue;
        uint64_t j = (m->slots[i].key * 0x9E3779B97F4A7C15ull) >> 20;
        while (s[j & (cap - 1)].key != UINT64_MAX)
            j++;
        s[j & (cap - 1)] = m->slots[i];
    }
    free(m->slots);
    m->slots = s;
    m->mask = cap - 1;
    return 0;
}

int tok_pairmap_put(tok_pairmap *m, uint32_t a, uint32_t b, uint32_t rank, uint32_t new_id)
{
    if ((m->count + 1) * 2 > m->mask + 1 && pairmap_grow(m))
        return -1;
    uint64_t key = ((uint64_t)a << 32) | b;
    uint64_t i = (key * 0x9E3779B97F4A7C15ull) >> 20;
    for (;; i++) {
        tok_pair *p = &m->slots[i & m->mask];
        if (p->key == UINT64_MAX) {
            p->key = key;
            p->rank = rank;
            p->new_id = new_id;
            m->count++;
            return 0;
        }
        if (p->key == key) {
            p->rank = rank;
            p->new_id = new_id;
            return 0;
        }
    }
}
