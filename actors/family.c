/* Design notes
 * ------------
 * Ownership, the stop sequence, links and monitors, all built from system
 * messages (TR__F_SYS) that travel through the ordinary mailboxes, so they
 * are ordered with the data they relate to and never lost.
 *
 * Stop sequence of actor A (it returned TR_STOP or failed, or was
 * cancelled):
 *   1. A enters STOPPING: ordinary messages are dropped from now on, and
 *      the requests A still waits on are cancelled (send.c): their
 *      targets drop them if they have not started them.
 *   2. While A has children: ask the youngest to stop (SYS_STOP with the
 *      reason shutdown, or cancelled/timeout when A was cancelled so) and
 *      wait for its SYS_EXIT. Each child enforces its own grace: on
 *      SYS_STOP it arms a timer that kills it, so a parent never waits
 *      forever on a child that drains too long.
 *   3. No children left: A's on_stop runs, then A tells its parent
 *      (SYS_EXIT), its monitors (TR_TAG_DOWN) and its links (SYS_LINK_EXIT),
 *      and its slot is released.
 * Kill: the KILL bit in live_gen makes senders fail and makes A's next turn
 * kill it before any queued message; a killed actor kills all its children
 * at once and still waits for their exits (children before parents, even
 * then).
 *
 * A link or monitor request that reaches a dead slot is answered from the
 * dead-letter path (TR_EXIT_NOPROC), so "link/monitor a dead actor" always
 * produces the exit, whether the death came before or after the request. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "actors/system.h"
#include "runtime/grow.h"
#include "runtime/log.h"
#include "runtime/platform.h"
#include "troupe/lifecycle.h"

/* Wire form of an exit notice (BYTES payload of DOWN, EXIT, SYS_EXIT and
 * SYS_LINK_EXIT): this header, then, if there is a text, the text and a
 * NUL. Without a text the notice is exactly 24 bytes: stored inline in the
 * message, no allocation. */
typedef struct exit_wire {
    uint64_t who;
    int32_t reason;
    uint32_t textlen;
    uint64_t id;
} exit_wire;

static bool vec_grow(void **arr, uint32_t *cap, uint32_t need, size_t elem) {
    return tr__grow(arr, cap, need, elem, 4);
}

static bool refs_push(tr_ref **arr, uint32_t *n, uint32_t *cap, tr_ref r) {
    /* Room for 16 at first: one allocation covers most families. */
    if (!vec_grow((void **)arr, cap, *n < 16 ? 16 : *n + 1, sizeof **arr))
        return false;
    (*arr)[(*n)++] = r;
    return true;
}

/* Removes r, keeping order; searches from the end (children usually end
 * youngest first). */
static bool refs_remove(tr_ref *arr, uint32_t *n, tr_ref r) {
    for (uint32_t i = *n; i-- > 0;) {
        if (arr[i].id == r.id) {
            memmove(&arr[i], &arr[i + 1], (*n - i - 1) * sizeof *arr);
            (*n)--;
            return true;
        }
    }
    return false;
}

tr__actor_ext *tr__ext(tr__actor *a) {
    if (a->ext == NULL)
        a->ext = calloc(1, sizeof *a->ext);
    return a->ext;
}

void tr__ext_free(tr_runtime *rt, tr__actor *a) {
    tr__actor_ext *e = a->ext;
    if (e == NULL)
        return;
    if (e->kill_timer != 0)
        (void)tr__reactor_timer_cancel(&rt->reactor, e->kill_timer);
    tr__kids_free(&e->kids);
    tr__kids_free(&e->asked);
    free(e->links);
    free(e->watchers);
    free(e->mons);
    free(e->text);
    tr__request_cleanup(rt, a); /* frees pending and e */
}

