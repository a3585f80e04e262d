/* obsd_bench_tp.c: instantiates the probe of obsd_bench_tp.h (LTTng-UST's
 * one-translation-unit rule for tracepoint providers). */
#define LTTNG_UST_TRACEPOINT_CREATE_PROBES
#define LTTNG_UST_TRACEPOINT_DEFINE
#include "lttng/obsd_bench_tp.h"
