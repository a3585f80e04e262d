/*
 * test_cli_report.c: `obsctl report` as a real process: on a store written
 * through the store API with hostile names, every series, counter and module
 * section shows up escaped, the state banners are there, --output is atomic,
 * a copy of the store reads alike, and the page is well-formed HTML (our own
 * tag checker; html5lib's strict parser and headless Chromium when
 * installed, skipped cleanly when not). Then on the store of a real obsd run.
 */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "cli_fixture.h"
#include "e2e.h"
#include "test_util.h"

static char dir[512], store_dir[600];

static void setup(void)
{
    make_temp_dir(dir, sizeof dir, "report");
    snprintf(store_dir, sizeof store_dir, "%s/store", dir);
    cli_write_store(store_dir);
}

static void teardown(void)
{
    rm_rf(dir);
}

static size_t count(const char *hay, const char *needle)
{
    size_t n = 0;
    for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle))
        n++;
    return n;
}

/* ---- a well-formedness check of the HTML we write ----
 * Every element closed in order (void elements excepted), self-closing tags
 * only inside <svg>, attribute values double-quoted without '<' or '"',
 * character references well-formed, no '<' or '>' in text, no <script>. */
static bool html_well_formed(const char *h, char *why, size_t wl)
{
    static const char *const voids[] = {"meta", "br", "wbr", "hr", "img", "input", "link", NULL};
    char stack[256][32];
    int depth = 0, svg_depth = -1;
    if (strncmp(h, "<!DOCTYPE html>\n", 16)) {
        snprintf(why, wl, "no <!DOCTYPE html> first");
        return false;
    }
    const char *p = h + 16;
    while (*p) {
        if (*p == '&') {
            const char *q = p + 1;
            if (*q == '#')
                for (q++; *q >= '0' && *q <= '9'; q++)
                    ;
            else
                while ((*q >= 'a' && *q <= 'z') || (*q >= 'A' && *q <= 'Z'))
                    q++;
            if (q == p + 1 || *q != ';') {
                snprintf(why, wl, "bad character reference at: %.40s", p);
                return false;
            }
            p = q + 1;
            continue;
        }
        if (*p == '>') {
            snprintf(why, wl, "raw '>' in text at: %.40s", p);
            return false;
        }
        if (*p != '<') {
            p++;
            continue;
        }
        if (!strncmp(p, "<!--", 4)) {
            const char *e = strstr(p, "-->");
            if (!e) {
                snprintf(why, wl, "unclosed comment");
                return false;
            }
            p = e + 3;
            continue;
        }
        bool close = p[1] == '/';
        const char *n = p + (close ? 2 : 1);
        size_t nl = 0;
        while ((n[nl] >= 'a' && n[nl] <= 'z') || (n[nl] >= 'A' && n[nl] <= 'Z') || (n[nl] >= '0' && n[nl] <= '9') ||
               n[nl] == '-')
            nl++;
        if (!nl || nl >= 32) {
            snprintf(why, wl, "raw '<' in text at: %.40s", p);
            return false;
        }
        char name[32];
        snprintf(name, sizeof name, "%.*s", (int)nl, n);
        if (!strcasecmp(name, "script")) {
            snprintf(why, wl, "a <script> element");
            return false;
        }
        const char *q = n + nl;
        if (close) {
            if (*q != '>' || depth == 0 || strcmp(stack[depth - 1], name)) {
                snprintf(why, wl, "</%s> closes <%s> at: %.60s", name, depth ? stack[depth - 1] : "(none)", p);
                return false;
            }
            if (--depth == svg_depth)
                svg_depth = -1;
            p = q + 1;
            continue;
        }
        bool self = false;
        for (;;) {
            while (*q == ' ' || *q == '\n')
                q++;
            if (*q == '>')
                break;
            if (q[0] == '/' && q[1] == '>') {
                self = true;
                q++;
                break;
            }
            const char *a = q;
            while ((*q >= 'a' && *q <= 'z') || *q == '-' || *q == ':' || (*q >= 'A' && *q <= 'Z') ||
                   (q > a && *q >= '0' && *q <= '9'))
                q++;
            if (q == a) {
                snprintf(why, wl, "bad attribute in <%s> at: %.40s", name, q);
                return false;
            }
            if (*q == '=') {
                if (q[1] != '"') {
                    snprintf(why, wl, "unquoted attribute value in <%s> at: %.40s", name, q);
                    return false;
                }
                for (q += 2; *q && *q != '"'; q++)
                    if (*q == '<') {
                        snprintf(why, wl, "'<' in an attribute of <%s>", name);
                        return false;
                    }
                if (!*q) {
                    snprintf(why, wl, "unterminated attribute in <%s>", name);
                    return false;
                }
                q++;
            }
        }
        p = q + 1;
        bool is_void = false;
        for (size_t i = 0; voids[i]; i++)
            is_void |= !strcmp(voids[i], name);
        if (self && svg_depth < 0) {
            snprintf(why, wl, "self-closing <%s/> outside svg", name);
            return false;
        }
        if (is_void || self)
            continue;
        if (depth == 256) {
            snprintf(why, wl, "nesting too deep");
            return false;
        }
        snprintf(stack[depth++], sizeof stack[0], "%s", name);
        if (!strcmp(name, "svg") && svg_depth < 0)
            svg_depth = depth - 1;
        if (!strcmp(name, "style")) {   /* raw text up to </style> */
            const char *e = strstr(p, "</style>");
            if (!e) {
                snprintf(why, wl, "unclosed <style>");
                return false;
            }
            p = e;
        }
    }
    if (depth) {
        snprintf(why, wl, "<%s> never closed", stack[depth - 1]);
        return false;
    }
    return true;
}

