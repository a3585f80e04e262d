/*
 * cli_fixture.h: what the obsctl report and metrics suites share: running
 * obsctl as a real process, and a store written through the store API whose
 * runs carry hostile names (markup, quotes, malformed UTF-8), drops,
 * rejected records, the requests, budget and sched sections, and every run
 * state a reader must flag.
 */
#ifndef OBSD_TESTS_CLI_FIXTURE_H
#define OBSD_TESTS_CLI_FIXTURE_H

#include <stdbool.h>
#include <stddef.h>

/* Output of the last cli_obsctl() run. */
extern char cli_out[1 << 22], cli_err[1 << 16];
extern size_t cli_out_len;

/* Path of the obsctl under test ($OBSD_BUILD_DIR/src/cli/obsctl). */
const char *cli_obsctl_path(void);

/* Runs obsctl with args (NULL-terminated), scratch files in dir; captures
 * stdout and stderr into cli_out / cli_err; returns the exit status. */
int cli_obsctl(const char *dir, const char *const *args);
#define OBSCTL(dir, ...) cli_obsctl(dir, (const char *const[]){__VA_ARGS__, NULL})

/* The hostile names the store holds. */
#define HOSTILE_RUN_NAME "<b>bold</b> & \"q\""
#define HOSTILE_SERIES "<script>alert(\"s\")</script>"
#define HOSTILE_COUNTER "\"><img src=x onerror=alert(1)>"
#define BAD_UTF8_SERIES "bad\xff\xfe utf8"
#define HOSTILE_SECTION "<x-sec>"
#define HOSTILE_NAMESPACE "<i>ns</i>"

/* Writes the store in dir (created), through store_open/store_persist:
 *  bench-1 "<b>bold</b> & \"q\"": 6 persists, final complete with 3
 *          tokenizations pending (incomplete drain); 7 dropped, 3 rejected;
 *          counters items (0, 10, ... 50), pushed_total, qps (gauge), delta
 *          (-5), dup.name and dup_name, HOSTILE_COUNTER; series ttft_ns,
 *          span.µs, HOSTILE_SERIES, BAD_UTF8_SERIES (all with buckets) and
 *          empty_series (no values); sections requests (token metrics off),
 *          budget (2 contexts), sched (2 workers), HOSTILE_SECTION.
 *  bench-2: one persist, final, interrupted.
 *  bench-3: one persist, live, no final.
 * Series in bench-1, in order, and how many have values: */
#define FIXTURE_N_SERIES 5
#define FIXTURE_N_SERIES_WITH_VALUES 4
extern const char *const fixture_series[FIXTURE_N_SERIES];
void cli_write_store(const char *store_dir);

/* Appends run id (live, one persist, one counter "items" = 1) to the store. */
void cli_add_run(const char *store_dir, const char *id);

/* Reads a whole file (malloc'd, NUL-terminated; its length in *len if not
 * NULL), or NULL. */
char *cli_read_file(const char *path, size_t *len);

/* True when s is well-formed UTF-8. */
bool cli_valid_utf8(const char *s, size_t n);

#endif
