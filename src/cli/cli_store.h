/*
 * cli_store.h: what the store-reading obsctl commands (runs, show, get,
 * export, metrics, report, compare) share: their command line (--store,
 * --help, bad options, the RUN operand), the --store default, opening the
 * store read-only, picking a run, formatting times and values, the JSON of a
 * run and of a time series point and printing JSON, and the notes every
 * reader prints about a run's state (incomplete drain, interrupted, no final
 * snapshot).
 */
#ifndef OBSD_CLI_CLI_STORE_H
#define OBSD_CLI_CLI_STORE_H

#include <getopt.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

#include "publisher/store.h"

#define CLI_DEFAULT_STORE "/var/lib/obsd"

/* The store directory: --store DIR if given, else $OBSD_STORE, else
 * $OBSD_STORE_DIR, else store_dir of /etc/obsd/obsd.conf when that file
 * exists, else /var/lib/obsd. Returns 0, or prints why (a bad obsd.conf) and
 * returns the exit status 2. */
int cli_store_dir(const char *cmd, const char *opt, char *out, size_t outlen);

/* The --store line of the commands' --help. */
#define CLI_STORE_HELP                                                               \
    "  --store DIR  store directory (default: $OBSD_STORE, else $OBSD_STORE_DIR,\n"   \
    "               else store_dir of " "/etc/obsd/obsd.conf" ", else " CLI_DEFAULT_STORE ")\n"

/* Resolves the store directory from --store (cli_store_dir) and opens it
 * read-only. NULL after printing "obsctl CMD: <why>", with the exit status in
 * *status (2 for a bad obsd.conf, 1 for a store that cannot be opened). */
struct store *cli_store_open(const char *cmd, const char *store_opt, int *status);

/* cli_store_open, then cli_pick_run: run_id NULL or "last" is the most
 * recently started run. On failure the store is closed, NULL is returned and
 * *status holds the exit status. */
struct store *cli_store_open_run(const char *cmd, const char *store_opt, const char *run_id,
                                 struct store_run_info *run, int *status);

/* Finds run_id, or the most recently started run when run_id is NULL.
 * Returns 0, or prints the reason and returns the exit status (1). */
int cli_pick_run(const char *cmd, struct store *st, const char *run_id, struct store_run_info *out);

/* Exit status for a store_* failure, after printing store_error(). */
int cli_store_failed(const char *cmd, struct store *st);

/* "2026-11-23T10:15:00.250Z" (UTC, milliseconds). */
void cli_format_time(uint64_t ns, char *buf, size_t len);
/* Seconds on CLOCK_MONOTONIC, for measuring what a command takes. */
double cli_now_s(void);
/* Prints s, then spaces up to columns terminal columns: table cells of
 * names and labels, which may be multibyte (obsd_utf8_width: "µ" is one
 * column, a CJK character two). Nothing is cut when s is wider. */
void cli_print_padded(FILE *out, const char *s, size_t columns);
/* A number for a table: integers exactly, others with 6 significant digits,
 * NaN as "-". */
void cli_format_number(double v, char *buf, size_t len);

/* The state notes of a run or snapshot, one per line, each prefixed by
 * prefix: "incomplete drain: N tokenizations pending", "interrupted: ...".
 * Returns the number of lines printed. */
int cli_print_state_notes(FILE *out, const char *prefix, enum obsd_run_state state,
                          uint64_t n_pending, bool is_final, bool has_final);

/* Prints j indented and a newline, then releases j; 0, or 1 when j is
 * NULL or could not be written. */
int cli_print_json(FILE *out, json_t *j);

/* A run as obsctl runs --json lists it (id and name through obsd_json_text);
 * NULL when out of memory. */
json_t *cli_run_json(const struct store_run_info *r);

/* A time series point as obsctl get --json lists it: seq, timestamp_ns and
 * value, or count, total, min, max, exact and percentiles; null for a
 * number that is not finite. */
json_t *cli_point_json(const struct store_point *p);

/* Parses a non-negative decimal integer; false if s is not one. */
bool cli_parse_u64(const char *s, uint64_t *out);

/* A store reader's command line. Its getopt_long options table has
 * {"store", required_argument, NULL, 's'} and {"help", no_argument, NULL,
 * 'h'} besides the command's own options. */
struct cli_args {
    const char *cmd;                /* "show" */
    void (*usage)(FILE *out);       /* prints the --help text */
    const char *store;              /* --store DIR; NULL when not given */
    int status;                     /* exit status once cli_next_option returned -1 */
    bool started;                   /* getopt was reset for this argv */
};

/* The next of the command's own options, as getopt_long returns it (optarg
 * set): --store and --help are taken here. Returns 0 when the options are
 * all read (optind is the first operand), or -1 when the command is to
 * return a->status: 0 after --help, 2 after a bad option (said). */
int cli_next_option(struct cli_args *a, int argc, char **argv, const struct option *options);

/* The optional RUN operand after the options: NULL when there is none.
 * Returns 0, or 2 after naming an unexpected further argument. */
int cli_run_operand(const char *cmd, int argc, char **argv, const char **run_id);

/* Prints "obsctl CMD: <message>" and where the help is; returns 2. */
int cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Reports a getopt_long failure for cmd (opt ':' or '?'); returns 2. The
 * optstring must start with ':' (and opterr be 0): otherwise a long option
 * without its value comes back as '?' with optopt set to the option's val,
 * which reads as an unknown short option. */
int cli_bad_option(const char *cmd, int opt, int optopt_value, char **argv, int optind_value);

#endif
