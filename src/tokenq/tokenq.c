/*
 * tokenq.c: the token batch queue (see tokenq.h).
 *
 * One mutex guards the two pending lists (texts in memory, texts in the spill
 * file), the live slice and the completion list; counting itself runs outside
 * it. Items are taken from the front and a failed item goes back to the front,
 * so order is kept and nothing is dropped.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tokenq/tokenq.h"

typedef struct item {
    struct item *next;
    uint64_t target;
    size_t len;
    off_t off;    /* in the spill file, when spilled */
    bool spilled;
    char text[];  /* in-memory text */
} item;

typedef struct {
    item *head, *tail;
} list;

typedef struct {
    uint64_t target, count;
} result;

struct tokenq {
    tokenq_config cfg;
    pthread_mutex_t lock;
    pthread_cond_t live_cv, idle_cv;
    list mem, spill;
    size_t mem_bytes;
    atomic_uint_fast64_t pending, spilled;
    /* spill file: unlinked, appended to, truncated when empty */
    int spill_fd;
    off_t spill_end;
    /* live lane */
    pthread_t *live;
    unsigned nlive;
    bool stop;
    item *slice[TOKENQ_SLICE_MAX];
    bool slice_failed[TOKENQ_SLICE_MAX];
    size_t slice_n, slice_next, slice_done;
    /* completions */
    result *res;
    size_t nres, capres;
};

static void list_push_back(list *l, item *it)
{
    it->next = NULL;
    if (l->tail)
        l->tail->next = it;
    else
        l->head = it;
    l->tail = it;
}

static void list_push_front(list *l, item *it)
{
    it->next = l->head;
    l->head = it;
    if (!l->tail)
        l->tail = it;
}

static item *list_pop(list *l)
{
    item *it = l->head;
    if (it) {
        l->head = it->next;
        if (!l->head)
            l->tail = NULL;
    }
    return it;
}

static int64_t count_text(tokenq *q, const char *text, size_t len)
{
    if (q->cfg.count)
        return q->cfg.count(q->cfg.count_ctx, text, len);
    return tokenizer_count(q->cfg.tok, text, len);
}

/* Under the lock. A failed append is retried by leaving the item pending. */
static bool add_result(tokenq *q, uint64_t target, uint64_t count)
{
    if (q->nres == q->capres) {
        size_t c = q->capres ? q->capres * 2 : 256;
        result *r = realloc(q->res, c * sizeof *r);
        if (!r)
            return false;
        q->res = r;
        q->capres = c;
    }
    q->res[q->nres++] = (result){target, count};
    return true;
}

/* Under the lock: records a counted item and frees it. */
static bool complete(tokenq *q, item *it, int64_t count)
{
    if (count < 0 || !add_result(q, it->target, (uint64_t)count))
        return false;
    if (it->spilled)
        atomic_fetch_sub(&q->spilled, 1);
    else
        q->mem_bytes -= it->len;
    atomic_fetch_sub(&q->pending, 1);
    free(it);
    return true;
}

static void *live_main(void *arg)
{
    tokenq *q = arg;
    pthread_mutex_lock(&q->lock);
    while (!q->stop) {
        if (q->slice_next < q->slice_n) {
            size_t i = q->slice_next++;
            item *it = q->slice[i];
            pthread_mutex_unlock(&q->lock);
            int64_t c = count_text(q, it->text, it->len);
            pthread_mutex_lock(&q->lock);
            q->slice_failed[i] = !complete(q, it, c);
            if (++q->slice_done == q->slice_n) {
                /* failed items go back to the front, in their order */
                for (size_t k = q->slice_n; k-- > 0;)
                    if (q->slice_failed[k])
                        list_push_front(&q->mem, q->slice[k]);
                q->slice_n = q->slice_next = q->slice_done = 0;
                pthread_cond_broadcast(&q->idle_cv);
            }
            continue;
        }
        pthread_cond_wait(&q->live_cv, &q->lock);
    }
    pthread_mutex_unlock(&q->lock);
    return NULL;
}

