/*
 * span_storm: a producer that writes timing spans as fast as it can.
 *
 *   span_storm --name NAME [--records N] [--threads T] [--pause-us U]
 *              [--no-session] [--key KEY]
 *
 * Writes N spans in total (not per thread), split evenly over T threads, under
 * the key storm.span, between a session-started and a session-ended event, so
 * a collector sees one complete run. --pause-us sleeps U microseconds after
 * every 1000 spans of a thread, to stretch a run over time (tests kill and
 * restart the collector under it). --no-session writes the spans alone.
 *
 * At exit it prints one JSON line:
 *
 *   {"written": W, "dropped": D, "records": N, "threads": T,
 *    "records_written": RW, "records_dropped": RD, "records_refused": RF}
 *
 * written and dropped count the spans (W + D == N unless a write failed with
 * an error, reported on stderr); the records_* fields are
 * obsd_stats() of the handle, which also counts the session events. A dropped
 * span is one whose ring was full: the producer never waits for a slow or
 * dead collector.
 *
 * Exit status: 0 when every span was written or dropped (drops are counted,
 * not failures), 1 when the segment could not be opened or a write failed
 * with an error, 2 for bad arguments.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "obsd/obsd.h"

struct storm {
    obsd_t *h;
    const char *key_name;
    uint64_t pause_us;
    _Atomic uint64_t written, dropped, failed;
};

struct worker {
    struct storm *storm;
    uint64_t spans;
};

static void pause_us(uint64_t us)
{
    struct timespec ts = {.tv_sec = (time_t)(us / 1000000), .tv_nsec = (long)(us % 1000000) * 1000};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

static void *storm_thread(void *arg)
{
    struct worker *w = arg;
    struct storm *s = w->storm;
    obsd_key_t key = obsd_key(s->h, s->key_name);
    uint64_t written = 0, dropped = 0, failed = 0;
    if (!key) {
        fprintf(stderr, "span_storm: obsd_key: %s\n", obsd_last_error());
        atomic_fetch_add(&s->failed, w->spans);
        return NULL;
    }
    for (uint64_t i = 0; i < w->spans; i++) {
        uint64_t t0 = obsd_now();
        int rc = obsd_span(s->h, key, t0, obsd_now());
        if (rc == OBSD_OK)
            written++;
        else if (rc == OBSD_DROPPED || rc == OBSD_ENOSLOT || rc == OBSD_ETIMEDOUT)
            dropped++;
        else if (failed++ == 0)
            fprintf(stderr, "span_storm: obsd_span: %s\n", obsd_last_error());
        if (s->pause_us && i % 1000 == 999) {
            obsd_flush(s->h);
            pause_us(s->pause_us);
        }
    }
    obsd_flush(s->h);
    atomic_fetch_add(&s->written, written);
    atomic_fetch_add(&s->dropped, dropped);
    atomic_fetch_add(&s->failed, failed);
    return NULL;
}

static void usage(FILE *out)
{
    fprintf(out,
        "usage: span_storm --name NAME [--records N] [--threads T] [--pause-us U]\n"
        "                  [--no-session] [--key KEY]\n"
        "\n"
        "Writes N spans in total (default 1000000) from T threads (default 1) into\n"
        "the obsd segment NAME under the key storm.span (or KEY), wrapped in session\n"
        "started/ended events, then prints {\"written\": W, \"dropped\": D, ...}.\n"
        "  --pause-us U   sleep U microseconds after every 1000 spans of a thread\n"
        "  --no-session   write no session events\n");
}

static int parse_count(const char *opt, const char *text, uint64_t max, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(text, &end, 10);
    if (errno || end == text || *end || text[0] == '-' || v > max) {
        fprintf(stderr, "span_storm: %s: '%s' is not a number in 0..%" PRIu64 "\n", opt, text, max);
        return -1;
    }
    *out = v;
    return 0;
}

int main(int argc, char **argv)
{
    static const struct option options[] = {
        {"name", required_argument, NULL, 'n'},
        {"records", required_argument, NULL, 'r'},
        {"threads", required_argument, NULL, 't'},
        {"pause-us", required_argument, NULL, 'p'},
        {"key", required_argument, NULL, 'k'},
        {"no-session", no_argument, NULL, 'N'},
        {"help", no_argument, NULL, 'h'},
        {0, 0, 0, 0},
    };
    const char *name = NULL;
    uint64_t records = 1000000, threads = 1, pause = 0;
    bool session = true;
    struct storm s = {.key_name = "storm.span"};
    int opt;

    while ((opt = getopt_long(argc, argv, "n:r:t:p:k:Nh", options, NULL)) != -1) {
        switch (opt) {
        case 'n': name = optarg; break;
        case 'r': if (parse_count("--records", optarg, UINT64_MAX / 2, &records) < 0) return 2; break;
        case 't': if (parse_count("--threads", optarg, 1024, &threads) < 0) return 2; break;
        case 'p': if (parse_count("--pause-us", optarg, 10000000, &pause) < 0) return 2; break;
        case 'k': s.key_name = optarg; break;
        case 'N': session = false; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (!name || optind < argc || threads == 0) {
        fprintf(stderr, "span_storm: %s\n", !name ? "--name is required"
                        : threads == 0 ? "--threads: must be at least 1"
                                       : "unexpected argument");
        return 2;
    }
    s.pause_us = pause;
    s.h = obsd_open(name);
    if (!s.h) {
        fprintf(stderr, "span_storm: %s\n", obsd_last_error());
        return 1;
    }
    if (session && obsd_session(s.h, OBSD_SESSION_STARTED) < 0)
        fprintf(stderr, "span_storm: session started: %s\n", obsd_last_error());

    pthread_t *tids = calloc(threads, sizeof *tids);
    struct worker *workers = calloc(threads, sizeof *workers);
    if (!tids || !workers) {
        fprintf(stderr, "span_storm: out of memory\n");
        return 1;
    }
    for (uint64_t i = 0; i < threads; i++) {
        workers[i] = (struct worker){&s, records / threads + (i < records % threads)};
        int rc = pthread_create(&tids[i], NULL, storm_thread, &workers[i]);
        if (rc) {
            fprintf(stderr, "span_storm: pthread_create: %s\n", strerror(rc));
            return 1;
        }
    }
    for (uint64_t i = 0; i < threads; i++)
        pthread_join(tids[i], NULL);

    if (session && obsd_session(s.h, OBSD_SESSION_ENDED) < 0)
        fprintf(stderr, "span_storm: session ended: %s\n", obsd_last_error());
    obsd_flush(s.h);
    struct obsd_producer_stats st;
    obsd_stats(s.h, &st);
    uint64_t written = atomic_load(&s.written), dropped = atomic_load(&s.dropped);
    uint64_t failed = atomic_load(&s.failed);
    if (failed)
        fprintf(stderr, "span_storm: %" PRIu64 " spans failed with an error\n", failed);
    printf("{\"written\": %" PRIu64 ", \"dropped\": %" PRIu64 ", \"records\": %" PRIu64
           ", \"threads\": %" PRIu64 ", \"records_written\": %" PRIu64
           ", \"records_dropped\": %" PRIu64 ", \"records_refused\": %" PRIu64 "}\n",
           written, dropped, records, threads, st.records_written, st.records_dropped,
           st.records_refused);
    fflush(stdout);
    obsd_close(s.h);
    free(tids);
    free(workers);
    return failed ? 1 : 0;
}
