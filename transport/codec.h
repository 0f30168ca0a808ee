/* transport/codec.h — troupe's wire codec (internal, independent of
 * sockets). docs/protocol.md is the specification; this header is its C
 * side.
 *
 * A FRAME (one ZeroMQ message part) is one msgpack array of 1..max_batch
 * ENVELOPES. An envelope is a msgpack array of exactly TR__ENV_FIELDS
 * fields:
 *
 *     [version, kind, flags, sender, target, req_id, tag, aux, pkind, payload]
 *
 * version is TR__PROTO_VERSION; pkind is a tr_payload_kind (NONE, U64,
 * BYTES, MSGPACK; never PTR) and payload is nil, a uint, a bin, or the
 * MSGPACK payload's object itself, embedded (not wrapped in a bin). Which
 * kinds allow which flags, pkinds, tags, req_ids and aux values is one
 * table in codec.c, enforced by the encoder (TR_EINVAL) and the decoder
 * (TR__REJ_FIELD) alike.
 *
 * Encoding: a tr__encoder appends envelopes into one growable buffer that
 * is reused frame after frame: after warm-up, encoding allocates nothing.
 * Decoding: a tr__decoder validates a whole frame (all or nothing) into a
 * preallocated array of tr__env views whose BYTES/MSGPACK data point into
 * the frame (zero copy). Every count read from the input is checked
 * against the limits and against the bytes remaining before it is used,
 * and the decoder never allocates.
 *
 * Errors: functions return 0 or a negative TR_E* code. A rejected frame
 * also has a reason (tr__codec_reject), counted per reason in the
 * decoder's stats; reasons map onto two codes: TR_EPROTO (malformed) and
 * TR_ETOOBIG (over a limit). The caller drops the frame and logs.
 *
 * Threads: an encoder or decoder belongs to one thread at a time. */
#ifndef TR_TRANSPORT_CODEC_H
#define TR_TRANSPORT_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "troupe/error.h"
#include "troupe/message.h"
#include "troupe/mpack.h"

/* The version this build writes, and the oldest it can read. */
#define TR__PROTO_VERSION 1u
#define TR__PROTO_VERSION_MIN 1u
#define TR__ENV_FIELDS 10u

/* The system tags a SEND may carry: a channel's (troupe/channel.h:
 * open, close, take and the end of the stream) and a limiter's
 * (troupe/limiter.h: acquire, release and the grant; not its timer), so
 * that actors of another process use them through a proxy as local ones
 * do. They ask nothing of the receiver but what a local sender may ask
 * (both key their users by sender, and monitor them). Every other system
 * tag (DOWN, EXIT, timeouts, the transport's own) never travels as data:
 * it has its own kind or stays in its process. */
#define TR__TAG_LIMITER_MIN 0xFFFF0700u
#define TR__TAG_LIMITER_MAX 0xFFFF0702u
#define TR__TAG_CHANNEL_MIN 0xFFFF0720u
#define TR__TAG_CHANNEL_MAX 0xFFFF072Fu

static inline bool tr__tag_crosses(uint32_t tag) {
    return tag < TR_TAG_SYSTEM ||
           (tag >= TR__TAG_LIMITER_MIN && tag <= TR__TAG_LIMITER_MAX) ||
           (tag >= TR__TAG_CHANNEL_MIN && tag <= TR__TAG_CHANNEL_MAX);
}

/* Hard ceiling for any nesting limit (the walker's stack size). */
#define TR__MP_DEPTH_MAX 64u

/* Envelope kinds. The numbers are wire values: never renumber. */
typedef enum tr__env_kind {
    TR__K_HELLO = 1,        /* handshake; payload: MSGPACK map (tr__hello) */
    TR__K_BYE = 2,          /* orderly close; aux: reason (<= 0) */
    TR__K_HEARTBEAT = 3,    /* liveness; aux: sequence; payload: U64 load */
    TR__K_CREDIT = 4,       /* flow control; aux: credits granted (> 0) */
    TR__K_SEND = 5,         /* one-way message to target */
    TR__K_REQUEST = 6,      /* message expecting a REPLY; aux: timeout ms */
    TR__K_REPLY = 7,        /* answer to req_id; aux: status (<= 0) */
    TR__K_CANCEL = 8,       /* cancel req_id, or stop target (req_id 0) */
    TR__K_SPAWN = 9,        /* spawn a registered behaviour; MSGPACK map */
    TR__K_SPAWN_REPLY = 10, /* sender = new actor; aux: status (<= 0) */
    TR__K_LINK = 11,        /* link sender and target (flag UNDO: unlink) */
    TR__K_MONITOR = 12,     /* monitor target, id req_id (UNDO: demonitor) */
    TR__K_EXIT = 13,        /* linked sender ended; aux: exit reason */
    TR__K_DOWN = 14,        /* monitored sender ended; req_id: monitor id */
    TR__K_COUNT
} tr__env_kind;

