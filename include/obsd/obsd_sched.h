/*
 * obsd_sched.h: per-worker scheduler counter blocks of behavior runtimes
 * (placeholder; the sched module fills this in). Included by obsd.h.
 */
#ifndef OBSD_OBSD_SCHED_H
#define OBSD_OBSD_SCHED_H
#endif
