/*
 * producer_cost: what one record costs a producer thread.
 *
 * For 1 and 2 producer threads, each writes 24-byte span records with
 * obsd_span() in bursts of 256 (then pauses, like a benchmark doing work)
 * while a reader thread drains the segment in batches, sleeping when it
 * finds nothing. The same run measures a bare SPSC ring of the same shape
 * (1 MiB byte ring, cached tail, 24-byte record copy, release store of head
 * per record) drained the same way: that is the baseline. Only the time
 * inside bursts is counted: the median burst of each thread, so a burst the
 * scheduler interrupted does not count. Also measured: obsd_now() alone, and a span
 * that takes its end timestamp from obsd_now().
 *
 * Prints one JSON object per configuration:
 *   name, threads, records, ns_per_record, baseline_ns_per_record, ratio,
 *   clock_ns, ns_per_record_with_clock, over_clock_ns, drops, baseline_drops
 *
 * Where the build found liblttng-ust and the lttng command can start a
 * tracing session, the same run also measures an LTTng-UST tracepoint with
 * the same payload (key id, two timestamps; LTTng reads its own clock inside)
 * against obsd_span() with its clock read, and prints one more object per
 * thread count (name producer_cost.lttng_ust.threadsN), or one "skipped"
 * object that says why it could not.
 *
 * Each figure is the best of --reps repetitions, run interleaved.
 *
 *   producer_cost [--records N] [--reps N] [--no-lttng]
 */
#include <getopt.h>
#include <pthread.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "obsd/obsd.h"
#include "shm/shm.h"
#include "shm/wire.h"

#ifdef OBSD_BENCH_LTTNG
#include "lttng/obsd_bench_tp.h"
#endif

#define BURST 256
#define PAUSE_NS 40000
#define RING_BYTES (1u << 20)

static long g_records = 1000000;  /* per thread */
static int g_reps = 5;

static void pause_ns(long ns)
{
    struct timespec ts = {0, ns};
    nanosleep(&ts, NULL);
}

/* ---------------- the bare SPSC ring (baseline) ---------------- */

struct bare_ring {
    alignas(64) _Atomic uint64_t head;
    alignas(64) _Atomic uint64_t tail;
    alignas(64) uint64_t head_local, tail_cache, drops;
    unsigned char *data;
};

static inline int bare_put(struct bare_ring *r, uint32_t key, uint64_t a, uint64_t b)
{
    const uint64_t n = 24;
    uint64_t off = r->head_local & (RING_BYTES - 1);
    uint64_t pad = off + n > RING_BYTES ? RING_BYTES - off : 0;
    if (r->head_local + pad + n - r->tail_cache > RING_BYTES) {
        r->tail_cache = atomic_load_explicit(&r->tail, memory_order_acquire);
        if (r->head_local + pad + n - r->tail_cache > RING_BYTES) {
            r->drops++;
            return 1;
        }
    }
    if (pad) {
        struct obsd_rec_hdr ph = {0, OBSD_REC_PAD, 0, 0};
        memcpy(r->data + off, &ph, sizeof ph);
        r->head_local += pad;
        off = 0;
    }
    struct obsd_rec_hdr h = {16, OBSD_REC_SPAN, 0, key};
    uint64_t w[3];
    memcpy(&w[0], &h, 8);
    w[1] = a;
    w[2] = b;
    memcpy(r->data + off, w, sizeof w);
    r->head_local += n;
    atomic_store_explicit(&r->head, r->head_local, memory_order_release);
    return 0;
}

static uint64_t bare_drain(struct bare_ring *r, uint64_t *sum)
{
    uint64_t head = atomic_load_explicit(&r->head, memory_order_acquire);
    uint64_t tail = atomic_load_explicit(&r->tail, memory_order_relaxed), n = 0;
    while (tail != head) {
        uint64_t off = tail & (RING_BYTES - 1);
        struct obsd_rec_hdr h;
        memcpy(&h, r->data + off, sizeof h);
        if (h.type == OBSD_REC_PAD) {
            tail += RING_BYTES - off;
            continue;
        }
        uint64_t v;
        memcpy(&v, r->data + off + 8, 8);
        *sum += v;
        tail += OBSD_REC_SIZE(h.len);
        n++;
    }
    atomic_store_explicit(&r->tail, tail, memory_order_release);
    return n;
}

