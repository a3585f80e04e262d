/*
 * test_tokenize_cli.c: the real `obsctl tokenize` binary (found through
 * OBSD_BUILD_DIR) on JSON lines: reference counts, hashes and ids, order kept
 * with several threads, --stats on stderr, bad lines and bad options exit 2.
 */
#include <fcntl.h>
#include <jansson.h>
#include <stdbool.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tok_testutil.h"

static char tmpdir[256];

static void setup(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/obsd-tokcli.%d.XXXXXX", (int)getpid());
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
}

static void teardown(void)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    ck_assert_int_eq(system(cmd), 0);
}

static const char *obsctl(void)
{
    static char path[1024];
    const char *b = getenv("OBSD_BUILD_DIR");
    snprintf(path, sizeof path, "%s/src/cli/obsctl", b ? b : "build");
    return path;
}

/* Runs obsctl tokenize with args, input on stdin; returns the exit status and
 * the malloc'ed stdout and stderr. */
static int run(const char *const *args, const char *input, char **out, char **err)
{
    char in_path[300], out_path[300], err_path[300];
    snprintf(in_path, sizeof in_path, "%s/in", tmpdir);
    snprintf(out_path, sizeof out_path, "%s/out", tmpdir);
    snprintf(err_path, sizeof err_path, "%s/err", tmpdir);
    FILE *f = fopen(in_path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(input, f);
    fclose(f);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        int i = open(in_path, O_RDONLY), o = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0600),
            e = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        dup2(i, 0);
        dup2(o, 1);
        dup2(e, 2);
        const char *argv[16] = {"obsctl", "tokenize"};
        int n = 2;
        for (int k = 0; args[k] && n < 15; k++)
            argv[n++] = args[k];
        argv[n] = NULL;
        execv(obsctl(), (char *const *)argv);
        _exit(127);
    }
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    *out = tt_read(out_path, NULL);
    *err = tt_read(err_path, NULL);
    ck_assert_msg(WIFEXITED(st), "obsctl died");
    ck_assert_msg(WEXITSTATUS(st) != 127, "cannot run %s", obsctl());
    return WEXITSTATUS(st);
}

/* The first n corpus lines as input, and the matching reference lines. */
static void corpus_head(size_t n, char **input, char ***ref, size_t from)
{
    char *c = tt_read(tt_path("visible.corpus.jsonl.gz"), NULL), *r = tt_read(tt_path("visible.qwen3.ref.jsonl.gz"), NULL);
    char **cl, **rl;
    size_t nc = tt_lines(c, &cl), nr = tt_lines(r, &rl);
    ck_assert_uint_ge(nc, from + n);
    ck_assert_uint_eq(nc, nr);
    size_t total = 0;
    for (size_t i = from; i < from + n; i++)
        total += strlen(cl[i]) + 1;
    *input = malloc(total + 1);
    size_t o = 0;
    for (size_t i = from; i < from + n; i++) {
        size_t l = strlen(cl[i]);
        memcpy(*input + o, cl[i], l);
        (*input)[o + l] = '\n';
        o += l + 1;
    }
    (*input)[o] = 0;
    *ref = malloc(n * sizeof **ref);
    for (size_t i = 0; i < n; i++)
        (*ref)[i] = strdup(rl[from + i]);
    free(cl);
    free(rl);
    free(c);
    free(r);
}

static void check_output(const char *out, char **ref, size_t n, bool ids)
{
    char *copy = strdup(out), **lines;
    size_t nl = tt_lines(copy, &lines);
    ck_assert_uint_eq(nl, n);
    for (size_t i = 0; i < n; i++) {
        json_t *o = json_loads(lines[i], 0, NULL), *r = json_loads(ref[i], 0, NULL);
        ck_assert_msg(o != NULL, "output line %zu is not JSON: %s", i, lines[i]);
        ck_assert_int_eq(json_integer_value(json_object_get(o, "count")), json_integer_value(json_object_get(r, "count")));
        ck_assert_str_eq(json_string_value(json_object_get(o, "fnv1a64")), json_string_value(json_object_get(r, "fnv1a64")));
        if (ids)
            ck_assert(json_equal(json_object_get(o, "ids"), json_object_get(r, "ids")));
        else
            ck_assert_ptr_null(json_object_get(o, "ids"));
        json_decref(o);
        json_decref(r);
    }
    free(lines);
    free(copy);
}

