/*
 * producer.c: libobsd's producer side of the segment: open, key interning,
 * per-thread rings, the record writer (single records and fragments), drops,
 * block mode, the doorbell, session events and request records.
 *
 * The ring protocol and its memory ordering are described in segment.h.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "obsd/obsd.h"
#include "shm/producer_internal.h"
#include "shm/segment.h"
#include "shm/shm.h"

#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)

#if defined(__x86_64__) || defined(__i386__)
#define cpu_relax() __builtin_ia32_pause()
#elif defined(__aarch64__)
#define cpu_relax() __asm__ __volatile__("yield")
#else
#define cpu_relax() ((void)0)
#endif

/* A fragmented message waits for the collector only while it makes
 * progress: this long without the tail moving (or at once if no collector is
 * attached) and the rest is dropped. Generous, because a loaded machine may
 * deschedule the collector for a while; a dead one is noticed at once. */
#define FRAG_STALL_NS (1000ull * 1000 * 1000)
/* A thread that found no free slot retries the claim after this many drops. */
#define NOSLOT_RETRY 4096u

/* One claimed ring, as its owner thread sees it. */
struct pring {
    struct seg_ring_ctl *ctl;
    unsigned char *data;
    uint64_t size, mask;
    uint64_t head;          /* == ctl->head once published */
    uint64_t tail_cache;    /* last tail loaded; the true tail is >= this */
    uint64_t written, dropped;              /* mirrors of ctl->written/dropped */
    uint64_t written_base, dropped_base;    /* their values at claim */
    uint32_t slot;
    uint32_t frag_seq;
    int32_t pid;
    struct pring *next;     /* in the handle's list */
};

struct keycache_entry {
    char *name;
    uint32_t id;
};

struct obsd {
    uint64_t id;                /* unique per handle in the process, for TLS caches */
    uint32_t keys_count;        /* == L.keys_count, beside id: check_key reads it from
                                   the cache line ring_get() loads anyway */
    void *base;
    size_t size;
    struct seg_header *hdr;
    struct seg_layout L;
    uint32_t max_payload;       /* largest single-record payload */
    uint32_t full_policy;
    uint64_t block_timeout_ns;
    char name[SEG_NAME_MAX + 1];

    pthread_mutex_t lock;       /* rings list and key cache */
    struct pring *rings;
    struct keycache_entry *keys;
    size_t keys_cap, keys_n;

    _Atomic uint64_t retired_written, retired_dropped;  /* of released rings */
    _Atomic uint64_t noslot_dropped, refused;

    struct obsd *next_live;
};

/* Process-wide registry of open handles: the thread-exit destructor and
 * fork handling find handles through it, never through a stale pointer. */
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static struct obsd *g_live;
static uint64_t g_next_id = 1;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static pthread_key_t g_thread_key;

/* A thread's rings, one per handle it wrote to. */
struct tls_entry {
    obsd_t *h;
    uint64_t id;
    struct pring *r;        /* NULL: no slot was free */
    uint32_t noslot_skip;
    int no_room;            /* errno of the last claim /dev/shm had no pages for */
};
struct tls_state {
    struct tls_entry *e;
    size_t n, cap;
};

/* initial-exec: the record path reads tls_last with one %fs-relative load
 * instead of a __tls_get_addr call (libobsd is built position-independent).
 * It needs only a few bytes of the static TLS surplus glibc keeps for
 * libraries loaded with dlopen(), as the Python binding does. */
#define TLS_IE __attribute__((tls_model("initial-exec")))
static __thread struct tls_entry tls_last TLS_IE;  /* the fast path's one-entry cache */
static __thread struct tls_state *tls_st TLS_IE;
static __thread char tls_err[256];

void obsd__set_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tls_err, sizeof tls_err, fmt, ap);
    va_end(ap);
}

const char *obsd_last_error(void)
{
    return tls_err;
}

uint64_t obsd_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ------------------------------------------------------------------ */
/* Handles, threads, fork                                              */

static obsd_t *live_find(obsd_t *h, uint64_t id)
{
    for (obsd_t *p = g_live; p; p = p->next_live)
        if (p == h && p->id == id)
            return p;
    return NULL;
}

/* Marks the ring released; the collector frees the slot once drained.
 * Caller holds h->lock. */
static void ring_release_locked(obsd_t *h, struct pring *r)
{
    atomic_fetch_add_explicit(&h->retired_written, r->written - r->written_base, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->retired_dropped, r->dropped - r->dropped_base, memory_order_relaxed);
    for (struct pring **pp = &h->rings; *pp; pp = &(*pp)->next) {
        if (*pp == r) {
            *pp = r->next;
            break;
        }
    }
    /* head was published with the last record; this release orders it
     * before the state change the collector acquires. */
    atomic_store_explicit(&r->ctl->state, seg_slot_word(SEG_SLOT_CLOSING, r->pid), memory_order_release);
    free(r);
}

static void thread_exit(void *arg)
{
    struct tls_state *st = arg;
    pthread_mutex_lock(&g_lock);
    for (size_t i = 0; i < st->n; i++) {
        obsd_t *h = live_find(st->e[i].h, st->e[i].id);
        if (h && st->e[i].r) {
            pthread_mutex_lock(&h->lock);
            ring_release_locked(h, st->e[i].r);
            pthread_mutex_unlock(&h->lock);
        }
    }
    pthread_mutex_unlock(&g_lock);
    free(st->e);
    free(st);
    tls_st = NULL;
    memset(&tls_last, 0, sizeof tls_last);
}

