/* Design notes
 * ------------
 * Calls to a supervisor and their replies, and starting a supervisor.
 *
 * A call is a heap tr__sup_call moved in a PTR message (its destructor
 * frees it wherever the message dies: a dead letter, a refused send). It
 * names where to answer (reply_to) and an id, because the answer to a
 * call that stops or starts a child comes several handler invocations
 * later, and tr_reply can only answer a request while it is being
 * handled. Specs are validated and copied here, in the caller's thread, so
 * a bad spec is an immediate TR_EINVAL and the supervisor never touches
 * the caller's memory.
 *
 * The answer is a BYTES message (plain data): a tr__sup_reply_wire header
 * and, for which_children, the tr_sup_child_info records. It is read with
 * memcpy, never through a cast, so its alignment inside the message does
 * not matter.
 *
 * The *_sync calls create a private inbox per call (a late answer then
 * lands in a destroyed inbox, never in the next call's), send, and wait in
 * short slices, checking between slices whether the supervisor is still
 * alive: a call that reached a dead supervisor has no one to answer it. */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "supervisor/supervisor_int.h"
#include "troupe/inbox.h"

/* Relaxed: call ids only need to be unique, not ordered. */
static _Atomic uint64_t next_call_id;

static uint64_t new_call_id(void) {
    return atomic_fetch_add_explicit(&next_call_id, 1, memory_order_relaxed) +
           1;
}

void tr__sup_call_free(void *ptr) {
    tr__sup_call *call = ptr;
    if (call == NULL)
        return;
    tr__sup_child_free(call->child);
    free(call);
}

void tr__sup_reply(tr_ctx *ctx, const tr__sup_call *call, int result,
                   tr_ref ref, const tr_sup_child_info *children,
                   size_t nchildren) {
    size_t len = sizeof(tr__sup_reply_wire) + nchildren * sizeof *children;
    unsigned char *buf = malloc(len);
    if (buf == NULL)
        return; /* the caller times out or sees the supervisor die */
    tr__sup_reply_wire w = {
        .magic = TR__SUP_REPLY_MAGIC,
        .op = call->op,
        .call_id = call->call_id,
        .result = result,
        .nchildren = (uint32_t)nchildren,
        .ref = ref.id,
    };
    memcpy(buf, &w, sizeof w);
    if (nchildren > 0)
        memcpy(buf + sizeof w, children, nchildren * sizeof *children);
    tr_msg *m = tr_msg_new_bytes(TR_TAG_SUP_REPLY, buf, len);
    free(buf);
    if (m != NULL && tr_send(ctx, call->reply_to, &m) != 0)
        tr_msg_destroy(&m);
}

TR_API int tr_sup_reply_read(const tr_msg *msg, tr_sup_reply *out) {
    if (msg == NULL || out == NULL)
        return TR_EINVAL;
    size_t len = 0;
    const unsigned char *p = tr_msg_data(msg, &len);
    tr__sup_reply_wire w;
    if (tr_msg_tag(msg) != TR_TAG_SUP_REPLY ||
        tr_msg_kind(msg) != TR_PAYLOAD_BYTES || p == NULL || len < sizeof w)
        return TR_EPAYLOAD;
    memcpy(&w, p, sizeof w);
    if (w.magic != TR__SUP_REPLY_MAGIC ||
        (len - sizeof w) / sizeof(tr_sup_child_info) != w.nchildren ||
        (len - sizeof w) % sizeof(tr_sup_child_info) != 0)
        return TR_EPAYLOAD;
    out->call_id = w.call_id;
    out->op = (int)w.op;
    out->result = w.result;
    out->ref = (tr_ref){w.ref};
    out->nchildren = w.nchildren;
    return 0;
}

