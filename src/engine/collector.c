/*
 * collector.c: the collector (obsd_collector.h): one io_uring loop that
 * sleeps on the segment's doorbell futex, ticks the publisher, watches
 * signals, producer pidfds and the control socket; drains the rings into the
 * metric table and the modules; runs the run state machine; builds, persists
 * and pushes snapshots.
 *
 * Everything runs on the thread that calls obsd_collector_run(), except the
 * small watcher thread that notices SIGTERM/stop while a module drains.
 */
#include "obsd/obsd_collector.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <inttypes.h>
#include <liburing.h>
#include <linux/futex.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "obsd/obsd.h"
#include "engine/control.h"
#include "engine/engine_internal.h"
#include "engine/metrics.h"
#include "publisher/snapshot.h"
#include "publisher/store.h"
#include "shm/shm.h"
#include "shm/wire.h"

/* Debian 12's liburing 2.3 and linux-libc-dev 6.1 predate the futex ops. */
#define OBSD_IORING_OP_FUTEX_WAIT 51
#define OBSD_FUTEX2_SIZE_U32 0x02

#define DRAIN_BATCH 65536          /* records per shm_drain call */
#define FALLBACK_POLL_NS 2000000   /* 2 ms when the kernel has no futex wait */
#define MAX_CLIENTS 256
#define MAX_PIDS 4096

enum ud_kind {
    UD_IGNORE = 0,
    UD_FUTEX,
    UD_TICK,
    UD_SIGNAL,
    UD_STOP,
    UD_ACCEPT,
    UD_PIDFD,
    UD_RECV,
    UD_SEND,
    UD_FALLBACK,
};
#define UD(kind, idx, gen) (((uint64_t)(kind) << 56) | ((uint64_t)((gen) & 0xffffffu) << 32) | (uint32_t)(idx))
#define UD_KIND(ud) ((enum ud_kind)((ud) >> 56))
#define UD_GEN(ud) ((uint32_t)(((ud) >> 32) & 0xffffffu))
#define UD_IDX(ud) ((uint32_t)(ud))

enum client_mode { CL_COMMAND, CL_WATCH, CL_CLOSING };

struct client {
    int fd;
    uint32_t gen;
    enum client_mode mode;
    char in[CONTROL_MAX_LINE + 1];
    size_t n_in;
    struct __kernel_timespec idle;
    /* Output, latest wins: the line being sent (from sent_off on), a run's
     * final line that a newer one came after (held: sent next), and the
     * newest line, which a newer one replaces. */
    struct control_line *sending, *held, *next;
    size_t sent_off;
    bool recv_inflight, send_inflight, close_after_send;
};

struct pidwatch {
    pid_t pid;
    int fd;         /* -1: free entry */
    uint32_t gen;
};

struct mod {
    const struct module_ops *ops;
    void *state;
};

struct obsd_collector {
    struct obsd_collector_config cfg;
    char *name, *store_dir, *socket_path, *cpus, *shm_group, *tokenizer;
    cpu_set_t cpuset;
    bool have_cpuset;

    struct shm_segment *seg;
    dev_t seg_dev;
    ino_t seg_ino;
    struct store *store;
    struct series_env senv;
    struct metric_table metrics;
    struct metrics_batch batch;
    struct module_env menv;
    struct mod *mods;
    size_t n_mods;

    struct io_uring ring;
    bool ring_ok;
    bool futex_ok;
    bool futex_armed, fallback_armed, tick_armed, signal_armed, stop_armed, accept_armed;
    int sigfd, stopfd, listen_fd;
    struct __kernel_timespec tick_ts, fallback_ts;
    uint64_t next_tick_ns;
    uint64_t stop_buf, sig_dummy;

    struct client *clients[MAX_CLIENTS];
    uint32_t client_gen;
    struct pidwatch *pids;
    size_t n_pids;

    /* run */
    bool run_open;              /* a run id exists and is persisted */
    bool had_run;               /* a run of this segment was finalized: no implicit open */
    bool pre_run_records;       /* records aggregated while no run is open */
    bool end_requested;         /* ENDED seen: drain modules, then final */
    bool interrupt_latched;     /* INTERRUPTED session event */
    bool restored;              /* this run was continued after a collector restart */
    uint64_t ring_bytes;        /* per ring: an early checkpoint past half of it */
    uint64_t last_commit_ns;    /* CLOCK_MONOTONIC of the last successful persist */
    uint64_t last_publish_ns;   /* what the last publish() took */
    enum obsd_run_state state;
    char run_id[64];
    uint64_t seq;
    uint64_t dropped_base;      /* shm dropped total when the run's counting began */
    uint64_t rejected_base;     /* shm rejected when the run's counting began */
    int64_t rejected_carry;     /* rejections of the run before a restart */
    uint64_t engine_rejected;   /* engine-level rejections in this run */
    uint64_t between_runs;
    uint64_t final_dropped;     /* of the last ended run, for status until the next run */
    int64_t final_rejected;      /* records after a final, before the next run opened */
    size_t n_engine_counters, n_engine_series;

    /* The snapshot, kept from one publish to the next and brought up to date
     * in place (metrics_snapshot): between publishes, the latest published. */
    struct snapshot *snap;
    struct control_line *last_line; /* its watch line, rendered once someone watches */
    struct watch_render *watch;     /* renders it, reusing what did not change */

    _Atomic bool stop_requested;
    _Atomic bool drain_cancel;
    _Atomic bool signal_during_drain;
    bool start_after_end;       /* STARTED came in the same batch as ENDED */
    uint64_t start_after_end_ts;
    bool quit;
    bool interrupted_by_signal;
};

/* ---- small helpers ---------------------------------------------------- */

static uint64_t now_ns(clockid_t clk)
{
    struct timespec ts;
    clock_gettime(clk, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

int control_default_socket_path(char *out, size_t outlen, const char *store_dir, const char *name)
{
    return snprintf(out, outlen, "%s/%s.sock", store_dir, name);
}

void obsd_collector_config_defaults(struct obsd_collector_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->name = "obsd";
    cfg->max_producers = 64;
    cfg->ring_size = 1u << 20;
    cfg->ring_full_block = false;
    cfg->ring_block_timeout_ms = 10;
    cfg->max_text_bytes = 16u << 20;
    cfg->shm_group = NULL;
    cfg->sched_workers = 256;
    cfg->max_keys = 16384;
    cfg->publish_interval_ms = 250;
    cfg->cpus = NULL;
    cfg->socket_path = NULL;
    cfg->raw_values_memory = 64u << 20;
    cfg->histogram_buckets = 30;
    cfg->exit_after_run = false;
    cfg->store_dir = "/var/lib/obsd";
    cfg->store_map_size = 1ull << 30;
    cfg->store_sync = true;
    cfg->history_full_every = 40;
    cfg->tokenizer = NULL;
    cfg->tokenizer_workers = 2;
    cfg->drain_timeout_s = 0;
    cfg->token_queue_memory = 256u << 20;
    cfg->log_level = 2;
}

static struct io_uring_sqe *get_sqe(struct obsd_collector *c)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&c->ring);
    if (!sqe) {
        io_uring_submit(&c->ring);
        sqe = io_uring_get_sqe(&c->ring);
    }
    return sqe;
}

/* ---- records ---------------------------------------------------------- */

static const char *key_name(void *ctx, uint32_t key)
{
    struct obsd_collector *c = ctx;
    return shm_key_name(c->seg, key);
}

static void open_run(struct obsd_collector *c);
static bool apply_session(struct obsd_collector *c, uint32_t event, uint64_t ts);

static struct mod *module_for(struct obsd_collector *c, uint8_t type)
{
    for (size_t i = 0; i < c->n_mods; i++) {
        const struct module_ops *o = c->mods[i].ops;
        if ((o->type_first || o->type_last) && type >= o->type_first && type <= o->type_last)
            return &c->mods[i];
    }
    return NULL;
}

static void reject(struct obsd_collector *c)
{
    c->engine_rejected++;
}

