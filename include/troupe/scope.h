/* troupe — cancel scopes and deadlines (Trio/AnyIO move_on_after and
 * fail_after, for actors).
 *
 * A scope is an actor that owns the work started inside it: it spawns a
 * body (any behaviour) as its child, and everything the body starts is the
 * body's (ownership, lifecycle.h), so the scope covers a whole subtree: an
 * actor, a task group (taskgroup.h), further scopes. When the scope's
 * deadline passes, or tr_scope_cancel is called, the scope cancels its
 * body (tr_cancel, each actor's grace; the subtree stops youngest first),
 * waits until it has ended, reports to its owner and ends:
 *
 *   TR_SCOPE_MOVE_ON (move_on_after / move_on_at): the owner gets
 *     TR_SCOPE_CANCELLED_CAUGHT and the scope ends normally (the
 *     cancellation is caught); the body was cancelled with
 *     TR_EXIT_CANCELLED.
 *   TR_SCOPE_FAIL (fail_after / fail_at): the owner gets TR_SCOPE_TIMED_OUT
 *     and the scope ends with TR_EXIT_TIMEOUT, which its parent sees
 *     (on_child_exit, a monitor's DOWN, a link); the body was cancelled
 *     with TR_EXIT_TIMEOUT.
 *
 * If the body ends first, the owner gets TR_SCOPE_COMPLETED (or
 * TR_SCOPE_FAILED with the body's failure, which the scope then fails with
 * too) and the deadline timer is cancelled. The body may report a result
 * with tr_task_result (taskgroup.h); the scope hands it to the owner.
 *
 * Nesting: a body may start an inner scope. The nearest deadline wins by
 * ownership: when an outer scope is cancelled (its deadline, an explicit
 * cancel, tr_cancel, its parent stopping) its body's stop sequence stops
 * the inner scope, which cancels its own body and reports
 * TR_SCOPE_CANCELLED (cancelled from outside, not caught) to its owner
 * before the outer scope reports. An inner deadline that passes first is
 * the inner scope's own business: only the inner scope is cancelled.
 *
 * Cleanup under cancellation: a cancelled body's on_stop always runs (with
 * the cancel reason); a body whose on_cancel returns TR_DRAIN keeps
 * handling messages for its grace and is then killed (its on_stop sees
 * TR_EXIT_KILLED): the scope reports only after that, so "the scope has
 * ended" always means "its cleanup has run".
 *
 * Requests under a scope: a request made by the body (or anything under
 * it) is covered by the scope. When the scope is cancelled the body stops
 * handling ordinary messages and its pending requests are cancelled (their
 * timeout timers too): as on a timeout, a target that has not started one
 * drops it and one working on it sees tr_request_cancelled turn true
 * (actor.h); a reply that comes later is a dead letter. So no tr_request
 * outlives its scope, even with timeout -1. To also get a
 * TR_TAG_TIMEOUT before the deadline, pass the body its deadline (cfg's
 * deadline_ms, in its init) and use tr_deadline_remaining(deadline) as
 * the request's timeout.
 *
 * The report is one TR_TAG_SCOPE_DONE message to the owner (PTR payload:
 * local actors and threads only); read it with tr_scope_done_info. No
 * report is sent during runtime shutdown (sends are refused then). */
#ifndef TROUPE_SCOPE_H
#define TROUPE_SCOPE_H

#include <stdint.h>

#include "actor.h"
#include "export.h"
#include "message.h"
#include "runtime.h"
#include "taskgroup.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Tags 0xFFFF0400..0xFFFF04FF belong to cancel scopes. */
/* To the owner when the scope has ended. Read with tr_scope_done_info. */
#define TR_TAG_SCOPE_DONE 0xFFFF0400u

/* A scope's own grace when cancelled without an explicit one (ms). Long on
 * purpose: its body bounds the stop with its own grace. */
#define TR_SCOPE_GRACE_MS 3600000

typedef enum tr_scope_kind {
    TR_SCOPE_MOVE_ON = 0, /* deadline: cancel the body, catch it */
    TR_SCOPE_FAIL = 1     /* deadline: cancel the body, end with timeout */
} tr_scope_kind;

typedef struct tr_scope_config {
    tr_scope_kind kind;
    /* Absolute, on tr_now_ms's clock; -1 = none (only an explicit cancel
     * ends the scope early); beyond TR_MS_FOREVER (taskgroup.h) = none. A
     * deadline already past cancels at once. */
    int64_t deadline_ms;
    /* Receives TR_TAG_SCOPE_DONE: an actor or an inbox. TR_REF_NONE: the
     * actor that starts the scope (tr_scope_start) or nobody
     * (tr_runtime_scope_start). */
    tr_ref owner;
} tr_scope_config;

