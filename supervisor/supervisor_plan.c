/* Design notes
 * ------------
 * Deciding the supervisor's next plan (supervisor.c executes plans): the
 * restart policy -- which children a restart-worthy exit stops and starts
 * (the strategy), whether it is allowed (the intensity window), when it
 * happens (the backoff and its timer) -- and serving a queued call.
 *
 * Intensity is a ring of the last `intensity` restart times: a restart is
 * allowed when fewer than `intensity` of them lie within period_ms of now
 * (OTP counts the restart being made, and fails when the count exceeds
 * the maximum; that is the same test). One restart is counted per event,
 * however many children the strategy restarts.
 *
 * Backoff needs one timer at most: it is kept armed for the earliest
 * due_ms among RESTARTING children; a tick carries the sequence number of
 * the timer it belongs to, so a tick that raced with a cancel is harmless
 * (a due check that finds nothing due). */
#include <stdlib.h>
#include <string.h>

#include "runtime/log.h"
#include "supervisor/supervisor_int.h"

void tr__sup_plan_reset(tr__sup *s, int kind) {
    tr__sup_plan *p = &s->p;
    p->kind = kind;
    p->nstop = p->istop = p->nstart = p->istart = 0;
    p->waiting = 0;
    p->delay_ms = 0;
    p->call = NULL;
    p->target = 0;
    p->result = 0;
    p->ref = TR_REF_NONE;
}

void tr__sup_reply_which(tr_ctx *ctx, tr__sup *s, const tr__sup_call *call) {
    size_t n = s->set->nkids;
    tr_sup_child_info *list = n > 0 ? calloc(n, sizeof *list) : NULL;
    if (n > 0 && list == NULL) {
        tr__sup_reply(ctx, call, TR_ENOMEM, TR_REF_NONE, NULL, 0);
        return;
    }
    tr_runtime *rt = tr_ctx_runtime(ctx);
    for (size_t i = 0; i < n; i++) {
        const tr__sup_child *c = s->set->kids[i];
        memcpy(list[i].name, c->name, sizeof list[i].name);
        list[i].ref = c->ref;
        list[i].state = tr__sup_alive(c)          ? TR_SUP_CHILD_RUNNING
                        : c->st == TR__CH_STOPPED ? TR_SUP_CHILD_STOPPED
                                                  : TR_SUP_CHILD_RESTARTING;
        list[i].restart = (int32_t)c->restart;
        list[i].restarts = c->restarts;
        list[i].last_exit = c->last_exit;
        list[i].mailbox_depth =
            tr__sup_alive(c) ? tr_actor_mailbox_depth(rt, c->ref) : -1;
    }
    tr__sup_reply(ctx, call, 0, TR_REF_NONE, list, n);
    free(list);
}

void tr__sup_answer(tr_ctx *ctx, tr__sup_call *call, int result) {
    tr__sup_reply(ctx, call, result, TR_REF_NONE, NULL, 0);
    tr__sup_call_free(call);
}

static bool intensity_ok(tr__sup *s) {
    uint32_t max = s->set->intensity;
    if (max == 0)
        return false;
    int64_t now = tr_now_ms();
    while (s->ring_count > 0 &&
           now - s->ring[s->ring_head] >= s->set->period_ms) {
        s->ring_head = (s->ring_head + 1) % max;
        s->ring_count--;
    }
    if (s->ring_count >= max)
        return false;
    s->ring[(s->ring_head + s->ring_count) % max] = now;
    s->ring_count++;
    return true;
}

