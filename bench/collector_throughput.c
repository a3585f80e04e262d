/*
 * collector_throughput: how fast one collector thread drains and aggregates,
 * and what one snapshot commit of 10,000 series costs.
 *
 * 1. records_per_s: producer threads prefill their rings with 24-byte spans
 *    spread over 1,000 series; then one thread drains every ring through
 *    shm_drain and aggregates each record into the engine's metric table
 *    (metrics_batch_record: key cache, log-linear histogram, count/total/
 *    min/max/sum_sq), exactly what the collector does per span. Baselines from
 *    the same run: a memcpy of the same bytes, and shm_drain with an empty
 *    callback (framing and validation only).
 * 2. commit_ms_p50: a snapshot of 10,000 series (every series changed since
 *    the previous persist, the worst case) persisted through the store API,
 *    one write transaction each; baseline: the same persist of a 1-series
 *    snapshot (the fixed cost of a transaction); nohints_ms_p50: the same
 *    persists of that snapshot stripped of its change hints (snapshot.h), so
 *    the store compares everything, as it does for a snapshot built any
 *    other way. Also the snapshot build time
 *    (build_ms_p50: metrics_snapshot, what the collector runs at every publish,
 *    of those 10,000 changed series), and the build when no series changed
 *    (build_unchanged_ms_p50) and when each took 100 values (build_busy_ms_p50),
 *    and the watch line a publish renders for watchers (watch_line_ms_p50:
 *    only while someone watches; also its own result, against the full JSON
 *    line watch sent before as the baseline).
 *
 * The commit figures are medians over 100 persists of one run (--commit-reps
 * N): a long run's steady state, in which the store also folds base rows and
 * deletes the delta rows the folds superseded (obsd-store(5)); the first
 * persists of a run do neither.
 *
 * Usage: collector_throughput [--quick] [--only records|commit]
 * [--commit-reps N]. Prints one JSON object per result.
 */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "engine/control.h"
#include "engine/metrics.h"
#include "engine/series.h"
#include "obsd/obsd.h"
#include "publisher/snapshot.h"
#include "publisher/store.h"
#include "shm/shm.h"

#define N_SERIES 1000
#define N_PRODUCERS 2

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, size_t n)
{
    qsort(v, n, sizeof *v, cmp_double);
    return v[n / 2];
}

static uint64_t series_typical[N_SERIES];

struct producer_arg {
    obsd_t *h;
    const obsd_key_t *keys;
    size_t n;
    unsigned seed;
    size_t dropped;
};

static void *producer(void *p)
{
    struct producer_arg *a = p;
    uint64_t x = a->seed * 2654435761u + 1;
    for (size_t i = 0; i < a->n; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        uint32_t s = (uint32_t)((x >> 20) % N_SERIES);
        /* series s takes about its own time (1 us .. 10 ms over the series), +-10% */
        uint64_t typical = series_typical[s];
        uint64_t dur = typical - typical / 10 + (x >> 33) % (typical / 5 + 1);
        if (obsd_span(a->h, a->keys[s], 1000000, 1000000 + dur) != OBSD_OK)
            a->dropped++;
    }
    obsd_flush(a->h);
    obsd_thread_release(a->h);
    return NULL;
}

struct agg_ctx {
    struct metric_table *t;
    struct metrics_batch batch;
    struct shm_segment *seg;
    uint64_t rejected;
};

static const char *key_name(void *ctx, uint32_t key)
{
    return shm_key_name(ctx, key);
}

static void aggregate(void *ctx, const struct shm_producer *from, const struct shm_record *rec)
{
    (void)from;
    struct agg_ctx *a = ctx;
    if (metrics_batch_record(a->t, &a->batch, rec, key_name, a->seg) == 0)
        return;
    metrics_batch_flush(a->t, &a->batch, key_name, a->seg);
    if (metrics_core_record(a->t, rec, key_name, a->seg) != 0)
        a->rejected++;
}

static void count_only(void *ctx, const struct shm_producer *from, const struct shm_record *rec)
{
    (void)from;
    (void)rec;
    ++*(uint64_t *)ctx;
}

static size_t prefill(obsd_t *h, const obsd_key_t *keys, size_t per_producer, unsigned seed)
{
    pthread_t th[N_PRODUCERS];
    struct producer_arg a[N_PRODUCERS];
    for (int i = 0; i < N_PRODUCERS; i++) {
        a[i] = (struct producer_arg){h, keys, per_producer, seed + (unsigned)i, 0};
        pthread_create(&th[i], NULL, producer, &a[i]);
    }
    size_t dropped = 0;
    for (int i = 0; i < N_PRODUCERS; i++) {
        pthread_join(th[i], NULL);
        dropped += a[i].dropped;
    }
    return dropped;
}

