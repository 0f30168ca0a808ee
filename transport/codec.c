/* transport/codec.c — troupe's wire codec: envelopes, frames, the HELLO
 * payload. Specification: docs/protocol.md; API: transport/codec.h. The
 * msgpack primitives it stands on (header parser, bounded walker) are in
 * transport/mpack.c.
 *
 * Design notes
 * - Our own reader, not msgpack-c's unpacker. msgpack-c's C unpacker
 *   allocates for counts found in the input before it knows the bytes
 *   exist (msgpack-c#1013: 5 bytes can claim a 4-billion-element array).
 *   The envelope uses a handful of types, so a strict reader for exactly
 *   those is short, allocation-free and easy to fuzz. Embedded MSGPACK
 *   payloads are walked (tr__mp_walk), never decoded.
 * - Check order, everywhere: a length or count against its limit first
 *   (TR_ETOOBIG: "you asked for too much"), then against the bytes left
 *   (TR_EPROTO, truncated: every element takes at least one byte, so a
 *   count above the bytes left is a lie).
 * - Frames are all-or-nothing: the decoder fills a preallocated array of
 *   views and succeeds only when the whole frame is valid, so a receiver
 *   never acts on half a frame it then rejects.
 * - One rule table per kind serves the encoder and the decoder, so what we
 *   send is exactly what we accept; the fuzz target checks that decode ->
 *   encode -> decode gives equal envelopes.
 * - The encoder keeps one buffer per connection with a TR__FRAME_SLOT-byte
 *   slot in front for the batch's array header, written right-aligned and
 *   shortest at finish: appending is a size check and stores, no envelope
 *   ever moves, and after warm-up nothing is allocated.
 */
#include "transport/codec.h"

#include <stdlib.h>
#include <string.h>

/* ---- limits, reasons -------------------------------------------------------
 */

void tr__codec_limits_default(tr__codec_limits *lim) {
    lim->max_frame = TR__LIM_FRAME;
    lim->max_batch = TR__LIM_BATCH;
    lim->max_payload = TR__LIM_PAYLOAD;
    lim->max_depth = TR__LIM_DEPTH;
    lim->max_str = TR__LIM_STR;
    lim->max_array = TR__LIM_ARRAY;
    lim->max_map = TR__LIM_MAP;
}

/* The decoder allocates max_batch views up front: keep that sane. */
#define TR__BATCH_CEILING (1u << 20)

int tr__codec_limits_check(const tr__codec_limits *lim) {
    if (lim == NULL || lim->max_frame < 64 || lim->max_frame > SIZE_MAX / 4 ||
        lim->max_batch == 0 || lim->max_batch > TR__BATCH_CEILING ||
        lim->max_payload == 0 || lim->max_depth == 0 ||
        lim->max_depth > TR__MP_DEPTH_MAX)
        return TR_EINVAL;
    return 0;
}

static const char *const k_reject_names[TR__REJ_COUNT] = {
    [TR__REJ_NONE] = "none",         [TR__REJ_TRUNCATED] = "truncated",
    [TR__REJ_TRAILING] = "trailing", [TR__REJ_MALFORMED] = "malformed",
    [TR__REJ_VERSION] = "version",   [TR__REJ_KIND] = "kind",
    [TR__REJ_FIELD] = "field",       [TR__REJ_FRAME_SIZE] = "frame_size",
    [TR__REJ_BATCH] = "batch",       [TR__REJ_LENGTH] = "length",
    [TR__REJ_DEPTH] = "depth",
};

const char *tr__codec_reject_name(tr__codec_reject why) {
    return (unsigned)why < TR__REJ_COUNT ? k_reject_names[why] : "?";
}

int tr__codec_reject_code(tr__codec_reject why) {
    switch (why) {
    case TR__REJ_NONE:
        return 0;
    case TR__REJ_FRAME_SIZE:
    case TR__REJ_BATCH:
    case TR__REJ_LENGTH:
    case TR__REJ_DEPTH:
        return TR_ETOOBIG;
    default:
        return TR_EPROTO;
    }
}

