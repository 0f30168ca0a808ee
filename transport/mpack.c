/* transport/mpack.c — troupe's msgpack layer: the primitives the wire
 * codec stands on (header parser, bounded walker; declared in
 * transport/codec.h) and the public payload helpers (troupe/mpack.h).
 *
 * Design notes
 * - One header parser and one walker serve the envelope decoder, the
 *   MSGPACK payload validation and tr_mp_reader, so all three accept
 *   exactly the same bytes. The writers are the shortest encoders of
 *   codec.h, so a payload written here is byte-for-byte what msgpack-c and
 *   Python's msgpack write.
 * - The walker is iterative with a fixed stack of TR__MP_DEPTH_MAX
 *   counters: constant memory, no recursion, time linear in the input.
 *   Each length or count is checked against its bound, then against the
 *   bytes remaining, before anything is skipped.
 * - The writer tracks how many items each open container still owes
 *   (left[depth]); when a level reaches zero the container is complete and
 *   counts as one item of its parent. That is what lets to_msg refuse a
 *   half-written payload and lets a write after the end fail, both cheaply.
 * - Small payloads stay in the writer's inline buffer: building one costs
 *   no allocation beyond the message itself (tr_msg_new_msgpack copies;
 *   up to TR_MSG_INLINE bytes go inside the message block).
 * - The reader never allocates and never trusts a count: containers are
 *   checked against the bytes remaining before the count is returned. */
#include "troupe/mpack.h"

#include <stdlib.h>
#include <string.h>

#include "transport/codec.h"
#include "troupe/error.h"

/* ---- allocation ---------------------------------------------------------- */

static tr__codec_realloc_fn g_realloc = realloc;

void tr__codec_set_realloc(tr__codec_realloc_fn fn) {
    g_realloc = fn != NULL ? fn : realloc;
}

void *tr__codec_realloc(void *ptr, size_t size) { return g_realloc(ptr, size); }

/* ---- big-endian loads ---------------------------------------------------- */

static inline uint16_t ld16(const unsigned char *p) {
    return (uint16_t)((unsigned)p[0] << 8 | p[1]);
}
static inline uint32_t ld32(const unsigned char *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 |
           p[3];
}
static inline uint64_t ld64(const unsigned char *p) {
    return (uint64_t)ld32(p) << 32 | ld32(p + 4);
}
/* Two's-complement reinterpretation of the low `bits` bits, without the
 * implementation-defined unsigned -> signed conversion. */
static inline int64_t sext(uint64_t v, unsigned bits) {
    if (bits == 64) {
        int64_t i;
        memcpy(&i, &v, sizeof i);
        return i;
    }
    uint64_t sign = 1ull << (bits - 1);
    return v & sign ? (int64_t)(v & (sign - 1)) - (int64_t)sign : (int64_t)v;
}

/* ---- msgpack header ------------------------------------------------------ */

/* Header bytes of 0xc0..0xdf (0 for 0xc1, never used). */
static const uint8_t k_hlen[32] = {
    1, 0, 1, 1, 2, 3, 5, 3, 4, 6, 5, 9, 2, 3, 5, 9, /* c0..cf */
    2, 3, 5, 9, 2, 2, 2, 2, 2, 2, 3, 5, 3, 5, 3, 5  /* d0..df */
};

static inline void set_int(tr__mp_head *h, int64_t i) {
    if (i >= 0) {
        h->type = TR_MP_UINT;
        h->v.u = (uint64_t)i;
    } else {
        h->type = TR_MP_INT;
        h->v.i = i;
    }
}

