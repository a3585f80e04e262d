/*
 * bench/tokenizer: encode throughput (tokens/s) of obsd's tokenizer over the
 * visible corpus for each tokenizer in the data directory, on one thread and
 * on all cores, next to Hugging Face tokenizers (the Rust library through the
 * napi binding of npm @anush008/tokenizers 0.6.0, run by bench/hf/hf_tokenize.js)
 * measured in the same run. Prints one JSON object per result:
 *   {"name", "threads", "tokens", "tokens_per_s", "baseline", "baseline_tokens_per_s",
 *    "ratio", "identical_output"}
 * Without node/npm the baseline fields are null and "note" says why.
 *
 * usage: tokenizer [--data DIR] [--repeats N] [--only NAME]
 *   DIR defaults to $OBSD_TEST_DATA, else tests/data of the source tree.
 *   The Hugging Face peer is installed once with npm into bench/hf/node_modules.
 */
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "tokenq/tokenizer.h"

static char src_dir[1024]; /* bench/ of the source tree */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static char *read_gz(const char *path, size_t *len)
{
    gzFile f = gzopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 1 << 20, n = 0;
    char *b = malloc(cap + 1);
    int r;
    while (b && (r = gzread(f, b + n, (unsigned)(cap - n))) > 0) {
        n += (size_t)r;
        if (n == cap)
            b = realloc(b, (cap *= 2) + 1);
    }
    gzclose(f);
    if (b)
        b[n] = 0;
    *len = n;
    return b;
}


typedef struct {
    char **texts;
    size_t *lens;
    size_t n;
} corpus;

static bool load_corpus(const char *path, corpus *c)
{
    size_t len;
    char *buf = read_gz(path, &len);
    if (!buf)
        return false;
    size_t cap = 2048;
    c->texts = malloc(cap * sizeof *c->texts);
    c->lens = malloc(cap * sizeof *c->lens);
    c->n = 0;
    for (char *p = buf; *p;) {
        char *nl = strchr(p, '\n');
        if (nl)
            *nl = 0;
        if (*p) {
            json_t *o = json_loads(p, JSON_ALLOW_NUL, NULL);
            json_t *t = json_object_get(o, "text");
            if (json_is_string(t)) {
                if (c->n == cap) {
                    cap *= 2;
                    c->texts = realloc(c->texts, cap * sizeof *c->texts);
                    c->lens = realloc(c->lens, cap * sizeof *c->lens);
                }
                c->lens[c->n] = json_string_length(t);
                c->texts[c->n] = malloc(c->lens[c->n] + 1);
                memcpy(c->texts[c->n], json_string_value(t), c->lens[c->n] + 1);
                c->n++;
            }
            json_decref(o);
        }
        if (!nl)
            break;
        p = nl + 1;
    }
    free(buf);
    return true;
}

typedef struct {
    bool ok;
    double tokens_per_s;
    char note[256];
} hf_result;

static bool hf_ready(char *note, size_t notelen)
{
    char path[1200];
    snprintf(path, sizeof path, "%s/hf/node_modules/@anush008/tokenizers-linux-x64-gnu", src_dir);
    struct stat st;
    if (stat(path, &st) == 0)
        return true;
    if (system("command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1") != 0) {
        snprintf(note, notelen, "node/npm unavailable: no Hugging Face comparison");
        return false;
    }
    char cmd[1400];
    snprintf(cmd, sizeof cmd, "cd '%s/hf' && npm install --no-audit --no-fund >/dev/null 2>&1", src_dir);
    if (system(cmd) != 0 || stat(path, &st) != 0) {
        snprintf(note, notelen, "npm install of @anush008/tokenizers failed: no Hugging Face comparison");
        return false;
    }
    return true;
}

/* Runs the node peer; its per-text {count, fnv1a64} lines go to out_path. */
static hf_result run_hf(const char *tok_path, const char *corpus_path, unsigned threads, int repeats,
                        const char *out_path)
{
    hf_result r = {0};
    if (!hf_ready(r.note, sizeof r.note))
        return r;
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "RAYON_NUM_THREADS=%u node '%s/hf/hf_tokenize.js' '%s' '%s' %d '%s'", threads, src_dir,
             tok_path, corpus_path, repeats, out_path);
    FILE *p = popen(cmd, "r");
    char line[512] = "";
    if (!p || !fgets(line, sizeof line, p)) {
        if (p)
            pclose(p);
        snprintf(r.note, sizeof r.note, "the Hugging Face peer failed to run");
        return r;
    }
    pclose(p);
    json_t *o = json_loads(line, 0, NULL);
    if (!o || !json_is_number(json_object_get(o, "tokens_per_s"))) {
        snprintf(r.note, sizeof r.note, "the Hugging Face peer printed no result");
        json_decref(o);
        return r;
    }
    r.tokens_per_s = json_number_value(json_object_get(o, "tokens_per_s"));
    r.ok = true;
    json_decref(o);
    return r;
}

