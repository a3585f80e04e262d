/*
 * sched_handle.c: the public claim functions of obsd_sched.h on a libobsd
 * handle (the segment's sched area comes from the shm producer core).
 */
#include "obsd/obsd.h"
#include "sched/sched_producer.h"
#include "shm/producer_internal.h"

static struct obsd_sched_block *claim(obsd_t *h, int kind, int index, const char *tag)
{
    if (!h) {
        obsd__set_error("obsd_sched: NULL handle");
        return NULL;
    }
    size_t bytes = 0;
    void *area = obsd__sched_area(h, &bytes);
    const char *why = NULL;
    struct obsd_sched_block *b = sched_area_claim(area, bytes, kind, index, tag, &why);
    if (!b)
        obsd__set_error("obsd_sched: %s", why);
    return b;
}

struct obsd_sched_block *obsd_sched_worker(obsd_t *h, int index)
{
    return claim(h, OBSD_SCHED_KIND_WORKER, index, NULL);
}

struct obsd_sched_block *obsd_sched_queue(obsd_t *h, const char *tag)
{
    return claim(h, OBSD_SCHED_KIND_QUEUE, 0, tag);
}

void obsd_sched_release(struct obsd_sched_block *b)
{
    sched_block_release(b);
}
