/* raw_lmdb.c: see raw_lmdb.h. */
#include "raw_lmdb.h"

#include <check.h>
#include <lmdb.h>
#include <string.h>

static MDB_env *raw_env(const char *dir, unsigned flags)
{
    MDB_env *env;
    ck_assert_int_eq(mdb_env_create(&env), 0);
    mdb_env_set_maxdbs(env, 16);
    ck_assert_int_eq(mdb_env_open(env, dir, flags, 0640), 0);
    return env;
}

void raw_put(const char *dir, const char *db, const void *key, size_t klen, const void *val, size_t vlen)
{
    MDB_env *env = raw_env(dir, 0);
    MDB_txn *txn;
    MDB_dbi dbi;
    ck_assert_int_eq(mdb_txn_begin(env, NULL, 0, &txn), 0);
    ck_assert_int_eq(mdb_dbi_open(txn, db, 0, &dbi), 0);
    MDB_val k = {klen, (void *)key}, v = {vlen, (void *)val};
    ck_assert_int_eq(val ? mdb_put(txn, dbi, &k, &v, 0) : mdb_del(txn, dbi, &k, NULL), 0);
    ck_assert_int_eq(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
}

size_t raw_get(const char *dir, const char *db, const void *key, size_t klen, void *out, size_t cap)
{
    MDB_env *env = raw_env(dir, MDB_RDONLY);
    MDB_txn *txn;
    MDB_dbi dbi;
    ck_assert_int_eq(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), 0);
    ck_assert_int_eq(mdb_dbi_open(txn, db, 0, &dbi), 0);
    MDB_val k = {klen, (void *)key}, v;
    ck_assert_int_eq(mdb_get(txn, dbi, &k, &v), 0);
    size_t n = v.mv_size < cap ? v.mv_size : cap;
    memcpy(out, v.mv_data, n);
    mdb_txn_abort(txn);
    mdb_env_close(env);
    return n;
}

struct raw raw_begin(const char *dir, const char *db)
{
    struct raw r = {.env = raw_env(dir, MDB_RDONLY)};
    MDB_dbi dbi;
    ck_assert_int_eq(mdb_txn_begin(r.env, NULL, MDB_RDONLY, &r.txn), 0);
    ck_assert_int_eq(mdb_dbi_open(r.txn, db, 0, &dbi), 0);
    ck_assert_int_eq(mdb_cursor_open(r.txn, dbi, &r.cur), 0);
    return r;
}

void raw_end(struct raw *r)
{
    mdb_cursor_close(r->cur);
    mdb_txn_abort(r->txn);
    mdb_env_close(r->env);
}

size_t raw_last_key(const char *dir, const char *db, uint8_t *key, size_t cap)
{
    struct raw r = raw_begin(dir, db);
    MDB_val k, v;
    ck_assert_int_eq(mdb_cursor_get(r.cur, &k, &v, MDB_LAST), 0);
    ck_assert_uint_le(k.mv_size, cap);
    memcpy(key, k.mv_data, k.mv_size);
    raw_end(&r);
    return k.mv_size;
}