tr__codec_reject tr__mp_head_parse(const unsigned char *p, size_t avail,
                                   tr__mp_head *h) {
    if (avail == 0)
        return TR__REJ_TRUNCATED;
    unsigned b = p[0];
    h->hlen = 1;
    h->ext = 0;
    h->n = 0;
    h->v.u = 0;
    if (b < 0x80) {
        h->type = TR_MP_UINT;
        h->v.u = b;
        return TR__REJ_NONE;
    }
    if (b >= 0xe0) {
        h->type = TR_MP_INT;
        h->v.i = (int64_t)b - 256;
        return TR__REJ_NONE;
    }
    if (b < 0xc0) {
        h->type = b < 0x90 ? TR_MP_MAP : b < 0xa0 ? TR_MP_ARRAY : TR_MP_STR;
        h->n = b < 0xa0 ? (b & 0x0fu) : (b & 0x1fu);
        return TR__REJ_NONE;
    }
    if (b == 0xc1)
        return TR__REJ_MALFORMED;
    h->hlen = k_hlen[b - 0xc0];
    if (avail < h->hlen)
        return TR__REJ_TRUNCATED;
    switch (b) {
    case 0xc0:
        h->type = TR_MP_NIL;
        break;
    case 0xc2:
    case 0xc3:
        h->type = TR_MP_BOOL;
        h->v.b = b == 0xc3;
        break;
    case 0xc4:
    case 0xc5:
    case 0xc6:
        h->type = TR_MP_BIN;
        h->n = b == 0xc4 ? p[1] : b == 0xc5 ? ld16(p + 1) : ld32(p + 1);
        break;
    case 0xc7:
    case 0xc8:
    case 0xc9:
        h->type = TR_MP_EXT;
        h->n = b == 0xc7 ? p[1] : b == 0xc8 ? ld16(p + 1) : ld32(p + 1);
        h->ext = (int8_t)sext(p[h->hlen - 1], 8);
        break;
    case 0xca: {
        uint32_t bits = ld32(p + 1);
        float f;
        memcpy(&f, &bits, sizeof f);
        h->type = TR_MP_FLOAT;
        h->v.f = (double)f;
        break;
    }
    case 0xcb: {
        uint64_t bits = ld64(p + 1);
        h->type = TR_MP_FLOAT;
        memcpy(&h->v.f, &bits, sizeof h->v.f);
        break;
    }
    case 0xcc:
        h->type = TR_MP_UINT;
        h->v.u = p[1];
        break;
    case 0xcd:
        h->type = TR_MP_UINT;
        h->v.u = ld16(p + 1);
        break;
    case 0xce:
        h->type = TR_MP_UINT;
        h->v.u = ld32(p + 1);
        break;
    case 0xcf:
        h->type = TR_MP_UINT;
        h->v.u = ld64(p + 1);
        break;
    case 0xd0:
        set_int(h, sext(p[1], 8));
        break;
    case 0xd1:
        set_int(h, sext(ld16(p + 1), 16));
        break;
    case 0xd2:
        set_int(h, sext(ld32(p + 1), 32));
        break;
    case 0xd3:
        set_int(h, sext(ld64(p + 1), 64));
        break;
    case 0xd4:
    case 0xd5:
    case 0xd6:
    case 0xd7:
    case 0xd8:
        h->type = TR_MP_EXT;
        h->n = 1u << (b - 0xd4);
        h->ext = (int8_t)sext(p[1], 8);
        break;
    case 0xd9:
    case 0xda:
    case 0xdb:
        h->type = TR_MP_STR;
        h->n = b == 0xd9 ? p[1] : b == 0xda ? ld16(p + 1) : ld32(p + 1);
        break;
    case 0xdc:
    case 0xdd:
        h->type = TR_MP_ARRAY;
        h->n = b == 0xdc ? ld16(p + 1) : ld32(p + 1);
        break;
    default: /* 0xde, 0xdf */
        h->type = TR_MP_MAP;
        h->n = b == 0xde ? ld16(p + 1) : ld32(p + 1);
        break;
    }
    return TR__REJ_NONE;
}

/* ---- bounded walker --------------------------------------------------------
 */