static tr__mp_bounds bounds_of(const tr__codec_limits *lim) {
    return (tr__mp_bounds){.depth = lim->max_depth,
                           .str = lim->max_str,
                           .array = lim->max_array,
                           .map = lim->max_map};
}

/* ---- envelope rules
 * ---------------------------------------------------------- */

enum { RQ_ANY, RQ_ZERO, RQ_SET };
enum { AUX_ZERO, AUX_ANY, AUX_NONNEG, AUX_POS, AUX_STATUS, AUX_TIMEOUT };
enum { REF_S = 1, REF_T = 2 };
/* TAG_NONE: 0; TAG_USER: below TR_TAG_SYSTEM; TAG_SEND: a user tag, or a
 * channel's or a limiter's (tr__tag_crosses). */
enum { TAG_NONE, TAG_USER, TAG_SEND };

#define PK(k) (1u << (k))
#define PK_DATA                                                                \
    (PK(TR_PAYLOAD_NONE) | PK(TR_PAYLOAD_U64) | PK(TR_PAYLOAD_BYTES) |         \
     PK(TR_PAYLOAD_MSGPACK))
#define PK_TEXT (PK(TR_PAYLOAD_NONE) | PK(TR_PAYLOAD_BYTES))

typedef struct env_rule {
    uint8_t pkinds; /* PK() bits allowed */
    uint8_t flags;  /* flag bits allowed */
    uint8_t req;    /* RQ_*: req_id must be 0 / non-zero */
    uint8_t tags;   /* TAG_*: which tags the kind may carry */
    uint8_t aux;    /* AUX_*: allowed range of aux */
    uint8_t refs;   /* REF_*: sender / target must be non-zero */
} env_rule;

/* docs/protocol.md, "Kinds", is this table in prose: keep them together. */
static const env_rule k_rules[TR__K_COUNT] = {
    [TR__K_HELLO] = {PK(TR_PAYLOAD_MSGPACK), 0, RQ_ZERO, 0, AUX_ZERO, 0},
    [TR__K_BYE] = {PK_TEXT, 0, RQ_ZERO, 0, AUX_STATUS, 0},
    [TR__K_HEARTBEAT] = {PK(TR_PAYLOAD_NONE) | PK(TR_PAYLOAD_U64), 0, RQ_ZERO,
                         0, AUX_NONNEG, 0},
    [TR__K_CREDIT] = {PK(TR_PAYLOAD_NONE), 0, RQ_ZERO, 0, AUX_POS, 0},
    [TR__K_SEND] = {PK_DATA, 0, RQ_ZERO, TAG_SEND, AUX_ZERO, REF_T},
    [TR__K_REQUEST] = {PK_DATA, 0, RQ_SET, TAG_USER, AUX_TIMEOUT,
                       REF_S | REF_T},
    [TR__K_REPLY] = {PK_DATA, 0, RQ_SET, TAG_USER, AUX_STATUS, REF_T},
    [TR__K_CANCEL] = {PK(TR_PAYLOAD_NONE) | PK(TR_PAYLOAD_U64), TR__ENV_F_KILL,
                      RQ_ANY, 0, AUX_ANY, REF_T},
    [TR__K_SPAWN] = {PK(TR_PAYLOAD_MSGPACK), 0, RQ_SET, 0, AUX_ZERO, 0},
    [TR__K_SPAWN_REPLY] = {PK_TEXT, 0, RQ_SET, 0, AUX_STATUS, REF_T},
    [TR__K_LINK] = {PK(TR_PAYLOAD_NONE), TR__ENV_F_UNDO, RQ_ZERO, 0, AUX_ZERO,
                    REF_S | REF_T},
    [TR__K_MONITOR] = {PK(TR_PAYLOAD_NONE), TR__ENV_F_UNDO, RQ_SET, 0, AUX_ZERO,
                       REF_S | REF_T},
    [TR__K_EXIT] = {PK_TEXT, 0, RQ_ZERO, 0, AUX_ANY, REF_S | REF_T},
    [TR__K_DOWN] = {PK_TEXT, 0, RQ_SET, 0, AUX_ANY, REF_S | REF_T},
};