TR_API int tr_sup_reply_child(const tr_msg *msg, size_t i,
                              tr_sup_child_info *out) {
    tr_sup_reply r;
    int rc = tr_sup_reply_read(msg, &r);
    if (rc != 0)
        return rc;
    if (out == NULL || i >= r.nchildren)
        return TR_EINVAL;
    size_t len = 0;
    const unsigned char *p = tr_msg_data(msg, &len);
    memcpy(out, p + sizeof(tr__sup_reply_wire) + i * sizeof *out, sizeof *out);
    out->name[TR_SUP_NAME_MAX - 1] = '\0';
    return 0;
}

TR_API const char *tr_sup_child_state_name(int state) {
    switch (state) {
    case TR_SUP_CHILD_RUNNING:
        return "running";
    case TR_SUP_CHILD_RESTARTING:
        return "restarting";
    case TR_SUP_CHILD_STOPPED:
        return "stopped";
    default:
        return "unknown";
    }
}

/* ---- building and sending calls ---- */

static int call_new(uint32_t op, const char *name, const tr_sup_spec *spec,
                    tr__sup_call **out) {
    if (op == TR_SUP_OP_START_CHILD) {
        /* Deep check: a nested supervisor's args too. */
        int rc = tr__sup_check_spec(spec, 0);
        if (rc != 0)
            return rc;
    } else if (op != TR_SUP_OP_WHICH_CHILDREN &&
               (name == NULL || name[0] == '\0' ||
                strnlen(name, TR_SUP_NAME_MAX) >= TR_SUP_NAME_MAX)) {
        return TR_EINVAL;
    }
    tr__sup_call *call = calloc(1, sizeof *call);
    if (call == NULL)
        return TR_ENOMEM;
    call->magic = TR__SUP_CALL_MAGIC;
    call->op = op;
    call->call_id = new_call_id();
    if (op == TR_SUP_OP_START_CHILD) {
        int rc = tr__sup_child_new(spec, &call->child);
        if (rc != 0) {
            free(call);
            return rc;
        }
    } else if (name != NULL) {
        strcpy(call->name, name); /* length checked above */
    }
    *out = call;
    return 0;
}

/* Sends call (always consumed). From a handler when ctx != NULL. */
static int call_send(tr_ctx *ctx, tr_runtime *rt, tr_ref sup,
                     tr__sup_call *call) {
    tr_msg *m =
        tr_msg_new_ptr(TR__SUP_TAG_CALL, call, sizeof *call, tr__sup_call_free);
    if (m == NULL) {
        tr__sup_call_free(call);
        return TR_ENOMEM;
    }
    int rc = ctx != NULL ? tr_send(ctx, sup, &m) : tr_runtime_send(rt, sup, &m);
    if (rc != 0)
        tr_msg_destroy(&m); /* runs tr__sup_call_free */
    return rc;
}

static int call_async(tr_ctx *ctx, tr_ref sup, uint32_t op, const char *name,
                      const tr_sup_spec *spec, uint64_t *call_id) {
    if (ctx == NULL)
        return TR_ENOCTX;
    tr_ref self = tr_self(ctx);
    if (tr_ref_is_none(self))
        return TR_ENOCTX;
    tr__sup_call *call = NULL;
    int rc = call_new(op, name, spec, &call);
    if (rc != 0)
        return rc;
    call->reply_to = self;
    uint64_t id = call->call_id;
    rc = call_send(ctx, NULL, sup, call);
    if (rc == 0 && call_id != NULL)
        *call_id = id;
    return rc;
}

TR_API int tr_sup_start_child(tr_ctx *ctx, tr_ref sup, const tr_sup_spec *spec,
                              uint64_t *call_id) {
    return call_async(ctx, sup, TR_SUP_OP_START_CHILD, NULL, spec, call_id);
}

TR_API int tr_sup_terminate_child(tr_ctx *ctx, tr_ref sup, const char *name,
                                  uint64_t *call_id) {
    return call_async(ctx, sup, TR_SUP_OP_TERMINATE_CHILD, name, NULL, call_id);
}

TR_API int tr_sup_restart_child(tr_ctx *ctx, tr_ref sup, const char *name,
                                uint64_t *call_id) {
    return call_async(ctx, sup, TR_SUP_OP_RESTART_CHILD, name, NULL, call_id);
}

