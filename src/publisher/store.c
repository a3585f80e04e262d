/*
 * store.c: the LMDB store (store.h). The key layout and the value encodings
 * are specified in man/obsd-store.5; keep the two in step and bump
 * OBSD_STORE_SCHEMA_VERSION when either changes incompatibly.
 *
 * Writer: one write transaction per persist. The handle remembers, per metric
 * of the current run, a fingerprint of what it last persisted (count, total,
 * min, max for a series; the value for a counter), so a persist writes time
 * series points and history entries only for metrics that changed.
 *
 * Readers: a short read transaction per call; every value is decoded with
 * bounds checks, because a store file is input like any other.
 */
#include "publisher/store.h"

#include <errno.h>
#include <lmdb.h>
#include <math.h>
#include <stdarg.h>
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

/* Point kinds in the series DB. */
#define POINT_INT 0
#define POINT_FLOAT 1
#define POINT_SERIES 2

/* Metric classes in the names DB. */
#define CLASS_COUNTER 'c'
#define CLASS_SERIES 's'

/* Grid indexes of the percentiles kept in time series points. */
static const int point_pct_grid[STORE_POINT_NPCT] = {0, 1, 4, 7}; /* 99.9 99 90 50 */

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
    while (v >= 0x80) {
        b->p[b->len++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    b->p[b->len++] = (uint8_t)v;
}

static uint64_t zigzag(int64_t v) { return ((uint64_t)v << 1) ^ (uint64_t)(v >> 63); }
static int64_t unzigzag(uint64_t v) { return (int64_t)(v >> 1) ^ -(int64_t)(v & 1); }

/* Doubles are stored little-endian IEEE 754. */
static void put_f64(struct buf *b, double d)
{
    if (!buf_reserve(b, 8))
        return;
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    memcpy(b->p + b->len, &d, 8);
    b->len += 8;
#else
    uint64_t u;
    memcpy(&u, &d, 8);
    for (int i = 0; i < 8; i++)
        b->p[b->len++] = (uint8_t)(u >> (8 * i));
#endif
}

/* A number: integral values (the common case: ns, counts) as a zigzag varint
 * shifted left by one, anything else as the varint 1 and an f64. */
static void put_num(struct buf *b, double d)
{
    if (d >= -4611686018427387904.0 && d <= 4611686018427387904.0 && d == (double)(int64_t)d &&
        !(d == 0 && signbit(d))) {
        put_varint(b, zigzag((int64_t)d) << 1);
        return;
    }
    put_varint(b, 1);
    put_f64(b, d);
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

static double get_f64(struct rd *r, const char *what)
{
    if (r->end - r->p < 8) {
        rd_fail(r, what);
        return 0;
    }
    double d;
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    memcpy(&d, r->p, 8);
#else
    uint64_t u = 0;
    for (int i = 0; i < 8; i++)
        u |= (uint64_t)r->p[i] << (8 * i);
    memcpy(&d, &u, 8);
#endif
    r->p += 8;
    return d;
}

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

/* ------------------------------------------------------------ name map */

/* What the store knows of one metric of a run. */
struct metric_entry {
    char *name;
    uint32_t id;
    uint8_t cls;             /* CLASS_COUNTER or CLASS_SERIES */
    bool fp_valid;
    bool in_latest;          /* has a row in the latest table */
    bool changed_now;        /* changed in the persist being prepared */
    bool point_dirty;        /* changed since its last time series point */
    bool has_point;
    uint32_t gen;            /* the persist that last saw it */
    uint32_t pos;            /* its index in that snapshot's counters or series */
    uint64_t last_point_ns;  /* timestamp of its last time series point */
    uint64_t fp[5];          /* fingerprint of the last persisted state */
};

struct metric_table {
    struct metric_entry *e;
    size_t n, cap;
    uint32_t *slots;         /* open addressing: entry index + 1, 0 = empty */
    size_t nslots;
};

static uint64_t name_hash(uint8_t cls, const char *s)
{
    uint64_t h = 1469598103934665603ULL ^ cls;
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 1099511628211ULL;
    return h ^ (h >> 29);
}

static void mt_free(struct metric_table *t)
{
    for (size_t i = 0; i < t->n; i++)
        free(t->e[i].name);
    free(t->e);
    free(t->slots);
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
        if (e->cls == cls && !strcmp(e->name, name))
            return (long)(s - 1);
    }
}

static int mt_rehash(struct metric_table *t, size_t nslots)
{
    uint32_t *slots = calloc(nslots, sizeof *slots);
    if (!slots)
        return -1;
    for (size_t k = 0; k < t->n; k++) {
        size_t i = name_hash(t->e[k].cls, t->e[k].name) & (nslots - 1);
        while (slots[i])
            i = (i + 1) & (nslots - 1);
        slots[i] = (uint32_t)(k + 1);
    }
    free(t->slots);
    t->slots = slots;
    t->nslots = nslots;
    return 0;
}

/* Appends an entry (name copied); returns its index or -1. */
static long mt_add(struct metric_table *t, uint8_t cls, const char *name, uint32_t id)
{
    if (t->n == t->cap) {
        size_t ncap = t->cap ? t->cap * 2 : 64;
        struct metric_entry *ne = realloc(t->e, ncap * sizeof *ne);
        if (!ne)
            return -1;
        t->e = ne;
        t->cap = ncap;
    }
    if ((t->n + 1) * 2 > t->nslots && mt_rehash(t, t->nslots ? t->nslots * 2 : 128))
        return -1;
    char *copy = strdup(name);
    if (!copy)
        return -1;
    t->e[t->n] = (struct metric_entry){.name = copy, .id = id, .cls = cls};
    size_t mask = t->nslots - 1;
    size_t i = name_hash(cls, name) & mask;
    while (t->slots[i])
        i = (i + 1) & mask;
    t->slots[i] = (uint32_t)(t->n + 1);
    return (long)t->n++;
}

/* ------------------------------------------------------------ the handle */

struct changed {
    uint32_t entry;          /* index into the metric table */
    uint32_t pos;            /* index into the snapshot's counters or series */
    uint64_t fp[5];
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
    size_t n_stored;         /* metric entries whose names rows are committed */
    struct metric_table mt;
    char *sections_json;     /* sections of the last persist (compact, sorted) */
    uint32_t gen;            /* persists attempted by this handle */
    uint32_t *gone;          /* entries with a latest row that the snapshot lacks */
    size_t gone_cap;
    uint32_t *hint;          /* snapshot position -> entry index, from the last persist */
    size_t hint_cap;
    struct changed *chg;
    size_t chg_cap;
    uint32_t *pts;           /* entries that get a time series point this persist */
    size_t pts_cap;
    uint64_t series_interval_ns;
    bool have_keyframe;      /* of the current run, by this handle */
    uint32_t since_keyframe; /* persists since it */
    uint64_t last_keyframe_ns;
    struct buf full, hdr, scratch;
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

    unsigned flags = MDB_NOTLS | (readonly ? MDB_RDONLY : 0) | (!readonly && !sync ? MDB_NOSYNC : 0);
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
    mt_free(&st->mt);
    free(st->sections_json);
    st->sections_json = NULL;
    st->have_run = false;
    st->have_keyframe = false;
    st->since_keyframe = 0;
    st->n_stored = 0;
    st->next_id = 0;
}

void store_close(struct store *st)
{
    if (!st)
        return;
    forget_run(st);
    free(st->hint);
    free(st->gone);
    free(st->chg);
    free(st->pts);
    free(st->full.p);
    free(st->hdr.p);
    free(st->scratch.p);
    if (st->env)
        mdb_env_close(st->env);
    free(st);
}

/* ------------------------------------------------------------ run records */

static void encode_run(struct buf *b, const struct store_run_info *r, uint32_t next_id)
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
}

