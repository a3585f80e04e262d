/*
 * test_store_hints.c: a store that trusts a snapshot's change hints
 * (snapshot.h) reads back exactly what one that compares everything does.
 *
 * Each test persists the same snapshots into two stores: one gets the
 * snapshot with its hints, the other a plain copy (no hints, so the full
 * comparison). After every persist their latest snapshots must be equal,
 * and at the end also every snapshot at a seq, every metric's time series
 * and the final. A wrong hint (the engine's or the store's reading of it)
 * shows up as a difference.
 */
#include <check.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/metrics.h"
#include "engine/series.h"
#include "publisher/store.h"
#include "raw_lmdb.h"
#include "test_util.h"

static char dir_h[512], dir_p[512];
static char err[512];

static void setup(void)
{
    make_temp_dir(dir_h, sizeof dir_h, "hints");
    make_temp_dir(dir_p, sizeof dir_p, "plain");
}

static void teardown(void)
{
    rm_rf(dir_h);
    rm_rf(dir_p);
}

/* interval_ns 0: a point at every change, the most to get wrong */
static struct store *open_rw_every(const char *dir, uint64_t interval_ns)
{
    struct store *st = store_open(dir, 0, false, false, err, sizeof err);
    ck_assert_msg(st != NULL, "%s", err);
    store_set_history_full_every(st, 8);
    store_set_series_interval(st, interval_ns);
    return st;
}

static struct store *open_rw(const char *dir)
{
    return open_rw_every(dir, 0);
}

/* The same snapshot without hints: copies of everything (owned entries have none). */
static struct snapshot *plain_copy(const struct snapshot *s)
{
    struct snapshot *c = snapshot_new(s->run, s->seq, s->state);
    ck_assert_ptr_nonnull(c);
    c->timestamp_ns = s->timestamp_ns;
    c->n_pending_tasks = s->n_pending_tasks;
    for (size_t i = 0; i < s->n_counters; i++) {
        const struct snap_counter *k = &s->counters[i];
        ck_assert_int_eq(k->is_float ? snapshot_add_gauge(c, k->name, k->fvalue)
                                     : snapshot_add_counter(c, k->name, k->ivalue), 0);
    }
    for (size_t i = 0; i < s->n_series; i++)
        ck_assert_int_eq(snapshot_add_series(c, &s->series[i]), 0);
    json_decref(c->sections);
    c->sections = json_deep_copy(s->sections);
    ck_assert_uint_eq(c->hint_epoch, 0);
    return c;
}

/* a and b equal, else where they first differ (whole texts are too long
 * for a check message) */
static void assert_same_text(const char *a, const char *b, const char *what)
{
    size_t i = 0;
    while (a[i] && a[i] == b[i])
        i++;
    size_t from = i > 120 ? i - 120 : 0;
    ck_assert_msg(a[i] == b[i], "%s differ at byte %zu: ...%.240s... vs ...%.240s...", what, i, a + from,
                  b + from);
}

static int by_counter_name(const void *a, const void *b)
{
    return strcmp(((const struct snap_counter *)a)->name, ((const struct snap_counter *)b)->name);
}

static int by_series_name(const void *a, const void *b)
{
    return strcmp(((const struct snap_series *)a)->name, ((const struct snap_series *)b)->name);
}

/* The text of a snapshot with its metrics in name order: a store gives them
 * back in the order it first saw them, which a new layout changes. */
static char *sorted_text(const struct snapshot *s)
{
    struct snapshot t = *s;
    t.counters = malloc((s->n_counters + 1) * sizeof *t.counters);
    t.series = malloc((s->n_series + 1) * sizeof *t.series);
    ck_assert(t.counters && t.series);
    memcpy(t.counters, s->counters, s->n_counters * sizeof *t.counters);
    memcpy(t.series, s->series, s->n_series * sizeof *t.series);
    qsort(t.counters, t.n_counters, sizeof *t.counters, by_counter_name);
    qsort(t.series, t.n_series, sizeof *t.series, by_series_name);
    char *text = snapshot_text(&t);
    free(t.counters);
    free(t.series);
    return text;
}

