/*
 * collector.c: the collector side of the segment (shm.h): create or re-attach,
 * drain and reassemble, validate, free slots, doorbell, statistics.
 *
 * Everything read from the mapping is untrusted. The collector keeps its own
 * copy of the layout (from its configuration, never from the header) and of
 * each ring's tail; it copies every record out of the ring before looking at
 * it, so a producer rewriting bytes under it cannot change what was checked.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "shm/segment.h"
#include "shm/shm.h"

/* Collector-local state of one slot. */
struct cslot {
    uint64_t tail;          /* trusted: our private read cursor (what we consumed) */
    bool bad_state;         /* invalid slot state already counted */
    bool exited;            /* owner died, ring drained: free at the next release */
    bool held;              /* shm_drain_hold(): not drained until shm_drain_resume() */
    /* reassembly of a fragmented record */
    bool active;
    uint32_t seq;
    uint8_t type, flags;
    uint32_t key;
    uint64_t total, have;
    unsigned char *buf;
    size_t cap;
};

struct shm_segment {
    char name[SEG_NAME_MAX + 1];
    char path[sizeof SEG_PATH_PREFIX + SEG_NAME_MAX];
    void *base;
    struct seg_header *hdr;
    struct seg_layout L;
    uint32_t max_payload;
    struct cslot *slots;

    /* Key names validated and copied out of the table (NULL until then). */
    char **keys;

    pid_t *known;           /* producer pids handed out by shm_new_producers */
    size_t known_n, known_cap;

    uint64_t records, rejected, discarded;
    bool deferred;          /* tails move in shm_release() only (shm_set_deferred_release) */
    uint64_t *rec;          /* copy buffer for one record, 8-byte aligned */
};

void shm_config_defaults(struct shm_config *cfg, const char *name)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->name = name;
    cfg->keys_count = SEG_KEYS_DEFAULT;
    cfg->max_producers = 64;
    cfg->ring_bytes = 1u << 20;
    cfg->sched_workers = 256;
    cfg->max_text_bytes = 16u << 20;
    cfg->full_policy = SHM_FULL_DROP;
    cfg->block_timeout_ns = 10u * 1000 * 1000;
    cfg->group = (gid_t)-1;
}

static uint64_t text_limit(const struct shm_segment *seg)
{
    return seg->L.max_text_bytes + SEG_TEXT_SLACK;
}

static void header_init(struct seg_header *h, const struct seg_layout *L, const struct shm_config *cfg)
{
    memset(h, 0, sizeof *h);
    h->abi_version = OBSD_ABI_VERSION;
    h->header_bytes = SEG_HEADER_BYTES;
    h->segment_bytes = L->segment_bytes;
    h->keys_off = L->keys_off;
    h->keys_count = L->keys_count;
    h->key_bytes = SEG_KEY_BYTES;
    h->rings_off = L->rings_off;
    h->ring_stride = L->ring_stride;
    h->max_producers = L->max_producers;
    h->ring_bytes = L->ring_bytes;
    h->sched_off = L->sched_off;
    h->sched_workers = L->sched_workers;
    h->sched_block_bytes = SEG_SCHED_BLOCK_BYTES;
    h->max_text_bytes = L->max_text_bytes;
    h->full_policy = cfg->full_policy;
    h->block_timeout_ns = cfg->block_timeout_ns;
    h->magic = SEG_MAGIC;
}

/* Creates the file under a temporary name and links it into place, so a
 * producer never maps a half-initialised header. Returns the fd, -1 with
 * errno EEXIST if the segment appeared meanwhile, or -1 with err set. */