/* The callback of shm_drain: one validated, reassembled record. */
static void on_record(void *ctx, const struct shm_producer *from, const struct shm_record *rec)
{
    struct obsd_collector *c = ctx;

    if (rec->type == OBSD_REC_SESSION) {
        metrics_batch_flush(&c->metrics, &c->batch, key_name, c);
        struct obsd_pl_session pl;
        if (rec->len != sizeof pl || rec->key < OBSD_SESSION_STARTED ||
            rec->key > OBSD_SESSION_INTERRUPTED) {
            reject(c);
            return;
        }
        memcpy(&pl, rec->payload, sizeof pl);
        /* A run that starts before the previous one is final: what this
         * producer wrote after STARTED is the next run's, so its ring waits
         * (end_of_run resumes it once the next run is open). */
        if (apply_session(c, rec->key, pl.ts_ns) && from)
            shm_drain_hold(c->seg, from->slot);
        return;
    }
    if (!c->run_open) {
        if (c->had_run)
            c->between_runs++;
        c->pre_run_records = true;
    }
    if (metrics_batch_record(&c->metrics, &c->batch, rec, key_name, c) == 0)
        return;
    metrics_batch_flush(&c->metrics, &c->batch, key_name, c);   /* keep record order */
    int rc = metrics_core_record(&c->metrics, rec, key_name, c);
    if (rc == 0)
        return;
    if (rc == -1) {
        reject(c);
        return;
    }
    struct mod *md = module_for(c, rec->type);
    if (!md || !md->ops->on_record || md->ops->on_record(md->state, from, rec) < 0)
        reject(c);
}

/* Drains until the rings are empty (or at most max records when max > 0). */
static size_t drain_rings(struct obsd_collector *c, size_t max)
{
    size_t total = 0;
    for (;;) {
        size_t n = shm_drain(c->seg, on_record, c, DRAIN_BATCH);
        metrics_batch_flush(&c->metrics, &c->batch, key_name, c);
        total += n;
        if (n < DRAIN_BATCH || (max && total >= max) || c->end_requested)
            return total;
    }
}

/* ---- run state machine ------------------------------------------------- */

static bool finished(enum obsd_run_state s)
{
    return s == OBSD_RUN_COMPLETE || s == OBSD_RUN_INTERRUPTED;
}

static int next_run_number(struct obsd_collector *c)
{
    struct store_run_info *runs = NULL;
    size_t n = 0;
    int max = 0;
    if (store_list_runs(c->store, &runs, &n) == STORE_OK) {
        for (size_t i = 0; i < n; i++) {
            /* ids are <date>-<time>-<name>-<k>: continue k per name */
            if (strcmp(runs[i].name, c->name))
                continue;
            const char *dash = strrchr(runs[i].id, '-');
            int k = dash ? atoi(dash + 1) : 0;
            if (k > max)
                max = k;
        }
    }
    free(runs);
    return max + 1;
}

static void reset_run_metrics(struct obsd_collector *c)
{
    metrics_reset(&c->metrics);
    for (size_t i = 0; i < c->n_mods; i++)
        if (c->mods[i].ops->reset)
            c->mods[i].ops->reset(c->mods[i].state);
    c->engine_rejected = 0;
    c->batch.rejected = 0;
    c->rejected_carry = 0;
    c->interrupt_latched = false;
    c->restored = false;
    c->end_requested = false;
}

/* Gives the run that the tables already hold an id and a place in the store. */
static void open_run(struct obsd_collector *c)
{
    if (c->run_open)
        return;
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    char stamp[32];
    strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", &tm);
    int k = next_run_number(c) % 1000000;
    if (snprintf(c->run_id, sizeof c->run_id, "%.15s-%.32s-%d", stamp, c->name, k) < 0)
        c->run_id[0] = '\0';
    c->seq = 0;
    c->state = OBSD_RUN_INITIALIZE;
    c->run_open = true;
    c->pre_run_records = false;
    if (store_begin_run(c->store, c->run_id, c->name, now_ns(CLOCK_REALTIME)) != STORE_OK)
        engine_log(0, "store: cannot begin run %s: %s", c->run_id, store_error(c->store));
    engine_log(2, "run %s opened", c->run_id);
}

/* Returns true when the event is a STARTED deferred until the current run
 * is final. */
static bool apply_session(struct obsd_collector *c, uint32_t event, uint64_t ts)
{
    switch (event) {
    case OBSD_SESSION_STARTED:
        if (c->run_open && c->state == OBSD_RUN_INITIALIZE) {
            c->state = OBSD_RUN_LIVE;
        } else if (c->run_open && (c->end_requested || c->state == OBSD_RUN_DRAINING)) {
            c->start_after_end = true;      /* the next run starts once this one is final */
            c->start_after_end_ts = ts;
            return true;                    /* modules hear of it then */
        } else if (c->run_open) {
            engine_log(1, "run %s: session started again in state %s: ignored (producer bug)",
                       c->run_id, obsd_run_state_name(c->state));
            return false;
        } else {
            /* a new run: what arrived since the last final belongs to it */
            if (c->between_runs)
                engine_log(2, "%" PRIu64 " records arrived between runs; counted in the new run",
                           c->between_runs);
            open_run(c);
            c->state = OBSD_RUN_LIVE;
        }
        break;
    case OBSD_SESSION_ENDED:
        if (!c->run_open && c->pre_run_records && !c->had_run)
            open_run(c);   /* the segment's first run had records but no STARTED */
        if (!c->run_open)
            return false;  /* a stray ENDED after the final: nothing to end */
        if (c->state == OBSD_RUN_INITIALIZE || c->state == OBSD_RUN_LIVE) {
            c->state = OBSD_RUN_DRAINING;
            c->end_requested = true;
        }
        break;
    case OBSD_SESSION_INTERRUPTED:
        if (!c->run_open && c->had_run)
            return false;  /* after the final: it cannot concern the next run */
        c->interrupt_latched = true;
        break;
    default:
        break;
    }
    for (size_t i = 0; i < c->n_mods; i++)
        if (c->mods[i].ops->on_session)
            c->mods[i].ops->on_session(c->mods[i].state, (int)event, ts);
    return false;
}

/* ---- snapshots --------------------------------------------------------- */

static uint64_t pending_tasks(struct obsd_collector *c)
{
    uint64_t n = 0;
    for (size_t i = 0; i < c->n_mods; i++)
        if (c->mods[i].ops->pending)
            n += c->mods[i].ops->pending(c->mods[i].state);
    return n;
}

static int64_t run_rejected(struct obsd_collector *c, const struct shm_stats *st)
{
    return c->rejected_carry + (int64_t)(st->rejected - c->rejected_base) +
           (int64_t)(c->engine_rejected + c->batch.rejected);
}

/* The read cursors this snapshot covers, as [[slot, claims, pos], ...]: see
 * shm_cursors() and restore_or_close_previous(). */
static json_t *cursors_json(struct obsd_collector *c)
{
    struct shm_cursor cur[256];
    json_t *a = json_array();
    size_t n = shm_cursors(c->seg, cur, 256);
    for (size_t i = 0; a && i < n && i < 256; i++)
        json_array_append_new(a, json_pack("[I, I, I]", (json_int_t)cur[i].slot,
                                           (json_int_t)cur[i].claims, (json_int_t)cur[i].pos));
    return a;
}

/* The engine's restart state travels in its own snapshot section. */
static json_t *engine_section(struct obsd_collector *c, const struct shm_stats *st)
{
    return json_pack("{s:I, s:I, s:I, s:I, s:b, s:b, s:I, s:I, s:I, s:o*}",
                     "segment_dev", (json_int_t)c->seg_dev, "segment_ino", (json_int_t)c->seg_ino,
                     "dropped_base", (json_int_t)c->dropped_base,
                     "shm_dropped", (json_int_t)st->dropped,
                     "interrupt_latched", c->interrupt_latched, "restored", c->restored,
                     "engine_counters", (json_int_t)c->n_engine_counters,
                     "engine_series", (json_int_t)c->n_engine_series,
                     "records_between_runs", (json_int_t)c->between_runs,
                     "cursors", cursors_json(c));
}