static bool kind_known(uint64_t kind) {
    return kind >= TR__K_HELLO && kind < TR__K_COUNT;
}

static bool tag_allowed(uint8_t tags, uint32_t tag) {
    switch (tags) {
    case TAG_USER:
        return tag < TR_TAG_SYSTEM;
    case TAG_SEND:
        return tr__tag_crosses(tag);
    default:
        return tag == 0;
    }
}

/* Does env obey its kind's rule? (kind must be known.) */
static bool env_allowed(const tr__env *env) {
    const env_rule *r = &k_rules[env->kind];
    if (env->pkind > TR_PAYLOAD_MSGPACK || !(r->pkinds & PK(env->pkind)))
        return false;
    if (env->flags & ~(unsigned)r->flags)
        return false;
    if ((r->req == RQ_ZERO && env->req_id != 0) ||
        (r->req == RQ_SET && env->req_id == 0))
        return false;
    if (!tag_allowed(r->tags, env->tag))
        return false;
    if (((r->refs & REF_S) && env->sender == 0) ||
        ((r->refs & REF_T) && env->target == 0))
        return false;
    int64_t a = env->aux;
    switch (r->aux) {
    case AUX_ZERO:
        if (a != 0)
            return false;
        break;
    case AUX_NONNEG:
        if (a < 0)
            return false;
        break;
    case AUX_POS:
        if (a <= 0)
            return false;
        break;
    case AUX_STATUS:
        if (a > 0)
            return false;
        break;
    case AUX_TIMEOUT:
        if (a < -1)
            return false;
        break;
    default:
        break;
    }
    /* Cross-field rules the table cannot say. */
    if (env->kind == TR__K_CANCEL && (env->flags & TR__ENV_F_KILL) &&
        env->req_id != 0)
        return false; /* a request is cancelled, never killed */
    if (env->kind == TR__K_SPAWN_REPLY && (env->aux == 0) != (env->sender != 0))
        return false; /* success names the new actor, failure names none */
    return true;
}

bool tr__env_equal(const tr__env *a, const tr__env *b) {
    if (a->kind != b->kind || a->pkind != b->pkind || a->flags != b->flags ||
        a->sender != b->sender || a->target != b->target ||
        a->req_id != b->req_id || a->tag != b->tag || a->aux != b->aux)
        return false;
    switch (a->pkind) {
    case TR_PAYLOAD_U64:
        return a->u64 == b->u64;
    case TR_PAYLOAD_BYTES:
    case TR_PAYLOAD_MSGPACK:
        return a->len == b->len &&
               (a->len == 0 || memcmp(a->data, b->data, a->len) == 0);
    default:
        return true;
    }
}

/* ---- envelope encoding
 * ------------------------------------------------------- */

static inline size_t uint_size(uint64_t v) {
    return v < 0x80           ? 1
           : v <= 0xff        ? 2
           : v <= 0xffff      ? 3
           : v <= 0xffffffffu ? 5
                              : 9;
}
static inline size_t int_size(int64_t v) {
    if (v >= 0)
        return uint_size((uint64_t)v);
    return v >= -32         ? 1
           : v >= INT8_MIN  ? 2
           : v >= INT16_MIN ? 3
           : v >= INT32_MIN ? 5
                            : 9;
}
static inline size_t array_hdr_size(uint32_t n) {
    return n < 16 ? 1 : n <= 0xffff ? 3 : 5;
}
static inline size_t bin_hdr_size(size_t n) {
    return n <= 0xff ? 2 : n <= 0xffff ? 3 : 5;
}

size_t tr__env_size(const tr__env *env) {
    size_t n = 1 /* fixarray */ + uint_size(TR__PROTO_VERSION) +
               uint_size(env->kind) + uint_size(env->flags) +
               uint_size(env->sender) + uint_size(env->target) +
               uint_size(env->req_id) + uint_size(env->tag) +
               int_size(env->aux) + uint_size(env->pkind);
    switch (env->pkind) {
    case TR_PAYLOAD_U64:
        return n + uint_size(env->u64);
    case TR_PAYLOAD_BYTES:
        return n + bin_hdr_size(env->len) + env->len;
    case TR_PAYLOAD_MSGPACK:
        return n + env->len;
    default:
        return n + 1; /* nil */
    }
}

