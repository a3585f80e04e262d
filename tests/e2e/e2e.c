/*
 * e2e.c: process helpers of the whole-system tests (see e2e.h).
 */
#include "e2e.h"

#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static pid_t main_pid;

void e2e_sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

const char *e2e_program(const char *name)
{
    static char path[4][1024];
    static int next;
    const char *build = getenv("OBSD_BUILD_DIR");
    ck_assert_msg(build && *build, "OBSD_BUILD_DIR is not set (run the suite through ctest)");
    char *p = path[next++ % 4];
    if (!strcmp(name, "obsd"))
        snprintf(p, sizeof path[0], "%s/src/daemon/obsd", build);
    else if (!strcmp(name, "obsctl"))
        snprintf(p, sizeof path[0], "%s/src/cli/obsctl", build);
    else
        snprintf(p, sizeof path[0], "%s/examples/%s", build, name);
    return p;
}

static void remove_tree(const char *path)
{
    DIR *d = opendir(path);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d))) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
                continue;
            char sub[1024];
            snprintf(sub, sizeof sub, "%s/%s", path, e->d_name);
            struct stat st;
            if (lstat(sub, &st) == 0 && S_ISDIR(st.st_mode))
                remove_tree(sub);
            else
                unlink(sub);
        }
        closedir(d);
    }
    rmdir(path);
}

void e2e_setup(struct e2e *t, const char *tag)
{
    memset(t, 0, sizeof *t);
    if (!main_pid)
        main_pid = getpid();
    snprintf(t->dir, sizeof t->dir, "/tmp/obsd-e2e-%ld-%ld", (long)main_pid, (long)getpid());
    ck_assert_int_eq(mkdir(t->dir, 0700), 0);
    snprintf(t->store, sizeof t->store, "%s/store", t->dir);
    snprintf(t->name, sizeof t->name, "e2e%ld-%s-%ld", (long)main_pid, tag, (long)getpid());
}

void e2e_teardown(struct e2e *t)
{
    if (t->obsd > 0) {
        kill(t->obsd, SIGKILL);
        waitpid(t->obsd, NULL, 0);
        t->obsd = 0;
    }
    char shm[128];
    snprintf(shm, sizeof shm, "/dev/shm/obsd.%s", t->name);
    unlink(shm);
    remove_tree(t->dir);
}

void e2e_init(void)
{
    main_pid = getpid();
}

void e2e_cleanup_all(void)
{
    char prefix[64], shm_prefix[64];
    snprintf(prefix, sizeof prefix, "obsd-e2e-%ld-", (long)getpid());
    snprintf(shm_prefix, sizeof shm_prefix, "obsd.e2e%ld-", (long)getpid());
    DIR *d = opendir("/tmp");
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (!strncmp(e->d_name, prefix, strlen(prefix))) {
            char p[512];
            snprintf(p, sizeof p, "/tmp/%s", e->d_name);
            remove_tree(p);
        }
    }
    if (d)
        closedir(d);
    d = opendir("/dev/shm");
    while (d && (e = readdir(d))) {
        if (!strncmp(e->d_name, shm_prefix, strlen(shm_prefix))) {
            char p[512];
            snprintf(p, sizeof p, "/dev/shm/%s", e->d_name);
            unlink(p);
        }
    }
    if (d)
        closedir(d);
}

int e2e_run_suite(Suite *s)
{
    e2e_init();
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    e2e_cleanup_all();
    return failed ? 1 : 0;
}

