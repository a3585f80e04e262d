/*
 * test_config.c: obsd.conf, OBSD_<KEY> and --set parsing as a user meets it:
 * precedence, accepted forms, and the message for every kind of mistake.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "daemon/config.h"

/* A fixed starting point independent of the engine's defaults. */
static void base_config(struct obsd_collector_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->name = "obsd";
    cfg->store_dir = "/var/lib/obsd";
    cfg->publish_interval_ms = 250;
    cfg->ring_size = 1u << 20;
    cfg->log_level = 2;
}

static int load_text(struct obsd_collector_config *cfg, const char *text, char *err, size_t errlen)
{
    return obsd_config_load_buffer(cfg, text, strlen(text), "obsd.conf", err, errlen);
}

static void teardown(void)
{
    obsd_config_free_strings();
}

START_TEST(file_values_are_applied)
{
    struct obsd_collector_config cfg;
    char err[512] = "";
    base_config(&cfg);
    ck_assert_int_eq(load_text(&cfg,
        "# comment\n"
        "[segment]\n"
        "name = bench-1\n"
        "ring_size = 2MiB\n"
        "ring_full_policy = block\n"
        "max_text_bytes = 64 KiB\n"
        "[collector]\n"
        "publish_interval_ms = 500 ; inline comment\n"
        "cpus = 0\n"
        "exit_after_run = yes\n"
        "[store]\n"
        "store_dir = /tmp/somewhere\n"
        "store_map_size = 2G\n"
        "store_sync = off\n"
        "[tokens]\n"
        "tokenizer = /tmp/tok.json\n"
        "tokenizer_workers = 0\n"
        "[log]\n"
        "log_level = debug\n", err, sizeof err), 0);
    ck_assert_str_eq(cfg.name, "bench-1");
    ck_assert_uint_eq(cfg.ring_size, 2u << 20);
    ck_assert(cfg.ring_full_block);
    ck_assert_uint_eq(cfg.max_text_bytes, 64u << 10);
    ck_assert_uint_eq(cfg.publish_interval_ms, 500);
    ck_assert_str_eq(cfg.cpus, "0");
    ck_assert(cfg.exit_after_run);
    ck_assert_str_eq(cfg.store_dir, "/tmp/somewhere");
    ck_assert_uint_eq(cfg.store_map_size, 2ull << 30);
    ck_assert(!cfg.store_sync);
    ck_assert_str_eq(cfg.tokenizer, "/tmp/tok.json");
    ck_assert_uint_eq(cfg.tokenizer_workers, 0);
    ck_assert_int_eq(cfg.log_level, 3);
}
END_TEST

START_TEST(out_of_range_names_file_line_key_and_range)
{
    struct obsd_collector_config cfg;
    char err[512] = "";
    base_config(&cfg);
    const char *text = "[collector]\n\n\n\n\n\n\n\n\n\n\npublish_interval_ms = 0\n";
    ck_assert_int_eq(load_text(&cfg, text, err, sizeof err), -1);
    ck_assert_str_eq(err, "obsd.conf:12: publish_interval_ms: '0' is out of range (accepted: 10..60000)");
    ck_assert_uint_eq(cfg.publish_interval_ms, 250);
}
END_TEST

