/* Design notes
 * ------------
 * A cancel scope is an ordinary actor (scope_behavior) with one child, the
 * body, built only from the public lifecycle and timer APIs. It does not
 * stop its subtree itself: it cancels the body (tr_cancel, the body's own
 * grace) and the body's stop sequence stops whatever the body started,
 * youngest first, each actor within its grace. The scope only waits for
 * the body's exit (on_child_exit), so the report always comes after every
 * cleanup under it has run, and it carries the body's real exit reason.
 *
 * phase only moves forward:
 *   RUNNING -> CANCELLING  own cancel: the deadline timer fired
 *                          (TAG_DEADLINE) or tr_scope_cancel (TAG_CANCEL);
 *                          `pending` holds the outcome to report
 *   RUNNING/CANCELLING -> CANCELLED  cancelled from outside (on_cancel):
 *                          the scope drains (TR_DRAIN) to hear the body end
 *   any -> DONE            the report has been sent; the scope is ending
 * The report is sent exactly once: when the body ends, or from on_stop if
 * the drain was cut short (second cancel, kill, runtime shutdown).
 *
 * Ending "with a reason" uses only public calls: tr_stop (normal), tr_fail
 * (a failure), and for cancelled/timeout a tr_cancel of itself, which,
 * with no child left, ends the actor at once with that reason.
 *
 * The deadline is one tr_send_at timer; it is cancelled as soon as the
 * scope stops running (tr_timer_cancel's guarantee: no delivery after a
 * successful cancel, and a delivery that raced in finds phase != RUNNING). */
#include <stdlib.h>
#include <string.h>

#include "troupe/error.h"
#include "troupe/lifecycle.h"
#include "troupe/scope.h"
#include "troupe/timer.h"

/* Private tags, in the scope range. */
#define TAG_DEADLINE 0xFFFF0401u
#define TAG_CANCEL 0xFFFF0402u

#define REPORT_MAGIC 0x73634450u /* "scDP" */

enum { S_RUNNING, S_CANCELLING, S_CANCELLED, S_DONE };

typedef struct scope_init {
    tr_scope_config cfg;
    const tr_behavior *body;
    void *init;
    size_t init_len;
} scope_init;

typedef struct scope {
    scope_init *init; /* first: the spawn copies the pointer here */
    tr_ref owner;
    tr_ref body;
    int64_t deadline_ms;
    tr_timer_id timer;
    tr_scope_kind kind;
    int phase;
    tr_scope_outcome pending; /* CANCELLING: what the body's end means */
    int cancel_reason;        /* CANCELLED: what we were cancelled with */
    tr_msg *result;
} scope;

typedef struct scope_report {
    uint32_t magic;
    tr_scope_outcome outcome;
    int body_reason;
    int scope_reason;
    tr_ref scope;
    int64_t deadline_ms;
    char *text;
    tr_msg *result;
} scope_report;

static void free_msg(void *p) {
    tr_msg *m = p;
    if (m != NULL)
        (void)tr_msg_destroy(&m);
}

static void report_free(void *p) {
    scope_report *r = p;
    if (r == NULL)
        return;
    free(r->text);
    free_msg(r->result);
    free(r);
}

static void scope_init_free(scope_init *si) {
    if (si == NULL)
        return;
    free(si->init);
    free(si);
}

/* As family.c's stop sequence: what the body is cancelled with when the
 * scope is stopped with `reason`. */
static int child_reason(int reason) {
    return reason == TR_EXIT_CANCELLED || reason == TR_EXIT_TIMEOUT ||
                   reason == TR_EXIT_SHUTDOWN
               ? reason
               : TR_EXIT_CANCELLED;
}

static void disarm(tr_ctx *ctx, scope *s) {
    if (s->timer.id != 0) {
        (void)tr_timer_cancel(tr_ctx_runtime(ctx), s->timer);
        s->timer.id = 0;
    }
}

