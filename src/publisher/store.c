/*
 * store.c: the LMDB store (store.h). The key layout and the value encodings
 * are specified in man/obsd-store.5; keep the two in step and bump
 * OBSD_STORE_SCHEMA_VERSION when either changes incompatibly.
 *
 * Writer: one write transaction per persist, whose cost must follow what
 * changed and must not scatter over the B-trees (each dirty leaf is a 4 KiB
 * page copied and written). So a persist writes a few large values rather
 * than one row per metric:
 *   - the latest snapshot is a base row per metric, rewritten rarely, plus
 *     one delta row per persist with an entry for every metric that changed
 *     (from the change hints, just the fields and bucket counts that moved);
 *     a rotation over parts of 64 ids folds each changed metric into a new
 *     base row within FOLD_ROUNDS persists, after which the delta rows
 *     before hold nothing in force and go;
 *   - time series points go into the persist's history entry (durable at
 *     once: the write-ahead form) and, per window of 64 metric ids, into a
 *     chunk row written at most every FLUSH_ROUNDS persists, so one metric's
 *     series is one range scan plus a bounded tail of history entries.
 * The handle remembers, per metric of the current run, a fingerprint of what
 * it last persisted (count, total, min, max for a series; the value for a
 * counter), whether it changed since its base row, its previous time series
 * point (points are encoded as differences from it) and its points not yet
 * in a chunk. It keeps no copy of the base rows: nothing is compared with
 * them.
 * A snapshot with change hints (snapshot.h: the collector's) saves most of
 * the finding out: a metric whose hints continue those of the last
 * committed persist is not looked up by name, is not read at all when
 * unchanged, and a changed series gets a patch entry of what moved without
 * its buckets being read. Anything else gets the full comparison and a
 * changed series is written in full, with the same result.
 *
 * Readers: a short read transaction per call; every value is decoded with
 * bounds checks, because a store file is input like any other.
 */
#include "publisher/store.h"

#include <errno.h>
#include <lmdb.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define DEFAULT_MAP_SIZE (1ULL << 30)
#define DEFAULT_FULL_EVERY 40
#define DEFAULT_SERIES_INTERVAL_NS 1000000000ULL
#define VALUE_FORMAT 1          /* first byte of every encoded value */
#define MAX_GROW_RETRIES 24
#define MAX_NAME 400            /* names are LMDB key parts; keys stop at 511 bytes */

/* History entry kinds. */
#define HIST_KEYFRAME 0
#define HIST_DELTA 1

/* First byte of a time series point: the kind in the low two bits, then
 * flags. An absolute point does not depend on the previous one. */
#define POINT_INT 0
#define POINT_FLOAT 1
#define POINT_SERIES 2
#define POINT_KIND_MASK 0x03
#define POINT_ABSOLUTE 0x04
#define POINT_EXACT 0x08
#define POINT_FIELDS 8          /* count, total, min, max, p99.9, p99, p90, p50 */
#define POINT_MAX_BYTES (2 + 10 + (POINT_FIELDS - 1) * 9)

/* Metric classes in the names DB. */
#define CLASS_COUNTER 'c'
#define CLASS_SERIES 's'

/* Time series chunks: metric ids per chunk row, and the number of persists
 * within which every window with pending points gets its row. The second
 * bounds the history tail a reader merges and the points held in memory. */
#define WINDOW 64
#define FLUSH_ROUNDS 64
/* History points are indexed every INDEX_STRIDE points (binary search, then
 * at most INDEX_STRIDE - 1 points skipped). */
#define INDEX_STRIDE 16
/* How many metrics ahead the staging loop prefetches. */
#define PREFETCH_AHEAD 4

/* The latest table of a run: a header row, a base row per metric (which
 * holds the seq of the persist that wrote it), and a delta row per persist
 * with an entry for each metric that changed and did not get a base row,
 * cut into pieces of at most one page each (see piece_max).
 * The metric ids are cut into parts of PART_IDS; every persist folds the
 * next parts of a rotation that passes all of them within FOLD_ROUNDS
 * persists: their metrics changed since their base rows get new ones. A
 * delta row older than every part's last fold holds nothing still in
 * force, and goes. */
#define PART_IDS 64
/* A base row of a series is mostly bucket edges: the longer the rotation,
 * the fewer a persist writes, and the more delta rows a reader of the
 * latest snapshot applies (read far less often than persists are made). */
#define FOLD_ROUNDS 64
#define DELTA_ID UINT32_MAX     /* metric id part of a delta row's key */
#define PIECE_HEAD 5            /* a delta piece's format byte and entry count */
#define LMDB_PAGE_HEAD 16       /* LMDB's page header (PAGEHDRSZ): an overflow value
                                   of page size - 16 bytes takes one page */
/* Delta entries: the kind in the low two bits, then a flag. */
#define ENTRY_COUNTER 0         /* a counter's value */
#define ENTRY_PATCH 1           /* a series' summary fields and bucket counts that moved */
#define ENTRY_SERIES 2          /* a series in full, but for its name */
#define ENTRY_KIND_MASK 0x03
#define ENTRY_FLAG 0x04         /* counter: float; patch: exact */
#define N_SUMMARY 17            /* count, total, min, max, sum_sq, 12 percentiles */

/* Grid indexes of the percentiles kept in time series points. */
static const int point_pct_grid[STORE_POINT_NPCT] = {0, 1, 4, 7}; /* 99.9 99 90 50 */

/* The summary of a series is read as 17 consecutive 8-byte words. */
_Static_assert(offsetof(struct snap_series, total) == offsetof(struct snap_series, count) + 8 &&
                   offsetof(struct snap_series, min) == offsetof(struct snap_series, count) + 16 &&
                   offsetof(struct snap_series, max) == offsetof(struct snap_series, count) + 24 &&
                   offsetof(struct snap_series, sum_sq) == offsetof(struct snap_series, count) + 32 &&
                   offsetof(struct snap_series, percentiles) == offsetof(struct snap_series, count) + 40 &&
                   OBSD_N_PERCENTILES + 5 == N_SUMMARY,
               "snap_series summary layout");

/* ---------------------------------------------------------------- buffers */

struct buf {
    uint8_t *p;
    size_t len, cap;
    bool oom;
};

static bool buf_reserve(struct buf *b, size_t more)
{
    if (b->len + more <= b->cap)
        return true;
    size_t ncap = b->cap ? b->cap : 256;
    while (ncap < b->len + more)
        ncap *= 2;
    uint8_t *np = realloc(b->p, ncap);
    if (!np) {
        b->oom = true;
        return false;
    }
    b->p = np;
    b->cap = ncap;
    return true;
}

/* Room for up to `more` bytes written through the returned pointer; the
 * writer sets b->len = end - b->p when done. NULL (and oom) on failure. */
static uint8_t *buf_tail(struct buf *b, size_t more)
{
    return buf_reserve(b, more) ? b->p + b->len : NULL;
}