static void atfork_prepare(void)
{
    pthread_mutex_lock(&g_lock);
    for (obsd_t *h = g_live; h; h = h->next_live)
        pthread_mutex_lock(&h->lock);
}

static void atfork_parent(void)
{
    for (obsd_t *h = g_live; h; h = h->next_live)
        pthread_mutex_unlock(&h->lock);
    pthread_mutex_unlock(&g_lock);
}

/* The child shares the segment but not the parent's rings: a ring has one
 * writer. Forget them (they stay the parent's) and claim new ones on the
 * child's first record. */
static void atfork_child(void)
{
    for (obsd_t *h = g_live; h; h = h->next_live) {
        h->rings = NULL;  /* the structs are the parent's; leaked by design */
        atomic_store(&h->retired_written, 0);
        atomic_store(&h->retired_dropped, 0);
        atomic_store(&h->noslot_dropped, 0);
        atomic_store(&h->refused, 0);
        pthread_mutex_unlock(&h->lock);
    }
    if (tls_st)
        tls_st->n = 0;
    memset(&tls_last, 0, sizeof tls_last);
    pthread_mutex_unlock(&g_lock);
}

static void global_init(void)
{
    pthread_key_create(&g_thread_key, thread_exit);
    pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
}

obsd_t *obsd_open(const char *name)
{
    pthread_once(&g_once, global_init);
    if (!seg_name_ok(name)) {
        obsd__set_error("bad segment name \"%s\": 1..%u characters of [A-Za-z0-9_.-]",
                        name ? name : "(null)", SEG_NAME_MAX);
        return NULL;
    }
    char path[sizeof SEG_PATH_PREFIX + SEG_NAME_MAX];
    snprintf(path, sizeof path, SEG_PATH_PREFIX "%s", name);
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT)
            obsd__set_error("no segment %s: is the collector (obsd) running with name \"%s\"?", path, name);
        else
            obsd__set_error("cannot open %s: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) < 0 || (uint64_t)st.st_size < SEG_HEADER_BYTES) {
        obsd__set_error("segment obsd.%s is too small to be an obsd segment", name);
        close(fd);
        return NULL;
    }
    struct seg_header copy;
    if (pread(fd, &copy, sizeof copy, 0) != (ssize_t)sizeof copy) {
        obsd__set_error("cannot read the header of %s: %s", path, strerror(errno));
        close(fd);
        return NULL;
    }
    struct seg_layout L;
    char err[256];
    if (seg_header_check(&copy, (uint64_t)st.st_size, name, &L, err, sizeof err) < 0) {
        obsd__set_error("%s", err);
        close(fd);
        return NULL;
    }
    void *base = mmap(NULL, L.segment_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (base == MAP_FAILED) {
        obsd__set_error("cannot map %s: %s", path, strerror(errno));
        return NULL;
    }
    obsd_t *h = calloc(1, sizeof *h);
    if (!h) {
        munmap(base, L.segment_bytes);
        obsd__set_error("out of memory");
        return NULL;
    }
    h->base = base;
    h->size = L.segment_bytes;
    h->hdr = base;
    h->L = L;
    h->keys_count = L.keys_count;
    h->max_payload = seg_max_record_payload(L.ring_bytes);
    h->full_policy = copy.full_policy;
    h->block_timeout_ns = copy.block_timeout_ns;
    snprintf(h->name, sizeof h->name, "%s", name);
    pthread_mutex_init(&h->lock, NULL);

    pthread_mutex_lock(&g_lock);
    h->id = g_next_id++;
    h->next_live = g_live;
    g_live = h;
    pthread_mutex_unlock(&g_lock);
    return h;
}

void obsd_close(obsd_t *h)
{
    if (!h)
        return;
    pthread_mutex_lock(&g_lock);
    for (obsd_t **pp = &g_live; *pp; pp = &(*pp)->next_live) {
        if (*pp == h) {
            *pp = h->next_live;
            break;
        }
    }
    pthread_mutex_lock(&h->lock);
    while (h->rings)
        ring_release_locked(h, h->rings);
    pthread_mutex_unlock(&h->lock);
    pthread_mutex_unlock(&g_lock);
    if (tls_last.h == h)
        memset(&tls_last, 0, sizeof tls_last);
    for (size_t i = 0; i < h->keys_n; i++)
        free(h->keys[i].name);
    free(h->keys);
    pthread_mutex_destroy(&h->lock);
    munmap(h->base, h->size);
    free(h);
}

/* ------------------------------------------------------------------ */
/* Ring claim                                                          */

#ifdef MADV_POPULATE_WRITE
/* madvise wants a page-aligned start; a slot (256 bytes of control plus the
 * ring) starts on a page boundary only every 16 slots, so round down: the
 * extra bytes belong to the previous slot, whose pages exist anyway. */
static int populate(void *start, uint64_t len)
{
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t a = (uintptr_t)start & ~(page - 1);
    return madvise((void *)a, (size_t)((uintptr_t)start - a + len), MADV_POPULATE_WRITE);
}
#endif

/* Fills *no_room with an errno when the segment's file system had no pages
 * for the ring (see ring_claim); 0 otherwise. */
