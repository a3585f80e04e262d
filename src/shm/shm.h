/*
 * shm.h: the collector side of the shared-memory segment.
 *
 * The collector creates /dev/shm/obsd.<name> (or re-attaches to it after a
 * restart, continuing the same run), drains every producer ring in batches,
 * reassembles fragmented records, and hands each complete record to a
 * callback. Everything it reads from the segment is untrusted: lengths,
 * offsets, key ids and slot states are validated, and what is malformed is
 * rejected and counted, never trusted.
 *
 * The layout, the ring protocol and its memory ordering are documented in
 * segment.h (shared with the producer side) and libobsd(3).
 *
 * Threading: one collector thread owns a struct shm_segment.
 */
#ifndef OBSD_SHM_SHM_H
#define OBSD_SHM_SHM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct shm_segment;

enum shm_full_policy {
    SHM_FULL_DROP = 0,   /* default: a full ring drops the record and counts it */
    SHM_FULL_BLOCK = 1,  /* producers wait up to block_timeout_ns, then drop */
};

struct shm_config {
    const char *name;           /* segment /dev/shm/obsd.<name> */
    uint32_t keys_count;        /* key table entries (obsd.conf max_keys), default 16384,
                                   SEG_KEYS_MIN..SEG_KEYS_MAX (segment.h) */
    uint32_t max_producers;     /* ring slots (threads), default 64 */
    uint32_t ring_bytes;        /* data bytes per ring, power of two, default 1 MiB */
    uint32_t sched_workers;     /* scheduler counter blocks, default 256 */
    uint64_t max_text_bytes;    /* largest fragmented payload, default 16 MiB */
    enum shm_full_policy full_policy;
    uint64_t block_timeout_ns;  /* for SHM_FULL_BLOCK */
    gid_t group;                /* (gid_t)-1: mode 0600; else 0660 with this group */
};

/* Fills the defaults above. */
void shm_config_defaults(struct shm_config *cfg, const char *name);

/* Creates the segment, or re-attaches to an existing one of the same ABI and
 * layout (a restarted collector continues the same run). Returns NULL with a
 * message in err on failure. */
struct shm_segment *shm_segment_create(const struct shm_config *cfg, char *err, size_t errlen);

/* Marks the collector gone; unlink removes the segment file too. */
void shm_segment_close(struct shm_segment *seg, bool unlink_file);

/* One reassembled, validated record. payload is valid only during the callback. */
struct shm_record {
    uint8_t type;           /* enum obsd_rec_type */
    uint8_t flags;
    uint32_t key;
    const void *payload;
    size_t len;
};

/* Who wrote a record. */
struct shm_producer {
    uint32_t slot;          /* ring slot index */
    pid_t pid;              /* owner process */
    pid_t tid;              /* owner thread */
};

typedef void (*shm_record_fn)(void *ctx, const struct shm_producer *from, const struct shm_record *rec);

/* Drains every ring, at most max_records in all (0 = no limit), calling fn for
 * each complete record in per-ring order. Returns the number of records
 * delivered. Malformed data is rejected and counted in shm_stats. */
size_t shm_drain(struct shm_segment *seg, shm_record_fn fn, void *ctx, size_t max_records);
/* Called from fn: the ring of the current record stops right after it and
 * later drains skip that ring until shm_drain_resume(); the other rings go
 * on. For a session event whose records behind it must wait (a run that
 * starts before the previous one is final). */
void shm_drain_hold(struct shm_segment *seg, uint32_t slot);
/* Every held ring drains again from where it stopped. */
void shm_drain_resume(struct shm_segment *seg);

/* The name of a key, validated; NULL for an unknown or malformed key. */
const char *shm_key_name(struct shm_segment *seg, uint32_t key);