static int decode_run(struct store *st, const MDB_val *v, uint64_t run_seq,
                      struct store_run_info *r, uint32_t *next_id)
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
    if (!d.bad && d.p != d.end)
        rd_fail(&d, "trailing bytes");
    if (d.bad)
        return fail(st, STORE_ERROR, "corrupt store: run record #%llu: bad %s",
                    (unsigned long long)run_seq, d.bad);
    if (next_id)
        *next_id = (uint32_t)nid;
    return STORE_OK;
}

static int get_run(struct store *st, MDB_txn *txn, const char *run_id,
                   struct store_run_info *out, uint32_t *next_id)
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
    return decode_run(st, &v, run_seq, out, next_id);
}

/* ------------------------------------------------------------ snapshots */

static void encode_counter(struct buf *b, const struct snap_counter *c)
{
    put_str(b, c->name, strlen(c->name));
    put_u8(b, c->is_float);
    if (c->is_float)
        put_f64(b, c->fvalue);
    else
        put_varint(b, zigzag(c->ivalue));
}

static void encode_series(struct buf *b, const struct snap_series *sr)
{
    bool contiguous = true;
    for (size_t i = 1; i < sr->n_buckets; i++)
        if (memcmp(&sr->buckets[i].lo, &sr->buckets[i - 1].hi, sizeof(double))) {
            contiguous = false;
            break;
        }
    put_str(b, sr->name, strlen(sr->name));
    put_u8(b, (uint8_t)(sr->exact | contiguous << 1));
    put_varint(b, sr->count);
    if (!buf_reserve(b, 9 * (4 + OBSD_N_PERCENTILES) + 8 * 2 * sr->n_buckets + 10 * (sr->n_buckets + 1)))
        return;
    put_num(b, sr->total);
    put_num(b, sr->min);
    put_num(b, sr->max);
    put_num(b, sr->sum_sq);
    for (int i = 0; i < OBSD_N_PERCENTILES; i++)
        put_num(b, sr->percentiles[i]);
    put_varint(b, sr->n_buckets);
    for (size_t i = 0; i < sr->n_buckets; i++) {
        if (!contiguous || i == 0)
            put_f64(b, sr->buckets[i].lo);
        put_f64(b, sr->buckets[i].hi);
    }
    for (size_t i = 0; i < sr->n_buckets; i++)
        put_varint(b, sr->buckets[i].count);
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

static bool decode_series(struct rd *d, struct snap_series *sr)
{
    memset(sr, 0, sizeof *sr);
    sr->name = get_str(d, "series name", NULL, 0);
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

/* ------------------------------------------------------------ keys and points */

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

static MDB_val series_key(uint8_t kb[20], uint64_t run_seq, uint32_t id, uint64_t seq)
{
    be64(kb, run_seq);
    be32(kb + 8, id);
    be64(kb + 12, seq);
    return (MDB_val){20, kb};
}

static void encode_counter_point(struct buf *b, const struct snap_counter *c, int64_t dts)
{
    put_u8(b, VALUE_FORMAT);
    put_u8(b, c->is_float ? POINT_FLOAT : POINT_INT);
    put_varint(b, zigzag(dts));
    if (c->is_float)
        put_f64(b, c->fvalue);
    else
        put_varint(b, zigzag(c->ivalue));
}

static void encode_series_point(struct buf *b, const struct snap_series *sr, int64_t dts)
{
    put_u8(b, VALUE_FORMAT);
    put_u8(b, POINT_SERIES);
    put_varint(b, zigzag(dts));
    put_u8(b, sr->exact);
    put_varint(b, sr->count);
    put_num(b, sr->total);
    put_num(b, sr->min);
    put_num(b, sr->max);
    for (int i = 0; i < STORE_POINT_NPCT; i++)
        put_num(b, sr->percentiles[point_pct_grid[i]]);
}

static bool decode_point(const MDB_val *v, uint64_t start_ns, struct store_point *p)
{
    struct rd d = {v->mv_data, (const uint8_t *)v->mv_data + v->mv_size, NULL};
    if (get_u8(&d, "format") != VALUE_FORMAT)
        return false;
    uint8_t kind = get_u8(&d, "kind");
    p->timestamp_ns = start_ns + (uint64_t)unzigzag(get_varint(&d, "timestamp"));
    p->is_series = kind == POINT_SERIES;
    if (kind == POINT_INT) {
        p->ivalue = unzigzag(get_varint(&d, "value"));
        p->fvalue = (double)p->ivalue;
    } else if (kind == POINT_FLOAT) {
        p->is_float = true;
        p->fvalue = get_f64(&d, "value");
    } else if (kind == POINT_SERIES) {
        uint8_t ex = get_u8(&d, "exact");
        p->exact = ex == 1;
        if (ex > 1)
            rd_fail(&d, "exact");
        p->count = get_varint(&d, "count");
        p->total = get_num(&d, "total");
        p->min = get_num(&d, "min");
        p->max = get_num(&d, "max");
        for (int i = 0; i < STORE_POINT_NPCT; i++)
            p->pct[i] = get_num(&d, "percentile");
    } else {
        return false;
    }
    return !d.bad && d.p == d.end;
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
     * exact flag changes when final statistics replace live ones. */
    fp[0] = sr->count;
    memcpy(&fp[1], &sr->total, 8);
    memcpy(&fp[2], &sr->min, 8);
    memcpy(&fp[3], &sr->max, 8);
    fp[4] = sr->exact;
}

/* Loads the metric names of run_seq into mt (entries indexed by insertion,
 * not by id). */
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
            status = fail(st, STORE_ERROR, "out of memory");
            break;
        }
    }
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
    int status = get_run(st, txn, run_id, &r, &next_id);
    if (status == STORE_OK) {
        /* Resuming (a restarted collector): the names are known, the
         * fingerprints are not, so the first persist writes every metric. */
        status = load_names(st, txn, r.run_seq, &st->mt);
        mdb_txn_abort(txn);
        if (status)
            return status;
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
    encode_run(&b, &r, 0);
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

/* Finds or creates the entry of one snapshot metric; the position hint makes
 * the common case (same metrics in the same order as last time) one strcmp. */
static long resolve(struct store *st, size_t pos, uint8_t cls, const char *name)
{
    if (pos < st->hint_cap) {
        uint32_t h = st->hint[pos];
        if (h < st->mt.n && st->mt.e[h].cls == cls && !strcmp(st->mt.e[h].name, name))
            return h;
    }
    long e = mt_find(&st->mt, cls, name);
    if (e < 0) {
        if (st->next_id == UINT32_MAX)
            return -1;
        e = mt_add(&st->mt, cls, name, st->next_id);
        if (e >= 0)
            st->next_id++;
    }
    if (e >= 0 && pos < st->hint_cap)
        st->hint[pos] = (uint32_t)e;
    return e;
}

static MDB_val latest_metric_key(uint8_t kb[12], uint64_t run_seq, uint32_t id)
{
    be64(kb, run_seq);
    be32(kb + 8, id);
    return (MDB_val){12, kb};
}

/* One row of the latest table: the metric's class, then its full encoding. */
static void encode_latest_metric(struct buf *b, const struct snapshot *snap, uint8_t cls, uint32_t pos)
{
    put_u8(b, VALUE_FORMAT);
    put_u8(b, cls);
    if (cls == CLASS_COUNTER)
        encode_counter(b, &snap->counters[pos]);
    else
        encode_series(b, &snap->series[pos]);
}

/* One attempt at the write transaction of a persist. Returns an LMDB code. */
static int persist_txn(struct store *st, const struct snapshot *snap, bool final, bool keyframe,
                       size_t n_changed, size_t n_points, size_t n_gone, bool sections_changed,
                       const char *sections, const struct store_run_info *nr)
{
    MDB_txn *txn;
    MDB_cursor *cur = NULL, *lcur = NULL;
    int rc = mdb_txn_begin(st->env, NULL, 0, &txn);
    if (rc)
        return rc;
    uint8_t kb[24];
    MDB_val k, v;
    struct buf *sb = &st->scratch;

    /* names of metrics first seen since the last commit */
    for (size_t i = st->n_stored; i < st->mt.n && !rc; i++) {
        const struct metric_entry *e = &st->mt.e[i];
        size_t nl = strlen(e->name);
        uint8_t hdr[10];
        be64(hdr, nr->run_seq);
        hdr[8] = 'n';
        hdr[9] = e->cls;
        sb->len = 0;
        put_bytes(sb, hdr, 10);
        put_bytes(sb, e->name, nl);
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
        put_bytes(sb, e->name, nl);
        k = (MDB_val){13, ik};
        v = (MDB_val){sb->len, sb->p};
        rc = sb->oom ? ENOMEM : mdb_put(txn, st->names, &k, &v, 0);
    }

    /* time series points of the metrics that are due one */
    int64_t dts = (int64_t)(snap->timestamp_ns - nr->start_ns);
    if (!rc)
        rc = mdb_cursor_open(txn, st->series, &cur);
    if (!rc)
        rc = mdb_cursor_open(txn, st->latest, &lcur);
    for (size_t i = 0; i < n_points && !rc; i++) {
        const struct metric_entry *e = &st->mt.e[st->pts[i]];
        sb->len = 0;
        if (e->cls == CLASS_COUNTER)
            encode_counter_point(sb, &snap->counters[e->pos], dts);
        else
            encode_series_point(sb, &snap->series[e->pos], dts);
        k = series_key(kb, nr->run_seq, e->id, snap->seq);
        v = (MDB_val){sb->len, sb->p};
        rc = sb->oom ? ENOMEM : mdb_cursor_put(cur, &k, &v, 0);
    }
    /* the latest rows of the metrics that changed */
    for (size_t i = 0; i < n_changed && !rc; i++) {
        const struct changed *c = &st->chg[i];
        const struct metric_entry *e = &st->mt.e[c->entry];
        sb->len = 0;
        encode_latest_metric(sb, snap, e->cls, c->pos);
        k = latest_metric_key(kb, nr->run_seq, e->id);
        v = (MDB_val){sb->len, sb->p};
        rc = sb->oom ? ENOMEM : mdb_cursor_put(lcur, &k, &v, 0);
    }
    /* metrics the snapshot no longer has leave the latest snapshot */
    for (size_t i = 0; i < n_gone && !rc; i++) {
        k = latest_metric_key(kb, nr->run_seq, st->mt.e[st->gone[i]].id);
        rc = mdb_del(txn, st->latest, &k, NULL);
        if (rc == MDB_NOTFOUND)
            rc = 0;
    }
    if (cur)
        mdb_cursor_close(cur);
    if (lcur)
        mdb_cursor_close(lcur);

    /* history: a keyframe holds the full snapshot, a delta the ids of the
     * changed metrics (their values are in the series table) */
    if (!rc) {
        sb->len = 0;
        put_u8(sb, VALUE_FORMAT);
        put_u8(sb, keyframe ? HIST_KEYFRAME : HIST_DELTA);
        if (!keyframe) {
            put_varint(sb, snap->timestamp_ns);
            put_u8(sb, (uint8_t)snap->state);
            put_varint(sb, snap->n_pending_tasks);
            put_varint(sb, n_points);
            for (size_t i = 0; i < n_points; i++)
                put_varint(sb, st->mt.e[st->pts[i]].id);
            put_u8(sb, sections_changed);
            if (sections_changed)
                put_str(sb, sections, strlen(sections));
        }
        k = history_key(kb, nr->run_seq, snap->seq);
        if (sb->oom)
            rc = ENOMEM;
        else if (keyframe) {
            /* the 2-byte prefix, then the full snapshot written in place */
            v = (MDB_val){2 + st->full.len, NULL};
            rc = mdb_put(txn, st->history, &k, &v, MDB_RESERVE);
            if (!rc) {
                memcpy(v.mv_data, sb->p, 2);
                memcpy((uint8_t *)v.mv_data + 2, st->full.p, st->full.len);
            }
        } else {
            v = (MDB_val){sb->len, sb->p};
            rc = mdb_put(txn, st->history, &k, &v, 0);
        }
    }

    /* latest header, final, run record */
    k = run_key(kb, nr->run_seq);
    v = (MDB_val){st->hdr.len, st->hdr.p};
    if (!rc)
        rc = mdb_put(txn, st->latest, &k, &v, 0);
    v = (MDB_val){st->full.len, st->full.p};
    if (!rc && final)
        rc = mdb_put(txn, st->final, &k, &v, MDB_NOOVERWRITE);
    if (!rc) {
        sb->len = 0;
        encode_run(sb, nr, st->next_id);
        v = (MDB_val){sb->len, sb->p};
        rc = sb->oom ? ENOMEM : mdb_put(txn, st->runs, &k, &v, 0);
    }
    if (rc) {
        mdb_txn_abort(txn);
        return rc;
    }
    return mdb_txn_commit(txn);
}

/* Resolves a snapshot metric, notes whether it changed since the last persist. */
static int note_metric(struct store *st, size_t pos, size_t idx, uint8_t cls, const char *name,
                       const uint64_t fp[5], size_t *nc)
{
    if (strlen(name) > MAX_NAME)
        return fail(st, STORE_ERROR, "run '%s': metric name '%.40s...' is %zu bytes, more than %d",
                    st->run.id, name, strlen(name), MAX_NAME);
    long e = resolve(st, pos, cls, name);
    if (e < 0)
        return fail(st, STORE_ERROR, "out of memory");
    struct metric_entry *me = &st->mt.e[e];
    me->gen = st->gen;
    me->pos = (uint32_t)idx;
    if (!me->fp_valid || memcmp(me->fp, fp, sizeof me->fp)) {
        me->changed_now = true;
        struct changed *c = &st->chg[(*nc)++];
        c->entry = (uint32_t)e;
        c->pos = (uint32_t)idx;
        memcpy(c->fp, fp, sizeof c->fp);
    }
    return 0;
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

    size_t nm = snap->n_counters + snap->n_series;
    if (!grow_array((void **)&st->chg, &st->chg_cap, nm, sizeof *st->chg))
        return fail(st, STORE_ERROR, "out of memory");
    if (st->hint_cap < nm) {
        size_t old = st->hint_cap;
        if (!grow_array((void **)&st->hint, &st->hint_cap, nm, sizeof *st->hint))
            return fail(st, STORE_ERROR, "out of memory");
        memset(st->hint + old, 0xff, (st->hint_cap - old) * sizeof *st->hint);
    }

    /* which metrics changed since the last persist, which are gone */
    st->gen++;
    size_t nc = 0;
    uint64_t fp[5];
    for (size_t i = 0; i < snap->n_counters; i++) {
        fingerprint_counter(&snap->counters[i], fp);
        if (note_metric(st, i, i, CLASS_COUNTER, snap->counters[i].name, fp, &nc))
            return STORE_ERROR;
    }
    for (size_t i = 0; i < snap->n_series; i++) {
        fingerprint_series(&snap->series[i], fp);
        if (note_metric(st, snap->n_counters + i, i, CLASS_SERIES, snap->series[i].name, fp, &nc))
            return STORE_ERROR;
    }
    /* time series points: a metric changed since its last point gets one when
     * series_interval has passed since that point, and at the final */
    if (!grow_array((void **)&st->pts, &st->pts_cap, st->mt.n, sizeof *st->pts))
        return fail(st, STORE_ERROR, "out of memory");
    size_t npts = 0;
    for (size_t i = 0; i < st->mt.n; i++) {
        struct metric_entry *e = &st->mt.e[i];
        if (e->gen != st->gen)
            continue;
        bool dirty = e->point_dirty || e->changed_now;
        e->changed_now = false;
        if (dirty && (final || !e->has_point ||
                      snap->timestamp_ns - e->last_point_ns >= st->series_interval_ns ||
                      snap->timestamp_ns < e->last_point_ns))
            st->pts[npts++] = (uint32_t)i;
    }
    size_t ngone = 0;
    for (size_t i = 0; i < st->mt.n; i++) {
        if (!st->mt.e[i].in_latest || st->mt.e[i].gen == st->gen)
            continue;
        if (ngone == st->gone_cap &&
            !grow_array((void **)&st->gone, &st->gone_cap, ngone ? ngone * 2 : 16, sizeof *st->gone))
            return fail(st, STORE_ERROR, "out of memory");
        st->gone[ngone++] = (uint32_t)i;
    }

    char *sections = NULL;
    if (json_object_size(snap->sections)) {
        sections = json_dumps(snap->sections, JSON_COMPACT | JSON_SORT_KEYS);
        if (!sections)
            return fail(st, STORE_ERROR, "run '%s': sections cannot be serialized", st->run.id);
    }
    bool sections_changed = (sections == NULL) != (st->sections_json == NULL) ||
                            (sections && strcmp(sections, st->sections_json));
    /* a keyframe every full_every persists, but no closer than full_every
     * series intervals, so persisting 4 times a second does not quadruple them */
    bool keyframe = final || !st->have_keyframe || (st->since_keyframe + 1 >= st->full_every &&
                    snap->timestamp_ns - st->last_keyframe_ns >= (uint64_t)st->full_every * st->series_interval_ns) ||
                    snap->timestamp_ns < st->last_keyframe_ns;

    st->hdr.len = 0;
    encode_snapshot(&st->hdr, snap, sections, false);
    st->full.len = 0;
    if (keyframe)
        encode_snapshot(&st->full, snap, sections, true);
    if (st->full.oom || st->hdr.oom) {
        free(sections);
        st->full.oom = st->hdr.oom = false;
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
        rc = persist_txn(st, snap, final, keyframe, nc, npts, ngone, sections_changed,
                         sections ? sections : "", &nr);
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
        free(sections);
        if (rc == MDB_KEYEXIST)
            return fail(st, STORE_EXISTS, "run '%s' already has its final snapshot", st->run.id);
        return fail(st, STORE_ERROR, "%s: cannot persist seq %llu of run '%s': %s", st->dir,
                    (unsigned long long)snap->seq, st->run.id, mdb_strerror(rc));
    }

    /* committed: remember what is now in the store */
    for (size_t i = 0; i < nc; i++) {
        struct metric_entry *e = &st->mt.e[st->chg[i].entry];
        memcpy(e->fp, st->chg[i].fp, sizeof e->fp);
        e->fp_valid = true;
        e->in_latest = true;
        e->point_dirty = true;
    }
    for (size_t i = 0; i < npts; i++) {
        struct metric_entry *e = &st->mt.e[st->pts[i]];
        e->point_dirty = false;
        e->has_point = true;
        e->last_point_ns = snap->timestamp_ns;
    }
    for (size_t i = 0; i < ngone; i++) {
        st->mt.e[st->gone[i]].in_latest = false;
        st->mt.e[st->gone[i]].fp_valid = false;
    }
    if (keyframe) {
        st->have_keyframe = true;
        st->since_keyframe = 0;
        st->last_keyframe_ns = snap->timestamp_ns;
    } else {
        st->since_keyframe++;
    }
    st->n_stored = st->mt.n;
    st->run = nr;
    free(st->sections_json);
    st->sections_json = sections;
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
        if ((status = decode_run(st, &v, rd_be64(k.mv_data), &(*runs)[*n], NULL)))
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
    int status = get_run(st, txn, run_id, out, NULL);
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
        status = decode_run(st, &v, rd_be64(k.mv_data), out, NULL);
    mdb_txn_abort(txn);
    return status;
}

/* Appends the metric rows of the latest table that follow the header. */
static int read_latest_metrics(struct store *st, MDB_txn *txn, const struct store_run_info *r,
                               struct snapshot *s)
{
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, st->latest, &cur);
    if (rc)
        return fail(st, STORE_ERROR, "%s: %s", st->dir, mdb_strerror(rc));
    uint8_t kb[8];
    MDB_val k = run_key(kb, r->run_seq), v;
    int status = STORE_OK;
    rc = mdb_cursor_get(cur, &k, &v, MDB_SET_KEY);
    for (rc = rc ? rc : mdb_cursor_get(cur, &k, &v, MDB_NEXT); !rc;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (k.mv_size != 12 || memcmp(k.mv_data, kb, 8))
            break;
        struct rd d = {v.mv_data, (const uint8_t *)v.mv_data + v.mv_size, NULL};
        if (get_u8(&d, "format byte") != VALUE_FORMAT)
            rd_fail(&d, "format byte");
        uint8_t cls = get_u8(&d, "metric class");
        if (cls == CLASS_COUNTER && !d.bad) {
            struct snap_counter c;
            if (grow_array((void **)&s->counters, &s->cap_counters,
                           s->n_counters == s->cap_counters ? s->cap_counters * 2 + 16 : 0,
                           sizeof c) &&
                decode_counter(&d, &c))
                s->counters[s->n_counters++] = c;
            else
                rd_fail(&d, "counter");
        } else if (cls == CLASS_SERIES && !d.bad) {
            struct snap_series sr;
            if (!grow_array((void **)&s->series, &s->cap_series,
                            s->n_series == s->cap_series ? s->cap_series * 2 + 16 : 0, sizeof sr))
                rd_fail(&d, "out of memory");
            else if (decode_series(&d, &sr))
                s->series[s->n_series++] = sr;
            else {
                free(sr.name);
                free(sr.buckets);
            }
        } else {
            rd_fail(&d, "metric class");
        }
        if (!d.bad && d.p != d.end)
            rd_fail(&d, "trailing bytes");
        if (d.bad) {
            status = fail(st, STORE_ERROR, "corrupt store: latest snapshot of run '%s', metric id %u: bad %s",
                          r->id, rd_be32((const uint8_t *)k.mv_data + 8), d.bad);
            break;
        }
    }
    mdb_cursor_close(cur);
    return status;
}

