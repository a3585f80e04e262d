/*
 * test_e2e_config.c: obsd's configuration as an operator meets it, through
 * the real obsd binary: bad keys and values from the file, the environment
 * and the flags stop it with a message naming the key and exit 2; the
 * precedence defaults < file < environment < flags; etc/obsd.conf documents
 * the engine's real defaults; obsctl status without a daemon.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "e2e.h"

static struct e2e t;

static void setup(void)
{
    e2e_setup(&t, "cfg");
}

static void teardown(void)
{
    e2e_teardown(&t);
}

static const char *write_conf(const char *file, const char *text)
{
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", t.dir, file);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
    return path;
}

/* Runs obsd with args (and env), expects exit status 2 and a message. */
static void expect_rejected(char **argv, char **env, const char *message)
{
    char *out = NULL;
    int rc = e2e_run(&t, argv, env, 20, &out);
    ck_assert_msg(rc == 2, "exit %d, output: %s", rc, out);
    ck_assert_msg(strstr(out, message), "output '%s' lacks '%s'", out, message);
    free(out);
}

START_TEST(bad_file_keys_and_values_exit_2_naming_line_and_key)
{
    const char *conf = write_conf("unknown.conf", "[collector]\npublish_interval = 100\n");
    char msg[600];
    snprintf(msg, sizeof msg, "obsd: %s:2: unknown key 'publish_interval' (did you mean publish_interval_ms?)", conf);
    char *a1[] = {"obsd", "--foreground", "--name", t.name, "--store", t.store, "--config", (char *)conf, NULL};
    expect_rejected(a1, NULL, msg);

    conf = write_conf("range.conf", "# comment\n[collector]\npublish_interval_ms = 0\n");
    snprintf(msg, sizeof msg, "obsd: %s:3: publish_interval_ms: '0' is out of range (accepted: 10..60000)", conf);
    char *a2[] = {"obsd", "--foreground", "--name", t.name, "--store", t.store, "--config", (char *)conf, NULL};
    expect_rejected(a2, NULL, msg);

    conf = write_conf("size.conf", "[segment]\nring_size = 3MiB\n");
    char *a3[] = {"obsd", "--foreground", "--name", t.name, "--store", t.store, "--config", (char *)conf, NULL};
    expect_rejected(a3, NULL, "ring_size: '3MiB' is not a power of two");

    char *a4[] = {"obsd", "--foreground", "--config", "/nonexistent/obsd.conf", NULL};
    expect_rejected(a4, NULL, "obsd: /nonexistent/obsd.conf: cannot open: No such file or directory");
}
END_TEST

START_TEST(bad_environment_exits_2_naming_the_variable)
{
    char *argv[] = {"obsd", "--foreground", "--name", t.name, "--store", t.store, NULL};
    char *bad_value[] = {"OBSD_PUBLISH_INTERVAL_MS=0", NULL};
    expect_rejected(argv, bad_value, "obsd: environment OBSD_PUBLISH_INTERVAL_MS: publish_interval_ms: '0' is out of range (accepted: 10..60000)");
    char *unknown[] = {"OBSD_RING_SIZES=1MiB", NULL};
    expect_rejected(argv, unknown, "obsd: environment OBSD_RING_SIZES: unknown key (did you mean OBSD_RING_SIZE?)");
    char *policy[] = {"OBSD_RING_FULL_POLICY=wait", NULL};
    expect_rejected(argv, policy, "ring_full_policy: 'wait' is not a policy (accepted: drop|block)");
}
END_TEST

START_TEST(bad_flags_exit_2_naming_the_option)
{
    char *a1[] = {"obsd", "--foreground", "--name", t.name, "--store", t.store, "--set", "publish_interval_ms=70000", NULL};
    expect_rejected(a1, NULL, "obsd: --set: publish_interval_ms: '70000' is out of range (accepted: 10..60000)");
    char *a2[] = {"obsd", "--foreground", "--set", "no_such_key=1", NULL};
    expect_rejected(a2, NULL, "obsd: --set: unknown key 'no_such_key'");
    char *a3[] = {"obsd", "--foreground", "--name", "../etc/passwd", NULL};
    expect_rejected(a3, NULL, "obsd: --name: name: '../etc/passwd' is not a valid name");
    char *a4[] = {"obsd", "--frobnicate", NULL};
    expect_rejected(a4, NULL, "obsd: unknown option '--frobnicate'");
    char *a5[] = {"obsd", "--set", NULL};
    expect_rejected(a5, NULL, "obsd: option '--set' needs a value");
}
END_TEST

