/* test_util.c: see test_util.h. */
#include "test_util.h"

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void make_temp_dir(char *out, size_t len, const char *tag)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(out, len, "%s/obsd-%s-%d-XXXXXX", tmp && *tmp ? tmp : "/tmp", tag, (int)getpid());
    if (!mkdtemp(out)) {
        perror("mkdtemp");
        abort();
    }
}

static char temp_root[512];

void temp_root_begin(void)
{
    make_temp_dir(temp_root, sizeof temp_root, "test");
    setenv("TMPDIR", temp_root, 1);
}

void temp_root_end(void)
{
    if (temp_root[0])
        rm_rf(temp_root);
}

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

void rm_rf(const char *dir)
{
    nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

struct snapshot *make_snapshot(const char *run, uint64_t seq, enum obsd_run_state state,
                               size_t n_counters, size_t n_series, size_t n_changing,
                               size_t n_buckets)
{
    struct snapshot *s = snapshot_new(run, seq, state);
    s->timestamp_ns = 1700000000000000000ULL + seq * 1000000000ULL;
    char name[64];
    size_t m = 0;
    for (size_t i = 0; i < n_counters; i++, m++) {
        snprintf(name, sizeof name, "c%zu", i);
        int64_t v = (int64_t)(m < n_changing ? seq * 10 + i : i);
        if (i % 5 == 4)
            snapshot_add_gauge(s, name, (double)v / 4.0);
        else
            snapshot_add_counter(s, name, v);
    }
    struct snap_bucket *b = calloc(n_buckets ? n_buckets : 1, sizeof *b);
    for (size_t i = 0; i < n_series; i++, m++) {
        uint64_t k = m < n_changing ? seq + 1 : 1;
        struct snap_series sr = {.count = 100 * k, .total = 5000.0 * (double)k, .min = 3,
                                 .max = 900 + (double)i, .sum_sq = 1e6 * (double)k,
                                 .n_buckets = n_buckets, .buckets = b};
        snprintf(name, sizeof name, "s%zu_latency_ns", i);
        sr.name = name;
        for (int p = 0; p < OBSD_N_PERCENTILES; p++)
            sr.percentiles[p] = obsd_percentile_grid[p] * 9.0 + (double)i;
        double lo = 3;
        for (size_t j = 0; j < n_buckets; j++) {
            b[j].lo = lo;
            b[j].hi = lo * 1.3;
            b[j].count = (j * 7 + k) % 13;
            lo = b[j].hi;
        }
        snapshot_add_series(s, &sr);
    }
    free(b);
    return s;
}

char *snapshot_text(const struct snapshot *s)
{
    json_t *j = snapshot_to_json(s);
    char *t = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(j);
    return t;
}