static inline uint8_t *wr_varint(uint8_t *p, uint64_t v)
{
    while (v >= 0x80) {
        *p++ = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    *p++ = (uint8_t)v;
    return p;
}

static inline uint8_t *wr_le64(uint8_t *p, uint64_t v)
{
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    memcpy(p, &v, 8);
#else
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
#endif
    return p + 8;
}

static inline uint64_t ld_le64(const uint8_t *p)
{
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
#else
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
#endif
}

static inline uint64_t dbits(double d)
{
    uint64_t u;
    memcpy(&u, &d, 8);
    return u;
}

static inline double bitsd(uint64_t u)
{
    double d;
    memcpy(&d, &u, 8);
    return d;
}

static void put_bytes(struct buf *b, const void *p, size_t n)
{
    if (!buf_reserve(b, n))
        return;
    memcpy(b->p + b->len, p, n);
    b->len += n;
}

static void put_u8(struct buf *b, uint8_t v)
{
    if (buf_reserve(b, 1))
        b->p[b->len++] = v;
}

static void put_varint(struct buf *b, uint64_t v)
{
    if (!buf_reserve(b, 10))
        return;
    b->len = (size_t)(wr_varint(b->p + b->len, v) - b->p);
}

static void put_le32(struct buf *b, uint32_t v)
{
    uint8_t x[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    put_bytes(b, x, 4);
}

static uint64_t zigzag(int64_t v) { return ((uint64_t)v << 1) ^ (uint64_t)(v >> 63); }
static int64_t unzigzag(uint64_t v) { return (int64_t)(v >> 1) ^ -(int64_t)(v & 1); }

/* Doubles are stored little-endian IEEE 754. */
static void put_f64(struct buf *b, double d)
{
    if (!buf_reserve(b, 8))
        return;
    b->len = (size_t)(wr_le64(b->p + b->len, dbits(d)) - b->p);
}

/* A number: integral values (the common case: ns, counts) as a zigzag varint
 * shifted left by one, anything else as the varint 1 and an f64; written
 * through p, at most 10 bytes. */
static inline uint8_t *wr_num(uint8_t *p, double d)
{
    if (d >= -4611686018427387904.0 && d <= 4611686018427387904.0 && d == (double)(int64_t)d &&
        !(d == 0 && signbit(d)))
        return wr_varint(p, zigzag((int64_t)d) << 1);
    *p++ = 1;
    return wr_le64(p, dbits(d));
}

static void put_str(struct buf *b, const char *s, size_t n)
{
    put_varint(b, n);
    put_bytes(b, s, n);
}

/* Reader over an untrusted byte range: every get checks the bounds; the first
 * failure latches `bad` and names what was being read. */
struct rd {
    const uint8_t *p, *end;
    const char *bad;
};

static bool rd_fail(struct rd *r, const char *what)
{
    if (!r->bad)
        r->bad = what;
    r->p = r->end;
    return false;
}

static uint8_t get_u8(struct rd *r, const char *what)
{
    if (r->p >= r->end) {
        rd_fail(r, what);
        return 0;
    }
    return *r->p++;
}

static uint64_t get_varint(struct rd *r, const char *what)
{
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (r->p >= r->end)
            break;
        uint8_t c = *r->p++;
        v |= (uint64_t)(c & 0x7f) << shift;
        if (!(c & 0x80))
            return v;
    }
    rd_fail(r, what);
    return 0;
}

static uint64_t get_le64(struct rd *r, const char *what)
{
    if (r->end - r->p < 8) {
        rd_fail(r, what);
        return 0;
    }
    uint64_t v = ld_le64(r->p);
    r->p += 8;
    return v;
}

static uint32_t get_le32(struct rd *r, const char *what)
{
    if (r->end - r->p < 4) {
        rd_fail(r, what);
        return 0;
    }
    const uint8_t *p = r->p;
    r->p += 4;
    return p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static double get_f64(struct rd *r, const char *what) { return bitsd(get_le64(r, what)); }

static double get_num(struct rd *r, const char *what)
{
    uint64_t v = get_varint(r, what);
    if (v == 1)
        return get_f64(r, what);
    if (v & 1)
        rd_fail(r, what);
    return (double)unzigzag(v >> 1);
}

/* A length-prefixed string, copied NUL-terminated into a new allocation
 * (or into fixed, when given). Rejects embedded NULs. */
static char *get_str(struct rd *r, const char *what, char *fixed, size_t fixed_len)
{
    uint64_t n = get_varint(r, what);
    if (r->bad || n > (uint64_t)(r->end - r->p) || memchr(r->p, 0, n) ||
        (fixed && n >= fixed_len)) {
        rd_fail(r, what);
        return NULL;
    }
    char *s = fixed ? fixed : malloc(n + 1);
    if (!s) {
        rd_fail(r, "out of memory");
        return NULL;
    }
    memcpy(s, r->p, n);
    s[n] = 0;
    r->p += n;
    return s;
}

/* A count of items each at least min_bytes long: bounded by what is left, so
 * a corrupt count cannot make us allocate much. */
static uint64_t get_count(struct rd *r, size_t min_bytes, const char *what)
{
    uint64_t n = get_varint(r, what);
    if (!r->bad && n > (uint64_t)(r->end - r->p) / min_bytes)
        rd_fail(r, what);
    return r->bad ? 0 : n;
}

static void be64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}

static uint64_t rd_be64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

static void be32(uint8_t *p, uint32_t v)
{
    for (int i = 3; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}

static uint32_t rd_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static bool grow_array(void **arr, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return true;
    void *p = realloc(*arr, need * elem);
    if (!p)
        return false;
    *arr = p;
    *cap = need;
    return true;
}

/* ------------------------------------------------------------ name map */

/* The previous time series point of a metric: a point is encoded as the
 * fields that differ from it. */
struct chain {
    bool have;
    uint8_t kind;                /* POINT_* */
    uint64_t v[POINT_FIELDS];    /* count, then bit patterns of the doubles */
};

/* The points of one persist, kept in memory until every window has a chunk
 * row past its seq: the history entry's point data and, per point, its
 * metric id, the offset and the length of its bytes. A window due gathers
 * its metrics' points from these. */
struct ptab {
    uint32_t id, off;
    uint16_t len;
};
struct psrc;
struct ring_entry {
    uint64_t seq, ts;
    struct buf data;
    struct ptab *tab;
    size_t n, tcap;
};

/* metric_entry.hflags */
#define HF_DIRTY 0x02    /* may have delta entries newer than its base row */
#define HF_ENTRY 0x04    /* has its delta entry in the persist being prepared */

/* What the store knows of one metric of a run: one cache line, since a
 * persist reads it for every metric of the snapshot (what only the writer
 * needs beyond it is in arrays of the handle, indexed like the entries). */
struct metric_entry {
    uint64_t fp[5];              /* fingerprint of the last persisted state */
    uint32_t gen;                /* the persist that last saw it */
    uint32_t pos;                /* its index in that snapshot's counters or series */
    uint32_t id;
    uint32_t name_off;           /* its name in the table's arena */
    uint8_t cls;                 /* CLASS_COUNTER or CLASS_SERIES */
    bool fp_valid;
    bool in_latest;              /* has a base row in the latest table */
    bool changed_now;            /* changed in the persist being prepared */
    bool point_dirty;            /* changed since its last time series point */
    bool has_point;
    uint8_t hflags;              /* HF_* */
};
_Static_assert(sizeof(struct metric_entry) == 64, "a metric entry is a cache line");

struct metric_table {
    struct metric_entry *e;
    size_t n, cap;
    uint32_t *slots;             /* open addressing: entry index + 1, 0 = empty */
    size_t nslots;
    char *arena;                 /* the names, NUL-terminated, in id order */
    size_t alen, acap;
};
#define MT_NAME(t, e) ((t)->arena + (e)->name_off)

static uint64_t name_hash(uint8_t cls, const char *s)
{
    uint64_t h = 1469598103934665603ULL ^ cls;
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 1099511628211ULL;
    return h ^ (h >> 29);
}

static void mt_free(struct metric_table *t)
{
    free(t->e);
    free(t->slots);
    free(t->arena);
    memset(t, 0, sizeof *t);
}

static long mt_find(const struct metric_table *t, uint8_t cls, const char *name)
{
    if (!t->nslots)
        return -1;
    size_t mask = t->nslots - 1;
    for (size_t i = name_hash(cls, name) & mask;; i = (i + 1) & mask) {
        uint32_t s = t->slots[i];
        if (!s)
            return -1;
        const struct metric_entry *e = &t->e[s - 1];
        if (e->cls == cls && !strcmp(MT_NAME(t, e), name))
            return (long)(s - 1);
    }
}

static int mt_rehash(struct metric_table *t, size_t nslots)
{
    uint32_t *slots = calloc(nslots, sizeof *slots);
    if (!slots)
        return -1;
    for (size_t k = 0; k < t->n; k++) {
        size_t i = name_hash(t->e[k].cls, MT_NAME(t, &t->e[k])) & (nslots - 1);
        while (slots[i])
            i = (i + 1) & (nslots - 1);
        slots[i] = (uint32_t)(k + 1);
    }
    free(t->slots);
    t->slots = slots;
    t->nslots = nslots;
    return 0;
}

/* Appends an entry (name copied); returns its index or -1. Entries are
 * added in id order, so entry order is id order. */
static long mt_add(struct metric_table *t, uint8_t cls, const char *name, uint32_t id)
{
    if (t->n && id <= t->e[t->n - 1].id)
        return -1;
    if (t->n == t->cap) {
        size_t ncap = t->cap ? t->cap * 2 : 64;
        /* on cache lines: a persist reads one line per metric, not two */
        struct metric_entry *ne = aligned_alloc(64, ncap * sizeof *ne);
        if (!ne)
            return -1;
        if (t->n)
            memcpy(ne, t->e, t->n * sizeof *ne);
        free(t->e);
        t->e = ne;
        t->cap = ncap;
    }
    if ((t->n + 1) * 2 > t->nslots && mt_rehash(t, t->nslots ? t->nslots * 2 : 128))
        return -1;
    size_t nl = strlen(name) + 1;
    if (t->alen + nl > t->acap) {
        size_t ncap = t->acap ? t->acap * 2 : 4096;
        while (ncap < t->alen + nl)
            ncap *= 2;
        if (ncap > UINT32_MAX)
            return -1;
        char *na = realloc(t->arena, ncap);
        if (!na)
            return -1;
        t->arena = na;
        t->acap = ncap;
    }
    memcpy(t->arena + t->alen, name, nl);
    t->e[t->n] = (struct metric_entry){.name_off = (uint32_t)t->alen, .id = id, .cls = cls, .gen = UINT32_MAX};
    t->alen += nl;
    size_t mask = t->nslots - 1;
    size_t i = name_hash(cls, name) & mask;
    while (t->slots[i])
        i = (i + 1) & mask;
    t->slots[i] = (uint32_t)(t->n + 1);
    return (long)t->n++;
}

/* id -> entry index of a table loaded in id order (UINT32_MAX: no such id). */
static uint32_t *mt_index_by_id(const struct metric_table *t, uint32_t *max_id)
{
    *max_id = t->n ? t->e[t->n - 1].id : 0;
    uint32_t *ix = malloc(((size_t)*max_id + 1) * sizeof *ix);
    if (!ix)
        return NULL;
    memset(ix, 0xff, ((size_t)*max_id + 1) * sizeof *ix);
    for (size_t i = 0; i < t->n; i++)
        ix[t->e[i].id] = (uint32_t)i;
    return ix;
}

/* ------------------------------------------------------------ the handle */

/* What a persist prepares before its transaction and applies to the handle
 * once it committed. What it changes in place before (fingerprints, previous
 * points, point pacing) a failed persist turns back into "unknown", which
 * the next persist handles by writing more, never less. */
struct stage_base {
    uint32_t entry;
    uint32_t off, len;           /* base row in rb */
    bool is_new;                 /* no base row before */
};
struct stage_row {
    uint32_t window;
    uint32_t off, len;           /* chunk row in rows */
};

struct store {
    MDB_env *env;
    MDB_dbi meta, runs, run_ids, names, latest, final, history, series;
    bool readonly, nolock;
    uint64_t map_size;
    uint32_t full_every;
    char err[512];
    char dir[4096];

    /* writer: the current run */
    bool have_run;
    struct store_run_info run;
    uint32_t next_id;
    uint64_t tail_from;          /* seq of the oldest point not in a chunk row */
    size_t n_stored;             /* metric entries whose names rows are committed */
    struct metric_table mt;
    char *sections_json;         /* sections of the last persist (compact, sorted) */
    uint32_t gen;                /* persists attempted by this handle */
    uint32_t *gone;              /* entries with a base row that the snapshot lacks */
    size_t gone_cap;
    uint32_t *hint;              /* counter position -> entry index, from the last persist */
    size_t hint_cap;
    uint32_t *shint;             /* series position -> entry index, from the last persist */
    size_t shint_cap;
    /* the change hints (snapshot.h) of the last persist, if it committed:
     * its epoch (0: none, or it failed), version and sizes */
    uint64_t h_epoch, h_version;
    size_t h_ncounters, h_nseries;
    uint32_t *chg;               /* entries that changed in the persist being prepared */
    size_t chg_cap, n_chg;
    uint64_t series_interval_ns;
    bool have_keyframe;          /* of the current run, by this handle */
    uint32_t since_keyframe;     /* persists since it */
    uint64_t last_keyframe_ns;
    uint32_t flush_next;         /* next chunk window to flush */
    /* latest: the folds (see PART_IDS) */
    bool fold_all;               /* the next persist folds every part (a run new to the handle) */
    uint64_t *part_fold;         /* per part: seq of its last fold */
    size_t part_cap, n_parts;
    uint32_t fold_next;          /* next part of the rotation */
    uint64_t *drows;             /* seqs of the run's delta rows, ascending */
    size_t drows_cap, n_drows;
    /* the persist being prepared */
    uint32_t flush_start, flush_count;
    uint32_t fold_start, fold_count, fold_parts;  /* the parts it folds (of fold_parts) */
    bool fold_every;             /* it folds every part */
    uint32_t n_parts_now;
    size_t n_drop;               /* so many of drows go */
    bool drop_all;               /* or all of the run's */
    uint32_t n_delta;            /* entries of its delta row */
    uint32_t last_entry;         /* id of the last of them */
    size_t piece_max;            /* most bytes of a delta piece: one overflow page */
    uint32_t *pieces;            /* offsets of the delta row's pieces in delta */
    size_t pieces_cap, n_pieces;
    uint32_t piece_entries;      /* entries of the last piece */
    size_t entry_at;             /* offset of the entry being written */
    /* sparse staging: when every entry of the handle is in the snapshot and
     * no point can be due but for changed metrics, stage_persist visits only
     * the changed entries whose work the comparison did not finish, and the
     * folded parts, instead of every entry */
    uint32_t *visit;             /* those changed entries, in the order found */
    size_t visit_cap, n_visit;
    uint32_t *order;             /* what stage_persist visits, in entry order */
    size_t order_cap;
    size_t n_seen;               /* distinct entries the snapshot has */
    uint64_t dirty_pt_min;       /* no entry waiting for a point (point_dirty) has an older one
                                    (UINT64_MAX: none waits), as of the last commit */
    uint64_t dirty_pt_min_now;   /* the same, as the persist being prepared leaves them: the
                                    comparison's finished entries, then stage_persist's */
    bool stage_all;              /* the next persist visits every entry (a persist failed) */
    bool keyframe_now, sections_changed;
    const char *sections_now;

    struct buf full, scratch;
    struct buf header, delta;       /* latest header row, delta row being built */
    struct buf hhead, hp, hidx;     /* history entry head, points, their index */
    struct buf rb;                  /* base rows to write */
    struct buf rows;                /* chunk rows to write */
    uint32_t *spt;                  /* entries that get a point in the persist being prepared */
    size_t spt_cap, n_spt;
    struct ptab *ctab;              /* the points of the persist being prepared */
    size_t ctab_cap;
    struct chain *chains;           /* per entry: its previous point */
    size_t chains_cap;
    uint64_t *pt_ns;                /* per entry: timestamp of its last time series point */
    size_t pt_cap;
    struct ring_entry *ring;        /* points of recent persists, oldest first */
    size_t ring_cap, ring_head, ring_n;
    uint64_t *wmark;                /* per window: points below this seq are in chunk rows */
    size_t wmark_cap, n_wmark;
    struct psrc *srcs;              /* a window's sources of points (build_row) */
    size_t srcs_cap;
    struct stage_base *sbase;
    size_t sbase_cap, n_sbase;
    struct stage_row *srow;
    size_t srow_cap, n_srow;
};

static int fail(struct store *st, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(struct store *st, int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(st->err, sizeof st->err, fmt, ap);
    va_end(ap);
    return status;
}

const char *store_error(const struct store *st) { return st->err; }
uint64_t store_map_size(const struct store *st) { return st->map_size; }

void store_set_series_interval(struct store *st, uint64_t ns)
{
    st->series_interval_ns = ns;
}

void store_set_history_full_every(struct store *st, uint32_t n)
{
    st->full_every = n ? n : 1;
}

int store_set_commit_sync(struct store *st, bool sync)
{
    if (st->readonly)
        return STORE_OK;
    int rc = mdb_env_set_flags(st->env, MDB_NOSYNC, sync ? 0 : 1);
    if (rc) {
        snprintf(st->err, sizeof st->err, "cannot %s fsync of commits: %s", sync ? "restore" : "skip",
                 mdb_strerror(rc));
        return STORE_ERROR;
    }
    return STORE_OK;
}

static int check_schema(struct store *st, MDB_txn *txn, bool create)
{
    MDB_val k = {strlen("schema_version"), "schema_version"}, v;
    int rc = mdb_get(txn, st->meta, &k, &v);
    if (rc == MDB_NOTFOUND && create) {
        uint8_t b[4] = {OBSD_STORE_SCHEMA_VERSION, 0, 0, 0};
        v = (MDB_val){4, b};
        rc = mdb_put(txn, st->meta, &k, &v, 0);
        return rc ? fail(st, STORE_ERROR, "%s: cannot write the schema version: %s", st->dir,
                         mdb_strerror(rc))
                  : STORE_OK;
    }
    if (rc == MDB_NOTFOUND)
        return fail(st, STORE_ERROR, "%s: not an obsd store (no schema version)", st->dir);
    if (rc)
        return fail(st, STORE_ERROR, "%s: %s", st->dir, mdb_strerror(rc));
    if (v.mv_size != 4)
        return fail(st, STORE_ERROR, "%s: corrupt store: schema version is %zu bytes, not 4",
                    st->dir, v.mv_size);
    const uint8_t *p = v.mv_data;
    uint32_t ver = p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
    if (ver > OBSD_STORE_SCHEMA_VERSION)
        return fail(st, STORE_ERROR, "%s: store schema %u is newer than this %s (%d)", st->dir, ver,
                    program_invocation_short_name, OBSD_STORE_SCHEMA_VERSION);
    if (ver < OBSD_STORE_SCHEMA_VERSION)
        return fail(st, STORE_ERROR, "%s: store schema %u is older than this %s (%d)", st->dir, ver,
                    program_invocation_short_name, OBSD_STORE_SCHEMA_VERSION);
    return STORE_OK;
}

static int open_dbis(struct store *st, MDB_txn *txn)
{
    static const char *const names[] = {"meta",  "runs",    "run_ids", "names",
                                        "latest", "final", "history", "series"};
    MDB_dbi *dbis[] = {&st->meta,   &st->runs,  &st->run_ids, &st->names,
                       &st->latest, &st->final, &st->history, &st->series};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        int rc = mdb_dbi_open(txn, names[i], st->readonly ? 0 : MDB_CREATE, dbis[i]);
        if (rc == MDB_NOTFOUND)
            return fail(st, STORE_ERROR, "%s: not an obsd store (no '%s' table)", st->dir, names[i]);
        if (rc)
            return fail(st, STORE_ERROR, "%s: cannot open table '%s': %s", st->dir, names[i],
                        mdb_strerror(rc));
    }
    return STORE_OK;
}

/* Begins a read transaction, adopting a map grown by the writer meanwhile. */
static int rd_begin(struct store *st, MDB_txn **txn)
{
    int rc = mdb_txn_begin(st->env, NULL, MDB_RDONLY, txn);
    if (rc == MDB_MAP_RESIZED) {
        mdb_env_set_mapsize(st->env, 0);
        rc = mdb_txn_begin(st->env, NULL, MDB_RDONLY, txn);
    }
    if (rc)
        return fail(st, STORE_ERROR, "%s: cannot begin a read transaction: %s", st->dir,
                    mdb_strerror(rc));
    return STORE_OK;
}

static void refresh_map_size(struct store *st)
{
    MDB_envinfo info;
    if (!mdb_env_info(st->env, &info))
        st->map_size = info.me_mapsize;
}

struct store *store_open(const char *dir, uint64_t map_size, bool sync, bool readonly,
                         char *err, size_t errlen)
{
    struct store *st = calloc(1, sizeof *st);
    if (!st) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    st->readonly = readonly;
    st->full_every = DEFAULT_FULL_EVERY;
    st->series_interval_ns = DEFAULT_SERIES_INTERVAL_NS;
    st->map_size = map_size ? map_size : DEFAULT_MAP_SIZE;
    snprintf(st->dir, sizeof st->dir, "%s", dir);

    char path[4200];
    snprintf(path, sizeof path, "%s/data.mdb", dir);
    if (readonly && access(path, F_OK)) {
        snprintf(err, errlen, "no store at %s (%s: %s)", dir, path, strerror(errno));
        free(st);
        return NULL;
    }
    if (!readonly && mkdir(dir, 0750) && errno != EEXIST) {
        snprintf(err, errlen, "cannot create store directory %s: %s", dir, strerror(errno));
        free(st);
        return NULL;
    }

    /* No MDB_WRITEMAP: with a writable map, a stray write anywhere in the
     * collector (which parses untrusted shared memory) could corrupt
     * committed snapshots, and the file would be as large as the map.
     * MDB_NOMETASYNC: a synced commit flushes its pages before its meta page
     * is written, but not the meta page itself (the next commit's flush
     * does), one device flush instead of two: a crash of the machine may
     * undo the last commit, never the store's integrity. The final snapshot
     * and the last commit before store_close are flushed whole. */
    unsigned flags = MDB_NOTLS | (readonly ? MDB_RDONLY : MDB_NOMETASYNC) | (!readonly && !sync ? MDB_NOSYNC : 0);
    int rc = 0;
    for (int attempt = 0; attempt < 2; attempt++) {
        if ((rc = mdb_env_create(&st->env)) || (rc = mdb_env_set_maxdbs(st->env, 16)) ||
            (!readonly && (rc = mdb_env_set_mapsize(st->env, st->map_size))) ||
            (rc = mdb_env_open(st->env, dir, flags, 0640))) {
            mdb_env_close(st->env);
            st->env = NULL;
            /* A copy of a store in a directory we cannot write has no usable
             * lock file; without a writer, reading it without locks is safe. */
            if (readonly && !st->nolock && (rc == EACCES || rc == EROFS || rc == EPERM)) {
                st->nolock = true;
                flags |= MDB_NOLOCK;
                continue;
            }
            break;
        }
        rc = 0;
        break;
    }
    if (rc) {
        snprintf(err, errlen, "cannot open store %s: %s", dir, mdb_strerror(rc));
        free(st);
        return NULL;
    }
    if (!st->nolock) {
        int dead = 0;
        mdb_reader_check(st->env, &dead);
    }
    refresh_map_size(st);
    MDB_stat ms;
    st->piece_max = (!mdb_env_stat(st->env, &ms) && ms.ms_psize >= 1024 ? ms.ms_psize : 4096) - LMDB_PAGE_HEAD;

    MDB_txn *txn;
    if (readonly) {
        if (rd_begin(st, &txn))
            goto fail;
    } else if ((rc = mdb_txn_begin(st->env, NULL, 0, &txn))) {
        fail(st, STORE_ERROR, "%s: cannot begin a write transaction: %s", dir, mdb_strerror(rc));
        goto fail;
    }
    if (open_dbis(st, txn) || check_schema(st, txn, !readonly)) {
        mdb_txn_abort(txn);
        goto fail;
    }
    if ((rc = mdb_txn_commit(txn))) {
        fail(st, STORE_ERROR, "%s: %s", dir, mdb_strerror(rc));
        goto fail;
    }
    return st;
fail:
    snprintf(err, errlen, "%s", st->err);
    mdb_env_close(st->env);
    free(st);
    return NULL;
}

static void forget_run(struct store *st)
{
    /* the per-entry arrays describe the old run's metrics */
    if (st->chains)
        memset(st->chains, 0, st->chains_cap * sizeof *st->chains);
    if (st->pt_ns)
        memset(st->pt_ns, 0, st->pt_cap * sizeof *st->pt_ns);
    mt_free(&st->mt);
    free(st->sections_json);
    st->sections_json = NULL;
    st->have_run = false;
    st->have_keyframe = false;
    st->since_keyframe = 0;
    st->n_stored = 0;
    st->next_id = 0;
    st->tail_from = 0;
    st->flush_next = 0;
    st->fold_all = true;
    st->stage_all = true;
    st->dirty_pt_min = 0;
    st->n_parts = 0;
    st->fold_next = 0;
    st->n_drows = 0;
    st->ring_head = st->ring_n = 0;
    st->n_wmark = 0;
    st->h_epoch = 0;             /* the positions it saw were the old run's entries */
}

/* Whether commits are flushed to disk (store_sync; not MDB_NOSYNC). */
static bool commits_synced(const struct store *st)
{
    unsigned flags;
    return !mdb_env_get_flags(st->env, &flags) && !(flags & MDB_NOSYNC);
}

void store_close(struct store *st)
{
    if (!st)
        return;
    forget_run(st);
    free(st->hint);
    free(st->shint);
    free(st->gone);
    free(st->chg);
    struct buf *bufs[] = {&st->full, &st->scratch, &st->header, &st->delta, &st->hhead,
                          &st->hp,   &st->hidx,    &st->rb,     &st->rows};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        free(bufs[i]->p);
    free(st->part_fold);
    free(st->drows);
    free(st->pieces);
    free(st->spt);
    free(st->sbase);
    free(st->srow);
    free(st->ctab);
    free(st->chains);
    free(st->pt_ns);
    free(st->visit);
    free(st->order);
    for (size_t i = 0; i < st->ring_cap; i++) {
        free(st->ring[i].data.p);
        free(st->ring[i].tab);
    }
    free(st->ring);
    free(st->wmark);
    free(st->srcs);
    if (st->env) {
        /* the meta page of the last commit (MDB_NOMETASYNC); nothing to
         * report a failure to, and the store stays intact without it */
        if (!st->readonly && commits_synced(st))
            mdb_env_sync(st->env, 1);
        mdb_env_close(st->env);
    }
    free(st);
}

/* ------------------------------------------------------------ run records */

static void encode_run(struct buf *b, const struct store_run_info *r, uint32_t next_id,
                       uint64_t tail_from)
{
    put_u8(b, VALUE_FORMAT);
    put_str(b, r->id, strlen(r->id));
    put_str(b, r->name, strlen(r->name));
    put_varint(b, r->start_ns);
    put_u8(b, (uint8_t)r->state);
    put_varint(b, r->last_seq);
    put_varint(b, r->last_timestamp_ns);
    put_varint(b, r->n_pending_tasks);
    put_varint(b, r->n_snapshots);
    put_u8(b, r->has_final);
    put_varint(b, r->final_seq);
    put_varint(b, next_id);
    put_varint(b, tail_from);
}

static int decode_run(struct store *st, const MDB_val *v, uint64_t run_seq,
                      struct store_run_info *r, uint32_t *next_id, uint64_t *tail_from)
{
    struct rd d = {v->mv_data, (const uint8_t *)v->mv_data + v->mv_size, NULL};
    memset(r, 0, sizeof *r);
    r->run_seq = run_seq;
    if (get_u8(&d, "format") != VALUE_FORMAT && !d.bad)
        rd_fail(&d, "format byte");
    get_str(&d, "run id", r->id, sizeof r->id);
    get_str(&d, "run name", r->name, sizeof r->name);
    r->start_ns = get_varint(&d, "start time");
    uint8_t state = get_u8(&d, "state");
    if (state > OBSD_RUN_INTERRUPTED)
        rd_fail(&d, "state");
    r->state = (enum obsd_run_state)state;
    r->last_seq = get_varint(&d, "last seq");
    r->last_timestamp_ns = get_varint(&d, "last timestamp");
    r->n_pending_tasks = get_varint(&d, "pending tasks");
    r->n_snapshots = get_varint(&d, "snapshot count");
    uint8_t hf = get_u8(&d, "final flag");
    if (hf > 1)
        rd_fail(&d, "final flag");
    r->has_final = hf;
    r->final_seq = get_varint(&d, "final seq");
    uint64_t nid = get_varint(&d, "next metric id");
    if (nid > UINT32_MAX)
        rd_fail(&d, "next metric id");
    uint64_t tail = get_varint(&d, "time series tail");
    if (!d.bad && d.p != d.end)
        rd_fail(&d, "trailing bytes");
    if (d.bad)
        return fail(st, STORE_ERROR, "corrupt store: run record #%llu: bad %s",
                    (unsigned long long)run_seq, d.bad);
    if (next_id)
        *next_id = (uint32_t)nid;
    if (tail_from)
        *tail_from = tail;
    return STORE_OK;
}

static int get_run(struct store *st, MDB_txn *txn, const char *run_id,
                   struct store_run_info *out, uint32_t *next_id, uint64_t *tail_from)
{
    MDB_val k = {strlen(run_id), (void *)run_id}, v;
    int rc = mdb_get(txn, st->run_ids, &k, &v);
    if (rc == MDB_NOTFOUND || !*run_id)
        return fail(st, STORE_NOT_FOUND, "no run '%s' in %s", run_id, st->dir);
    if (rc)
        return fail(st, STORE_ERROR, "%s: %s", st->dir, mdb_strerror(rc));
    if (v.mv_size != 8)
        return fail(st, STORE_ERROR, "corrupt store: run index entry of '%s' is %zu bytes", run_id,
                    v.mv_size);
    uint8_t kb[8];
    memcpy(kb, v.mv_data, 8);
    uint64_t run_seq = rd_be64(kb);
    k = (MDB_val){8, kb};
    rc = mdb_get(txn, st->runs, &k, &v);
    if (rc == MDB_NOTFOUND)
        return fail(st, STORE_ERROR, "corrupt store: run '%s' is indexed but has no record", run_id);
    if (rc)
        return fail(st, STORE_ERROR, "%s: %s", st->dir, mdb_strerror(rc));
    return decode_run(st, &v, run_seq, out, next_id, tail_from);
}

/* ------------------------------------------------------------ snapshots */

/* A counter named name (nl bytes). */
static void encode_counter_as(struct buf *b, const struct snap_counter *c, const char *name, size_t nl)
{
    put_str(b, name, nl);
    put_u8(b, c->is_float);
    if (c->is_float)
        put_f64(b, c->fvalue);
    else
        put_varint(b, zigzag(c->ivalue));
}

static bool buckets_contiguous(const struct snap_bucket *b, size_t n);

/* Upper bound of a series' encoding after its name. */
static size_t series_body_max(const struct snap_series *sr)
{
    return 1 + 10 + 10 * (4 + OBSD_N_PERCENTILES) + 10 + 8 * 2 * sr->n_buckets + 10 * sr->n_buckets;
}

/* A series after its name: flags, summary, buckets. Written through p, at
 * most series_body_max bytes. */
static uint8_t *wr_series_body(uint8_t *p, const struct snap_series *sr)
{
    size_t n = sr->n_buckets;
    bool contiguous = buckets_contiguous(sr->buckets, n);
    *p++ = (uint8_t)(sr->exact | contiguous << 1);
    p = wr_varint(p, sr->count);
    p = wr_num(p, sr->total);
    p = wr_num(p, sr->min);
    p = wr_num(p, sr->max);
    p = wr_num(p, sr->sum_sq);
    for (int i = 0; i < OBSD_N_PERCENTILES; i++)
        p = wr_num(p, sr->percentiles[i]);
    p = wr_varint(p, n);
    for (size_t i = 0; i < n; i++) {
        if (!contiguous || i == 0)
            p = wr_le64(p, dbits(sr->buckets[i].lo));
        p = wr_le64(p, dbits(sr->buckets[i].hi));
    }
    for (size_t i = 0; i < n; i++)
        p = wr_varint(p, sr->buckets[i].count);
    return p;
}

static void encode_counter(struct buf *b, const struct snap_counter *c)
{
    encode_counter_as(b, c, c->name, strlen(c->name));
}

/* A series in full, named name (nl bytes): keyframes, the final and base
 * rows encode every metric, so one reservation per series and raw writes. */
static void encode_series_as(struct buf *b, const struct snap_series *sr, const char *name, size_t nl)
{
    uint8_t *p = buf_tail(b, 10 + nl + series_body_max(sr));
    if (!p)
        return;
    p = wr_varint(p, nl);
    memcpy(p, name, nl);
    p += nl;
    p = wr_series_body(p, sr);
    b->len = (size_t)(p - b->p);
}

static void encode_series(struct buf *b, const struct snap_series *sr)
{
    encode_series_as(b, sr, sr->name, strlen(sr->name));
}

/* The full form of a snapshot (final, history keyframes) or, without
 * metrics, the header row of the latest table. */
static void encode_snapshot(struct buf *b, const struct snapshot *s, const char *sections_json,
                            bool with_metrics)
{
    put_u8(b, VALUE_FORMAT);
    put_varint(b, s->schema_version);
    put_varint(b, s->seq);
    put_varint(b, s->timestamp_ns);
    put_u8(b, (uint8_t)s->state);
    put_varint(b, s->n_pending_tasks);
    put_str(b, s->run, strnlen(s->run, sizeof s->run - 1));
    put_varint(b, with_metrics ? s->n_counters : 0);
    for (size_t i = 0; with_metrics && i < s->n_counters; i++)
        encode_counter(b, &s->counters[i]);
    put_varint(b, with_metrics ? s->n_series : 0);
    for (size_t i = 0; with_metrics && i < s->n_series; i++)
        encode_series(b, &s->series[i]);
    put_str(b, sections_json ? sections_json : "", sections_json ? strlen(sections_json) : 0);
}

/* On failure nothing is left allocated. */
static bool decode_counter(struct rd *d, struct snap_counter *c)
{
    memset(c, 0, sizeof *c);
    c->name = get_str(d, "counter name", NULL, 0);
    uint8_t f = get_u8(d, "counter flags");
    if (f > 1)
        rd_fail(d, "counter flags");
    c->is_float = f;
    if (f)
        c->fvalue = get_f64(d, "counter value");
    else
        c->fvalue = (double)(c->ivalue = unzigzag(get_varint(d, "counter value")));
    if (d->bad) {
        free(c->name);
        c->name = NULL;
    }
    return !d->bad;
}

/* What wr_series_body wrote, into sr (name NULL). On failure sr->buckets
 * may be left allocated. */
static bool decode_series_body(struct rd *d, struct snap_series *sr)
{
    memset(sr, 0, sizeof *sr);
    uint8_t flags = get_u8(d, "series flags");
    if (flags > 3)
        rd_fail(d, "series flags");
    sr->exact = flags & 1;
    bool contiguous = flags & 2;
    sr->count = get_varint(d, "series count");
    sr->total = get_num(d, "series total");
    sr->min = get_num(d, "series min");
    sr->max = get_num(d, "series max");
    sr->sum_sq = get_num(d, "series sum_sq");
    for (int i = 0; i < OBSD_N_PERCENTILES; i++)
        sr->percentiles[i] = get_num(d, "series percentile");
    sr->n_buckets = get_count(d, contiguous ? 9 : 17, "histogram bucket count");
    if (sr->n_buckets && !d->bad) {
        sr->buckets = calloc(sr->n_buckets, sizeof *sr->buckets);
        if (!sr->buckets)
            return rd_fail(d, "out of memory");
        for (size_t i = 0; i < sr->n_buckets; i++) {
            sr->buckets[i].lo = (!contiguous || i == 0) ? get_f64(d, "bucket edge")
                                                        : sr->buckets[i - 1].hi;
            sr->buckets[i].hi = get_f64(d, "bucket edge");
        }
        for (size_t i = 0; i < sr->n_buckets; i++)
            sr->buckets[i].count = get_varint(d, "bucket count");
    }
    return !d->bad;
}

/* On failure sr's name and buckets may be left allocated. */
static bool decode_series(struct rd *d, struct snap_series *sr)
{
    char *name = get_str(d, "series name", NULL, 0);
    if (!name) {
        memset(sr, 0, sizeof *sr);
        return false;
    }
    bool ok = decode_series_body(d, sr);
    sr->name = name;
    return ok;
}

/* Decodes a full snapshot from d; NULL with d->bad set on failure. */
static struct snapshot *decode_snapshot(struct rd *d)
{
    if (get_u8(d, "format byte") != VALUE_FORMAT) {
        rd_fail(d, "format byte");
        return NULL;
    }
    uint64_t schema = get_varint(d, "schema version");
    uint64_t seq = get_varint(d, "seq");
    uint64_t ts = get_varint(d, "timestamp");
    uint8_t state = get_u8(d, "state");
    uint64_t pending = get_varint(d, "pending tasks");
    char run[64];
    get_str(d, "run id", run, sizeof run);
    if (state > OBSD_RUN_INTERRUPTED)
        rd_fail(d, "state");
    if (schema > UINT32_MAX)
        rd_fail(d, "schema version");
    if (d->bad)
        return NULL;
    struct snapshot *s = snapshot_new(run, seq, (enum obsd_run_state)state);
    if (!s) {
        rd_fail(d, "out of memory");
        return NULL;
    }
    s->schema_version = (uint32_t)schema;
    s->timestamp_ns = ts;
    s->n_pending_tasks = pending;

    uint64_t nc = get_count(d, 3, "counter count");
    if (nc && !grow_array((void **)&s->counters, &s->cap_counters, nc, sizeof *s->counters))
        rd_fail(d, "out of memory");
    for (uint64_t i = 0; i < nc && !d->bad; i++) {
        struct snap_counter c;
        if (!decode_counter(d, &c))
            break;
        s->counters[s->n_counters++] = c;
    }
    uint64_t ns = get_count(d, 4 + 4 + OBSD_N_PERCENTILES, "series count");
    if (ns && !grow_array((void **)&s->series, &s->cap_series, ns, sizeof *s->series))
        rd_fail(d, "out of memory");
    for (uint64_t i = 0; i < ns && !d->bad; i++) {
        struct snap_series sr;
        bool ok = decode_series(d, &sr);
        if (!ok) {
            free(sr.name);
            free(sr.buckets);
            break;
        }
        s->series[s->n_series++] = sr;
    }
    char *sections = get_str(d, "sections", NULL, 0);
    if (!d->bad && *sections) {
        json_error_t je;
        json_t *j = json_loads(sections, 0, &je);
        if (!json_is_object(j))
            rd_fail(d, "sections JSON");
        else {
            json_decref(s->sections);
            s->sections = json_incref(j);
        }
        json_decref(j);
    }
    free(sections);
    if (!d->bad && d->p != d->end)
        rd_fail(d, "trailing bytes");
    if (d->bad) {
        snapshot_free(s);
        return NULL;
    }
    return s;
}

/* ------------------------------------------------------------ keys */

static MDB_val run_key(uint8_t kb[8], uint64_t run_seq)
{
    be64(kb, run_seq);
    return (MDB_val){8, kb};
}

static MDB_val history_key(uint8_t kb[16], uint64_t run_seq, uint64_t seq)
{
    be64(kb, run_seq);
    be64(kb + 8, seq);
    return (MDB_val){16, kb};
}

static MDB_val chunk_key(uint8_t kb[20], uint64_t run_seq, uint32_t window, uint64_t seq)
{
    be64(kb, run_seq);
    be32(kb + 8, window);
    be64(kb + 12, seq);
    return (MDB_val){20, kb};
}

static MDB_val latest_metric_key(uint8_t kb[12], uint64_t run_seq, uint32_t id)
{
    be64(kb, run_seq);
    be32(kb + 8, id);
    return (MDB_val){12, kb};
}

/* A piece of a delta row of the latest table: after the run's base rows. */
static MDB_val delta_key(uint8_t kb[24], uint64_t run_seq, uint64_t seq, uint32_t piece)
{
    be64(kb, run_seq);
    be32(kb + 8, DELTA_ID);
    be64(kb + 12, seq);
    be32(kb + 20, piece);
    return (MDB_val){24, kb};
}

/* ------------------------------------------------------------ time series points */

#define EXACT_INT_LIMIT 9007199254740992.0   /* 2^53: integers up to it are exact doubles */

static bool is_exact_int(double d)
{
    return d >= -EXACT_INT_LIMIT && d <= EXACT_INT_LIMIT && d == (double)(int64_t)d;
}

/* A double field of a point, relative to its previous value: when both are
 * integers (ns, counts: the common case) the difference as a zigzag varint
 * shifted left by one, otherwise the varint 1 and the new value's bits.
 * -0.0 takes the second form, since old + 0 would give +0.0. */
static uint8_t *wr_dnum(uint8_t *p, uint64_t nb, uint64_t ob)
{
    double n = bitsd(nb), o = bitsd(ob);
    if (is_exact_int(n) && is_exact_int(o) && !(n == 0 && signbit(n)))
        return wr_varint(p, zigzag((int64_t)n - (int64_t)o) << 1);
    *p++ = 1;
    return wr_le64(p, nb);
}

static uint64_t get_dnum(struct rd *d, uint64_t ob, const char *what)
{
    uint64_t v = get_varint(d, what);
    if (v == 1)
        return get_le64(d, what);
    double o = bitsd(ob);
    int64_t diff = unzigzag(v >> 1);
    const int64_t lim = (int64_t)1 << 53;
    if (d->bad || (v & 1) || !is_exact_int(o) || diff > 2 * lim || diff < -2 * lim ||
        (int64_t)o + diff > lim || (int64_t)o + diff < -lim) {
        rd_fail(d, what);
        return 0;
    }
    return dbits((double)((int64_t)o + diff));
}

static void series_point_values(const struct snap_series *sr, uint64_t v[POINT_FIELDS])
{
    v[0] = sr->count;
    v[1] = dbits(sr->total);
    v[2] = dbits(sr->min);
    v[3] = dbits(sr->max);
    for (int i = 0; i < STORE_POINT_NPCT; i++)
        v[4 + i] = dbits(sr->percentiles[point_pct_grid[i]]);
}

/* A point holds the fields that differ from the metric's previous point
 * (c, updated); absolute when there is none to refer to. At most
 * POINT_MAX_BYTES. */
static uint8_t *wr_series_point(uint8_t *p, const struct snap_series *sr, struct chain *c)
{
    uint64_t v[POINT_FIELDS];
    series_point_values(sr, v);
    bool abs = !c->have || c->kind != POINT_SERIES;
    if (abs)
        memset(c->v, 0, sizeof c->v);
    *p++ = POINT_SERIES | (abs ? POINT_ABSOLUTE : 0) | (sr->exact ? POINT_EXACT : 0);
    uint8_t *mp = p++, mask = 0;
    if (v[0] != c->v[0]) {
        mask = 1;
        p = wr_varint(p, zigzag((int64_t)(v[0] - c->v[0])));
    }
    for (int k = 1; k < POINT_FIELDS; k++)
        if (v[k] != c->v[k]) {
            mask |= (uint8_t)(1u << k);
            p = wr_dnum(p, v[k], c->v[k]);
        }
    *mp = mask;
    memcpy(c->v, v, sizeof v);
    c->have = true;
    c->kind = POINT_SERIES;
    return p;
}

static uint8_t *wr_counter_point(uint8_t *p, const struct snap_counter *cn, struct chain *c)
{
    uint8_t kind = cn->is_float ? POINT_FLOAT : POINT_INT;
    bool abs = !c->have || c->kind != kind;
    if (abs)
        memset(c->v, 0, sizeof c->v);
    *p++ = kind | (abs ? POINT_ABSOLUTE : 0);
    uint64_t v = cn->is_float ? dbits(cn->fvalue) : (uint64_t)cn->ivalue;
    if (cn->is_float)
        p = wr_le64(p, v);
    else
        p = wr_varint(p, zigzag((int64_t)(v - c->v[0])));
    c->v[0] = v;
    c->have = true;
    c->kind = kind;
    return p;
}

static bool point_kind_ok(struct rd *d, uint8_t b)
{
    uint8_t kind = b & POINT_KIND_MASK;
    if (kind > POINT_SERIES || (b & ~(POINT_KIND_MASK | POINT_ABSOLUTE | POINT_EXACT)) ||
        ((b & POINT_EXACT) && kind != POINT_SERIES))
        return rd_fail(d, "point kind");
    return true;
}

/* Decodes one point into p relative to c (updated). */
static bool rd_point(struct rd *d, struct chain *c, struct store_point *p)
{
    uint8_t b = get_u8(d, "point kind");
    if (d->bad || !point_kind_ok(d, b))
        return false;
    uint8_t kind = b & POINT_KIND_MASK;
    if (b & POINT_ABSOLUTE)
        memset(c->v, 0, sizeof c->v);
    else if (!c->have || c->kind != kind)
        return rd_fail(d, "point without the one before it");
    c->have = true;
    c->kind = kind;
    p->is_series = kind == POINT_SERIES;
    p->is_float = kind == POINT_FLOAT;
    if (kind == POINT_INT) {
        c->v[0] += (uint64_t)unzigzag(get_varint(d, "point value"));
        p->ivalue = (int64_t)c->v[0];
        p->fvalue = (double)p->ivalue;
    } else if (kind == POINT_FLOAT) {
        c->v[0] = get_le64(d, "point value");
        p->ivalue = 0;
        p->fvalue = bitsd(c->v[0]);
    } else {
        uint8_t mask = get_u8(d, "point fields");
        if (mask & 1)
            c->v[0] += (uint64_t)unzigzag(get_varint(d, "point count"));
        for (int k = 1; k < POINT_FIELDS; k++)
            if (mask & (1u << k))
                c->v[k] = get_dnum(d, c->v[k], "point value");
        p->exact = b & POINT_EXACT;
        p->count = c->v[0];
        p->total = bitsd(c->v[1]);
        p->min = bitsd(c->v[2]);
        p->max = bitsd(c->v[3]);
        for (int i = 0; i < STORE_POINT_NPCT; i++)
            p->pct[i] = bitsd(c->v[4 + i]);
    }
    return !d->bad;
}

/* Steps over one point without decoding it (it may depend on earlier ones). */
static bool skip_point(struct rd *d)
{
    uint8_t b = get_u8(d, "point kind");
    if (d->bad || !point_kind_ok(d, b))
        return false;
    uint8_t kind = b & POINT_KIND_MASK;
    if (kind == POINT_INT) {
        get_varint(d, "point value");
    } else if (kind == POINT_FLOAT) {
        get_le64(d, "point value");
    } else {
        uint8_t mask = get_u8(d, "point fields");
        if (mask & 1)
            get_varint(d, "point count");
        for (int k = 1; k < POINT_FIELDS; k++)
            if ((mask & (1u << k)) && get_varint(d, "point value") == 1)
                get_le64(d, "point value");
    }
    return !d->bad;
}

/* The points of a history entry: varint count, varint index length, varint
 * data length, index (u32 LE id, u32 LE offset of every INDEX_STRIDE-th
 * point), data (per point: varint id difference from the previous point,
 * the point). */
struct pts {
    uint64_t n, n_idx;
    const uint8_t *idx, *data, *end;
};

static bool rd_pts(struct rd *d, struct pts *ps)
{
    ps->n = get_varint(d, "point count");
    ps->n_idx = get_varint(d, "point index length");
    uint64_t len = get_varint(d, "points length");
    if (d->bad || ps->n_idx != (ps->n + INDEX_STRIDE - 1) / INDEX_STRIDE ||
        ps->n_idx > (uint64_t)(d->end - d->p) / 8)
        return rd_fail(d, "point index");
    ps->idx = d->p;
    d->p += 8 * ps->n_idx;
    if (len > (uint64_t)(d->end - d->p) || ps->n > len / 2)
        return rd_fail(d, "points length");
    ps->data = d->p;
    ps->end = d->p + len;
    d->p += len;
    return true;
}

/* Positions r at the point of metric id in ps; false when the entry has
 * none (or, with r->bad set, when ps is damaged). */
static bool pts_find(const struct pts *ps, uint32_t id, struct rd *r)
{
    r->bad = NULL;
    size_t lo = 0, hi = (size_t)ps->n_idx;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        struct rd x = {ps->idx + 8 * mid, ps->idx + 8 * mid + 8, NULL};
        if (get_le32(&x, "") <= id)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (!lo)
        return false;
    struct rd x = {ps->idx + 8 * (lo - 1), ps->idx + 8 * lo, NULL};
    uint64_t cur = get_le32(&x, "");
    uint32_t off = get_le32(&x, "");
    if (off >= (size_t)(ps->end - ps->data))
        return rd_fail(r, "point index offset");
    r->p = ps->data + off;
    r->end = ps->end;
    get_varint(r, "point id");
    for (uint64_t j = (lo - 1) * INDEX_STRIDE;;) {
        if (r->bad || cur > id)
            return false;
        if (cur == id)
            return true;
        if (!skip_point(r) || ++j >= ps->n)
            return false;
        uint64_t dl = get_varint(r, "point id");
        if (!dl || dl > UINT32_MAX)
            return rd_fail(r, "point id");
        cur += dl;
    }
}

/* ------------------------------------------------------------ latest: delta entries */

/* Whether the buckets' edges follow each other (hi of one = lo of the next),
 * so that n + 1 edges describe them. */
static bool buckets_contiguous(const struct snap_bucket *b, size_t n)
{
    for (size_t i = 1; i < n; i++)
        if (dbits(b[i].lo) != dbits(b[i - 1].hi))
            return false;
    return true;
}

static inline int popcount64(uint64_t x)
{
    /* no -mpopcnt: __builtin_popcountll would be a library call */
    x = x - ((x >> 1) & 0x5555555555555555ULL);
    x = (x & 0x3333333333333333ULL) + ((x >> 2) & 0x3333333333333333ULL);
    x = (x + (x >> 4)) & 0x0f0f0f0f0f0f0f0fULL;
    return (int)((x * 0x0101010101010101ULL) >> 56);
}

/* Upper bound of a patch entry: kind, mask, the count, the lengths and the
 * words of the rest of the summary, up to 64 buckets. */
#define PATCH_MAX_BYTES (1 + 3 + 10 + (N_SUMMARY - 1 + 1) / 2 + 8 * (N_SUMMARY - 1) + 1 + 64 * 11)

/* The delta entry of a series whose change hints say what changed since the
 * last persist (stage_persist checks that they do): the summary fields and
 * the bucket counts that moved, nothing else. It reads neither the base row
 * nor, when the hint carries the counts, the buckets, which lie scattered
 * over the collector's heap. At most PATCH_MAX_BYTES. */
static inline __attribute__((always_inline)) uint8_t *wr_patch_entry(uint8_t *p, const struct snap_series *sr)
{
    uint32_t mask = sr->hint_fields & ((1u << N_SUMMARY) - 1);
    /* kind and the 3 mask bytes in one store */
    uint32_t head = (uint32_t)(ENTRY_PATCH | (sr->exact ? ENTRY_FLAG : 0)) | mask << 8;
    uint8_t hb[4] = {(uint8_t)head, (uint8_t)(head >> 8), (uint8_t)(head >> 16), (uint8_t)(head >> 24)};
    memcpy(p, hb, 4);
    p += 4;
    if (mask & 1)
        p = wr_varint(p, sr->count);
    /* the doubles as their bit patterns less the trailing zero bytes
     * (integral values, the common case, have several), the lengths in
     * nibbles ahead of them: about as short as nums, and cheaper to make,
     * as a patch is written for each of 10,000 series a persist */
    const char *summary = (const char *)sr + offsetof(struct snap_series, count);   /* see the _Static_assert */
    uint32_t fields = mask & ~1u;
    uint8_t *lens = p;
    p += (popcount64(fields) + 1) / 2;
    uint64_t nibbles = 0;
    for (unsigned j = 0; fields; fields &= fields - 1, j++) {
        uint64_t bits;
        memcpy(&bits, summary + 8 * (size_t)__builtin_ctz(fields), sizeof bits);
        /* at least one byte, so no branch: +0.0 takes one, not none */
        unsigned n = 8 - (unsigned)__builtin_ctzll(bits | 1ULL << 63) / 8;
        wr_le64(p, bits >> (64 - 8 * n));   /* 8 bytes of room, n of them kept */
        p += n;
        nibbles |= (uint64_t)n << (4 * j);
    }
    for (uint8_t *l = lens; nibbles; nibbles >>= 8)
        *l++ = (uint8_t)nibbles;
    uint64_t bm = sr->hint_mask;
    uint64_t but_one = bm & (bm - 1);   /* at most two bits (SNAP_HINT_NCOUNTS) */
    _Static_assert(SNAP_HINT_NCOUNTS == 2, "the test below counts to two");
    bool inline_counts = !(but_one & (but_one - 1));
    if (sr->n_buckets < 64)
        bm &= (1ULL << sr->n_buckets) - 1;
    uint8_t *np = p++;
    uint8_t nb = 0;
    for (int k = 0; bm; k++, bm &= bm - 1) {
        int b = __builtin_ctzll(bm);
        *p++ = (uint8_t)b;
        p = wr_varint(p, inline_counts ? sr->hint_counts[k] : sr->buckets[b].count);
        nb++;
    }
    *np = nb;
    return p;
}

static uint8_t *wr_counter_entry(uint8_t *p, const struct snap_counter *c)
{
    *p++ = ENTRY_COUNTER | (c->is_float ? ENTRY_FLAG : 0);
    if (c->is_float)
        return wr_le64(p, dbits(c->fvalue));
    return wr_varint(p, zigzag(c->ivalue));
}

/* Reads one delta entry; applies it to c or sr (the metric as its base row
 * and the earlier delta rows left it) when given, else only steps over it.
 * cls is the class of the metric it applies to (0: none). */
static bool rd_entry(struct rd *d, uint8_t cls, struct snap_counter *c, struct snap_series *sr)
{
    uint8_t kind = get_u8(d, "entry kind");
    if (d->bad || (kind & ~(ENTRY_KIND_MASK | ENTRY_FLAG)) || (kind & ENTRY_KIND_MASK) > ENTRY_SERIES ||
        ((kind & ENTRY_FLAG) && (kind & ENTRY_KIND_MASK) == ENTRY_SERIES))
        return rd_fail(d, "entry kind");
    uint8_t k = kind & ENTRY_KIND_MASK;
    bool flag = kind & ENTRY_FLAG;
    if (cls && (k == ENTRY_COUNTER) != (cls == CLASS_COUNTER))
        return rd_fail(d, "entry class");
    if (k == ENTRY_COUNTER) {
        int64_t iv = 0;
        double fv;
        if (flag)
            fv = get_f64(d, "counter value");
        else
            fv = (double)(iv = unzigzag(get_varint(d, "counter value")));
        if (c && !d->bad) {
            c->is_float = flag;
            c->ivalue = iv;
            c->fvalue = fv;
        }
        return !d->bad;
    }
    if (k == ENTRY_SERIES) {
        struct snap_series x;
        if (!decode_series_body(d, &x)) {
            free(x.buckets);
            return false;
        }
        if (sr) {
            free(sr->buckets);
            char *name = sr->name;
            *sr = x;
            sr->name = name;
        } else {
            free(x.buckets);
        }
        return true;
    }
    if (d->end - d->p < 3)
        return rd_fail(d, "entry fields");
    uint32_t mask = d->p[0] | (uint32_t)d->p[1] << 8 | (uint32_t)d->p[2] << 16;
    d->p += 3;
    if (mask >> N_SUMMARY)
        return rd_fail(d, "entry fields");
    uint64_t v[N_SUMMARY];
    if (sr)
        memcpy(v, &sr->count, sizeof v);
    if (mask & 1)
        v[0] = get_varint(d, "entry count");
    uint32_t fields = mask & ~1u;
    size_t nd = (size_t)popcount64(fields), nl = (nd + 1) / 2;
    if (d->bad || (size_t)(d->end - d->p) < nl || ((nd & 1) && (d->p[nl - 1] >> 4)))
        return rd_fail(d, "entry field lengths");
    const uint8_t *lens = d->p;
    d->p += nl;
    for (size_t j = 0; fields; fields &= fields - 1, j++) {
        unsigned n = (lens[j / 2] >> (4 * (j & 1))) & 0x0f;
        if (n > 8 || (size_t)(d->end - d->p) < n)
            return rd_fail(d, "entry field");
        uint64_t bits = 0;
        for (unsigned k = 0; k < n; k++)
            bits |= (uint64_t)d->p[k] << (8 * k);
        d->p += n;
        v[__builtin_ctz(fields)] = n ? bits << (64 - 8 * n) : 0;
    }
    uint8_t nb = get_u8(d, "entry bucket count");
    if (nb > 64)
        rd_fail(d, "entry bucket count");
    for (uint8_t i = 0; i < nb && !d->bad; i++) {
        uint8_t b = get_u8(d, "entry bucket");
        uint64_t count = get_varint(d, "entry bucket count");
        if (sr && b >= sr->n_buckets)
            return rd_fail(d, "entry bucket");
        if (sr && !d->bad)
            sr->buckets[b].count = count;
    }
    if (sr && !d->bad) {
        memcpy(&sr->count, v, sizeof v);
        sr->exact = flag;
    }
    return !d->bad;
}

/* ------------------------------------------------------------ writer */

static void fingerprint_counter(const struct snap_counter *c, uint64_t fp[5])
{
    memset(fp, 0, 5 * sizeof *fp);
    fp[0] = c->is_float;
    if (c->is_float)
        memcpy(&fp[1], &c->fvalue, 8);
    else
        fp[1] = (uint64_t)c->ivalue;
}

static void fingerprint_series(const struct snap_series *sr, uint64_t fp[5])
{
    /* No value recorded <=> count unchanged; total/min/max catch a reset. The
     * exact flag changes when final statistics replace live ones, the number
     * of buckets when histogram_buckets changed across a collector restart
     * (with min and max, it fixes the engine's log-spaced edges). */
    fp[0] = sr->count;
    memcpy(&fp[1], &sr->total, 8);
    memcpy(&fp[2], &sr->min, 8);
    memcpy(&fp[3], &sr->max, 8);
    fp[4] = (uint64_t)sr->exact | (uint64_t)sr->n_buckets << 1;
}

/* First index of tab (sorted by id) whose id is at least id. */
static size_t ptab_lower(const struct ptab *tab, size_t n, uint32_t id)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (tab[mid].id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* A source of points for a chunk row: one persist's table. */
struct psrc {
    uint64_t seq, ts;
    const uint8_t *data;
    size_t len;
    const struct ptab *tab;
    size_t n, cur, end;
};

/* The chunk row of window w: u8 format, u8 number of parts, then per metric
 * of the window with points (in id order) u8 its id within the window, u32
 * LE point count, u32 LE byte length, and per point the seq (first: below
 * the row's seq; then: above the previous), the timestamp (first: from the
 * run start; then: from the previous), and the point. The points come from
 * the persists since the window's last row (srcs, in seq order), which
 * hold them sorted by id: a merge, one metric after another. Returns false
 * when out of memory; *empty when no metric of w has a point. */
static bool build_row(struct buf *b, uint32_t w, struct psrc *srcs, size_t ns, uint64_t row_seq,
                      uint64_t start_ns, bool *empty)
{
    /* each source's slice of the window, and room for all of it at once */
    size_t need = 2 + 9 * WINDOW, npts = 0;
    for (size_t s = 0; s < ns; s++) {
        struct psrc *src = &srcs[s];
        src->cur = ptab_lower(src->tab, src->n, w * WINDOW);
        src->end = ptab_lower(src->tab, src->n, (w + 1) * WINDOW);
        if (src->cur < src->end) {
            need += (src->end < src->n ? src->tab[src->end].off : src->len) - src->tab[src->cur].off;
            npts += src->end - src->cur;
        }
    }
    size_t at = b->len;
    uint8_t *p = buf_tail(b, need + 20 * npts);
    if (!p)
        return false;
    uint8_t *row = p;
    *p++ = VALUE_FORMAT;
    p++;
    uint8_t nseg = 0;
    for (uint32_t local = 0; local < WINDOW && npts; local++) {
        uint32_t id = w * WINDOW + local;
        uint8_t *hdr = p;
        uint32_t n = 0;
        uint64_t ps = 0, pt = 0;
        for (size_t s = 0; s < ns; s++) {
            struct psrc *src = &srcs[s];
            if (src->cur >= src->end || src->tab[src->cur].id != id)
                continue;
            const struct ptab *t = &src->tab[src->cur++];
            if (!n)
                p += 9;
            p = wr_varint(p, n ? src->seq - ps : row_seq - src->seq);
            p = wr_varint(p, zigzag((int64_t)(src->ts - (n ? pt : start_ns))));
            const uint8_t *q = src->data + t->off;
            for (uint16_t k = 0; k < t->len; k++)
                p[k] = q[k];
            p += t->len;
            ps = src->seq;
            pt = src->ts;
            n++;
        }
        if (n) {
            uint32_t seg = (uint32_t)(p - hdr - 9);
            hdr[0] = (uint8_t)local;
            for (int k = 0; k < 4; k++) {
                hdr[1 + k] = (uint8_t)(n >> (8 * k));
                hdr[5 + k] = (uint8_t)(seg >> (8 * k));
            }
            nseg++;
            npts -= n;
        }
    }
    *empty = !nseg;
    if (nseg) {
        row[1] = nseg;
        b->len = (size_t)(p - b->p);
    } else {
        b->len = at;
    }
    return true;
}

/* Loads the metric names of run_seq into mt (in id order). */
static int load_names(struct store *st, MDB_txn *txn, uint64_t run_seq, struct metric_table *mt)
{
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, st->names, &cur);
    if (rc)
        return fail(st, STORE_ERROR, "%s: %s", st->dir, mdb_strerror(rc));
    uint8_t kb[9];
    be64(kb, run_seq);
    kb[8] = 'i';
    MDB_val k = {9, kb}, v;
    int status = STORE_OK;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); !rc; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (k.mv_size < 9 || memcmp(k.mv_data, kb, 9))
            break;
        const uint8_t *vp = v.mv_data;
        if (k.mv_size != 13 || v.mv_size < 2 || (vp[0] != CLASS_COUNTER && vp[0] != CLASS_SERIES) ||
            memchr(vp + 1, 0, v.mv_size - 1)) {
            status = fail(st, STORE_ERROR, "corrupt store: metric name entry of run #%llu",
                          (unsigned long long)run_seq);
            break;
        }
        char name[1024];
        size_t n = v.mv_size - 1 < sizeof name - 1 ? v.mv_size - 1 : sizeof name - 1;
        memcpy(name, vp + 1, n);
        name[n] = 0;
        if (mt_add(mt, vp[0], name, rd_be32((const uint8_t *)k.mv_data + 9)) < 0) {
            status = fail(st, STORE_ERROR, "out of memory (metric names of run #%llu)",
                          (unsigned long long)run_seq);
            break;
        }
    }
    mdb_cursor_close(cur);
    return status;
}

