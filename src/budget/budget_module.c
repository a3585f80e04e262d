/*
 * budget_module.c: the budget aggregator as an engine module (module.h).
 * It owns the record types OBSD_REC_BUDGET_FIRST..LAST and the snapshot
 * section "budget".
 */
#include <stdio.h>
#include <stdlib.h>

#include "budget/budget.h"
#include "budget/budget_wire.h"
#include "engine/module.h"

struct budget_module {
    struct budget_agg *agg;
    void (*log)(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
    uint64_t logged;          /* rejections logged so far (the first few only) */
};

static void *budget_create(const struct module_env *env, char *err, size_t errlen)
{
    struct budget_module *m = calloc(1, sizeof *m);
    if (m)
        m->agg = budget_agg_new();
    if (!m || !m->agg) {
        free(m);
        snprintf(err, errlen, "budget: out of memory");
        return NULL;
    }
    m->log = env ? env->log : NULL;
    return m;
}

static void budget_destroy(void *state)
{
    struct budget_module *m = state;
    if (!m)
        return;
    budget_agg_free(m->agg);
    free(m);
}

static void budget_reset(void *state)
{
    struct budget_module *m = state;
    budget_agg_reset(m->agg);
}

static int budget_on_record(void *state, const struct shm_producer *from, const struct shm_record *rec)
{
    struct budget_module *m = state;
    char err[256];
    int rc = budget_agg_record(m->agg, from ? (uint32_t)from->pid : 0, rec->type, rec->key, rec->payload,
                               rec->len, err, sizeof err);
    if (rc < 0 && m->log && m->logged < 10) {
        m->logged++;
        m->log(1, "budget: rejected a record of pid %d: %s%s", from ? (int)from->pid : 0, err,
               m->logged == 10 ? " (further rejections are only counted)" : "");
    }
    return rc;
}

static void budget_on_session(void *state, int event, uint64_t ts_ns)
{
    (void)state;
    (void)event;
    (void)ts_ns;  /* contexts live and die by their own records */
}

static void budget_on_tick(void *state)
{
    (void)state;
}

static uint64_t budget_pending(void *state)
{
    (void)state;
    return 0;
}

static int budget_contribute(void *state, struct snapshot *snap, bool final)
{
    (void)final;
    struct budget_module *m = state;
    /* A run that sent no budget record gets no section: an empty one would
     * read as "budgets were used and nothing was charged". */
    if (budget_agg_records(m->agg) == 0)
        return 0;
    json_t *section = budget_agg_json(m->agg);
    if (!section)
        return -1;
    return snapshot_set_section(snap, "budget", section);
}

const struct module_ops budget_module_ops = {
    .name = "budget",
    .type_first = OBSD_REC_BUDGET_FIRST,
    .type_last = OBSD_REC_BUDGET_LAST,
    .create = budget_create,
    .destroy = budget_destroy,
    .reset = budget_reset,
    .on_record = budget_on_record,
    .on_session = budget_on_session,
    .on_tick = budget_on_tick,
    .pending = budget_pending,
    .contribute = budget_contribute,
};
