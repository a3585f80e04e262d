/*
 * config.c: the obsd.conf parser (inih), the environment layer and --set.
 *
 * One table describes every key: its section, its type, where it lives in
 * struct obsd_collector_config and the values it accepts. The file, the
 * environment and the flags all go through config_apply(), so a value is
 * checked the same way wherever it comes from.
 */
#include "daemon/config.h"

#include <ctype.h>
#include <errno.h>
#include <grp.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <ini.h>

/* libinih hands the reader buffers of INI_MAX_LINE (200) bytes: a line may hold
 * 198 characters plus its newline and the terminating NUL. */
#define CONFIG_MAX_LINE ((size_t)198)

extern char **environ;

enum key_type {
    KEY_U32,      /* decimal integer in [min, max] */
    KEY_SIZE,     /* bytes with an optional K/M/G/T(iB) suffix, in [min, max] */
    KEY_POW2,     /* KEY_SIZE that must be a power of two */
    KEY_BOOL,     /* true/false, yes/no, on/off, 1/0 */
    KEY_NAME,     /* segment name */
    KEY_PATH,     /* a file or directory path; optional ones accept "" = unset */
    KEY_SOCKET,   /* a path that fits sockaddr_un */
    KEY_CPUS,     /* CPU list */
    KEY_GROUP,    /* an existing group name */
    KEY_POLICY,   /* drop | block, stored in ring_full_block */
    KEY_LOGLEVEL, /* error | warn | info | debug, or 0..3 */
};

struct key_desc {
    const char *section;
    const char *name;
    enum key_type type;
    size_t offset;
    uint64_t min, max;
    bool optional;         /* string keys: "" unsets the value (NULL) */
};

#define F(field) offsetof(struct obsd_collector_config, field)
#define KIB (UINT64_C(1) << 10)
#define MIB (UINT64_C(1) << 20)
#define GIB (UINT64_C(1) << 30)
#define TIB (UINT64_C(1) << 40)

/* Segment names become /dev/shm/obsd.<name>, socket file names and part of
 * run ids, so they are short and made of safe characters. */
#define NAME_MAX_LEN 40

static const struct key_desc keys[] = {
    {"segment", "name",                  KEY_NAME,     F(name), 1, NAME_MAX_LEN, false},
    {"segment", "max_producers",         KEY_U32,      F(max_producers), 1, 4096, false},
    {"segment", "ring_size",             KEY_POW2,     F(ring_size), 64 * KIB, 256 * MIB, false},
    {"segment", "ring_full_policy",      KEY_POLICY,   F(ring_full_block), 0, 0, false},
    {"segment", "ring_block_timeout_ms", KEY_U32,      F(ring_block_timeout_ms), 0, 60000, false},
    {"segment", "max_text_bytes",        KEY_SIZE,     F(max_text_bytes), 4 * KIB, GIB, false},
    {"segment", "shm_group",             KEY_GROUP,    F(shm_group), 0, 0, true},
    {"segment", "sched_workers",         KEY_U32,      F(sched_workers), 0, 65536, false},
    {"segment", "max_keys",              KEY_U32,      F(max_keys), 256, 1048576, false},

    {"collector", "publish_interval_ms", KEY_U32,      F(publish_interval_ms), 10, 60000, false},
    {"collector", "cpus",                KEY_CPUS,     F(cpus), 0, 0, true},
    {"collector", "socket_path",         KEY_SOCKET,   F(socket_path), 0, 0, true},
    {"collector", "raw_values_memory",   KEY_SIZE,     F(raw_values_memory), MIB, 64 * GIB, false},
    {"collector", "histogram_buckets",   KEY_U32,      F(histogram_buckets), 4, 1000, false},
    {"collector", "exit_after_run",      KEY_BOOL,     F(exit_after_run), 0, 0, false},

    {"store", "store_dir",               KEY_PATH,     F(store_dir), 0, 0, false},
    {"store", "store_map_size",          KEY_SIZE,     F(store_map_size), MIB, TIB, false},
    {"store", "store_sync",              KEY_BOOL,     F(store_sync), 0, 0, false},
    {"store", "history_full_every",      KEY_U32,      F(history_full_every), 1, 100000, false},

    {"tokens", "tokenizer",              KEY_PATH,     F(tokenizer), 0, 0, true},
    {"tokens", "tokenizer_workers",      KEY_U32,      F(tokenizer_workers), 0, 256, false},
    {"tokens", "drain_timeout_s",        KEY_U32,      F(drain_timeout_s), 0, 604800, false},
    {"tokens", "token_queue_memory",     KEY_SIZE,     F(token_queue_memory), MIB, TIB, false},

    {"log", "log_level",                 KEY_LOGLEVEL, F(log_level), 0, 3, false},
};
#define N_KEYS (sizeof keys / sizeof keys[0])

