/*
 * cli_openmetrics.h: a snapshot in the OpenMetrics 1.0 text format (or the
 * Prometheus text format 0.0.4) for `obsctl metrics` and its /metrics
 * endpoint.
 *
 * Every metric family carries the label run="<run id>". What is exposed:
 *  - obsd_run_info{run,name,state} 1 (an info family), and gauges
 *    obsd_run_final, obsd_run_pending_tasks, obsd_run_incomplete_drain,
 *    obsd_run_start_timestamp_seconds, obsd_snapshot_seq and
 *    obsd_snapshot_timestamp_seconds;
 *  - each integer counter as a counter obsd_<name>_total (a name already
 *    ending in _total keeps one), each float counter as a gauge obsd_<name>;
 *  - each series as a summary obsd_<name> (quantiles 0.5, 0.9, 0.99, 0.999,
 *    _sum, _count) and a histogram obsd_<name>_histogram whose cumulative
 *    buckets (le = a bucket's upper edge) come from the snapshot's buckets.
 * Names are "obsd_" plus the metric name with every character outside
 * [a-zA-Z0-9_:] replaced by '_' (a name starting with obsd_ gets no second
 * prefix); HELP gives the original name. When two metrics map to the same
 * name the later one gets a suffix _2, _3, ... Label values and HELP texts
 * are escaped and kept valid UTF-8.
 */
#ifndef OBSD_CLI_CLI_OPENMETRICS_H
#define OBSD_CLI_CLI_OPENMETRICS_H

#include <stdbool.h>
#include <stddef.h>

#include "publisher/store.h"

enum om_format {
    OM_OPENMETRICS,   /* application/openmetrics-text; version=1.0.0 (ends with # EOF) */
    OM_PROMETHEUS,    /* text/plain; version=0.0.4 */
};

#define OM_CONTENT_TYPE_OPENMETRICS "application/openmetrics-text; version=1.0.0; charset=utf-8"
#define OM_CONTENT_TYPE_PROMETHEUS "text/plain; version=0.0.4; charset=utf-8"

const char *om_content_type(enum om_format fmt);

/* The exposition of snap, a snapshot of run (is_final: it is the run's final
 * snapshot). Returns a malloc'd NUL-terminated text with its length in *len,
 * or NULL when out of memory. */
char *om_render(const struct snapshot *snap, const struct store_run_info *run, bool is_final,
                enum om_format fmt, size_t *len);

/* The format an HTTP Accept header asks for: the Prometheus text format when
 * it prefers text/plain (by q-value) to application/openmetrics-text, else
 * OpenMetrics (also for no header, or one naming neither). */
enum om_format om_negotiate(const char *accept);

#endif
