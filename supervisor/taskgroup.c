/* Design notes
 * ------------
 * A task group is an ordinary actor (group_behavior) built only from the
 * public lifecycle API: its tasks are its children (tr_spawn from its own
 * callbacks), their ends reach it through on_child_exit, their results
 * through TR_TAG_TASK_RESULT messages that each task sends before it
 * stops (one sender, one receiver: the result is always ahead of the exit
 * notice in the group's mailbox).
 *
 * State: `tasks` is an array in start order (the index is the task's
 * name in every API), never shrunk, so listings and the report see every
 * task ever started; `map` (open addressing, ref id -> index, no removals
 * since records stay) finds a task from an exit or a result in O(1);
 * `failures` lists failed task indexes in the order the group saw them
 * (the exception group). `phase` only moves forward:
 *   OPEN -> FAILING     first failure: every running task is cancelled
 *   OPEN -> CANCELLING  the group itself was cancelled (on_cancel)
 *   any  -> DONE        the report has been sent; the group is ending
 * Invariant: nrunning = number of RUNNING + CANCELLING records; the report
 * is sent exactly once, when nrunning reaches 0 (and, for keep_open, after
 * close) or, as a fallback, from on_stop.
 *
 * Being cancelled, the group keeps running (on_cancel returns TR_DRAIN)
 * so that it still hears its tasks end, with their real reasons and
 * results; its own grace is long because each task enforces its grace
 * itself. When the drain is cut short (a second cancel, a kill) on_stop
 * sends the report with what it knows.
 *
 * Blocking calls from foreign threads (*_sync) run through a short-lived
 * helper actor that monitors the group before sending the command: the
 * group's answer and its DOWN come from the same sender, so the helper
 * sees the answer first if there is one, and a group that ends without
 * answering is a clean TR_ESTATE instead of a timeout. The helper and the
 * waiting thread share a refcounted rendezvous, so either may go first. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "runtime/grow.h"
#include "runtime/sched.h"
#include "troupe/error.h"
#include "troupe/lifecycle.h"
#include "troupe/taskgroup.h"

/* Commands to a group (private; within the task-group tag range). */
#define TAG_CMD 0xFFFF0303u

#define CMD_MAGIC 0x74674344u   /* "tgCD" */
#define REPORT_DONE 0x74674450u /* "tgDP" */
#define REPORT_LIST 0x7467534cu /* "tgSL" */

enum { OP_ADD = 1, OP_CANCEL, OP_LIST, OP_CLOSE };
enum { G_OPEN, G_FAILING, G_CANCELLING, G_DONE };

typedef struct spec_copy {
    char name[TR_TASK_NAME_MAX];
    const tr_behavior *beh;
    void *init;
    size_t init_len;
    int64_t grace_ms; /* -1: the behaviour's */
} spec_copy;

typedef struct task_rec {
    tr_ref ref;
    int64_t grace_ms;
    char *text;     /* failure text, NULL if none */
    tr_msg *result; /* owned */
    int reason;
    tr_task_state state;
    char name[TR_TASK_NAME_MAX];
} task_rec;

/* PTR payload of TR_TAG_GROUP_DONE and of a list reply. */
typedef struct group_report {
    uint32_t magic;
    tr_group_status status;
    int reason;
    tr_ref group;
    task_rec *tasks;
    uint32_t ntasks;
    uint32_t *failures;
    uint32_t nfailures;
} group_report;

typedef struct group_cmd {
    uint32_t magic;
    uint32_t op;
    uint32_t index;
    tr_ref reply_to; /* TR_REF_NONE: a request (tr_reply) or no answer */
    spec_copy spec;
} group_cmd;

typedef struct group_init {
    tr_ref owner;
    bool keep_open;
    uint32_t ntasks;
    spec_copy *specs;
} group_init;

typedef struct map_slot {
    uint64_t key; /* ref id; 0 = empty */
    uint32_t idx;
} map_slot;

typedef struct group {
    group_init *init; /* first: the spawn copies the pointer here */
    tr_ref owner;
    task_rec *tasks;
    uint32_t ntasks, captasks;
    map_slot *map;
    uint32_t mapcap, nmapped;
    uint32_t *failures;
    uint32_t nfailures, capfailures;
    uint32_t nrunning;
    int phase;
    int cancel_reason;
    bool keep_open, closed, cancelled;
} group;

/* ---- small helpers */

static void free_msg(void *p) {
    tr_msg *m = p;
    if (m != NULL)
        (void)tr_msg_destroy(&m);
}

static bool grow(void **arr, uint32_t *cap, uint32_t need, size_t elem) {
    return tr__grow(arr, cap, need, elem, 8);
}

static int spec_check(const tr_task_spec *s) {
    if (s == NULL || s->beh == NULL || s->beh->handle == NULL ||
        (s->init == NULL && s->init_len > 0) ||
        s->init_len > s->beh->state_size || s->grace_ms < -1)
        return TR_EINVAL;
    return 0;
}

static void copy_name(char dst[TR_TASK_NAME_MAX], const char *src) {
    size_t n = src != NULL ? strnlen(src, TR_TASK_NAME_MAX - 1) : 0;
    if (n > 0)
        memcpy(dst, src, n);
    dst[n] = '\0';
}