/* ---------------- runs ---------------- */

struct run {
    int threads;
    bool bare, with_clock, lttng;
    const char *seg_name;
    struct shm_segment *seg;
    struct bare_ring rings[2];
    atomic_int writers_done;
    uint64_t ns[2], drops[2];
    uint64_t sum;
};

struct worker {
    struct run *run;
    int idx;
};

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Median burst time: a burst the scheduler interrupted (the machine is
 * shared) is an outlier, not a cost of the record path. */
static uint64_t median_burst(uint64_t *t, long n)
{
    qsort(t, (size_t)n, sizeof *t, cmp_u64);
    return t[n / 2];
}

static void count_fn(void *ctx, const struct shm_producer *from, const struct shm_record *rec)
{
    (void)from;
    *(uint64_t *)ctx += rec->len;
}

static void *reader(void *p)
{
    struct run *r = p;
    for (;;) {
        bool done = atomic_load(&r->writers_done) == r->threads;
        uint64_t n = 0;
        if (r->lttng) {
            n = 0;     /* LTTng's consumer daemon drains its own buffers */
        } else if (r->bare) {
            for (int i = 0; i < r->threads; i++)
                n += bare_drain(&r->rings[i], &r->sum);
        } else {
            n = shm_drain(r->seg, count_fn, &r->sum, 0);
        }
        if (n == 0) {
            if (done)
                break;
            pause_ns(50000);
        }
    }
    return NULL;
}

static void *writer(void *p)
{
    struct worker *w = p;
    struct run *r = w->run;
    uint64_t drops = 0;
    long nb = g_records / BURST, b = 0;
    uint64_t *bt = malloc((size_t)nb * sizeof *bt);
    if (r->lttng) {
#ifdef OBSD_BENCH_LTTNG
        /* LTTng stamps the event itself: the peer of obsd_span(h, k, t0, obsd_now()) */
        for (long i = 0; i < g_records; i += BURST) {
            uint64_t t0 = obsd_now();
            for (long j = i; j < i + BURST; j++)
                lttng_ust_tracepoint(obsd_bench, span, 7, t0, (uint64_t)j);
            bt[b++] = obsd_now() - t0;
            pause_ns(PAUSE_NS);
        }
#endif
    } else if (r->bare) {
        struct bare_ring *ring = &r->rings[w->idx];
        for (long i = 0; i < g_records; i += BURST) {
            uint64_t t0 = obsd_now();
            for (long j = i; j < i + BURST; j++)
                bare_put(ring, 7, (uint64_t)j, (uint64_t)j + 1);
            bt[b++] = obsd_now() - t0;
            pause_ns(PAUSE_NS);
        }
        drops = ring->drops;
    } else {
        obsd_t *h = obsd_open(r->seg_name);
        if (!h) {
            fprintf(stderr, "producer_cost: %s\n", obsd_last_error());
            exit(1);
        }
        obsd_key_t k = obsd_key(h, "bench.span");
        for (long i = 0; i < g_records; i += BURST) {
            uint64_t t0 = obsd_now();
            if (r->with_clock) {
                for (long j = i; j < i + BURST; j++)
                    obsd_span(h, k, t0, obsd_now());
            } else {
                for (long j = i; j < i + BURST; j++)
                    obsd_span(h, k, (uint64_t)j, (uint64_t)j + 1);
            }
            bt[b++] = obsd_now() - t0;
            pause_ns(PAUSE_NS);
        }
        struct obsd_producer_stats st;
        obsd_stats(h, &st);
        drops = st.records_dropped;
        obsd_close(h);
    }
    r->ns[w->idx] = median_burst(bt, nb);
    free(bt);
    r->drops[w->idx] = drops;
    atomic_fetch_add(&r->writers_done, 1);
    return NULL;
}

