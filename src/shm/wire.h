/*
 * wire.h: the record format shared by producers (libobsd) and the collector.
 *
 * Every record in a ring is an 8-byte header followed by its payload, padded
 * to 8 bytes:
 *
 *   +--------+------+-------+--------+--------------------+---------+
 *   | len 16 | type | flags | key 32 | payload (len bytes) | pad to 8|
 *   +--------+------+-------+--------+--------------------+---------+
 *
 * A span is therefore 24 bytes: header plus two u64 timestamps. Payloads
 * larger than a fraction of the ring travel as OBSD_REC_FRAG records (first
 * fragment carries the real type and total length) and are reassembled by the
 * collector. All integers are little-endian host order (one host).
 *
 * Everything read from shared memory is untrusted: the collector checks every
 * length against the ring and every payload against the sizes below, and
 * rejects (and counts) what does not fit.
 *
 * Payload structs of module records live with their modules
 * (src/budget/budget_wire.h, src/sched/sched_wire.h); their type numbers are
 * reserved here.
 */
#ifndef OBSD_SHM_WIRE_H
#define OBSD_SHM_WIRE_H

#include <stdint.h>

struct obsd_rec_hdr {
    uint16_t len;   /* payload bytes, not counting header or padding */
    uint8_t type;   /* enum obsd_rec_type */
    uint8_t flags;  /* OBSD_RECF_* */
    uint32_t key;   /* interned key id, or a type-specific code */
};
_Static_assert(sizeof(struct obsd_rec_hdr) == 8, "record header is 8 bytes");

#define OBSD_REC_ALIGN 8u
#define OBSD_REC_SIZE(payload_len) \
    ((sizeof(struct obsd_rec_hdr) + (payload_len) + OBSD_REC_ALIGN - 1) & ~(uint64_t)(OBSD_REC_ALIGN - 1))

enum obsd_rec_type {
    /* framing */
    OBSD_REC_PAD = 0,          /* filler up to the end of the ring; skip */
    OBSD_REC_FRAG = 1,         /* a fragment of a large record (flags FIRST/LAST) */
    /* core metrics (key = interned name) */
    OBSD_REC_SPAN = 2,         /* struct obsd_pl_span */
    OBSD_REC_VALUE = 3,        /* struct obsd_pl_value */
    OBSD_REC_COUNTER = 4,      /* struct obsd_pl_counter */
    OBSD_REC_GAUGE = 5,        /* struct obsd_pl_gauge */
    OBSD_REC_SESSION = 6,      /* key = enum obsd_session_event; struct obsd_pl_session */
    /* requests of load generators: 16..31 */
    OBSD_REC_REQ_ISSUED = 16,  /* struct obsd_pl_req_issued + prompt text */
    OBSD_REC_REQ_FIRST = 17,   /* struct obsd_pl_req + first chunk text */
    OBSD_REC_REQ_CHUNK = 18,   /* struct obsd_pl_req */
    OBSD_REC_REQ_ERROR = 19,   /* struct obsd_pl_req + message */
    OBSD_REC_REQ_COMPLETE = 20,/* struct obsd_pl_req_complete + reason + output */
    /* FLOP budgets: 32..47, payloads in src/budget/budget_wire.h */
    OBSD_REC_BUDGET_FIRST = 32,
    OBSD_REC_BUDGET_LAST = 47,
    /* scheduler counters: 48..63, payloads in src/sched/sched_wire.h */
    OBSD_REC_SCHED_FIRST = 48,
    OBSD_REC_SCHED_LAST = 63,
};

enum obsd_rec_flags {
    OBSD_RECF_FRAG_FIRST = 1u << 0, /* first fragment: payload starts with obsd_pl_frag_first */
    OBSD_RECF_FRAG_LAST = 1u << 1,  /* last fragment: the record is complete */
};

/* First fragment of a large record. The bytes after it, and the payloads of
 * the following OBSD_REC_FRAG records of the same ring, concatenate to the
 * original payload of total_len bytes. */
struct obsd_pl_frag_first {
    uint8_t type;        /* the original record type */
    uint8_t flags;       /* the original record flags */
    uint16_t reserved;
    uint32_t key;        /* the original key */
    uint64_t total_len;  /* bytes of the reassembled payload */
};

struct obsd_pl_span { uint64_t start_ns, end_ns; };
struct obsd_pl_value { uint64_t value; };
struct obsd_pl_counter { int64_t delta; };
struct obsd_pl_gauge { double value; };
struct obsd_pl_session { uint64_t ts_ns; };

#define OBSD_PROMPT_TOKENS_FROM_TEXT UINT64_MAX

struct obsd_pl_req {
    uint64_t request_id;
    uint64_t ts_ns;
};
struct obsd_pl_req_issued {
    uint64_t request_id;
    uint64_t ts_ns;
    uint64_t prompt_tokens; /* OBSD_PROMPT_TOKENS_FROM_TEXT: count the text that follows */
};
struct obsd_pl_req_complete {
    uint64_t request_id;
    uint64_t ts_ns;
    uint32_t reason_len;    /* finish reason bytes right after this struct, then the output */
    uint32_t reserved;
};

#endif
