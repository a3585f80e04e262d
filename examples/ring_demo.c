/*
 * ring_demo: libobsd's record path end to end in one process.
 *
 * The main thread plays the collector: it creates the segment
 * /dev/shm/obsd.<name>, then drains it every millisecond. A few producer
 * threads open the segment with obsd_open() and write spans and counters
 * through their own rings. At the end the reader prints what it drained per
 * key next to what the producers say they wrote.
 *
 *   ring_demo [--name NAME] [--threads N] [--records N]
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "obsd/obsd.h"
#include "shm/shm.h"
#include "shm/wire.h"

struct totals {
    uint64_t spans, span_ns, counter_sum, other;
    uint64_t per_key[16];
};

static const char *g_name;
static long g_records = 100000;
static atomic_int g_done;

static void *producer(void *arg)
{
    long id = (long)arg;
    obsd_t *h = obsd_open(g_name);
    if (!h) {
        fprintf(stderr, "ring_demo: %s\n", obsd_last_error());
        exit(1);
    }
    char name[64];
    snprintf(name, sizeof name, "demo.thread%ld.work", id);
    obsd_key_t work = obsd_key(h, name);
    obsd_key_t items = obsd_key(h, "demo.items");
    for (long i = 0; i < g_records; i++) {
        uint64_t t0 = obsd_now();
        obsd_span(h, work, t0, obsd_now());
        if (i % 100 == 0)
            obsd_counter_add(h, items, 100);
        if (i % 1000 == 999) { /* a benchmark does work between records */
            struct timespec pause = {0, 20000};
            nanosleep(&pause, NULL);
        }
    }
    struct obsd_producer_stats st;
    obsd_stats(h, &st);
    printf("producer %ld: written %" PRIu64 ", dropped %" PRIu64 "\n", id, st.records_written,
           st.records_dropped);
    obsd_close(h);
    atomic_fetch_add(&g_done, 1);
    return NULL;
}

struct reader {
    struct shm_segment *seg;
    uint64_t spans[64], counters;
    uint32_t span_key[64];
    int nkeys;
};

static void on_record(void *ctx, const struct shm_producer *from, const struct shm_record *rec)
{
    struct reader *r = ctx;
    (void)from;
    if (rec->type == OBSD_REC_SPAN) {
        int i;
        for (i = 0; i < r->nkeys && r->span_key[i] != rec->key; i++)
            ;
        if (i == r->nkeys && r->nkeys < 64)
            r->span_key[r->nkeys++] = rec->key;
        if (i < 64)
            r->spans[i]++;
    } else if (rec->type == OBSD_REC_COUNTER) {
        struct obsd_pl_counter c;
        memcpy(&c, rec->payload, sizeof c);
        r->counters += (uint64_t)c.delta;
    }
}

static void usage(FILE *f)
{
    fprintf(f, "usage: ring_demo [--name NAME] [--threads N] [--records N]\n"
               "  --name NAME     segment /dev/shm/obsd.NAME (default demo-<pid>)\n"
               "  --threads N     producer threads, 1..32 (default 3)\n"
               "  --records N     spans per thread (default 100000)\n");
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"name", required_argument, 0, 'n'},
        {"threads", required_argument, 0, 't'},
        {"records", required_argument, 0, 'r'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    char defname[64];
    snprintf(defname, sizeof defname, "demo-%d", (int)getpid());
    g_name = defname;
    long threads = 3;
    int c;
    while ((c = getopt_long(argc, argv, "n:t:r:h", opts, NULL)) != -1) {
        char *end;
        switch (c) {
        case 'n':
            g_name = optarg;
            break;
        case 't':
            threads = strtol(optarg, &end, 10);
            if (*end || threads < 1 || threads > 32) {
                fprintf(stderr, "ring_demo: --threads must be 1..32, not \"%s\"\n", optarg);
                return 2;
            }
            break;
        case 'r':
            g_records = strtol(optarg, &end, 10);
            if (*end || g_records < 1) {
                fprintf(stderr, "ring_demo: --records must be a positive number, not \"%s\"\n", optarg);
                return 2;
            }
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "ring_demo: unexpected argument \"%s\"\n", argv[optind]);
        return 2;
    }

    struct shm_config cfg;
    shm_config_defaults(&cfg, g_name);
    cfg.max_producers = 8;
    char err[256];
    struct reader rd = {0};
    rd.seg = shm_segment_create(&cfg, err, sizeof err);
    if (!rd.seg) {
        fprintf(stderr, "ring_demo: %s\n", err);
        return 1;
    }
    printf("segment /dev/shm/obsd.%s: %ld threads x %ld spans\n", g_name, threads, g_records);

    pthread_t tids[32];
    for (long i = 0; i < threads; i++)
        pthread_create(&tids[i], NULL, producer, (void *)i);
    struct timespec ms = {0, 1000000};
    while (atomic_load(&g_done) < threads) {
        shm_drain(rd.seg, on_record, &rd, 0);
        nanosleep(&ms, NULL);
    }
    for (long i = 0; i < threads; i++)
        pthread_join(tids[i], NULL);
    shm_drain(rd.seg, on_record, &rd, 0);

    struct shm_stats st;
    shm_get_stats(rd.seg, &st);
    for (int i = 0; i < rd.nkeys; i++)
        printf("reader: %-24s %" PRIu64 " spans\n", shm_key_name(rd.seg, rd.span_key[i]), rd.spans[i]);
    printf("reader: demo.items counter   %" PRIu64 "\n", rd.counters);
    printf("reader: %" PRIu64 " records, %" PRIu64 " dropped, %" PRIu64 " rejected\n", st.records,
           st.dropped, st.rejected);
    shm_segment_close(rd.seg, true);
    return 0;
}