static int spec_copy_make(spec_copy *dst, const tr_task_spec *s) {
    int rc = spec_check(s);
    if (rc != 0)
        return rc;
    memset(dst, 0, sizeof *dst);
    copy_name(dst->name, s->name);
    dst->beh = s->beh;
    /* Longer than TR_MS_FOREVER means "never": kept from overflowing the
     * lifecycle's nanosecond deadline. */
    dst->grace_ms = s->grace_ms <= 0              ? -1
                    : s->grace_ms > TR_MS_FOREVER ? TR_MS_FOREVER
                                                  : s->grace_ms;
    if (s->init_len > 0) {
        dst->init = malloc(s->init_len);
        if (dst->init == NULL)
            return TR_ENOMEM;
        memcpy(dst->init, s->init, s->init_len);
        dst->init_len = s->init_len;
    }
    return 0;
}

static void spec_copy_free(spec_copy *s) {
    free(s->init);
    s->init = NULL;
}

static void tasks_free(task_rec *tasks, uint32_t n) {
    for (uint32_t i = 0; i < n; i++) {
        free(tasks[i].text);
        free_msg(tasks[i].result);
    }
    free(tasks);
}

static void report_free(void *p) {
    group_report *r = p;
    if (r == NULL)
        return;
    tasks_free(r->tasks, r->ntasks);
    free(r->failures);
    free(r);
}

static void cmd_free(void *p) {
    group_cmd *c = p;
    if (c == NULL)
        return;
    spec_copy_free(&c->spec);
    free(c);
}

static group_cmd *cmd_new(uint32_t op) {
    group_cmd *c = calloc(1, sizeof *c);
    if (c != NULL) {
        c->magic = CMD_MAGIC;
        c->op = op;
    }
    return c;
}

/* Wraps c in a message; frees c if that fails. */
static tr_msg *cmd_msg(group_cmd *c) {
    tr_msg *m = tr_msg_new_ptr(TAG_CMD, c, sizeof *c, cmd_free);
    if (m == NULL)
        cmd_free(c);
    return m;
}

static void group_init_free(group_init *gi) {
    if (gi == NULL)
        return;
    for (uint32_t i = 0; i < gi->ntasks; i++)
        spec_copy_free(&gi->specs[i]);
    free(gi->specs);
    free(gi);
}

static tr_task_state state_of(int reason) {
    if (reason == TR_EXIT_NORMAL)
        return TR_TASK_DONE;
    return reason < 0 ? TR_TASK_FAILED : TR_TASK_CANCELLED;
}

/* The reason the lifecycle's stop sequence gives children of an actor
 * stopping with `reason` (family.c), and the one a group passes on. */
static int child_reason(int reason) {
    return reason == TR_EXIT_CANCELLED || reason == TR_EXIT_TIMEOUT ||
                   reason == TR_EXIT_SHUTDOWN
               ? reason
               : TR_EXIT_CANCELLED;
}

/* ---- ref -> index map */

static uint32_t map_hash(uint64_t k, uint32_t mask) {
    return tr__hash64(k, mask);
}

static bool map_put(group *g, uint64_t key, uint32_t idx) {
    if ((g->nmapped + 1) * 2 > g->mapcap) {
        uint32_t ncap = g->mapcap ? g->mapcap * 2 : 16;
        map_slot *nm = calloc(ncap, sizeof *nm);
        if (nm == NULL)
            return false;
        for (uint32_t i = 0; i < g->mapcap; i++) {
            if (g->map[i].key == 0)
                continue;
            uint32_t h = map_hash(g->map[i].key, ncap - 1);
            while (nm[h].key != 0)
                h = (h + 1) & (ncap - 1);
            nm[h] = g->map[i];
        }
        free(g->map);
        g->map = nm;
        g->mapcap = ncap;
    }
    uint32_t h = map_hash(key, g->mapcap - 1);
    while (g->map[h].key != 0)
        h = (h + 1) & (g->mapcap - 1);
    g->map[h] = (map_slot){key, idx};
    g->nmapped++;
    return true;
}

static task_rec *task_of(group *g, tr_ref ref) {
    if (g->mapcap == 0 || ref.id == 0)
        return NULL;
    for (uint32_t h = map_hash(ref.id, g->mapcap - 1);;
         h = (h + 1) & (g->mapcap - 1)) {
        if (g->map[h].key == ref.id)
            return &g->tasks[g->map[h].idx];
        if (g->map[h].key == 0)
            return NULL;
    }
}

/* ---- the group actor */

static void note_failure(group *g, uint32_t idx) {
    if (grow((void **)&g->failures, &g->capfailures, g->nfailures + 1,
             sizeof *g->failures))
        g->failures[g->nfailures++] = idx;
}

/* Starts task s under the next index. A task that cannot be spawned is
 * recorded as failed when `keep_failed` (an initial task: nobody else can
 * be told) and forgotten otherwise (an add: the caller gets the error).
 * `spawn` false records a task never started because the group is already
 * failing. Returns the spawn error, if any. */