tr__codec_reject tr__mp_walk(const unsigned char *p, size_t avail,
                             const tr__mp_bounds *b, size_t *used,
                             size_t *off_err) {
    /* stack[d] = items still owed by the container at depth d once the
     * open child completes; `pending` is owed at the current depth. */
    uint64_t stack[TR__MP_DEPTH_MAX];
    uint32_t max_depth =
        b->depth < TR__MP_DEPTH_MAX ? b->depth : TR__MP_DEPTH_MAX;
    uint32_t depth = 0;
    uint64_t pending = 1;
    size_t off = 0;
    tr__codec_reject why;

    for (;;) {
        tr__mp_head h;
        why = tr__mp_head_parse(p + off, avail - off, &h);
        if (why != TR__REJ_NONE)
            goto fail;
        size_t left = avail - off - h.hlen;
        switch (h.type) {
        case TR_MP_STR:
        case TR_MP_BIN:
        case TR_MP_EXT:
            if (h.n > b->str) {
                why = TR__REJ_LENGTH;
                goto fail;
            }
            if (h.n > left) {
                why = TR__REJ_TRUNCATED;
                goto fail;
            }
            off += h.hlen + (size_t)h.n;
            break;
        case TR_MP_ARRAY:
        case TR_MP_MAP: {
            bool map = h.type == TR_MP_MAP;
            uint64_t items = map ? 2 * (uint64_t)h.n : h.n;
            if (h.n > (map ? b->map : b->array)) {
                why = TR__REJ_LENGTH;
                goto fail;
            }
            if (depth >= max_depth) {
                why = TR__REJ_DEPTH;
                goto fail;
            }
            if (items > left) {
                why = TR__REJ_TRUNCATED;
                goto fail;
            }
            off += h.hlen;
            if (items > 0) {
                stack[depth++] = pending;
                pending = items;
                continue;
            }
            break;
        }
        default:
            off += h.hlen;
            break;
        }
        /* One item completed; close every container it completes. */
        while (--pending == 0) {
            if (depth == 0) {
                *used = off;
                return TR__REJ_NONE;
            }
            pending = stack[--depth];
        }
    }
fail:
    if (off_err != NULL)
        *off_err = off;
    return why;
}

/* ---- writer -------------------------------------------------------------- */

static inline unsigned char *wr_bytes(tr_mp_writer *w) {
    return w->heap != NULL ? w->heap : w->inl;
}

TR_API void tr_mp_writer_init(tr_mp_writer *w) {
    if (w == NULL)
        return;
    w->heap = NULL;
    w->len = 0;
    w->cap = sizeof w->inl;
    w->err = 0;
    w->depth = 0;
    w->left[0] = 1;
}

TR_API void tr_mp_writer_free(tr_mp_writer *w) {
    if (w == NULL)
        return;
    free(w->heap);
    w->heap = NULL;
    w->len = 0;
    w->cap = sizeof w->inl;
}

TR_API void tr_mp_writer_reset(tr_mp_writer *w) {
    if (w == NULL)
        return;
    w->len = 0;
    w->err = 0;
    w->depth = 0;
    w->left[0] = 1;
}

static int wr_fail(tr_mp_writer *w, int err) {
    w->err = err;
    return err;
}

/* Checks that a value may be written now and that `extra` more bytes fit,
 * growing the buffer if needed. */
static int wr_begin(tr_mp_writer *w, size_t extra) {
    if (w->err != 0)
        return w->err;
    if (w->depth == 0 && w->left[0] == 0)
        return wr_fail(w, TR_ESTATE);
    if (extra > TR_MSG_MAX_BYTES - w->len)
        return wr_fail(w, TR_ETOOBIG);
    size_t need = w->len + extra;
    if (need <= w->cap)
        return 0;
    size_t ncap = w->cap * 2;
    while (ncap < need)
        ncap *= 2;
    if (ncap > TR_MSG_MAX_BYTES)
        ncap = TR_MSG_MAX_BYTES;
    unsigned char *nb = tr__codec_realloc(w->heap, ncap);
    if (nb == NULL)
        return wr_fail(w, TR_ENOMEM);
    if (w->heap == NULL)
        memcpy(nb, w->inl, w->len);
    w->heap = nb;
    w->cap = ncap;
    return 0;
}

/* One value is complete at the current level; close every container it
 * completes (each then counts as one value of its parent). */
static void wr_item_done(tr_mp_writer *w) {
    for (;;) {
        w->left[w->depth]--;
        if (w->left[w->depth] != 0 || w->depth == 0)
            return;
        w->depth--;
    }
}

TR_API int tr_mp_write_nil(tr_mp_writer *w) {
    if (w == NULL)
        return TR_EINVAL;
    int rc = wr_begin(w, 1);
    if (rc != 0)
        return rc;
    w->len += tr__mp_put_nil(wr_bytes(w) + w->len);
    wr_item_done(w);
    return 0;
}

TR_API int tr_mp_write_bool(tr_mp_writer *w, bool v) {
    if (w == NULL)
        return TR_EINVAL;
    int rc = wr_begin(w, 1);
    if (rc != 0)
        return rc;
    w->len += tr__mp_put_bool(wr_bytes(w) + w->len, v);
    wr_item_done(w);
    return 0;
}