static int segment_new(const char *path, const struct seg_layout *L, const struct shm_config *cfg,
                       char *err, size_t errlen)
{
    char tmp[sizeof SEG_PATH_PREFIX + SEG_NAME_MAX + 32];
    snprintf(tmp, sizeof tmp, "%s.%d.tmp", path, (int)getpid());
    unlink(tmp);
    int fd = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(err, errlen, "cannot create %s: %s", tmp, strerror(errno));
        return -1;
    }
    if (cfg->group != (gid_t)-1 && (fchown(fd, (uid_t)-1, cfg->group) < 0 || fchmod(fd, 0660) < 0)) {
        snprintf(err, errlen, "cannot give %s to group %d: %s", tmp, (int)cfg->group, strerror(errno));
        goto fail;
    }
    if (ftruncate(fd, (off_t)L->segment_bytes) < 0) {
        snprintf(err, errlen, "cannot size %s to %llu bytes: %s", tmp,
                 (unsigned long long)L->segment_bytes, strerror(errno));
        goto fail;
    }
    struct seg_header h;
    header_init(&h, L, cfg);
    if (pwrite(fd, &h, sizeof h, 0) != (ssize_t)sizeof h) {
        snprintf(err, errlen, "cannot write the header of %s: %s", tmp, strerror(errno));
        goto fail;
    }
    if (link(tmp, path) < 0) {
        int e = errno;
        if (e != EEXIST)
            snprintf(err, errlen, "cannot create %s: %s", path, strerror(e));
        close(fd);
        unlink(tmp);
        errno = e;
        return -1;
    }
    unlink(tmp);
    return fd;
fail:
    close(fd);
    unlink(tmp);
    errno = 0;
    return -1;
}

struct shm_segment *shm_segment_create(const struct shm_config *cfg, char *err, size_t errlen)
{
    if (!seg_name_ok(cfg->name)) {
        snprintf(err, errlen, "bad segment name \"%s\": 1..%u characters of [A-Za-z0-9_.-]",
                 cfg->name ? cfg->name : "(null)", SEG_NAME_MAX);
        return NULL;
    }
    if (cfg->full_policy != SHM_FULL_DROP && cfg->full_policy != SHM_FULL_BLOCK) {
        snprintf(err, errlen, "ring full policy %d is neither drop nor block", (int)cfg->full_policy);
        return NULL;
    }
    struct seg_layout L;
    char why[200];
    if (seg_layout_compute(&L, cfg->keys_count, cfg->max_producers, cfg->ring_bytes,
                           cfg->sched_workers, cfg->max_text_bytes, why, sizeof why) < 0) {
        snprintf(err, errlen, "segment obsd.%s: %s", cfg->name, why);
        return NULL;
    }
    struct shm_segment *seg = calloc(1, sizeof *seg);
    if (!seg) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    snprintf(seg->name, sizeof seg->name, "%s", cfg->name);
    snprintf(seg->path, sizeof seg->path, SEG_PATH_PREFIX "%s", cfg->name);
    seg->L = L;
    seg->max_payload = seg_max_record_payload(L.ring_bytes);

    bool created = false;
    int fd = -1;
    for (int attempt = 0; attempt < 3 && fd < 0; attempt++) {
        fd = open(seg->path, O_RDWR | O_CLOEXEC);
        if (fd >= 0 || errno != ENOENT) {
            if (fd < 0)
                snprintf(err, errlen, "cannot open %s: %s", seg->path, strerror(errno));
            break;
        }
        fd = segment_new(seg->path, &L, cfg, err, errlen);
        if (fd >= 0)
            created = true;
        else if (errno != EEXIST)
            break;
    }
    if (fd < 0)
        goto fail;