TR_API int tr_sup_delete_child(tr_ctx *ctx, tr_ref sup, const char *name,
                               uint64_t *call_id) {
    return call_async(ctx, sup, TR_SUP_OP_DELETE_CHILD, name, NULL, call_id);
}

TR_API int tr_sup_which_children(tr_ctx *ctx, tr_ref sup, uint64_t *call_id) {
    return call_async(ctx, sup, TR_SUP_OP_WHICH_CHILDREN, NULL, NULL, call_id);
}

/* ---- blocking calls ---- */

/* How often a waiting *_sync call checks that the supervisor lives, and
 * how long after its death it still waits for an answer already sent. */
#define SYNC_SLICE_MS 25
#define SYNC_DEAD_GRACE_MS 100

/* Sends call (consumed) and waits for its answer; *reply is the caller's
 * (NULL if not wanted). Returns the call's result or a wait error. */
static int call_sync(tr_runtime *rt, tr_ref sup, tr__sup_call *call,
                     int64_t timeout_ms, tr_msg **reply) {
    if (rt == NULL || timeout_ms < -1) {
        tr__sup_call_free(call);
        return TR_EINVAL;
    }
    tr_inbox *ib = NULL;
    int rc = tr_inbox_create(rt, &ib);
    if (rc != 0) {
        tr__sup_call_free(call);
        return rc;
    }
    tr_msg *m = NULL;
    rc = tr_inbox_recv(ib, 0, &m); /* TR_ESTATE in a handler */
    if (m != NULL)
        tr_msg_destroy(&m);
    if (rc == TR_ESTATE) {
        tr_inbox_destroy(&ib);
        tr__sup_call_free(call);
        return TR_ESTATE;
    }
    call->reply_to = tr_inbox_ref(ib);
    uint64_t id = call->call_id;
    rc = call_send(NULL, rt, sup, call);
    int64_t deadline = timeout_ms < 0 ? -1 : tr_now_ms() + timeout_ms;
    int64_t dead_since = -1;
    while (rc == 0) {
        int64_t now = tr_now_ms(), slice = SYNC_SLICE_MS;
        if (deadline >= 0 && deadline - now < slice)
            slice = deadline - now;
        if (slice <= 0) {
            rc = TR_ETIMEDOUT;
            break;
        }
        int wrc = tr_inbox_recv(ib, slice, &m);
        if (wrc == 0) {
            tr_sup_reply r;
            if (tr_sup_reply_read(m, &r) == 0 && r.call_id == id) {
                rc = r.result;
                if (reply != NULL)
                    *reply = m;
                else
                    tr_msg_destroy(&m);
                break;
            }
            tr_msg_destroy(&m); /* not ours */
            continue;
        }
        if (wrc != TR_ETIMEDOUT) {
            rc = wrc;
            break;
        }
        if (tr_actor_alive(rt, sup))
            continue;
        now = tr_now_ms();
        if (dead_since < 0)
            dead_since = now;
        else if (now - dead_since >= SYNC_DEAD_GRACE_MS)
            rc = TR_ENOACTOR;
    }
    tr_inbox_destroy(&ib);
    return rc;
}

static int sync_simple(tr_runtime *rt, tr_ref sup, uint32_t op,
                       const char *name, const tr_sup_spec *spec,
                       int64_t timeout_ms, tr_ref *out) {
    tr__sup_call *call = NULL;
    int rc = call_new(op, name, spec, &call);
    if (rc != 0)
        return rc;
    tr_msg *reply = NULL;
    rc = call_sync(rt, sup, call, timeout_ms, out != NULL ? &reply : NULL);
    if (reply != NULL) {
        tr_sup_reply r;
        if (rc == 0 && tr_sup_reply_read(reply, &r) == 0)
            *out = r.ref;
        tr_msg_destroy(&reply);
    }
    return rc;
}

