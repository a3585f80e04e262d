/*
 * segment.h: the layout of /dev/shm/obsd.<name> and the ring protocol, shared
 * by the producer side (producer.c, in libobsd) and the collector side
 * (collector.c, in obsd_shm). Internal: not installed.
 *
 * Layout (every offset is in the header, and both sides recompute and compare
 * it with seg_layout_compute(), so a header that lies is refused):
 *
 *   0                 struct seg_header (one 4 KiB page)
 *   keys_off          keys_count entries of struct seg_key (128 B): key id = index + 1,
 *                     the area rounded up to whole pages
 *   rings_off         max_producers x { struct seg_ring_ctl (256 B), data[ring_bytes] }
 *   sched_off         sched_workers x 256 B scheduler counter blocks (sched module)
 *
 * Slot life: FREE --CAS by the producer thread's first record--> CLAIMED
 * --thread exit, obsd_thread_release() or obsd_close()--> CLOSING --collector,
 * once the ring is drained--> FREE. A slot whose owner died stays CLAIMED until
 * the collector learns of the death (pidfd) and calls shm_producer_exited().
 * head, the drop and write counters are cumulative over the slot's owners: a
 * new owner continues from the head it finds.
 *
 * Ring protocol (single producer, single consumer; head and tail are
 * free-running byte counters, the data offset is counter & (ring_bytes - 1)):
 *
 *   producer                                  collector
 *   --------                                  ---------
 *   if head + n - tail_cache > ring_bytes:    h = load_acquire(ctl->head)      (A)
 *       tail_cache = load_acquire(ctl->tail)  read records in [tail, h)
 *   write record bytes at head                 store_release(ctl->tail, h)      (B)
 *   store_release(ctl->head, head + n)  (C)
 *
 * (C) pairs with (A): the collector never reads record bytes older than the
 * head that published them, so a producer killed at any instant leaves at
 * most an unpublished record, which is never seen. (B) pairs with the
 * producer's acquire of tail: the producer never overwrites bytes before the
 * collector has finished reading them. This is perf's ring buffer order
 * (Documentation/userspace-api/perf_ring_buffer.rst) with C11 acquire/release
 * in place of smp_wmb/smp_rmb/smp_mb. On x86 all four are plain moves.
 *
 * The head is published after every record, not in batches: with a collector
 * that drains in batches and sleeps in between, the head's cache line moves
 * once per drain, and bench/producer_cost measured obsd_span() within 1.2x of
 * a bare ring write (bench/RESULTS.md). So there is nothing to flush, and a
 * record is visible (and survives its producer's death) once the call returns.
 *
 * A record never wraps: when it does not fit before the end of the data area,
 * the producer writes an OBSD_REC_PAD header and the collector skips to the
 * start. Records are 8-byte aligned, so at least 8 bytes always remain.
 *
 * Doorbell: the collector sets reader_sleeping (seq_cst) before waiting on the
 * futex word doorbell. After publishing, a producer loads reader_sleeping
 * (relaxed; no fence on the record path) and, if it is set and its ring is at
 * least half full (or the record is a session event, which uses a seq_cst
 * fence), wins a CAS 1 -> 0 on it, increments doorbell and FUTEX_WAKEs. A
 * wake that a producer misses for want of the fence costs latency only: the
 * collector also wakes on its own timer, and before sleeping it re-checks the
 * rings for one past the watermark (see shm_reader_sleeping()).
 */
#ifndef OBSD_SHM_SEGMENT_H
#define OBSD_SHM_SEGMENT_H

#include <stdalign.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "obsd/obsd.h"
#include "shm/wire.h"

#define SEG_MAGIC 0x314d485344534a4fULL  /* "OJSDSHM1" little-endian; any fixed value */
#define SEG_HEADER_BYTES 4096u
/* Key table entries (keys_count): the collector's max_keys, written into the
 * header at creation; producers and a re-attaching collector take it from
 * there (validated against this range) and check key ids against it. */
#define SEG_KEYS_MIN 256u
#define SEG_KEYS_MAX (1u << 20)
#define SEG_KEYS_DEFAULT 16384u
#define SEG_KEY_BYTES 128u
#define SEG_KEY_NAME_MAX 120u            /* == OBSD_KEY_MAX */
#define SEG_CTL_BYTES 256u
#define SEG_SCHED_BLOCK_BYTES 256u
#define SEG_NAME_MAX 64u                 /* segment name, [A-Za-z0-9_.-] */
#define SEG_PATH_PREFIX "/dev/shm/obsd."

#define SEG_RING_MIN (4u << 10)          /* 4 KiB */
#define SEG_RING_MAX (256u << 20)        /* 256 MiB */
#define SEG_PRODUCERS_MAX 4096u
#define SEG_SCHED_MAX 65536u
#define SEG_TEXT_MAX (1ull << 32)        /* max_text_bytes upper bound (4 GiB) */
/* A fragmented payload may exceed max_text_bytes by this much: the typed
 * header struct and a finish reason travel with the text. */
#define SEG_TEXT_SLACK 4096u

