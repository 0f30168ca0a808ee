/* Design notes
 * ------------
 * Child specs and the child wrapper.
 *
 * A spec is validated and copied once (name, init bytes) into a
 * tr__sup_child, which the supervisor keeps until the spec is deleted: it
 * is all a restart needs (a restart keeps nothing else).
 *
 * Ordered start needs to know when a child's on_start has run, and
 * lifecycle.h has no such notice. So a supervised child runs under a
 * wrapper behaviour: its state is [tr__sup_hdr | padding | user state],
 * every hook forwards to the user's behaviour with the user's part of the
 * state, and on_start, after the user's on_start returned 0, sends
 * TR__SUP_TAG_STARTED to the parent. The user sees exactly its own
 * behaviour contract (same state contents, tr_self, tr_parent, hooks).
 *
 * One wrapper behaviour per user behaviour, interned in a process-wide
 * list that is never freed: a child's behaviour must outlive every trace of
 * the child in the runtime (a START still queued at runtime shutdown is
 * cleaned up after its parent's on_stop), and a few dozen bytes per
 * behaviour type are cheaper than proving when the last trace is gone. The
 * list is only touched when a spec is created, under a mutex. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "supervisor/supervisor_int.h"

/* ---- the wrapper ---- */

static void *user_state(void *state) {
    const tr__sup_hdr *h = state;
    return h->user->state_size > 0 ? (char *)state + TR__SUP_HDR : NULL;
}

static int wrap_handle(tr_ctx *ctx, void *state, tr_msg *msg) {
    const tr__sup_hdr *h = state;
    return h->user->handle(ctx, user_state(state), msg);
}

static int wrap_on_start(tr_ctx *ctx, void *state) {
    const tr__sup_hdr *h = state;
    void *us = user_state(state);
    bool nested = h->user == &tr_sup_behavior;
    if (nested) /* it confirms itself once its own children started */
        ((tr__sup_state *)us)->confirm_start = true;
    int rc = h->user->on_start != NULL ? h->user->on_start(ctx, us) : 0;
    if (rc == 0 && !nested)
        (void)tr_send_tag(ctx, tr_parent(ctx), TR__SUP_TAG_STARTED);
    return rc;
}

static void wrap_on_stop(tr_ctx *ctx, void *state, int reason) {
    const tr__sup_hdr *h = state;
    h->user->on_stop(ctx, user_state(state), reason);
}

static int wrap_on_cancel(tr_ctx *ctx, void *state, int reason) {
    const tr__sup_hdr *h = state;
    return h->user->on_cancel(ctx, user_state(state), reason);
}

static void wrap_on_child_exit(tr_ctx *ctx, void *state, const tr_exit *x) {
    const tr__sup_hdr *h = state;
    h->user->on_child_exit(ctx, user_state(state), x);
}

typedef struct wrap_entry {
    struct wrap_entry *next;
    const tr_behavior *user;
    tr_behavior wrap;
} wrap_entry;

static pthread_mutex_t wrap_lock = PTHREAD_MUTEX_INITIALIZER;
static wrap_entry *wrap_list;

static const tr_behavior *wrap_of(const tr_behavior *user) {
    pthread_mutex_lock(&wrap_lock);
    wrap_entry *e = wrap_list;
    while (e != NULL && e->user != user)
        e = e->next;
    if (e == NULL && (e = calloc(1, sizeof *e)) != NULL) {
        e->user = user;
        e->wrap = (tr_behavior){
            .name = user->name,
            .handle = wrap_handle,
            .on_start = wrap_on_start,
            .on_stop = user->on_stop != NULL ? wrap_on_stop : NULL,
            .state_size = TR__SUP_HDR + user->state_size,
            .on_cancel = user->on_cancel != NULL ? wrap_on_cancel : NULL,
            .on_child_exit =
                user->on_child_exit != NULL ? wrap_on_child_exit : NULL,
            .grace_ms = user->grace_ms,
        };
        e->next = wrap_list;
        wrap_list = e;
    }
    pthread_mutex_unlock(&wrap_lock);
    return e != NULL ? &e->wrap : NULL;
}

