/*
 * obsd-replay: a load-worker producer that replays recorded requests.
 *
 *   obsd-replay --name NAME FILE [--pace]
 *
 * FILE holds one request per line (JSON):
 *
 *   {"prompt": "...", "output": "...", "first_chunk": "...",
 *    "issued_ns": 0, "first_ns": 1200000, "complete_ns": 9000000,
 *    "finish_reason": "stop", "error": null}
 *
 * Times are offsets from the run's start (the session-started event). Each
 * record carries start + offset, where start is the monotonic clock when the
 * replay begins, so every metric of a replay (differences of timestamps,
 * token counts) is the same on every run. Optional fields: "prompt_tokens"
 * (an int instead of "prompt"), "chunk_ns" (times of further chunks), and
 * lines {"event": "tracking_start" | "tracking_stop", "ts_ns": T} that place
 * the tracking window by hand (such a line starts with {"event"); without
 * them the whole replay is tracked.
 *
 * Lines must be sorted by issued_ns (event lines by ts_ns among them): the
 * replay streams the file and holds only requests in flight, so a file of any
 * size replays in bounded memory. --pace sleeps until each event's time;
 * by default everything is written as fast as the rings take it.
 *
 * Exit status: 0 when every record was written, 1 when some were dropped or
 * refused (the count is printed), 2 for bad arguments or a bad file.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "obsd/obsd.h"

enum ev_kind { EV_FIRST, EV_CHUNK, EV_ERROR, EV_COMPLETE };

struct request {
    uint64_t id;
    char *output, *first_chunk, *reason, *error;
    size_t output_len, first_len, error_len;
    int refs;                 /* events of this request still queued */
};

struct event {
    uint64_t ts;
    uint64_t seq;             /* file order, then the order within a request */
    enum ev_kind kind;
    struct request *req;
};

/* A binary min-heap of the events of requests in flight, by (ts, seq). */
struct heap {
    struct event *v;
    size_t n, cap;
};

static bool ev_less(const struct event *a, const struct event *b)
{
    return a->ts < b->ts || (a->ts == b->ts && a->seq < b->seq);
}

