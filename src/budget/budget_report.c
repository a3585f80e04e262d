/*
 * budget_report.c: what `obsctl budget` prints, built from the "budget"
 * section of a snapshot (budget.h documents the section).
 */
#include <stdarg.h>
#include <string.h>

#include "budget/budget.h"

static const char *const context_keys[] = {
    "namespace", "flop_budget", "flops_used", "flops_remaining", "exhausted", "wall_s",
    "backend_s", "overhead_s", "residual_s", "operations", "by_namespace",
};

static void set_err(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || !errlen)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static int check_section(const json_t *section, char *err, size_t errlen)
{
    if (!json_is_object(section) || !json_is_array(json_object_get(section, "contexts")) ||
        !json_is_object(json_object_get(section, "session"))) {
        set_err(err, errlen, "the snapshot's budget section has no contexts array or session object");
        return -1;
    }
    return 0;
}

json_t *budget_report_json(const json_t *section, char *err, size_t errlen)
{
    if (check_section(section, err, errlen) < 0)
        return NULL;
    json_t *contexts = json_array();
    size_t i;
    json_t *c;
    json_array_foreach(json_object_get(section, "contexts"), i, c) {
        json_t *o = json_object();
        for (size_t k = 0; o && k < sizeof context_keys / sizeof *context_keys; k++) {
            json_t *v = json_object_get(c, context_keys[k]);
            if (!v) {
                set_err(err, errlen, "budget context %zu has no '%s'", i, context_keys[k]);
                json_decref(o);
                json_decref(contexts);
                return NULL;
            }
            json_object_set_new(o, context_keys[k], json_deep_copy(v));
        }
        json_array_append_new(contexts, o);
    }
    return json_pack("{s:o,s:o}", "contexts", contexts, "session",
                     json_deep_copy(json_object_get(section, "session")));
}

static double num(const json_t *o, const char *k)
{
    return json_number_value(json_object_get(o, k));
}

static long long inum(const json_t *o, const char *k)
{
    return (long long)json_integer_value(json_object_get(o, k));
}

static void print_ops(FILE *out, const json_t *ops)
{
    fprintf(out, "  %-24s %16s %10s %12s %12s\n", "OP", "FLOP_COST", "CALLS", "BACKEND_S", "OVERHEAD_S");
    const char *name;
    json_t *v;
    json_object_foreach((json_t *)ops, name, v) {
        fprintf(out, "  %-24s %16lld %10lld %12.6f %12.6f\n", name, inum(v, "flop_cost"), inum(v, "calls"),
                num(v, "backend_s"), num(v, "overhead_s"));
    }
}

static void print_namespaces(FILE *out, const json_t *by_ns)
{
    fprintf(out, "  %-24s %16s %10s %12s %12s\n", "NAMESPACE", "FLOPS_USED", "CALLS", "BACKEND_S", "OVERHEAD_S");
    const char *name;
    json_t *v;
    json_object_foreach((json_t *)by_ns, name, v) {
        fprintf(out, "  %-24s %16lld %10lld %12.6f %12.6f\n", name[0] ? name : "(none)", inum(v, "flops_used"),
                inum(v, "calls"), num(v, "backend_s"), num(v, "overhead_s"));
    }
}

int budget_report_print(FILE *out, const json_t *section, char *err, size_t errlen)
{
    if (check_section(section, err, errlen) < 0)
        return -1;
    const json_t *contexts = json_object_get(section, "contexts");
    const json_t *s = json_object_get(section, "session");
    fprintf(out, "%-4s %-24s %16s %16s %-4s %10s %10s %10s %10s\n", "#", "NAMESPACE", "FLOPS_USED", "FLOP_BUDGET",
            "EXH", "WALL_S", "BACKEND_S", "OVERHEAD_S", "RESIDUAL_S");
    size_t i;
    json_t *c;
    json_array_foreach(contexts, i, c) {
        const char *ns = json_string_value(json_object_get(c, "namespace"));
        char idx[24];
        snprintf(idx, sizeof idx, "%zu%s", i, json_is_true(json_object_get(c, "open")) ? "*" : "");
        fprintf(out, "%-4s %-24s %16lld %16lld %-4s %10.6f %10.6f %10.6f %10.6f\n", idx, ns ? ns : "(none)",
                inum(c, "flops_used"), inum(c, "flop_budget"),
                json_is_true(json_object_get(c, "exhausted")) ? "yes" : "no", num(c, "wall_s"),
                num(c, "backend_s"), num(c, "overhead_s"), num(c, "residual_s"));
    }
    fprintf(out, "%-4s %-24s %16lld %16lld %-4s %10.6f %10.6f %10.6f %10.6f\n", "all", "(session)",
            inum(s, "flops_used"), inum(s, "flop_budget"), "", num(s, "wall_s"), num(s, "backend_s"),
            num(s, "overhead_s"), num(s, "residual_s"));
    fprintf(out, "\n%lld contexts, %lld open (marked *), %lld exhausted\n", inum(s, "contexts"),
            inum(s, "open_contexts"), inum(s, "exhausted_contexts"));
    const json_t *ops = json_object_get(s, "operations");
    if (json_object_size(ops)) {
        fprintf(out, "\nper op (session):\n");
        print_ops(out, ops);
    }
    const json_t *by_ns = json_object_get(s, "by_namespace");
    if (json_object_size(by_ns)) {
        fprintf(out, "\nper namespace (session):\n");
        print_namespaces(out, by_ns);
    }
    return 0;
}
