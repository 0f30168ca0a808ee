/* examples/supervised.c — structured concurrency in one small service.
 *
 *   root
 *    ├── supervisor "service" (one_for_one, 10 restarts / 5 s, backoff)
 *    │    ├── "clock"   permanent: ticks the service every 10 ms
 *    │    └── "worker"  permanent: handles ticks, crashes every Nth one
 *    └── scope "batch" (move_on_after D ms)
 *         └── body: spawns K "cruncher" children that never finish
 *
 * What it shows: the worker fails (tr_fail with a text); the supervisor
 * restarts it (a new actor, new reference) within its intensity, with a
 * backoff; the batch scope's deadline cancels its whole subtree (body and
 * crunchers; each runs its cleanup); SIGINT/SIGTERM or the end of
 * --duration stop the whole tree in order (tr_runtime_shutdown).
 *
 * Output: one line per event, then a summary whose last line is
 * `restarts=<n> handled=<n> scope=<outcome> cleaned=<n>/<k> ...`.
 * Exit status: 0, or 128 + signal when interrupted, 1 on an error. */
#define _GNU_SOURCE
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <troupe/troupe.h>

enum {
    TAG_TICK = 1,  /* clock -> itself (periodic timer) */
    TAG_WORK,      /* clock -> worker: one unit of work */
    TAG_EV_START,  /* -> main: a worker incarnation started */
    TAG_EV_HANDLE, /* -> main: handled so far (u64) */
    TAG_EV_CLEAN   /* -> main: a cruncher ran its cleanup */
};

struct opts {
    unsigned fail_every;
    unsigned crunchers;
    int64_t deadline_ms;
    int64_t duration_ms;
};

/* ---- worker: crashes on every fail_every-th unit ---- */

struct worker {
    tr_ref report;
    unsigned fail_every;
    uint64_t handled;
};

static int worker_start(tr_ctx *ctx, void *state) {
    struct worker *w = state;
    return tr_send_u64(ctx, w->report, TAG_EV_START, tr_self(ctx).id);
}

static int worker_handle(tr_ctx *ctx, void *state, tr_msg *msg) {
    struct worker *w = state;
    if (tr_msg_tag(msg) != TAG_WORK)
        return TR_UNHANDLED;
    uint64_t unit = tr_msg_u64(msg);
    if (w->fail_every > 0 && unit % w->fail_every == 0)
        return tr_fail(ctx, TR_EPROTO, "unit %" PRIu64 " is corrupt", unit);
    w->handled++;
    return tr_send_u64(ctx, w->report, TAG_EV_HANDLE, 1);
}

static const tr_behavior worker_beh = {.name = "worker",
                                       .handle = worker_handle,
                                       .on_start = worker_start,
                                       .state_size = sizeof(struct worker)};

/* ---- clock: sends work to whichever worker incarnation is current ---- */

struct clock {
    tr_ref sup; /* the supervisor, asked for the worker's reference */
    uint64_t unit;
    tr_ref worker;
    tr_timer_id timer;
};

static int clock_start(tr_ctx *ctx, void *state) {
    struct clock *c = state;
    c->sup = tr_parent(ctx);
    return tr_send_every(tr_ctx_runtime(ctx), tr_self(ctx), 10, TAG_TICK,
                         &c->timer);
}

static int clock_handle(tr_ctx *ctx, void *state, tr_msg *msg) {
    struct clock *c = state;
    if (tr_msg_tag(msg) == TR_TAG_SUP_REPLY) {
        /* which_children answer: pick up the current worker. */
        tr_sup_reply r;
        if (tr_sup_reply_read(msg, &r) != 0 || r.result != 0)
            return 0;
        for (size_t i = 0; i < r.nchildren; i++) {
            tr_sup_child_info ci;
            if (tr_sup_reply_child(msg, i, &ci) == 0 &&
                strcmp(ci.name, "worker") == 0)
                c->worker = ci.ref;
        }
        return 0;
    }
    if (tr_msg_tag(msg) != TAG_TICK)
        return TR_UNHANDLED;
    int rc = tr_ref_is_none(c->worker)
                 ? TR_ENOACTOR
                 : tr_send_u64(ctx, c->worker, TAG_WORK, ++c->unit);
    if (rc == TR_ENOACTOR) /* restarted (new reference) or not known yet */
        return tr_sup_which_children(ctx, c->sup, NULL);
    return rc;
}

static void clock_stop(tr_ctx *ctx, void *state, int reason) {
    struct clock *c = state;
    (void)reason;
    (void)tr_timer_cancel(tr_ctx_runtime(ctx), c->timer);
}

static const tr_behavior clock_beh = {.name = "clock",
                                      .handle = clock_handle,
                                      .on_start = clock_start,
                                      .on_stop = clock_stop,
                                      .state_size = sizeof(struct clock)};

/* ---- the batch: crunchers under a deadline ---- */