struct shm_stats {
    uint64_t records;           /* records delivered since attach */
    uint64_t rejected;          /* malformed records, rings or keys rejected since attach */
    uint64_t discarded;         /* incomplete fragmented records thrown away since attach
                                   (the producer gave up midway, died, or the ring was reset) */
    uint64_t dropped;           /* sum of every ring's drop counter plus slot-table drops:
                                   all drops of the segment's life, also while no collector ran */
    uint32_t producers;         /* slots in use */
    uint64_t bytes_pending;     /* bytes written but not yet drained */
    uint64_t ring_bytes_total;  /* capacity of the rings in use */
};
void shm_get_stats(struct shm_segment *seg, struct shm_stats *out);

/* Per-slot view for `obsctl status`: fill is bytes pending / ring bytes. */
struct shm_slot_info {
    uint32_t slot;
    pid_t pid, tid;
    uint64_t pending_bytes, ring_bytes, dropped, written;
    bool dead;              /* owner exited; drained and then freed */
};
/* Fills up to max entries, returns how many slots are in use. */
size_t shm_list_slots(struct shm_segment *seg, struct shm_slot_info *out, size_t max);

/*
 * Liveness: the engine opens a pidfd for each new producer pid
 * (shm_new_producers) and, when it fires, calls shm_producer_exited: the
 * pid's rings are drained to their last complete record and freed.
 */
size_t shm_new_producers(struct shm_segment *seg, pid_t *out, size_t max);
void shm_producer_exited(struct shm_segment *seg, pid_t pid, shm_record_fn fn, void *ctx);

/*
 * Doorbell: before sleeping, the collector announces it (shm_reader_sleeping
 * returns the futex word's address and the value to wait on); producers wake
 * it only then, when their ring is half full or for a session event. After
 * waking it calls shm_reader_awake. If a ring is already past the watermark
 * when the collector announces its sleep, shm_reader_sleeping bumps the word
 * itself, so a FUTEX_WAIT on (word, expected) returns at once (EAGAIN).
 * Producers may still miss the announcement by a few records (no fence on the
 * record path): always wait with a timeout (the publish interval).
 */
uint32_t *shm_reader_sleeping(struct shm_segment *seg, uint32_t *expected_value);
void shm_reader_awake(struct shm_segment *seg);

/*
 * Deferred release (off by default: then shm_drain() releases what it read at
 * once). When on, shm_drain() moves only a private read cursor per ring;
 * the ring's tail (the bytes its producer may reuse) moves in shm_release(),
 * which the engine calls after a store commit that covers every record
 * delivered so far. A collector killed at any instant thus leaves each record
 * either in the store or still in its ring, and a restarted collector reads
 * exactly the uncommitted ones again. Dead producers' and closed slots are
 * freed here too, once their records are committed.
 */
void shm_set_deferred_release(struct shm_segment *seg, bool on);
void shm_release(struct shm_segment *seg);
/* Largest count of delivered but unreleased bytes in any one ring. */
uint64_t shm_unreleased_max(struct shm_segment *seg);

/* A ring's read cursor, for the snapshot that commits it: a kill between the
 * commit and shm_release() leaves the tail behind the committed cursor, and
 * the restarted collector moves it forward with shm_resume_cursor(). claims
 * names the slot incarnation (struct seg_ring_ctl.claims). */
struct shm_cursor {
    uint32_t slot;
    uint64_t claims;
    uint64_t pos;
};
/* Fills up to max cursors of the rings whose cursor is ahead of their tail. */
size_t shm_cursors(struct shm_segment *seg, struct shm_cursor *out, size_t max);
/* Continues a ring at a committed cursor (and releases up to it); false if
 * the ring's incarnation differs or pos is not between its tail and head. */
bool shm_resume_cursor(struct shm_segment *seg, const struct shm_cursor *cur);

/* Base address and size of the scheduler counter blocks (see sched module). */
void *shm_sched_area(struct shm_segment *seg, size_t *bytes);

/* The collector's pid and a state word producers and obsctl may look at. */
void shm_set_collector_running(struct shm_segment *seg, bool running);

#endif