/* One measurement: ns per record (mean over threads) and drops. */
enum mode { MODE_BARE, MODE_OBSD, MODE_OBSD_CLOCK, MODE_LTTNG };

static double measure(int threads, enum mode mode, const char *seg_name,
                      struct shm_segment *seg, uint64_t *drops)
{
    size_t rsize = (sizeof(struct run) + 63) & ~(size_t)63;
    struct run *r = aligned_alloc(64, rsize);
    memset(r, 0, rsize);
    r->threads = threads;
    r->bare = mode == MODE_BARE;
    r->with_clock = mode == MODE_OBSD_CLOCK;
    r->lttng = mode == MODE_LTTNG;
    r->seg_name = seg_name;
    r->seg = seg;
    for (int i = 0; i < threads; i++) {
        r->rings[i].data = aligned_alloc(4096, RING_BYTES);
        memset(r->rings[i].data, 0, RING_BYTES);
    }
    pthread_t rt, wt[2];
    struct worker w[2];
    pthread_create(&rt, NULL, reader, r);
    for (int i = 0; i < threads; i++) {
        w[i] = (struct worker){r, i};
        pthread_create(&wt[i], NULL, writer, &w[i]);
    }
    for (int i = 0; i < threads; i++)
        pthread_join(wt[i], NULL);
    pthread_join(rt, NULL);
    double total = 0;
    *drops = 0;
    for (int i = 0; i < threads; i++) {
        total += (double)r->ns[i];
        *drops += r->drops[i];
        free(r->rings[i].data);
    }
    free(r);
    return total / ((double)threads * BURST);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Best of the repetitions: this machine is shared and noisy, and noise only
 * ever adds time. */
static double best(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return v[0];
}

/* obsd_now() alone, timed the same way: median of 256-call bursts. */
static double clock_cost(void)
{
    long nb = 2000;
    uint64_t *bt = malloc((size_t)nb * sizeof *bt);
    volatile uint64_t sink = 0;
    for (long b = 0; b < nb; b++) {
        uint64_t t0 = obsd_now();
        for (int j = 0; j < BURST; j++)
            sink += obsd_now();
        bt[b] = obsd_now() - t0;
        if (b % 8 == 7)
            pause_ns(PAUSE_NS);
    }
    (void)sink;
    double ns = (double)median_burst(bt, nb) / BURST;
    free(bt);
    return ns;
}

#ifdef OBSD_BENCH_LTTNG
/* ---------------- the LTTng-UST peer ----------------
 *
 * lttng-ust registers a process with the session daemon in a constructor,
 * before main(), and only a registered process gets the session's enabled
 * events. So the first process creates and starts the session, then runs
 * itself again with OBSD_BENCH_LTTNG_SESSION naming it; that second image
 * does the measuring and destroys the session at the end. */

#define LTTNG_ENV "OBSD_BENCH_LTTNG_SESSION"

static const char *g_lttng_skip;          /* why there is no LTTng figure */

/* Runs an lttng command line quietly; true when it exits 0. Session names
 * and paths are ours (pid, mkdtemp), so they need no quoting. */
static bool lttng_cmd(const char *args)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "lttng %s >/dev/null 2>&1", args);
    return system(cmd) == 0;
}

static void lttng_destroy(const char *session, const char *dir)
{
    char a[400];
    snprintf(a, sizeof a, "destroy %s", session);
    lttng_cmd(a);
    if (dir && *dir) {
        snprintf(a, sizeof a, "rm -rf %s", dir);
        if (system(a) != 0)
            fprintf(stderr, "producer_cost: could not remove %s\n", dir);
    }
}

