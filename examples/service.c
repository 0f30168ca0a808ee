/* service — a multi-process request/reply service: a ZeroMQ ROUTER front
 * actor, CPU-bound workers in worker processes behind a router, under a
 * supervisor, with per-request deadlines, a token-bucket rate limit and a
 * graceful shutdown that answers every request it accepted.
 *
 * Wire format
 * -----------
 * Clients are ZeroMQ DEALER sockets (examples/service_client.c) connected
 * to the service's ROUTER (--endpoint). A request is ONE frame of 24
 * bytes; a reply is one frame of 24 bytes. Integers are little-endian.
 *
 *   request  offset 0  u32 magic        0x31515653 ("SVQ1")
 *                   4  u32 deadline_ms  1..60000, counted from arrival
 *                   8  u64 id           anything; echoed in the reply
 *                  16  u64 work         rounds of the job, 1..10^10
 *   reply    offset 0  u32 magic        0x31525653 ("SVR1")
 *                   4  u32 status       see below
 *                   8  u64 id           the request's (0 if unreadable)
 *                  16  u64 result       OK: the digest; otherwise 0
 *
 * The job is svc_job_rounds(id, 0, work) of examples/service_wire.h
 * (encoders, decoders and the job live there, shared with the client and
 * the test), so a client can check every result. Every request gets
 * exactly one reply, with one of these statuses:
 *
 *   0 OK             done; result is the digest
 *   1 DEADLINE       accepted, not done within deadline_ms
 *   2 BUSY           rejected at once: beyond the rate (see below) or
 *                    --max-inflight requests already in the service
 *   3 BAD            malformed (wrong size, magic, range, or not exactly
 *                    one frame); also logged on stderr
 *   4 SHUTTING_DOWN  rejected at once: the service is stopping
 *   5 FAILED         accepted, then its worker process was lost, or it
 *                    was still running when the drain time ran out
 *
 * (A frame over 64 KiB gets no reply: ZeroMQ drops that connection,
 * ZMQ_MAXMSGSIZE, before the service sees it.)
 *
 * Design notes
 * ------------
 *   client DEALER ~~zmq~~> ROUTER [front actor] --tr_request--> router
 *                                   |   ^                    (round robin)
 *                  limiter <-acquire+   +--reply/timeout--- worker proxies
 *                  (token bucket)        (worker.i in pool processes,
 *                                         children of the router's
 *                                         supervisor)
 *
 * - The front owns the ROUTER socket; it is the only actor that touches
 *   it, one turn at a time (the mailbox orders the turns, so the socket
 *   moves between scheduler threads safely). It never blocks: the
 *   runtime's reactor watches ZMQ_FD and sends the front a message when
 *   it becomes readable. ZMQ_FD is edge-triggered and any ZeroMQ call may
 *   consume the edge, so the front reads while ZMQ_EVENTS says POLLIN
 *   (at most DRAIN_BATCH messages per turn, then a message to itself to
 *   go on: other actors get their turn), and checks ZMQ_EVENTS again
 *   after every turn in which it sent a reply.
 * - Replies are sent with ZMQ_DONTWAIT and ZMQ_ROUTER_MANDATORY, so a
 *   full peer is an EAGAIN, never a silent drop: the reply waits in the
 *   outbox, retried on the next readiness or after RETRY_MS, and the
 *   front reads no new request while the outbox is not empty (bounded
 *   memory: at most --max-inflight + 1 replies wait). A reply to a peer
 *   that has disconnected is counted as undeliverable.
 * - Each accepted request takes a slot (at most --max-inflight). With a
 *   rate limit, the slot first waits in a FIFO line for a permit from a
 *   token-bucket limiter actor (limiter.h: --rate per second, --burst at
 *   once). Permits are interchangeable: each one goes to the head of the
 *   line. At most --queue permits may be asked for and not yet granted;
 *   a request that finds the line that long is answered BUSY at once. So
 *   a burst within burst + queue is smoothed to the rate, and anything
 *   beyond is rejected at once, never dropped.
 * - Then the front sends the job to the router with
 *   tr_request(timeout = what is left of the deadline). The reply, the
 *   TR_TAG_TIMEOUT (-> DEADLINE) or a TR_TAG_REMOTE_FAILED /
 *   TR_TAG_REQUEST_FAILED (-> FAILED) finds its slot through a small
 *   hash map keyed by request id; a late reply is dropped by the
 *   runtime. A request still waiting for a permit at its deadline is
 *   answered DEADLINE by a timer.
 * - The deadline travels with the job as an absolute time on the
 *   monotonic clock (worker processes run on the same host, so they
 *   share it): a worker looks at it between slices of the job and drops
 *   a job whose requester has given up. (A request's own cancellation,
 *   tr_request_cancelled, does not cross the router; the deadline does.)
 * - Workers are remote actors of the registered behaviour
 *   "service.worker" in a supervised router pool
 *   (tr_router_pool_spawn): the router starts a one_for_one supervisor
 *   whose children they are, routes round robin, and routes to a worker
 *   again as soon as the supervisor has restarted it (its process died:
 *   the pool restarted the process, its requests in flight came back
 *   FAILED). While no worker runs, the router holds the jobs in order;
 *   a job it could not hand on (its worker had just died) is failed
 *   back at once (TR_TAG_REQUEST_FAILED): FAILED too. The router's
 *   mailbox is bounded by `hold`; the front never has more than
 *   --max-inflight jobs out, so it is never muted by it.
 * - Shutdown (SIGINT/SIGTERM; handle_signals): the runtime cancels the
 *   front, which drains (on_cancel returns TR_DRAIN): new requests are
 *   answered SHUTTING_DOWN; accepted ones finish (OK/DEADLINE/FAILED);
 *   what is still running after --drain-ms is answered FAILED. The front
 *   stops when nothing is in flight, every reply is out and no request
 *   has come in for --linger-ms (clients that heard SHUTTING_DOWN stop
 *   sending; the ones still on the wire get their answer), at the latest
 *   2 * --linger-ms after the drain. Then its children stop (the
 *   limiter; the router, its supervisor and the remote workers),
 *   tr_runtime_run returns, main stops the pool (the worker processes),
 *   terminates the ZeroMQ context (ZMQ_LINGER bounds the flush of the
 *   last replies) and prints the summary. A second signal stops at once.
 *
 * Counters (the last line of stdout):
 *   received = accepted + busy + bad + shutdown_rejected
 *   accepted = ok + deadline + failed + lost, and lost is 0 unless the
 *   front was killed (second signal) or failed.
 * Exit status: 0 after a clean stop with lost=0, 1 otherwise, 2 for bad
 * arguments. */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zmq.h>