/* Envelope flags (wire values). Unknown bits are rejected. */
enum {
    TR__ENV_F_UNDO = 1u << 0, /* LINK: unlink; MONITOR: demonitor */
    TR__ENV_F_KILL = 1u << 1  /* CANCEL with req_id 0: kill, no grace */
};

/* One envelope: the encoder's input and the decoder's output. Decoded
 * data points into the frame (valid while the frame's bytes are). For
 * NONE and U64 payloads data is NULL and len 0; u64 is 0 unless U64.
 * 64 bytes. */
typedef struct tr__env {
    uint64_t sender;
    uint64_t target;
    uint64_t req_id;
    int64_t aux;
    uint64_t u64;              /* TR_PAYLOAD_U64 value */
    const unsigned char *data; /* BYTES: bin contents; MSGPACK: the object */
    size_t len;
    uint32_t tag;
    uint16_t flags;
    uint8_t kind;  /* tr__env_kind */
    uint8_t pkind; /* tr_payload_kind */
} tr__env;

/* Equality of every field and of the payload bytes (not the pointers). */
bool tr__env_equal(const tr__env *a, const tr__env *b);

/* ---- limits
 * ------------------------------------------------------------------ */

typedef struct tr__codec_limits {
    size_t max_frame;     /* bytes per frame (set ZMQ_MAXMSGSIZE to this) */
    uint32_t max_batch;   /* envelopes per frame */
    uint32_t max_payload; /* bytes of one BYTES payload or MSGPACK object */
    uint32_t max_depth;   /* containers nested in a MSGPACK payload */
    uint32_t max_str;     /* bytes of one str/bin/ext in a MSGPACK payload */
    uint32_t max_array;   /* elements of one array in a MSGPACK payload */
    uint32_t max_map;     /* pairs of one map in a MSGPACK payload */
} tr__codec_limits;

/* The defaults. */
#define TR__LIM_FRAME ((size_t)TR_MSG_MAX_BYTES + 64u * 1024u)
#define TR__LIM_BATCH 1024u
#define TR__LIM_PAYLOAD TR_MSG_MAX_BYTES
#define TR__LIM_DEPTH 32u
#define TR__LIM_STR TR_MSG_MAX_BYTES
#define TR__LIM_ARRAY (1u << 20)
#define TR__LIM_MAP (1u << 20)

/* Fills *lim with the defaults above. */
void tr__codec_limits_default(tr__codec_limits *lim);
/* 0 if usable, TR_EINVAL otherwise (max_frame < 64, max_batch or
 * max_payload 0, max_depth 0 or > TR__MP_DEPTH_MAX). */
int tr__codec_limits_check(const tr__codec_limits *lim);

/* ---- rejection reasons
 * --------------------------------------------------------- */

typedef enum tr__codec_reject {
    TR__REJ_NONE = 0,
    TR__REJ_TRUNCATED,  /* EPROTO: input ends inside an object */
    TR__REJ_TRAILING,   /* EPROTO: bytes after the batch / the object */
    TR__REJ_MALFORMED,  /* EPROTO: byte 0xc1, wrong msgpack type for a
                           field, envelope arity, empty batch */
    TR__REJ_VERSION,    /* EPROTO: envelope version not supported */
    TR__REJ_KIND,       /* EPROTO: unknown envelope kind */
    TR__REJ_FIELD,      /* EPROTO: field value not allowed (range, flag,
                           pkind, req_id, tag, aux, refs for the kind) */
    TR__REJ_FRAME_SIZE, /* ETOOBIG: frame longer than max_frame */
    TR__REJ_BATCH,      /* ETOOBIG: more envelopes than max_batch */
    TR__REJ_LENGTH,     /* ETOOBIG: payload, str/bin/ext, array or map over
                           its limit */
    TR__REJ_DEPTH,      /* ETOOBIG: MSGPACK payload nested too deep */
    TR__REJ_COUNT
} tr__codec_reject;

