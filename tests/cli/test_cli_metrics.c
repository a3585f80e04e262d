/*
 * test_cli_metrics.c: `obsctl metrics` as a real process: the exposition of
 * a store with hostile names passes a strict line-by-line check of the
 * OpenMetrics text format (and of the Prometheus 0.0.4 one), names are
 * sanitized and unique, values are right; `--listen 127.0.0.1:0` serves it
 * over HTTP (fetched here over a socket): content negotiation, HEAD, 404,
 * 405, 503 on a store without runs, following the latest run, SIGTERM.
 * prometheus_client's OpenMetrics parser checks it too when installed.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli_fixture.h"
#include "publisher/store.h"
#include "test_util.h"

static char dir[512], store_dir[600];

static void setup(void)
{
    make_temp_dir(dir, sizeof dir, "metrics");
    snprintf(store_dir, sizeof store_dir, "%s/store", dir);
    cli_write_store(store_dir);
}

static void teardown(void)
{
    rm_rf(dir);
}

/* ---- a strict reading of the text formats ---- */

enum fmt { OPENMETRICS, PROMETHEUS };

static bool name_ok(const char *s, size_t n)
{
    if (!n || (s[0] >= '0' && s[0] <= '9'))
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= '0' && s[i] <= '9') ||
              s[i] == '_' || s[i] == ':'))
            return false;
    return true;
}

/* An escaped string up to (not including) an unescaped stop character;
 * returns its end, or NULL for a bad escape or a raw character that must be
 * escaped. Unescaped text goes to out. */
static const char *escaped_string(const char *p, char stop, bool quote_escaped, char *out, size_t cap)
{
    size_t k = 0;
    for (; *p && *p != stop; p++) {
        char c = *p;
        if (c == '\n')
            return NULL;
        if (c == '"' && quote_escaped && stop != '"')
            return NULL;   /* OpenMetrics HELP: a quote must be escaped */
        if (c == '\\') {
            p++;
            if (*p == 'n')
                c = '\n';
            else if (*p == '\\' || (*p == '"' && quote_escaped))
                c = *p;
            else
                return NULL;
        }
        if (k + 1 < cap)
            out[k++] = c;
    }
    out[k] = 0;
    return *p == stop ? p : NULL;
}

static bool value_ok(const char *s, double *v)
{
    if (!strcmp(s, "NaN")) {
        *v = NAN;
        return true;
    }
    if (!strcmp(s, "+Inf") || !strcmp(s, "-Inf")) {
        *v = s[0] == '+' ? INFINITY : -INFINITY;
        return true;
    }
    char *end;
    *v = strtod(s, &end);
    return end != s && !*end && isfinite(*v);
}

struct family {
    char name[512], type[16];
    size_t samples;
    double last_le, last_bucket, inf_bucket, count;
};

/* Every family and sample name so far, with the family it belongs to. */
#define MAX_NAMES 4096
static char seen_names[MAX_NAMES][512];
static int seen_family[MAX_NAMES];
static size_t n_seen;

/* True when name already belongs to a family other than family_id. */
static bool taken(const char *name, int family_id)
{
    for (size_t i = 0; i < n_seen; i++)
        if (!strcmp(seen_names[i], name))
            return seen_family[i] != family_id;
    ck_assert_uint_lt(n_seen, MAX_NAMES);
    seen_family[n_seen] = family_id;
    snprintf(seen_names[n_seen++], sizeof seen_names[0], "%s", name);
    return false;
}

static bool ends_with(const char *s, const char *fam, const char *suffix)
{
    size_t n = strlen(fam);
    return !strncmp(s, fam, n) && !strcmp(s + n, suffix);
}

static void set_why(char *why, size_t wl, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void set_why(char *why, size_t wl, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, wl, fmt, ap);
    va_end(ap);
}
#define FAIL(...) do { set_why(why, wl, __VA_ARGS__); return false; } while (0)

