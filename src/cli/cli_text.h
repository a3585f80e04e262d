/*
 * cli_text.h: reading untrusted text from the store byte by byte.
 *
 * Run ids, run names, metric names and section strings are whatever a
 * producer or a damaged store put there. The HTML report and the OpenMetrics
 * exposition may only emit well-formed UTF-8, so both walk strings with this
 * decoder and write U+FFFD for anything that is not a well-formed sequence.
 */
#ifndef OBSD_CLI_CLI_TEXT_H
#define OBSD_CLI_CLI_TEXT_H

#include <stddef.h>
#include <stdint.h>

/* The UTF-8 encoding of U+FFFD REPLACEMENT CHARACTER. */
#define CLI_UTF8_REPLACEMENT "\xEF\xBF\xBD"

/* Decodes the sequence at s (n > 0 bytes left): returns its length (1..4)
 * with the code point in *cp, or 0 when the bytes there are not a
 * well-formed UTF-8 sequence (overlong forms, surrogates, code points past
 * U+10FFFF and truncated sequences included); the caller then skips one
 * byte. */
size_t cli_utf8_decode(const unsigned char *s, size_t n, uint32_t *cp);

#endif