/* The seq of the last chunk row of each window of a run, plus one (0: none):
 * points of the window's metrics below it are in chunk rows. */
static int chunk_marks(struct store *st, MDB_txn *txn, uint64_t run_seq, uint32_t n_windows,
                       uint64_t *marks)
{
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, st->series, &cur);
    if (rc)
        return fail(st, STORE_ERROR, "%s: %s", st->dir, mdb_strerror(rc));
    for (uint32_t w = 0; w < n_windows; w++) {
        uint8_t kb[20];
        MDB_val k = chunk_key(kb, run_seq, w + 1, 0), v;
        rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
        rc = mdb_cursor_get(cur, &k, &v, rc == MDB_NOTFOUND ? MDB_LAST : MDB_PREV);
        marks[w] = 0;
        if (!rc && k.mv_size == 20 && !memcmp(k.mv_data, kb, 8) &&
            rd_be32((const uint8_t *)k.mv_data + 8) == w)
            marks[w] = rd_be64((const uint8_t *)k.mv_data + 12) + 1;
        else if (rc && rc != MDB_NOTFOUND) {
            mdb_cursor_close(cur);
            return fail(st, STORE_ERROR, "%s: %s", st->dir, mdb_strerror(rc));
        }
    }
    mdb_cursor_close(cur);
    return STORE_OK;
}