/* In the first image: sets up the session and re-executes; returns only when
 * that is impossible (g_lttng_skip says why). */
static void lttng_setup_and_reexec(char **argv)
{
    static char dir[] = "/tmp/obsd-lttng-XXXXXX";
    char session[64], a[400];
    snprintf(session, sizeof session, "obsd-bench-%d", (int)getpid());
    if (!mkdtemp(dir)) {
        g_lttng_skip = "cannot create a trace directory";
        return;
    }
    snprintf(a, sizeof a, "create %s --output=%s", session, dir);
    if (!lttng_cmd(a)) {
        g_lttng_skip = "lttng create failed (lttng-tools installed? session daemon startable?)";
        lttng_destroy(session, dir);
        return;
    }
    snprintf(a, sizeof a, "enable-event --userspace --session=%s obsd_bench:span", session);
    bool ok = lttng_cmd(a);
    snprintf(a, sizeof a, "start %s", session);
    if (!ok || !lttng_cmd(a)) {
        g_lttng_skip = "lttng enable-event/start failed";
        lttng_destroy(session, dir);
        return;
    }
    char val[200];
    snprintf(val, sizeof val, "%s:%s", session, dir);
    setenv(LTTNG_ENV, val, 1);
    execv("/proc/self/exe", argv);
    g_lttng_skip = "cannot re-execute the benchmark";
    lttng_destroy(session, dir);
}