static void persist_both(struct store *h, struct store *p, const struct snapshot *s, bool final)
{
    struct snapshot *c = plain_copy(s);
    ck_assert_msg(store_persist(h, s, final) == STORE_OK, "%s", store_error(h));
    ck_assert_msg(store_persist(p, c, final) == STORE_OK, "%s", store_error(p));
    struct snapshot *lh, *lp;
    ck_assert_int_eq(store_latest(h, s->run, &lh), STORE_OK);
    ck_assert_int_eq(store_latest(p, s->run, &lp), STORE_OK);
    char *th = snapshot_text(lh), *tp = snapshot_text(lp);
    assert_same_text(th, tp, "latest (hints, plain)");
    free(th);
    free(tp);
    th = sorted_text(lh);
    char *tc = sorted_text(c);
    assert_same_text(th, tc, "latest and snapshot");
    free(th);
    free(tc);
    snapshot_free(lh);
    snapshot_free(lp);
    snapshot_free(c);
}

struct text {
    char *p;
    size_t len, cap;
};

static int collect(const struct store_point *pt, void *ctx)
{
    struct text *t = ctx;
    char line[512];
    int n = snprintf(line, sizeof line, "%s %" PRIu64 " %" PRIu64 " %d %d %" PRId64 " %.17g %d %" PRIu64
                     " %.17g %.17g %.17g %.17g %.17g %.17g %.17g\n",
                     pt->name, pt->seq, pt->timestamp_ns, pt->is_series, pt->is_float, pt->ivalue,
                     pt->fvalue, pt->exact, pt->count, pt->total, pt->min, pt->max, pt->pct[0], pt->pct[1],
                     pt->pct[2], pt->pct[3]);
    if (t->len + (size_t)n + 1 > t->cap) {
        t->cap = (t->len + (size_t)n + 1) * 2;
        t->p = realloc(t->p, t->cap);
        ck_assert_ptr_nonnull(t->p);
    }
    memcpy(t->p + t->len, line, (size_t)n + 1);
    t->len += (size_t)n;
    return 0;
}

/* Everything a reader can get of the run, from both stores, must agree. */
static void assert_stores_agree(struct store *h, struct store *p, const char *run)
{
    uint64_t *sh, *sp;
    size_t nh, np;
    ck_assert_int_eq(store_list_seqs(h, run, &sh, &nh), STORE_OK);
    ck_assert_int_eq(store_list_seqs(p, run, &sp, &np), STORE_OK);
    ck_assert_uint_eq(nh, np);
    for (size_t i = 0; i < nh; i++) {
        ck_assert_uint_eq(sh[i], sp[i]);
        struct snapshot *a, *b;
        ck_assert_int_eq(store_snapshot_at(h, run, sh[i], &a), STORE_OK);
        ck_assert_int_eq(store_snapshot_at(p, run, sp[i], &b), STORE_OK);
        char *ta = snapshot_text(a), *tb = snapshot_text(b);
        char what[64];
        snprintf(what, sizeof what, "snapshots at seq %" PRIu64, sh[i]);
        assert_same_text(ta, tb, what);
        free(ta);
        free(tb);
        snapshot_free(a);
        snapshot_free(b);
    }
    free(sh);
    free(sp);
    struct text th = {0}, tp = {0};
    ck_assert_int_eq(store_metric_series(h, run, NULL, collect, &th), STORE_OK);
    ck_assert_int_eq(store_metric_series(p, run, NULL, collect, &tp), STORE_OK);
    ck_assert_ptr_nonnull(th.p);
    assert_same_text(th.p, tp.p, "time series");
    free(th.p);
    free(tp.p);
    struct snapshot *fh, *fp;
    int rh = store_final(h, run, &fh), rp = store_final(p, run, &fp);
    ck_assert_int_eq(rh, rp);
    if (rh == STORE_OK) {
        char *a = snapshot_text(fh), *b = snapshot_text(fp);
        assert_same_text(a, b, "finals");
        free(a);
        free(b);
        snapshot_free(fh);
        snapshot_free(fp);
    }
}

