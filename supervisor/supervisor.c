/* Design notes
 * ------------
 * A supervisor is an ordinary actor (tr_sup_behavior). Everything it does
 * is asynchronous: a child is stopped by a message (tr_cancel / tr_kill)
 * and its end comes back through on_child_exit; a child is started with
 * tr_spawn and confirms (TR__SUP_TAG_STARTED, sent by the child wrapper in
 * supervisor_spec.c) when its on_start has run. So the supervisor is a
 * state machine that never blocks a worker.
 *
 * Work is done as one PLAN at a time: a list of children to stop, one at
 * a time, in the listed order (youngest first), then an optional backoff,
 * then a list of children to start, one at a time, in spec order, then a
 * completion (reply to a call, finish a shutdown). p.waiting names the
 * child whose exit or start confirmation the plan waits for. Every
 * operation is such a plan:
 *   INIT        start all children;
 *   RESTART     the strategy's stops and starts after a child's exit;
 *   DUE         start the children whose backoff ended;
 *   CMD         a call: terminate (stop one), start/restart (start one);
 *   SHUTDOWN    stop every child, then end (cancelled, or intensity
 *               exceeded). It takes over whatever plan was running.
 * While a plan runs, what arrives is queued: a restart-worthy exit becomes
 * an EVENT (child id + incarnation; stale events are skipped), a call is
 * queued as it came. When the plan completes, events are served first,
 * then due backoffs, then calls (supervisor_plan.c decides the next plan;
 * this file executes plans and is the actor). which_children is answered
 * at once (except during INIT, so that a caller sees the started tree).
 *
 * "Exits we caused": a child the supervisor asked to stop is STOPPING, so
 * its exit is never taken for a crash. A running child that ends on its
 * own while it is still on the current plan's stop list is simply taken
 * off (it was about to be stopped, and is restarted with the group if the
 * plan restarts it): a group restart is one restart, as in OTP.
 *
 * Invariants: at most one child is STARTING or STOPPING at a time (plans
 * are sequential); a RESTARTING child with due_ms == 0 has a pending event
 * or is on the current plan's start list; the backoff timer, when armed,
 * is due no later than the earliest due_ms. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/log.h"
#include "supervisor/supervisor_int.h"
#include "transport/remote.h"

static void advance(tr_ctx *ctx, tr__sup *s);

/* ---- children ---- */

tr__sup_child *tr__sup_find_id(tr__sup *s, uint64_t id, size_t *idx) {
    for (size_t i = 0; i < s->set->nkids; i++) {
        if (s->set->kids[i]->id == id) {
            if (idx != NULL)
                *idx = i;
            return s->set->kids[i];
        }
    }
    return NULL;
}

static tr__sup_child *find_ref(tr__sup *s, tr_ref r) {
    if (tr_ref_is_none(r))
        return NULL;
    for (size_t i = 0; i < s->set->nkids; i++)
        if (tr_ref_eq(s->set->kids[i]->ref, r))
            return s->set->kids[i];
    return NULL;
}

tr__sup_child *tr__sup_find_name(tr__sup *s, const char *name) {
    for (size_t i = 0; i < s->set->nkids; i++)
        if (strcmp(s->set->kids[i]->name, name) == 0)
            return s->set->kids[i];
    return NULL;
}

void tr__sup_remove_child(tr__sup *s, tr__sup_child *c) {
    size_t i;
    if (tr__sup_find_id(s, c->id, &i) == NULL)
        return;
    memmove(&s->set->kids[i], &s->set->kids[i + 1],
            (s->set->nkids - i - 1) * sizeof *s->set->kids);
    s->set->nkids--;
    tr__sup_child_free(c);
}