#include <troupe/troupe.h>

#include "service_wire.h"

/* ---- parameters ---- */

#define DEFAULT_ENDPOINT "ipc://@troupe-service"
#define ENDPOINT_MAX 256
#define WORKER_NAME "service.worker"
#define MAX_WORKERS 64u

/* Messages read from the socket per turn before yielding. */
#define DRAIN_BATCH 64u
/* Queued replies are retried this often (and on every readiness). */
#define RETRY_MS 5
/* While stopping, the front looks at its state this often. */
#define TICK_MS 20
/* Rounds of the job between two looks at the deadline (~0.1 ms). */
#define JOB_SLICE 65536u
/* Bad requests: the first LOG_FIRST are logged, then one in LOG_EVERY. */
#define LOG_FIRST 100u
#define LOG_EVERY 1000u
/* Longest ZeroMQ routing id (a ROUTER identity frame). */
#define IDENTITY_MAX 255u
/* ZeroMQ drops a connection that sends a frame larger than this (a
 * request is 24 bytes: anything up to this size is answered BAD). */
#define MAX_FRAME 65536
/* The socket's final flush at zmq_ctx_term. */
#define SOCKET_LINGER_MS 2000
#define SOCKET_HWM 4096

#define MAX_DRAIN_MS 30000u
#define MAX_LINGER_MS 5000u
/* The front bounds its own stop (drain + 2 * linger); this grace is only
 * the runtime's safety net behind it. */
#define FRONT_GRACE_MS (MAX_DRAIN_MS + 2 * MAX_LINGER_MS + 5000)

#define NIL UINT32_MAX

enum {
    TAG_JOB = 1, /* front -> worker: request, BYTES struct job */
    TAG_RESULT,  /* worker -> front: reply, U64 digest */
    TAG_IO,      /* reactor -> front: the socket's ZMQ_FD is readable */
    TAG_DRAIN,   /* front -> itself: more to read */
    TAG_RETRY,   /* timer -> front: send the queued replies */
    TAG_EXPIRED, /* timer -> front: U64 ticket of a request whose
                    deadline came while it waited for a permit */
    TAG_TICK     /* periodic timer -> front while it stops */
};

/* ---- the worker (runs in a worker process) ---- */

/* Plain data (crosses the process boundary as BYTES). */
struct job {
    uint64_t seed; /* the request's id */
    uint64_t work;
    int64_t deadline_ms; /* absolute, tr_now_ms's clock */
};

static int read_bytes(const tr_msg *msg, void *out, size_t len) {
    size_t have = 0;
    const void *data = tr_msg_data(msg, &have);
    if (tr_msg_kind(msg) != TR_PAYLOAD_BYTES || data == NULL || have != len)
        return TR_EPROTO;
    memcpy(out, data, len);
    return 0;
}

/* Runs the job in slices; between slices, a job whose deadline has
 * passed is dropped without a reply (the front's timeout fires at that
 * deadline on the same clock and answers DEADLINE). */
static int worker_handle(tr_ctx *ctx, void *state, tr_msg *msg) {
    (void)state;
    struct job j;
    if (tr_msg_tag(msg) != TAG_JOB || !tr_msg_is_request(msg) ||
        read_bytes(msg, &j, sizeof j) != 0)
        return TR_UNHANDLED;
    uint64_t h = j.seed;
    for (uint64_t done = 0; done < j.work;) {
        uint64_t to = j.work - done > JOB_SLICE ? done + JOB_SLICE : j.work;
        h = svc_job_rounds(h, done, to);
        done = to;
        if (done < j.work &&
            (tr_now_ms() >= j.deadline_ms || tr_request_cancelled(ctx, msg)))
            return 0;
    }
    tr_msg *reply = tr_msg_new_u64(TAG_RESULT, h);
    if (reply == NULL)
        return TR_ENOMEM;
    int rc = tr_reply(ctx, msg, &reply);
    if (rc != 0)
        tr_msg_destroy(&reply);
    return rc == TR_ENOACTOR ? 0 : rc; /* the front is gone: nobody waits */
}

static const tr_behavior worker_behavior = {
    .name = WORKER_NAME,
    .handle = worker_handle,
};

/* ---- the front: configuration, report, slots ---- */

/* What main learns after the run. The front writes it in on_stop, which
 * runs before tr_runtime_run returns; main reads it after. */
struct service_report {
    uint64_t received, accepted, ok, deadline, failed, busy, bad,
        shutdown_rejected, undeliverable;
    int reason;        /* the front's exit reason */
    bool stopped;      /* on_stop ran */
    bool child_failed; /* the router (its pool) or the limiter ended */
};

struct front_config {
    char endpoint[ENDPOINT_MAX];
    void *zmq; /* main's ZeroMQ context (thread-safe) */
    struct service_report *report;
    uint32_t workers, processes;
    uint32_t rate, burst, queue; /* rate 0: no limit */
    uint32_t max_inflight;
    int64_t drain_ms, linger_ms;
};

enum slot_state { SLOT_FREE = 0, SLOT_WAITING, SLOT_RUNNING };

/* One accepted request. WAITING slots form the permit line (prev/next);
 * FREE ones a stack (next). gen changes at every reuse, so a timer
 * message naming an older use is recognised. */
