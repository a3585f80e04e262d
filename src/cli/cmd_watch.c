/*
 * cmd_watch.c: 'obsctl watch', a live view of a running obsd.
 *
 * It subscribes to the control socket's snapshot stream ("watch") and, for
 * each snapshot, asks for the daemon's status too, then shows: the run and
 * its state, records/s, drops, pending token tasks, and the busiest series
 * with their rate, p50, p99 and max. On a terminal the view is a full-screen
 * ncurses page (q quits); with --plain, --once or when stdout is not a
 * terminal it prints one block of plain text per refresh.
 *
 * The daemon sends a summary line per snapshot (engine/control.h), latest
 * wins: a view slower than the snapshots skips to the newest, here too (a
 * line with a newer one already buffered is not shown, unless it is a run's
 * final snapshot).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <curses.h>
#include <jansson.h>

#include "cli/cli_control.h"
#include "cli/cli_store.h"
#include "cli/commands.h"

#define MAX_VIEW_LINES 200

struct series_row {
    const char *name;      /* points into the current snapshot JSON */
    uint64_t count;
    double rate, p50, p99, max;
};

/* Counts of the previous snapshot, for per-series rates. */
struct prev_count {
    char *name;
    uint64_t count;
};

struct watch {
    struct control_target target;
    bool curses, once, until_end;
    int top;
    /* previous snapshot */
    char prev_run[64];
    uint64_t prev_ts_ns;
    struct prev_count *prev;
    size_t n_prev;
    /* previous status */
    uint64_t prev_records;
    double prev_status_time;
    double records_rate;
    bool have_status_rate;
    /* the view */
    char *lines[MAX_VIEW_LINES];
    int n_lines;
};

static void watch_usage(FILE *out)
{
    fprintf(out,
        "usage: obsctl watch [--name NAME] [--store DIR] [--socket PATH] [--config FILE]\n"
        "                    [--plain] [--once] [--until-end] [--top N]\n"
        "\n"
        "Live view of the obsd serving segment NAME (socket as for obsctl status): run,\n"
        "state, records/s, drops, pending token tasks, and the top N series (default 10)\n"
        "by count with rate, p50, p99 and max. Full-screen on a terminal (q quits).\n"
        "  --plain      print a block of text per snapshot instead of a full screen\n"
        "  --once       print one view and exit (implies --plain)\n"
        "  --until-end  exit after the final snapshot of the current run\n"
        "Exit status: 0, 1 when no daemon answers or it goes away mid-run, 2 for bad\n"
        "arguments.\n");
}

static void view_clear(struct watch *w)
{
    for (int i = 0; i < w->n_lines; i++)
        free(w->lines[i]);
    w->n_lines = 0;
}

