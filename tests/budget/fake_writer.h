/*
 * fake_writer.h: stands in for the shm producer core in the budget unit
 * tests, so the producer logic runs without a segment: every record the budget
 * code writes is captured here, to be fed into the collector's aggregator.
 */
#ifndef OBSD_TESTS_BUDGET_FAKE_WRITER_H
#define OBSD_TESTS_BUDGET_FAKE_WRITER_H

#include <stddef.h>
#include <stdint.h>

struct fake_record {
    uint8_t type, flags;
    uint32_t key;
    unsigned char *payload;
    size_t len;
};

/* Records captured on the calling thread since the last fake_reset. */
size_t fake_count(void);
const struct fake_record *fake_get(size_t i);
void fake_reset(void);
/* Makes obsd__write return this status (OBSD_OK by default). */
void fake_set_status(int status);
/* A non-NULL handle for obsd_budget_open (never dereferenced). */
struct obsd *fake_handle(void);

#endif
