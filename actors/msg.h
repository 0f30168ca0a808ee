/* Internal layout of a message. One TR__BLOCK_SIZE block from the pool:
 * the mailbox link first, then the header, then a 24-byte payload area. */
#ifndef TR_ACTORS_MSG_H
#define TR_ACTORS_MSG_H

#include <stdint.h>

#include "runtime/mailbox.h"
#include "troupe/actor.h"
#include "troupe/error.h"
#include "troupe/lifecycle.h"
#include "troupe/message.h"

enum {
    TR__MSG_LIVE = 0xA5,   /* allocated, owned by user code */
    TR__MSG_FREED = 0x5A,  /* back in the pool */
    TR__MSG_QUEUED = 0x69, /* sent: in a mailbox, or borrowed by a handler */
    TR__MSG_DONE = 0x3C    /* handled: payload released, node is a stub */
};

enum {
    TR__F_INLINE = 1u << 0,  /* BYTES/MSGPACK stored in u.inl */
    TR__F_REQUEST = 1u << 1, /* carries req_id; reply goes to sender */
    TR__F_REPLY = 1u << 2,   /* answer to req_id */
    TR__F_START = 1u << 3,   /* system: start a new incarnation */
    TR__F_TIMEOUT = 1u << 4, /* system: request req_id timed out */
    TR__F_SYS = 1u << 5,     /* system: tag is a TR__SYS_* kind */
    /* A runtime tag carrying user data (the transport's forwards from a
     * proxy to its link): mutes its sender as a user message does. */
    TR__F_DATA = 1u << 6
};

struct tr_msg {
    tr__node node;
    uint32_t tag;
    uint8_t kind; /* tr_payload_kind */
    /* TR__MSG_*. Atomic (relaxed) because misuse -- sending or freeing a
     * message again after it was sent -- reads it while the receiver
     * writes it; the checks then fail cleanly instead of racing. */
    _Atomic uint8_t magic;
    uint16_t flags;
    uint32_t target_gen; /* generation of the receiver it was sent to */
    uint32_t len;        /* payload bytes (BYTES/MSGPACK/PTR) */
    tr_ref sender;
    uint64_t req_id;
    union {
        uint64_t u64;
        unsigned char inl[TR_MSG_INLINE];
        struct {
            void *ptr;
            tr_free_fn dtor;
        } p;
        struct {
            const void *beh;
            void *state;
        } start;
    } u;
};

_Static_assert(sizeof(struct tr_msg) <= 64, "message header fits a block");

static inline uint8_t tr__magic(const tr_msg *m) {
    return atomic_load_explicit(&((tr_msg *)m)->magic, memory_order_relaxed);
}
static inline void tr__set_magic(tr_msg *m, uint8_t v) {
    atomic_store_explicit(&m->magic, v, memory_order_relaxed);
}

tr_msg *tr__msg_alloc(uint32_t tag, tr_payload_kind kind);
/* Runs the payload destructor / frees heap bytes; the node stays. */
void tr__msg_release_payload(tr_msg *m);
/* Releases the payload and returns the block to the pool. */
void tr__msg_free(tr_msg *m);

/* A new message with m's tag, sender and payload, moved (not copied):
 * m is left without a payload. NULL when out of memory. */
tr_msg *tr__msg_move(tr_msg *m);

#endif