/* "truncated", "trailing", ... ("none" for 0, "?" out of range). */
const char *tr__codec_reject_name(tr__codec_reject why);
/* TR_EPROTO or TR_ETOOBIG (0 for TR__REJ_NONE). */
int tr__codec_reject_code(tr__codec_reject why);

typedef struct tr__codec_stats {
    uint64_t frames;                  /* accepted */
    uint64_t envelopes;               /* in accepted frames */
    uint64_t rejected[TR__REJ_COUNT]; /* frames, by reason */
} tr__codec_stats;

/* ---- encoder
 * ------------------------------------------------------------------ */

/* Bytes reserved at the start of the buffer for the batch's array header
 * (array32 at most). tr__encoder_finish writes the shortest header
 * right-aligned in this slot, so the frame starts 0-4 bytes in and no
 * envelope is ever moved. */
#define TR__FRAME_SLOT 5u

typedef struct tr__encoder {
    tr__codec_limits lim;
    unsigned char *buf; /* NULL until the first add */
    size_t len;         /* TR__FRAME_SLOT + encoded envelopes */
    size_t cap;
    uint32_t count; /* envelopes in the current frame */
} tr__encoder;

/* Memory a reset keeps; a larger buffer (from a huge frame) is freed. */
#define TR__ENC_KEEP (1u << 20)

/* lim NULL = defaults (copied). Allocates nothing. TR_EINVAL for bad
 * limits. */
int tr__encoder_init(tr__encoder *e, const tr__codec_limits *lim);
/* Frees the buffer. */
void tr__encoder_free(tr__encoder *e);
/* Starts a new, empty frame, keeping up to TR__ENC_KEEP bytes of memory. */
void tr__encoder_reset(tr__encoder *e);

/* Appends one envelope to the current frame. On any failure the frame is
 * unchanged. Errors:
 *   TR_EINVAL   NULL argument, or a field the kind does not allow (see
 *               the table in codec.c / docs/protocol.md)
 *   TR_EPAYLOAD pkind is TR_PAYLOAD_PTR (an address cannot cross)
 *   TR_EPROTO   a MSGPACK payload is not exactly one valid object
 *   TR_ETOOBIG  the payload is over a limit, or the envelope alone would
 *               not fit in an empty frame: it can never be sent
 *   TR_EAGAIN   the frame is full (max_batch or max_frame): finish and
 *               send it, reset, then add this envelope again
 *   TR_ENOMEM   the buffer could not grow. */
int tr__encoder_add(tr__encoder *e, const tr__env *env);

/* The frame's bytes (borrowed: valid until the next add, reset or free)
 * in *frame and *len. May be called again after further adds. TR_ESTATE if
 * the frame has no envelope (an empty batch is invalid on the wire). */
int tr__encoder_finish(tr__encoder *e, const unsigned char **frame,
                       size_t *len);

/* Exact encoded size of env's envelope (not validated). */
size_t tr__env_size(const tr__env *env);

/* ---- decoder
 * ------------------------------------------------------------------ */

typedef struct tr__decoder {
    tr__codec_limits lim;
    tr__env *envs; /* lim.max_batch views, filled by decode */
    tr__codec_stats stats;
    tr__codec_reject reason; /* of the last rejected frame */
    size_t offset;           /* where in that frame it was found */
} tr__decoder;

/* lim NULL = defaults. Allocates the lim.max_batch views once (64 bytes
 * each). TR_EINVAL for bad limits, TR_ENOMEM. */
int tr__decoder_init(tr__decoder *d, const tr__codec_limits *lim);
void tr__decoder_free(tr__decoder *d);

/* Validates and decodes one frame. On success *count envelopes are in
 * d->envs[0..*count), pointing into frame, and stats.frames/envelopes are
 * bumped. On failure *count is 0, the frame is rejected as a whole, the
 * reason and byte offset are in d->reason / d->offset,
 * stats.rejected[reason] is bumped, and the return is TR_EPROTO or
 * TR_ETOOBIG (TR_EINVAL for NULL d/count). Never allocates. */
int tr__decoder_decode(tr__decoder *d, const void *frame, size_t len,
                       uint32_t *count);

/* ---- HELLO payload
 * --------------------------------------------------------------- */

