/*
 * config.h: obsd.conf(5), the OBSD_<KEY> environment and --set KEY=VALUE.
 *
 * Every key of obsd.conf is one field of struct obsd_collector_config with the
 * same name (ring_full_policy = drop|block is the one spelling that differs:
 * it sets ring_full_block). The layers apply in this order, each overriding
 * the previous one:
 *
 *   obsd_collector_config_defaults()   (the engine's defaults)
 *   obsd_config_load(cfg, path)        the INI file, sections [segment] ...
 *   obsd_config_load_env(cfg, environ) OBSD_PUBLISH_INTERVAL_MS=500 ...
 *   obsd_config_set(cfg, key, value)   --set publish_interval_ms=500, --name ...
 *
 * Every function validates what it is given and, on failure, returns -1 with a
 * message that names where the value came from, the key and what is accepted:
 *
 *   obsd.conf:12: publish_interval_ms: '0' is out of range (accepted: 10..60000)
 *
 * Strings stored in the config (name, cpus, paths) are copies owned by this
 * module; obsd_config_free_strings() releases all of them at exit.
 * Not thread-safe: configure from one thread before starting the collector.
 */
#ifndef OBSD_DAEMON_CONFIG_H
#define OBSD_DAEMON_CONFIG_H

#include <sched.h>
#include <stddef.h>
#include <stdio.h>

#include "obsd/obsd_collector.h"

/* The largest obsd.conf accepted. Lines are limited by inih (INI_MAX_LINE). */
#define OBSD_CONFIG_MAX_FILE (1u << 20)

/* Default config file, read when it exists and no --config is given. */
#define OBSD_CONFIG_DEFAULT_PATH "/etc/obsd/obsd.conf"

/* Reads the INI file at path. A missing file is an error. */
int obsd_config_load(struct obsd_collector_config *cfg, const char *path,
                     char *err, size_t errlen);

/* Parses INI text of len bytes (need not be NUL-terminated); origin names it
 * in messages (e.g. the file name). */
int obsd_config_load_buffer(struct obsd_collector_config *cfg, const char *text,
                            size_t len, const char *origin, char *err, size_t errlen);

/* Applies every OBSD_<KEY> variable of envp (NULL: the process environment).
 * An OBSD_ variable that is neither a key nor one of the tool variables
 * listed by obsd_config_env_ignored() is rejected as unknown. */
int obsd_config_load_env(struct obsd_collector_config *cfg, char *const *envp,
                         char *err, size_t errlen);

/* Names of OBSD_ variables that are not config keys (test and build
 * variables), NULL-terminated. */
const char *const *obsd_config_env_ignored(void);

/* Sets one key from its text form. origin prefixes messages ("--set"). */
int obsd_config_set(struct obsd_collector_config *cfg, const char *key,
                    const char *value, const char *origin, char *err, size_t errlen);

/* "KEY=VALUE" form of obsd_config_set(), as --set takes it. */
int obsd_config_set_assignment(struct obsd_collector_config *cfg, const char *assignment,
                               const char *origin, char *err, size_t errlen);

/* Writes the effective configuration as an obsd.conf file. */
void obsd_config_write(const struct obsd_collector_config *cfg, FILE *out);

/* Parses a CPU list such as "0-3,6" into set. Returns -1 with a message on
 * a bad list or a CPU number >= CPU_SETSIZE. */
int obsd_config_parse_cpus(const char *list, cpu_set_t *set, char *err, size_t errlen);

/* Parses a size: a number with an optional binary suffix K, KiB, M, MiB, G,
 * GiB, T, TiB (case-insensitive; B or none = bytes). Returns -1 if malformed
 * or overflowing. */
int obsd_config_parse_size(const char *text, uint64_t *out);

/* Log level names: error, warn, info, debug (0..3). */
const char *obsd_config_log_level_name(int level);

/* Releases every string the parser allocated. Configs filled by this module
 * must not be used afterwards. */
void obsd_config_free_strings(void);

#endif
