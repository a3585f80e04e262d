/* engine_test.h: helpers shared by the engine suites. */
#ifndef OBSD_TESTS_ENGINE_TEST_H
#define OBSD_TESTS_ENGINE_TEST_H

#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "obsd/obsd.h"
#include "obsd/obsd_collector.h"
#include "publisher/snapshot.h"
#include "publisher/store.h"

/* A fresh store dir and a segment name unique to this process and call. */
struct eng_fixture {
    char dir[128];
    char name[64];
    struct obsd_collector_config cfg;
};

static inline void eng_fixture_init(struct eng_fixture *f, const char *tag)
{
    static int counter;
    snprintf(f->dir, sizeof f->dir, "/tmp/obsd-engtest-%d-%d-XXXXXX", (int)getpid(), counter);
    ck_assert_ptr_nonnull(mkdtemp(f->dir));
    snprintf(f->name, sizeof f->name, "eng%s%d-%d", tag, (int)getpid(), counter++);
    obsd_collector_config_defaults(&f->cfg);
    f->cfg.name = f->name;
    f->cfg.store_dir = f->dir;
    f->cfg.ring_size = 64u << 10;
    f->cfg.max_producers = 8;
    f->cfg.sched_workers = 4;
    f->cfg.store_sync = false;
    f->cfg.store_map_size = 64u << 20;
    f->cfg.publish_interval_ms = 20;
    f->cfg.log_level = 1;
}

static inline void eng_rm_rf(const char *dir)
{
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d))) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
                continue;
            char p[512];
            snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
            unlink(p);
        }
        closedir(d);
    }
    rmdir(dir);
}

static inline void eng_fixture_done(struct eng_fixture *f)
{
    char p[128];
    snprintf(p, sizeof p, "/dev/shm/obsd.%s", f->name);
    unlink(p);
    eng_rm_rf(f->dir);
}

struct eng_runner {
    pthread_t th;
    struct obsd_collector *c;
    int rc;
};

static inline void *eng_run_thread(void *arg)
{
    struct eng_runner *r = arg;
    r->rc = obsd_collector_run(r->c);
    return NULL;
}

static inline void eng_start(struct eng_runner *r, struct obsd_collector *c)
{
    r->c = c;
    r->rc = -2;
    ck_assert_int_eq(pthread_create(&r->th, NULL, eng_run_thread, r), 0);
}

static inline void eng_join(struct eng_runner *r)
{
    pthread_join(r->th, NULL);
    ck_assert_int_eq(r->rc, 0);
}

/* Waits for a child and checks it exited 0. */
static inline void eng_wait_child(pid_t pid)
{
    int st = 0;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child failed (status %d)", st);
}

static inline struct store *eng_store_ro(const char *dir)
{
    char err[256];
    struct store *st = store_open(dir, 0, false, true, err, sizeof err);
    ck_assert_msg(st != NULL, "store_open: %s", err);
    return st;
}

static inline int64_t eng_counter(const struct snapshot *s, const char *name)
{
    const struct snap_counter *c = snapshot_find_counter(s, name);
    ck_assert_msg(c != NULL, "no counter %s", name);
    return c->ivalue;
}

#endif
