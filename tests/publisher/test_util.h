/* test_util.h: helpers shared by the publisher and obsctl tests. */
#ifndef OBSD_TESTS_PUBLISHER_TEST_UTIL_H
#define OBSD_TESTS_PUBLISHER_TEST_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "publisher/snapshot.h"

/* A directory for all temp dirs of this test process: temp_root_begin()
 * creates it and points $TMPDIR at it, temp_root_end() removes it with
 * everything in it. As an unchecked fixture it cleans up also after a failed
 * check, whose checked teardown does not run. */
void temp_root_begin(void);
void temp_root_end(void);

/* A fresh directory under $TMPDIR (or /tmp); rm_rf removes it. */
void make_temp_dir(char *out, size_t len, const char *tag);
void rm_rf(const char *dir);

/* A snapshot with n_counters counters "c<i>" and n_series series "s<i>"
 * whose values depend on seq for the first n_changing metrics only. */
struct snapshot *make_snapshot(const char *run, uint64_t seq, enum obsd_run_state state,
                               size_t n_counters, size_t n_series, size_t n_changing,
                               size_t n_buckets);

/* Compact JSON with sorted keys (free() it). */
char *snapshot_text(const struct snapshot *s);

#endif