/* Brings c->snap up to date: the fixed fields and counters, the metric
 * table's part (only what changed since the last publish is recomputed),
 * then what the modules add, anew every time. */
static struct snapshot *build_snapshot(struct obsd_collector *c, bool final)
{
    struct shm_stats st;
    shm_get_stats(c->seg, &st);
    if (!c->snap) {
        c->snap = snapshot_new(c->run_id, c->seq, c->state);
        if (!c->snap || snapshot_add_counter(c->snap, "obsd_dropped_records", 0) ||
            snapshot_add_counter(c->snap, "obsd_rejected_records", 0)) {
            snapshot_free(c->snap);
            c->snap = NULL;
            return NULL;
        }
        c->n_engine_counters = c->n_engine_series = 0;
    }
    struct snapshot *s = c->snap;
    /* what the modules added last time goes; the table's part stays */
    snapshot_truncate(s, 2 + c->n_engine_counters, c->n_engine_series);
    json_object_clear(s->sections);
    snprintf(s->run, sizeof s->run, "%s", c->run_id);
    s->seq = c->seq;
    s->state = c->state;
    s->timestamp_ns = now_ns(CLOCK_REALTIME);
    s->n_pending_tasks = pending_tasks(c);
    int64_t dropped = (int64_t)(st.dropped >= c->dropped_base ? st.dropped - c->dropped_base : 0);
    int64_t rejected = run_rejected(c, &st);
    s->counters[0].ivalue = dropped;
    s->counters[0].fvalue = (double)dropped;
    s->counters[1].ivalue = rejected;
    s->counters[1].fvalue = (double)rejected;
    size_t nc = 0, ns = 0;
    int rc = metrics_snapshot(&c->metrics, s, 2, c->cfg.histogram_buckets, &nc, &ns);
    c->n_engine_counters = nc;
    c->n_engine_series = ns;
    for (size_t i = 0; i < c->n_mods; i++)
        if (c->mods[i].ops->contribute &&
            c->mods[i].ops->contribute(c->mods[i].state, s, final) < 0)
            engine_log(1, "module %s: contribute failed", c->mods[i].ops->name);
    json_t *sec = engine_section(c, &st);
    if (sec)
        snapshot_set_section(s, "engine", sec);
    if (rc)
        engine_log(1, "snapshot %s/%" PRIu64 " is incomplete (out of memory)", c->run_id, c->seq);
    return s;
}

static void client_queue(struct obsd_collector *c, struct client *cl, struct control_line *line);

static bool have_watchers(struct obsd_collector *c)
{
    for (size_t i = 0; i < MAX_CLIENTS; i++)
        if (c->clients[i] && c->clients[i]->mode == CL_WATCH)
            return true;
    return false;
}

/* The watch line of the latest published snapshot, rendered only when a
 * watcher wants it, once per snapshot for all of them. */
static struct control_line *last_line(struct obsd_collector *c)
{
    if (c->last_line || !c->snap)
        return c->last_line;
    if (!c->watch && !(c->watch = watch_render_new()))
        return NULL;
    c->last_line = watch_render(c->watch, c->snap);
    if (!c->last_line)
        engine_log(1, "control: no watch line for snapshot %" PRIu64 ": out of memory", c->seq);
    return c->last_line;
}

static void push_to_watchers(struct obsd_collector *c)
{
    if (!have_watchers(c) || !last_line(c))
        return;
    for (size_t i = 0; i < MAX_CLIENTS; i++) {
        struct client *cl = c->clients[i];
        if (cl && cl->mode == CL_WATCH)
            client_queue(c, cl, c->last_line);
    }
}

static void publish(struct obsd_collector *c, bool final)
{
    uint64_t t0 = now_ns(CLOCK_MONOTONIC);
    control_line_put(c->last_line);   /* superseded by this publish */
    c->last_line = NULL;
    struct snapshot *s = build_snapshot(c, final);
    if (!s) {
        engine_log(0, "cannot build snapshot: out of memory");
        return;
    }
    int rc = store_persist(c->store, s, final);
    if (rc != STORE_OK)
        engine_log(rc == STORE_EXISTS ? 1 : 0, "store: cannot persist %s/%" PRIu64 ": %s",
                   c->run_id, c->seq, store_error(c->store));
    if (rc == STORE_OK) {
        /* The commit is the consumer's acknowledgement: only now may the
         * producers reuse the bytes of what this snapshot counted. Nothing
         * was drained since build_snapshot(), so the cursors are its own. */
        shm_release(c->seg);
        c->last_commit_ns = now_ns(CLOCK_MONOTONIC);
        c->last_publish_ns = c->last_commit_ns - t0;
    }
    c->seq++;
    push_to_watchers(c);
}

/* The final snapshot, exactly once per run. */
static void finalize(struct obsd_collector *c, bool interrupted)
{
    if (!c->run_open && c->pre_run_records && !c->had_run)
        open_run(c);       /* records without session events: still a run */
    if (!c->run_open || finished(c->state))
        return;
    drain_rings(c, 0);
    c->state = (interrupted || c->interrupt_latched) ? OBSD_RUN_INTERRUPTED : OBSD_RUN_COMPLETE;
    publish(c, true);
    engine_log(2, "run %s %s", c->run_id, obsd_run_state_name(c->state));
    struct shm_stats st;
    shm_get_stats(c->seg, &st);
    c->final_dropped = st.dropped - c->dropped_base;   /* status shows the ended run's */
    c->final_rejected = run_rejected(c, &st);
    c->dropped_base = st.dropped;       /* the next run counts from here */
    c->rejected_base = st.rejected;
    c->run_open = false;
    c->had_run = true;
    c->between_runs = 0;
    c->pre_run_records = false;
    reset_run_metrics(c);      /* state and run id stay visible to status until the next run */
    if (c->cfg.exit_after_run)
        c->quit = true;
}

/* While modules drain, this thread notices SIGTERM or stop(). */
static void *drain_watcher(void *arg)
{
    struct obsd_collector *c = arg;
    while (!atomic_load(&c->drain_cancel)) {
        struct pollfd p[2] = {{c->sigfd, POLLIN, 0}, {c->stopfd, POLLIN, 0}};
        if (poll(p, 2, 50) > 0 && (p[0].revents & POLLIN)) {
            struct signalfd_siginfo si;
            if (read(c->sigfd, &si, sizeof si) == (ssize_t)sizeof si)
                atomic_store(&c->signal_during_drain, true);
        }
        if (atomic_load(&c->signal_during_drain) || atomic_load(&c->stop_requested)) {
            atomic_store(&c->drain_cancel, true);
            break;
        }
    }
    return NULL;
}

/* ENDED: everything written before it is drained, then the modules drain
 * (the token drain), then the final snapshot. */
static void end_of_run(struct obsd_collector *c)
{
    c->end_requested = false;
    drain_rings(c, 0);
    publish(c, false);           /* watchers see draining at once */
    uint64_t deadline = c->cfg.drain_timeout_s
                            ? now_ns(CLOCK_MONOTONIC) + (uint64_t)c->cfg.drain_timeout_s * 1000000000ull
                            : 0;
    bool any = false;
    for (size_t i = 0; i < c->n_mods; i++)
        any |= c->mods[i].ops->drain != NULL;
    atomic_store(&c->drain_cancel, false);
    if (any && !atomic_load(&c->stop_requested)) {
        pthread_t th;
        bool watching = pthread_create(&th, NULL, drain_watcher, c) == 0;
        for (size_t i = 0; i < c->n_mods && !atomic_load(&c->drain_cancel); i++)
            if (c->mods[i].ops->drain)
                c->mods[i].ops->drain(c->mods[i].state, deadline);
        bool cancelled = atomic_exchange(&c->drain_cancel, true);
        if (watching)
            pthread_join(th, NULL);
        if (atomic_load(&c->signal_during_drain))
            c->interrupted_by_signal = true;
        if (cancelled || c->interrupted_by_signal) {
            engine_log(1, "run %s: interrupted during the drain with %" PRIu64 " tasks pending",
                       c->run_id, pending_tasks(c));
            c->quit = true;
            finalize(c, true);
            shm_drain_resume(c->seg);
            return;
        }
    }
    bool stop = atomic_load(&c->stop_requested);
    finalize(c, stop);
    if (stop)
        c->quit = true;
    if (c->start_after_end && !c->quit) {
        open_run(c);
        c->state = OBSD_RUN_LIVE;
        for (size_t i = 0; i < c->n_mods; i++)
            if (c->mods[i].ops->on_session)
                c->mods[i].ops->on_session(c->mods[i].state, OBSD_SESSION_STARTED,
                                           c->start_after_end_ts);
    }
    c->start_after_end = false;
    shm_drain_resume(c->seg);    /* the rings held at that STARTED now feed the new run */
}

