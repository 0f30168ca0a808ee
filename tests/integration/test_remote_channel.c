/* Channels and limiters between processes: a channel (troupe/channel.h)
 * lives in the main process under a registered name (tr_name_register);
 * actors in worker processes reach it with tr_main_lookup and open, put,
 * close and take through the proxy, as local actors do. This program is
 * also its own worker (main() registers the behaviours and calls
 * tr_worker_main first).
 *
 * Covers: (a) remote producers, local consumers: every item exactly once,
 * in order per producer, every consumer sees TR_TAG_CHANNEL_CLOSED;
 * (b) local producers, remote consumers: the same, seen from the worker
 * processes; (c) a remote producer whose process is killed -9 without
 * closing: its proxy ends, the channel counts it as closed and the
 * consumers see the end; (d) backpressure: a fast remote producer, a
 * small channel and a slow local consumer: the producer never gets far
 * ahead of the consumer (credit is held back while the channel is full),
 * and nothing is lost; (e) a producer and a consumer in one worker
 * process: the consumer's takes get through while the producer waits for
 * credit; (f) a limiter of the main process (troupe/limiter.h) shared by
 * users in worker processes: a service behind it never has more calls at
 * once than the limiter's capacity; (g) a holder killed -9 without
 * releasing gives its permit back (its proxy ends). Every remote actor's
 * proxy is watched: each ends normally (TR_ELOST for the killed one), and
 * each test is bounded (RUN_MS).
 *
 * Who closes when: a channel ends once every producer that OPENED it has
 * closed, so a producer that opens late (a worker process starts slowly)
 * could find the stream already ended by a fast one. A local "gate"
 * opens the channel before any producer exists and closes it once an
 * item of every producer has been seen: a producer's items reach the
 * channel after its open (order per sender), so by then every open has. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <signal.h>

#include "testutil.h"

enum {
    T_ITEM = 1,  /* u64: producer * ID_BASE + sequence number */
    T_NEXT,      /* a producer's next round of puts */
    T_GOT,       /* report: a consumer got this item */
    T_DONE,      /* report: a consumer saw CLOSED (u64: id << 32 | count) */
    T_BAD,       /* report: out of order or unknown item (u64: the item) */
    T_PUT,       /* report: a producer's puts so far (id << 32 | n) */
    T_READY,     /* report: a producer put all, stays open (u64: its pid) */
    T_OPENED,    /* report: the gate opened the channel */
    T_CLOSE_NOW, /* to the gate */
    T_WATCH,     /* to the watcher: monitor this ref (u64) */
    T_ENDED,     /* report: a watched proxy ended (u64: (int64) reason) */
    T_CALL,      /* to the service: a call (u64: caller id) */
    T_SERVED,    /* the service's timer: a call is done (u64: its slot) */
    T_RESULT,    /* from the service: your call is done (u64: caller id) */
    T_PROBE,     /* to the service: report the most calls at once */
    T_MAX,       /* report: the most calls the service had at once */
    T_STARTED,   /* report: a limiter user started (u64: id << 32 | pid) */
    T_FINISHED   /* report: a limiter user did its rounds (u64: its id) */
};

#define ID_BASE 1000000u
/* Items consumed before the backpressure test measures how far ahead its
 * producer runs: past the start, when what the producer put before its
 * lookup was answered (up to the proxy's queue of 256, then it is muted)
 * goes out at once. */
#define STEADY 500u
#define MAX_PROD 4
#define MAX_CONS 4
#define MAX_ITEMS 8000

static const char CHAN_NAME[] = "rc.channel";
static const char INBOX_NAME[] = "rc.inbox";
static const char LIMITER_NAME[] = "rc.limiter";
static const char SERVICE_NAME[] = "rc.service";

/* ---- producers: remote (registered) or local, one behaviour ---- */

typedef struct producer {
    uint32_t id, n;    /* items id * ID_BASE + 0..n-1 */
    uint32_t chunk;    /* puts per message handled */
    uint32_t every;    /* a T_PUT report every this many puts (0: none) */
    bool stay_open;    /* after its items: report T_READY, never close */
    tr_ref ch, report; /* local: given; remote: looked up */
    uint32_t sent;
} producer;

