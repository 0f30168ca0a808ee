/* Supervisor internals shared by supervisor.c (the actor; executes
 * plans), supervisor_plan.c (decides plans: restart policy, calls),
 * supervisor_spec.c (specs, the child wrapper) and supervisor_call.c
 * (calls, replies, starting a supervisor). */
#ifndef TR_SUPERVISOR_INT_H
#define TR_SUPERVISOR_INT_H

#include <stdalign.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "troupe/actor.h"
#include "troupe/bounded.h"
#include "troupe/error.h"
#include "troupe/lifecycle.h"
#include "troupe/supervisor.h"
#include "troupe/timer.h"

/* Private tags (the public one is TR_TAG_SUP_REPLY = 0xFFFF5300). */
#define TR__SUP_TAG_CALL 0xFFFF5301u    /* PTR tr__sup_call */
#define TR__SUP_TAG_STARTED 0xFFFF5302u /* child -> supervisor: started */
#define TR__SUP_TAG_TICK 0xFFFF5303u    /* backoff timer */

#define TR__SUP_CALL_MAGIC 0x53555043u  /* "SUPC" */
#define TR__SUP_REPLY_MAGIC 0x53555052u /* "SUPR" */

/* Child states inside the supervisor. */
enum {
    TR__CH_STOPPED = 0, /* dead, no restart pending */
    TR__CH_RESTARTING,  /* dead, to be started (event, plan or backoff) */
    TR__CH_STARTING,    /* spawned, its on_start has not confirmed */
    TR__CH_RUNNING,     /* started */
    TR__CH_STOPPING     /* the supervisor asked it to stop */
};

/* Every supervised child runs under a wrapper behaviour (one per user
 * behaviour, see supervisor_spec.c) whose state starts with this header;
 * the user's state follows at TR__SUP_HDR (max_align_t aligned). */
typedef struct tr__sup_hdr {
    const tr_behavior *user;
} tr__sup_hdr;
#define TR__SUP_HDR                                                            \
    ((sizeof(tr__sup_hdr) + alignof(max_align_t) - 1) / alignof(max_align_t) * \
     alignof(max_align_t))

typedef struct tr__sup_child {
    uint64_t id;  /* stable within the supervisor; never reused */
    uint64_t inc; /* incarnations spawned so far */
    char name[TR_SUP_NAME_MAX];
    const tr_behavior *wrap; /* what is spawned (local) */
    unsigned char *blob;     /* tr__sup_hdr + padding + init bytes; remote:
                                the init bytes */
    size_t blob_len;
    char remote[64]; /* registered behaviour name; "" = local */
    char node[64];   /* "" = the worker pool */
    bool bounded;    /* local: spawned with `limit` */
    tr_mailbox_limit limit;
    tr_restart restart;
    int64_t shutdown_ms;
    tr_ref ref; /* live incarnation, or none */
    int st;     /* TR__CH_* */
    uint32_t restarts;
    uint32_t backoff_step; /* restarts in a row (backoff exponent) */
    int64_t started_ms;    /* when the incarnation confirmed its start */
    int64_t uptime_ms;     /* how long the last incarnation ran */
    int64_t due_ms;        /* RESTARTING: end of its backoff; 0 = none */
    int last_exit;
} tr__sup_child;

/* A call, moved to the supervisor as a PTR payload. */
typedef struct tr__sup_call {
    uint32_t magic;
    uint32_t op; /* tr_sup_op */
    uint64_t call_id;
    tr_ref reply_to;
    char name[TR_SUP_NAME_MAX];
    tr__sup_child *child; /* START_CHILD: the prepared child, owned */
} tr__sup_call;

/* Reply wire format (BYTES payload): this header, then nchildren
 * tr_sup_child_info records. */
typedef struct tr__sup_reply_wire {
    uint32_t magic;
    uint32_t op;
    uint64_t call_id;
    int32_t result;
    uint32_t nchildren;
    uint64_t ref;
} tr__sup_reply_wire;

/* The supervisor as built from a config and specs (before it runs). */
typedef struct tr__sup_setup {
    char name[TR_SUP_NAME_MAX];
    tr_sup_strategy strategy;
    uint32_t intensity;
    int64_t period_ms;
    int64_t backoff_min_ms, backoff_max_ms;
    uint32_t backoff_jitter_pct;
    uint64_t backoff_seed;
    tr_ref notify; /* TR_TAG_SUP_CHILD_UP to it (none: nothing) */
    tr__sup_child **kids; /* spec order */
    size_t nkids;
} tr__sup_setup;

/* The supervisor actor's state (tr_sup_behavior.state_size): what
 * tr_sup_start prepared, or the args of a spec (then built in on_start). */
