/*
 * watchline.c: the line the control socket's "watch" sends per snapshot
 * (control.h): a summary of every counter and series, formatted directly
 * into one buffer. The text of each entry is kept from one render to the
 * next, with the values it was made from: an entry whose values did not
 * change is copied from the previous line rather than formatted again, so a
 * render costs a copy of the line plus the formatting of what changed.
 */
#include <float.h>
#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/control.h"
#include "publisher/snapshot.h"

/* What an entry's text is made of besides its name: a series' text is a
 * function of these (and its name), so equal values give equal text. */
#define FP_WORDS 8

struct frag {
    char *name;           /* NULL: nothing cached */
    size_t off;           /* of its text in the previous line (from the struct's start) */
    size_t len;
    uint64_t fp[FP_WORDS];
};

struct frag_cache {
    struct frag *f;
    size_t n, cap;
};

struct watch_render {
    struct control_line *prev;        /* the previous line (its texts are copied) */
    struct control_line *spare;       /* an older one nobody holds: its memory is reused */
    struct frag_cache counters, series;
    uint64_t hint_epoch, hint_version;  /* of the snapshot last rendered (0: none) */
    int p50, p99;                     /* indexes in obsd_percentile_grid */
};

struct buf {
    char *p;
    size_t len, cap;
    bool oom;
};

static bool reserve(struct buf *b, size_t more)
{
    if (b->oom)
        return false;
    if (b->len + more <= b->cap)
        return true;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + more)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) {
        b->oom = true;
        return false;
    }
    b->p = p;
    b->cap = cap;
    return true;
}

static void put(struct buf *b, const char *s, size_t n)
{
    if (reserve(b, n)) {
        memcpy(b->p + b->len, s, n);
        b->len += n;
    }
}

#define PUTS(b, lit) put((b), (lit), sizeof(lit) - 1)

