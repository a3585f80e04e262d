/*
 * requests.h: request metrics of load-generator producers (record types
 * OBSD_REC_REQ_*, 16..31), as an engine module.
 *
 * For every request issued inside a tracking window (between the session
 * events tracking start and tracking stop) the module keeps a row until the
 * request completes and fills the series
 *
 *   sample_latency_ns  complete - issued              (successful completions)
 *   ttft_ns            first chunk - issued           (successful completions)
 *   tpot_ns            (complete - first chunk) / tokens of the output after
 *                      the first chunk (float; TTFT excluded; skipped without
 *                      a first chunk or without tokens after it)
 *   chunk_delta_ns     a further chunk - the previous chunk
 *   isl                prompt tokens (every tracked request, failed ones too)
 *   osl                output tokens                  (successful completions)
 *
 * and the counters total_samples_{issued,completed,failed},
 * tracked_samples_{issued,completed,failed}, tracked_finish_reason_<reason>
 * (stop, length, tool_calls, content_filter, function_call, other),
 * tracked_duration_ns, total_duration_ns, plus the gauges qps and tps over the
 * tracked duration and a "requests" section in every snapshot.
 *
 * Token counts (isl from prompt text, osl, the tpot denominator) go through
 * the token batch queue and arrive later; until they do they are pending
 * tasks (n_pending_tasks). Without a tokenizer the module reports everything
 * else and the section says "token_metrics": "off".
 *
 * Records for a request that is not in flight (an unknown id, a second
 * complete, a chunk after the complete) are ignored and counted in
 * requests_ignored_records; a second issued record for an id in flight is
 * ignored the same way. Malformed records (short payloads, a finish reason
 * longer than the payload, a timestamp before the request's issue time) are
 * rejected: on_record returns -1 and the engine counts them.
 */
#ifndef OBSD_ENGINE_REQUESTS_H
#define OBSD_ENGINE_REQUESTS_H

#include "engine/module.h"

extern const struct module_ops requests_module_ops;

#endif