static size_t put_env(unsigned char *p, const tr__env *env) {
    size_t n = tr__mp_put_array_hdr(p, TR__ENV_FIELDS);
    n += tr__mp_put_uint(p + n, TR__PROTO_VERSION);
    n += tr__mp_put_uint(p + n, env->kind);
    n += tr__mp_put_uint(p + n, env->flags);
    n += tr__mp_put_uint(p + n, env->sender);
    n += tr__mp_put_uint(p + n, env->target);
    n += tr__mp_put_uint(p + n, env->req_id);
    n += tr__mp_put_uint(p + n, env->tag);
    n += tr__mp_put_int(p + n, env->aux);
    n += tr__mp_put_uint(p + n, env->pkind);
    switch (env->pkind) {
    case TR_PAYLOAD_U64:
        n += tr__mp_put_uint(p + n, env->u64);
        break;
    case TR_PAYLOAD_BYTES:
        n += tr__mp_put_bin_hdr(p + n, (uint32_t)env->len);
        /* fall through */
    case TR_PAYLOAD_MSGPACK:
        if (env->len > 0)
            memcpy(p + n, env->data, env->len);
        n += env->len;
        break;
    default:
        n += tr__mp_put_nil(p + n);
        break;
    }
    return n;
}

int tr__encoder_init(tr__encoder *e, const tr__codec_limits *lim) {
    if (e == NULL)
        return TR_EINVAL;
    memset(e, 0, sizeof *e);
    if (lim == NULL)
        tr__codec_limits_default(&e->lim);
    else if (tr__codec_limits_check(lim) != 0)
        return TR_EINVAL;
    else
        e->lim = *lim;
    e->len = TR__FRAME_SLOT;
    return 0;
}

void tr__encoder_free(tr__encoder *e) {
    if (e == NULL)
        return;
    free(e->buf);
    e->buf = NULL;
    e->cap = 0;
    e->len = TR__FRAME_SLOT;
    e->count = 0;
}

void tr__encoder_reset(tr__encoder *e) {
    if (e->cap > TR__ENC_KEEP) {
        free(e->buf);
        e->buf = NULL;
        e->cap = 0;
    }
    e->len = TR__FRAME_SLOT;
    e->count = 0;
}

static int enc_reserve(tr__encoder *e, size_t need) {
    if (need <= e->cap)
        return 0;
    size_t ceiling = e->lim.max_frame + TR__FRAME_SLOT;
    size_t ncap = e->cap > 0 ? e->cap : 4096;
    while (ncap < need)
        ncap *= 2;
    if (ncap > ceiling)
        ncap = need > ceiling ? need : ceiling;
    unsigned char *nb = tr__codec_realloc(e->buf, ncap);
    if (nb == NULL)
        return TR_ENOMEM;
    e->buf = nb;
    e->cap = ncap;
    return 0;
}

/* Validates a MSGPACK payload for sending; 0 or a TR_E code. */
static int check_msgpack_payload(const tr__codec_limits *lim,
                                 const tr__env *env) {
    if (env->data == NULL || env->len == 0)
        return TR_EPROTO;
    if (env->len > lim->max_payload)
        return TR_ETOOBIG;
    tr__mp_bounds b = bounds_of(lim);
    size_t used = 0;
    tr__codec_reject why = tr__mp_walk(env->data, env->len, &b, &used, NULL);
    if (why != TR__REJ_NONE)
        return tr__codec_reject_code(why);
    return used == env->len ? 0 : TR_EPROTO;
}

