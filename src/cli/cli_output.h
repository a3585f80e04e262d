/*
 * cli_output.h: writing a command's result to --output FILE atomically.
 *
 * The result goes into a temporary file next to FILE, which is renamed over
 * FILE only once everything was written and flushed to disk: a reader (a
 * browser, a CI upload step) sees the old file or the new one, never half of
 * one, and a failed command leaves FILE as it was.
 */
#ifndef OBSD_CLI_CLI_OUTPUT_H
#define OBSD_CLI_CLI_OUTPUT_H

#include <stdio.h>

struct cli_output {
    FILE *f;            /* write here: stdout, or the temporary file */
    char *path;         /* FILE, NULL for stdout */
    char *tmp;          /* the temporary file, NULL for stdout */
};

/* Opens path (NULL or "-": standard output). Returns 0, or prints
 * "obsctl CMD: <why>" and returns 1. */
int cli_output_open(struct cli_output *o, const char *cmd, const char *path);

/* Flushes, syncs and renames the temporary file over path (for stdout: a
 * flush). Returns 0, or prints why, removes the temporary file and returns 1. */
int cli_output_commit(struct cli_output *o, const char *cmd);

/* Drops what was written: removes the temporary file (path is untouched). */
void cli_output_abort(struct cli_output *o);

#endif