static void view_line(struct watch *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void view_line(struct watch *w, const char *fmt, ...)
{
    if (w->n_lines >= MAX_VIEW_LINES)
        return;
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    if (vasprintf(&s, fmt, ap) >= 0)
        w->lines[w->n_lines++] = s;
    va_end(ap);
}

static void view_show(struct watch *w)
{
    if (w->curses) {
        erase();
        for (int i = 0; i < w->n_lines && i < LINES - 1; i++)
            mvaddnstr(i, 0, w->lines[i], COLS);
        mvaddnstr(LINES - 1, 0, "q: quit", COLS);
        refresh();
    } else {
        for (int i = 0; i < w->n_lines; i++)
            printf("%s\n", w->lines[i]);
        printf("\n");
        fflush(stdout);
    }
}

/* 1234 -> "1234", 1234567 -> "1.23M". */
static const char *human(double v, char *buf, size_t len)
{
    static const char *const suffix[] = {"", "k", "M", "G", "T", "P"};
    if (!isfinite(v)) {
        snprintf(buf, len, "-");
        return buf;
    }
    int i = 0;
    double a = fabs(v);
    while (a >= 10000 && i < 5) {
        a /= 1000;
        v /= 1000;
        i++;
    }
    if (i == 0)
        snprintf(buf, len, "%.*f", v == floor(v) || a >= 100 ? 0 : 2, v);
    else
        snprintf(buf, len, "%.2f%s", v, suffix[i]);
    return buf;
}

static double pct(json_t *series, const char *key)
{
    json_t *v = json_object_get(json_object_get(series, "percentiles"), key);
    return json_is_number(v) ? json_number_value(v) : NAN;
}

static int by_count_desc(const void *a, const void *b)
{
    const struct series_row *x = a, *y = b;
    if (x->count != y->count)
        return x->count > y->count ? -1 : 1;
    return strcmp(x->name, y->name);
}

static int prev_by_name(const void *a, const void *b)
{
    return strcmp(((const struct prev_count *)a)->name, ((const struct prev_count *)b)->name);
}

/* w->prev is sorted by name (thousands of series: no linear search each). */
static uint64_t prev_count_of(const struct watch *w, const char *name, bool *found)
{
    struct prev_count key = {.name = (char *)name};
    const struct prev_count *p =
        w->n_prev ? bsearch(&key, w->prev, w->n_prev, sizeof *w->prev, prev_by_name) : NULL;
    *found = p != NULL;
    return p ? p->count : 0;
}

static void prev_free(struct watch *w)
{
    for (size_t i = 0; i < w->n_prev; i++)
        free(w->prev[i].name);
    free(w->prev);
    w->prev = NULL;
    w->n_prev = 0;
}

/* Asks for the status (a separate short connection) and renders its header
 * lines. Returns the status object or NULL. */
static json_t *fetch_status(struct watch *w)
{
    char *line = control_request_line(&w->target, "watch", "status", 2000);
    if (!line)
        return NULL;
    json_t *st = json_loads(line, 0, NULL);
    free(line);
    if (!json_is_object(st)) {
        json_decref(st);
        return NULL;
    }
    double t = cli_now_s();
    uint64_t records = (uint64_t)json_integer_value(json_object_get(st, "records"));
    if (w->prev_status_time > 0 && t > w->prev_status_time && records >= w->prev_records) {
        w->records_rate = (double)(records - w->prev_records) / (t - w->prev_status_time);
        w->have_status_rate = true;
    }
    w->prev_records = records;
    w->prev_status_time = t;
    return st;
}

static void render_status_header(struct watch *w, json_t *st, const char *run, const char *state,
                                 uint64_t seq, bool has_snapshot, uint64_t pending,
                                 int64_t dropped_counter)
{
    char b1[32], b2[32], b3[32];
    if (st) {
        const char *name = json_string_value(json_object_get(st, "name"));
        if (!has_snapshot) {
            run = json_string_value(json_object_get(st, "run"));
            state = json_string_value(json_object_get(st, "state"));
            pending = (uint64_t)json_integer_value(json_object_get(st, "n_pending_tasks"));
        }
        view_line(w, "obsd '%s' pid %lld   run %s   state %s%s", name ? name : w->target.name,
                  (long long)json_integer_value(json_object_get(st, "pid")),
                  run && *run ? run : "(none yet)", state ? state : "?",
                  has_snapshot ? "" : "   (no snapshot yet)");
        json_t *producers = json_object_get(st, "producers");
        view_line(w, "records/s %s   records %s   dropped %s   rejected %lld   pending %" PRIu64
                     "   producers %zu",
                  w->have_status_rate ? human(w->records_rate, b1, sizeof b1) : "-",
                  human((double)json_integer_value(json_object_get(st, "records")), b2, sizeof b2),
                  human((double)json_integer_value(json_object_get(st, "dropped")), b3, sizeof b3),
                  (long long)json_integer_value(json_object_get(st, "rejected")), pending,
                  json_is_array(producers) ? json_array_size(producers) : 0);
    } else {
        view_line(w, "obsd '%s'   run %s   state %s   (status unavailable)", w->target.name,
                  run && *run ? run : "(none yet)", state ? state : "?");
        view_line(w, "dropped %lld   pending %" PRIu64, (long long)dropped_counter, pending);
    }
    if (has_snapshot)
        view_line(w, "snapshot %" PRIu64, seq);
}

static bool is_final(json_t *snap)
{
    const char *state = json_string_value(json_object_get(snap, "state"));
    return state && (!strcmp(state, "complete") || !strcmp(state, "interrupted"));
}

/* Whether another whole line is already buffered. */
static bool line_buffered(const struct control_reader *r)
{
    return r->len > r->start && memchr(r->buf + r->start, '\n', r->len - r->start);
}

/* Renders one snapshot. Returns 1 if it is the final snapshot of its run. */
static int render_snapshot(struct watch *w, json_t *snap)
{
    const char *run = json_string_value(json_object_get(snap, "run"));
    const char *state = json_string_value(json_object_get(snap, "state"));
    uint64_t seq = (uint64_t)json_integer_value(json_object_get(snap, "seq"));
    uint64_t ts = (uint64_t)json_integer_value(json_object_get(snap, "timestamp_ns"));
    uint64_t pending = (uint64_t)json_integer_value(json_object_get(snap, "n_pending_tasks"));
    json_t *metrics = json_object_get(snap, "metrics");
    size_t n_metrics = json_is_array(metrics) ? json_array_size(metrics) : 0;
    if (!run)
        run = "";

    bool same_run = !strcmp(run, w->prev_run);
    double dt = same_run && w->prev_ts_ns && ts > w->prev_ts_ns ? (double)(ts - w->prev_ts_ns) / 1e9
                                                                 : 0;
    struct series_row *rows = calloc(n_metrics + 1, sizeof *rows);
    struct prev_count *next = calloc(n_metrics + 1, sizeof *next);
    size_t n_rows = 0;
    int64_t dropped = 0;
    for (size_t i = 0; rows && next && i < n_metrics; i++) {
        json_t *m = json_array_get(metrics, i);
        const char *type = json_string_value(json_object_get(m, "type"));
        const char *name = json_string_value(json_object_get(m, "name"));
        if (!type || !name)
            continue;
        if (!strcmp(type, "counter")) {
            if (!strcmp(name, "obsd_dropped_records"))
                dropped = json_integer_value(json_object_get(m, "value"));
            continue;
        }
        struct series_row *r = &rows[n_rows];
        r->name = name;
        r->count = (uint64_t)json_integer_value(json_object_get(m, "count"));
        r->p50 = pct(m, "50.0");
        r->p99 = pct(m, "99.0");
        json_t *max = json_object_get(m, "max");
        r->max = json_is_number(max) ? json_number_value(max) : NAN;
        bool found;
        uint64_t before = prev_count_of(w, name, &found);
        r->rate = dt > 0 && found && r->count >= before ? (double)(r->count - before) / dt : NAN;
        next[n_rows].name = strdup(name);
        next[n_rows].count = r->count;
        if (!next[n_rows].name)
            break;
        n_rows++;
    }
    if (next)
        qsort(next, n_rows, sizeof *next, prev_by_name);
    qsort(rows, n_rows, sizeof *rows, by_count_desc);

    view_clear(w);
    json_t *st = fetch_status(w);
    render_status_header(w, st, run, state, seq, true, pending, dropped);
    json_decref(st);
    view_line(w, "%s", "");
    view_line(w, "%-40s %12s %10s %10s %10s %10s", "SERIES", "COUNT", "RATE/s", "P50", "P99", "MAX");
    for (size_t i = 0; i < n_rows && (int)i < w->top; i++) {
        char c[32], r[32], p50[32], p99[32], mx[32];
        view_line(w, "%-40.40s %12s %10s %10s %10s %10s", rows[i].name,
                  human((double)rows[i].count, c, sizeof c), human(rows[i].rate, r, sizeof r),
                  human(rows[i].p50, p50, sizeof p50), human(rows[i].p99, p99, sizeof p99),
                  human(rows[i].max, mx, sizeof mx));
    }
    if (n_rows > (size_t)w->top)
        view_line(w, "... %zu more series", n_rows - (size_t)w->top);
    if (!n_rows)
        view_line(w, "(no series yet)");
    bool final = is_final(snap);
    if (final && pending)
        view_line(w, "warning: run %s with %" PRIu64 " tasks pending: the token drain is incomplete",
                  state, pending);
    view_show(w);

    prev_free(w);
    if (next) {
        w->prev = next;
        w->n_prev = n_rows;
    }
    free(rows);
    snprintf(w->prev_run, sizeof w->prev_run, "%s", run);
    w->prev_ts_ns = ts;
    return final;
}

static void render_status_only(struct watch *w)
{
    view_clear(w);
    json_t *st = fetch_status(w);
    render_status_header(w, st, NULL, NULL, 0, false, 0, 0);
    json_decref(st);
    view_show(w);
}

int cmd_watch(int argc, char **argv)
{
    static const struct option options[] = {
        {"name", required_argument, NULL, 'n'},
        {"store", required_argument, NULL, 's'},
        {"socket", required_argument, NULL, 'S'},
        {"config", required_argument, NULL, 'c'},
        {"plain", no_argument, NULL, 'p'},
        {"once", no_argument, NULL, '1'},
        {"until-end", no_argument, NULL, 'e'},
        {"top", required_argument, NULL, 't'},
        {"help", no_argument, NULL, 'h'},
        {0, 0, 0, 0},
    };
    const char *name = NULL, *store = NULL, *socket = NULL, *config = NULL;
    bool plain = false;
    struct watch w;
    int opt;

    memset(&w, 0, sizeof w);
    w.top = 10;
    optind = 1;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, ":n:s:S:c:p1et:h", options, NULL)) != -1) {
        switch (opt) {
        case 'n': name = optarg; break;
        case 's': store = optarg; break;
        case 'S': socket = optarg; break;
        case 'c': config = optarg; break;
        case 'p': plain = true; break;
        case '1': w.once = true; break;
        case 'e': w.until_end = true; break;
        case 't': {
            char *end;
            long v = strtol(optarg, &end, 10);
            if (*end || end == optarg || v < 1 || v > 150) {
                fprintf(stderr, "obsctl watch: --top: '%s' is not a number in 1..150\n", optarg);
                return 2;
            }
            w.top = (int)v;
            break;
        }
        case 'h': watch_usage(stdout); return 0;
        default:
            return cli_bad_option("watch", opt, optopt, argv, optind);
        }
    }
    if (optind < argc) {
        return cli_usage_error("watch", "unexpected argument '%s'", argv[optind]);
    }
    int rc = control_resolve(&w.target, "watch", config, name, store, socket);
    if (rc)
        return rc;
    int fd = control_connect(&w.target, "watch", "watch", 0);
    if (fd < 0)
        return 1;

    w.curses = !plain && !w.once && isatty(STDOUT_FILENO);
    int saved_stderr = -1;
    if (w.curses) {
        /* Status failures show as "(status unavailable)" in the view; keep
         * their messages from scribbling over the screen. */
        int devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
        saved_stderr = fcntl(STDERR_FILENO, F_DUPFD_CLOEXEC, 3);
        if (devnull >= 0 && saved_stderr >= 0)
            dup2(devnull, STDERR_FILENO);
        if (devnull >= 0)
            close(devnull);
        initscr();
        cbreak();
        noecho();
        curs_set(0);
        nodelay(stdscr, TRUE);
        keypad(stdscr, TRUE);
    }

    struct control_reader r;
    control_reader_init(&r, fd, 256u << 20);
    bool seen_final = false, quit = false, shown = false;
    rc = 0;
    const char *why = NULL;
    while (!quit) {
        char *line;
        int got;
        while (!quit && (got = control_reader_next(&r, &line)) == 1) {
            json_t *snap = json_loads(line, 0, NULL);
            const char *error = json_string_value(json_object_get(snap, "error"));
            if (!json_is_object(snap) || error) {
                why = error ? "the daemon refused the watch" : "the daemon sent a bad line";
                rc = 1;
                quit = true;
            } else if (!w.once && !is_final(snap) && line_buffered(&r)) {
                /* a newer snapshot is already here: show that one */
            } else {
                seen_final = render_snapshot(&w, snap);
                shown = true;
                if (w.once || (w.until_end && seen_final))
                    quit = true;
            }
            json_decref(snap);
        }
        if (quit)
            break;
        if (got < 0) {
            why = "a snapshot line is too long";
            rc = 1;
            break;
        }
        struct pollfd pfd[2] = {{.fd = fd, .events = POLLIN}, {.fd = STDIN_FILENO, .events = POLLIN}};
        int n = poll(pfd, w.curses ? 2 : 1, 1000);
        if (n < 0 && errno != EINTR) {
            why = strerror(errno);
            rc = 1;
            break;
        }
        if (w.curses) {
            int ch;
            while ((ch = getch()) != ERR)
                if (ch == 'q' || ch == 'Q')
                    quit = true;
        }
        if (n == 0) {
            /* No snapshot within a second (no run yet, or a long interval):
             * show the status alone so records/s stays live. */
            if (w.once || !shown || w.curses)
                render_status_only(&w);
            if (w.once)
                break;
            continue;
        }
        if (pfd[0].revents & (POLLIN | POLLHUP | POLLERR)) {
            long got_bytes = control_reader_fill(&r);
            if (got_bytes == 0) {
                if (!seen_final) {
                    why = "obsd closed the connection (stopped?)";
                    rc = 1;
                }
                break;
            }
            if (got_bytes < 0) {
                why = strerror(errno);
                rc = 1;
                break;
            }
        }
    }
    if (w.curses) {
        endwin();
        if (saved_stderr >= 0) {
            dup2(saved_stderr, STDERR_FILENO);
            close(saved_stderr);
        }
    }
    if (why)
        fprintf(stderr, "obsctl watch: %s\n", why);
    control_reader_free(&r);
    close(fd);
    view_clear(&w);
    prev_free(&w);
    return rc;
}