/* Checks the whole exposition; the run label of every sample must be run. */
static bool exposition_ok(const char *text, size_t len, enum fmt fmt, const char *run, char *why, size_t wl)
{
    if (!cli_valid_utf8(text, len))
        FAIL("not valid UTF-8");
    if (!len || text[len - 1] != '\n')
        FAIL("does not end with a newline");
    struct family fam = {0};
    char pending_help[512] = "";
    bool eof = false;
    int family_id = 0;
    n_seen = 0;
    for (const char *line = text; *line;) {
        const char *nl = strchr(line, '\n');
        char buf[8192];
        size_t n = (size_t)(nl - line);
        if (n >= sizeof buf)
            FAIL("line too long");
        memcpy(buf, line, n);
        buf[n] = 0;
        line = nl + 1;
        if (eof)
            FAIL("text after # EOF");
        if (!n)
            FAIL("empty line");
        if (!strcmp(buf, "# EOF")) {
            if (fmt != OPENMETRICS)
                FAIL("# EOF in the 0.0.4 format");
            eof = true;
            continue;
        }
        if (!strncmp(buf, "# HELP ", 7) || !strncmp(buf, "# TYPE ", 7)) {
            char *name = buf + 7, *sp = strchr(name, ' ');
            if (!sp || !name_ok(name, (size_t)(sp - name)))
                FAIL("bad metadata line: %s", buf);
            *sp = 0;
            if (buf[2] == 'H') {
                char help[4096];
                if (!escaped_string(sp + 1, 0, fmt == OPENMETRICS, help, sizeof help))
                    FAIL("bad HELP text: %s", sp + 1);
                snprintf(pending_help, sizeof pending_help, "%.511s", name);
                continue;
            }
            const char *type = sp + 1;
            static const char *const om_types[] = {"counter", "gauge", "summary", "histogram", "info", "unknown", NULL};
            static const char *const prom_types[] = {"counter", "gauge", "summary", "histogram", "untyped", NULL};
            bool known = false;
            for (const char *const *t = fmt == OPENMETRICS ? om_types : prom_types; *t; t++)
                known |= !strcmp(*t, type);
            if (!known)
                FAIL("unknown type %s", type);
            if (strcmp(pending_help, name))
                FAIL("TYPE %s does not follow its HELP (%s)", name, pending_help);
            if (fam.name[0] && !fam.samples)
                FAIL("family %s has no sample", fam.name);
            if (fam.name[0] && !strcmp(fam.type, "histogram") && fam.inf_bucket != fam.count)
                FAIL("%s: +Inf bucket %g != count %g", fam.name, fam.inf_bucket, fam.count);
            if (taken(name, ++family_id))
                FAIL("family name %s used before", name);
            memset(&fam, 0, sizeof fam);
            snprintf(fam.name, sizeof fam.name, "%.511s", name);
            snprintf(fam.type, sizeof fam.type, "%s", type);
            fam.last_le = -INFINITY;
            fam.inf_bucket = fam.count = NAN;
            continue;
        }
        if (buf[0] == '#')
            FAIL("a comment line: %s", buf);
        /* sample: name{labels} value */
        char *brace = strchr(buf, '{');
        if (!brace)
            FAIL("sample without labels (no run label): %s", buf);
        *brace = 0;
        const char *sname = buf;
        if (!name_ok(sname, strlen(sname)))
            FAIL("bad sample name %s", sname);
        if (!fam.name[0])
            FAIL("sample %s before any TYPE", sname);
        const char *t = fam.type;
        bool ok = (!strcmp(t, "counter") && (fmt == OPENMETRICS ? ends_with(sname, fam.name, "_total")
                                                                 : !strcmp(sname, fam.name) &&
                                                                       strlen(sname) > 6 &&
                                                                       !strcmp(sname + strlen(sname) - 6, "_total"))) ||
                  (!strcmp(t, "gauge") && !strcmp(sname, fam.name)) ||
                  (!strcmp(t, "info") && ends_with(sname, fam.name, "_info")) ||
                  (!strcmp(t, "summary") && (!strcmp(sname, fam.name) || ends_with(sname, fam.name, "_sum") ||
                                             ends_with(sname, fam.name, "_count"))) ||
                  (!strcmp(t, "histogram") && (ends_with(sname, fam.name, "_bucket") ||
                                               ends_with(sname, fam.name, "_sum") ||
                                               ends_with(sname, fam.name, "_count")));
        if (!ok)
            FAIL("sample %s does not belong to %s family %s", sname, t, fam.name);
        if (taken(sname, family_id))
            FAIL("sample name %s is another family's", sname);
        char *p = brace + 1, run_v[512] = "", le[64] = "", q[64] = "";
        bool first = true;
        while (*p != '}') {
            if (!first && *p++ != ',')
                FAIL("labels of %s: expected ','", sname);
            first = false;
            char *eq = strchr(p, '=');
            if (!eq || !name_ok(p, (size_t)(eq - p)) || eq[1] != '"')
                FAIL("bad label in %s", sname);
            char key[64], val[1024];
            snprintf(key, sizeof key, "%.*s", (int)(eq - p), p);
            const char *end = escaped_string(eq + 2, '"', true, val, sizeof val);
            if (!end)
                FAIL("bad label value in %s", sname);
            if (!strcmp(key, "run"))
                snprintf(run_v, sizeof run_v, "%.511s", val);
            else if (!strcmp(key, "le"))
                snprintf(le, sizeof le, "%.63s", val);
            else if (!strcmp(key, "quantile"))
                snprintf(q, sizeof q, "%.63s", val);
            p = (char *)end + 1;
        }
        if (strcmp(run_v, run))
            FAIL("%s: run label '%s', not '%s'", sname, run_v, run);
        if (p[1] != ' ')
            FAIL("%s: no space before the value", sname);
        double v;
        if (!value_ok(p + 2, &v))
            FAIL("%s: bad value '%s'", sname, p + 2);
        fam.samples++;
        if (!strcmp(t, "counter") && !(v >= 0))
            FAIL("counter %s is negative", sname);
        if (!strcmp(t, "summary") && !strcmp(sname, fam.name) && strcmp(q, "0.5") && strcmp(q, "0.9") &&
            strcmp(q, "0.99") && strcmp(q, "0.999"))
            FAIL("%s: quantile '%s'", sname, q);
        if (!strcmp(t, "histogram")) {
            if (ends_with(sname, fam.name, "_bucket")) {
                double lv;
                if (!value_ok(le, &lv) || lv <= fam.last_le || v < fam.last_bucket)
                    FAIL("%s: bucket le=%s not increasing or not cumulative", sname, le);
                fam.last_le = lv;
                fam.last_bucket = v;
                if (isinf(lv))
                    fam.inf_bucket = v;
            } else if (ends_with(sname, fam.name, "_count")) {
                fam.count = v;
            }
        }
    }
    if (fmt == OPENMETRICS && !eof)
        FAIL("no # EOF at the end");
    if (fam.name[0] && !strcmp(fam.type, "histogram") && fam.inf_bucket != fam.count)
        FAIL("%s: +Inf bucket %g != count %g", fam.name, fam.inf_bucket, fam.count);
    return true;
}