/* ---- running other programs ---- */

/* Runs argv with stdout to out_path (NULL: /dev/null), stderr to /dev/null,
 * killing it after timeout_s; returns its exit status, 128+sig if killed,
 * 127 if it could not be started. */
static int run_tool(char *const argv[], const char *out_path, int timeout_s)
{
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        int fo = open(out_path ? out_path : "/dev/null", O_WRONLY | O_CREAT | O_TRUNC, 0600);
        int fe = open("/dev/null", O_WRONLY);
        dup2(fo, 1);
        dup2(fe, 2);
        setpgid(0, 0);   /* chromium forks helpers: kill the whole group on timeout */
        execv(argv[0], argv);
        _exit(127);
    }
    int status = 0;
    for (int waited = 0;; waited += 50) {
        pid_t w = waitpid(pid, &status, WNOHANG);
        if (w == pid)
            break;
        if (waited >= timeout_s * 1000) {
            kill(-pid, SIGKILL);
            waitpid(pid, &status, 0);
            break;
        }
        struct timespec ts = {0, 50000000};
        nanosleep(&ts, NULL);
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static const char *report_path(const char *name)
{
    static char path[700];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return path;
}

/* ---- tests ---- */

START_TEST(every_metric_and_section_escaped)
{
    ck_assert_int_eq(OBSCTL(dir, "report", "bench-1", "--store", store_dir), 0);
    const char *h = cli_out;
    ck_assert_msg(!strncmp(h, "<!DOCTYPE html>", 15), "%.200s", h);
    /* nothing from the store gets through as markup */
    ck_assert_ptr_null(strcasestr(h, "<script"));
    ck_assert_ptr_null(strstr(h, "<img"));
    ck_assert_ptr_null(strstr(h, "<b>bold"));
    ck_assert_ptr_null(strstr(h, "<i>ns"));
    ck_assert_ptr_null(strstr(h, "<x-sec>"));
    ck_assert_ptr_null(strstr(h, "<u>a note"));
    ck_assert_ptr_nonnull(strstr(h, "&lt;b&gt;bold&lt;/b&gt; &amp; &quot;q&quot;"));
    ck_assert_ptr_nonnull(strstr(h, "&lt;script&gt;alert(&quot;s&quot;)&lt;/script&gt;"));
    ck_assert_ptr_nonnull(strstr(h, "&quot;&gt;&lt;img src=x onerror=alert(1)&gt;"));
    ck_assert_ptr_nonnull(strstr(h, "&lt;i&gt;ns&lt;/i&gt;"));
    ck_assert_ptr_nonnull(strstr(h, "&lt;x-sec&gt;"));
    ck_assert_ptr_nonnull(strstr(h, "&lt;/pre&gt;&lt;script&gt;alert(2)"));
    ck_assert_ptr_nonnull(strstr(h, "&lt;u&gt;a note&lt;/u&gt;"));
    /* malformed UTF-8 becomes U+FFFD; the page is valid UTF-8 */
    ck_assert_ptr_nonnull(strstr(h, "bad\xEF\xBF\xBD\xEF\xBF\xBD utf8"));
    ck_assert(cli_valid_utf8(h, cli_out_len));
    /* self-contained: no script, no external resource */
    ck_assert_ptr_null(strstr(h, "src=\""));
    ck_assert_ptr_null(strstr(h, "href=\"http"));
    ck_assert_ptr_null(strstr(h, "url("));
    ck_assert_ptr_null(strstr(h, "@import"));

    /* every series in the table; each one with values gets a histogram and a time chart */
    ck_assert_ptr_nonnull(strstr(h, ">ttft_ns<"));
    ck_assert_ptr_nonnull(strstr(h, ">span.\xC2\xB5s<"));
    ck_assert_ptr_nonnull(strstr(h, ">empty_series<"));
    for (int i = 1; i <= FIXTURE_N_SERIES_WITH_VALUES; i++) {
        char aria[96];
        snprintf(aria, sizeof aria, "aria-label=\"histogram of series %d\"", i);
        ck_assert_msg(strstr(h, aria), "no histogram for series %d", i);
        snprintf(aria, sizeof aria, "aria-label=\"p50 and p99 of series %d over time\"", i);
        ck_assert_msg(strstr(h, aria), "no time chart for series %d", i);
    }
    ck_assert_ptr_null(strstr(h, "histogram of series 5"));
    ck_assert_ptr_nonnull(strstr(h, "1 series has no values"));
    /* ttft_ns has 4 buckets, each a bar with its count as tooltip: 6, 18, 12, 6 at the final (k = 6) */
    ck_assert_ptr_nonnull(strstr(h, "1 \xC2\xB5s \xE2\x80\x93 2 \xC2\xB5s: 6</title>"));
    ck_assert_ptr_nonnull(strstr(h, "2 \xC2\xB5s \xE2\x80\x93 4 \xC2\xB5s: 18</title>"));
    /* p50 of ttft_ns at the final: 1000 + 100*50 + 6 = 6006 ns */
    ck_assert_ptr_nonnull(strstr(h, "title=\"6006\">6.006 \xC2\xB5s<"));
    ck_assert_ptr_nonnull(strstr(h, ">exact<"));
    ck_assert_ptr_nonnull(strstr(h, ">approx.<"));

    /* counters, the changing one charted over time */
    ck_assert_ptr_nonnull(strstr(h, ">items<"));
    ck_assert_ptr_nonnull(strstr(h, ">pushed_total<"));
    ck_assert_ptr_nonnull(strstr(h, ">-5<"));
    ck_assert_ptr_nonnull(strstr(h, "aria-label=\"counter 3 over time\""));   /* items */
    ck_assert_ptr_nonnull(strstr(h, "aria-label=\"counter 5 over time\""));   /* qps */
    ck_assert_ptr_null(strstr(h, "aria-label=\"counter 4 over time\""));      /* pushed_total never changed */

    /* the state notes and the drops, up front */
    char *banner = strstr(h, "Incomplete drain:");
    ck_assert_ptr_nonnull(banner);
    ck_assert_ptr_nonnull(strstr(banner, "3 tokenizations pending"));
    ck_assert_ptr_nonnull(strstr(h, "<strong>7 records dropped</strong>"));
    ck_assert_ptr_nonnull(strstr(h, "<strong>3 records rejected</strong>"));
    ck_assert_ptr_nonnull(strstr(h, "<div class=\"tile alert\"><div class=\"v\">7</div>"));
    ck_assert(strstr(h, "Incomplete drain:") < strstr(h, "id=\"series\""));
    ck_assert_ptr_nonnull(strstr(cli_err, "incomplete drain: 3 tokenizations pending"));

    /* module sections */
    ck_assert_ptr_nonnull(strstr(h, "id=\"mod-requests\""));
    ck_assert_ptr_nonnull(strstr(h, "token metrics <span class=\"badge muted\">off</span>"));
    ck_assert_ptr_nonnull(strstr(h, "id=\"mod-budget\""));
    ck_assert_ptr_nonnull(strstr(h, ">participant0<"));
    ck_assert_ptr_nonnull(strstr(h, "aria-label=\"wall time of each budget context split into backend, overhead and residual\""));
    ck_assert_ptr_nonnull(strstr(h, "participant0 backend: 100 ms</title>"));
    ck_assert_ptr_nonnull(strstr(h, "participant0 residual: 250 ms</title>"));
    ck_assert_ptr_nonnull(strstr(h, "wall: 500 ms</title>"));
    ck_assert_ptr_nonnull(strstr(h, ">matmul<"));
    ck_assert_ptr_nonnull(strstr(h, "id=\"mod-sched\""));
    ck_assert_ptr_nonnull(strstr(h, ">1166<"));
    ck_assert_ptr_nonnull(strstr(h, ">1100.5<"));
    ck_assert_ptr_nonnull(strstr(h, "worker 1: 1166</title>"));

    char why[256];
    ck_assert_msg(html_well_formed(h, why, sizeof why), "%s", why);
}
END_TEST

START_TEST(banners_for_every_state)
{
    ck_assert_int_eq(OBSCTL(dir, "report", "bench-2", "--store", store_dir), 0);
    ck_assert_ptr_nonnull(strstr(cli_out, "<strong>Interrupted:</strong>"));
    ck_assert_ptr_null(strstr(cli_out, "Incomplete drain"));
    ck_assert_ptr_null(strstr(cli_out, "records dropped"));
    char why[256];
    ck_assert_msg(html_well_formed(cli_out, why, sizeof why), "%s", why);

    /* default: the most recently started run, still live */
    ck_assert_int_eq(OBSCTL(dir, "report", "--store", store_dir), 0);
    ck_assert_ptr_nonnull(strstr(cli_out, "obsd run bench-3</h1>"));
    ck_assert_ptr_nonnull(strstr(cli_out, "<strong>No final snapshot:</strong> the run is still live"));
    ck_assert_ptr_nonnull(strstr(cli_out, "latest; no final snapshot yet"));
    ck_assert_ptr_nonnull(strstr(cli_err, "no final snapshot"));
    ck_assert_msg(html_well_formed(cli_out, why, sizeof why), "%s", why);

    /* same store, same bytes */
    char *first = strdup(cli_out);
    ck_assert_int_eq(OBSCTL(dir, "report", "last", "--store", store_dir), 0);
    ck_assert_str_eq(first, cli_out);
    free(first);

    /* --max-charts 0: the tables still list everything */
    ck_assert_int_eq(OBSCTL(dir, "report", "bench-1", "--max-charts", "0", "--store", store_dir), 0);
    ck_assert_ptr_null(strstr(cli_out, "histogram of series"));
    ck_assert_ptr_nonnull(strstr(cli_out, ">ttft_ns<"));
    ck_assert_ptr_nonnull(strstr(cli_out, "Charts for the first 0 of 4 series"));
}
END_TEST

static size_t entries(const char *d)
{
    DIR *dh = opendir(d);
    size_t n = 0;
    for (struct dirent *e; dh && (e = readdir(dh));)
        n += e->d_name[0] != '.';
    if (dh)
        closedir(dh);
    return n;
}

START_TEST(output_is_atomic_and_a_copy_reads_alike)
{
    char outdir[700], path[800];
    snprintf(outdir, sizeof outdir, "%s/out", dir);
    ck_assert_int_eq(mkdir(outdir, 0700), 0);
    snprintf(path, sizeof path, "%s/run.html", outdir);
    ck_assert_int_eq(OBSCTL(dir, "report", "bench-1", "--store", store_dir), 0);
    char *stdout_version = strdup(cli_out);
    ck_assert_int_eq(OBSCTL(dir, "report", "bench-1", "--store", store_dir, "--output", path), 0);
    ck_assert_uint_eq(cli_out_len, 0);
    char *file = cli_read_file(path, NULL);
    ck_assert_ptr_nonnull(file);
    ck_assert_str_eq(file, stdout_version);
    ck_assert_uint_eq(entries(outdir), 1);   /* no temporary file left behind */
    free(file);

    /* a failure leaves the old file as it was, and no temporary file */
    ck_assert_int_eq(OBSCTL(dir, "report", "nope", "--store", store_dir, "--output", path), 1);
    ck_assert_ptr_nonnull(strstr(cli_err, "no run 'nope'"));
    file = cli_read_file(path, NULL);
    ck_assert_str_eq(file, stdout_version);
    free(file);
    ck_assert_uint_eq(entries(outdir), 1);
    char missing[900];
    snprintf(missing, sizeof missing, "%s/no/such/dir/r.html", dir);
    ck_assert_int_eq(OBSCTL(dir, "report", "bench-1", "--store", store_dir, "--output", missing), 1);
    ck_assert_msg(strstr(cli_err, "cannot create a file next to"), "%s", cli_err);

    /* a copy of the store, the original gone */
    char copy[700], cmd[2400];
    snprintf(copy, sizeof copy, "%s/copy", dir);
    snprintf(cmd, sizeof cmd, "cp -r '%s' '%s' && rm -rf '%s'", store_dir, copy, store_dir);
    ck_assert_int_eq(system(cmd), 0);
    ck_assert_int_eq(OBSCTL(dir, "report", "bench-1", "--store", copy), 0);
    ck_assert_str_eq(cli_out, stdout_version);
    free(stdout_version);
}
END_TEST

START_TEST(bad_arguments_exit_2)
{
    ck_assert_int_eq(OBSCTL(dir, "report", "--help"), 0);
    ck_assert_ptr_nonnull(strstr(cli_out, "usage: obsctl report [RUN]"));
    ck_assert_ptr_nonnull(strstr(cli_out, "--output FILE"));
    ck_assert_int_eq(OBSCTL(dir, "--help"), 0);
    ck_assert_ptr_nonnull(strstr(cli_out, "  report "));
    ck_assert_int_eq(OBSCTL(dir, "report", "--bogus", "--store", store_dir), 2);
    ck_assert_ptr_nonnull(strstr(cli_err, "unknown option '--bogus'"));
    ck_assert_int_eq(OBSCTL(dir, "report", "a", "b", "--store", store_dir), 2);
    ck_assert_ptr_nonnull(strstr(cli_err, "unexpected argument 'b'"));
    ck_assert_int_eq(OBSCTL(dir, "report", "--max-charts", "x", "--store", store_dir), 2);
    ck_assert_ptr_nonnull(strstr(cli_err, "--max-charts needs an integer"));
    ck_assert_int_eq(OBSCTL(dir, "report", "--output", "", "--store", store_dir), 2);
    ck_assert_int_eq(OBSCTL(dir, "report", "--store"), 2);
    ck_assert_ptr_nonnull(strstr(cli_err, "needs a value"));
    char missing[700];
    snprintf(missing, sizeof missing, "%s/none", dir);
    ck_assert_int_eq(OBSCTL(dir, "report", "--store", missing), 1);
    ck_assert_ptr_nonnull(strstr(cli_err, "no store at"));
}
END_TEST

/* html5lib's parser in strict mode raises on every HTML5 parse error. */
START_TEST(html5_parser_finds_no_error)
{
    char *check[] = {"/usr/bin/python3", "-c", "import html5lib", NULL};
    if (access(check[0], X_OK) || run_tool(check, NULL, 30) != 0) {
        fprintf(stderr, "test_cli_report: python3-html5lib is not installed: strict HTML5 parse skipped\n");
        return;
    }
    const char *runs[] = {"bench-1", "bench-2", "bench-3"};
    for (size_t i = 0; i < 3; i++) {
        const char *path = report_path("strict.html");
        ck_assert_int_eq(OBSCTL(dir, "report", runs[i], "--store", store_dir, "--output", path), 0);
        char out[800];
        snprintf(out, sizeof out, "%s/html5lib.out", dir);
        char *argv[] = {"/usr/bin/python3", "-c",
                        "import sys, html5lib\n"
                        "p = html5lib.HTMLParser(strict=True)\n"
                        "try:\n"
                        "    p.parse(open(sys.argv[1], 'rb').read())\n"
                        "except Exception as e:\n"
                        "    print(repr(e), p.errors[:3]); sys.exit(1)\n",
                        (char *)path, NULL};
        int rc = run_tool(argv, out, 60);
        char *msg = cli_read_file(out, NULL);
        ck_assert_msg(rc == 0, "%s: html5lib: %s", runs[i], msg ? msg : "");
        free(msg);
    }
}
END_TEST

static const char chromium[] = "/usr/bin/chromium";

static int run_chromium(const char *what, const char *arg2, const char *url, const char *out_path)
{
    char profile[800];
    snprintf(profile, sizeof profile, "%s/chromium-profile-XXXXXX", dir);
    ck_assert_ptr_nonnull(mkdtemp(profile));
    char udd[900];
    snprintf(udd, sizeof udd, "--user-data-dir=%s", profile);
    char *argv[] = {(char *)chromium, "--headless", "--no-sandbox", "--disable-gpu",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--no-first-run", "--hide-scrollbars", udd, (char *)what, (char *)arg2, (char *)url, NULL};
    if (!arg2)
        argv[11] = (char *)url, argv[12] = NULL;
    int rc = run_tool(argv, out_path, 120);
    rm_rf(profile);
    return rc;
}

/* A browser parses and lays out the page: every chart and the escaped
 * hostile names end up in its DOM as text, no script element appears. */
START_TEST(chromium_renders_the_report)
{
    if (access(chromium, X_OK)) {
        fprintf(stderr, "test_cli_report: %s is not installed: render check skipped\n", chromium);
        return;
    }
    const char *page = report_path("render.html");
    ck_assert_int_eq(OBSCTL(dir, "report", "bench-1", "--store", store_dir, "--output", page), 0);
    char *src = cli_read_file(page, NULL);
    size_t n_svg = count(src, "<svg ");
    ck_assert_uint_gt(n_svg, 8);
    free(src);
    char url[800], dom_path[800], png[800], size[64];
    snprintf(url, sizeof url, "file://%s", page);
    snprintf(dom_path, sizeof dom_path, "%s/dom.html", dir);
    ck_assert_int_eq(run_chromium("--dump-dom", NULL, url, dom_path), 0);
    char *dom = cli_read_file(dom_path, NULL);
    ck_assert_ptr_nonnull(dom);
    ck_assert_msg(strstr(dom, "obsd run bench-1</h1>"), "%.300s", dom);
    ck_assert_uint_eq(count(dom, "<svg "), n_svg);
    ck_assert_ptr_null(strcasestr(dom, "<script"));
    ck_assert_ptr_null(strstr(dom, "<img"));
    ck_assert_ptr_nonnull(strstr(dom, "&lt;script&gt;alert(\"s\")&lt;/script&gt;"));
    ck_assert_ptr_nonnull(strstr(dom, "Incomplete drain:"));
    free(dom);

    snprintf(png, sizeof png, "--screenshot=%s/report.png", dir);
    snprintf(size, sizeof size, "--window-size=1280,2400");
    ck_assert_int_eq(run_chromium(png, size, url, NULL), 0);
    size_t len = 0;
    char *img = cli_read_file(png + strlen("--screenshot="), &len);
    ck_assert_ptr_nonnull(img);
    ck_assert(len > 8 && !memcmp(img, "\x89PNG\r\n\x1a\n", 8));
    ck_assert_msg(len > 20000, "screenshot of %zu bytes: a blank page?", len);
    free(img);
}
END_TEST

/* ---- a real run: obsd, span_storm and budgeted_kernels ---- */

static struct e2e t;

static void e2e_fixture_setup(void)
{
    e2e_setup(&t, "rep");
}

static void e2e_fixture_teardown(void)
{
    e2e_teardown(&t);
}

START_TEST(report_of_real_runs)
{
    e2e_start_obsd(&t, NULL);
    char *out = NULL;
    char *storm[] = {"span_storm", "--name", t.name, "--records", "200000", "--threads", "2", NULL};
    ck_assert_int_eq(e2e_run(&t, storm, NULL, 60, &out), 0);
    free(out);
    json_t *fin = e2e_final_snapshot(&t, t.store, 30);
    ck_assert_msg(fin != NULL, "%s", e2e_last_show_output());
    json_decref(fin);
    char *budget[] = {"budgeted_kernels", "--name", t.name, "--contexts", "2", "--size", "32", NULL};
    ck_assert_int_eq(e2e_run(&t, budget, NULL, 60, &out), 0);
    free(out);
    /* wait for the second run's final snapshot */
    json_t *runs = NULL;
    for (int i = 0; i < 300; i++) {
        char *argv[] = {"obsctl", "runs", "--store", t.store, "--json", NULL};
        ck_assert_int_eq(e2e_run(&t, argv, NULL, 10, &out), 0);
        json_decref(runs);
        runs = json_loads(out, 0, NULL);
        free(out);
        if (json_array_size(runs) == 2 && json_is_true(json_object_get(json_array_get(runs, 1), "final")))
            break;
        e2e_sleep_ms(100);
    }
    ck_assert_int_eq(json_array_size(runs), 2);
    ck_assert(json_is_true(json_object_get(json_array_get(runs, 1), "final")));
    const char *storm_run = json_string_value(json_object_get(json_array_get(runs, 0), "run"));
    ck_assert_int_eq(e2e_stop_obsd(&t, SIGTERM), 0);

    /* read from a copy, no daemon */
    char copy[400], cmd[1000];
    snprintf(copy, sizeof copy, "%s/copy", t.dir);
    snprintf(cmd, sizeof cmd, "cp -r '%s' '%s'", t.store, copy);
    ck_assert_int_eq(system(cmd), 0);
    ck_assert_int_eq(OBSCTL(t.dir, "report", storm_run, "--store", copy), 0);
    ck_assert_ptr_nonnull(strstr(cli_out, ">storm.span<"));
    ck_assert_ptr_nonnull(strstr(cli_out, "aria-label=\"histogram of series 1\""));
    ck_assert_ptr_nonnull(strstr(cli_out, "<span class=\"badge ok\">complete</span>"));
    ck_assert_ptr_nonnull(strstr(cli_out, ">obsd_dropped_records<"));
    char why[256];
    ck_assert_msg(html_well_formed(cli_out, why, sizeof why), "%s", why);

    ck_assert_int_eq(OBSCTL(t.dir, "report", "--store", copy), 0);
    ck_assert_ptr_nonnull(strstr(cli_out, "id=\"mod-budget\""));
    ck_assert_ptr_nonnull(strstr(cli_out, ">participant0<"));
    ck_assert_ptr_nonnull(strstr(cli_out, ">participant1<"));
    ck_assert_ptr_nonnull(strstr(cli_out, "participant1 residual: "));
    ck_assert_ptr_nonnull(strstr(cli_out, ">matmul<"));
    ck_assert_msg(html_well_formed(cli_out, why, sizeof why), "%s", why);
    json_decref(runs);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("cli_report");
    TCase *tc = tcase_create("report");
    tcase_add_unchecked_fixture(tc, temp_root_begin, temp_root_end);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 280);
    tcase_add_test(tc, every_metric_and_section_escaped);
    tcase_add_test(tc, banners_for_every_state);
    tcase_add_test(tc, output_is_atomic_and_a_copy_reads_alike);
    tcase_add_test(tc, bad_arguments_exit_2);
    tcase_add_test(tc, html5_parser_finds_no_error);
    tcase_add_test(tc, chromium_renders_the_report);
    suite_add_tcase(s, tc);
    TCase *real = tcase_create("real_runs");
    tcase_add_checked_fixture(real, e2e_fixture_setup, e2e_fixture_teardown);
    tcase_set_timeout(real, 280);
    tcase_add_test(real, report_of_real_runs);
    suite_add_tcase(s, real);
    return e2e_run_suite(s);
}