/* The head of a history entry: format, kind, timestamp and its points. */
static bool rd_history_head(struct rd *d, uint8_t *kind, uint64_t *ts, struct pts *ps)
{
    if (get_u8(d, "format byte") != VALUE_FORMAT)
        return rd_fail(d, "format byte");
    *kind = get_u8(d, "entry kind");
    if (*kind > HIST_DELTA)
        return rd_fail(d, "entry kind");
    *ts = get_varint(d, "timestamp");
    return !d->bad && rd_pts(d, ps);
}

static struct ring_entry *ring_at(struct store *st, size_t i)
{
    return &st->ring[(st->ring_head + i) % st->ring_cap];
}

/* Room for one more persist in the ring (before a commit, so that keeping
 * its points after the commit cannot fail). */
static bool ring_reserve(struct store *st)
{
    if (st->ring_n < st->ring_cap)
        return true;
    size_t ncap = st->ring_cap ? st->ring_cap * 2 : 16;
    struct ring_entry *nr = calloc(ncap, sizeof *nr);
    if (!nr)
        return false;
    for (size_t i = 0; i < st->ring_n; i++)
        nr[i] = *ring_at(st, i);
    free(st->ring);
    st->ring = nr;
    st->ring_head = 0;
    st->ring_cap = ncap;
    return true;
}

/* Per window marks for n windows (new windows start at seq: their metrics
 * are new, so they have no points before it). */
static bool wmark_grow(struct store *st, size_t n, uint64_t seq)
{
    if (!grow_array((void **)&st->wmark, &st->wmark_cap, n, sizeof *st->wmark))
        return false;
    for (; st->n_wmark < n; st->n_wmark++)
        st->wmark[st->n_wmark] = seq;
    return true;
}

/* A resumed run: the points not in chunk rows yet are read back from the
 * history tail into the ring, so that they go into chunk rows as if the
 * collector had never stopped. */
static int reload_ring(struct store *st, MDB_txn *txn, const struct store_run_info *r)
{
    if (!r->n_snapshots || !st->mt.n)
        return STORE_OK;
    uint32_t nw = st->mt.e[st->mt.n - 1].id / WINDOW + 1;
    if (!wmark_grow(st, nw, 0))
        return fail(st, STORE_ERROR, "out of memory");
    int status = chunk_marks(st, txn, r->run_seq, nw, st->wmark);
    for (uint32_t w = 0; w < nw; w++)
        if (st->wmark[w] < st->tail_from)
            st->wmark[w] = st->tail_from;
    MDB_cursor *cur = NULL;
    int rc = status ? 0 : mdb_cursor_open(txn, st->history, &cur);
    if (rc)
        status = fail(st, STORE_ERROR, "%s: %s", st->dir, mdb_strerror(rc));
    uint8_t kb[16];
    MDB_val k = history_key(kb, r->run_seq, st->tail_from), v;
    for (rc = status ? MDB_NOTFOUND : mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); !rc && !status;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (k.mv_size != 16 || memcmp(k.mv_data, kb, 8))
            break;
        uint64_t seq = rd_be64((const uint8_t *)k.mv_data + 8), ts, id = 0;
        uint8_t kind;
        struct pts ps;
        struct rd d = {v.mv_data, (const uint8_t *)v.mv_data + v.mv_size, NULL};
        if (rd_history_head(&d, &kind, &ts, &ps) && ps.n) {
            struct ring_entry *re = ring_reserve(st) ? ring_at(st, st->ring_n) : NULL;
            if (!re || !grow_array((void **)&re->tab, &re->tcap, ps.n, sizeof *re->tab)) {
                status = fail(st, STORE_ERROR, "out of memory");
                break;
            }
            re->data.len = 0;
            put_bytes(&re->data, ps.data, (size_t)(ps.end - ps.data));
            if (re->data.oom) {
                re->data.oom = false;
                status = fail(st, STORE_ERROR, "out of memory");
                break;
            }
            struct rd pd = {ps.data, ps.end, NULL};
            for (uint64_t j = 0; j < ps.n && !pd.bad; j++) {
                uint64_t dl = get_varint(&pd, "point id");
                if ((j && !dl) || dl > UINT32_MAX || (id += dl) > st->mt.e[st->mt.n - 1].id) {
                    rd_fail(&pd, "point id");
                    break;
                }
                const uint8_t *pb = pd.p;
                skip_point(&pd);
                re->tab[j] = (struct ptab){(uint32_t)id, (uint32_t)(pb - ps.data), (uint16_t)(pd.p - pb)};
            }
            if (!pd.bad && pd.p != pd.end)
                rd_fail(&pd, "trailing point bytes");
            d.bad = pd.bad;
            re->seq = seq;
            re->ts = ts;
            re->n = ps.n;
            if (!d.bad)
                st->ring_n++;
        }
        if (d.bad && !status)
            status = fail(st, STORE_ERROR, "corrupt store: history entry %llu of run '%s': bad %s",
                          (unsigned long long)seq, r->id, d.bad);
    }
    if (rc && rc != MDB_NOTFOUND && !status)
        status = fail(st, STORE_ERROR, "%s: %s", st->dir, mdb_strerror(rc));
    if (cur)
        mdb_cursor_close(cur);
    return status;
}

int store_begin_run(struct store *st, const char *run_id, const char *name, uint64_t start_ns)
{
    if (st->readonly)
        return fail(st, STORE_ERROR, "%s: store opened read-only", st->dir);
    size_t idlen = run_id ? strlen(run_id) : 0;
    if (!idlen || idlen >= sizeof st->run.id)
        return fail(st, STORE_ERROR, "run id must be 1 to %zu bytes", sizeof st->run.id - 1);
    if (st->have_run && !strcmp(st->run.id, run_id))
        return STORE_OK;
    forget_run(st);

    MDB_txn *txn;
    int rc = mdb_txn_begin(st->env, NULL, 0, &txn);
    if (rc)
        return fail(st, STORE_ERROR, "%s: cannot begin a write transaction: %s", st->dir,
                    mdb_strerror(rc));
    struct store_run_info r;
    uint32_t next_id = 0;
    uint64_t tail_from = 0;
    int status = get_run(st, txn, run_id, &r, &next_id, &tail_from);
    if (status == STORE_OK) {
        /* Resuming (a restarted collector): the names are known, the
         * fingerprints and base rows are not, so the first persist rewrites
         * every metric's base row. */
        status = load_names(st, txn, r.run_seq, &st->mt);
        st->tail_from = tail_from;
        if (!status)
            status = reload_ring(st, txn, &r);
        mdb_txn_abort(txn);
        if (status) {
            forget_run(st);
            return status;
        }
        st->run = r;
        st->next_id = next_id;
        for (size_t i = 0; i < st->mt.n; i++)
            st->mt.e[i].in_latest = true;
        st->n_stored = st->mt.n;
        st->have_run = true;
        return STORE_OK;
    }
    if (status != STORE_NOT_FOUND)
        goto abort;

    memset(&r, 0, sizeof r);
    snprintf(r.id, sizeof r.id, "%s", run_id);
    snprintf(r.name, sizeof r.name, "%s", name ? name : run_id);
    r.start_ns = start_ns;
    r.state = OBSD_RUN_INITIALIZE;
    MDB_cursor *cur;
    MDB_val k, v;
    if ((rc = mdb_cursor_open(txn, st->runs, &cur)))
        goto lmdb_fail;
    rc = mdb_cursor_get(cur, &k, &v, MDB_LAST);
    r.run_seq = (!rc && k.mv_size == 8) ? rd_be64(k.mv_data) + 1 : 1;
    mdb_cursor_close(cur);

    struct buf b = {0};
    encode_run(&b, &r, 0, 0);
    uint8_t kb[8];
    MDB_val rk = run_key(kb, r.run_seq), idk = {idlen, (void *)run_id};
    v = (MDB_val){b.len, b.p};
    if (b.oom) {
        free(b.p);
        status = fail(st, STORE_ERROR, "out of memory");
        goto abort;
    }
    rc = mdb_put(txn, st->runs, &rk, &v, 0);
    if (!rc) {
        MDB_val sv = {8, kb};
        rc = mdb_put(txn, st->run_ids, &idk, &sv, 0);
    }
    free(b.p);
    if (rc)
        goto lmdb_fail;
    if ((rc = mdb_txn_commit(txn))) {
        if (rc == MDB_MAP_FULL && !mdb_env_set_mapsize(st->env, st->map_size * 2)) {
            refresh_map_size(st);
            return store_begin_run(st, run_id, name, start_ns);
        }
        return fail(st, STORE_ERROR, "%s: cannot commit run '%s': %s", st->dir, run_id,
                    mdb_strerror(rc));
    }
    st->run = r;
    st->have_run = true;
    return STORE_OK;

lmdb_fail:
    mdb_txn_abort(txn);
    if (rc == MDB_MAP_FULL && !mdb_env_set_mapsize(st->env, st->map_size * 2)) {
        refresh_map_size(st);
        return store_begin_run(st, run_id, name, start_ns);
    }
    return fail(st, STORE_ERROR, "%s: cannot start run '%s': %s", st->dir, run_id, mdb_strerror(rc));
abort:
    mdb_txn_abort(txn);
    return status;
}