pid_t e2e_spawn(struct e2e *t, char *const argv[], char *const env[], const char *out_path)
{
    static int n;
    char out[512];
    if (!out_path) {
        const char *base = strrchr(argv[0], '/');
        snprintf(out, sizeof out, "%s/%s.%d.out", t->dir, base ? base + 1 : argv[0], n++);
        out_path = out;
    }
    const char *prog = argv[0][0] == '/' ? argv[0] : e2e_program(argv[0]);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        /* Separate files: a program's stderr note must not land in the
         * middle of the JSON it prints on stdout. */
        char err_path[600];
        snprintf(err_path, sizeof err_path, "%s.err", out_path);
        int fd = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        int efd = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (fd >= 0 && efd >= 0) {
            dup2(fd, STDOUT_FILENO);
            dup2(efd, STDERR_FILENO);
            close(fd);
            close(efd);
        }
        for (size_t i = 0; env && env[i]; i++) {
            char *eq = strchr(env[i], '=');
            if (eq) {
                char key[256];
                snprintf(key, sizeof key, "%.*s", (int)(eq - env[i]), env[i]);
                setenv(key, eq + 1, 1);
            } else {
                unsetenv(env[i]);
            }
        }
        execv(prog, argv);
        fprintf(stderr, "exec %s: %s\n", prog, strerror(errno));
        _exit(127);
    }
    return pid;
}

int e2e_wait(pid_t pid, int timeout_s)
{
    int status;
    for (int waited_ms = 0;; waited_ms += 10) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid)
            break;
        if (r < 0)
            return -1;
        if (waited_ms >= timeout_s * 1000) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            break;
        }
        e2e_sleep_ms(10);
    }
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    return 128 + WTERMSIG(status);
}

char *e2e_read_file(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    char *buf = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&buf, &len);
    char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        fwrite(chunk, 1, n, out);
    fclose(f);
    fclose(out);
    return buf;
}

char *e2e_read_output(const char *out_path)
{
    char err_path[600];
    snprintf(err_path, sizeof err_path, "%s.err", out_path);
    char *out = e2e_read_file(out_path), *err = e2e_read_file(err_path);
    char *all = NULL;
    if (asprintf(&all, "%s%s", out ? out : "", err ? err : "") < 0)
        all = strdup("");
    free(out);
    free(err);
    return all;
}

/* Runs a child to completion with its output in out (and out.err). */
static int run_to(struct e2e *t, char *const argv[], char *const env[], int timeout_s, char out[512])
{
    static int n;
    snprintf(out, 512, "%s/run.%d.out", t->dir, n++);
    return e2e_wait(e2e_spawn(t, argv, env, out), timeout_s);
}

int e2e_run(struct e2e *t, char *const argv[], char *const env[], int timeout_s, char **output)
{
    char out[512];
    int status = run_to(t, argv, env, timeout_s, out);
    if (output)
        *output = e2e_read_output(out);
    return status;
}

static char *read_or_empty(const char *path)
{
    char *text = e2e_read_file(path);
    return text ? text : strdup("");
}

int e2e_run_split(struct e2e *t, char *const argv[], char *const env[], int timeout_s, char **out,
                  char **err)
{
    char path[512], err_path[600];
    int status = run_to(t, argv, env, timeout_s, path);
    snprintf(err_path, sizeof err_path, "%s.err", path);
    if (out)
        *out = read_or_empty(path);
    if (err)
        *err = read_or_empty(err_path);
    return status;
}

json_t *e2e_run_json(struct e2e *t, char *const argv[], int timeout_s)
{
    char *out = NULL, *err = NULL;
    int status = e2e_run_split(t, argv, NULL, timeout_s, &out, &err);
    ck_assert_msg(status == 0, "%s %s: exit %d: %s", argv[0], argv[1] ? argv[1] : "", status, err);
    json_error_t je;
    json_t *j = json_loads(out, 0, &je);
    ck_assert_msg(j != NULL, "%s %s printed no JSON (%s): %s", argv[0], argv[1] ? argv[1] : "", je.text,
                  out);
    free(out);
    free(err);
    return j;
}

json_t *e2e_last_json_line(const char *text)
{
    /* The last JSON object that starts at the beginning of a line, on one
     * line (span_storm, status) or pretty-printed over several (show). */
    json_t *found = NULL;
    for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
        if (p[0] != '{')
            continue;
        json_t *j = json_loads(p, JSON_DISABLE_EOF_CHECK, NULL);
        if (json_is_object(j)) {
            json_decref(found);
            found = j;
        } else {
            json_decref(j);
        }
    }
    return found;
}