START_TEST(every_kind_of_file_mistake_is_explained)
{
    static const struct {
        const char *text;
        const char *expect;   /* substring of the message */
    } cases[] = {
        {"[collector]\npublish_interval = 5\n", "obsd.conf:2: unknown key 'publish_interval' (did you mean publish_interval_ms?)"},
        {"[collector]\nbogus_thing_entirely = 5\n", "obsd.conf:2: unknown key 'bogus_thing_entirely'"},
        {"[store]\npublish_interval_ms = 50\n", "obsd.conf:2: publish_interval_ms: belongs in [collector], not [store]"},
        {"publish_interval_ms = 50\n", "obsd.conf:1: publish_interval_ms: outside any section (it belongs in [collector])"},
        {"[colector]\npublish_interval_ms = 50\n", "obsd.conf:2: unknown section [colector]"},
        {"[collector]\npublish_interval_ms = 50\npublish_interval_ms = 60\n", "obsd.conf:3: publish_interval_ms: given twice (first on line 2)"},
        {"[collector]\nthis line has no equals sign\n", "obsd.conf:2: syntax error"},
        {"[collector]\npublish_interval_ms = fast\n", "publish_interval_ms: 'fast' is not a number (accepted: 10..60000)"},
        {"[collector]\npublish_interval_ms = 99999999999999999999999\n", "is not a number"},
        {"[collector]\npublish_interval_ms = -5\n", "'-5' is not a number"},
        {"[segment]\nring_size = 3MiB\n", "ring_size: '3MiB' is not a power of two"},
        {"[segment]\nring_size = 1GiB\n", "ring_size: '1GiB' is out of range (accepted: a power of two, 64KiB..256MiB"},
        {"[segment]\nring_size = 1MB\n", "ring_size: '1MB' is not a size"},
        {"[segment]\nring_full_policy = wait\n", "ring_full_policy: 'wait' is not a policy (accepted: drop|block)"},
        {"[segment]\nname = ../etc\n", "name: '../etc' is not a valid name"},
        {"[segment]\nname = \n", "name: must not be empty"},
        {"[segment]\nshm_group = no-such-group-obsd-test\n", "shm_group: 'no-such-group-obsd-test' is not a group on this host"},
        {"[collector]\ncpus = 3-1\n", "cpus: '3-1' is not a CPU list: range 3-1 is reversed"},
        {"[collector]\ncpus = 0,99999\n", "is not a CPU list"},
        {"[collector]\nexit_after_run = maybe\n", "exit_after_run: 'maybe' is not a boolean"},
        {"[collector]\nsocket_path = /tmp/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.sock\n", "socket_path: "},
        {"[log]\nlog_level = loud\n", "log_level: 'loud' is not a log level (accepted: error|warn|info|debug or 0..3)"},
        {"[store]\nstore_dir = \n", "store_dir: must not be empty"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct obsd_collector_config cfg;
        char err[512] = "";
        base_config(&cfg);
        ck_assert_msg(load_text(&cfg, cases[i].text, err, sizeof err) == -1, "case %zu accepted", i);
        ck_assert_msg(strstr(err, cases[i].expect), "case %zu: '%s' lacks '%s'", i, err, cases[i].expect);
    }
}
END_TEST

START_TEST(nul_bytes_and_long_lines_are_rejected)
{
    struct obsd_collector_config cfg;
    char err[512] = "";
    base_config(&cfg);
    static const char nul[] = "[collector]\npublish_interval_ms = 5\0 00\n";
    ck_assert_int_eq(obsd_config_load_buffer(&cfg, nul, sizeof nul - 1, "x.conf", err, sizeof err), -1);
    ck_assert_str_eq(err, "x.conf:2: line contains a NUL byte");

    char text[1024] = "[store]\nstore_dir = /";
    memset(text + strlen(text), 'a', 600);
    strcat(text, "\n");
    ck_assert_int_eq(load_text(&cfg, text, err, sizeof err), -1);
    ck_assert_msg(strstr(err, "obsd.conf:2: line is longer than"), "%s", err);
    ck_assert_str_eq(cfg.store_dir, "/var/lib/obsd");
}
END_TEST

START_TEST(missing_file_is_an_error)
{
    struct obsd_collector_config cfg;
    char err[512] = "";
    base_config(&cfg);
    ck_assert_int_eq(obsd_config_load(&cfg, "/nonexistent/obsd.conf", err, sizeof err), -1);
    ck_assert_str_eq(err, "/nonexistent/obsd.conf: cannot open: No such file or directory");
}
END_TEST

START_TEST(precedence_file_then_env_then_flags)
{
    struct obsd_collector_config cfg;
    char err[512] = "";
    char path[] = "/tmp/obsd-test-config-XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    const char *text = "[collector]\npublish_interval_ms = 500\nhistogram_buckets = 40\n"
                       "[segment]\nmax_producers = 8\n";
    ck_assert_int_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);

    base_config(&cfg);
    cfg.histogram_buckets = 30;
    ck_assert_int_eq(obsd_config_load(&cfg, path, err, sizeof err), 0);
    unlink(path);
    char *env[] = {"PATH=/bin", "OBSD_PUBLISH_INTERVAL_MS=700", "OBSD_MAX_PRODUCERS=9",
                   "OBSD_BUILD_DIR=/x", "OBSD_TEST_DATA=/y", NULL};
    ck_assert_int_eq(obsd_config_load_env(&cfg, env, err, sizeof err), 0);
    ck_assert_int_eq(obsd_config_set_assignment(&cfg, "publish_interval_ms=900", "--set", err, sizeof err), 0);
    ck_assert_uint_eq(cfg.publish_interval_ms, 900);   /* flag beats env beats file */
    ck_assert_uint_eq(cfg.max_producers, 9);           /* env beats file */
    ck_assert_uint_eq(cfg.histogram_buckets, 40);      /* file beats default */
}
END_TEST

