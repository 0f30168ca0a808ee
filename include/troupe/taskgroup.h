/* troupe — task groups (Trio's nursery, asyncio's TaskGroup, done right).
 *
 * A task group is an actor that owns a set of tasks. A task is an ordinary
 * actor spawned by the group (so it is the group's child: it cannot
 * outlive the group, and lifecycle.h's stop rules apply). The group:
 *
 *   - collects each task's outcome: its exit reason, its failure text and
 *     the result it reported with tr_task_result;
 *   - sends its owner ONE message, TR_TAG_GROUP_DONE, when every task has
 *     finished; read it with tr_group_done_* (no struct poking);
 *   - on the first task failure cancels every other running task
 *     (tr_cancel, TR_EXIT_CANCELLED, each task's grace); the done message
 *     then lists the first failure and every later one, in order (an
 *     exception group), with the cancelled siblings marked cancelled;
 *   - lets anyone list its tasks, cancel one task (which does not fail the
 *     group: that task's outcome is "cancelled") and add tasks while it
 *     runs (tr_group_add / tr_group_cancel_task / tr_group_list from a
 *     handler, *_sync from other threads);
 *   - when cancelled itself (tr_cancel on the group, a cancel scope, its
 *     parent stopping) cancels every task with the same reason, waits for
 *     them and still sends the done message.
 *
 * The group ends right after its done message: normally when no task
 * failed (individually cancelled tasks do not count as failures), with the
 * first failure's code and text when one did (its parent sees a failure),
 * with the reason it was cancelled with when it was cancelled. When the
 * last task ends the group is finished: later adds get TR_ESTATE (unless
 * the group was started with keep_open, see tr_group_config).
 *
 * Outcome states: a task that ended with TR_EXIT_NORMAL is DONE; with a
 * negative reason (a failure: a negative handler return, tr_fail, a spawn
 * error) FAILED; with any other reason (cancelled, timeout, shutdown,
 * killed after its grace) CANCELLED. A task that was asked to stop but
 * drained and returned TR_STOP is DONE: the exit reason decides.
 *
 * Grace: a cancelled task stops within its own grace (lifecycle.h: every
 * actor enforces its grace itself, and is killed after it), so a group's
 * stop is bounded by its tasks' graces. The group's own default grace is
 * therefore long (TR_GROUP_GRACE_MS); pass a grace to tr_cancel for a hard
 * bound on the whole group: a group killed before its tasks have reported
 * still sends the done message, with the unreported tasks marked with the
 * reason they were stopped with (TR_EXIT_KILLED when the group was killed).
 * No done message is sent during runtime shutdown (tr_runtime_stop), when
 * sends are refused.
 *
 * Messages carrying reports use PTR payloads: they are for local actors
 * and threads (an owner in another process cannot receive them). */
#ifndef TROUPE_TASKGROUP_H
#define TROUPE_TASKGROUP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "actor.h"
#include "export.h"
#include "message.h"
#include "runtime.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Tags 0xFFFF0300..0xFFFF03FF belong to task groups. */
/* To the owner: every task has finished. Read with tr_group_done_*. */
#define TR_TAG_GROUP_DONE 0xFFFF0300u
/* Answer to tr_group_add / tr_group_cancel_task / tr_group_list. Read with
 * tr_group_reply_status (and tr_group_list_* for a list). */
#define TR_TAG_GROUP_REPLY 0xFFFF0301u
/* A task's result on its way to its parent (tr_task_result). A group and a
 * cancel scope consume it; another parent can read it with
 * tr_task_result_take. */
#define TR_TAG_TASK_RESULT 0xFFFF0302u

/* Durations (ms) beyond this mean "never" here: a task's grace is cut to
 * it, a scope deadline (scope.h) past it is no deadline (~31 years). */
#define TR_MS_FOREVER 1000000000000

/* Longest task name kept, including the NUL (longer names are cut). */
#define TR_TASK_NAME_MAX 48

/* A group's own grace when cancelled without an explicit one (ms). Long on
 * purpose: its tasks bound the stop with their own graces. */
#define TR_GROUP_GRACE_MS 3600000

/* What to start as a task. Everything is copied by the call that takes the
 * spec, except beh, which must outlive the task (normally static const). */
typedef struct tr_task_spec {
    const char *name; /* for listings and reports; NULL = "" */
    const tr_behavior *beh;
    const void *init; /* copied into the task's state (see tr_spawn) */
    size_t init_len;  /* at most beh->state_size */
    /* Grace (ms) given to the task when the group cancels it; 0 or -1 =
     * the behaviour's (tr_behavior.grace_ms, else TR_DEFAULT_GRACE_MS);
     * at most TR_MS_FOREVER. */
    int64_t grace_ms;
} tr_task_spec;