static void check_exposition(const char *text, size_t len, enum fmt fmt, const char *run)
{
    char why[1024];
    ck_assert_msg(exposition_ok(text, len, fmt, run, why, sizeof why), "%s", why);
}

/* prometheus_client's parsers, when python3-prometheus-client is installed */
static void check_with_prometheus_client(const char *path, enum fmt fmt)
{
    if (access("/usr/bin/python3", X_OK) ||
        system("/usr/bin/python3 -c 'import prometheus_client.openmetrics.parser' >/dev/null 2>&1")) {
        fprintf(stderr, "test_cli_metrics: python3-prometheus-client is not installed: its parser check skipped\n");
        return;
    }
    char cmd[2000];
    snprintf(cmd, sizeof cmd,
             "/usr/bin/python3 -c 'import sys\n"
             "from prometheus_client.%s import text_string_to_metric_families as p\n"
             "fams = list(p(open(sys.argv[1]).read()))\n"
             "assert fams, \"no family\"' '%s'",
             fmt == OPENMETRICS ? "openmetrics.parser" : "parser", path);
    ck_assert_msg(system(cmd) == 0, "prometheus_client rejects %s", path);
}

/* ---- tests ---- */

START_TEST(openmetrics_text_of_a_run)
{
    ck_assert_int_eq(OBSCTL(dir, "metrics", "bench-1", "--store", store_dir), 0);
    const char *m = cli_out;
    check_exposition(m, cli_out_len, OPENMETRICS, "bench-1");
    ck_assert_ptr_nonnull(strstr(m, "\n# EOF\n"));
    ck_assert_ptr_nonnull(strstr(cli_err, "incomplete drain: 3 tokenizations pending"));

    /* the run and its state */
    ck_assert_ptr_nonnull(strstr(m, "# TYPE obsd_run info\n"));
    ck_assert_ptr_nonnull(strstr(m, "obsd_run_info{run=\"bench-1\",name=\"<b>bold</b> & \\\"q\\\"\",state=\"complete\"} 1\n"));
    ck_assert_ptr_nonnull(strstr(m, "obsd_run_incomplete_drain{run=\"bench-1\"} 1\n"));
    ck_assert_ptr_nonnull(strstr(m, "obsd_run_pending_tasks{run=\"bench-1\"} 3\n"));
    ck_assert_ptr_nonnull(strstr(m, "obsd_run_final{run=\"bench-1\"} 1\n"));
    ck_assert_ptr_nonnull(strstr(m, "obsd_snapshot_seq{run=\"bench-1\"} 5\n"));

    /* counters and gauges */
    ck_assert_ptr_nonnull(strstr(m, "# TYPE obsd_dropped_records counter\nobsd_dropped_records_total{run=\"bench-1\"} 7\n"));
    ck_assert_ptr_nonnull(strstr(m, "# TYPE obsd_items counter\nobsd_items_total{run=\"bench-1\"} 50\n"));
    ck_assert_ptr_nonnull(strstr(m, "# TYPE obsd_pushed counter\nobsd_pushed_total{run=\"bench-1\"} 5\n"));
    ck_assert_ptr_nonnull(strstr(m, "# TYPE obsd_qps gauge\nobsd_qps{run=\"bench-1\"} 75\n"));
    ck_assert_ptr_nonnull(strstr(m, "# TYPE obsd_delta gauge\nobsd_delta{run=\"bench-1\"} -5\n"));
    /* dup.name and dup_name both map to obsd_dup_name: the second gets a suffix */
    ck_assert_ptr_nonnull(strstr(m, "obsd_dup_name_total{run=\"bench-1\"} 1\n"));
    ck_assert_ptr_nonnull(strstr(m, "obsd_dup_name_2_total{run=\"bench-1\"} 2\n"));
    ck_assert_ptr_nonnull(strstr(m, "# HELP obsd_dup_name_2 counter dup_name\n"));
    /* hostile names: sanitized in the name, escaped in HELP */
    ck_assert_ptr_nonnull(strstr(m, "# HELP obsd____img_src_x_onerror_alert_1__ counter \\\"><img src=x onerror=alert(1)>\n"));
    ck_assert_ptr_nonnull(strstr(m, "obsd____img_src_x_onerror_alert_1___total{run=\"bench-1\"} 42\n"));
    ck_assert_ptr_nonnull(strstr(m, "# HELP obsd__script_alert__s____script_ series <script>alert(\\\"s\\\")</script>: "));
    ck_assert_ptr_nonnull(strstr(m, "# HELP obsd_bad___utf8 series bad\xEF\xBF\xBD\xEF\xBF\xBD utf8: "));
    ck_assert_ptr_nonnull(strstr(m, "obsd_span__s_count{run=\"bench-1\"} 42\n"));

    /* a series: summary and histogram; ttft_ns at the final has k = 6 */
    ck_assert_ptr_nonnull(strstr(m, "# TYPE obsd_ttft_ns summary\n"));
    ck_assert_ptr_nonnull(strstr(m, ": quantiles are observed values (exact)\n# TYPE obsd_ttft_ns summary"));
    ck_assert_ptr_nonnull(strstr(m,
        "obsd_ttft_ns{run=\"bench-1\",quantile=\"0.5\"} 6006\n"
        "obsd_ttft_ns{run=\"bench-1\",quantile=\"0.9\"} 10006\n"
        "obsd_ttft_ns{run=\"bench-1\",quantile=\"0.99\"} 10906\n"
        "obsd_ttft_ns{run=\"bench-1\",quantile=\"0.999\"} 10996\n"
        "obsd_ttft_ns_sum{run=\"bench-1\"} 180000\n"
        "obsd_ttft_ns_count{run=\"bench-1\"} 42\n"));
    ck_assert_ptr_nonnull(strstr(m,
        "# TYPE obsd_ttft_ns_histogram histogram\n"
        "obsd_ttft_ns_histogram_bucket{run=\"bench-1\",le=\"2000.0\"} 6\n"
        "obsd_ttft_ns_histogram_bucket{run=\"bench-1\",le=\"4000.0\"} 24\n"
        "obsd_ttft_ns_histogram_bucket{run=\"bench-1\",le=\"8000.0\"} 36\n"
        "obsd_ttft_ns_histogram_bucket{run=\"bench-1\",le=\"16000.0\"} 42\n"
        "obsd_ttft_ns_histogram_bucket{run=\"bench-1\",le=\"+Inf\"} 42\n"
        "obsd_ttft_ns_histogram_sum{run=\"bench-1\"} 180000\n"
        "obsd_ttft_ns_histogram_count{run=\"bench-1\"} 42\n"));
    /* a series without values: NaN quantiles, empty histogram */
    ck_assert_ptr_nonnull(strstr(m, "obsd_empty_series{run=\"bench-1\",quantile=\"0.5\"} NaN\n"));
    ck_assert_ptr_nonnull(strstr(m, "obsd_empty_series_histogram_bucket{run=\"bench-1\",le=\"+Inf\"} 0\n"));
    /* every series of the run is there */
    static const char *const fams[] = {"obsd_ttft_ns", "obsd_span__s", "obsd__script_alert__s____script_",
                                       "obsd_bad___utf8", "obsd_empty_series"};
    for (size_t i = 0; i < FIXTURE_N_SERIES; i++) {
        char want[256];
        snprintf(want, sizeof want, "# TYPE %s summary\n", fams[i]);
        ck_assert_msg(strstr(m, want), "no summary for %s", fixture_series[i]);
        snprintf(want, sizeof want, "# TYPE %s_histogram histogram\n", fams[i]);
        ck_assert_msg(strstr(m, want), "no histogram for %s", fixture_series[i]);
    }

    char path[700];
    snprintf(path, sizeof path, "%s/bench-1.om", dir);
    FILE *f = fopen(path, "w");
    fwrite(cli_out, 1, cli_out_len, f);
    fclose(f);
    check_with_prometheus_client(path, OPENMETRICS);

    /* the other states */
    ck_assert_int_eq(OBSCTL(dir, "metrics", "bench-2", "--store", store_dir), 0);
    check_exposition(cli_out, cli_out_len, OPENMETRICS, "bench-2");
    ck_assert_ptr_nonnull(strstr(cli_out, "state=\"interrupted\"} 1\n"));
    ck_assert_ptr_nonnull(strstr(cli_err, "interrupted"));
    ck_assert_int_eq(OBSCTL(dir, "metrics", "--store", store_dir), 0);
    check_exposition(cli_out, cli_out_len, OPENMETRICS, "bench-3");
    ck_assert_ptr_nonnull(strstr(cli_out, "obsd_run_final{run=\"bench-3\"} 0\n"));
}
END_TEST

