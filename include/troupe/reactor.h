/* troupe — file-descriptor readiness (epoll) and blocking offload. */
#ifndef TROUPE_REACTOR_H
#define TROUPE_REACTOR_H

#include <stdint.h>

#include "actor.h"
#include "export.h"

#ifdef __cplusplus
extern "C" {
#endif

#define TR_READABLE 1u
#define TR_WRITABLE 2u

typedef struct tr_watch_id {
    uint64_t id; /* 0 = none */
} tr_watch_id;

/* Watches fd for the events in `events` (TR_READABLE | TR_WRITABLE) and
 * sends `to` a U64 message with tag `tag` and value = the ready events each
 * time the fd BECOMES ready (edge-triggered): on such a message, read or
 * write until EAGAIN, or no further message comes. This is exactly the
 * contract of a ZeroMQ socket's ZMQ_FD: on the message, loop on
 * ZMQ_EVENTS and drain while it reports ZMQ_POLLIN.
 * The fd stays owned by the caller; unwatch before closing it. A watch
 * whose actor is dead is removed on its next event. Any thread. */
TR_API int tr_watch(tr_runtime *rt, int fd, uint32_t events, tr_ref to,
                    uint32_t tag, tr_watch_id *out);
/* Stops watching: 0, or TR_ENOTFOUND. No message is sent after it
 * returns 0 (one already queued may still arrive). */
TR_API int tr_unwatch(tr_runtime *rt, tr_watch_id id);

/* Blocking offload (asyncio's to_thread): runs fn(arg) on the runtime's
 * bounded thread pool and sends its result to `to` with tag `tag`: the
 * message fn returns (its tag is replaced by `tag`), or an empty message if
 * fn returns NULL. TR_EAGAIN when the pool's queue is full (never blocks).
 * fn must not call handler-only functions. Any thread. */
typedef tr_msg *(*tr_offload_fn)(void *arg);
TR_API int tr_offload(tr_runtime *rt, tr_offload_fn fn, void *arg, tr_ref to,
                      uint32_t tag);

#ifdef __cplusplus
}
#endif
#endif