static int producer_start(tr_ctx *ctx, void *st) {
    producer *p = st;
    int rc;
    if (tr_ref_is_none(p->ch) &&
        ((rc = tr_main_lookup(ctx, CHAN_NAME, &p->ch)) != 0 ||
         (rc = tr_main_lookup(ctx, INBOX_NAME, &p->report)) != 0))
        return rc;
    if ((rc = tr_channel_open(ctx, p->ch)) != 0)
        return rc;
    return tr_send_tag(ctx, tr_self(ctx), T_NEXT);
}

static int producer_handle(tr_ctx *ctx, void *st, tr_msg *m) {
    producer *p = st;
    if (tr_msg_tag(m) != T_NEXT)
        return TR_UNHANDLED;
    int rc;
    for (uint32_t i = 0; i < p->chunk && p->sent < p->n; i++) {
        tr_msg *it = tr_msg_new_u64(T_ITEM, p->id * ID_BASE + p->sent);
        if ((rc = tr_channel_put(ctx, p->ch, &it)) != 0) {
            tr_msg_destroy(&it);
            return rc;
        }
        p->sent++;
        if (p->every > 0 && (p->sent % p->every == 0 || p->sent == p->n))
            tu_report(ctx, p->report, T_PUT, (uint64_t)p->id << 32 | p->sent);
    }
    if (p->sent < p->n)
        return tr_send_tag(ctx, tr_self(ctx), T_NEXT);
    if (p->stay_open) {
        tu_report(ctx, p->report, T_READY, (uint64_t)getpid());
        return 0;
    }
    if ((rc = tr_channel_close(ctx, p->ch)) != 0)
        return rc;
    return TR_STOP;
}

static const tr_behavior producer_beh = {.name = "rc.producer",
                                         .handle = producer_handle,
                                         .on_start = producer_start,
                                         .state_size = sizeof(producer)};

/* ---- consumers: remote (registered) or local, one behaviour ---- */

typedef struct consumer {
    uint32_t id;
    uint32_t work_us;  /* per item: a slow consumer */
    tr_ref ch, report; /* local: given; remote: looked up */
    uint32_t got;
    uint32_t next[MAX_PROD]; /* next sequence number expected at least */
} consumer;

static int consumer_start(tr_ctx *ctx, void *st) {
    consumer *c = st;
    int rc;
    if (tr_ref_is_none(c->ch) &&
        ((rc = tr_main_lookup(ctx, CHAN_NAME, &c->ch)) != 0 ||
         (rc = tr_main_lookup(ctx, INBOX_NAME, &c->report)) != 0))
        return rc;
    return tr_channel_take(ctx, c->ch);
}

static int consumer_handle(tr_ctx *ctx, void *st, tr_msg *m) {
    consumer *c = st;
    if (tr_msg_tag(m) == TR_TAG_CHANNEL_CLOSED) {
        tu_report(ctx, c->report, T_DONE, (uint64_t)c->id << 32 | c->got);
        return TR_STOP;
    }
    if (tr_msg_tag(m) != T_ITEM)
        return TR_UNHANDLED;
    uint64_t v = tr_msg_u64(m);
    uint64_t pid = v / ID_BASE, seq = v % ID_BASE;
    /* Items of one producer come in its order (some may have gone to
     * other consumers in between). */
    if (pid >= MAX_PROD || seq < c->next[pid])
        tu_report(ctx, c->report, T_BAD, v);
    else
        c->next[pid] = (uint32_t)seq + 1;
    c->got++;
    tu_report(ctx, c->report, T_GOT, v);
    if (c->work_us > 0)
        usleep(c->work_us);
    return tr_channel_take(ctx, c->ch);
}

static const tr_behavior consumer_beh = {.name = "rc.consumer",
                                         .handle = consumer_handle,
                                         .on_start = consumer_start,
                                         .state_size = sizeof(consumer)};

/* ---- the gate: opens first, closes when told ---- */

typedef struct gate {
    tr_ref ch, report;
} gate;

static int gate_start(tr_ctx *ctx, void *st) {
    gate *g = st;
    int rc = tr_channel_open(ctx, g->ch);
    if (rc == 0)
        tu_report(ctx, g->report, T_OPENED, 0);
    return rc;
}