/* ---- restart: continue the segment's run from the store ---------------- */

static int64_t section_int(json_t *sec, const char *key)
{
    json_t *v = json_object_get(sec, key);
    return json_is_integer(v) ? (int64_t)json_integer_value(v) : -1;
}

static void restore_or_close_previous(struct obsd_collector *c)
{
    struct store_run_info *runs = NULL, *last = NULL;
    size_t n = 0;
    if (store_list_runs(c->store, &runs, &n) != STORE_OK)
        return;
    for (size_t i = 0; i < n; i++)
        if (!strcmp(runs[i].name, c->name) && (!last || runs[i].run_seq > last->run_seq))
            last = &runs[i];
    if (!last) {
        free(runs);
        return;
    }
    struct snapshot *snap = NULL;
    int rc = last->has_final ? store_final(c->store, last->id, &snap) : store_latest(c->store, last->id, &snap);
    if (rc != STORE_OK || !snap) {
        free(runs);
        return;
    }
    json_t *sec = json_object_get(snap->sections, "engine");
    bool same_segment = sec && section_int(sec, "segment_ino") == (int64_t)c->seg_ino &&
                        section_int(sec, "segment_dev") == (int64_t)c->seg_dev;
    if (last->has_final || finished(snap->state)) {
        /* the segment's drops up to that final belonged to that run */
        if (same_segment && section_int(sec, "shm_dropped") >= 0)
            c->dropped_base = (uint64_t)section_int(sec, "shm_dropped");
        c->had_run = same_segment;
    } else if (!same_segment) {
        /* its segment is gone: that run can never end; close it as interrupted */
        snap->seq = last->last_seq + 1;
        snap->state = OBSD_RUN_INTERRUPTED;
        snap->timestamp_ns = now_ns(CLOCK_REALTIME);
        if (store_persist(c->store, snap, true) == STORE_OK)
            engine_log(1, "run %s lost its segment (collector died); closed as interrupted", last->id);
    } else {
        /* continue it: counters and series of the engine from the latest snapshot */
        snprintf(c->run_id, sizeof c->run_id, "%s", last->id);
        c->seq = last->last_seq + 1;
        c->state = snap->state;
        c->run_open = true;
        c->restored = true;
        c->interrupt_latched = json_is_true(json_object_get(sec, "interrupt_latched"));
        int64_t db = section_int(sec, "dropped_base");
        c->dropped_base = db > 0 ? (uint64_t)db : 0;
        const struct snap_counter *rj = snapshot_find_counter(snap, "obsd_rejected_records");
        c->rejected_carry = rj ? rj->ivalue : 0;
        int64_t nc = section_int(sec, "engine_counters"), ns = section_int(sec, "engine_series");
        for (size_t i = 2; nc > 0 && i < snap->n_counters && i < (size_t)nc + 2; i++) {
            const struct snap_counter *sc = &snap->counters[i];
            struct metric *m = metrics_get(&c->metrics, sc->name, sc->is_float ? METRIC_GAUGE : METRIC_COUNTER);
            if (!m)
                continue;
            metrics_touch(&c->metrics, m);
            if (sc->is_float)
                m->gauge = sc->fvalue;
            else
                m->counter = sc->ivalue;
        }
        for (size_t i = 0; ns > 0 && i < snap->n_series && i < (size_t)ns; i++) {
            struct metric *m = metrics_get(&c->metrics, snap->series[i].name, METRIC_SERIES);
            if (m && series_restore(&m->series, &snap->series[i]) == 0)
                metrics_touch(&c->metrics, m);
        }
        /* The rings' tails are at most as far as this snapshot's cursors
         * (released only after a commit); a kill between the commit and the
         * release left them behind: move them to the committed cursors, so
         * nothing this snapshot counted is read twice. */
        json_t *cur, *curs = json_object_get(sec, "cursors");
        size_t ci;
        json_array_foreach(curs, ci, cur) {
            json_int_t slot, claims, pos;
            if (json_unpack(cur, "[I, I, I]", &slot, &claims, &pos) < 0 || slot < 0 || pos < 0)
                continue;
            struct shm_cursor sc = {(uint32_t)slot, (uint64_t)claims, (uint64_t)pos};
            if (!shm_resume_cursor(c->seg, &sc))
                engine_log(1, "ring %u: committed cursor does not fit the ring; reading from its tail",
                           sc.slot);
        }
        if (c->state == OBSD_RUN_DRAINING)
            c->end_requested = true;   /* it was ending: end it */
        engine_log(2, "continuing run %s at seq %" PRIu64 " (state %s)", c->run_id, c->seq,
                   obsd_run_state_name(c->state));
    }
    snapshot_free(snap);
    free(runs);
}

/* ---- control socket ---------------------------------------------------- */

/* A socket of a killed collector can accept for a moment while the kernel
 * tears its io_uring down: only a status answer proves a live collector. */
static bool socket_answers(int fd)
{
    if (write(fd, "status\n", 7) != 7)
        return false;
    struct pollfd p = {fd, POLLIN, 0};
    char b;
    return poll(&p, 1, 1000) > 0 && read(fd, &b, 1) == 1;
}

static int open_control_socket(struct obsd_collector *c, char *err, size_t errlen)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(c->socket_path) >= sizeof sa.sun_path) {
        snprintf(err, errlen, "socket_path: %s is longer than %zu bytes", c->socket_path,
                 sizeof sa.sun_path - 1);
        return -1;
    }
    strcpy(sa.sun_path, c->socket_path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        return -1;
    }
    struct stat sb;
    if (lstat(c->socket_path, &sb) == 0) {
        if (!S_ISSOCK(sb.st_mode)) {
            snprintf(err, errlen, "socket_path: %s exists and is not a socket", c->socket_path);
            close(fd);
            return -1;
        }
        if (connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0 && socket_answers(fd)) {
            snprintf(err, errlen, "socket_path: %s: another collector is listening there",
                     c->socket_path);
            close(fd);
            return -1;
        }
        close(fd);
        unlink(c->socket_path);      /* stale, from a collector that died */
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            snprintf(err, errlen, "socket: %s", strerror(errno));
            return -1;
        }
    }
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(fd, 64) < 0) {
        snprintf(err, errlen, "socket_path: cannot listen on %s: %s", c->socket_path, strerror(errno));
        close(fd);
        return -1;
    }
    mode_t mode = 0600;
    if (c->shm_group) {
        struct group *g = getgrnam(c->shm_group);
        if (g && chown(c->socket_path, (uid_t)-1, g->gr_gid) == 0)
            mode = 0660;
    }
    chmod(c->socket_path, mode);
    c->listen_fd = fd;
    return 0;
}

/* Closes a client's socket and frees it with the lines it holds. */
static void client_destroy(struct client *cl)
{
    close(cl->fd);
    control_line_put(cl->sending);
    control_line_put(cl->held);
    control_line_put(cl->next);
    free(cl);
}

static void client_free_if_idle(struct obsd_collector *c, uint32_t idx)
{
    struct client *cl = c->clients[idx];
    if (!cl || cl->mode != CL_CLOSING || cl->recv_inflight || cl->send_inflight)
        return;
    client_destroy(cl);
    c->clients[idx] = NULL;
}