static int task_start(tr_ctx *ctx, group *g, const spec_copy *s, bool spawn,
                      bool keep_failed, uint32_t *index) {
    if (!grow((void **)&g->tasks, &g->captasks, g->ntasks + 1,
              sizeof *g->tasks))
        return TR_ENOMEM;
    task_rec *t = &g->tasks[g->ntasks];
    memset(t, 0, sizeof *t);
    memcpy(t->name, s->name, sizeof t->name);
    t->grace_ms = s->grace_ms;
    int rc = 0;
    if (!spawn) {
        t->state = TR_TASK_CANCELLED;
        t->reason = TR_EXIT_CANCELLED;
    } else {
        rc = tr_spawn(ctx, s->beh, s->init, s->init_len, &t->ref);
        if (rc == 0 && !map_put(g, t->ref.id, g->ntasks)) {
            (void)tr_kill(tr_ctx_runtime(ctx), t->ref);
            rc = TR_ENOMEM;
        }
        if (rc == 0) {
            t->state = TR_TASK_RUNNING;
            g->nrunning++;
        } else {
            if (!keep_failed)
                return rc;
            t->ref = TR_REF_NONE;
            t->state = TR_TASK_FAILED;
            t->reason = rc;
            t->text = strdup("spawn failed");
        }
    }
    *index = g->ntasks++;
    if (rc != 0)
        note_failure(g, *index);
    return rc;
}

static void cancel_running(tr_ctx *ctx, group *g, int reason) {
    for (uint32_t i = 0; i < g->ntasks; i++) {
        task_rec *t = &g->tasks[i];
        if (t->state != TR_TASK_RUNNING)
            continue;
        /* TR_ENOACTOR: it has just ended; its exit is on the way. */
        (void)tr_cancel(tr_ctx_runtime(ctx), t->ref, reason, t->grace_ms);
        t->state = TR_TASK_CANCELLING;
    }
}

static void begin_failing(tr_ctx *ctx, group *g) {
    if (g->phase != G_OPEN)
        return;
    g->phase = G_FAILING;
    cancel_running(ctx, g, TR_EXIT_CANCELLED);
}

static tr_group_status status_of(const group *g) {
    if (g->nfailures > 0)
        return TR_GROUP_FAILED;
    return g->cancelled ? TR_GROUP_CANCELLED : TR_GROUP_OK;
}

/* Sends the report (moving the records into it) and marks the group DONE.
 * Returns how the group ends. */
static int send_report(tr_ctx *ctx, group *g) {
    tr_group_status st = status_of(g);
    int reason = TR_EXIT_NORMAL;
    if (st == TR_GROUP_FAILED)
        reason = g->tasks[g->failures[0]].reason;
    else if (st == TR_GROUP_CANCELLED)
        reason = g->cancel_reason;
    g->phase = G_DONE;
    if (tr_ref_is_none(g->owner))
        return reason;
    group_report *r = calloc(1, sizeof *r);
    if (r == NULL)
        return reason;
    *r = (group_report){.magic = REPORT_DONE,
                        .status = st,
                        .reason = reason,
                        .group = tr_self(ctx),
                        .tasks = g->tasks,
                        .ntasks = g->ntasks,
                        .failures = g->failures,
                        .nfailures = g->nfailures};
    tr_msg *m = tr_msg_new_ptr(TR_TAG_GROUP_DONE, r, sizeof *r, report_free);
    if (m == NULL) {
        free(r);
        return reason;
    }
    /* The report owns the records now (results and texts move with it). */
    g->tasks = NULL;
    g->failures = NULL;
    g->ntasks = g->captasks = g->nfailures = g->capfailures = 0;
    if (tr_send(ctx, g->owner, &m) != 0)
        (void)tr_msg_destroy(&m); /* the owner is gone: nobody to tell */
    return reason;
}

/* Everything finished: report, then end the way the report says. Not for
 * on_cancel (which ends by returning 0). */
static void finish(tr_ctx *ctx, group *g) {
    char text[160] = "";
    if (g->nfailures > 0) {
        const task_rec *t = &g->tasks[g->failures[0]];
        snprintf(text, sizeof text, "task %u (%s) failed: %s", g->failures[0],
                 t->name, t->text != NULL ? t->text : tr_strerror(t->reason));
    }
    tr_group_status st = status_of(g);
    int reason = send_report(ctx, g);
    if (st == TR_GROUP_FAILED)
        (void)tr_fail(ctx, reason, "%s", text);
    else if (st == TR_GROUP_CANCELLED)
        /* Draining: a cancel of ourselves ends us with that reason. */
        (void)tr_cancel(tr_ctx_runtime(ctx), tr_self(ctx), reason, 0);
    else
        tr_stop(ctx);
}

static void maybe_finish(tr_ctx *ctx, group *g) {
    if (g->phase == G_DONE || g->nrunning > 0)
        return;
    if (g->phase == G_OPEN && g->keep_open && !g->closed)
        return;
    finish(ctx, g);
}

