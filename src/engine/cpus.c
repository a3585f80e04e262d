/* cpus.c: CPU list parsing ("0-1,3") for the collector's affinity. */
#include "engine/engine_internal.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

static int parse_num(const char **p, long *out)
{
    if (!isdigit((unsigned char)**p))
        return -1;
    char *end;
    errno = 0;
    long v = strtol(*p, &end, 10);
    if (errno || v < 0 || v >= CPU_SETSIZE)
        return -1;
    *p = end;
    *out = v;
    return 0;
}

int engine_parse_cpus(const char *list, cpu_set_t *set, char *err, size_t errlen)
{
    CPU_ZERO(set);
    const char *p = list;
    if (!p || !*p) {
        snprintf(err, errlen, "cpus: empty CPU list (expected e.g. \"0-1,3\")");
        return -1;
    }
    for (;;) {
        long a, b;
        const char *at = p;
        if (parse_num(&p, &a) < 0)
            goto bad;
        b = a;
        if (*p == '-') {
            p++;
            if (parse_num(&p, &b) < 0 || b < a)
                goto bad;
        }
        for (long i = a; i <= b; i++)
            CPU_SET((int)i, set);
        if (*p == '\0')
            return 0;
        if (*p != ',')
            goto bad;
        p++;
        continue;
    bad:
        snprintf(err, errlen, "cpus: bad CPU list \"%s\" near \"%s\" (expected numbers 0..%d "
                 "and ranges a-b separated by commas, e.g. \"0-1,3\")", list, at, CPU_SETSIZE - 1);
        return -1;
    }
}

static int log_level = 2;

void engine_set_log_level(int level)
{
    log_level = level;
}

void engine_log(int level, const char *fmt, ...)
{
    static const char *const tag[] = {"error", "warning", "info", "debug"};
    if (level > log_level)
        return;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    fprintf(stderr, "obsd: %s: %s\n", tag[level < 0 ? 0 : level > 3 ? 3 : level], line);
}