static int gate_handle(tr_ctx *ctx, void *st, tr_msg *m) {
    gate *g = st;
    if (tr_msg_tag(m) != T_CLOSE_NOW)
        return TR_UNHANDLED;
    int rc = tr_channel_close(ctx, g->ch);
    return rc != 0 ? rc : TR_STOP;
}

static const tr_behavior gate_beh = {.name = "rc.gate",
                                     .handle = gate_handle,
                                     .on_start = gate_start,
                                     .state_size = sizeof(gate)};

/* ---- the watcher: tells the inbox how each remote actor's proxy ended */

static int watcher_handle(tr_ctx *ctx, void *st, tr_msg *m) {
    tr_ref *report = st;
    if (tr_msg_tag(m) == T_WATCH) {
        uint64_t mon;
        return tr_monitor(ctx, (tr_ref){tr_msg_u64(m)}, &mon);
    }
    tr_exit x;
    if (tr_msg_tag(m) != TR_TAG_DOWN || tr_msg_exit(m, &x) != 0)
        return TR_UNHANDLED;
    tu_report(ctx, *report, T_ENDED, (uint64_t)(int64_t)x.reason);
    return 0;
}

static const tr_behavior watcher_beh = {.name = "rc.watcher",
                                        .handle = watcher_handle,
                                        .state_size = sizeof(tr_ref)};

/* ---- the test side ---- */

typedef struct run {
    tu_env *e;
    tr_ref ch, gate, watcher;
    uint32_t nprod, ncons;
    uint32_t per[MAX_PROD]; /* items each producer puts */
    /* what the inbox said */
    uint32_t got[MAX_PROD], total, done, done_total;
    bool gate_closed;
    uint32_t put[MAX_PROD];        /* last T_PUT of each producer */
    uint32_t max_lead;             /* the most puts ahead of consumption */
    uint32_t max_lead_steady;      /* the same, once STEADY items came out */
    uint64_t ready_pid;            /* T_READY */
    uint32_t watched, ended, lost; /* remote actors; ended; with TR_ELOST */
} run;

/* Which items came out, how many times. */
static uint8_t g_seen[MAX_PROD][MAX_ITEMS];

/* Runtime, pool, channel (named), inbox (named), the gate opened. */
static void setup(run *r, tu_env *e, unsigned processes, uint32_t capacity,
                  int32_t window) {
    memset(r, 0, sizeof *r);
    r->e = e;
    tr_runtime_config cfg = {.workers = 2};
    tu_env_init_cfg(e, &cfg);
    (void)tu_spawn_keeper(e);
    TU_ASSERT_OK(tr_pool_start(
        e->rt, &(tr_pool_config){.processes = processes, .window = window}));
    TU_ASSERT_OK(tr_runtime_channel_spawn(e->rt, capacity, &r->ch));
    TU_ASSERT_OK(tr_name_register(e->rt, CHAN_NAME, r->ch));
    TU_ASSERT_OK(tr_name_register(e->rt, INBOX_NAME, e->inbox_ref));
    TU_ASSERT_OK(tr_runtime_spawn(e->rt, &gate_beh,
                                  &(gate){.ch = r->ch, .report = e->inbox_ref},
                                  sizeof(gate), &r->gate));
    TU_ASSERT_OK(tr_runtime_spawn(e->rt, &watcher_beh, &e->inbox_ref,
                                  sizeof e->inbox_ref, &r->watcher));
    tu_env_start(e);
    assert_int_equal(tu_recv_u64(e, T_OPENED, TU_PROMPT_MS), 0);
    memset(g_seen, 0, sizeof g_seen);
}

/* The watcher reports how this remote actor's proxy ends (T_ENDED). */
static void watch(run *r, tr_ref proxy) {
    r->watched++;
    TU_ASSERT_OK(tr_runtime_send_u64(r->e->rt, r->watcher, T_WATCH, proxy.id));
}

static void spawn_producer(run *r, bool remote, producer p) {
    assert_true(p.id < MAX_PROD && p.n <= MAX_ITEMS);
    r->per[p.id] = p.n;
    if (p.id + 1 > r->nprod)
        r->nprod = p.id + 1;
    if (remote) {
        tr_ref proxy;
        TU_ASSERT_OK(tr_runtime_spawn_remote(r->e->rt, "rc.producer", &p,
                                             sizeof p, &proxy));
        watch(r, proxy);
        return;
    }
    p.ch = r->ch;
    p.report = r->e->inbox_ref;
    TU_ASSERT_OK(tr_runtime_spawn(r->e->rt, &producer_beh, &p, sizeof p, NULL));
}

