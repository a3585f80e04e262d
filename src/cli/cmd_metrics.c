/*
 * cmd_metrics.c: 'obsctl metrics', a run's latest snapshot in the
 * OpenMetrics text format, printed once or served over HTTP at /metrics for
 * Prometheus to scrape (libmicrohttpd).
 *
 * The server opens the store read-only once and reads it in short read
 * transactions at each scrape (the run record, then its latest snapshot), so
 * it never holds a reader across scrapes and needs no collector: it serves a
 * live store or a copied one alike. Without RUN each scrape follows the most
 * recently started run, so a long-lived exporter moves on to the next run.
 */
#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <microhttpd.h>

#include "cli/cli_openmetrics.h"
#include "cli/cli_store.h"
#include "cli/commands.h"

static void metrics_usage(FILE *out)
{
    fprintf(out,
        "usage: obsctl metrics [RUN] [--store DIR] [--format openmetrics|prometheus]\n"
        "       obsctl metrics [RUN] [--store DIR] --listen ADDR:PORT\n"
        "\n"
        "Prints the latest snapshot of RUN (default: the most recently started run;\n"
        "RUN may be 'last') in the OpenMetrics text format: counters as\n"
        "obsd_<name>_total, gauges as obsd_<name>, each series as a summary\n"
        "obsd_<name> (quantiles 0.5, 0.9, 0.99, 0.999, _sum, _count) and a histogram\n"
        "obsd_<name>_histogram (cumulative le buckets from the snapshot's buckets),\n"
        "plus obsd_run_info{run,name,state} and gauges of the run's state\n"
        "(obsd_run_final, obsd_run_pending_tasks, obsd_run_incomplete_drain, ...).\n"
        "Every sample has the label run=\"<run id>\"; names keep [a-zA-Z0-9_:] and\n"
        "map every other character to '_'.\n"
        "\n"
        "With --listen it serves that text over HTTP at /metrics until SIGINT or\n"
        "SIGTERM, reading the store at each scrape (no collector needed). The reply\n"
        "is OpenMetrics 1.0.0, or the Prometheus text format 0.0.4 when the Accept\n"
        "header prefers text/plain. Without RUN each scrape serves the most recently\n"
        "started run. The bound address goes to standard error:\n"
        "  obsctl metrics: serving http://127.0.0.1:9464/metrics\n"
        "\n"
        "  --format F        openmetrics (default) or prometheus (text format 0.0.4)\n"
        "  --listen A:P      serve on address A, port P: 127.0.0.1:9464, [::1]:9464,\n"
        "                    :9464 for every address; port 0 picks a free port\n"
        CLI_STORE_HELP
        "  --help            this text\n"
        "\n"
        "Exit status: 0 (with --listen: stopped by SIGINT or SIGTERM), 1 when the\n"
        "store or run cannot be read or the address cannot be bound, 2 for bad\n"
        "arguments.\n");
}

/* ---- one exposition ---- */

/* The exposition of the run (run_id NULL: the most recently started); NULL
 * with the reason in why. */
static char *scrape(struct store *st, const char *run_id, enum om_format fmt, size_t *len, char *why,
                    size_t whylen)
{
    struct store_run_info r;
    int rc = run_id ? store_find_run(st, run_id, &r) : store_last_run(st, &r);
    struct snapshot *s = NULL;
    if (rc == STORE_OK)
        rc = store_latest(st, r.id, &s);
    if (rc != STORE_OK) {
        snprintf(why, whylen, "%s", store_error(st));
        return NULL;
    }
    char *text = om_render(s, &r, r.has_final && r.final_seq == s->seq, fmt, len);
    if (!text)
        snprintf(why, whylen, "out of memory");
    snapshot_free(s);
    return text;
}

static int print_once(const char *store_opt, const char *run_id, enum om_format fmt)
{
    struct store_run_info r;
    int rc;
    struct store *st = cli_store_open_run("metrics", store_opt, run_id, &r, &rc);
    if (!st)
        return rc;
    char why[1024];
    size_t len;
    char *text = scrape(st, r.id, fmt, &len, why, sizeof why);
    store_close(st);
    if (!text) {
        fprintf(stderr, "obsctl metrics: %s\n", why);
        return 1;
    }
    rc = fwrite(text, 1, len, stdout) != len || fflush(stdout) ? 1 : 0;
    if (rc)
        fprintf(stderr, "obsctl metrics: cannot write the output: %s\n", strerror(errno));
    free(text);
    cli_print_state_notes(stderr, "obsctl metrics: ", r.state, r.n_pending_tasks, false, r.has_final);
    return rc;
}

/* ---- HTTP ---- */

