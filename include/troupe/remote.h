/* troupe — actors in worker processes (ZeroMQ + msgpack).
 *
 * CPU-heavy actors run in a pool of worker processes; the caller keeps an
 * ordinary tr_ref. That reference names a local PROXY actor: what is sent
 * to it (tr_send, tr_request) is encoded (codec.h / docs/protocol.md) and
 * carried over a ZeroMQ DEALER/ROUTER pair on ipc:// to the real actor;
 * what the real actor sends back (tr_send / tr_reply to tr_msg_sender)
 * arrives as if from the proxy. Monitors and links on the proxy work as
 * for a local actor: the proxy ends when the remote actor ends or its
 * process dies.
 *
 * Payloads: NONE, U64, BYTES and MSGPACK cross; a PTR payload cannot (the
 * send succeeds locally, the proxy drops the message and counts it; debug
 * mode logs it).
 *
 * Worker processes are the program itself, started again in worker mode
 * (fork + exec of /proc/self/exe, nothing else runs between the two: no
 * fork of a process that runs threads or a ZeroMQ context is ever used
 * beyond exec). So main() must call tr_worker_main() first, after
 * registering its behaviours by name (tr_register), the same way in both
 * roles. Workers die with the main process (a thread in each worker
 * watches its parent and exits within 50 ms of its death); the main
 * process reaps them and notices a dead one at once (pidfd, and a 100 ms
 * poll where pidfd is missing). Workers run in their own process group, so
 * a terminal's Ctrl-C reaches only the main process, which stops them in
 * order.
 *
 * A request that times out before the remote actor starts it is dropped
 * there (the CANCEL travels with it); the worker's link must be able to
 * run to hear it, so give workers 2+ threads (worker_threads) when actors
 * there run long handlers.
 *
 * Delivery (per sender-receiver pair, in order): at most once. When a
 * worker process dies, its actors' proxies end with TR_ELOST (their
 * monitors and links learn it) and every request in flight to them is
 * answered with a TR_TAG_REMOTE_FAILED reply (value TR_ELOST): nothing
 * waits forever and nothing is silently lost. Behaviours registered with
 * TR_REG_IDEMPOTENT get at-least-once requests instead: their requests
 * are retried on a new actor (see tr_register_flags). */
#ifndef TROUPE_REMOTE_H
#define TROUPE_REMOTE_H

#include <stddef.h>
#include <stdint.h>

#include "actor.h"
#include "export.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A reply to a request whose remote actor was lost (tr_msg_u64: the
 * negative error, TR_ELOST), delivered like a reply (tr_msg_is_reply). */
#define TR_TAG_REMOTE_FAILED 0xFFFF0005u

/* Registers a behaviour under a name (process-wide; before
 * tr_worker_main and before any spawn). TR_EINVAL for a NULL/empty/long
 * name, TR_ESTATE if the name is taken by another behaviour (or with
 * other flags). */
TR_API int tr_register(const char *name, const tr_behavior *beh);

/* Requests to an actor of this behaviour may be handled more than once:
 * at least once instead of at most once. When the worker process of such
 * an actor dies, its proxy does not end: it spawns the behaviour again
 * (same name and init, in the restarted worker) and sends it again every
 * request that was in flight or queued, in the order they were made;
 * requesters see only the replies (possibly late). Monitors and links
 * see nothing. One-way sends in flight are still lost (at most once).
 * After 5 losses less than a second apart (a request that kills its
 * worker every time), the proxy gives up: it ends with TR_ELOST and the
 * requests are failed back as for any behaviour (every one it holds,
 * including those on their way back to it for a resend; so do the
 * requests waiting in a proxy, of any behaviour, when it is stopped
 * before its actor exists). Counted in tr_transport_stats.retried. */
#define TR_REG_IDEMPOTENT 1u

/* tr_register with flags (TR_REG_*). */
TR_API int tr_register_flags(const char *name, const tr_behavior *beh,
                             unsigned flags);

/* If this process was started as a troupe worker, runs the worker until
 * the main process says BYE or goes away, then exits the process (does not
 * return). Otherwise returns 0 at once. Call it first in main(), after
 * tr_register. */
TR_API int tr_worker_main(int argc, char **argv);

/* In a worker process (handler only): *out is a proxy for the actor the
 * main process registered as `name` (tr_name_register there), usable at
 * once, as tr_node_lookup gives for a node. The proxy does not own the
 * actor. No such name: the proxy ends with TR_ENOTFOUND (monitor it).
 * TR_ESTATE outside a worker process, TR_EINVAL for a bad name. This is
 * how an actor in a worker process reaches a channel, a router or a sink
 * of the main process without being sent a message first. */
TR_API int tr_main_lookup(tr_ctx *ctx, const char *name, tr_ref *out);

typedef struct tr_pool_config {
    unsigned processes; /* 0 = online CPUs */
    /* Scheduler threads in each worker process; 0 = 1. */
    unsigned worker_threads;
    /* Heartbeats: the main side pings each worker every 100 ms; a worker
     * that answers nothing for this long is declared hung and killed (then
     * handled like any dead worker). 0 = 10000; -1 = never. A worker
     * answers from its link actor, so a handler that keeps all of a
     * worker's scheduler threads busy for that long looks hung. It works
     * both ways: a worker that hears nothing from the main process for
     * this long (the main process is stopped or hung) exits. */
    int64_t hang_timeout_ms;
    /* Backpressure across the boundary (credit, docs/protocol.md): at
     * most this many one-way messages and requests are in flight to one
     * remote actor (or from one worker actor to one local actor) before
     * its senders are muted (parked after their turn, never a thread:
     * actors/mute.c) until the receiver has consumed them. A receiving
     * process holds its credit back while the actor's mailbox is more
     * than half this deep (worker processes track mailbox depths; for the
     * main process, set tr_runtime_config.track_depth to get the same
     * toward it). 0 = 1024; -1 = no flow control. */
    int32_t window;
} tr_pool_config;

/* Starts the worker processes of rt (once; TR_ESTATE the second time).
 * Returns when they are started (they connect asynchronously; spawns and
 * sends made meanwhile are queued). Any thread, before or while running.
 * The pool stops with the runtime. */
TR_API int tr_pool_start(tr_runtime *rt, const tr_pool_config *cfg);

/* Spawns an actor of the registered behaviour `name` in the least loaded
 * worker process; *out is its proxy (usable at once: messages sent before
 * the remote actor exists are queued in order). From a handler
 * (tr_spawn_remote: the proxy is a child of the caller) or from outside
 * (tr_runtime_spawn_remote). Errors: TR_ESTATE (no pool), TR_EINVAL,
 * TR_ETOOBIG (init too large); an unknown name on the worker side ends the
 * proxy with TR_ENOTFOUND. */
TR_API int tr_spawn_remote(tr_ctx *ctx, const char *name, const void *init,
                           size_t init_len, tr_ref *out);
TR_API int tr_runtime_spawn_remote(tr_runtime *rt, const char *name,
                                   const void *init, size_t init_len,
                                   tr_ref *out);

/* The process id of worker process i (0 <= i < processes), or -1. For
 * tests and tools (kill -9 a worker). */
TR_API int tr_pool_worker_pid(tr_runtime *rt, unsigned i);
TR_API unsigned tr_pool_size(tr_runtime *rt);

#ifdef __cplusplus
}
#endif
#endif
