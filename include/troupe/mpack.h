/* troupe — building and reading msgpack payloads (TR_PAYLOAD_MSGPACK).
 *
 * A TR_PAYLOAD_MSGPACK message carries exactly ONE msgpack object (which
 * is usually an array or a map holding the real fields). Those bytes are
 * plain msgpack: what tr_msg_data() returns can be given to msgpack-c
 * (msgpack_unpack_next, msgpack_object) or to any other msgpack library,
 * and bytes packed with msgpack-c's msgpack_sbuffer can be sent with
 * tr_msg_new_msgpack() or embedded with tr_mp_write_raw(). These helpers
 * only cover the common cases without touching msgpack-c:
 *
 *     tr_mp_writer w;                      tr_mp_reader r;
 *     tr_mp_writer_init(&w);               tr_mp_reader_init_msg(&r, msg);
 *     tr_mp_write_map(&w, 2);              tr_mp_read_map(&r, &n);
 *     tr_mp_write_cstr(&w, "x");           tr_mp_read_str(&r, &k, &klen);
 *     tr_mp_write_int(&w, -5);             tr_mp_read_int(&r, &x);
 *     tr_mp_write_cstr(&w, "name");        ...
 *     tr_mp_write_cstr(&w, "ada");
 *     rc = tr_mp_writer_to_msg(&w, TAG, &msg);
 *     tr_mp_writer_free(&w);
 *
 * Writer: errors are sticky. The first failing call records its error;
 * every later call returns it and writes nothing, so a sequence of writes
 * may be checked once, at tr_mp_writer_to_msg(). The writer counts the
 * items promised by array/map headers, so it knows when the one top-level
 * object is complete; payloads nest at most TR_MP_MAX_DEPTH containers
 * (also the default limit of a receiving process).
 *
 * Reader: a zero-copy cursor over borrowed bytes. A failed read returns
 * TR_EPROTO and leaves the cursor where it was, so the caller may look at
 * tr_mp_next_type() and try another type. A count returned by
 * tr_mp_read_array/map has been checked against the bytes that remain (n
 * elements need at least n bytes), so sizing an allocation by it is safe:
 * a short input cannot claim billions of elements.
 *
 * Threads: a writer or reader is used by one thread at a time; distinct
 * objects are independent. Nothing here needs a runtime or an actor
 * context. The structs are public only so they can live on the stack;
 * their fields are private. */
#ifndef TROUPE_MPACK_H
#define TROUPE_MPACK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "export.h"
#include "message.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Containers a writer may nest (an array inside a map is depth 2). */
#define TR_MP_MAX_DEPTH 32

/* Bytes a writer holds before its first heap allocation. */
#define TR_MP_WRITER_INLINE 128

/* The type of the next object, as tr_mp_next_type() reports it. Integers
 * are classified by value, not by encoding: every non-negative integer is
 * TR_MP_UINT and every negative one TR_MP_INT (msgpack allows 5 to be sent
 * as int8; the reader does not care). */
typedef enum tr_mp_type {
    TR_MP_END = 0,     /* no bytes left */
    TR_MP_INVALID = 1, /* reserved byte 0xc1 or a header cut short */
    TR_MP_NIL = 2,
    TR_MP_BOOL = 3,
    TR_MP_UINT = 4,  /* integer >= 0 */
    TR_MP_INT = 5,   /* integer < 0 */
    TR_MP_FLOAT = 6, /* float32 or float64 */
    TR_MP_STR = 7,
    TR_MP_BIN = 8,
    TR_MP_ARRAY = 9,
    TR_MP_MAP = 10,
    TR_MP_EXT = 11
} tr_mp_type;

/* ---- writer ----------------------------------------------------------------
 */

typedef struct tr_mp_writer {
    /* private: heap == NULL means the bytes are in inl[] (so a writer may
     * be moved by memcpy). left[d] = items still owed at nesting level d;
     * left[0] is the single top-level object. */
    unsigned char *heap;
    size_t len;
    size_t cap;
    int err;
    uint32_t depth;
    uint64_t left[TR_MP_MAX_DEPTH + 1];
    unsigned char inl[TR_MP_WRITER_INLINE];
} tr_mp_writer;

/* Prepares an empty writer. Allocates nothing (the first
 * TR_MP_WRITER_INLINE bytes are stored in the struct). Never fails. */
TR_API void tr_mp_writer_init(tr_mp_writer *w);

/* Frees the writer's heap buffer, if any. The writer must be initialised
 * again before reuse. NULL is a no-op. */
TR_API void tr_mp_writer_free(tr_mp_writer *w);

/* Empties the writer and clears its error, keeping its memory, so one
 * writer can build many payloads without allocating again. */
TR_API void tr_mp_writer_reset(tr_mp_writer *w);

/* Value writers: each appends one value. Return 0, or (sticky):
 *   TR_EINVAL  w is NULL, or str/bin data is NULL with len > 0
 *   TR_ESTATE  the top-level object is already complete (a payload is one
 *              object: put several values in an array or map)
 *   TR_ETOOBIG the payload would exceed TR_MSG_MAX_BYTES, a container
 *              would nest deeper than TR_MP_MAX_DEPTH, or len > UINT32_MAX
 *   TR_ENOMEM  the buffer could not grow.
 * tr_mp_write_int picks the shortest encoding (a non-negative value is
 * written as an unsigned integer, as msgpack-c and Python do). */