tokenq *tokenq_create(const tokenq_config *cfg)
{
    if (!cfg || (!cfg->tok && !cfg->count)) {
        errno = EINVAL;
        return NULL;
    }
    tokenq *q = calloc(1, sizeof *q);
    if (!q)
        return NULL;
    q->cfg = *cfg;
    if (!q->cfg.memory_cap)
        q->cfg.memory_cap = 64u << 20;
    q->spill_fd = -1;
    pthread_mutex_init(&q->lock, NULL);
    pthread_cond_init(&q->live_cv, NULL);
    pthread_cond_init(&q->idle_cv, NULL);
    atomic_init(&q->pending, 0);
    atomic_init(&q->spilled, 0);
    if (cfg->live_workers) {
        q->live = calloc(cfg->live_workers, sizeof *q->live);
        if (!q->live) {
            tokenq_destroy(q);
            errno = ENOMEM;
            return NULL;
        }
        for (unsigned i = 0; i < cfg->live_workers; i++) {
            int e = pthread_create(&q->live[i], NULL, live_main, q);
            if (e) {
                tokenq_destroy(q);
                errno = e;
                return NULL;
            }
            q->nlive++;
        }
    }
    return q;
}

void tokenq_destroy(tokenq *q)
{
    if (!q)
        return;
    pthread_mutex_lock(&q->lock);
    while (q->slice_n)
        pthread_cond_wait(&q->idle_cv, &q->lock);
    q->stop = true;
    pthread_cond_broadcast(&q->live_cv);
    pthread_mutex_unlock(&q->lock);
    for (unsigned i = 0; i < q->nlive; i++)
        pthread_join(q->live[i], NULL);
    free(q->live);
    for (list *l = &q->mem; l; l = l == &q->mem ? &q->spill : NULL)
        for (item *it; (it = list_pop(l));)
            free(it);
    if (q->spill_fd >= 0)
        close(q->spill_fd);
    free(q->res);
    pthread_mutex_destroy(&q->lock);
    pthread_cond_destroy(&q->live_cv);
    pthread_cond_destroy(&q->idle_cv);
    free(q);
}

static int spill_open(tokenq *q)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/obsd-tokenq.XXXXXX", q->cfg.spill_dir ? q->cfg.spill_dir : "/tmp");
    int fd = mkstemp(path);
    if (fd < 0)
        return -1;
    unlink(path); /* gone with the process, whatever happens */
    q->spill_fd = fd;
    q->spill_end = 0;
    return 0;
}

int tokenq_push(tokenq *q, const char *text, size_t len, uint64_t target)
{
    pthread_mutex_lock(&q->lock);
    bool in_memory = q->mem_bytes + len <= q->cfg.memory_cap;
    pthread_mutex_unlock(&q->lock);
    item *it = malloc(sizeof *it + (in_memory ? len : 0));
    if (!it) {
        errno = ENOMEM;
        return -1;
    }
    it->target = target;
    it->len = len;
    it->spilled = !in_memory;
    if (in_memory) {
        memcpy(it->text, text, len);
    } else {
        /* only this thread writes the file, so the offset needs no lock */
        if (q->spill_fd < 0 && spill_open(q)) {
            free(it);
            errno = EIO;
            return -1;
        }
        it->off = q->spill_end;
        for (size_t done = 0; done < len;) {
            ssize_t w = pwrite(q->spill_fd, text + done, len - done, it->off + (off_t)done);
            if (w <= 0) {
                free(it);
                errno = EIO;
                return -1;
            }
            done += (size_t)w;
        }
        q->spill_end += (off_t)len;
    }
    pthread_mutex_lock(&q->lock);
    if (in_memory) {
        q->mem_bytes += len;
        list_push_back(&q->mem, it);
    } else {
        atomic_fetch_add(&q->spilled, 1);
        list_push_back(&q->spill, it);
    }
    atomic_fetch_add(&q->pending, 1);
    pthread_mutex_unlock(&q->lock);
    return 0;
}

size_t tokenq_live_flush(tokenq *q)
{
    if (!q->nlive)
        return 0;
    pthread_mutex_lock(&q->lock);
    size_t n = 0;
    if (!q->slice_n) {
        item *it;
        while (n < TOKENQ_SLICE_MAX && (it = list_pop(&q->mem))) {
            q->slice[n] = it;
            q->slice_failed[n] = false;
            n++;
        }
        q->slice_n = n;
        q->slice_next = q->slice_done = 0;
        if (n)
            pthread_cond_broadcast(&q->live_cv);
    }
    pthread_mutex_unlock(&q->lock);
    return n;
}