static int bench_records(int reps)
{
    char name[64];
    snprintf(name, sizeof name, "bench-ct-%d", (int)getpid());
    struct shm_config cfg;
    shm_config_defaults(&cfg, name);
    cfg.ring_bytes = 32u << 20;
    cfg.max_producers = 8;
    cfg.sched_workers = 0;
    char err[256];
    struct shm_segment *seg = shm_segment_create(&cfg, err, sizeof err);
    if (!seg) {
        fprintf(stderr, "collector_throughput: %s\n", err);
        return 1;
    }
    obsd_t *h = obsd_open(name);
    if (!h) {
        fprintf(stderr, "collector_throughput: obsd_open: %s\n", obsd_last_error());
        shm_segment_close(seg, true);
        return 1;
    }
    obsd_key_t keys[N_SERIES];
    for (int i = 0; i < N_SERIES; i++) {
        series_typical[i] = (uint64_t)(1000.0 * pow(10.0, 4.0 * i / N_SERIES));
        char k[32];
        snprintf(k, sizeof k, "bench.span.%d", i);
        keys[i] = obsd_key(h, k);
    }
    size_t per = (size_t)(cfg.ring_bytes / 24) * 9 / 10;
    size_t bytes = per * N_PRODUCERS * 24;
    char *src = malloc(bytes), *dst = malloc(bytes);
    if (!src || !dst)
        return 1;
    memset(src, 1, bytes);
    memset(dst, 2, bytes);     /* (not 0: malloc+memset 0 becomes calloc, leaving pages untouched) */

    struct series_env env;
    series_env_init(&env, NULL, 0);
    struct metric_table table;
    metrics_init(&table, &env);
    double agg[16], drain_only[16], copy[16];
    uint64_t records = 0, dropped = 0, rejected = 0;
    /* rep 0 warms up (histogram chunks, page faults) and is not counted */
    for (int r = -1; r < reps; r++) {
        double *agg_r = r < 0 ? &agg[15] : &agg[r], *drain_r = r < 0 ? &drain_only[15] : &drain_only[r],
               *copy_r = r < 0 ? &copy[15] : &copy[r];
        dropped += prefill(h, keys, per, (unsigned)r * 7);
        struct agg_ctx a = {.t = &table, .seg = seg};
        uint64_t t0 = now_ns(), n = 0, got;
        while ((got = shm_drain(seg, aggregate, &a, 65536)) > 0) {
            metrics_batch_flush(&table, &a.batch, key_name, seg);
            n += got;
        }
        a.rejected += a.batch.rejected;
        uint64_t t1 = now_ns();
        *agg_r = (double)n / ((double)(t1 - t0) / 1e9);
        records = n;
        rejected += a.rejected;

        dropped += prefill(h, keys, per, (unsigned)r * 7);
        uint64_t cnt = 0;
        t0 = now_ns();
        while ((got = shm_drain(seg, count_only, &cnt, 65536)) > 0)
            ;
        t1 = now_ns();
        *drain_r = (double)cnt / ((double)(t1 - t0) / 1e9);

        t0 = now_ns();
        for (size_t off = 0; off < bytes; off += 65536)
            memcpy(dst + off, src + off, bytes - off < 65536 ? bytes - off : 65536);
        t1 = now_ns();
        __asm__ volatile("" : : "r"(dst) : "memory");
        *copy_r = (double)(bytes / 24) / ((double)(t1 - t0) / 1e9);
    }
    double v = median(agg, (size_t)reps), d = median(drain_only, (size_t)reps), m = median(copy, (size_t)reps);
    printf("{\"bench\":\"collector_throughput\",\"metric\":\"records_per_s\",\"value\":%.0f,"
           "\"records\":%llu,\"series\":%d,\"record_bytes\":24,\"reps\":%d,"
           "\"baseline\":\"memcpy of the same bytes\",\"baseline_records_per_s\":%.0f,"
           "\"ratio\":%.3f,\"drain_only_records_per_s\":%.0f,\"dropped\":%llu,\"rejected\":%llu,"
           "\"target\":20000000}\n",
           v, (unsigned long long)records, N_SERIES, reps, m, v / m, d, (unsigned long long)dropped,
           (unsigned long long)rejected);
    metrics_free(&table);
    free(src);
    free(dst);
    obsd_close(h);
    shm_segment_close(seg, true);
    return 0;
}

/* Brings the snapshot of the table's series up to date as the collector does
 * at every publish (metrics_snapshot into the snapshot it keeps; *snap NULL:
 * the first one). */
