/*
 * obsd.c: the obsd daemon, a thin main around the collector library.
 *
 * It builds the configuration (defaults < obsd.conf < OBSD_<KEY> environment
 * < command-line flags), creates the store directory, applies the CPU mask,
 * detaches from the terminal unless --foreground, and runs the collector
 * until SIGTERM or SIGINT. One daemon serves run after run.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <syslog.h>
#include <unistd.h>

#include "daemon/config.h"
#include "obsd/obsd.h"
#include "obsd/obsd_collector.h"

#ifndef OBSD_VERSION
#define OBSD_VERSION "unknown"
#endif

static int log_level = 2;
static bool log_to_syslog;

static void logmsg(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void logmsg(int level, const char *fmt, ...)
{
    static const int syslog_prio[] = {LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG};
    if (level > log_level)
        return;
    va_list ap;
    va_start(ap, fmt);
    if (log_to_syslog) {
        vsyslog(syslog_prio[level], fmt, ap);
    } else {
        fprintf(stderr, "obsd: %s: ", obsd_config_log_level_name(level));
        vfprintf(stderr, fmt, ap);
        fputc('\n', stderr);
    }
    va_end(ap);
}

static void usage(FILE *out)
{
    fprintf(out,
        "usage: obsd [OPTIONS]\n"
        "\n"
        "The obsd collector: creates the shared-memory segment /dev/shm/obsd.NAME,\n"
        "drains the producers' rings, and stores run snapshots in an LMDB store.\n"
        "It serves run after run until SIGTERM or SIGINT.\n"
        "\n"
        "options:\n"
        "  -n, --name NAME        segment name (key 'name'; default obsd)\n"
        "  -s, --store DIR        store directory, created if missing (key 'store_dir';\n"
        "                         default /var/lib/obsd)\n"
        "  -c, --config FILE      config file (default %s, read if it exists)\n"
        "  -t, --tokenizer FILE   tokenizer.json for token metrics (key 'tokenizer')\n"
        "  -S, --set KEY=VALUE    set any obsd.conf key (repeatable)\n"
        "  -f, --foreground       stay attached and log to stderr; without it obsd detaches\n"
        "                         (double fork, setsid) and logs to syslog (daemon facility)\n"
        "                         once it has started\n"
        "  -p, --pidfile FILE     write the daemon's pid to FILE\n"
        "      --print-config     print the effective configuration and exit\n"
        "  -h, --help             this help\n"
        "  -V, --version          print the version\n"
        "\n"
        "Precedence: defaults < config file < OBSD_<KEY> environment variables\n"
        "(e.g. OBSD_PUBLISH_INTERVAL_MS=500) < options, later options winning.\n"
        "Bad keys or values exit with status 2; see obsd(8) and obsd.conf(5).\n",
        OBSD_CONFIG_DEFAULT_PATH);
}

/* --name, --store, --tokenizer and --set, kept in command-line order and
 * applied after the file and the environment. */
struct flag_setting {
    const char *key;        /* NULL: value is a KEY=VALUE assignment */
    const char *value;
    const char *origin;
};

static int mkdir_p(const char *path, mode_t mode)
{
    char buf[PATH_MAX];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf) {
        errno = ENAMETOOLONG;
        return -1;
    }
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(buf, mode) < 0 && errno != EEXIST)
            return -1;
        *p = '/';
    }
    if (mkdir(buf, mode) < 0 && errno != EEXIST)
        return -1;
    struct stat st;
    if (stat(buf, &st) < 0)
        return -1;
    if (!S_ISDIR(st.st_mode)) {
        errno = ENOTDIR;
        return -1;
    }
    return 0;
}

/* ---- detaching --------------------------------------------------------- */

/* Once detached, whatever the collector writes to stderr goes to syslog. */
static void *stderr_to_syslog(void *arg)
{
    FILE *in = fdopen((int)(intptr_t)arg, "r");
    char line[1024];
    while (in && fgets(line, sizeof line, in)) {
        line[strcspn(line, "\n")] = '\0';
        syslog(LOG_NOTICE, "%s", line);
    }
    if (in)
        fclose(in);
    return NULL;
}

/* Double fork and setsid. The original process waits on a pipe until the
 * daemon reports that the collector started (so `obsd` without --foreground
 * exits 0 only once the segment and socket exist) and exits with its status.
 * Returns the write end of that pipe in the daemon. */
