/*
 * drain: the end-of-run token drain of the request module.
 *
 *   drain [--quick] [--requests N] [--tokenizer FILE] [--build DIR]
 *
 * Starts the obsd daemon (BUILD/src/daemon/obsd) and, as one libobsd
 * producer, writes N requests (default 200,000; --quick 20,000) whose outputs
 * are about 1,000 tokens of corpus text, as fast as the rings take them, with
 * a first chunk of 16 bytes (so each output is tokenized twice: OSL, and the
 * text after the first chunk for TPOT; prompts carry token counts). Twice:
 * tokenizer_workers = 0 (everything is counted in the drain) and the default
 * live lane. For each it prints one JSON object: records/s accepted, seconds
 * from the session-ended record to the final snapshot (its timestamp), the
 * peak RSS of obsd (VmHWM from /proc/<pid>/status, polled; and the kernel's
 * ru_maxrss at exit), and in the same run Hugging Face tokenizers' batch
 * encode (node + @anush008/tokenizers, bench/hf/hf_tokenize.js) on the same
 * cores for a sample of the same texts, scaled to all of them by bytes.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <zlib.h>

#include "obsd/obsd.h"

#define OUT_BYTES 4400         /* about 1,000 tokens of this corpus */
#define FIRST_CHUNK 16
#define HF_SAMPLE 2000         /* requests whose texts go to Hugging Face */

static char src_dir[1024];

static double now_s(int clock)
{
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The corpus as one buffer of texts joined by newlines. */
static char *load_corpus(const char *path, size_t *len)
{
    gzFile f = gzopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 8u << 20, n = 0;
    char *raw = malloc(cap);
    int r;
    while ((r = gzread(f, raw + n, (unsigned)(cap - n))) > 0) {
        n += (size_t)r;
        if (n == cap)
            raw = realloc(raw, cap *= 2);
    }
    gzclose(f);
    char *out = malloc(n + 1);
    size_t o = 0, start = 0;
    for (size_t i = 0; i <= n; i++) {
        if (i < n && raw[i] != '\n')
            continue;
        json_t *j = json_loadb(raw + start, i - start, 0, NULL);
        const char *t = json_string_value(json_object_get(j, "text"));
        if (t) {
            size_t k = strlen(t);
            memcpy(out + o, t, k);
            o += k;
            out[o++] = '\n';
        }
        json_decref(j);
        start = i + 1;
    }
    free(raw);
    *len = o;
    return out;
}

/* Output i: OUT_BYTES of the corpus from a rotating start, cut back to a
 * UTF-8 character boundary. */
static size_t output_at(const char *corpus, size_t clen, size_t i, const char **text)
{
    size_t off = (i * 104729u) % (clen - OUT_BYTES);
    while (off < clen && ((unsigned char)corpus[off] & 0xC0) == 0x80)
        off++;
    size_t len = OUT_BYTES;
    while (len > 0 && ((unsigned char)corpus[off + len] & 0xC0) == 0x80)
        len--;
    *text = corpus + off;
    return len;
}

static long vm_hwm_kb(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    long kb = -1;
    if (!f)
        return -1;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "VmHWM:", 6))
            kb = strtol(line + 6, NULL, 10);
    fclose(f);
    return kb;
}

struct result {
    double accept_s, records_per_s, drain_s, total_s;
    long hwm_kb, maxrss_kb;
    const char *state;
    long long pending, osl_count, tpot_count;
};