static tr_msg *exit_msg(uint32_t tag, tr_ref who, int reason, uint64_t id,
                        const char *text) {
    size_t tl = text != NULL ? strlen(text) : 0;
    if (tl > 4096)
        tl = 4096;
    size_t len = sizeof(exit_wire) + (tl > 0 ? tl + 1 : 0);
    unsigned char buf[sizeof(exit_wire) + 4097];
    exit_wire w = {who.id, reason, (uint32_t)tl, id};
    memcpy(buf, &w, sizeof w);
    if (tl > 0)
        memcpy(buf + sizeof w, text, tl);
    buf[sizeof w + tl] = 0;
    return tr_msg_new_bytes(tag, buf, len);
}

TR_API int tr_msg_exit(const tr_msg *msg, tr_exit *out) {
    if (msg == NULL || out == NULL)
        return TR_EINVAL;
    bool sys = (msg->flags & TR__F_SYS) &&
               (msg->tag == TR__SYS_EXIT || msg->tag == TR__SYS_LINK_EXIT);
    if (!sys && msg->tag != TR_TAG_DOWN && msg->tag != TR_TAG_EXIT)
        return TR_EPAYLOAD;
    size_t len = 0;
    const unsigned char *p = tr_msg_data(msg, &len);
    exit_wire w;
    if (p == NULL || len < sizeof w)
        return TR_EPAYLOAD;
    memcpy(&w, p, sizeof w);
    if (sizeof w + (w.textlen > 0 ? (size_t)w.textlen + 1 : 0) != len)
        return TR_EPAYLOAD;
    out->who = (tr_ref){w.who};
    out->reason = w.reason;
    out->id = w.id;
    out->text = w.textlen > 0 ? (const char *)p + sizeof w : "";
    return 0;
}

TR_API const char *tr_exit_reason_name(int reason) {
    switch (reason) {
    case TR_EXIT_NORMAL:
        return "normal";
    case TR_EXIT_SHUTDOWN:
        return "shutdown";
    case TR_EXIT_CANCELLED:
        return "cancelled";
    case TR_EXIT_TIMEOUT:
        return "timeout";
    case TR_EXIT_KILLED:
        return "killed";
    case TR_EXIT_NOPROC:
        return "noproc";
    default:
        return reason < 0 ? tr_strerror(reason) : "unknown";
    }
}

static int send_sys_locked(tr_runtime *rt, tr_ctx *ctx, tr_ref to, tr_msg *m);

/* Sends a system message. System messages are accepted by an actor that
 * is being killed (KILL bit): its children's exits must still reach it. */
int tr__send_sys(tr_runtime *rt, tr_ctx *ctx, tr_ref from, tr_ref to,
                 uint32_t kind, uint64_t arg, tr_msg *payload) {
    tr_msg *m = payload != NULL ? payload : tr_msg_new(kind);
    if (m == NULL)
        return TR_ENOMEM;
    m->tag = kind;
    m->flags |= TR__F_SYS;
    m->req_id = arg;
    m->sender = from;
    bool foreign = ctx == NULL || ctx->w == NULL;
    if (foreign && !tr__foreign_enter(rt)) {
        tr__msg_free(m);
        return TR_ESTOPPED;
    }
    int rc = send_sys_locked(rt, ctx, to, m);
    if (foreign)
        tr__foreign_leave(rt);
    return rc;
}

static int send_sys_locked(tr_runtime *rt, tr_ctx *ctx, tr_ref to, tr_msg *m) {
    tr__actor *a = tr__slot_lookup(rt, to.id);
    uint32_t gen = (uint32_t)(to.id >> 32);
    if (a == NULL || (atomic_load_explicit(&a->live_gen, memory_order_acquire) &
                      ~TR__GEN_KILL) != gen) {
        tr__msg_free(m);
        return TR_ENOACTOR;
    }
    tr__enqueue(rt, ctx, a, m, gen);
    return 0;
}

static tr_ref self_ref(tr__actor *a) {
    return tr__make_ref(tr__slot_index(a), a->run_gen & ~TR__STUB_QUEUED);
}

static int64_t grace_of(const tr__actor *a, int64_t asked) {
    if (asked >= 0)
        return asked;
    return a->beh != NULL && a->beh->grace_ms > 0 ? a->beh->grace_ms
                                                  : TR_DEFAULT_GRACE_MS;
}