bool tr__sup_grow(tr__sup *s, size_t need) {
    if (need <= s->cap)
        return true;
    size_t ncap = s->cap < 4 ? 8 : s->cap * 2;
    tr__sup_child **k = realloc(s->set->kids, ncap * sizeof *k);
    if (k != NULL)
        s->set->kids = k;
    uint64_t *a = realloc(s->p.stop, ncap * sizeof *a);
    if (a != NULL)
        s->p.stop = a;
    uint64_t *b = realloc(s->p.start, ncap * sizeof *b);
    if (b != NULL)
        s->p.start = b;
    if (k == NULL || a == NULL || b == NULL)
        return false;
    s->cap = ncap;
    return true;
}

static bool in_list(const uint64_t *l, size_t from, size_t n, uint64_t id) {
    for (size_t i = from; i < n; i++)
        if (l[i] == id)
            return true;
    return false;
}

static int code_of(int reason) { return reason < 0 ? reason : TR_ECANCELLED; }

void tr__sup_begin_shutdown(tr_ctx *ctx, tr__sup *s, int code, const char *fmt,
                            ...) {
    if (s->stopping)
        return;
    s->stopping = true;
    s->fail_code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->fail_text, sizeof s->fail_text, fmt, ap);
    va_end(ap);
    if (code < 0)
        tr__log(TR_LOG_WARN, "supervisor %s: %s; stopping all children",
                s->set->name, s->fail_text);
    if (s->p.call != NULL)
        tr__sup_answer(ctx, s->p.call, TR_ESTATE);
    for (size_t i = 0; i < s->ncalls; i++) {
        if (s->calls[i]->op == TR_SUP_OP_WHICH_CHILDREN) {
            tr__sup_reply_which(ctx, s, s->calls[i]);
            tr__sup_call_free(s->calls[i]);
        } else {
            tr__sup_answer(ctx, s->calls[i], TR_ESTATE);
        }
    }
    s->ncalls = 0;
    s->nev = 0;
    s->due_pending = false;
    if (s->timer.id != 0) {
        (void)tr_timer_cancel(tr_ctx_runtime(ctx), s->timer);
        s->timer.id = 0;
    }
    for (size_t i = 0; i < s->set->nkids; i++) {
        tr__sup_child *c = s->set->kids[i];
        if (c->st == TR__CH_RESTARTING) {
            c->st = TR__CH_STOPPED;
            c->due_ms = 0;
        }
    }
    uint64_t waiting = s->p.waiting;
    tr__sup_plan_reset(s, TR__PL_SHUTDOWN);
    s->p.waiting = waiting;
    for (size_t i = s->set->nkids; i-- > 0;)
        if (tr__sup_alive(s->set->kids[i]))
            s->p.stop[s->p.nstop++] = s->set->kids[i]->id;
}

/* The SHUTDOWN plan is complete: end the actor. */
static void end_supervisor(tr_ctx *ctx, tr__sup *s) {
    s->done = true;
    if (s->in_cancel)
        return; /* on_cancel returns 0: ends with the cancel reason */
    if (s->fail_code < 0)
        (void)tr_fail(ctx, s->fail_code, "%s", s->fail_text);
    else if (s->cancel_reason < 0)
        (void)tr_fail(ctx, s->cancel_reason, "cancelled");
    else
        tr_stop(ctx);
}

/* ---- steps ---- */

static void stop_one(tr_ctx *ctx, tr__sup *s, tr__sup_child *c) {
    s->p.waiting = c->id;
    if (c->st == TR__CH_STOPPING)
        return;
    c->st = TR__CH_STOPPING;
    tr_runtime *rt = tr_ctx_runtime(ctx);
    int rc = c->shutdown_ms == 0
                 ? tr_kill(rt, c->ref)
                 : tr_cancel(rt, c->ref, TR_EXIT_SHUTDOWN, c->shutdown_ms);
    /* TR_ENOACTOR: it has just ended; its exit is on its way to us. */
    if (rc != 0 && rc != TR_ENOACTOR)
        (void)tr_kill(rt, c->ref);
}