static void put_u64(struct buf *b, uint64_t v)
{
    char tmp[24];
    int n = 0;
    do {
        tmp[sizeof tmp - 1 - n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    put(b, tmp + sizeof tmp - n, (size_t)n);
}

static void put_i64(struct buf *b, int64_t v)
{
    if (v < 0) {
        PUTS(b, "-");
        put_u64(b, (uint64_t)0 - (uint64_t)v);
    } else {
        put_u64(b, (uint64_t)v);
    }
}

/* |v| in [1, 1e15), not whole, with 17 significant digits: v * 10^d in
 * long double (64-bit mantissa: 10^d exact, the product within 2^-64 of
 * exact) rounded to an integer q of 17 digits, written as q / 10^d. That is
 * %.17g's correctly rounded result or a neighbour within 0.006 of a unit of
 * the 17th digit, both closer to v than half its ulp: the same double when
 * read back. ~20x faster than snprintf, which does it in multiprecision.
 * Returns false where this does not apply. */
static bool put_fixed17(struct buf *b, double v)
{
#if LDBL_MANT_DIG >= 64
    double a = fabs(v);
    if (!(a >= 1.0 && a < 1e15))
        return false;
    static const uint64_t pow10[] = {1ull, 10ull, 100ull, 1000ull, 10000ull, 100000ull,
                                     1000000ull, 10000000ull, 100000000ull, 1000000000ull,
                                     10000000000ull, 100000000000ull, 1000000000000ull,
                                     10000000000000ull, 100000000000000ull, 1000000000000000ull,
                                     10000000000000000ull};
    int n = 1;                       /* digits of the integer part */
    while (n < 15 && a >= (double)pow10[n])
        n++;
    int d = 17 - n;                  /* 2..16 decimals */
    uint64_t q = (uint64_t)((long double)a * (long double)pow10[d] + 0.5L);
    uint64_t ip = q / pow10[d], frac = q % pow10[d];
    if (v < 0)
        PUTS(b, "-");
    put_u64(b, ip);
    if (!frac)
        return true;
    char tmp[17];
    for (int k = d - 1; k >= 0; k--) {
        tmp[k] = (char)('0' + frac % 10);
        frac /= 10;
    }
    int len = d;
    while (len > 1 && tmp[len - 1] == '0')
        len--;
    PUTS(b, ".");
    put(b, tmp, (size_t)len);
    return true;
#else
    (void)b;
    (void)v;
    return false;
#endif
}

/* A JSON number; null for NaN and infinities (as snapshot_to_json). Whole
 * numbers (span durations in ns mostly are) print as integers, others with
 * 17 significant digits (the same double when read back). */
static void put_double(struct buf *b, double v)
{
    if (!isfinite(v)) {
        PUTS(b, "null");
        return;
    }
    if (v == floor(v) && fabs(v) < 9007199254740992.0) {
        put_i64(b, (int64_t)v);
        return;
    }
    if (put_fixed17(b, v))
        return;
    if (!reserve(b, 32))
        return;
    int n = snprintf(b->p + b->len, 32, "%.17g", v);
    if (n > 0 && n < 32)
        b->len += (size_t)n;
}

/* A JSON string. Names are validated where they enter (segment keys), but a
 * module's or a restored snapshot's name is escaped here all the same: '"',
 * '\\' and control characters escaped, and a byte that is not part of valid
 * UTF-8 written as U+FFFD, so the line always parses. */
static void put_str(struct buf *b, const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    PUTS(b, "\"");
    while (*p) {
        const unsigned char *run = p;
        while (*p >= 0x20 && *p < 0x80 && *p != '"' && *p != '\\')
            p++;
        put(b, (const char *)run, (size_t)(p - run));
        unsigned char c = *p;
        if (!c)
            break;
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            put(b, e, 2);
            p++;
        } else if (c < 0x20) {
            char e[8];
            snprintf(e, sizeof e, "\\u%04x", c);
            put(b, e, 6);
            p++;
        } else {
            /* a UTF-8 sequence: its length from the lead byte, then
             * continuation bytes, no overlong form, no surrogate, <= U+10FFFF */
            size_t n = c >= 0xf0 && c <= 0xf4 ? 4 : c >= 0xe0 ? 3 : c >= 0xc2 && c < 0xe0 ? 2 : 0;
            bool ok = n > 0;
            for (size_t k = 1; ok && k < n; k++)
                ok = (p[k] & 0xc0) == 0x80;
            if (ok && n == 3)
                ok = !(c == 0xe0 && p[1] < 0xa0) && !(c == 0xed && p[1] >= 0xa0);
            if (ok && n == 4)
                ok = !(c == 0xf0 && p[1] < 0x90) && !(c == 0xf4 && p[1] >= 0x90);
            if (ok) {
                put(b, (const char *)p, n);
                p += n;
            } else {
                PUTS(b, "\\ufffd");
                p++;
            }
        }
    }
    PUTS(b, "\"");
}

static void fp_double(uint64_t *w, double v)
{
    memcpy(w, &v, sizeof v);
}

static void counter_fp(const struct snap_counter *c, uint64_t fp[FP_WORDS])
{
    memset(fp, 0, FP_WORDS * sizeof *fp);
    fp[0] = c->is_float;
    if (c->is_float)
        fp_double(&fp[1], c->fvalue);
    else
        fp[1] = (uint64_t)c->ivalue;
}

static void series_fp(const struct watch_render *r, const struct snap_series *s,
                      uint64_t fp[FP_WORDS])
{
    fp[0] = s->count;
    fp_double(&fp[1], s->total);
    fp_double(&fp[2], s->min);
    fp_double(&fp[3], s->max);
    fp[4] = s->exact;
    fp_double(&fp[5], s->percentiles[r->p50]);
    fp_double(&fp[6], s->percentiles[r->p99]);
    fp[7] = 0;
}

static void counter_text(struct buf *b, const struct snap_counter *c)
{
    PUTS(b, "{\"type\":\"counter\",\"name\":");
    put_str(b, c->name);
    PUTS(b, ",\"value\":");
    if (c->is_float)
        put_double(b, c->fvalue);
    else
        put_i64(b, c->ivalue);
    PUTS(b, "}");
}

static void series_text(const struct watch_render *r, struct buf *b, const struct snap_series *s)
{
    PUTS(b, "{\"type\":\"series\",\"name\":");
    put_str(b, s->name);
    PUTS(b, ",\"exact\":");
    if (s->exact)
        PUTS(b, "true");
    else
        PUTS(b, "false");
    PUTS(b, ",\"count\":");
    put_u64(b, s->count);
    PUTS(b, ",\"total\":");
    put_double(b, s->total);
    PUTS(b, ",\"min\":");
    put_double(b, s->min);
    PUTS(b, ",\"max\":");
    put_double(b, s->max);
    PUTS(b, ",\"mean\":");
    put_double(b, s->count ? s->total / (double)s->count : NAN);
    PUTS(b, ",\"percentiles\":{\"50.0\":");
    put_double(b, s->percentiles[r->p50]);
    PUTS(b, ",\"99.0\":");
    put_double(b, s->percentiles[r->p99]);
    PUTS(b, "}}");
}

static bool cache_size(struct frag_cache *fc, size_t n)
{
    if (n > fc->cap) {
        size_t cap = fc->cap ? fc->cap : 64;
        while (cap < n)
            cap *= 2;
        struct frag *f = realloc(fc->f, cap * sizeof *f);
        if (!f)
            return false;
        memset(f + fc->cap, 0, (cap - fc->cap) * sizeof *f);
        fc->f = f;
        fc->cap = cap;
    }
    for (size_t i = n; i < fc->n; i++) {   /* entries gone from the snapshot */
        free(fc->f[i].name);
        fc->f[i].name = NULL;
    }
    fc->n = n;
    return true;
}

static void cache_free(struct frag_cache *fc)
{
    for (size_t i = 0; i < fc->cap; i++)
        free(fc->f[i].name);
    free(fc->f);
    *fc = (struct frag_cache){0};
}

/* Whether the snapshot's change hints say that the entry at this index is
 * the one last rendered there and unchanged since (snapshot.h): then
 * neither its name nor its values need to be read. */
static bool hinted_same(const struct watch_render *r, const struct snapshot *s, uint64_t placed,
                        uint64_t changed)
{
    return r->hint_epoch && s->hint_epoch == r->hint_epoch && placed && placed <= r->hint_version &&
           changed <= r->hint_version;
}

/* Entry i's text: copied from the previous line when its name and values
 * are the ones it was made from (same: the hints say so), else formatted
 * (and remembered). */
static void entry(struct watch_render *r, struct buf *b, struct frag_cache *fc, size_t i,
                  const char *name, const uint64_t fp[FP_WORDS], const void *item, bool series,
                  bool same)
{
    struct frag *f = &fc->f[i];
    size_t at = b->len;
    if (f->name && r->prev && same) {
        put(b, (const char *)r->prev + f->off, f->len);
    } else if (f->name && r->prev && !memcmp(f->fp, fp, sizeof f->fp) && !strcmp(f->name, name)) {
        put(b, (const char *)r->prev + f->off, f->len);
    } else {
        if (series)
            series_text(r, b, item);
        else
            counter_text(b, item);
        if (!f->name || strcmp(f->name, name)) {
            free(f->name);
            f->name = strdup(name);
            if (!f->name)
                b->oom = true;
        }
        memcpy(f->fp, fp, sizeof f->fp);
    }
    f->off = at;
    f->len = b->len - at;
}

struct watch_render *watch_render_new(void)
{
    struct watch_render *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->p50 = r->p99 = -1;
    for (int i = 0; i < OBSD_N_PERCENTILES; i++) {
        if (obsd_percentile_grid[i] == 50.0)
            r->p50 = i;
        if (obsd_percentile_grid[i] == 99.0)
            r->p99 = i;
    }
    if (r->p50 < 0 || r->p99 < 0) {
        free(r);
        return NULL;
    }
    return r;
}

static void forget(struct watch_render *r)
{
    control_line_put(r->prev);
    control_line_put(r->spare);
    r->prev = r->spare = NULL;
    r->hint_epoch = r->hint_version = 0;
    cache_free(&r->counters);
    cache_free(&r->series);
}

void watch_render_free(struct watch_render *r)
{
    if (!r)
        return;
    forget(r);
    free(r);
}

struct control_line *watch_render(struct watch_render *r, const struct snapshot *s)
{
    struct buf b = {0};
    if (!cache_size(&r->counters, s->n_counters) || !cache_size(&r->series, s->n_series)) {
        forget(r);
        return NULL;
    }
    if (r->spare) {     /* no page faults for a fresh buffer at each render */
        b.p = (char *)r->spare;
        b.cap = r->spare->alloc;
        r->spare = NULL;
    }
    size_t hint = r->prev ? r->prev->len + r->prev->len / 8 : 4096;
    reserve(&b, sizeof(struct control_line) + hint);
    b.len = offsetof(struct control_line, data);
    size_t base = b.len;     /* the buffer becomes the line: its header first */

    PUTS(&b, "{\"form\":\"watch\",\"schema_version\":");
    put_u64(&b, s->schema_version);
    PUTS(&b, ",\"run\":");
    put_str(&b, s->run);
    PUTS(&b, ",\"seq\":");
    put_u64(&b, s->seq);
    PUTS(&b, ",\"timestamp_ns\":");
    put_u64(&b, s->timestamp_ns);
    PUTS(&b, ",\"state\":\"");
    const char *state = obsd_run_state_name(s->state);
    put(&b, state, strlen(state));
    PUTS(&b, "\",\"n_pending_tasks\":");
    put_u64(&b, s->n_pending_tasks);
    PUTS(&b, ",\"metrics\":[");
    uint64_t fp[FP_WORDS];
    for (size_t i = 0; i < s->n_counters; i++) {
        const struct snap_counter *c = &s->counters[i];
        if (i)
            PUTS(&b, ",");
        bool same = hinted_same(r, s, c->hint_placed, c->hint_changed);
        if (!same)
            counter_fp(c, fp);
        entry(r, &b, &r->counters, i, c->name, fp, c, false, same);
    }
    for (size_t i = 0; i < s->n_series; i++) {
        const struct snap_series *sr = &s->series[i];
        if (i || s->n_counters)
            PUTS(&b, ",");
        bool same = hinted_same(r, s, sr->hint_placed, sr->hint_changed);
        if (!same)
            series_fp(r, sr, fp);
        entry(r, &b, &r->series, i, sr->name, fp, sr, true, same);
    }
    PUTS(&b, "]}\n");
    if (b.oom) {
        free(b.p);
        forget(r);    /* the cached offsets may point past what was written */
        return NULL;
    }
    struct control_line *line = (struct control_line *)b.p;
    line->refs = 1;
    line->len = b.len - base;
    line->final = s->state == OBSD_RUN_COMPLETE || s->state == OBSD_RUN_INTERRUPTED;
    line->alloc = b.cap;
    r->hint_epoch = s->hint_epoch;
    r->hint_version = s->hint_version;
    struct control_line *old = r->prev;
    r->prev = control_line_get(line);
    if (old && old->refs == 1)
        r->spare = old;            /* only ours: every client is done with it */
    else
        control_line_put(old);
    return line;
}