/* Discarded events of the session, from `lttng list` (-1: unknown). */
static long long lttng_discarded(const char *session)
{
    char cmd[200], line[256];
    snprintf(cmd, sizeof cmd, "lttng list %s 2>/dev/null", session);
    FILE *p = popen(cmd, "r");
    long long total = -1, v;
    if (!p)
        return -1;
    while (fgets(line, sizeof line, p))
        if (sscanf(line, " Discarded events: %lld", &v) == 1)
            total = (total < 0 ? 0 : total) + v;
    pclose(p);
    return total;
}
#endif

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"records", required_argument, 0, 'n'},
        {"reps", required_argument, 0, 'r'},
        {"no-lttng", no_argument, 0, 'L'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    int c;
    bool want_lttng = true;
    while ((c = getopt_long(argc, argv, "n:r:h", opts, NULL)) != -1) {
        char *end;
        switch (c) {
        case 'n':
            g_records = strtol(optarg, &end, 10);
            if (*end || g_records < BURST) {
                fprintf(stderr, "producer_cost: --records must be a number >= %d\n", BURST);
                return 2;
            }
            g_records -= g_records % BURST;
            break;
        case 'r':
            g_reps = (int)strtol(optarg, &end, 10);
            if (*end || g_reps < 1 || g_reps > 99) {
                fprintf(stderr, "producer_cost: --reps must be 1..99\n");
                return 2;
            }
            break;
        case 'L':
            want_lttng = false;
            break;
        case 'h':
            printf("usage: producer_cost [--records N] [--reps N] [--no-lttng]\n"
                   "  --records N  span records per producer thread (default 1000000)\n"
                   "  --reps N     repetitions, the best is reported (default 5)\n"
                   "  --no-lttng   skip the LTTng-UST peer (measured when the build found\n"
                   "               liblttng-ust and `lttng` can start a session)\n");
            return 0;
        default:
            return 2;
        }
    }
#ifdef OBSD_BENCH_LTTNG
    char lttng_session[64] = "", lttng_dir[200] = "";
    const char *lenv = getenv(LTTNG_ENV);
    if (want_lttng && !lenv)
        lttng_setup_and_reexec(argv);       /* returns only on failure */
    if (lenv) {
        const char *colon = strchr(lenv, ':');
        if (colon && colon - lenv < (ptrdiff_t)sizeof lttng_session) {
            memcpy(lttng_session, lenv, (size_t)(colon - lenv));
            snprintf(lttng_dir, sizeof lttng_dir, "%s", colon + 1);
        }
        unsetenv(LTTNG_ENV);
        if (!lttng_ust_tracepoint_enabled(obsd_bench, span))
            g_lttng_skip = "the session did not enable the tracepoint in this process";
    }
    if (!want_lttng)
        g_lttng_skip = "--no-lttng";
#else
    (void)want_lttng;
    const char *g_lttng_skip = "built without liblttng-ust (Debian: liblttng-ust-dev, lttng-tools)";
#endif
    char name[64];
    snprintf(name, sizeof name, "bench-cost-%d", (int)getpid());
    struct shm_config cfg;
    shm_config_defaults(&cfg, name);
    cfg.ring_bytes = RING_BYTES;
    cfg.max_producers = 8;
    char err[256];
    struct shm_segment *seg = shm_segment_create(&cfg, err, sizeof err);
    if (!seg) {
        fprintf(stderr, "producer_cost: %s\n", err);
        return 1;
    }
    double clk[200];
    int nclk = 0;

    for (int threads = 1; threads <= 2; threads++) {
        double obsd[100], bare[100], withclk[100], lt[100];
        uint64_t drops = 0, bare_drops = 0, d;
        for (int rep = 0; rep < g_reps; rep++) { /* interleaved: same conditions */
            bare[rep] = measure(threads, MODE_BARE, name, seg, &d);
            bare_drops += d;
            obsd[rep] = measure(threads, MODE_OBSD, name, seg, &d);
            drops += d;
            withclk[rep] = measure(threads, MODE_OBSD_CLOCK, name, seg, &d);
            drops += d;
            if (!g_lttng_skip)
                lt[rep] = measure(threads, MODE_LTTNG, name, seg, &d);
            clk[nclk++] = clock_cost();  /* interleaved too */
        }
        double clock_ns = best(clk, nclk);
        double o = best(obsd, g_reps), b = best(bare, g_reps), w = best(withclk, g_reps);
        printf("{\"name\": \"producer_cost.span24.threads%d\", \"threads\": %d, \"records\": %ld, "
               "\"ns_per_record\": %.2f, \"baseline_ns_per_record\": %.2f, \"ratio\": %.2f, "
               "\"clock_ns\": %.2f, \"ns_per_record_with_clock\": %.2f, \"over_clock_ns\": %.2f, "
               "\"drops\": %llu, \"baseline_drops\": %llu}\n",
               threads, threads, g_records * threads, o, b, o / b, clock_ns, w, w - clock_ns,
               (unsigned long long)drops, (unsigned long long)bare_drops);
        if (!g_lttng_skip) {
            double l = best(lt, g_reps);
            printf("{\"name\": \"producer_cost.lttng_ust.threads%d\", \"threads\": %d, "
                   "\"records\": %ld, \"ns_per_record\": %.2f, "
                   "\"baseline\": \"obsd_span with obsd_now\", \"baseline_ns_per_record\": %.2f, "
                   "\"ratio\": %.2f, \"clock_ns\": %.2f, \"over_clock_ns\": %.2f}\n",
                   threads, threads, g_records * threads, l, w, l / w, clock_ns, l - clock_ns);
        }
        fflush(stdout);
    }
#ifdef OBSD_BENCH_LTTNG
    if (lttng_session[0]) {
        char a[200];
        snprintf(a, sizeof a, "stop %s", lttng_session);
        lttng_cmd(a);
        if (!g_lttng_skip)
            printf("{\"name\": \"producer_cost.lttng_ust.session\", \"discarded_events\": %lld, "
                   "\"channel\": \"lttng defaults: per-user buffers, 4 x 512 KiB, discard mode\"}\n",
                   lttng_discarded(lttng_session));
        lttng_destroy(lttng_session, lttng_dir);
    }
#endif
    if (g_lttng_skip)
        printf("{\"name\": \"producer_cost.lttng_ust\", \"skipped\": \"%s\"}\n", g_lttng_skip);
    shm_segment_close(seg, true);
    return 0;
}