/* ---- a producer of hints by hand: every kind of change it may describe ---- */

#define NS 100         /* with the counters more than PART_IDS (64) metrics: two parts, so a
                           persist folds one and writes patches for the other */
#define NB 12
#define NC 4

struct producer {
    struct snapshot *s;
    uint64_t ver;
};

static void place_all(struct producer *pr)
{
    pr->s->hint_epoch = snapshot_hint_epoch_new();
    pr->s->hint_version = pr->ver = 1;
    for (size_t i = 0; i < pr->s->n_counters; i++)
        pr->s->counters[i].hint_placed = pr->s->counters[i].hint_changed = 1;
    for (size_t i = 0; i < pr->s->n_series; i++) {
        struct snap_series *sr = &pr->s->series[i];
        sr->hint_placed = sr->hint_changed = sr->hint_edges = 1;
        sr->hint_mask = SNAP_HINT_ALL_BUCKETS;
        sr->hint_fields = UINT32_MAX;
    }
}

static void set_edges(struct snap_series *sr, double lo, double f)
{
    for (size_t j = 0; j < sr->n_buckets; j++) {
        sr->buckets[j].lo = lo;
        sr->buckets[j].hi = lo * f;
        lo *= f;
    }
    sr->min = sr->buckets[0].lo;
    sr->max = sr->buckets[sr->n_buckets - 1].hi;
}

static struct producer producer_new(const char *run)
{
    struct producer pr = {snapshot_new(run, 0, OBSD_RUN_LIVE), 0};
    char name[64];
    for (int i = 0; i < NC; i++) {
        snprintf(name, sizeof name, "counter.%d", i);
        if (i == NC - 1)
            snapshot_add_gauge(pr.s, name, 0.5);
        else
            snapshot_add_counter(pr.s, name, i);
    }
    struct snap_bucket b[NB] = {{0}};
    for (int i = 0; i < NS; i++) {
        snprintf(name, sizeof name, "series.%02d", i);
        struct snap_series sr = {.name = name, .count = 10, .total = 1000, .sum_sq = 1e5,
                                 .n_buckets = NB, .buckets = b};
        for (int k = 0; k < OBSD_N_PERCENTILES; k++)
            sr.percentiles[k] = 100 + k;
        snapshot_add_series(pr.s, &sr);
        struct snap_series *e = &pr.s->series[pr.s->n_series - 1];
        set_edges(e, 10, 1.5);
        for (int j = 0; j < NB; j++)
            e->buckets[j].count = (uint64_t)((i + j) % 3);
    }
    place_all(&pr);
    return pr;
}

#define N_WORDS (5 + OBSD_N_PERCENTILES)   /* count, total, min, max, sum_sq, percentiles */

/* The hint_fields of a series whose summary words were before[] (bit k:
 * word k differs now). */
static uint32_t changed_fields(const uint64_t before[N_WORDS], const struct snap_series *sr)
{
    uint64_t now[N_WORDS];
    memcpy(now, &sr->count, sizeof now);
    uint32_t fields = 0;
    for (int k = 0; k < N_WORDS; k++)
        fields |= (uint32_t)(now[k] != before[k]) << k;
    return fields;
}

