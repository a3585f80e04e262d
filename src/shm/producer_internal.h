/*
 * producer_internal.h: hooks of the shm producer core for the other producer
 * modules compiled into libobsd (budget, sched). Not installed, not public.
 *
 * obsd__write* are the fragmenting writer behind every typed record function:
 * a payload that fits one record (at most a quarter of the ring and 64 KiB
 * minus the header) is one record; a larger one is split into OBSD_REC_FRAG
 * records the collector reassembles, and it is delivered whole or not at all.
 * They return the codes of enum obsd_status (OBSD_OK, OBSD_DROPPED,
 * OBSD_ETOOBIG, OBSD_ENOSLOT, OBSD_ETIMEDOUT, OBSD_EINVAL) and count drops and
 * refusals like the public functions. Thread safety as the public API: any
 * thread, each writes into its own ring.
 */
#ifndef OBSD_SHM_PRODUCER_INTERNAL_H
#define OBSD_SHM_PRODUCER_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "obsd/obsd.h"

/* One record of any type (wire.h) with a single payload piece. */
int obsd__write(obsd_t *h, uint8_t type, uint8_t flags, uint32_t key,
                const void *payload, size_t len);

/* The same with two payload pieces written back to back (a fixed header
 * struct, then a text), so typed records need no intermediate copy.
 * b may be NULL when blen is 0. */
int obsd__write2(obsd_t *h, uint8_t type, uint8_t flags, uint32_t key,
                 const void *a, size_t alen, const void *b, size_t blen);

/* The scheduler counter area of the segment: sched_workers blocks of
 * OBSD__SCHED_BLOCK_BYTES each, zero-filled at segment creation. The sched
 * module defines the block layout and how blocks are claimed. NULL (and
 * *bytes = 0) for a NULL handle. */
#define OBSD__SCHED_BLOCK_BYTES 256u
void *obsd__sched_area(obsd_t *h, size_t *bytes);

/* Largest payload obsd__write accepts (max_text_bytes plus its slack). */
uint64_t obsd__max_message(obsd_t *h);

/* The sample of the scheduler area a session event carries (sched_session.c,
 * record format in src/sched/sched_wire.h). take reads every block in use now
 * (taken_ns: the moment to record, 0 = read the clock) and returns false when
 * the segment has no scheduler area or no block of it was ever claimed; send
 * writes it into the calling thread's ring as the sample of event; free
 * releases the buffer. */
struct obsd__sched_sample {
    void *buf;
    size_t len;
};
bool obsd__sched_sample_take(obsd_t *h, uint64_t event_ts_ns, uint64_t taken_ns,
                             struct obsd__sched_sample *s);
void obsd__sched_sample_send(obsd_t *h, uint32_t event, struct obsd__sched_sample *s);
void obsd__sched_sample_free(struct obsd__sched_sample *s);

/* Sets the calling thread's obsd_last_error() message (printf format). */
void obsd__set_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
