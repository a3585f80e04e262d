/*
 * fuzz_config.c: bytes as an obsd.conf file -> the config parser. It must
 * either accept the file or reject it with a message, never crash, read out
 * of bounds or leak; an accepted config must survive a write/reparse.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/config.h"

/* The documented defaults (obsd.conf(5)), so that every written value is in
 * range. */
static void start(struct obsd_collector_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->name = "obsd";
    cfg->max_producers = 64;
    cfg->ring_size = 1u << 20;
    cfg->ring_block_timeout_ms = 10;
    cfg->max_text_bytes = 16u << 20;
    cfg->sched_workers = 256;
    cfg->max_keys = 16384;
    cfg->publish_interval_ms = 250;
    cfg->raw_values_memory = 64u << 20;
    cfg->histogram_buckets = 30;
    cfg->store_dir = "/var/lib/obsd";
    cfg->store_map_size = 1u << 30;
    cfg->store_sync = true;
    cfg->history_full_every = 40;
    cfg->tokenizer_workers = 2;
    cfg->token_queue_memory = 256u << 20;
    cfg->log_level = 2;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct obsd_collector_config cfg;
    char err[512];
    start(&cfg);
    err[0] = '\0';
    if (obsd_config_load_buffer(&cfg, (const char *)data, size, "fuzz.conf", err, sizeof err) == 0) {
        /* What was accepted must write out and read back. */
        char *text = NULL;
        size_t len = 0;
        FILE *out = open_memstream(&text, &len);
        if (out) {
            obsd_config_write(&cfg, out);
            fclose(out);
            struct obsd_collector_config again;
            start(&again);
            if (obsd_config_load_buffer(&again, text, len, "rewritten", err, sizeof err) != 0)
                abort();
            if (again.publish_interval_ms != cfg.publish_interval_ms ||
                again.ring_size != cfg.ring_size || strcmp(again.name, cfg.name))
                abort();
            free(text);
        }
    } else if (!err[0]) {
        abort();   /* a rejection always explains itself */
    }
    obsd_config_free_strings();
    return 0;
}