/* Compares our ids (count + hash per text) with the peer's lines. */
static bool identical(const char *out_path, const corpus *c, const tokenizer_ids *ids)
{
    size_t len;
    char *buf = read_gz(out_path, &len);
    if (!buf)
        return false;
    size_t i = 0;
    bool same = true;
    for (char *p = buf; *p && same;) {
        char *nl = strchr(p, '\n');
        if (nl)
            *nl = 0;
        if (*p) {
            json_t *o = json_loads(p, 0, NULL);
            char h[17];
            if (i >= c->n || !o) {
                same = false;
            } else {
                snprintf(h, sizeof h, "%016llx", (unsigned long long)tokenizer_fnv1a64(ids[i].ids, ids[i].len));
                same = (size_t)json_integer_value(json_object_get(o, "count")) == ids[i].len &&
                       strcmp(h, json_string_value(json_object_get(o, "fnv1a64")) ?: "") == 0;
            }
            json_decref(o);
            i++;
        }
        if (!nl)
            break;
        p = nl + 1;
    }
    free(buf);
    return same && i == c->n;
}

static double measure(const tokenizer *tok, const corpus *c, tokenizer_ids *outs, unsigned threads, int repeats,
                      uint64_t *tokens)
{
    double best = 1e30;
    for (int r = 0; r < repeats; r++) {
        double t0 = now_s();
        if (tokenizer_encode_batch(tok, c->n, (const char *const *)c->texts, c->lens, outs, threads) != 0) {
            fprintf(stderr, "tokenizer: encode failed\n");
            exit(1);
        }
        double s = now_s() - t0;
        if (s < best)
            best = s;
    }
    *tokens = 0;
    for (size_t i = 0; i < c->n; i++)
        *tokens += outs[i].len;
    return best;
}

static void print_result(const char *name, unsigned threads, uint64_t tokens, double tps, const hf_result *hf,
                         bool same)
{
    printf("{\"name\": \"tokenizer_%s_%s\", \"threads\": %u, \"tokens\": %llu, \"tokens_per_s\": %.0f, "
           "\"baseline\": \"hf_tokenizers_napi_0.6.0\", ",
           name, threads == 1 ? "1thread" : "allcores", threads, (unsigned long long)tokens, tps);
    if (hf->ok)
        printf("\"baseline_tokens_per_s\": %.0f, \"ratio\": %.2f, \"identical_output\": %s}\n", hf->tokens_per_s,
               tps / hf->tokens_per_s, same ? "true" : "false");
    else
        printf("\"baseline_tokens_per_s\": null, \"ratio\": null, \"identical_output\": null, \"note\": \"%s\"}\n",
               hf->note);
    fflush(stdout);
}

int main(int argc, char **argv)
{
    snprintf(src_dir, sizeof src_dir, "%s", __FILE__);
    char *slash = strrchr(src_dir, '/');
    if (slash)
        *slash = 0;
    else
        snprintf(src_dir, sizeof src_dir, "bench");
    char data[1200];
    const char *env = getenv("OBSD_TEST_DATA");
    snprintf(data, sizeof data, "%s", env ? env : "");
    if (!env)
        snprintf(data, sizeof data, "%s/../tests/data", src_dir);
    int repeats = 3;
    const char *only = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--data") == 0 && i + 1 < argc)
            snprintf(data, sizeof data, "%s", argv[++i]);
        else if (strcmp(argv[i], "--repeats") == 0 && i + 1 < argc)
            repeats = atoi(argv[++i]);
        else if (strcmp(argv[i], "--only") == 0 && i + 1 < argc)
            only = argv[++i];
        else {
            fprintf(stderr, "usage: tokenizer [--data DIR] [--repeats N] [--only NAME]\n");
            return 2;
        }
    }
    if (repeats < 1) {
        fprintf(stderr, "tokenizer: --repeats must be at least 1\n");
        return 2;
    }
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    unsigned all = ncpu > 0 ? (unsigned)ncpu : 1;
    char corpus_path[1300];
    snprintf(corpus_path, sizeof corpus_path, "%s/visible.corpus.jsonl.gz", data);
    corpus c;
    if (!load_corpus(corpus_path, &c)) {
        fprintf(stderr, "tokenizer: cannot read %s\n", corpus_path);
        return 1;
    }
    static const char *const names[] = {"llama3", "qwen3", "deepseek_v3"};
    for (size_t k = 0; k < 3; k++) {
        if (only && strcmp(only, names[k]) != 0)
            continue;
        char tok_path[1300], err[512], out_path[256];
        snprintf(tok_path, sizeof tok_path, "%s/%s.tokenizer.json.gz", data, names[k]);
        tokenizer *tok = tokenizer_load_file(tok_path, err, sizeof err);
        if (!tok) {
            fprintf(stderr, "tokenizer: %s\n", err);
            return 1;
        }
        tokenizer_ids *outs = calloc(c.n, sizeof *outs);
        snprintf(out_path, sizeof out_path, "/tmp/obsd-bench-hf.%d.out", (int)getpid());
        uint64_t tokens;
        unsigned threads[2] = {1, all};
        for (int t = 0; t < (all > 1 ? 2 : 1); t++) {
            double s = measure(tok, &c, outs, threads[t], repeats, &tokens);
            hf_result hf = run_hf(tok_path, corpus_path, threads[t], repeats, out_path);
            bool same = hf.ok && identical(out_path, &c, outs);
            unlink(out_path);
            print_result(names[k], threads[t], tokens, (double)tokens / s, &hf, same);
        }
        for (size_t i = 0; i < c.n; i++)
            tokenizer_ids_free(&outs[i]);
        free(outs);
        tokenizer_free(tok);
    }
    for (size_t i = 0; i < c.n; i++)
        free(c.texts[i]);
    free(c.texts);
    free(c.lens);
    return 0;
}
