/*
 * shm_test.h: helpers shared by the shm suites: unique segment names, a
 * collector with a given configuration, and a callback that records what it
 * drained.
 */
#ifndef OBSD_TESTS_SHM_TEST_H
#define OBSD_TESTS_SHM_TEST_H

#include <check.h>
#include <dirent.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "obsd/obsd.h"
#include "shm/shm.h"
#include "shm/wire.h"

/* The suite's main process; segment names carry it so that main can remove
 * what a failed test (a forked child) left behind. */
static pid_t test_main_pid;

/* A segment name unique to this process and call. */
static inline const char *test_seg_name(const char *tag)
{
    static char buf[64];
    static int counter;
    snprintf(buf, sizeof buf, "t-%s-%d-%d-%d", tag, (int)test_main_pid, (int)getpid(), counter++);
    return buf;
}

/* Removes every /dev/shm/obsd.t-*-<main pid>-* segment. */
static inline void test_cleanup_segments(void)
{
    char pat[64];
    snprintf(pat, sizeof pat, "-%d-", (int)test_main_pid);
    DIR *d = opendir("/dev/shm");
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strncmp(e->d_name, "obsd.t-", 7) == 0 && strstr(e->d_name, pat)) {
            char path[300];
            snprintf(path, sizeof path, "/dev/shm/%s", e->d_name);
            unlink(path);
        }
    }
    closedir(d);
}

/* main() of every shm suite. */
static inline int test_run_suite(Suite *s)
{
    test_main_pid = getpid();
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    test_cleanup_segments();
    return failed ? 1 : 0;
}

static inline struct shm_segment *test_segment(struct shm_config *cfg)
{
    char err[256];
    struct shm_segment *seg = shm_segment_create(cfg, err, sizeof err);
    ck_assert_msg(seg != NULL, "shm_segment_create: %s", err);
    return seg;
}

/* Drained records, payloads copied. */
struct got {
    uint8_t type;
    uint32_t key;
    pid_t pid, tid;
    size_t len;
    unsigned char *payload;
};

struct sink {
    struct got *v;
    size_t n, cap;
    bool keep_payloads;     /* else only the first 64 bytes */
};

static inline void sink_fn(void *ctx, const struct shm_producer *from, const struct shm_record *rec)
{
    struct sink *s = ctx;
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 1024;
        s->v = realloc(s->v, s->cap * sizeof *s->v);
        ck_assert(s->v != NULL);
    }
    struct got *g = &s->v[s->n++];
    g->type = rec->type;
    g->key = rec->key;
    g->pid = from->pid;
    g->tid = from->tid;
    g->len = rec->len;
    size_t keep = s->keep_payloads || rec->len < 64 ? rec->len : 64;
    g->payload = malloc(keep ? keep : 1);
    ck_assert(g->payload != NULL);
    memcpy(g->payload, rec->payload, keep);
}

static inline void sink_free(struct sink *s)
{
    for (size_t i = 0; i < s->n; i++)
        free(s->v[i].payload);
    free(s->v);
    memset(s, 0, sizeof *s);
}

static inline uint64_t got_u64(const struct got *g, size_t i)
{
    uint64_t v;
    memcpy(&v, g->payload + 8 * i, sizeof v);
    return v;
}

#endif