START_TEST(precedence_defaults_file_environment_flags)
{
    const char *conf = write_conf("p.conf", "[collector]\npublish_interval_ms = 500\nhistogram_buckets = 40\n"
                                            "[segment]\nmax_producers = 8\n");
    char *env[] = {"OBSD_PUBLISH_INTERVAL_MS=700", "OBSD_MAX_PRODUCERS=9", NULL};
    char *with_flag[] = {"obsd", "--config", (char *)conf, "--set", "publish_interval_ms=900", "--print-config", NULL};
    char *out = NULL;
    ck_assert_int_eq(e2e_run(&t, with_flag, env, 20, &out), 0);
    ck_assert_msg(strstr(out, "publish_interval_ms = 900\n"), "%s", out);  /* flag > env */
    ck_assert_msg(strstr(out, "max_producers = 9\n"), "%s", out);          /* env > file */
    ck_assert_msg(strstr(out, "histogram_buckets = 40\n"), "%s", out);     /* file > default */
    ck_assert_msg(strstr(out, "store_sync = true\n"), "%s", out);          /* default */
    free(out);

    char *no_flag[] = {"obsd", "--config", (char *)conf, "--print-config", NULL};
    ck_assert_int_eq(e2e_run(&t, no_flag, env, 20, &out), 0);
    ck_assert_msg(strstr(out, "publish_interval_ms = 700\n"), "%s", out);
    free(out);

    /* Later flags win over earlier ones, --name over --set name=. */
    char *order[] = {"obsd", "--config", (char *)conf, "--set", "name=first", "--name", "second", "--print-config", NULL};
    ck_assert_int_eq(e2e_run(&t, order, NULL, 20, &out), 0);
    ck_assert_msg(strstr(out, "name = second\n"), "%s", out);
    free(out);
}
END_TEST

/* etc/obsd.conf shows every key commented out with its default: with every
 * line uncommented it must configure exactly what the engine defaults to. */
START_TEST(etc_obsd_conf_documents_the_real_defaults)
{
    const char *data = getenv("OBSD_TEST_DATA");
    ck_assert_ptr_nonnull(data);
    /* OBSD_TEST_DATA is <source>/tests/data. */
    char src[1024];
    size_t root = strlen(data);
    if (root >= 11 && !strcmp(data + root - 11, "/tests/data"))
        root -= 11;
    snprintf(src, sizeof src, "%.*s/etc/obsd.conf", (int)root, data);
    char *text = e2e_read_file(src);
    ck_assert_msg(text != NULL, "cannot read %s", src);

    /* Uncomment "#key = value" lines (not prose comments, which have "# "). */
    char *uncommented = malloc(strlen(text) + 1);
    char *w = uncommented;
    int keys = 0;
    for (char *line = text; *line;) {
        char *nl = strchr(line, '\n');
        size_t len = nl ? (size_t)(nl - line) + 1 : strlen(line);
        if (line[0] == '#' && line[1] >= 'a' && line[1] <= 'z') {
            line++;
            len--;
            keys++;
        }
        memcpy(w, line, len);
        w += len;
        line += len;
    }
    *w = '\0';
    ck_assert_int_eq(keys, 24);   /* every key of struct obsd_collector_config */
    const char *conf = write_conf("all.conf", uncommented);
    const char *empty = write_conf("empty.conf", "");
    free(text);
    free(uncommented);

    char *documented = NULL, *defaults = NULL;
    char *a1[] = {"obsd", "--config", (char *)conf, "--print-config", NULL};
    char *a2[] = {"obsd", "--config", (char *)empty, "--print-config", NULL};
    ck_assert_int_eq(e2e_run(&t, a1, NULL, 20, &documented), 0);
    ck_assert_int_eq(e2e_run(&t, a2, NULL, 20, &defaults), 0);
    ck_assert_str_eq(documented, defaults);
    free(documented);
    free(defaults);
}
END_TEST

START_TEST(status_without_a_daemon_says_so_and_exits_1)
{
    char *out = NULL;
    char *argv[] = {"obsctl", "status", "--name", t.name, "--store", t.store, NULL};
    ck_assert_int_eq(e2e_run(&t, argv, NULL, 20, &out), 1);
    char msg[600];
    snprintf(msg, sizeof msg, "obsctl status: no obsd running for segment '%s' (socket %s/%s.sock: "
             "no such file or directory)", t.name, t.store, t.name);
    ck_assert_msg(strstr(out, msg), "%s", out);
    free(out);
    char *watch[] = {"obsctl", "watch", "--once", "--name", t.name, "--store", t.store, NULL};
    ck_assert_int_eq(e2e_run(&t, watch, NULL, 20, &out), 1);
    ck_assert_msg(strstr(out, "no obsd running for segment"), "%s", out);
    free(out);
}
END_TEST

START_TEST(help_and_version_tell_the_truth)
{
    char *out = NULL;
    char *help[] = {"obsd", "--help", NULL};
    ck_assert_int_eq(e2e_run(&t, help, NULL, 20, &out), 0);
    static const char *const options[] = {"--name", "--store", "--config", "--tokenizer", "--set",
                                          "--foreground", "--pidfile", "--print-config", "--version"};
    for (size_t i = 0; i < sizeof options / sizeof options[0]; i++)
        ck_assert_msg(strstr(out, options[i]), "--help lacks %s", options[i]);
    free(out);
    char *version[] = {"obsd", "--version", NULL};
    ck_assert_int_eq(e2e_run(&t, version, NULL, 20, &out), 0);
    ck_assert_msg(!strncmp(out, "obsd ", 5), "%s", out);
    free(out);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("e2e_config");
    TCase *tc = tcase_create("config");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, bad_file_keys_and_values_exit_2_naming_line_and_key);
    tcase_add_test(tc, bad_environment_exits_2_naming_the_variable);
    tcase_add_test(tc, bad_flags_exit_2_naming_the_option);
    tcase_add_test(tc, precedence_defaults_file_environment_flags);
    tcase_add_test(tc, etc_obsd_conf_documents_the_real_defaults);
    tcase_add_test(tc, status_without_a_daemon_says_so_and_exits_1);
    tcase_add_test(tc, help_and_version_tell_the_truth);
    suite_add_tcase(s, tc);
    return e2e_run_suite(s);
}