/* Arms the self-kill timer once (the grace of a cancelled actor). */
static void arm_kill_timer(tr_ctx *ctx, tr__actor *a, int64_t grace_ms) {
    tr__actor_ext *e = a->ext;
    if (e->kill_timer != 0 || e->killed)
        return;
    tr_msg *k = tr_msg_new(TR__SYS_KILL);
    if (k == NULL)
        return;
    k->flags |= TR__F_SYS;
    k->sender = TR_REF_NONE;
    uint64_t id = 0;
    if (tr__reactor_timer_add(&ctx->rt->reactor,
                              tr__after_ns(tr__now_ns(), grace_ms), 0,
                              self_ref(a).id, k, 0, &id) == 0)
        e->kill_timer = id;
    else
        tr__msg_free(k);
}

/* Step 2 of the stop sequence: stop the youngest child, or finish. */
static void advance_stop(tr_ctx *ctx, tr__actor *a) {
    tr__actor_ext *e = a->ext;
    while (tr__kids_count(&e->kids) > 0) {
        tr_ref c = tr__kids_youngest(&e->kids);
        /* Asked already (it may be draining): wait for its exit. Asking
         * again would cut its drain short. */
        if (e->waiting.id == c.id || tr__kids_remove(&e->asked, c)) {
            if (e->waiting.id != c.id)
                (void)tr__kids_add(&e->asked, c); /* keep it marked */
            e->waiting = c;
            return;
        }
        int why = e->reason == TR_EXIT_CANCELLED || e->reason == TR_EXIT_TIMEOUT
                      ? e->reason
                      : TR_EXIT_SHUTDOWN;
        int rc = e->killed ? tr__send_sys(ctx->rt, ctx, self_ref(a), c,
                                          TR__SYS_KILL, 0, NULL)
                           : tr__send_sys(ctx->rt, ctx, self_ref(a), c,
                                          TR__SYS_STOP, (uint64_t)(int64_t)why,
                                          tr_msg_new_u64(0, (uint64_t)-1));
        /* TR_ENOACTOR: already dead, its SYS_EXIT is on its way; wait. */
        (void)rc;
        (void)tr__kids_add(&e->asked, c);
        e->waiting = c;
        return;
    }
    if (e->is_root) {
        /* The whole tree is down: the runtime's orderly shutdown ends. */
        tr__log(TR_LOG_INFO, "shutdown: all actors stopped");
        tr_runtime_stop(ctx->rt);
        return;
    }
    tr__finish(ctx, a, e->killed ? TR_EXIT_KILLED : e->reason);
}

void tr__begin_stop(tr_ctx *ctx, tr__actor *a, int reason) {
    tr__actor_ext *e = a->ext;
    if (e == NULL || (tr__kids_count(&e->kids) == 0 && !e->is_root)) {
        tr__finish(ctx, a, (e != NULL && e->killed) ? TR_EXIT_KILLED : reason);
        return;
    }
    if (e->phase == TR__PH_STOPPING)
        return;
    e->phase = TR__PH_STOPPING;
    e->reason = reason;
    /* A stopping actor reads no more replies: its targets hear it now,
     * not after its children have stopped. */
    tr__request_cancel_all(ctx, a);
    advance_stop(ctx, a);
}

void tr__begin_kill(tr_ctx *ctx, tr__actor *a) {
    tr__actor_ext *e = tr__ext(a);
    if (e == NULL) {
        tr__finish(ctx, a, TR_EXIT_KILLED);
        return;
    }
    if (e->killed)
        return;
    e->killed = true;
    if (tr__kids_count(&e->kids) == 0 && !e->is_root) {
        tr__finish(ctx, a, TR_EXIT_KILLED);
        return;
    }
    /* Kill every child at once; wait for all their exits. */
    for (uint32_t i = e->kids.n; i-- > 0;)
        if (e->kids.v[i].id != 0)
            (void)tr__send_sys(ctx->rt, ctx, self_ref(a), e->kids.v[i],
                               TR__SYS_KILL, 0, NULL);
    e->waiting = tr__kids_youngest(&e->kids);
    if (e->phase != TR__PH_STOPPING) {
        e->phase = TR__PH_STOPPING;
        e->reason = TR_EXIT_KILLED;
    }
    tr__request_cancel_all(ctx, a);
    if (tr__kids_count(&e->kids) == 0)
        advance_stop(ctx, a);
}