static void client_close(struct obsd_collector *c, uint32_t idx)
{
    struct client *cl = c->clients[idx];
    if (!cl)
        return;
    if (cl->mode != CL_CLOSING) {
        cl->mode = CL_CLOSING;
        shutdown(cl->fd, SHUT_RDWR);    /* completes whatever is in flight */
    }
    client_free_if_idle(c, idx);
}

static uint32_t client_index(struct obsd_collector *c, struct client *cl)
{
    for (uint32_t i = 0; i < MAX_CLIENTS; i++)
        if (c->clients[i] == cl)
            return i;
    return UINT32_MAX;
}

static void client_flush(struct obsd_collector *c, uint32_t idx)
{
    struct client *cl = c->clients[idx];
    if (!cl || cl->send_inflight || cl->mode == CL_CLOSING)
        return;
    if (!cl->sending) {
        struct control_line **from = cl->held ? &cl->held : &cl->next;
        cl->sending = *from;
        *from = NULL;
        cl->sent_off = 0;
    }
    if (!cl->sending) {
        if (cl->close_after_send)
            client_close(c, idx);
        return;
    }
    struct io_uring_sqe *sqe = get_sqe(c);
    if (!sqe) {
        client_close(c, idx);
        return;
    }
    struct control_line *l = cl->sending;
    io_uring_prep_send(sqe, cl->fd, l->data + cl->sent_off, l->len - cl->sent_off, MSG_NOSIGNAL);
    io_uring_sqe_set_data64(sqe, UD(UD_SEND, idx, cl->gen));
    cl->send_inflight = true;
}

/* Queues a line for a client (taking a reference of its own). Latest wins:
 * a line not yet started is replaced by the newer one, so a client that
 * reads slowly skips snapshots; but a run's final line is held for it when
 * the next run's first comes (unless a newer final replaces it). A client
 * holds at most three lines: the one being sent, a final, the newest. */
static void client_queue(struct obsd_collector *c, struct client *cl, struct control_line *line)
{
    uint32_t idx = client_index(c, cl);
    if (idx == UINT32_MAX || cl->mode == CL_CLOSING)
        return;
    if (cl->next && cl->next->final && !line->final) {
        control_line_put(cl->held);
        cl->held = cl->next;
    } else {
        control_line_put(cl->next);
    }
    cl->next = control_line_get(line);
    client_flush(c, idx);
}

static void client_recv(struct obsd_collector *c, uint32_t idx)
{
    struct client *cl = c->clients[idx];
    if (!cl || cl->recv_inflight || cl->mode == CL_CLOSING)
        return;
    struct io_uring_sqe *sqe = get_sqe(c);
    if (!sqe) {
        client_close(c, idx);
        return;
    }
    size_t room = cl->mode == CL_COMMAND ? CONTROL_MAX_LINE - cl->n_in : CONTROL_MAX_LINE;
    char *buf = cl->mode == CL_COMMAND ? cl->in + cl->n_in : cl->in;
    io_uring_prep_recv(sqe, cl->fd, buf, room, 0);
    io_uring_sqe_set_data64(sqe, UD(UD_RECV, idx, cl->gen));
    cl->recv_inflight = true;
    if (cl->mode == CL_COMMAND) {
        /* a client that never sends its command is dropped */
        sqe->flags |= IOSQE_IO_LINK;
        struct io_uring_sqe *to = get_sqe(c);
        if (to) {
            cl->idle.tv_sec = CONTROL_IDLE_MS / 1000;
            cl->idle.tv_nsec = (long long)(CONTROL_IDLE_MS % 1000) * 1000000;
            io_uring_prep_link_timeout(to, &cl->idle, 0);
            io_uring_sqe_set_data64(to, UD(UD_IGNORE, 0, 0));
        } else {
            sqe->flags &= (__u8)~IOSQE_IO_LINK;
        }
    }
}

static void queue_json_line(struct obsd_collector *c, struct client *cl, json_t *j)
{
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!text)
        return;
    /* the copy takes the terminating NUL's byte for the '\n' */
    size_t len = strlen(text);
    struct control_line *l = control_line_new(text, len + 1);
    free(text);
    if (!l) {
        client_close(c, client_index(c, cl));
        return;
    }
    l->data[len] = '\n';
    client_queue(c, cl, l);
    control_line_put(l);
}

static json_t *status_json(struct obsd_collector *c)
{
    struct shm_stats st;
    shm_get_stats(c->seg, &st);
    json_t *prod = json_array();
    size_t cap = st.producers + 16;
    struct shm_slot_info *slots = calloc(cap, sizeof *slots);
    if (slots && prod) {
        size_t n = shm_list_slots(c->seg, slots, cap);
        if (n > cap)
            n = cap;
        for (size_t i = 0; i < n; i++) {
            const struct shm_slot_info *s = &slots[i];
            double fill = s->ring_bytes ? (double)s->pending_bytes / (double)s->ring_bytes : 0;
            json_array_append_new(prod, json_pack("{s:I, s:I, s:I, s:I, s:I, s:f, s:I, s:I, s:b}",
                "slot", (json_int_t)s->slot, "pid", (json_int_t)s->pid, "tid", (json_int_t)s->tid,
                "pending_bytes", (json_int_t)s->pending_bytes, "ring_bytes", (json_int_t)s->ring_bytes,
                "fill", fill, "dropped", (json_int_t)s->dropped, "written", (json_int_t)s->written,
                "dead", s->dead));
        }
    }
    free(slots);
    bool ended = !c->run_open && c->had_run;   /* figures of the run named in "run" */
    return json_pack("{s:o, s:o, s:s, s:I, s:I, s:I, s:I, s:I, s:o}",
                     "name", obsd_json_text(c->name), "run", obsd_json_text(c->run_id),
                     "state", obsd_run_state_name(c->state), "pid", (json_int_t)getpid(),
                     "records", (json_int_t)st.records,
                     "dropped", (json_int_t)(ended ? c->final_dropped
                                             : st.dropped >= c->dropped_base ? st.dropped - c->dropped_base : 0),
                     "rejected", (json_int_t)(ended ? c->final_rejected : run_rejected(c, &st)),
                     "n_pending_tasks", (json_int_t)pending_tasks(c),
                     "producers", prod ? prod : json_array());
}

static void client_command(struct obsd_collector *c, uint32_t idx)
{
    struct client *cl = c->clients[idx];
    char *nl = memchr(cl->in, '\n', cl->n_in);
    if (!nl) {
        if (cl->n_in >= CONTROL_MAX_LINE) {
            cl->close_after_send = true;
            queue_json_line(c, cl, json_pack("{s:s}", "error", "command line too long"));
        } else {
            client_recv(c, idx);
        }
        return;
    }
    *nl = '\0';
    if (nl > cl->in && nl[-1] == '\r')
        nl[-1] = '\0';
    if (!strcmp(cl->in, "status")) {
        cl->close_after_send = true;
        queue_json_line(c, cl, status_json(c));
    } else if (!strcmp(cl->in, "watch")) {
        cl->mode = CL_WATCH;
        cl->n_in = 0;
        if (last_line(c))
            client_queue(c, cl, c->last_line);
        client_recv(c, idx);          /* only to notice the client closing */
    } else {
        char msg[CONTROL_MAX_LINE + 64];
        snprintf(msg, sizeof msg, "unknown command '%.*s' (expected status or watch)",
                 CONTROL_MAX_LINE, cl->in);
        cl->close_after_send = true;
        queue_json_line(c, cl, json_pack("{s:s}", "error", msg));
    }
}

static void on_accept(struct obsd_collector *c, int res, uint32_t flags)
{
    if (!(flags & IORING_CQE_F_MORE))
        c->accept_armed = false;
    if (res < 0)
        return;
    uint32_t idx = 0;
    while (idx < MAX_CLIENTS && c->clients[idx])
        idx++;
    struct client *cl = idx < MAX_CLIENTS ? calloc(1, sizeof *cl) : NULL;
    if (!cl) {
        close(res);
        return;
    }
    cl->fd = res;
    cl->gen = ++c->client_gen;
    cl->mode = CL_COMMAND;
    c->clients[idx] = cl;
    client_recv(c, idx);
}

