/*
 * obsd_collector.h: the collector as a library.
 *
 * The obsd daemon is a thin main around this API; a harness can embed the same
 * collector in-process instead:
 *
 *   struct obsd_collector_config cfg;
 *   obsd_collector_config_defaults(&cfg);
 *   cfg.name = "bench"; cfg.store_dir = "/var/lib/obsd";
 *   char err[256];
 *   struct obsd_collector *c = obsd_collector_new(&cfg, err, sizeof err);
 *   obsd_collector_run(c);          // until the run ends or obsd_collector_stop()
 *   obsd_collector_free(c);
 *
 * Every key of obsd.conf(5) is one field below, with the same name.
 */
#ifndef OBSD_OBSD_COLLECTOR_H
#define OBSD_OBSD_COLLECTOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct obsd_collector_config {
    /* [segment] */
    const char *name;                 /* segment /dev/shm/obsd.<name>; default "obsd" */
    uint32_t max_producers;           /* ring slots; default 64, 1..4096 */
    uint32_t ring_size;               /* bytes per ring; power of two, default 1 MiB, 64 KiB..256 MiB */
    bool ring_full_block;             /* ring_full_policy = block; default drop (false) */
    uint32_t ring_block_timeout_ms;   /* default 10 */
    uint64_t max_text_bytes;          /* default 16 MiB */
    const char *shm_group;            /* NULL: mode 0600; else 0660 with this group */
    uint32_t sched_workers;           /* scheduler counter blocks; default 256 */
    uint32_t max_keys;                /* key table entries (distinct names, 128 B of /dev/shm
                                         each); default 16384, 256..1048576 */

    /* [collector] */
    uint32_t publish_interval_ms;     /* default 250 */
    const char *cpus;                 /* CPU list for the collector ("0-1,3"); NULL = inherit */
    const char *socket_path;          /* control socket; NULL = <store_dir>/<name>.sock */
    uint64_t raw_values_memory;       /* raw series values kept in memory before spilling; default 64 MiB */
    uint32_t histogram_buckets;       /* buckets of a snapshot histogram; default 30 */
    bool exit_after_run;              /* stop when a run reaches complete/interrupted; default false */

    /* [store] */
    const char *store_dir;            /* default /var/lib/obsd */
    uint64_t store_map_size;          /* initial LMDB map size; default 1 GiB, grown on MDB_MAP_FULL */
    bool store_sync;                  /* fsync each commit; default true */
    uint32_t history_full_every;      /* full histograms in history every N persists; default 40 */

    /* [tokens] */
    const char *tokenizer;            /* tokenizer.json; NULL = token metrics off */
    uint32_t tokenizer_workers;       /* live lane threads; default 2, 0 defers all to the drain */
    uint32_t drain_timeout_s;         /* default 0 = unlimited */
    uint64_t token_queue_memory;      /* pending text held in memory; default 256 MiB */

    /* [log] */
    int log_level;                    /* 0 error, 1 warn, 2 info (default), 3 debug */
};

void obsd_collector_config_defaults(struct obsd_collector_config *cfg);

struct obsd_collector;

/* Creates the segment (or re-attaches to it), opens the store, loads the
 * tokenizer. NULL with a message in err on failure. */
struct obsd_collector *obsd_collector_new(const struct obsd_collector_config *cfg,
                                          char *err, size_t errlen);

/* Runs the io_uring loop until obsd_collector_stop(), SIGTERM/SIGINT (final
 * snapshot interrupted), or, with exit_after_run, the end of a run.
 * Returns 0, or -1 on a fatal error. */
int obsd_collector_run(struct obsd_collector *c);

/* Asks a running loop to stop (from any thread or a signal handler). */
void obsd_collector_stop(struct obsd_collector *c);

void obsd_collector_free(struct obsd_collector *c);

#ifdef __cplusplus
}
#endif

#endif