TR_API int tr_sup_start_child_sync(tr_runtime *rt, tr_ref sup,
                                   const tr_sup_spec *spec, int64_t timeout_ms,
                                   tr_ref *out) {
    return sync_simple(rt, sup, TR_SUP_OP_START_CHILD, NULL, spec, timeout_ms,
                       out);
}

TR_API int tr_sup_terminate_child_sync(tr_runtime *rt, tr_ref sup,
                                       const char *name, int64_t timeout_ms) {
    return sync_simple(rt, sup, TR_SUP_OP_TERMINATE_CHILD, name, NULL,
                       timeout_ms, NULL);
}

TR_API int tr_sup_restart_child_sync(tr_runtime *rt, tr_ref sup,
                                     const char *name, int64_t timeout_ms,
                                     tr_ref *out) {
    return sync_simple(rt, sup, TR_SUP_OP_RESTART_CHILD, name, NULL, timeout_ms,
                       out);
}

TR_API int tr_sup_delete_child_sync(tr_runtime *rt, tr_ref sup,
                                    const char *name, int64_t timeout_ms) {
    return sync_simple(rt, sup, TR_SUP_OP_DELETE_CHILD, name, NULL, timeout_ms,
                       NULL);
}

TR_API int tr_sup_which_children_sync(tr_runtime *rt, tr_ref sup,
                                      int64_t timeout_ms,
                                      tr_sup_child_info **out, size_t *n) {
    if (out == NULL || n == NULL)
        return TR_EINVAL;
    *out = NULL;
    *n = 0;
    tr__sup_call *call = NULL;
    int rc = call_new(TR_SUP_OP_WHICH_CHILDREN, NULL, NULL, &call);
    if (rc != 0)
        return rc;
    tr_msg *reply = NULL;
    rc = call_sync(rt, sup, call, timeout_ms, &reply);
    if (rc != 0) {
        if (reply != NULL)
            tr_msg_destroy(&reply);
        return rc;
    }
    tr_sup_reply r;
    rc = tr_sup_reply_read(reply, &r);
    if (rc == 0 && r.nchildren > 0) {
        tr_sup_child_info *list = calloc(r.nchildren, sizeof *list);
        if (list == NULL)
            rc = TR_ENOMEM;
        for (size_t i = 0; list != NULL && i < r.nchildren; i++)
            (void)tr_sup_reply_child(reply, i, &list[i]);
        *out = list;
        *n = list != NULL ? r.nchildren : 0;
    }
    tr_msg_destroy(&reply);
    return rc;
}

TR_API void tr_sup_children_free(tr_sup_child_info **list) {
    if (list == NULL)
        return;
    free(*list);
    *list = NULL;
}

/* ---- starting a supervisor ---- */

static int sup_start(tr_ctx *ctx, tr_runtime *rt, const tr_sup_config *cfg,
                     const tr_sup_spec *children, size_t n, tr_ref *out) {
    tr__sup_state init;
    memset(&init, 0, sizeof init);
    int rc = tr__sup_setup_new(cfg, children, n, 0, &init.setup);
    if (rc != 0)
        return rc;
    rc = ctx != NULL
             ? tr_spawn(ctx, &tr_sup_behavior, &init, sizeof init, out)
             : tr_runtime_spawn(rt, &tr_sup_behavior, &init, sizeof init, out);
    if (rc != 0)
        tr__sup_setup_free(init.setup); /* the actor's copy never existed */
    return rc;
}

TR_API int tr_sup_start(tr_ctx *ctx, const tr_sup_config *cfg,
                        const tr_sup_spec *children, size_t n, tr_ref *out) {
    if (ctx == NULL)
        return TR_ENOCTX;
    return sup_start(ctx, NULL, cfg, children, n, out);
}

TR_API int tr_sup_runtime_start(tr_runtime *rt, const tr_sup_config *cfg,
                                const tr_sup_spec *children, size_t n,
                                tr_ref *out) {
    if (rt == NULL)
        return TR_EINVAL;
    return sup_start(NULL, rt, cfg, children, n, out);
}