static int detach(void)
{
    int ready[2];
    if (pipe2(ready, O_CLOEXEC) < 0) {
        logmsg(0, "pipe: %s", strerror(errno));
        exit(1);
    }
    pid_t pid = fork();
    if (pid < 0) {
        logmsg(0, "fork: %s", strerror(errno));
        exit(1);
    }
    if (pid > 0) {
        close(ready[1]);
        unsigned char status = 1;
        ssize_t n;
        do
            n = read(ready[0], &status, 1);
        while (n < 0 && errno == EINTR);
        waitpid(pid, NULL, 0);
        _exit(n == 1 ? status : 1);
    }
    close(ready[0]);
    if (setsid() < 0) {
        logmsg(0, "setsid: %s", strerror(errno));
        _exit(1);
    }
    pid = fork();
    if (pid < 0) {
        logmsg(0, "fork: %s", strerror(errno));
        _exit(1);
    }
    if (pid > 0)
        _exit(0);
    if (chdir("/") < 0)
        logmsg(1, "chdir /: %s", strerror(errno));
    int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (devnull >= 0) {
        dup2(devnull, STDIN_FILENO);
        dup2(devnull, STDOUT_FILENO);
        close(devnull);
    }
    return ready[1];
}

/* In the daemon, after the collector started: stderr to syslog, then tell
 * the waiting parent. */
static void detach_done(int ready_fd)
{
    int p[2];
    openlog("obsd", LOG_PID, LOG_DAEMON);
    log_to_syslog = true;
    if (pipe2(p, O_CLOEXEC) == 0) {
        pthread_t t;
        dup2(p[1], STDERR_FILENO);
        close(p[1]);
        if (pthread_create(&t, NULL, stderr_to_syslog, (void *)(intptr_t)p[0]) == 0)
            pthread_detach(t);
        else
            close(p[0]);
    }
    unsigned char ok = 0;
    if (write(ready_fd, &ok, 1) != 1)
        logmsg(1, "cannot report readiness: %s", strerror(errno));
    close(ready_fd);
}

/* ---- signals ----------------------------------------------------------- */

static struct obsd_collector *volatile running;
static volatile sig_atomic_t stop_requested;

static void on_stop_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
    struct obsd_collector *c = running;
    if (c)
        obsd_collector_stop(c);
}

static void install_signals(void)
{
    struct sigaction sa = {0};
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
}

/* ---- main -------------------------------------------------------------- */

/* The segment is a sparse file: its rings take pages only when producer
 * threads claim them. Say at startup when /dev/shm cannot hold all of them
 * (a container's default /dev/shm is 64 MiB), because the threads past that
 * will have their records refused and counted as dropped. */
static void warn_if_shm_small(const char *name)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "/dev/shm/obsd.%s", name);
    struct stat st;
    struct statvfs fs;
    if (stat(path, &st) < 0 || statvfs("/dev/shm", &fs) < 0)
        return;
    uint64_t have = (uint64_t)fs.f_bavail * fs.f_frsize + (uint64_t)st.st_blocks * 512;
    if (have < (uint64_t)st.st_size)
        logmsg(1, "/dev/shm has room for %llu MiB of the segment's %llu MiB: producer threads "
                  "past that get no ring (their records are dropped and counted); enlarge "
                  "/dev/shm or lower max_producers or ring_size",
               (unsigned long long)(have >> 20), (unsigned long long)((uint64_t)st.st_size >> 20));
}