/* Changes series i at the current version, the hints saying exactly what moved. */
static void change_series(struct producer *pr, size_t i, int how, bool with_hint)
{
    struct snap_series *sr = &pr->s->series[i];
    uint64_t before[N_WORDS];
    memcpy(before, &sr->count, sizeof before);
    uint64_t mask = 0;
    bool edges = false;
    sr->count++;
    sr->total += 7;
    sr->sum_sq += 49;
    switch (how) {
    case 0: /* one bucket */
        sr->buckets[i % NB].count++;
        mask = 1ULL << (i % NB);
        break;
    case 1: /* two buckets and a percentile */
        sr->buckets[1].count++;
        sr->buckets[NB - 1].count += 2;
        sr->percentiles[7] += 0.5;
        mask = 1ULL << 1 | 1ULL << (NB - 1);
        break;
    case 2: /* many buckets, one past a byte (the packed width grows) */
        for (int j = 0; j < NB; j += 2)
            sr->buckets[j].count += 100;
        sr->buckets[3].count += 300;
        mask = SNAP_HINT_ALL_BUCKETS;
        break;
    case 3: /* new max: every edge moves */
        set_edges(sr, sr->buckets[0].lo, 1.6 + 0.01 * (double)(i % 7));
        for (int j = 0; j < NB; j++)
            sr->buckets[j].count++;
        sr->percentiles[0] = sr->max;
        mask = SNAP_HINT_ALL_BUCKETS;
        edges = true;
        break;
    case 4: /* the exact flag and every percentile */
        sr->exact = !sr->exact;
        for (int k = 0; k < OBSD_N_PERCENTILES; k++)
            sr->percentiles[k] += 1;
        sr->buckets[0].count++;
        mask = 1;
        break;
    }
    if (!with_hint) {           /* changed behind the producer's back: no hint */
        sr->hint_placed = 0;
        return;
    }
    /* a change of the version before that the store did not see stays in
     * the mask only if the producer says it keeps it (it does not) */
    sr->hint_changed = pr->ver;
    sr->hint_fields = changed_fields(before, sr);
    sr->hint_mask = mask;
    if (edges)
        sr->hint_edges = pr->ver;
    int k = 0;
    for (uint64_t m = mask; m && __builtin_popcountll(mask) <= SNAP_HINT_NCOUNTS; m &= m - 1)
        sr->hint_counts[k++] = sr->buckets[__builtin_ctzll(m)].count;
}

static void change_counter(struct producer *pr, size_t i)
{
    struct snap_counter *c = &pr->s->counters[i];
    if (c->is_float)
        c->fvalue += 0.25;
    else
        c->fvalue = (double)++c->ivalue;
    c->hint_changed = pr->ver;
}

START_TEST(hinted_persists_read_back_as_full_comparison)
{
    const char *run = "hints-run";
    struct store *h = open_rw(dir_h), *p = open_rw(dir_p);
    struct producer pr = producer_new(run);
    const int steps = 70;
    for (int step = 0; step < steps; step++) {
        /* skipped versions: the store never sees some (it must not take
         * their masks for changes since what it saw) */
        int bumps = step % 9 == 5 ? 2 : 1;
        for (int b = 0; b < bumps && step > 0; b++) {
            pr.s->hint_version = ++pr.ver;
            for (size_t i = 0; i < NS; i++) {
                if ((i + (size_t)step + (size_t)b) % 3 == 0)
                    continue;   /* unchanged */
                int how = (int)((i * 7 + (size_t)step) % 17);
                how = how < 10 ? 0 : how < 13 ? 1 : how < 15 ? 2 : how < 16 ? 3 : 4;
                /* every few steps one series changes without the hint */
                change_series(&pr, i, how, !(step % 4 == 1 && i == (size_t)step % NS));
            }
            if (step % 2)
                change_counter(&pr, (size_t)step % NC);
        }
        if (step == 30) {
            /* a new layout: the series in another order, a new epoch */
            struct snap_series t = pr.s->series[0];
            pr.s->series[0] = pr.s->series[NS - 1];
            pr.s->series[NS - 1] = t;
            place_all(&pr);
        }
        if (step == 45) {
            /* a restart of the collector: both stores reopen; the first
             * persist after it may trust nothing it did not write itself */
            store_close(h);
            store_close(p);
            h = open_rw(dir_h);
            p = open_rw(dir_p);
        }
        if (step == 55) {
            /* a hinted entry that the producer drops and puts back with a
             * new value at the same index, placed anew */
            struct snap_series *sr = &pr.s->series[5];
            sr->count += 3;
            sr->hint_placed = sr->hint_changed = pr.ver;
        }
        pr.s->seq = (uint64_t)step;
        pr.s->timestamp_ns = 1700000000000000000ULL + (uint64_t)step * 250000000ULL;
        bool final = step == steps - 1;
        if (final)
            pr.s->state = OBSD_RUN_COMPLETE;
        persist_both(h, p, pr.s, final);
    }
    assert_stores_agree(h, p, run);
    snapshot_free(pr.s);
    store_close(h);
    store_close(p);
}
END_TEST