static void push_event(tr_ctx *ctx, tr__sup *s, tr__sup_child *c) {
    if (s->nev == s->capev) {
        size_t ncap = s->capev ? s->capev * 2 : 8;
        tr__sup_event *ne = realloc(s->ev, ncap * sizeof *ne);
        if (ne == NULL) {
            tr__sup_begin_shutdown(
                ctx, s, TR_ENOMEM,
                "out of memory recording the exit of child '%s'", c->name);
            return;
        }
        s->ev = ne;
        s->capev = ncap;
    }
    s->ev[s->nev++] = (tr__sup_event){c->id, c->inc};
}

/* Stopped by us, or taken off a stop list: restarted with the plan's
 * group, or stopped (a temporary child's spec goes). */
static void settle(tr__sup *s, tr__sup_child *c) {
    const tr__sup_plan *p = &s->p;
    if (c->restart != TR_RESTART_TEMPORARY &&
        in_list(p->start, p->istart, p->nstart, c->id)) {
        c->st = TR__CH_RESTARTING;
        c->due_ms = 0;
    } else if (c->restart == TR_RESTART_TEMPORARY) {
        tr__sup_remove_child(s, c);
    } else {
        c->st = TR__CH_STOPPED;
    }
}

/* An exit nobody asked for. */
static void spontaneous(tr_ctx *ctx, tr__sup *s, tr__sup_child *c, int reason) {
    bool normal = reason == TR_EXIT_NORMAL || reason == TR_EXIT_SHUTDOWN;
    if (c->restart == TR_RESTART_TEMPORARY) {
        tr__sup_remove_child(s, c);
        return;
    }
    if (c->restart == TR_RESTART_TRANSIENT && normal) {
        c->st = TR__CH_STOPPED;
        return;
    }
    c->st = TR__CH_RESTARTING;
    c->due_ms = 0;
    push_event(ctx, s, c);
}

/* c has ended (or could not be spawned: reason is the spawn error). */
static void child_ended(tr_ctx *ctx, tr__sup *s, tr__sup_child *c, int reason) {
    tr__sup_plan *p = &s->p;
    int was = c->st;
    if (p->waiting == c->id)
        p->waiting = 0;
    c->ref = TR_REF_NONE;
    c->last_exit = reason;
    c->uptime_ms = was == TR__CH_RUNNING || was == TR__CH_STOPPING
                       ? tr_now_ms() - c->started_ms
                       : 0;
    if (s->stopping) {
        c->st = TR__CH_STOPPED;
        return;
    }
    switch (was) {
    case TR__CH_STOPPING:
        settle(s, c);
        return;
    case TR__CH_STARTING:
        if (p->kind == TR__PL_INIT) {
            c->st = TR__CH_STOPPED;
            tr__sup_begin_shutdown(ctx, s, code_of(reason),
                                   "child '%s' failed to start: %s", c->name,
                                   tr_exit_reason_name(reason));
            return;
        }
        if (p->kind == TR__PL_CMD && p->target == c->id) {
            p->result = code_of(reason);
            c->st = TR__CH_STOPPED;
            if (p->call->op == TR_SUP_OP_START_CHILD)
                tr__sup_remove_child(s, c);
            return;
        }
        spontaneous(ctx, s, c, reason); /* a restart that failed */
        return;
    case TR__CH_RUNNING:
        if (in_list(p->stop, p->istop, p->nstop, c->id))
            settle(s, c);
        else
            spontaneous(ctx, s, c, reason);
        return;
    default:
        return;
    }
}

/* The wire form of TR_TAG_SUP_CHILD_UP (plain data, BYTES). */
typedef struct child_up_wire {
    uint32_t magic;
    uint32_t pad;
    uint64_t ref;
    char name[TR_SUP_NAME_MAX];
} child_up_wire;

#define CHILD_UP_MAGIC 0x53555055u /* "SUPU" */