struct server {
    struct store *st;       /* used by the HTTP thread only, once serving */
    const char *run_id;     /* NULL: follow the most recently started run */
};

static enum MHD_Result reply(struct MHD_Connection *conn, unsigned status, const char *type, char *body,
                             size_t len, bool owned, const char *allow)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(
        len, body, owned ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
    if (!resp) {
        if (owned)
            free(body);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    if (allow)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, allow);
    enum MHD_Result rc = MHD_queue_response(conn, status, resp);
    MHD_destroy_response(resp);
    return rc;
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                              const char *version, const char *upload_data, size_t *upload_data_size,
                              void **req_cls)
{
    (void)version;
    (void)upload_data;
    struct server *srv = cls;
    static const char text_type[] = "text/plain; charset=utf-8";
    /* Answer once the whole request is in (the second call): a reply queued
     * earlier makes libmicrohttpd close the connection instead of keeping it
     * alive for the next scrape. A body, which GET has no use for, is skipped. */
    static int seen;
    if (!*req_cls) {
        *req_cls = &seen;
        return MHD_YES;
    }
    if (*upload_data_size) {
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (strcmp(method, MHD_HTTP_METHOD_GET) && strcmp(method, MHD_HTTP_METHOD_HEAD)) {
        static char msg[] = "only GET and HEAD\n";
        return reply(conn, MHD_HTTP_METHOD_NOT_ALLOWED, text_type, msg, strlen(msg), false, "GET, HEAD");
    }
    if (!strcmp(url, "/")) {
        static char msg[] = "obsctl metrics: the metrics are at /metrics\n";
        return reply(conn, MHD_HTTP_OK, text_type, msg, strlen(msg), false, NULL);
    }
    if (strcmp(url, "/metrics")) {
        static char msg[] = "not found: the metrics are at /metrics\n";
        return reply(conn, MHD_HTTP_NOT_FOUND, text_type, msg, strlen(msg), false, NULL);
    }
    enum om_format fmt = om_negotiate(MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_ACCEPT));
    char why[1024];
    size_t len;
    char *body = scrape(srv->st, srv->run_id, fmt, &len, why, sizeof why);
    if (!body) {
        /* Prometheus marks the target down (up == 0) and shows this text */
        fprintf(stderr, "obsctl metrics: scrape failed: %s\n", why);
        char *msg = NULL;
        if (asprintf(&msg, "obsctl metrics: %s\n", why) < 0)
            return MHD_NO;
        return reply(conn, MHD_HTTP_SERVICE_UNAVAILABLE, text_type, msg, strlen(msg), true, NULL);
    }
    return reply(conn, MHD_HTTP_OK, om_content_type(fmt), body, len, true, NULL);
}

/* Splits "HOST:PORT", "[V6]:PORT" or ":PORT" (host empty: every address).
 * false when arg is none of them or PORT is not 0..65535. */
static bool parse_listen(const char *arg, char *host, size_t hlen, char *port, size_t plen)
{
    const char *colon;
    if (arg[0] == '[') {
        const char *close = strchr(arg, ']');
        if (!close || close[1] != ':' || (size_t)(close - arg - 1) >= hlen || close == arg + 1)
            return false;
        snprintf(host, hlen, "%.*s", (int)(close - arg - 1), arg + 1);
        colon = close + 1;
    } else {
        colon = strrchr(arg, ':');
        if (!colon || (size_t)(colon - arg) >= hlen || memchr(arg, ':', (size_t)(colon - arg)))
            return false;
        snprintf(host, hlen, "%.*s", (int)(colon - arg), arg);
    }
    uint64_t p;
    if (!cli_parse_u64(colon + 1, &p) || p > 65535 || strlen(colon + 1) >= plen)
        return false;
    snprintf(port, plen, "%s", colon + 1);
    return true;
}