static int read_full(struct store *st, MDB_dbi dbi, const char *what, const char *run_id,
                     struct snapshot **out)
{
    *out = NULL;
    MDB_txn *txn;
    if (rd_begin(st, &txn))
        return STORE_ERROR;
    struct store_run_info r;
    int status = get_run(st, txn, run_id, &r, NULL);
    if (status)
        goto done;
    uint8_t kb[8];
    MDB_val k = run_key(kb, r.run_seq), v;
    int rc = mdb_get(txn, dbi, &k, &v);
    if (rc == MDB_NOTFOUND) {
        status = fail(st, STORE_NOT_FOUND, "run '%s' has no %s snapshot%s", run_id, what,
                      dbi == st->final ? " (it has not ended, or its collector was stopped)" : "");
        goto done;
    }
    if (rc) {
        status = fail(st, STORE_ERROR, "%s: %s", st->dir, mdb_strerror(rc));
        goto done;
    }
    struct rd d = {v.mv_data, (const uint8_t *)v.mv_data + v.mv_size, NULL};
    *out = decode_snapshot(&d);
    if (!*out) {
        status = fail(st, STORE_ERROR, "corrupt store: %s snapshot of run '%s': bad %s", what,
                      run_id, d.bad);
        goto done;
    }
    if (dbi == st->latest && (status = read_latest_metrics(st, txn, &r, *out))) {
        snapshot_free(*out);
        *out = NULL;
    }
done:
    mdb_txn_abort(txn);
    return status;
}