static void notify_up(tr_ctx *ctx, tr__sup *s, const tr__sup_child *c) {
    if (tr_ref_is_none(s->set->notify))
        return;
    child_up_wire w = {.magic = CHILD_UP_MAGIC, .ref = c->ref.id};
    snprintf(w.name, sizeof w.name, "%s", c->name);
    tr_msg *m = tr_msg_new_bytes(TR_TAG_SUP_CHILD_UP, &w, sizeof w);
    int rc = m != NULL ? tr_send(ctx, s->set->notify, &m) : TR_ENOMEM;
    if (rc != 0)
        tr__log(TR_LOG_WARN, "supervisor %s: child-up notice for '%s': %s",
                s->set->name, c->name, tr_strerror(rc));
}

TR_API int tr_sup_child_up_read(const tr_msg *msg, tr_ref *ref, char *name) {
    child_up_wire w;
    size_t len = 0;
    const void *d = msg != NULL && tr_msg_tag(msg) == TR_TAG_SUP_CHILD_UP &&
                            tr_msg_kind(msg) == TR_PAYLOAD_BYTES
                        ? tr_msg_data(msg, &len)
                        : NULL;
    if (d == NULL || len != sizeof w)
        return TR_EPAYLOAD;
    memcpy(&w, d, sizeof w);
    if (w.magic != CHILD_UP_MAGIC)
        return TR_EPAYLOAD;
    if (ref != NULL)
        *ref = (tr_ref){w.ref};
    if (name != NULL) {
        memcpy(name, w.name, TR_SUP_NAME_MAX);
        name[TR_SUP_NAME_MAX - 1] = 0;
    }
    return 0;
}

static void start_one(tr_ctx *ctx, tr__sup *s, tr__sup_child *c) {
    tr_ref r = TR_REF_NONE;
    c->due_ms = 0;
    int rc = c->remote[0] != 0
                 ? tr__spawn_placed(ctx, c->node[0] ? c->node : NULL,
                                    c->remote, c->blob, c->blob_len,
                                    TR__SUP_TAG_STARTED, &r)
             : c->bounded ? tr_spawn_bounded(ctx, c->wrap, c->blob, c->blob_len,
                                             &c->limit, &r)
                          : tr_spawn(ctx, c->wrap, c->blob, c->blob_len, &r);
    c->inc++;
    c->started_ms = tr_now_ms();
    c->st = TR__CH_STARTING;
    if (rc != 0) {
        tr__log(TR_LOG_WARN, "supervisor %s: spawning child '%s' failed: %s",
                s->set->name, c->name, tr_strerror(rc));
        child_ended(ctx, s, c, rc);
        return;
    }
    c->ref = r;
    if (s->p.kind == TR__PL_RESTART || s->p.kind == TR__PL_DUE)
        c->restarts++;
    s->p.waiting = c->id;
}

/* The backoff of a plan: its starts wait for the timer (a DUE plan). */
static void defer_starts(tr__sup *s) {
    tr__sup_plan *p = &s->p;
    int64_t due = tr_now_ms() + p->delay_ms;
    for (size_t i = p->istart; i < p->nstart; i++) {
        tr__sup_child *c = tr__sup_find_id(s, p->start[i], NULL);
        if (c != NULL && !tr__sup_alive(c)) {
            c->st = TR__CH_RESTARTING;
            c->due_ms = due;
        }
    }
    p->istart = p->nstart;
    p->delay_ms = 0;
}

static void finish_plan(tr_ctx *ctx, tr__sup *s) {
    tr__sup_plan *p = &s->p;
    int kind = p->kind;
    p->kind = TR__PL_NONE;
    if (kind == TR__PL_INIT) {
        s->started = true;
        if (s->confirm_start)
            (void)tr_send_tag(ctx, tr_parent(ctx), TR__SUP_TAG_STARTED);
    } else if (kind == TR__PL_CMD) {
        tr__sup_reply(ctx, p->call, p->result, p->ref, NULL, 0);
        tr__sup_call_free(p->call);
        p->call = NULL;
    } else if (kind == TR__PL_SHUTDOWN) {
        end_supervisor(ctx, s);
    }
}

