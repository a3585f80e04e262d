/*
 * snapshot.h: the snapshot data model shared by the engine (which builds
 * snapshots), the publisher (which stores and pushes them) and obsctl (which
 * reads them).
 *
 * A snapshot is the state of one run at one moment, as DESIGN.md fixes it:
 * schema_version, run, seq, timestamp_ns, state, n_pending_tasks and the
 * metrics (counters and series). Modules with structured results (budget,
 * sched, requests) add a named JSON section ("budget", "sched", ...).
 *
 * Ownership: a snapshot owns copies of every name and bucket array given to
 * it and a reference to every section, except for the first n_borrowed
 * series (snapshot_add_series_ref), whose name and buckets stay their
 * owner's.
 */
#ifndef OBSD_PUBLISHER_SNAPSHOT_H
#define OBSD_PUBLISHER_SNAPSHOT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#define OBSD_SNAPSHOT_SCHEMA_VERSION 1

/* Run states; transitions only move forward, interrupted from anywhere. */
enum obsd_run_state {
    OBSD_RUN_INITIALIZE = 0,
    OBSD_RUN_LIVE = 1,
    OBSD_RUN_DRAINING = 2,
    OBSD_RUN_COMPLETE = 3,
    OBSD_RUN_INTERRUPTED = 4,
};
const char *obsd_run_state_name(enum obsd_run_state s);
/* Returns -1 for an unknown name. */
int obsd_run_state_parse(const char *name);

/* The percentile grid of every series, in this order; keys in JSON are
 * "99.9", "99.0", ..., "1.0". */
#define OBSD_N_PERCENTILES 12
extern const double obsd_percentile_grid[OBSD_N_PERCENTILES];
/* The JSON key of percentile i ("99.9", "99.0", ...); buf needs 8 bytes. */
void obsd_percentile_key(int i, char *buf, size_t len);

/*
 * Change hints. A snapshot kept and brought up to date in place (the
 * collector's) can say what changed, so that the store need not find out by
 * matching every name and comparing every field and bucket with what it
 * persisted last. The producer of the hints (engine/metrics.c) numbers its
 * updates of the snapshot: hint_version grows by one at each, and a new
 * layout (entries at other indexes) takes a new hint_epoch, unique in the
 * process (snapshot_hint_epoch_new). Each entry says since which version it
 * holds its metric at its index and at which version it last changed, so a
 * reader that saw version V of the same epoch knows, for an entry with
 * 0 < hint_placed <= V, which metric it is (the one it saw at that index) and
 * that it is unchanged since V if hint_changed <= V.
 *
 * Hints only ever let a reader skip work: an entry with hint_placed 0 (every
 * entry added by the copying adders, parsed from JSON or read from a store),
 * a snapshot with hint_epoch 0, or a version the reader did not see, gets the
 * full comparison. So whoever changes an entry that carries hints must
 * advance them (or set hint_placed to 0): a stale hint_changed makes a
 * reader miss the change.
 */
#define SNAP_HINT_ALL_BUCKETS UINT64_MAX
#define SNAP_HINT_NCOUNTS 2

struct snap_counter {
    char *name;
    bool is_float;   /* gauges and rates are floats; counters are integers */
    int64_t ivalue;
    double fvalue;
    uint64_t hint_placed;   /* at this index since this version (0: no hint) */
    uint64_t hint_changed;  /* value last written at this version */
};

struct snap_bucket {
    double lo, hi;
    uint64_t count;
};

struct snap_series {
    /* Laid out for the store's pass over every series at each persist: what
     * it reads of each changed series (the change hints, the bucket count,
     * the first summary words) in the first two cache lines, the rest of
     * the percentiles after them, what only a full read needs last; the
     * snapshot's own array starts each series on a 256-byte boundary
     * (snapshot.c). */
    uint64_t hint_placed;   /* at this index since this version */
    uint64_t hint_changed;  /* some field last written at this version */
    uint64_t hint_edges;    /* bucket edges (and n_buckets) last changed at this version */
    uint64_t hint_mask;     /* the buckets whose count may have changed at version
                               hint_changed, from version hint_changed - 1: bit i for
                               bucket i (SNAP_HINT_ALL_BUCKETS: unknown, or more than
                               64 buckets) */
    uint64_t hint_counts[SNAP_HINT_NCOUNTS];  /* when hint_mask has at most
                               SNAP_HINT_NCOUNTS bits: the counts of those buckets,
                               lowest bit first, so that a reader need not go to
                               the buckets (scattered over the producer's heap) */
    size_t n_buckets;
    uint32_t hint_fields;   /* the summary fields that may have changed at version
                               hint_changed: bit 0 count, 1 total, 2 min, 3 max,
                               4 sum_sq, 5 + i percentiles[i] */
    bool exact;      /* percentiles from raw values (final) rather than the histogram */
    uint64_t count;
    double total, min, max, sum_sq;
    double percentiles[OBSD_N_PERCENTILES];
    struct snap_bucket *buckets;  /* log-spaced over [min, max] */
    char *name;
    uint64_t pad[5];             /* to 256 bytes (on LP64), four cache lines */
};
#if UINTPTR_MAX == UINT64_MAX
_Static_assert(sizeof(struct snap_series) == 256, "a series is four cache lines");
#endif