json_t *e2e_status(struct e2e *t)
{
    char *out = NULL;
    char *argv[] = {"obsctl", "status", "--name", t->name, "--store", t->store, "--json", NULL};
    int rc = e2e_run(t, argv, NULL, 10, &out);
    json_t *j = rc == 0 ? e2e_last_json_line(out) : NULL;
    free(out);
    return j;
}

void e2e_start_obsd(struct e2e *t, char *const extra[])
{
    char *argv[32] = {"obsd", "--foreground", "--name", t->name, "--store", t->store,
                      "--set", "publish_interval_ms=50"};
    size_t n = 8;
    for (size_t i = 0; extra && extra[i] && n < 31; i++)
        argv[n++] = extra[i];
    argv[n] = NULL;
    char out[512];
    snprintf(out, sizeof out, "%s/obsd.%d.log", t->dir, t->n_obsd_starts++);
    t->obsd = e2e_spawn(t, argv, NULL, out);
    for (int i = 0; i < 1000; i++) {   /* up to ~20 s on a loaded machine */
        json_t *st = e2e_status(t);
        if (st) {
            json_decref(st);
            return;
        }
        int status;
        if (waitpid(t->obsd, &status, WNOHANG) == t->obsd) {
            char *log = e2e_read_output(out);
            t->obsd = 0;
            ck_abort_msg("obsd exited at startup: %s", log ? log : "");
        }
        e2e_sleep_ms(20);
    }
    ck_abort_msg("obsd did not answer on its control socket");
}

int e2e_wait_obsd(struct e2e *t, int timeout_s)
{
    ck_assert_int_gt(t->obsd, 0);
    int status = e2e_wait(t->obsd, timeout_s);
    t->obsd = 0;
    return status;
}

int e2e_stop_obsd(struct e2e *t, int sig)
{
    ck_assert_int_gt(t->obsd, 0);
    kill(t->obsd, sig);
    return e2e_wait_obsd(t, 30);
}

char *e2e_obsd_log(struct e2e *t)
{
    if (t->n_obsd_starts == 0)
        return strdup("");
    char log[512];
    snprintf(log, sizeof log, "%s/obsd.%d.log", t->dir, t->n_obsd_starts - 1);
    return e2e_read_output(log);
}

static char last_show[2048];

const char *e2e_last_show_output(void)
{
    return last_show;
}

static json_t *show(struct e2e *t, const char *store, bool final)
{
    char *out = NULL;
    char *argv[] = {"obsctl", "show", "--store", (char *)store, "--json",
                    final ? "--final" : NULL, NULL};
    int rc = e2e_run(t, argv, NULL, 10, &out);
    json_t *j = rc == 0 ? e2e_last_json_line(out) : NULL;
    snprintf(last_show, sizeof last_show, "exit %d: %.2000s", rc, out);
    free(out);
    return j;
}

json_t *e2e_final_snapshot(struct e2e *t, const char *store, int timeout_s)
{
    for (int waited = 0; waited < timeout_s * 1000; waited += 100) {
        json_t *j = show(t, store, true);
        if (j)
            return j;
        e2e_sleep_ms(100);
    }
    return NULL;
}

json_t *e2e_latest_snapshot(struct e2e *t, const char *store)
{
    return show(t, store, false);
}

static json_t *find_metric(json_t *snap, const char *type, const char *name)
{
    json_t *metrics = json_object_get(snap, "metrics");
    size_t i;
    json_t *m;
    json_array_foreach(metrics, i, m) {
        const char *mt = json_string_value(json_object_get(m, "type"));
        const char *mn = json_string_value(json_object_get(m, "name"));
        if (mt && mn && !strcmp(mt, type) && !strcmp(mn, name))
            return m;
    }
    return NULL;
}

long long e2e_counter(json_t *snap, const char *name)
{
    json_t *m = find_metric(snap, "counter", name);
    return m ? (long long)json_number_value(json_object_get(m, "value")) : -1;
}

long long e2e_series_count(json_t *snap, const char *name)
{
    json_t *m = find_metric(snap, "series", name);
    return m ? (long long)json_integer_value(json_object_get(m, "count")) : -1;
}