struct slot {
    uint32_t gen;
    uint8_t state;
    uint8_t idlen;
    uint32_t prev, next;
    uint64_t id, work;
    int64_t deadline_ms; /* absolute */
    uint64_t req_id;     /* RUNNING */
    tr_timer_id expiry;  /* WAITING */
    unsigned char identity[IDENTITY_MAX];
};

/* request id -> slot, open addressing with linear probing and
 * backward-shift deletion; at most half full. Key 0 marks a free cell
 * (request ids start at 1). */
struct reqmap {
    uint64_t *keys;
    uint32_t *vals;
    uint32_t mask;
};

/* A reply the socket could not take yet. */
struct queued_reply {
    uint8_t idlen;
    unsigned char identity[IDENTITY_MAX];
    unsigned char frame[SVC_REP_SIZE];
};

struct front {
    struct front_config cfg;
    void *sock;
    tr_watch_id watch;
    tr_ref router, limiter;

    struct slot *slots;
    uint32_t free_top, inflight;
    uint32_t line_head, line_tail; /* WAITING slots, oldest first */
    uint32_t asked;                /* permits asked for, not yet granted */
    struct reqmap map;

    struct queued_reply *out; /* ring */
    uint32_t out_head, out_n, out_cap;
    bool retry_armed, drain_pending, sent; /* sent: since the last check */

    bool draining;
    int64_t drain_start_ms, last_activity_ms;
    tr_timer_id tick;
    uint64_t bad_seen;
    struct service_report rep;
};

/* ---- request id map ---- */

static uint32_t reqmap_home(const struct reqmap *m, uint64_t key) {
    return (uint32_t)((key * 0x9E3779B97F4A7C15u) >> 32) & m->mask;
}

static int reqmap_init(struct reqmap *m, uint32_t n) {
    uint32_t cap = 16;
    while (cap < 2 * n)
        cap *= 2;
    m->keys = calloc(cap, sizeof *m->keys);
    m->vals = calloc(cap, sizeof *m->vals);
    m->mask = cap - 1;
    return m->keys != NULL && m->vals != NULL ? 0 : TR_ENOMEM;
}

static void reqmap_put(struct reqmap *m, uint64_t key, uint32_t val) {
    uint32_t i = reqmap_home(m, key);
    while (m->keys[i] != 0)
        i = (i + 1) & m->mask;
    m->keys[i] = key;
    m->vals[i] = val;
}

static bool reqmap_take(struct reqmap *m, uint64_t key, uint32_t *val) {
    uint32_t i = reqmap_home(m, key);
    while (m->keys[i] != key) {
        if (m->keys[i] == 0)
            return false;
        i = (i + 1) & m->mask;
    }
    *val = m->vals[i];
    /* Backward shift: pull later entries of the run into the hole when
     * their home is not between the hole and them. */
    for (uint32_t j = (i + 1) & m->mask; m->keys[j] != 0;
         j = (j + 1) & m->mask) {
        uint32_t home = reqmap_home(m, m->keys[j]);
        if (((j - home) & m->mask) >= ((j - i) & m->mask)) {
            m->keys[i] = m->keys[j];
            m->vals[i] = m->vals[j];
            i = j;
        }
    }
    m->keys[i] = 0;
    return true;
}

/* ---- logging ---- */

static void log_bad(struct front *f, const unsigned char *identity,
                    size_t idlen, uint64_t id, const char *why) {
    uint64_t n = ++f->bad_seen;
    if (n > LOG_FIRST && n % LOG_EVERY != 0)
        return;
    char peer[2 * 8 + 1] = "";
    for (size_t i = 0; i < idlen && i < 8; i++)
        snprintf(peer + 2 * i, 3, "%02x", identity[i]);
    fprintf(stderr,
            "service: bad request from peer %s (id %" PRIu64 "): %s (%" PRIu64
            " so far)\n",
            peer, id, why, n);
}

/* ---- replies ---- */

