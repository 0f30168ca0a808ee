/* Message creation, accessors and destruction. See troupe/message.h for
 * the ownership contract. */
#include <stdlib.h>
#include <string.h>

#include "actors/msg.h"
#include "runtime/log.h"
#include "runtime/pool.h"

tr_msg *tr__msg_alloc(uint32_t tag, tr_payload_kind kind) {
    tr_msg *m = tr__block_alloc();
    if (m == NULL)
        return NULL;
    m->tag = tag;
    m->kind = (uint8_t)kind;
    tr__set_magic(m, TR__MSG_LIVE);
    m->flags = 0;
    m->target_gen = 0;
    m->len = 0;
    m->sender = TR_REF_NONE;
    m->req_id = 0;
    m->u.u64 = 0;
    return m;
}

tr_msg *tr__msg_move(tr_msg *m) {
    tr_msg *p = tr__msg_alloc(m->tag, (tr_payload_kind)m->kind);
    if (p == NULL)
        return NULL;
    /* A request stays one (same id): whoever ends up with it can answer
     * the requester (as with tr_forward). */
    p->flags = m->flags & (TR__F_INLINE | TR__F_REQUEST);
    p->req_id = m->req_id;
    p->len = m->len;
    p->sender = m->sender;
    memcpy(&p->u, &m->u, sizeof p->u);
    m->kind = TR_PAYLOAD_NONE; /* m keeps nothing to release */
    m->len = 0;
    return p;
}

TR_API tr_msg *tr_msg_new(uint32_t tag) {
    return tr__msg_alloc(tag, TR_PAYLOAD_NONE);
}

TR_API tr_msg *tr_msg_new_u64(uint32_t tag, uint64_t value) {
    tr_msg *m = tr__msg_alloc(tag, TR_PAYLOAD_U64);
    if (m != NULL)
        m->u.u64 = value;
    return m;
}

static tr_msg *new_bytes(uint32_t tag, tr_payload_kind kind, const void *data,
                         size_t len) {
    if ((data == NULL && len > 0) || len > TR_MSG_MAX_BYTES) {
        tr__log(TR_LOG_WARN, "tr_msg_new_bytes: %s (len=%zu)",
                len > TR_MSG_MAX_BYTES ? "payload too large" : "NULL data",
                len);
        return NULL;
    }
    tr_msg *m = tr__msg_alloc(tag, kind);
    if (m == NULL)
        return NULL;
    m->len = (uint32_t)len;
    if (len <= TR_MSG_INLINE) {
        m->flags |= TR__F_INLINE;
        if (len > 0)
            memcpy(m->u.inl, data, len);
        return m;
    }
    void *copy = malloc(len);
    if (copy == NULL) {
        tr__set_magic(m, TR__MSG_FREED);
        tr__block_free(m);
        return NULL;
    }
    memcpy(copy, data, len);
    m->u.p.ptr = copy;
    m->u.p.dtor = free;
    return m;
}

TR_API tr_msg *tr_msg_new_bytes(uint32_t tag, const void *data, size_t len) {
    return new_bytes(tag, TR_PAYLOAD_BYTES, data, len);
}

TR_API tr_msg *tr_msg_new_msgpack(uint32_t tag, const void *data, size_t len) {
    return new_bytes(tag, TR_PAYLOAD_MSGPACK, data, len);
}

TR_API tr_msg *tr_msg_new_ptr(uint32_t tag, void *ptr, size_t len,
                              tr_free_fn free_fn) {
    tr_msg *m = tr__msg_alloc(tag, TR_PAYLOAD_PTR);
    if (m == NULL)
        return NULL;
    m->len = len > UINT32_MAX ? UINT32_MAX : (uint32_t)len;
    m->u.p.ptr = ptr;
    m->u.p.dtor = free_fn;
    return m;
}

void tr__msg_release_payload(tr_msg *m) {
    switch (m->kind) {
    case TR_PAYLOAD_BYTES:
    case TR_PAYLOAD_MSGPACK:
        if (m->flags & TR__F_INLINE)
            break;
        /* heap bytes are a PTR payload freed with free() */
        __attribute__((fallthrough));
    case TR_PAYLOAD_PTR:
        if (m->u.p.dtor != NULL && m->u.p.ptr != NULL)
            m->u.p.dtor(m->u.p.ptr);
        m->u.p.ptr = NULL;
        break;
    default:
        break;
    }
    m->kind = TR_PAYLOAD_NONE;
    m->len = 0;
}

void tr__msg_free(tr_msg *m) {
    if (tr__magic(m) == TR__MSG_LIVE || tr__magic(m) == TR__MSG_QUEUED)
        tr__msg_release_payload(m);
    tr__set_magic(m, TR__MSG_FREED);
    tr__block_free(m);
}

TR_API int tr_msg_destroy(tr_msg **msg) {
    if (msg == NULL || *msg == NULL)
        return TR_EINVAL;
    tr_msg *m = *msg;
    *msg = NULL;
    if (tr__magic(m) != TR__MSG_LIVE) {
        tr__log(TR_LOG_ERROR,
                "tr_msg_destroy: message %p already freed, "
                "sent or borrowed from a handler",
                (void *)m);
        return TR_EFREED;
    }
    tr__msg_free(m);
    return 0;
}

TR_API uint32_t tr_msg_tag(const tr_msg *msg) {
    return msg != NULL ? msg->tag : 0;
}

TR_API tr_payload_kind tr_msg_kind(const tr_msg *msg) {
    return msg != NULL ? (tr_payload_kind)msg->kind : TR_PAYLOAD_NONE;
}

TR_API uint64_t tr_msg_u64(const tr_msg *msg) {
    return msg != NULL && msg->kind == TR_PAYLOAD_U64 ? msg->u.u64 : 0;
}

TR_API const void *tr_msg_data(const tr_msg *msg, size_t *len) {
    size_t n = 0;
    const void *p = NULL;
    if (msg != NULL) {
        switch (msg->kind) {
        case TR_PAYLOAD_BYTES:
        case TR_PAYLOAD_MSGPACK:
            p = (msg->flags & TR__F_INLINE) ? (const void *)msg->u.inl
                                            : msg->u.p.ptr;
            n = msg->len;
            break;
        case TR_PAYLOAD_PTR:
            p = msg->u.p.ptr;
            n = msg->len;
            break;
        default:
            break;
        }
    }
    if (len != NULL)
        *len = n;
    return p;
}

TR_API int tr_msg_take_ptr(tr_msg *msg, void **ptr) {
    if (msg == NULL || ptr == NULL)
        return TR_EINVAL;
    if (msg->kind != TR_PAYLOAD_PTR)
        return TR_EPAYLOAD;
    if (msg->u.p.ptr == NULL)
        return TR_EFREED;
    *ptr = msg->u.p.ptr;
    msg->u.p.ptr = NULL;
    return 0;
}

TR_API tr_ref tr_msg_sender(const tr_msg *msg) {
    return msg != NULL ? msg->sender : TR_REF_NONE;
}

TR_API bool tr_msg_is_request(const tr_msg *msg) {
    return msg != NULL && (msg->flags & TR__F_REQUEST);
}

TR_API bool tr_msg_is_reply(const tr_msg *msg) {
    return msg != NULL && (msg->flags & TR__F_REPLY);
}

TR_API uint64_t tr_msg_request_id(const tr_msg *msg) {
    return msg != NULL ? msg->req_id : 0;
}