static struct client *client_for(struct obsd_collector *c, uint64_t ud)
{
    uint32_t idx = UD_IDX(ud);
    if (idx >= MAX_CLIENTS || !c->clients[idx] || (c->clients[idx]->gen & 0xffffffu) != UD_GEN(ud))
        return NULL;
    return c->clients[idx];
}

static void on_client_recv(struct obsd_collector *c, uint64_t ud, int res)
{
    struct client *cl = client_for(c, ud);
    if (!cl)
        return;
    uint32_t idx = UD_IDX(ud);
    cl->recv_inflight = false;
    if (res <= 0 || cl->mode == CL_CLOSING) {
        client_close(c, idx);
        return;
    }
    if (cl->mode == CL_WATCH) {
        client_recv(c, idx);     /* ignore what a watcher sends */
        return;
    }
    cl->n_in += (size_t)res;
    client_command(c, idx);
}

static void on_client_send(struct obsd_collector *c, uint64_t ud, int res)
{
    struct client *cl = client_for(c, ud);
    if (!cl)
        return;
    uint32_t idx = UD_IDX(ud);
    cl->send_inflight = false;
    if (res < 0 || cl->mode == CL_CLOSING) {
        client_close(c, idx);
        return;
    }
    cl->sent_off += (size_t)res;
    if (cl->sent_off >= cl->sending->len) {
        control_line_put(cl->sending);
        cl->sending = NULL;
    }
    client_flush(c, idx);
}

/* ---- producers' pidfds ------------------------------------------------- */

static void watch_new_producers(struct obsd_collector *c)
{
    pid_t pids[64];
    size_t n = shm_new_producers(c->seg, pids, 64);
    if (n > 64)
        n = 64;
    for (size_t i = 0; i < n; i++) {
        pid_t pid = pids[i];
        bool known = false;
        for (size_t k = 0; k < c->n_pids; k++)
            if (c->pids[k].fd >= 0 && c->pids[k].pid == pid)
                known = true;
        if (known || pid <= 0)
            continue;
        int fd = (int)syscall(SYS_pidfd_open, pid, 0);
        if (fd < 0) {
            if (errno == ESRCH) {
                shm_producer_exited(c->seg, pid, on_record, c);   /* already gone */
                metrics_batch_flush(&c->metrics, &c->batch, key_name, c);
            } else {
                engine_log(1, "pidfd_open(%d): %s; its ring is freed only when it closes", (int)pid,
                           strerror(errno));
            }
            continue;
        }
        size_t slot = 0;
        while (slot < c->n_pids && c->pids[slot].fd >= 0)
            slot++;
        if (slot == c->n_pids) {
            if (c->n_pids == MAX_PIDS) {
                close(fd);
                continue;
            }
            struct pidwatch *p = realloc(c->pids, (c->n_pids + 1) * sizeof *p);
            if (!p) {
                close(fd);
                continue;
            }
            c->pids = p;
            c->pids[c->n_pids++] = (struct pidwatch){.fd = -1};
        }
        struct pidwatch *w = &c->pids[slot];
        w->pid = pid;
        w->fd = fd;
        w->gen++;
        struct io_uring_sqe *sqe = get_sqe(c);
        if (!sqe) {
            close(fd);
            w->fd = -1;
            continue;
        }
        io_uring_prep_poll_add(sqe, fd, POLLIN);
        io_uring_sqe_set_data64(sqe, UD(UD_PIDFD, slot, w->gen));
    }
}

static void on_pidfd(struct obsd_collector *c, uint64_t ud)
{
    uint32_t slot = UD_IDX(ud);
    if (slot >= c->n_pids || c->pids[slot].fd < 0 || (c->pids[slot].gen & 0xffffffu) != UD_GEN(ud))
        return;
    struct pidwatch *w = &c->pids[slot];
    close(w->fd);
    w->fd = -1;
    engine_log(3, "producer %d exited", (int)w->pid);
    shm_producer_exited(c->seg, w->pid, on_record, c);
    metrics_batch_flush(&c->metrics, &c->batch, key_name, c);
}

/* ---- the loop ---------------------------------------------------------- */

static void arm_tick(struct obsd_collector *c)
{
    uint64_t now = now_ns(CLOCK_MONOTONIC);
    uint64_t interval = (uint64_t)c->cfg.publish_interval_ms * 1000000ull;
    c->next_tick_ns += interval;
    if (c->next_tick_ns <= now)
        c->next_tick_ns = now + interval;
    c->tick_ts.tv_sec = (long long)(c->next_tick_ns / 1000000000ull);
    c->tick_ts.tv_nsec = (long long)(c->next_tick_ns % 1000000000ull);
    struct io_uring_sqe *sqe = get_sqe(c);
    if (!sqe)
        return;
    io_uring_prep_timeout(sqe, &c->tick_ts, 0, IORING_TIMEOUT_ABS);
    io_uring_sqe_set_data64(sqe, UD(UD_TICK, 0, 0));
    c->tick_armed = true;
}

static void arm_poll(struct obsd_collector *c, int fd, enum ud_kind kind, bool *armed)
{
    struct io_uring_sqe *sqe = get_sqe(c);
    if (!sqe)
        return;
    io_uring_prep_poll_add(sqe, fd, POLLIN);
    io_uring_sqe_set_data64(sqe, UD(kind, 0, 0));
    *armed = true;
}