/* 0 sent, or the errno (EAGAIN: the peer is full; EHOSTUNREACH: gone). */
static int socket_send(void *sock, const unsigned char *identity, size_t idlen,
                       const unsigned char *frame) {
    if (zmq_send(sock, identity, idlen, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0)
        return zmq_errno();
    /* The first frame was routed: the rest of the message goes with it. */
    if (zmq_send(sock, frame, SVC_REP_SIZE, ZMQ_DONTWAIT) < 0)
        return zmq_errno();
    return 0;
}

static void count_undeliverable(struct front *f, int err) {
    if (f->rep.undeliverable++ < LOG_FIRST)
        fprintf(stderr, "service: reply dropped: %s\n",
                err == EHOSTUNREACH ? "the client has disconnected"
                                    : zmq_strerror(err));
}

/* Sends what waits in the outbox, oldest first, until the socket refuses. */
static void outbox_flush(struct front *f) {
    while (f->out_n > 0) {
        struct queued_reply *q = &f->out[f->out_head];
        int err = socket_send(f->sock, q->identity, q->idlen, q->frame);
        if (err == EAGAIN)
            return;
        if (err != 0)
            count_undeliverable(f, err);
        f->out_head = (f->out_head + 1) % f->out_cap;
        f->out_n--;
        f->sent = true;
    }
}

/* Answers one request and counts the answer. Never blocks: a reply the
 * socket cannot take now waits in the outbox (behind the older ones). */
static void reply(struct front *f, const unsigned char *identity, size_t idlen,
                  uint64_t id, svc_status status, uint64_t result) {
    uint64_t *count[SVC_NSTATUS] = {
        &f->rep.ok,  &f->rep.deadline,          &f->rep.busy,
        &f->rep.bad, &f->rep.shutdown_rejected, &f->rep.failed};
    (*count[status])++;
    svc_reply r = {id, (uint32_t)status, result};
    unsigned char frame[SVC_REP_SIZE];
    svc_reply_encode(&r, frame);
    if (f->draining)
        f->last_activity_ms = tr_now_ms();
    int err =
        f->out_n > 0 ? EAGAIN : socket_send(f->sock, identity, idlen, frame);
    f->sent = true;
    if (err == 0)
        return;
    if (err != EAGAIN || f->out_n == f->out_cap) {
        /* A full outbox cannot happen (see the design notes). */
        count_undeliverable(f, err);
        return;
    }
    struct queued_reply *q = &f->out[(f->out_head + f->out_n) % f->out_cap];
    q->idlen = (uint8_t)idlen;
    memcpy(q->identity, identity, idlen);
    memcpy(q->frame, frame, sizeof frame);
    f->out_n++;
}

/* ---- slots ---- */

static uint32_t slot_alloc(struct front *f) {
    uint32_t i = f->free_top;
    if (i == NIL)
        return NIL;
    f->free_top = f->slots[i].next;
    f->inflight++;
    return i;
}

/* Answers the request in slot i and frees the slot. */
static void slot_complete(struct front *f, uint32_t i, svc_status status,
                          uint64_t result) {
    struct slot *s = &f->slots[i];
    reply(f, s->identity, s->idlen, s->id, status, result);
    s->state = SLOT_FREE;
    s->gen++;
    s->next = f->free_top;
    f->free_top = i;
    f->inflight--;
}

static void line_push(struct front *f, uint32_t i) {
    struct slot *s = &f->slots[i];
    s->state = SLOT_WAITING;
    s->prev = f->line_tail;
    s->next = NIL;
    if (f->line_tail != NIL)
        f->slots[f->line_tail].next = i;
    else
        f->line_head = i;
    f->line_tail = i;
}

static void line_unlink(struct front *f, uint32_t i) {
    struct slot *s = &f->slots[i];
    if (s->prev != NIL)
        f->slots[s->prev].next = s->next;
    else
        f->line_head = s->next;
    if (s->next != NIL)
        f->slots[s->next].prev = s->prev;
    else
        f->line_tail = s->prev;
}

/* Sends the job of slot i to the router with what is left of its
 * deadline. */
static void slot_dispatch(tr_ctx *ctx, struct front *f, uint32_t i) {
    struct slot *s = &f->slots[i];
    int64_t left = s->deadline_ms - tr_now_ms();
    if (left <= 0) {
        slot_complete(f, i, SVC_DEADLINE, 0);
        return;
    }
    struct job j = {s->id, s->work, s->deadline_ms};
    tr_msg *m = tr_msg_new_bytes(TAG_JOB, &j, sizeof j);
    uint64_t req_id = 0;
    int rc =
        m != NULL ? tr_request(ctx, f->router, &m, left, &req_id) : TR_ENOMEM;
    if (rc != 0) {
        if (m != NULL)
            tr_msg_destroy(&m);
        fprintf(stderr, "service: request %" PRIu64 " failed: %s\n", s->id,
                tr_strerror(rc));
        slot_complete(f, i, SVC_FAILED, 0);
        return;
    }
    s->state = SLOT_RUNNING;
    s->req_id = req_id;
    reqmap_put(&f->map, req_id, i);
}

/* ---- requests from the socket ---- */

static void on_request(tr_ctx *ctx, struct front *f,
                       const unsigned char *identity, size_t idlen,
                       const unsigned char *payload, size_t len,
                       unsigned frames) {
    f->rep.received++;
    svc_request rq;
    const char *why = svc_request_decode(payload, len, &rq);
    if (why == NULL && frames != 1)
        why = "more than one frame";
    if (why != NULL) {
        log_bad(f, identity, idlen, rq.id, why);
        reply(f, identity, idlen, rq.id, SVC_BAD, 0);
        return;
    }
    if (f->draining) {
        f->last_activity_ms = tr_now_ms();
        reply(f, identity, idlen, rq.id, SVC_SHUTTING_DOWN, 0);
        return;
    }
    bool limited = !tr_ref_is_none(f->limiter);
    uint32_t i = limited && f->asked >= f->cfg.queue ? NIL : slot_alloc(f);
    if (i == NIL) {
        reply(f, identity, idlen, rq.id, SVC_BUSY, 0);
        return;
    }
    f->rep.accepted++;
    struct slot *s = &f->slots[i];
    s->idlen = (uint8_t)idlen;
    memcpy(s->identity, identity, idlen);
    s->id = rq.id;
    s->work = rq.work;
    s->deadline_ms = tr_now_ms() + rq.deadline_ms;
    if (!limited) {
        slot_dispatch(ctx, f, i);
        return;
    }
    /* Wait for a permit, at most until the deadline. */
    tr_msg *t = tr_msg_new_u64(TAG_EXPIRED, (uint64_t)s->gen << 32 | i);
    s->expiry.id = 0;
    int rc = t != NULL ? tr_send_after(tr_ctx_runtime(ctx), tr_self(ctx),
                                       rq.deadline_ms, &t, &s->expiry)
                       : TR_ENOMEM;
    if (rc == 0)
        rc = tr_limiter_acquire(ctx, f->limiter, 0);
    if (rc != 0) {
        if (t != NULL)
            tr_msg_destroy(&t);
        if (s->expiry.id != 0)
            (void)tr_timer_cancel(tr_ctx_runtime(ctx), s->expiry);
        s->expiry.id = 0;
        fprintf(stderr, "service: request %" PRIu64 ": no permit: %s\n", rq.id,
                tr_strerror(rc));
        slot_complete(f, i, SVC_FAILED, 0);
        return;
    }
    f->asked++;
    line_push(f, i);
}

/* Reads one whole message (identity + frames) if there is one. */
static int read_one(tr_ctx *ctx, struct front *f, bool *got) {
    unsigned char identity[IDENTITY_MAX], payload[SVC_REQ_SIZE];
    size_t idlen = 0, len = 0;
    unsigned frames = 0; /* after the identity */
    *got = false;
    for (bool more = true; more;) {
        zmq_msg_t part;
        zmq_msg_init(&part);
        if (zmq_msg_recv(&part, f->sock, ZMQ_DONTWAIT) < 0) {
            int err = zmq_errno();
            zmq_msg_close(&part);
            /* A message arrives whole or not at all: EAGAIN can only
             * come before its first frame. */
            if (err == EAGAIN && !*got)
                return 0;
            fprintf(stderr, "service: zmq_msg_recv: %s\n", zmq_strerror(err));
            return TR_ESYS;
        }
        size_t n = zmq_msg_size(&part);
        const void *data = zmq_msg_data(&part);
        if (!*got) { /* the ROUTER's identity frame: 1..255 bytes */
            idlen = n < IDENTITY_MAX ? n : IDENTITY_MAX;
            memcpy(identity, data, idlen);
            *got = true;
        } else if (++frames == 1) {
            len = n;
            memcpy(payload, data, n < sizeof payload ? n : sizeof payload);
        }
        more = zmq_msg_more(&part) != 0;
        zmq_msg_close(&part);
    }
    on_request(ctx, f, identity, idlen, payload, len, frames);
    return 0;
}

/* A tag-only message to the running actor in ms. */
static int send_self_after(tr_ctx *ctx, uint32_t tag, int64_t ms) {
    tr_msg *t = tr_msg_new(tag);
    if (t == NULL)
        return TR_ENOMEM;
    int rc = tr_send_after(tr_ctx_runtime(ctx), tr_self(ctx), ms, &t, NULL);
    if (rc != 0)
        tr_msg_destroy(&t);
    return rc;
}

static int schedule_drain(tr_ctx *ctx, struct front *f) {
    if (f->drain_pending)
        return 0;
    int rc = tr_send_tag(ctx, tr_self(ctx), TAG_DRAIN);
    f->drain_pending = rc == 0;
    return rc;
}

static int socket_events(struct front *f, int *events) {
    size_t sz = sizeof *events;
    if (zmq_getsockopt(f->sock, ZMQ_EVENTS, events, &sz) == 0)
        return 0;
    fprintf(stderr, "service: ZMQ_EVENTS: %s\n", zmq_strerror(zmq_errno()));
    return TR_ESYS;
}

/* Flushes the outbox, then reads requests while ZMQ_EVENTS says so (and
 * no reply waits), DRAIN_BATCH at most: then it goes on in a later turn. */
static int socket_io(tr_ctx *ctx, struct front *f) {
    if (f->sock == NULL)
        return 0;
    outbox_flush(f);
    for (unsigned n = 0; n < DRAIN_BATCH; n++) {
        int events = 0, rc;
        if (f->out_n > 0)
            return 0; /* backpressure: read again once replies are out */
        if ((rc = socket_events(f, &events)) != 0)
            return rc;
        if (!(events & ZMQ_POLLIN))
            return 0; /* drained: the next message raises the edge again */
        bool got = false;
        if ((rc = read_one(ctx, f, &got)) != 0)
            return rc;
    }
    return schedule_drain(ctx, f);
}

/* After a turn: a send may have consumed ZMQ_FD's edge, so look at
 * ZMQ_EVENTS again; and keep retrying queued replies. */
static int socket_after_turn(tr_ctx *ctx, struct front *f) {
    if (f->sock == NULL)
        return 0;
    if (f->out_n > 0 && !f->retry_armed) {
        int rc = send_self_after(ctx, TAG_RETRY, RETRY_MS);
        if (rc != 0)
            return rc;
        f->retry_armed = true;
    }
    if (!f->sent || f->drain_pending || f->out_n > 0)
        return 0;
    f->sent = false;
    int events = 0;
    int rc = socket_events(f, &events);
    if (rc == 0 && (events & ZMQ_POLLIN))
        rc = schedule_drain(ctx, f);
    return rc;
}

static int socket_open(tr_ctx *ctx, struct front *f) {
    int one = 1, linger = SOCKET_LINGER_MS, hwm = SOCKET_HWM;
    int64_t max_frame = MAX_FRAME;
    f->sock = zmq_socket(f->cfg.zmq, ZMQ_ROUTER);
    if (f->sock == NULL ||
        zmq_setsockopt(f->sock, ZMQ_ROUTER_MANDATORY, &one, sizeof one) != 0 ||
        zmq_setsockopt(f->sock, ZMQ_LINGER, &linger, sizeof linger) != 0 ||
        zmq_setsockopt(f->sock, ZMQ_SNDHWM, &hwm, sizeof hwm) != 0 ||
        zmq_setsockopt(f->sock, ZMQ_RCVHWM, &hwm, sizeof hwm) != 0 ||
        zmq_setsockopt(f->sock, ZMQ_MAXMSGSIZE, &max_frame, sizeof max_frame) !=
            0 ||
        zmq_bind(f->sock, f->cfg.endpoint) != 0) {
        fprintf(stderr, "service: cannot listen on %s: %s\n", f->cfg.endpoint,
                zmq_strerror(zmq_errno()));
        return TR_ESYS;
    }
    int fd = -1;
    size_t sz = sizeof fd;
    if (zmq_getsockopt(f->sock, ZMQ_FD, &fd, &sz) != 0)
        return TR_ESYS;
    int rc = tr_watch(tr_ctx_runtime(ctx), fd, TR_READABLE, tr_self(ctx),
                      TAG_IO, &f->watch);
    if (rc != 0)
        return rc;
    printf("service: listening on %s: %u workers in %u processes, ",
           f->cfg.endpoint, f->cfg.workers, f->cfg.processes);
    if (f->cfg.rate > 0)
        printf("rate %u/s burst %u queue %u, ", f->cfg.rate, f->cfg.burst,
               f->cfg.queue);
    else
        printf("no rate limit, ");
    printf("max %u in flight\n", f->cfg.max_inflight);
    fflush(stdout);
    /* Clients may have connected already: read what waits (the edge may
     * have come before the watch). */
    return socket_io(ctx, f);
}

/* ---- replies from the workers, timeouts, permits ---- */

static void on_job_end(struct front *f, const tr_msg *msg, svc_status status,
                       uint64_t result) {
    uint32_t i;
    /* Not found: it was answered FAILED when the drain time ran out. */
    if (reqmap_take(&f->map, tr_msg_request_id(msg), &i))
        slot_complete(f, i, status, result);
}

static void on_grant(tr_ctx *ctx, struct front *f) {
    f->asked--;
    uint32_t i = f->line_head;
    if (i == NIL)
        return; /* its request expired meanwhile: the permit goes unused */
    line_unlink(f, i);
    (void)tr_timer_cancel(tr_ctx_runtime(ctx), f->slots[i].expiry);
    f->slots[i].expiry.id = 0;
    slot_dispatch(ctx, f, i);
}

static void on_expired(struct front *f, uint64_t ticket) {
    uint32_t i = (uint32_t)ticket;
    if (i >= f->cfg.max_inflight ||
        f->slots[i].gen != (uint32_t)(ticket >> 32) ||
        f->slots[i].state != SLOT_WAITING)
        return; /* it got its permit as the timer fired */
    line_unlink(f, i);
    f->slots[i].expiry.id = 0;
    slot_complete(f, i, SVC_DEADLINE, 0);
}

/* ---- shutdown ---- */

/* What is still in flight when the drain time is over is answered
 * FAILED (a reply that comes later finds no slot and is dropped). */
static void fail_remaining(tr_ctx *ctx, struct front *f) {
    for (uint32_t i = 0; i < f->cfg.max_inflight; i++) {
        struct slot *s = &f->slots[i];
        if (s->state == SLOT_WAITING) {
            line_unlink(f, i);
            (void)tr_timer_cancel(tr_ctx_runtime(ctx), s->expiry);
            s->expiry.id = 0;
        } else if (s->state == SLOT_RUNNING) {
            uint32_t ignored;
            (void)reqmap_take(&f->map, s->req_id, &ignored);
        } else {
            continue;
        }
        slot_complete(f, i, SVC_FAILED, 0);
    }
}

static int begin_drain(tr_ctx *ctx, struct front *f) {
    f->draining = true;
    f->drain_start_ms = f->last_activity_ms = tr_now_ms();
    fprintf(stderr,
            "service: stopping: %u requests in flight, new ones are answered "
            "SHUTTING_DOWN\n",
            f->inflight);
    return tr_send_every(tr_ctx_runtime(ctx), tr_self(ctx), TICK_MS, TAG_TICK,
                         &f->tick);
}

static int on_tick(tr_ctx *ctx, struct front *f) {
    int rc = socket_io(ctx, f); /* nothing left unread before deciding */
    if (rc != 0)
        return rc;
    int64_t now = tr_now_ms();
    int64_t since = now - f->drain_start_ms;
    if (f->inflight > 0 && since >= f->cfg.drain_ms) {
        fprintf(stderr,
                "service: drain time over: %u requests answered FAILED\n",
                f->inflight);
        fail_remaining(ctx, f);
    }
    bool quiet = now - f->last_activity_ms >= f->cfg.linger_ms;
    bool done = f->inflight == 0 && f->out_n == 0 && quiet;
    if (!done && since < f->cfg.drain_ms + 2 * f->cfg.linger_ms)
        return 0;
    return TR_STOP;
}

/* ---- the front's behaviour ---- */

static int front_start(tr_ctx *ctx, void *state) {
    struct front *f = state;
    uint32_t n = f->cfg.max_inflight;
    f->free_top = f->line_head = f->line_tail = NIL;
    f->slots = calloc(n, sizeof *f->slots);
    f->out_cap = n + DRAIN_BATCH;
    f->out = calloc(f->out_cap, sizeof *f->out);
    if (f->slots == NULL || f->out == NULL || reqmap_init(&f->map, n) != 0)
        return TR_ENOMEM; /* on_stop frees what was allocated */
    for (uint32_t i = n; i-- > 0;) {
        f->slots[i].next = f->free_top;
        f->free_top = i;
    }

    /* The workers: a router over a supervised pool of remote actors, one
     * restarted when its process dies. It never holds more jobs than the
     * front has in flight, so it never mutes the front. */
    tr_router_pool_config pc = {.how = TR_ROUTE_ROUND_ROBIN,
                                .routee = {.name = "worker",
                                           .remote = WORKER_NAME,
                                           .restart = TR_RESTART_PERMANENT,
                                           .shutdown_ms = 1000},
                                .size = f->cfg.workers,
                                .sup = {.name = "workers",
                                        .strategy = TR_SUP_ONE_FOR_ONE,
                                        .intensity = 4 * f->cfg.workers,
                                        .period_ms = 10000},
                                .hold = n + 1};
    int rc = tr_router_pool_spawn(ctx, &pc, &f->router);
    if (rc == 0 && f->cfg.rate > 0)
        rc = tr_rate_limiter_spawn(ctx, f->cfg.rate, f->cfg.burst, &f->limiter);
    return rc == 0 ? socket_open(ctx, f) : rc;
}

static int front_handle(tr_ctx *ctx, void *state, tr_msg *msg) {
    struct front *f = state;
    int rc = 0;
    switch (tr_msg_tag(msg)) {
    case TAG_RESULT:
        if (!tr_msg_is_reply(msg))
            return TR_UNHANDLED;
        on_job_end(f, msg, SVC_OK, tr_msg_u64(msg));
        break;
    case TR_TAG_TIMEOUT:
        on_job_end(f, msg, SVC_DEADLINE, 0);
        break;
    case TR_TAG_REMOTE_FAILED:  /* its worker process was lost */
    case TR_TAG_REQUEST_FAILED: /* it died queued, or found no worker */
        on_job_end(f, msg, SVC_FAILED, 0);
        break;
    case TR_TAG_LIMIT_GRANT:
        on_grant(ctx, f);
        break;
    case TAG_EXPIRED:
        on_expired(f, tr_msg_u64(msg));
        break;
    case TAG_IO:
        rc = socket_io(ctx, f);
        break;
    case TAG_DRAIN:
        f->drain_pending = false;
        rc = socket_io(ctx, f);
        break;
    case TAG_RETRY:
        f->retry_armed = false;
        rc = socket_io(ctx, f);
        break;
    case TAG_TICK:
        rc = on_tick(ctx, f);
        break;
    default:
        return TR_UNHANDLED;
    }
    return rc == 0 ? socket_after_turn(ctx, f) : rc;
}

/* SIGINT/SIGTERM (the runtime's orderly shutdown): drain, see the notes.
 * Before the socket is open there is nothing to drain. */
static int front_cancel(tr_ctx *ctx, void *state, int reason) {
    struct front *f = state;
    (void)reason;
    if (f->sock == NULL || f->draining)
        return 0;
    return begin_drain(ctx, f) == 0 ? TR_DRAIN : 0;
}

/* The router (its supervisor exceeded its restart intensity) or the
 * limiter ended: the service cannot go on as configured. Stop as on a
 * signal: what was accepted is still answered (a job queued at the dead
 * router comes back as TR_TAG_REQUEST_FAILED, the rest by its deadline
 * or the drain time). */
static void front_child_exit(tr_ctx *ctx, void *state, const tr_exit *x) {
    struct front *f = state;
    fprintf(stderr, "service: a part of the service ended (%s): stopping\n",
            tr_exit_reason_name(x->reason));
    f->rep.child_failed = true;
    if (f->sock == NULL || (!f->draining && begin_drain(ctx, f) != 0))
        tr_stop(ctx); /* nothing accepted yet, or no way to drain */
}

static void front_stop(tr_ctx *ctx, void *state, int reason) {
    struct front *f = state;
    if (f->tick.id != 0)
        (void)tr_timer_cancel(tr_ctx_runtime(ctx), f->tick);
    if (f->sock != NULL) {
        if (f->watch.id != 0)
            (void)tr_unwatch(tr_ctx_runtime(ctx), f->watch);
        outbox_flush(f);
        for (; f->out_n > 0; f->out_n--)
            count_undeliverable(f, EAGAIN);
        zmq_close(f->sock); /* ZMQ_LINGER bounds the flush at ctx term */
        f->sock = NULL;
    }
    if (reason < 0)
        fprintf(stderr, "service: the front failed: %s\n",
                tr_exit_reason_name(reason));
    f->rep.reason = reason;
    f->rep.stopped = true;
    *f->cfg.report = f->rep;
    free(f->slots);
    free(f->out);
    free(f->map.keys);
    free(f->map.vals);
    f->slots = NULL;
    f->out = NULL;
    f->map.keys = NULL;
    f->map.vals = NULL;
}

static const tr_behavior front_behavior = {
    .name = "service.front",
    .handle = front_handle,
    .on_start = front_start,
    .on_stop = front_stop,
    .on_cancel = front_cancel,
    .on_child_exit = front_child_exit,
    .state_size = sizeof(struct front),
    .grace_ms = FRONT_GRACE_MS,
};

/* ---- command line ---- */

struct options {
    const char *endpoint;
    uint64_t workers, processes, threads, rate, burst, queue, max_inflight,
        drain_ms, linger_ms;
};

static void usage(FILE *out) {
    fprintf(out,
            "usage: service [--endpoint E] [--workers K] [--processes P] "
            "[--threads T]\n"
            "               [--rate R] [--burst B] [--queue Q] "
            "[--max-inflight M]\n"
            "               [--drain-ms MS] [--linger-ms MS] [--help]\n"
            "  --endpoint E      ZeroMQ endpoint to bind (default %s)\n"
            "  --workers K       worker actors, 1..%u (default 4)\n"
            "  --processes P     worker processes they run in, 1..16 "
            "(default 2)\n"
            "  --threads T       scheduler threads here, 1..64 (default 2)\n"
            "  --rate R          requests admitted per second, 0 = no limit "
            "(default 5000)\n"
            "  --burst B         admitted at once above the rate (default "
            "500)\n"
            "  --queue Q         permits waited for at most; beyond: BUSY "
            "(default 256)\n"
            "  --max-inflight M  accepted requests at most; beyond: BUSY "
            "(default 1024)\n"
            "  --drain-ms MS     on SIGTERM/SIGINT, time given to accepted "
            "requests,\n"
            "                    0..%u (default 5000); then they are "
            "answered FAILED\n"
            "  --linger-ms MS    then, answer SHUTTING_DOWN until no request "
            "came for MS,\n"
            "                    0..%u (default 500)\n"
            "The wire format is described at the top of "
            "examples/service.c. The last line\n"
            "of stdout is: accepted=<n> ok=<n> deadline=<n> failed=<n> "
            "busy=<n> bad=<n>\n"
            "shutdown_rejected=<n> lost=<n> received=<n> undeliverable=<n> "
            "... Exit status:\n"
            "0 after a clean stop with lost=0, 1 otherwise, 2 for bad "
            "arguments.\n",
            DEFAULT_ENDPOINT, MAX_WORKERS, MAX_DRAIN_MS, MAX_LINGER_MS);
}

static bool parse_u64(const char *s, uint64_t max, uint64_t *out) {
    if (s == NULL || *s == '\0')
        return false;
    uint64_t v = 0;
    for (; *s != '\0'; s++) {
        if (*s < '0' || *s > '9')
            return false;
        uint64_t digit = (uint64_t)(*s - '0');
        if (v > (max - digit) / 10)
            return false;
        v = v * 10 + digit;
    }
    *out = v;
    return true;
}

/* "--name value" or "--name=value". 0 ok, 1 --help, -1 error. */
static int parse_args(int argc, char **argv, struct options *o) {
    *o = (struct options){.endpoint = DEFAULT_ENDPOINT,
                          .workers = 4,
                          .processes = 2,
                          .threads = 2,
                          .rate = 5000,
                          .burst = 500,
                          .queue = 256,
                          .max_inflight = 1024,
                          .drain_ms = 5000,
                          .linger_ms = 500};
    const struct {
        const char *name;
        uint64_t min, max, *value;
    } numeric[] = {{"--workers", 1, MAX_WORKERS, &o->workers},
                   {"--processes", 1, 16, &o->processes},
                   {"--threads", 1, 64, &o->threads},
                   {"--rate", 0, 1000000, &o->rate},
                   {"--burst", 1, 1000000, &o->burst},
                   {"--queue", 1, 1000000, &o->queue},
                   {"--max-inflight", 1, 65536, &o->max_inflight},
                   {"--drain-ms", 0, MAX_DRAIN_MS, &o->drain_ms},
                   {"--linger-ms", 0, MAX_LINGER_MS, &o->linger_ms}};
    const size_t nnumeric = sizeof numeric / sizeof numeric[0];
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0)
            return 1;
        size_t len = strcspn(arg, "=");
        const char *value = arg[len] == '=' ? arg + len + 1
                            : i + 1 < argc  ? argv[++i]
                                            : NULL;
        if (strncmp(arg, "--endpoint", len) == 0 && len == 10) {
            if (value == NULL || *value == '\0' ||
                strlen(value) >= ENDPOINT_MAX) {
                fprintf(stderr, "service: --endpoint needs an endpoint of "
                                "at most 255 characters\n");
                return -1;
            }
            o->endpoint = value;
            continue;
        }
        size_t k = 0;
        while (k < nnumeric && !(strncmp(arg, numeric[k].name, len) == 0 &&
                                 numeric[k].name[len] == '\0'))
            k++;
        if (k == nnumeric) {
            fprintf(stderr, "service: unknown argument '%s'\n", arg);
            return -1;
        }
        if (!parse_u64(value, numeric[k].max, numeric[k].value) ||
            *numeric[k].value < numeric[k].min) {
            fprintf(stderr,
                    "service: %s needs a number in %" PRIu64 "..%" PRIu64 "\n",
                    numeric[k].name, numeric[k].min, numeric[k].max);
            return -1;
        }
    }
    return 0;
}