/* Finds or creates the entry of one snapshot metric; the position hint
 * (*hint: the entry at this position last time, updated) makes the common
 * case (same metrics in the same order as last time) one strcmp. A name
 * seen for the first time must fit a key. */
static long resolve(struct store *st, uint32_t *hint, uint8_t cls, const char *name)
{
    uint32_t h = *hint;
    if (h < st->mt.n && st->mt.e[h].cls == cls && !strcmp(MT_NAME(&st->mt, &st->mt.e[h]), name))
        return h;
    long e = mt_find(&st->mt, cls, name);
    if (e < 0) {
        if (strlen(name) > MAX_NAME) {
            fail(st, STORE_ERROR, "run '%s': metric name '%.40s...' is %zu bytes, more than %d",
                 st->run.id, name, strlen(name), MAX_NAME);
            return -2;
        }
        if (st->next_id == UINT32_MAX)
            return -1;
        e = mt_add(&st->mt, cls, name, st->next_id);
        if (e >= 0)
            st->next_id++;
    }
    if (e >= 0)
        *hint = (uint32_t)e;
    return e;
}

/* The base row of metric table entry i: the metric's class, the seq of the
 * persist that writes it, then its full encoding. Its name comes from the
 * table (the same as the snapshot's, stored in id order, as the base rows
 * are written) rather than the snapshot's copy, which lies anywhere on the
 * collector's heap. */
static void encode_latest_metric(struct buf *b, const struct snapshot *snap, const struct metric_table *mt,
                                 size_t i)
{
    const struct metric_entry *e = &mt->e[i];
    const char *name = MT_NAME(mt, e);
    size_t nl = (i + 1 < mt->n ? mt->e[i + 1].name_off : mt->alen) - e->name_off - 1;
    put_u8(b, VALUE_FORMAT);
    put_u8(b, e->cls);
    put_varint(b, snap->seq);
    if (e->cls == CLASS_COUNTER)
        encode_counter_as(b, &snap->counters[e->pos], name, nl);
    else
        encode_series_as(b, &snap->series[e->pos], name, nl);
}

/* The header row of the latest table. */
static void encode_latest_header(struct buf *b, const struct snapshot *s, const char *sections)
{
    put_u8(b, VALUE_FORMAT);
    put_varint(b, s->schema_version);
    put_varint(b, s->seq);
    put_varint(b, s->timestamp_ns);
    put_u8(b, (uint8_t)s->state);
    put_varint(b, s->n_pending_tasks);
    put_str(b, s->run, strnlen(s->run, sizeof s->run - 1));
    put_str(b, sections, strlen(sections));
}

/* Puts with MDB_APPEND where the key is expected to be the table's last (no
 * search, and full pages rather than half-full ones after a split); falls
 * back to an ordinary put when it is not. */
static int put_maybe_append(MDB_txn *txn, MDB_dbi dbi, MDB_val *k, MDB_val *v, unsigned flags,
                            bool append)
{
    int rc = append ? mdb_put(txn, dbi, k, v, flags | MDB_APPEND) : MDB_KEYEXIST;
    if (rc == MDB_KEYEXIST)
        rc = mdb_put(txn, dbi, k, v, flags);
    return rc;
}

/* Deletes the pieces of a run's delta rows up to persist last (UINT64_MAX:
 * all of them) from the latest table. */
static int delete_delta_rows(struct store *st, MDB_txn *txn, uint64_t run_seq, uint64_t last)
{
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, st->latest, &cur);
    if (rc)
        return rc;
    uint8_t kb[24];
    for (;;) {
        /* a fresh seek after each delete: no reliance on where it leaves the cursor */
        MDB_val k = delta_key(kb, run_seq, 0, 0), v;
        if ((rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE)))
            break;
        if (k.mv_size != 24 || memcmp(k.mv_data, kb, 12) || rd_be64((const uint8_t *)k.mv_data + 12) > last)
            break;
        if ((rc = mdb_cursor_del(cur, 0)))
            break;
    }
    mdb_cursor_close(cur);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

/* Puts the staged base rows (in id order) through one cursor: a row that
 * replaces one where the cursor stands is written in place, one for a new
 * metric at the end of the run's base rows is appended when nothing follows
 * it in the table (no_deltas: the run has no delta rows; then, if the run is
 * the store's last, its base rows end the table). */
static int put_base_rows(struct store *st, MDB_txn *txn, uint64_t run_seq, bool no_deltas)
{
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, st->latest, &cur);
    if (rc)
        return rc;
    uint8_t kb[12];
    for (size_t i = 0; i < st->n_sbase && !rc; i++) {
        const struct stage_base *b = &st->sbase[i];
        MDB_val k = latest_metric_key(kb, run_seq, st->mt.e[b->entry].id);
        MDB_val v = {b->len, st->rb.p + b->off};
        rc = b->is_new && no_deltas ? mdb_cursor_put(cur, &k, &v, MDB_APPEND) : MDB_KEYEXIST;
        if (rc == MDB_KEYEXIST)
            rc = mdb_cursor_put(cur, &k, &v, 0);
    }
    mdb_cursor_close(cur);
    return rc;
}

/* One attempt at the write transaction of a persist, from what store_persist
 * staged. Returns an LMDB code. */
static int persist_txn(struct store *st, const struct snapshot *snap, bool final, bool keyframe,
                       size_t n_gone, const struct store_run_info *nr, uint64_t tail_from)
{
    MDB_txn *txn;
    int rc = mdb_txn_begin(st->env, NULL, 0, &txn);
    if (rc)
        return rc;
    uint8_t kb[24];
    MDB_val k, v;
    struct buf *sb = &st->scratch;

    /* names of metrics first seen since the last commit */
    for (size_t i = st->n_stored; i < st->mt.n && !rc; i++) {
        const struct metric_entry *e = &st->mt.e[i];
        const char *name = MT_NAME(&st->mt, e);
        size_t nl = strlen(name);
        uint8_t hdr[10];
        be64(hdr, nr->run_seq);
        hdr[8] = 'n';
        hdr[9] = e->cls;
        sb->len = 0;
        put_bytes(sb, hdr, 10);
        put_bytes(sb, name, nl);
        uint8_t idb[4];
        be32(idb, e->id);
        if (sb->oom) {
            rc = ENOMEM;
            break;
        }
        k = (MDB_val){sb->len, sb->p};
        v = (MDB_val){4, idb};
        if ((rc = mdb_put(txn, st->names, &k, &v, 0)))
            break;
        uint8_t ik[13];
        be64(ik, nr->run_seq);
        ik[8] = 'i';
        be32(ik + 9, e->id);
        sb->len = 0;
        put_u8(sb, e->cls);
        put_bytes(sb, name, nl);
        k = (MDB_val){13, ik};
        v = (MDB_val){sb->len, sb->p};
        rc = sb->oom ? ENOMEM : mdb_put(txn, st->names, &k, &v, 0);
    }

    /* latest: the delta rows the folds superseded (a run new to the handle:
     * all of them), base rows, the rows of metrics the snapshot no longer
     * has, the header row, this persist's delta row */
    if (!rc && (st->drop_all || st->n_drop))
        rc = delete_delta_rows(st, txn, nr->run_seq, st->drop_all ? UINT64_MAX : st->drows[st->n_drop - 1]);
    bool no_deltas = st->drop_all || st->n_drop == st->n_drows;
    if (!rc && st->n_sbase)
        rc = put_base_rows(st, txn, nr->run_seq, no_deltas);
    for (size_t i = 0; i < n_gone && !rc; i++) {
        k = latest_metric_key(kb, nr->run_seq, st->mt.e[st->gone[i]].id);
        rc = mdb_del(txn, st->latest, &k, NULL);
        if (rc == MDB_NOTFOUND)
            rc = 0;
    }
    k = run_key(kb, nr->run_seq);
    v = (MDB_val){st->header.len, st->header.p};
    if (!rc)
        rc = mdb_put(txn, st->latest, &k, &v, 0);
    for (size_t i = 0; i < st->n_pieces && st->n_delta && !rc; i++) {
        size_t end = i + 1 < st->n_pieces ? st->pieces[i + 1] : st->delta.len;
        k = delta_key(kb, nr->run_seq, snap->seq, (uint32_t)i);
        v = (MDB_val){end - st->pieces[i], NULL};
        rc = put_maybe_append(txn, st->latest, &k, &v, MDB_RESERVE, true);
        if (!rc)
            memcpy(v.mv_data, st->delta.p + st->pieces[i], v.mv_size);
    }

    /* history: head and points, then the delta's fields or the keyframe */
    const struct buf *rest = keyframe ? &st->full : sb;
    if (!rc && !keyframe) {
        sb->len = 0;
        put_u8(sb, (uint8_t)snap->state);
        put_varint(sb, snap->n_pending_tasks);
        bool sc = st->sections_changed;
        put_u8(sb, sc);
        if (sc)
            put_str(sb, st->sections_now, strlen(st->sections_now));
        if (sb->oom)
            rc = ENOMEM;
    }
    if (!rc) {
        k = history_key(kb, nr->run_seq, snap->seq);
        size_t parts[] = {st->hhead.len, st->hidx.len, st->hp.len, rest->len};
        const uint8_t *src[] = {st->hhead.p, st->hidx.p, st->hp.p, rest->p};
        v = (MDB_val){parts[0] + parts[1] + parts[2] + parts[3], NULL};
        rc = put_maybe_append(txn, st->history, &k, &v, MDB_RESERVE, true);
        uint8_t *dst = v.mv_data;
        for (int i = 0; i < 4 && !rc; dst += parts[i], i++)
            if (parts[i])
                memcpy(dst, src[i], parts[i]);
    }

    /* chunk rows of the windows due */
    for (size_t i = 0; i < st->n_srow && !rc; i++) {
        k = chunk_key(kb, nr->run_seq, st->srow[i].window, snap->seq);
        v = (MDB_val){st->srow[i].len, st->rows.p + st->srow[i].off};
        rc = mdb_put(txn, st->series, &k, &v, 0);
    }

    /* final, run record */
    k = run_key(kb, nr->run_seq);
    v = (MDB_val){st->full.len, st->full.p};
    if (!rc && final)
        rc = mdb_put(txn, st->final, &k, &v, MDB_NOOVERWRITE);
    if (!rc) {
        sb->len = 0;
        encode_run(sb, nr, st->next_id, tail_from);
        v = (MDB_val){sb->len, sb->p};
        rc = sb->oom ? ENOMEM : mdb_put(txn, st->runs, &k, &v, 0);
    }
    if (rc) {
        mdb_txn_abort(txn);
        return rc;
    }
    return mdb_txn_commit(txn);
}

/* Notes whether a metric changed since the last persist (its fingerprint
 * differs); returns whether it did. */
static inline bool note_change(struct store *st, struct metric_entry *me, uint32_t e, const uint64_t fp[5])
{
    /* word by word, not memcmp: a call for 40 bytes, 10,000 times a persist */
    uint64_t diff = 0;
    for (int k = 0; k < 5; k++)
        diff |= me->fp[k] ^ fp[k];
    if (me->fp_valid && !diff)
        return false;
    me->changed_now = true;
    memcpy(me->fp, fp, sizeof me->fp);
    me->fp_valid = true;
    st->chg[st->n_chg++] = e;
    return true;
}

/* Resolves a snapshot metric by name, notes whether it changed since the
 * last persist. */
static int note_metric(struct store *st, uint32_t *hint, size_t idx, uint8_t cls, const char *name,
                       const uint64_t fp[5])
{
    long e = resolve(st, hint, cls, name);
    if (e == -2)
        return STORE_ERROR;
    if (e < 0)
        return fail(st, STORE_ERROR, "out of memory");
    struct metric_entry *me = &st->mt.e[e];
    if (me->gen != st->gen)
        st->n_seen++;
    me->gen = st->gen;
    me->pos = (uint32_t)idx;
    if (note_change(st, me, (uint32_t)e, fp))
        st->visit[st->n_visit++] = (uint32_t)e;
    return 0;
}

/* The entry that a hinted metric at this position is, when the hints say
 * that it was there at the last persist (see snapshot.h); NULL when they do
 * not, or cannot be trusted. */
static inline struct metric_entry *hinted_entry(struct store *st, bool trust, size_t i, size_t n_known,
                                                const uint32_t *hint, uint64_t placed, uint8_t cls)
{
    if (!trust || i >= n_known || !placed || placed > st->h_version)
        return NULL;
    uint32_t h = hint[i];
    if (h >= st->mt.n || st->mt.e[h].cls != cls)
        return NULL;
    return &st->mt.e[h];
}

/* Whether the persist being prepared folds this part. The parts are those
 * of the metrics known before it (so that the fold does not move while the
 * persist finds new metrics); a part only new metrics have is folded. */
static inline bool part_folded(const struct store *st, uint32_t part)
{
    if (st->fold_every || part >= st->fold_parts)
        return true;
    uint32_t d = part >= st->fold_start ? part - st->fold_start : part + st->fold_parts - st->fold_start;
    return d < st->fold_count;
}

/* Asks for every line of a series (four, see struct snap_series; one more
 * when the array holding it is not the snapshot's own, aligned one). */
static inline void prefetch_series(const struct snap_series *sr)
{
    const char *q = (const char *)sr;
    for (size_t l = 0; l < sizeof *sr; l += 64)
        __builtin_prefetch(q + l);
    __builtin_prefetch(q + sizeof *sr - 1);
}

/* Whether a metric that changed since its last time series point is due
 * one: series_interval has passed since that point, it has none, time went
 * back, or at the final. */
static inline bool point_due(const struct store *st, size_t i, bool had_point, uint64_t ts, bool final)
{
    return final || !had_point || ts - st->pt_ns[i] >= st->series_interval_ns || ts < st->pt_ns[i];
}

/* The delta row is written in pieces of at most piece_max bytes (but for
 * a piece of one larger entry), each a row of its own: a value of one page
 * is kept in a page LMDB reuses from one transaction to the next, while a
 * longer one takes pages it allocates anew each time, which the kernel
 * then faults in and clears (about 80 page faults a persist for 10,000
 * changed series). Each piece is a delta row by itself: format, entry
 * count, entries whose ids are differences from the previous entry's in
 * the piece. */
static bool piece_begin(struct store *st)
{
    if (!grow_array((void **)&st->pieces, &st->pieces_cap, st->n_pieces + 1, sizeof *st->pieces) ||
        !buf_reserve(&st->delta, PIECE_HEAD)) {
        st->delta.oom = true;
        return false;
    }
    st->pieces[st->n_pieces++] = (uint32_t)st->delta.len;
    put_u8(&st->delta, VALUE_FORMAT);
    put_le32(&st->delta, 0);
    st->piece_entries = 0;
    st->last_entry = 0;
    return true;
}

static void piece_end(struct store *st)
{
    uint8_t *c = st->delta.p + st->pieces[st->n_pieces - 1] + 1;
    for (int k = 0; k < 4; k++)
        c[k] = (uint8_t)(st->piece_entries >> (8 * k));
}

/* Room for a delta entry of up to max bytes, its id written: NULL when out
 * of memory. Entries go in the order they are found. delta_entry_end
 * finishes it. */
static uint8_t *delta_entry_begin(struct store *st, uint32_t id, size_t max)
{
    /* room to move it into a piece of its own: a piece head and a longer id */
    uint8_t *p = buf_tail(&st->delta, 10 + max + PIECE_HEAD + 10);
    if (!p)
        return NULL;
    st->entry_at = st->delta.len;
    p = wr_varint(p, zigzag((int64_t)id - (int64_t)st->last_entry));
    st->last_entry = id;
    return p;
}

/* Moves the entry just written (ending at len) into a new piece, as it
 * took its piece over piece_max; returns the new end. */
static __attribute__((noinline)) size_t delta_entry_to_new_piece(struct store *st, size_t len)
{
    uint8_t *e = st->delta.p + st->entry_at;
    size_t id_len = 1;
    while (e[id_len - 1] & 0x80)
        id_len++;
    size_t body = len - st->entry_at - id_len;
    uint32_t id = st->last_entry;
    uint8_t idb[10];
    size_t nid = (size_t)(wr_varint(idb, zigzag((int64_t)id)) - idb);
    /* into the room delta_entry_begin reserved: the body first, as the
     * head and the id overwrite where it was */
    memmove(e + PIECE_HEAD + nid, e + id_len, body);
    piece_end(st);
    st->delta.len = st->entry_at;
    if (!piece_begin(st))
        return st->delta.len;   /* out of memory (delta.oom): the persist fails */
    memcpy(st->delta.p + st->delta.len, idb, nid);
    st->last_entry = id;
    return st->delta.len + nid + body;
}

/* Ends the entry delta_entry_begin began at end; one that takes its piece
 * over piece_max moves to a new piece (out of line: once in ~100 entries). */
static inline void delta_entry_end(struct store *st, uint8_t *end)
{
    size_t len = (size_t)(end - st->delta.p);
    if (st->piece_entries && len - st->pieces[st->n_pieces - 1] > st->piece_max)
        len = delta_entry_to_new_piece(st, len);
    st->delta.len = len;
    st->piece_entries++;
    st->n_delta++;
}

/* A metric that changed and keeps its base row gets its delta entry while
 * the snapshot is being compared, with the snapshot's series in the cache,
 * when the change hints say what changed; the others get theirs in
 * stage_persist. When it is not due a time series point either, nothing is
 * left of it for stage_persist to do: returns whether so (else it goes on
 * the visit list). */