typedef struct tr__sup_state {
    tr_sup_args args;
    tr__sup_setup *setup; /* owned until on_start takes it */
    struct tr__sup *sup;  /* the running supervisor (supervisor.c) */
    bool confirm_start;   /* set by the wrapper: a parent supervisor waits
                             for TR__SUP_TAG_STARTED */
} tr__sup_state;

/* supervisor_spec.c */
int tr__sup_check_config(const tr_sup_config *cfg);
int tr__sup_check_spec(const tr_sup_spec *spec, int depth);
int tr__sup_child_new(const tr_sup_spec *spec, tr__sup_child **out);
void tr__sup_child_free(tr__sup_child *c);
int tr__sup_setup_new(const tr_sup_config *cfg, const tr_sup_spec *children,
                      size_t n, int depth, tr__sup_setup **out);
void tr__sup_setup_free(tr__sup_setup *s);

/* supervisor_call.c */
void tr__sup_call_free(void *call);
/* Sends the reply to a call (from the supervisor's handler or hooks);
 * children/nchildren only for which_children. */
void tr__sup_reply(tr_ctx *ctx, const tr__sup_call *call, int result,
                   tr_ref ref, const tr_sup_child_info *children,
                   size_t nchildren);

/* ---- the running supervisor (supervisor.c, supervisor_plan.c) ---- */

/* Plan kinds (supervisor.c's design notes). */
enum {
    TR__PL_NONE = 0,
    TR__PL_INIT,
    TR__PL_RESTART,
    TR__PL_DUE,
    TR__PL_CMD,
    TR__PL_SHUTDOWN
};

typedef struct tr__sup_plan {
    int kind;
    uint64_t *stop, *start; /* child ids; capacity = the supervisor's cap */
    size_t nstop, istop, nstart, istart;
    uint64_t waiting;   /* child id whose exit/confirmation we wait for */
    int64_t delay_ms;   /* backoff between the stops and the starts */
    tr__sup_call *call; /* CMD: the call to answer */
    uint64_t target;    /* CMD: its child */
    int result;         /* CMD: the answer */
    tr_ref ref;         /* CMD: the started child */
} tr__sup_plan;

typedef struct tr__sup_event {
    uint64_t id, inc;
} tr__sup_event;

typedef struct tr__sup {
    tr__sup_setup *set; /* config; set->kids are the children, spec order */
    size_t cap;         /* capacity of set->kids and of the plan lists */
    tr_ref self;
    uint64_t next_id;
    int64_t *ring; /* restart times (ms), a ring of `intensity` slots */
    uint32_t ring_head, ring_count;
    uint64_t rng;
    tr__sup_event *ev;
    size_t nev, capev;
    tr__sup_call **calls;
    size_t ncalls, capcalls;
    tr__sup_plan p;
    tr_timer_id timer;
    int64_t timer_due;
    uint64_t timer_seq;
    bool started;       /* INIT done */
    bool stopping;      /* SHUTDOWN begun */
    bool done;          /* tr_stop/tr_fail issued */
    bool due_pending;   /* a backoff tick arrived */
    bool in_cancel;     /* inside on_cancel: end by returning 0 */
    bool confirm_start; /* nested: tell the parent supervisor when started */
    int fail_code;
    int cancel_reason;
    char fail_text[256];
} tr__sup;

static inline bool tr__sup_alive(const tr__sup_child *c) {
    return c->st >= TR__CH_STARTING;
}

/* supervisor.c */
tr__sup_child *tr__sup_find_id(tr__sup *s, uint64_t id, size_t *idx);
tr__sup_child *tr__sup_find_name(tr__sup *s, const char *name);
void tr__sup_remove_child(tr__sup *s, tr__sup_child *c);
/* Room for `need` children in the list and in the plan lists. */
bool tr__sup_grow(tr__sup *s, size_t need);
/* Stops every child, then ends: a cancel (code 0) or a failure (code < 0,
 * with the text). Takes over the running plan, but keeps waiting for the
 * child it waits for. */
void tr__sup_begin_shutdown(tr_ctx *ctx, tr__sup *s, int code, const char *fmt,
                            ...) __attribute__((format(printf, 4, 5)));

/* supervisor_plan.c */
void tr__sup_plan_reset(tr__sup *s, int kind);
/* Picks the next plan when idle (events, due backoffs, calls); false if
 * there is nothing to do. */
bool tr__sup_next_job(tr_ctx *ctx, tr__sup *s);
/* Keeps the backoff timer armed for the earliest due restart. */
void tr__sup_arm_timer(tr_ctx *ctx, tr__sup *s);
void tr__sup_reply_which(tr_ctx *ctx, tr__sup *s, const tr__sup_call *call);
/* Answers a call with a bare result and frees it. */
void tr__sup_answer(tr_ctx *ctx, tr__sup_call *call, int result);

#endif