START_TEST(env_and_flag_mistakes_name_their_origin)
{
    struct obsd_collector_config cfg;
    char err[512] = "";
    base_config(&cfg);
    char *bad_value[] = {"OBSD_PUBLISH_INTERVAL_MS=0", NULL};
    ck_assert_int_eq(obsd_config_load_env(&cfg, bad_value, err, sizeof err), -1);
    ck_assert_str_eq(err, "environment OBSD_PUBLISH_INTERVAL_MS: publish_interval_ms: '0' is out of range (accepted: 10..60000)");

    char *unknown[] = {"OBSD_PUBLISH_INTERVAL=100", NULL};
    ck_assert_int_eq(obsd_config_load_env(&cfg, unknown, err, sizeof err), -1);
    ck_assert_str_eq(err, "environment OBSD_PUBLISH_INTERVAL: unknown key (did you mean OBSD_PUBLISH_INTERVAL_MS?)");

    char *lower[] = {"OBSD_publish_interval_ms=100", NULL};
    ck_assert_int_eq(obsd_config_load_env(&cfg, lower, err, sizeof err), -1);

    ck_assert_int_eq(obsd_config_set_assignment(&cfg, "no_such_key=1", "--set", err, sizeof err), -1);
    ck_assert_str_eq(err, "--set: unknown key 'no_such_key' (the keys are listed in obsd.conf(5))");
    ck_assert_int_eq(obsd_config_set_assignment(&cfg, "publish_interval_ms", "--set", err, sizeof err), -1);
    ck_assert_str_eq(err, "--set: 'publish_interval_ms' is not KEY=VALUE");
    ck_assert_int_eq(obsd_config_set(&cfg, "name", "a/b", "--name", err, sizeof err), -1);
    ck_assert_msg(strstr(err, "--name: name: 'a/b' is not a valid name"), "%s", err);

    /* A value that would not fit on a line of a written obsd.conf is refused in
     * every layer (found by fuzz_config: an accepted cpus list that --print-config
     * wrote as a line the file reader then refused). */
    char long_dir[200];
    memset(long_dir, 'd', sizeof long_dir - 1);
    long_dir[0] = '/';
    long_dir[sizeof long_dir - 1] = '\0';
    ck_assert_int_eq(obsd_config_set(&cfg, "store_dir", long_dir, "--set", err, sizeof err), -1);
    ck_assert_str_eq(err, "--set: store_dir: value is longer than 186 characters");
    ck_assert_uint_eq(cfg.publish_interval_ms, 250);
}
END_TEST