struct cruncher {
    tr_ref report;
    uint64_t rounds;
};

static int cruncher_start(tr_ctx *ctx, void *state) {
    (void)state;
    return tr_send_tag(ctx, tr_self(ctx), TAG_TICK);
}

static int cruncher_handle(tr_ctx *ctx, void *state, tr_msg *msg) {
    struct cruncher *c = state;
    (void)msg;
    c->rounds++; /* "work" forever, one message at a time (cancellable) */
    return tr_send_tag(ctx, tr_self(ctx), TAG_TICK);
}

/* Cleanup runs whatever ends the actor: here, the scope's deadline. */
static void cruncher_stop(tr_ctx *ctx, void *state, int reason) {
    struct cruncher *c = state;
    if (reason == TR_EXIT_CANCELLED)
        (void)tr_runtime_send_u64(tr_ctx_runtime(ctx), c->report, TAG_EV_CLEAN,
                                  c->rounds);
}

static const tr_behavior cruncher_beh = {.name = "cruncher",
                                         .handle = cruncher_handle,
                                         .on_start = cruncher_start,
                                         .on_stop = cruncher_stop,
                                         .state_size = sizeof(struct cruncher)};

struct batch {
    tr_ref report;
    unsigned crunchers;
};

static int batch_start(tr_ctx *ctx, void *state) {
    struct batch *b = state;
    struct cruncher init = {b->report, 0};
    for (unsigned i = 0; i < b->crunchers; i++) {
        int rc = tr_spawn(ctx, &cruncher_beh, &init, sizeof init, NULL);
        if (rc != 0)
            return rc;
    }
    return 0;
}

static int batch_handle(tr_ctx *ctx, void *state, tr_msg *msg) {
    (void)ctx;
    (void)state;
    (void)msg;
    return TR_UNHANDLED;
}

static const tr_behavior batch_beh = {.name = "batch",
                                      .handle = batch_handle,
                                      .on_start = batch_start,
                                      .state_size = sizeof(struct batch)};

/* ---- main ---- */

struct run_arg {
    tr_runtime *rt;
    int rc;
};

static void *run_main(void *arg) {
    struct run_arg *ra = arg;
    ra->rc = tr_runtime_run(ra->rt);
    return NULL;
}

struct tally {
    uint64_t starts, handled, cleaned;
    uint32_t sup_restarts;
    const char *scope;
};

/* Main's view of what happens, from the messages in its inbox. */
static void event(struct tally *t, tr_msg **m) {
    if (t->scope == NULL)
        t->scope = "running";
    switch (tr_msg_tag(*m)) {
    case TAG_EV_START:
        if (t->starts++ > 0)
            printf("supervised: worker crashed; the supervisor restarted it "
                   "(restart %" PRIu64 ", new ref %" PRIx64 ")\n",
                   t->starts - 1, tr_msg_u64(*m));
        break;
    case TAG_EV_HANDLE:
        t->handled += tr_msg_u64(*m);
        break;
    case TAG_EV_CLEAN:
        t->cleaned++;
        break;
    case TR_TAG_SCOPE_DONE: {
        tr_scope_info si;
        if (tr_scope_done_info(*m, &si) == 0) {
            t->scope = tr_scope_outcome_name(si.outcome);
            printf("supervised: batch deadline reached: scope %s, its %s "
                   "subtree stopped (body: %s)\n",
                   t->scope, "whole", tr_exit_reason_name(si.body_reason));
        }
        break;
    }
    default:
        break;
    }
    tr_msg_destroy(m);
}

static int usage(const char *argv0) {
    fprintf(stderr,
            "usage: %s [--fail-every N] [--crunchers K] [--deadline MS] "
            "[--duration MS]\n",
            argv0);
    return 2;
}

static int parse(int argc, char **argv, struct opts *o) {
    *o = (struct opts){7, 4, 300, 1500};
    for (int i = 1; i < argc; i += 2) {
        if (i + 1 >= argc)
            return -1;
        char *end = NULL;
        long long v = strtoll(argv[i + 1], &end, 10);
        if (end == argv[i + 1] || *end != 0 || v < 0 || v > 100000000)
            return -1;
        if (strcmp(argv[i], "--fail-every") == 0)
            o->fail_every = (unsigned)v;
        else if (strcmp(argv[i], "--crunchers") == 0 && v <= 10000)
            o->crunchers = (unsigned)v;
        else if (strcmp(argv[i], "--deadline") == 0)
            o->deadline_ms = v;
        else if (strcmp(argv[i], "--duration") == 0)
            o->duration_ms = v;
        else
            return -1;
    }
    return 0;
}

static int fail(const char *what, int rc) {
    fprintf(stderr, "supervised: %s: %s\n", what, tr_strerror(rc));
    return 1;
}

