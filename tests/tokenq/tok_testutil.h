/* tok_testutil.h: reading the tokenizer test data (plain or gzip) for the tokenq suites. */
#ifndef OBSD_TESTS_TOK_TESTUTIL_H
#define OBSD_TESTS_TOK_TESTUTIL_H

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

static inline const char *tt_data_dir(void)
{
    const char *d = getenv("OBSD_TEST_DATA");
    return d ? d : "tests/data";
}

static inline char *tt_path(const char *name)
{
    static char buf[4][1024];
    static int k;
    char *p = buf[k++ & 3];
    snprintf(p, 1024, "%s/%s", tt_data_dir(), name);
    return p;
}

/* Whole file (gunzipped if needed), NUL-terminated; aborts the test on failure. */
static inline char *tt_read(const char *path, size_t *len)
{
    gzFile f = gzopen(path, "rb");
    ck_assert_msg(f != NULL, "cannot open %s", path);
    size_t cap = 1 << 20, n = 0;
    char *buf = malloc(cap + 1);
    ck_assert_ptr_nonnull(buf);
    int r;
    while ((r = gzread(f, buf + n, (unsigned)(cap - n))) > 0) {
        n += (size_t)r;
        if (n == cap) {
            cap *= 2;
            buf = realloc(buf, cap + 1);
            ck_assert_ptr_nonnull(buf);
        }
    }
    ck_assert_msg(r == 0, "read error on %s", path);
    gzclose(f);
    buf[n] = 0;
    if (len)
        *len = n;
    return buf;
}

/* Splits buf in place into non-empty lines; returns their count. */
static inline size_t tt_lines(char *buf, char ***out)
{
    size_t n = 0, cap = 1024;
    char **v = malloc(cap * sizeof *v);
    for (char *p = buf; *p;) {
        char *nl = strchr(p, '\n');
        if (nl)
            *nl = 0;
        if (*p) {
            if (n == cap)
                v = realloc(v, (cap *= 2) * sizeof *v);
            v[n++] = p;
        }
        if (!nl)
            break;
        p = nl + 1;
    }
    *out = v;
    return n;
}

#endif