static struct snapshot *build(struct metric_table *t, struct snapshot **snap, uint64_t seq,
                              double *build_ms)
{
    uint64_t t0 = now_ns();
    if (!*snap) {
        *snap = snapshot_new("bench-run", seq, OBSD_RUN_LIVE);
        snapshot_add_counter(*snap, "obsd_dropped_records", 0);
        snapshot_add_counter(*snap, "obsd_rejected_records", 0);
    }
    struct snapshot *s = *snap;
    s->seq = seq;
    s->timestamp_ns = (uint64_t)time(NULL) * 1000000000ull + seq;
    size_t nc, ns;
    if (metrics_snapshot(t, s, 2, 30, &nc, &ns) < 0) {
        fprintf(stderr, "collector_throughput: metrics_snapshot failed\n");
        exit(1);
    }
    *build_ms = (double)(now_ns() - t0) / 1e6;
    return s;
}

/* One more value of series i, recorded as the collector records one. */
static void add_value(struct metric_table *t, struct metric *m, uint64_t v)
{
    metrics_touch(t, m);
    series_add(&m->series, v);
}

static uint64_t bench_value(size_t i, size_t k)
{
    return 1000 + (uint64_t)((i * 7919 + k * 104729) % 900000);
}

static void fill_table(struct metric_table *t, struct series_env *env, struct metric **m, size_t n)
{
    series_env_init(env, NULL, 0);
    metrics_init(t, env);
    for (size_t i = 0; i < n; i++) {
        char name[48];
        snprintf(name, sizeof name, "bench.series.%05zu", i);
        m[i] = metrics_get(t, name, METRIC_SERIES);
        for (size_t k = 0; k < 50; k++)
            add_value(t, m[i], bench_value(i, k));
    }
}

static double commit_p50(const char *dir, const char *run, size_t n_series, bool sync, bool hints,
                         int reps, double *build_p50)
{
    char err[256];
    struct store *st = store_open(dir, 0, sync, false, err, sizeof err);
    if (!st) {
        fprintf(stderr, "collector_throughput: %s\n", err);
        exit(1);
    }
    struct series_env env;
    struct metric_table t;
    struct metric **m = calloc(n_series, sizeof *m);
    fill_table(&t, &env, m, n_series);
    store_begin_run(st, run, "bench", (uint64_t)time(NULL) * 1000000000ull);
    double *ms = calloc((size_t)reps, sizeof *ms), *bms = calloc((size_t)reps, sizeof *bms), ignore;
    struct snapshot *snap = NULL;
    build(&t, &snap, 0, &ignore);   /* as a running collector: every series built once */
    snprintf(snap->run, sizeof snap->run, "%s", run);
    if (!hints)
        snap->hint_epoch = 0;       /* no hints, and metrics_snapshot keeps it so */
    for (int r = 0; r < reps; r++) {
        for (size_t i = 0; i < n_series; i++)
            add_value(&t, m[i], bench_value(i, (size_t)r));
        build(&t, &snap, (uint64_t)r, &bms[r]);
        uint64_t t0 = now_ns();
        int rc = store_persist(st, snap, false);
        ms[r] = (double)(now_ns() - t0) / 1e6;
        if (rc != STORE_OK) {
            fprintf(stderr, "collector_throughput: store_persist: %s\n", store_error(st));
            exit(1);
        }
    }
    snapshot_free(snap);
    free(m);
    metrics_free(&t);
    store_close(st);
    if (build_p50)
        *build_p50 = median(bms, (size_t)reps);
    double p50 = median(ms, (size_t)reps);
    free(ms);
    free(bms);
    return p50;
}

/* The build of 10,000 series when none changed, and when each took 100
 * values since the previous build (a busy publish interval); and the watch
 * line of that snapshot, which a publish renders only while someone watches:
 * *json_ms is what the collector does (watch_render, the summary line, with
 * the renderer kept from publish to publish as the collector keeps it); also
 * printed as its own result, with the render when nothing changed and, as
 * the baseline, the full snapshot_to_json line that watch used to send. */