static inline bool early_entry(struct store *st, struct metric_entry *me, const struct snap_counter *c,
                               const struct snap_series *sr, uint64_t ts, bool final)
{
    if (!me->in_latest || part_folded(st, me->id / PART_IDS))
        return false;
    uint8_t *p = delta_entry_begin(st, me->id, c ? 10 : PATCH_MAX_BYTES);
    if (!p)
        return false;
    p = c ? wr_counter_entry(p, c) : wr_patch_entry(p, sr);
    delta_entry_end(st, p);
    /* an entry in the latest table was persisted, so pt_ns has its slot */
    size_t i = (size_t)(me - st->mt.e);
    if (point_due(st, i, me->has_point, ts, final)) {
        me->hflags |= HF_DIRTY | HF_ENTRY;
        return false;
    }
    me->hflags |= HF_DIRTY;
    me->changed_now = false;
    me->point_dirty = true;
    if (st->pt_ns[i] < st->dirty_pt_min_now)
        st->dirty_pt_min_now = st->pt_ns[i];
    return true;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

/* The first entry whose id is at least id (the entries are in id order). */
static size_t mt_lower_id(const struct metric_table *t, uint32_t id)
{
    size_t lo = 0, hi = t->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (t->e[mid].id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* The entries stage_persist must visit, in entry order, when it need not
 * visit all (sets *n); NULL when it must. It must visit all when one may be
 * gone from the snapshot, when a point may be due to a metric that did not
 * change (one waits since series_interval, or time went back), at the final,
 * when every part folds, and after a failed persist. Otherwise only the
 * changed entries the comparison did not finish (st->visit) and those of
 * the parts this persist folds have work. */
static const uint32_t *sparse_order(struct store *st, uint64_t ts, bool final, size_t *n)
{
    size_t total = st->mt.n;
    if (final || st->fold_every || st->stage_all || st->n_seen != total || !st->run.n_snapshots ||
        ts < st->run.last_timestamp_ns ||
        (st->dirty_pt_min != UINT64_MAX && ts - st->dirty_pt_min >= st->series_interval_ns))
        return NULL;
    /* the folded parts' entries, in entry order: one run of parts, or two
     * where the rotation wraps around */
    size_t range[2][2], nr = 0, m = st->n_visit;
    if (st->fold_count) {
        uint32_t first = st->fold_start, last = st->fold_start + st->fold_count;
        if (last > st->fold_parts) {
            range[nr][0] = 0;
            range[nr++][1] = mt_lower_id(&st->mt, (last - st->fold_parts) * PART_IDS);
            last = st->fold_parts;
        }
        range[nr][0] = mt_lower_id(&st->mt, first * PART_IDS);
        range[nr++][1] = mt_lower_id(&st->mt, last * PART_IDS);
    }
    for (size_t r = 0; r < nr; r++)
        m += range[r][1] - range[r][0];
    if (m > total / 2)
        return NULL;   /* most entries anyway: the plain pass is cheaper */
    bool sorted = true;
    for (size_t i = 1; i < st->n_visit && sorted; i++)
        sorted = st->visit[i - 1] < st->visit[i];
    if (!sorted)
        qsort(st->visit, st->n_visit, sizeof *st->visit, cmp_u32);
    /* merge the two, once each */
    size_t out = 0, v = 0;
    for (size_t r = 0; r <= nr; r++) {
        size_t lo = r < nr ? range[r][0] : SIZE_MAX;
        for (; v < st->n_visit && st->visit[v] < lo; v++)
            if (!out || st->order[out - 1] != st->visit[v])
                st->order[out++] = st->visit[v];
        if (r == nr)
            break;
        for (size_t i = range[r][0]; i < range[r][1]; i++)
            st->order[out++] = (uint32_t)i;
        while (v < st->n_visit && st->visit[v] < range[r][1])
            v++;
    }
    *n = out;
    return st->order;
}

/* Prepares a persist: which metrics get a base row, a delta entry, a point,
 * which windows get a chunk row, which delta rows go. One pass over the
 * metrics in id order, which is the order of base rows, entries and points.
 * Returns false when out of memory. Sets *n_gone and *tail_from. */
static bool stage_persist(struct store *st, const struct snapshot *snap, bool final,
                          const char *sections, size_t *n_gone, uint64_t *tail_from)
{
    st->header.len = 0;
    encode_latest_header(&st->header, snap, sections);
    struct buf *db = &st->delta;
    st->hp.len = st->hidx.len = st->rb.len = st->rows.len = 0;
    st->n_spt = st->n_sbase = st->n_srow = 0;
    size_t ngone = 0;

    size_t n = st->mt.n;
    uint32_t nparts = n ? st->mt.e[n - 1].id / PART_IDS + 1 : 0;
    uint64_t ts = snap->timestamp_ns;
    uint32_t prev_pt = 0;

    size_t n_order = n;
    const uint32_t *order = sparse_order(st, ts, final, &n_order);
    /* a full pass sees every waiting entry itself; a sparse one adds to
     * those of the last commit and of the comparison */
    uint64_t pt_min = order ? (st->dirty_pt_min < st->dirty_pt_min_now ? st->dirty_pt_min : st->dirty_pt_min_now)
                            : UINT64_MAX;
    for (size_t k = 0; k < n_order; k++) {
        size_t i = order ? order[k] : k;
        struct metric_entry *e = &st->mt.e[i];
        /* A collector's snapshot lies scattered over the heap, so the loop
         * waits on memory for every series: ask a few metrics ahead for
         * what it will read of those that changed. */
        if (k + PREFETCH_AHEAD < n_order) {
            const struct metric_entry *f = &st->mt.e[order ? order[k + PREFETCH_AHEAD] : k + PREFETCH_AHEAD];
            if (f->changed_now && f->cls == CLASS_SERIES && !(f->hflags & HF_ENTRY))
                prefetch_series(&snap->series[f->pos]);
        }
        /* and, in a sparse pass (mostly the folded parts' metrics), the
         * buckets of the metric two ahead when it gets a base row: they are
         * scattered too, and a base row reads them whole (its series was
         * asked for two metrics ago) */
        if (order && k + 2 < n_order) {
            const struct metric_entry *f = &st->mt.e[order[k + 2]];
            if (f->cls == CLASS_SERIES && f->gen == st->gen && !(f->hflags & HF_ENTRY) &&
                (!f->in_latest || f->changed_now || (f->hflags & HF_DIRTY))) {
                const struct snap_series *fs = &snap->series[f->pos];
                const char *q = (const char *)fs->buckets;
                for (size_t l = 0; l < fs->n_buckets * sizeof *fs->buckets; l += 64)
                    __builtin_prefetch(q + l);
            }
        }
        bool present = e->gen == st->gen;
        const struct snap_counter *cn = NULL;
        const struct snap_series *sr = NULL;
        if (present && e->cls == CLASS_COUNTER)
            cn = &snap->counters[e->pos];
        else if (present)
            sr = &snap->series[e->pos];

        /* latest: a base row for a metric new to it, or changed since its
         * base row when its part is folded; otherwise a delta entry for a
         * metric that changed */
        if (!present) {
            if (e->in_latest)
                st->gone[ngone++] = (uint32_t)i;
        } else if (!(e->hflags & HF_ENTRY)) {
            bool folded = part_folded(st, e->id / PART_IDS);
            if (!e->in_latest || (folded && (e->changed_now || (e->hflags & HF_DIRTY)))) {
                size_t at = st->rb.len;
                encode_latest_metric(&st->rb, snap, &st->mt, i);
                st->sbase[st->n_sbase++] =
                    (struct stage_base){(uint32_t)i, (uint32_t)at, (uint32_t)(st->rb.len - at), !e->in_latest};
            } else if (e->changed_now) {
                /* a metric whose hints said what changed has its entry
                 * from early_entry: this one's change was found by
                 * comparing, so a series goes in full */
                uint8_t *p = delta_entry_begin(st, e->id, cn ? 10 : 1 + series_body_max(sr));
                if (!p)
                    return false;
                if (cn) {
                    p = wr_counter_entry(p, cn);
                } else {
                    *p++ = ENTRY_SERIES;
                    p = wr_series_body(p, sr);
                }
                delta_entry_end(st, p);
                /* set now, cleared only by a committed base row: a failed
                 * persist leaves it set, which costs a base row at most */
                e->hflags |= HF_DIRTY;
            }
        }

        /* time series: a metric changed since its last point gets one when
         * series_interval has passed since that point, and at the final.
         * (The flags are read before any is written: a load of several of
         * them after a store to one would wait for the store.) */
        bool dirty = e->point_dirty || e->changed_now, had_point = e->has_point;
        uint8_t hflags = e->hflags;
        bool due = present && dirty && point_due(st, i, had_point, ts, final);
        e->point_dirty = dirty && !due;
        if (e->point_dirty && st->pt_ns[i] < pt_min)
            pt_min = st->pt_ns[i];
        e->changed_now = false;
        if (hflags & HF_ENTRY)
            e->hflags = (uint8_t)(hflags & ~HF_ENTRY);
        if (due) {
            st->spt[st->n_spt] = (uint32_t)i;
            e->has_point = true;
            st->pt_ns[i] = ts;
            if (st->n_spt % INDEX_STRIDE == 0) {
                put_le32(&st->hidx, e->id);
                put_le32(&st->hidx, (uint32_t)st->hp.len);
            }
            uint8_t *p = buf_tail(&st->hp, 10 + POINT_MAX_BYTES);
            if (!p)
                return false;
            p = wr_varint(p, st->n_spt ? e->id - prev_pt : e->id);
            uint8_t *pb = p;
            p = cn ? wr_counter_point(p, cn, &st->chains[i]) : wr_series_point(p, sr, &st->chains[i]);
            st->ctab[st->n_spt++] = (struct ptab){e->id, (uint32_t)(pb - st->hp.p), (uint16_t)(p - pb)};
            st->hp.len = (size_t)(p - st->hp.p);
            prev_pt = e->id;
        }
    }
    if (db->oom || st->hp.oom || st->hidx.oom || st->rb.oom || st->header.oom)
        return false;
    piece_end(st);
    st->dirty_pt_min_now = pt_min;

    /* the delta rows that go: those no later than every part's last fold
     * (parts the handle has no fold of hold new metrics only: they are
     * folded now) */
    if (!grow_array((void **)&st->part_fold, &st->part_cap, nparts, sizeof *st->part_fold))
        return false;
    uint64_t fold_min = UINT64_MAX;
    for (uint32_t part = 0; part < nparts && !st->fold_every; part++) {
        uint64_t f = part_folded(st, part) || part >= st->n_parts ? snap->seq : st->part_fold[part];
        if (f < fold_min)
            fold_min = f;
    }
    size_t ndrop = 0;
    while (!st->fold_every && ndrop < st->n_drows && st->drows[ndrop] <= fold_min)
        ndrop++;
    st->n_drop = ndrop;
    st->drop_all = st->fold_every;  /* every delta row goes, by a scan (a resumed run's are unknown) */
    st->n_parts_now = nparts;
    if (!grow_array((void **)&st->drows, &st->drows_cap, st->n_drows + 1, sizeof *st->drows))
        return false;

    /* chunk rows: the windows due (a rotation through all of them every
     * FLUSH_ROUNDS persists; every one at the final) gather their metrics'
     * points since their last row from the ring and from this persist */
    uint32_t nw = n ? st->mt.e[n - 1].id / WINDOW + 1 : 0;
    if (!wmark_grow(st, nw, snap->seq) || !ring_reserve(st) ||
        !grow_array((void **)&st->srcs, &st->srcs_cap, st->ring_n + 1, sizeof *st->srcs))
        return false;
    uint32_t fl_count = final ? nw : (nw + FLUSH_ROUNDS - 1) / FLUSH_ROUNDS;
    uint32_t fl_start = nw ? st->flush_next % nw : 0;
    uint64_t tail = snap->seq + 1;
    for (uint32_t j = 0; j < nw; j++) {
        uint32_t w = (fl_start + j) % nw;
        if (j >= fl_count) {
            if (st->wmark[w] < tail)
                tail = st->wmark[w];
            continue;
        }
        size_t ns = 0;
        for (size_t r = 0; r < st->ring_n; r++) {
            const struct ring_entry *re = ring_at(st, r);
            if (re->seq >= st->wmark[w])
                st->srcs[ns++] = (struct psrc){re->seq, re->ts, re->data.p, re->data.len, re->tab, re->n, 0, 0};
        }
        if (st->n_spt)
            st->srcs[ns++] = (struct psrc){snap->seq, ts, st->hp.p, st->hp.len, st->ctab, st->n_spt, 0, 0};
        size_t at = st->rows.len;
        bool empty;
        if (!build_row(&st->rows, w, st->srcs, ns, snap->seq, st->run.start_ns, &empty))
            return false;
        if (!empty)
            st->srow[st->n_srow++] = (struct stage_row){w, (uint32_t)at, (uint32_t)(st->rows.len - at)};
    }

    /* history head: format, kind, timestamp, the points' lengths */
    struct buf *hh = &st->hhead;
    hh->len = 0;
    put_u8(hh, VALUE_FORMAT);
    put_u8(hh, st->keyframe_now ? HIST_KEYFRAME : HIST_DELTA);
    put_varint(hh, ts);
    put_varint(hh, st->n_spt);
    put_varint(hh, st->hidx.len / 8);
    put_varint(hh, st->hp.len);
    *n_gone = ngone;
    *tail_from = tail;
    st->flush_start = fl_start;
    st->flush_count = fl_count;
    return !hh->oom;
}

static void reset_oom(struct store *st)
{
    struct buf *bufs[] = {&st->full, &st->scratch, &st->header, &st->delta, &st->hp,
                          &st->hidx, &st->rb,      &st->rows,   &st->hhead};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        bufs[i]->oom = false;
}

/* A persist that did not commit: what store_persist changed in place becomes
 * unknown, so that the next persist rewrites it (see stage_base). */
static void forget_persist(struct store *st, bool staged)
{
    for (size_t i = 0; i < st->n_chg; i++) {
        struct metric_entry *e = &st->mt.e[st->chg[i]];
        e->fp_valid = false;
        e->hflags &= (uint8_t)~HF_ENTRY;
        e->changed_now = false;
    }
    for (size_t i = 0; staged && i < st->n_spt; i++) {
        struct metric_entry *e = &st->mt.e[st->spt[i]];
        st->chains[st->spt[i]].have = false;
        e->point_dirty = true;
        e->has_point = false;
    }
    st->n_chg = st->n_spt = 0;
    st->stage_all = true;
    reset_oom(st);
}

static bool grow_zeroed(void **arr, size_t *cap, size_t need, size_t elem)
{
    size_t old = *cap;
    if (!grow_array(arr, cap, need, elem))
        return false;
    if (*cap > old)
        memset((uint8_t *)*arr + old * elem, 0, (*cap - old) * elem);
    return true;
}

int store_persist(struct store *st, const struct snapshot *snap, bool final)
{
    if (st->readonly)
        return fail(st, STORE_ERROR, "%s: store opened read-only", st->dir);
    if (!st->have_run || strcmp(st->run.id, snap->run)) {
        int rc = store_begin_run(st, snap->run, NULL, snap->timestamp_ns);
        if (rc)
            return rc;
    }
    if (st->run.has_final)
        return fail(st, STORE_EXISTS, "run '%s' already has its final snapshot (seq %llu)",
                    st->run.id, (unsigned long long)st->run.final_seq);
    if (st->run.n_snapshots && snap->seq <= st->run.last_seq)
        return fail(st, STORE_ERROR, "run '%s': seq %llu is not after the last persisted seq %llu",
                    st->run.id, (unsigned long long)snap->seq, (unsigned long long)st->run.last_seq);

    /* The change hints count only against the persist that committed last
     * (a failed one leaves the handle between two states): trust them if
     * this snapshot continues the hints of that one. Until this one
     * commits, the next persist trusts nothing. */
    bool trust = snap->hint_epoch && snap->hint_epoch == st->h_epoch && snap->hint_version >= st->h_version;
    st->h_epoch = 0;

    size_t nm = snap->n_counters + snap->n_series;
    if (!grow_array((void **)&st->chg, &st->chg_cap, nm, sizeof *st->chg) ||
        !grow_array((void **)&st->visit, &st->visit_cap, nm, sizeof *st->visit) ||
        !grow_array((void **)&st->order, &st->order_cap, nm, sizeof *st->order))
        return fail(st, STORE_ERROR, "out of memory");
    if (st->hint_cap < snap->n_counters) {
        size_t old = st->hint_cap;
        if (!grow_array((void **)&st->hint, &st->hint_cap, snap->n_counters, sizeof *st->hint))
            return fail(st, STORE_ERROR, "out of memory");
        memset(st->hint + old, 0xff, (st->hint_cap - old) * sizeof *st->hint);
    }
    if (st->shint_cap < snap->n_series) {
        size_t old = st->shint_cap;
        if (!grow_array((void **)&st->shint, &st->shint_cap, snap->n_series, sizeof *st->shint))
            return fail(st, STORE_ERROR, "out of memory");
        memset(st->shint + old, 0xff, (st->shint_cap - old) * sizeof *st->shint);
    }

    /* Which metrics changed since the last persist. A metric whose hints say
     * it is the one seen at its position last time is not looked up by name,
     * and one they say is unchanged since then is not even read. One that
     * changed is compared by fingerprint all the same (a changed hint may
     * cover a write of the same value, which must not add a point), and
     * takes its buckets from the hint when it says which buckets moved since
     * exactly the last persist. */
    st->gen++;
    st->n_chg = st->n_spt = 0;
    st->n_visit = st->n_seen = 0;
    st->dirty_pt_min_now = UINT64_MAX;
    uint64_t ts = snap->timestamp_ns;
    /* the parts this persist folds: the next of the rotation, or all of
     * them for a run new to the handle (nothing is known of its rows) and
     * at the final (the run's latest is left without delta rows) */
    size_t n0 = st->mt.n;
    st->fold_parts = n0 ? st->mt.e[n0 - 1].id / PART_IDS + 1 : 0;
    st->fold_every = st->fold_all || final;
    st->fold_count = st->fold_every ? st->fold_parts : (st->fold_parts + FOLD_ROUNDS - 1) / FOLD_ROUNDS;
    st->fold_start = st->fold_parts && !st->fold_every ? st->fold_next % st->fold_parts : 0;
    st->delta.len = 0;
    st->n_pieces = 0;
    st->n_delta = 0;
    if (!piece_begin(st)) {
        forget_persist(st, false);
        return fail(st, STORE_ERROR, "out of memory");
    }
    int status = STORE_OK;
    uint64_t fp[5];
    for (size_t i = 0; i < snap->n_counters && !status; i++) {
        const struct snap_counter *c = &snap->counters[i];
        struct metric_entry *me = hinted_entry(st, trust, i, st->h_ncounters, st->hint, c->hint_placed,
                                               CLASS_COUNTER);
        if (me) {
            st->n_seen += me->gen != st->gen;
            me->gen = st->gen;
            me->pos = (uint32_t)i;
            if (c->hint_changed <= st->h_version && me->fp_valid)
                continue;
            fingerprint_counter(c, fp);
            if (note_change(st, me, (uint32_t)(me - st->mt.e), fp) && !early_entry(st, me, c, NULL, ts, final))
                st->visit[st->n_visit++] = (uint32_t)(me - st->mt.e);
            continue;
        }
        fingerprint_counter(c, fp);
        status = note_metric(st, &st->hint[i], i, CLASS_COUNTER, c->name, fp);
    }
    for (size_t i = 0; i < snap->n_series && !status; i++) {
        const struct snap_series *sr = &snap->series[i];
        /* the entries and the snapshot's series are in the same order, the
         * common case: ask for both a few ahead (a series is four lines,
         * see struct snap_series, of which a patch reads two or three; an
         * entry is one) */
        if (trust && i + 2 * PREFETCH_AHEAD < snap->n_series && i + 2 * PREFETCH_AHEAD < st->h_nseries) {
            prefetch_series(&snap->series[i + 2 * PREFETCH_AHEAD]);
            uint32_t h = st->shint[i + 2 * PREFETCH_AHEAD];
            if (h < st->mt.n)
                __builtin_prefetch(&st->mt.e[h], 1);
        }
        struct metric_entry *me = hinted_entry(st, trust, i, st->h_nseries, st->shint, sr->hint_placed,
                                               CLASS_SERIES);
        if (me) {
            st->n_seen += me->gen != st->gen;
            me->gen = st->gen;
            me->pos = (uint32_t)i;
            if (sr->hint_changed <= st->h_version && me->fp_valid)
                continue;
            fingerprint_series(sr, fp);
            /* the hint says what changed if it speaks of exactly the
             * versions since that persist */
            if (note_change(st, me, (uint32_t)(me - st->mt.e), fp) &&
                !(sr->hint_changed == st->h_version + 1 && sr->hint_edges <= st->h_version && sr->n_buckets <= 64 &&
                  early_entry(st, me, NULL, sr, ts, final)))
                st->visit[st->n_visit++] = (uint32_t)(me - st->mt.e);
            continue;
        }
        fingerprint_series(sr, fp);
        status = note_metric(st, &st->shint[i], i, CLASS_SERIES, sr->name, fp);
    }
    char *sections = NULL;
    if (!status && json_object_size(snap->sections)) {
        sections = json_dumps(snap->sections, JSON_COMPACT | JSON_SORT_KEYS);
        if (!sections)
            status = fail(st, STORE_ERROR, "run '%s': sections cannot be serialized", st->run.id);
    }
    size_t n = st->mt.n;
    if (!status && (!grow_array((void **)&st->spt, &st->spt_cap, n, sizeof *st->spt) ||
                    !grow_array((void **)&st->sbase, &st->sbase_cap, n, sizeof *st->sbase) ||
                    !grow_array((void **)&st->gone, &st->gone_cap, n, sizeof *st->gone) ||
                    !grow_array((void **)&st->ctab, &st->ctab_cap, n, sizeof *st->ctab) ||
                    !grow_array((void **)&st->srow, &st->srow_cap, n / WINDOW + 1, sizeof *st->srow) ||
                    !grow_zeroed((void **)&st->chains, &st->chains_cap, n, sizeof *st->chains) ||
                    !grow_zeroed((void **)&st->pt_ns, &st->pt_cap, n, sizeof *st->pt_ns)))
        status = fail(st, STORE_ERROR, "out of memory");
    if (status) {
        forget_persist(st, false);
        free(sections);
        return status;
    }
    st->sections_now = sections ? sections : "";
    st->sections_changed = (sections == NULL) != (st->sections_json == NULL) ||
                           (sections && strcmp(sections, st->sections_json));
    /* a keyframe every full_every persists, but no closer than full_every
     * series intervals, so persisting 4 times a second does not quadruple them */
    bool keyframe = final || !st->have_keyframe || (st->since_keyframe + 1 >= st->full_every &&
                    snap->timestamp_ns - st->last_keyframe_ns >= (uint64_t)st->full_every * st->series_interval_ns) ||
                    snap->timestamp_ns < st->last_keyframe_ns;
    st->keyframe_now = keyframe;

    st->full.len = 0;
    if (keyframe)
        encode_snapshot(&st->full, snap, sections, true);
    size_t n_gone = 0;
    uint64_t tail_from = 0;
    if (st->full.oom || !stage_persist(st, snap, final, st->sections_now, &n_gone, &tail_from)) {
        forget_persist(st, true);
        free(sections);
        return fail(st, STORE_ERROR, "out of memory");
    }

    struct store_run_info nr = st->run;
    nr.state = snap->state;
    nr.last_seq = snap->seq;
    nr.last_timestamp_ns = snap->timestamp_ns;
    nr.n_pending_tasks = snap->n_pending_tasks;
    nr.n_snapshots++;
    if (final) {
        nr.has_final = true;
        nr.final_seq = snap->seq;
    }

    int rc;
    for (int attempt = 0;; attempt++) {
        rc = persist_txn(st, snap, final, keyframe, n_gone, &nr, tail_from);
        if (rc != MDB_MAP_FULL || attempt == MAX_GROW_RETRIES)
            break;
        /* No transaction is open now, so the map may grow; readers in other
         * processes pick the new size up (MDB_MAP_RESIZED). */
        int grc = mdb_env_set_mapsize(st->env, st->map_size * 2);
        if (grc) {
            rc = grc;
            break;
        }
        refresh_map_size(st);
    }
    st->scratch.oom = false;
    if (rc) {
        forget_persist(st, true);
        free(sections);
        if (rc == MDB_KEYEXIST)
            return fail(st, STORE_EXISTS, "run '%s' already has its final snapshot", st->run.id);
        return fail(st, STORE_ERROR, "%s: cannot persist seq %llu of run '%s': %s", st->dir,
                    (unsigned long long)snap->seq, st->run.id, mdb_strerror(rc));
    }

    /* committed: remember what is now in the store. This persist's points
     * join the ring (its buffers trade places with the slot's, room was
     * reserved); the windows just written move on, and what every window has
     * in chunk rows leaves the ring. */
    if (st->n_spt) {
        struct ring_entry *re = ring_at(st, st->ring_n++);
        struct buf tb = re->data;
        re->data = st->hp;
        st->hp = tb;
        struct ptab *tt = re->tab;
        size_t tc = re->tcap;
        re->tab = st->ctab;
        re->tcap = st->ctab_cap;
        st->ctab = tt;
        st->ctab_cap = tc;
        re->n = st->n_spt;
        re->seq = snap->seq;
        re->ts = snap->timestamp_ns;
    }
    for (uint32_t j = 0; j < st->flush_count; j++)
        st->wmark[(st->flush_start + j) % st->n_wmark] = snap->seq + 1;
    while (st->ring_n && ring_at(st, 0)->seq < tail_from) {
        st->ring_head = (st->ring_head + 1) % st->ring_cap;
        st->ring_n--;
    }
    for (size_t i = 0; i < n_gone; i++) {
        struct metric_entry *e = &st->mt.e[st->gone[i]];
        e->in_latest = false;
        e->fp_valid = false;
        e->hflags &= (uint8_t)~HF_DIRTY;
    }
    for (size_t i = 0; i < st->n_sbase; i++) {
        struct metric_entry *e = &st->mt.e[st->sbase[i].entry];
        e->in_latest = true;
        e->hflags &= (uint8_t)~HF_DIRTY;
    }
    /* the folds done, the delta rows gone and this persist's */
    for (uint32_t p = 0; p < st->n_parts_now; p++)
        if (part_folded(st, p) || p >= st->n_parts)
            st->part_fold[p] = snap->seq;
    st->n_parts = st->n_parts_now;
    if (st->fold_parts && !st->fold_every)
        st->fold_next = (st->fold_start + st->fold_count) % st->fold_parts;
    st->fold_all = false;
    st->stage_all = false;
    st->dirty_pt_min = st->dirty_pt_min_now;
    if (st->drop_all)
        st->n_drows = 0;
    else if (st->n_drop) {
        memmove(st->drows, st->drows + st->n_drop, (st->n_drows - st->n_drop) * sizeof *st->drows);
        st->n_drows -= st->n_drop;
    }
    if (st->n_delta)
        st->drows[st->n_drows++] = snap->seq;
    /* the next persist may trust this one's change hints */
    st->h_epoch = snap->hint_epoch;
    st->h_version = snap->hint_version;
    st->h_ncounters = snap->n_counters;
    st->h_nseries = snap->n_series;
    if (keyframe) {
        /* the first point of each metric after a keyframe is absolute, so
         * that a snapshot rebuilt from the keyframe needs nothing before it */
        for (size_t i = 0; i < n; i++)
            st->chains[i].have = false;
        st->have_keyframe = true;
        st->since_keyframe = 0;
        st->last_keyframe_ns = snap->timestamp_ns;
    } else {
        st->since_keyframe++;
    }
    if (st->n_wmark)
        st->flush_next = (st->flush_start + st->flush_count) % st->n_wmark;
    st->tail_from = tail_from;
    st->n_stored = st->mt.n;
    st->run = nr;
    free(st->sections_json);
    st->sections_json = sections;
    /* the final must survive a crash of the machine: its meta page too */
    if (final && commits_synced(st) && (rc = mdb_env_sync(st->env, 1)))
        return fail(st, STORE_ERROR, "%s: the final snapshot of run '%s' is committed but not flushed to disk: %s",
                    st->dir, st->run.id, mdb_strerror(rc));
    return STORE_OK;
}

/* ------------------------------------------------------------ readers */

int store_list_runs(struct store *st, struct store_run_info **runs, size_t *n)
{
    *runs = NULL;
    *n = 0;
    MDB_txn *txn;
    if (rd_begin(st, &txn))
        return STORE_ERROR;
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, st->runs, &cur);
    if (rc) {
        mdb_txn_abort(txn);
        return fail(st, STORE_ERROR, "%s: %s", st->dir, mdb_strerror(rc));
    }
    size_t cap = 0;
    int status = STORE_OK;
    MDB_val k, v;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); !rc; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (k.mv_size != 8) {
            status = fail(st, STORE_ERROR, "corrupt store: run key of %zu bytes", k.mv_size);
            break;
        }
        if (!grow_array((void **)runs, &cap, *n + 1 > cap ? (cap ? cap * 2 : 16) : cap, sizeof **runs)) {
            status = fail(st, STORE_ERROR, "out of memory");
            break;
        }
        if ((status = decode_run(st, &v, rd_be64(k.mv_data), &(*runs)[*n], NULL, NULL)))
            break;
        (*n)++;
    }
    mdb_cursor_close(cur);
    mdb_txn_abort(txn);
    if (status) {
        free(*runs);
        *runs = NULL;
        *n = 0;
    }
    return status;
}