static void spawn_consumer(run *r, bool remote, consumer c) {
    r->ncons++;
    if (remote) {
        tr_ref proxy;
        TU_ASSERT_OK(tr_runtime_spawn_remote(r->e->rt, "rc.consumer", &c,
                                             sizeof c, &proxy));
        watch(r, proxy);
        return;
    }
    c.ch = r->ch;
    c.report = r->e->inbox_ref;
    TU_ASSERT_OK(tr_runtime_spawn(r->e->rt, &consumer_beh, &c, sizeof c, NULL));
}

/* Handles one report from the inbox. */
static void on_report(run *r, int64_t timeout_ms) {
    tr_msg *m = tu_recv(r->e, timeout_ms);
    uint32_t tag = tr_msg_tag(m);
    uint64_t v = tr_msg_u64(m);
    tr_msg_destroy(&m);
    switch (tag) {
    case T_GOT: {
        uint64_t pid = v / ID_BASE, seq = v % ID_BASE;
        if (pid >= r->nprod || seq >= r->per[pid])
            fail_msg("item %llu was never put", (unsigned long long)v);
        if (g_seen[pid][seq]++ != 0)
            fail_msg("item %llu delivered twice", (unsigned long long)v);
        r->got[pid]++;
        r->total++;
        break;
    }
    case T_DONE:
        r->done++;
        r->done_total += (uint32_t)v;
        break;
    case T_BAD:
        fail_msg("item %llu out of order for its producer",
                 (unsigned long long)v);
        break;
    case T_PUT: {
        uint32_t id = (uint32_t)(v >> 32);
        assert_true(id < MAX_PROD);
        r->put[id] = (uint32_t)v;
        uint32_t ahead = 0;
        for (uint32_t i = 0; i < r->nprod; i++)
            ahead +=
                r->put[i] - (r->put[i] < r->got[i] ? r->put[i] : r->got[i]);
        if (ahead > r->max_lead)
            r->max_lead = ahead;
        if (r->total >= STEADY && ahead > r->max_lead_steady)
            r->max_lead_steady = ahead;
        break;
    }
    case T_READY:
        r->ready_pid = v;
        break;
    case T_ENDED:
        r->ended++;
        /* NOPROC: it had ended before the watcher's monitor (normally). */
        if ((int)(int64_t)v == TR_ELOST)
            r->lost++;
        else if ((int)(int64_t)v != TR_EXIT_NORMAL &&
                 (int)(int64_t)v != TR_EXIT_NOPROC)
            fail_msg("a remote actor ended with %s",
                     tr_exit_reason_name((int)(int64_t)v));
        break;
    default:
        fail_msg("unexpected report tag %u", tag);
    }
    /* Every producer's open has reached the channel once one of its items
     * has come out: the gate may go. */
    if (!r->gate_closed && r->nprod > 0) {
        bool all = true;
        for (uint32_t i = 0; i < r->nprod && all; i++)
            all = r->got[i] > 0;
        if (all) {
            TU_ASSERT_OK(
                tr_runtime_send_u64(r->e->rt, r->gate, T_CLOSE_NOW, 0));
            r->gate_closed = true;
        }
    }
}

/* Reports until every consumer saw the end and every remote actor has
 * ended (bounded). */
static void until_done(run *r, int64_t ms) {
    int64_t end = tu_now_ms() + ms;
    while (r->done < r->ncons || r->ended < r->watched) {
        int64_t left = end - tu_now_ms();
        if (left <= 0)
            fail_msg("within %lld ms: consumers done %u of %u, remote "
                     "actors ended %u of %u, items %u",
                     (long long)ms, r->done, r->ncons, r->ended, r->watched,
                     r->total);
        on_report(r, left);
    }
}

/* Every item of every producer exactly once (counted by the consumers
 * too), `lost` remote actors ended with TR_ELOST (the others normally),
 * and nothing more arrives. */