START_TEST(prometheus_text_format)
{
    ck_assert_int_eq(OBSCTL(dir, "metrics", "bench-1", "--format", "prometheus", "--store", store_dir), 0);
    const char *m = cli_out;
    check_exposition(m, cli_out_len, PROMETHEUS, "bench-1");
    ck_assert_ptr_null(strstr(m, "# EOF"));
    ck_assert_ptr_nonnull(strstr(m, "# TYPE obsd_items_total counter\nobsd_items_total{run=\"bench-1\"} 50\n"));
    ck_assert_ptr_nonnull(strstr(m, "# TYPE obsd_run_info gauge\n"));
    /* 0.0.4 escapes only \ and newline in HELP */
    ck_assert_ptr_nonnull(strstr(m, "# HELP obsd__script_alert__s____script_ series <script>alert(\"s\")</script>: "));
    char path[700];
    snprintf(path, sizeof path, "%s/bench-1.prom", dir);
    FILE *f = fopen(path, "w");
    fwrite(cli_out, 1, cli_out_len, f);
    fclose(f);
    check_with_prometheus_client(path, PROMETHEUS);
}
END_TEST

/* ---- HTTP ---- */

struct server {
    pid_t pid;
    int err_fd;
    int port;
    char err[8192];
};

/* Starts obsctl metrics ARGS --listen 127.0.0.1:0 and reads the bound port
 * from its standard error. */