int store_find_run(struct store *st, const char *run_id, struct store_run_info *out)
{
    MDB_txn *txn;
    if (rd_begin(st, &txn))
        return STORE_ERROR;
    int status = get_run(st, txn, run_id, out, NULL, NULL);
    mdb_txn_abort(txn);
    return status;
}

int store_last_run(struct store *st, struct store_run_info *out)
{
    MDB_txn *txn;
    if (rd_begin(st, &txn))
        return STORE_ERROR;
    MDB_cursor *cur;
    MDB_val k, v;
    int status;
    int rc = mdb_cursor_open(txn, st->runs, &cur);
    if (!rc) {
        rc = mdb_cursor_get(cur, &k, &v, MDB_LAST);
        mdb_cursor_close(cur);
    }
    if (rc == MDB_NOTFOUND)
        status = fail(st, STORE_NOT_FOUND, "%s: the store has no runs yet", st->dir);
    else if (rc)
        status = fail(st, STORE_ERROR, "%s: %s", st->dir, mdb_strerror(rc));
    else if (k.mv_size != 8)
        status = fail(st, STORE_ERROR, "corrupt store: run key of %zu bytes", k.mv_size);
    else
        status = decode_run(st, &v, rd_be64(k.mv_data), out, NULL, NULL);
    mdb_txn_abort(txn);
    return status;
}

/* Sections (a compact JSON object, or empty) into s. */
static void rd_sections(struct rd *d, struct snapshot *s)
{
    char *sections = get_str(d, "sections", NULL, 0);
    if (!d->bad && *sections) {
        json_error_t je;
        json_t *j = json_loads(sections, 0, &je);
        if (!json_is_object(j))
            rd_fail(d, "sections JSON");
        else {
            json_decref(s->sections);
            s->sections = json_incref(j);
        }
        json_decref(j);
    }
    free(sections);
}

/* Decodes a base row of the latest table and appends its metric to s. */
static bool rd_base_row(struct rd *d, struct snapshot *s, uint8_t *cls, uint64_t *seq)
{
    if (get_u8(d, "format byte") != VALUE_FORMAT)
        return rd_fail(d, "format byte");
    *cls = get_u8(d, "metric class");
    *seq = get_varint(d, "base row seq");
    if (*cls == CLASS_COUNTER && !d->bad) {
        struct snap_counter c;
        if (!grow_array((void **)&s->counters, &s->cap_counters,
                        s->n_counters == s->cap_counters ? s->cap_counters * 2 + 16 : 0, sizeof c))
            return rd_fail(d, "out of memory");
        if (!decode_counter(d, &c))
            return rd_fail(d, "counter");
        s->counters[s->n_counters++] = c;
    } else if (*cls == CLASS_SERIES && !d->bad) {
        struct snap_series sr;
        if (!grow_array((void **)&s->series, &s->cap_series,
                        s->n_series == s->cap_series ? s->cap_series * 2 + 16 : 0, sizeof sr))
            return rd_fail(d, "out of memory");
        if (!decode_series(d, &sr)) {
            free(sr.name);
            free(sr.buckets);
            return false;
        }
        s->series[s->n_series++] = sr;
    } else {
        return rd_fail(d, "metric class");
    }
    if (d->p != d->end)
        return rd_fail(d, "trailing bytes");
    return true;
}

/* A base row as read: which metric of the snapshot, as of which persist. */
struct based {
    uint32_t id;
    uint8_t cls;
    uint32_t pos;                /* in s->counters or s->series */
    uint64_t seq;
};

/* The base row of metric id in bs (in id order), looked for next to *j (the
 * last one found: entries come mostly in id order); NULL when there is none. */
static const struct based *find_based(const struct based *bs, size_t nb, uint64_t id, size_t *j)
{
    if (*j < nb && bs[*j].id == id)
        return &bs[*j];
    if (*j + 1 < nb && bs[*j + 1].id == id)
        return &bs[++*j];
    size_t lo = 0, hi = nb;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (bs[mid].id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == nb || bs[lo].id != id)
        return NULL;
    *j = lo;
    return &bs[lo];
}

/* Applies a delta row (persist seq) to the metrics of s whose base rows
 * (bs, in id order) are older than it. */
static bool rd_delta_row(struct rd *d, uint64_t seq, struct snapshot *s, const struct based *bs, size_t nb)
{
    if (get_u8(d, "format byte") != VALUE_FORMAT)
        return rd_fail(d, "format byte");
    uint32_t n = get_le32(d, "entry count");
    if (!d->bad && n > (size_t)(d->end - d->p) / 2)
        return rd_fail(d, "entry count");
    int64_t id = 0;
    size_t j = 0;
    for (uint32_t i = 0; i < n && !d->bad; i++) {
        int64_t dl = unzigzag(get_varint(d, "entry id"));
        if (d->bad || dl >= (int64_t)DELTA_ID || dl <= -(int64_t)DELTA_ID || (id += dl) < 0 || id >= DELTA_ID)
            return rd_fail(d, "entry id");
        const struct based *b = find_based(bs, nb, (uint64_t)id, &j);
        if (b && b->seq >= seq)
            b = NULL;
        uint8_t cls = b ? b->cls : 0;
        rd_entry(d, cls, b && cls == CLASS_COUNTER ? &s->counters[b->pos] : NULL,
                 b && cls == CLASS_SERIES ? &s->series[b->pos] : NULL);
    }
    if (!d->bad && d->p != d->end)
        rd_fail(d, "trailing bytes");
    return !d->bad;
}

/* The latest snapshot: the header row, the base rows in id order, then the
 * delta rows in seq order, each entry applied to its metric when the
 * metric's base row is older than the entry's row. */
static int read_latest(struct store *st, MDB_txn *txn, const struct store_run_info *r,
                       struct snapshot **out)
{
    uint8_t kb[8];
    MDB_val k = run_key(kb, r->run_seq), v;
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, st->latest, &cur);
    if (rc)
        return fail(st, STORE_ERROR, "%s: %s", st->dir, mdb_strerror(rc));
    rc = mdb_cursor_get(cur, &k, &v, MDB_SET_KEY);
    if (rc) {
        mdb_cursor_close(cur);
        if (rc == MDB_NOTFOUND)
            return fail(st, STORE_NOT_FOUND, "run '%s' has no latest snapshot", r->id);
        return fail(st, STORE_ERROR, "%s: %s", st->dir, mdb_strerror(rc));
    }
    struct rd h = {v.mv_data, (const uint8_t *)v.mv_data + v.mv_size, NULL};
    if (get_u8(&h, "format byte") != VALUE_FORMAT)
        rd_fail(&h, "format byte");
    uint64_t schema = get_varint(&h, "schema version");
    uint64_t seq = get_varint(&h, "seq");
    uint64_t ts = get_varint(&h, "timestamp");
    uint8_t state = get_u8(&h, "state");
    uint64_t pending = get_varint(&h, "pending tasks");
    char run[64];
    get_str(&h, "run id", run, sizeof run);
    if (state > OBSD_RUN_INTERRUPTED)
        rd_fail(&h, "state");
    if (schema > UINT32_MAX)
        rd_fail(&h, "schema version");
    struct snapshot *s = h.bad ? NULL : snapshot_new(run, seq, (enum obsd_run_state)state);
    if (!h.bad && !s)
        rd_fail(&h, "out of memory");
    if (s) {
        s->schema_version = (uint32_t)schema;
        s->timestamp_ns = ts;
        s->n_pending_tasks = pending;
        rd_sections(&h, s);
    }
    if (!h.bad && h.p != h.end)
        rd_fail(&h, "trailing bytes");
    if (h.bad) {
        mdb_cursor_close(cur);
        snapshot_free(s);
        return fail(st, STORE_ERROR, "corrupt store: latest snapshot of run '%s': bad %s", r->id, h.bad);
    }

    struct based *bs = NULL;
    size_t nb = 0, bcap = 0;
    uint64_t piece_seq = UINT64_MAX;
    uint32_t next_piece = 0;
    int status = STORE_OK;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT); !rc && !status; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (k.mv_size < 8 || memcmp(k.mv_data, kb, 8))
            break;
        const uint8_t *kp = k.mv_data;
        struct rd d = {v.mv_data, (const uint8_t *)v.mv_data + v.mv_size, NULL};
        if (k.mv_size == 12 && rd_be32(kp + 8) != DELTA_ID) {
            uint32_t id = rd_be32(kp + 8);
            struct based b = {.id = id};
            if (nb == bcap && !grow_array((void **)&bs, &bcap, bcap ? bcap * 2 : 256, sizeof *bs))
                rd_fail(&d, "out of memory");
            else if (rd_base_row(&d, s, &b.cls, &b.seq)) {
                b.pos = (uint32_t)(b.cls == CLASS_COUNTER ? s->n_counters : s->n_series) - 1;
                bs[nb++] = b;
            }
            if (d.bad)
                status = fail(st, STORE_ERROR, "corrupt store: latest snapshot of run '%s', metric id %u: bad %s",
                              r->id, id, d.bad);
        } else if (k.mv_size == 24 && rd_be32(kp + 8) == DELTA_ID) {
            uint64_t dseq = rd_be64(kp + 12);
            uint32_t piece = rd_be32(kp + 20);
            /* a row's pieces are 0, 1, ...: one missing would leave its
             * entries' metrics at older values */
            bool in_order = dseq == piece_seq ? piece == next_piece : piece == 0;
            piece_seq = dseq;
            next_piece = piece + 1;
            if (dseq > seq)
                rd_fail(&d, "delta row seq");
            else if (!in_order)
                rd_fail(&d, "delta row piece");
            else
                rd_delta_row(&d, dseq, s, bs, nb);
            if (d.bad)
                status = fail(st, STORE_ERROR, "corrupt store: latest snapshot of run '%s', delta row %llu: bad %s",
                              r->id, (unsigned long long)dseq, d.bad);
        } else {
            status = fail(st, STORE_ERROR, "corrupt store: latest snapshot of run '%s': bad key of %zu bytes",
                          r->id, k.mv_size);
        }
    }
    mdb_cursor_close(cur);
    free(bs);
    if (!status && rc && rc != MDB_NOTFOUND)
        status = fail(st, STORE_ERROR, "%s: %s", st->dir, mdb_strerror(rc));
    if (status) {
        snapshot_free(s);
        return status;
    }
    *out = s;
    return STORE_OK;
}

int store_latest(struct store *st, const char *run_id, struct snapshot **out)
{
    *out = NULL;
    MDB_txn *txn;
    if (rd_begin(st, &txn))
        return STORE_ERROR;
    struct store_run_info r;
    int status = get_run(st, txn, run_id, &r, NULL, NULL);
    if (!status)
        status = read_latest(st, txn, &r, out);
    mdb_txn_abort(txn);
    return status;
}