static int run_obsd(const char *build, const char *tok, unsigned workers, size_t n,
                    const char *corpus, size_t clen, uint64_t cap_bytes, struct result *res)
{
    char name[64], store[] = "/tmp/obsd-drain-XXXXXX", obsd[4096], log[128];
    snprintf(name, sizeof name, "drain%d_%u", (int)getpid(), workers);
    if (!mkdtemp(store))
        return -1;
    snprintf(obsd, sizeof obsd, "%s/src/daemon/obsd", build);
    snprintf(log, sizeof log, "%s/obsd.log", store);
    char wset[64], capset[64];
    snprintf(wset, sizeof wset, "tokenizer_workers=%u", workers);
    snprintf(capset, sizeof capset, "token_queue_memory=%llu", (unsigned long long)cap_bytes);
    char *argv[] = {obsd, "--foreground", "--name", name, "--store", store, "--tokenizer", (char *)tok,
                    "--set", "exit_after_run=true", "--set", "ring_full_policy=block",
                    "--set", "ring_block_timeout_ms=60000", "--set", "store_sync=false",
                    "--set", wset, "--set", capset, NULL};
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        dup2(fd, 1);
        dup2(fd, 2);
        execv(obsd, argv);
        _exit(127);
    }
    char shm[128];
    snprintf(shm, sizeof shm, "/dev/shm/obsd.%s", name);
    while (access(shm, F_OK) != 0) {
        if (waitpid(pid, NULL, WNOHANG) == pid) {
            fprintf(stderr, "drain: obsd exited at startup (see %s)\n", log);
            return -1;
        }
        usleep(10000);
    }
    obsd_t *h = NULL;
    while (!(h = obsd_open(name)))
        usleep(10000);

    double t0 = now_s(CLOCK_MONOTONIC);
    uint64_t t = obsd_now(), records = 0;
    obsd_session_at(h, OBSD_SESSION_STARTED, t);
    obsd_session_at(h, OBSD_SESSION_TRACKING_START, t);
    for (size_t i = 0; i < n; i++) {
        const char *out;
        size_t len = output_at(corpus, clen, i, &out);
        uint64_t ts = obsd_now();
        int rc = obsd_request_issued_tokens(h, i + 1, ts, 200);
        rc |= obsd_request_first_chunk(h, i + 1, ts + 1000, out, FIRST_CHUNK);
        rc |= obsd_request_complete(h, i + 1, ts + 2000, "stop", out, len);
        if (rc) {
            fprintf(stderr, "drain: a record was not written: %s\n", obsd_last_error());
            break;
        }
        records += 3;
    }
    obsd_session(h, OBSD_SESSION_TRACKING_STOP);
    obsd_session(h, OBSD_SESSION_ENDED);
    obsd_flush(h);
    double end_real = now_s(CLOCK_REALTIME);
    res->accept_s = now_s(CLOCK_MONOTONIC) - t0;
    res->records_per_s = (double)(records + 4) / res->accept_s;
    obsd_close(h);

    int st = 0;
    struct rusage ru;
    res->hwm_kb = 0;
    for (;;) {
        long kb = vm_hwm_kb(pid);
        if (kb > res->hwm_kb)
            res->hwm_kb = kb;
        pid_t r = wait4(pid, &st, WNOHANG, &ru);
        if (r == pid)
            break;
        usleep(20000);
    }
    res->maxrss_kb = ru.ru_maxrss;
    res->total_s = now_s(CLOCK_MONOTONIC) - t0;

    char cmd[4096];
    snprintf(cmd, sizeof cmd, "'%s/src/cli/obsctl' show --store '%s' --final --json 2>/dev/null", build, store);
    FILE *p = popen(cmd, "r");
    json_t *snap = p ? json_loadf(p, 0, NULL) : NULL;
    if (p)
        pclose(p);
    if (!snap) {
        fprintf(stderr, "drain: no final snapshot (obsd status %d, log %s)\n", st, log);
        return -1;
    }
    static char state[32];
    snprintf(state, sizeof state, "%s", json_string_value(json_object_get(snap, "state")));
    res->state = state;
    res->pending = json_integer_value(json_object_get(snap, "n_pending_tasks"));
    res->drain_s = (double)json_integer_value(json_object_get(snap, "timestamp_ns")) / 1e9 - end_real;
    size_t i;
    json_t *m;
    json_array_foreach(json_object_get(snap, "metrics"), i, m) {
        const char *nm = json_string_value(json_object_get(m, "name"));
        if (!strcmp(nm, "osl"))
            res->osl_count = json_integer_value(json_object_get(m, "count"));
        if (!strcmp(nm, "tpot_ns"))
            res->tpot_count = json_integer_value(json_object_get(m, "count"));
    }
    json_decref(snap);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'; rm -f '%s'", store, shm);
    if (system(cmd) != 0)
        fprintf(stderr, "drain: cleanup failed\n");
    return 0;
}

/* Hugging Face's batch encode of a sample of the same texts, on all cores.
 * Returns its seconds for the whole set (scaled by bytes), or -1. */