static void assert_exactly_once(run *r, uint32_t lost) {
    uint32_t want = 0;
    for (uint32_t i = 0; i < r->nprod; i++) {
        assert_int_equal(r->got[i], r->per[i]);
        want += r->per[i];
    }
    assert_int_equal(r->total, want);
    assert_int_equal(r->done_total, want);
    assert_int_equal(r->done, r->ncons);
    assert_int_equal(r->ended, r->watched);
    assert_int_equal(r->lost, lost);
    tu_expect_silence(r->e, 100);
    assert_int_equal(tu_report_failures_get(), 0);
}

#define RUN_MS 15000

/* (a) */
static void test_remote_producers_local_consumers(void **state) {
    run r;
    setup(&r, *state, 2, 16, 0);
    for (uint32_t c = 0; c < 3; c++)
        spawn_consumer(&r, false, (consumer){.id = c});
    uint32_t n = (uint32_t)tu_scaled(2000, 200);
    for (uint32_t p = 0; p < 3; p++)
        spawn_producer(&r, true, (producer){.id = p, .n = n, .chunk = 10});
    until_done(&r, RUN_MS);
    assert_exactly_once(&r, 0);
    tu_env_finish(*state);
}

/* (b) */
static void test_local_producers_remote_consumers(void **state) {
    run r;
    setup(&r, *state, 2, 16, 0);
    for (uint32_t c = 0; c < 3; c++)
        spawn_consumer(&r, true, (consumer){.id = c});
    uint32_t n = (uint32_t)tu_scaled(2000, 200);
    for (uint32_t p = 0; p < 3; p++)
        spawn_producer(&r, false, (producer){.id = p, .n = n, .chunk = 10});
    until_done(&r, RUN_MS);
    assert_exactly_once(&r, 0);
    tu_env_finish(*state);
}

/* (c) */
static void test_killed_producer_ends_the_stream(void **state) {
    run r;
    setup(&r, *state, 2, 16, 0);
    for (uint32_t c = 0; c < 2; c++)
        spawn_consumer(&r, false, (consumer){.id = c});
    spawn_producer(&r, true, (producer){.id = 0, .n = 300, .chunk = 10});
    spawn_producer(
        &r, true,
        (producer){.id = 1, .n = 100, .chunk = 10, .stay_open = true});
    /* Everything put has come out, and producer 1 (still open) says
     * where it runs. */
    int64_t end = tu_now_ms() + RUN_MS;
    while (r.total < 400 || r.ready_pid == 0) {
        if (tu_now_ms() >= end)
            fail_msg("items %u of 400, producer 1 ready: %d", r.total,
                     r.ready_pid != 0);
        on_report(&r, end - tu_now_ms());
    }
    /* Producer 0 ends (closed); producer 1 holds the stream open. */
    while (r.ended < 1)
        on_report(&r, RUN_MS);
    tu_expect_silence(r.e, 100);
    assert_int_equal(r.done, 0);
    pid_t victim = (pid_t)r.ready_pid;
    assert_true(victim == tr_pool_worker_pid(r.e->rt, 0) ||
                victim == tr_pool_worker_pid(r.e->rt, 1));
    assert_int_equal(kill(victim, SIGKILL), 0);
    /* Its proxy ends (TR_ELOST): closed for it, the stream ends. */
    until_done(&r, RUN_MS);
    assert_exactly_once(&r, 1); /* its proxy ended with TR_ELOST */
    tr_transport_stats st;
    TU_ASSERT_OK(tr_transport_stats_get(r.e->rt, false, &st));
    assert_true(st.peers_lost >= 1);
    tu_env_finish(*state);
}