/* ---- validation ---- */

/* Nested supervisors are validated down to this depth when their parent's
 * specs are; deeper ones when they start. */
#define CHECK_DEPTH 8

static bool name_ok(const char *name) {
    if (name == NULL)
        return false;
    size_t n = strnlen(name, TR_SUP_NAME_MAX);
    return n > 0 && n < TR_SUP_NAME_MAX;
}

int tr__sup_check_config(const tr_sup_config *cfg) {
    if (cfg == NULL)
        return TR_EINVAL;
    if ((unsigned)cfg->strategy > TR_SUP_REST_FOR_ONE ||
        cfg->intensity > TR_SUP_INTENSITY_MAX || cfg->period_ms < 0 ||
        cfg->period_ms > TR_SUP_TIME_MAX_MS || cfg->backoff_min_ms < 0 ||
        cfg->backoff_min_ms > TR_SUP_TIME_MAX_MS ||
        cfg->backoff_jitter_pct > 100)
        return TR_EINVAL;
    if (cfg->backoff_min_ms > 0 && (cfg->backoff_max_ms < cfg->backoff_min_ms ||
                                    cfg->backoff_max_ms > TR_SUP_TIME_MAX_MS))
        return TR_EINVAL;
    return 0;
}

static int check_specs(const tr_sup_spec *children, size_t n, int depth) {
    if (n > 0 && children == NULL)
        return TR_EINVAL;
    for (size_t i = 0; i < n; i++) {
        int rc = tr__sup_check_spec(&children[i], depth);
        if (rc != 0)
            return rc;
        for (size_t j = 0; j < i; j++)
            if (strcmp(children[i].name, children[j].name) == 0)
                return TR_EINVAL;
    }
    return 0;
}

static bool place_ok(const char *s) {
    return s != NULL && s[0] != 0 && strnlen(s, 64) < 64;
}

int tr__sup_check_spec(const tr_sup_spec *spec, int depth) {
    if (spec != NULL && spec->remote != NULL) /* placed in another process */
        return name_ok(spec->name) && place_ok(spec->remote) &&
                       (spec->node == NULL || place_ok(spec->node)) &&
                       (spec->init != NULL || spec->init_len == 0) &&
                       spec->init_len <= TR_MSG_MAX_BYTES / 2 &&
                       (unsigned)spec->restart <= TR_RESTART_TEMPORARY &&
                       spec->shutdown_ms >= -1 &&
                       spec->shutdown_ms <= TR_SUP_TIME_MAX_MS
                   ? 0
                   : TR_EINVAL;
    if (spec == NULL || !name_ok(spec->name) || spec->behavior == NULL ||
        spec->behavior->handle == NULL ||
        (spec->init == NULL && spec->init_len > 0) ||
        spec->init_len > spec->behavior->state_size ||
        (unsigned)spec->restart > TR_RESTART_TEMPORARY ||
        spec->shutdown_ms < -1 || spec->shutdown_ms > TR_SUP_TIME_MAX_MS ||
        (spec->mailbox != NULL &&
         (spec->mailbox->max_msgs == 0 ||
          (unsigned)spec->mailbox->policy > TR_OVERFLOW_REJECT)))
        return TR_EINVAL;
    if (spec->behavior != &tr_sup_behavior || depth >= CHECK_DEPTH)
        return 0;
    /* A nested supervisor: its args are read again at every start. */
    if (spec->init_len != sizeof(tr_sup_args))
        return TR_EINVAL;
    tr_sup_args a;
    memcpy(&a, spec->init, sizeof a);
    int rc = tr__sup_check_config(a.config);
    return rc != 0 ? rc : check_specs(a.children, a.nchildren, depth + 1);
}

/* ---- copies ---- */