static struct pring *ring_claim(obsd_t *h, int *no_room)
{
    *no_room = 0;
    pid_t pid = getpid();
    pid_t tid = (pid_t)syscall(SYS_gettid);
    struct pring *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    uint32_t n = h->L.max_producers;
    uint32_t start = (uint32_t)tid % n;
    for (uint32_t k = 0; k < n; k++) {
        uint32_t slot = (start + k) % n;
        struct seg_ring_ctl *ctl = seg_ring_ctl(h->base, &h->L, slot);
        uint32_t expect = SEG_SLOT_FREE;
        if (atomic_load_explicit(&ctl->state, memory_order_relaxed) != SEG_SLOT_FREE)
            continue;
        /* Fault the ring's pages in before claiming it, not one by one on the
         * record path. The segment is a sparse file in /dev/shm: when that
         * tmpfs is full (a container's default is 64 MiB) a write into an
         * unbacked page is SIGBUS in the benchmark. Populating first turns
         * that into a refused claim: the records are dropped and counted.
         * Populating a slot someone else claims meanwhile only allocates
         * pages it would get anyway; content is never changed. EINVAL: a
         * kernel before 5.14, which has no MADV_POPULATE_WRITE. */
#ifdef MADV_POPULATE_WRITE
        if (populate(ctl, h->L.ring_stride) < 0 && errno != EINVAL) {
            *no_room = errno;
            break;
        }
#endif
        if (!atomic_compare_exchange_strong_explicit(&ctl->state, &expect,
                                                     seg_slot_word(SEG_SLOT_CLAIMED, pid),
                                                     memory_order_acq_rel, memory_order_relaxed))
            continue;
        atomic_store_explicit(&ctl->tid, tid, memory_order_relaxed);
        atomic_fetch_add_explicit(&ctl->claims, 1, memory_order_relaxed);
        r->pid = pid;
        r->ctl = ctl;
        r->data = seg_ring_data(h->base, &h->L, slot);
        r->size = h->L.ring_bytes;
        r->mask = r->size - 1;
        r->slot = slot;
        /* A new owner continues where the previous one stopped. */
        r->head = atomic_load_explicit(&ctl->head, memory_order_relaxed) & ~(uint64_t)(OBSD_REC_ALIGN - 1);
        r->tail_cache = atomic_load_explicit(&ctl->tail, memory_order_acquire);
        if (r->head - r->tail_cache > r->size) /* corrupt: wait for the collector to resync */
            r->tail_cache = r->head - r->size;
        atomic_store_explicit(&ctl->head, r->head, memory_order_release);
        r->written = r->written_base = atomic_load_explicit(&ctl->written, memory_order_relaxed);
        r->dropped = r->dropped_base = atomic_load_explicit(&ctl->dropped, memory_order_relaxed);
        pthread_mutex_lock(&h->lock);
        r->next = h->rings;
        h->rings = r;
        pthread_mutex_unlock(&h->lock);
        return r;
    }
    free(r);
    return NULL;
}

static struct tls_entry *tls_find(obsd_t *h)
{
    struct tls_state *st = tls_st;
    if (!st)
        return NULL;
    for (size_t i = 0; i < st->n; i++)
        if (st->e[i].h == h && st->e[i].id == h->id)
            return &st->e[i];
    return NULL;
}

/* Slow path of ring lookup: this thread's first record on h (or the cache
 * held another handle). Returns NULL if no slot is free (counted). */
static __attribute__((noinline)) struct pring *ring_get_slow(obsd_t *h)
{
    struct tls_entry *e = tls_find(h);
    if (!e) {
        struct tls_state *st = tls_st;
        if (!st) {
            st = calloc(1, sizeof *st);
            if (!st)
                return NULL;
            tls_st = st;
            pthread_setspecific(g_thread_key, st);
        }
        /* Reuse an entry of a closed handle, else grow. */
        pthread_mutex_lock(&g_lock);
        for (size_t i = 0; i < st->n && !e; i++)
            if (!live_find(st->e[i].h, st->e[i].id))
                e = &st->e[i];
        pthread_mutex_unlock(&g_lock);
        if (!e) {
            if (st->n == st->cap) {
                size_t cap = st->cap ? st->cap * 2 : 4;
                struct tls_entry *ne = realloc(st->e, cap * sizeof *ne);
                if (!ne)
                    return NULL;
                st->e = ne;
                st->cap = cap;
            }
            e = &st->e[st->n++];
        }
        e->h = h;
        e->id = h->id;
        e->r = NULL;
        e->noslot_skip = 0;
        e->no_room = 0;
    }
    if (!e->r) {
        if (e->noslot_skip) {
            e->noslot_skip--;
        } else {
            e->r = ring_claim(h, &e->no_room);
            if (!e->r)
                e->noslot_skip = NOSLOT_RETRY;
        }
    }
    if (!e->r) {
        atomic_fetch_add_explicit(&h->hdr->slot_drops, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&h->noslot_dropped, 1, memory_order_relaxed);
        if (e->no_room)
            obsd__set_error("segment obsd.%s: no room in /dev/shm for another ring of %llu bytes "
                            "(%s); enlarge /dev/shm or lower ring_size",
                            h->name, (unsigned long long)h->L.ring_stride, strerror(e->no_room));
        else
            obsd__set_error("segment obsd.%s: all %u ring slots are taken", h->name,
                            h->L.max_producers);
        return NULL;
    }
    tls_last = *e;
    return e->r;
}