int store_latest(struct store *st, const char *run_id, struct snapshot **out)
{
    return read_full(st, st->latest, "latest", run_id, out);
}

int store_final(struct store *st, const char *run_id, struct snapshot **out)
{
    return read_full(st, st->final, "final", run_id, out);
}

int store_list_seqs(struct store *st, const char *run_id, uint64_t **seqs, size_t *n)
{
    *seqs = NULL;
    *n = 0;
    MDB_txn *txn;
    if (rd_begin(st, &txn))
        return STORE_ERROR;
    struct store_run_info r;
    int status = get_run(st, txn, run_id, &r, NULL);
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
static int apply_point(struct snapshot *s, const struct metric_entry *e, long *pos,
                       const struct store_point *p)
{
    if (e->cls == CLASS_COUNTER) {
        if (*pos < 0) {
            if (snapshot_add_counter(s, e->name, 0))
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
        struct snap_series empty = {.name = e->name};
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
    struct rd d = {(const uint8_t *)v.mv_data + 2, (const uint8_t *)v.mv_data + v.mv_size, NULL};
    struct snapshot *s = decode_snapshot(&d);
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
    uint32_t *entry_by_id = NULL;
    uint32_t max_id = 0;
    int status = load_names(st, txn, r->run_seq, &mt);
    for (size_t i = 0; i < mt.n; i++)
        if (mt.e[i].id > max_id)
            max_id = mt.e[i].id;
    if (!status) {
        pos_by_entry = malloc((mt.n + 1) * sizeof *pos_by_entry);
        entry_by_id = malloc(((size_t)max_id + 1) * sizeof *entry_by_id);
        if (!pos_by_entry || !entry_by_id)
            status = fail(st, STORE_ERROR, "out of memory");
    }
    if (!status) {
        memset(entry_by_id, 0xff, ((size_t)max_id + 1) * sizeof *entry_by_id);
        for (size_t i = 0; i < mt.n; i++) {
            pos_by_entry[i] = -1;
            entry_by_id[mt.e[i].id] = (uint32_t)i;
        }
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
        if (get_u8(&h, "format") != VALUE_FORMAT || get_u8(&h, "kind") != HIST_DELTA) {
            status = fail(st, STORE_ERROR, "corrupt store: history entry %llu of run '%s'",
                          (unsigned long long)dseq, r->id);
            break;
        }
        s->seq = dseq;
        s->timestamp_ns = get_varint(&h, "timestamp");
        uint8_t state = get_u8(&h, "state");
        if (state > OBSD_RUN_INTERRUPTED)
            rd_fail(&h, "state");
        s->state = (enum obsd_run_state)state;
        s->n_pending_tasks = get_varint(&h, "pending tasks");
        uint64_t n = get_count(&h, 1, "changed count");
        for (uint64_t i = 0; i < n && !h.bad && !status; i++) {
            uint64_t id = get_varint(&h, "metric id");
            if (id > max_id || entry_by_id[id] == UINT32_MAX) {
                rd_fail(&h, "metric id");
                break;
            }
            uint32_t e = entry_by_id[id];
            uint8_t sk[20];
            MDB_val pk = series_key(sk, r->run_seq, (uint32_t)id, dseq), pv;
            struct store_point p = {0};
            rc = mdb_get(txn, st->series, &pk, &pv);
            if (rc || !decode_point(&pv, r->start_ns, &p) ||
                (p.is_series != (mt.e[e].cls == CLASS_SERIES)))
                status = fail(st, STORE_ERROR, "corrupt store: time series point of '%s' at seq %llu",
                              mt.e[e].name, (unsigned long long)dseq);
            else if (apply_point(s, &mt.e[e], &pos_by_entry[e], &p))
                status = fail(st, STORE_ERROR, "out of memory");
        }
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
    int status = get_run(st, txn, run_id, &r, NULL);
    if (!status)
        status = rebuild(st, txn, &r, seq, out);
    mdb_txn_abort(txn);
    return status;
}

/* Scans the series table from key prefix (run[, id]) and calls fn per point. */
static int scan_points(struct store *st, MDB_txn *txn, const struct store_run_info *r,
                       const uint8_t *prefix, size_t plen, const struct metric_table *mt,
                       const uint32_t *entry_by_id, uint32_t max_id, store_point_fn fn, void *ctx)
{
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, st->series, &cur);
    if (rc)
        return fail(st, STORE_ERROR, "%s: %s", st->dir, mdb_strerror(rc));
    MDB_val k = {plen, (void *)prefix}, v;
    int status = STORE_OK;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); !rc; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (k.mv_size != 20 || memcmp(k.mv_data, prefix, plen))
            break;
        const uint8_t *kp = k.mv_data;
        uint32_t id = rd_be32(kp + 8);
        if (id > max_id || entry_by_id[id] == UINT32_MAX) {
            status = fail(st, STORE_ERROR, "corrupt store: time series of unknown metric id %u", id);
            break;
        }
        const struct metric_entry *e = &mt->e[entry_by_id[id]];
        struct store_point p = {.name = e->name, .seq = rd_be64(kp + 12)};
        if (!decode_point(&v, r->start_ns, &p) || p.is_series != (e->cls == CLASS_SERIES)) {
            status = fail(st, STORE_ERROR, "corrupt store: time series point of '%s' at seq %llu",
                          e->name, (unsigned long long)p.seq);
            break;
        }
        int stop = fn(&p, ctx);
        if (stop) {
            status = stop;
            break;
        }
    }
    mdb_cursor_close(cur);
    return status;
}

int store_metric_series(struct store *st, const char *run_id, const char *metric,
                        store_point_fn fn, void *ctx)
{
    MDB_txn *txn;
    if (rd_begin(st, &txn))
        return STORE_ERROR;
    struct store_run_info r;
    struct metric_table mt = {0};
    uint32_t *entry_by_id = NULL, max_id = 0;
    int status = get_run(st, txn, run_id, &r, NULL);
    if (!status)
        status = load_names(st, txn, r.run_seq, &mt);
    for (size_t i = 0; !status && i < mt.n; i++)
        if (mt.e[i].id > max_id)
            max_id = mt.e[i].id;
    if (!status && !(entry_by_id = malloc(((size_t)max_id + 1) * sizeof *entry_by_id)))
        status = fail(st, STORE_ERROR, "out of memory");
    if (!status) {
        memset(entry_by_id, 0xff, ((size_t)max_id + 1) * sizeof *entry_by_id);
        for (size_t i = 0; i < mt.n; i++)
            entry_by_id[mt.e[i].id] = (uint32_t)i;
    }
    uint8_t prefix[12];
    size_t plen = 8;
    be64(prefix, r.run_seq);
    if (!status && metric) {
        long e = mt_find(&mt, CLASS_SERIES, metric);
        if (e < 0)
            e = mt_find(&mt, CLASS_COUNTER, metric);
        if (e < 0)
            status = fail(st, STORE_NOT_FOUND, "run '%s' has no metric '%s'", run_id, metric);
        else {
            be32(prefix + 8, mt.e[e].id);
            plen = 12;
        }
    }
    if (!status)
        status = scan_points(st, txn, &r, prefix, plen, &mt, entry_by_id, max_id, fn, ctx);
    mdb_txn_abort(txn);
    free(entry_by_id);
    mt_free(&mt);
    return status;
}
