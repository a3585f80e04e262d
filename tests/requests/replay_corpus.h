/*
 * replay_corpus.h: builds obsd-replay files from the tokenizer corpus
 * (tests/data/visible.corpus.jsonl.gz) and the values a correct collector must
 * report for them. Shared by the request tests and the mkreplay tool.
 */
#ifndef OBSD_TESTS_REPLAY_CORPUS_H
#define OBSD_TESTS_REPLAY_CORPUS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct corpus {
    char **texts;
    size_t *lens;
    size_t n;
};

/* Reads a JSONL file (plain or gzip) of {"text": ...} lines. */
int corpus_load(const char *path, struct corpus *c, char *err, size_t errlen);
void corpus_free(struct corpus *c);

/* Reads the "count" of every line of a reference file (visible.<tok>.ref.jsonl.gz);
 * *counts is malloc'ed with n entries. */
int ref_counts_load(const char *path, int64_t **counts, size_t *n, char *err, size_t errlen);

/* Finds a data file: $OBSD_TEST_DATA/name, else the shared tokenizer data
 * beside the repository. Returns a malloc'ed path or NULL. */
char *data_path(const char *name);

#define NO_FIRST SIZE_MAX

struct plan_req {
    size_t prompt, output;      /* corpus indexes */
    size_t first_len;           /* bytes of the output that form the first chunk; NO_FIRST */
    uint64_t issued, first, complete;
    uint64_t chunks[3];
    unsigned n_chunks;
    const char *reason;
    bool failed;
    bool tracked;
};

struct plan {
    struct plan_req *reqs;
    size_t n;
    uint64_t tracking_start, tracking_stop;   /* offsets of the window */
    size_t first_tracked, end_tracked;        /* reqs[first_tracked, end_tracked) are tracked */
};

/* A deterministic mix: n requests 200 us apart, the first `warmup` before the
 * tracking window and the last `cooldown` after it, with first chunks, further
 * chunks, failures and every finish reason. */
void plan_make(struct plan *p, const struct corpus *c, size_t n, size_t warmup, size_t cooldown);
void plan_free(struct plan *p);

/* Writes the plan as an obsd-replay file, with tracking event lines. */
int plan_write(const struct plan *p, const struct corpus *c, const char *path, char *err,
               size_t errlen);

#endif