static inline struct pring *ring_get(obsd_t *h)
{
    if (likely(tls_last.h == h && tls_last.id == h->id && tls_last.r))
        return tls_last.r;
    return ring_get_slow(h);
}

void obsd_thread_release(obsd_t *h)
{
    if (!h)
        return;
    struct tls_entry *e = tls_find(h);
    if (!e)
        return;
    pthread_mutex_lock(&h->lock);
    if (e->r)
        ring_release_locked(h, e->r);
    pthread_mutex_unlock(&h->lock);
    e->r = NULL;
    e->h = NULL;
    e->id = 0;
    if (tls_last.h == h)
        memset(&tls_last, 0, sizeof tls_last);
}

/* ------------------------------------------------------------------ */
/* Doorbell and waiting                                                */

static void doorbell_ring(obsd_t *h)
{
    uint32_t one = 1;
    if (atomic_compare_exchange_strong(&h->hdr->reader_sleeping, &one, 0)) {
        atomic_fetch_add(&h->hdr->doorbell, 1);
        syscall(SYS_futex, &h->hdr->doorbell, FUTEX_WAKE, 1, NULL, NULL, 0);
    }
}

/* After a publish: wake a sleeping collector if this ring is half full. */
static inline void doorbell_check(obsd_t *h, struct pring *r)
{
    if (likely(!atomic_load_explicit(&h->hdr->reader_sleeping, memory_order_relaxed)))
        return;
    if (r->head - r->tail_cache < r->size / 2)
        return;
    r->tail_cache = atomic_load_explicit(&r->ctl->tail, memory_order_acquire);
    if (r->head - r->tail_cache >= r->size / 2)
        doorbell_ring(h);
}

static bool collector_alive(obsd_t *h)
{
    if (atomic_load_explicit(&h->hdr->collector_state, memory_order_acquire) != SEG_COLLECTOR_RUNNING)
        return false;
    pid_t pid = atomic_load_explicit(&h->hdr->collector_pid, memory_order_relaxed);
    return pid > 0 && (kill(pid, 0) == 0 || errno == EPERM);
}

/* Reloads the tail; true if n more bytes fit. A tail the collector could not
 * have written (ahead of head, or too far behind) means corrupted shared
 * memory: re-publish our head so the collector notices and resyncs. */
static bool space_reload(struct pring *r, uint64_t n)
{
    uint64_t tail = atomic_load_explicit(&r->ctl->tail, memory_order_acquire);
    if (unlikely(r->head - tail > r->size)) {
        atomic_store_explicit(&r->ctl->head, r->head, memory_order_release);
        return false;
    }
    r->tail_cache = tail;
    return r->head + n - tail <= r->size;
}

static inline bool space_ok(struct pring *r, uint64_t n)
{
    return likely(r->head + n - r->tail_cache <= r->size) || space_reload(r, n);
}

enum wait_mode {
    WAIT_NONE,      /* drop mode, single record: never wait */
    WAIT_BLOCK,     /* block mode: up to block_timeout_ns in all */
    WAIT_PROGRESS,  /* fragment: while the collector makes progress */
};

/* Waits until n bytes fit. Spins briefly, then yields, then sleeps in short
 * naps, ringing the doorbell so a sleeping collector drains. */
static bool space_wait(obsd_t *h, struct pring *r, uint64_t n, enum wait_mode mode)
{
    if (mode == WAIT_NONE)
        return false;
    uint64_t limit = mode == WAIT_BLOCK ? h->block_timeout_ns
                                        : (h->full_policy == SHM_FULL_BLOCK && h->block_timeout_ns > FRAG_STALL_NS
                                               ? h->block_timeout_ns : FRAG_STALL_NS);
    if (mode == WAIT_PROGRESS && !collector_alive(h))
        return false;
    uint64_t start = obsd_now(), last_tail = r->tail_cache;
    for (unsigned spin = 0;; spin++) {
        if (space_reload(r, n))
            return true;
        if (mode == WAIT_PROGRESS && r->tail_cache != last_tail) {
            last_tail = r->tail_cache;
            start = obsd_now();
        }
        uint64_t now = obsd_now();
        if (now - start >= limit)
            return false;
        doorbell_ring(h);
        if (spin < 64) {
            cpu_relax();
        } else if (spin < 128) {
            sched_yield();
        } else {
            struct timespec ts = {0, 20000};
            nanosleep(&ts, NULL);
            if (mode == WAIT_PROGRESS && (spin & 255) == 0 && !collector_alive(h))
                return false;
        }
    }
}

/* ------------------------------------------------------------------ */
/* Writing                                                             */

/* Makes room for a record of rec bytes at the head, writing a PAD record
 * first if it would cross the end. Returns the data offset or -1. */
static inline int64_t ring_reserve(obsd_t *h, struct pring *r, uint64_t rec, enum wait_mode mode)
{
    uint64_t off = r->head & r->mask;
    uint64_t pad = off + rec > r->size ? r->size - off : 0;
    if (unlikely(!space_ok(r, pad + rec)) && !space_wait(h, r, pad + rec, mode))
        return -1;
    if (pad) {
        struct obsd_rec_hdr ph = {0, OBSD_REC_PAD, 0, 0};
        memcpy(r->data + off, &ph, sizeof ph);
        r->head += pad;
        off = 0;
    }
    return (int64_t)off;
}

static inline void ring_publish(obsd_t *h, struct pring *r)
{
    atomic_store_explicit(&r->ctl->head, r->head, memory_order_release);
    doorbell_check(h, r);
}

