/*
 * obsd_budget.h: FLOP budget contexts and the wall = backend + overhead +
 * residual timing split (placeholder; the budget module fills this in).
 * Included by obsd.h.
 */
#ifndef OBSD_OBSD_BUDGET_H
#define OBSD_OBSD_BUDGET_H
#endif
