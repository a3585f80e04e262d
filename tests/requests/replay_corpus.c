/* replay_corpus.c: corpus loading and replay files for the request tests. */
#include "replay_corpus.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>
#include <zlib.h>

/* Calls fn for every line of a plain or gzip file (gzread reads both). */
static int each_line(const char *path, int (*fn)(void *ctx, const char *line, size_t len),
                     void *ctx, char *err, size_t errlen)
{
    gzFile f = gzopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    size_t cap = 1 << 20, len = 0;
    char *buf = malloc(cap);
    int rc = 0;
    for (;;) {
        if (len == cap) {
            cap *= 2;
            buf = realloc(buf, cap);
        }
        int n = gzread(f, buf + len, (unsigned)(cap - len));
        if (n < 0) {
            snprintf(err, errlen, "%s: read error", path);
            rc = -1;
            break;
        }
        len += (size_t)n;
        size_t start = 0;
        for (size_t i = 0; i < len; i++) {
            if (buf[i] != '\n')
                continue;
            if (i > start && fn(ctx, buf + start, i - start)) {
                snprintf(err, errlen, "%s: bad line", path);
                rc = -1;
                goto out;
            }
            start = i + 1;
        }
        memmove(buf, buf + start, len - start);
        len -= start;
        if (n == 0) {
            if (len && fn(ctx, buf, len)) {
                snprintf(err, errlen, "%s: bad last line", path);
                rc = -1;
            }
            break;
        }
    }
out:
    free(buf);
    gzclose(f);
    return rc;
}

static int add_text(void *ctx, const char *line, size_t len)
{
    struct corpus *c = ctx;
    json_t *o = json_loadb(line, len, JSON_ALLOW_NUL, NULL);
    const char *t = json_string_value(json_object_get(o, "text"));
    if (!t) {
        json_decref(o);
        return -1;
    }
    c->texts = realloc(c->texts, (c->n + 1) * sizeof *c->texts);
    c->lens = realloc(c->lens, (c->n + 1) * sizeof *c->lens);
    c->lens[c->n] = json_string_length(json_object_get(o, "text"));
    c->texts[c->n] = malloc(c->lens[c->n] + 1);
    memcpy(c->texts[c->n], t, c->lens[c->n] + 1);
    c->n++;
    json_decref(o);
    return 0;
}

int corpus_load(const char *path, struct corpus *c, char *err, size_t errlen)
{
    memset(c, 0, sizeof *c);
    return each_line(path, add_text, c, err, errlen);
}

void corpus_free(struct corpus *c)
{
    for (size_t i = 0; i < c->n; i++)
        free(c->texts[i]);
    free(c->texts);
    free(c->lens);
    memset(c, 0, sizeof *c);
}

struct counts {
    int64_t *v;
    size_t n;
};

static int add_count(void *ctx, const char *line, size_t len)
{
    struct counts *c = ctx;
    /* The lines are long (ids); only "count" is needed, near the start. */
    const char *k = memmem(line, len < 200 ? len : 200, "\"count\":", 8);
    if (!k)
        return -1;
    c->v = realloc(c->v, (c->n + 1) * sizeof *c->v);
    c->v[c->n++] = strtoll(k + 8, NULL, 10);
    return 0;
}

int ref_counts_load(const char *path, int64_t **counts, size_t *n, char *err, size_t errlen)
{
    struct counts c = {0};
    int rc = each_line(path, add_count, &c, err, errlen);
    *counts = c.v;
    *n = c.n;
    return rc;
}

char *data_path(const char *name)
{
    const char *dirs[3] = {getenv("OBSD_TEST_DATA"), NULL, "/work/shared/data/tokenizers"};
    char shared[4096];
    if (dirs[0]) {
        /* CI keeps shared/ beside the repository: <repo>/tests/data -> ../../../shared */
        snprintf(shared, sizeof shared, "%s/../../../shared/data/tokenizers", dirs[0]);
        dirs[1] = shared;
    }
    for (int i = 0; i < 3; i++) {
        if (!dirs[i])
            continue;
        char *p;
        if (asprintf(&p, "%s/%s", dirs[i], name) < 0)
            return NULL;
        if (access(p, R_OK) == 0)
            return p;
        free(p);
    }
    return NULL;
}

/* Bytes of a prefix of s of at most want bytes that ends on a character boundary. */
static size_t utf8_prefix(const char *s, size_t len, size_t want)
{
    size_t k = want < len ? want : len;
    while (k > 0 && k < len && ((unsigned char)s[k] & 0xC0) == 0x80)
        k--;
    return k;
}