static int group_on_start(tr_ctx *ctx, void *state) {
    group *g = state;
    group_init *gi = g->init;
    g->init = NULL;
    g->owner = gi->owner;
    g->keep_open = gi->keep_open;
    g->cancel_reason = TR_EXIT_CANCELLED;
    /* Room for every initial task up front: a record can then always be
     * written, and an allocation failure ends the group before it has
     * started anything. */
    if (!grow((void **)&g->tasks, &g->captasks, gi->ntasks, sizeof *g->tasks)) {
        group_init_free(gi);
        return tr_fail(ctx, TR_ENOMEM, "task group: out of memory");
    }
    for (uint32_t i = 0; i < gi->ntasks; i++) {
        uint32_t idx = 0;
        if (task_start(ctx, g, &gi->specs[i], g->phase == G_OPEN, true, &idx) !=
            0)
            begin_failing(ctx, g);
    }
    group_init_free(gi);
    maybe_finish(ctx, g);
    return 0;
}

static void group_on_child_exit(tr_ctx *ctx, void *state, const tr_exit *x) {
    group *g = state;
    task_rec *t = task_of(g, x->who);
    if (t == NULL ||
        (t->state != TR_TASK_RUNNING && t->state != TR_TASK_CANCELLING))
        return;
    t->reason = x->reason;
    t->state = state_of(x->reason);
    if (x->text != NULL && x->text[0] != '\0')
        t->text = strdup(x->text);
    g->nrunning--;
    if (t->state == TR_TASK_FAILED) {
        note_failure(g, (uint32_t)(t - g->tasks));
        begin_failing(ctx, g);
    }
    maybe_finish(ctx, g);
}

static int group_on_cancel(tr_ctx *ctx, void *state, int reason) {
    group *g = state;
    if (g->phase == G_DONE)
        return 0; /* our own end (finish) or too late to matter */
    if (!g->cancelled) {
        g->cancelled = true;
        g->cancel_reason = reason;
    }
    if (g->phase == G_OPEN) {
        g->phase = G_CANCELLING;
        cancel_running(ctx, g, child_reason(reason));
    }
    if (g->nrunning > 0)
        return TR_DRAIN; /* hear every task end; finish() ends us */
    (void)send_report(ctx, g);
    return 0;
}

static void group_on_stop(tr_ctx *ctx, void *state, int reason) {
    group *g = state;
    if (g->init != NULL) { /* never started (runtime shutdown) */
        group_init_free(g->init);
        g->init = NULL;
    }
    if (g->phase != G_DONE) {
        /* The drain was cut short: the lifecycle stopped the remaining
         * tasks with this reason (or killed them with us). */
        int why =
            reason == TR_EXIT_KILLED ? TR_EXIT_KILLED : child_reason(reason);
        for (uint32_t i = 0; i < g->ntasks; i++) {
            task_rec *t = &g->tasks[i];
            if (t->state == TR_TASK_RUNNING || t->state == TR_TASK_CANCELLING) {
                t->state = TR_TASK_CANCELLED;
                t->reason = why;
            }
        }
        g->nrunning = 0;
        if (!g->cancelled && g->nfailures == 0) {
            g->cancelled = true;
            g->cancel_reason = reason;
        }
        (void)send_report(ctx, g);
    }
    tasks_free(g->tasks, g->ntasks);
    free(g->failures);
    free(g->map);
    g->tasks = NULL;
    g->failures = NULL;
    g->map = NULL;
}

/* ---- commands */

static tr_msg *status_reply(int rc, uint32_t index) {
    return tr_msg_new_u64(TR_TAG_GROUP_REPLY,
                          ((uint64_t)(uint32_t)rc << 32) | index);
}

static tr_msg *list_reply(tr_ctx *ctx, const group *g) {
    group_report *r = calloc(1, sizeof *r);
    if (r == NULL)
        return NULL;
    r->magic = REPORT_LIST;
    r->group = tr_self(ctx);
    r->tasks = g->ntasks > 0 ? calloc(g->ntasks, sizeof *r->tasks) : NULL;
    if (g->ntasks > 0 && r->tasks == NULL) {
        free(r);
        return NULL;
    }
    for (uint32_t i = 0; i < g->ntasks; i++) {
        r->tasks[i] = g->tasks[i];
        r->tasks[i].result = NULL;
        r->tasks[i].text =
            g->tasks[i].text != NULL ? strdup(g->tasks[i].text) : NULL;
        r->ntasks++;
    }
    tr_msg *m = tr_msg_new_ptr(TR_TAG_GROUP_REPLY, r, sizeof *r, report_free);
    if (m == NULL)
        report_free(r);
    return m;
}

static void answer(tr_ctx *ctx, const tr_msg *req, tr_ref reply_to, tr_msg *r) {
    if (r == NULL)
        return;
    int rc = TR_EINVAL;
    if (tr_msg_is_request(req))
        rc = tr_reply(ctx, req, &r);
    else if (!tr_ref_is_none(reply_to))
        rc = tr_send(ctx, reply_to, &r);
    if (rc != 0)
        (void)tr_msg_destroy(&r);
}

static int cancel_one(tr_ctx *ctx, group *g, uint32_t index) {
    if (g->phase == G_DONE)
        return TR_ESTATE;
    if (index >= g->ntasks)
        return TR_EINVAL;
    task_rec *t = &g->tasks[index];
    if (t->state == TR_TASK_CANCELLING)
        return 0;
    if (t->state != TR_TASK_RUNNING)
        return TR_ENOTFOUND;
    (void)tr_cancel(tr_ctx_runtime(ctx), t->ref, TR_EXIT_CANCELLED,
                    t->grace_ms);
    t->state = TR_TASK_CANCELLING;
    return 0;
}