static void advance(tr_ctx *ctx, tr__sup *s) {
    tr__sup_plan *p = &s->p;
    while (!s->done) {
        if (p->kind == TR__PL_NONE) {
            if (!tr__sup_next_job(ctx, s)) {
                tr__sup_arm_timer(ctx, s);
                return;
            }
            continue;
        }
        if (p->waiting != 0)
            return;
        if (p->istop < p->nstop) {
            tr__sup_child *c = tr__sup_find_id(s, p->stop[p->istop++], NULL);
            if (c != NULL && tr__sup_alive(c))
                stop_one(ctx, s, c);
            continue;
        }
        if (p->delay_ms > 0) {
            defer_starts(s);
            continue;
        }
        if (p->istart < p->nstart) {
            tr__sup_child *c = tr__sup_find_id(s, p->start[p->istart++], NULL);
            if (c != NULL && !tr__sup_alive(c))
                start_one(ctx, s, c);
            continue;
        }
        finish_plan(ctx, s);
    }
}

/* ---- the actor ---- */

static tr__sup *sup_new(tr__sup_setup *set) {
    tr__sup *s = calloc(1, sizeof *s);
    if (s == NULL)
        return NULL;
    s->set = set;
    s->cap = set->nkids;
    size_t cap = set->nkids > 0 ? set->nkids : 1;
    s->p.stop = calloc(cap, sizeof *s->p.stop);
    s->p.start = calloc(cap, sizeof *s->p.start);
    s->ring =
        set->intensity > 0 ? calloc(set->intensity, sizeof *s->ring) : NULL;
    if (s->p.stop == NULL || s->p.start == NULL ||
        (set->intensity > 0 && s->ring == NULL)) {
        free(s->p.stop);
        free(s->p.start);
        free(s->ring);
        free(s);
        return NULL;
    }
    s->rng = set->backoff_seed != 0 ? set->backoff_seed
                                    : (uint64_t)tr_now_ns() ^ (uintptr_t)s;
    return s;
}

static void sup_free(tr__sup *s) {
    tr__sup_setup_free(s->set);
    free(s->p.stop);
    free(s->p.start);
    free(s->ring);
    free(s->ev);
    free(s->calls);
    free(s);
}

static int sup_on_start(tr_ctx *ctx, void *state) {
    tr__sup_state *st = state;
    tr__sup_setup *set = st->setup;
    st->setup = NULL;
    if (set == NULL) {
        int rc = tr__sup_setup_new(st->args.config, st->args.children,
                                   st->args.nchildren, 0, &set);
        if (rc != 0)
            return tr_fail(ctx, rc, "invalid supervisor config or spec");
    }
    tr__sup *s = sup_new(set);
    if (s == NULL) {
        tr__sup_setup_free(set);
        return tr_fail(ctx, TR_ENOMEM, "out of memory");
    }
    st->sup = s;
    s->self = tr_self(ctx);
    s->confirm_start = st->confirm_start;
    tr__sup_plan_reset(s, TR__PL_INIT);
    for (size_t i = 0; i < set->nkids; i++) {
        set->kids[i]->id = ++s->next_id;
        s->p.start[s->p.nstart++] = set->kids[i]->id;
    }
    advance(ctx, s);
    return 0;
}

static void on_call(tr_ctx *ctx, tr__sup *s, tr__sup_call *call) {
    if (call->op == TR_SUP_OP_WHICH_CHILDREN && (s->started || s->stopping)) {
        tr__sup_reply_which(ctx, s, call);
        tr__sup_call_free(call);
        return;
    }
    if (s->stopping) {
        tr__sup_answer(ctx, call, TR_ESTATE);
        return;
    }
    if (s->ncalls == s->capcalls) {
        size_t ncap = s->capcalls ? s->capcalls * 2 : 8;
        tr__sup_call **nc = realloc(s->calls, ncap * sizeof *nc);
        if (nc == NULL) {
            tr__sup_answer(ctx, call, TR_ENOMEM);
            return;
        }
        s->calls = nc;
        s->capcalls = ncap;
    }
    s->calls[s->ncalls++] = call;
    advance(ctx, s);
}