static void build_p50(size_t n_series, int reps, double *unchanged_ms, double *busy_ms,
                      double *json_ms)
{
    struct series_env env;
    struct metric_table t;
    struct metric **m = calloc(n_series, sizeof *m);
    fill_table(&t, &env, m, n_series);
    double ums[64], bms[64], jms[64], wms[64], wums[64], ignore;
    size_t full_bytes = 0, watch_bytes = 0;
    struct snapshot *snap = NULL;
    struct watch_render *wr = watch_render_new();
    build(&t, &snap, 0, &ignore);
    control_line_put(wr ? watch_render(wr, snap) : NULL);
    for (int r = 0; r < reps; r++) {
        build(&t, &snap, (uint64_t)r, &ums[r]);
        uint64_t w0 = now_ns();
        struct control_line *wl = wr ? watch_render(wr, snap) : NULL;
        wums[r] = (double)(now_ns() - w0) / 1e6;
        control_line_put(wl);
        for (size_t i = 0; i < n_series; i++)
            for (size_t k = 0; k < 100; k++)
                add_value(&t, m[i], bench_value(i, 50 + (size_t)r * 100 + k));
        build(&t, &snap, (uint64_t)r, &bms[r]);
        uint64_t t0 = now_ns();
        json_t *j = snapshot_to_json(snap);
        char *line = j ? json_dumps(j, JSON_COMPACT) : NULL;
        jms[r] = (double)(now_ns() - t0) / 1e6;
        if (!line) {
            fprintf(stderr, "collector_throughput: snapshot_to_json failed\n");
            exit(1);
        }
        full_bytes = strlen(line) + 1;
        free(line);
        json_decref(j);
        t0 = now_ns();
        wl = wr ? watch_render(wr, snap) : NULL;
        wms[r] = (double)(now_ns() - t0) / 1e6;
        if (!wl) {
            fprintf(stderr, "collector_throughput: watch_render failed\n");
            exit(1);
        }
        watch_bytes = wl->len;
        control_line_put(wl);
    }
    watch_render_free(wr);
    double w = median(wms, (size_t)reps), full = median(jms, (size_t)reps);
    printf("{\"bench\":\"collector_throughput\",\"metric\":\"watch_line_ms_p50\",\"value\":%.3f,"
           "\"series\":%zu,\"changed\":%zu,\"reps\":%d,\"bytes\":%zu,"
           "\"unchanged_ms_p50\":%.3f,\"baseline\":\"full snapshot_to_json line (jansson)\","
           "\"baseline_ms_p50\":%.3f,\"baseline_bytes\":%zu,\"ratio\":%.4f}\n",
           w, n_series, n_series, reps, watch_bytes, median(wums, (size_t)reps), full, full_bytes,
           w / full);
    snapshot_free(snap);
    free(m);
    metrics_free(&t);
    *unchanged_ms = median(ums, (size_t)reps);
    *busy_ms = median(bms, (size_t)reps);
    *json_ms = w;
}

static void rm_store(const char *dir)
{
    char p[512];
    const char *files[] = {"data.mdb", "lock.mdb"};
    for (int i = 0; i < 2; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, files[i]);
        unlink(p);
    }
    rmdir(dir);
}

static int bench_commit(int reps)
{
    for (int sync = 1; sync >= 0; sync--) {
        char dir[] = "/tmp/obsd-bench-commit-XXXXXX";
        if (!mkdtemp(dir))
            return 1;
        double build_ms, unchanged_ms, busy_ms, json_ms;
        double big = commit_p50(dir, "bench-10k", 10000, sync, true, reps, &build_ms);
        double nohints = commit_p50(dir, "bench-10k-nohints", 10000, sync, false, reps, NULL);
        double one = commit_p50(dir, "bench-1", 1, sync, true, reps, NULL);
        build_p50(10000, reps < 21 ? reps : 21, &unchanged_ms, &busy_ms, &json_ms);   /* its JSON baseline takes 0.5 s a rep */
        printf("{\"bench\":\"collector_throughput\",\"metric\":\"commit_ms_p50\",\"value\":%.3f,"
               "\"series\":10000,\"store_sync\":%s,\"reps\":%d,\"nohints_ms_p50\":%.3f,\"build_ms_p50\":%.3f,"
               "\"build_unchanged_ms_p50\":%.3f,\"build_busy_ms_p50\":%.3f,\"watch_line_ms_p50\":%.3f,"
               "\"baseline\":\"persist of a 1-series snapshot\",\"baseline_ms_p50\":%.3f,"
               "\"ratio\":%.2f,\"target\":1.0}\n",
               big, sync ? "true" : "false", reps, nohints, build_ms, unchanged_ms, busy_ms, json_ms, one,
               big / one);
        rm_store(dir);
    }
    return 0;
}

int main(int argc, char **argv)
{
    bool quick = false;
    const char *only = NULL;
    int commit_reps = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--quick"))
            quick = true;
        else if (!strcmp(argv[i], "--only") && i + 1 < argc &&
                 (!strcmp(argv[i + 1], "records") || !strcmp(argv[i + 1], "commit")))
            only = argv[++i];
        else if (!strcmp(argv[i], "--commit-reps") && i + 1 < argc && atoi(argv[i + 1]) > 0)
            commit_reps = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: collector_throughput [--quick] [--only records|commit] [--commit-reps N]\n");
            return 2;
        }
    }
    int rc = 0;
    if (!only || !strcmp(only, "records"))
        rc = bench_records(quick ? 1 : 5);
    if (!rc && (!only || !strcmp(only, "commit")))
        rc = bench_commit(commit_reps ? commit_reps : quick ? 3 : 100);
    return rc;
}