START_TEST(optional_strings_are_unset_by_empty_values)
{
    struct obsd_collector_config cfg;
    char err[512] = "";
    base_config(&cfg);
    ck_assert_int_eq(obsd_config_set(&cfg, "tokenizer", "/a/tok.json", "--tokenizer", err, sizeof err), 0);
    ck_assert_str_eq(cfg.tokenizer, "/a/tok.json");
    ck_assert_int_eq(obsd_config_set(&cfg, "tokenizer", "/b/tok.json", "--tokenizer", err, sizeof err), 0);
    ck_assert_str_eq(cfg.tokenizer, "/b/tok.json");
    ck_assert_int_eq(obsd_config_set(&cfg, "tokenizer", "", "--set", err, sizeof err), 0);
    ck_assert_ptr_null(cfg.tokenizer);
}
END_TEST

START_TEST(sizes_and_cpu_lists)
{
    uint64_t v;
    ck_assert_int_eq(obsd_config_parse_size("4096", &v), 0);
    ck_assert_uint_eq(v, 4096);
    ck_assert_int_eq(obsd_config_parse_size("64KiB", &v), 0);
    ck_assert_uint_eq(v, 65536);
    ck_assert_int_eq(obsd_config_parse_size("3 gib", &v), 0);
    ck_assert_uint_eq(v, 3ull << 30);
    ck_assert_int_eq(obsd_config_parse_size("2T", &v), 0);
    ck_assert_uint_eq(v, 2ull << 40);
    ck_assert_int_eq(obsd_config_parse_size("16777216TiB", &v), -1);   /* overflows */
    ck_assert_int_eq(obsd_config_parse_size("1.5MiB", &v), -1);
    ck_assert_int_eq(obsd_config_parse_size("", &v), -1);

    cpu_set_t set;
    char err[128];
    ck_assert_int_eq(obsd_config_parse_cpus("0-2,5", &set, err, sizeof err), 0);
    ck_assert_int_eq(CPU_COUNT(&set), 4);
    ck_assert(CPU_ISSET(5, &set));
    ck_assert_int_eq(obsd_config_parse_cpus("0,", &set, err, sizeof err), -1);
    ck_assert_int_eq(obsd_config_parse_cpus("a", &set, err, sizeof err), -1);
}
END_TEST

/* What obsd --print-config writes reads back to the same configuration. */
START_TEST(written_config_reads_back_identically)
{
    struct obsd_collector_config a, b;
    char err[512] = "";
    base_config(&a);
    ck_assert_int_eq(load_text(&a,
        "[segment]\nname = rt\nmax_producers = 7\nring_size = 128KiB\nring_full_policy = block\n"
        "ring_block_timeout_ms = 3\nmax_text_bytes = 5000\nsched_workers = 3\nmax_keys = 70000\n"
        "[collector]\npublish_interval_ms = 77\ncpus = 0\nsocket_path = /tmp/x.sock\n"
        "raw_values_memory = 3MiB\nhistogram_buckets = 12\nexit_after_run = true\n"
        "[store]\nstore_dir = /tmp/s\nstore_map_size = 5MiB\nstore_sync = false\nhistory_full_every = 9\n"
        "[tokens]\ntokenizer = /t.json\ntokenizer_workers = 4\ndrain_timeout_s = 60\ntoken_queue_memory = 2GiB\n"
        "[log]\nlog_level = warn\n", err, sizeof err), 0);
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    obsd_config_write(&a, out);
    fclose(out);
    base_config(&b);
    ck_assert_msg(obsd_config_load_buffer(&b, text, len, "written", err, sizeof err) == 0, "%s", err);
    free(text);
    ck_assert_str_eq(a.name, b.name);
    ck_assert_str_eq(a.cpus, b.cpus);
    ck_assert_str_eq(a.socket_path, b.socket_path);
    ck_assert_str_eq(a.store_dir, b.store_dir);
    ck_assert_str_eq(a.tokenizer, b.tokenizer);
    ck_assert_ptr_null(b.shm_group);
    ck_assert_uint_eq(a.max_text_bytes, b.max_text_bytes);
    ck_assert_uint_eq(b.max_text_bytes, 5000);
    ck_assert_uint_eq(b.token_queue_memory, 2ull << 30);
    ck_assert_uint_eq(b.ring_size, 128u << 10);
    ck_assert_uint_eq(b.store_map_size, 5u << 20);
    ck_assert_uint_eq(b.raw_values_memory, 3u << 20);
    ck_assert(b.ring_full_block && b.exit_after_run && !b.store_sync);
    ck_assert_uint_eq(b.ring_block_timeout_ms, 3);
    ck_assert_uint_eq(b.sched_workers, 3);
    ck_assert_uint_eq(b.publish_interval_ms, 77);
    ck_assert_uint_eq(b.histogram_buckets, 12);
    ck_assert_uint_eq(b.history_full_every, 9);
    ck_assert_uint_eq(b.tokenizer_workers, 4);
    ck_assert_uint_eq(b.drain_timeout_s, 60);
    ck_assert_int_eq(b.log_level, 1);
    ck_assert_uint_eq(b.max_producers, 7);
    ck_assert_uint_eq(b.max_keys, 70000);
}
END_TEST

