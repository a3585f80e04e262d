/*
 * test_e2e_keys.c: the size of the segment's key table (obsd.conf max_keys)
 * with real processes: obsd and a producer process linked with libobsd.
 *
 *  - with max_keys = 16384, a producer interns 10,000 names and writes 1 to
 *    3 spans in each: the run's final snapshot has all 10,000 series with
 *    their exact counts (more than the 4096 names of ABI version 1);
 *  - with max_keys = 256, the 257th obsd_key() fails with a message naming
 *    the table size and max_keys, and the records of the first 256 arrive;
 *  - obsd restarted on that segment with another max_keys is refused,
 *    naming the segment's size and the file to remove;
 *  - a max_keys out of range (file, environment, flag) exits 2 naming the
 *    key and the accepted range; --print-config shows the default.
 */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "e2e.h"
#include "obsd/obsd.h"

#define N_BIG 10000
#define N_SMALL 256

static struct e2e t;

static void setup(void)
{
    e2e_setup(&t, "keys");
}

static void teardown(void)
{
    e2e_teardown(&t);
}

/* A session event that a full ring would drop is written again. */
static bool session(obsd_t *h, enum obsd_session_event ev)
{
    for (int i = 0; i < 3000; i++) {
        if (obsd_session(h, ev) == OBSD_OK && obsd_flush(h) == OBSD_OK)
            return true;
        e2e_sleep_ms(10);
    }
    return false;
}

/* Spans of series i: 1 + i % 3. */
static int spans_of(int i)
{
    return 1 + i % 3;
}

/* A producer process: interns n names "keys.<i>" (and, with one_more, one
 * name past them, whose obsd_key() must fail: its message goes to msg_fd),
 * then one run with spans_of(i) spans in each series. Exit 0 if everything
 * went as expected, else a code naming the step. */
static pid_t start_producer(int n, bool one_more, int msg_fd)
{
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid)
        return pid;
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    obsd_t *h = obsd_open(t.name);
    if (!h)
        _exit(10);
    static obsd_key_t keys[N_BIG];
    for (int i = 0; i < n; i++) {
        char name[48];
        snprintf(name, sizeof name, "keys.%05d", i);
        keys[i] = obsd_key(h, name);
        if (!keys[i])
            _exit(11);
    }
    if (one_more) {
        if (obsd_key(h, "keys.one.too.many") != 0)
            _exit(12);
        const char *msg = obsd_last_error();
        if (write(msg_fd, msg, strlen(msg)) != (ssize_t)strlen(msg))
            _exit(13);
        close(msg_fd);
        /* The names that fit are still found. */
        if (obsd_key(h, "keys.00000") != keys[0])
            _exit(14);
    }
    if (!session(h, OBSD_SESSION_STARTED))
        _exit(15);
    for (int i = 0; i < n; i++)
        for (int s = 0; s < spans_of(i); s++) {
            int rc;
            while ((rc = obsd_span(h, keys[i], 1000, 2000 + (uint64_t)i)) == OBSD_DROPPED)
                e2e_sleep_ms(1);   /* not expected with a 1 MiB ring; never lose one */
            if (rc != OBSD_OK)
                _exit(16);
        }
    if (!session(h, OBSD_SESSION_ENDED))
        _exit(17);
    obsd_close(h);
    _exit(0);
}

/* Every "keys.<i>" series of the snapshot has spans_of(i) values, i < n. */
static void check_series(json_t *snap, int n)
{
    static int count[N_BIG];
    memset(count, 0, sizeof count);
    int found = 0, other = 0;
    size_t k;
    json_t *m;
    json_array_foreach(json_object_get(snap, "metrics"), k, m) {
        const char *type = json_string_value(json_object_get(m, "type"));
        const char *name = json_string_value(json_object_get(m, "name"));
        int i;
        char end;
        if (!type || strcmp(type, "series") || !name || strncmp(name, "keys.", 5))
            continue;
        if (sscanf(name + 5, "%d%c", &i, &end) != 1 || i < 0 || i >= n) {
            other++;
            continue;
        }
        ck_assert_msg(count[i] == 0, "series %s twice", name);
        count[i] = (int)json_integer_value(json_object_get(m, "count"));
        ck_assert_msg(count[i] == spans_of(i), "series %s: count %d, wrote %d", name, count[i],
                      spans_of(i));
        found++;
    }
    ck_assert_int_eq(other, 0);
    ck_assert_int_eq(found, n);
}

START_TEST(ten_thousand_series_with_max_keys_16384)
{
    char *extra[] = {"--set", "max_keys=16384", NULL};
    e2e_start_obsd(&t, extra);
    pid_t p = start_producer(N_BIG, false, -1);
    ck_assert_int_eq(e2e_wait(p, 120), 0);
    json_t *snap = e2e_final_snapshot(&t, t.store, 60);
    ck_assert_msg(snap != NULL, "no final snapshot: %s", e2e_last_show_output());
    check_series(snap, N_BIG);
    json_decref(snap);
    ck_assert_int_eq(e2e_stop_obsd(&t, SIGTERM), 0);
}
END_TEST