int main(int argc, char **argv)
{
    static const struct option options[] = {
        {"name", required_argument, NULL, 'n'},
        {"store", required_argument, NULL, 's'},
        {"config", required_argument, NULL, 'c'},
        {"tokenizer", required_argument, NULL, 't'},
        {"set", required_argument, NULL, 'S'},
        {"foreground", no_argument, NULL, 'f'},
        {"pidfile", required_argument, NULL, 'p'},
        {"print-config", no_argument, NULL, 'P'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {0, 0, 0, 0},
    };
    struct flag_setting *flags = calloc((size_t)argc + 1, sizeof *flags);
    size_t n_flags = 0;
    const char *config_path = NULL, *pidfile = NULL;
    bool foreground = false, print_config = false;
    int opt;

    if (!flags) {
        fprintf(stderr, "obsd: out of memory\n");
        return 1;
    }
    opterr = 0;
    while ((opt = getopt_long(argc, argv, ":n:s:c:t:S:fp:hV", options, NULL)) != -1) {
        switch (opt) {
        case 'n':
            flags[n_flags++] = (struct flag_setting){"name", optarg, "--name"};
            break;
        case 's':
            flags[n_flags++] = (struct flag_setting){"store_dir", optarg, "--store"};
            break;
        case 't':
            flags[n_flags++] = (struct flag_setting){"tokenizer", optarg, "--tokenizer"};
            break;
        case 'S':
            flags[n_flags++] = (struct flag_setting){NULL, optarg, "--set"};
            break;
        case 'c':
            config_path = optarg;
            break;
        case 'f':
            foreground = true;
            break;
        case 'p':
            pidfile = optarg;
            break;
        case 'P':
            print_config = true;
            break;
        case 'h':
            usage(stdout);
            free(flags);
            return 0;
        case 'V':
            printf("obsd %s (shared-memory ABI %d)\n", OBSD_VERSION, OBSD_ABI_VERSION);
            free(flags);
            return 0;
        case ':':
            fprintf(stderr, "obsd: option '%s' needs a value\n", argv[optind - 1]);
            free(flags);
            return 2;
        default:
            fprintf(stderr, "obsd: unknown option '%s' (see obsd --help)\n", argv[optind - 1]);
            free(flags);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "obsd: unexpected argument '%s' (see obsd --help)\n", argv[optind]);
        free(flags);
        return 2;
    }

    struct obsd_collector_config cfg;
    char err[1024];
    int status = 2;
    obsd_collector_config_defaults(&cfg);

    if (!config_path && access(OBSD_CONFIG_DEFAULT_PATH, F_OK) == 0)
        config_path = OBSD_CONFIG_DEFAULT_PATH;
    if (config_path && obsd_config_load(&cfg, config_path, err, sizeof err) < 0)
        goto config_error;
    if (obsd_config_load_env(&cfg, NULL, err, sizeof err) < 0)
        goto config_error;
    for (size_t i = 0; i < n_flags; i++) {
        const struct flag_setting *f = &flags[i];
        int rc = f->key ? obsd_config_set(&cfg, f->key, f->value, f->origin, err, sizeof err)
                        : obsd_config_set_assignment(&cfg, f->value, f->origin, err, sizeof err);
        if (rc < 0)
            goto config_error;
    }
    free(flags);
    flags = NULL;
    log_level = cfg.log_level;

    if (!cfg.socket_path) {
        /* The default socket path must fit sockaddr_un too. */
        size_t len = strlen(cfg.store_dir) + 1 + strlen(cfg.name) + 5;
        if (len >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
            snprintf(err, sizeof err, "store_dir: the control socket %s/%s.sock would be longer "
                     "than %zu bytes; set socket_path to a shorter path", cfg.store_dir,
                     cfg.name, sizeof(((struct sockaddr_un *)0)->sun_path) - 1);
            goto config_error;
        }
    }
    if (print_config) {
        obsd_config_write(&cfg, stdout);
        obsd_config_free_strings();
        return 0;
    }

    if (cfg.cpus) {
        cpu_set_t set;
        obsd_config_parse_cpus(cfg.cpus, &set, err, sizeof err);
        if (sched_setaffinity(0, sizeof set, &set) < 0) {
            snprintf(err, sizeof err, "cpus: '%s' names no CPU this process may run on (%s)",
                     cfg.cpus, strerror(errno));
            goto config_error;
        }
    }
    if (mkdir_p(cfg.store_dir, 0750) < 0) {
        logmsg(0, "store_dir %s: cannot create: %s", cfg.store_dir, strerror(errno));
        status = 1;
        goto out;
    }

    int ready_fd = -1;
    if (!foreground)
        ready_fd = detach();

    install_signals();
    struct obsd_collector *c = obsd_collector_new(&cfg, err, sizeof err);
    if (!c) {
        logmsg(0, "%s", err);
        status = 1;
        goto out;    /* a detached daemon's parent sees the pipe close and exits 1 */
    }
    running = c;
    if (stop_requested)    /* a signal that came before the collector existed */
        obsd_collector_stop(c);
    if (pidfile) {
        FILE *pf = fopen(pidfile, "w");
        if (!pf || fprintf(pf, "%ld\n", (long)getpid()) < 0 || fclose(pf) != 0) {
            logmsg(0, "pidfile %s: %s", pidfile, strerror(errno));
            running = NULL;
            obsd_collector_free(c);
            status = 1;
            goto out;
        }
    }
    logmsg(2, "collecting segment '%s' into %s (pid %ld)", cfg.name, cfg.store_dir,
           (long)getpid());
    warn_if_shm_small(cfg.name);
    if (ready_fd >= 0)
        detach_done(ready_fd);

    status = obsd_collector_run(c) == 0 ? 0 : 1;
    running = NULL;
    obsd_collector_free(c);
    logmsg(2, "stopped");
    if (pidfile)
        unlink(pidfile);
    goto out;

config_error:
    fprintf(stderr, "obsd: %s\n", err);
    status = 2;
out:
    free(flags);
    obsd_config_free_strings();
    return status;
}