/* max_keys sizes the segment's key table: any count in 256..1048576, from the
 * file, the environment or a flag; anything else names the key and the range. */
START_TEST(max_keys_accepts_its_range_and_names_it_otherwise)
{
    struct obsd_collector_config cfg;
    char err[512] = "";
    base_config(&cfg);
    ck_assert_int_eq(load_text(&cfg, "[segment]\nmax_keys = 256\n", err, sizeof err), 0);
    ck_assert_uint_eq(cfg.max_keys, 256);
    ck_assert_int_eq(obsd_config_set(&cfg, "max_keys", "1048576", "--set", err, sizeof err), 0);
    ck_assert_uint_eq(cfg.max_keys, 1048576);
    char *env[] = {"OBSD_MAX_KEYS=20000", NULL};
    ck_assert_int_eq(obsd_config_load_env(&cfg, env, err, sizeof err), 0);
    ck_assert_uint_eq(cfg.max_keys, 20000);

    ck_assert_int_eq(load_text(&cfg, "[segment]\nmax_keys = 255\n", err, sizeof err), -1);
    ck_assert_str_eq(err, "obsd.conf:2: max_keys: '255' is out of range (accepted: 256..1048576)");
    ck_assert_int_eq(obsd_config_set(&cfg, "max_keys", "1048577", "--set", err, sizeof err), -1);
    ck_assert_str_eq(err, "--set: max_keys: '1048577' is out of range (accepted: 256..1048576)");
    ck_assert_int_eq(obsd_config_set(&cfg, "max_keys", "16k", "--set", err, sizeof err), -1);
    ck_assert_str_eq(err, "--set: max_keys: '16k' is not a number (accepted: 256..1048576)");
    ck_assert_int_eq(load_text(&cfg, "[collector]\nmax_keys = 4096\n", err, sizeof err), -1);
    ck_assert_msg(strstr(err, "max_keys") && strstr(err, "[segment]"), "%s", err);
    ck_assert_uint_eq(cfg.max_keys, 20000);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("config");
    TCase *tc = tcase_create("config");
    tcase_add_checked_fixture(tc, NULL, teardown);
    tcase_add_test(tc, file_values_are_applied);
    tcase_add_test(tc, out_of_range_names_file_line_key_and_range);
    tcase_add_test(tc, every_kind_of_file_mistake_is_explained);
    tcase_add_test(tc, nul_bytes_and_long_lines_are_rejected);
    tcase_add_test(tc, missing_file_is_an_error);
    tcase_add_test(tc, precedence_file_then_env_then_flags);
    tcase_add_test(tc, env_and_flag_mistakes_name_their_origin);
    tcase_add_test(tc, optional_strings_are_unset_by_empty_values);
    tcase_add_test(tc, sizes_and_cpu_lists);
    tcase_add_test(tc, written_config_reads_back_identically);
    tcase_add_test(tc, max_keys_accepts_its_range_and_names_it_otherwise);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