static const char *const sections[] = {"segment", "collector", "store", "tokens", "log", NULL};

/* OBSD_ variables of the tools around obsd, not config keys. */
static const char *const env_ignored[] = {
    "OBSD_STORE",         /* obsctl: default store directory */
    "OBSD_BUILD",         /* scripts/try, scripts/demo: the build tree */
    "OBSD_BUILD_DIR",     /* tests: the build tree */
    "OBSD_TEST_DATA",     /* tests: tests/data */
    "OBSD_FUZZ_SECONDS",  /* scripts/check: time per fuzzer */
    "OBSD_LIBRARY",       /* bindings/python: path of libobsd.so */
    NULL,
};

static const char *const log_levels[] = {"error", "warn", "info", "debug"};

/* ---- messages ---------------------------------------------------------- */

static int fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

/* Values are quoted in messages; keep them short and printable. */
static const char *printable(const char *value, char *buf, size_t buflen)
{
    size_t n = 0;
    for (const char *p = value; *p && n + 4 < buflen; p++) {
        unsigned char c = (unsigned char)*p;
        if (n >= 60) {
            memcpy(buf + n, "...", 3);
            n += 3;
            break;
        }
        buf[n++] = (isprint(c) && c != '\'') ? (char)c : '?';
    }
    buf[n] = '\0';
    return buf;
}

static void format_size(uint64_t v, char *buf, size_t buflen)
{
    static const char *const units[] = {"TiB", "GiB", "MiB", "KiB"};
    static const uint64_t scale[] = {TIB, GIB, MIB, KIB};
    for (int i = 0; i < 4; i++) {
        if (v >= scale[i] && v % scale[i] == 0) {
            snprintf(buf, buflen, "%" PRIu64 "%s", v / scale[i], units[i]);
            return;
        }
    }
    snprintf(buf, buflen, "%" PRIu64, v);
}

/* What a key accepts, for error messages and obsd_config_write(). */
static void describe_accepted(const struct key_desc *k, char *buf, size_t buflen)
{
    char lo[32], hi[32];
    switch (k->type) {
    case KEY_U32:
        snprintf(buf, buflen, "%" PRIu64 "..%" PRIu64, k->min, k->max);
        break;
    case KEY_SIZE:
    case KEY_POW2:
        format_size(k->min, lo, sizeof lo);
        format_size(k->max, hi, sizeof hi);
        snprintf(buf, buflen, "%s%s..%s, suffixes KiB MiB GiB TiB",
                 k->type == KEY_POW2 ? "a power of two, " : "", lo, hi);
        break;
    case KEY_BOOL:
        snprintf(buf, buflen, "true|false, yes|no, on|off, 1|0");
        break;
    case KEY_NAME:
        snprintf(buf, buflen, "1..%d characters of [A-Za-z0-9_.-], starting with a letter or digit",
                 NAME_MAX_LEN);
        break;
    case KEY_PATH:
        snprintf(buf, buflen, "a path%s", k->optional ? ", or empty for none" : "");
        break;
    case KEY_SOCKET:
        snprintf(buf, buflen, "a path of at most %zu bytes, or empty for <store_dir>/<name>.sock",
                 sizeof(((struct sockaddr_un *)0)->sun_path) - 1);
        break;
    case KEY_CPUS:
        snprintf(buf, buflen, "a CPU list such as 0-3,6 (CPUs 0..%d), or empty to inherit",
                 CPU_SETSIZE - 1);
        break;
    case KEY_GROUP:
        snprintf(buf, buflen, "an existing group name, or empty for mode 0600");
        break;
    case KEY_POLICY:
        snprintf(buf, buflen, "drop|block");
        break;
    case KEY_LOGLEVEL:
        snprintf(buf, buflen, "error|warn|info|debug or 0..3");
        break;
    }
}

