/*
 * test_cli_options.c: every obsctl command, as a real process, on an
 * option that takes a value given without one (the option last on the
 * command line): exit 2 and "obsctl CMD: option 'OPT' needs a value"; on a
 * flag given a value (--json=1): "option '--json' takes no value"; and on an
 * unknown option: exit 2, "unknown option 'OPT'" and where to look for the
 * right ones ("Try 'obsctl CMD --help'."). The options are
 * those of the commands' option tables (src/cli/cmd_*.c), long and short
 * forms; nothing here reaches a store, a daemon or a tokenizer.
 */
#include <check.h>
#include <stdio.h>
#include <string.h>

#include "cli_fixture.h"
#include "test_util.h"

static char dir[512];

static void setup(void)
{
    make_temp_dir(dir, sizeof dir, "options");
}

static void teardown(void)
{
    rm_rf(dir);
}

/* Every option of every command that takes a value. */
static const struct {
    const char *cmd, *opt;
} WITH_VALUE[] = {
    {"runs", "--store"},
    {"show", "--store"}, {"show", "--seq"},
    {"get", "--store"},
    {"export", "--store"}, {"export", "--format"}, {"export", "--output"},
    {"status", "--name"}, {"status", "--store"}, {"status", "--socket"}, {"status", "--config"},
    {"status", "-n"}, {"status", "-s"}, {"status", "-S"}, {"status", "-c"},
    {"watch", "--name"}, {"watch", "--store"}, {"watch", "--socket"}, {"watch", "--config"},
    {"watch", "--top"},
    {"watch", "-n"}, {"watch", "-s"}, {"watch", "-S"}, {"watch", "-c"}, {"watch", "-t"},
    {"tokenize", "--tokenizer"}, {"tokenize", "--tiktoken"}, {"tokenize", "--threads"},
    {"tokenize", "-t"}, {"tokenize", "-j"},
    {"budget", "--store"}, {"budget", "--config"},
    {"compare", "--store"}, {"compare", "--sweep"},
    {"report", "--store"}, {"report", "--output"}, {"report", "--max-charts"},
    {"metrics", "--store"}, {"metrics", "--format"}, {"metrics", "--listen"},
};

START_TEST(missing_value_is_named)
{
    const char *cmd = WITH_VALUE[_i].cmd, *opt = WITH_VALUE[_i].opt;
    int rc = OBSCTL(dir, cmd, opt);
    char want[128];
    snprintf(want, sizeof want, "obsctl %s: option '%s' needs a value\n", cmd, opt);
    ck_assert_msg(rc == 2 && strstr(cli_err, want), "obsctl %s %s: exit %d, stderr: %s", cmd, opt, rc, cli_err);
    ck_assert_msg(cli_out_len == 0, "obsctl %s %s: stdout: %s", cmd, opt, cli_out);
}
END_TEST

/* Every flag (an option without a value), given one. */
static const struct {
    const char *cmd, *arg, *flag;
} FLAG_WITH_VALUE[] = {
    {"runs", "--json=1", "--json"},       {"show", "--json=1", "--json"},
    {"show", "--final=yes", "--final"},   {"get", "--json=1", "--json"},
    {"export", "--snapshots=1", "--snapshots"}, {"status", "--json=1", "--json"},
    {"watch", "--once=1", "--once"},      {"watch", "--plain=x", "--plain"},
    {"watch", "--until-end=1", "--until-end"}, {"tokenize", "--ids=1", "--ids"},
    {"budget", "--json=1", "--json"},     {"compare", "--json=1", "--json"},
};

START_TEST(flag_value_is_refused)
{
    const char *cmd = FLAG_WITH_VALUE[_i].cmd, *arg = FLAG_WITH_VALUE[_i].arg;
    int rc = OBSCTL(dir, cmd, arg);
    char want[128];
    snprintf(want, sizeof want, "obsctl %s: option '%s' takes no value\n", cmd, FLAG_WITH_VALUE[_i].flag);
    ck_assert_msg(rc == 2 && strstr(cli_err, want), "obsctl %s %s: exit %d, stderr: %s", cmd, arg, rc, cli_err);
    ck_assert_msg(cli_out_len == 0, "obsctl %s %s: stdout: %s", cmd, arg, cli_out);
}
END_TEST

static const char *const COMMANDS[] = {"runs",     "show",   "get",     "export", "status", "watch",
                                       "tokenize", "budget", "compare", "report", "metrics"};

START_TEST(unknown_option_is_named)
{
    const char *cmd = COMMANDS[_i];
    int rc = OBSCTL(dir, cmd, "--bogus");
    char want[128];
    snprintf(want, sizeof want, "obsctl %s: unknown option '--bogus'\nTry 'obsctl %s --help'.\n", cmd, cmd);
    ck_assert_msg(rc == 2 && strstr(cli_err, want), "obsctl %s --bogus: exit %d, stderr: %s", cmd, rc, cli_err);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("cli_options");
    TCase *tc = tcase_create("options");
    tcase_add_unchecked_fixture(tc, temp_root_begin, temp_root_end);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_loop_test(tc, missing_value_is_named, 0, sizeof WITH_VALUE / sizeof WITH_VALUE[0]);
    tcase_add_loop_test(tc, flag_value_is_refused, 0, sizeof FLAG_WITH_VALUE / sizeof FLAG_WITH_VALUE[0]);
    tcase_add_loop_test(tc, unknown_option_is_named, 0, sizeof COMMANDS / sizeof COMMANDS[0]);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
