/*
 * cli_html.c: HTML escaping and human-readable numbers (cli_html.h).
 */
#include "cli/cli_html.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "publisher/snapshot.h"

/* Code points that are parse errors in HTML text even when escaped as
 * characters: C0 controls other than tab/LF/CR, DEL and C1, noncharacters. */
static int forbidden(uint32_t cp)
{
    return (cp < 0x20 && cp != '\t' && cp != '\n' && cp != '\r') || (cp >= 0x7F && cp <= 0x9F) ||
           (cp >= 0xFDD0 && cp <= 0xFDEF) || (cp & 0xFFFE) == 0xFFFE;
}

static void text(FILE *f, const char *s, size_t max_chars)
{
    if (!s)
        return;
    const unsigned char *p = (const unsigned char *)s;
    size_t n = strlen(s), chars = 0;
    while (n) {
        if (chars++ == max_chars) {
            fputs("\xE2\x80\xA6", f);   /* … */
            return;
        }
        uint32_t cp;
        size_t len = obsd_utf8_decode(p, n, &cp);
        if (!len || forbidden(cp)) {
            fputs(OBSD_UTF8_REPLACEMENT, f);
            len = len ? len : 1;
        } else if (cp == '&') {
            fputs("&amp;", f);
        } else if (cp == '<') {
            fputs("&lt;", f);
        } else if (cp == '>') {
            fputs("&gt;", f);
        } else if (cp == '"') {
            fputs("&quot;", f);
        } else if (cp == '\'') {
            fputs("&#39;", f);
        } else {
            fwrite(p, 1, len, f);
        }
        p += len;
        n -= len;
    }
}

void html_text(FILE *f, const char *s)
{
    text(f, s, SIZE_MAX);
}

void html_text_trunc(FILE *f, const char *s, size_t max_chars)
{
    text(f, s, max_chars);
}

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n > k && !strcmp(s + n - k, suffix);
}

enum cli_unit cli_unit_of(const char *name)
{
    if (!name)
        return CLI_UNIT_NONE;
    if (ends_with(name, "_ns"))
        return CLI_UNIT_NS;
    if (ends_with(name, "_s"))
        return CLI_UNIT_S;
    return CLI_UNIT_NONE;
}

/* "%.4g" without an exponent for the magnitudes passed here (< 10000). */
static void sig4(double v, const char *suffix, char *buf, size_t len)
{
    if (fabs(v) >= 9999.5)
        snprintf(buf, len, "%.0f%s", v, suffix);
    else
        snprintf(buf, len, "%.4g%s", v, suffix);
}

void cli_format_human(double v, enum cli_unit unit, char *buf, size_t len)
{
    if (isnan(v)) {
        snprintf(buf, len, "-");
        return;
    }
    if (isinf(v)) {
        snprintf(buf, len, "%s", v > 0 ? "\xE2\x88\x9E" : "-\xE2\x88\x9E");
        return;
    }
    double a = fabs(v);
    if (unit == CLI_UNIT_S) {
        v *= 1e9;
        a *= 1e9;
        unit = CLI_UNIT_NS;
    }
    if (unit == CLI_UNIT_NS) {
        if (a == 0)
            snprintf(buf, len, "0");
        else if (a < 999.95)
            sig4(v, " ns", buf, len);
        else if (a < 999950)
            sig4(v / 1e3, " \xC2\xB5s", buf, len);
        else if (a < 999950000)
            sig4(v / 1e6, " ms", buf, len);
        else
            sig4(v / 1e9, " s", buf, len);
        return;
    }
    if (a < 9999.5)
        sig4(v, "", buf, len);
    else if (a < 999950)
        sig4(v / 1e3, "k", buf, len);
    else if (a < 999950000)
        sig4(v / 1e6, "M", buf, len);
    else if (a < 999950000000)
        sig4(v / 1e9, "G", buf, len);
    else
        sig4(v / 1e12, "T", buf, len);
}
