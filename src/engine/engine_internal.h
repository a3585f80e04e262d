/*
 * engine_internal.h: pieces of the engine shared between its files and its
 * tests (not an API for other modules).
 */
#ifndef OBSD_ENGINE_INTERNAL_H
#define OBSD_ENGINE_INTERNAL_H

#include <sched.h>
#include <stddef.h>

#include "engine/module.h"

/* The registry (modules.c): NULL-terminated. */
extern const struct module_ops *const engine_modules[];

/* Parses a CPU list such as "0-1,3" into set. Returns 0, or -1 with a
 * message in err naming what is wrong. */
int engine_parse_cpus(const char *list, cpu_set_t *set, char *err, size_t errlen);

/* Log threshold of engine_log (0 error .. 3 debug). */
void engine_set_log_level(int level);
void engine_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