static inline void count_written(struct pring *r)
{
    atomic_store_explicit(&r->ctl->written, ++r->written, memory_order_relaxed);
}

static int count_dropped(obsd_t *h, struct pring *r)
{
    atomic_store_explicit(&r->ctl->dropped, ++r->dropped, memory_order_relaxed);
    if (h->full_policy == SHM_FULL_BLOCK) {
        obsd__set_error("segment obsd.%s: ring full for %llu ns: record dropped", h->name,
                        (unsigned long long)h->block_timeout_ns);
        return OBSD_ETIMEDOUT;
    }
    return OBSD_DROPPED;
}

static inline enum wait_mode single_mode(obsd_t *h)
{
    return h->full_policy == SHM_FULL_BLOCK ? WAIT_BLOCK : WAIT_NONE;
}

/* The hot path: a record with a 16-byte payload of two words. */
static inline __attribute__((always_inline)) int put16(obsd_t *h, uint8_t type, uint32_t key, uint64_t a, uint64_t b)
{
    struct pring *r = ring_get(h);
    if (unlikely(!r))
        return OBSD_ENOSLOT;
    const uint64_t rec = sizeof(struct obsd_rec_hdr) + 16;
    int64_t off = ring_reserve(h, r, rec, single_mode(h));
    if (unlikely(off < 0))
        return count_dropped(h, r);
    struct obsd_rec_hdr hd = {16, type, 0, key};
    uint64_t w[3];
    memcpy(&w[0], &hd, sizeof hd);
    w[1] = a;
    w[2] = b;
    memcpy(r->data + off, w, sizeof w);
    r->head += rec;
    ring_publish(h, r);
    count_written(r);
    return OBSD_OK;
}

static inline __attribute__((always_inline)) int put8(obsd_t *h, uint8_t type, uint32_t key, uint64_t a)
{
    struct pring *r = ring_get(h);
    if (unlikely(!r))
        return OBSD_ENOSLOT;
    const uint64_t rec = sizeof(struct obsd_rec_hdr) + 8;
    int64_t off = ring_reserve(h, r, rec, single_mode(h));
    if (unlikely(off < 0))
        return count_dropped(h, r);
    struct obsd_rec_hdr hd = {8, type, 0, key};
    uint64_t w[2];
    memcpy(&w[0], &hd, sizeof hd);
    w[1] = a;
    memcpy(r->data + off, w, sizeof w);
    r->head += rec;
    ring_publish(h, r);
    count_written(r);
    return OBSD_OK;
}

/* Copies n bytes from the gathered pieces, advancing them. */
static void iov_take(unsigned char *dst, struct iovec *iov, int *iovn, size_t n)
{
    while (n) {
        if (iov->iov_len == 0) {
            iov++;
            (*iovn)--;
            continue;
        }
        size_t k = iov->iov_len < n ? iov->iov_len : n;
        memcpy(dst, iov->iov_base, k);
        dst += k;
        n -= k;
        iov->iov_base = (char *)iov->iov_base + k;
        iov->iov_len -= k;
    }
}

/* Writes one record whose payload is the concatenation of iov[0..n). */
static int write_single(obsd_t *h, struct pring *r, uint8_t type, uint8_t flags, uint32_t key,
                        struct iovec *iov, int n, size_t len)
{
    uint64_t rec = OBSD_REC_SIZE(len);
    int64_t off = ring_reserve(h, r, rec, single_mode(h));
    if (off < 0)
        return count_dropped(h, r);
    struct obsd_rec_hdr hd = {(uint16_t)len, type, flags, key};
    memcpy(r->data + off, &hd, sizeof hd);
    iov_take(r->data + off + sizeof hd, iov, &n, len);
    r->head += rec;
    ring_publish(h, r);
    count_written(r);
    return OBSD_OK;
}

/*
 * A payload larger than one record: OBSD_REC_FRAG records, the first carrying
 * struct obsd_pl_frag_first, all with the message's sequence number as key.
 * Each fragment is published as soon as it is written so the collector can
 * drain while the rest follows. When no room is left the writer waits as long
 * as the collector makes progress (drop mode: it gives up after FRAG_STALL_NS
 * without the tail moving, or at once when no collector is attached; block
 * mode: the larger of that and block_timeout_ns). A message given up midway
 * is counted once as dropped; the collector discards the partial reassembly.
 */
static int write_fragmented(obsd_t *h, struct pring *r, uint8_t type, uint8_t flags, uint32_t key,
                            struct iovec *iov, int n, size_t len)
{
    uint32_t seq = ++r->frag_seq;
    size_t left = len;
    bool first = true;
    while (first || left) {
        size_t lead = first ? sizeof(struct obsd_pl_frag_first) : 0;
        size_t chunk = h->max_payload - lead;
        if (chunk > left)
            chunk = left;
        size_t plen = lead + chunk;
        uint64_t rec = OBSD_REC_SIZE(plen);
        int64_t off = ring_reserve(h, r, rec, WAIT_PROGRESS);
        if (off < 0)
            return count_dropped(h, r);
        uint8_t fl = (first ? OBSD_RECF_FRAG_FIRST : 0) | (chunk == left ? OBSD_RECF_FRAG_LAST : 0);
        struct obsd_rec_hdr hd = {(uint16_t)plen, OBSD_REC_FRAG, fl, seq};
        unsigned char *p = r->data + off;
        memcpy(p, &hd, sizeof hd);
        p += sizeof hd;
        if (first) {
            struct obsd_pl_frag_first ff = {type, flags, 0, key, len};
            memcpy(p, &ff, sizeof ff);
            p += sizeof ff;
        }
        iov_take(p, iov, &n, chunk);
        r->head += rec;
        left -= chunk;
        first = false;
        atomic_store_explicit(&r->ctl->head, r->head, memory_order_release);
    }
    doorbell_check(h, r);
    count_written(r);
    return OBSD_OK;
}

