/*
 * cli_store.c: helpers of the store-reading obsctl commands (cli_store.h).
 */
#include "cli/cli_store.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "daemon/config.h"

int cli_store_dir(const char *cmd, const char *opt, char *out, size_t outlen)
{
    const char *env = getenv("OBSD_STORE"), *env_dir = getenv("OBSD_STORE_DIR");
    if (opt && *opt)
        snprintf(out, outlen, "%s", opt);
    else if (env && *env)
        snprintf(out, outlen, "%s", env);
    else if (env_dir && *env_dir)
        snprintf(out, outlen, "%s", env_dir);
    else if (access(OBSD_CONFIG_DEFAULT_PATH, R_OK) == 0) {
        struct obsd_collector_config cfg;
        char err[1024];
        memset(&cfg, 0, sizeof cfg);
        cfg.store_dir = CLI_DEFAULT_STORE;
        if (obsd_config_load(&cfg, OBSD_CONFIG_DEFAULT_PATH, err, sizeof err) < 0) {
            fprintf(stderr, "obsctl %s: %s (or name the store with --store)\n", cmd, err);
            obsd_config_free_strings();
            return 2;
        }
        snprintf(out, outlen, "%s", cfg.store_dir ? cfg.store_dir : CLI_DEFAULT_STORE);
        obsd_config_free_strings();
    } else {
        snprintf(out, outlen, "%s", CLI_DEFAULT_STORE);
    }
    return 0;
}

struct store *cli_store_open(const char *cmd, const char *store_opt, int *status)
{
    char dir[4096];
    if ((*status = cli_store_dir(cmd, store_opt, dir, sizeof dir)) != 0)
        return NULL;
    char err[1024];
    struct store *st = store_open(dir, 0, false, true, err, sizeof err);
    if (!st) {
        fprintf(stderr, "obsctl %s: %s\n", cmd, err);
        *status = 1;
    }
    return st;
}

struct store *cli_store_open_run(const char *cmd, const char *store_opt, const char *run_id,
                                 struct store_run_info *run, int *status)
{
    struct store *st = cli_store_open(cmd, store_opt, status);
    if (!st)
        return NULL;
    if (run_id && !strcmp(run_id, "last"))
        run_id = NULL;
    if ((*status = cli_pick_run(cmd, st, run_id, run)) != 0) {
        store_close(st);
        return NULL;
    }
    return st;
}

int cli_store_failed(const char *cmd, struct store *st)
{
    fprintf(stderr, "obsctl %s: %s\n", cmd, store_error(st));
    return 1;
}

int cli_pick_run(const char *cmd, struct store *st, const char *run_id, struct store_run_info *out)
{
    int rc = run_id ? store_find_run(st, run_id, out) : store_last_run(st, out);
    if (rc == STORE_OK)
        return 0;
    fprintf(stderr, "obsctl %s: %s%s\n", cmd, store_error(st),
            rc == STORE_NOT_FOUND && run_id ? " ('obsctl runs' lists the runs)" : "");
    return 1;
}

void cli_print_padded(FILE *out, const char *s, size_t columns)
{
    fputs(s, out);
    for (size_t k = obsd_utf8_width(s); k < columns; k++)
        fputc(' ', out);
}

double cli_now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void cli_format_time(uint64_t ns, char *buf, size_t len)
{
    time_t secs = (time_t)(ns / 1000000000ULL);
    struct tm tm;
    if (!gmtime_r(&secs, &tm)) {
        snprintf(buf, len, "%" PRIu64 "ns", ns);
        return;
    }
    char day[32];
    strftime(day, sizeof day, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf, len, "%s.%03uZ", day, (unsigned)(ns / 1000000ULL % 1000));
}

void cli_format_number(double v, char *buf, size_t len)
{
    if (isnan(v))
        snprintf(buf, len, "-");
    else if (isfinite(v) && v == floor(v) && fabs(v) < 1e15)
        snprintf(buf, len, "%.0f", v);
    else
        snprintf(buf, len, "%.6g", v);
}

int cli_print_state_notes(FILE *out, const char *prefix, enum obsd_run_state state,
                          uint64_t n_pending, bool is_final, bool has_final)
{
    int lines = 0;
    if (state == OBSD_RUN_COMPLETE && n_pending > 0) {
        fprintf(out, "%sincomplete drain: %" PRIu64 " tokenizations pending (token counts are partial)\n",
                prefix, n_pending);
        lines++;
    }
    if (state == OBSD_RUN_INTERRUPTED) {
        fprintf(out, "%sinterrupted: the run was stopped early; statistics are not exact%s\n", prefix,
                n_pending ? " and token counts are partial" : "");
        lines++;
    }
    if (!is_final && !has_final && state != OBSD_RUN_COMPLETE && state != OBSD_RUN_INTERRUPTED) {
        fprintf(out, "%sno final snapshot: the run is still %s, or its collector stopped before the end\n",
                prefix, obsd_run_state_name(state));
        lines++;
    }
    return lines;
}