TR_API int tr_mp_write_int(tr_mp_writer *w, int64_t v) {
    if (w == NULL)
        return TR_EINVAL;
    int rc = wr_begin(w, TR__MP_ITEM_MAX);
    if (rc != 0)
        return rc;
    w->len += tr__mp_put_int(wr_bytes(w) + w->len, v);
    wr_item_done(w);
    return 0;
}

TR_API int tr_mp_write_uint(tr_mp_writer *w, uint64_t v) {
    if (w == NULL)
        return TR_EINVAL;
    int rc = wr_begin(w, TR__MP_ITEM_MAX);
    if (rc != 0)
        return rc;
    w->len += tr__mp_put_uint(wr_bytes(w) + w->len, v);
    wr_item_done(w);
    return 0;
}

TR_API int tr_mp_write_double(tr_mp_writer *w, double v) {
    if (w == NULL)
        return TR_EINVAL;
    int rc = wr_begin(w, TR__MP_ITEM_MAX);
    if (rc != 0)
        return rc;
    w->len += tr__mp_put_double(wr_bytes(w) + w->len, v);
    wr_item_done(w);
    return 0;
}

/* str and bin: header + body. */
static int wr_blob(tr_mp_writer *w, bool str, const void *data, size_t len) {
    if (w == NULL)
        return TR_EINVAL;
    if (w->err != 0)
        return w->err;
    if (data == NULL && len > 0)
        return wr_fail(w, TR_EINVAL);
    if (len > UINT32_MAX || len > TR_MSG_MAX_BYTES)
        return wr_fail(w, TR_ETOOBIG);
    int rc = wr_begin(w, 5 + len);
    if (rc != 0)
        return rc;
    unsigned char *p = wr_bytes(w) + w->len;
    size_t h = str ? tr__mp_put_str_hdr(p, (uint32_t)len)
                   : tr__mp_put_bin_hdr(p, (uint32_t)len);
    if (len > 0)
        memcpy(p + h, data, len);
    w->len += h + len;
    wr_item_done(w);
    return 0;
}

TR_API int tr_mp_write_str(tr_mp_writer *w, const char *s, size_t len) {
    return wr_blob(w, true, s, len);
}

TR_API int tr_mp_write_cstr(tr_mp_writer *w, const char *s) {
    if (w == NULL)
        return TR_EINVAL;
    if (s == NULL)
        return w->err != 0 ? w->err : wr_fail(w, TR_EINVAL);
    return wr_blob(w, true, s, strlen(s));
}

TR_API int tr_mp_write_bin(tr_mp_writer *w, const void *data, size_t len) {
    return wr_blob(w, false, data, len);
}

static int wr_container(tr_mp_writer *w, bool map, uint32_t n) {
    if (w == NULL)
        return TR_EINVAL;
    int rc = wr_begin(w, 5);
    if (rc != 0)
        return rc;
    if (w->depth >= TR_MP_MAX_DEPTH)
        return wr_fail(w, TR_ETOOBIG);
    unsigned char *p = wr_bytes(w) + w->len;
    w->len += map ? tr__mp_put_map_hdr(p, n) : tr__mp_put_array_hdr(p, n);
    if (n == 0) {
        wr_item_done(w);
    } else {
        w->depth++;
        w->left[w->depth] = map ? 2 * (uint64_t)n : n;
    }
    return 0;
}

TR_API int tr_mp_write_array(tr_mp_writer *w, uint32_t n) {
    return wr_container(w, false, n);
}

TR_API int tr_mp_write_map(tr_mp_writer *w, uint32_t n) {
    return wr_container(w, true, n);
}