/* Applies a cancellation request (SYS_STOP or a link's exit). */
static void cancel_self(tr_ctx *ctx, tr__actor *a, int reason,
                        int64_t grace_asked) {
    tr__actor_ext *e = tr__ext(a);
    if (e == NULL) {
        tr__finish(ctx, a, reason);
        return;
    }
    if (e->phase == TR__PH_STOPPING || e->killed)
        return;
    if (e->is_root) {
        tr__begin_stop(ctx, a, reason);
        return;
    }
    int64_t grace = grace_of(a, grace_asked);
    if (e->phase == TR__PH_RUNNING && a->beh->on_cancel != NULL) {
        ctx->stop_req = false;
        int rc = a->beh->on_cancel(ctx, a->state, reason);
        if (rc == TR_DRAIN && !ctx->stop_req) {
            e->phase = TR__PH_DRAINING;
            e->reason = reason;
            arm_kill_timer(ctx, a, grace);
            return;
        }
    }
    if (tr__kids_count(&e->kids) > 0)
        arm_kill_timer(ctx, a, grace);
    tr__begin_stop(ctx, a, reason);
}

static void notify_exit(tr_ctx *ctx, tr__actor *a, int reason) {
    tr__actor_ext *e = a->ext;
    tr_ref me = self_ref(a);
    const char *text = e != NULL && e->text != NULL ? e->text : "";
    tr_ref parent = e != NULL && e->parent.id != 0 ? e->parent : ctx->rt->root;
    if (parent.id != 0 && !(e != NULL && e->system))
        (void)tr__send_sys(ctx->rt, ctx, me, parent, TR__SYS_EXIT,
                           (uint64_t)(int64_t)reason,
                           exit_msg(0, me, reason, 0, text));
    if (e == NULL)
        return;
    /* Monitors this actor held: their targets drop the entries. */
    for (uint32_t i = 0; i < e->nmons; i++)
        (void)tr__send_sys(ctx->rt, ctx, me, e->mons[i].who, TR__SYS_DEMONITOR,
                           e->mons[i].id, NULL);
    for (uint32_t i = 0; i < e->nwatchers; i++) {
        tr_msg *d = exit_msg(TR_TAG_DOWN, me, reason, e->watchers[i].id, text);
        if (d != NULL && tr__send(ctx->rt, ctx, e->watchers[i].who, d) != 0)
            tr__msg_free(d);
    }
    for (uint32_t i = 0; i < e->nlinks; i++)
        (void)tr__send_sys(ctx->rt, ctx, me, e->links[i], TR__SYS_LINK_EXIT,
                           (uint64_t)(int64_t)reason,
                           exit_msg(0, me, reason, 0, text));
}

void tr__finish(tr_ctx *ctx, tr__actor *a, int reason) {
    const tr_behavior *beh = a->beh;
    tr__actor_ext *e = a->ext;
    if (e != NULL && e->kill_timer != 0) {
        (void)tr__reactor_timer_cancel(&ctx->rt->reactor, e->kill_timer);
        e->kill_timer = 0;
    }
    /* Requests still pending are cancelled before on_stop (so whatever
     * on_stop tells others comes after the cancellation) and again after
     * it, for requests on_stop itself made. */
    tr__request_cancel_all(ctx, a);
    if (beh->on_stop != NULL) {
        ctx->stop_req = false;
        beh->on_stop(ctx, a->state, reason);
        tr__request_cancel_all(ctx, a);
    }
    if (reason < 0 && tr__log_enabled(TR_LOG_INFO))
        tr__log(TR_LOG_INFO, "actor %s (slot %u) failed: %s%s%s",
                beh->name ? beh->name : "?", tr__slot_index(a),
                tr_strerror(reason), e && e->text ? ": " : "",
                e && e->text ? e->text : "");
    notify_exit(ctx, a, reason);
    tr__die(ctx, a);
}