int store_final(struct store *st, const char *run_id, struct snapshot **out)
{
    *out = NULL;
    MDB_txn *txn;
    if (rd_begin(st, &txn))
        return STORE_ERROR;
    struct store_run_info r;
    int status = get_run(st, txn, run_id, &r, NULL, NULL);
    if (status)
        goto done;
    uint8_t kb[8];
    MDB_val k = run_key(kb, r.run_seq), v;
    int rc = mdb_get(txn, st->final, &k, &v);
    if (rc == MDB_NOTFOUND) {
        status = fail(st, STORE_NOT_FOUND,
                      "run '%s' has no final snapshot (it has not ended, or its collector was stopped)", run_id);
        goto done;
    }
    if (rc) {
        status = fail(st, STORE_ERROR, "%s: %s", st->dir, mdb_strerror(rc));
        goto done;
    }
    struct rd d = {v.mv_data, (const uint8_t *)v.mv_data + v.mv_size, NULL};
    *out = decode_snapshot(&d);
    if (!*out)
        status = fail(st, STORE_ERROR, "corrupt store: final snapshot of run '%s': bad %s", run_id, d.bad);
done:
    mdb_txn_abort(txn);
    return status;
}

int store_list_seqs(struct store *st, const char *run_id, uint64_t **seqs, size_t *n)
{
    *seqs = NULL;
    *n = 0;
    MDB_txn *txn;
    if (rd_begin(st, &txn))
        return STORE_ERROR;
    struct store_run_info r;
    int status = get_run(st, txn, run_id, &r, NULL, NULL);
    MDB_cursor *cur = NULL;
    int rc = status ? 0 : mdb_cursor_open(txn, st->history, &cur);
    if (rc)
        status = fail(st, STORE_ERROR, "%s: %s", st->dir, mdb_strerror(rc));
    size_t cap = 0;
    uint8_t kb[16];
    MDB_val k = history_key(kb, r.run_seq, 0), v;
    for (rc = status ? MDB_NOTFOUND : mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); !rc;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (k.mv_size != 16 || memcmp(k.mv_data, kb, 8))
            break;
        if (*n == cap && !grow_array((void **)seqs, &cap, cap ? cap * 2 : 64, sizeof **seqs)) {
            status = fail(st, STORE_ERROR, "out of memory");
            break;
        }
        (*seqs)[(*n)++] = rd_be64((const uint8_t *)k.mv_data + 8);
    }
    if (cur)
        mdb_cursor_close(cur);
    mdb_txn_abort(txn);
    if (status) {
        free(*seqs);
        *seqs = NULL;
        *n = 0;
    }
    return status;
}

/* Applies one time series point to the metric at pos of s (rebuild). */
static int apply_point(struct snapshot *s, const struct metric_table *mt, const struct metric_entry *e,
                       long *pos, const struct store_point *p)
{
    if (e->cls == CLASS_COUNTER) {
        if (*pos < 0) {
            if (snapshot_add_counter(s, MT_NAME(mt, e), 0))
                return -1;
            *pos = (long)s->n_counters - 1;
        }
        struct snap_counter *c = &s->counters[*pos];
        c->is_float = p->is_float;
        c->ivalue = p->ivalue;
        c->fvalue = p->fvalue;
        return 0;
    }
    if (*pos < 0) {
        struct snap_series empty = {.name = (char *)MT_NAME(mt, e)};
        if (snapshot_add_series(s, &empty))
            return -1;
        *pos = (long)s->n_series - 1;
    }
    struct snap_series *sr = &s->series[*pos];
    sr->exact = p->exact;
    sr->count = p->count;
    sr->total = p->total;
    sr->min = p->min;
    sr->max = p->max;
    sr->sum_sq = NAN;
    for (int i = 0; i < OBSD_N_PERCENTILES; i++)
        sr->percentiles[i] = NAN;
    for (int i = 0; i < STORE_POINT_NPCT; i++)
        sr->percentiles[point_pct_grid[i]] = p->pct[i];
    free(sr->buckets);
    sr->buckets = NULL;
    sr->n_buckets = 0;
    return 0;
}

/* The snapshot at seq: the last keyframe at or before it, then the points
 * of the deltas after it, each relative to the one before of its metric
 * (the first after a keyframe is absolute). */
static int rebuild(struct store *st, MDB_txn *txn, const struct store_run_info *r, uint64_t seq,
                   struct snapshot **out)
{
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, st->history, &cur);
    if (rc)
        return fail(st, STORE_ERROR, "%s: %s", st->dir, mdb_strerror(rc));
    uint8_t kb[16];
    MDB_val k = history_key(kb, r->run_seq, seq), v;
    rc = mdb_cursor_get(cur, &k, &v, MDB_SET_KEY);
    if (rc) {
        mdb_cursor_close(cur);
        if (rc == MDB_NOTFOUND)
            return fail(st, STORE_NOT_FOUND, "run '%s' has no snapshot with seq %llu", r->id,
                        (unsigned long long)seq);
        return fail(st, STORE_ERROR, "%s: %s", st->dir, mdb_strerror(rc));
    }
    /* walk back to the keyframe */
    for (;;) {
        const uint8_t *p = v.mv_data;
        if (v.mv_size < 2 || p[0] != VALUE_FORMAT || p[1] > HIST_DELTA) {
            mdb_cursor_close(cur);
            return fail(st, STORE_ERROR, "corrupt store: history entry of run '%s'", r->id);
        }
        if (p[1] == HIST_KEYFRAME)
            break;
        rc = mdb_cursor_get(cur, &k, &v, MDB_PREV);
        if (rc || k.mv_size != 16 || memcmp(k.mv_data, kb, 8)) {
            mdb_cursor_close(cur);
            return fail(st, STORE_ERROR, "corrupt store: run '%s' has no history keyframe before seq %llu",
                        r->id, (unsigned long long)seq);
        }
    }
    struct rd d = {v.mv_data, (const uint8_t *)v.mv_data + v.mv_size, NULL};
    uint8_t kind;
    uint64_t ts;
    struct pts ps;
    struct snapshot *s = rd_history_head(&d, &kind, &ts, &ps) ? decode_snapshot(&d) : NULL;
    if (!s) {
        mdb_cursor_close(cur);
        return fail(st, STORE_ERROR, "corrupt store: history keyframe of run '%s': bad %s", r->id, d.bad);
    }
    uint64_t at = rd_be64((const uint8_t *)k.mv_data + 8);
    if (at == seq) {
        mdb_cursor_close(cur);
        *out = s;
        return STORE_OK;
    }

    /* replay the deltas: metric ids -> entries -> positions in s */
    struct metric_table mt = {0};
    long *pos_by_entry = NULL;
    uint32_t *entry_by_id = NULL, max_id = 0;
    struct chain *chains = NULL;
    int status = load_names(st, txn, r->run_seq, &mt);
    if (!status) {
        entry_by_id = mt_index_by_id(&mt, &max_id);
        pos_by_entry = malloc((mt.n + 1) * sizeof *pos_by_entry);
        chains = calloc((size_t)max_id + 1, sizeof *chains);
        if (!pos_by_entry || !entry_by_id || !chains)
            status = fail(st, STORE_ERROR, "out of memory");
    }
    if (!status) {
        for (size_t i = 0; i < mt.n; i++)
            pos_by_entry[i] = -1;
        for (size_t i = 0; i < s->n_counters; i++) {
            long e = mt_find(&mt, CLASS_COUNTER, s->counters[i].name);
            if (e >= 0)
                pos_by_entry[e] = (long)i;
        }
        for (size_t i = 0; i < s->n_series; i++) {
            long e = mt_find(&mt, CLASS_SERIES, s->series[i].name);
            if (e >= 0)
                pos_by_entry[e] = (long)i;
        }
    }
    while (!status) {
        rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
        if (rc || k.mv_size != 16 || memcmp(k.mv_data, kb, 8)) {
            status = fail(st, STORE_ERROR, "corrupt store: history of run '%s' ends before seq %llu",
                          r->id, (unsigned long long)seq);
            break;
        }
        uint64_t dseq = rd_be64((const uint8_t *)k.mv_data + 8);
        struct rd h = {v.mv_data, (const uint8_t *)v.mv_data + v.mv_size, NULL};
        if (rd_history_head(&h, &kind, &ts, &ps) && kind != HIST_DELTA)
            rd_fail(&h, "entry kind");
        s->seq = dseq;
        s->timestamp_ns = ts;
        struct rd pd = {ps.data, ps.end, NULL};
        uint64_t id = 0;
        for (uint64_t i = 0; i < ps.n && !h.bad && !pd.bad && !status; i++) {
            uint64_t dl = get_varint(&pd, "point id");
            if ((i && !dl) || dl > UINT32_MAX || (id += dl) > max_id || entry_by_id[id] == UINT32_MAX) {
                rd_fail(&pd, "point id");
                break;
            }
            uint32_t e = entry_by_id[id];
            struct store_point p = {0};
            if (!rd_point(&pd, &chains[id], &p))
                break;
            if (p.is_series != (mt.e[e].cls == CLASS_SERIES))
                status = fail(st, STORE_ERROR, "corrupt store: time series point of '%s' at seq %llu",
                              MT_NAME(&mt, &mt.e[e]), (unsigned long long)dseq);
            else if (apply_point(s, &mt, &mt.e[e], &pos_by_entry[e], &p))
                status = fail(st, STORE_ERROR, "out of memory");
        }
        if (pd.bad && !h.bad)
            rd_fail(&h, pd.bad);
        if (!h.bad && pd.p != pd.end)
            rd_fail(&h, "trailing point bytes");
        uint8_t state = get_u8(&h, "state");
        if (state > OBSD_RUN_INTERRUPTED)
            rd_fail(&h, "state");
        s->state = (enum obsd_run_state)state;
        s->n_pending_tasks = get_varint(&h, "pending tasks");
        uint8_t has_sections = get_u8(&h, "sections flag");
        if (has_sections == 1 && !h.bad) {
            char *js = get_str(&h, "sections", NULL, 0);
            json_t *j = js && *js ? json_loads(js, 0, NULL) : json_object();
            if (!json_is_object(j))
                rd_fail(&h, "sections JSON");
            else {
                json_decref(s->sections);
                s->sections = json_incref(j);
            }
            json_decref(j);
            free(js);
        } else if (has_sections > 1) {
            rd_fail(&h, "sections flag");
        }
        if (!h.bad && h.p != h.end)
            rd_fail(&h, "trailing bytes");
        if (h.bad && !status)
            status = fail(st, STORE_ERROR, "corrupt store: history entry %llu of run '%s': bad %s",
                          (unsigned long long)dseq, r->id, h.bad);
        if (dseq == seq)
            break;
    }
    mdb_cursor_close(cur);
    free(pos_by_entry);
    free(entry_by_id);
    free(chains);
    mt_free(&mt);
    if (status) {
        snapshot_free(s);
        return status;
    }
    *out = s;
    return STORE_OK;
}

int store_snapshot_at(struct store *st, const char *run_id, uint64_t seq, struct snapshot **out)
{
    *out = NULL;
    MDB_txn *txn;
    if (rd_begin(st, &txn))
        return STORE_ERROR;
    struct store_run_info r;
    int status = get_run(st, txn, run_id, &r, NULL, NULL);
    if (!status)
        status = rebuild(st, txn, &r, seq, out);
    mdb_txn_abort(txn);
    return status;
}

/* A chunk row (its value, valid while the transaction lasts) and a history
 * entry of the tail, for store_metric_series. */
struct crow {
    const uint8_t *p, *end;
    uint64_t seq;
};
struct ctail {
    struct pts ps;
    uint64_t seq, ts;
};

/* The history entries from seq `from` on: the points not yet in chunk rows. */
static int collect_tail(struct store *st, MDB_txn *txn, const struct store_run_info *r, uint64_t from,
                        struct ctail **out, size_t *n)
{
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, st->history, &cur);
    if (rc)
        return fail(st, STORE_ERROR, "%s: %s", st->dir, mdb_strerror(rc));
    uint8_t kb[16];
    MDB_val k = history_key(kb, r->run_seq, from), v;
    size_t cap = 0;
    int status = STORE_OK;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); !rc; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (k.mv_size != 16 || memcmp(k.mv_data, kb, 8))
            break;
        if (*n == cap && !grow_array((void **)out, &cap, cap ? cap * 2 : 16, sizeof **out)) {
            status = fail(st, STORE_ERROR, "out of memory");
            break;
        }
        struct ctail *t = &(*out)[*n];
        t->seq = rd_be64((const uint8_t *)k.mv_data + 8);
        struct rd d = {v.mv_data, (const uint8_t *)v.mv_data + v.mv_size, NULL};
        uint8_t kind;
        if (!rd_history_head(&d, &kind, &t->ts, &t->ps)) {
            status = fail(st, STORE_ERROR, "corrupt store: history entry %llu of run '%s': bad %s",
                          (unsigned long long)t->seq, r->id, d.bad);
            break;
        }
        (*n)++;
    }
    if (!status && rc && rc != MDB_NOTFOUND)
        status = fail(st, STORE_ERROR, "%s: %s", st->dir, mdb_strerror(rc));
    mdb_cursor_close(cur);
    return status;
}

/* The chunk rows of one window, in seq order. */
static int collect_rows(struct store *st, MDB_txn *txn, const struct store_run_info *r, uint32_t w,
                        struct crow **rows, size_t *n, size_t *cap)
{
    *n = 0;
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, st->series, &cur);
    if (rc)
        return fail(st, STORE_ERROR, "%s: %s", st->dir, mdb_strerror(rc));
    uint8_t kb[20];
    MDB_val k = chunk_key(kb, r->run_seq, w, 0), v;
    int status = STORE_OK;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); !rc; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (k.mv_size != 20 || memcmp(k.mv_data, kb, 12))
            break;
        if (*n == *cap && !grow_array((void **)rows, cap, *cap ? *cap * 2 : 64, sizeof **rows)) {
            status = fail(st, STORE_ERROR, "out of memory");
            break;
        }
        (*rows)[(*n)++] = (struct crow){v.mv_data, (const uint8_t *)v.mv_data + v.mv_size,
                                        rd_be64((const uint8_t *)k.mv_data + 12)};
    }
    if (!status && rc && rc != MDB_NOTFOUND)
        status = fail(st, STORE_ERROR, "%s: %s", st->dir, mdb_strerror(rc));
    mdb_cursor_close(cur);
    return status;
}

/* Finds the part of metric `local` (its id within the window) in a chunk
 * row; false when the row has none (d->bad set when the row is damaged). */
static bool row_segment(const struct crow *row, uint32_t local, struct rd *seg, uint32_t *npts)
{
    struct rd d = {row->p, row->end, NULL};
    if (get_u8(&d, "format byte") != VALUE_FORMAT)
        return rd_fail(seg, "chunk format byte");
    uint8_t nseg = get_u8(&d, "chunk part count");
    int prev = -1;
    for (uint8_t i = 0; i < nseg && !d.bad; i++) {
        uint8_t l = get_u8(&d, "chunk part");
        uint32_t n = get_le32(&d, "chunk point count");
        uint32_t len = get_le32(&d, "chunk part length");
        if (d.bad || (int)l <= prev || l >= WINDOW || !n || len > (size_t)(d.end - d.p))
            return rd_fail(seg, "chunk part");
        if (l == local) {
            *seg = (struct rd){d.p, d.p + len, NULL};
            *npts = n;
            return true;
        }
        if (l > local)
            return false;
        d.p += len;
        prev = l;
    }
    if (d.bad || d.p != d.end)
        return rd_fail(seg, d.bad ? d.bad : "chunk trailing bytes");
    return false;
}

/* Calls fn for every point of one metric: its chunk rows, then the history
 * entries after the last of them. */
static int emit_metric(struct store *st, const struct store_run_info *r, const struct metric_entry *e,
                       const char *name, const struct crow *rows, size_t nrows, const struct ctail *tails, size_t ntails,
                       store_point_fn fn, void *ctx)
{
    struct chain c = {0};
    uint64_t last = 0;
    bool any = false;
    const char *bad = NULL;
    uint64_t bad_seq = 0;
    for (size_t i = 0; i < nrows && !bad; i++) {
        struct rd seg = {NULL, NULL, NULL};
        uint32_t n;
        if (!row_segment(&rows[i], e->id % WINDOW, &seg, &n)) {
            bad = seg.bad;
            bad_seq = rows[i].seq;
            continue;
        }
        uint64_t seq = 0, ts = 0;
        for (uint32_t j = 0; j < n && !seg.bad; j++) {
            uint64_t ds = get_varint(&seg, "point seq");
            int64_t dt = unzigzag(get_varint(&seg, "point time"));
            if (!j && ds > rows[i].seq)
                rd_fail(&seg, "point seq");
            if (j && (!ds || seq + ds < seq))
                rd_fail(&seg, "point seq");
            seq = j ? seq + ds : rows[i].seq - ds;
            ts = (j ? ts : r->start_ns) + (uint64_t)dt;
            if (seg.bad || (any && seq <= last) || seq > rows[i].seq) {
                rd_fail(&seg, "point seq");
                break;
            }
            struct store_point p = {.name = name, .seq = seq, .timestamp_ns = ts};
            if (!rd_point(&seg, &c, &p))
                break;
            if (p.is_series != (e->cls == CLASS_SERIES)) {
                rd_fail(&seg, "point kind");
                break;
            }
            any = true;
            last = seq;
            int stop = fn(&p, ctx);
            if (stop)
                return stop;
        }
        if (!seg.bad && seg.p != seg.end)
            rd_fail(&seg, "chunk part length");
        if (seg.bad) {
            bad = seg.bad;
            bad_seq = rows[i].seq;
        }
    }
    uint64_t mark = nrows ? rows[nrows - 1].seq + 1 : 0;
    for (size_t i = 0; i < ntails && !bad; i++) {
        if (tails[i].seq < mark)
            continue;
        struct rd pr = {NULL, NULL, NULL};
        if (!pts_find(&tails[i].ps, e->id, &pr)) {
            if (pr.bad) {
                bad = pr.bad;
                bad_seq = tails[i].seq;
            }
            continue;
        }
        struct store_point p = {.name = name, .seq = tails[i].seq, .timestamp_ns = tails[i].ts};
        if (!rd_point(&pr, &c, &p) || p.is_series != (e->cls == CLASS_SERIES) ||
            (any && p.seq <= last)) {
            bad = pr.bad ? pr.bad : "point kind";
            bad_seq = tails[i].seq;
            break;
        }
        any = true;
        last = p.seq;
        int stop = fn(&p, ctx);
        if (stop)
            return stop;
    }
    if (bad)
        return fail(st, STORE_ERROR, "corrupt store: time series of '%s' near seq %llu: bad %s", name,
                    (unsigned long long)bad_seq, bad);
    return STORE_OK;
}

int store_metric_series(struct store *st, const char *run_id, const char *metric,
                        store_point_fn fn, void *ctx)
{
    MDB_txn *txn;
    if (rd_begin(st, &txn))
        return STORE_ERROR;
    struct store_run_info r;
    struct metric_table mt = {0};
    struct ctail *tails = NULL;
    struct crow *rows = NULL;
    size_t ntails = 0, nrows = 0, rows_cap = 0;
    uint64_t tail_from = 0;
    int status = get_run(st, txn, run_id, &r, NULL, &tail_from);
    if (!status)
        status = load_names(st, txn, r.run_seq, &mt);
    long one = -1;
    if (!status && metric) {
        one = mt_find(&mt, CLASS_SERIES, metric);
        if (one < 0)
            one = mt_find(&mt, CLASS_COUNTER, metric);
        if (one < 0)
            status = fail(st, STORE_NOT_FOUND, "run '%s' has no metric '%s'", run_id, metric);
    }
    if (!status)
        status = collect_tail(st, txn, &r, tail_from, &tails, &ntails);
    uint32_t w = UINT32_MAX;
    for (size_t i = one >= 0 ? (size_t)one : 0; !status && i < mt.n; i++) {
        const struct metric_entry *e = &mt.e[i];
        if (e->id / WINDOW != w) {
            w = e->id / WINDOW;
            status = collect_rows(st, txn, &r, w, &rows, &nrows, &rows_cap);
        }
        if (!status)
            status = emit_metric(st, &r, e, MT_NAME(&mt, e), rows, nrows, tails, ntails, fn, ctx);
        if (one >= 0)
            break;
    }
    mdb_txn_abort(txn);
    free(tails);
    free(rows);
    mt_free(&mt);
    return status;
}
