/*
 * cmd_tokenize.c: 'obsctl tokenize' counts (and optionally lists) the tokens
 * of JSON lines {"text": ...} read on stdin, one JSON line out per line in,
 * in order, in the format of the tokenizer reference files.
 */
#include <getopt.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli_store.h"
#include "cli/commands.h"
#include "tokenq/tokenizer.h"

#define BLOCK_LINES 4096 /* lines encoded together (spread over --threads) */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: obsctl tokenize --tokenizer FILE [--tiktoken PATTERN] [--ids] [--threads N] [--stats]\n"
            "\n"
            "Reads JSON lines {\"text\": \"...\"} on stdin and writes one line per input, in order:\n"
            "  {\"count\": N, \"fnv1a64\": \"<16 hex digits>\"}  (plus \"ids\": [...] with --ids)\n"
            "Added tokens inside the text are matched (Hugging Face add_special_tokens=false).\n"
            "Blank lines are skipped. A line that is not a JSON object with a string \"text\"\n"
            "stops the command with a message naming the line (exit 2).\n"
            "\n"
            "  -t, --tokenizer FILE   tokenizer.json (plain or .gz), or a tiktoken rank file with --tiktoken\n"
            "      --tiktoken PATTERN FILE is a tiktoken rank file; PATTERN is cl100k_base, o200k_base or a regex\n"
            "  -i, --ids              also print the token ids\n"
            "  -j, --threads N        encode on N threads (default 1)\n"
            "  -s, --stats            print {\"tokens\", \"seconds\", \"load_seconds\"} on stderr at the end\n"
            "                         (seconds covers encoding only)\n"
            "  -h, --help             this text\n");
}

typedef struct {
    char **texts;
    size_t *lens;
    int64_t *counts;
    tokenizer_ids *ids;
    size_t n;
} block;

static void block_clear(block *b)
{
    for (size_t i = 0; i < b->n; i++)
        free(b->texts[i]);
    b->n = 0;
}

static int write_block(const block *b, bool with_ids)
{
    for (size_t i = 0; i < b->n; i++) {
        if (with_ids) {
            const tokenizer_ids *v = &b->ids[i];
            printf("{\"count\": %zu, \"fnv1a64\": \"%016llx\", \"ids\": [", v->len,
                   (unsigned long long)tokenizer_fnv1a64(v->ids, v->len));
            for (size_t k = 0; k < v->len; k++)
                printf(k ? ", %u" : "%u", v->ids[k]);
            fputs("]}\n", stdout);
        } else {
            /* the hash needs the ids; count-only output still prints it */
            const tokenizer_ids *v = &b->ids[i];
            printf("{\"count\": %zu, \"fnv1a64\": \"%016llx\"}\n", v->len,
                   (unsigned long long)tokenizer_fnv1a64(v->ids, v->len));
        }
    }
    return ferror(stdout) ? -1 : 0;
}