int main(int argc, char **argv) {
    struct opts o;
    if (parse(argc, argv, &o) != 0)
        return usage(argv[0]);
    tr_runtime *rt = NULL;
    tr_inbox *inbox = NULL;
    tr_runtime_config cfg = {.handle_signals = true, .track_depth = true};
    int rc = tr_runtime_create(&rt, &cfg);
    if (rc != 0)
        return fail("tr_runtime_create", rc);
    if ((rc = tr_inbox_create(rt, &inbox)) != 0)
        return fail("tr_inbox_create", rc);
    tr_ref report = tr_inbox_ref(inbox);

    struct worker wi = {report, o.fail_every, 0};
    struct clock ci = {0};
    tr_sup_spec specs[] = {
        {.name = "clock",
         .behavior = &clock_beh,
         .init = &ci,
         .init_len = sizeof ci,
         .restart = TR_RESTART_PERMANENT,
         .shutdown_ms = TR_SUP_SHUTDOWN_DEFAULT},
        {.name = "worker",
         .behavior = &worker_beh,
         .init = &wi,
         .init_len = sizeof wi,
         .restart = TR_RESTART_PERMANENT,
         .shutdown_ms = 1000},
    };
    tr_sup_config sc = {.name = "service",
                        .strategy = TR_SUP_ONE_FOR_ONE,
                        .intensity = 10,
                        .period_ms = 5000,
                        .backoff_min_ms = 20,
                        .backoff_max_ms = 200,
                        .backoff_jitter_pct = 20};
    tr_ref sup, scope;
    if ((rc = tr_sup_runtime_start(rt, &sc, specs, 2, &sup)) != 0)
        return fail("tr_sup_runtime_start", rc);
    struct batch bi = {report, o.crunchers};
    tr_scope_config scfg = tr_move_on_after(o.deadline_ms, report);
    if ((rc = tr_runtime_scope_start(rt, &scfg, &batch_beh, &bi, sizeof bi,
                                     &scope)) != 0)
        return fail("tr_runtime_scope_start", rc);

    printf("supervised: service (clock + worker failing every %u units) and "
           "a batch of %u crunchers under move_on_after(%" PRId64 " ms)\n",
           o.fail_every, o.crunchers, o.deadline_ms);
    fflush(stdout);

    /* The runtime runs on its own thread; main follows the events. */
    struct run_arg ra = {rt, 0};
    pthread_t runner;
    if (pthread_create(&runner, NULL, run_main, &ra) != 0)
        return fail("pthread_create", TR_ESYS);

    struct tally t = {0};
    int64_t end = tr_now_ms() + o.duration_ms;
    while (tr_now_ms() < end && tr_runtime_exit_code(rt) == 0) {
        tr_msg *m = NULL;
        if (tr_inbox_recv(inbox, 20, &m) == 0)
            event(&t, &m);
    }

    /* Introspection while it runs: the supervisor's view of its children. */
    tr_sup_child_info *kids = NULL;
    size_t nk = 0;
    if (tr_runtime_exit_code(rt) == 0 &&
        (rc = tr_sup_which_children_sync(rt, sup, 2000, &kids, &nk)) == 0) {
        for (size_t i = 0; i < nk; i++) {
            printf("supervised: child %-6s %-10s restarts=%u mailbox=%" PRId64
                   "\n",
                   kids[i].name, tr_sup_child_state_name(kids[i].state),
                   kids[i].restarts, kids[i].mailbox_depth);
            if (strcmp(kids[i].name, "worker") == 0)
                t.sup_restarts = kids[i].restarts;
        }
        tr_sup_children_free(&kids);
    } else if (tr_runtime_exit_code(rt) == 0) {
        fprintf(stderr, "supervised: which_children: %s\n", tr_strerror(rc));
    }

    /* Orderly stop of the whole tree (unless a signal already began it:
     * a second request would stop at once). */
    if (tr_runtime_exit_code(rt) == 0)
        (void)tr_runtime_shutdown(rt);
    pthread_join(runner, NULL);
    tr_msg *m = NULL;
    while (tr_inbox_recv(inbox, 0, &m) == 0)
        event(&t, &m);
    int code = tr_runtime_exit_code(rt);
    tr_inbox_destroy(&inbox);
    tr_runtime_destroy(&rt);

    printf("restarts=%" PRIu64 " handled=%" PRIu64 " scope=%s cleaned=%" PRIu64
           "/%u supervisor_restarts=%u run_rc=%d\n",
           t.starts > 0 ? t.starts - 1 : 0, t.handled, t.scope, t.cleaned,
           o.crunchers, t.sup_restarts, ra.rc);
    if (code != 0)
        return code;
    bool ok = ra.rc == 0 && t.starts > 0 &&
              (o.fail_every == 0 || t.starts > 1) &&
              strcmp(t.scope, "cancelled_caught") == 0 &&
              t.cleaned == o.crunchers;
    return ok ? 0 : 1;
}