/* A listening socket on host:port; -1 after printing why. */
static int listen_on(const char *arg, const char *host, const char *port, char *bound, size_t blen)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV}, *res;
    int rc = getaddrinfo(*host ? host : NULL, port, &hints, &res);
    if (rc) {
        fprintf(stderr, "obsctl metrics: --listen %s: %s\n", arg, gai_strerror(rc));
        return -1;
    }
    int fd = -1, err = 0;
    /* every address: prefer one IPv6 socket that takes IPv4 too */
    for (int pass = 0; pass < 2 && fd < 0; pass++)
        for (struct addrinfo *a = res; a && fd < 0; a = a->ai_next) {
            if (!*host && (pass == 0) != (a->ai_family == AF_INET6))
                continue;
            if (*host && pass == 1)
                break;
            fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
            if (fd < 0) {
                err = errno;
                continue;
            }
            int one = 1, zero = 0;
            setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
            if (a->ai_family == AF_INET6 && !*host)
                setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
            if (bind(fd, a->ai_addr, a->ai_addrlen) < 0 || listen(fd, 64) < 0) {
                err = errno;
                close(fd);
                fd = -1;
            }
        }
    freeaddrinfo(res);
    if (fd < 0) {
        fprintf(stderr, "obsctl metrics: cannot listen on %s: %s\n", arg, strerror(err ? err : EADDRNOTAVAIL));
        return -1;
    }
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    char h[NI_MAXHOST], p[NI_MAXSERV];
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0 &&
        getnameinfo((struct sockaddr *)&ss, sl, h, sizeof h, p, sizeof p, NI_NUMERICHOST | NI_NUMERICSERV) == 0)
        snprintf(bound, blen, ss.ss_family == AF_INET6 ? "[%s]:%s" : "%s:%s", h, p);
    else
        snprintf(bound, blen, "%s", arg);
    return fd;
}

static int serve(const char *store_opt, const char *run_id, const char *listen_arg)
{
    char host[256], port[16], bound[NI_MAXHOST + NI_MAXSERV + 4];
    if (!parse_listen(listen_arg, host, sizeof host, port, sizeof port)) {
        fprintf(stderr, "obsctl metrics: --listen needs ADDR:PORT (127.0.0.1:9464, [::1]:9464 or :9464), "
                        "not '%s'\n", listen_arg);
        return 2;
    }
    /* Check the store and the run before serving: a typo fails now, not at each scrape. */
    struct store_run_info r;
    int rc;
    struct store *st = run_id && strcmp(run_id, "last") ? cli_store_open_run("metrics", store_opt, run_id, &r, &rc)
                                                        : cli_store_open("metrics", store_opt, &rc);
    if (!st)
        return rc;
    int fd = listen_on(listen_arg, host, port, bound, sizeof bound);
    if (fd < 0) {
        store_close(st);
        return 1;
    }
    struct server srv = {.st = st, .run_id = run_id && strcmp(run_id, "last") ? r.id : NULL};

    /* SIGINT and SIGTERM are taken by sigwait() below; blocked before the
     * HTTP thread starts, so that it inherits the mask. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
    struct MHD_Daemon *d = MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO | MHD_USE_ERROR_LOG, 0, NULL, NULL, handle, &srv,
        MHD_OPTION_LISTEN_SOCKET, fd, MHD_OPTION_CONNECTION_TIMEOUT, 10u, MHD_OPTION_CONNECTION_LIMIT, 64u,
        MHD_OPTION_END);
    if (!d) {
        fprintf(stderr, "obsctl metrics: cannot start the HTTP server on %s\n", bound);
        close(fd);
        store_close(st);
        return 1;
    }
    fprintf(stderr, "obsctl metrics: serving http://%s/metrics (run: %s)\n", bound,
            srv.run_id ? srv.run_id : "the most recently started");
    int sig = 0;
    while (sigwait(&set, &sig) != 0)
        ;
    MHD_stop_daemon(d);   /* closes the listening socket too */
    store_close(st);
    fprintf(stderr, "obsctl metrics: stopped (%s)\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
    return 0;
}

int cmd_metrics(int argc, char **argv)
{
    static const struct option options[] = {
        {"store", required_argument, NULL, 's'},
        {"format", required_argument, NULL, 'f'},
        {"listen", required_argument, NULL, 'l'},
        {"help", no_argument, NULL, 'h'},
        {0, 0, 0, 0},
    };
    struct cli_args a = {.cmd = "metrics", .usage = metrics_usage};
    const char *run_id, *format = NULL, *listen_arg = NULL;
    int opt;
    while ((opt = cli_next_option(&a, argc, argv, options)) > 0) {
        switch (opt) {
        case 'f': format = optarg; break;
        case 'l': listen_arg = optarg; break;
        }
    }
    if (opt < 0)
        return a.status;
    if (cli_run_operand("metrics", argc, argv, &run_id))
        return 2;
    enum om_format fmt = OM_OPENMETRICS;
    if (format && !strcmp(format, "prometheus"))
        fmt = OM_PROMETHEUS;
    else if (format && strcmp(format, "openmetrics")) {
        fprintf(stderr, "obsctl metrics: --format must be openmetrics or prometheus, not '%s'\n", format);
        return 2;
    }
    if (listen_arg && format) {
        fprintf(stderr, "obsctl metrics: --format applies without --listen (the server picks the format from "
                        "each request's Accept header)\n");
        return 2;
    }
    return listen_arg ? serve(a.store, run_id, listen_arg) : print_once(a.store, run_id, fmt);
}