static void arm_accept(struct obsd_collector *c)
{
    struct io_uring_sqe *sqe = get_sqe(c);
    if (!sqe)
        return;
    io_uring_prep_multishot_accept(sqe, c->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    io_uring_sqe_set_data64(sqe, UD(UD_ACCEPT, 0, 0));
    c->accept_armed = true;
}

/* Sleep on the doorbell: FUTEX_WAIT filled by hand (opcode 51), or the
 * fallback poll timeout. Returns false if there is work instead. */
static bool arm_sleep(struct obsd_collector *c)
{
    uint32_t expected = 0;
    uint32_t *word = shm_reader_sleeping(c->seg, &expected);
    if (!word) {
        shm_reader_awake(c->seg);
        return false;
    }
    if (c->futex_ok) {
        if (c->futex_armed)
            return true;
        struct io_uring_sqe *sqe = get_sqe(c);
        if (!sqe)
            return true;
        memset(sqe, 0, sizeof *sqe);
        sqe->opcode = OBSD_IORING_OP_FUTEX_WAIT;
        sqe->fd = OBSD_FUTEX2_SIZE_U32;        /* futex2 flags; shared: no FUTEX2_PRIVATE */
        sqe->addr = (uint64_t)(uintptr_t)word;
        sqe->off = expected;
        sqe->addr3 = FUTEX_BITSET_MATCH_ANY;
        sqe->rw_flags = 0;
        io_uring_sqe_set_data64(sqe, UD(UD_FUTEX, 0, 0));
        c->futex_armed = true;
    } else if (!c->fallback_armed) {
        struct io_uring_sqe *sqe = get_sqe(c);
        if (!sqe)
            return true;
        c->fallback_ts.tv_sec = 0;
        c->fallback_ts.tv_nsec = FALLBACK_POLL_NS;
        io_uring_prep_timeout(sqe, &c->fallback_ts, 0, 0);
        io_uring_sqe_set_data64(sqe, UD(UD_FALLBACK, 0, 0));
        c->fallback_armed = true;
    }
    return true;
}

static void on_tick(struct obsd_collector *c)
{
    drain_rings(c, 0);
    if (c->end_requested)
        return;          /* end_of_run publishes */
    for (size_t i = 0; i < c->n_mods; i++)
        if (c->mods[i].ops->on_tick)
            c->mods[i].ops->on_tick(c->mods[i].state);
    /* records without any session event still make the segment's first run */
    if (!c->run_open && c->pre_run_records && !c->had_run)
        open_run(c);
    if (c->run_open)
        publish(c, false);
    else
        shm_release(c->seg);   /* between runs: no run holds these records */
}

/* A ring more than half full of drained but uncommitted records: commit a
 * checkpoint now, so its producer need not wait for the publish interval
 * (and drop) before it may reuse the space. A checkpoint is a normal persist
 * (a history entry of the changed series). Its cost grows with the changed
 * series (~6-12 us each), so checkpoints keep a gap of 4x the last publish's
 * duration (at most a fifth of the collector's time) and of CHECKPOINT_GAP_NS
 * at least (bounds the history's growth): beyond that rate producers drop,
 * and the drops are counted. */
#define CHECKPOINT_GAP_NS (1000ull * 1000)
/* Returns true while a checkpoint is wanted but waits for its gap: then the
 * loop must not sleep (a producer whose ring is full drops without ringing). */
static bool checkpoint_if_due(struct obsd_collector *c)
{
    uint64_t gap = 4 * c->last_publish_ns;
    if (gap < CHECKPOINT_GAP_NS)
        gap = CHECKPOINT_GAP_NS;
    if (c->end_requested || shm_unreleased_max(c->seg) <= c->ring_bytes / 2)
        return false;
    if (now_ns(CLOCK_MONOTONIC) - c->last_commit_ns < gap)
        return true;
    if (!c->run_open && c->pre_run_records && !c->had_run)
        open_run(c);
    if (!c->run_open) {
        shm_release(c->seg);
        return false;
    }
    /* The checkpoint only has to survive a kill of obsd (the next tick's
     * synced commit flushes it), so with store_sync it skips the fsync. */
    bool nosync = c->cfg.store_sync && store_set_commit_sync(c->store, false) == STORE_OK;
    publish(c, false);
    if (nosync && store_set_commit_sync(c->store, true) != STORE_OK)
        engine_log(0, "store: %s", store_error(c->store));
    c->last_commit_ns = now_ns(CLOCK_MONOTONIC);   /* a failed persist is retried after the gap too */
    return false;
}

static void on_signal(struct obsd_collector *c)
{
    struct signalfd_siginfo si;
    while (read(c->sigfd, &si, sizeof si) == (ssize_t)sizeof si) {
        engine_log(2, "signal %u: final snapshot, then exit", si.ssi_signo);
        c->interrupted_by_signal = true;
        c->quit = true;
    }
}

static void process_cqes(struct obsd_collector *c)
{
    struct io_uring_cqe *cqe;
    unsigned head, n = 0;
    io_uring_for_each_cqe(&c->ring, head, cqe) {
        uint64_t ud = cqe->user_data;
        int res = cqe->res;
        uint32_t flags = cqe->flags;
        n++;
        switch (UD_KIND(ud)) {
        case UD_FUTEX:
            c->futex_armed = false;
            if (res < 0 && res != -EAGAIN && res != -EINTR && res != -ECANCELED) {
                engine_log(1, "io_uring futex wait failed (%s): polling every %d ms instead",
                           strerror(-res), FALLBACK_POLL_NS / 1000000);
                c->futex_ok = false;
            }
            break;
        case UD_FALLBACK:
            c->fallback_armed = false;
            break;
        case UD_TICK:
            c->tick_armed = false;
            on_tick(c);
            arm_tick(c);
            break;
        case UD_SIGNAL:
            c->signal_armed = false;
            on_signal(c);
            arm_poll(c, c->sigfd, UD_SIGNAL, &c->signal_armed);
            break;
        case UD_STOP:
            c->stop_armed = false;
            if (read(c->stopfd, &c->stop_buf, sizeof c->stop_buf) < 0 && errno != EAGAIN)
                engine_log(1, "stop eventfd: %s", strerror(errno));
            if (atomic_load(&c->stop_requested))
                c->quit = true;
            else
                arm_poll(c, c->stopfd, UD_STOP, &c->stop_armed);
            break;
        case UD_ACCEPT:
            on_accept(c, res, flags);
            break;
        case UD_PIDFD:
            on_pidfd(c, ud);
            break;
        case UD_RECV:
            on_client_recv(c, ud, res);
            break;
        case UD_SEND:
            on_client_send(c, ud, res);
            break;
        case UD_IGNORE:
            break;
        }
    }
    io_uring_cq_advance(&c->ring, n);
}

int obsd_collector_run(struct obsd_collector *c)
{
    if (c->have_cpuset && sched_setaffinity(0, sizeof c->cpuset, &c->cpuset) < 0) {
        engine_log(0, "cpus: cannot run on CPUs %s: %s", c->cpus, strerror(errno));
        return -1;
    }
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    pthread_sigmask(SIG_BLOCK, &mask, NULL);

    c->next_tick_ns = now_ns(CLOCK_MONOTONIC);
    arm_tick(c);
    arm_poll(c, c->sigfd, UD_SIGNAL, &c->signal_armed);
    arm_poll(c, c->stopfd, UD_STOP, &c->stop_armed);
    arm_accept(c);
    shm_set_collector_running(c->seg, true);

    while (!c->quit && !atomic_load(&c->stop_requested)) {
        size_t n = drain_rings(c, DRAIN_BATCH * 4);
        bool busy = checkpoint_if_due(c);
        watch_new_producers(c);
        if (c->end_requested)
            end_of_run(c);
        if (c->quit)
            break;
        if (!c->accept_armed)
            arm_accept(c);
        bool sleep = n < DRAIN_BATCH * 4 && !busy && arm_sleep(c);
        int rc = sleep ? io_uring_submit_and_wait(&c->ring, 1) : io_uring_submit(&c->ring);
        if (rc < 0 && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY) {
            engine_log(0, "io_uring: %s", strerror(-rc));
            break;
        }
        if (sleep)
            shm_reader_awake(c->seg);
        process_cqes(c);
    }
    /* SIGTERM, stop(), or exit_after_run after a final */
    if (c->end_requested && !atomic_load(&c->stop_requested) && !c->interrupted_by_signal)
        end_of_run(c);
    finalize(c, true);
    io_uring_submit(&c->ring);
    /* let queued status/watch lines go out briefly; never block on a slow client */
    for (int i = 0; i < 20; i++) {
        bool busy = false;
        for (size_t k = 0; k < MAX_CLIENTS; k++)
            if (c->clients[k] && c->clients[k]->send_inflight)
                busy = true;
        if (!busy)
            break;
        struct __kernel_timespec ts = {0, 10000000};
        struct io_uring_cqe *cqe;
        io_uring_submit_and_wait_timeout(&c->ring, &cqe, 1, &ts, NULL);
        process_cqes(c);
    }
    shm_set_collector_running(c->seg, false);
    return 0;
}

void obsd_collector_stop(struct obsd_collector *c)
{
    if (!c)
        return;
    atomic_store(&c->stop_requested, true);
    uint64_t one = 1;
    ssize_t w = write(c->stopfd, &one, sizeof one);   /* async-signal-safe */
    (void)w;
}

/* ---- construction ------------------------------------------------------ */

static int probe_futex(void)
{
    struct io_uring_probe *p = io_uring_get_probe();
    if (!p)
        return 0;
    int ok = io_uring_opcode_supported(p, OBSD_IORING_OP_FUTEX_WAIT);
    io_uring_free_probe(p);
    return ok;
}

static int validate(const struct obsd_collector_config *cfg, char *err, size_t errlen)
{
    if (!cfg->name || !*cfg->name) {
        snprintf(err, errlen, "name: empty");
        return -1;
    }
    if (!cfg->store_dir || !*cfg->store_dir) {
        snprintf(err, errlen, "store_dir: empty");
        return -1;
    }
    if (cfg->publish_interval_ms < 1 || cfg->publish_interval_ms > 3600000) {
        snprintf(err, errlen, "publish_interval_ms: %u out of range 1..3600000", cfg->publish_interval_ms);
        return -1;
    }
    if (cfg->histogram_buckets > 10000) {
        snprintf(err, errlen, "histogram_buckets: %u out of range 0..10000", cfg->histogram_buckets);
        return -1;
    }
    return 0;
}

struct obsd_collector *obsd_collector_new(const struct obsd_collector_config *cfg,
                                          char *err, size_t errlen)
{
    if (validate(cfg, err, errlen) < 0)
        return NULL;
    struct obsd_collector *c = calloc(1, sizeof *c);
    if (!c) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    c->cfg = *cfg;
    c->sigfd = c->stopfd = c->listen_fd = -1;
    engine_set_log_level(cfg->log_level);
    c->name = strdup(cfg->name);
    c->store_dir = strdup(cfg->store_dir);
    c->cpus = dup_or_null(cfg->cpus);
    c->shm_group = dup_or_null(cfg->shm_group);
    c->tokenizer = dup_or_null(cfg->tokenizer);
    if (cfg->socket_path) {
        c->socket_path = strdup(cfg->socket_path);
    } else {
        char path[4096];
        control_default_socket_path(path, sizeof path, cfg->store_dir, cfg->name);
        c->socket_path = strdup(path);
    }
    if (!c->name || !c->store_dir || !c->socket_path || (cfg->cpus && !c->cpus)) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    c->cfg.name = c->name;
    c->cfg.store_dir = c->store_dir;
    c->cfg.cpus = c->cpus;
    c->cfg.socket_path = c->socket_path;
    c->cfg.shm_group = c->shm_group;
    c->cfg.tokenizer = c->tokenizer;

    if (c->cpus) {
        if (engine_parse_cpus(c->cpus, &c->cpuset, err, errlen) < 0)
            goto fail;
        cpu_set_t allowed;
        if (sched_getaffinity(0, sizeof allowed, &allowed) == 0) {
            for (int i = 0; i < CPU_SETSIZE; i++)
                if (CPU_ISSET(i, &c->cpuset) && !CPU_ISSET(i, &allowed)) {
                    snprintf(err, errlen, "cpus: CPU %d of \"%s\" is not available to this process "
                             "(it may use %d CPUs)", i, c->cpus, CPU_COUNT(&allowed));
                    goto fail;
                }
        }
        c->have_cpuset = true;
    }

    if (mkdir(c->store_dir, 0750) < 0 && errno != EEXIST) {
        snprintf(err, errlen, "store_dir: cannot create %s: %s", c->store_dir, strerror(errno));
        goto fail;
    }

    struct shm_config sc;
    shm_config_defaults(&sc, c->name);
    sc.max_producers = cfg->max_producers;
    sc.ring_bytes = cfg->ring_size;
    c->ring_bytes = cfg->ring_size;
    sc.sched_workers = cfg->sched_workers;
    sc.keys_count = cfg->max_keys;
    sc.max_text_bytes = cfg->max_text_bytes;
    sc.full_policy = cfg->ring_full_block ? SHM_FULL_BLOCK : SHM_FULL_DROP;
    sc.block_timeout_ns = (uint64_t)cfg->ring_block_timeout_ms * 1000000ull;
    sc.group = (gid_t)-1;
    if (c->shm_group) {
        struct group *g = getgrnam(c->shm_group);
        if (!g) {
            snprintf(err, errlen, "shm_group: no such group '%s'", c->shm_group);
            goto fail;
        }
        sc.group = g->gr_gid;
    }
    c->seg = shm_segment_create(&sc, err, errlen);
    if (!c->seg)
        goto fail;
    /* A ring's bytes are reused only once a store commit holds what was read
     * from them: a kill -9 then loses nothing (DESIGN.md, "Collector killed"). */
    shm_set_deferred_release(c->seg, true);
    char seg_path[256];
    snprintf(seg_path, sizeof seg_path, "/dev/shm/obsd.%s", c->name);
    struct stat sb;
    if (stat(seg_path, &sb) == 0) {
        c->seg_dev = sb.st_dev;
        c->seg_ino = sb.st_ino;
    }

    c->store = store_open(c->store_dir, cfg->store_map_size, cfg->store_sync, false, err, errlen);
    if (!c->store)
        goto fail;
    store_set_history_full_every(c->store, cfg->history_full_every);

    series_env_init(&c->senv, c->store_dir, cfg->raw_values_memory);
    metrics_init(&c->metrics, &c->senv);

    c->menv.config = &c->cfg;
    c->menv.segment = c->seg;
    c->menv.store_dir = c->store_dir;
    c->menv.log = engine_log;
    c->menv.drain_cancel = &c->drain_cancel;
    size_t nm = 0;
    while (engine_modules[nm])
        nm++;
    c->mods = calloc(nm ? nm : 1, sizeof *c->mods);
    if (!c->mods) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    for (size_t i = 0; i < nm; i++) {
        char merr[256] = "";
        void *st = engine_modules[i]->create ? engine_modules[i]->create(&c->menv, merr, sizeof merr) : NULL;
        if (engine_modules[i]->create && !st) {
            snprintf(err, errlen, "%s: %s", engine_modules[i]->name, merr);
            goto fail;
        }
        c->mods[c->n_mods].ops = engine_modules[i];
        c->mods[c->n_mods].state = st;
        c->n_mods++;
    }

    restore_or_close_previous(c);

    c->stopfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    pthread_sigmask(SIG_BLOCK, &mask, NULL);
    c->sigfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
    if (c->stopfd < 0 || c->sigfd < 0) {
        snprintf(err, errlen, "eventfd/signalfd: %s", strerror(errno));
        goto fail;
    }
    if (open_control_socket(c, err, errlen) < 0)
        goto fail;
    int rc = io_uring_queue_init(256, &c->ring, 0);
    if (rc < 0) {
        snprintf(err, errlen, "io_uring_queue_init: %s", strerror(-rc));
        goto fail;
    }
    c->ring_ok = true;
    /* OBSD_ENGINE_NO_FUTEX=1 forces the fallback (tests, or a kernel whose probe lies) */
    const char *nofutex = getenv("OBSD_ENGINE_NO_FUTEX");
    c->futex_ok = !(nofutex && *nofutex == '1') && probe_futex();
    if (!c->futex_ok)
        engine_log(1, "this kernel has no io_uring FUTEX_WAIT (6.7+): polling the rings every %d ms",
                   FALLBACK_POLL_NS / 1000000);
    return c;
fail:
    obsd_collector_free(c);
    return NULL;
}

void obsd_collector_free(struct obsd_collector *c)
{
    if (!c)
        return;
    /* in-flight recvs write into client memory: end them before freeing it */
    for (size_t i = 0; i < MAX_CLIENTS; i++)
        if (c->clients[i])
            shutdown(c->clients[i]->fd, SHUT_RDWR);
    if (c->ring_ok)
        io_uring_queue_exit(&c->ring);
    c->ring_ok = false;
    for (size_t i = 0; i < MAX_CLIENTS; i++) {
        struct client *cl = c->clients[i];
        if (cl)
            client_destroy(cl);
    }
    if (c->ring_ok)
        io_uring_queue_exit(&c->ring);
    for (size_t i = 0; i < c->n_pids; i++)
        if (c->pids[i].fd >= 0)
            close(c->pids[i].fd);
    free(c->pids);
    if (c->listen_fd >= 0) {
        close(c->listen_fd);
        unlink(c->socket_path);
    }
    if (c->sigfd >= 0)
        close(c->sigfd);
    if (c->stopfd >= 0)
        close(c->stopfd);
    for (size_t i = 0; i < c->n_mods; i++)
        if (c->mods[i].ops->destroy)
            c->mods[i].ops->destroy(c->mods[i].state);
    free(c->mods);
    snapshot_free(c->snap);         /* it refers to the metric table's series */
    metrics_free(&c->metrics);
    if (c->store)
        store_close(c->store);
    if (c->seg)
        shm_segment_close(c->seg, false);
    control_line_put(c->last_line);
    watch_render_free(c->watch);
    free(c->name);
    free(c->store_dir);
    free(c->socket_path);
    free(c->cpus);
    free(c->shm_group);
    free(c->tokenizer);
    free(c);
}