int tr__encoder_add(tr__encoder *e, const tr__env *env) {
    if (e == NULL || env == NULL)
        return TR_EINVAL;
    if (env->pkind == TR_PAYLOAD_PTR)
        return TR_EPAYLOAD;
    if (!kind_known(env->kind) || !env_allowed(env))
        return TR_EINVAL;
    if (env->pkind == TR_PAYLOAD_BYTES) {
        if (env->data == NULL && env->len > 0)
            return TR_EINVAL;
        if (env->len > e->lim.max_payload)
            return TR_ETOOBIG;
    } else if (env->pkind == TR_PAYLOAD_MSGPACK) {
        int rc = check_msgpack_payload(&e->lim, env);
        if (rc != 0)
            return rc;
    }
    size_t size = tr__env_size(env);
    size_t max = e->lim.max_frame;
    if (size > max - array_hdr_size(1))
        return TR_ETOOBIG; /* would not fit even alone */
    if (e->count >= e->lim.max_batch)
        return TR_EAGAIN;
    size_t body = e->len - TR__FRAME_SLOT;
    if (body + size > max - array_hdr_size(e->count + 1))
        return TR_EAGAIN;
    if (enc_reserve(e, e->len + size) != 0)
        return TR_ENOMEM;
    e->len += put_env(e->buf + e->len, env);
    e->count++;
    return 0;
}

int tr__encoder_finish(tr__encoder *e, const unsigned char **frame,
                       size_t *len) {
    if (e == NULL || frame == NULL || len == NULL)
        return TR_EINVAL;
    if (e->count == 0)
        return TR_ESTATE;
    unsigned char hdr[TR__FRAME_SLOT];
    size_t h = tr__mp_put_array_hdr(hdr, e->count);
    unsigned char *start = e->buf + TR__FRAME_SLOT - h;
    memcpy(start, hdr, h);
    *frame = start;
    *len = e->len - TR__FRAME_SLOT + h;
    return 0;
}

/* ---- envelope decoding
 * --------------------------------------------------------- */

typedef struct cursor {
    const unsigned char *base;
    size_t off;
    size_t len;
} cursor;

static inline tr__codec_reject cur_head(const cursor *c, tr__mp_head *h) {
    return tr__mp_head_parse(c->base + c->off, c->len - c->off, h);
}

/* A field that must be an integer >= 0: a negative one is out of range
 * (FIELD), anything else the wrong type (MALFORMED). */
static tr__codec_reject rd_uint(cursor *c, uint64_t *v) {
    tr__mp_head h;
    tr__codec_reject why = cur_head(c, &h);
    if (why != TR__REJ_NONE)
        return why;
    if (h.type != TR_MP_UINT)
        return h.type == TR_MP_INT ? TR__REJ_FIELD : TR__REJ_MALFORMED;
    *v = h.v.u;
    c->off += h.hlen;
    return TR__REJ_NONE;
}

static tr__codec_reject rd_int(cursor *c, int64_t *v) {
    tr__mp_head h;
    tr__codec_reject why = cur_head(c, &h);
    if (why != TR__REJ_NONE)
        return why;
    if (h.type == TR_MP_INT)
        *v = h.v.i;
    else if (h.type != TR_MP_UINT)
        return TR__REJ_MALFORMED;
    else if (h.v.u > INT64_MAX)
        return TR__REJ_FIELD;
    else
        *v = (int64_t)h.v.u;
    c->off += h.hlen;
    return TR__REJ_NONE;
}

#define TRY(expr)                                                              \
    do {                                                                       \
        tr__codec_reject try_why_ = (expr);                                    \
        if (try_why_ != TR__REJ_NONE)                                          \
            return try_why_;                                                   \
    } while (0)

static tr__codec_reject decode_payload(cursor *c, const tr__codec_limits *lim,
                                       tr__env *env) {
    tr__mp_head h;
    switch (env->pkind) {
    case TR_PAYLOAD_NONE:
        TRY(cur_head(c, &h));
        if (h.type != TR_MP_NIL)
            return TR__REJ_MALFORMED;
        c->off += h.hlen;
        return TR__REJ_NONE;
    case TR_PAYLOAD_U64:
        return rd_uint(c, &env->u64);
    case TR_PAYLOAD_BYTES: {
        TRY(cur_head(c, &h));
        if (h.type != TR_MP_BIN)
            return TR__REJ_MALFORMED;
        if (h.n > lim->max_payload)
            return TR__REJ_LENGTH;
        if (h.n > c->len - c->off - h.hlen)
            return TR__REJ_TRUNCATED;
        env->data = c->base + c->off + h.hlen;
        env->len = h.n;
        c->off += h.hlen + (size_t)h.n;
        return TR__REJ_NONE;
    }
    default: { /* MSGPACK */
        tr__mp_bounds b = bounds_of(lim);
        size_t used = 0, where = 0;
        tr__codec_reject why =
            tr__mp_walk(c->base + c->off, c->len - c->off, &b, &used, &where);
        if (why != TR__REJ_NONE) {
            c->off += where;
            return why;
        }
        if (used > lim->max_payload)
            return TR__REJ_LENGTH;
        env->data = c->base + c->off;
        env->len = used;
        c->off += used;
        return TR__REJ_NONE;
    }
    }
}