/* HELLO's MSGPACK payload: a map with str keys (docs/protocol.md). On
 * decode the strings point into the payload; unknown keys are skipped. */
typedef struct tr__hello {
    uint32_t proto_min; /* required */
    uint32_t proto_max; /* required, >= proto_min */
    const char *role;   /* required: "main", "worker" or "node" */
    size_t role_len;
    const char *node; /* optional node name (NULL if absent) */
    size_t node_len;
    uint64_t pid;       /* optional, 0 = absent */
    uint64_t max_frame; /* optional, 0 = absent: the sender's max_frame */
    uint64_t max_batch; /* optional, 0 = absent */
    uint64_t credit;    /* optional, 0 = no credit-based flow control */
    uint64_t epoch;     /* optional, 0 = absent: the sender's session count
                           with this peer (nodes; a new one resets it) */
} tr__hello;

/* Longest role / node name accepted, and a buffer always large enough
 * for tr__hello_encode. */
#define TR__HELLO_NAME_MAX 255u
#define TR__HELLO_MAX 768u

/* Encodes h into out (cap >= TR__HELLO_MAX is always enough). TR_EINVAL
 * for a missing role, a name over TR__HELLO_NAME_MAX or proto_min >
 * proto_max; TR_ETOOBIG if cap is too small. */
int tr__hello_encode(const tr__hello *h, unsigned char *out, size_t cap,
                     size_t *len);
/* Decodes a HELLO payload. TR_EPROTO if it is not a map with str keys, a
 * required key is missing, a key repeats, a known key has the wrong type,
 * a name is too long, or proto_min > proto_max. */
int tr__hello_decode(const void *data, size_t len, tr__hello *h);
/* The version both sides speak: min(ours, peer's max) if it is within
 * both ranges, else TR_EPROTO. */
int tr__hello_version(const tr__hello *peer, uint32_t *version);

/* ---- msgpack primitives (defined in transport/mpack.c) ----------------------
 */

/* One msgpack header, parsed. For STR/BIN/EXT n is the body length; for
 * ARRAY n is the element count, for MAP the pair count. */
typedef struct tr__mp_head {
    uint8_t type; /* tr_mp_type */
    uint8_t hlen; /* header bytes (the whole object for scalars) */
    int8_t ext;   /* EXT type */
    uint32_t n;
    union {
        uint64_t u; /* UINT */
        int64_t i;  /* INT (negative) */
        double f;   /* FLOAT */
        bool b;     /* BOOL */
    } v;
} tr__mp_head;

/* Parses the header at p. Checks only that the header's own bytes are
 * there (not a body or elements). TR__REJ_TRUNCATED or TR__REJ_MALFORMED
 * (0xc1) on failure. */
tr__codec_reject tr__mp_head_parse(const unsigned char *p, size_t avail,
                                   tr__mp_head *h);

typedef struct tr__mp_bounds {
    uint32_t depth; /* <= TR__MP_DEPTH_MAX */
    uint32_t str;
    uint32_t array;
    uint32_t map;
} tr__mp_bounds;

/* Walks one complete object at p (iteratively, no allocation) and stores
 * its size in *used. Every length and count is checked against the bounds
 * (TR__REJ_LENGTH / TR__REJ_DEPTH) and then against the bytes remaining
 * (TR__REJ_TRUNCATED) before anything is skipped. *off_err (may be NULL)
 * gets the offset of the problem. */
tr__codec_reject tr__mp_walk(const unsigned char *p, size_t avail,
                             const tr__mp_bounds *b, size_t *used,
                             size_t *off_err);

/* Allocation hook for tests (injected ENOMEM): every buffer of the codec
 * and the tr_mp_writer grows through it. NULL restores realloc. Set it
 * before any use, from one thread. */
typedef void *(*tr__codec_realloc_fn)(void *ptr, size_t size);
void tr__codec_set_realloc(tr__codec_realloc_fn fn);
void *tr__codec_realloc(void *ptr, size_t size);

/* Writers of one msgpack item into p, which must have room for
 * TR__MP_ITEM_MAX bytes; each returns the bytes written. Shortest
 * encodings, as msgpack-c and Python's msgpack write them. */
#define TR__MP_ITEM_MAX 9u