struct snapshot {
    uint32_t schema_version;
    char run[64];                 /* run id, e.g. "20261123-101500-bench-3" */
    uint64_t seq;                 /* 0, 1, 2, ... within the run */
    uint64_t timestamp_ns;        /* CLOCK_REALTIME when built */
    enum obsd_run_state state;
    uint64_t n_pending_tasks;     /* tokenizations not yet counted */
    size_t n_counters, cap_counters;
    struct snap_counter *counters;
    size_t n_series, cap_series;
    struct snap_series *series;
    size_t n_borrowed;            /* series[0..n_borrowed): name and buckets not owned */
    json_t *sections;             /* object: module name -> JSON value; never NULL */
    uint64_t hint_epoch;          /* change hints: their layout (0: the snapshot has none) */
    uint64_t hint_version;        /* change hints: the current version */
};

struct snapshot *snapshot_new(const char *run, uint64_t seq, enum obsd_run_state state);
void snapshot_free(struct snapshot *s);

/* A hint_epoch not handed out before in this process (never 0). */
uint64_t snapshot_hint_epoch_new(void);

/* Adders copy name (and buckets), not change hints: the copies have none.
 * They return 0, or -1 when out of memory. */
int snapshot_add_counter(struct snapshot *s, const char *name, int64_t value);
int snapshot_add_gauge(struct snapshot *s, const char *name, double value);
int snapshot_add_series(struct snapshot *s, const struct snap_series *series);
/* Adds a series without copying its name and buckets: they must stay valid
 * and unchanged while the snapshot may be read (the collector's kept
 * snapshot refers to its series' live views so). Its change hints are taken
 * as they are. Only before any series
 * added by snapshot_add_series. Returns 0, or -1 (out of memory, or owned
 * series exist). */
int snapshot_add_series_ref(struct snapshot *s, const struct snap_series *series);
/* For a snapshot kept from one publish to the next (the collector's): drops
 * the counters from index n_counters on and the series from n_series on. */
void snapshot_truncate(struct snapshot *s, size_t n_counters, size_t n_series);
/* Overwrites series i with from: a borrowed series takes from as it is (its
 * name and buckets, borrowed too, and its change hints), an owned one copies
 * its statistics and buckets and keeps its name, and loses its change hints.
 * Returns 0, or -1 when out of memory (series i is then unchanged). */
int snapshot_update_series(struct snapshot *s, size_t i, const struct snap_series *from);
/* Steals the reference to value. */
int snapshot_set_section(struct snapshot *s, const char *name, json_t *value);

const struct snap_counter *snapshot_find_counter(const struct snapshot *s, const char *name);
const struct snap_series *snapshot_find_series(const struct snapshot *s, const char *name);

/*
 * Text from producers in JSON. Metric names, run ids and names and labels
 * are whatever a producer or a damaged store put there, but a JSON string
 * must be UTF-8 (jansson refuses anything else: json_string() returns NULL).
 * Everything that puts such a string into JSON goes through these: a
 * well-formed name comes out byte for byte, any other with each byte that is
 * not part of a well-formed UTF-8 sequence (overlong forms, surrogates, code
 * points past U+10FFFF and truncated sequences included) replaced by U+FFFD,
 * as the HTML report and the OpenMetrics exposition write it.
 */
/* The UTF-8 encoding of U+FFFD REPLACEMENT CHARACTER. */
#define OBSD_UTF8_REPLACEMENT "\xEF\xBF\xBD"
/* Decodes the sequence at s (n > 0 bytes left): returns its length (1..4)
 * with the code point in *cp, or 0 when the bytes there are not a
 * well-formed UTF-8 sequence (overlong forms, surrogates, code points past
 * U+10FFFF and truncated sequences included); the caller then skips one
 * byte. The HTML report and the OpenMetrics exposition walk names with it
 * too. (utf8proc's decoder.) */
size_t obsd_utf8_decode(const unsigned char *s, size_t n, uint32_t *cp);
/* The columns a terminal gives s: utf8proc's width of each code point (0
 * for a combining mark, 2 for a wide character such as CJK), 1 for a byte
 * that is not UTF-8. For padding text tables. */
size_t obsd_utf8_width(const char *s);
/* True when the n bytes at s are well-formed UTF-8. */
bool obsd_utf8_valid(const char *s, size_t n);
/* A malloc'd copy of s with that replacement (an exact copy when s is
 * well-formed); NULL when out of memory. */
char *obsd_utf8_repair(const char *s);
/* A JSON string of s with that replacement; NULL only when s is NULL or out
 * of memory. */
json_t *obsd_json_text(const char *s);

/* The JSON form printed by `obsctl show --json` (see obsctl(1)). Names are
 * written with obsd_json_text. NULL when out of memory. */
json_t *snapshot_to_json(const struct snapshot *s);
/* Parses that form back; NULL with a message in err on bad input. */
struct snapshot *snapshot_from_json(const json_t *j, char *err, size_t errlen);

#endif