void tr__adopt(tr_runtime *rt, tr_ctx *ctx, tr_ref child) {
    if (ctx != NULL && ctx->w != NULL && ctx->cur != NULL) {
        tr__actor_ext *e = tr__ext(ctx->cur);
        if (e == NULL || !tr__kids_add(&e->kids, child))
            tr__log(TR_LOG_ERROR, "spawn: out of memory recording a child");
        return;
    }
    /* From outside: the root records it when it handles the message. */
    if (tr__send_sys(rt, ctx, TR_REF_NONE, rt->root, TR__SYS_ADOPT, child.id,
                     NULL) != 0)
        tr__log(TR_LOG_WARN, "spawn: root unavailable");
}

/* A link or monitor request reached a dead actor: answer noproc. */
void tr__sys_dead_letter(tr_ctx *ctx, tr__actor *a, tr_msg *m) {
    if (!(m->flags & TR__F_SYS))
        return;
    /* The dead actor the request was for: this slot at the message's
     * generation. */
    tr_ref dead = tr__make_ref(tr__slot_index(a), m->target_gen);
    if (m->tag == TR__SYS_LINK) {
        (void)tr__send_sys(ctx->rt, ctx, dead, m->sender, TR__SYS_LINK_EXIT,
                           (uint64_t)TR_EXIT_NOPROC,
                           exit_msg(0, dead, TR_EXIT_NOPROC, 0, ""));
    } else if (m->tag == TR__SYS_MONITOR) {
        tr_msg *d = exit_msg(TR_TAG_DOWN, dead, TR_EXIT_NOPROC, m->req_id, "");
        if (d != NULL && tr__send(ctx->rt, ctx, m->sender, d) != 0)
            tr__msg_free(d);
    }
}

/* Drops the monitor `id` this actor holds; *target gets its target. */
static bool watch_remove(tr__actor_ext *e, uint64_t id, tr_ref *target) {
    for (uint32_t i = 0; i < e->nmons; i++) {
        if (e->mons[i].id == id) {
            if (target != NULL)
                *target = e->mons[i].who;
            e->mons[i] = e->mons[--e->nmons];
            return true;
        }
    }
    return false;
}

