/*
 * test_requests.c: request metrics across real processes.
 *
 * Each case starts the obsd daemon (--foreground, its own segment name and a
 * temporary store, exit_after_run), feeds it requests (obsd-replay on a file
 * built from the tokenizer corpus, or this process as a libobsd producer) and
 * reads the final snapshot back with `obsctl show --final --json`. Expected
 * values are computed here from the replay plan: ISL and OSL totals from the
 * reference counts of Hugging Face tokenizers, timing series from the plan's
 * timestamps, TPOT from counts of the text after the first chunk.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "obsd/obsd.h"
#include "tokenq/tokenizer.h"

#include "replay_corpus.h"

static const char *build_dir(void)
{
    const char *d = getenv("OBSD_BUILD_DIR");
    return d ? d : ".";
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- processes ---- */

static pid_t spawn2(char *const argv[], const char *out_path, const char *err_path);

static pid_t spawn(char *const argv[], const char *out_path)
{
    return spawn2(argv, out_path, NULL);
}

/* Runs argv with stdout to out_path and stderr to err_path (NULL: out_path). */
static pid_t spawn2(char *const argv[], const char *out_path, const char *err_path)
{
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        if (out_path) {
            int fd = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
            if (fd >= 0) {
                dup2(fd, 1);
                dup2(fd, 2);
                close(fd);
            }
            if (err_path) {
                fd = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
                if (fd >= 0) {
                    dup2(fd, 2);
                    close(fd);
                }
            }
        }
        execv(argv[0], argv);
        fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    return pid;
}

/* Exit status of pid, or -1 if it is still running after timeout_s. */
static int wait_exit(pid_t pid, double timeout_s)
{
    double end = now_s() + timeout_s;
    for (;;) {
        int st;
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid)
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        if (now_s() > end)
            return -1;
        sleep_ms(10);
    }
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return strdup("");
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    size_t got = fread(s, 1, (size_t)n, f);
    s[got] = 0;
    fclose(f);
    return s;
}

struct daemon {
    pid_t pid;
    char name[64];
    char store[128];
    char log[192];
};

static void daemon_cleanup(struct daemon *d);

/* A failed check ends the test process with exit(): what it started is
 * cleaned up then. */
static struct daemon *current_daemon;

static void cleanup_at_exit(void)
{
    if (current_daemon)
        daemon_cleanup(current_daemon);
}

/* Starts obsd with the tokenizer (NULL: none) and extra --set assignments
 * (NULL-terminated). Waits for its segment. */
static void daemon_start(struct daemon *d, const char *tokenizer, const char *const *sets)
{
    static int serial;
    memset(d, 0, sizeof *d);
    snprintf(d->name, sizeof d->name, "rq%d_%d", (int)getpid(), serial++);
    snprintf(d->store, sizeof d->store, "/tmp/obsd-rq-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(d->store));
    snprintf(d->log, sizeof d->log, "%s/obsd.log", d->store);
    char obsd[4096];
    snprintf(obsd, sizeof obsd, "%s/src/daemon/obsd", build_dir());
    char *argv[64];
    int n = 0;
    argv[n++] = obsd;
    argv[n++] = "--foreground";
    argv[n++] = "--name";
    argv[n++] = d->name;
    argv[n++] = "--store";
    argv[n++] = d->store;
    if (tokenizer) {
        argv[n++] = "--tokenizer";
        argv[n++] = (char *)tokenizer;
    }
    static const char *const base[] = {"exit_after_run=true", "ring_full_policy=block",
                                       "ring_block_timeout_ms=60000", "store_sync=false", NULL};
    for (int i = 0; base[i]; i++) {
        argv[n++] = "--set";
        argv[n++] = (char *)base[i];
    }
    for (int i = 0; sets && sets[i]; i++) {
        argv[n++] = "--set";
        argv[n++] = (char *)sets[i];
    }
    argv[n] = NULL;
    d->pid = spawn(argv, d->log);
    static bool registered;
    if (!registered)
        registered = atexit(cleanup_at_exit) == 0;
    current_daemon = d;

    char shm[128];
    snprintf(shm, sizeof shm, "/dev/shm/obsd.%s", d->name);
    double end = now_s() + 30;
    while (access(shm, F_OK) != 0) {
        int st;
        if (waitpid(d->pid, &st, WNOHANG) == d->pid) {
            d->pid = 0;
            char *log = slurp(d->log);
            ck_abort_msg("obsd exited at startup: %s", log);
        }
        ck_assert_msg(now_s() < end, "obsd did not create %s", shm);
        sleep_ms(10);
    }
}

static void daemon_cleanup(struct daemon *d)
{
    if (current_daemon == d)
        current_daemon = NULL;
    if (d->pid > 0) {
        kill(d->pid, SIGKILL);
        waitpid(d->pid, NULL, 0);
    }
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", d->store);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", d->store);
    snprintf(cmd, sizeof cmd, "/dev/shm/obsd.%s", d->name);
    unlink(cmd);
}