static tr__codec_reject decode_env(cursor *c, const tr__codec_limits *lim,
                                   tr__env *env) {
    tr__mp_head h;
    TRY(cur_head(c, &h));
    if (h.type != TR_MP_ARRAY || h.n == 0)
        return TR__REJ_MALFORMED;
    if (h.n > c->len - c->off - h.hlen)
        return TR__REJ_TRUNCATED;
    uint32_t arity = h.n;
    c->off += h.hlen;

    /* The version comes first so that a future envelope of another shape
     * is reported as a version mismatch, not as garbage. */
    TRY(cur_head(c, &h));
    if (h.type == TR_MP_INT ||
        (h.type == TR_MP_UINT && h.v.u != TR__PROTO_VERSION))
        return TR__REJ_VERSION;
    if (h.type != TR_MP_UINT)
        return TR__REJ_MALFORMED;
    c->off += h.hlen;
    if (arity != TR__ENV_FIELDS)
        return TR__REJ_MALFORMED;

    uint64_t kind, flags, tag, pkind;
    TRY(rd_uint(c, &kind));
    if (!kind_known(kind))
        return TR__REJ_KIND;
    TRY(rd_uint(c, &flags));
    TRY(rd_uint(c, &env->sender));
    TRY(rd_uint(c, &env->target));
    TRY(rd_uint(c, &env->req_id));
    TRY(rd_uint(c, &tag));
    TRY(rd_int(c, &env->aux));
    TRY(rd_uint(c, &pkind));
    if (flags > UINT16_MAX || tag > UINT32_MAX || pkind > TR_PAYLOAD_MSGPACK)
        return TR__REJ_FIELD;
    env->kind = (uint8_t)kind;
    env->flags = (uint16_t)flags;
    env->tag = (uint32_t)tag;
    env->pkind = (uint8_t)pkind;
    env->u64 = 0;
    env->data = NULL;
    env->len = 0;
    if (!env_allowed(env))
        return TR__REJ_FIELD;
    return decode_payload(c, lim, env);
}

static tr__codec_reject decode_frame(tr__decoder *d, cursor *c,
                                     uint32_t *count) {
    tr__mp_head h;
    if (c->len > d->lim.max_frame)
        return TR__REJ_FRAME_SIZE;
    TRY(cur_head(c, &h));
    if (h.type != TR_MP_ARRAY || h.n == 0)
        return TR__REJ_MALFORMED;
    if (h.n > d->lim.max_batch)
        return TR__REJ_BATCH;
    if (h.n > c->len - h.hlen)
        return TR__REJ_TRUNCATED;
    c->off = h.hlen;
    for (uint32_t i = 0; i < h.n; i++)
        TRY(decode_env(c, &d->lim, &d->envs[i]));
    if (c->off != c->len)
        return TR__REJ_TRAILING;
    *count = h.n;
    return TR__REJ_NONE;
}

int tr__decoder_init(tr__decoder *d, const tr__codec_limits *lim) {
    if (d == NULL)
        return TR_EINVAL;
    memset(d, 0, sizeof *d);
    if (lim == NULL)
        tr__codec_limits_default(&d->lim);
    else if (tr__codec_limits_check(lim) != 0)
        return TR_EINVAL;
    else
        d->lim = *lim;
    d->envs =
        tr__codec_realloc(NULL, (size_t)d->lim.max_batch * sizeof *d->envs);
    return d->envs != NULL ? 0 : TR_ENOMEM;
}