START_TEST(counts_hashes_and_ids_match_the_reference)
{
    char *input, **ref, *out, *err;
    corpus_head(40, &input, &ref, 0);
    const char *args[] = {"--tokenizer", tt_path("qwen3.tokenizer.json.gz"), "--ids", NULL};
    ck_assert_int_eq(run(args, input, &out, &err), 0);
    check_output(out, ref, 40, true);
    free(out);
    free(err);
    const char *args2[] = {"--tokenizer", tt_path("qwen3.tokenizer.json.gz"), "--threads", "2", "--stats", NULL};
    ck_assert_int_eq(run(args2, input, &out, &err), 0);
    check_output(out, ref, 40, false);
    json_t *st = json_loads(err, 0, NULL);
    ck_assert_msg(st != NULL, "--stats line is not JSON: %s", err);
    ck_assert(json_is_integer(json_object_get(st, "tokens")));
    ck_assert_int_gt(json_integer_value(json_object_get(st, "tokens")), 0);
    ck_assert(json_is_number(json_object_get(st, "seconds")));
    ck_assert(json_is_number(json_object_get(st, "load_seconds")));
    json_decref(st);
    free(out);
    free(err);
    for (size_t i = 0; i < 40; i++)
        free(ref[i]);
    free(ref);
    free(input);
}
END_TEST

START_TEST(bad_line_names_the_line_and_exits_2)
{
    const char *args[] = {"--tokenizer", tt_path("tokenizer_mini_bytelevel.json"), NULL};
    char *out, *err;
    ck_assert_int_eq(run(args, "{\"text\": \"Hello\"}\n\n{\"text\": 5}\n{\"text\": \"x\"}\n", &out, &err), 2);
    ck_assert_msg(strstr(err, "line 3") != NULL, "stderr: %s", err);
    ck_assert_str_eq(out, "{\"count\": 3, \"fnv1a64\": \"a7047cbed31a36b3\"}\n");
    free(out);
    free(err);
    ck_assert_int_eq(run(args, "not json\n", &out, &err), 2);
    ck_assert_msg(strstr(err, "line 1") != NULL, "stderr: %s", err);
    free(out);
    free(err);
}
END_TEST

START_TEST(bad_options_exit_2)
{
    char *out, *err;
    const char *none[] = {NULL};
    ck_assert_int_eq(run(none, "", &out, &err), 2);
    ck_assert_ptr_nonnull(strstr(err, "--tokenizer"));
    free(out);
    free(err);
    const char *threads[] = {"--tokenizer", tt_path("tokenizer_mini_bytelevel.json"), "--threads", "zero", NULL};
    ck_assert_int_eq(run(threads, "", &out, &err), 2);
    ck_assert_ptr_nonnull(strstr(err, "--threads"));
    free(out);
    free(err);
    const char *missing[] = {"--tokenizer", "/nonexistent.json", NULL};
    ck_assert_int_eq(run(missing, "", &out, &err), 2);
    ck_assert_ptr_nonnull(strstr(err, "/nonexistent.json"));
    free(out);
    free(err);
    const char *help[] = {"--help", NULL};
    ck_assert_int_eq(run(help, "", &out, &err), 0);
    ck_assert_ptr_nonnull(strstr(out, "--threads"));
    free(out);
    free(err);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("tokenize_cli");
    TCase *tc = tcase_create("cli");
    tcase_set_timeout(tc, 300);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, counts_hashes_and_ids_match_the_reference);
    tcase_add_test(tc, bad_line_names_the_line_and_exits_2);
    tcase_add_test(tc, bad_options_exit_2);
    suite_add_tcase(s, tc);
    SRunner *r = srunner_create(s);
    srunner_run_all(r, CK_NORMAL);
    int failed = srunner_ntests_failed(r);
    srunner_free(r);
    return failed ? 1 : 0;
}