    if (!created) {
        /* Re-attach: the header must be ours, of this ABI and this layout. */
        struct stat st;
        struct seg_header copy;
        struct seg_layout found;
        if (fstat(fd, &st) < 0 || (uint64_t)st.st_size < SEG_HEADER_BYTES ||
            pread(fd, &copy, sizeof copy, 0) != (ssize_t)sizeof copy) {
            snprintf(err, errlen, "segment obsd.%s exists but is not an obsd segment (too small); remove %s",
                     cfg->name, seg->path);
            close(fd);
            goto fail;
        }
        if (seg_header_check(&copy, (uint64_t)st.st_size, cfg->name, &found, why, sizeof why) < 0) {
            snprintf(err, errlen, "%s; remove %s to start afresh", why, seg->path);
            close(fd);
            goto fail;
        }
        if (found.max_producers != L.max_producers || found.ring_bytes != L.ring_bytes ||
            found.sched_workers != L.sched_workers || found.max_text_bytes != L.max_text_bytes ||
            found.keys_count != L.keys_count) {
            snprintf(err, errlen,
                     "segment obsd.%s exists with another layout (max_producers %u, ring_bytes %u, "
                     "sched_workers %u, max_text_bytes %llu, max_keys %u); configure the same or remove %s",
                     cfg->name, found.max_producers, found.ring_bytes, found.sched_workers,
                     (unsigned long long)found.max_text_bytes, found.keys_count, seg->path);
            close(fd);
            goto fail;
        }
    }
    seg->base = mmap(NULL, L.segment_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (seg->base == MAP_FAILED) {
        seg->base = NULL;
        snprintf(err, errlen, "cannot map %s: %s", seg->path, strerror(errno));
        goto fail;
    }
    seg->hdr = seg->base;
    if (!created) {
        pid_t other = atomic_load(&seg->hdr->collector_pid);
        if (atomic_load(&seg->hdr->collector_state) == SEG_COLLECTOR_RUNNING && other > 0 &&
            other != getpid() && kill(other, 0) == 0) {
            snprintf(err, errlen, "segment obsd.%s is in use by the collector with pid %d", cfg->name, (int)other);
            goto fail;
        }
        /* The policy is the current configuration's. */
        seg->hdr->full_policy = cfg->full_policy;
        seg->hdr->block_timeout_ns = cfg->block_timeout_ns;
    }
    seg->slots = calloc(L.max_producers, sizeof *seg->slots);
    seg->keys = calloc((size_t)L.keys_count + 1, sizeof *seg->keys);
    seg->rec = malloc(65536 + 64);
    if (!seg->slots || !seg->keys || !seg->rec) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    for (uint32_t i = 0; i < L.max_producers; i++) {
        struct seg_ring_ctl *ctl = seg_ring_ctl(seg->base, &L, i);
        uint64_t head = atomic_load_explicit(&ctl->head, memory_order_acquire);
        uint64_t tail = atomic_load_explicit(&ctl->tail, memory_order_relaxed);
        if (head - tail > L.ring_bytes || (tail & (OBSD_REC_ALIGN - 1))) {
            if (atomic_load(&ctl->state) != SEG_SLOT_FREE)
                seg->rejected++;
            tail = head;
            atomic_store_explicit(&ctl->tail, tail, memory_order_release);
        }
        seg->slots[i].tail = tail;
    }
    atomic_store(&seg->hdr->reader_sleeping, 0);
    atomic_fetch_add(&seg->hdr->generation, 1);
    atomic_store(&seg->hdr->collector_pid, (int32_t)getpid());
    atomic_store_explicit(&seg->hdr->collector_state, SEG_COLLECTOR_RUNNING, memory_order_release);
    return seg;
fail:
    shm_segment_close(seg, false);
    return NULL;
}

void shm_segment_close(struct shm_segment *seg, bool unlink_file)
{
    if (!seg)
        return;
    if (seg->hdr) {
        atomic_store(&seg->hdr->collector_state, SEG_COLLECTOR_NONE);
        atomic_store(&seg->hdr->collector_pid, 0);
    }
    if (seg->base)
        munmap(seg->base, seg->L.segment_bytes);
    if (unlink_file)
        unlink(seg->path);
    if (seg->slots)
        for (uint32_t i = 0; i < seg->L.max_producers; i++)
            free(seg->slots[i].buf);
    if (seg->keys)
        for (uint32_t i = 0; i <= seg->L.keys_count; i++)
            free(seg->keys[i]);
    free(seg->keys);
    free(seg->slots);
    free(seg->known);
    free(seg->rec);
    free(seg);
}

/* ------------------------------------------------------------------ */
/* Keys                                                                */

static const char *key_name_slow(struct shm_segment *seg, uint32_t key);

const char *shm_key_name(struct shm_segment *seg, uint32_t key)
{
    if (key == 0 || key > seg->L.keys_count)
        return NULL;
    if (seg->keys[key])
        return seg->keys[key];
    return key_name_slow(seg, key);
}

/* The drain's check: a validated name is cached, so this is one load. */
static inline bool key_known(struct shm_segment *seg, uint32_t key)
{
    if (key - 1u >= seg->L.keys_count)
        return false;
    return seg->keys[key] || key_name_slow(seg, key);
}

static __attribute__((noinline)) const char *key_name_slow(struct shm_segment *seg, uint32_t key)
{
    struct seg_key *k = seg_key_entry(seg->base, &seg->L, key);
    if (atomic_load_explicit(&k->ready, memory_order_acquire) != SEG_KEY_READY)
        return NULL;
    char name[SEG_KEY_NAME_MAX + 1];
    uint32_t len = k->len;
    if (len == 0 || len > SEG_KEY_NAME_MAX)
        goto bad;
    memcpy(name, k->name, len);
    name[len] = '\0';
    for (uint32_t i = 0; i < len; i++)
        if (!seg_key_char_ok((unsigned char)name[i]))
            goto bad;
    seg->keys[key] = strdup(name);
    return seg->keys[key];
bad:
    seg->rejected++;
    return NULL;
}

/* ------------------------------------------------------------------ */
/* Draining                                                            */

/* A state word an honest producer can have written for a slot in use. */
static bool slot_in_use(uint32_t state)
{
    uint32_t kind = SEG_SLOT_KIND(state);
    return (kind == SEG_SLOT_CLAIMED || kind == SEG_SLOT_CLOSING) && SEG_SLOT_PID(state) > 0;
}

/* Checks a complete record's payload against its type; true if it may be
 * delivered. Module types (budget, sched) are checked by their modules. */
static inline bool record_valid(struct shm_segment *seg, uint8_t type, uint32_t key, const void *p, uint64_t len)
{
    switch (type) {
    case OBSD_REC_SPAN:
        return len == sizeof(struct obsd_pl_span) && key_known(seg, key);
    case OBSD_REC_VALUE:
    case OBSD_REC_COUNTER:
    case OBSD_REC_GAUGE:
        return len == 8 && key_known(seg, key);
    case OBSD_REC_SESSION:
        return len == sizeof(struct obsd_pl_session) && key >= OBSD_SESSION_STARTED &&
               key <= OBSD_SESSION_INTERRUPTED;
    case OBSD_REC_REQ_ISSUED:
        return len >= sizeof(struct obsd_pl_req_issued);
    case OBSD_REC_REQ_FIRST:
    case OBSD_REC_REQ_ERROR:
        return len >= sizeof(struct obsd_pl_req);
    case OBSD_REC_REQ_CHUNK:
        return len == sizeof(struct obsd_pl_req);
    case OBSD_REC_REQ_COMPLETE: {
        if (len < sizeof(struct obsd_pl_req_complete))
            return false;
        struct obsd_pl_req_complete c;
        memcpy(&c, p, sizeof c);
        return c.reason_len <= len - sizeof c;
    }
    default:
        return (type >= OBSD_REC_BUDGET_FIRST && type <= OBSD_REC_BUDGET_LAST) ||
               (type >= OBSD_REC_SCHED_FIRST && type <= OBSD_REC_SCHED_LAST);
    }
}

static void reasm_discard(struct shm_segment *seg, struct cslot *cs)
{
    if (cs->active)
        seg->discarded++;
    cs->active = false;
    cs->have = 0;
    if (cs->cap > (4u << 20)) {  /* don't hoard a 16 MiB buffer per slot */
        free(cs->buf);
        cs->buf = NULL;
        cs->cap = 0;
    }
}

static bool reasm_append(struct cslot *cs, const unsigned char *p, uint64_t n)
{
    if (n > cs->total - cs->have)
        return false;
    if (cs->have + n > cs->cap) {
        size_t cap = cs->cap ? cs->cap : 65536;
        while (cap < cs->have + n)
            cap *= 2;
        if (cap > cs->total)
            cap = cs->total;
        unsigned char *b = realloc(cs->buf, cap);
        if (!b)
            return false;
        cs->buf = b;
        cs->cap = cap;
    }
    memcpy(cs->buf + cs->have, p, n);
    cs->have += n;
    return true;
}

struct drain_ctx {
    struct shm_segment *seg;
    shm_record_fn fn;
    void *ctx;
    struct shm_producer from;
};

static inline void deliver(struct drain_ctx *d, uint8_t type, uint8_t flags, uint32_t key, const void *p, uint64_t len)
{
    if (!record_valid(d->seg, type, key, p, len)) {
        d->seg->rejected++;
        return;
    }
    struct shm_record rec = {type, flags, key, p, (size_t)len};
    d->seg->records++;
    d->fn(d->ctx, &d->from, &rec);
}

/* One record copied out of the ring. Returns true if it counts toward the
 * delivery budget (a complete record was delivered or rejected). */
static bool handle_record(struct drain_ctx *d, struct cslot *cs, const struct obsd_rec_hdr *h, const unsigned char *p)
{
    struct shm_segment *seg = d->seg;
    if (h->type != OBSD_REC_FRAG) {
        if (cs->active)
            reasm_discard(seg, cs);
        deliver(d, h->type, h->flags, h->key, p, h->len);
        return true;
    }
    uint64_t n = h->len;
    if (h->flags & OBSD_RECF_FRAG_FIRST) {
        reasm_discard(seg, cs);
        struct obsd_pl_frag_first ff;
        if (n < sizeof ff)
            goto reject;
        memcpy(&ff, p, sizeof ff);
        if (ff.total_len == 0 || ff.total_len > text_limit(seg) || ff.type == OBSD_REC_FRAG ||
            ff.type == OBSD_REC_PAD)
            goto reject;
        cs->active = true;
        cs->seq = h->key;
        cs->type = ff.type;
        cs->flags = ff.flags;
        cs->key = ff.key;
        cs->total = ff.total_len;
        cs->have = 0;
        p += sizeof ff;
        n -= sizeof ff;
    } else if (!cs->active || cs->seq != h->key) {
        reasm_discard(seg, cs);
        goto reject;
    }
    if (!reasm_append(cs, p, n)) {
        reasm_discard(seg, cs);
        goto reject;
    }
    if (!(h->flags & OBSD_RECF_FRAG_LAST))
        return false;
    if (cs->have != cs->total) {
        reasm_discard(seg, cs);
        goto reject;
    }
    cs->active = false;
    deliver(d, cs->type, cs->flags, cs->key, cs->buf, cs->total);
    reasm_discard(seg, cs);
    return true;
reject:
    seg->rejected++;
    return true;
}

/* Drains one ring up to the head it finds, or until budget records. */
static size_t drain_ring(struct shm_segment *seg, uint32_t slot, shm_record_fn fn, void *ctx, size_t budget)
{
    struct seg_ring_ctl *ctl = seg_ring_ctl(seg->base, &seg->L, slot);
    struct cslot *cs = &seg->slots[slot];
    uint32_t state = atomic_load_explicit(&ctl->state, memory_order_acquire);
    if (state == SEG_SLOT_FREE)
        return 0;
    if (!slot_in_use(state)) {
        if (!cs->bad_state)
            seg->rejected++;
        cs->bad_state = true;
        return 0;
    }
    cs->bad_state = false;
    if (cs->held)
        return 0;
    const uint64_t size = seg->L.ring_bytes, mask = size - 1;
    const unsigned char *data = seg_ring_data(seg->base, &seg->L, slot);
    uint64_t head = atomic_load_explicit(&ctl->head, memory_order_acquire);
    uint64_t tail = cs->tail;
    struct drain_ctx d = {seg, fn, ctx, {slot, SEG_SLOT_PID(state),
                                         atomic_load_explicit(&ctl->tid, memory_order_relaxed)}};
    size_t counted = 0;
    if (head - tail > size || (head & (OBSD_REC_ALIGN - 1)))
        goto corrupt;
    while (tail != head && (budget == 0 || counted < budget)) {
        uint64_t off = tail & mask, avail = head - tail;
        struct obsd_rec_hdr h;
        if (avail < sizeof h)
            goto corrupt;
        memcpy(&h, data + off, sizeof h);
        if (h.type == OBSD_REC_PAD) {
            if (size - off > avail)
                goto corrupt;
            tail += size - off;
            continue;
        }
        uint64_t rs = OBSD_REC_SIZE(h.len);
        if (rs > avail || off + rs > size)
            goto corrupt;
        if (h.len == 16)  /* spans, chunks: a fixed-size copy, no call */
            memcpy(seg->rec, data + off + sizeof h, 16);
        else if (h.len == 8)
            memcpy(seg->rec, data + off + sizeof h, 8);
        else
            memcpy(seg->rec, data + off + sizeof h, h.len);
        tail += rs;
        if (handle_record(&d, cs, &h, (const unsigned char *)seg->rec))
            counted++;
        if (cs->held)
            break;      /* the callback held this ring: stop right after the record */
    }
    /* Only the private cursor moves: ctl->tail (the space the producer may
     * reuse) waits for shm_release(), i.e. for the store commit. */
    cs->tail = tail;
    if (!seg->deferred)
        atomic_store_explicit(&ctl->tail, tail, memory_order_release);
    return counted;
corrupt:
    /* Skip everything published so far; the producer continues after it. */
    seg->rejected++;
    reasm_discard(seg, cs);
    cs->tail = head & ~(uint64_t)(OBSD_REC_ALIGN - 1);
    if (!seg->deferred)
        atomic_store_explicit(&ctl->tail, cs->tail, memory_order_release);
    return counted;
}

/* Back to FREE, if the state word is still what we saw. */
static void slot_free(struct seg_ring_ctl *ctl, uint32_t from)
{
    atomic_store_explicit(&ctl->tid, 0, memory_order_relaxed);
    atomic_compare_exchange_strong_explicit(&ctl->state, &from, SEG_SLOT_FREE,
                                            memory_order_acq_rel, memory_order_relaxed);
}

/* A drained CLOSING slot goes back to FREE. */
static void maybe_free(struct shm_segment *seg, uint32_t slot)
{
    struct seg_ring_ctl *ctl = seg_ring_ctl(seg->base, &seg->L, slot);
    struct cslot *cs = &seg->slots[slot];
    uint32_t state = atomic_load_explicit(&ctl->state, memory_order_acquire);
    if (SEG_SLOT_KIND(state) != SEG_SLOT_CLOSING || !slot_in_use(state))
        return;
    /* Freed only once everything is released (committed): a slot freed
     * earlier could be reclaimed and its uncommitted bytes overwritten. */
    if (atomic_load_explicit(&ctl->head, memory_order_acquire) != cs->tail ||
        atomic_load_explicit(&ctl->tail, memory_order_relaxed) != cs->tail)
        return;
    reasm_discard(seg, cs);
    slot_free(ctl, state);
}

size_t shm_drain(struct shm_segment *seg, shm_record_fn fn, void *ctx, size_t max_records)
{
    size_t total = 0;
    for (uint32_t i = 0; i < seg->L.max_producers; i++) {
        if (max_records && total >= max_records)
            break;
        total += drain_ring(seg, i, fn, ctx, max_records ? max_records - total : 0);
        maybe_free(seg, i);
    }
    return total;
}

void shm_drain_hold(struct shm_segment *seg, uint32_t slot)
{
    if (slot < seg->L.max_producers)
        seg->slots[slot].held = true;
}

void shm_drain_resume(struct shm_segment *seg)
{
    for (uint32_t i = 0; i < seg->L.max_producers; i++)
        seg->slots[i].held = false;
}

/* ------------------------------------------------------------------ */
/* Statistics and slots                                                */

void shm_get_stats(struct shm_segment *seg, struct shm_stats *out)
{
    memset(out, 0, sizeof *out);
    out->records = seg->records;
    out->rejected = seg->rejected;
    out->discarded = seg->discarded;
    out->dropped = atomic_load_explicit(&seg->hdr->slot_drops, memory_order_relaxed);
    for (uint32_t i = 0; i < seg->L.max_producers; i++) {
        struct seg_ring_ctl *ctl = seg_ring_ctl(seg->base, &seg->L, i);
        out->dropped += atomic_load_explicit(&ctl->dropped, memory_order_relaxed);
        uint32_t state = atomic_load_explicit(&ctl->state, memory_order_acquire);
        if (!slot_in_use(state))
            continue;
        out->producers++;
        out->ring_bytes_total += seg->L.ring_bytes;
        uint64_t pending = atomic_load_explicit(&ctl->head, memory_order_acquire) - seg->slots[i].tail;
        if (pending <= seg->L.ring_bytes)
            out->bytes_pending += pending;
    }
}

static bool pid_dead(pid_t pid)
{
    return pid <= 0 || (kill(pid, 0) < 0 && errno == ESRCH);
}

size_t shm_list_slots(struct shm_segment *seg, struct shm_slot_info *out, size_t max)
{
    size_t n = 0;
    for (uint32_t i = 0; i < seg->L.max_producers; i++) {
        struct seg_ring_ctl *ctl = seg_ring_ctl(seg->base, &seg->L, i);
        uint32_t state = atomic_load_explicit(&ctl->state, memory_order_acquire);
        if (!slot_in_use(state))
            continue;
        if (n < max) {
            struct shm_slot_info *s = &out[n];
            uint64_t pending = atomic_load_explicit(&ctl->head, memory_order_acquire) - seg->slots[i].tail;
            s->slot = i;
            s->pid = SEG_SLOT_PID(state);
            s->tid = atomic_load_explicit(&ctl->tid, memory_order_relaxed);
            s->pending_bytes = pending <= seg->L.ring_bytes ? pending : 0;
            s->ring_bytes = seg->L.ring_bytes;
            s->dropped = atomic_load_explicit(&ctl->dropped, memory_order_relaxed);
            s->written = atomic_load_explicit(&ctl->written, memory_order_relaxed);
            s->dead = SEG_SLOT_KIND(state) == SEG_SLOT_CLOSING || pid_dead(s->pid);
        }
        n++;
    }
    return n;
}

/* ------------------------------------------------------------------ */
/* Liveness                                                            */

static bool known_has(struct shm_segment *seg, pid_t pid)
{
    for (size_t i = 0; i < seg->known_n; i++)
        if (seg->known[i] == pid)
            return true;
    return false;
}

size_t shm_new_producers(struct shm_segment *seg, pid_t *out, size_t max)
{
    size_t n = 0;
    for (uint32_t i = 0; i < seg->L.max_producers && n < max; i++) {
        struct seg_ring_ctl *ctl = seg_ring_ctl(seg->base, &seg->L, i);
        uint32_t state = atomic_load_explicit(&ctl->state, memory_order_acquire);
        if (!slot_in_use(state) || SEG_SLOT_KIND(state) != SEG_SLOT_CLAIMED)
            continue;
        pid_t pid = SEG_SLOT_PID(state);
        if (pid <= 0 || seg->slots[i].exited || known_has(seg, pid))
            continue;
        if (seg->known_n == seg->known_cap) {
            size_t cap = seg->known_cap ? seg->known_cap * 2 : 16;
            pid_t *k = realloc(seg->known, cap * sizeof *k);
            if (!k)
                break;
            seg->known = k;
            seg->known_cap = cap;
        }
        seg->known[seg->known_n++] = pid;
        out[n++] = pid;
    }
    return n;
}

void shm_producer_exited(struct shm_segment *seg, pid_t pid, shm_record_fn fn, void *ctx)
{
    for (size_t i = 0; i < seg->known_n; i++) {
        if (seg->known[i] == pid) {
            seg->known[i] = seg->known[--seg->known_n];
            break;
        }
    }
    for (uint32_t i = 0; i < seg->L.max_producers; i++) {
        struct seg_ring_ctl *ctl = seg_ring_ctl(seg->base, &seg->L, i);
        uint32_t state = atomic_load_explicit(&ctl->state, memory_order_acquire);
        if (!slot_in_use(state) || SEG_SLOT_PID(state) != pid)
            continue;
        /* The owner is gone, so head is final: everything it published is
         * delivered, an unpublished record was never visible. */
        drain_ring(seg, i, fn, ctx, 0);
        reasm_discard(seg, &seg->slots[i]);
        /* Deferred: its records are delivered, not yet committed; the slot
         * stays CLAIMED (nobody can reuse it) until shm_release() frees it. */
        if (seg->deferred)
            seg->slots[i].exited = true;
        else
            slot_free(ctl, state);
    }
}

/* ------------------------------------------------------------------ */
/* Deferred release                                                    */

void shm_set_deferred_release(struct shm_segment *seg, bool on)
{
    seg->deferred = on;
    if (!on)
        shm_release(seg);
}

void shm_release(struct shm_segment *seg)
{
    for (uint32_t i = 0; i < seg->L.max_producers; i++) {
        struct seg_ring_ctl *ctl = seg_ring_ctl(seg->base, &seg->L, i);
        struct cslot *cs = &seg->slots[i];
        if (atomic_load_explicit(&ctl->tail, memory_order_relaxed) != cs->tail)
            atomic_store_explicit(&ctl->tail, cs->tail, memory_order_release);
        if (cs->exited) {
            cs->exited = false;
            uint32_t state = atomic_load_explicit(&ctl->state, memory_order_acquire);
            if (slot_in_use(state))
                slot_free(ctl, state);
        } else {
            maybe_free(seg, i);
        }
    }
}

uint64_t shm_unreleased_max(struct shm_segment *seg)
{
    uint64_t most = 0;
    for (uint32_t i = 0; i < seg->L.max_producers; i++) {
        struct seg_ring_ctl *ctl = seg_ring_ctl(seg->base, &seg->L, i);
        uint64_t n = seg->slots[i].tail - atomic_load_explicit(&ctl->tail, memory_order_relaxed);
        if (n <= seg->L.ring_bytes && n > most)
            most = n;
    }
    return most;
}

size_t shm_cursors(struct shm_segment *seg, struct shm_cursor *out, size_t max)
{
    size_t n = 0;
    for (uint32_t i = 0; i < seg->L.max_producers && n < max; i++) {
        struct seg_ring_ctl *ctl = seg_ring_ctl(seg->base, &seg->L, i);
        uint64_t tail = atomic_load_explicit(&ctl->tail, memory_order_relaxed);
        if (seg->slots[i].tail == tail)
            continue;
        out[n++] = (struct shm_cursor){i, atomic_load_explicit(&ctl->claims, memory_order_relaxed),
                                       seg->slots[i].tail};
    }
    return n;
}

bool shm_resume_cursor(struct shm_segment *seg, const struct shm_cursor *cur)
{
    if (cur->slot >= seg->L.max_producers)
        return false;
    struct seg_ring_ctl *ctl = seg_ring_ctl(seg->base, &seg->L, cur->slot);
    struct cslot *cs = &seg->slots[cur->slot];
    uint64_t head = atomic_load_explicit(&ctl->head, memory_order_acquire);
    uint64_t tail = atomic_load_explicit(&ctl->tail, memory_order_relaxed);
    if (atomic_load_explicit(&ctl->claims, memory_order_relaxed) != cur->claims ||
        (cur->pos & (OBSD_REC_ALIGN - 1)) || cur->pos - tail > head - tail || head - tail > seg->L.ring_bytes)
        return false;
    cs->tail = cur->pos;
    atomic_store_explicit(&ctl->tail, cur->pos, memory_order_release);
    return true;
}

/* ------------------------------------------------------------------ */
/* Doorbell, sched area, collector state                               */

uint32_t *shm_reader_sleeping(struct shm_segment *seg, uint32_t *expected_value)
{
    struct seg_header *h = seg->hdr;
    atomic_store(&h->reader_sleeping, 1);
    *expected_value = atomic_load(&h->doorbell);
    atomic_thread_fence(memory_order_seq_cst);
    /* A producer that passed the watermark before it could see the flag
     * did not ring: look for it, and if so make the wait return at once. */
    for (uint32_t i = 0; i < seg->L.max_producers; i++) {
        struct seg_ring_ctl *ctl = seg_ring_ctl(seg->base, &seg->L, i);
        if (atomic_load_explicit(&ctl->state, memory_order_relaxed) == SEG_SLOT_FREE)
            continue;
        uint64_t pending = atomic_load_explicit(&ctl->head, memory_order_acquire) - seg->slots[i].tail;
        if (pending >= seg->L.ring_bytes / 2 && pending <= seg->L.ring_bytes) {
            uint32_t one = 1;
            if (atomic_compare_exchange_strong(&h->reader_sleeping, &one, 0))
                atomic_fetch_add(&h->doorbell, 1);
            break;
        }
    }
    return (uint32_t *)&h->doorbell;
}

void shm_reader_awake(struct shm_segment *seg)
{
    atomic_store(&seg->hdr->reader_sleeping, 0);
}

void *shm_sched_area(struct shm_segment *seg, size_t *bytes)
{
    if (bytes)
        *bytes = (size_t)seg->L.sched_workers * SEG_SCHED_BLOCK_BYTES;
    return (char *)seg->base + seg->L.sched_off;
}

void shm_set_collector_running(struct shm_segment *seg, bool running)
{
    atomic_store(&seg->hdr->collector_pid, running ? (int32_t)getpid() : 0);
    atomic_store_explicit(&seg->hdr->collector_state,
                          running ? SEG_COLLECTOR_RUNNING : SEG_COLLECTOR_NONE, memory_order_release);
}
