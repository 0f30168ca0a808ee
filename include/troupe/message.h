/* troupe — messages.
 *
 * A message is a 32-bit tag plus one payload. Payload kinds:
 *
 *   TR_PAYLOAD_NONE     tag only.
 *   TR_PAYLOAD_U64      one 64-bit integer, stored in the message.
 *   TR_PAYLOAD_BYTES    a byte string copied into the message at creation
 *                       (inline up to TR_MSG_INLINE bytes, else one heap
 *                       block). The receiver may read it; it is freed with
 *                       the message.
 *   TR_PAYLOAD_PTR      a pointer moved into the message with its destructor
 *                       (zero-copy ownership transfer). The destructor runs
 *                       exactly once: when the message is destroyed, or never
 *                       if the receiver takes the pointer (tr_msg_take_ptr).
 *   TR_PAYLOAD_MSGPACK  msgpack-encoded bytes (stored like BYTES).
 *
 * Crossing a process boundary: NONE, U64, BYTES and MSGPACK can cross (they
 * are plain data); PTR cannot (an address means nothing in another process)
 * and a send of a PTR message to a remote actor fails with TR_EPAYLOAD.
 *
 * Ownership: a tr_msg * returned by a tr_msg_new* function belongs to the
 * caller until a send succeeds. Send functions take a tr_msg ** : on success
 * they take the message and set the caller's pointer to NULL; on failure the
 * caller still owns it. Inside a handler the message passed in is borrowed:
 * the runtime frees it (and runs a PTR destructor) after the handler returns.
 *
 * Local sends never serialize and never copy the payload again after
 * creation: the message node itself moves from mailbox to mailbox. */
#ifndef TROUPE_MESSAGE_H
#define TROUPE_MESSAGE_H

#include <stddef.h>
#include <stdint.h>

#include "export.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tr_msg tr_msg;

/* Bytes stored inside the message without a second allocation. */
#define TR_MSG_INLINE 24

/* Largest payload accepted by tr_msg_new_bytes (and later on the wire). */
#define TR_MSG_MAX_BYTES (64u * 1024u * 1024u)

/* Tags at or above TR_TAG_SYSTEM are reserved for the runtime:
 * 0xFFFF0001-0xFFFF00FF core (timeouts, DOWN, EXIT), 0xFFFF0300-03FF task
 * groups, 0xFFFF0400-04FF cancel scopes, 0xFFFF0600-06FF the process transport,
 * 0xFFFF5300-53FF supervisors. */
#define TR_TAG_SYSTEM 0xFFFF0000u
/* Delivered to a requester whose request timed out; tr_msg_request_id()
 * names the request, tr_msg_u64() is TR_ETIMEDOUT (as uint64 of the int). */
#define TR_TAG_TIMEOUT 0xFFFF0001u
/* Delivered to a requester, as the reply, when its request can never be
 * answered: the actor it was sent to ended with the request still queued
 * (or a router had no live routee to forward it to). tr_msg_u64() is
 * TR_ENOACTOR (as uint64 of the int). Requests lost with a worker process
 * or node come back as TR_TAG_REMOTE_FAILED (remote.h) instead. So a
 * requester learns at once, not at its timeout. */
#define TR_TAG_REQUEST_FAILED 0xFFFF0006u

typedef enum tr_payload_kind {
    TR_PAYLOAD_NONE = 0,
    TR_PAYLOAD_U64 = 1,
    TR_PAYLOAD_BYTES = 2,
    TR_PAYLOAD_PTR = 3,
    TR_PAYLOAD_MSGPACK = 4
} tr_payload_kind;

typedef void (*tr_free_fn)(void *ptr);

/* Creation. Any thread. Return NULL only when out of memory or, for bytes,
 * when len > TR_MSG_MAX_BYTES or data is NULL with len > 0. */
TR_API tr_msg *tr_msg_new(uint32_t tag);
TR_API tr_msg *tr_msg_new_u64(uint32_t tag, uint64_t value);
TR_API tr_msg *tr_msg_new_bytes(uint32_t tag, const void *data, size_t len);
TR_API tr_msg *tr_msg_new_msgpack(uint32_t tag, const void *data, size_t len);
/* Moves ptr (len is informative, used by stats/debug). free_fn may be NULL
 * when ptr needs no freeing. */
TR_API tr_msg *tr_msg_new_ptr(uint32_t tag, void *ptr, size_t len,
                              tr_free_fn free_fn);

/* Frees a message the caller owns and sets *msg to NULL. Returns TR_EINVAL
 * for NULL, TR_EFREED when the message was already freed or sent. */
TR_API int tr_msg_destroy(tr_msg **msg);

/* Accessors: valid on any live message (borrowed or owned). */
TR_API uint32_t tr_msg_tag(const tr_msg *msg);
TR_API tr_payload_kind tr_msg_kind(const tr_msg *msg);
/* U64 payload value; 0 for another kind. */
TR_API uint64_t tr_msg_u64(const tr_msg *msg);
/* BYTES/MSGPACK: pointer to the bytes and their length; PTR: the pointer
 * and the len given at creation; NULL/0 otherwise. Borrowed. */
TR_API const void *tr_msg_data(const tr_msg *msg, size_t *len);
/* Takes a PTR payload out of the message: the caller owns *ptr and the
 * destructor will not run. TR_EPAYLOAD if not a PTR payload, TR_EFREED if
 * already taken. */
TR_API int tr_msg_take_ptr(tr_msg *msg, void **ptr);

#ifdef __cplusplus
}
#endif
#endif