static int writev_rec(obsd_t *h, uint8_t type, uint8_t flags, uint32_t key, struct iovec *iov, int n)
{
    if (!h) {
        obsd__set_error("NULL handle");
        return OBSD_EINVAL;
    }
    size_t len = 0;
    for (int i = 0; i < n; i++) {
        if (!iov[i].iov_base && iov[i].iov_len) {
            atomic_fetch_add_explicit(&h->refused, 1, memory_order_relaxed);
            obsd__set_error("NULL payload with length %zu", iov[i].iov_len);
            return OBSD_EINVAL;
        }
        len += iov[i].iov_len;
    }
    if (type == OBSD_REC_PAD || type == OBSD_REC_FRAG) {
        atomic_fetch_add_explicit(&h->refused, 1, memory_order_relaxed);
        obsd__set_error("record type %u is reserved for framing", type);
        return OBSD_EINVAL;
    }
    if (len > h->L.max_text_bytes + SEG_TEXT_SLACK) {
        atomic_fetch_add_explicit(&h->refused, 1, memory_order_relaxed);
        obsd__set_error("payload of %zu bytes is above the segment's max_text_bytes (%llu)", len,
                        (unsigned long long)h->L.max_text_bytes);
        return OBSD_ETOOBIG;
    }
    struct pring *r = ring_get(h);
    if (!r)
        return OBSD_ENOSLOT;
    if (len <= h->max_payload)
        return write_single(h, r, type, flags, key, iov, n, len);
    return write_fragmented(h, r, type, flags, key, iov, n, len);
}

int obsd__write(obsd_t *h, uint8_t type, uint8_t flags, uint32_t key, const void *payload, size_t len)
{
    struct iovec iov[1] = {{(void *)payload, len}};
    return writev_rec(h, type, flags, key, iov, 1);
}

int obsd__write2(obsd_t *h, uint8_t type, uint8_t flags, uint32_t key,
                 const void *a, size_t alen, const void *b, size_t blen)
{
    struct iovec iov[2] = {{(void *)a, alen}, {(void *)b, blen}};
    return writev_rec(h, type, flags, key, iov, 2);
}

void *obsd__sched_area(obsd_t *h, size_t *bytes)
{
    if (!h) {
        if (bytes)
            *bytes = 0;
        return NULL;
    }
    if (bytes)
        *bytes = (size_t)h->L.sched_workers * SEG_SCHED_BLOCK_BYTES;
    return (char *)h->base + h->L.sched_off;
}

uint64_t obsd__max_message(obsd_t *h)
{
    return h ? h->L.max_text_bytes + SEG_TEXT_SLACK : 0;
}

/* ------------------------------------------------------------------ */
/* Public record functions                                             */

static inline int check_key(obsd_t *h, obsd_key_t key)
{
    if (unlikely(!h || key == 0 || key > h->keys_count)) {
        if (h)
            atomic_fetch_add_explicit(&h->refused, 1, memory_order_relaxed);
        obsd__set_error(h ? "invalid key %u" : "NULL handle", key);
        return OBSD_EINVAL;
    }
    return OBSD_OK;
}

int obsd_span(obsd_t *h, obsd_key_t key, uint64_t start_ns, uint64_t end_ns)
{
    int rc = check_key(h, key);
    if (unlikely(rc))
        return rc;
    return put16(h, OBSD_REC_SPAN, key, start_ns, end_ns);
}

int obsd_value(obsd_t *h, obsd_key_t key, uint64_t value)
{
    int rc = check_key(h, key);
    if (unlikely(rc))
        return rc;
    return put8(h, OBSD_REC_VALUE, key, value);
}

int obsd_counter_add(obsd_t *h, obsd_key_t key, int64_t delta)
{
    int rc = check_key(h, key);
    if (unlikely(rc))
        return rc;
    return put8(h, OBSD_REC_COUNTER, key, (uint64_t)delta);
}

int obsd_gauge_set(obsd_t *h, obsd_key_t key, double value)
{
    int rc = check_key(h, key);
    if (unlikely(rc))
        return rc;
    uint64_t bits;
    memcpy(&bits, &value, sizeof bits);
    return put8(h, OBSD_REC_GAUGE, key, bits);
}

/* Records are published as they are written, so a flush has nothing to
 * publish; it wakes a sleeping collector if this thread has pending data. */
int obsd_flush(obsd_t *h)
{
    if (!h) {
        obsd__set_error("NULL handle");
        return OBSD_EINVAL;
    }
    struct tls_entry *e = tls_last.h == h && tls_last.id == h->id ? &tls_last : tls_find(h);
    if (e && e->r) {
        atomic_thread_fence(memory_order_seq_cst);
        if (atomic_load_explicit(&h->hdr->reader_sleeping, memory_order_relaxed))
            doorbell_ring(h);
    }
    return OBSD_OK;
}