TR_API int tr_mp_write_raw(tr_mp_writer *w, const void *data, size_t len) {
    if (w == NULL)
        return TR_EINVAL;
    if (w->err != 0)
        return w->err;
    if (data == NULL || len == 0)
        return wr_fail(w, TR_EPROTO);
    if (len > TR_MSG_MAX_BYTES)
        return wr_fail(w, TR_ETOOBIG);
    /* The object's own nesting adds to the containers already open. */
    tr__mp_bounds b = {.depth = TR_MP_MAX_DEPTH - w->depth,
                       .str = UINT32_MAX,
                       .array = UINT32_MAX,
                       .map = UINT32_MAX};
    size_t used = 0;
    tr__codec_reject why = tr__mp_walk(data, len, &b, &used, NULL);
    if (why == TR__REJ_DEPTH)
        return wr_fail(w, TR_ETOOBIG);
    if (why != TR__REJ_NONE || used != len)
        return wr_fail(w, TR_EPROTO);
    int rc = wr_begin(w, len);
    if (rc != 0)
        return rc;
    memcpy(wr_bytes(w) + w->len, data, len);
    w->len += len;
    wr_item_done(w);
    return 0;
}

TR_API int tr_mp_writer_error(const tr_mp_writer *w) {
    return w != NULL ? w->err : TR_EINVAL;
}

TR_API const void *tr_mp_writer_data(const tr_mp_writer *w, size_t *len) {
    if (w == NULL) {
        if (len != NULL)
            *len = 0;
        return NULL;
    }
    if (len != NULL)
        *len = w->len;
    return w->heap != NULL ? w->heap : w->inl;
}

TR_API bool tr_mp_writer_complete(const tr_mp_writer *w) {
    return w != NULL && w->err == 0 && w->depth == 0 && w->left[0] == 0;
}

TR_API int tr_mp_writer_to_msg(const tr_mp_writer *w, uint32_t tag,
                               tr_msg **out) {
    if (w == NULL || out == NULL)
        return TR_EINVAL;
    if (w->err != 0)
        return w->err;
    if (!tr_mp_writer_complete(w))
        return TR_ESTATE;
    size_t len = 0;
    const void *data = tr_mp_writer_data(w, &len);
    tr_msg *m = tr_msg_new_msgpack(tag, data, len);
    if (m == NULL)
        return TR_ENOMEM;
    *out = m;
    return 0;
}

/* ---- reader -------------------------------------------------------------- */

TR_API void tr_mp_reader_init(tr_mp_reader *r, const void *data, size_t len) {
    if (r == NULL)
        return;
    static const unsigned char empty[1];
    if (data == NULL) { /* no arithmetic on NULL, even + 0 */
        data = empty;
        len = 0;
    }
    r->pos = data;
    r->end = r->pos + len;
}

TR_API int tr_mp_reader_init_msg(tr_mp_reader *r, const tr_msg *msg) {
    if (r == NULL || msg == NULL)
        return TR_EINVAL;
    if (tr_msg_kind(msg) != TR_PAYLOAD_MSGPACK)
        return TR_EPAYLOAD;
    size_t len = 0;
    const void *data = tr_msg_data(msg, &len);
    tr_mp_reader_init(r, data, len);
    return 0;
}

TR_API size_t tr_mp_reader_left(const tr_mp_reader *r) {
    return r != NULL ? (size_t)(r->end - r->pos) : 0;
}

/* Parses the next header if it has type `want`, checking that its body
 * (str/bin/ext) or its elements (array/map) can fit in what remains. */
static int rd_head(const tr_mp_reader *r, tr_mp_type want, tr__mp_head *h) {
    size_t left = tr_mp_reader_left(r);
    if (tr__mp_head_parse(r->pos, left, h) != TR__REJ_NONE || h->type != want)
        return TR_EPROTO;
    left -= h->hlen;
    switch (want) {
    case TR_MP_STR:
    case TR_MP_BIN:
    case TR_MP_EXT:
    case TR_MP_ARRAY:
        return h->n <= left ? 0 : TR_EPROTO;
    case TR_MP_MAP:
        return 2 * (uint64_t)h->n <= left ? 0 : TR_EPROTO;
    default:
        return 0;
    }
}

TR_API tr_mp_type tr_mp_next_type(const tr_mp_reader *r) {
    size_t left = tr_mp_reader_left(r);
    if (left == 0)
        return TR_MP_END;
    tr__mp_head h;
    if (tr__mp_head_parse(r->pos, left, &h) != TR__REJ_NONE)
        return TR_MP_INVALID;
    return (tr_mp_type)h.type;
}

TR_API int tr_mp_read_nil(tr_mp_reader *r) {
    tr__mp_head h;
    if (r == NULL)
        return TR_EINVAL;
    if (rd_head(r, TR_MP_NIL, &h) != 0)
        return TR_EPROTO;
    r->pos += h.hlen;
    return 0;
}