void tr__decoder_free(tr__decoder *d) {
    if (d == NULL)
        return;
    free(d->envs);
    d->envs = NULL;
}

int tr__decoder_decode(tr__decoder *d, const void *frame, size_t len,
                       uint32_t *count) {
    if (d == NULL || count == NULL || d->envs == NULL ||
        (frame == NULL && len > 0))
        return TR_EINVAL;
    static const unsigned char empty[1];
    *count = 0;
    cursor c = {.base = frame != NULL ? frame : empty, .off = 0, .len = len};
    uint32_t n = 0;
    tr__codec_reject why = decode_frame(d, &c, &n);
    if (why != TR__REJ_NONE) {
        d->reason = why;
        d->offset = c.off;
        d->stats.rejected[why]++;
        return tr__codec_reject_code(why);
    }
    d->stats.frames++;
    d->stats.envelopes += n;
    *count = n;
    return 0;
}

/* ---- HELLO payload
 * ------------------------------------------------------------- */

enum {
    H_PROTO_MIN,
    H_PROTO_MAX,
    H_ROLE,
    H_NODE,
    H_PID,
    H_MAX_FRAME,
    H_MAX_BATCH,
    H_CREDIT,
    H_EPOCH,
    H_NKEYS
};
static const char *const k_hello_keys[H_NKEYS] = {
    "proto_min", "proto_max", "role",      "node",
    "pid",       "max_frame", "max_batch", "credit", "epoch"};

static size_t put_cstr(unsigned char *p, const char *s, size_t len) {
    size_t n = tr__mp_put_str_hdr(p, (uint32_t)len);
    if (len > 0)
        memcpy(p + n, s, len);
    return n + len;
}

int tr__hello_encode(const tr__hello *h, unsigned char *out, size_t cap,
                     size_t *len) {
    if (h == NULL || out == NULL || len == NULL || h->role == NULL ||
        h->role_len == 0 || h->role_len > TR__HELLO_NAME_MAX ||
        h->node_len > TR__HELLO_NAME_MAX ||
        (h->node == NULL && h->node_len > 0) || h->proto_min == 0 ||
        h->proto_min > h->proto_max)
        return TR_EINVAL;
    uint64_t opt[H_NKEYS] = {[H_PID] = h->pid,
                             [H_MAX_FRAME] = h->max_frame,
                             [H_MAX_BATCH] = h->max_batch,
                             [H_CREDIT] = h->credit,
                             [H_EPOCH] = h->epoch};
    uint32_t entries = 3 + (h->node != NULL);
    for (int k = H_PID; k < H_NKEYS; k++)
        entries += opt[k] != 0;

    unsigned char tmp[TR__HELLO_MAX];
    size_t n = tr__mp_put_map_hdr(tmp, entries);
    for (int k = 0; k < H_NKEYS; k++) {
        if ((k == H_NODE && h->node == NULL) || (k >= H_PID && opt[k] == 0))
            continue;
        n += put_cstr(tmp + n, k_hello_keys[k], strlen(k_hello_keys[k]));
        if (k == H_PROTO_MIN)
            n += tr__mp_put_uint(tmp + n, h->proto_min);
        else if (k == H_PROTO_MAX)
            n += tr__mp_put_uint(tmp + n, h->proto_max);
        else if (k == H_ROLE)
            n += put_cstr(tmp + n, h->role, h->role_len);
        else if (k == H_NODE)
            n += put_cstr(tmp + n, h->node, h->node_len);
        else
            n += tr__mp_put_uint(tmp + n, opt[k]);
    }
    if (n > cap)
        return TR_ETOOBIG;
    memcpy(out, tmp, n);
    *len = n;
    return 0;
}