/* ---- main ---- */

static int fail(const char *what, int rc) {
    fprintf(stderr, "service: %s: %s\n", what, tr_strerror(rc));
    return 1;
}

int main(int argc, char **argv) {
    /* Worker processes run this program too: register the worker's
     * behaviour, then let tr_worker_main take over in a worker process. */
    int rc = tr_register(WORKER_NAME, &worker_behavior);
    if (rc != 0 || (rc = tr_worker_main(argc, argv)) != 0)
        return fail("worker setup", rc);

    struct options opt;
    int parsed = parse_args(argc, argv, &opt);
    if (parsed != 0) {
        usage(parsed > 0 ? stdout : stderr);
        return parsed > 0 ? 0 : 2;
    }

    /* The runtime first: it blocks SIGINT/SIGTERM in this thread, so the
     * threads started afterwards (ZeroMQ's too) inherit that and only the
     * runtime's signalfd sees them. */
    tr_runtime *rt = NULL;
    tr_runtime_config cfg = {.workers = (unsigned)opt.threads,
                             .handle_signals = true};
    if ((rc = tr_runtime_create(&rt, &cfg)) != 0)
        return fail("tr_runtime_create", rc);
    void *zctx = zmq_ctx_new();
    if (zctx == NULL) {
        tr_runtime_destroy(&rt);
        return fail("zmq_ctx_new", TR_ESYS);
    }
    /* A worker process runs one job per worker actor at a time; one more
     * thread keeps its link (heartbeats, cancels) responsive meanwhile. */
    unsigned per_process =
        (unsigned)((opt.workers + opt.processes - 1) / opt.processes);
    tr_pool_config pool = {.processes = (unsigned)opt.processes,
                           .worker_threads = per_process + 1};
    struct service_report report = {0};
    struct front_config fc = {.zmq = zctx,
                              .report = &report,
                              .workers = (uint32_t)opt.workers,
                              .processes = (uint32_t)opt.processes,
                              .rate = (uint32_t)opt.rate,
                              .burst = (uint32_t)opt.burst,
                              .queue = (uint32_t)opt.queue,
                              .max_inflight = (uint32_t)opt.max_inflight,
                              .drain_ms = (int64_t)opt.drain_ms,
                              .linger_ms = (int64_t)opt.linger_ms};
    snprintf(fc.endpoint, sizeof fc.endpoint, "%s", opt.endpoint);
    if ((rc = tr_pool_start(rt, &pool)) != 0 ||
        (rc = tr_runtime_spawn(rt, &front_behavior, &fc, sizeof fc, NULL)) !=
            0) {
        tr_runtime_destroy(&rt);
        zmq_ctx_term(zctx);
        return fail("start", rc);
    }

    /* Until a signal (or a failure) stops the front and with it every
     * actor. */
    int run_rc = tr_runtime_run(rt);
    if (run_rc != 0)
        fprintf(stderr, "service: tr_runtime_run: %s\n", tr_strerror(run_rc));
    tr_runtime_stats stats;
    tr_runtime_get_stats(rt, &stats);
    tr_runtime_destroy(&rt); /* stops the worker processes */
    zmq_ctx_term(zctx);      /* the socket is closed: flush, then free */

    const struct service_report *r = &report;
    uint64_t answered = r->ok + r->deadline + r->failed;
    uint64_t lost = r->accepted > answered ? r->accepted - answered : 0;
    bool clean =
        run_rc == 0 && r->stopped && r->reason >= 0 && !r->child_failed &&
        lost == 0 &&
        r->received == r->accepted + r->busy + r->bad + r->shutdown_rejected;
    printf("accepted=%" PRIu64 " ok=%" PRIu64 " deadline=%" PRIu64
           " failed=%" PRIu64 " busy=%" PRIu64 " bad=%" PRIu64
           " shutdown_rejected=%" PRIu64 " lost=%" PRIu64 " received=%" PRIu64
           " undeliverable=%" PRIu64 " late_replies=%" PRIu64 " clean=%d\n",
           r->accepted, r->ok, r->deadline, r->failed, r->busy, r->bad,
           r->shutdown_rejected, lost, r->received, r->undeliverable,
           stats.late_replies, clean ? 1 : 0);
    return clean ? 0 : 1;
}