/* The store does trust the hints (or the test above would prove nothing):
 * a series changed under a hint that says "unchanged" gets no time series
 * point. This is the producer's contract, not something to rely on. */
static int last_seq(const struct store_point *pt, void *ctx)
{
    *(uint64_t *)ctx = pt->seq;
    return 0;
}

/* A producer of run whose snapshot h has persisted as seq 0, at its next version. */
static struct producer persisted_once(struct store *h, const char *run)
{
    struct producer pr = producer_new(run);
    pr.s->seq = 0;
    ck_assert_int_eq(store_persist(h, pr.s, false), STORE_OK);
    pr.s->hint_version = ++pr.ver;
    return pr;
}

START_TEST(a_stale_hint_is_believed)
{
    struct store *h = open_rw(dir_h);
    struct producer pr = persisted_once(h, "stale");
    change_series(&pr, 3, 0, true);
    pr.s->seq = 1;
    ck_assert_int_eq(store_persist(h, pr.s, false), STORE_OK);
    pr.s->hint_version = ++pr.ver;
    pr.s->series[3].count += 5;             /* no hint_changed: a producer's bug */
    pr.s->seq = 2;
    ck_assert_int_eq(store_persist(h, pr.s, false), STORE_OK);
    uint64_t seq = 99;
    ck_assert_int_eq(store_metric_series(h, "stale", "series.03", last_seq, &seq), STORE_OK);
    ck_assert_uint_eq(seq, 1);
    /* without hints the change is found */
    struct snapshot *c = plain_copy(pr.s);
    c->seq = 3;
    ck_assert_int_eq(store_persist(h, c, false), STORE_OK);
    ck_assert_int_eq(store_metric_series(h, "stale", "series.03", last_seq, &seq), STORE_OK);
    ck_assert_uint_eq(seq, 3);
    snapshot_free(c);
    snapshot_free(pr.s);
    store_close(h);
}
END_TEST

/* A patch gives back every bit of the summary words it names, whatever
 * their shape: integral or not, signed zeros, subnormal, huge, infinite. */
START_TEST(patch_keeps_every_bit)
{
    static const double shapes[] = {0.0, -0.0, 1.0, -1.0, 0.1, 5e-324, -2.2250738585072014e-308,
                                    1e300, -1e300, 4503599627370497.0, 123456789.0, 0.5,
                                    1.0 / 0.0, -1.0 / 0.0, 9007199254740993.0, 1e-10, 65536.0};
    const size_t n_shapes = sizeof shapes / sizeof shapes[0];
    struct store *h = open_rw(dir_h);
    struct producer pr = producer_new("bits");
    pr.s->seq = 0;
    ck_assert_int_eq(store_persist(h, pr.s, false), STORE_OK);
    for (size_t step = 1; step <= 3 * n_shapes; step++) {
        pr.s->hint_version = ++pr.ver;
        struct snap_series *sr = &pr.s->series[7];
        uint64_t before[N_WORDS], now[N_WORDS];
        memcpy(before, &sr->count, sizeof before);
        sr->count += step;
        double *words[] = {&sr->total, &sr->min, &sr->max, &sr->sum_sq, &sr->percentiles[0],
                           &sr->percentiles[5], &sr->percentiles[OBSD_N_PERCENTILES - 1]};
        for (size_t w = 0; w < sizeof words / sizeof words[0]; w++)
            *words[w] = shapes[(step * (w + 1) + w) % n_shapes];
        memcpy(now, &sr->count, sizeof now);
        sr->hint_changed = pr.ver;
        sr->hint_fields = changed_fields(before, sr);
        sr->hint_mask = 0;
        pr.s->seq = step;
        ck_assert_int_eq(store_persist(h, pr.s, false), STORE_OK);
        struct snapshot *l;
        ck_assert_int_eq(store_latest(h, "bits", &l), STORE_OK);
        const struct snap_series *got = snapshot_find_series(l, sr->name);
        ck_assert_ptr_nonnull(got);
        uint64_t g[N_WORDS];
        memcpy(g, &got->count, sizeof g);
        for (int k = 0; k < N_WORDS; k++)
            ck_assert_msg(g[k] == now[k], "step %zu, word %d: %016llx read back as %016llx", step, k,
                          (unsigned long long)now[k], (unsigned long long)g[k]);
        snapshot_free(l);
    }
    snapshot_free(pr.s);
    store_close(h);
}
END_TEST

