/*
 * tokenizer.h: an exact byte-level BPE tokenizer for Hugging Face tokenizer.json
 * files and tiktoken rank files.
 *
 * Loading does all the checking: a file that uses a feature this tokenizer does
 * not implement is refused with a message naming the field, so counting and
 * encoding never fail for a reason other than running out of memory.
 *
 * Encoding follows Hugging Face tokenizers' encode(text, add_special_tokens =
 * false): added tokens inside the text are matched (leftmost-longest, before
 * anything else) and become their ids; the post-processor, decoder, padding
 * and truncation are not applied (a non-null "truncation" or "padding" is
 * refused at load because it would change the ids).
 *
 * Input that is not valid UTF-8 is first made valid the way Rust's
 * String::from_utf8_lossy does it: each maximal invalid subsequence becomes
 * U+FFFD. Valid input is never copied.
 *
 * Thread safety: a loaded tokenizer is read-only. Any number of threads may
 * call the count and encode functions at the same time; each call borrows a
 * private workspace (regex match data, merge scratch, pre-token cache) from a
 * pool owned by the tokenizer. tokenizer_free must not race with other calls.
 */
#ifndef OBSD_TOKENQ_TOKENIZER_H
#define OBSD_TOKENQ_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

typedef struct tokenizer tokenizer;

/* A growable id vector that the caller owns and may reuse across calls. */
typedef struct tokenizer_ids {
    uint32_t *ids;
    size_t len;
    size_t cap;
} tokenizer_ids;

enum {
    TOKENIZER_OK = 0,
    TOKENIZER_ENOMEM = -1,   /* allocation failed */
    TOKENIZER_EINTERNAL = -2 /* regex engine error (never expected; reported, not hidden) */
};

/* Loads a tokenizer.json file, plain or gzip-compressed. On failure returns
 * NULL and writes a message (naming the offending field) into err. */
tokenizer *tokenizer_load_file(const char *path, char *err, size_t errlen);

/* The same from a JSON document in memory. */
tokenizer *tokenizer_load_json(const char *json, size_t len, char *err, size_t errlen);

/* Loads a tiktoken rank file (lines "<base64 token> <rank>", plain or gzip).
 * pattern is "cl100k_base", "o200k_base", or a regular expression in the
 * tiktoken (fancy-regex) dialect. Pieces that are whole tokens are emitted as
 * such; other pieces merge the adjacent pair whose concatenation has the
 * lowest rank, leftmost first; ids are ranks. No special tokens. */
tokenizer *tokenizer_load_tiktoken_file(const char *path, const char *pattern, char *err, size_t errlen);
tokenizer *tokenizer_load_tiktoken(const char *data, size_t len, const char *pattern, char *err,
                                   size_t errlen);

void tokenizer_free(tokenizer *tok);

/* Number of ids text encodes to, or a negative TOKENIZER_E* code. */
int64_t tokenizer_count(const tokenizer *tok, const char *text, size_t len);

/* Encodes text into out (its previous contents are replaced). Returns
 * TOKENIZER_OK or a negative TOKENIZER_E* code. */
int tokenizer_encode(const tokenizer *tok, const char *text, size_t len, tokenizer_ids *out);

/* Batch forms: n texts spread over `threads` threads (0 or 1: the calling
 * thread only). counts[i] / outs[i] receive the result for texts[i]. Returns
 * TOKENIZER_OK or the first error; on error the outputs are unspecified. */
int tokenizer_count_batch(const tokenizer *tok, size_t n, const char *const *texts,
                          const size_t *lens, int64_t *counts, unsigned threads);
int tokenizer_encode_batch(const tokenizer *tok, size_t n, const char *const *texts,
                           const size_t *lens, tokenizer_ids *outs, unsigned threads);

void tokenizer_ids_free(tokenizer_ids *v);

/* Message for a TOKENIZER_E* code. */
const char *tokenizer_strerror(int code);

/* Number of ids in the model vocabulary plus added tokens (max id + 1). */
uint32_t tokenizer_vocab_size(const tokenizer *tok);

/* FNV-1a 64 over ids, each as 4 little-endian bytes: the hash of the
 * reference files. */
uint64_t tokenizer_fnv1a64(const uint32_t *ids, size_t n);

#endif
