/*
 * mkreplay: writes an obsd-replay file built from the tokenizer corpus.
 *
 *   mkreplay [--requests N] [--warmup W] [--cooldown C] [--corpus FILE] OUT
 *
 * N requests (default 2000), 200 us apart; prompts and outputs are corpus
 * texts; the first W are issued before the tracking window and the last C
 * after it. The mix (first chunks, further chunks, failures, finish reasons)
 * is the one the request tests check against.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>

#include "replay_corpus.h"

static int number(const char *opt, const char *s, size_t *out)
{
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (!*s || *end) {
        fprintf(stderr, "mkreplay: %s: '%s' is not a number\n", opt, s);
        return -1;
    }
    *out = (size_t)v;
    return 0;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"requests", required_argument, NULL, 'n'}, {"warmup", required_argument, NULL, 'w'},
        {"cooldown", required_argument, NULL, 'c'}, {"corpus", required_argument, NULL, 'C'},
        {"help", no_argument, NULL, 'h'},           {0, 0, 0, 0},
    };
    size_t n = 2000, warmup = 0, cooldown = 0;
    char *corpus_file = NULL;
    int o;
    while ((o = getopt_long(argc, argv, "n:w:c:C:h", opts, NULL)) != -1) {
        switch (o) {
        case 'n': if (number("--requests", optarg, &n)) return 2; break;
        case 'w': if (number("--warmup", optarg, &warmup)) return 2; break;
        case 'c': if (number("--cooldown", optarg, &cooldown)) return 2; break;
        case 'C': corpus_file = optarg; break;
        case 'h':
            puts("usage: mkreplay [--requests N] [--warmup W] [--cooldown C] [--corpus FILE] OUT");
            return 0;
        default: return 2;
        }
    }
    if (optind != argc - 1) {
        fprintf(stderr, "usage: mkreplay [--requests N] [--warmup W] [--cooldown C] [--corpus FILE] OUT\n");
        return 2;
    }
    if (n == 0 || warmup + cooldown >= n) {
        fprintf(stderr, "mkreplay: --requests must exceed --warmup + --cooldown\n");
        return 2;
    }
    if (!corpus_file)
        corpus_file = data_path("visible.corpus.jsonl.gz");
    if (!corpus_file) {
        fprintf(stderr, "mkreplay: visible.corpus.jsonl.gz not found; give --corpus\n");
        return 2;
    }
    char err[512];
    struct corpus c;
    if (corpus_load(corpus_file, &c, err, sizeof err)) {
        fprintf(stderr, "mkreplay: %s\n", err);
        return 1;
    }
    struct plan p;
    plan_make(&p, &c, n, warmup, cooldown);
    int rc = plan_write(&p, &c, argv[optind], err, sizeof err);
    if (rc)
        fprintf(stderr, "mkreplay: %s\n", err);
    plan_free(&p);
    corpus_free(&c);
    return rc ? 1 : 0;
}