/* Waits for obsd to finish its run (exit_after_run) and checks it exited 0. */
static void daemon_finish(struct daemon *d, double timeout_s)
{
    int st = wait_exit(d->pid, timeout_s);
    if (st != 0) {
        char *log = slurp(d->log);
        ck_abort_msg("obsd exit status %d: %s", st, log);
    }
    d->pid = 0;
}

/* Runs obsctl show with args on the daemon's store; returns its stdout and,
 * if errout is given, its stderr (where --json puts the state notes). */
static char *obsctl(const struct daemon *d, const char *a1, const char *a2, int *status,
                    char **errout)
{
    char path[4096], out[256], err[256];
    snprintf(path, sizeof path, "%s/src/cli/obsctl", build_dir());
    snprintf(out, sizeof out, "%s/obsctl.out", d->store);
    snprintf(err, sizeof err, "%s/obsctl.err", d->store);
    char *argv[] = {path, "show", "--store", (char *)d->store, (char *)a1, (char *)a2, NULL};
    pid_t pid = spawn2(argv, out, err);
    *status = wait_exit(pid, 60);
    if (errout)
        *errout = slurp(err);
    return slurp(out);
}

static json_t *final_snapshot(const struct daemon *d)
{
    int st;
    char *out = obsctl(d, "--final", "--json", &st, NULL);
    ck_assert_msg(st == 0, "obsctl show --final --json: status %d: %s", st, out);
    json_error_t jerr;
    json_t *j = json_loads(out, 0, &jerr);
    ck_assert_msg(j != NULL, "obsctl output is not JSON (%s): %.500s", jerr.text, out);
    free(out);
    return j;
}

static void run_replay(const struct daemon *d, const char *file)
{
    char path[4096], out[256];
    snprintf(path, sizeof path, "%s/examples/obsd-replay", build_dir());
    snprintf(out, sizeof out, "%s/replay.out", d->store);
    char *argv[] = {path, "--name", (char *)d->name, (char *)file, NULL};
    int st = wait_exit(spawn(argv, out), 120);
    if (st != 0) {
        char *s = slurp(out);
        ck_abort_msg("obsd-replay status %d: %s", st, s);
    }
}

/* ---- snapshot access ---- */

static json_t *metric(json_t *snap, const char *name)
{
    size_t i;
    json_t *m;
    json_array_foreach(json_object_get(snap, "metrics"), i, m) {
        if (!strcmp(json_string_value(json_object_get(m, "name")), name))
            return m;
    }
    return NULL;
}

static int64_t counter(json_t *snap, const char *name)
{
    json_t *m = metric(snap, name);
    ck_assert_msg(m != NULL, "counter %s missing", name);
    return json_integer_value(json_object_get(m, "value"));
}

static double num(json_t *o, const char *key)
{
    return json_number_value(json_object_get(o, key));
}

/* ---- expectations ---- */

struct values {
    double *v;
    size_t n;
};