/* (d) */
static void test_backpressure_remote_producer(void **state) {
    run r;
    /* A small channel, a small window, one slow consumer (about 0.3 ms an
     * item), a remote producer as fast as it can be (one item per
     * message, so a turn of its puts is the runtime's batch, 64). */
    enum { CAP = 8, WINDOW = 32, EVERY = 20, TURN = 64 };
    setup(&r, *state, 2, CAP, WINDOW);
    spawn_consumer(&r, false, (consumer){.id = 0, .work_us = 300});
    uint32_t n = (uint32_t)tu_scaled(3000, 1500);
    spawn_producer(&r, true,
                   (producer){.id = 0, .n = n, .chunk = 1, .every = EVERY});
    until_done(&r, RUN_MS);
    assert_exactly_once(&r, 0);
    print_message("producer ahead of the consumer by at most %u items, %u "
                  "once %u were consumed (capacity %d, window %d)\n",
                  r.max_lead, r.max_lead_steady, STEADY, CAP, WINDOW);
    /* Without backpressure across the boundary the producer is done
     * before the consumer has started: thousands ahead. With it, what the
     * producer has put and the consumer not yet taken is in the channel
     * or on its way there (its capacity plus at most a window: credit
     * stops while the channel is full), or held back in the producer's
     * process (half a window before the producer may go on, then a turn
     * of its puts before it is muted again, and a batch in its proxy):
     * about 200 at most, bounded here with room to spare. (A report is
     * late by up to EVERY puts, which only makes the lead look smaller.) */
    assert_true(r.max_lead_steady > 0);
    assert_true(r.max_lead_steady <= CAP + 4 * WINDOW + 3 * TURN);
    tu_env_finish(*state);
}

/* (e) A producer and a consumer in the same worker process, no other
 * consumer: while the channel is full the producer gets no credit, and
 * its items held back in that process must not stand in the way of the
 * consumer's takes (they take no credit), or the channel never drains. */
static void test_producer_and_consumer_share_a_process(void **state) {
    run r;
    setup(&r, *state, 1, 4, 16);
    spawn_consumer(&r, true, (consumer){.id = 0, .work_us = 100});
    uint32_t n = (uint32_t)tu_scaled(2000, 1000);
    spawn_producer(&r, true, (producer){.id = 0, .n = n, .chunk = 1});
    until_done(&r, RUN_MS);
    assert_exactly_once(&r, 0);
    tu_env_finish(*state);
}

/* ---- limiters across processes ---- */

/* A pretend external service (main process): each call takes DELAY_MS
 * (a timer, no thread blocked); it counts the calls in progress. A
 * caller releases its permit only after its result, and the next one
 * calls only once granted, so the count it sees at once is what the
 * limiter lets through. */
#define SERVICE_SLOTS 64
#define DELAY_MS 10

typedef struct service {
    tr_ref report;
    uint32_t busy, max;
    tr_ref who[SERVICE_SLOTS];
    uint64_t what[SERVICE_SLOTS];
} service;

static int service_handle(tr_ctx *ctx, void *st, tr_msg *m) {
    service *s = st;
    switch (tr_msg_tag(m)) {
    case T_CALL: {
        uint32_t i = 0;
        while (i < SERVICE_SLOTS && !tr_ref_is_none(s->who[i]))
            i++;
        if (i == SERVICE_SLOTS)
            return TR_ENOMEM; /* far more callers than any limit here */
        s->who[i] = tr_msg_sender(m);
        s->what[i] = tr_msg_u64(m);
        if (++s->busy > s->max)
            s->max = s->busy;
        tr_msg *t = tr_msg_new_u64(T_SERVED, i);
        int rc = tr_send_after(tr_ctx_runtime(ctx), tr_self(ctx), DELAY_MS, &t,
                               NULL);
        if (rc != 0)
            tr_msg_destroy(&t);
        return rc;
    }
    case T_SERVED: {
        uint64_t i = tr_msg_u64(m);
        if (i >= SERVICE_SLOTS || tr_ref_is_none(s->who[i]))
            return TR_EPROTO;
        s->busy--;
        tr_ref who = s->who[i];
        s->who[i] = TR_REF_NONE;
        /* A caller whose process died meanwhile is gone: no matter. */
        (void)tr_send_u64(ctx, who, T_RESULT, s->what[i]);
        return 0;
    }
    case T_PROBE:
        tu_report(ctx, s->report, T_MAX, s->max);
        return 0;
    default:
        return TR_UNHANDLED;
    }
}

static const tr_behavior service_beh = {.name = "rc.service",
                                        .handle = service_handle,
                                        .state_size = sizeof(service)};

/* A limiter user in a worker process: `rounds` times acquire, call the
 * service, release; a hog acquires once and never gives its permit back. */
typedef struct user {
    uint32_t id, rounds;
    bool hog;
    tr_ref lim, svc, report;
    uint32_t done;
} user;

