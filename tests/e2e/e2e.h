/*
 * e2e.h: helpers of the whole-system tests: run obsd, span_storm and obsctl
 * from OBSD_BUILD_DIR as real processes, each test with its own segment name
 * and temporary store.
 *
 * Every child gets PR_SET_PDEATHSIG, so a failing test (whose process exits)
 * takes its children with it; e2e_cleanup_all() removes what a failed test
 * left in /tmp and /dev/shm.
 */
#ifndef OBSD_TESTS_E2E_H
#define OBSD_TESTS_E2E_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include <check.h>
#include <jansson.h>

struct e2e {
    char dir[256];       /* /tmp/obsd-e2e-<main pid>-<test pid> */
    char store[300];     /* <dir>/store */
    char name[64];       /* segment name, unique per test process */
    pid_t obsd;          /* running daemon, 0 if none */
    int n_obsd_starts;
};

/* Per-test setup/teardown (checked fixtures). */
void e2e_setup(struct e2e *t, const char *tag);
void e2e_teardown(struct e2e *t);
/* Run once by main() before the suite (names then carry the main pid). */
void e2e_init(void);
/* Run once by main() after the suite: removes leftovers of failed tests. */
void e2e_cleanup_all(void);
/* main()'s whole run: e2e_init(), the suite (CK_NORMAL), e2e_cleanup_all();
 * returns the exit status (1 if a test failed). */
int e2e_run_suite(Suite *s);

/* Path of a built program: "obsd", "obsctl" or an example name. */
const char *e2e_program(const char *name);

/* Starts a child. argv[0] is a program name for e2e_program(); env entries
 * ("K=V", or "K" to unset) apply in the child only. stdout/stderr go to the
 * given file and the same name plus ".err" (NULL: <dir>/<argv[0]>.<n>.out). */
pid_t e2e_spawn(struct e2e *t, char *const argv[], char *const env[], const char *out_path);

/* Runs a child to completion (at most timeout_s, then SIGKILL) and returns
 * its exit status (128+sig if killed), with its stdout+stderr in *output
 * (malloc'd). */
int e2e_run(struct e2e *t, char *const argv[], char *const env[], int timeout_s, char **output);

/* As e2e_run, with stdout and stderr apart (malloc'd, "" if empty; either
 * pointer may be NULL): for output that is checked or parsed on its own. */
int e2e_run_split(struct e2e *t, char *const argv[], char *const env[], int timeout_s, char **out,
                  char **err);
/* Runs argv, asserts exit 0 and returns its whole stdout parsed as JSON
 * (asserted, strictly: nothing else may follow it). */
json_t *e2e_run_json(struct e2e *t, char *const argv[], int timeout_s);

/* Waits for a child (at most timeout_s, then SIGKILL); returns as e2e_run. */
int e2e_wait(pid_t pid, int timeout_s);

/* obsd --foreground --name <name> --store <store> --set publish_interval_ms=50
 * plus extra; returns once its control socket answers `obsctl status`. */
void e2e_start_obsd(struct e2e *t, char *const extra[]);
/* SIGTERM (or sig) and wait; returns the exit status. */
int e2e_stop_obsd(struct e2e *t, int sig);
/* Waits for obsd to exit by itself (exit_after_run); returns as e2e_wait. */
int e2e_wait_obsd(struct e2e *t, int timeout_s);
/* Output of the last obsd started (malloc'd), for failure messages. */
char *e2e_obsd_log(struct e2e *t);

/* `obsctl status --json` as JSON, or NULL when no daemon answers. */
json_t *e2e_status(struct e2e *t);
/* `obsctl show --store <store> [run] --final --json`, waiting up to
 * timeout_s for the run's final snapshot. NULL on timeout. */
json_t *e2e_final_snapshot(struct e2e *t, const char *store, int timeout_s);
/* `obsctl show --store <store> --json` (the latest snapshot), or NULL. */
json_t *e2e_latest_snapshot(struct e2e *t, const char *store);

/* Exit status and output of the last obsctl show, for failure messages. */
const char *e2e_last_show_output(void);

/* Counter value / series count in a snapshot JSON; -1 if absent. */
long long e2e_counter(json_t *snap, const char *name);
long long e2e_series_count(json_t *snap, const char *name);

/* A child's stdout followed by its stderr (malloc'd). */
char *e2e_read_output(const char *out_path);
/* Reads a whole file (malloc'd, NUL-terminated) or NULL. */
char *e2e_read_file(const char *path);
/* Parses the last line of text that is a JSON object. */
json_t *e2e_last_json_line(const char *text);

void e2e_sleep_ms(int ms);

#endif
