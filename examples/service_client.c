/* service_client — load generator and checker for examples/service.c.
 *
 * A ZeroMQ DEALER that sends --requests requests (ids 1..N, each
 * --work rounds with a --deadline-ms deadline) to the service at
 * --endpoint, keeping at most --concurrency of them unanswered, paced at
 * --rate per second (0: as fast as the window allows). It stops sending
 * when it is done or when the service answers SHUTTING_DOWN, then waits
 * for the replies still due. A request counts as unanswered when no reply
 * came --wait-ms past its deadline (the service answers every request by
 * its deadline, so by then it has stopped answering).
 *
 * Every reply is checked: its id must be one that was sent and not
 * answered yet, and an OK result must equal the digest the client
 * computes itself (examples/service_wire.h).
 *
 * This side needs no actor runtime: any program that speaks the 24-byte
 * frames (the format is at the top of examples/service.c) can be a
 * client. It is one thread with zmq_poll.
 *
 * The last line of stdout:
 *   sent=<n> ok=<n> deadline=<n> failed=<n> busy=<n> bad=<n> shutdown=<n>
 *   unanswered=<n> wrong=<n> duplicate=<n> invalid=<n> elapsed_s=<s>
 * Exit status 0 iff unanswered, wrong, duplicate and invalid are all 0
 * (every request sent got exactly one reply, every OK result is right);
 * 1 otherwise; 2 for bad arguments. */
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

#define DEFAULT_ENDPOINT "ipc://@troupe-service"
#define MAX_REQUESTS 100000000u

struct options {
    const char *endpoint;
    uint64_t requests, rate, work, deadline_ms, concurrency, wait_ms;
};

struct tally {
    uint64_t sent, by_status[SVC_NSTATUS], unanswered, wrong, duplicate,
        invalid;
};

static void usage(FILE *out) {
    fprintf(out,
            "usage: service_client [--endpoint E] [--requests N] [--rate R] "
            "[--work W]\n"
            "                      [--deadline-ms D] [--concurrency C] "
            "[--wait-ms MS]\n"
            "  --endpoint E      the service (default %s)\n"
            "  --requests N      requests to send, 0..%u (default 1000)\n"
            "  --rate R          per second, 0 = as fast as possible "
            "(default 0)\n"
            "  --work W          rounds of the job per request, 1..%llu "
            "(default 100000)\n"
            "  --deadline-ms D   deadline of each request, 1..%u (default "
            "1000)\n"
            "  --concurrency C   requests unanswered at most (default 16)\n"
            "  --wait-ms MS      past a deadline, how long to wait for its "
            "reply\n"
            "                    before giving up on the service (default "
            "5000)\n",
            DEFAULT_ENDPOINT, MAX_REQUESTS, SVC_MAX_WORK, SVC_MAX_DEADLINE_MS);
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
                          .requests = 1000,
                          .work = 100000,
                          .deadline_ms = 1000,
                          .concurrency = 16,
                          .wait_ms = 5000};
    const struct {
        const char *name;
        uint64_t min, max, *value;
    } numeric[] = {{"--requests", 0, MAX_REQUESTS, &o->requests},
                   {"--rate", 0, 10000000, &o->rate},
                   {"--work", 1, SVC_MAX_WORK, &o->work},
                   {"--deadline-ms", 1, SVC_MAX_DEADLINE_MS, &o->deadline_ms},
                   {"--concurrency", 1, 1000000, &o->concurrency},
                   {"--wait-ms", 0, 600000, &o->wait_ms}};
    const size_t nnumeric = sizeof numeric / sizeof numeric[0];
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0)
            return 1;
        size_t len = strcspn(arg, "=");
        const char *value = arg[len] == '=' ? arg + len + 1
                            : i + 1 < argc  ? argv[++i]
                                            : NULL;
        if (len == 10 && strncmp(arg, "--endpoint", len) == 0) {
            if (value == NULL || *value == '\0') {
                fprintf(stderr, "service_client: --endpoint needs a value\n");
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
            fprintf(stderr, "service_client: unknown argument '%s'\n", arg);
            return -1;
        }
        if (!parse_u64(value, numeric[k].max, numeric[k].value) ||
            *numeric[k].value < numeric[k].min) {
            fprintf(stderr,
                    "service_client: %s needs a number in %" PRIu64 "..%" PRIu64
                    "\n",
                    numeric[k].name, numeric[k].min, numeric[k].max);
            return -1;
        }
    }
    return 0;
}