/* Whether the latest snapshot of run reads as "corrupt store" (any other
 * error fails the check). */
static bool latest_corrupt(const char *run)
{
    struct store *st = store_open(dir_h, 0, false, true, err, sizeof err);
    ck_assert_msg(st != NULL, "%s", err);
    struct snapshot *out = NULL;
    int rc = store_latest(st, run, &out);
    ck_assert_msg(rc == STORE_OK || (rc == STORE_ERROR && strstr(store_error(st), "corrupt store")), "%d: %s",
                  rc, store_error(st));
    snapshot_free(out);
    store_close(st);
    return rc != STORE_OK;
}

/* A damaged piece of patches: every truncation is "corrupt store", a
 * flipped byte gives data or that error, never a read out of bounds (ASan
 * watches). */
START_TEST(damaged_patch_rejected)
{
    struct store *h = open_rw(dir_h);
    struct producer pr = persisted_once(h, "damaged");
    for (size_t i = 0; i < NS; i++)
        change_series(&pr, i, i % 2, true);   /* a bucket; two buckets and a percentile */
    pr.s->seq = 1;
    ck_assert_int_eq(store_persist(h, pr.s, false), STORE_OK);
    store_close(h);
    snapshot_free(pr.s);

    /* the last piece of the delta row of seq 1: the latest table's last key */
    uint8_t key[24];
    ck_assert_uint_eq(raw_last_key(dir_h, "latest", key, sizeof key), 24);
    static uint8_t good[8192], bad[8192];
    size_t n = raw_get(dir_h, "latest", key, 24, good, sizeof good);
    ck_assert_uint_lt(n, sizeof good);
    ck_assert_uint_gt(n, 200);
    ck_assert(!latest_corrupt("damaged"));
    for (size_t cut = 0; cut < n; cut += 1 + cut / 32) {
        raw_put(dir_h, "latest", key, 24, good, cut);
        ck_assert_msg(latest_corrupt("damaged"), "cut at %zu of %zu", cut, n);
    }
    for (size_t pos = 0; pos < n; pos += 1 + pos / 48) {
        memcpy(bad, good, n);
        bad[pos] ^= 0x5a;
        raw_put(dir_h, "latest", key, 24, bad, n);
        latest_corrupt("damaged");
    }
}
END_TEST

/* ---- the engine's own hints (metrics_snapshot), as the collector keeps them ---- */

static uint64_t value_of(size_t i, size_t k)
{
    return 1000 + (uint64_t)((i * 7919 + k * 104729) % 90000);
}