/*
 * A session event on a segment with a scheduler area also carries a sample
 * of the counter blocks read at this moment, so the collector measures the
 * tracking window from the call, not from when it gets to the record
 * (src/sched/sched_wire.h). The sample goes into the same ring: right before
 * the event, except STARTED's, which follows it (so it lands inside the run
 * the event opens); the read itself happens before the event is written.
 * taken_ns: the sample's moment (0: read the clock when sampling).
 */
static int session_write(obsd_t *h, enum obsd_session_event ev, uint64_t ts_ns, uint64_t taken_ns)
{
    if (!h || ev < OBSD_SESSION_STARTED || ev > OBSD_SESSION_INTERRUPTED) {
        if (h)
            atomic_fetch_add_explicit(&h->refused, 1, memory_order_relaxed);
        obsd__set_error(h ? "invalid session event %d" : "NULL handle", (int)ev);
        return OBSD_EINVAL;
    }
    struct obsd__sched_sample smp;
    bool sampled = obsd__sched_sample_take(h, ts_ns, taken_ns, &smp);
    if (sampled && ev != OBSD_SESSION_STARTED)
        obsd__sched_sample_send(h, (uint32_t)ev, &smp);
    int rc = put8(h, OBSD_REC_SESSION, (uint32_t)ev, ts_ns);
    if (sampled && ev == OBSD_SESSION_STARTED)
        obsd__sched_sample_send(h, (uint32_t)ev, &smp);
    obsd__sched_sample_free(&smp);
    /* Session events wake the collector at once: fence so that either it
     * sees our head or we see its sleeping flag. */
    atomic_thread_fence(memory_order_seq_cst);
    if (atomic_load_explicit(&h->hdr->reader_sleeping, memory_order_relaxed))
        doorbell_ring(h);
    return rc;
}

int obsd_session_at(obsd_t *h, enum obsd_session_event ev, uint64_t ts_ns)
{
    return session_write(h, ev, ts_ns, 0);
}

/* One clock read: the event's timestamp is also its sample's moment. */
int obsd_session(obsd_t *h, enum obsd_session_event ev)
{
    uint64_t now = obsd_now();
    return session_write(h, ev, now, now);
}

static int text_check(obsd_t *h, const char *text, size_t len, const char *what)
{
    if (!h) {
        obsd__set_error("NULL handle");
        return OBSD_EINVAL;
    }
    if (!text && len) {
        atomic_fetch_add_explicit(&h->refused, 1, memory_order_relaxed);
        obsd__set_error("%s is NULL with length %zu", what, len);
        return OBSD_EINVAL;
    }
    if (len > h->L.max_text_bytes) {
        atomic_fetch_add_explicit(&h->refused, 1, memory_order_relaxed);
        obsd__set_error("%s of %zu bytes is above the segment's max_text_bytes (%llu)", what, len,
                        (unsigned long long)h->L.max_text_bytes);
        return OBSD_ETOOBIG;
    }
    return OBSD_OK;
}

int obsd_request_issued(obsd_t *h, uint64_t request_id, uint64_t ts_ns,
                        const char *prompt, size_t prompt_len)
{
    int rc = text_check(h, prompt, prompt_len, "prompt");
    if (rc)
        return rc;
    struct obsd_pl_req_issued p = {request_id, ts_ns, OBSD_PROMPT_TOKENS_FROM_TEXT};
    return obsd__write2(h, OBSD_REC_REQ_ISSUED, 0, 0, &p, sizeof p, prompt, prompt_len);
}

int obsd_request_issued_tokens(obsd_t *h, uint64_t request_id, uint64_t ts_ns, uint64_t prompt_tokens)
{
    if (!h) {
        obsd__set_error("NULL handle");
        return OBSD_EINVAL;
    }
    if (prompt_tokens == OBSD_PROMPT_TOKENS_FROM_TEXT) {
        atomic_fetch_add_explicit(&h->refused, 1, memory_order_relaxed);
        obsd__set_error("prompt_tokens %llu is reserved", (unsigned long long)prompt_tokens);
        return OBSD_EINVAL;
    }
    struct obsd_pl_req_issued p = {request_id, ts_ns, prompt_tokens};
    return obsd__write(h, OBSD_REC_REQ_ISSUED, 0, 0, &p, sizeof p);
}

int obsd_request_first_chunk(obsd_t *h, uint64_t request_id, uint64_t ts_ns,
                             const char *text, size_t text_len)
{
    int rc = text_check(h, text, text_len, "first chunk text");
    if (rc)
        return rc;
    struct obsd_pl_req p = {request_id, ts_ns};
    return obsd__write2(h, OBSD_REC_REQ_FIRST, 0, 0, &p, sizeof p, text, text_len);
}

int obsd_request_chunk(obsd_t *h, uint64_t request_id, uint64_t ts_ns)
{
    if (!h) {
        obsd__set_error("NULL handle");
        return OBSD_EINVAL;
    }
    return put16(h, OBSD_REC_REQ_CHUNK, 0, request_id, ts_ns);
}

int obsd_request_error(obsd_t *h, uint64_t request_id, uint64_t ts_ns,
                       const char *message, size_t message_len)
{
    int rc = text_check(h, message, message_len, "error message");
    if (rc)
        return rc;
    struct obsd_pl_req p = {request_id, ts_ns};
    return obsd__write2(h, OBSD_REC_REQ_ERROR, 0, 0, &p, sizeof p, message, message_len);
}

