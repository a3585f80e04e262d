/*
 * cli_control.c: finding, connecting to and reading the control socket.
 */
#include "cli/cli_control.h"

#include <ctype.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "daemon/config.h"

int control_resolve(struct control_target *t, const char *cmd, const char *config,
                    const char *name, const char *store, const char *socket)
{
    struct obsd_collector_config cfg;
    char err[1024];
    memset(&cfg, 0, sizeof cfg);
    cfg.name = "obsd";
    cfg.store_dir = "/var/lib/obsd";
    cfg.publish_interval_ms = 250;
    int rc = 0;

    /* Like the other obsctl commands, OBSD_STORE names the store. */
    if (!store && getenv("OBSD_STORE") && *getenv("OBSD_STORE"))
        store = getenv("OBSD_STORE");
    if (!config && access(OBSD_CONFIG_DEFAULT_PATH, R_OK) == 0)
        config = OBSD_CONFIG_DEFAULT_PATH;
    if ((config && obsd_config_load(&cfg, config, err, sizeof err) < 0) ||
        obsd_config_load_env(&cfg, NULL, err, sizeof err) < 0 ||
        (name && obsd_config_set(&cfg, "name", name, "--name", err, sizeof err) < 0) ||
        (store && obsd_config_set(&cfg, "store_dir", store, "--store", err, sizeof err) < 0) ||
        (socket && obsd_config_set(&cfg, "socket_path", socket, "--socket", err, sizeof err) < 0)) {
        fprintf(stderr, "obsctl %s: %s\n", cmd, err);
        rc = 2;
        goto out;
    }
    snprintf(t->name, sizeof t->name, "%s", cfg.name);
    int n = cfg.socket_path
                ? snprintf(t->socket_path, sizeof t->socket_path, "%s", cfg.socket_path)
                : snprintf(t->socket_path, sizeof t->socket_path, "%s/%s.sock", cfg.store_dir,
                           cfg.name);
    if (n < 0 || (size_t)n >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
        fprintf(stderr, "obsctl %s: socket path %s is too long (at most %zu bytes)\n", cmd,
                t->socket_path, sizeof(((struct sockaddr_un *)0)->sun_path) - 1);
        rc = 2;
    }
out:
    obsd_config_free_strings();
    return rc;
}

/* The message of a daemon that is not there. A daemon killed an instant ago
 * may still accept: its io_uring, torn down after the process has exited,
 * holds the listening socket a little longer, and the connection it queued
 * is then reset. That is the same answer as a refused connect. */
static void not_running(const struct control_target *t, const char *cmd, int err)
{
    char reason[128];
    snprintf(reason, sizeof reason, "%s%s", strerror(err),
             err == ECONNRESET || err == EPIPE ? " (the daemon has exited)" : "");
    reason[0] = (char)tolower((unsigned char)reason[0]);
    fprintf(stderr, "obsctl %s: no obsd running for segment '%s' (socket %s: %s)\n", cmd,
            t->name, t->socket_path, reason);
}

static bool daemon_gone(int err)
{
    return err == ECONNRESET || err == EPIPE;
}

int control_connect(const struct control_target *t, const char *cmd, const char *command,
                    int timeout_ms)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    size_t len = strnlen(t->socket_path, sizeof t->socket_path);
    if (len >= sizeof sa.sun_path) {   /* control_resolve() checked; be safe */
        fprintf(stderr, "obsctl %s: socket path %s is too long\n", cmd, t->socket_path);
        return -1;
    }
    memcpy(sa.sun_path, t->socket_path, len);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        fprintf(stderr, "obsctl %s: socket: %s\n", cmd, strerror(errno));
        return -1;
    }
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        not_running(t, cmd, errno);
        close(fd);
        return -1;
    }
    if (timeout_ms > 0) {
        struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    }
    char line[64];
    int n = snprintf(line, sizeof line, "%s\n", command);
    if (send(fd, line, (size_t)n, MSG_NOSIGNAL) != n) {
        if (daemon_gone(errno))
            not_running(t, cmd, errno);
        else
            fprintf(stderr, "obsctl %s: cannot send to %s: %s\n", cmd, t->socket_path,
                    strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

void control_reader_init(struct control_reader *r, int fd, size_t max_line)
{
    memset(r, 0, sizeof *r);
    r->fd = fd;
    r->max_line = max_line;
}

void control_reader_free(struct control_reader *r)
{
    free(r->buf);
    r->buf = NULL;
}

int control_reader_next(struct control_reader *r, char **line)
{
    char *nl = r->len > r->start ? memchr(r->buf + r->start, '\n', r->len - r->start) : NULL;
    if (!nl) {
        if (r->len - r->start > r->max_line)
            return -1;
        return 0;
    }
    *nl = '\0';
    *line = r->buf + r->start;
    r->start = (size_t)(nl - r->buf) + 1;
    return 1;
}

long control_reader_fill(struct control_reader *r)
{
    if (r->start) {     /* drop consumed lines */
        memmove(r->buf, r->buf + r->start, r->len - r->start);
        r->len -= r->start;
        r->start = 0;
    }
    if (r->cap - r->len < 65536) {
        size_t cap = r->cap ? r->cap * 2 : 131072;
        char *p = realloc(r->buf, cap);
        if (!p) {
            errno = ENOMEM;
            return -1;
        }
        r->buf = p;
        r->cap = cap;
    }
    ssize_t n;
    do
        n = read(r->fd, r->buf + r->len, r->cap - r->len - 1);
    while (n < 0 && errno == EINTR);
    if (n > 0)
        r->len += (size_t)n;
    return n;
}

char *control_request_line(const struct control_target *t, const char *cmd, const char *command,
                           int timeout_ms)
{
    int fd = control_connect(t, cmd, command, timeout_ms);
    if (fd < 0)
        return NULL;
    struct control_reader r;
    control_reader_init(&r, fd, 64u << 20);
    char *line = NULL, *copy = NULL;
    for (;;) {
        int got = control_reader_next(&r, &line);
        if (got == 1) {
            copy = strdup(line);
            break;
        }
        if (got < 0) {
            fprintf(stderr, "obsctl %s: reply from %s is too long\n", cmd, t->socket_path);
            break;
        }
        long n = control_reader_fill(&r);
        if (n == 0) {
            fprintf(stderr, "obsctl %s: %s closed the connection without a reply\n", cmd,
                    t->socket_path);
            break;
        }
        if (n < 0 && daemon_gone(errno) && r.len == 0) {
            not_running(t, cmd, errno);
            break;
        }
        if (n < 0) {
            fprintf(stderr, "obsctl %s: reading %s: %s\n", cmd, t->socket_path,
                    errno == EAGAIN || errno == EWOULDBLOCK ? "no reply in time"
                                                           : strerror(errno));
            break;
        }
    }
    control_reader_free(&r);
    close(fd);
    return copy;
}