/* Reads one HELLO value for key k; TR_EPROTO on a wrong type or range. */
static int hello_value(cursor *c, int k, tr__hello *h) {
    tr__mp_head v;
    if (cur_head(c, &v) != TR__REJ_NONE)
        return TR_EPROTO;
    if (k == H_ROLE || k == H_NODE) {
        if (v.type != TR_MP_STR || v.n > TR__HELLO_NAME_MAX ||
            v.n > c->len - c->off - v.hlen)
            return TR_EPROTO;
        const char *s = (const char *)c->base + c->off + v.hlen;
        if (k == H_ROLE) {
            h->role = s;
            h->role_len = v.n;
        } else {
            h->node = s;
            h->node_len = v.n;
        }
        c->off += v.hlen + (size_t)v.n;
        return 0;
    }
    if (v.type != TR_MP_UINT)
        return TR_EPROTO;
    if ((k == H_PROTO_MIN || k == H_PROTO_MAX) && v.v.u > UINT32_MAX)
        return TR_EPROTO;
    switch (k) {
    case H_PROTO_MIN:
        h->proto_min = (uint32_t)v.v.u;
        break;
    case H_PROTO_MAX:
        h->proto_max = (uint32_t)v.v.u;
        break;
    case H_PID:
        h->pid = v.v.u;
        break;
    case H_MAX_FRAME:
        h->max_frame = v.v.u;
        break;
    case H_MAX_BATCH:
        h->max_batch = v.v.u;
        break;
    case H_CREDIT:
        h->credit = v.v.u;
        break;
    default:
        h->epoch = v.v.u;
        break;
    }
    c->off += v.hlen;
    return 0;
}

/* More entries than this is not a HELLO. */
#define TR__HELLO_MAX_ENTRIES 64u

int tr__hello_decode(const void *data, size_t len, tr__hello *h) {
    if (h == NULL || (data == NULL && len > 0))
        return TR_EINVAL;
    static const unsigned char empty[1];
    memset(h, 0, sizeof *h);
    cursor c = {.base = data != NULL ? data : empty, .off = 0, .len = len};
    tr__mp_head m;
    if (cur_head(&c, &m) != TR__REJ_NONE || m.type != TR_MP_MAP ||
        m.n > TR__HELLO_MAX_ENTRIES || 2 * (size_t)m.n > len - m.hlen)
        return TR_EPROTO;
    c.off = m.hlen;
    unsigned seen = 0;
    for (uint32_t i = 0; i < m.n; i++) {
        tr__mp_head key;
        if (cur_head(&c, &key) != TR__REJ_NONE || key.type != TR_MP_STR ||
            key.n > c.len - c.off - key.hlen)
            return TR_EPROTO;
        const char *ks = (const char *)c.base + c.off + key.hlen;
        c.off += key.hlen + (size_t)key.n;
        int k = 0;
        while (k < H_NKEYS && !(strlen(k_hello_keys[k]) == key.n &&
                                memcmp(k_hello_keys[k], ks, key.n) == 0))
            k++;
        if (k == H_NKEYS) { /* unknown: a later version's; skip it */
            tr__codec_limits lim;
            tr__codec_limits_default(&lim);
            tr__mp_bounds b = bounds_of(&lim);
            size_t used = 0;
            if (tr__mp_walk(c.base + c.off, c.len - c.off, &b, &used, NULL) !=
                TR__REJ_NONE)
                return TR_EPROTO;
            c.off += used;
            continue;
        }
        if (seen & (1u << k))
            return TR_EPROTO;
        seen |= 1u << k;
        if (hello_value(&c, k, h) != 0)
            return TR_EPROTO;
    }
    unsigned required = 1u << H_PROTO_MIN | 1u << H_PROTO_MAX | 1u << H_ROLE;
    if (c.off != len || (seen & required) != required || h->role_len == 0 ||
        h->proto_min == 0 || h->proto_min > h->proto_max)
        return TR_EPROTO;
    return 0;
}

int tr__hello_version(const tr__hello *peer, uint32_t *version) {
    if (peer == NULL || version == NULL)
        return TR_EINVAL;
    uint32_t v = peer->proto_max < TR__PROTO_VERSION ? peer->proto_max
                                                     : TR__PROTO_VERSION;
    uint32_t lo = peer->proto_min > TR__PROTO_VERSION_MIN
                      ? peer->proto_min
                      : TR__PROTO_VERSION_MIN;
    if (v < lo)
        return TR_EPROTO;
    *version = v;
    return 0;
}