bool tr__sys_handle(tr_ctx *ctx, tr__actor *a, tr_msg *m) {
    if (m->tag == TR__SYS_REQ_CANCEL) {
        /* Local targets check the runtime's list (noted by the requester);
         * a proxy passes the word to the process that has the request.
         * Handled before tr__ext: a plain target needs no ext for it. */
        if (!tr__behavior_raw(a->beh))
            return false;
        m->tag = TR__TAG_REQ_CANCEL;
        m->flags &= (uint16_t)~TR__F_SYS;
        return true;
    }
    tr__actor_ext *e = tr__ext(a);
    if (e == NULL) {
        tr__log(TR_LOG_ERROR, "out of memory handling a system message");
        return false;
    }
    switch (m->tag) {
    case TR__SYS_EXIT: {
        tr__kids_remove(&e->kids, m->sender);
        tr__kids_remove(&e->asked, m->sender);
        if (e->waiting.id == m->sender.id)
            e->waiting = TR_REF_NONE;
        tr_exit x;
        if (e->phase != TR__PH_STOPPING && a->beh->on_child_exit != NULL &&
            tr_msg_exit(m, &x) == 0) {
            ctx->stop_req = false;
            ctx->fail_code = 0;
            a->beh->on_child_exit(ctx, a->state, &x);
            if (ctx->stop_req || ctx->fail_code != 0) {
                /* A drained actor ends with its cancel reason (as in
                 * actor.c's after_callback). */
                int why = ctx->fail_code != 0           ? ctx->fail_code
                          : e->phase == TR__PH_DRAINING ? e->reason
                                                        : TR_EXIT_NORMAL;
                ctx->stop_req = false;
                ctx->fail_code = 0;
                tr__begin_stop(ctx, a, why);
                return false;
            }
        }
        if (e->phase == TR__PH_STOPPING)
            advance_stop(ctx, a);
        return false;
    }
    case TR__SYS_STOP: {
        int64_t grace = (int64_t)m->u.u64;
        cancel_self(ctx, a, (int)(int64_t)m->req_id,
                    m->kind == TR_PAYLOAD_U64 ? grace : -1);
        return false;
    }
    case TR__SYS_KILL:
        tr__begin_kill(ctx, a);
        return false;
    case TR__SYS_LINK:
        for (uint32_t i = 0; i < e->nlinks; i++)
            if (e->links[i].id == m->sender.id)
                return false;
        if (!refs_push(&e->links, &e->nlinks, &e->caplinks, m->sender))
            tr__log(TR_LOG_ERROR, "link: out of memory");
        return false;
    case TR__SYS_UNLINK:
        refs_remove(e->links, &e->nlinks, m->sender);
        return false;
    case TR__SYS_LINK_EXIT: {
        int reason = (int)(int64_t)m->req_id;
        bool was_linked =
            m->sender.id == 0 || refs_remove(e->links, &e->nlinks, m->sender);
        if (!was_linked)
            return false; /* unlinked meanwhile */
        if (e->trap && e->phase != TR__PH_STOPPING) {
            m->tag = TR_TAG_EXIT;
            m->flags &= (uint16_t)~TR__F_SYS;
            return true;
        }
        if (reason != TR_EXIT_NORMAL)
            cancel_self(ctx, a, reason, -1);
        return false;
    }
    case TR__SYS_MONITOR:
        if (!vec_grow((void **)&e->watchers, &e->capwatchers, e->nwatchers + 1,
                      sizeof *e->watchers)) {
            tr__log(TR_LOG_ERROR, "monitor: out of memory");
            return false;
        }
        e->watchers[e->nwatchers++] = (tr__watcher){m->sender, m->req_id};
        return false;
    case TR__SYS_DEMONITOR:
        for (uint32_t i = 0; i < e->nwatchers; i++) {
            if (e->watchers[i].id == m->req_id &&
                e->watchers[i].who.id == m->sender.id) {
                e->watchers[i] = e->watchers[--e->nwatchers];
                break;
            }
        }
        return false;
    case TR__SYS_ADOPT: {
        tr_ref child = {m->req_id};
        if (!tr_actor_alive(ctx->rt, child))
            return false; /* ended before we heard of it */
        if (!tr__kids_add(&e->kids, child))
            tr__log(TR_LOG_ERROR, "root: out of memory recording a child");
        else if (e->phase == TR__PH_STOPPING)
            advance_stop(ctx, a);
        return false;
    }
    default:
        tr__log(TR_LOG_ERROR, "unknown system message %u", m->tag);
        return false;
    }
}

/* ---- public calls ---- */

static tr__actor *handler_actor(tr_ctx *ctx) {
    return ctx != NULL && ctx->cur != NULL && !ctx->shutdown ? ctx->cur : NULL;
}

TR_API tr_ref tr_parent(const tr_ctx *ctx) {
    if (ctx == NULL || ctx->cur == NULL)
        return TR_REF_NONE;
    tr__actor_ext *e = ctx->cur->ext;
    return e != NULL && e->parent.id != 0 ? e->parent : ctx->rt->root;
}

TR_API tr_ref tr_runtime_root(const tr_runtime *rt) {
    return rt != NULL ? rt->root : TR_REF_NONE;
}

TR_API int tr_fail(tr_ctx *ctx, int code, const char *fmt, ...) {
    if (code >= 0)
        code = TR_EINVAL;
    tr__actor *a = handler_actor(ctx);
    if (a == NULL)
        return code;
    tr__actor_ext *e = tr__ext(a);
    if (e != NULL && fmt != NULL) {
        char buf[1024];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(buf, sizeof buf, fmt, ap);
        va_end(ap);
        free(e->text);
        e->text = strdup(buf);
    }
    ctx->fail_code = code;
    return code;
}

