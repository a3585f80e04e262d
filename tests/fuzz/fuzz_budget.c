/*
 * fuzz_budget: the collector's decoding of budget records (budget_wire.h).
 *
 * The first byte picks the record type (open, progress, close, or another),
 * the next two the context id; the rest is the payload. One aggregator lives
 * for the whole run, so contexts opened by one input are closed or updated by
 * later ones, and the section is rebuilt after every input, as at each
 * snapshot. Nothing may read out of bounds, leak or build invalid JSON.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "budget/budget.h"
#include "budget/budget_wire.h"

static struct budget_agg *g_agg;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!g_agg)
        g_agg = budget_agg_new();
    if (size < 3)
        return 0;
    uint8_t type = (uint8_t)(OBSD_REC_BUDGET_FIRST + data[0] % 4);
    uint32_t key = (uint32_t)data[1] | (uint32_t)data[2] << 8;
    /* copy so the payload is exactly size - 3 bytes for ASan to guard */
    size_t len = size - 3;
    unsigned char *payload = malloc(len ? len : 1);
    if (!payload)
        return 0;
    memcpy(payload, data + 3, len);
    char err[256];
    budget_agg_record(g_agg, 1, type, key, payload, len, err, sizeof err);
    free(payload);
    json_t *j = budget_agg_json(g_agg);
    if (j) {
        char *text = json_dumps(j, JSON_COMPACT);
        if (!text)
            abort();
        free(text);
        json_t *rep = budget_report_json(j, err, sizeof err);
        if (!rep)
            abort();    /* the aggregator's own section must always be readable */
        json_decref(rep);
        json_decref(j);
    }
    /* keep memory bounded over long runs */
    if (key == 0xffff)
        budget_agg_reset(g_agg);
    return 0;
}
