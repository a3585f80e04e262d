/*
 * test_shm_corrupt: the segment is untrusted input. Random bytes written over
 * pending records, ring control words, slot states, the key table and the
 * segment header are rejected and counted, never crash the reader (run it
 * under ASan), and the reader keeps delivering what producers write next.
 * A corrupt header is refused at re-attach with a clear message.
 */
#include <fcntl.h>
#include <stddef.h>
#include <sys/mman.h>

#include "shm_test.h"
#include "shm/segment.h"

struct fixture {
    struct shm_config cfg;
    struct shm_segment *seg;
    void *map;              /* our own mapping: the "hostile" writer */
    struct seg_layout L;
};

static void fx_open(struct fixture *f, const char *tag)
{
    shm_config_defaults(&f->cfg, test_seg_name(tag));
    f->cfg.ring_bytes = 8192;
    f->cfg.max_producers = 4;
    f->seg = test_segment(&f->cfg);
    char err[128];
    ck_assert_int_eq(seg_layout_compute(&f->L, f->cfg.keys_count, f->cfg.max_producers,
                                        f->cfg.ring_bytes, f->cfg.sched_workers,
                                        f->cfg.max_text_bytes, err, sizeof err), 0);
    char path[128];
    snprintf(path, sizeof path, "/dev/shm/obsd.%s", f->cfg.name);
    int fd = open(path, O_RDWR);
    ck_assert_int_ge(fd, 0);
    f->map = mmap(NULL, f->L.segment_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    ck_assert(f->map != MAP_FAILED);
}

static void fx_close(struct fixture *f)
{
    munmap(f->map, f->L.segment_bytes);
    shm_segment_close(f->seg, true);
}

static void scribble(void *p, size_t n, unsigned *seed)
{
    unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        b[i] = (unsigned char)rand_r(seed);
}

static uint64_t rejected(struct shm_segment *seg)
{
    struct shm_stats st;
    shm_get_stats(seg, &st);
    return st.rejected;
}

/* Writes n spans and returns how many of them the next drains deliver.
 * After corruption the first batch may be lost to the ring reset; the
 * reader must be delivering again by the second. */
static size_t write_and_count(struct shm_segment *seg, obsd_t *h, obsd_key_t k, int n)
{
    struct sink s = {0};
    for (int i = 0; i < n; i++)
        obsd_span(h, k, (uint64_t)i, (uint64_t)i + 1);
    shm_drain(seg, sink_fn, &s, 0);
    size_t got = 0;
    for (size_t i = 0; i < s.n; i++)
        if (s.v[i].type == OBSD_REC_SPAN && s.v[i].key == k && got_u64(&s.v[i], 1) == got_u64(&s.v[i], 0) + 1)
            got++;
    sink_free(&s);
    return got;
}

START_TEST(random_bytes_over_pending_records_are_rejected)
{
    struct fixture f;
    fx_open(&f, "recs");
    obsd_t *h = obsd_open(f.cfg.name);
    obsd_key_t k = obsd_key(h, "c.span");
    unsigned seed = 7;
    struct sink s = {0};
    for (int round = 0; round < 300; round++) {
        for (int i = 0; i < 50; i++)
            obsd_span(h, k, 1, 2);
        /* find our ring and overwrite part of what is pending */
        struct shm_slot_info si;
        ck_assert_uint_eq(shm_list_slots(f.seg, &si, 1), 1);
        unsigned char *data = seg_ring_data(f.map, &f.L, si.slot);
        struct seg_ring_ctl *ctl = seg_ring_ctl(f.map, &f.L, si.slot);
        uint64_t head = atomic_load(&ctl->head);
        uint64_t start = (head - si.pending_bytes) & (f.L.ring_bytes - 1);
        size_t len = 1 + (size_t)rand_r(&seed) % 64;
        if (start + len > f.L.ring_bytes)
            len = f.L.ring_bytes - start;
        scribble(data + start, len, &seed);
        uint64_t before = rejected(f.seg);
        shm_drain(f.seg, sink_fn, &s, 0);
        /* the first record's header was hit: it cannot be taken as valid,
         * unless the random bytes happen to form a valid span header */
        ck_assert_uint_ge(rejected(f.seg), before);
        sink_free(&s);
        ck_assert_uint_eq(write_and_count(f.seg, h, k, 20), 20);
    }
    /* Nearly every round must have been caught. */
    ck_assert_uint_gt(rejected(f.seg), 250);
    obsd_close(h);
    fx_close(&f);
}
END_TEST

START_TEST(random_ring_control_words_are_survived)
{
    struct fixture f;
    fx_open(&f, "ctl");
    obsd_t *h = obsd_open(f.cfg.name);
    obsd_key_t k = obsd_key(h, "c.span");
    unsigned seed = 11;
    ck_assert_uint_eq(write_and_count(f.seg, h, k, 10), 10);
    struct shm_slot_info si;
    ck_assert_uint_eq(shm_list_slots(f.seg, &si, 1), 1);
    struct seg_ring_ctl *ctl = seg_ring_ctl(f.map, &f.L, si.slot);
    for (int round = 0; round < 300; round++) {
        /* head, counters and tail: everything but the slot state */
        scribble((char *)ctl + offsetof(struct seg_ring_ctl, head), 24, &seed);
        if (round % 3 == 0)
            scribble((char *)ctl + offsetof(struct seg_ring_ctl, tail), 8, &seed);
        uint64_t before = rejected(f.seg);
        struct sink s = {0};
        shm_drain(f.seg, sink_fn, &s, 0);
        sink_free(&s);
        ck_assert_uint_gt(rejected(f.seg), before);
        /* the next batch may be lost to the resync, the one after must not */
        write_and_count(f.seg, h, k, 10);
        ck_assert_uint_eq(write_and_count(f.seg, h, k, 10), 10);
    }
    obsd_close(h);
    fx_close(&f);
}
END_TEST

START_TEST(garbage_slot_states_and_key_table_are_survived)
{
    struct fixture f;
    fx_open(&f, "slots");
    obsd_t *h = obsd_open(f.cfg.name);
    obsd_key_t k = obsd_key(h, "c.span");
    unsigned seed = 13;
    ck_assert_uint_eq(write_and_count(f.seg, h, k, 10), 10);
    struct shm_slot_info si;
    ck_assert_uint_eq(shm_list_slots(f.seg, &si, 1), 1);
    /* Other slots: random states and rings full of garbage. */
    for (uint32_t i = 0; i < f.L.max_producers; i++) {
        if (i == si.slot)
            continue;
        struct seg_ring_ctl *ctl = seg_ring_ctl(f.map, &f.L, i);
        scribble(seg_ring_data(f.map, &f.L, i), f.L.ring_bytes, &seed);
        scribble(ctl, SEG_CTL_BYTES, &seed);
        if (i % 2)
            atomic_store(&ctl->state, SEG_SLOT_CLAIMED);
    }
    /* Key entries past ours: random bytes, some marked ready. */
    for (uint32_t key = k + 1; key < k + 200; key++) {
        struct seg_key *e = seg_key_entry(f.map, &f.L, key);
        scribble(e, sizeof *e, &seed);
        if (key % 2)
            atomic_store(&e->ready, SEG_KEY_READY);
    }
    struct sink s = {0};
    uint64_t before = rejected(f.seg);
    shm_drain(f.seg, sink_fn, &s, 0);
    ck_assert_uint_gt(rejected(f.seg), before);
    for (size_t i = 0; i < s.n; i++) /* whatever got through is valid */
        if (s.v[i].type == OBSD_REC_SPAN)
            ck_assert_ptr_nonnull(shm_key_name(f.seg, s.v[i].key));
    sink_free(&s);
    for (uint32_t key = 0; key <= f.cfg.keys_count + 1; key++) {
        const char *name = shm_key_name(f.seg, key);
        if (name) {
            ck_assert_uint_le(strlen(name), OBSD_KEY_MAX);
            ck_assert_uint_gt(strlen(name), 0);
        }
    }
    ck_assert_uint_eq(write_and_count(f.seg, h, k, 50), 50);
    struct shm_slot_info all[8];
    shm_list_slots(f.seg, all, 8);
    obsd_close(h);
    fx_close(&f);
}
END_TEST

START_TEST(corrupt_header_keeps_reader_running_and_is_refused_at_reattach)
{
    struct fixture f;
    fx_open(&f, "hdr");
    obsd_t *h = obsd_open(f.cfg.name);
    obsd_key_t k = obsd_key(h, "c.span");
    unsigned seed = 17;
    /* The running reader uses its own copy of the layout. */
    scribble(f.map, SEG_HEADER_BYTES, &seed);
    ck_assert_uint_eq(write_and_count(f.seg, h, k, 10), 10);
    /* A new producer is refused with a message, not a crash. */
    ck_assert_ptr_null(obsd_open(f.cfg.name));
    ck_assert_ptr_nonnull(strstr(obsd_last_error(), f.cfg.name));
    obsd_close(h);
    shm_segment_close(f.seg, false);
    char err[256];
    ck_assert_ptr_null(shm_segment_create(&f.cfg, err, sizeof err));
    ck_assert_ptr_nonnull(strstr(err, "remove /dev/shm/obsd."));

    /* Valid magic and ABI but lying offsets: refused too. */
    struct seg_header *hd = f.map;
    hd->magic = SEG_MAGIC;
    hd->abi_version = OBSD_ABI_VERSION;
    hd->max_producers = f.cfg.max_producers;
    hd->ring_bytes = f.cfg.ring_bytes;
    hd->sched_workers = f.cfg.sched_workers;
    hd->max_text_bytes = f.cfg.max_text_bytes;
    ck_assert_ptr_null(shm_segment_create(&f.cfg, err, sizeof err));
    ck_assert_ptr_nonnull(strstr(err, "corrupt header"));
    munmap(f.map, f.L.segment_bytes);
    char path[128];
    snprintf(path, sizeof path, "/dev/shm/obsd.%s", f.cfg.name);
    unlink(path);
}
END_TEST

/* Opens the fixture's segment with obsd_open; on refusal, the message. */
static bool open_refused(struct fixture *f, char *msg, size_t msglen)
{
    obsd_t *h = obsd_open(f->cfg.name);
    if (h) {
        obsd_close(h);
        return false;
    }
    snprintf(msg, msglen, "%s", obsd_last_error());
    return true;
}

/* keys_count sizes the key table, so it decides where the rings start: a
 * value out of range, one that disagrees with the offsets, and one whose
 * consistent layout the file is too small for are all refused, by producers
 * and by a re-attaching collector, and the running reader is unaffected. */
START_TEST(lying_keys_count_is_refused)
{
    struct fixture f;
    fx_open(&f, "keys");
    ck_assert_uint_eq(f.cfg.keys_count, SEG_KEYS_DEFAULT);
    obsd_t *h = obsd_open(f.cfg.name);
    obsd_key_t k = obsd_key(h, "c.span");
    struct seg_header *hd = f.map;
    /* The fields written once at creation; the rest are live. */
    const size_t fixed = offsetof(struct seg_header, collector_pid);
    struct seg_header good;
    memcpy(&good, hd, fixed);
    char msg[256], want[200], err[256];

    const uint32_t out_of_range[] = {0, 1, SEG_KEYS_MIN - 1, SEG_KEYS_MAX + 1, UINT32_MAX};
    for (size_t i = 0; i < sizeof out_of_range / sizeof out_of_range[0]; i++) {
        hd->keys_count = out_of_range[i];
        ck_assert(open_refused(&f, msg, sizeof msg));
        snprintf(want, sizeof want, "segment obsd.%s has a corrupt header: keys_count %u out of range %u..%u",
                 f.cfg.name, out_of_range[i], SEG_KEYS_MIN, SEG_KEYS_MAX);
        ck_assert_str_eq(msg, want);
    }

    /* In range, but the rings are not where such a table would end. */
    hd->keys_count = SEG_KEYS_DEFAULT / 2;
    ck_assert(open_refused(&f, msg, sizeof msg));
    ck_assert_msg(strstr(msg, "layout fields disagree"), "%s", msg);

    /* A bigger table with every offset moved to match: the file is too small. */
    struct seg_layout big;
    ck_assert_int_eq(seg_layout_compute(&big, SEG_KEYS_MAX, good.max_producers, good.ring_bytes,
                                        good.sched_workers, good.max_text_bytes, err, sizeof err), 0);
    hd->keys_count = SEG_KEYS_MAX;
    hd->rings_off = big.rings_off;
    hd->sched_off = big.sched_off;
    hd->segment_bytes = big.segment_bytes;
    ck_assert(open_refused(&f, msg, sizeof msg));
    ck_assert_msg(strstr(msg, "is truncated"), "%s", msg);

    /* Random values: whatever is accepted has the layout of the file. */
    memcpy(hd, &good, fixed);
    unsigned seed = 23;
    for (int i = 0; i < 2000; i++) {
        uint32_t v = (uint32_t)rand_r(&seed) ^ ((uint32_t)rand_r(&seed) << 16);
        if (i & 1)
            v = SEG_KEYS_DEFAULT - 64 + (v % 128);   /* near the real value */
        hd->keys_count = v;
        struct seg_layout L;
        bool consistent = seg_layout_compute(&L, v, good.max_producers, good.ring_bytes,
                                             good.sched_workers, good.max_text_bytes, err,
                                             sizeof err) == 0 &&
                          L.rings_off == good.rings_off;
        ck_assert_msg(open_refused(&f, msg, sizeof msg) == !consistent, "keys_count %u: %s", v,
                      consistent ? "refused" : "accepted");
    }

    /* The running reader keeps its own layout. */
    hd->keys_count = UINT32_MAX;
    ck_assert_uint_eq(write_and_count(f.seg, h, k, 10), 10);
    obsd_close(h);
    shm_segment_close(f.seg, false);
    ck_assert_ptr_null(shm_segment_create(&f.cfg, err, sizeof err));
    ck_assert_msg(strstr(err, "keys_count 4294967295 out of range"), "%s", err);
    ck_assert_ptr_nonnull(strstr(err, "remove /dev/shm/obsd."));
    /* Restored, it is attached again. */
    memcpy(hd, &good, fixed);
    f.seg = test_segment(&f.cfg);
    fx_close(&f);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("shm_corrupt");
    TCase *tc = tcase_create("corrupt");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, random_bytes_over_pending_records_are_rejected);
    tcase_add_test(tc, random_ring_control_words_are_survived);
    tcase_add_test(tc, garbage_slot_states_and_key_table_are_survived);
    tcase_add_test(tc, corrupt_header_keeps_reader_running_and_is_refused_at_reattach);
    tcase_add_test(tc, lying_keys_count_is_refused);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return test_run_suite(suite());
}
