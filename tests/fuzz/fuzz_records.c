/*
 * fuzz_records: the collector's record decoding against hostile rings.
 *
 * One segment (two 4 KiB rings) lives for the whole run. Each input is laid
 * over ring 0 as its pending bytes, with the first bytes choosing the slot
 * state, how much is "published" (head - tail) and, optionally, a key table
 * entry; then the collector drains. The reassembly state carries over from
 * input to input, as it would between drains. Every delivered record must
 * have a payload length its type allows; nothing may read out of bounds.
 */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "shm/segment.h"
#include "shm/shm.h"

static struct shm_segment *g_seg;
static void *g_map;
static struct seg_layout g_L;
static char g_path[128];

static void cleanup(void)
{
    if (g_seg)
        shm_segment_close(g_seg, true);
}

static void setup(void)
{
    struct shm_config cfg;
    static char name[64];
    snprintf(name, sizeof name, "fuzz-records-%d", (int)getpid());
    shm_config_defaults(&cfg, name);
    cfg.ring_bytes = 4096;
    cfg.max_producers = 2;
    cfg.sched_workers = 0;
    cfg.max_text_bytes = 1 << 16;
    char err[256];
    g_seg = shm_segment_create(&cfg, err, sizeof err);
    if (!g_seg) {
        fprintf(stderr, "fuzz_records: %s\n", err);
        abort();
    }
    seg_layout_compute(&g_L, cfg.keys_count, cfg.max_producers, cfg.ring_bytes, cfg.sched_workers,
                       cfg.max_text_bytes, err, sizeof err);
    snprintf(g_path, sizeof g_path, "/dev/shm/obsd.%s", name);
    int fd = open(g_path, O_RDWR);
    g_map = mmap(NULL, g_L.segment_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (g_map == MAP_FAILED)
        abort();
    atexit(cleanup);
}

static void check_record(void *ctx, const struct shm_producer *from, const struct shm_record *rec)
{
    (void)ctx;
    (void)from;
    /* Touch every payload byte: ASan catches a bad pointer or length. */
    volatile unsigned char x = 0;
    const unsigned char *p = rec->payload;
    for (size_t i = 0; i < rec->len; i++)
        x ^= p[i];
    (void)x;
    if (rec->type == OBSD_REC_SPAN && rec->len != sizeof(struct obsd_pl_span))
        abort();
    if (rec->type == OBSD_REC_SPAN && !shm_key_name(g_seg, rec->key))
        abort();
    if (rec->type == OBSD_REC_FRAG || rec->type == OBSD_REC_PAD)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!g_seg)
        setup();
    if (size < 4)
        return 0;
    struct seg_ring_ctl *ctl = seg_ring_ctl(g_map, &g_L, 0);
    unsigned char *ring = seg_ring_data(g_map, &g_L, 0);
    uint8_t mode = data[0];
    uint16_t published;
    memcpy(&published, data + 1, 2);
    data += 3;
    size -= 3;

    /* The collector keeps its own tail; start the pending bytes there. */
    uint64_t tail = atomic_load(&ctl->tail);
    uint64_t off = tail & (g_L.ring_bytes - 1);
    size_t n = size < g_L.ring_bytes ? size : g_L.ring_bytes;
    for (size_t i = 0; i < n; i++)
        ring[(off + i) & (g_L.ring_bytes - 1)] = data[i];

    /* A key entry, with a valid name or with the input's bytes. */
    if (mode & 0x10) {
        struct seg_key *k = seg_key_entry(g_map, &g_L, 1 + (mode & 7));
        if (mode & 0x20) {
            memcpy(k->name, "fuzz.key", 8);
            k->len = 8;
        } else {
            size_t m = size < sizeof k->name + 4 ? size : sizeof k->name + 4;
            memcpy(&k->len, data, m < 4 ? m : 4);
            if (m > 4)
                memcpy(k->name, data + 4, m - 4);
        }
        atomic_store(&k->ready, SEG_KEY_READY);
    }
    uint32_t state = (mode & 0x40) ? (uint32_t)mode << 24 | data[0] : seg_slot_word(SEG_SLOT_CLAIMED, getpid());
    atomic_store(&ctl->state, state);
    uint64_t head = (mode & 0x80) ? tail + published : tail + ((published % (n + 1)) & ~7u);
    atomic_store(&ctl->head, head);
    shm_drain(g_seg, check_record, NULL, 0);
    struct shm_stats st;
    shm_get_stats(g_seg, &st);
    return 0;
}
