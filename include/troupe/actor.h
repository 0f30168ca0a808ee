/* troupe — actors, references, sends, requests.
 *
 * An actor is a behaviour (a message handler) plus state: no thread, no
 * stack. It runs on one worker thread at a time, handling a bounded batch
 * of messages per turn.
 *
 * References (tr_ref) are plain 64-bit IDs (slot index + generation), never
 * pointers: a reference to a dead actor stays safe to use forever. A send to
 * an actor known to be dead at send time fails with TR_ENOACTOR (and the
 * caller keeps the message). A message that races with the receiver's death
 * (accepted, then the receiver died before handling it) is dropped, its
 * payload destructor runs, and it is counted in stats.dead_letters.
 *
 * Order: messages from one sender to one receiver are handled in the order
 * they were sent (per-sender FIFO), whatever threads are involved. */
#ifndef TROUPE_ACTOR_H
#define TROUPE_ACTOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "export.h"
#include "message.h"
#include "runtime.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tr_ref {
    uint64_t id; /* 0 = no actor */
} tr_ref;

#define TR_REF_NONE ((tr_ref){0})

static inline bool tr_ref_is_none(tr_ref r) { return r.id == 0; }
static inline bool tr_ref_eq(tr_ref a, tr_ref b) { return a.id == b.id; }

/* The context a handler runs in (the worker thread's). Valid only during
 * the callback it was passed to; never store it. */
typedef struct tr_ctx tr_ctx;
struct tr_exit;

/* Handler return values: 0 keeps the actor alive; TR_STOP ends it
 * normally; a negative TR_E* code ends it with that failure; TR_UNHANDLED
 * says "no clause for this message": the actor lives on, the message is
 * counted in stats.unhandled and, in debug mode, logged. */
#define TR_STOP 1
#define TR_UNHANDLED 3

/* Exit reasons passed to on_stop. */
#define TR_EXIT_NORMAL 0   /* a handler returned TR_STOP / tr_stop */
#define TR_EXIT_SHUTDOWN 1 /* the runtime stopped while it was alive */
/* A negative reason is the TR_E* code a handler failed with. */

typedef struct tr_behavior {
    const char *name; /* for logs and debugging; may be NULL */
    /* Handles one message. msg is borrowed (see message.h). Required. */
    int (*handle)(tr_ctx *ctx, void *state, tr_msg *msg);
    /* Runs once before the first message, on a worker. Optional. A return
     * value other than 0 ends the actor like a handler's would. */
    int (*on_start)(tr_ctx *ctx, void *state);
    /* Cleanup: runs exactly once when the actor ends, whatever the reason
     * -- also for an actor spawned but never started (its state is its
     * own from spawn on), with TR_EXIT_SHUTDOWN. Sends are allowed except
     * during runtime shutdown. Optional. */
    void (*on_stop)(tr_ctx *ctx, void *state, int reason);
    /* Bytes of state allocated (zeroed) per actor; 0 = none (state NULL). */
    size_t state_size;
    /* Cancellation (lifecycle.h): called when a stop request is handled.
     * Return 0 to stop now, TR_DRAIN to keep handling messages until done
     * or until the grace period ends. Optional (default: stop now). */
    int (*on_cancel)(tr_ctx *ctx, void *state, int reason);
    /* A child of this actor ended (lifecycle.h): exit->who, ->reason,
     * ->text. Runs like a handler: it may spawn (restart), send, tr_stop
     * or tr_fail. Not called once the actor itself is stopping. Optional. */
    void (*on_child_exit)(tr_ctx *ctx, void *state, const struct tr_exit *exit);
    /* Grace this actor gets to stop when cancelled, in ms; 0 = default
     * (TR_DEFAULT_GRACE_MS). */
    int64_t grace_ms;
} tr_behavior;

/* Spawns an actor. init (init_len bytes, at most state_size) is copied to
 * the start of its fresh state. The behaviour struct must outlive the
 * actor (normally a static const). From a handler: tr_spawn; from any other
 * thread: tr_runtime_spawn. out may be NULL. Errors: TR_EINVAL, TR_ENOMEM,
 * TR_ESTOPPED. */
TR_API int tr_spawn(tr_ctx *ctx, const tr_behavior *beh, const void *init,
                    size_t init_len, tr_ref *out);
TR_API int tr_runtime_spawn(tr_runtime *rt, const tr_behavior *beh,
                            const void *init, size_t init_len, tr_ref *out);

/* The running actor's own reference, its runtime, the worker's index. */
TR_API tr_ref tr_self(const tr_ctx *ctx);
TR_API tr_runtime *tr_ctx_runtime(const tr_ctx *ctx);
TR_API unsigned tr_ctx_worker(const tr_ctx *ctx);
/* The sender of the message being handled (TR_REF_NONE if sent from outside
 * an actor). */
