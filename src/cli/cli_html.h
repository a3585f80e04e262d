/*
 * cli_html.h: writing HTML from untrusted strings, and numbers for people.
 *
 * Everything the report prints that comes from the store (run ids and names,
 * metric names, section keys and strings) goes through html_text(), which
 * escapes markup characters and replaces what HTML forbids (malformed UTF-8,
 * control characters, noncharacters) with U+FFFD. The result is safe both as
 * element content and inside a double- or single-quoted attribute value.
 */
#ifndef OBSD_CLI_CLI_HTML_H
#define OBSD_CLI_CLI_HTML_H

#include <stddef.h>
#include <stdio.h>

/* Escaped text of s (NULL prints nothing). */
void html_text(FILE *f, const char *s);
/* The same for at most max_chars characters of s, then "…" if s was longer. */
void html_text_trunc(FILE *f, const char *s, size_t max_chars);

/* What a metric's values measure, from its name: "_ns" is nanoseconds, "_s"
 * seconds, anything else a plain quantity. */
enum cli_unit { CLI_UNIT_NONE, CLI_UNIT_NS, CLI_UNIT_S };
enum cli_unit cli_unit_of(const char *name);

/* v for a person, 4 significant digits: durations as "950 ns", "12.35 µs",
 * "4.5 ms", "1.234 s"; plain quantities as "950", "12.35k", "4.5M", "1.2G";
 * NaN as "-". */
void cli_format_human(double v, enum cli_unit unit, char *buf, size_t len);

#endif