typedef enum tr_scope_outcome {
    TR_SCOPE_COMPLETED = 0,        /* the body ended normally in time */
    TR_SCOPE_FAILED = 1,           /* the body failed (reason < 0) */
    TR_SCOPE_CANCELLED_CAUGHT = 2, /* move-on deadline or tr_scope_cancel */
    TR_SCOPE_TIMED_OUT = 3,        /* fail deadline */
    TR_SCOPE_CANCELLED = 4 /* from outside: tr_cancel, an outer scope, the
                            * parent stopping, or the body stopped by
                            * someone else */
} tr_scope_outcome;

typedef struct tr_scope_info {
    tr_ref scope;
    tr_scope_outcome outcome;
    /* How the body ended (TR_EXIT_*, or its failure code). */
    int body_reason;
    /* How the scope ends: TR_EXIT_NORMAL (completed, cancelled_caught),
     * TR_EXIT_TIMEOUT (timed out), the body's failure code (failed), the
     * reason it was cancelled with (cancelled). */
    int scope_reason;
    const char *text;     /* the body's failure text, "" if none */
    const tr_msg *result; /* the body's tr_task_result, NULL if none */
    int64_t deadline_ms;  /* as configured */
} tr_scope_info;

/* The absolute deadline ms from now (-1 for ms < 0 or > TR_MS_FOREVER). */
static inline int64_t tr_deadline_after(int64_t ms) {
    return ms < 0 || ms > TR_MS_FOREVER ? -1 : tr_now_ms() + ms;
}
/* cfg for a relative deadline: now + ms (ms = -1: no deadline). */
static inline tr_scope_config tr_move_on_after(int64_t ms, tr_ref owner) {
    tr_scope_config c = {TR_SCOPE_MOVE_ON, tr_deadline_after(ms), owner};
    return c;
}
static inline tr_scope_config tr_fail_after(int64_t ms, tr_ref owner) {
    tr_scope_config c = {TR_SCOPE_FAIL, tr_deadline_after(ms), owner};
    return c;
}
/* Time left until deadline_ms (0 if past, -1 if deadline_ms is -1): a
 * tr_request timeout bounded by a scope's deadline. */
static inline int64_t tr_deadline_remaining(int64_t deadline_ms) {
    if (deadline_ms < 0)
        return -1;
    int64_t left = deadline_ms - tr_now_ms();
    return left > 0 ? left : 0;
}

/* Starts a scope whose body is an actor with behaviour `body` (init /
 * init_len copied into its state, as tr_spawn). tr_scope_start from a
 * handler (the scope is the running actor's child), tr_runtime_scope_start
 * from any other thread (a child of the root). cfg is copied; body must
 * outlive the actor. out may be NULL. Errors: TR_EINVAL (NULL cfg or body,
 * no handler, bad kind, init_len > state_size, deadline < -1), TR_ENOMEM,
 * TR_ESTOPPED, TR_ESTATE (the running actor is stopping), TR_ENOCTX. */
TR_API int tr_scope_start(tr_ctx *ctx, const tr_scope_config *cfg,
                          const tr_behavior *body, const void *init,
                          size_t init_len, tr_ref *out);
TR_API int tr_runtime_scope_start(tr_runtime *rt, const tr_scope_config *cfg,
                                  const tr_behavior *body, const void *init,
                                  size_t init_len, tr_ref *out);

/* Cancels the scope now, as its deadline would, but the outcome is
 * TR_SCOPE_CANCELLED_CAUGHT for both kinds (an explicit cancel is a
 * decision, not a timeout) and the scope ends normally. Any thread. No
 * effect on a scope already cancelling or done. Errors: TR_ENOACTOR (the
 * scope has ended), TR_ENOMEM, TR_ESTOPPED. */
TR_API int tr_scope_cancel(tr_runtime *rt, tr_ref scope);

/* Reads a TR_TAG_SCOPE_DONE message. Pointers are borrowed from it.
 * TR_EPAYLOAD if msg is not one, TR_EINVAL. */
TR_API int tr_scope_done_info(const tr_msg *done, tr_scope_info *out);
/* Moves the body's result out of the report (the caller owns *out, NULL if
 * none). TR_EPAYLOAD, TR_EINVAL. */
TR_API int tr_scope_done_take_result(tr_msg *done, tr_msg **out);

/* "completed", "failed", "cancelled_caught", "timed_out", "cancelled". */
TR_API const char *tr_scope_outcome_name(tr_scope_outcome outcome);

#ifdef __cplusplus
}
#endif
#endif