enum seg_collector_state {
    SEG_COLLECTOR_NONE = 0,      /* never attached, or closed cleanly */
    SEG_COLLECTOR_RUNNING = 1,   /* attached and draining */
};

/* The slot state word holds the kind in its low 2 bits and the owner's pid
 * above them, so a claim (one CAS from 0) names its owner atomically: a
 * producer killed right after its claim still leaves a slot that
 * shm_producer_exited() can find. */
enum seg_slot_state {
    SEG_SLOT_FREE = 0,
    SEG_SLOT_CLAIMED = 1,
    SEG_SLOT_CLOSING = 2,
};
#define SEG_SLOT_KIND(word) ((word) & 3u)
#define SEG_SLOT_PID(word) ((int32_t)((word) >> 2))

static inline uint32_t seg_slot_word(uint32_t kind, int32_t pid)
{
    return kind | ((uint32_t)pid << 2);
}

struct seg_header {
    /* Written once at creation, read by producers at open. */
    uint64_t magic;
    uint32_t abi_version;
    uint32_t header_bytes;
    uint64_t segment_bytes;
    uint64_t keys_off;
    uint32_t keys_count;
    uint32_t key_bytes;
    uint64_t rings_off;
    uint64_t ring_stride;        /* SEG_CTL_BYTES + ring_bytes */
    uint32_t max_producers;
    uint32_t ring_bytes;
    uint64_t sched_off;
    uint32_t sched_workers;
    uint32_t sched_block_bytes;
    uint64_t max_text_bytes;
    uint32_t full_policy;        /* enum shm_full_policy */
    uint32_t reserved0;
    uint64_t block_timeout_ns;

    /* Written by the collector. */
    alignas(64) _Atomic int32_t collector_pid;
    _Atomic uint32_t collector_state;   /* enum seg_collector_state */
    _Atomic uint64_t generation;        /* +1 at every collector attach */

    /* The doorbell, on its own line. */
    alignas(64) _Atomic uint32_t doorbell;
    _Atomic uint32_t reader_sleeping;

    /* Shared by producers, slow paths only. */
    alignas(64) _Atomic uint32_t keys_next;  /* next free key entry (may exceed keys_count) */
    _Atomic uint64_t slot_drops;             /* records dropped for want of a ring slot */
};
_Static_assert(sizeof(struct seg_header) <= SEG_HEADER_BYTES, "header fits its page");

struct seg_key {
    _Atomic uint32_t ready;      /* SEG_KEY_READY once name and len are written */
    uint32_t len;
    char name[SEG_KEY_NAME_MAX]; /* not NUL-terminated when len == 120 */
};
#define SEG_KEY_READY 0x4b455931u
_Static_assert(sizeof(struct seg_key) == SEG_KEY_BYTES, "key entry is 128 bytes");

struct seg_ring_ctl {
    /* Slot: claimed by CAS, released by the owner, freed by the collector. */
    _Atomic uint32_t state;      /* seg_slot_word(enum seg_slot_state, owner pid) */
    _Atomic int32_t tid;         /* owner thread, informational */
    uint32_t reserved1;
    uint32_t reserved0;
    _Atomic uint64_t claims;     /* times the slot was claimed */

    /* Written only by the producer. */
    alignas(64) _Atomic uint64_t head;
    _Atomic uint64_t written;    /* messages published (a fragmented one counts once) */
    _Atomic uint64_t dropped;    /* messages dropped: ring full or block timeout */

    /* Written only by the collector. */
    alignas(64) _Atomic uint64_t tail;
};
_Static_assert(sizeof(struct seg_ring_ctl) <= SEG_CTL_BYTES, "ring control fits 256 bytes");

/* The layout both sides derive from the five parameters. */
struct seg_layout {
    uint32_t keys_count, max_producers, ring_bytes, sched_workers;
    uint64_t max_text_bytes;
    uint64_t keys_off, rings_off, ring_stride, sched_off, segment_bytes;
};