#define FINISH_REASON_MAX 256u

int obsd_request_complete(obsd_t *h, uint64_t request_id, uint64_t ts_ns,
                          const char *finish_reason, const char *output, size_t output_len)
{
    int rc = text_check(h, output, output_len, "output text");
    if (rc)
        return rc;
    size_t rlen = finish_reason ? strnlen(finish_reason, FINISH_REASON_MAX + 1) : 0;
    if (rlen > FINISH_REASON_MAX) {
        atomic_fetch_add_explicit(&h->refused, 1, memory_order_relaxed);
        obsd__set_error("finish reason longer than %u bytes", FINISH_REASON_MAX);
        return OBSD_ETOOBIG;
    }
    struct obsd_pl_req_complete p = {request_id, ts_ns, (uint32_t)rlen, 0};
    struct iovec iov[3] = {{&p, sizeof p}, {(void *)finish_reason, rlen}, {(void *)output, output_len}};
    return writev_rec(h, OBSD_REC_REQ_COMPLETE, 0, 0, iov, 3);
}

void obsd_stats(obsd_t *h, struct obsd_producer_stats *out)
{
    memset(out, 0, sizeof *out);
    if (!h)
        return;
    pthread_mutex_lock(&h->lock);
    uint64_t w = atomic_load_explicit(&h->retired_written, memory_order_relaxed);
    uint64_t d = atomic_load_explicit(&h->retired_dropped, memory_order_relaxed);
    for (struct pring *r = h->rings; r; r = r->next) {
        w += atomic_load_explicit(&r->ctl->written, memory_order_relaxed) - r->written_base;
        d += atomic_load_explicit(&r->ctl->dropped, memory_order_relaxed) - r->dropped_base;
    }
    pthread_mutex_unlock(&h->lock);
    out->records_written = w;
    out->records_dropped = d + atomic_load_explicit(&h->noslot_dropped, memory_order_relaxed);
    out->records_refused = atomic_load_explicit(&h->refused, memory_order_relaxed);
}

/* ------------------------------------------------------------------ */
/* Keys                                                                */

static uint32_t keycache_find(obsd_t *h, const char *name, size_t len)
{
    for (size_t i = 0; i < h->keys_n; i++)
        if (strlen(h->keys[i].name) == len && memcmp(h->keys[i].name, name, len) == 0)
            return h->keys[i].id;
    return 0;
}

static void keycache_add(obsd_t *h, const char *name, size_t len, uint32_t id)
{
    if (h->keys_n == h->keys_cap) {
        size_t cap = h->keys_cap ? h->keys_cap * 2 : 32;
        struct keycache_entry *k = realloc(h->keys, cap * sizeof *k);
        if (!k)
            return;  /* not cached: the next call finds it in the table */
        h->keys = k;
        h->keys_cap = cap;
    }
    char *copy = strndup(name, len);
    if (!copy)
        return;
    h->keys[h->keys_n].name = copy;
    h->keys[h->keys_n].id = id;
    h->keys_n++;
}

/* A name is sent once per segment: another process may have interned it. */
static uint32_t keytable_find(obsd_t *h, const char *name, size_t len)
{
    uint32_t n = atomic_load_explicit(&h->hdr->keys_next, memory_order_acquire);
    if (n > h->keys_count)
        n = h->keys_count;
    for (uint32_t i = 0; i < n; i++) {
        struct seg_key *k = seg_key_entry(h->base, &h->L, i + 1);
        if (atomic_load_explicit(&k->ready, memory_order_acquire) == SEG_KEY_READY &&
            k->len == len && memcmp(k->name, name, len) == 0)
            return i + 1;
    }
    return 0;
}

obsd_key_t obsd_key(obsd_t *h, const char *name)
{
    if (!h || !name) {
        obsd__set_error(h ? "NULL key name" : "NULL handle");
        return 0;
    }
    size_t len = strnlen(name, OBSD_KEY_MAX + 1);
    if (len == 0 || len > OBSD_KEY_MAX) {
        obsd__set_error("key name must have 1..%d bytes", OBSD_KEY_MAX);
        return 0;
    }
    for (size_t i = 0; i < len; i++) {
        if (!seg_key_char_ok((unsigned char)name[i])) {
            obsd__set_error("key \"%s\": character %zu is not one of [A-Za-z0-9_.:-]", name, i + 1);
            return 0;
        }
    }
    pthread_mutex_lock(&h->lock);
    uint32_t id = keycache_find(h, name, len);
    if (!id)
        id = keytable_find(h, name, len);
    if (!id) {
        uint32_t idx = atomic_fetch_add_explicit(&h->hdr->keys_next, 1, memory_order_acq_rel);
        if (idx >= h->keys_count) {
            pthread_mutex_unlock(&h->lock);
            obsd__set_error("segment obsd.%s: key table full (%u names; the collector's "
                            "max_keys in obsd.conf sets the size)", h->name, h->keys_count);
            return 0;
        }
        id = idx + 1;
        struct seg_key *k = seg_key_entry(h->base, &h->L, id);
        memset(k->name, 0, sizeof k->name);
        memcpy(k->name, name, len);
        k->len = (uint32_t)len;
        atomic_store_explicit(&k->ready, SEG_KEY_READY, memory_order_release);
    }
    keycache_add(h, name, len, id);
    pthread_mutex_unlock(&h->lock);
    return id;
}