static int user_start(tr_ctx *ctx, void *st) {
    user *u = st;
    int rc;
    if ((rc = tr_main_lookup(ctx, LIMITER_NAME, &u->lim)) != 0 ||
        (rc = tr_main_lookup(ctx, SERVICE_NAME, &u->svc)) != 0 ||
        (rc = tr_main_lookup(ctx, INBOX_NAME, &u->report)) != 0)
        return rc;
    tu_report(ctx, u->report, T_STARTED,
              (uint64_t)u->id << 32 | (uint32_t)getpid());
    return tr_limiter_acquire(ctx, u->lim, u->id);
}

static int user_handle(tr_ctx *ctx, void *st, tr_msg *m) {
    user *u = st;
    int rc;
    switch (tr_msg_tag(m)) {
    case TR_TAG_LIMIT_GRANT:
        if (tr_msg_u64(m) != u->id)
            return TR_EPROTO;
        if (u->hog) {
            tu_report(ctx, u->report, T_READY, (uint64_t)getpid());
            return 0;
        }
        return tr_send_u64(ctx, u->svc, T_CALL, u->id);
    case T_RESULT:
        if ((rc = tr_limiter_release(ctx, u->lim)) != 0)
            return rc;
        if (++u->done == u->rounds) {
            tu_report(ctx, u->report, T_FINISHED, u->id);
            return TR_STOP;
        }
        return tr_limiter_acquire(ctx, u->lim, u->id);
    default:
        return TR_UNHANDLED;
    }
}

static const tr_behavior user_beh = {.name = "rc.user",
                                     .handle = user_handle,
                                     .on_start = user_start,
                                     .state_size = sizeof(user)};

typedef struct lim_run {
    tu_env *e;
    tr_ref lim, svc, watcher, waiter;
    uint32_t watched;
} lim_run;

static void lim_setup(lim_run *r, tu_env *e, uint32_t capacity) {
    memset(r, 0, sizeof *r);
    r->e = e;
    tu_env_init(e, 2);
    (void)tu_spawn_keeper(e);
    TU_ASSERT_OK(tr_pool_start(e->rt, &(tr_pool_config){.processes = 2}));
    TU_ASSERT_OK(tr_runtime_limiter_spawn(e->rt, capacity, &r->lim));
    TU_ASSERT_OK(tr_runtime_spawn(e->rt, &service_beh,
                                  &(service){.report = e->inbox_ref},
                                  sizeof(service), &r->svc));
    TU_ASSERT_OK(tr_name_register(e->rt, LIMITER_NAME, r->lim));
    TU_ASSERT_OK(tr_name_register(e->rt, SERVICE_NAME, r->svc));
    TU_ASSERT_OK(tr_name_register(e->rt, INBOX_NAME, e->inbox_ref));
    TU_ASSERT_OK(tr_runtime_spawn(e->rt, &watcher_beh, &e->inbox_ref,
                                  sizeof e->inbox_ref, &r->watcher));
    tu_env_start(e);
}

static tr_ref lim_spawn_user(lim_run *r, user u) {
    tr_ref proxy;
    TU_ASSERT_OK(
        tr_runtime_spawn_remote(r->e->rt, "rc.user", &u, sizeof u, &proxy));
    r->watched++;
    TU_ASSERT_OK(tr_runtime_send_u64(r->e->rt, r->watcher, T_WATCH, proxy.id));
    return proxy;
}

