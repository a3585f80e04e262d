/* modules.c: the registry of collector-side modules, driven by the engine.
 * A module engineer adds one line (and its header) when the module is ready. */
#include "engine/engine_internal.h"
#include "budget/budget.h"
#include "engine/requests.h"
#include "sched/sched.h"

const struct module_ops *const engine_modules[] = {
    &requests_module_ops,
    &budget_module_ops,
    &sched_module_ops,
    NULL,
};