static void handle_cmd(tr_ctx *ctx, group *g, const tr_msg *msg) {
    size_t len = 0;
    group_cmd *c = (group_cmd *)tr_msg_data(msg, &len);
    if (tr_msg_kind(msg) != TR_PAYLOAD_PTR || c == NULL || len != sizeof *c ||
        c->magic != CMD_MAGIC)
        return;
    switch (c->op) {
    case OP_ADD: {
        uint32_t idx = 0;
        int rc = g->phase == G_OPEN
                     ? task_start(ctx, g, &c->spec, true, false, &idx)
                     : TR_ESTATE;
        answer(ctx, msg, c->reply_to, status_reply(rc, idx));
        return;
    }
    case OP_CANCEL:
        answer(ctx, msg, c->reply_to,
               status_reply(cancel_one(ctx, g, c->index), c->index));
        return;
    case OP_LIST:
        answer(ctx, msg, c->reply_to, list_reply(ctx, g));
        return;
    case OP_CLOSE:
        g->closed = true;
        maybe_finish(ctx, g);
        return;
    default:
        return;
    }
}

static int group_handle(tr_ctx *ctx, void *state, tr_msg *msg) {
    group *g = state;
    switch (tr_msg_tag(msg)) {
    case TR_TAG_TASK_RESULT: {
        task_rec *t = task_of(g, tr_msg_sender(msg));
        tr_msg *res = NULL;
        if (t != NULL && g->phase != G_DONE &&
            tr_task_result_take(msg, &res) == 0) {
            free_msg(t->result);
            t->result = res;
        }
        return 0;
    }
    case TAG_CMD:
        handle_cmd(ctx, g, msg);
        return 0;
    default:
        return TR_UNHANDLED; /* counted, and logged in debug mode */
    }
}

static const tr_behavior group_behavior = {
    .name = "task-group",
    .handle = group_handle,
    .on_start = group_on_start,
    .on_stop = group_on_stop,
    .on_cancel = group_on_cancel,
    .on_child_exit = group_on_child_exit,
    .state_size = sizeof(group),
    .grace_ms = TR_GROUP_GRACE_MS,
};

/* ---- starting */

static int group_prepare(const tr_group_config *cfg, group_init **out) {
    if (cfg == NULL || (cfg->ntasks > 0 && cfg->tasks == NULL) ||
        cfg->ntasks > UINT32_MAX / 4)
        return TR_EINVAL;
    for (size_t i = 0; i < cfg->ntasks; i++)
        if (spec_check(&cfg->tasks[i]) != 0)
            return TR_EINVAL;
    group_init *gi = calloc(1, sizeof *gi);
    if (gi == NULL)
        return TR_ENOMEM;
    gi->owner = cfg->owner;
    gi->keep_open = cfg->keep_open;
    if (cfg->ntasks > 0) {
        gi->specs = calloc(cfg->ntasks, sizeof *gi->specs);
        if (gi->specs == NULL) {
            free(gi);
            return TR_ENOMEM;
        }
    }
    for (size_t i = 0; i < cfg->ntasks; i++) {
        int rc = spec_copy_make(&gi->specs[i], &cfg->tasks[i]);
        if (rc != 0) {
            group_init_free(gi);
            return rc;
        }
        gi->ntasks++;
    }
    *out = gi;
    return 0;
}

TR_API int tr_group_start(tr_ctx *ctx, const tr_group_config *cfg,
                          tr_ref *out) {
    if (ctx == NULL)
        return TR_EINVAL;
    group_init *gi = NULL;
    int rc = group_prepare(cfg, &gi);
    if (rc != 0)
        return rc;
    if (tr_ref_is_none(gi->owner))
        gi->owner = tr_self(ctx);
    rc = tr_spawn(ctx, &group_behavior, &gi, sizeof gi, out);
    if (rc != 0)
        group_init_free(gi);
    return rc;
}

TR_API int tr_runtime_group_start(tr_runtime *rt, const tr_group_config *cfg,
                                  tr_ref *out) {
    if (rt == NULL)
        return TR_EINVAL;
    group_init *gi = NULL;
    int rc = group_prepare(cfg, &gi);
    if (rc != 0)
        return rc;
    rc = tr_runtime_spawn(rt, &group_behavior, &gi, sizeof gi, out);
    if (rc != 0)
        group_init_free(gi);
    return rc;
}

/* ---- results */

TR_API int tr_task_result(tr_ctx *ctx, tr_msg **result) {
    if (ctx == NULL || result == NULL || *result == NULL)
        return TR_EINVAL;
    tr_msg *wrap = tr_msg_new_ptr(TR_TAG_TASK_RESULT, *result, 0, free_msg);
    if (wrap == NULL)
        return TR_ENOMEM;
    int rc = tr_send(ctx, tr_parent(ctx), &wrap);
    if (rc != 0) {
        void *p = NULL;
        (void)tr_msg_take_ptr(wrap, &p); /* the caller keeps its result */
        (void)tr_msg_destroy(&wrap);
        return rc;
    }
    *result = NULL;
    return 0;
}