static inline int seg_layout_compute(struct seg_layout *L, uint32_t keys_count,
                                     uint32_t max_producers, uint32_t ring_bytes,
                                     uint32_t sched_workers, uint64_t max_text_bytes,
                                     char *err, size_t errlen)
{
    if (keys_count < SEG_KEYS_MIN || keys_count > SEG_KEYS_MAX) {
        snprintf(err, errlen, "keys_count %u out of range %u..%u", keys_count, SEG_KEYS_MIN,
                 SEG_KEYS_MAX);
        return -1;
    }
    if (max_producers < 1 || max_producers > SEG_PRODUCERS_MAX) {
        snprintf(err, errlen, "max_producers %u out of range 1..%u", max_producers, SEG_PRODUCERS_MAX);
        return -1;
    }
    if (ring_bytes < SEG_RING_MIN || ring_bytes > SEG_RING_MAX || (ring_bytes & (ring_bytes - 1))) {
        snprintf(err, errlen, "ring_bytes %u is not a power of two in %u..%u", ring_bytes,
                 SEG_RING_MIN, SEG_RING_MAX);
        return -1;
    }
    if (sched_workers > SEG_SCHED_MAX) {
        snprintf(err, errlen, "sched_workers %u out of range 0..%u", sched_workers, SEG_SCHED_MAX);
        return -1;
    }
    if (max_text_bytes < 1 || max_text_bytes > SEG_TEXT_MAX) {
        snprintf(err, errlen, "max_text_bytes %llu out of range 1..%llu",
                 (unsigned long long)max_text_bytes, (unsigned long long)SEG_TEXT_MAX);
        return -1;
    }
    L->keys_count = keys_count;
    L->max_producers = max_producers;
    L->ring_bytes = ring_bytes;
    L->sched_workers = sched_workers;
    L->max_text_bytes = max_text_bytes;
    L->keys_off = SEG_HEADER_BYTES;
    /* The rings start on a page boundary whatever the key count. */
    L->rings_off = L->keys_off + (((uint64_t)keys_count * SEG_KEY_BYTES + 4095) & ~(uint64_t)4095);
    L->ring_stride = SEG_CTL_BYTES + (uint64_t)ring_bytes;
    L->sched_off = L->rings_off + L->ring_stride * max_producers;
    L->segment_bytes = L->sched_off + (uint64_t)sched_workers * SEG_SCHED_BLOCK_BYTES;
    L->segment_bytes = (L->segment_bytes + 4095) & ~(uint64_t)4095;
    return 0;
}

/* Checks a header against the layout its own parameters imply and against
 * the file size. name is used in messages. Returns 0 or -1 with err set. */
static inline int seg_header_check(const struct seg_header *h, uint64_t file_bytes,
                                   const char *name, struct seg_layout *L,
                                   char *err, size_t errlen)
{
    if (h->magic != SEG_MAGIC) {
        snprintf(err, errlen, "segment obsd.%s is not an obsd segment (bad magic)", name);
        return -1;
    }
    if (h->abi_version != OBSD_ABI_VERSION) {
        snprintf(err, errlen, "segment obsd.%s has ABI version %u, this libobsd speaks %u",
                 name, h->abi_version, (unsigned)OBSD_ABI_VERSION);
        return -1;
    }
    char why[160];
    if (seg_layout_compute(L, h->keys_count, h->max_producers, h->ring_bytes, h->sched_workers,
                           h->max_text_bytes, why, sizeof why) < 0) {
        snprintf(err, errlen, "segment obsd.%s has a corrupt header: %s", name, why);
        return -1;
    }
    if (h->header_bytes != SEG_HEADER_BYTES ||
        h->key_bytes != SEG_KEY_BYTES || h->keys_off != L->keys_off ||
        h->rings_off != L->rings_off || h->ring_stride != L->ring_stride ||
        h->sched_off != L->sched_off || h->sched_block_bytes != SEG_SCHED_BLOCK_BYTES ||
        h->segment_bytes != L->segment_bytes || h->full_policy > 1) {
        snprintf(err, errlen, "segment obsd.%s has a corrupt header (layout fields disagree)", name);
        return -1;
    }
    if (file_bytes < L->segment_bytes) {
        snprintf(err, errlen, "segment obsd.%s is truncated (%llu bytes, header says %llu)", name,
                 (unsigned long long)file_bytes, (unsigned long long)L->segment_bytes);
        return -1;
    }
    return 0;
}

static inline struct seg_ring_ctl *seg_ring_ctl(void *base, const struct seg_layout *L, uint32_t slot)
{
    return (struct seg_ring_ctl *)((char *)base + L->rings_off + L->ring_stride * slot);
}

static inline unsigned char *seg_ring_data(void *base, const struct seg_layout *L, uint32_t slot)
{
    return (unsigned char *)base + L->rings_off + L->ring_stride * slot + SEG_CTL_BYTES;
}

static inline struct seg_key *seg_key_entry(void *base, const struct seg_layout *L, uint32_t key)
{
    return (struct seg_key *)((char *)base + L->keys_off) + (key - 1);
}

/* Largest payload that travels as one record: a quarter of the ring at most,
 * and what the 16-bit length field can hold, 8-byte aligned. */
static inline uint32_t seg_max_record_payload(uint32_t ring_bytes)
{
    uint32_t quarter = ring_bytes / 4;
    uint32_t cap = quarter < 65536u ? quarter : 65536u;
    return (cap - (uint32_t)sizeof(struct obsd_rec_hdr)) & ~(OBSD_REC_ALIGN - 1);
}

static inline bool seg_key_char_ok(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '_' || c == '.' || c == ':' || c == '-';
}

static inline bool seg_name_ok(const char *name)
{
    size_t n = 0;
    if (!name)
        return false;
    for (; name[n]; n++) {
        unsigned char c = (unsigned char)name[n];
        if (n >= SEG_NAME_MAX || !(seg_key_char_ok(c) && c != ':'))
            return false;
    }
    return n > 0 && !(n == 1 && name[0] == '.') && !(n == 2 && name[0] == '.' && name[1] == '.');
}

#endif