static int sup_handle(tr_ctx *ctx, void *state, tr_msg *msg) {
    tr__sup *s = ((tr__sup_state *)state)->sup;
    if (s == NULL)
        return TR_UNHANDLED;
    switch (tr_msg_tag(msg)) {
    case TR__SUP_TAG_CALL: {
        void *ptr = NULL;
        if (tr_msg_kind(msg) != TR_PAYLOAD_PTR ||
            tr_msg_take_ptr(msg, &ptr) != 0)
            return TR_UNHANDLED;
        tr__sup_call *call = ptr;
        if (call->magic != TR__SUP_CALL_MAGIC) {
            tr__log(TR_LOG_WARN, "supervisor %s: malformed call dropped",
                    s->set->name);
            return TR_UNHANDLED; /* not ours: leaked rather than misfreed */
        }
        on_call(ctx, s, call);
        return 0;
    }
    case TR__SUP_TAG_STARTED: {
        tr__sup_child *c = find_ref(s, tr_msg_sender(msg));
        if (c == NULL || c->st != TR__CH_STARTING)
            return 0; /* a stale confirmation */
        c->st = TR__CH_RUNNING;
        c->started_ms = tr_now_ms();
        notify_up(ctx, s, c);
        if (s->p.waiting == c->id) {
            s->p.waiting = 0;
            s->p.ref = c->ref;
        }
        advance(ctx, s);
        return 0;
    }
    case TR__SUP_TAG_TICK:
        if (tr_msg_u64(msg) == s->timer_seq) {
            s->timer.id = 0;
            s->timer_due = 0;
        }
        s->due_pending = true;
        advance(ctx, s);
        return 0;
    default:
        return TR_UNHANDLED;
    }
}

static void sup_on_child_exit(tr_ctx *ctx, void *state, const tr_exit *x) {
    tr__sup *s = ((tr__sup_state *)state)->sup;
    if (s == NULL)
        return;
    tr__sup_child *c = find_ref(s, x->who);
    if (c == NULL)
        return;
    child_ended(ctx, s, c, x->reason);
    advance(ctx, s);
}

static int sup_on_cancel(tr_ctx *ctx, void *state, int reason) {
    tr__sup *s = ((tr__sup_state *)state)->sup;
    if (s == NULL)
        return 0;
    if (!s->stopping) {
        s->cancel_reason = reason;
        tr__sup_begin_shutdown(ctx, s, 0, "cancelled: %s",
                               tr_exit_reason_name(reason));
        s->in_cancel = true;
        advance(ctx, s);
        s->in_cancel = false;
    }
    return s->done ? 0 : TR_DRAIN;
}

static void sup_on_stop(tr_ctx *ctx, void *state, int reason) {
    (void)reason;
    tr__sup_state *st = state;
    tr__sup_setup_free(st->setup); /* never started */
    st->setup = NULL;
    tr__sup *s = st->sup;
    if (s == NULL)
        return;
    st->sup = NULL;
    /* Callers still waiting learn that the supervisor is gone. */
    if (s->p.call != NULL)
        tr__sup_answer(ctx, s->p.call, TR_ENOACTOR);
    for (size_t i = 0; i < s->ncalls; i++)
        tr__sup_answer(ctx, s->calls[i], TR_ENOACTOR);
    if (s->timer.id != 0)
        (void)tr_timer_cancel(tr_ctx_runtime(ctx), s->timer);
    sup_free(s);
}

TR_API const tr_behavior tr_sup_behavior = {
    .name = "supervisor",
    .handle = sup_handle,
    .on_start = sup_on_start,
    .on_stop = sup_on_stop,
    .state_size = sizeof(tr__sup_state),
    .on_cancel = sup_on_cancel,
    .on_child_exit = sup_on_child_exit,
};
