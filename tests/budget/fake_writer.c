/* fake_writer.c: see fake_writer.h. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fake_writer.h"
#include "shm/producer_internal.h"

static __thread struct fake_record *recs;
static __thread size_t n_recs;
static __thread char last_error[512];
static int status = OBSD_OK;
static char handle_storage;

struct obsd *fake_handle(void)
{
    return (struct obsd *)(void *)&handle_storage;
}

size_t fake_count(void)
{
    return n_recs;
}

const struct fake_record *fake_get(size_t i)
{
    return i < n_recs ? &recs[i] : NULL;
}

void fake_reset(void)
{
    for (size_t i = 0; i < n_recs; i++)
        free(recs[i].payload);
    free(recs);
    recs = NULL;
    n_recs = 0;
}

void fake_set_status(int s)
{
    status = s;
}

int obsd__write2(obsd_t *h, uint8_t type, uint8_t flags, uint32_t key, const void *a, size_t alen,
                 const void *b, size_t blen)
{
    if (!h)
        return OBSD_EINVAL;
    if (status != OBSD_OK)
        return status;
    recs = realloc(recs, (n_recs + 1) * sizeof *recs);
    struct fake_record *r = &recs[n_recs++];
    r->type = type;
    r->flags = flags;
    r->key = key;
    r->len = alen + blen;
    r->payload = malloc(r->len ? r->len : 1);
    memcpy(r->payload, a, alen);
    if (blen)
        memcpy(r->payload + alen, b, blen);
    return OBSD_OK;
}

int obsd__write(obsd_t *h, uint8_t type, uint8_t flags, uint32_t key, const void *payload, size_t len)
{
    return obsd__write2(h, type, flags, key, payload, len, NULL, 0);
}

void obsd__set_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
}

const char *obsd_last_error(void)
{
    return last_error;
}

int obsd_flush(obsd_t *h)
{
    return h ? OBSD_OK : OBSD_EINVAL;
}

uint64_t obsd_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}