static void start_server(struct server *s, const char *const *args)
{
    int pfd[2];
    ck_assert_int_eq(pipe(pfd), 0);
    const char *argv[16] = {"obsctl", "metrics"};
    int n = 2;
    for (; args[n - 2]; n++)
        argv[n] = args[n - 2];
    argv[n++] = "--listen";
    argv[n++] = "127.0.0.1:0";
    argv[n] = NULL;
    s->pid = fork();
    ck_assert_int_ge(s->pid, 0);
    if (s->pid == 0) {
        int null = open("/dev/null", O_WRONLY);
        dup2(null, 1);
        dup2(pfd[1], 2);
        close(pfd[0]);
        execv(cli_obsctl_path(), (char *const *)argv);
        _exit(127);
    }
    close(pfd[1]);
    s->err_fd = pfd[0];
    size_t k = 0;
    s->err[0] = 0;
    for (int waited = 0; waited < 20000;) {
        struct pollfd p = {s->err_fd, POLLIN, 0};
        int r = poll(&p, 1, 100);
        waited += 100;
        if (r <= 0)
            continue;
        ssize_t got = read(s->err_fd, s->err + k, sizeof s->err - 1 - k);
        if (got <= 0)
            break;
        k += (size_t)got;
        s->err[k] = 0;
        const char *at = strstr(s->err, "serving http://127.0.0.1:");
        if (at && strchr(at, '\n')) {
            s->port = atoi(at + strlen("serving http://127.0.0.1:"));
            return;
        }
    }
    kill(s->pid, SIGKILL);
    waitpid(s->pid, NULL, 0);
    ck_abort_msg("obsctl metrics --listen did not say where it serves: %s", s->err);
}

