/* troupe — supervisors (Erlang/OTP style).
 *
 * A supervisor is an actor that starts a list of children from child
 * specs, watches them (lifecycle.h: they are its children, it learns of
 * every exit through on_child_exit) and restarts them by policy.
 *
 * Start. tr_sup_start spawns the supervisor; it starts its children in
 * spec order, ONE AT A TIME: child i+1 is spawned only after child i's
 * on_start has returned 0 (a nested supervisor counts as started when all
 * of its own children are). So a later child may rely on what an earlier
 * one set up in on_start. A child that ends before it started (its on_start
 * failed, or it was killed) makes the supervisor fail at once (the
 * children already started are stopped, youngest first), with the child's
 * failure code (TR_ECANCELLED if it ended with a non-failure reason) and
 * the text "child 'name' failed to start: ...". tr_sup_start returns as
 * soon as the supervisor is spawned: the children start after it; a
 * *_sync call made meanwhile is answered once they all have.
 *
 * Restart types (per child):
 *   PERMANENT  always restarted.
 *   TRANSIENT  restarted unless it ended with TR_EXIT_NORMAL or
 *              TR_EXIT_SHUTDOWN (any failure, kill, cancel or timeout is
 *              abnormal); after a normal end it is listed as STOPPED.
 *   TEMPORARY  never restarted; its spec is deleted when it ends, whatever
 *              the reason (OTP), and when it is terminated.
 *
 * Strategies (what a restart-worthy exit of child C restarts):
 *   ONE_FOR_ONE   C only.
 *   ONE_FOR_ALL   every running child: the others are stopped youngest
 *                 first, one at a time, each with its shutdown policy;
 *                 then all are started again in spec order (one at a time,
 *                 as above). Temporary children stopped this way are
 *                 deleted, not restarted. Children that were STOPPED
 *                 (terminated by a call, or transient ones that ended
 *                 normally) stay stopped.
 *   REST_FOR_ONE  the same for C and the running children after it in spec
 *                 order; the children before C are not touched.
 * One such exit is one restart, however many children it restarts (OTP);
 * each child's own restart count (tr_sup_child_info.restarts) counts every
 * automatic restart of that child. A sibling that ends on its own while
 * the supervisor is stopping it for a group restart is restarted with the
 * group and does not count again.
 *
 * Intensity: at most `intensity` restarts within any window of `period_ms`
 * (a sliding window, OTP). The restart that would exceed it is not made:
 * the supervisor stops every child (youngest first, each with its shutdown
 * policy) and then fails with TR_ESTATE and a text starting with
 * "restart intensity exceeded", so its parent sees a failure in
 * on_child_exit (a parent supervisor applies its own policy: escalation),
 * and monitors see it in TR_TAG_DOWN. intensity 0 allows no restart.
 *
 * Backoff (optional, backoff_min_ms > 0): a restart waits
 * min(backoff_max_ms, backoff_min_ms * 2^(n-1)) ms for the n-th restart in
 * a row of the same child, minus a random jitter of up to
 * backoff_jitter_pct percent of that (seeded: backoff_seed). The row
 * starts again at n = 1 when the child had run for at least period_ms
 * before it ended. While it waits, the child is listed as RESTARTING with
 * no reference; the supervisor keeps serving calls meanwhile.
 *
 * Shutdown policy (per child, shutdown_ms): 0 = brutal kill (tr_kill: no
 * cleanup time; on_stop sees TR_EXIT_KILLED); > 0 = tr_cancel with reason
 * TR_EXIT_SHUTDOWN and that grace: the child's on_cancel may drain, and
 * the child kills itself when the grace runs out; -1 = the same with the
 * child behaviour's own grace (grace_ms, or TR_DEFAULT_GRACE_MS).
 *
 * The supervisor's own end. When it is cancelled (tr_cancel, its parent
 * stopping, tr_runtime_shutdown) it stops its children itself, youngest
 * first, each with its shutdown policy, then ends (on_cancel drains). A
 * supervisor therefore needs a grace of at least the sum of its
 * children's: give a nested supervisor a shutdown_ms that large; a
 * top-level one gets TR_DEFAULT_GRACE_MS from tr_runtime_shutdown. When
 * its grace runs out it is killed, which kills all its children at once.
 * Because it stops by draining, its exit reason is the reason it was
 * cancelled with (lifecycle.h: a drained actor ends with its cancel
 * reason).
 *
 * What a restart keeps: only the child spec (behaviour, init bytes, name,
 * restart type, shutdown policy). A restarted child is a NEW actor with a
 * new tr_ref: the state and the queued messages of the old incarnation
 * are lost (messages sent to the old reference are dead letters). Find
 * the current reference with which_children.
 *
 * Calls (start_child, terminate_child, restart_child, delete_child,
 * which_children) are messages to the supervisor, handled in order; the
 * ones that stop or start a child are answered when that is done (a
 * start: after the child's on_start). From a handler: tr_sup_* send the
 * call and the answer arrives later as a TR_TAG_SUP_REPLY message (read it
 * with tr_sup_reply_read). From any other thread: tr_sup_*_sync block
 * until the answer (a private inbox per call). Calls are answered with:
 *   TR_ENOTFOUND  no child of that name;
 *   TR_EINVAL     bad spec, or the name is already used;
 *   TR_ESTATE     the child is not in a state that allows it (delete or
 *                 restart of a running child), or the supervisor is
 *                 shutting down;
 *   TR_ENOACTOR   the supervisor is dead (the *_sync calls notice it while
 *                 they wait; a handler should tr_monitor the supervisor:
 *                 a call that reaches a dead supervisor is never answered).
 *
 * Messages: calls carry PTR payloads (local only); replies carry BYTES
 * (plain data). Tags 0xFFFF5300..0xFFFF53FF belong to supervisors. */