void plan_make(struct plan *p, const struct corpus *c, size_t n, size_t warmup, size_t cooldown)
{
    memset(p, 0, sizeof *p);
    p->reqs = calloc(n, sizeof *p->reqs);
    p->n = n;
    p->first_tracked = warmup;
    p->end_tracked = n - cooldown;
    static const char *const reasons[] = {"stop", "length", "tool_calls", "content_filter",
                                          "function_call", "abort"};
    for (size_t i = 0; i < n; i++) {
        struct plan_req *r = &p->reqs[i];
        r->prompt = i % c->n;
        r->output = (i * 7 + 3) % c->n;
        r->issued = (uint64_t)i * 200000;
        r->first = r->issued + 1000000 + (uint64_t)(i * 7919 % 1000) * 1000;
        r->complete = r->first + 2000000 + (uint64_t)(i * 104729 % 5000) * 1000;
        r->first_len = i % 11 == 0 ? NO_FIRST
                                   : utf8_prefix(c->texts[r->output], c->lens[r->output], 1 + i % 64);
        if (r->first_len != NO_FIRST && i % 5 == 0) {
            for (unsigned k = 0; k < 3; k++)
                r->chunks[k] = r->first + (k + 1) * 100000 + (uint64_t)(i % 13) * 1000;
            r->n_chunks = 3;
        }
        r->failed = i % 53 == 5;
        r->reason = reasons[i % 17 == 0 ? 1 : i % 29 == 0 ? 2 : i % 31 == 0 ? 5 : i % 37 == 0 ? 3
                           : i % 41 == 0 ? 4 : 0];
        r->tracked = i >= p->first_tracked && i < p->end_tracked;
    }
    p->tracking_start = p->reqs[p->first_tracked].issued;
    p->tracking_stop = p->end_tracked < n ? p->reqs[p->end_tracked].issued
                                          : p->reqs[n - 1].issued + 1;
}

void plan_free(struct plan *p)
{
    free(p->reqs);
    memset(p, 0, sizeof *p);
}

static int dump_text(FILE *f, const char *s, size_t len)
{
    json_t *j = json_stringn(s, len);
    if (!j)
        return -1;
    int rc = json_dumpf(j, f, JSON_ENCODE_ANY);
    json_decref(j);
    return rc;
}

int plan_write(const struct plan *p, const struct corpus *c, const char *path, char *err,
               size_t errlen)
{
    FILE *f = fopen(path, "w");
    if (!f) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    for (size_t i = 0; i < p->n; i++) {
        const struct plan_req *r = &p->reqs[i];
        if (i == p->first_tracked)
            fprintf(f, "{\"event\": \"tracking_start\", \"ts_ns\": %lu}\n",
                    (unsigned long)p->tracking_start);
        if (i == p->end_tracked)
            fprintf(f, "{\"event\": \"tracking_stop\", \"ts_ns\": %lu}\n",
                    (unsigned long)p->tracking_stop);
        fputs("{\"prompt\": ", f);
        dump_text(f, c->texts[r->prompt], c->lens[r->prompt]);
        fputs(", \"output\": ", f);
        dump_text(f, c->texts[r->output], c->lens[r->output]);
        fputs(", \"first_chunk\": ", f);
        if (r->first_len == NO_FIRST)
            fputs("null", f);
        else
            dump_text(f, c->texts[r->output], r->first_len);
        fprintf(f, ", \"issued_ns\": %lu, \"first_ns\": ", (unsigned long)r->issued);
        if (r->first_len == NO_FIRST)
            fputs("null", f);
        else
            fprintf(f, "%lu", (unsigned long)r->first);
        if (r->n_chunks) {
            fputs(", \"chunk_ns\": [", f);
            for (unsigned k = 0; k < r->n_chunks; k++)
                fprintf(f, "%s%lu", k ? ", " : "", (unsigned long)r->chunks[k]);
            fputs("]", f);
        }
        fprintf(f, ", \"complete_ns\": %lu, \"finish_reason\": \"%s\", \"error\": %s}\n",
                (unsigned long)r->complete, r->reason, r->failed ? "\"upstream 503\"" : "null");
    }
    if (p->end_tracked == p->n)
        fprintf(f, "{\"event\": \"tracking_stop\", \"ts_ns\": %lu}\n",
                (unsigned long)p->tracking_stop);
    if (fclose(f)) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}