int tr__sup_child_new(const tr_sup_spec *spec, tr__sup_child **out) {
    int rc = tr__sup_check_spec(spec, CHECK_DEPTH);
    if (rc != 0)
        return rc;
    tr__sup_child *c = calloc(1, sizeof *c);
    if (c == NULL)
        return TR_ENOMEM;
    if (spec->remote != NULL) {
        c->blob_len = spec->init_len;
        c->blob = malloc(spec->init_len > 0 ? spec->init_len : 1);
        if (c->blob == NULL) {
            free(c);
            return TR_ENOMEM;
        }
        if (spec->init_len > 0)
            memcpy(c->blob, spec->init, spec->init_len);
        strcpy(c->remote, spec->remote); /* lengths checked */
        if (spec->node != NULL)
            strcpy(c->node, spec->node);
        strcpy(c->name, spec->name);
        c->restart = spec->restart;
        c->shutdown_ms = spec->shutdown_ms;
        c->st = TR__CH_RESTARTING;
        *out = c;
        return 0;
    }
    c->blob_len = TR__SUP_HDR + spec->init_len;
    c->blob = calloc(1, c->blob_len);
    c->wrap = wrap_of(spec->behavior);
    if (c->blob == NULL || c->wrap == NULL) {
        free(c->blob);
        free(c);
        return TR_ENOMEM;
    }
    tr__sup_hdr h = {.user = spec->behavior};
    memcpy(c->blob, &h, sizeof h);
    if (spec->init_len > 0)
        memcpy(c->blob + TR__SUP_HDR, spec->init, spec->init_len);
    strcpy(c->name, spec->name); /* length checked: < TR_SUP_NAME_MAX */
    if (spec->mailbox != NULL) {
        c->bounded = true;
        c->limit = *spec->mailbox;
    }
    c->restart = spec->restart;
    c->shutdown_ms = spec->shutdown_ms;
    c->st = TR__CH_RESTARTING; /* to be started */
    *out = c;
    return 0;
}

void tr__sup_child_free(tr__sup_child *c) {
    if (c == NULL)
        return;
    free(c->blob);
    free(c);
}

int tr__sup_setup_new(const tr_sup_config *cfg, const tr_sup_spec *children,
                      size_t n, int depth, tr__sup_setup **out) {
    int rc = tr__sup_check_config(cfg);
    if (rc == 0)
        rc = check_specs(children, n, depth);
    if (rc != 0)
        return rc;
    tr__sup_setup *s = calloc(1, sizeof *s);
    if (s == NULL)
        return TR_ENOMEM;
    if (cfg->name != NULL) {
        strncpy(s->name, cfg->name, TR_SUP_NAME_MAX - 1);
        s->name[TR_SUP_NAME_MAX - 1] = '\0';
    } else {
        strcpy(s->name, "supervisor");
    }
    s->strategy = cfg->strategy;
    s->intensity = cfg->intensity;
    s->period_ms = cfg->period_ms > 0 ? cfg->period_ms : 5000;
    s->backoff_min_ms = cfg->backoff_min_ms;
    s->backoff_max_ms = cfg->backoff_max_ms;
    s->backoff_jitter_pct = cfg->backoff_jitter_pct;
    s->backoff_seed = cfg->backoff_seed;
    s->notify = cfg->notify;
    if (n > 0 && (s->kids = calloc(n, sizeof *s->kids)) == NULL) {
        free(s);
        return TR_ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        rc = tr__sup_child_new(&children[i], &s->kids[i]);
        if (rc != 0) {
            tr__sup_setup_free(s);
            return rc;
        }
        s->nkids = i + 1;
    }
    *out = s;
    return 0;
}

void tr__sup_setup_free(tr__sup_setup *s) {
    if (s == NULL)
        return;
    for (size_t i = 0; i < s->nkids; i++)
        tr__sup_child_free(s->kids[i]);
    free(s->kids);
    free(s);
}