#ifndef TROUPE_SUPERVISOR_H
#define TROUPE_SUPERVISOR_H

#include <stddef.h>
#include <stdint.h>

#include "actor.h"
#include "export.h"
#include "message.h"
#include "runtime.h"

struct tr_mailbox_limit; /* bounded.h */

#ifdef __cplusplus
extern "C" {
#endif

/* A supervisor's answer to a call (tr_sup_reply_read). */
#define TR_TAG_SUP_REPLY 0xFFFF5300u

/* A child has started (tr_sup_config.notify). */
#define TR_TAG_SUP_CHILD_UP 0xFFFF5301u

/* Longest child name plus its NUL. */
#define TR_SUP_NAME_MAX 64
/* Largest restart intensity accepted. */
#define TR_SUP_INTENSITY_MAX 100000u
/* Largest shutdown grace / backoff / period accepted (ms; about 115 days,
 * far below what would overflow a nanosecond deadline). */
#define TR_SUP_TIME_MAX_MS 10000000000LL

typedef enum tr_restart {
    TR_RESTART_PERMANENT = 0,
    TR_RESTART_TRANSIENT = 1,
    TR_RESTART_TEMPORARY = 2
} tr_restart;

typedef enum tr_sup_strategy {
    TR_SUP_ONE_FOR_ONE = 0,
    TR_SUP_ONE_FOR_ALL = 1,
    TR_SUP_REST_FOR_ONE = 2
} tr_sup_strategy;

/* shutdown_ms values besides a grace in ms. */
#define TR_SUP_SHUTDOWN_BRUTAL 0
#define TR_SUP_SHUTDOWN_DEFAULT (-1)

/* A child spec. Everything is copied by the supervisor (name, init bytes)
 * except the behaviour, which must outlive the supervisor (normally a
 * static const).
 *
 * Placement: with `remote` set, the child is the behaviour registered
 * under that name (troupe/remote.h, tr_register), started in a worker
 * process of the runtime's pool (tr_pool_start first) or, with `node`
 * set, on that node (troupe/node.h); `behavior` is then ignored (may be
 * NULL) and init_len is checked over there. The supervisor holds the
 * child's proxy: the child counts as started when the remote actor exists,
 * its exit is the remote actor's (TR_ELOST when its process or node is
 * lost), and restarts spawn a new remote actor (on a restarted worker)
 * by the same strategies, intensity and backoff as local children. */
typedef struct tr_sup_spec {
    const char *name;            /* 1..TR_SUP_NAME_MAX-1 chars, unique */
    const tr_behavior *behavior; /* handle required (local children) */
    const void *init;            /* copied to each incarnation's state */
    size_t init_len;             /* <= behavior->state_size */
    tr_restart restart;
    int64_t shutdown_ms; /* 0 brutal kill, > 0 grace, -1 behaviour's */
    const char *remote;  /* registered behaviour name; NULL = local */
    const char *node;    /* with remote: that node; NULL = worker pool */
    /* Local children: a bounded mailbox for every incarnation (bounded.h;
     * copied); NULL = unbounded. Ignored for remote children (their
     * mailboxes are bounded by credit). */
    const struct tr_mailbox_limit *mailbox;
} tr_sup_spec;

typedef struct tr_sup_config {
    const char *name; /* for logs and failure texts; copied; may be NULL */
    tr_sup_strategy strategy;
    uint32_t intensity;          /* restarts allowed per period (0: none) */
    int64_t period_ms;           /* the window; 0 = 5000 */
    int64_t backoff_min_ms;      /* 0 = restart at once */
    int64_t backoff_max_ms;      /* cap, >= backoff_min_ms when backoff is on */
    uint32_t backoff_jitter_pct; /* 0..100 */
    uint64_t backoff_seed;       /* 0 = from the clock */
    /* If set: every time a child has started (first start, restart,
     * start_child, restart_child) this actor gets a TR_TAG_SUP_CHILD_UP
     * message naming it (tr_sup_child_up_read). Routers' supervised pools
     * use it to route to restarted children. */
    tr_ref notify;
} tr_sup_config;

/* OTP's defaults: one_for_one, 1 restart in 5 s, no backoff. */
#define TR_SUP_CONFIG_INIT                                                     \
    {                                                                          \
        .name = NULL, .strategy = TR_SUP_ONE_FOR_ONE, .intensity = 1,          \
        .period_ms = 5000                                                      \
    }

/* Starts a supervisor with these children; *out (may be NULL) is its
 * reference. Everything is validated and copied before it returns, so the
 * arrays may be freed at once. tr_sup_start from a handler (the supervisor
 * is the caller's child), tr_sup_runtime_start from any other thread (a
 * child of the runtime's root). Errors: TR_EINVAL (a bad config or spec,
 * duplicate names), TR_ENOMEM, TR_ESTOPPED, TR_ENOCTX (tr_sup_start
 * outside a handler). */
TR_API int tr_sup_start(tr_ctx *ctx, const tr_sup_config *cfg,
                        const tr_sup_spec *children, size_t n, tr_ref *out);
TR_API int tr_sup_runtime_start(tr_runtime *rt, const tr_sup_config *cfg,
                                const tr_sup_spec *children, size_t n,
                                tr_ref *out);

/* A supervisor as the child of another: a spec with behavior =
 * &tr_sup_behavior and init = a tr_sup_args (init_len = sizeof). The args
 * point at the config and specs, which are read again at every
 * (re)start: they must outlive the tree (normally static const). Give it
 * a shutdown_ms of at least the sum of its children's (see above). Use it
 * only in specs (tr_sup_start otherwise). */
typedef struct tr_sup_args {
    const tr_sup_config *config;
    const tr_sup_spec *children;
    size_t nchildren;
} tr_sup_args;
TR_API extern const tr_behavior tr_sup_behavior;

typedef enum tr_sup_child_state {
    TR_SUP_CHILD_RUNNING = 0,    /* alive (starting, running, stopping) */
    TR_SUP_CHILD_RESTARTING = 1, /* dead, restart pending (backoff) */
    TR_SUP_CHILD_STOPPED = 2     /* dead, not to be restarted */
} tr_sup_child_state;

/* One child, as listed by which_children. Plain data. */
typedef struct tr_sup_child_info {
    char name[TR_SUP_NAME_MAX];
    tr_ref ref;        /* the current incarnation; TR_REF_NONE if dead */
    int32_t state;     /* tr_sup_child_state */
    int32_t restart;   /* tr_restart */
    uint32_t restarts; /* automatic restarts of this child so far */
    int32_t last_exit; /* reason of its last exit (0 if it never ended) */
    /* Messages in its mailbox (tr_actor_mailbox_depth), or -1 when the
     * runtime does not track depths (tr_runtime_config.track_depth off)
     * or the child is not running. */
    int64_t mailbox_depth;
} tr_sup_child_info;

/* "running", "restarting", "stopped". */
TR_API const char *tr_sup_child_state_name(int state);

/* ---- calls from a handler: send, answer later as TR_TAG_SUP_REPLY ---- */

typedef enum tr_sup_op {
    TR_SUP_OP_START_CHILD = 1,
    TR_SUP_OP_TERMINATE_CHILD = 2,
    TR_SUP_OP_RESTART_CHILD = 3,
    TR_SUP_OP_DELETE_CHILD = 4,
    TR_SUP_OP_WHICH_CHILDREN = 5
} tr_sup_op;

/* Each sends one call to `sup` from the running actor and writes its id
 * to *call_id (may be NULL); the reply names it. Returns 0 when the call
 * was sent (the result is in the reply), TR_EINVAL (bad argument or spec:
 * checked here, before sending), TR_ENOMEM, TR_ENOACTOR (sup is dead),
 * TR_ESTOPPED, TR_ENOCTX (not in a handler).
 *   start_child:     adds the spec at the end and starts it; reply.ref is
 *                    the child. A child that fails to start is not kept.
 *   terminate_child: stops the child with its shutdown policy and keeps
 *                    its spec (STOPPED; a temporary child's is deleted).
 *                    0 also if it was already stopped.
 *   restart_child:   starts a STOPPED child again (TR_ESTATE otherwise);
 *                    reply.ref is the child. Not counted in `restarts`.
 *   delete_child:    deletes a STOPPED child's spec (TR_ESTATE otherwise).
 *   which_children:  the children in spec order (tr_sup_reply_child). */
TR_API int tr_sup_start_child(tr_ctx *ctx, tr_ref sup, const tr_sup_spec *spec,
                              uint64_t *call_id);
TR_API int tr_sup_terminate_child(tr_ctx *ctx, tr_ref sup, const char *name,
                                  uint64_t *call_id);
TR_API int tr_sup_restart_child(tr_ctx *ctx, tr_ref sup, const char *name,
                                uint64_t *call_id);
TR_API int tr_sup_delete_child(tr_ctx *ctx, tr_ref sup, const char *name,
                               uint64_t *call_id);
TR_API int tr_sup_which_children(tr_ctx *ctx, tr_ref sup, uint64_t *call_id);

typedef struct tr_sup_reply {
    uint64_t call_id;
    int op;           /* tr_sup_op */
    int result;       /* 0 or a TR_E* code (see the list above) */
    tr_ref ref;       /* start/restart: the child; otherwise TR_REF_NONE */
    size_t nchildren; /* which_children: entries (tr_sup_reply_child) */
} tr_sup_reply;

/* Decodes a TR_TAG_SUP_REPLY message (borrowed or owned). TR_EPAYLOAD if
 * it is not one. Any thread. */
TR_API int tr_sup_reply_read(const tr_msg *msg, tr_sup_reply *out);
/* Copies entry i of a which_children reply. TR_EPAYLOAD / TR_EINVAL. */
TR_API int tr_sup_reply_child(const tr_msg *msg, size_t i,
                              tr_sup_child_info *out);

/* Decodes a TR_TAG_SUP_CHILD_UP message: the child's reference and name
 * (name: TR_SUP_NAME_MAX bytes, may be NULL). TR_EPAYLOAD if it is not
 * one. */
TR_API int tr_sup_child_up_read(const tr_msg *msg, tr_ref *ref, char *name);

/* ---- blocking calls for threads that are not actors ---- */

/* Same calls, waiting up to timeout_ms (-1 forever) for the answer.
 * They return the call's result, or TR_ETIMEDOUT, TR_ENOACTOR (the
 * supervisor was or became dead before it answered), TR_ESTATE (called
 * from a handler: use the calls above), TR_ENOMEM, TR_ESTOPPED. A call
 * that timed out may still take effect later. Each call creates and
 * destroys a private inbox (so a late answer never meets the next call);
 * the runtime currently keeps a destroyed inbox's slot until it is
 * destroyed (a few hundred bytes per call). */
TR_API int tr_sup_start_child_sync(tr_runtime *rt, tr_ref sup,
                                   const tr_sup_spec *spec, int64_t timeout_ms,
                                   tr_ref *out);
TR_API int tr_sup_terminate_child_sync(tr_runtime *rt, tr_ref sup,
                                       const char *name, int64_t timeout_ms);
TR_API int tr_sup_restart_child_sync(tr_runtime *rt, tr_ref sup,
                                     const char *name, int64_t timeout_ms,
                                     tr_ref *out);
TR_API int tr_sup_delete_child_sync(tr_runtime *rt, tr_ref sup,
                                    const char *name, int64_t timeout_ms);
/* *out is a malloc'ed array of *n entries (NULL when 0); free it with
 * tr_sup_children_free. */
TR_API int tr_sup_which_children_sync(tr_runtime *rt, tr_ref sup,
                                      int64_t timeout_ms,
                                      tr_sup_child_info **out, size_t *n);
TR_API void tr_sup_children_free(tr_sup_child_info **list);

#ifdef __cplusplus
}
#endif
#endif
