/*
 * cli_control.h: obsctl's client of the collector's control socket
 * (engine/control.h), shared by `obsctl status` and `obsctl watch`.
 */
#ifndef OBSD_CLI_CLI_CONTROL_H
#define OBSD_CLI_CLI_CONTROL_H

#include <stdbool.h>
#include <stddef.h>

/* Where the daemon of a segment listens: --socket if given, else the
 * socket_path key, else <store_dir>/<name>.sock, with name, store_dir and
 * socket_path taken from obsd.conf (--config, or /etc/obsd/obsd.conf when it
 * exists), the OBSD_<KEY> environment (and OBSD_STORE) and the --name/--store
 * options, in the
 * same precedence as obsd(8). Returns 0, or 2 (usage error) with a message
 * printed. */
struct control_target {
    char name[64];
    char socket_path[512];
};
int control_resolve(struct control_target *t, const char *cmd, const char *config,
                    const char *name, const char *store, const char *socket);

/* Connects and sends "<command>\n". Returns the socket, or -1 after printing
 * "no obsd running for segment 'x' (socket PATH: reason)". timeout_ms bounds
 * every later read (0 = none). */
int control_connect(const struct control_target *t, const char *cmd, const char *command,
                    int timeout_ms);

/* Line reader over the socket: lines of any length up to max_line bytes. */
struct control_reader {
    int fd;
    char *buf;
    size_t len, cap, start;
    size_t max_line;
};
void control_reader_init(struct control_reader *r, int fd, size_t max_line);
void control_reader_free(struct control_reader *r);
/* Returns 1 with *line (NUL-terminated, without '\n', valid until the next
 * call) when a whole line is buffered, 0 when more input is needed (call
 * control_reader_fill), -1 when a line exceeds max_line. */
int control_reader_next(struct control_reader *r, char **line);
/* Reads what the socket has (blocking per the socket's mode). Returns bytes
 * read, 0 at end of stream, -1 on error (errno set). */
long control_reader_fill(struct control_reader *r);

/* One blocking request/one-line reply ("status"): returns a malloc'd line or
 * NULL after printing why. */
char *control_request_line(const struct control_target *t, const char *cmd, const char *command,
                           int timeout_ms);

#endif