typedef struct {
    tokenq *q;
    uint64_t deadline_ns; /* 0: none */
    atomic_int err;
} drain_job;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void *drain_main(void *arg)
{
    drain_job *j = arg;
    tokenq *q = j->q;
    char *buf = NULL;
    size_t cap = 0;
    for (;;) {
        if (atomic_load(&j->err))
            break;
        if (j->deadline_ns && now_ns() >= j->deadline_ns) {
            int zero = 0;
            atomic_compare_exchange_strong(&j->err, &zero, ETIMEDOUT);
            break;
        }
        pthread_mutex_lock(&q->lock);
        item *it = list_pop(&q->mem);
        if (!it)
            it = list_pop(&q->spill);
        pthread_mutex_unlock(&q->lock);
        if (!it)
            break;
        const char *text = it->text;
        int64_t c;
        if (it->spilled) {
            if (it->len > cap) {
                char *b = realloc(buf, it->len);
                if (b) {
                    buf = b;
                    cap = it->len;
                }
            }
            size_t done = 0;
            if (cap >= it->len) {
                while (done < it->len) {
                    ssize_t r = pread(q->spill_fd, buf + done, it->len - done, it->off + (off_t)done);
                    if (r <= 0)
                        break;
                    done += (size_t)r;
                }
            }
            text = buf;
            c = done == it->len ? count_text(q, text, it->len) : -EIO;
        } else {
            c = count_text(q, text, it->len);
        }
        pthread_mutex_lock(&q->lock);
        bool ok = complete(q, it, c);
        if (!ok)
            list_push_front(it->spilled ? &q->spill : &q->mem, it);
        pthread_mutex_unlock(&q->lock);
        if (!ok) {
            int zero = 0;
            atomic_compare_exchange_strong(&j->err, &zero, c == -EIO ? EIO : c == TOKENIZER_ENOMEM ? ENOMEM : EIO);
            break;
        }
    }
    free(buf);
    return NULL;
}

int tokenq_drain(tokenq *q, uint64_t timeout_ns)
{
    drain_job j = {.q = q, .deadline_ns = timeout_ns ? now_ns() + timeout_ns : 0};
    atomic_init(&j.err, 0);
    pthread_mutex_lock(&q->lock);
    while (q->slice_n)
        pthread_cond_wait(&q->idle_cv, &q->lock);
    pthread_mutex_unlock(&q->lock);

    cpu_set_t allowed;
    CPU_ZERO(&allowed);
    if (sched_getaffinity(0, sizeof allowed, &allowed) != 0)
        CPU_SET(0, &allowed);
    int ncpu = CPU_COUNT(&allowed);
    pthread_t *th = calloc((size_t)ncpu, sizeof *th);
    int started = 0;
    if (th) {
        for (int cpu = 0; cpu < CPU_SETSIZE && started < ncpu; cpu++) {
            if (!CPU_ISSET(cpu, &allowed))
                continue;
            pthread_attr_t attr;
            pthread_attr_init(&attr);
            cpu_set_t one;
            CPU_ZERO(&one);
            CPU_SET(cpu, &one);
            pthread_attr_setaffinity_np(&attr, sizeof one, &one);
            if (pthread_create(&th[started], &attr, drain_main, &j) == 0)
                started++;
            pthread_attr_destroy(&attr);
        }
    }
    if (started == 0)
        drain_main(&j); /* no thread could start: drain on this one */
    for (int i = 0; i < started; i++)
        pthread_join(th[i], NULL);
    free(th);

    pthread_mutex_lock(&q->lock);
    bool empty = !q->mem.head && !q->spill.head;
    if (!q->spill.head && q->spill_fd >= 0 && q->spill_end > 0 && ftruncate(q->spill_fd, 0) == 0)
        q->spill_end = 0;
    pthread_mutex_unlock(&q->lock);
    if (empty)
        return 0;
    errno = atomic_load(&j.err) ? atomic_load(&j.err) : EIO;
    return -1;
}

size_t tokenq_poll_results(tokenq *q, tokenq_result_fn fn, void *ctx)
{
    pthread_mutex_lock(&q->lock);
    result *r = q->res;
    size_t n = q->nres;
    q->res = NULL;
    q->nres = q->capres = 0;
    pthread_mutex_unlock(&q->lock);
    for (size_t i = 0; i < n; i++)
        fn(ctx, r[i].target, r[i].count);
    free(r);
    return n;
}

uint64_t tokenq_pending(const tokenq *q)
{
    return atomic_load(&((tokenq *)q)->pending);
}

uint64_t tokenq_spilled(const tokenq *q)
{
    return atomic_load(&((tokenq *)q)->spilled);
}
