/*
 * store_commit: time of one store_persist() (one LMDB write transaction) for
 * a snapshot of N series, against a baseline measured in the same run: one
 * bare LMDB transaction that puts a value as large as the encoded snapshot.
 *
 *   build/bench/store_commit [n_series] [persists]     (default 10000 200)
 *
 * The baseline is the floor of the simplest alternative design: rewriting
 * the whole snapshot under one key in one bare LMDB transaction. Its size is
 * that of the run's final snapshot as the store encodes it (about 360 bytes
 * per series with 30 buckets), read back from the store.
 *
 * Prints one JSON object per scenario, snapshot timestamps 1 s apart (so
 * every changed series also gets a time series point):
 *   1. every series changes (count and total) at every persist, no fsync;
 *   2. 1% change, no fsync;   3. 1% change, fsync;
 *   4. every series changes as a live series does (count, total, sum_sq, one
 *      bucket, two percentiles), no fsync;   5. as 4, fsync;
 *   6. as 4, the snapshot saying what changed as the collector's kept snapshot
 *      does (change hints, snapshot.h), no fsync;   7. as 6, fsync.
 */
#include <lmdb.h>
#include <sys/stat.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "publisher/store.h"

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static struct snapshot *build(size_t n_series, size_t n_buckets)
{
    struct snapshot *s = snapshot_new("bench", 0, OBSD_RUN_LIVE);
    struct snap_bucket *b = calloc(n_buckets, sizeof *b);
    char name[64];
    for (size_t i = 0; i < n_series; i++) {
        double lo = 1000;
        for (size_t j = 0; j < n_buckets; j++) {
            b[j] = (struct snap_bucket){lo, lo * 1.25, (i + j) % 97};
            lo *= 1.25;
        }
        snprintf(name, sizeof name, "kernel.op_%05zu.latency_ns", i);
        struct snap_series sr = {.name = name, .count = 1000, .total = 1e6, .min = 1000,
                                 .max = 90000, .sum_sq = 1e12, .n_buckets = n_buckets, .buckets = b};
        for (int p = 0; p < OBSD_N_PERCENTILES; p++)
            sr.percentiles[p] = 1000 + 800 * obsd_percentile_grid[p];
        snapshot_add_series(s, &sr);
    }
    for (int i = 0; i < 20; i++) {
        snprintf(name, sizeof name, "counter_%d", i);
        snapshot_add_counter(s, name, i);
    }
    free(b);
    return s;
}

static void rm_store(const char *dir)
{
    char p[600];
    snprintf(p, sizeof p, "%s/data.mdb", dir);
    unlink(p);
    snprintf(p, sizeof p, "%s/lock.mdb", dir);
    unlink(p);
    rmdir(dir);
}

/* Bare LMDB: one txn putting one value of `bytes` bytes, same sync mode. */
static double baseline_ms(const char *dir, size_t bytes, bool sync, int reps)
{
    rm_store(dir);
    mkdir(dir, 0700);
    MDB_env *env;
    MDB_dbi dbi;
    MDB_txn *txn;
    mdb_env_create(&env);
    mdb_env_set_mapsize(env, 1ULL << 32);
    mdb_env_open(env, dir, sync ? 0 : MDB_NOSYNC, 0600);
    mdb_txn_begin(env, NULL, 0, &txn);
    mdb_dbi_open(txn, NULL, 0, &dbi);
    mdb_txn_commit(txn);
    char *val = malloc(bytes);
    memset(val, 7, bytes);
    uint64_t *t = calloc((size_t)reps, sizeof *t);
    for (int r = 0; r < reps; r++) {
        uint64_t t0 = now_ns();
        mdb_txn_begin(env, NULL, 0, &txn);
        MDB_val k = {6, "latest"}, v = {bytes, val};
        mdb_put(txn, dbi, &k, &v, 0);
        mdb_txn_commit(txn);
        t[r] = now_ns() - t0;
    }
    qsort(t, (size_t)reps, sizeof *t, cmp_u64);
    double ms = (double)t[reps / 2] / 1e6;
    free(t);
    free(val);
    mdb_env_close(env);
    rm_store(dir);
    return ms;
}


/* Size of the run's final snapshot value, read with LMDB directly. */
static size_t final_size(const char *dir)
{
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    MDB_val k, v;
    size_t n = 0;
    mdb_env_create(&env);
    mdb_env_set_maxdbs(env, 16);
    if (!mdb_env_open(env, dir, MDB_RDONLY, 0600) && !mdb_txn_begin(env, NULL, MDB_RDONLY, &txn)) {
        MDB_cursor *cur;
        if (!mdb_dbi_open(txn, "final", 0, &dbi) && !mdb_cursor_open(txn, dbi, &cur)) {
            if (!mdb_cursor_get(cur, &k, &v, MDB_FIRST))
                n = v.mv_size;
            mdb_cursor_close(cur);
        }
        mdb_txn_abort(txn);
    }
    mdb_env_close(env);
    return n;
}

