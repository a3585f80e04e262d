/*
 * obsd.h: the producer API of libobsd.
 *
 * A benchmark process opens the shared-memory segment of a running collector by
 * name and writes records into it: spans, values, counters, gauges, session
 * events and request records. Each thread writes into its own single-producer
 * ring, claimed on its first record, so the record path takes no lock, makes no
 * system call and allocates nothing in steady state.
 *
 *   obsd_t *h = obsd_open("bench");            // maps /dev/shm/obsd.bench
 *   obsd_key_t k = obsd_key(h, "kernel.gemm"); // interned once per process
 *   uint64_t t0 = obsd_now();
 *   ... work ...
 *   obsd_span(h, k, t0, obsd_now());
 *   obsd_close(h);
 *
 * Thread safety: every function may be called from any number of threads on
 * the same handle, except obsd_close(), which must not race with other calls
 * on that handle.
 *
 * Drops: when a ring is full the record is dropped and counted in the ring
 * (OBSD_DROPPED is returned); the collector reports every drop of the run in
 * the counter obsd_dropped_records. A collector configured with
 * ring_full_policy = block makes producers wait up to ring_block_timeout
 * instead. See libobsd(3) for the memory-ordering contract.
 *
 * Budget contexts (obsd_budget.h) and scheduler counter blocks (obsd_sched.h)
 * are part of the same API.
 */
#ifndef OBSD_OBSD_H
#define OBSD_OBSD_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Version of the shared-memory layout and record format. A segment with
 * another version is refused by obsd_open() with both versions named.
 * 2: the key table's size is the collector's max_keys (header keys_count),
 *    no longer a fixed 4096 entries. */
#define OBSD_ABI_VERSION 2

typedef struct obsd obsd_t;

/* An interned name. 0 is never a valid key. */
typedef uint32_t obsd_key_t;

/* Return values of the record functions. Negative values are errors, whose
 * message obsd_last_error() returns. */
enum obsd_status {
    OBSD_OK = 0,
    OBSD_DROPPED = 1,        /* ring full: dropped and counted */
    OBSD_EINVAL = -1,        /* bad argument (NULL handle, key 0, ...) */
    OBSD_ETOOBIG = -2,       /* payload above the segment's max_text_bytes: refused and counted */
    OBSD_ENOSLOT = -3,       /* no ring for this thread (every slot taken, or /dev/shm has no
                                room for its pages): dropped and counted in the segment */
    OBSD_ETIMEDOUT = -4,     /* block mode: no space within the timeout: dropped and counted */
    OBSD_ESTATE = -5,        /* call not valid now (e.g. nested budget context) */
    OBSD_EBUDGET = -6,       /* budget: the charge would exceed the remaining budget */
    OBSD_EWALL = -7,         /* budget: the wall-time limit has passed */
    OBSD_ESYS = -8,          /* a system call failed (open, mmap, ...) */
};

/* Session events, written by the harness. */
enum obsd_session_event {
    OBSD_SESSION_STARTED = 1,        /* a new run starts (state live) */
    OBSD_SESSION_TRACKING_START = 2, /* performance window opens (the warmup mark) */
    OBSD_SESSION_TRACKING_STOP = 3,  /* performance window closes */
    OBSD_SESSION_ENDED = 4,          /* no more records: drain, then complete */
    OBSD_SESSION_INTERRUPTED = 5,    /* the run was stopped early: final state interrupted */
};

/* Opens the segment /dev/shm/obsd.<name> created by a collector. Returns NULL
 * on failure, with the reason in obsd_last_error(). */
obsd_t *obsd_open(const char *name);

/* Flushes this process's rings, releases every ring the handle holds and
 * unmaps the segment. */
void obsd_close(obsd_t *h);

/* Message of the last failed call on this thread ("" if none). */
const char *obsd_last_error(void);

/* The clock of every record: CLOCK_MONOTONIC in nanoseconds. */
uint64_t obsd_now(void);

/* Interns a name (at most OBSD_KEY_MAX bytes of [A-Za-z0-9_.:-]). Slow path:
 * call it once and keep the key. Returns 0 on failure, e.g. when the
 * segment's key table (max_keys names, set by the collector) is full. */
#define OBSD_KEY_MAX 120
obsd_key_t obsd_key(obsd_t *h, const char *name);

/* A timed span: the series named by key gets the value end_ns - start_ns. */
int obsd_span(obsd_t *h, obsd_key_t key, uint64_t start_ns, uint64_t end_ns);

/* One observation of a series (a latency, a size, ...). */
int obsd_value(obsd_t *h, obsd_key_t key, uint64_t value);

/* Adds delta to a counter. */
int obsd_counter_add(obsd_t *h, obsd_key_t key, int64_t delta);

/* Sets a gauge. */
int obsd_gauge_set(obsd_t *h, obsd_key_t key, double value);

/* Makes everything this thread wrote visible to the collector now. */
int obsd_flush(obsd_t *h);

/* Releases the calling thread's ring of this handle (also done automatically
 * when the thread exits). */
void obsd_thread_release(obsd_t *h);

/* Session events carry obsd_now(), or the caller's timestamp with _at. On a
 * segment whose scheduler blocks are in use, the call also reads the blocks
 * and sends the sample with the event (a few microseconds; libobsd(3)). */
int obsd_session(obsd_t *h, enum obsd_session_event ev);
int obsd_session_at(obsd_t *h, enum obsd_session_event ev, uint64_t ts_ns);

/*
 * Request records of a load generator. Timestamps are the caller's (so a
 * replay is deterministic); texts may be up to the segment's max_text_bytes
 * (default 16 MiB) and arrive intact, split into fragments as needed.
 */
int obsd_request_issued(obsd_t *h, uint64_t request_id, uint64_t ts_ns,
                        const char *prompt, size_t prompt_len);
int obsd_request_issued_tokens(obsd_t *h, uint64_t request_id, uint64_t ts_ns,
                               uint64_t prompt_tokens);
int obsd_request_first_chunk(obsd_t *h, uint64_t request_id, uint64_t ts_ns,
                             const char *text, size_t text_len);
int obsd_request_chunk(obsd_t *h, uint64_t request_id, uint64_t ts_ns);
int obsd_request_error(obsd_t *h, uint64_t request_id, uint64_t ts_ns,
                       const char *message, size_t message_len);
int obsd_request_complete(obsd_t *h, uint64_t request_id, uint64_t ts_ns,
                          const char *finish_reason,
                          const char *output, size_t output_len);

/* What this process's handle has written, for harness self-checks. */
struct obsd_producer_stats {
    uint64_t records_written;  /* records published into rings */
    uint64_t records_dropped;  /* dropped: ring full, no slot, or block timeout */
    uint64_t records_refused;  /* refused before writing: too big, bad argument */
};
void obsd_stats(obsd_t *h, struct obsd_producer_stats *out);

#ifdef __cplusplus
}
#endif

#include "obsd/obsd_budget.h"
#include "obsd/obsd_sched.h"

#endif
