/*
 * sched_wire.h: the sample record a producer sends with a session event.
 *
 * When a producer sends a session event on a segment whose scheduler area is
 * in use (some block was ever claimed), libobsd reads the area at that moment
 * (sched_read_block(), the collector's own consistent read) and sends the
 * sample as one OBSD_REC_SCHED_SAMPLE record (fragmented when large) from the
 * same thread, so it travels in the same ring as the event:
 *
 *   STARTED                                   the event, then its sample
 *   TRACKING_START, TRACKING_STOP,            the sample, then its event
 *   ENDED, INTERRUPTED
 *
 * A sample before its event is in the collector's hands when it processes
 * the event. STARTED's comes after it so that it arrives inside the run the
 * event opens, not as a record between runs. The collector pairs a sample
 * with its event by event code (the record key) and the event's timestamp,
 * and falls back to reading the area itself when no sample came.
 *
 * Payload: struct sched_pl_sample, then n_entries struct sched_pl_entry (one
 * per claimed block that passed validation, in area order). Everything in it
 * is untrusted: sched_wire_decode() checks it before the module uses it.
 */
#ifndef OBSD_SCHED_SCHED_WIRE_H
#define OBSD_SCHED_SCHED_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "obsd/obsd_sched.h"
#include "sched/sched_sample.h"
#include "shm/wire.h"

#define OBSD_REC_SCHED_SAMPLE OBSD_REC_SCHED_FIRST   /* key = enum obsd_session_event */
#define SCHED_WIRE_VERSION 1u

struct sched_pl_sample {
    uint16_t version;           /* SCHED_WIRE_VERSION */
    uint16_t reserved0;         /* 0 */
    uint32_t area_blocks;       /* blocks in the area the producer read */
    uint64_t event_ts_ns;       /* the session event's ts_ns: pairs sample and event */
    uint64_t taken_ns;          /* CLOCK_MONOTONIC right before the first block was read */
    uint64_t read_ns;           /* how long reading every block took */
    int32_t pid;                /* the process that read */
    uint32_t n_entries;         /* struct sched_pl_entry that follow */
    uint32_t rejected;          /* blocks that failed validation in this read */
    uint32_t reserved1;         /* 0 */
};
_Static_assert(sizeof(struct sched_pl_sample) == 48, "sample header is 48 bytes");

#define SCHED_PL_TORN 1u        /* sched_pl_entry.flags: completion group not consistent */

struct sched_pl_entry {
    uint32_t block;             /* position in the area */
    uint32_t generation;
    int32_t pid;
    int32_t tid;                /* workers; 0 for queues */
    int64_t index;              /* worker index; 0 for queues */
    uint64_t claim_ns;
    uint8_t kind;               /* OBSD_SCHED_KIND_WORKER or _QUEUE */
    uint8_t state;              /* OBSD_SCHED_ACTIVE or RETIRED */
    uint8_t flags;              /* SCHED_PL_TORN */
    uint8_t reserved[5];        /* 0 */
    union {
        struct {
            uint64_t counter[OBSD_SCHED_N_COUNTERS];
            uint64_t last_steal_attempt_ns, completed, first_completion_ns, last_completion_ns;
        } w;
        struct {
            char tag[OBSD_SCHED_TAG_MAX + 1];
            uint64_t pushed_total, popped_total, enqueue_cas_retries, dequeue_cas_retries;
        } q;
    } u;
};
_Static_assert(sizeof(struct sched_pl_entry) == 168, "sample entry is 168 bytes");

/* Bytes of the largest sample of an area of `blocks` blocks. */
static inline size_t sched_wire_max_bytes(size_t blocks)
{
    return sizeof(struct sched_pl_sample) + blocks * sizeof(struct sched_pl_entry);
}

/* How many blocks are in use: blocks claimed now or once (a block never
 * returns to FREE) or being claimed. They are a prefix of the area (claims
 * take the lowest FREE block), so this is the position of the first FREE
 * block. 0: the area was never used. */
size_t sched_wire_in_use(const void *area, size_t bytes);

/* Producer side. Reads the first `scan` blocks of area (bytes long; normally
 * scan = sched_wire_in_use(); a block claimed after that count was claimed
 * after the sample began) with sched_read_block(), stopping at a FREE block,
 * and writes the payload into buf, which holds at least
 * sched_wire_max_bytes(scan). taken_ns is the moment to record for the read
 * (the caller reads the clock right before); the function reads it again at
 * the end for read_ns. Returns the payload length. */
size_t sched_wire_take(const void *area, size_t bytes, size_t scan, uint64_t event_ts_ns,
                       uint64_t taken_ns, void *buf);

/* Collector side: validates a sample record of event `event` (the record
 * key) against our area (area, bytes: block positions and counts must fit
 * it, and a block that still has the entry's generation must still have its
 * owner, kind and index) and now_ns (the sample cannot be from the future),
 * and fills out (cap >= the area's blocks; by_producer set) and *event_ts.
 * Returns NULL, or what is wrong (out is then unusable). */
const char *sched_wire_decode(const void *payload, size_t len, uint32_t event, const void *area,
                              size_t bytes, uint64_t now_ns, struct sched_sample *out,
                              uint64_t *event_ts);

#endif
