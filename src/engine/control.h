/*
 * control.h: the collector's control socket protocol (what `obsctl status`
 * and `obsctl watch` speak).
 *
 * Transport: a UNIX stream socket at the config's socket_path (default
 * <store_dir>/<name>.sock), created by the collector with mode 0600 (0660
 * with shm_group). A client connects and sends ONE command line, at most
 * CONTROL_MAX_LINE bytes including the '\n':
 *
 *   "status\n"  The server replies with one JSON object on one line, then
 *               closes the connection:
 *                 {"name": "bench",           segment / collector name
 *                  "run": "20261123-...-3",   current run id ("" before the first run)
 *                  "state": "live",           initialize|live|draining|complete|interrupted
 *                  "pid": 1234,               collector pid
 *                  "records": 123456,         records delivered since attach
 *                  "dropped": 0,              all drops of the segment (as obsd_dropped_records)
 *                  "rejected": 0,             malformed records/rings/keys (obsd_rejected_records)
 *                  "n_pending_tasks": 0,
 *                  "producers": [ {"slot": 0, "pid": 99, "tid": 99,
 *                                  "pending_bytes": 0, "ring_bytes": 1048576,
 *                                  "fill": 0.0, "dropped": 0, "written": 10,
 *                                  "dead": false}, ... ]}
 *
 *   "watch\n"   The server writes every new snapshot as one line, starting
 *               with the most recent one if any, until the client closes.
 *               The line is a summary, not the full snapshot (that is in
 *               the store: obsctl show --json):
 *                 {"form": "watch", "schema_version": 1, "run": "...",
 *                  "seq": 7, "timestamp_ns": ..., "state": "live",
 *                  "n_pending_tasks": 0,
 *                  "metrics": [ {"type": "counter", "name": "...",
 *                                "value": 12}, ...,
 *                               {"type": "series", "name": "...",
 *                                "exact": false, "count": 100,
 *                                "total": ..., "min": ..., "max": ...,
 *                                "mean": ...,
 *                                "percentiles": {"50.0": ..., "99.0": ...}},
 *                               ... ]}
 *               Counters then series, in the snapshot's order; the fields
 *               mean what they mean in snapshot_to_json() (a number that is
 *               not finite is null; "mean" is total/count, null when count
 *               is 0); no histograms, no sum_sq, no module sections.
 *               After the final snapshot of a run the connection stays open
 *               and the next run's snapshots follow (a client that only
 *               wants one run stops when "state" is complete or interrupted).
 *               Latest wins: a client that does not read as fast as
 *               snapshots come is never disconnected for it, and never
 *               makes the collector wait; it skips snapshots instead. The
 *               server holds per watcher at most the line being sent, the
 *               newest one (replaced by each newer snapshot) and a run's
 *               final snapshot that a next run's snapshot came after (not
 *               skipped, unless a newer final comes while it waits), so
 *               the seq of consecutive lines may jump, but a client sees
 *               the final snapshot of every run it is not a whole run
 *               behind on.
 *
 *   anything else: one line {"error": "unknown command '...'"} and close.
 *
 * Every line the server writes ends with '\n' and contains no other newline.
 * A client that sends nothing within CONTROL_IDLE_MS is disconnected.
 */
#ifndef OBSD_ENGINE_CONTROL_H
#define OBSD_ENGINE_CONTROL_H

#include <stdbool.h>
#include <stddef.h>

#define CONTROL_MAX_LINE 64
#define CONTROL_IDLE_MS 5000

/* Default socket path: <store_dir>/<name>.sock. Returns the length written
 * (as snprintf). */
int control_default_socket_path(char *out, size_t outlen, const char *store_dir,
                                const char *name);

/* A line the server writes, shared by every client it is queued for
 * (reference counted; the collector thread only). data holds len bytes,
 * the last one '\n'. */
struct control_line {
    size_t refs;
    size_t len;
    size_t alloc;    /* bytes allocated, the struct included */
    bool final;      /* the watch line of a run's final snapshot */
    char data[];
};
/* A line holding a copy of text (len bytes, final false), one reference;
 * NULL when out of memory. */
struct control_line *control_line_new(const char *text, size_t len);
struct control_line *control_line_get(struct control_line *l);
void control_line_put(struct control_line *l);

/* The watch line of a snapshot (the form above), rendered directly into one
 * buffer. A renderer keeps each entry's text with the values it was made
 * from and copies it from its previous line when they did not change, so
 * rendering the snapshots of one run in turn costs a copy of the line plus
 * the formatting of the entries that changed. */
struct snapshot;
struct watch_render;
struct watch_render *watch_render_new(void);
void watch_render_free(struct watch_render *r);
/* A new line with one reference (the caller's), or NULL when out of memory. */
struct control_line *watch_render(struct watch_render *r, const struct snapshot *s);

#endif