int cli_print_json(FILE *out, json_t *j)
{
    if (!j)
        return 1;
    int rc = json_dumpf(j, out, JSON_INDENT(2));
    fputc('\n', out);
    json_decref(j);
    return rc ? 1 : 0;
}

json_t *cli_run_json(const struct store_run_info *r)
{
    char started[64];
    cli_format_time(r->start_ns, started, sizeof started);
    json_t *o = json_pack("{s:o,s:o,s:I,s:s,s:I,s:s,s:I,s:I,s:I,s:I,s:b,s:b}",
        "run", obsd_json_text(r->id), "name", obsd_json_text(r->name), "run_seq", (json_int_t)r->run_seq,
        "state", obsd_run_state_name(r->state), "start_ns", (json_int_t)r->start_ns,
        "started", started, "snapshots", (json_int_t)r->n_snapshots,
        "last_seq", (json_int_t)r->last_seq, "last_timestamp_ns", (json_int_t)r->last_timestamp_ns,
        "n_pending_tasks", (json_int_t)r->n_pending_tasks, "final", r->has_final,
        "incomplete_drain", r->state == OBSD_RUN_COMPLETE && r->n_pending_tasks > 0);
    if (o)
        json_object_set_new(o, "final_seq", r->has_final ? json_integer((json_int_t)r->final_seq)
                                                         : json_null());
    return o;
}

static json_t *num_json(double v)
{
    return isfinite(v) ? json_real(v) : json_null();
}

json_t *cli_point_json(const struct store_point *p)
{
    if (p->is_series)
        return json_pack("{s:I,s:I,s:I,s:o,s:o,s:o,s:b,s:{s:o,s:o,s:o,s:o}}", "seq", (json_int_t)p->seq,
                         "timestamp_ns", (json_int_t)p->timestamp_ns, "count", (json_int_t)p->count,
                         "total", num_json(p->total), "min", num_json(p->min), "max", num_json(p->max),
                         "exact", p->exact, "percentiles", "99.9", num_json(p->pct[STORE_POINT_P999]),
                         "99.0", num_json(p->pct[STORE_POINT_P99]), "90.0", num_json(p->pct[STORE_POINT_P90]),
                         "50.0", num_json(p->pct[STORE_POINT_P50]));
    return json_pack("{s:I,s:I,s:o}", "seq", (json_int_t)p->seq, "timestamp_ns", (json_int_t)p->timestamp_ns,
                     "value", p->is_float ? num_json(p->fvalue) : json_integer(p->ivalue));
}

bool cli_parse_u64(const char *s, uint64_t *out)
{
    if (!s || !*s || *s == '-' || *s == '+')
        return false;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end)
        return false;
    *out = v;
    return true;
}

int cli_next_option(struct cli_args *a, int argc, char **argv, const struct option *options)
{
    if (!a->started) {
        /* 0, not 1: getopt starts over, as tests run commands in-process too */
        optind = 0;
        opterr = 0;
        a->started = true;
    }
    for (;;) {
        int opt = getopt_long(argc, argv, ":h", options, NULL);
        switch (opt) {
        case -1:
            return 0;
        case 's':
            a->store = optarg;
            break;
        case 'h':
            a->usage(stdout);
            a->status = 0;
            return -1;
        case ':':
        case '?':
            a->status = cli_bad_option(a->cmd, opt, optopt, argv, optind);
            return -1;
        default:
            return opt;
        }
    }
}

int cli_run_operand(const char *cmd, int argc, char **argv, const char **run_id)
{
    *run_id = optind < argc ? argv[optind++] : NULL;
    if (optind < argc)
        return cli_usage_error(cmd, "unexpected argument '%s'", argv[optind]);
    return 0;
}

int cli_usage_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "obsctl %s: ", cmd);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\nTry 'obsctl %s --help'.\n", cmd);
    va_end(ap);
    return 2;
}

int cli_bad_option(const char *cmd, int opt, int optopt_value, char **argv, int optind_value)
{
    const char *arg = argv[optind_value - 1];
    if (opt == ':')
        return cli_usage_error(cmd, "option '%s' needs a value", arg);
    /* getopt_long reports "--json=1" on a flag with optopt set to the
     * flag's val, which would read as an unknown option '-j' */
    const char *eq = strchr(arg, '=');
    if (optopt_value && !strncmp(arg, "--", 2) && eq)
        return cli_usage_error(cmd, "option '%.*s' takes no value", (int)(eq - arg), arg);
    if (optopt_value)
        return cli_usage_error(cmd, "unknown option '-%c'", optopt_value);
    return cli_usage_error(cmd, "unknown option '%s'", arg);
}
