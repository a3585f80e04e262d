/*
 * store.h: the LMDB store of runs and snapshots (format: obsd-store(5)).
 *
 * One store is one directory holding an LMDB environment (data.mdb, lock.mdb)
 * plus the spill files of other modules. The collector is its only writer and
 * persists a snapshot in one write transaction; obsctl opens it read-only, with
 * or without a running collector, also on a copy of the directory.
 *
 * Per run the store keeps the latest snapshot (a header row, a base row per
 * metric and a bounded number of delta rows of what changed since: one
 * cursor range scan), the final snapshot (written once), a history entry per
 * persist with its time series points (full histograms every
 * history_full_every persists and at the final), and per window of 64
 * metrics chunk rows of those points, so one metric's series is one range
 * scan plus a bounded tail of history entries.
 *
 * A store handle is used from one thread at a time. LMDB forbids opening the
 * same environment twice in one process: a process that writes a store reads
 * it through the same handle.
 *
 * Every function that returns int returns one of enum store_status; on
 * STORE_ERROR, store_error() says what went wrong.
 */
#ifndef OBSD_PUBLISHER_STORE_H
#define OBSD_PUBLISHER_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "publisher/snapshot.h"

/* Version of the key layout and value encodings. A reader refuses a store of
 * a newer version, naming both. */
#define OBSD_STORE_SCHEMA_VERSION 5

enum store_status {
    STORE_OK = 0,
    STORE_ERROR = -1,       /* message in store_error() */
    STORE_NOT_FOUND = -2,   /* no such run, snapshot or metric (or no final yet) */
    STORE_EXISTS = -3,      /* the run's final snapshot is already written */
};

struct store;

/* Opens (a writer creates) the store in dir. map_size is the initial LMDB map
 * size in bytes (0: 1 GiB); the writer doubles it on MDB_MAP_FULL. sync true
 * flushes each commit's pages to disk before its meta page is written, and
 * the meta page at the next commit (MDB_NOMETASYNC: one device flush a
 * commit; a crash of the machine may undo the last commit, never the
 * integrity of the store); a final snapshot, and the last commit at
 * store_close, are flushed whole. sync false skips the flush (MDB_NOSYNC: a
 * crash of obsd loses nothing, a crash of the machine may lose the last
 * commits and, on a file system that reorders writes, damage the store).
 * readonly opens for reading only;
 * a read-only store needs no daemon and works on a copied directory, even one
 * where the lock file cannot be written. NULL with a message in err on failure. */
struct store *store_open(const char *dir, uint64_t map_size, bool sync, bool readonly,
                         char *err, size_t errlen);
void store_close(struct store *st);

/* Turns the fsync of the following commits off (sync false) or back on, on a
 * writer. For commits that must only survive the death of the process, not of
 * the machine: committed pages are in the page cache, and the next synced
 * commit writes them to disk too. */
int store_set_commit_sync(struct store *st, bool sync);

/* Message of the last STORE_ERROR (or STORE_NOT_FOUND / STORE_EXISTS). */
const char *store_error(const struct store *st);

/* Full histograms go into the history every n persists (default 40; 0 = 1). */
void store_set_history_full_every(struct store *st, uint32_t n);

/* Time series points of one metric at most every ns nanoseconds of snapshot
 * time (default 1 s; 0: at every persist in which it changed). A metric that
 * changed gets its point at the first persist after the interval, and at the
 * final. Bounds the store of a run persisted several times a second. */
void store_set_series_interval(struct store *st, uint64_t ns);

/* Current LMDB map size in bytes (grows on MDB_MAP_FULL). */
uint64_t store_map_size(const struct store *st);

/* ---- writer ---- */

/* Starts run_id (at most 63 bytes) or, if the store already has it (a
 * restarted collector), resumes it. name is a display name (NULL: run_id);
 * start_ns is CLOCK_REALTIME. */
int store_begin_run(struct store *st, const char *run_id, const char *name, uint64_t start_ns);

/* Persists snap in one write transaction: latest, history entry (with the
 * time series points due), the chunk rows due, run record; with final also
 * the final snapshot. Its cost follows the metrics that changed, not the
 * metrics there are. Once it returns STORE_OK, everything it wrote can be
 * read back after a crash of the process (and of the machine, unless
 * commits skip the fsync). A run not yet begun is begun with
 * snap->timestamp_ns. seq must grow within a run (STORE_ERROR otherwise);
 * after the final, every persist of the run returns STORE_EXISTS and writes
 * nothing. */
int store_persist(struct store *st, const struct snapshot *snap, bool final);

/* ---- readers ---- */

struct store_run_info {
    uint64_t run_seq;            /* 1, 2, ... in start order */
    char id[64];
    char name[64];
    uint64_t start_ns;           /* CLOCK_REALTIME */
    enum obsd_run_state state;   /* of the last persisted snapshot */
    uint64_t last_seq;
    uint64_t last_timestamp_ns;
    uint64_t n_pending_tasks;    /* of the last persisted snapshot */
    uint64_t n_snapshots;        /* persists */
    bool has_final;
    uint64_t final_seq;
};

/* All runs in start order; *runs is malloc'd (free() it). */
int store_list_runs(struct store *st, struct store_run_info **runs, size_t *n);
int store_find_run(struct store *st, const char *run_id, struct store_run_info *out);
/* The most recently started run. */
int store_last_run(struct store *st, struct store_run_info *out);

/* Snapshots come back owned by the caller (snapshot_free). */
int store_latest(struct store *st, const char *run_id, struct snapshot **out);
int store_final(struct store *st, const char *run_id, struct snapshot **out);
/* The snapshot persisted with this seq, rebuilt from the history: the last
 * keyframe at or before seq plus the time series points after it, so a metric
 * may show its value of up to one series interval before seq. Metrics whose
 * point came after that keyframe carry summary statistics only: count, total, min, max, the percentiles 99.9, 99, 90 and 50
 * (the others NaN) and no histogram. */
int store_snapshot_at(struct store *st, const char *run_id, uint64_t seq, struct snapshot **out);

/* Every persisted seq of a run, ascending; *seqs is malloc'd. */
int store_list_seqs(struct store *st, const char *run_id, uint64_t **seqs, size_t *n);

/* One point of a metric's time series: the metric as persisted at seq, which
 * is only when it changed (and at most every series interval). Percentiles: STORE_POINT_P* index pct[]. */
enum { STORE_POINT_P999, STORE_POINT_P99, STORE_POINT_P90, STORE_POINT_P50, STORE_POINT_NPCT };
struct store_point {
    const char *name;
    uint64_t seq;
    uint64_t timestamp_ns;
    bool is_series;
    /* counters */
    bool is_float;
    int64_t ivalue;
    double fvalue;
    /* series */
    bool exact;
    uint64_t count;
    double total, min, max;
    double pct[STORE_POINT_NPCT];
};
/* Returns nonzero to stop the scan (store_metric_series then returns it). */
typedef int (*store_point_fn)(const struct store_point *p, void *ctx);

/* The time series of one metric (a series of that name if there is one, else
 * the counter), in seq order; metric NULL: every metric of the run, one metric
 * after another. STORE_NOT_FOUND if the run or the metric is unknown. */
int store_metric_series(struct store *st, const char *run_id, const char *metric,
                        store_point_fn fn, void *ctx);

#endif
