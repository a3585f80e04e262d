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
 *   "watch\n"   The server writes every new snapshot as one JSON line, in the
 *               form of snapshot_to_json() (publisher/snapshot.h), starting
 *               with the most recent one if any, until the client closes.
 *               After the final snapshot of a run the connection stays open
 *               and the next run's snapshots follow (a client that only
 *               wants one run stops when "state" is complete or interrupted).
 *               A client that does not read fast enough (more than
 *               CONTROL_MAX_BACKLOG bytes queued) is disconnected rather
 *               than allowed to block the collector.
 *
 *   anything else: one line {"error": "unknown command '...'"} and close.
 *
 * Every line the server writes ends with '\n' and contains no other newline.
 * A client that sends nothing within CONTROL_IDLE_MS is disconnected.
 */
#ifndef OBSD_ENGINE_CONTROL_H
#define OBSD_ENGINE_CONTROL_H

#define CONTROL_MAX_LINE 64
#define CONTROL_MAX_BACKLOG (8u << 20)
#define CONTROL_IDLE_MS 5000

/* Default socket path: <store_dir>/<name>.sock. Returns the length written
 * (as snprintf). */
#include <stddef.h>
int control_default_socket_path(char *out, size_t outlen, const char *store_dir,
                                const char *name);

#endif
