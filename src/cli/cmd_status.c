/*
 * cmd_status.c: 'obsctl status', the live state of a running obsd: its run,
 * record and drop totals, and every producer ring (fill, drops).
 */
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "cli/cli_control.h"
#include "cli/cli_store.h"
#include "cli/commands.h"

static void status_usage(FILE *out)
{
    fprintf(out,
        "usage: obsctl status [--name NAME] [--store DIR] [--socket PATH] [--config FILE] [--json]\n"
        "\n"
        "Asks the obsd serving segment NAME for its live state: run, state, records\n"
        "received, drops, rejected records, pending token tasks and each producer ring.\n"
        "The socket is PATH, else socket_path from obsd.conf, else DIR/NAME.sock, with\n"
        "NAME and DIR defaulting as for obsd(8) (obsd.conf, OBSD_<KEY>, then options;\n"
        "OBSD_STORE, as for the other obsctl commands, beats OBSD_STORE_DIR).\n"
        "  --json   print the daemon's JSON reply as is (one line)\n"
        "Exit status: 0, 1 when no daemon answers, 2 for bad arguments.\n");
}

static json_int_t int_field(json_t *o, const char *key)
{
    return json_integer_value(json_object_get(o, key));
}

static void print_status(json_t *st)
{
    const char *name = json_string_value(json_object_get(st, "name"));
    const char *run = json_string_value(json_object_get(st, "run"));
    const char *state = json_string_value(json_object_get(st, "state"));
    bool has_run = run && *run;
    printf("obsd '%s' (pid %lld): %s%s\n", name ? name : "?", (long long)int_field(st, "pid"),
           has_run ? "run " : "no run yet", has_run ? run : "");
    printf("state          %s\n", state ? state : "?");
    printf("records        %lld\n", (long long)int_field(st, "records"));
    printf("dropped        %lld\n", (long long)int_field(st, "dropped"));
    printf("rejected       %lld\n", (long long)int_field(st, "rejected"));
    printf("pending tasks  %lld\n", (long long)int_field(st, "n_pending_tasks"));

    json_t *producers = json_object_get(st, "producers");
    size_t n = json_is_array(producers) ? json_array_size(producers) : 0;
    printf("producers      %zu\n", n);
    if (!n)
        return;
    printf("\n%5s %8s %8s %7s %12s %10s %12s %s\n", "SLOT", "PID", "TID", "FILL", "WRITTEN",
           "DROPPED", "RING", "STATE");
    for (size_t i = 0; i < n; i++) {
        json_t *p = json_array_get(producers, i);
        double fill = json_number_value(json_object_get(p, "fill"));
        printf("%5lld %8lld %8lld %6.1f%% %12lld %10lld %12lld %s\n",
               (long long)int_field(p, "slot"), (long long)int_field(p, "pid"),
               (long long)int_field(p, "tid"), fill * 100.0, (long long)int_field(p, "written"),
               (long long)int_field(p, "dropped"), (long long)int_field(p, "ring_bytes"),
               json_is_true(json_object_get(p, "dead")) ? "dead" : "alive");
    }
}

int cmd_status(int argc, char **argv)
{
    static const struct option options[] = {
        {"name", required_argument, NULL, 'n'},
        {"store", required_argument, NULL, 's'},
        {"socket", required_argument, NULL, 'S'},
        {"config", required_argument, NULL, 'c'},
        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        {0, 0, 0, 0},
    };
    const char *name = NULL, *store = NULL, *socket = NULL, *config = NULL;
    int json_out = 0, opt;

    optind = 1;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, ":n:s:S:c:jh", options, NULL)) != -1) {
        switch (opt) {
        case 'n': name = optarg; break;
        case 's': store = optarg; break;
        case 'S': socket = optarg; break;
        case 'c': config = optarg; break;
        case 'j': json_out = 1; break;
        case 'h': status_usage(stdout); return 0;
        default:
            return cli_bad_option("status", opt, optopt, argv, optind);
        }
    }
    if (optind < argc) {
        return cli_usage_error("status", "unexpected argument '%s'", argv[optind]);
    }

    struct control_target t;
    int rc = control_resolve(&t, "status", config, name, store, socket);
    if (rc)
        return rc;
    char *line = control_request_line(&t, "status", "status", 5000);
    if (!line)
        return 1;
    json_error_t jerr;
    json_t *st = json_loads(line, 0, &jerr);
    if (!json_is_object(st)) {
        fprintf(stderr, "obsctl status: %s sent a reply that is not a JSON object: %s\n",
                t.socket_path, jerr.text);
        json_decref(st);
        free(line);
        return 1;
    }
    const char *error = json_string_value(json_object_get(st, "error"));
    if (error) {
        fprintf(stderr, "obsctl status: obsd says: %s\n", error);
        rc = 1;
    } else if (json_out) {
        printf("%s\n", line);
    } else {
        print_status(st);
    }
    json_decref(st);
    free(line);
    return rc;
}