START_TEST(small_table_refuses_the_257th_name_and_keeps_the_rest)
{
    char *extra[] = {"--set", "max_keys=256", NULL};
    e2e_start_obsd(&t, extra);
    int fds[2];
    ck_assert_int_eq(pipe(fds), 0);
    pid_t p = start_producer(N_SMALL, true, fds[1]);
    close(fds[1]);
    char msg[512];
    ssize_t got = 0, r;
    while (got < (ssize_t)sizeof msg - 1 && (r = read(fds[0], msg + got, sizeof msg - 1 - got)) > 0)
        got += r;
    close(fds[0]);
    msg[got > 0 ? got : 0] = '\0';
    ck_assert_int_eq(e2e_wait(p, 60), 0);
    char want[300];
    snprintf(want, sizeof want, "segment obsd.%s: key table full (256 names; the collector's "
             "max_keys in obsd.conf sets the size)", t.name);
    ck_assert_str_eq(msg, want);

    json_t *snap = e2e_final_snapshot(&t, t.store, 60);
    ck_assert_msg(snap != NULL, "no final snapshot: %s", e2e_last_show_output());
    check_series(snap, N_SMALL);
    json_decref(snap);
    ck_assert_int_eq(e2e_stop_obsd(&t, SIGTERM), 0);

    /* The segment stays (a restart continues it): another size is refused. */
    char *argv[] = {"obsd", "--foreground", "--name", t.name, "--store", t.store,
                    "--set", "max_keys=512", NULL};
    char *out = NULL;
    int rc = e2e_run(&t, argv, NULL, 20, &out);
    ck_assert_msg(rc != 0, "obsd started on a segment of another key table size: %s", out);
    ck_assert_msg(strstr(out, "another layout") && strstr(out, "max_keys 256") &&
                  strstr(out, "remove /dev/shm/obsd."), "%s", out);
    free(out);
}
END_TEST

/* Runs obsd with args (and env), expects exit status 2 and a message. */
static void expect_rejected(char **argv, char **env, const char *message)
{
    char *out = NULL;
    int rc = e2e_run(&t, argv, env, 20, &out);
    ck_assert_msg(rc == 2, "exit %d, output: %s", rc, out);
    ck_assert_msg(strstr(out, message), "output '%s' lacks '%s'", out, message);
    free(out);
}

START_TEST(bad_max_keys_exits_2_naming_key_and_range)
{
    char *a1[] = {"obsd", "--foreground", "--name", t.name, "--store", t.store,
                  "--set", "max_keys=255", NULL};
    expect_rejected(a1, NULL, "obsd: --set: max_keys: '255' is out of range (accepted: 256..1048576)");

    char *a2[] = {"obsd", "--foreground", "--name", t.name, "--store", t.store, NULL};
    char *env[] = {"OBSD_MAX_KEYS=2097152", NULL};
    expect_rejected(a2, env, "obsd: environment OBSD_MAX_KEYS: max_keys: '2097152' is out of range "
                             "(accepted: 256..1048576)");

    char conf[512];
    snprintf(conf, sizeof conf, "%s/keys.conf", t.dir);
    FILE *f = fopen(conf, "w");
    ck_assert_ptr_nonnull(f);
    fputs("[segment]\nmax_keys = lots\n", f);
    fclose(f);
    char *a3[] = {"obsd", "--foreground", "--name", t.name, "--store", t.store, "--config", conf, NULL};
    char msg[700];
    snprintf(msg, sizeof msg, "obsd: %s:2: max_keys: 'lots' is not a number (accepted: 256..1048576)", conf);
    expect_rejected(a3, NULL, msg);

    /* Nothing was created. */
    char shm[128];
    snprintf(shm, sizeof shm, "/dev/shm/obsd.%s", t.name);
    ck_assert_int_ne(access(shm, F_OK), 0);

    char *pc[] = {"obsd", "--print-config", NULL};
    char *out = NULL;
    ck_assert_int_eq(e2e_run(&t, pc, NULL, 20, &out), 0);
    ck_assert_msg(strstr(out, "\nmax_keys = 16384\n"), "%s", out);
    free(out);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("e2e_keys");
    TCase *tc = tcase_create("keys");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 240);
    tcase_add_test(tc, ten_thousand_series_with_max_keys_16384);
    tcase_add_test(tc, small_table_refuses_the_257th_name_and_keeps_the_rest);
    tcase_add_test(tc, bad_max_keys_exits_2_naming_key_and_range);
    suite_add_tcase(s, tc);
    return e2e_run_suite(s);
}