/* The run's state: ids 1..next-1 were sent; answered[id] says which got
 * their reply; low is the oldest id still waiting (its send time bounds
 * how long we wait). */
struct run {
    struct options o;
    void *sock;
    uint8_t *answered;
    int64_t *sent_ms;
    uint64_t next, low, outstanding;
    bool stop_sending;
    struct tally t;
};

/* Handles one reply frame. */
static void on_reply(struct run *r, const void *data, size_t len) {
    svc_reply rep;
    if (svc_reply_decode(data, len, &rep) != 0 || rep.status >= SVC_NSTATUS ||
        rep.id == 0 || rep.id >= r->next) {
        r->t.invalid++;
        return;
    }
    if (r->answered[rep.id]) {
        r->t.duplicate++;
        return;
    }
    r->answered[rep.id] = 1;
    r->outstanding--;
    r->t.by_status[rep.status]++;
    if (rep.status == SVC_OK &&
        rep.result != svc_job_rounds(rep.id, 0, r->o.work)) {
        if (r->t.wrong++ < 10)
            fprintf(stderr,
                    "service_client: request %" PRIu64 ": wrong result\n",
                    rep.id);
    }
    if (rep.status == SVC_SHUTTING_DOWN)
        r->stop_sending = true;
    while (r->low < r->next && r->answered[r->low])
        r->low++;
}

/* Reads every reply waiting; -1 on a socket error. */
static int read_replies(struct run *r) {
    for (;;) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, r->sock, ZMQ_DONTWAIT) < 0) {
            int err = zmq_errno();
            zmq_msg_close(&m);
            if (err == EAGAIN)
                return 0;
            fprintf(stderr, "service_client: recv: %s\n", zmq_strerror(err));
            return -1;
        }
        bool more = zmq_msg_more(&m) != 0;
        on_reply(r, zmq_msg_data(&m), more ? 0 : zmq_msg_size(&m));
        zmq_msg_close(&m);
        while (more) { /* a multi-frame reply is not ours: skip it whole */
            zmq_msg_init(&m);
            if (zmq_msg_recv(&m, r->sock, 0) < 0) {
                zmq_msg_close(&m);
                return -1;
            }
            more = zmq_msg_more(&m) != 0;
            zmq_msg_close(&m);
        }
    }
}

/* Sends while the window, the pacing and the socket allow. *blocked: the
 * socket refused (wait for POLLOUT). Returns when nothing more can go now.
 */
static int send_some(struct run *r, int64_t start_ns, bool *blocked) {
    *blocked = false;
    while (!r->stop_sending && r->next <= r->o.requests &&
           r->outstanding < r->o.concurrency) {
        uint64_t n = r->next - 1; /* sent so far */
        if (r->o.rate > 0 &&
            tr_now_ns() < start_ns + (int64_t)(n * 1000000000u / r->o.rate))
            return 0;
        svc_request rq = {r->next, r->o.work, (uint32_t)r->o.deadline_ms};
        unsigned char frame[SVC_REQ_SIZE];
        svc_request_encode(&rq, frame);
        if (zmq_send(r->sock, frame, sizeof frame, ZMQ_DONTWAIT) < 0) {
            if (zmq_errno() == EAGAIN) {
                *blocked = true;
                return 0;
            }
            fprintf(stderr, "service_client: send: %s\n",
                    zmq_strerror(zmq_errno()));
            return -1;
        }
        r->sent_ms[r->next] = tr_now_ms();
        r->next++;
        r->outstanding++;
        r->t.sent++;
    }
    return 0;
}