typedef struct tr_group_config {
    /* Receives TR_TAG_GROUP_DONE: an actor or an inbox. TR_REF_NONE: the
     * actor that starts the group (tr_group_start), or nobody
     * (tr_runtime_group_start). */
    tr_ref owner;
    /* Tasks started at once, indexes 0..ntasks-1 in this order. */
    const tr_task_spec *tasks;
    size_t ntasks;
    /* false: the group finishes as soon as no task is running (at once if
     * ntasks is 0). true: it also waits for tr_group_close, so tasks can
     * be added without racing the last one's end (Trio's nursery body). A
     * failure or a cancellation finishes it without waiting for close. */
    bool keep_open;
} tr_group_config;

typedef enum tr_task_state {
    TR_TASK_RUNNING = 0,    /* started, not finished */
    TR_TASK_CANCELLING = 1, /* the group asked it to stop; not finished */
    TR_TASK_DONE = 2,       /* ended with TR_EXIT_NORMAL */
    TR_TASK_FAILED = 3,     /* ended with a failure (reason < 0) */
    TR_TASK_CANCELLED = 4   /* ended by cancellation (any other reason) */
} tr_task_state;

/* One task, as listed or reported. Pointers are borrowed from the message
 * they were read from and valid while it lives. */
typedef struct tr_task_info {
    uint32_t index;   /* order of start/add, from 0 */
    const char *name; /* never NULL */
    tr_ref ref;       /* TR_REF_NONE if it could not be spawned */
    tr_task_state state;
    int reason;           /* exit reason (TR_EXIT_* or < 0); 0 if running */
    const char *text;     /* failure text, "" if none */
    const tr_msg *result; /* tr_task_result's message, NULL if none (or in a
                           * listing) */
} tr_task_info;

typedef enum tr_group_status {
    TR_GROUP_OK = 0,       /* no task failed and the group was not cancelled */
    TR_GROUP_FAILED = 1,   /* at least one task failed */
    TR_GROUP_CANCELLED = 2 /* the group was cancelled and no task failed */
} tr_group_status;

typedef struct tr_group_summary {
    tr_ref group;
    tr_group_status status;
    /* How the group actor ends: TR_EXIT_NORMAL (OK), the first failure's
     * code (FAILED), the reason it was cancelled with (CANCELLED). */
    int reason;
    size_t ntasks, ndone, nfailed, ncancelled;
} tr_group_summary;

/* ---- starting a group */

/* Starts a task group and its cfg->tasks. tr_group_start from a handler
 * (the group is the running actor's child; owner defaults to it);
 * tr_runtime_group_start from any other thread (a child of the root). The
 * group spawns its tasks when it starts, on a worker. cfg and the specs
 * are copied. out may be NULL. Errors: TR_EINVAL (NULL cfg, a spec without
 * behaviour or handler, init_len > state_size), TR_ENOMEM, TR_ESTOPPED,
 * TR_ESTATE (the running actor is stopping), TR_ENOCTX. A task that cannot
 * be spawned counts as a failed task (reason = the spawn error). */
TR_API int tr_group_start(tr_ctx *ctx, const tr_group_config *cfg, tr_ref *out);
TR_API int tr_runtime_group_start(tr_runtime *rt, const tr_group_config *cfg,
                                  tr_ref *out);

/* ---- inside a task */

/* Reports the running task's result to its parent (its group, or a cancel
 * scope whose body it is); the parent keeps the last one reported. Takes
 * *result on success (set to NULL), leaves it on failure. Call it, then
 * return TR_STOP: the result is ordered before the task's exit. Handler,
 * on_start, on_cancel or on_stop of the task. Errors: TR_EINVAL,
 * TR_ENOMEM, TR_ENOACTOR (the parent is gone), TR_ESTOPPED. */
TR_API int tr_task_result(tr_ctx *ctx, tr_msg **result);
/* Shortcut: reports a fresh U64 message (tag, value). */
TR_API int tr_task_result_u64(tr_ctx *ctx, uint32_t tag, uint64_t value);
/* For a parent that is neither a group nor a scope: takes the result out
 * of a TR_TAG_TASK_RESULT message it is handling (the caller owns *out).
 * TR_EPAYLOAD if msg is not one, TR_EFREED if already taken. */
TR_API int tr_task_result_take(tr_msg *msg, tr_msg **out);

/* ---- asking a running group (from a handler) */