TR_API int tr_task_result_u64(tr_ctx *ctx, uint32_t tag, uint64_t value) {
    tr_msg *m = tr_msg_new_u64(tag, value);
    if (m == NULL)
        return TR_ENOMEM;
    int rc = tr_task_result(ctx, &m);
    if (rc != 0)
        (void)tr_msg_destroy(&m);
    return rc;
}

TR_API int tr_task_result_take(tr_msg *msg, tr_msg **out) {
    if (msg == NULL || out == NULL)
        return TR_EINVAL;
    if (tr_msg_tag(msg) != TR_TAG_TASK_RESULT ||
        tr_msg_kind(msg) != TR_PAYLOAD_PTR)
        return TR_EPAYLOAD;
    void *p = NULL;
    int rc = tr_msg_take_ptr(msg, &p);
    if (rc != 0)
        return rc;
    *out = p;
    return 0;
}

/* ---- asking from a handler */

static int request_cmd(tr_ctx *ctx, tr_ref group_ref, group_cmd *c,
                       int64_t timeout_ms, uint64_t *req_id) {
    tr_msg *m = cmd_msg(c);
    if (m == NULL)
        return TR_ENOMEM;
    int rc = tr_request(ctx, group_ref, &m, timeout_ms, req_id);
    if (rc != 0) {
        (void)tr_msg_destroy(&m);
        if (rc == TR_ENOACTOR)
            rc = TR_ESTATE; /* the group has ended */
    }
    return rc;
}

TR_API int tr_group_add(tr_ctx *ctx, tr_ref group_ref, const tr_task_spec *spec,
                        int64_t timeout_ms, uint64_t *req_id) {
    if (ctx == NULL)
        return TR_EINVAL;
    group_cmd *c = cmd_new(OP_ADD);
    if (c == NULL)
        return TR_ENOMEM;
    int rc = spec_copy_make(&c->spec, spec);
    if (rc != 0) {
        cmd_free(c);
        return rc;
    }
    return request_cmd(ctx, group_ref, c, timeout_ms, req_id);
}

TR_API int tr_group_cancel_task(tr_ctx *ctx, tr_ref group_ref, uint32_t index,
                                int64_t timeout_ms, uint64_t *req_id) {
    if (ctx == NULL)
        return TR_EINVAL;
    group_cmd *c = cmd_new(OP_CANCEL);
    if (c == NULL)
        return TR_ENOMEM;
    c->index = index;
    return request_cmd(ctx, group_ref, c, timeout_ms, req_id);
}

TR_API int tr_group_list(tr_ctx *ctx, tr_ref group_ref, int64_t timeout_ms,
                         uint64_t *req_id) {
    if (ctx == NULL)
        return TR_EINVAL;
    group_cmd *c = cmd_new(OP_LIST);
    if (c == NULL)
        return TR_ENOMEM;
    return request_cmd(ctx, group_ref, c, timeout_ms, req_id);
}

TR_API int tr_group_close(tr_runtime *rt, tr_ref group_ref) {
    if (rt == NULL)
        return TR_EINVAL;
    group_cmd *c = cmd_new(OP_CLOSE);
    tr_msg *m = c != NULL ? cmd_msg(c) : NULL;
    if (m == NULL)
        return TR_ENOMEM;
    int rc = tr_runtime_send(rt, group_ref, &m);
    if (rc != 0) {
        (void)tr_msg_destroy(&m);
        if (rc == TR_ENOACTOR)
            rc = TR_ESTATE;
    }
    return rc;
}

/* ---- asking from a foreign thread: a helper actor carries the call */

typedef struct sync_call {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int refs; /* the waiting thread and the helper */
    bool done;
    int rc;
    uint32_t index;
    tr_msg *list;
} sync_call;

typedef struct call_helper {
    sync_call *call;
    group_cmd *cmd; /* until sent */
    tr_ref group;
    uint64_t mon;
} call_helper;