/* ---- value parsers ----------------------------------------------------- */

static int parse_u64(const char *text, uint64_t *out, const char **end)
{
    if (!isdigit((unsigned char)*text))
        return -1;
    uint64_t v = 0;
    const char *p = text;
    for (; isdigit((unsigned char)*p); p++) {
        unsigned d = (unsigned)(*p - '0');
        if (v > (UINT64_MAX - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    *out = v;
    *end = p;
    return 0;
}

int obsd_config_parse_size(const char *text, uint64_t *out)
{
    static const struct {
        const char *suffix;
        unsigned shift;
    } suffixes[] = {
        {"", 0}, {"b", 0},
        {"k", 10}, {"kib", 10},
        {"m", 20}, {"mib", 20},
        {"g", 30}, {"gib", 30},
        {"t", 40}, {"tib", 40},
    };
    uint64_t v;
    const char *p;
    if (parse_u64(text, &v, &p) < 0)
        return -1;
    while (*p == ' ')
        p++;
    for (size_t i = 0; i < sizeof suffixes / sizeof suffixes[0]; i++) {
        if (strcasecmp(p, suffixes[i].suffix) == 0) {
            unsigned s = suffixes[i].shift;
            if (s && v > (UINT64_MAX >> s))
                return -1;
            *out = v << s;
            return 0;
        }
    }
    return -1;
}

int obsd_config_parse_cpus(const char *list, cpu_set_t *set, char *err, size_t errlen)
{
    CPU_ZERO(set);
    const char *p = list;
    if (!*p)
        return fail(err, errlen, "empty CPU list");
    for (;;) {
        uint64_t lo, hi;
        const char *end;
        if (parse_u64(p, &lo, &end) < 0)
            return fail(err, errlen, "expected a CPU number at '%.20s'", p);
        hi = lo;
        p = end;
        if (*p == '-') {
            if (parse_u64(p + 1, &hi, &end) < 0)
                return fail(err, errlen, "expected a CPU number after '-'");
            p = end;
            if (hi < lo)
                return fail(err, errlen, "range %" PRIu64 "-%" PRIu64 " is reversed", lo, hi);
        }
        if (hi >= CPU_SETSIZE)
            return fail(err, errlen, "CPU %" PRIu64 " is above %d", hi, CPU_SETSIZE - 1);
        for (uint64_t c = lo; c <= hi; c++)
            CPU_SET((int)c, set);
        if (*p == '\0')
            return 0;
        if (*p != ',')
            return fail(err, errlen, "unexpected '%c'", *p);
        p++;
    }
}

static int parse_bool(const char *v, bool *out)
{
    static const char *const yes[] = {"true", "yes", "on", "1"};
    static const char *const no[] = {"false", "no", "off", "0"};
    for (int i = 0; i < 4; i++) {
        if (!strcasecmp(v, yes[i])) {
            *out = true;
            return 0;
        }
        if (!strcasecmp(v, no[i])) {
            *out = false;
            return 0;
        }
    }
    return -1;
}

static bool valid_name(const char *v)
{
    size_t n = strlen(v);
    if (n < 1 || n > NAME_MAX_LEN || !isalnum((unsigned char)v[0]))
        return false;
    for (const char *p = v; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '_' && *p != '.' && *p != '-')
            return false;
    return true;
}

static bool has_control_chars(const char *v)
{
    for (const unsigned char *p = (const unsigned char *)v; *p; p++)
        if (*p < 0x20 || *p == 0x7f)
            return true;
    return false;
}

/* ---- string ownership -------------------------------------------------- */

/* Every string the parser stored, so that replacing or releasing frees it. */
static char **owned;
static size_t n_owned, cap_owned;

static char *own_string(const char *s)
{
    if (n_owned == cap_owned) {
        size_t cap = cap_owned ? cap_owned * 2 : 16;
        char **p = realloc(owned, cap * sizeof *p);
        if (!p)
            return NULL;
        owned = p;
        cap_owned = cap;
    }
    char *copy = strdup(s);
    if (copy)
        owned[n_owned++] = copy;
    return copy;
}

/* Frees old if the parser owns it (a later layer replaced it). */
static void disown_string(const char *old)
{
    for (size_t i = 0; old && i < n_owned; i++) {
        if (owned[i] == old) {
            free(owned[i]);
            owned[i] = owned[--n_owned];
            return;
        }
    }
}

void obsd_config_free_strings(void)
{
    for (size_t i = 0; i < n_owned; i++)
        free(owned[i]);
    free(owned);
    owned = NULL;
    n_owned = cap_owned = 0;
}

/* ---- applying one key ------------------------------------------------- */

static const struct key_desc *find_key(const char *name)
{
    for (size_t i = 0; i < N_KEYS; i++)
        if (!strcmp(keys[i].name, name))
            return &keys[i];
    return NULL;
}

static size_t edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 64 || lb > 64)
        return SIZE_MAX;
    size_t row[65];
    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j];
            size_t best = diag + (a[i - 1] != b[j - 1]);
            if (row[j] + 1 < best)
                best = row[j] + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

/* The closest key name, for "did you mean"; NULL if nothing is close. */
static const char *closest_key(const char *name)
{
    const char *best = NULL;
    size_t best_d = 4;
    for (size_t i = 0; i < N_KEYS; i++) {
        size_t d = edit_distance(name, keys[i].name);
        if (strncmp(keys[i].name, name, strlen(name)) == 0 && strlen(name) >= 4)
            d = 1;
        if (d < best_d) {
            best_d = d;
            best = keys[i].name;
        }
    }
    return best;
}

static int unknown_key(const char *origin, const char *name, char *err, size_t errlen)
{
    char shown[80];
    const char *near = closest_key(name);
    if (near)
        return fail(err, errlen, "%s: unknown key '%s' (did you mean %s?)", origin,
                    printable(name, shown, sizeof shown), near);
    return fail(err, errlen, "%s: unknown key '%s' (the keys are listed in obsd.conf(5))",
                origin, printable(name, shown, sizeof shown));
}

static int config_apply(struct obsd_collector_config *cfg, const struct key_desc *k,
                        const char *value, const char *origin, char *err, size_t errlen)
{
    char *field = (char *)cfg + k->offset;
    char accepted[160], shown[80];
    uint64_t v;
    const char *end;

    describe_accepted(k, accepted, sizeof accepted);
    printable(value, shown, sizeof shown);

    switch (k->type) {
    case KEY_U32:
        if (parse_u64(value, &v, &end) < 0 || *end)
            return fail(err, errlen, "%s: %s: '%s' is not a number (accepted: %s)", origin,
                        k->name, shown, accepted);
        if (v < k->min || v > k->max)
            return fail(err, errlen, "%s: %s: '%s' is out of range (accepted: %s)", origin,
                        k->name, shown, accepted);
        *(uint32_t *)field = (uint32_t)v;
        return 0;
    case KEY_SIZE:
    case KEY_POW2:
        if (obsd_config_parse_size(value, &v) < 0)
            return fail(err, errlen, "%s: %s: '%s' is not a size (accepted: %s)", origin,
                        k->name, shown, accepted);
        if (v < k->min || v > k->max)
            return fail(err, errlen, "%s: %s: '%s' is out of range (accepted: %s)", origin,
                        k->name, shown, accepted);
        if (k->type == KEY_POW2 && (v & (v - 1)))
            return fail(err, errlen, "%s: %s: '%s' is not a power of two (accepted: %s)",
                        origin, k->name, shown, accepted);
        if (k->offset == F(ring_size))
            *(uint32_t *)field = (uint32_t)v;
        else
            *(uint64_t *)field = v;
        return 0;
    case KEY_BOOL: {
        bool b;
        if (parse_bool(value, &b) < 0)
            return fail(err, errlen, "%s: %s: '%s' is not a boolean (accepted: %s)", origin,
                        k->name, shown, accepted);
        *(bool *)field = b;
        return 0;
    }
    case KEY_POLICY:
        if (!strcmp(value, "drop"))
            cfg->ring_full_block = false;
        else if (!strcmp(value, "block"))
            cfg->ring_full_block = true;
        else
            return fail(err, errlen, "%s: %s: '%s' is not a policy (accepted: %s)", origin,
                        k->name, shown, accepted);
        return 0;
    case KEY_LOGLEVEL:
        for (int i = 0; i < 4; i++) {
            if (!strcasecmp(value, log_levels[i]) || (value[0] == '0' + i && !value[1])) {
                cfg->log_level = i;
                return 0;
            }
        }
        return fail(err, errlen, "%s: %s: '%s' is not a log level (accepted: %s)", origin,
                    k->name, shown, accepted);
    case KEY_NAME:
    case KEY_PATH:
    case KEY_SOCKET:
    case KEY_CPUS:
    case KEY_GROUP:
        break;
    }

    /* String keys. */
    const char **slot = (const char **)field;
    if (!*value) {
        if (!k->optional)
            return fail(err, errlen, "%s: %s: must not be empty (accepted: %s)", origin,
                        k->name, accepted);
        disown_string(*slot);
        *slot = NULL;
        return 0;
    }
    if (has_control_chars(value))
        return fail(err, errlen, "%s: %s: '%s' contains control characters (accepted: %s)",
                    origin, k->name, shown, accepted);
    /* Every accepted value must survive obsd_config_write() and a re-read, so a
     * value from the environment or a flag is held to what fits on a file line. */
    if (strlen(k->name) + 3 + strlen(value) > CONFIG_MAX_LINE)
        return fail(err, errlen, "%s: %s: value is longer than %zu characters", origin, k->name,
                    CONFIG_MAX_LINE - 3 - strlen(k->name));
    switch (k->type) {
    case KEY_NAME:
        if (!valid_name(value))
            return fail(err, errlen, "%s: %s: '%s' is not a valid name (accepted: %s)", origin,
                        k->name, shown, accepted);
        break;
    case KEY_PATH:
        if (strlen(value) >= PATH_MAX)
            return fail(err, errlen, "%s: %s: path is longer than %d bytes", origin, k->name,
                        PATH_MAX - 1);
        break;
    case KEY_SOCKET:
        if (strlen(value) >= sizeof(((struct sockaddr_un *)0)->sun_path))
            return fail(err, errlen, "%s: %s: '%s' is too long (accepted: %s)", origin, k->name,
                        shown, accepted);
        break;
    case KEY_CPUS: {
        cpu_set_t set;
        char why[96];
        if (obsd_config_parse_cpus(value, &set, why, sizeof why) < 0)
            return fail(err, errlen, "%s: %s: '%s' is not a CPU list: %s (accepted: %s)", origin,
                        k->name, shown, why, accepted);
        break;
    }
    case KEY_GROUP: {
        struct group gr, *res = NULL;
        char buf[4096];
        if (getgrnam_r(value, &gr, buf, sizeof buf, &res) != 0 || !res)
            return fail(err, errlen, "%s: %s: '%s' is not a group on this host (accepted: %s)",
                        origin, k->name, shown, accepted);
        break;
    }
    default:
        break;
    }
    char *copy = own_string(value);
    if (!copy)
        return fail(err, errlen, "%s: %s: out of memory", origin, k->name);
    disown_string(*slot);
    *slot = copy;
    return 0;
}

int obsd_config_set(struct obsd_collector_config *cfg, const char *key, const char *value,
                    const char *origin, char *err, size_t errlen)
{
    const struct key_desc *k = find_key(key);
    if (!k)
        return unknown_key(origin, key, err, errlen);
    return config_apply(cfg, k, value, origin, err, errlen);
}

int obsd_config_set_assignment(struct obsd_collector_config *cfg, const char *assignment,
                               const char *origin, char *err, size_t errlen)
{
    const char *eq = strchr(assignment, '=');
    char key[128], shown[80];
    if (!eq || eq == assignment || (size_t)(eq - assignment) >= sizeof key)
        return fail(err, errlen, "%s: '%s' is not KEY=VALUE", origin,
                    printable(assignment, shown, sizeof shown));
    memcpy(key, assignment, (size_t)(eq - assignment));
    key[eq - assignment] = '\0';
    return obsd_config_set(cfg, key, eq + 1, origin, err, errlen);
}

/* ---- the file ---------------------------------------------------------- */

struct file_ctx {
    struct obsd_collector_config *cfg;
    const char *origin;
    const char *text;
    size_t len, pos;
    int line;                 /* line last handed to inih */
    int seen_line[N_KEYS];    /* line where each key was set, 0 = not yet */
    char *err;
    size_t errlen;
    bool failed;
};

static void file_error(struct file_ctx *ctx, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void file_error(struct file_ctx *ctx, const char *fmt, ...)
{
    if (ctx->failed)
        return;     /* the first error is the one to fix */
    ctx->failed = true;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fail(ctx->err, ctx->errlen, "%s:%d: %s", ctx->origin, ctx->line, msg);
}

/* inih reader: one line per call from the buffer, so ctx->line is the line
 * the handler is looking at. Over-long lines and NUL bytes are errors here
 * rather than silently split or truncated. */
static char *read_line(char *buf, int size, void *stream)
{
    struct file_ctx *ctx = stream;
    if (ctx->pos >= ctx->len)
        return NULL;
    const char *start = ctx->text + ctx->pos;
    size_t avail = ctx->len - ctx->pos;
    const char *nl = memchr(start, '\n', avail);
    size_t n = nl ? (size_t)(nl - start) + 1 : avail;
    ctx->pos += n;
    ctx->line++;
    if (memchr(start, '\0', n)) {
        file_error(ctx, "line contains a NUL byte");
        n = 0;
    } else if (n >= (size_t)size) {
        file_error(ctx, "line is longer than %d characters", size - 2);
        n = 0;
    }
    memcpy(buf, start, n);
    buf[n] = '\0';
    return buf;
}

static bool known_section(const char *s)
{
    for (int i = 0; sections[i]; i++)
        if (!strcmp(sections[i], s))
            return true;
    return false;
}

static int on_ini_entry(void *user, const char *section, const char *name, const char *value)
{
    struct file_ctx *ctx = user;
    char shown[80], shown_sec[80];
    if (ctx->failed)
        return 1;
    if (!*section) {
        const struct key_desc *k = find_key(name);
        if (k)
            file_error(ctx, "%s: outside any section (it belongs in [%s])", name, k->section);
        else
            file_error(ctx, "'%s' is outside any section (sections: [segment] [collector] "
                            "[store] [tokens] [log])", printable(name, shown, sizeof shown));
        return 0;
    }
    if (!known_section(section)) {
        file_error(ctx, "unknown section [%s] (accepted: [segment] [collector] [store] "
                        "[tokens] [log])", printable(section, shown_sec, sizeof shown_sec));
        return 0;
    }
    char origin[PATH_MAX + 32];
    snprintf(origin, sizeof origin, "%s:%d", ctx->origin, ctx->line);
    const struct key_desc *k = find_key(name);
    if (!k) {
        ctx->failed = true;
        unknown_key(origin, name, ctx->err, ctx->errlen);
        return 0;
    }
    if (strcmp(k->section, section)) {
        file_error(ctx, "%s: belongs in [%s], not [%s]", name, k->section, section);
        return 0;
    }
    size_t idx = (size_t)(k - keys);
    if (ctx->seen_line[idx]) {
        file_error(ctx, "%s: given twice (first on line %d)", name, ctx->seen_line[idx]);
        return 0;
    }
    ctx->seen_line[idx] = ctx->line;
    if (config_apply(ctx->cfg, k, value, origin, ctx->err, ctx->errlen) < 0) {
        ctx->failed = true;
        return 0;
    }
    return 1;
}

int obsd_config_load_buffer(struct obsd_collector_config *cfg, const char *text, size_t len,
                            const char *origin, char *err, size_t errlen)
{
    struct file_ctx ctx = {
        .cfg = cfg, .origin = origin, .text = text, .len = len,
        .err = err, .errlen = errlen,
    };
    if (len > OBSD_CONFIG_MAX_FILE)
        return fail(err, errlen, "%s: file is larger than %u bytes", origin,
                    OBSD_CONFIG_MAX_FILE);
    int rc = ini_parse_stream(read_line, &ctx, on_ini_entry, &ctx);
    if (ctx.failed)
        return -1;
    if (rc > 0)
        return fail(err, errlen, "%s:%d: syntax error (expected '[section]', 'key = value' "
                                 "or a comment)", origin, rc);
    if (rc < 0)
        return fail(err, errlen, "%s: cannot parse (out of memory)", origin);
    return 0;
}

int obsd_config_load(struct obsd_collector_config *cfg, const char *path, char *err,
                     size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return fail(err, errlen, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) < 0 || !S_ISREG(st.st_mode)) {
        fclose(f);
        return fail(err, errlen, "%s: not a regular file", path);
    }
    if (st.st_size > (off_t)OBSD_CONFIG_MAX_FILE) {
        fclose(f);
        return fail(err, errlen, "%s: file is larger than %u bytes", path,
                    OBSD_CONFIG_MAX_FILE);
    }
    char *text = malloc((size_t)st.st_size + 1);
    if (!text) {
        fclose(f);
        return fail(err, errlen, "%s: out of memory", path);
    }
    size_t len = fread(text, 1, (size_t)st.st_size, f);
    bool read_error = ferror(f);
    fclose(f);
    if (read_error) {
        free(text);
        return fail(err, errlen, "%s: read error", path);
    }
    int rc = obsd_config_load_buffer(cfg, text, len, path, err, errlen);
    free(text);
    return rc;
}

/* ---- the environment --------------------------------------------------- */

const char *const *obsd_config_env_ignored(void)
{
    return env_ignored;
}

int obsd_config_load_env(struct obsd_collector_config *cfg, char *const *envp, char *err,
                         size_t errlen)
{
    if (!envp)
        envp = environ;
    for (char *const *e = envp; *e; e++) {
        const char *var = *e;
        if (strncmp(var, "OBSD_", 5))
            continue;
        const char *eq = strchr(var, '=');
        if (!eq)
            continue;
        char name[128], key[128], origin[160];
        size_t n = (size_t)(eq - var);
        if (n >= sizeof name)
            return fail(err, errlen, "environment: %.40s...: unknown variable", var);
        memcpy(name, var, n);
        name[n] = '\0';
        bool ignored = false;
        for (int i = 0; env_ignored[i]; i++)
            ignored |= !strcmp(env_ignored[i], name);
        if (ignored)
            continue;
        for (size_t i = 5; i <= n; i++)
            key[i - 5] = (char)tolower((unsigned char)name[i]);
        snprintf(origin, sizeof origin, "environment %s", name);
        const struct key_desc *k = find_key(key);
        bool upper = true;
        for (size_t i = 5; i < n; i++)
            upper &= !islower((unsigned char)name[i]);
        if (!k || !upper) {
            const char *near = closest_key(key);
            if (near) {
                char upper_near[64];
                size_t j = 0;
                for (; near[j] && j + 1 < sizeof upper_near; j++)
                    upper_near[j] = (char)toupper((unsigned char)near[j]);
                upper_near[j] = '\0';
                return fail(err, errlen, "%s: unknown key (did you mean OBSD_%s?)", origin,
                            upper_near);
            }
            return fail(err, errlen, "%s: not a config key (accepted: OBSD_<KEY> for the keys "
                                     "of obsd.conf(5))", origin);
        }
        if (config_apply(cfg, k, eq + 1, origin, err, errlen) < 0)
            return -1;
    }
    return 0;
}

/* ---- writing ----------------------------------------------------------- */

void obsd_config_write(const struct obsd_collector_config *cfg, FILE *out)
{
    const char *section = "";
    for (size_t i = 0; i < N_KEYS; i++) {
        const struct key_desc *k = &keys[i];
        const char *field = (const char *)cfg + k->offset;
        char buf[64];
        if (strcmp(section, k->section)) {
            fprintf(out, "%s[%s]\n", i ? "\n" : "", k->section);
            section = k->section;
        }
        fprintf(out, "%s =", k->name);
        switch (k->type) {
        case KEY_U32:
            fprintf(out, " %" PRIu32 "\n", *(const uint32_t *)field);
            break;
        case KEY_SIZE:
        case KEY_POW2:
            format_size(k->offset == F(ring_size) ? *(const uint32_t *)field
                                                  : *(const uint64_t *)field,
                        buf, sizeof buf);
            fprintf(out, " %s\n", buf);
            break;
        case KEY_BOOL:
            fprintf(out, " %s\n", *(const bool *)field ? "true" : "false");
            break;
        case KEY_POLICY:
            fprintf(out, " %s\n", cfg->ring_full_block ? "block" : "drop");
            break;
        case KEY_LOGLEVEL:
            fprintf(out, " %s\n", obsd_config_log_level_name(cfg->log_level));
            break;
        default: {
            const char *s = *(const char *const *)field;
            fprintf(out, "%s%s\n", s && *s ? " " : "", s ? s : "");
            break;
        }
        }
    }
}

const char *obsd_config_log_level_name(int level)
{
    if (level < 0)
        level = 0;
    if (level > 3)
        level = 3;
    return log_levels[level];
}