/* The change hints of a producer that keeps s: every entry placed at
 * version 1 of a new epoch (the first persist compares everything). */
static void hints_begin(struct snapshot *s)
{
    s->hint_epoch = snapshot_hint_epoch_new();
    s->hint_version = 1;
    for (size_t i = 0; i < s->n_counters; i++)
        s->counters[i].hint_placed = s->counters[i].hint_changed = 1;
    for (size_t i = 0; i < s->n_series; i++) {
        struct snap_series *sr = &s->series[i];
        sr->hint_placed = sr->hint_changed = sr->hint_edges = 1;
        sr->hint_mask = SNAP_HINT_ALL_BUCKETS;
        sr->hint_fields = UINT32_MAX;
    }
}

static void scenario(const char *dir, size_t n_series, int reps, double change_frac, bool live,
                     bool sync, bool hinted)
{
    rm_store(dir);
    char err[256];
    struct store *st = store_open(dir, 1ULL << 30, sync, false, err, sizeof err);
    if (!st) {
        fprintf(stderr, "store_commit: %s\n", err);
        exit(1);
    }
    struct snapshot *s = build(n_series, 30);
    if (hinted)
        hints_begin(s);
    uint64_t *t = calloc((size_t)reps, sizeof *t);
    size_t n_change = (size_t)((double)n_series * change_frac);
    for (int r = 0; r <= reps; r++) {
        s->seq = (uint64_t)r;
        s->timestamp_ns = 1700000000000000000ULL + (uint64_t)r * 1000000000ULL;
        if (hinted && r)
            s->hint_version++;
        for (size_t k = 0; k < n_change; k++) {
            struct snap_series *sr = &s->series[((size_t)r * n_change + k) % n_series];
            sr->count++;
            sr->total += 1000;
            if (live) {
                size_t b = ((size_t)r + k) % sr->n_buckets;
                sr->sum_sq += 1e6;
                sr->buckets[b].count++;
                sr->percentiles[7] += 1;
                sr->percentiles[1] += 3;
                if (hinted && r) {
                    /* count, total, sum_sq, p99 and p50; one bucket */
                    sr->hint_changed = s->hint_version;
                    sr->hint_fields = 1u << 0 | 1u << 1 | 1u << 4 | 1u << (5 + 1) | 1u << (5 + 7);
                    sr->hint_mask = 1ULL << b;
                    sr->hint_counts[0] = sr->buckets[b].count;
                }
            }
        }
        /* the extra last persist is the final, so that the baseline can
         * write exactly as much as a whole snapshot is */
        bool final = r == reps;
        if (final)
            s->state = OBSD_RUN_COMPLETE;
        uint64_t t0 = now_ns();
        if (store_persist(st, s, final)) {
            fprintf(stderr, "store_commit: %s\n", store_error(st));
            exit(1);
        }
        if (!final)
            t[r] = now_ns() - t0;
    }
    qsort(t, (size_t)reps, sizeof *t, cmp_u64);
    double p50 = (double)t[reps / 2] / 1e6, p99 = (double)t[reps * 99 / 100] / 1e6;
    store_close(st);
    size_t bytes = final_size(dir);
    if (!bytes) {
        fprintf(stderr, "store_commit: cannot read the final snapshot back\n");
        exit(1);
    }
    double base = baseline_ms(dir, bytes, sync, reps);
    printf("{\"bench\":\"store_commit\",\"n_series\":%zu,\"changed_per_commit\":%zu,\"change\":\"%s%s\","
           "\"sync\":%s,\"commits\":%d,\"commit_ms_p50\":%.3f,\"commit_ms_p99\":%.3f,"
           "\"baseline\":\"bare LMDB txn rewriting one %zu-byte whole-snapshot value\",\"baseline_ms_p50\":%.3f,"
           "\"ratio\":%.2f}\n",
           n_series, n_change, live ? "count, total, sum_sq, a bucket, p50, p99" : "count, total",
           hinted ? ", with change hints" : "",
           sync ? "true" : "false", reps, p50, p99, bytes, base, p50 / base);
    fflush(stdout);
    snapshot_free(s);
    free(t);
    rm_store(dir);
}

int main(int argc, char **argv)
{
    size_t n = argc > 1 ? strtoul(argv[1], NULL, 10) : 10000;
    int reps = argc > 2 ? atoi(argv[2]) : 200;
    if (!n || reps < 2) {
        fprintf(stderr, "usage: store_commit [n_series >= 1] [persists >= 2]\n");
        return 2;
    }
    char dir[256];
    snprintf(dir, sizeof dir, "/tmp/obsd-store-commit-%d", (int)getpid());
    scenario(dir, n, reps, 1.0, false, false, false);
    scenario(dir, n, reps, 0.01, false, false, false);
    scenario(dir, n, reps, 0.01, false, true, false);
    scenario(dir, n, reps, 1.0, true, false, false);
    scenario(dir, n, reps, 1.0, true, true, false);
    scenario(dir, n, reps, 1.0, true, false, true);
    scenario(dir, n, reps, 1.0, true, true, true);
    return 0;
}