int cmd_tokenize(int argc, char **argv)
{
    static const struct option opts[] = {
        {"tokenizer", required_argument, NULL, 't'}, {"tiktoken", required_argument, NULL, 'k'},
        {"ids", no_argument, NULL, 'i'},             {"threads", required_argument, NULL, 'j'},
        {"stats", no_argument, NULL, 's'},           {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    const char *path = NULL, *tiktoken = NULL;
    bool with_ids = false, stats = false;
    long threads = 1;
    int c;
    optind = 1;
    opterr = 0;   /* cli_bad_option says what is wrong, as the other commands do */
    while ((c = getopt_long(argc, argv, ":t:ij:sh", opts, NULL)) != -1) {
        switch (c) {
        case 't':
            path = optarg;
            break;
        case 'k':
            tiktoken = optarg;
            break;
        case 'i':
            with_ids = true;
            break;
        case 'j': {
            char *end;
            threads = strtol(optarg, &end, 10);
            if (*optarg == 0 || *end || threads < 1 || threads > 1024) {
                fprintf(stderr, "obsctl tokenize: --threads: expected an integer from 1 to 1024, got '%s'\n", optarg);
                return 2;
            }
            break;
        }
        case 's':
            stats = true;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            return cli_bad_option("tokenize", c, optopt, argv, optind);
        }
    }
    if (optind < argc) {
        fprintf(stderr, "obsctl tokenize: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    if (!path) {
        fprintf(stderr, "obsctl tokenize: --tokenizer FILE is required\n");
        usage(stderr);
        return 2;
    }

    double t0 = cli_now_s();
    char err[512];
    tokenizer *tok = tiktoken ? tokenizer_load_tiktoken_file(path, tiktoken, err, sizeof err)
                              : tokenizer_load_file(path, err, sizeof err);
    if (!tok) {
        fprintf(stderr, "obsctl tokenize: %s\n", err);
        return 2;
    }
    double load_s = cli_now_s() - t0;

    block b = {0};
    b.texts = calloc(BLOCK_LINES, sizeof *b.texts);
    b.lens = calloc(BLOCK_LINES, sizeof *b.lens);
    b.counts = calloc(BLOCK_LINES, sizeof *b.counts);
    b.ids = calloc(BLOCK_LINES, sizeof *b.ids);
    if (!b.texts || !b.lens || !b.counts || !b.ids) {
        fprintf(stderr, "obsctl tokenize: out of memory\n");
        tokenizer_free(tok);
        return 1;
    }
    char *line = NULL;
    size_t cap = 0, lineno = 0;
    uint64_t tokens = 0;
    double enc_s = 0;
    int status = 0;
    bool eof = false;
    while (!eof && status == 0) {
        ssize_t n;
        while (b.n < BLOCK_LINES && (n = getline(&line, &cap, stdin)) >= 0) {
            lineno++;
            size_t len = (size_t)n;
            while (len && (line[len - 1] == '\n' || line[len - 1] == '\r'))
                len--;
            size_t k = 0;
            while (k < len && (line[k] == ' ' || line[k] == '\t'))
                k++;
            if (k == len)
                continue;
            json_error_t je;
            json_t *o = json_loadb(line, len, JSON_ALLOW_NUL, &je);
            json_t *t = o ? json_object_get(o, "text") : NULL;
            if (!json_is_string(t)) {
                fprintf(stderr, "obsctl tokenize: stdin line %zu: %s\n", lineno,
                        !o ? je.text : "expected an object with a string \"text\"");
                json_decref(o);
                status = 2;
                break;
            }
            size_t tl = json_string_length(t);
            char *copy = malloc(tl + 1);
            if (!copy) {
                json_decref(o);
                fprintf(stderr, "obsctl tokenize: out of memory\n");
                status = 1;
                break;
            }
            memcpy(copy, json_string_value(t), tl + 1);
            json_decref(o);
            b.texts[b.n] = copy;
            b.lens[b.n] = tl;
            b.n++;
        }
        if (b.n < BLOCK_LINES)
            eof = true;
        if (b.n) {
            double s = cli_now_s();
            int rc = tokenizer_encode_batch(tok, b.n, (const char *const *)b.texts, b.lens, b.ids, (unsigned)threads);
            enc_s += cli_now_s() - s;
            if (rc) {
                fprintf(stderr, "obsctl tokenize: %s\n", tokenizer_strerror(rc));
                status = 1;
            } else {
                for (size_t i = 0; i < b.n; i++)
                    tokens += b.ids[i].len;
                if (write_block(&b, with_ids)) {
                    fprintf(stderr, "obsctl tokenize: writing stdout failed\n");
                    status = 1;
                }
            }
        }
        block_clear(&b);
    }
    fflush(stdout);
    if (stats)
        fprintf(stderr, "{\"tokens\": %llu, \"seconds\": %.6f, \"load_seconds\": %.6f}\n", (unsigned long long)tokens,
                enc_s, load_s);
    free(line);
    for (size_t i = 0; i < BLOCK_LINES; i++)
        tokenizer_ids_free(&b.ids[i]);
    free(b.texts);
    free(b.lens);
    free(b.counts);
    free(b.ids);
    tokenizer_free(tok);
    return status;
}