static double run_hf(const char *tok, const char *corpus, size_t clen, size_t n,
                     double *sample_s, size_t *sample_n, char *note, size_t notelen)
{
    char path[1200];
    snprintf(path, sizeof path, "%s/hf/node_modules/@anush008/tokenizers-linux-x64-gnu", src_dir);
    struct stat sb;
    if (stat(path, &sb) != 0 || system("command -v node >/dev/null 2>&1") != 0) {
        snprintf(note, notelen, "node or bench/hf/node_modules missing (npm install in bench/hf)");
        return -1;
    }
    char file[] = "/tmp/obsd-drain-hf-XXXXXX";
    int fd = mkstemp(file);
    FILE *f = fdopen(fd, "w");
    size_t k = n < HF_SAMPLE ? n : HF_SAMPLE;
    double sample_bytes = 0, all_bytes = 0;
    for (size_t i = 0; i < n; i++) {
        const char *out;
        size_t len = output_at(corpus, clen, i, &out);
        all_bytes += (double)(2 * len - FIRST_CHUNK);
        if (i >= k)
            continue;
        /* Both texts obsd counts: the output and the output after the first chunk. */
        json_t *a = json_pack("{s:s%}", "text", out, len);
        json_t *b = json_pack("{s:s%}", "text", out + FIRST_CHUNK, len - FIRST_CHUNK);
        json_dumpf(a, f, JSON_COMPACT);
        fputc('\n', f);
        json_dumpf(b, f, JSON_COMPACT);
        fputc('\n', f);
        json_decref(a);
        json_decref(b);
        sample_bytes += (double)(2 * len - FIRST_CHUNK);
    }
    fclose(f);
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "RAYON_NUM_THREADS=%ld node '%s/hf/hf_tokenize.js' '%s' '%s' 1", ncpu,
             src_dir, tok, file);
    FILE *p = popen(cmd, "r");
    json_t *o = p ? json_loadf(p, JSON_DISABLE_EOF_CHECK, NULL) : NULL;
    if (p)
        pclose(p);
    unlink(file);
    if (!o || !json_is_number(json_object_get(o, "seconds"))) {
        snprintf(note, notelen, "the Hugging Face peer printed no result");
        json_decref(o);
        return -1;
    }
    *sample_s = json_number_value(json_object_get(o, "seconds"));
    *sample_n = 2 * k;
    json_decref(o);
    return *sample_s * all_bytes / sample_bytes;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"quick", no_argument, NULL, 'q'},      {"requests", required_argument, NULL, 'n'},
        {"tokenizer", required_argument, NULL, 't'}, {"build", required_argument, NULL, 'b'},
        {"help", no_argument, NULL, 'h'},       {0, 0, 0, 0},
    };
    size_t n = 200000;
    const char *tok = NULL, *build = NULL;
    int c;
    while ((c = getopt_long(argc, argv, "qn:t:b:h", opts, NULL)) != -1) {
        switch (c) {
        case 'q': n = 20000; break;
        case 'n': n = strtoull(optarg, NULL, 10); break;
        case 't': tok = optarg; break;
        case 'b': build = optarg; break;
        case 'h':
            puts("usage: drain [--quick] [--requests N] [--tokenizer FILE] [--build DIR]");
            return 0;
        default: return 2;
        }
    }
    if (n == 0) {
        fprintf(stderr, "drain: --requests must be a positive number\n");
        return 2;
    }
    /* bench/ of the source tree, from this file's path. */
    snprintf(src_dir, sizeof src_dir, "%s", __FILE__);
    char *slash = strrchr(src_dir, '/');
    if (slash)
        *slash = 0;
    char tokbuf[1200], corpus_path[1200], selfbuf[2048];
    if (!tok) {
        snprintf(tokbuf, sizeof tokbuf, "%s/../tests/data/llama3.tokenizer.json.gz", src_dir);
        tok = tokbuf;
    }
    snprintf(corpus_path, sizeof corpus_path, "%s/../tests/data/visible.corpus.jsonl.gz", src_dir);
    if (!build) {
        /* This executable is BUILD/bench/drain. */
        ssize_t k = readlink("/proc/self/exe", selfbuf, sizeof selfbuf - 1);
        selfbuf[k > 0 ? k : 0] = 0;
        for (int up = 0; up < 2; up++) {
            char *s = strrchr(selfbuf, '/');
            if (s)
                *s = 0;
        }
        build = selfbuf;
    }
    size_t clen;
    char *corpus = load_corpus(corpus_path, &clen);
    if (!corpus || clen < 2 * OUT_BYTES) {
        fprintf(stderr, "drain: cannot read %s\n", corpus_path);
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);

    char note[256] = "";
    double hf_sample_s = 0;
    size_t hf_sample_n = 0;
    double hf_s = run_hf(tok, corpus, clen, n, &hf_sample_s, &hf_sample_n, note, sizeof note);
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    const uint64_t cap = 256ull << 20;

    unsigned modes[2] = {0, 2};
    for (int i = 0; i < 2; i++) {
        struct result r = {0};
        if (run_obsd(build, tok, modes[i], n, corpus, clen, cap, &r))
            return 1;
        printf("{\"bench\": \"drain\", \"requests\": %zu, \"output_bytes\": %d, \"tokenizer_workers\": %u, "
               "\"cpus\": %ld, \"records_per_s\": %.0f, \"write_s\": %.3f, \"drain_s\": %.3f, "
               "\"state\": \"%s\", \"n_pending_tasks\": %lld, \"osl_count\": %lld, \"tpot_count\": %lld, "
               "\"obsd_vmhwm_mib\": %.1f, \"obsd_maxrss_mib\": %.1f, \"token_queue_memory_mib\": %.0f, "
               "\"rss_limit_mib\": %.0f, ",
               n, OUT_BYTES, modes[i], ncpu, r.records_per_s, r.accept_s, r.drain_s, r.state, r.pending,
               r.osl_count, r.tpot_count, (double)r.hwm_kb / 1024, (double)r.maxrss_kb / 1024,
               (double)cap / 1048576, (double)cap / 1048576 + 64);
        if (hf_s > 0)
            printf("\"baseline\": \"hf_tokenizers_napi_0.6.0 encodeBatch, RAYON_NUM_THREADS=%ld\", "
                   "\"baseline_sample_texts\": %zu, \"baseline_sample_s\": %.3f, \"baseline_s\": %.3f, "
                   "\"ratio_drain_to_baseline\": %.3f}\n",
                   ncpu, hf_sample_n, hf_sample_s, hf_s, r.drain_s / hf_s);
        else
            printf("\"baseline\": null, \"note\": \"%s\"}\n", note);
        fflush(stdout);
    }
    free(corpus);
    return 0;
}