/* Each sends a request to the group with tr_request: the answer arrives at
 * the caller as a reply (tr_msg_is_reply, id = *req_id) with tag
 * TR_TAG_GROUP_REPLY, or as TR_TAG_TIMEOUT after timeout_ms (-1: none; a
 * request that races with the group's end is never answered, so give a
 * timeout or monitor the group). Read either with tr_group_reply_status.
 * The call itself fails with TR_ESTATE when the group has already ended,
 * TR_EINVAL, TR_ENOMEM, TR_ENOCTX (not in a handler), TR_ESTOPPED.
 *
 * add: starts spec as a new task; the reply's index names it. Refused with
 * TR_ESTATE once the group is finished, failing or cancelled.
 * cancel_task: tr_cancel(task, TR_EXIT_CANCELLED, its grace). Answers 0
 * (also when already asked), TR_ENOTFOUND if it has already ended,
 * TR_EINVAL for an index never used, TR_ESTATE if the group is finished.
 * list: every task ever started, with its state; read the reply with
 * tr_group_list_count / tr_group_list_task. */
TR_API int tr_group_add(tr_ctx *ctx, tr_ref group, const tr_task_spec *spec,
                        int64_t timeout_ms, uint64_t *req_id);
TR_API int tr_group_cancel_task(tr_ctx *ctx, tr_ref group, uint32_t index,
                                int64_t timeout_ms, uint64_t *req_id);
TR_API int tr_group_list(tr_ctx *ctx, tr_ref group, int64_t timeout_ms,
                         uint64_t *req_id);

/* The same from a thread that is not a handler: waits up to timeout_ms
 * (-1: forever) for the answer and returns it (0 or the TR_E* the group
 * answered), TR_ETIMEDOUT, TR_ESTATE (the group has ended, or called from a
 * handler: it would block a worker), TR_EINVAL, TR_ENOMEM, TR_ESTOPPED.
 * A helper actor carries the call and watches the group, so a group that
 * ends before answering gives TR_ESTATE, not a timeout. list_sync hands
 * the caller the list message (*out, caller owns it: tr_msg_destroy). */
TR_API int tr_group_add_sync(tr_runtime *rt, tr_ref group,
                             const tr_task_spec *spec, int64_t timeout_ms,
                             uint32_t *index);
TR_API int tr_group_cancel_task_sync(tr_runtime *rt, tr_ref group,
                                     uint32_t index, int64_t timeout_ms);
TR_API int tr_group_list_sync(tr_runtime *rt, tr_ref group, int64_t timeout_ms,
                              tr_msg **out);

/* Lets a keep_open group finish once no task runs. Any thread; no answer.
 * TR_ESTATE if the group has ended; TR_ENOMEM, TR_ESTOPPED. */
TR_API int tr_group_close(tr_runtime *rt, tr_ref group);

/* ---- reading answers */

/* The result of the call a TR_TAG_GROUP_REPLY answers (0 or a TR_E*
 * code); for an add, *index (may be NULL) is the new task's index.
 * TR_ETIMEDOUT for a TR_TAG_TIMEOUT message; TR_EPAYLOAD for anything
 * else. */
TR_API int tr_group_reply_status(const tr_msg *reply, uint32_t *index);
/* A list reply: the number of tasks (0 if msg is not a list), and task i.
 * TR_EPAYLOAD if msg is not a list, TR_EINVAL if i is out of range. */
TR_API size_t tr_group_list_count(const tr_msg *list);
TR_API int tr_group_list_task(const tr_msg *list, size_t i, tr_task_info *out);

/* ---- reading the done message (TR_TAG_GROUP_DONE) */

/* TR_EPAYLOAD if msg is not a done message. */
TR_API int tr_group_done_summary(const tr_msg *done, tr_group_summary *out);
/* Task by index i (0..ntasks-1). TR_EINVAL if out of range. */
TR_API int tr_group_done_task(const tr_msg *done, size_t i, tr_task_info *out);
/* The k-th failure in the order the group saw them (k = 0: the first
 * failure, the one that cancelled the siblings). TR_EINVAL if k >= nfailed. */
TR_API int tr_group_done_failure(const tr_msg *done, size_t k,
                                 tr_task_info *out);
/* Moves task i's result out of the done message: the caller owns *out
 * (NULL when the task reported none) and later reads see no result.
 * TR_EPAYLOAD, TR_EINVAL. */
TR_API int tr_group_done_take_result(tr_msg *done, size_t i, tr_msg **out);

/* "running", "cancelling", "done", "failed", "cancelled". */
TR_API const char *tr_task_state_name(tr_task_state state);

#ifdef __cplusplus
}
#endif
#endif