TR_API int tr_link(tr_ctx *ctx, tr_ref other) {
    tr__actor *a = handler_actor(ctx);
    if (a == NULL)
        return TR_ENOCTX;
    tr__actor_ext *e = tr__ext(a);
    if (e == NULL)
        return TR_ENOMEM;
    if (other.id == ctx->self.id)
        return TR_EINVAL;
    for (uint32_t i = 0; i < e->nlinks; i++)
        if (e->links[i].id == other.id)
            return 0;
    if (!refs_push(&e->links, &e->nlinks, &e->caplinks, other))
        return TR_ENOMEM;
    int rc =
        tr__send_sys(ctx->rt, ctx, ctx->self, other, TR__SYS_LINK, 0, NULL);
    if (rc == TR_ENOACTOR) {
        /* Dead already: the exit comes to us as if it had just happened. */
        rc = tr__send_sys(ctx->rt, ctx, other, ctx->self, TR__SYS_LINK_EXIT,
                          (uint64_t)TR_EXIT_NOPROC,
                          exit_msg(0, other, TR_EXIT_NOPROC, 0, ""));
    }
    return rc;
}

TR_API int tr_unlink(tr_ctx *ctx, tr_ref other) {
    tr__actor *a = handler_actor(ctx);
    if (a == NULL)
        return TR_ENOCTX;
    if (a->ext == NULL || !refs_remove(a->ext->links, &a->ext->nlinks, other))
        return TR_ENOTFOUND;
    (void)tr__send_sys(ctx->rt, ctx, ctx->self, other, TR__SYS_UNLINK, 0, NULL);
    return 0;
}

TR_API void tr_trap_exits(tr_ctx *ctx, bool on) {
    tr__actor *a = handler_actor(ctx);
    tr__actor_ext *e = a != NULL ? tr__ext(a) : NULL;
    if (e != NULL)
        e->trap = on;
}

TR_API int tr_monitor(tr_ctx *ctx, tr_ref target, uint64_t *id) {
    tr__actor *a = handler_actor(ctx);
    if (a == NULL)
        return TR_ENOCTX;
    tr__actor_ext *e = tr__ext(a);
    if (e == NULL || !vec_grow((void **)&e->mons, &e->capmons, e->nmons + 1,
                               sizeof *e->mons))
        return TR_ENOMEM;
    uint64_t mid = ++e->next_mon_id;
    e->mons[e->nmons++] = (tr__watcher){target, mid};
    if (id != NULL)
        *id = mid;
    int rc = tr__send_sys(ctx->rt, ctx, ctx->self, target, TR__SYS_MONITOR, mid,
                          NULL);
    if (rc == TR_ENOACTOR) {
        tr_msg *d = exit_msg(TR_TAG_DOWN, target, TR_EXIT_NOPROC, mid, "");
        if (d == NULL)
            return TR_ENOMEM;
        d->sender = target;
        rc = tr__send(ctx->rt, ctx, ctx->self, d);
        if (rc != 0)
            tr__msg_free(d);
    }
    return rc;
}

TR_API int tr_demonitor(tr_ctx *ctx, uint64_t id) {
    tr__actor *a = handler_actor(ctx);
    if (a == NULL)
        return TR_ENOCTX;
    tr_ref target;
    if (a->ext == NULL || !watch_remove(a->ext, id, &target))
        return TR_ENOTFOUND;
    /* The target forgets us too (a DOWN already on its way is filtered
     * out by the missing entry here). */
    (void)tr__send_sys(ctx->rt, ctx, ctx->self, target, TR__SYS_DEMONITOR, id,
                       NULL);
    return 0;
}

/* A DOWN for a monitor that was cancelled (or already delivered) is
 * dropped; see actor.c. */
