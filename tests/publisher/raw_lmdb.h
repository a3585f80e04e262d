/* raw_lmdb.h: a store's tables read and written with LMDB directly, as a
 * damaged or foreign file would hold them (test_store, test_store_hints). */
#ifndef OBSD_TESTS_PUBLISHER_RAW_LMDB_H
#define OBSD_TESTS_PUBLISHER_RAW_LMDB_H

#include <lmdb.h>
#include <stddef.h>
#include <stdint.h>

/* A read transaction with a cursor on table db of the store in dir;
 * raw_end closes it. */
struct raw {
    MDB_env *env;
    MDB_txn *txn;
    MDB_cursor *cur;
};
struct raw raw_begin(const char *dir, const char *db);
void raw_end(struct raw *r);

/* Puts val under key in table db of the store in dir (val NULL: deletes the key). */
void raw_put(const char *dir, const char *db, const void *key, size_t klen, const void *val, size_t vlen);

/* Copies at most cap bytes of the value under key; returns how many. */
size_t raw_get(const char *dir, const char *db, const void *key, size_t klen, void *out, size_t cap);

/* The key of the last row of a table; returns its length. */
size_t raw_last_key(const char *dir, const char *db, uint8_t *key, size_t cap);

#endif