static int run(struct run *r) {
    int64_t start_ns = tr_now_ns();
    for (;;) {
        bool blocked = false;
        if (send_some(r, start_ns, &blocked) != 0)
            return -1;
        bool more_to_send = !r->stop_sending && r->next <= r->o.requests;
        if (r->outstanding == 0 && !more_to_send)
            return 0;
        /* Sleep until a reply, room to send, the next paced send, or the
         * moment the oldest request is overdue. */
        int64_t now = tr_now_ms();
        int64_t give_up = INT64_MAX, wake;
        if (r->outstanding > 0)
            give_up = r->sent_ms[r->low] + (int64_t)r->o.deadline_ms +
                      (int64_t)r->o.wait_ms;
        if (now >= give_up) {
            fprintf(stderr,
                    "service_client: no reply to request %" PRIu64
                    " for %" PRIu64 " ms past its deadline: giving up\n",
                    r->low, r->o.wait_ms);
            return 0;
        }
        wake = give_up;
        if (more_to_send && r->outstanding < r->o.concurrency && !blocked &&
            r->o.rate > 0) {
            uint64_t n = r->next - 1;
            int64_t due_ns = start_ns + (int64_t)(n * 1000000000u / r->o.rate);
            int64_t due = (due_ns + 999999) / 1000000; /* rounded up */
            wake = due < wake ? due : wake;
        }
        long timeout = wake == INT64_MAX ? -1
                       : wake > now      ? (long)(wake - now)
                                         : 0;
        zmq_pollitem_t item = {r->sock, 0, ZMQ_POLLIN, 0};
        if (blocked)
            item.events |= ZMQ_POLLOUT;
        if (zmq_poll(&item, 1, timeout) < 0 && zmq_errno() != EINTR) {
            fprintf(stderr, "service_client: poll: %s\n",
                    zmq_strerror(zmq_errno()));
            return -1;
        }
        if (read_replies(r) != 0)
            return -1;
    }
}

int main(int argc, char **argv) {
    struct run r = {.next = 1, .low = 1};
    int parsed = parse_args(argc, argv, &r.o);
    if (parsed != 0) {
        usage(parsed > 0 ? stdout : stderr);
        return parsed > 0 ? 0 : 2;
    }
    r.answered = calloc(r.o.requests + 1, 1);
    r.sent_ms = calloc(r.o.requests + 1, sizeof *r.sent_ms);
    void *zctx = zmq_ctx_new();
    r.sock = zctx != NULL ? zmq_socket(zctx, ZMQ_DEALER) : NULL;
    int linger = 0;
    if (r.answered == NULL || r.sent_ms == NULL || r.sock == NULL ||
        zmq_setsockopt(r.sock, ZMQ_LINGER, &linger, sizeof linger) != 0 ||
        zmq_connect(r.sock, r.o.endpoint) != 0) {
        fprintf(stderr, "service_client: cannot connect to %s: %s\n",
                r.o.endpoint, zmq_strerror(zmq_errno()));
        return 1;
    }
    char rate[32] = "as fast as possible";
    if (r.o.rate > 0)
        snprintf(rate, sizeof rate, "%" PRIu64 "/s", r.o.rate);
    printf("service_client: %" PRIu64 " requests to %s, work %" PRIu64
           ", deadline %" PRIu64 " ms, concurrency %" PRIu64 ", rate %s\n",
           r.o.requests, r.o.endpoint, r.o.work, r.o.deadline_ms,
           r.o.concurrency, rate);
    fflush(stdout);

    int64_t start_ns = tr_now_ns();
    int rc = run(&r);
    double elapsed_s = (double)(tr_now_ns() - start_ns) / 1e9;
    r.t.unanswered = r.outstanding;
    zmq_close(r.sock);
    zmq_ctx_term(zctx);
    free(r.answered);
    free(r.sent_ms);

    const struct tally *t = &r.t;
    printf("sent=%" PRIu64 " ok=%" PRIu64 " deadline=%" PRIu64
           " failed=%" PRIu64 " busy=%" PRIu64 " bad=%" PRIu64
           " shutdown=%" PRIu64 " unanswered=%" PRIu64 " wrong=%" PRIu64
           " duplicate=%" PRIu64 " invalid=%" PRIu64 " elapsed_s=%.3f\n",
           t->sent, t->by_status[SVC_OK], t->by_status[SVC_DEADLINE],
           t->by_status[SVC_FAILED], t->by_status[SVC_BUSY],
           t->by_status[SVC_BAD], t->by_status[SVC_SHUTTING_DOWN],
           t->unanswered, t->wrong, t->duplicate, t->invalid, elapsed_s);
    bool ok = rc == 0 && t->unanswered == 0 && t->wrong == 0 &&
              t->duplicate == 0 && t->invalid == 0;
    return ok ? 0 : 1;
}