static void push(struct values *s, double v)
{
    s->v = realloc(s->v, (s->n + 1) * sizeof *s->v);
    s->v[s->n++] = v;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The series in the snapshot holds exactly these values. */
static void check_series(json_t *snap, const char *name, struct values *want, bool float_total)
{
    json_t *m = metric(snap, name);
    ck_assert_msg(m != NULL, "series %s missing", name);
    ck_assert_msg((size_t)json_integer_value(json_object_get(m, "count")) == want->n,
                  "%s: count %lld, want %zu", name,
                  (long long)json_integer_value(json_object_get(m, "count")), want->n);
    if (want->n == 0)
        return;
    qsort(want->v, want->n, sizeof *want->v, cmp_d);
    double total = 0;
    for (size_t i = 0; i < want->n; i++)
        total += want->v[i];
    if (float_total)
        ck_assert_msg(fabs(num(m, "total") - total) <= 1e-9 * total, "%s: total %.17g, want %.17g",
                      name, num(m, "total"), total);
    else
        ck_assert_msg(num(m, "total") == total, "%s: total %.17g, want %.17g", name,
                      num(m, "total"), total);
    ck_assert_msg(num(m, "min") == want->v[0], "%s: min %.17g, want %.17g", name, num(m, "min"),
                  want->v[0]);
    ck_assert_msg(num(m, "max") == want->v[want->n - 1], "%s: max", name);
    ck_assert_msg(json_is_true(json_object_get(m, "exact")), "%s: final series not exact", name);
    static const struct { const char *key; double p; } pcts[] = {
        {"99.9", 99.9}, {"99.0", 99}, {"90.0", 90}, {"50.0", 50}, {"25.0", 25}, {"1.0", 1}};
    json_t *pj = json_object_get(m, "percentiles");
    for (size_t i = 0; i < sizeof pcts / sizeof pcts[0]; i++) {
        size_t rank = (size_t)floor(pcts[i].p / 100.0 * (double)(want->n - 1));
        double got = json_number_value(json_object_get(pj, pcts[i].key));
        ck_assert_msg(got == want->v[rank], "%s: p%s = %.17g, want %.17g", name, pcts[i].key,
                      got, want->v[rank]);
    }
    free(want->v);
    want->v = NULL;
    want->n = 0;
}

struct fixture {
    struct corpus corpus;
    struct plan plan;
    char replay[128];
};

static struct fixture fx;
static bool fx_ready;

static void fixture_unload(void);

static void fixture_load(void)
{
    if (fx_ready)
        return;
    atexit(fixture_unload); /* also after a failed check */
    char err[512];
    char *path = data_path("visible.corpus.jsonl.gz");
    ck_assert_msg(path != NULL, "visible.corpus.jsonl.gz not found (OBSD_TEST_DATA)");
    ck_assert_msg(corpus_load(path, &fx.corpus, err, sizeof err) == 0, "%s", err);
    free(path);
    plan_make(&fx.plan, &fx.corpus, 3000, 60, 40);
    snprintf(fx.replay, sizeof fx.replay, "/tmp/obsd-rq-replay-%d.jsonl", (int)getpid());
    ck_assert_msg(plan_write(&fx.plan, &fx.corpus, fx.replay, err, sizeof err) == 0, "%s", err);
    fx_ready = true;
}

static void fixture_unload(void)
{
    if (!fx_ready)
        return;
    unlink(fx.replay);
    plan_free(&fx.plan);
    corpus_free(&fx.corpus);
    fx_ready = false;
}

/* Checks every request metric of a final snapshot of the fixture's replay.
 * tok_name NULL: token metrics off. */
static void check_replay_snapshot(json_t *snap, const char *tok_name)
{
    const struct plan *p = &fx.plan;
    const struct corpus *c = &fx.corpus;
    ck_assert_str_eq(json_string_value(json_object_get(snap, "state")), "complete");
    ck_assert_int_eq(json_integer_value(json_object_get(snap, "n_pending_tasks")), 0);

    int64_t *ref = NULL;
    size_t n_ref = 0;
    tokenizer *tok = NULL;
    if (tok_name) {
        char name[128], err[512];
        snprintf(name, sizeof name, "visible.%s.ref.jsonl.gz", tok_name);
        char *path = data_path(name);
        ck_assert_msg(path != NULL, "%s not found", name);
        ck_assert_msg(ref_counts_load(path, &ref, &n_ref, err, sizeof err) == 0, "%s", err);
        ck_assert_uint_eq(n_ref, c->n);
        free(path);
        snprintf(name, sizeof name, "%s.tokenizer.json.gz", tok_name);
        path = data_path(name);
        tok = tokenizer_load_file(path, err, sizeof err);
        ck_assert_msg(tok != NULL, "%s", err);
        free(path);
    }

    struct values latency = {0}, ttft = {0}, tpot = {0}, delta = {0};
    uint64_t issued = 0, completed = 0, failed = 0, last_complete = 0, max_ts = 0;
    uint64_t reasons[6] = {0};
    double isl = 0, osl = 0;
    size_t n_isl = 0, n_osl = 0;
    static const char *const rnames[] = {"stop", "length", "tool_calls", "content_filter",
                                         "function_call", "other"};
    for (size_t i = 0; i < p->n; i++) {
        const struct plan_req *r = &p->reqs[i];
        if (r->complete > max_ts)
            max_ts = r->complete;
        if (!r->tracked)
            continue;
        issued++;
        completed++;
        if (r->failed)
            failed++;
        if (r->complete > last_complete)
            last_complete = r->complete;
        size_t k = 5;
        for (size_t j = 0; j < 5; j++)
            if (!strcmp(r->reason, rnames[j]))
                k = j;
        reasons[k]++;
        if (ref) {
            isl += (double)ref[r->prompt];
            n_isl++;
        }
        uint64_t prev = r->first;
        for (unsigned j = 0; j < r->n_chunks; j++) {
            push(&delta, (double)(r->chunks[j] - prev));
            prev = r->chunks[j];
        }
        if (r->failed)
            continue;
        push(&latency, (double)(r->complete - r->issued));
        if (ref) {
            osl += (double)ref[r->output];
            n_osl++;
        }
        if (r->first_len == NO_FIRST)
            continue;
        push(&ttft, (double)(r->first - r->issued));
        if (tok && c->lens[r->output] > r->first_len) {
            int64_t after = tokenizer_count(tok, c->texts[r->output] + r->first_len,
                                            c->lens[r->output] - r->first_len);
            ck_assert_int_ge(after, 0);
            if (after > 0)
                push(&tpot, (double)(r->complete - r->first) / (double)after);
        }
    }

    ck_assert_int_eq(counter(snap, "total_samples_issued"), (int64_t)p->n);
    ck_assert_int_eq(counter(snap, "total_samples_completed"), (int64_t)p->n);
    ck_assert_int_eq(counter(snap, "tracked_samples_issued"), (int64_t)issued);
    ck_assert_int_eq(counter(snap, "tracked_samples_completed"), (int64_t)completed);
    ck_assert_int_eq(counter(snap, "tracked_samples_failed"), (int64_t)failed);
    ck_assert_int_gt(failed, 0);
    for (size_t j = 0; j < 6; j++) {
        char name[64];
        snprintf(name, sizeof name, "tracked_finish_reason_%s", rnames[j]);
        ck_assert_msg(counter(snap, name) == (int64_t)reasons[j], "%s: %lld, want %llu", name,
                      (long long)counter(snap, name), (unsigned long long)reasons[j]);
    }
    ck_assert_int_eq(counter(snap, "tracked_duration_ns"),
                     (int64_t)(last_complete - p->tracking_start));
    ck_assert_int_eq(counter(snap, "total_duration_ns"), (int64_t)max_ts);
    ck_assert_int_eq(counter(snap, "requests_ignored_records"), 0);
    ck_assert_int_eq(counter(snap, "requests_rejected_records"), 0);

    check_series(snap, "sample_latency_ns", &latency, false);
    check_series(snap, "ttft_ns", &ttft, false);
    check_series(snap, "chunk_delta_ns", &delta, false);

    json_t *sec = json_object_get(snap, "requests");
    ck_assert_msg(sec != NULL, "no \"requests\" section");
    double secs = (double)(last_complete - p->tracking_start) / 1e9;
    ck_assert_msg(fabs(num(sec, "qps") - (double)completed / secs) < 1e-6 * (double)completed / secs,
                  "qps %g", num(sec, "qps"));
    if (!tok_name) {
        ck_assert_str_eq(json_string_value(json_object_get(sec, "token_metrics")), "off");
        ck_assert_ptr_null(metric(snap, "osl"));
        ck_assert_ptr_null(metric(snap, "tpot_ns"));
        ck_assert(json_is_null(json_object_get(sec, "tps")));
        return;
    }
    ck_assert_str_eq(json_string_value(json_object_get(sec, "token_metrics")), "on");
    json_t *m = metric(snap, "isl");
    ck_assert_msg(m && (size_t)json_integer_value(json_object_get(m, "count")) == n_isl, "isl count");
    ck_assert_msg(num(m, "total") == isl, "%s: isl total %.0f, want %.0f (reference)", tok_name,
                  num(m, "total"), isl);
    m = metric(snap, "osl");
    ck_assert_msg(m && (size_t)json_integer_value(json_object_get(m, "count")) == n_osl, "osl count");
    ck_assert_msg(num(m, "total") == osl, "%s: osl total %.0f, want %.0f (reference)", tok_name,
                  num(m, "total"), osl);
    ck_assert_msg(json_is_true(json_object_get(m, "exact")), "osl not exact");
    ck_assert_msg(fabs(num(sec, "tps") - osl / secs) < 1e-6 * osl / secs, "tps %g", num(sec, "tps"));
    check_series(snap, "tpot_ns", &tpot, true);
    tokenizer_free(tok);
    free(ref);
}

/* One replay through obsd with the given tokenizer and settings. */
static json_t *replay_through_obsd(const char *tok_name, const char *const *sets)
{
    fixture_load();
    char *tok = NULL;
    if (tok_name) {
        char name[128];
        snprintf(name, sizeof name, "%s.tokenizer.json.gz", tok_name);
        tok = data_path(name);
        ck_assert_msg(tok != NULL, "%s not found", name);
    }
    struct daemon d;
    daemon_start(&d, tok, sets);
    run_replay(&d, fx.replay);
    daemon_finish(&d, 120);
    json_t *snap = final_snapshot(&d);
    daemon_cleanup(&d);
    free(tok);
    return snap;
}

START_TEST(replay_llama3)
{
    json_t *s = replay_through_obsd("llama3", NULL);
    check_replay_snapshot(s, "llama3");
    json_decref(s);
}
END_TEST

START_TEST(replay_qwen3)
{
    json_t *s = replay_through_obsd("qwen3", NULL);
    check_replay_snapshot(s, "qwen3");
    json_decref(s);
}
END_TEST

START_TEST(replay_deepseek_v3)
{
    json_t *s = replay_through_obsd("deepseek_v3", NULL);
    check_replay_snapshot(s, "deepseek_v3");
    json_decref(s);
}
END_TEST

/* Everything deferred to the drain gives the same final numbers. */
START_TEST(replay_workers_zero)
{
    static const char *const sets[] = {"tokenizer_workers=0", NULL};
    json_t *s = replay_through_obsd("llama3", sets);
    check_replay_snapshot(s, "llama3");
    json_t *sec = json_object_get(s, "requests");
    ck_assert_int_eq(json_integer_value(json_object_get(sec, "tokens_counted_live")), 0);
    json_decref(s);
}
END_TEST

/* A 1 MiB cap on pending text spills to disk and loses nothing. */
START_TEST(replay_spill)
{
    static const char *const sets[] = {"tokenizer_workers=0", "token_queue_memory=1MiB", NULL};
    json_t *s = replay_through_obsd("qwen3", sets);
    check_replay_snapshot(s, "qwen3");
    json_t *sec = json_object_get(s, "requests");
    ck_assert_msg(json_integer_value(json_object_get(sec, "token_queue_spilled")) > 0,
                  "nothing spilled with a 1 MiB cap");
    json_decref(s);
}
END_TEST

START_TEST(replay_no_tokenizer)
{
    json_t *s = replay_through_obsd(NULL, NULL);
    check_replay_snapshot(s, NULL);
    json_decref(s);
}
END_TEST

START_TEST(bad_tokenizer_is_startup_error)
{
    char store[] = "/tmp/obsd-rq-XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(store));
    char bad[256], log[256], name[64], obsd[4096];
    snprintf(bad, sizeof bad, "%s/broken.tokenizer.json", store);
    FILE *f = fopen(bad, "w");
    fputs("{\"model\": {\"type\": \"Unigram\"}}", f);
    fclose(f);
    snprintf(log, sizeof log, "%s/log", store);
    snprintf(name, sizeof name, "rqbad%d", (int)getpid());
    snprintf(obsd, sizeof obsd, "%s/src/daemon/obsd", build_dir());
    char *argv[] = {obsd, "--foreground", "--name", name, "--store", store, "--tokenizer", bad, NULL};
    int st = wait_exit(spawn(argv, log), 30);
    char *out = slurp(log);
    ck_assert_msg(st != 0 && st != -1, "obsd accepted a broken tokenizer (status %d)", st);
    ck_assert_msg(strstr(out, "broken.tokenizer.json") != NULL, "message does not name the file: %s",
                  out);
    free(out);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'; rm -f /dev/shm/obsd.%s", store, name);
    ck_assert_int_eq(system(cmd), 0);
}
END_TEST

/* ---- long drains: this process writes requests whose outputs take longer
 * to count than the drain may last ---- */

/* Single-thread counting speed of this machine and build on the text the
 * heavy run sends (after one warm-up pass), bytes/s. */
static double tokenizer_speed(const tokenizer *tok, const char *text, size_t len)
{
    tokenizer_count(tok, text, len);
    double t0 = now_s(), bytes = 0;
    for (size_t i = 1; now_s() - t0 < 0.3; i++) {
        size_t off = (i * 7919u) % len / 2;
        tokenizer_count(tok, text + off, len / 2);
        bytes += (double)(len / 2);
    }
    return bytes / (now_s() - t0);
}

/* Writes one tracked run of requests with outputs of 256 KiB, enough text
 * that counting it all takes `seconds` on every CPU. Returns the requests.
 * The outputs are small enough that a drain task started just before a
 * deadline ends soon after it: with a few 1 MiB tasks, those started within
 * the first second could be all there was. */
static size_t write_heavy_run(const char *name, double seconds)
{
    /* A 4 MiB pool of corpus text; outputs are 256 KiB windows into it. */
    const size_t out_len = 256u << 10;
    size_t pool_len = 4u << 20, used = 0;
    char *pool = malloc(pool_len + out_len);
    for (size_t i = 0; used < pool_len + out_len; i = (i + 1) % fx.corpus.n) {
        size_t k = fx.corpus.lens[i];
        if (k > pool_len + out_len - used)
            k = pool_len + out_len - used;
        memcpy(pool + used, fx.corpus.texts[i], k);
        used += k;
    }
    char err[512];
    char *tpath = data_path("llama3.tokenizer.json.gz");
    tokenizer *tok = tokenizer_load_file(tpath, err, sizeof err);
    ck_assert_msg(tok != NULL, "%s", err);
    free(tpath);
    double speed = tokenizer_speed(tok, pool, out_len);
    tokenizer_free(tok);
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    /* Each output is counted twice (OSL and TPOT). */
    double bytes = speed * (double)(ncpu > 0 ? ncpu : 1) * seconds / 2;
    size_t n = (size_t)(bytes / (double)out_len) + 1;

    obsd_t *h = obsd_open(name);
    ck_assert_msg(h != NULL, "obsd_open: %s", obsd_last_error());
    uint64_t t = obsd_now();
    ck_assert_int_eq(obsd_session_at(h, OBSD_SESSION_STARTED, t), 0);
    ck_assert_int_eq(obsd_session_at(h, OBSD_SESSION_TRACKING_START, t), 0);
    for (size_t i = 0; i < n; i++) {
        const char *out = pool + (i * 7919u) % pool_len;
        uint64_t ts = t + i * 1000000u;
        ck_assert_int_eq(obsd_request_issued_tokens(h, i + 1, ts, 100), 0);
        ck_assert_int_eq(obsd_request_first_chunk(h, i + 1, ts + 1000, out, 16), 0);
        ck_assert_int_eq(obsd_request_complete(h, i + 1, ts + 500000, "stop", out, out_len), 0);
    }
    uint64_t end = t + n * 1000000u;
    ck_assert_int_eq(obsd_session_at(h, OBSD_SESSION_TRACKING_STOP, end), 0);
    ck_assert_int_eq(obsd_session_at(h, OBSD_SESSION_ENDED, end), 0);
    obsd_flush(h);
    obsd_close(h);
    free(pool);
    return n;
}

/* State of the latest persisted snapshot (the engine persists the draining
 * snapshot before it starts the drain, and answers no socket during it). */
static const char *state_of(const struct daemon *d)
{
    static char state[32];
    int st;
    char *out = obsctl(d, "--json", NULL, &st, NULL);
    json_t *j = st == 0 ? json_loads(out, 0, NULL) : NULL;
    const char *s = json_string_value(json_object_get(j, "state"));
    snprintf(state, sizeof state, "%s", s ? s : "");
    json_decref(j);
    free(out);
    return state;
}

START_TEST(drain_timeout_is_incomplete)
{
    fixture_load();
    char *tok = data_path("llama3.tokenizer.json.gz");
    static const char *const sets[] = {"tokenizer_workers=0", "drain_timeout_s=1", NULL};
    struct daemon d;
    daemon_start(&d, tok, sets);
    size_t n = write_heavy_run(d.name, 4);
    daemon_finish(&d, 120);
    json_t *snap = final_snapshot(&d);
    ck_assert_str_eq(json_string_value(json_object_get(snap, "state")), "complete");
    json_int_t pending = json_integer_value(json_object_get(snap, "n_pending_tasks"));
    ck_assert_msg(pending > 0, "the drain of %zu requests finished within 1 s", n);
    /* What was counted plus what is pending is everything that was queued. */
    json_t *osl = metric(snap, "osl"), *tpot = metric(snap, "tpot_ns");
    ck_assert_int_eq(json_integer_value(json_object_get(osl, "count")) +
                         json_integer_value(json_object_get(tpot, "count")) + pending,
                     (json_int_t)(2 * n));
    ck_assert_int_eq(counter(snap, "tracked_samples_completed"), (int64_t)n);
    int st;
    char *errtext;
    char *text = obsctl(&d, "--final", NULL, &st, &errtext);
    ck_assert_msg(st == 0 && strstr(text, "incomplete drain") != NULL,
                  "obsctl show does not say \"incomplete drain\": %s", text);
    free(text);
    free(errtext);
    /* With --json the note goes to standard error. */
    text = obsctl(&d, "--final", "--json", &st, &errtext);
    ck_assert_msg(strstr(errtext, "incomplete drain") != NULL,
                  "obsctl show --json does not say \"incomplete drain\": %s", errtext);
    free(text);
    free(errtext);
    json_decref(snap);
    daemon_cleanup(&d);
    free(tok);
}
END_TEST

START_TEST(sigterm_during_drain_is_interrupted)
{
    fixture_load();
    char *tok = data_path("llama3.tokenizer.json.gz");
    static const char *const sets[] = {"tokenizer_workers=0", NULL};
    struct daemon d;
    daemon_start(&d, tok, sets);
    size_t n = write_heavy_run(d.name, 6);
    double end = now_s() + 60;
    while (strcmp(state_of(&d), "draining") != 0) {
        ck_assert_msg(now_s() < end, "obsd never reported state draining");
        ck_assert_msg(waitpid(d.pid, NULL, WNOHANG) == 0, "obsd ended before the test saw the drain");
        sleep_ms(50);
    }
    ck_assert_int_eq(kill(d.pid, SIGTERM), 0);
    daemon_finish(&d, 60);
    json_t *snap = final_snapshot(&d);
    ck_assert_str_eq(json_string_value(json_object_get(snap, "state")), "interrupted");
    json_int_t pending = json_integer_value(json_object_get(snap, "n_pending_tasks"));
    ck_assert_msg(pending > 0, "nothing pending after SIGTERM during the drain of %zu requests", n);
    json_t *osl = metric(snap, "osl"), *tpot = metric(snap, "tpot_ns");
    ck_assert_int_eq(json_integer_value(json_object_get(osl, "count")) +
                         json_integer_value(json_object_get(tpot, "count")) + pending,
                     (json_int_t)(2 * n));
    json_decref(snap);
    daemon_cleanup(&d);
    free(tok);
}
END_TEST

static void teardown(void)
{
    fixture_unload();
}

static Suite *suite(void)
{
    Suite *s = suite_create("requests");
    TCase *tc = tcase_create("replay");
    tcase_set_timeout(tc, 300);
    tcase_add_checked_fixture(tc, NULL, teardown);
    tcase_add_test(tc, replay_llama3);
    tcase_add_test(tc, replay_qwen3);
    tcase_add_test(tc, replay_deepseek_v3);
    tcase_add_test(tc, replay_workers_zero);
    tcase_add_test(tc, replay_spill);
    tcase_add_test(tc, replay_no_tokenizer);
    tcase_add_test(tc, bad_tokenizer_is_startup_error);
    tcase_add_test(tc, drain_timeout_is_incomplete);
    tcase_add_test(tc, sigterm_during_drain_is_interrupted);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