static void call_unref(sync_call *c) {
    pthread_mutex_lock(&c->lock);
    int left = --c->refs;
    pthread_mutex_unlock(&c->lock);
    if (left > 0)
        return;
    free_msg(c->list);
    pthread_cond_destroy(&c->cond);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

/* First completion wins; a later one (or one after the waiter gave up)
 * only frees what it carried. */
static void call_complete(sync_call *c, int rc, uint32_t index, tr_msg *list) {
    pthread_mutex_lock(&c->lock);
    if (!c->done) {
        c->done = true;
        c->rc = rc;
        c->index = index;
        c->list = list;
        list = NULL;
        pthread_cond_broadcast(&c->cond);
    }
    pthread_mutex_unlock(&c->lock);
    free_msg(list);
}

static int helper_on_start(tr_ctx *ctx, void *state) {
    call_helper *h = state;
    group_cmd *c = h->cmd;
    h->cmd = NULL;
    c->reply_to = tr_self(ctx);
    /* Monitor first: the DOWN then comes after any answer (same sender). */
    int rc = tr_monitor(ctx, h->group, &h->mon);
    if (rc != 0) {
        cmd_free(c);
    } else {
        tr_msg *m = cmd_msg(c);
        rc = m != NULL ? tr_send(ctx, h->group, &m) : TR_ENOMEM;
        if (m != NULL)
            (void)tr_msg_destroy(&m);
    }
    if (rc == 0)
        return 0;
    call_complete(h->call, rc == TR_ENOACTOR ? TR_ESTATE : rc, 0, NULL);
    return TR_STOP;
}

static int helper_handle(tr_ctx *ctx, void *state, tr_msg *msg) {
    call_helper *h = state;
    if (tr_msg_tag(msg) == TR_TAG_DOWN) {
        call_complete(h->call, TR_ESTATE, 0, NULL);
        return TR_STOP;
    }
    if (tr_msg_tag(msg) != TR_TAG_GROUP_REPLY)
        return TR_UNHANDLED;
    (void)tr_demonitor(ctx, h->mon);
    if (tr_msg_kind(msg) != TR_PAYLOAD_PTR) {
        uint32_t idx = 0;
        int rc = tr_group_reply_status(msg, &idx);
        call_complete(h->call, rc, idx, NULL);
        return TR_STOP;
    }
    /* A list: move the payload into a message the caller will own. */
    void *p = NULL;
    if (tr_msg_take_ptr(msg, &p) != 0) {
        call_complete(h->call, TR_EPROTO, 0, NULL);
        return TR_STOP;
    }
    tr_msg *own = tr_msg_new_ptr(TR_TAG_GROUP_REPLY, p, sizeof(group_report),
                                 report_free);
    if (own == NULL)
        report_free(p);
    call_complete(h->call, own != NULL ? 0 : TR_ENOMEM, 0, own);
    return TR_STOP;
}

static void helper_on_stop(tr_ctx *ctx, void *state, int reason) {
    call_helper *h = state;
    (void)ctx;
    cmd_free(h->cmd); /* never started */
    h->cmd = NULL;
    call_complete(h->call,
                  reason == TR_EXIT_SHUTDOWN ? TR_ESTOPPED : TR_ECANCELLED, 0,
                  NULL);
    call_unref(h->call);
}

static const tr_behavior call_helper_behavior = {
    .name = "task-group-call",
    .handle = helper_handle,
    .on_start = helper_on_start,
    .on_stop = helper_on_stop,
    .state_size = sizeof(call_helper),
};

static void deadline_after(struct timespec *ts, int64_t ms) {
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += (time_t)(ms / 1000);
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

/* Runs command c (taken in every case) through a helper; waits. */
static int sync_run(tr_runtime *rt, tr_ref group_ref, group_cmd *c,
                    int64_t timeout_ms, uint32_t *index, tr_msg **list) {
    if (rt == NULL || timeout_ms < -1) {
        cmd_free(c);
        return TR_EINVAL;
    }
    if (tr__sched_current() != NULL) {
        cmd_free(c); /* a handler must not block its worker */
        return TR_ESTATE;
    }
    sync_call *call = calloc(1, sizeof *call);
    if (call == NULL) {
        cmd_free(c);
        return TR_ENOMEM;
    }
    pthread_mutex_init(&call->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&call->cond, &ca);
    pthread_condattr_destroy(&ca);
    call->refs = 2;
    call_helper init = {.call = call, .cmd = c, .group = group_ref};
    tr_ref helper = TR_REF_NONE;
    int rc = tr_runtime_spawn(rt, &call_helper_behavior, &init, sizeof init,
                              &helper);
    if (rc != 0) {
        cmd_free(c);
        call->refs = 1;
        call_unref(call);
        return rc;
    }
    struct timespec deadline;
    deadline_after(&deadline, timeout_ms > 0 ? timeout_ms : 0);
    tr_msg *got = NULL;
    bool gave_up = false;
    pthread_mutex_lock(&call->lock);
    while (!call->done) {
        if (timeout_ms < 0)
            pthread_cond_wait(&call->cond, &call->lock);
        else if (pthread_cond_timedwait(&call->cond, &call->lock, &deadline) ==
                 ETIMEDOUT)
            break;
    }
    if (call->done) {
        rc = call->rc;
        if (index != NULL)
            *index = call->index;
        got = call->list;
        call->list = NULL;
    } else {
        call->done = true; /* a late answer is dropped by call_complete */
        gave_up = true;
        rc = TR_ETIMEDOUT;
    }
    pthread_mutex_unlock(&call->lock);
    if (gave_up)
        (void)tr_kill(rt, helper);
    call_unref(call);
    if (list != NULL)
        *list = got;
    else
        free_msg(got);
    return rc;
}

TR_API int tr_group_add_sync(tr_runtime *rt, tr_ref group_ref,
                             const tr_task_spec *spec, int64_t timeout_ms,
                             uint32_t *index) {
    group_cmd *c = cmd_new(OP_ADD);
    if (c == NULL)
        return TR_ENOMEM;
    int rc = spec_copy_make(&c->spec, spec);
    if (rc != 0) {
        cmd_free(c);
        return rc;
    }
    return sync_run(rt, group_ref, c, timeout_ms, index, NULL);
}

TR_API int tr_group_cancel_task_sync(tr_runtime *rt, tr_ref group_ref,
                                     uint32_t index, int64_t timeout_ms) {
    group_cmd *c = cmd_new(OP_CANCEL);
    if (c == NULL)
        return TR_ENOMEM;
    c->index = index;
    return sync_run(rt, group_ref, c, timeout_ms, NULL, NULL);
}

TR_API int tr_group_list_sync(tr_runtime *rt, tr_ref group_ref,
                              int64_t timeout_ms, tr_msg **out) {
    if (out == NULL)
        return TR_EINVAL;
    *out = NULL;
    group_cmd *c = cmd_new(OP_LIST);
    if (c == NULL)
        return TR_ENOMEM;
    return sync_run(rt, group_ref, c, timeout_ms, NULL, out);
}

/* ---- reading */

static group_report *report_in(const tr_msg *m, uint32_t tag, uint32_t magic) {
    if (m == NULL || tr_msg_tag(m) != tag || tr_msg_kind(m) != TR_PAYLOAD_PTR)
        return NULL;
    size_t len = 0;
    group_report *r = (group_report *)tr_msg_data(m, &len);
    if (r == NULL || len != sizeof *r || r->magic != magic)
        return NULL;
    return r;
}

static void fill_info(const group_report *r, uint32_t i, tr_task_info *out) {
    const task_rec *t = &r->tasks[i];
    out->index = i;
    out->name = t->name;
    out->ref = t->ref;
    out->state = t->state;
    out->reason = t->reason;
    out->text = t->text != NULL ? t->text : "";
    out->result = t->result;
}

TR_API int tr_group_reply_status(const tr_msg *reply, uint32_t *index) {
    if (reply == NULL)
        return TR_EINVAL;
    if (tr_msg_tag(reply) == TR_TAG_TIMEOUT)
        return TR_ETIMEDOUT;
    if (tr_msg_tag(reply) != TR_TAG_GROUP_REPLY)
        return TR_EPAYLOAD;
    if (report_in(reply, TR_TAG_GROUP_REPLY, REPORT_LIST) != NULL)
        return 0;
    if (tr_msg_kind(reply) != TR_PAYLOAD_U64)
        return TR_EPAYLOAD;
    uint64_t v = tr_msg_u64(reply);
    if (index != NULL)
        *index = (uint32_t)v;
    return (int)(int32_t)(uint32_t)(v >> 32);
}

TR_API size_t tr_group_list_count(const tr_msg *list) {
    const group_report *r = report_in(list, TR_TAG_GROUP_REPLY, REPORT_LIST);
    return r != NULL ? r->ntasks : 0;
}

TR_API int tr_group_list_task(const tr_msg *list, size_t i, tr_task_info *out) {
    const group_report *r = report_in(list, TR_TAG_GROUP_REPLY, REPORT_LIST);
    if (r == NULL)
        return TR_EPAYLOAD;
    if (out == NULL || i >= r->ntasks)
        return TR_EINVAL;
    fill_info(r, (uint32_t)i, out);
    return 0;
}

TR_API int tr_group_done_summary(const tr_msg *done, tr_group_summary *out) {
    const group_report *r = report_in(done, TR_TAG_GROUP_DONE, REPORT_DONE);
    if (r == NULL)
        return TR_EPAYLOAD;
    if (out == NULL)
        return TR_EINVAL;
    memset(out, 0, sizeof *out);
    out->group = r->group;
    out->status = r->status;
    out->reason = r->reason;
    out->ntasks = r->ntasks;
    out->nfailed = r->nfailures;
    for (uint32_t i = 0; i < r->ntasks; i++) {
        if (r->tasks[i].state == TR_TASK_DONE)
            out->ndone++;
        else if (r->tasks[i].state == TR_TASK_CANCELLED)
            out->ncancelled++;
    }
    return 0;
}

TR_API int tr_group_done_task(const tr_msg *done, size_t i, tr_task_info *out) {
    const group_report *r = report_in(done, TR_TAG_GROUP_DONE, REPORT_DONE);
    if (r == NULL)
        return TR_EPAYLOAD;
    if (out == NULL || i >= r->ntasks)
        return TR_EINVAL;
    fill_info(r, (uint32_t)i, out);
    return 0;
}

TR_API int tr_group_done_failure(const tr_msg *done, size_t k,
                                 tr_task_info *out) {
    const group_report *r = report_in(done, TR_TAG_GROUP_DONE, REPORT_DONE);
    if (r == NULL)
        return TR_EPAYLOAD;
    if (out == NULL || k >= r->nfailures)
        return TR_EINVAL;
    fill_info(r, r->failures[k], out);
    return 0;
}

TR_API int tr_group_done_take_result(tr_msg *done, size_t i, tr_msg **out) {
    group_report *r = report_in(done, TR_TAG_GROUP_DONE, REPORT_DONE);
    if (r == NULL)
        return TR_EPAYLOAD;
    if (out == NULL || i >= r->ntasks)
        return TR_EINVAL;
    *out = r->tasks[i].result;
    r->tasks[i].result = NULL;
    return 0;
}

TR_API const char *tr_task_state_name(tr_task_state state) {
    switch (state) {
    case TR_TASK_RUNNING:
        return "running";
    case TR_TASK_CANCELLING:
        return "cancelling";
    case TR_TASK_DONE:
        return "done";
    case TR_TASK_FAILED:
        return "failed";
    case TR_TASK_CANCELLED:
        return "cancelled";
    default:
        return "unknown";
    }
}
