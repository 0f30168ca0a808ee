/* troupe — ownership, exits, links, monitors, cancellation.
 *
 * Structured concurrency: every actor has a parent. An actor spawned from
 * a handler is a child of that actor; one spawned from outside
 * (tr_runtime_spawn) is a child of the runtime's root. An actor never
 * outlives its parent: when an actor ends, it first stops its children,
 * youngest first, one at a time, each with its grace period; a child still
 * running when its grace expires is killed. Only then does the actor's own
 * on_stop run, and its parent, monitors and links learn the exit reason.
 *
 * Stopping an actor (cancellation): tr_cancel asks an actor to stop. The
 * request is a message, so it is never lost. When it is handled the actor
 * stops taking ordinary messages (they are dropped and counted as dead
 * letters) unless its behaviour's on_cancel asks to drain (returns
 * TR_DRAIN): then it keeps handling messages until it returns TR_STOP (it
 * then ends with the reason it was cancelled with) or its grace expires,
 * and is killed then. A second cancellation of a draining actor stops it
 * at once (no second drain). A killed actor gets no more messages
 * and its on_stop runs with TR_EXIT_KILLED. on_stop always runs exactly
 * once. */
#ifndef TROUPE_LIFECYCLE_H
#define TROUPE_LIFECYCLE_H

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>

#include "actor.h"
#include "export.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Exit reasons (the int passed to on_stop and carried by DOWN/EXIT
 * messages). TR_EXIT_NORMAL and TR_EXIT_SHUTDOWN are in actor.h. A
 * negative reason is a failure: the TR_E* code (or any negative code) a
 * handler returned or passed to tr_fail. */
#define TR_EXIT_CANCELLED 2 /* tr_cancel, a cancel scope, a failing sibling */
#define TR_EXIT_TIMEOUT 3   /* a deadline (fail_after) expired */
#define TR_EXIT_KILLED 4    /* grace expired or tr_kill: no cleanup time */
#define TR_EXIT_NOPROC 5    /* the actor was already dead (link/monitor) */

/* on_cancel return value: keep handling messages until done (then return
 * TR_STOP from a handler) or until the grace period ends. */
#define TR_DRAIN 2

/* Monitor notification (to the watcher) and trapped link exit (to a linked
 * actor that traps exits). Read them with tr_msg_exit. */
#define TR_TAG_DOWN 0xFFFF0002u
#define TR_TAG_EXIT 0xFFFF0003u

/* Default grace a parent grants a child to stop (ms) when the behaviour
 * does not set one. */
#define TR_DEFAULT_GRACE_MS 5000

typedef struct tr_exit {
    tr_ref who;       /* the actor that ended */
    int reason;       /* TR_EXIT_* or a negative failure code */
    uint64_t id;      /* monitor id (DOWN), 0 otherwise */
    const char *text; /* failure text ("" if none); borrowed from the msg */
} tr_exit;

/* Decodes a TR_TAG_DOWN / TR_TAG_EXIT message (or a supervisor's child
 * exit). TR_EPAYLOAD if msg is not one. */
TR_API int tr_msg_exit(const tr_msg *msg, tr_exit *out);

/* Human-readable exit reason ("normal", "killed", "failure: ..."). */
TR_API const char *tr_exit_reason_name(int reason);

/* The running actor's parent: an actor, or the runtime's root
 * (tr_runtime_root) for actors spawned from outside. */
TR_API tr_ref tr_parent(const tr_ctx *ctx);
TR_API tr_ref tr_runtime_root(const tr_runtime *rt);

/* Ends the running actor with a failure: code (< 0) and a message, after
 * the handler (or on_start / on_child_exit hook) returns. Returns code, so
 * `return tr_fail(ctx, TR_EPROTO, "bad header %d", n);` reads naturally. */
TR_API int tr_fail(tr_ctx *ctx, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Links the running actor and `other` both ways: when one ends with a
 * reason other than normal, the other is cancelled with the same reason,
 * unless it traps exits (then it gets a TR_TAG_EXIT message). Linking to a
 * dead actor delivers the exit (TR_EXIT_NOPROC) at once. Handler only. */
TR_API int tr_link(tr_ctx *ctx, tr_ref other);
TR_API int tr_unlink(tr_ctx *ctx, tr_ref other);
TR_API void tr_trap_exits(tr_ctx *ctx, bool on);

/* One-way: the running actor gets one TR_TAG_DOWN message when `target`
 * ends (immediately, with TR_EXIT_NOPROC, if it is already dead). *id
 * names the monitor. Handler only. */
TR_API int tr_monitor(tr_ctx *ctx, tr_ref target, uint64_t *id);
/* Cancels a monitor: no DOWN for it is delivered after this returns. */
TR_API int tr_demonitor(tr_ctx *ctx, uint64_t id);

/* Asks `target` to stop with `reason` (TR_EXIT_CANCELLED, TR_EXIT_SHUTDOWN,
 * TR_EXIT_TIMEOUT or a failure code), giving it grace_ms (-1: the
 * behaviour's default) before it is killed. Any thread. TR_ENOACTOR if it
 * is already dead. */
TR_API int tr_cancel(tr_runtime *rt, tr_ref target, int reason,
                     int64_t grace_ms);
/* Kills `target` at once (it handles no further message; its children are
 * killed first; on_stop runs with TR_EXIT_KILLED). Any thread. */
TR_API int tr_kill(tr_runtime *rt, tr_ref target);

/* Orderly shutdown of the whole tree: the root's children are stopped
 * youngest first, each with its grace; then tr_runtime_run returns. A
 * second call (or a second signal) stops at once. Any thread. */
TR_API int tr_runtime_shutdown(tr_runtime *rt);

#ifdef __cplusplus
}
#endif
#endif