static inline void tr__st16(unsigned char *p, uint16_t v) {
    p[0] = (unsigned char)(v >> 8);
    p[1] = (unsigned char)v;
}
static inline void tr__st32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}
static inline void tr__st64(unsigned char *p, uint64_t v) {
    tr__st32(p, (uint32_t)(v >> 32));
    tr__st32(p + 4, (uint32_t)v);
}

static inline size_t tr__mp_put_nil(unsigned char *p) {
    p[0] = 0xc0;
    return 1;
}
static inline size_t tr__mp_put_bool(unsigned char *p, bool v) {
    p[0] = v ? 0xc3 : 0xc2;
    return 1;
}
static inline size_t tr__mp_put_uint(unsigned char *p, uint64_t v) {
    if (v < 0x80) {
        p[0] = (unsigned char)v;
        return 1;
    }
    if (v <= 0xff) {
        p[0] = 0xcc;
        p[1] = (unsigned char)v;
        return 2;
    }
    if (v <= 0xffff) {
        p[0] = 0xcd;
        tr__st16(p + 1, (uint16_t)v);
        return 3;
    }
    if (v <= 0xffffffffu) {
        p[0] = 0xce;
        tr__st32(p + 1, (uint32_t)v);
        return 5;
    }
    p[0] = 0xcf;
    tr__st64(p + 1, v);
    return 9;
}
static inline size_t tr__mp_put_int(unsigned char *p, int64_t v) {
    if (v >= 0)
        return tr__mp_put_uint(p, (uint64_t)v);
    if (v >= -32) {
        p[0] = (unsigned char)(0xe0u | ((unsigned)(v + 32) & 0x1fu));
        return 1;
    }
    if (v >= INT8_MIN) {
        p[0] = 0xd0;
        p[1] = (unsigned char)(uint8_t)(int8_t)v;
        return 2;
    }
    if (v >= INT16_MIN) {
        p[0] = 0xd1;
        tr__st16(p + 1, (uint16_t)(int16_t)v);
        return 3;
    }
    if (v >= INT32_MIN) {
        p[0] = 0xd2;
        tr__st32(p + 1, (uint32_t)(int32_t)v);
        return 5;
    }
    p[0] = 0xd3;
    tr__st64(p + 1, (uint64_t)v);
    return 9;
}
static inline size_t tr__mp_put_double(unsigned char *p, double v) {
    uint64_t bits;
    memcpy(&bits, &v, sizeof bits);
    p[0] = 0xcb;
    tr__st64(p + 1, bits);
    return 9;
}
/* Headers of str/bin (body follows) and array/map (elements follow). */
static inline size_t tr__mp_put_str_hdr(unsigned char *p, uint32_t n) {
    if (n < 32) {
        p[0] = (unsigned char)(0xa0u | n);
        return 1;
    }
    if (n <= 0xff) {
        p[0] = 0xd9;
        p[1] = (unsigned char)n;
        return 2;
    }
    if (n <= 0xffff) {
        p[0] = 0xda;
        tr__st16(p + 1, (uint16_t)n);
        return 3;
    }
    p[0] = 0xdb;
    tr__st32(p + 1, n);
    return 5;
}
static inline size_t tr__mp_put_bin_hdr(unsigned char *p, uint32_t n) {
    if (n <= 0xff) {
        p[0] = 0xc4;
        p[1] = (unsigned char)n;
        return 2;
    }
    if (n <= 0xffff) {
        p[0] = 0xc5;
        tr__st16(p + 1, (uint16_t)n);
        return 3;
    }
    p[0] = 0xc6;
    tr__st32(p + 1, n);
    return 5;
}
static inline size_t tr__mp_put_array_hdr(unsigned char *p, uint32_t n) {
    if (n < 16) {
        p[0] = (unsigned char)(0x90u | n);
        return 1;
    }
    if (n <= 0xffff) {
        p[0] = 0xdc;
        tr__st16(p + 1, (uint16_t)n);
        return 3;
    }
    p[0] = 0xdd;
    tr__st32(p + 1, n);
    return 5;
}
static inline size_t tr__mp_put_map_hdr(unsigned char *p, uint32_t n) {
    if (n < 16) {
        p[0] = (unsigned char)(0x80u | n);
        return 1;
    }
    if (n <= 0xffff) {
        p[0] = 0xde;
        tr__st16(p + 1, (uint16_t)n);
        return 3;
    }
    p[0] = 0xdf;
    tr__st32(p + 1, n);
    return 5;
}

#endif