/* Sends the one report; the scope is DONE from here on. */
static void report(tr_ctx *ctx, scope *s, tr_scope_outcome outcome,
                   int body_reason, int scope_reason, const char *text) {
    s->phase = S_DONE;
    disarm(ctx, s);
    if (tr_ref_is_none(s->owner))
        return;
    scope_report *r = calloc(1, sizeof *r);
    if (r == NULL)
        return;
    *r = (scope_report){.magic = REPORT_MAGIC,
                        .outcome = outcome,
                        .body_reason = body_reason,
                        .scope_reason = scope_reason,
                        .scope = tr_self(ctx),
                        .deadline_ms = s->deadline_ms,
                        .result = s->result};
    if (text != NULL && text[0] != '\0')
        r->text = strdup(text);
    s->result = NULL;
    tr_msg *m = tr_msg_new_ptr(TR_TAG_SCOPE_DONE, r, sizeof *r, report_free);
    if (m == NULL) {
        report_free(r);
        return;
    }
    if (tr_send(ctx, s->owner, &m) != 0)
        (void)tr_msg_destroy(&m); /* the owner is gone */
}

/* Ends the scope with `reason` after the current callback. */
static void end_with(tr_ctx *ctx, int reason, const char *text) {
    if (reason == TR_EXIT_NORMAL)
        tr_stop(ctx);
    else if (reason < 0)
        (void)tr_fail(ctx, reason, "%s", text != NULL ? text : "");
    else /* no child is left: a cancel of ourselves ends us at once */
        (void)tr_cancel(tr_ctx_runtime(ctx), tr_self(ctx), reason, 0);
}

/* The deadline or an explicit cancel: cancel the body, remember why. */
static void own_cancel(tr_ctx *ctx, scope *s, tr_scope_outcome outcome,
                       int reason) {
    if (s->phase != S_RUNNING)
        return;
    s->phase = S_CANCELLING;
    s->pending = outcome;
    disarm(ctx, s);
    /* TR_ENOACTOR: the body has just ended; its exit is on the way. */
    (void)tr_cancel(tr_ctx_runtime(ctx), s->body, reason, -1);
}

static void deadline_passed(tr_ctx *ctx, scope *s) {
    if (s->kind == TR_SCOPE_FAIL)
        own_cancel(ctx, s, TR_SCOPE_TIMED_OUT, TR_EXIT_TIMEOUT);
    else
        own_cancel(ctx, s, TR_SCOPE_CANCELLED_CAUGHT, TR_EXIT_CANCELLED);
}

static int scope_on_start(tr_ctx *ctx, void *state) {
    scope *s = state;
    scope_init *si = s->init;
    s->init = NULL;
    s->owner = si->cfg.owner;
    s->kind = si->cfg.kind;
    s->deadline_ms = si->cfg.deadline_ms;
    s->cancel_reason = TR_EXIT_CANCELLED;
    int rc = tr_spawn(ctx, si->body, si->init, si->init_len, &s->body);
    scope_init_free(si);
    if (rc != 0) {
        report(ctx, s, TR_SCOPE_FAILED, rc, rc, "spawn failed");
        return tr_fail(ctx, rc, "scope: body spawn failed");
    }
    if (s->deadline_ms < 0)
        return 0;
    tr_msg *m = tr_msg_new(TAG_DEADLINE);
    rc = m != NULL ? tr_send_at(tr_ctx_runtime(ctx), tr_self(ctx),
                                s->deadline_ms, &m, &s->timer)
                   : TR_ENOMEM;
    if (rc != 0) {
        /* No timer: honour the deadline now rather than never. */
        if (m != NULL)
            (void)tr_msg_destroy(&m);
        deadline_passed(ctx, s);
    }
    return 0;
}