/* Persists 250 ms apart, a point at most every interval_ns. */
static void engine_hints(uint64_t interval_ns)
{
    const char *run = "engine-run";
    struct store *h = open_rw_every(dir_h, interval_ns), *p = open_rw_every(dir_p, interval_ns);
    struct series_env env;
    series_env_init(&env, NULL, 0);
    struct metric_table t;
    metrics_init(&t, &env);
    enum { N = 300 };
    struct metric *m[N + 20];
    char name[64];
    for (size_t i = 0; i < N; i++) {
        snprintf(name, sizeof name, "engine.series.%03zu", i);
        m[i] = metrics_get(&t, name, METRIC_SERIES);
        ck_assert_ptr_nonnull(m[i]);
        for (size_t k = 0; k < 20; k++) {
            metrics_touch(&t, m[i]);
            series_add(&m[i]->series, value_of(i, k));
        }
    }
    struct metric *cnt = metrics_get(&t, "engine.counter", METRIC_COUNTER);
    struct metric *gauge = metrics_get(&t, "engine.gauge", METRIC_GAUGE);
    struct snapshot *s = snapshot_new(run, 0, OBSD_RUN_LIVE);
    snapshot_add_counter(s, "obsd_dropped_records", 0);
    snapshot_add_counter(s, "obsd_rejected_records", 0);
    size_t nc, ns, n_extra = 0;
    const int steps = 60;
    for (int step = 0; step < steps; step++) {
        for (size_t i = 0; i < N; i++) {
            size_t r = (i + (size_t)step) % 11;
            if (r == 0)
                continue;                                   /* unchanged */
            size_t nv = r < 7 ? 1 : r < 9 ? 3 : r < 10 ? 40 : 1;   /* 40: a full recomputation */
            for (size_t k = 0; k < nv; k++) {
                uint64_t v = value_of(i, 20 + (size_t)step * 50 + k);
                if (r == 10)
                    v = step % 2 ? 10 + (uint64_t)step : 200000 + (uint64_t)step;   /* new min or max */
                metrics_touch(&t, m[i]);
                series_add(&m[i]->series, v);
            }
        }
        if (step % 3 == 0) {
            metrics_touch(&t, cnt);
            cnt->counter += step % 2;                       /* sometimes the same value */
            metrics_touch(&t, gauge);
            gauge->gauge = (double)step / 8;
        }
        if (step % 10 == 7 && n_extra < 20) {               /* series appear during the run */
            snprintf(name, sizeof name, "engine.late.%02zu", n_extra);
            struct metric *e = m[N + n_extra++] = metrics_get(&t, name, METRIC_SERIES);
            metrics_touch(&t, e);
            series_add(&e->series, 5000 + (uint64_t)step);
        }
        /* what the collector does between builds: the others' part goes */
        snapshot_truncate(s, 2 + t.snap_nc, t.snap_ns);
        if (step == 30)
            metrics_forget_snapshot(&t);                    /* a fresh layout, a new epoch */
        ck_assert_int_eq(metrics_snapshot(&t, s, 2, 30, &nc, &ns), 0);
        /* a module's series after the table's, anew each time (no hints) */
        struct snap_series mod = {.name = "module.series", .count = (uint64_t)step};
        ck_assert_int_eq(snapshot_add_series(s, &mod), 0);
        s->counters[0].ivalue = step / 4;
        s->counters[0].fvalue = (double)(step / 4);
        if (step == 40) {
            store_close(h);
            store_close(p);
            h = open_rw_every(dir_h, interval_ns);
            p = open_rw_every(dir_p, interval_ns);
        }
        s->seq = (uint64_t)step;
        s->timestamp_ns = 1700000000000000000ULL + (uint64_t)step * 250000000ULL;
        bool final = step == steps - 1;
        if (final)
            s->state = OBSD_RUN_COMPLETE;
        if (step % 13 == 12)
            continue;   /* a publish that did not persist: the store misses a version */
        persist_both(h, p, s, final);
    }
    assert_stores_agree(h, p, run);
    snapshot_free(s);
    metrics_free(&t);
    store_close(h);
    store_close(p);
}

START_TEST(engine_hints_read_back_as_full_comparison)
{
    engine_hints(0);
}
END_TEST

/* The same with a point at most every second, as the collector persists
 * by default: most persists give hinted metrics no point. */
START_TEST(engine_hints_with_thinned_points)
{
    engine_hints(1000000000ULL);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("store_hints");
    TCase *tc = tcase_create("core");
    tcase_add_unchecked_fixture(tc, temp_root_begin, temp_root_end);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, hinted_persists_read_back_as_full_comparison);
    tcase_add_test(tc, a_stale_hint_is_believed);
    tcase_add_test(tc, patch_keeps_every_bit);
    tcase_add_test(tc, damaged_patch_rejected);
    tcase_add_test(tc, engine_hints_read_back_as_full_comparison);
    tcase_add_test(tc, engine_hints_with_thinned_points);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