/* (f) */
static void test_limiter_across_processes(void **state) {
    lim_run r;
    enum { USERS = 4, ROUNDS = 5, CAP = 2 };
    lim_setup(&r, *state, CAP);
    for (uint32_t i = 0; i < USERS; i++)
        (void)lim_spawn_user(&r, (user){.id = i, .rounds = ROUNDS});
    uint32_t started = 0, finished = 0, ended = 0, seen = 0;
    int64_t end = tu_now_ms() + RUN_MS;
    while (finished < USERS || ended < r.watched) {
        if (tu_now_ms() >= end)
            fail_msg("users started %u, finished %u, ended %u of %u", started,
                     finished, ended, USERS);
        tr_msg *m = tu_recv(r.e, end - tu_now_ms());
        uint32_t tag = tr_msg_tag(m);
        uint64_t v = tr_msg_u64(m);
        tr_msg_destroy(&m);
        if (tag == T_STARTED) {
            started++;
        } else if (tag == T_FINISHED) {
            assert_true(v < USERS && !(seen & (1u << v)));
            seen |= 1u << v;
            finished++;
        } else if (tag == T_ENDED) {
            int reason = (int)(int64_t)v;
            assert_true(reason == TR_EXIT_NORMAL || reason == TR_EXIT_NOPROC);
            ended++;
        } else {
            fail_msg("unexpected report tag %u", tag);
        }
    }
    assert_int_equal(started, USERS);
    /* Four users, two permits, 10 ms a call: the service had exactly two
     * calls at once, never more. */
    TU_ASSERT_OK(tr_runtime_send_u64(r.e->rt, r.svc, T_PROBE, 0));
    assert_int_equal(tu_recv_u64(r.e, T_MAX, TU_PROMPT_MS), CAP);
    tu_expect_silence(r.e, 100);
    tu_env_finish(*state);
}

/* (g) */
static void test_limiter_holder_killed(void **state) {
    lim_run r;
    lim_setup(&r, *state, 1);
    /* The hog first, and only once it holds the permit the waiter (in
     * another process: a fresh pool places the hog in worker 0, and the
     * waiter in the least loaded one, worker 1). */
    (void)lim_spawn_user(&r, (user){.id = 0, .hog = true});
    pid_t pid[2] = {0, 0}, hog = 0;
    int64_t end = tu_now_ms() + RUN_MS;
    while (pid[1] == 0) {
        assert_true(tu_now_ms() < end);
        tr_msg *m = tu_recv(r.e, end - tu_now_ms());
        uint32_t tag = tr_msg_tag(m);
        uint64_t v = tr_msg_u64(m);
        tr_msg_destroy(&m);
        if (tag == T_STARTED && (v >> 32) < 2 && pid[v >> 32] == 0)
            pid[v >> 32] = (pid_t)(uint32_t)v;
        else if (tag == T_READY && hog == 0)
            hog = (pid_t)v;
        else
            fail_msg("unexpected report tag %u", tag);
        if (hog != 0 && pid[0] != 0 && tr_ref_is_none(r.waiter))
            r.waiter = lim_spawn_user(&r, (user){.id = 1, .rounds = 1});
    }
    assert_int_equal(hog, pid[0]);
    assert_true(pid[1] != pid[0]); /* in different processes */
    tu_expect_silence(r.e, 200);   /* the waiter waits */
    assert_int_equal(kill(hog, SIGKILL), 0);
    /* The hog's proxy ends (TR_ELOST): the limiter takes its permit back
     * and grants it to the waiter, which calls and finishes. */
    bool finished = false, lost = false, normal = false;
    while (!finished || !lost || !normal) {
        assert_true(tu_now_ms() < end);
        tr_msg *m = tu_recv(r.e, end - tu_now_ms());
        uint32_t tag = tr_msg_tag(m);
        int v = (int)(int64_t)tr_msg_u64(m);
        tr_msg_destroy(&m);
        if (tag == T_FINISHED && v == 1 && !finished)
            finished = true;
        else if (tag == T_ENDED && v == TR_ELOST && !lost)
            lost = true;
        else if (tag == T_ENDED &&
                 (v == TR_EXIT_NORMAL || v == TR_EXIT_NOPROC) && !normal)
            normal = true;
        else
            fail_msg("unexpected report tag %u value %d", tag, v);
    }
    tu_expect_silence(r.e, 100);
    tu_env_finish(*state);
}

int main(int argc, char **argv) {
    if (tr_register("rc.producer", &producer_beh) != 0 ||
        tr_register("rc.consumer", &consumer_beh) != 0 ||
        tr_register("rc.user", &user_beh) != 0)
        return 1;
    tr_worker_main(argc, argv); /* returns only in the main process */
    const struct CMUnitTest tests[] = {
        TU_TEST(test_remote_producers_local_consumers),
        TU_TEST(test_local_producers_remote_consumers),
        TU_TEST(test_killed_producer_ends_the_stream),
        TU_TEST(test_backpressure_remote_producer),
        TU_TEST(test_producer_and_consumer_share_a_process),
        TU_TEST(test_limiter_across_processes),
        TU_TEST(test_limiter_holder_killed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
