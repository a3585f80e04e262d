/*
 * sched_session.c: the sample of the counter area that libobsd sends with a
 * session event (see sched_wire.h for the record and its place next to the
 * event, producer.c for the call).
 *
 * Cost: one load of block 0's state while no block of the area was ever
 * claimed. Otherwise, for each block in use (a prefix of the area), the copy
 * sched_read() makes (about twenty acquire loads of its own cache lines) into
 * a buffer allocated for the call, then one record of 48 bytes plus 168 per
 * block in use. Only session events pay it, never the counting functions.
 * bench/sched_counters measures it (bench/RESULTS.md).
 */
#include <stdlib.h>

#include "obsd/obsd.h"
#include "sched/sched_wire.h"
#include "shm/producer_internal.h"

bool obsd__sched_sample_take(obsd_t *h, uint64_t event_ts_ns, uint64_t taken_ns,
                             struct obsd__sched_sample *s)
{
    s->buf = NULL;
    s->len = 0;
    size_t bytes = 0;
    void *area = obsd__sched_area(h, &bytes);
    /* No scheduler area, or no block ever claimed (a segment only used for
     * records): no sample, and the event stays the one record it was. */
    size_t used = sched_wire_in_use(area, bytes);
    if (used == 0)
        return false;
    s->buf = malloc(sched_wire_max_bytes(used));
    if (!s->buf)
        return false;   /* the collector reads the area itself */
    s->len = sched_wire_take(area, bytes, used, event_ts_ns, taken_ns ? taken_ns : obsd_now(),
                             s->buf);
    return true;
}

void obsd__sched_sample_send(obsd_t *h, uint32_t event, struct obsd__sched_sample *s)
{
    /* A sample above the segment's message limit (a tiny max_text_bytes) is
     * left out rather than refused: the collector falls back to its own read.
     * A drop is counted like any record's. */
    if (s->buf && s->len <= obsd__max_message(h))
        obsd__write(h, OBSD_REC_SCHED_SAMPLE, 0, event, s->buf, s->len);
}

void obsd__sched_sample_free(struct obsd__sched_sample *s)
{
    free(s->buf);
    s->buf = NULL;
    s->len = 0;
}