static uint64_t next_random(tr__sup *s) {
    /* splitmix64: small, seedable, good enough for jitter. */
    uint64_t z = (s->rng += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

static int64_t backoff_delay(tr__sup *s, tr__sup_child *c) {
    const tr__sup_setup *set = s->set;
    if (set->backoff_min_ms <= 0)
        return 0;
    if (c->uptime_ms >= set->period_ms)
        c->backoff_step = 0; /* it ran long enough: not crash-looping */
    int64_t d = set->backoff_min_ms;
    for (uint32_t i = 0; i < c->backoff_step && d < set->backoff_max_ms; i++)
        d *= 2;
    if (d > set->backoff_max_ms)
        d = set->backoff_max_ms;
    c->backoff_step++;
    if (set->backoff_jitter_pct > 0)
        d -= (int64_t)(next_random(s) %
                       (uint64_t)(d * set->backoff_jitter_pct / 100 + 1));
    return d;
}

/* A restart-worthy exit of c, now that nothing else is in progress. */
static void plan_restart(tr_ctx *ctx, tr__sup *s, tr__sup_child *c) {
    if (!intensity_ok(s)) {
        tr__sup_begin_shutdown(
            ctx, s, TR_ESTATE,
            "restart intensity exceeded: more than %u restarts "
            "in %lld ms (child '%s' ended: %s)",
            s->set->intensity, (long long)s->set->period_ms, c->name,
            tr_exit_reason_name(c->last_exit));
        return;
    }
    int64_t delay = backoff_delay(s, c);
    tr__sup_plan_reset(s, TR__PL_RESTART);
    tr__sup_plan *p = &s->p;
    p->delay_ms = delay;
    if (s->set->strategy == TR_SUP_ONE_FOR_ONE) {
        p->start[p->nstart++] = c->id;
    } else {
        size_t from = 0;
        if (s->set->strategy == TR_SUP_REST_FOR_ONE)
            (void)tr__sup_find_id(s, c->id, &from);
        tr__sup_child **kids = s->set->kids;
        for (size_t i = s->set->nkids; i-- > from;)
            if (kids[i] != c && tr__sup_alive(kids[i]))
                p->stop[p->nstop++] = kids[i]->id;
        for (size_t i = from; i < s->set->nkids; i++) {
            tr__sup_child *k = kids[i];
            if (k == c || (k->restart != TR_RESTART_TEMPORARY &&
                           (tr__sup_alive(k) || k->st == TR__CH_RESTARTING)))
                p->start[p->nstart++] = k->id;
        }
    }
    tr__log(TR_LOG_INFO,
            "supervisor %s: child '%s' ended (%s); restarting %zu "
            "child(ren) in %lld ms",
            s->set->name, c->name, tr_exit_reason_name(c->last_exit), p->nstart,
            (long long)delay);
}

/* Children whose backoff has ended. */
static bool plan_due(tr__sup *s) {
    int64_t now = tr_now_ms();
    tr__sup_plan_reset(s, TR__PL_DUE);
    for (size_t i = 0; i < s->set->nkids; i++) {
        tr__sup_child *c = s->set->kids[i];
        if (c->st == TR__CH_RESTARTING && c->due_ms > 0 && c->due_ms <= now)
            s->p.start[s->p.nstart++] = c->id;
    }
    if (s->p.nstart > 0)
        return true;
    s->p.kind = TR__PL_NONE;
    return false;
}

/* A queued call, now that nothing else is in progress. Returns true if it
 * became the plan (answered when the plan completes). */
static bool serve_call(tr_ctx *ctx, tr__sup *s, tr__sup_call *call) {
    tr__sup_child *c = NULL;
    if (call->op != TR_SUP_OP_START_CHILD &&
        call->op != TR_SUP_OP_WHICH_CHILDREN &&
        (c = tr__sup_find_name(s, call->name)) == NULL) {
        tr__sup_answer(ctx, call, TR_ENOTFOUND);
        return false;
    }
    switch (call->op) {
    case TR_SUP_OP_START_CHILD:
        if (tr__sup_find_name(s, call->child->name) != NULL) {
            tr__sup_answer(ctx, call, TR_EINVAL);
            return false;
        }
        if (!tr__sup_grow(s, s->set->nkids + 1)) {
            tr__sup_answer(ctx, call, TR_ENOMEM);
            return false;
        }
        c = call->child;
        call->child = NULL;
        c->id = ++s->next_id;
        s->set->kids[s->set->nkids++] = c;
        break;
    case TR_SUP_OP_TERMINATE_CHILD:
        if (!tr__sup_alive(c)) {
            c->st = TR__CH_STOPPED; /* a pending restart is dropped */
            c->due_ms = 0;
            tr__sup_answer(ctx, call, 0);
            return false;
        }
        break;
    case TR_SUP_OP_RESTART_CHILD:
        if (c->st != TR__CH_STOPPED) {
            tr__sup_answer(ctx, call, TR_ESTATE);
            return false;
        }
        break;
    case TR_SUP_OP_DELETE_CHILD:
        if (c->st != TR__CH_STOPPED) {
            tr__sup_answer(ctx, call, TR_ESTATE);
            return false;
        }
        tr__sup_remove_child(s, c);
        tr__sup_answer(ctx, call, 0);
        return false;
    default: /* which_children (queued during INIT) */
        tr__sup_reply_which(ctx, s, call);
        tr__sup_call_free(call);
        return false;
    }
    tr__sup_plan_reset(s, TR__PL_CMD);
    s->p.call = call;
    s->p.target = c->id;
    if (call->op == TR_SUP_OP_TERMINATE_CHILD)
        s->p.stop[s->p.nstop++] = c->id;
    else
        s->p.start[s->p.nstart++] = c->id;
    return true;
}

/* Picks the next plan when idle. */
bool tr__sup_next_job(tr_ctx *ctx, tr__sup *s) {
    if (s->stopping)
        return false;
    while (s->nev > 0) {
        tr__sup_event ev = s->ev[0];
        memmove(&s->ev[0], &s->ev[1], --s->nev * sizeof *s->ev);
        tr__sup_child *c = tr__sup_find_id(s, ev.id, NULL);
        if (c == NULL || c->st != TR__CH_RESTARTING || c->due_ms != 0 ||
            c->inc != ev.inc)
            continue; /* handled meanwhile (group restart, terminate) */
        plan_restart(ctx, s, c);
        return true;
    }
    if (s->due_pending) {
        s->due_pending = false;
        if (plan_due(s))
            return true;
    }
    while (s->ncalls > 0) {
        tr__sup_call *call = s->calls[0];
        memmove(&s->calls[0], &s->calls[1], --s->ncalls * sizeof *s->calls);
        if (serve_call(ctx, s, call))
            return true;
    }
    return false;
}

/* Keeps one timer armed for the earliest backoff. */
void tr__sup_arm_timer(tr_ctx *ctx, tr__sup *s) {
    tr_runtime *rt = tr_ctx_runtime(ctx);
    int64_t earliest = 0;
    for (size_t i = 0; i < s->set->nkids; i++) {
        const tr__sup_child *c = s->set->kids[i];
        if (c->st == TR__CH_RESTARTING && c->due_ms > 0 &&
            (earliest == 0 || c->due_ms < earliest))
            earliest = c->due_ms;
    }
    if (s->timer.id != 0 && earliest != 0 && s->timer_due <= earliest)
        return;
    if (s->timer.id != 0) {
        (void)tr_timer_cancel(rt, s->timer); /* a tick in flight is stale */
        s->timer.id = 0;
    }
    if (earliest == 0)
        return;
    int64_t delay = earliest - tr_now_ms();
    tr_msg *m = tr_msg_new_u64(TR__SUP_TAG_TICK, ++s->timer_seq);
    if (m == NULL ||
        tr_send_after(rt, s->self, delay > 0 ? delay : 0, &m, &s->timer) != 0) {
        if (m != NULL)
            tr_msg_destroy(&m);
        s->timer.id = 0;
        tr__log(TR_LOG_WARN,
                "supervisor %s: backoff timer failed; "
                "restarting without delay",
                s->set->name);
        for (size_t i = 0; i < s->set->nkids; i++)
            if (s->set->kids[i]->st == TR__CH_RESTARTING &&
                s->set->kids[i]->due_ms > 0)
                s->set->kids[i]->due_ms = 1;
        s->due_pending = true;
        (void)tr_send_u64(ctx, s->self, TR__SUP_TAG_TICK, 0);
        return;
    }
    s->timer_due = earliest;
}