TR_API tr_ref tr_msg_sender(const tr_msg *msg);

/* Ends the running actor after the current handler returns (same as
 * returning TR_STOP). */
TR_API void tr_stop(tr_ctx *ctx);

/* Sends: take *msg on success (set to NULL), leave it on failure.
 * tr_send from a handler (the sender is recorded); tr_runtime_send from any
 * thread, including threads troupe did not create (lock-free push; the
 * scheduling of the receiver never blocks on a worker). Errors: TR_EINVAL,
 * TR_ENOACTOR, TR_ESTOPPED, TR_EFREED. */
TR_API int tr_send(tr_ctx *ctx, tr_ref to, tr_msg **msg);
TR_API int tr_runtime_send(tr_runtime *rt, tr_ref to, tr_msg **msg);
/* Shortcuts that build the message: no ownership questions. */
TR_API int tr_send_u64(tr_ctx *ctx, tr_ref to, uint32_t tag, uint64_t value);
TR_API int tr_send_tag(tr_ctx *ctx, tr_ref to, uint32_t tag);
TR_API int tr_runtime_send_u64(tr_runtime *rt, tr_ref to, uint32_t tag,
                               uint64_t value);

/* Moves a borrowed message's payload into a new message to `to`:
 * zero-copy forwarding (a heap or pointer payload moves; inline bytes, at
 * most TR_MSG_INLINE, are copied with the node). The tag, the ORIGINAL
 * sender and, for a request, the request id are kept (Akka's forward): the
 * final receiver's tr_reply answers the original requester directly. After
 * success the borrowed message is empty (its destructor will not run). */
TR_API int tr_forward(tr_ctx *ctx, tr_ref to, tr_msg *msg);

/* Request/reply. Sends *msg to `to` as a request with a fresh id (written
 * to *req_id if not NULL). Exactly one of these reaches the requester as a
 * message: the reply (tr_msg_is_reply true, tr_msg_request_id = the id);
 * a failure in its place — TR_TAG_REQUEST_FAILED (message.h: the target
 * ended with the request still queued, so it will never be handled) or
 * TR_TAG_REMOTE_FAILED (remote.h: lost with a worker process or node); or
 * a TR_TAG_TIMEOUT message with that id after timeout_ms (-1 = no
 * timeout). A reply that arrives after the timeout is discarded and counted
 * in stats.late_replies: it is never mistaken for another request's reply.
 * Only from a handler.
 *
 * Cancellation travels with the request. The requester gives up on it when
 * its timeout fires, and when the requester itself stops with the request
 * still pending (it returned TR_STOP or failed, was cancelled by tr_cancel,
 * a cancel scope's deadline or its parent's stop, was killed; a draining
 * actor still waits for its replies until it stops): a target
 * that has not started the request yet drops it unhandled (counted in
 * stats.dead_letters), also in a worker process (remote.h); a handler
 * already working on it can learn it with tr_request_cancelled. Best
 * effort and bounded: the runtime remembers the last 1024 cancelled
 * requests; an older one, or one whose cancellation crosses its start,
 * runs, and its reply is discarded as before. Nothing is sent during
 * runtime shutdown (tr_runtime_stop). */
TR_API int tr_request(tr_ctx *ctx, tr_ref to, tr_msg **msg, int64_t timeout_ms,
                      uint64_t *req_id);
/* True if the requester of `req` (the borrowed request being handled) has
 * given up on it: its timeout fired, or it stopped or ended (see
 * tr_request). A cooperative check for long handlers: poll it between
 * steps and return early (a reply is then pointless, its receiver is gone
 * or no longer waiting). Cheap when nothing was cancelled (no lock); it
 * never changes what it looks at, so it may be called any number of
 * times. May turn true a little after the cancellation (never before).
 * False if req is not a request. From the handler handling req. */
TR_API bool tr_request_cancelled(tr_ctx *ctx, const tr_msg *req);
/* Replies to a request being handled (req is the borrowed request). Takes
 * *reply on success. TR_ESTATE if req is not a request. */
TR_API int tr_reply(tr_ctx *ctx, const tr_msg *req, tr_msg **reply);
TR_API bool tr_msg_is_request(const tr_msg *msg);
TR_API bool tr_msg_is_reply(const tr_msg *msg);
TR_API uint64_t tr_msg_request_id(const tr_msg *msg);

/* True while the actor behind ref is alive (a snapshot). */
TR_API bool tr_actor_alive(tr_runtime *rt, tr_ref ref);

/* Messages waiting in the actor's mailbox (a snapshot), or -1 when depth
 * tracking is off (tr_runtime_config.track_depth / debug) or the actor is
 * dead. Any thread. */
TR_API int64_t tr_actor_mailbox_depth(tr_runtime *rt, tr_ref ref);

#ifdef __cplusplus
}
#endif
#endif