static int scope_handle(tr_ctx *ctx, void *state, tr_msg *msg) {
    scope *s = state;
    switch (tr_msg_tag(msg)) {
    case TAG_DEADLINE:
        s->timer.id = 0; /* fired */
        deadline_passed(ctx, s);
        return 0;
    case TAG_CANCEL:
        own_cancel(ctx, s, TR_SCOPE_CANCELLED_CAUGHT, TR_EXIT_CANCELLED);
        return 0;
    case TR_TAG_TASK_RESULT: {
        tr_msg *res = NULL;
        if (s->phase != S_DONE && tr_ref_eq(tr_msg_sender(msg), s->body) &&
            tr_task_result_take(msg, &res) == 0) {
            free_msg(s->result);
            s->result = res;
        }
        return 0;
    }
    default:
        return TR_UNHANDLED; /* counted, and logged in debug mode */
    }
}

static void scope_on_child_exit(tr_ctx *ctx, void *state, const tr_exit *x) {
    scope *s = state;
    if (!tr_ref_eq(x->who, s->body) || s->phase == S_DONE)
        return;
    tr_scope_outcome outcome;
    int scope_reason;
    if (x->reason < 0) {
        /* A failure wins over any cancellation in progress (an error in
         * cleanup is not swallowed). */
        outcome = TR_SCOPE_FAILED;
        scope_reason = x->reason;
    } else if (s->phase == S_CANCELLING) {
        outcome = s->pending;
        scope_reason =
            outcome == TR_SCOPE_TIMED_OUT ? TR_EXIT_TIMEOUT : TR_EXIT_NORMAL;
    } else if (s->phase == S_CANCELLED) {
        outcome = TR_SCOPE_CANCELLED;
        scope_reason = s->cancel_reason;
    } else if (x->reason == TR_EXIT_NORMAL) {
        outcome = TR_SCOPE_COMPLETED;
        scope_reason = TR_EXIT_NORMAL;
    } else {
        /* Stopped by someone else (tr_cancel / tr_kill of the body). */
        outcome = TR_SCOPE_CANCELLED;
        scope_reason = TR_EXIT_CANCELLED;
    }
    report(ctx, s, outcome, x->reason, scope_reason, x->text);
    end_with(ctx, scope_reason, x->text);
}

static int scope_on_cancel(tr_ctx *ctx, void *state, int reason) {
    scope *s = state;
    if (s->phase == S_DONE)
        return 0; /* our own end (end_with) */
    disarm(ctx, s);
    /* A body already cancelling by our own deadline is not cancelled
     * again: a second cancel would cut its drain short. */
    if (s->phase == S_RUNNING)
        (void)tr_cancel(tr_ctx_runtime(ctx), s->body, child_reason(reason), -1);
    s->phase = S_CANCELLED;
    s->cancel_reason = reason;
    return TR_DRAIN; /* on_child_exit reports and ends us */
}

static void scope_on_stop(tr_ctx *ctx, void *state, int reason) {
    scope *s = state;
    if (s->init != NULL) { /* never started (runtime shutdown) */
        scope_init_free(s->init);
        s->init = NULL;
    }
    if (s->phase != S_DONE) {
        /* The drain was cut short: the lifecycle stopped the body with
         * this reason (or killed it with us). */
        int why =
            reason == TR_EXIT_KILLED ? TR_EXIT_KILLED : child_reason(reason);
        report(ctx, s, reason < 0 ? TR_SCOPE_FAILED : TR_SCOPE_CANCELLED, why,
               reason, NULL);
    }
    disarm(ctx, s);
    free_msg(s->result);
    s->result = NULL;
}

static const tr_behavior scope_behavior = {
    .name = "cancel-scope",
    .handle = scope_handle,
    .on_start = scope_on_start,
    .on_stop = scope_on_stop,
    .on_cancel = scope_on_cancel,
    .on_child_exit = scope_on_child_exit,
    .state_size = sizeof(scope),
    .grace_ms = TR_SCOPE_GRACE_MS,
};