/* SIGTERM; returns the exit status (and the rest of stderr in s->err). */
static int stop_server(struct server *s)
{
    kill(s->pid, SIGTERM);
    int status = 0;
    for (int i = 0; i < 200 && waitpid(s->pid, &status, WNOHANG) == 0; i++) {
        struct timespec ts = {0, 50000000};
        nanosleep(&ts, NULL);
        if (i == 199) {
            kill(s->pid, SIGKILL);
            waitpid(s->pid, &status, 0);
        }
    }
    size_t k = strlen(s->err);
    ssize_t got;
    while ((got = read(s->err_fd, s->err + k, sizeof s->err - 1 - k)) > 0)
        k += (size_t)got;
    s->err[k] = 0;
    close(s->err_fd);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

struct response {
    int status;
    char headers[4096];
    char *body;
    size_t body_len;
};

/* One HTTP/1.1 request over a fresh socket (Connection: close). */
static void http(int port, const char *method, const char *path, const char *accept, struct response *r)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_ge(fd, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    ck_assert_int_eq(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    char req[1024];
    int n = snprintf(req, sizeof req, "%s %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n%s%s%sConnection: close\r\n\r\n",
                     method, path, port, accept ? "Accept: " : "", accept ? accept : "", accept ? "\r\n" : "");
    ck_assert_int_eq(write(fd, req, (size_t)n), n);
    size_t cap = 1 << 20, len = 0;
    char *buf = malloc(cap);
    for (;;) {
        struct pollfd p = {fd, POLLIN, 0};
        ck_assert_msg(poll(&p, 1, 10000) == 1, "no reply within 10 s");
        ssize_t got = read(fd, buf + len, cap - 1 - len);
        if (got <= 0)
            break;
        len += (size_t)got;
        ck_assert_uint_lt(len, cap - 1);
    }
    close(fd);
    buf[len] = 0;
    char *end = strstr(buf, "\r\n\r\n");
    ck_assert_msg(end != NULL, "no end of headers: %s", buf);
    ck_assert_int_eq(sscanf(buf, "HTTP/1.1 %d", &r->status), 1);
    snprintf(r->headers, sizeof r->headers, "%.*s", (int)(end - buf), buf);
    r->body_len = len - (size_t)(end + 4 - buf);
    r->body = malloc(r->body_len + 1);
    memcpy(r->body, end + 4, r->body_len + 1);
    free(buf);
}

START_TEST(served_over_http)
{
    struct server s;
    start_server(&s, (const char *const[]){"--store", store_dir, NULL});

    /* what Prometheus sends: OpenMetrics first */
    struct response r;
    http(s.port, "GET", "/metrics",
         "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
         "text/plain;version=0.0.4;q=0.5,*/*;q=0.1", &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_msg(strstr(r.headers, "\r\nContent-Type: application/openmetrics-text; version=1.0.0; charset=utf-8"),
                  "%s", r.headers);
    check_exposition(r.body, r.body_len, OPENMETRICS, "bench-3");
    ck_assert_int_eq(OBSCTL(dir, "metrics", "--store", store_dir), 0);
    ck_assert_str_eq(r.body, cli_out);   /* the same text as printed */
    free(r.body);

    /* no Accept: OpenMetrics; text/plain preferred: 0.0.4 */
    http(s.port, "GET", "/metrics", NULL, &r);
    ck_assert_ptr_nonnull(strstr(r.headers, "Content-Type: application/openmetrics-text"));
    free(r.body);
    http(s.port, "GET", "/metrics", "text/plain;version=0.0.4;q=1,application/openmetrics-text;q=0.5", &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_msg(strstr(r.headers, "\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8"), "%s", r.headers);
    check_exposition(r.body, r.body_len, PROMETHEUS, "bench-3");
    free(r.body);

    http(s.port, "HEAD", "/metrics", NULL, &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_uint_eq(r.body_len, 0);
    free(r.body);
    http(s.port, "GET", "/nope", NULL, &r);
    ck_assert_int_eq(r.status, 404);
    free(r.body);
    http(s.port, "POST", "/metrics", NULL, &r);
    ck_assert_int_eq(r.status, 405);
    ck_assert_ptr_nonnull(strstr(r.headers, "\r\nAllow: GET, HEAD"));
    free(r.body);

    /* every scrape reads the store again: a new run is served at once */
    cli_add_run(store_dir, "bench-4");
    http(s.port, "GET", "/metrics", NULL, &r);
    ck_assert_int_eq(r.status, 200);
    check_exposition(r.body, r.body_len, OPENMETRICS, "bench-4");
    free(r.body);

    ck_assert_int_eq(stop_server(&s), 0);
    ck_assert_msg(strstr(s.err, "obsctl metrics: stopped (SIGTERM)"), "%s", s.err);

    /* a given RUN stays that run */
    start_server(&s, (const char *const[]){"bench-1", "--store", store_dir, NULL});
    cli_add_run(store_dir, "bench-5");
    http(s.port, "GET", "/metrics", NULL, &r);
    ck_assert_int_eq(r.status, 200);
    check_exposition(r.body, r.body_len, OPENMETRICS, "bench-1");
    free(r.body);
    ck_assert_int_eq(stop_server(&s), 0);
}
END_TEST

START_TEST(store_without_runs_answers_503)
{
    char empty[700], err[256];
    snprintf(empty, sizeof empty, "%s/empty", dir);
    mkdir(empty, 0700);
    struct store *st = store_open(empty, 0, false, false, err, sizeof err);
    ck_assert_msg(st != NULL, "%s", err);
    store_close(st);
    struct server s;
    start_server(&s, (const char *const[]){"--store", empty, NULL});
    struct response r;
    http(s.port, "GET", "/metrics", NULL, &r);
    ck_assert_int_eq(r.status, 503);
    ck_assert_ptr_nonnull(strstr(r.body, "obsctl metrics: "));
    free(r.body);
    /* the first run appears: served from then on */
    cli_add_run(empty, "first");
    http(s.port, "GET", "/metrics", NULL, &r);
    ck_assert_int_eq(r.status, 200);
    check_exposition(r.body, r.body_len, OPENMETRICS, "first");
    free(r.body);
    ck_assert_int_eq(stop_server(&s), 0);
    ck_assert_ptr_nonnull(strstr(s.err, "scrape failed"));
}
END_TEST

START_TEST(bad_arguments_and_listen_errors)
{
    ck_assert_int_eq(OBSCTL(dir, "metrics", "--help"), 0);
    ck_assert_ptr_nonnull(strstr(cli_out, "usage: obsctl metrics [RUN]"));
    ck_assert_ptr_nonnull(strstr(cli_out, "--listen A:P"));
    ck_assert_int_eq(OBSCTL(dir, "--help"), 0);
    ck_assert_ptr_nonnull(strstr(cli_out, "  metrics "));
    ck_assert_int_eq(OBSCTL(dir, "metrics", "--listen", "nonsense", "--store", store_dir), 2);
    ck_assert_ptr_nonnull(strstr(cli_err, "--listen needs ADDR:PORT"));
    ck_assert_int_eq(OBSCTL(dir, "metrics", "--listen", "127.0.0.1:70000", "--store", store_dir), 2);
    ck_assert_int_eq(OBSCTL(dir, "metrics", "--listen", "127.0.0.1:", "--store", store_dir), 2);
    ck_assert_int_eq(OBSCTL(dir, "metrics", "--format", "xml", "--store", store_dir), 2);
    ck_assert_ptr_nonnull(strstr(cli_err, "'xml'"));
    ck_assert_int_eq(OBSCTL(dir, "metrics", "--format", "prometheus", "--listen", "127.0.0.1:0", "--store", store_dir), 2);
    ck_assert_int_eq(OBSCTL(dir, "metrics", "a", "b", "--store", store_dir), 2);
    ck_assert_int_eq(OBSCTL(dir, "metrics", "--bogus"), 2);
    ck_assert_int_eq(OBSCTL(dir, "metrics", "nope", "--store", store_dir), 1);
    ck_assert_ptr_nonnull(strstr(cli_err, "no run 'nope'"));
    ck_assert_int_eq(OBSCTL(dir, "metrics", "nope", "--listen", "127.0.0.1:0", "--store", store_dir), 1);
    char missing[700];
    snprintf(missing, sizeof missing, "%s/none", dir);
    ck_assert_int_eq(OBSCTL(dir, "metrics", "--listen", "127.0.0.1:0", "--store", missing), 1);
    ck_assert_ptr_nonnull(strstr(cli_err, "no store at"));

    /* a port someone else listens on */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    ck_assert_int_eq(listen(fd, 1), 0);
    socklen_t al = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &al);
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", ntohs(a.sin_port));
    ck_assert_int_eq(OBSCTL(dir, "metrics", "--listen", addr, "--store", store_dir), 1);
    ck_assert_msg(strstr(cli_err, "cannot listen on") && strstr(cli_err, "Address already in use"), "%s", cli_err);
    close(fd);
}
END_TEST

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    Suite *s = suite_create("cli_metrics");
    TCase *tc = tcase_create("metrics");
    tcase_add_unchecked_fixture(tc, temp_root_begin, temp_root_end);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, openmetrics_text_of_a_run);
    tcase_add_test(tc, prometheus_text_format);
    tcase_add_test(tc, served_over_http);
    tcase_add_test(tc, store_without_runs_answers_503);
    tcase_add_test(tc, bad_arguments_and_listen_errors);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
