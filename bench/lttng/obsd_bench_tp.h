/*
 * obsd_bench_tp.h: the LTTng-UST tracepoint that bench/producer_cost measures
 * next to obsd_span(): one event carrying what a span record carries (a key
 * id and two 64-bit timestamps), so both sides write the same 20 bytes of
 * payload. LTTng reads its own clock inside the tracepoint.
 *
 * Only built when pkg-config finds lttng-ust (Debian: liblttng-ust-dev).
 */
#undef LTTNG_UST_TRACEPOINT_PROVIDER
#define LTTNG_UST_TRACEPOINT_PROVIDER obsd_bench

#undef LTTNG_UST_TRACEPOINT_INCLUDE
#define LTTNG_UST_TRACEPOINT_INCLUDE "lttng/obsd_bench_tp.h"

#if !defined(OBSD_BENCH_TP_H) || defined(LTTNG_UST_TRACEPOINT_HEADER_MULTI_READ)
#define OBSD_BENCH_TP_H

#include <stdint.h>
#include <lttng/tracepoint.h>

LTTNG_UST_TRACEPOINT_EVENT(obsd_bench, span,
    LTTNG_UST_TP_ARGS(uint32_t, key, uint64_t, t0, uint64_t, t1),
    LTTNG_UST_TP_FIELDS(
        lttng_ust_field_integer(uint32_t, key, key)
        lttng_ust_field_integer(uint64_t, t0, t0)
        lttng_ust_field_integer(uint64_t, t1, t1)))

#endif

#include <lttng/tracepoint-event.h>