TR_API int tr_mp_write_nil(tr_mp_writer *w);
TR_API int tr_mp_write_bool(tr_mp_writer *w, bool v);
TR_API int tr_mp_write_int(tr_mp_writer *w, int64_t v);
TR_API int tr_mp_write_uint(tr_mp_writer *w, uint64_t v);
/* Always float64. */
TR_API int tr_mp_write_double(tr_mp_writer *w, double v);
/* A UTF-8 string of len bytes (not checked: peers such as Python's msgpack
 * reject invalid UTF-8 in a str; use bin for arbitrary bytes). */
TR_API int tr_mp_write_str(tr_mp_writer *w, const char *s, size_t len);
/* A NUL-terminated string (TR_EINVAL for NULL). */
TR_API int tr_mp_write_cstr(tr_mp_writer *w, const char *s);
TR_API int tr_mp_write_bin(tr_mp_writer *w, const void *data, size_t len);

/* Container headers: the next n values (array) or n key/value pairs, i.e.
 * 2n values (map), belong to the container. n = 0 is a complete empty
 * container. Same errors as the value writers. */
TR_API int tr_mp_write_array(tr_mp_writer *w, uint32_t n);
TR_API int tr_mp_write_map(tr_mp_writer *w, uint32_t n);

/* Appends one complete msgpack object that was encoded elsewhere (e.g. by
 * msgpack-c). The bytes are validated: exactly one object, no nesting past
 * TR_MP_MAX_DEPTH (counting the writer's open containers). Errors as
 * above, plus TR_EPROTO when data is not exactly one valid object. */
TR_API int tr_mp_write_raw(tr_mp_writer *w, const void *data, size_t len);

/* The first error recorded (0 if none). */
TR_API int tr_mp_writer_error(const tr_mp_writer *w);

/* The bytes written so far (borrowed; valid until the next write, reset
 * or free) and their length in *len. Never NULL for a valid writer. */
TR_API const void *tr_mp_writer_data(const tr_mp_writer *w, size_t *len);

/* True when exactly one complete top-level object has been written. */
TR_API bool tr_mp_writer_complete(const tr_mp_writer *w);

/* Creates a TR_PAYLOAD_MSGPACK message with `tag` holding a copy of the
 * payload (tr_msg_new_msgpack). On success *out is a new message the
 * caller owns; the writer is unchanged (reset it to build the next one).
 * Errors: the writer's sticky error; TR_EINVAL for NULL arguments;
 * TR_ESTATE if the payload is not one complete object (nothing written,
 * or containers still open); TR_ENOMEM. *out is untouched on failure. */
TR_API int tr_mp_writer_to_msg(const tr_mp_writer *w, uint32_t tag,
                               tr_msg **out);

/* ---- reader ----------------------------------------------------------------
 */

typedef struct tr_mp_reader {
    /* private */
    const unsigned char *pos;
    const unsigned char *end;
} tr_mp_reader;

/* A reader over len borrowed bytes (they must outlive the reader). data
 * may be NULL when len is 0. Never fails. */
TR_API void tr_mp_reader_init(tr_mp_reader *r, const void *data, size_t len);

/* A reader over a message's msgpack payload (borrowed: valid while the
 * message is). TR_EINVAL for NULL, TR_EPAYLOAD if the message is not a
 * TR_PAYLOAD_MSGPACK message. */
TR_API int tr_mp_reader_init_msg(tr_mp_reader *r, const tr_msg *msg);

/* The type of the next object without consuming it; TR_MP_END when no
 * bytes are left, TR_MP_INVALID when the next bytes cannot start one. */
TR_API tr_mp_type tr_mp_next_type(const tr_mp_reader *r);

/* Bytes not yet consumed. */
TR_API size_t tr_mp_reader_left(const tr_mp_reader *r);

/* Readers: consume the next object if it has the asked type and return 0;
 * otherwise return TR_EPROTO (wrong type, truncated, value out of range:
 * tr_mp_read_int of a uint above INT64_MAX, tr_mp_read_uint of a negative
 * integer) and leave the cursor unchanged. TR_EINVAL for NULL arguments.
 * Strings, bins and exts are returned as pointers into the input (not NUL
 * terminated). tr_mp_read_double accepts float32 and float64 only. */
TR_API int tr_mp_read_nil(tr_mp_reader *r);
TR_API int tr_mp_read_bool(tr_mp_reader *r, bool *v);
TR_API int tr_mp_read_int(tr_mp_reader *r, int64_t *v);
TR_API int tr_mp_read_uint(tr_mp_reader *r, uint64_t *v);
TR_API int tr_mp_read_double(tr_mp_reader *r, double *v);
TR_API int tr_mp_read_str(tr_mp_reader *r, const char **s, size_t *len);
TR_API int tr_mp_read_bin(tr_mp_reader *r, const void **data, size_t *len);
TR_API int tr_mp_read_ext(tr_mp_reader *r, int8_t *type, const void **data,
                          size_t *len);
/* Container headers: *n elements (array) or *n key/value pairs (map)
 * follow; they are read with further calls. TR_EPROTO also when the
 * remaining bytes cannot hold n elements (2n for a map). */
TR_API int tr_mp_read_array(tr_mp_reader *r, uint32_t *n);
TR_API int tr_mp_read_map(tr_mp_reader *r, uint32_t *n);

/* Consumes one whole object, containers included (for unknown map keys).
 * TR_EPROTO if it is malformed, truncated or nests deeper than 64. */
TR_API int tr_mp_skip(tr_mp_reader *r);

#ifdef __cplusplus
}
#endif
#endif