TR_API int tr_mp_read_bool(tr_mp_reader *r, bool *v) {
    tr__mp_head h;
    if (r == NULL || v == NULL)
        return TR_EINVAL;
    if (rd_head(r, TR_MP_BOOL, &h) != 0)
        return TR_EPROTO;
    *v = h.v.b;
    r->pos += h.hlen;
    return 0;
}

TR_API int tr_mp_read_int(tr_mp_reader *r, int64_t *v) {
    tr__mp_head h;
    if (r == NULL || v == NULL)
        return TR_EINVAL;
    if (rd_head(r, TR_MP_INT, &h) == 0) {
        *v = h.v.i;
    } else if (rd_head(r, TR_MP_UINT, &h) == 0 && h.v.u <= INT64_MAX) {
        *v = (int64_t)h.v.u;
    } else {
        return TR_EPROTO;
    }
    r->pos += h.hlen;
    return 0;
}

TR_API int tr_mp_read_uint(tr_mp_reader *r, uint64_t *v) {
    tr__mp_head h;
    if (r == NULL || v == NULL)
        return TR_EINVAL;
    if (rd_head(r, TR_MP_UINT, &h) != 0)
        return TR_EPROTO;
    *v = h.v.u;
    r->pos += h.hlen;
    return 0;
}

TR_API int tr_mp_read_double(tr_mp_reader *r, double *v) {
    tr__mp_head h;
    if (r == NULL || v == NULL)
        return TR_EINVAL;
    if (rd_head(r, TR_MP_FLOAT, &h) != 0)
        return TR_EPROTO;
    *v = h.v.f;
    r->pos += h.hlen;
    return 0;
}

static int rd_blob(tr_mp_reader *r, tr_mp_type type, const void **data,
                   size_t *len, int8_t *ext) {
    tr__mp_head h;
    if (r == NULL || data == NULL || len == NULL)
        return TR_EINVAL;
    if (rd_head(r, type, &h) != 0)
        return TR_EPROTO;
    *data = r->pos + h.hlen;
    *len = h.n;
    if (ext != NULL)
        *ext = h.ext;
    r->pos += h.hlen + (size_t)h.n;
    return 0;
}

TR_API int tr_mp_read_str(tr_mp_reader *r, const char **s, size_t *len) {
    const void *p = NULL;
    if (s == NULL)
        return TR_EINVAL;
    int rc = rd_blob(r, TR_MP_STR, &p, len, NULL);
    if (rc == 0)
        *s = p;
    return rc;
}

TR_API int tr_mp_read_bin(tr_mp_reader *r, const void **data, size_t *len) {
    return rd_blob(r, TR_MP_BIN, data, len, NULL);
}

TR_API int tr_mp_read_ext(tr_mp_reader *r, int8_t *type, const void **data,
                          size_t *len) {
    if (type == NULL)
        return TR_EINVAL;
    return rd_blob(r, TR_MP_EXT, data, len, type);
}

static int rd_container(tr_mp_reader *r, tr_mp_type type, uint32_t *n) {
    tr__mp_head h;
    if (r == NULL || n == NULL)
        return TR_EINVAL;
    if (rd_head(r, type, &h) != 0)
        return TR_EPROTO;
    *n = h.n;
    r->pos += h.hlen;
    return 0;
}

TR_API int tr_mp_read_array(tr_mp_reader *r, uint32_t *n) {
    return rd_container(r, TR_MP_ARRAY, n);
}

TR_API int tr_mp_read_map(tr_mp_reader *r, uint32_t *n) {
    return rd_container(r, TR_MP_MAP, n);
}

TR_API int tr_mp_skip(tr_mp_reader *r) {
    if (r == NULL)
        return TR_EINVAL;
    size_t left = tr_mp_reader_left(r);
    if (left == 0)
        return TR_EPROTO;
    tr__mp_bounds b = {.depth = TR__MP_DEPTH_MAX,
                       .str = UINT32_MAX,
                       .array = UINT32_MAX,
                       .map = UINT32_MAX};
    size_t used = 0;
    if (tr__mp_walk(r->pos, left, &b, &used, NULL) != TR__REJ_NONE)
        return TR_EPROTO;
    r->pos += used;
    return 0;
}