static int scope_prepare(const tr_scope_config *cfg, const tr_behavior *body,
                         const void *init, size_t init_len, scope_init **out) {
    if (cfg == NULL || body == NULL || body->handle == NULL ||
        (cfg->kind != TR_SCOPE_MOVE_ON && cfg->kind != TR_SCOPE_FAIL) ||
        cfg->deadline_ms < -1 || (init == NULL && init_len > 0) ||
        init_len > body->state_size)
        return TR_EINVAL;
    scope_init *si = calloc(1, sizeof *si);
    if (si == NULL)
        return TR_ENOMEM;
    si->cfg = *cfg;
    if (si->cfg.deadline_ms > TR_MS_FOREVER)
        si->cfg.deadline_ms = -1; /* "never", kept from overflowing */
    si->body = body;
    if (init_len > 0) {
        si->init = malloc(init_len);
        if (si->init == NULL) {
            free(si);
            return TR_ENOMEM;
        }
        memcpy(si->init, init, init_len);
        si->init_len = init_len;
    }
    *out = si;
    return 0;
}

TR_API int tr_scope_start(tr_ctx *ctx, const tr_scope_config *cfg,
                          const tr_behavior *body, const void *init,
                          size_t init_len, tr_ref *out) {
    if (ctx == NULL)
        return TR_EINVAL;
    scope_init *si = NULL;
    int rc = scope_prepare(cfg, body, init, init_len, &si);
    if (rc != 0)
        return rc;
    if (tr_ref_is_none(si->cfg.owner))
        si->cfg.owner = tr_self(ctx);
    rc = tr_spawn(ctx, &scope_behavior, &si, sizeof si, out);
    if (rc != 0)
        scope_init_free(si);
    return rc;
}

TR_API int tr_runtime_scope_start(tr_runtime *rt, const tr_scope_config *cfg,
                                  const tr_behavior *body, const void *init,
                                  size_t init_len, tr_ref *out) {
    if (rt == NULL)
        return TR_EINVAL;
    scope_init *si = NULL;
    int rc = scope_prepare(cfg, body, init, init_len, &si);
    if (rc != 0)
        return rc;
    rc = tr_runtime_spawn(rt, &scope_behavior, &si, sizeof si, out);
    if (rc != 0)
        scope_init_free(si);
    return rc;
}

TR_API int tr_scope_cancel(tr_runtime *rt, tr_ref scope_ref) {
    if (rt == NULL)
        return TR_EINVAL;
    return tr_runtime_send_u64(rt, scope_ref, TAG_CANCEL, 0);
}

static scope_report *report_in(const tr_msg *m) {
    if (m == NULL || tr_msg_tag(m) != TR_TAG_SCOPE_DONE ||
        tr_msg_kind(m) != TR_PAYLOAD_PTR)
        return NULL;
    size_t len = 0;
    scope_report *r = (scope_report *)tr_msg_data(m, &len);
    if (r == NULL || len != sizeof *r || r->magic != REPORT_MAGIC)
        return NULL;
    return r;
}

TR_API int tr_scope_done_info(const tr_msg *done, tr_scope_info *out) {
    const scope_report *r = report_in(done);
    if (r == NULL)
        return TR_EPAYLOAD;
    if (out == NULL)
        return TR_EINVAL;
    out->scope = r->scope;
    out->outcome = r->outcome;
    out->body_reason = r->body_reason;
    out->scope_reason = r->scope_reason;
    out->text = r->text != NULL ? r->text : "";
    out->result = r->result;
    out->deadline_ms = r->deadline_ms;
    return 0;
}

TR_API int tr_scope_done_take_result(tr_msg *done, tr_msg **out) {
    scope_report *r = report_in(done);
    if (r == NULL)
        return TR_EPAYLOAD;
    if (out == NULL)
        return TR_EINVAL;
    *out = r->result;
    r->result = NULL;
    return 0;
}

TR_API const char *tr_scope_outcome_name(tr_scope_outcome outcome) {
    switch (outcome) {
    case TR_SCOPE_COMPLETED:
        return "completed";
    case TR_SCOPE_FAILED:
        return "failed";
    case TR_SCOPE_CANCELLED_CAUGHT:
        return "cancelled_caught";
    case TR_SCOPE_TIMED_OUT:
        return "timed_out";
    case TR_SCOPE_CANCELLED:
        return "cancelled";
    default:
        return "unknown";
    }
}
