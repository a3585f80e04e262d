/*
 * test_budget_e2e.c: the budget path across real processes. Each test starts
 * the obsd daemon on a segment and store of its own, runs the
 * budgeted_kernels example against it, lets the run complete, and checks what
 * `obsctl budget --json` reads back from the store.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

static char build_dir[1024];
static char store_dir[256];
static char seg_name[64];
static pid_t daemon_pid;

static void sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Runs argv (NULL-terminated) and returns its exit status; stdout (and
 * stderr too if with_stderr) goes to *out (malloc'd) when out is not NULL. */
static int run_capture(char **out, char *const argv[], bool with_stderr)
{
    int fds[2];
    ck_assert_int_eq(pipe(fds), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        dup2(fds[1], 1);
        if (with_stderr)
            dup2(fds[1], 2);
        close(fds[0]);
        close(fds[1]);
        execv(argv[0], argv);
        fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    close(fds[1]);
    size_t len = 0, cap = 4096;
    char *buf = malloc(cap);
    for (;;) {
        if (len + 1 == cap)
            buf = realloc(buf, cap *= 2);
        ssize_t n = read(fds[0], buf + len, cap - len - 1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    buf[len] = '\0';
    close(fds[0]);
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    if (out)
        *out = buf;
    else
        free(buf);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static int run(char **out, char *const argv[])
{
    return run_capture(out, argv, false);
}

static void setup(void)
{
    const char *b = getenv("OBSD_BUILD_DIR");
    ck_assert_msg(b != NULL, "OBSD_BUILD_DIR is not set");
    snprintf(build_dir, sizeof build_dir, "%s", b);
    static int n;
    snprintf(seg_name, sizeof seg_name, "budget_e2e_%d_%d", (int)getpid(), n++);
    snprintf(store_dir, sizeof store_dir, "/tmp/obsd_budget_e2e.XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(store_dir));

    char exe[1200], shm[128], log[300];
    snprintf(exe, sizeof exe, "%s/src/daemon/obsd", build_dir);
    snprintf(shm, sizeof shm, "/dev/shm/obsd.%s", seg_name);
    snprintf(log, sizeof log, "%s/obsd.log", store_dir);
    daemon_pid = fork();
    ck_assert_int_ge(daemon_pid, 0);
    if (daemon_pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        execl(exe, exe, "--foreground", "--name", seg_name, "--store", store_dir, "--set", "exit_after_run=true",
              "--set", "publish_interval_ms=50", (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 500 && access(shm, F_OK) != 0; i++)
        sleep_ms(10);
    ck_assert_msg(access(shm, F_OK) == 0, "obsd did not create %s (see %s)", shm, log);
}

static void teardown(void)
{
    if (daemon_pid > 0) {
        kill(daemon_pid, SIGTERM);
        waitpid(daemon_pid, NULL, 0);
        daemon_pid = 0;
    }
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' '/dev/shm/obsd.%s'", store_dir, seg_name);
    if (system(cmd) != 0)
        fprintf(stderr, "cleanup failed: %s\n", cmd);
}

/* Runs budgeted_kernels with the given extra arguments (NULL-terminated),
 * waits for the run to complete (the daemon exits after it) and returns the
 * `obsctl budget --json` document. */
static json_t *run_example(const char *first, ...)
{
    char exe[1200];
    snprintf(exe, sizeof exe, "%s/examples/budgeted_kernels", build_dir);
    char *argv[40] = {exe, "--name", seg_name};
    int argc = 3;
    va_list ap;
    va_start(ap, first);
    for (const char *a = first; a && argc < 38; a = va_arg(ap, const char *))
        argv[argc++] = (char *)a;
    va_end(ap);
    argv[argc] = NULL;
    char *out = NULL;
    ck_assert_int_eq(run(&out, argv), 0);
    free(out);

    /* exit_after_run: the daemon exits once the final snapshot is written */
    int st, waited = 0;
    while (waitpid(daemon_pid, &st, WNOHANG) == 0) {
        ck_assert_msg(waited++ < 1000, "obsd did not finish the run within 10 s");
        sleep_ms(10);
    }
    daemon_pid = 0;

    char obsctl[1200];
    snprintf(obsctl, sizeof obsctl, "%s/src/cli/obsctl", build_dir);
    char *json_text = NULL;
    char *const cargv[] = {obsctl, "budget", "--store", store_dir, "--json", NULL};
    ck_assert_int_eq(run(&json_text, cargv), 0);
    json_error_t jerr;
    json_t *doc = json_loads(json_text, 0, &jerr);
    ck_assert_msg(doc != NULL, "obsctl budget --json printed no JSON (%s): %s", jerr.text, json_text);
    free(json_text);
    return doc;
}

static const json_t *ctx_at(const json_t *doc, size_t i)
{
    const json_t *c = json_array_get(json_object_get(doc, "contexts"), i);
    ck_assert_ptr_nonnull(c);
    return c;
}

static double num(const json_t *o, const char *k)
{
    const json_t *v = json_object_get(o, k);
    ck_assert_msg(json_is_number(v), "no number '%s'", k);
    return json_number_value(v);
}

START_TEST(participant_sleep_is_residual)
{
    json_t *doc = run_example("--contexts", "1", "--matmuls", "2", "--size", "32", "--no-participant-work",
                              "--residual-sleep-ms", "200", NULL);
    const json_t *c = ctx_at(doc, 0);
    ck_assert_msg(num(c, "residual_s") >= 0.150, "residual %.6f s", num(c, "residual_s"));
    ck_assert_double_le(num(c, "residual_s"), num(c, "wall_s"));
    json_decref(doc);
}
END_TEST

START_TEST(reconstruction_is_overhead_not_residual)
{
    json_t *doc = run_example("--contexts", "1", "--matmuls", "1", "--size", "128", "--reconstructions", "10",
                              "--no-participant-work", NULL);
    const json_t *c = ctx_at(doc, 0);
    double residual = num(c, "residual_s"), overhead = num(c, "overhead_s");
    ck_assert_msg(residual < 0.010, "residual %.6f s", residual);
    ck_assert_msg(overhead > residual, "overhead %.6f s <= residual %.6f s", overhead, residual);
    const json_t *tolist = json_object_get(json_object_get(c, "operations"), "tolist");
    ck_assert_ptr_nonnull(tolist);
    ck_assert_double_gt(num(tolist, "overhead_s"), 0.0);
    json_decref(doc);
}
END_TEST

START_TEST(mixed_run_identity)
{
    json_t *doc = run_example("--contexts", "3", "--mixed", "--matmuls", "4", "--size", "48",
                              "--residual-sleep-ms", "20", "--reconstructions", "2", NULL);
    const json_t *contexts = json_object_get(doc, "contexts");
    ck_assert_uint_eq(json_array_size(contexts), 3);
    for (size_t i = 0; i < 3; i++) {
        const json_t *c = ctx_at(doc, i);
        double sum = num(c, "backend_s") + num(c, "overhead_s") + num(c, "residual_s");
        ck_assert_msg(fabs(num(c, "wall_s") - sum) <= 0.05, "context %zu: wall %.6f vs %.6f", i, num(c, "wall_s"),
                      sum);
        ck_assert(json_is_false(json_object_get(c, "exhausted")));
        const json_t *by_ns = json_object_get(c, "by_namespace");
        char label[64];
        snprintf(label, sizeof label, "participant%zu.layer1", i);
        ck_assert_msg(json_object_get(by_ns, label) != NULL, "no namespace %s", label);
        ck_assert_uint_eq(json_object_size(json_object_get(c, "operations")), 5);
    }
    const json_t *s = json_object_get(doc, "session");
    double sum = num(s, "backend_s") + num(s, "overhead_s") + num(s, "residual_s");
    ck_assert_msg(fabs(num(s, "wall_s") - sum) <= 0.05, "session: wall %.6f vs %.6f", num(s, "wall_s"), sum);
    ck_assert_int_eq(json_integer_value(json_object_get(s, "contexts")), 3);
    const json_t *mm = json_object_get(json_object_get(s, "operations"), "matmul");
    ck_assert_int_eq(json_integer_value(json_object_get(mm, "calls")), 12);
    ck_assert_int_eq(json_integer_value(json_object_get(mm, "flop_cost")), 12 * (2 * 48 * 48 * 48 - 48 * 48) * 2);
    json_decref(doc);
}
END_TEST

START_TEST(exhausted_budget_is_reported)
{
    /* 8x8 float64 matmul costs 1920: the second and third are refused */
    json_t *doc = run_example("--contexts", "1", "--matmuls", "3", "--size", "8", "--budget", "2000", NULL);
    const json_t *c = ctx_at(doc, 0);
    ck_assert(json_is_true(json_object_get(c, "exhausted")));
    ck_assert_int_eq(json_integer_value(json_object_get(c, "flops_used")), 1920);
    ck_assert_int_eq(json_integer_value(json_object_get(c, "flops_remaining")), 80);
    ck_assert_int_eq(json_integer_value(json_object_get(c, "flop_budget")), 2000);
    const json_t *mm = json_object_get(json_object_get(c, "operations"), "matmul");
    ck_assert_int_eq(json_integer_value(json_object_get(mm, "calls")), 1);
    ck_assert_int_eq(json_integer_value(json_object_get(mm, "flop_cost")), 1920);
    ck_assert_str_eq(json_string_value(json_object_get(c, "namespace")), "participant0");
    json_decref(doc);
}
END_TEST

START_TEST(json_has_the_documented_shape)
{
    json_t *doc = run_example("--contexts", "2", "--matmuls", "1", "--size", "16", NULL);
    ck_assert_uint_eq(json_object_size(doc), 2);
    static const char *keys[] = {"namespace", "flop_budget", "flops_used", "flops_remaining", "exhausted", "wall_s",
                                 "backend_s", "overhead_s", "residual_s", "operations", "by_namespace"};
    for (size_t i = 0; i < 2; i++) {
        const json_t *c = ctx_at(doc, i);
        ck_assert_uint_eq(json_object_size(c), sizeof keys / sizeof *keys);
        for (size_t k = 0; k < sizeof keys / sizeof *keys; k++)
            ck_assert_msg(json_object_get(c, keys[k]) != NULL, "context lacks %s", keys[k]);
        const json_t *mm = json_object_get(json_object_get(c, "operations"), "matmul");
        static const char *op_keys[] = {"flop_cost", "calls", "backend_s", "overhead_s"};
        ck_assert_uint_eq(json_object_size(mm), 4);
        for (size_t k = 0; k < 4; k++)
            ck_assert_ptr_nonnull(json_object_get(mm, op_keys[k]));
    }
    ck_assert(json_is_object(json_object_get(doc, "session")));
    json_decref(doc);

    /* the table form and bad arguments */
    char obsctl[1200];
    snprintf(obsctl, sizeof obsctl, "%s/src/cli/obsctl", build_dir);
    char *table = NULL;
    char *const targv[] = {obsctl, "budget", "--store", store_dir, NULL};
    ck_assert_int_eq(run(&table, targv), 0);
    ck_assert_ptr_nonnull(strstr(table, "participant1"));
    ck_assert_ptr_nonnull(strstr(table, "matmul"));
    free(table);
    char *const bad[] = {obsctl, "budget", "--store", store_dir, "--bogus", NULL};
    ck_assert_int_eq(run(NULL, bad), 2);
    char *const norun[] = {obsctl, "budget", "no-such-run", "--store", store_dir, NULL};
    ck_assert_int_eq(run(NULL, norun), 1);
}
END_TEST

/* A run that used no budgets has no budget section: `obsctl show` offers no
 * budget table and `obsctl budget` says why it has nothing to print. */
START_TEST(run_without_budgets_has_no_section)
{
    char exe[1200], obsctl[1200];
    snprintf(exe, sizeof exe, "%s/examples/span_storm", build_dir);
    snprintf(obsctl, sizeof obsctl, "%s/src/cli/obsctl", build_dir);
    char *const sargv[] = {exe, "--name", seg_name, "--records", "1000", NULL};
    ck_assert_int_eq(run(NULL, sargv), 0);
    int st, waited = 0;
    while (waitpid(daemon_pid, &st, WNOHANG) == 0) {
        ck_assert_msg(waited++ < 1000, "obsd did not finish the run within 10 s");
        sleep_ms(10);
    }
    daemon_pid = 0;

    char *out = NULL;
    char *const show[] = {obsctl, "show", "--store", store_dir, "--final", "--json", NULL};
    ck_assert_int_eq(run(&out, show), 0);
    json_t *snap = json_loads(out, 0, NULL);
    ck_assert_msg(snap != NULL, "obsctl show --json printed: %s", out);
    free(out);
    ck_assert_ptr_null(json_object_get(snap, "budget"));
    ck_assert_ptr_nonnull(json_object_get(snap, "metrics"));   /* the run itself is there */
    json_decref(snap);
    char *const table[] = {obsctl, "show", "--store", store_dir, "--final", NULL};
    ck_assert_int_eq(run(&out, table), 0);
    ck_assert_ptr_null(strstr(out, "obsctl budget"));
    free(out);
    char *const budget[] = {obsctl, "budget", "--store", store_dir, NULL};
    ck_assert_int_eq(run_capture(&out, budget, true), 1);
    ck_assert_msg(strstr(out, "no budget records") != NULL, "obsctl budget said: %s", out);
    free(out);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("budget_e2e");
    TCase *tc = tcase_create("daemon");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, participant_sleep_is_residual);
    tcase_add_test(tc, reconstruction_is_overhead_not_residual);
    tcase_add_test(tc, mixed_run_identity);
    tcase_add_test(tc, exhausted_budget_is_reported);
    tcase_add_test(tc, json_has_the_documented_shape);
    tcase_add_test(tc, run_without_budgets_has_no_section);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