bool tr__down_wanted(tr__actor *a, tr_msg *m) {
    if (m->tag != TR_TAG_DOWN || (m->flags & TR__F_SYS))
        return true;
    tr_exit x;
    if (tr_msg_exit(m, &x) != 0)
        return true; /* a user message that reuses the tag */
    return a->ext != NULL && watch_remove(a->ext, x.id, NULL);
}

TR_API int tr_cancel(tr_runtime *rt, tr_ref target, int reason,
                     int64_t grace_ms) {
    if (rt == NULL || grace_ms < -1)
        return TR_EINVAL;
    if (reason == TR_EXIT_NORMAL || reason == TR_EXIT_KILLED)
        reason = TR_EXIT_CANCELLED;
    tr__worker *w = tr__sched_current();
    tr_ctx *ctx = w != NULL && w->sched == &rt->sched ? w->user : NULL;
    tr_msg *g = tr_msg_new_u64(0, (uint64_t)grace_ms);
    if (g == NULL)
        return TR_ENOMEM;
    return tr__send_sys(rt, ctx, ctx != NULL ? ctx->self : TR_REF_NONE, target,
                        TR__SYS_STOP, (uint64_t)(int64_t)reason, g);
}

TR_API int tr_kill(tr_runtime *rt, tr_ref target) {
    if (rt == NULL)
        return TR_EINVAL;
    tr__actor *a = tr__slot_lookup(rt, target.id);
    uint32_t gen = (uint32_t)(target.id >> 32);
    if (a == NULL)
        return TR_ENOACTOR;
    uint32_t cur = atomic_load_explicit(&a->live_gen, memory_order_relaxed);
    do {
        if ((cur & ~TR__GEN_KILL) != gen)
            return TR_ENOACTOR;
        /* acq_rel: the actor's turn that sees the bit (acquire load) sees
         * the request; senders that see it fail. */
    } while (!atomic_compare_exchange_weak_explicit(
        &a->live_gen, &cur, cur | TR__GEN_KILL, memory_order_acq_rel,
        memory_order_relaxed));
    tr__worker *w = tr__sched_current();
    tr_ctx *ctx = w != NULL && w->sched == &rt->sched ? w->user : NULL;
    /* Release: a turn that sees the new epoch sees the bit. */
    atomic_fetch_add_explicit(&rt->kill_epoch, 1, memory_order_release);
    /* Wakes it up if idle; the bit makes the kill jump the queue. */
    (void)tr__send_sys(rt, ctx, TR_REF_NONE, target, TR__SYS_KILL, 0, NULL);
    return 0;
}

TR_API int tr_runtime_shutdown(tr_runtime *rt) {
    if (rt == NULL)
        return TR_EINVAL;
    if (atomic_fetch_add(&rt->shutdown_calls, 1) > 0)
        return tr_runtime_stop(rt);
    tr__log(TR_LOG_INFO, "shutdown: stopping the actor tree");
    tr_msg *g = tr_msg_new_u64(0, (uint64_t)-1);
    if (g == NULL)
        return tr_runtime_stop(rt);
    int rc = tr__send_sys(rt, NULL, TR_REF_NONE, rt->root, TR__SYS_STOP,
                          (uint64_t)TR_EXIT_SHUTDOWN, g);
    return rc == 0 ? 0 : tr_runtime_stop(rt);
}

/* ---- the root ---- */

static int root_handle(tr_ctx *ctx, void *state, tr_msg *msg) {
    (void)ctx;
    (void)state;
    tr__log(TR_LOG_WARN, "root: unexpected message tag 0x%x dropped",
            tr_msg_tag(msg));
    return 0;
}

const tr_behavior tr__root_behavior = {.name = "root", .handle = root_handle};

int tr__root_create(tr_runtime *rt) {
    /* The root is an actor that is not counted for quiescence (like an
     * inbox); its START marks it as the root. */
    return tr__spawn(rt, NULL, &tr__root_behavior, NULL, 0, &rt->root, NULL,
                     TR_REF_NONE);
}