static void heap_push(struct heap *h, struct event e)
{
    if (h->n == h->cap) {
        h->cap = h->cap ? h->cap * 2 : 1024;
        h->v = realloc(h->v, h->cap * sizeof *h->v);
        if (!h->v) {
            fprintf(stderr, "obsd-replay: out of memory\n");
            exit(1);
        }
    }
    size_t i = h->n++;
    while (i > 0 && ev_less(&e, &h->v[(i - 1) / 2])) {
        h->v[i] = h->v[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    h->v[i] = e;
}

static struct event heap_pop(struct heap *h)
{
    struct event top = h->v[0], last = h->v[--h->n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= h->n)
            break;
        if (c + 1 < h->n && ev_less(&h->v[c + 1], &h->v[c]))
            c++;
        if (!ev_less(&h->v[c], &last))
            break;
        h->v[i] = h->v[c];
        i = c;
    }
    if (h->n)
        h->v[i] = last;
    return top;
}

struct replay {
    obsd_t *h;
    bool pace;
    uint64_t start;           /* monotonic time of offset 0 */
    uint64_t written, failed;
    uint64_t last_ts;         /* latest offset emitted */
    const char *path;
};

static void wait_until(struct replay *r, uint64_t offset)
{
    if (!r->pace)
        return;
    uint64_t t = r->start + offset;
    struct timespec ts = {.tv_sec = (time_t)(t / 1000000000u), .tv_nsec = (long)(t % 1000000000u)};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
        ;
}

static void account(struct replay *r, int rc, const char *what)
{
    if (rc == OBSD_OK) {
        r->written++;
        return;
    }
    if (r->failed++ == 0)
        fprintf(stderr, "obsd-replay: %s: %s (further failures are only counted)\n", what,
                rc == OBSD_DROPPED ? "ring full, record dropped" : obsd_last_error());
}

static void free_request(struct request *q)
{
    free(q->output);
    free(q->first_chunk);
    free(q->reason);
    free(q->error);
    free(q);
}

static void emit(struct replay *r, const struct event *e)
{
    struct request *q = e->req;
    uint64_t ts = r->start + e->ts;
    wait_until(r, e->ts);
    if (e->ts > r->last_ts)
        r->last_ts = e->ts;
    switch (e->kind) {
    case EV_FIRST:
        account(r, obsd_request_first_chunk(r->h, q->id, ts, q->first_chunk, q->first_len), "first chunk");
        break;
    case EV_CHUNK:
        account(r, obsd_request_chunk(r->h, q->id, ts), "chunk");
        break;
    case EV_ERROR:
        account(r, obsd_request_error(r->h, q->id, ts, q->error, q->error_len), "error");
        break;
    case EV_COMPLETE:
        account(r, obsd_request_complete(r->h, q->id, ts, q->reason, q->output, q->output_len),
                "complete");
        break;
    }
    if (--q->refs == 0)
        free_request(q);
}

/* Emits every queued event at or before offset `until`. */
static void emit_until(struct replay *r, struct heap *h, uint64_t until)
{
    while (h->n && h->v[0].ts <= until) {
        struct event e = heap_pop(h);
        emit(r, &e);
    }
}

static void session(struct replay *r, enum obsd_session_event ev, uint64_t offset)
{
    wait_until(r, offset);
    account(r, obsd_session_at(r->h, ev, r->start + offset), "session event");
}

/* Field helpers: each names the line and the field on a type error. */
static int bad(const struct replay *r, size_t line, const char *field, const char *want)
{
    fprintf(stderr, "obsd-replay: %s:%zu: \"%s\" must be %s\n", r->path, line, field, want);
    return -1;
}

static int get_time(const struct replay *r, size_t line, json_t *o, const char *field,
                    bool nullable, bool *present, uint64_t *out)
{
    json_t *v = json_object_get(o, field);
    *present = false;
    if (!v || json_is_null(v)) {
        if (nullable)
            return 0;
        return bad(r, line, field, "a non-negative integer (nanoseconds from the start)");
    }
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return bad(r, line, field, nullable ? "a non-negative integer or null"
                                            : "a non-negative integer (nanoseconds from the start)");
    *present = true;
    *out = (uint64_t)json_integer_value(v);
    return 0;
}

static int get_text(const struct replay *r, size_t line, json_t *o, const char *field,
                    bool nullable, char **out, size_t *len)
{
    json_t *v = json_object_get(o, field);
    *out = NULL;
    *len = 0;
    if (!v || json_is_null(v)) {
        if (nullable)
            return 0;
        return bad(r, line, field, "a string");
    }
    if (!json_is_string(v))
        return bad(r, line, field, nullable ? "a string or null" : "a string");
    *len = json_string_length(v);
    *out = malloc(*len + 1);
    if (!*out) {
        fprintf(stderr, "obsd-replay: out of memory\n");
        exit(1);
    }
    memcpy(*out, json_string_value(v), *len);
    (*out)[*len] = 0;
    return 0;
}

/* One request line: writes the issued record now and queues the rest. */
static int request_line(struct replay *r, struct heap *h, size_t line, json_t *o,
                        uint64_t id, uint64_t *issued_out)
{
    bool has_issued, has_first, has_complete;
    uint64_t issued = 0, first = 0, complete = 0;
    if (get_time(r, line, o, "issued_ns", false, &has_issued, &issued) ||
        get_time(r, line, o, "first_ns", true, &has_first, &first) ||
        get_time(r, line, o, "complete_ns", false, &has_complete, &complete))
        return -1;
    if (complete < issued) {
        fprintf(stderr, "obsd-replay: %s:%zu: complete_ns is before issued_ns\n", r->path, line);
        return -1;
    }
    if (has_first && (first < issued || first > complete)) {
        fprintf(stderr, "obsd-replay: %s:%zu: first_ns is not between issued_ns and complete_ns\n",
                r->path, line);
        return -1;
    }

    struct request *q = calloc(1, sizeof *q);
    if (!q) {
        fprintf(stderr, "obsd-replay: out of memory\n");
        exit(1);
    }
    q->id = id;
    char *prompt = NULL;
    size_t prompt_len = 0;
    json_t *ptok = json_object_get(o, "prompt_tokens");
    if (ptok && !(json_is_integer(ptok) && json_integer_value(ptok) >= 0)) {
        free(q);
        return bad(r, line, "prompt_tokens", "a non-negative integer");
    }
    if ((!ptok && get_text(r, line, o, "prompt", false, &prompt, &prompt_len)) ||
        get_text(r, line, o, "output", false, &q->output, &q->output_len) ||
        get_text(r, line, o, "first_chunk", true, &q->first_chunk, &q->first_len) ||
        get_text(r, line, o, "finish_reason", false, &q->reason, &(size_t){0}) ||
        get_text(r, line, o, "error", true, &q->error, &q->error_len)) {
        free(prompt);
        free_request(q);
        return -1;
    }
    json_t *chunks = json_object_get(o, "chunk_ns");
    if (chunks && !json_is_array(chunks)) {
        free(prompt);
        free_request(q);
        return bad(r, line, "chunk_ns", "an array of integers");
    }
    size_t i;
    json_t *c;
    json_array_foreach(chunks, i, c) {
        if (!json_is_integer(c) || json_integer_value(c) < (json_int_t)issued ||
            (uint64_t)json_integer_value(c) > complete || i >= 1000) {
            fprintf(stderr, "obsd-replay: %s:%zu: chunk_ns[%zu] must be an integer between "
                            "issued_ns and complete_ns (at most 1000 chunks)\n", r->path, line, i);
            free(prompt);
            free_request(q);
            return -1;
        }
    }

    /* Everything at the issue time or earlier goes out first. */
    emit_until(r, h, issued);
    wait_until(r, issued);
    if (issued > r->last_ts)
        r->last_ts = issued;
    if (ptok)
        account(r, obsd_request_issued_tokens(r->h, id, r->start + issued,
                                              (uint64_t)json_integer_value(ptok)), "issued");
    else
        account(r, obsd_request_issued(r->h, id, r->start + issued, prompt, prompt_len), "issued");
    free(prompt);

    uint64_t seq = line * 1024u;
    if (has_first) {
        heap_push(h, (struct event){first, seq++, EV_FIRST, q});
        q->refs++;
    }
    json_array_foreach(chunks, i, c) {
        heap_push(h, (struct event){(uint64_t)json_integer_value(c), seq++, EV_CHUNK, q});
        q->refs++;
    }
    if (q->error) {
        heap_push(h, (struct event){complete, seq++, EV_ERROR, q});
        q->refs++;
    }
    heap_push(h, (struct event){complete, seq++, EV_COMPLETE, q});
    q->refs++;
    *issued_out = issued;
    return 0;
}

static void usage(FILE *out)
{
    fprintf(out,
            "usage: obsd-replay --name NAME FILE [--pace]\n"
            "Replays the requests of FILE (JSON lines, sorted by issued_ns) into the obsd\n"
            "segment NAME as one load worker, wrapped in session started, tracking start,\n"
            "tracking stop and ended events. One request per line:\n"
            "  {\"prompt\": str, \"output\": str, \"first_chunk\": str|null, \"issued_ns\": int,\n"
            "   \"first_ns\": int|null, \"complete_ns\": int, \"finish_reason\": str, \"error\": str|null}\n"
            "Times are nanoseconds from the run's start. Optional: \"prompt_tokens\": int instead\n"
            "of \"prompt\", \"chunk_ns\": [int], and lines {\"event\": \"tracking_start\"|\"tracking_stop\",\n"
            "\"ts_ns\": int} that place the tracking window (default: the whole replay).\n"
            "Exit status: 0 all written, 1 records dropped or refused, 2 bad arguments or file.\n"
            "  -n, --name NAME  segment /dev/shm/obsd.NAME of a running collector\n"
            "  -p, --pace       replay in real time (default: as fast as possible)\n"
            "  -h, --help       this text\n");
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"name", required_argument, NULL, 'n'},
        {"pace", no_argument, NULL, 'p'},
        {"help", no_argument, NULL, 'h'},
        {0, 0, 0, 0},
    };
    struct replay r = {0};
    const char *name = NULL;
    int c;
    while ((c = getopt_long(argc, argv, "n:ph", opts, NULL)) != -1) {
        switch (c) {
        case 'n': name = optarg; break;
        case 'p': r.pace = true; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (!name) {
        fprintf(stderr, "obsd-replay: --name is required\n");
        usage(stderr);
        return 2;
    }
    if (optind != argc - 1) {
        fprintf(stderr, "obsd-replay: expected exactly one FILE argument\n");
        usage(stderr);
        return 2;
    }
    r.path = argv[optind];
    FILE *f = fopen(r.path, "r");
    if (!f) {
        fprintf(stderr, "obsd-replay: %s: %s\n", r.path, strerror(errno));
        return 2;
    }
    r.h = obsd_open(name);
    if (!r.h) {
        fprintf(stderr, "obsd-replay: cannot open segment '%s': %s\n", name, obsd_last_error());
        fclose(f);
        return 2;
    }

    /* Does the file place the tracking window itself? One cheap pass. */
    bool manual_tracking = false;
    char *buf = NULL;
    size_t cap = 0;
    ssize_t n;
    while ((n = getline(&buf, &cap, f)) > 0) {
        const char *p = buf + strspn(buf, " \t");
        if (*p == '{' && !strncmp(p + 1 + strspn(p + 1, " \t"), "\"event\"", 7)) {
            manual_tracking = true;
            break;
        }
    }
    rewind(f);

    struct heap h = {0};
    int status = 0;
    size_t line = 0;
    uint64_t next_id = 1, last_issued = 0;
    r.start = obsd_now();
    session(&r, OBSD_SESSION_STARTED, 0);
    if (!manual_tracking)
        session(&r, OBSD_SESSION_TRACKING_START, 0);
    while ((n = getline(&buf, &cap, f)) > 0) {
        line++;
        size_t len = (size_t)n;
        while (len && (buf[len - 1] == '\n' || buf[len - 1] == '\r'))
            len--;
        if (len == 0)
            continue;
        json_error_t jerr;
        json_t *o = json_loadb(buf, len, JSON_ALLOW_NUL, &jerr);
        if (!o || !json_is_object(o)) {
            fprintf(stderr, "obsd-replay: %s:%zu: %s\n", r.path, line,
                    o ? "not a JSON object" : jerr.text);
            json_decref(o);
            status = 2;
            break;
        }
        json_t *ev = json_object_get(o, "event");
        uint64_t ts = 0;
        bool has_ts;
        if (ev) {
            const char *evname = json_string_value(ev);
            enum obsd_session_event se;
            if (evname && !strcmp(evname, "tracking_start"))
                se = OBSD_SESSION_TRACKING_START;
            else if (evname && !strcmp(evname, "tracking_stop"))
                se = OBSD_SESSION_TRACKING_STOP;
            else {
                bad(&r, line, "event", "\"tracking_start\" or \"tracking_stop\"");
                json_decref(o);
                status = 2;
                break;
            }
            if (get_time(&r, line, o, "ts_ns", false, &has_ts, &ts)) {
                json_decref(o);
                status = 2;
                break;
            }
            if (ts < last_issued) {
                fprintf(stderr, "obsd-replay: %s:%zu: lines must be sorted by time\n", r.path, line);
                json_decref(o);
                status = 2;
                break;
            }
            emit_until(&r, &h, ts);
            session(&r, se, ts);
            last_issued = ts;
        } else {
            bool has_issued;
            if (get_time(&r, line, o, "issued_ns", false, &has_issued, &ts)) {
                json_decref(o);
                status = 2;
                break;
            }
            if (ts < last_issued) {
                fprintf(stderr, "obsd-replay: %s:%zu: issued_ns %" PRIu64 " is before the previous "
                                "line's; lines must be sorted by issued_ns\n", r.path, line, ts);
                json_decref(o);
                status = 2;
                break;
            }
            if (request_line(&r, &h, line, o, next_id++, &last_issued)) {
                json_decref(o);
                status = 2;
                break;
            }
        }
        json_decref(o);
    }
    if (status == 0 && ferror(f)) {
        fprintf(stderr, "obsd-replay: %s: read error: %s\n", r.path, strerror(errno));
        status = 2;
    }
    /* Requests in flight finish even after a bad line, so the collector
     * sees whole requests; then the run ends. */
    emit_until(&r, &h, UINT64_MAX);
    if (!manual_tracking)
        session(&r, OBSD_SESSION_TRACKING_STOP, r.last_ts);
    session(&r, OBSD_SESSION_ENDED, r.last_ts);
    obsd_flush(r.h);
    free(h.v);
    free(buf);
    fclose(f);

    struct obsd_producer_stats st;
    obsd_stats(r.h, &st);
    obsd_close(r.h);
    if (status == 0 && r.failed) {
        fprintf(stderr, "obsd-replay: %" PRIu64 " of %" PRIu64 " records were not written "
                        "(dropped %" PRIu64 ", refused %" PRIu64 "); a collector with "
                        "ring_full_policy = block loses none\n",
                r.failed, r.written + r.failed, st.records_dropped, st.records_refused);
        status = 1;
    }
    if (status == 0)
        printf("{\"requests\": %zu, \"records\": %" PRIu64 "}\n", (size_t)(next_id - 1), r.written);
    return status;
}
