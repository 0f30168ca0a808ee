/* pipeline — a local producer -> workers -> consumer pipeline on troupe.
 *
 * Design notes
 * ------------
 * Four kinds of actor, one runtime, no shared memory between them:
 *
 *   producer --ITEM--> worker[k] --RESULT--> consumer --REPORT--> main
 *       ^                 |  ^                  |  |
 *       +-----CREDIT------+  +------CREDIT------+  +--COUNT/FINISH--> progress
 *
 *   - The producer makes items 1..N and deals them round-robin to the
 *     workers it spawned, skipping a worker that has no credit left.
 *   - Flow control is credit-based on each hop (as in Reactive Streams'
 *     request(n)): a sender starts with CREDIT_WINDOW credits per receiver,
 *     spends one per message and sends only while it has credit; the
 *     receiver grants credits back, CREDIT_BATCH at a time (one credit
 *     message per batch, not per item), as it finishes items. A worker
 *     finishes an item when it has handed the result to the consumer, so a
 *     slow consumer stalls the workers, which stall the producer: at most
 *     2 * CREDIT_WINDOW items per worker are ever queued, whatever the
 *     speed of each stage. This is the backpressure the multi-process
 *     pipeline builds on. No deadlock: a receiver owes fewer than
 *     CREDIT_BATCH <= CREDIT_WINDOW credits, so when a sender holds none,
 *     the receiver has items queued or a credit message is on its way.
 *   - Shutdown is ordered by per-sender FIFO alone. After item N the
 *     producer sends EOF to every worker. A worker's EOF comes after all of
 *     its items; once it has also passed all its results on, it returns
 *     its last credits, tells the producer DONE and the consumer EOF, and
 *     stops. The producer stays alive until every worker said DONE (their
 *     credit messages must find it alive), then reports to main and stops.
 *     The consumer has every result once it has seen an EOF from each
 *     worker; it reports to main, tells the progress actor to finish, and
 *     stops. Every actor has then ended, so tr_runtime_run returns by
 *     quiescence and main prints the summary.
 *   - The progress actor owns a periodic timer (tr_send_every) and redraws
 *     one status line on stderr per tick from counts the producer and the
 *     consumer send it every PROGRESS_EVERY items: a message per thousand
 *     items, not per item, keeps monitoring off the hot path.
 *   - Any actor that fails stops the whole runtime (on_stop); main then
 *     finds a report missing and exits 1 instead of hanging.
 *
 * Correctness checks: the consumer marks each id in a bitmap (duplicates
 * and out-of-range ids are counted, never silently summed) and adds up the
 * workers' digests; main recomputes the digest sum sequentially with the
 * same function and compares. */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L /* isatty */
#endif

#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <troupe/troupe.h>

/* ---- parameters ---- */

#define DEFAULT_ITEMS 200000u
#define DEFAULT_WORKERS 4u
#define MAX_ITEMS 1000000000u /* the consumer's bitmap: 125 MB at most */
#define MAX_WORKERS 1024u
#define MAX_THREADS 1024u

/* Items in flight per link (sent, not yet granted back): producer -> each
 * worker and each worker -> consumer. 64 keeps every stage busy across a
 * scheduling hop while bounding the queues. */
#define CREDIT_WINDOW 64u
/* Credits a receiver returns per credit message. */
#define CREDIT_BATCH 16u
_Static_assert(CREDIT_BATCH >= 1 && CREDIT_BATCH <= CREDIT_WINDOW,
               "a receiver must never owe more credit than the window");

/* Rounds of the per-item CPU job (see item_digest). */
#define WORK_ROUNDS 256u

/* Producer and consumer tell the progress actor their count this often. */
#define PROGRESS_EVERY 1024u
#define PROGRESS_PERIOD_MS 100

/* Message tags (application tags are below TR_TAG_SYSTEM). */
enum {
    TAG_ITEM = 1,        /* producer -> worker: BYTES struct item */
    TAG_EOF,             /* producer -> worker, worker -> consumer: no more */
    TAG_CREDIT,          /* worker -> producer: U64 index << 32 | credits;
                            consumer -> worker: U64 credits */
    TAG_DONE,            /* worker -> producer: all my items are handled */
    TAG_RESULT,          /* worker -> consumer: BYTES struct result */
    TAG_PRODUCED,        /* producer -> progress: U64 items produced so far */
    TAG_CONSUMED,        /* consumer -> progress: U64 items consumed so far */
    TAG_TICK,            /* timer -> progress: redraw */
    TAG_FINISH,          /* consumer -> progress: U64 final count; stop */
    TAG_PRODUCER_REPORT, /* producer -> main: BYTES struct producer_report */
    TAG_CONSUMER_REPORT  /* consumer -> main: BYTES struct consumer_report */
};

/* ---- the work ---- */

struct item {
    uint64_t id; /* 1..N */
    uint64_t value;
};

struct result {
    uint64_t id;
    uint64_t digest;
    uint64_t worker; /* index of the sender, for the consumer's credit
                        (64 bits: the struct has no padding to leak) */
};

/* The value carried by item `id`: splitmix64, so values look random but
 * main can regenerate them. */
static uint64_t item_value(uint64_t id) {
    uint64_t z = id * 0x9e3779b97f4a7c15u;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

/* The per-item CPU job: WORK_ROUNDS dependent rounds of a 64-bit mixer
 * (about 0.5 us), so workers do real work between messages. */
static uint64_t item_digest(uint64_t value) {
    uint64_t h = value;
    for (uint64_t round = 0; round < WORK_ROUNDS; round++) {
        h ^= h >> 33;
        h *= 0xff51afd7ed558ccdu;
        h ^= h >> 29;
        h += round;
    }
    return h;
}

/* ---- helpers shared by the actors ---- */

/* Builds a BYTES message (copied inline: these structs fit in
 * TR_MSG_INLINE) and sends it; the message is freed if the send fails. */
static int send_bytes(tr_ctx *ctx, tr_ref to, uint32_t tag, const void *data,
                      size_t len) {
    tr_msg *m = tr_msg_new_bytes(tag, data, len);
    if (m == NULL)
        return TR_ENOMEM;
    int rc = tr_send(ctx, to, &m);
    if (rc != 0)
        tr_msg_destroy(&m);
    return rc;
}

/* Copies a BYTES payload of exactly `len` bytes out of msg (memcpy: the
 * inline payload has no alignment promise). */
static int read_bytes(const tr_msg *msg, void *out, size_t len) {
    size_t have = 0;
    const void *data = tr_msg_data(msg, &have);
    if (tr_msg_kind(msg) != TR_PAYLOAD_BYTES || data == NULL || have != len)
        return TR_EPROTO;
    memcpy(out, data, len);
    return 0;
}

/* A failed actor takes the pipeline down: the others would otherwise wait
 * for it forever. Shutdown (reason TR_EXIT_SHUTDOWN) and normal ends are
 * not failures. */
static void stop_on_failure(tr_ctx *ctx, const char *who, int reason) {
    if (reason >= 0)
        return;
    fprintf(stderr, "pipeline: %s failed: %s (%s)\n", who, tr_strerror(reason),
            tr_err_name(reason));
    tr_runtime_stop(tr_ctx_runtime(ctx));
}

/* ---- progress ---- */

struct progress_config {
    uint64_t items;
    bool live; /* draw the line (stderr is a terminal, not --quiet) */
};

struct progress_state {
    struct progress_config cfg;
    tr_timer_id timer;
    uint64_t produced, consumed;
    uint64_t last_consumed; /* at the previous tick, for the rate */
    int64_t start_ns, last_ns;
    bool drawn; /* a line is on screen and must be erased */
};

static void progress_erase(struct progress_state *p) {
    if (!p->drawn)
        return;
    fputs("\r\033[K", stderr); /* carriage return, erase to end of line */
    fflush(stderr);
    p->drawn = false;
}

/* One write to a terminal per tick: cheap enough to do in the handler
 * rather than through tr_offload. Ticks show the rate since the previous
 * tick; the final line shows the average over the run and ends the line. */
static void progress_draw(struct progress_state *p, bool final) {
    int64_t now = tr_now_ns();
    int64_t since = final ? p->start_ns : p->last_ns;
    uint64_t base = final ? 0 : p->last_consumed;
    double dt = (double)(now - since) / 1e9;
    double rate = dt > 0 ? (double)(p->consumed - base) / dt : 0;
    double pct = p->cfg.items > 0
                     ? 100.0 * (double)p->consumed / (double)p->cfg.items
                     : 100.0;
    fprintf(stderr,
            "\rpipeline: produced %" PRIu64 "/%" PRIu64 "  consumed %" PRIu64
            " (%5.1f%%)  %s%.0f items/s\033[K%s",
            p->produced, p->cfg.items, p->consumed, pct, final ? "avg " : "",
            rate, final ? "\n" : "");
    fflush(stderr);
    p->drawn = !final;
    p->last_ns = now;
    p->last_consumed = p->consumed;
}

static int progress_start(tr_ctx *ctx, void *state) {
    struct progress_state *p = state;
    p->start_ns = p->last_ns = tr_now_ns();
    if (!p->cfg.live)
        return 0;
    return tr_send_every(tr_ctx_runtime(ctx), tr_self(ctx), PROGRESS_PERIOD_MS,
                         TAG_TICK, &p->timer);
}

static int progress_handle(tr_ctx *ctx, void *state, tr_msg *msg) {
    struct progress_state *p = state;
    switch (tr_msg_tag(msg)) {
    case TAG_PRODUCED:
        p->produced = tr_msg_u64(msg);
        return 0;
    case TAG_CONSUMED:
        p->consumed = tr_msg_u64(msg);
        return 0;
    case TAG_TICK:
        progress_draw(p, false);
        return 0;
    case TAG_FINISH:
        p->consumed = tr_msg_u64(msg);
        if (p->timer.id != 0) {
            /* TR_ENOTFOUND cannot happen for a periodic timer of a live
             * actor; a tick already queued behind this message becomes a
             * dead letter when we stop. */
            int rc = tr_timer_cancel(tr_ctx_runtime(ctx), p->timer);
            p->timer.id = 0;
            if (rc != 0)
                return rc;
        }
        if (p->cfg.live)
            progress_draw(p, true); /* the line stays, complete */
        return TR_STOP;
    default:
        return TR_EPROTO;
    }
}

static void progress_stop(tr_ctx *ctx, void *state, int reason) {
    progress_erase(state); /* failure: no half line before the summary */
    stop_on_failure(ctx, "progress", reason);
}

static const tr_behavior progress_behavior = {
    .name = "progress",
    .handle = progress_handle,
    .on_start = progress_start,
    .on_stop = progress_stop,
    .state_size = sizeof(struct progress_state),
};

/* ---- worker ---- */

struct worker_config {
    tr_ref producer, consumer;
    uint32_t index; /* echoed in credit messages and results */
};

struct worker_state {
    struct worker_config cfg;
    uint32_t owed;   /* credits earned from the producer, not yet granted */
    uint32_t credit; /* results the consumer will still accept */
    bool eof;        /* the producer sent its last item */
    /* Results waiting for consumer credit. Never more than CREDIT_WINDOW:
     * an item's producer credit returns only once its result is sent. */
    uint32_t out_head, out_count;
    struct result outbox[CREDIT_WINDOW];
};

static int worker_grant(tr_ctx *ctx, struct worker_state *w) {
    if (w->owed == 0)
        return 0;
    int rc = tr_send_u64(ctx, w->cfg.producer, TAG_CREDIT,
                         (uint64_t)w->cfg.index << 32 | w->owed);
    if (rc == 0)
        w->owed = 0;
    return rc;
}

/* Sends queued results while the consumer has credit for them; after EOF
 * and the last result, ends the worker. */
static int worker_flush(tr_ctx *ctx, struct worker_state *w) {
    int rc;
    while (w->out_count > 0 && w->credit > 0) {
        const struct result *r = &w->outbox[w->out_head];
        rc = send_bytes(ctx, w->cfg.consumer, TAG_RESULT, r, sizeof *r);
        if (rc != 0)
            return rc;
        w->out_head = (w->out_head + 1) % CREDIT_WINDOW;
        w->out_count--;
        w->credit--;
        if (++w->owed >= CREDIT_BATCH && (rc = worker_grant(ctx, w)) != 0)
            return rc;
    }
    if (!w->eof || w->out_count > 0)
        return 0;
    /* Order matters only per receiver: credits before DONE to the
     * producer; results (already sent) before EOF to the consumer. */
    if ((rc = worker_grant(ctx, w)) != 0 ||
        (rc = tr_send_tag(ctx, w->cfg.producer, TAG_DONE)) != 0 ||
        (rc = tr_send_tag(ctx, w->cfg.consumer, TAG_EOF)) != 0)
        return rc;
    return TR_STOP;
}

static int worker_start(tr_ctx *ctx, void *state) {
    (void)ctx;
    struct worker_state *w = state;
    w->credit = CREDIT_WINDOW;
    return 0;
}

static int worker_handle(tr_ctx *ctx, void *state, tr_msg *msg) {
    struct worker_state *w = state;
    switch (tr_msg_tag(msg)) {
    case TAG_ITEM: {
        struct item it;
        int rc = read_bytes(msg, &it, sizeof it);
        if (rc != 0)
            return rc;
        if (w->eof || w->out_count == CREDIT_WINDOW)
            return TR_EPROTO; /* the producer overran its credit */
        uint32_t tail = (w->out_head + w->out_count) % CREDIT_WINDOW;
        w->outbox[tail] =
            (struct result){it.id, item_digest(it.value), w->cfg.index};
        w->out_count++;
        return worker_flush(ctx, w);
    }
    case TAG_CREDIT: {
        uint64_t granted = tr_msg_u64(msg);
        if (granted > CREDIT_WINDOW - w->credit)
            return TR_EPROTO; /* more than the window: a bug */
        w->credit += (uint32_t)granted;
        return worker_flush(ctx, w);
    }
    case TAG_EOF:
        w->eof = true;
        return worker_flush(ctx, w);
    default:
        return TR_EPROTO;
    }
}

static void worker_stop(tr_ctx *ctx, void *state, int reason) {
    (void)state;
    stop_on_failure(ctx, "worker", reason);
}

static const tr_behavior worker_behavior = {
    .name = "worker",
    .handle = worker_handle,
    .on_start = worker_start,
    .on_stop = worker_stop,
    .state_size = sizeof(struct worker_state),
};

/* ---- producer ---- */

struct producer_config {
    uint64_t items;
    uint32_t nworkers;
    tr_ref consumer, progress, report_to;
};

struct producer_report {
    uint64_t produced;
    uint64_t interrupted; /* 1: cancelled (SIGINT/SIGTERM) and drained */
};

struct producer_state {
    struct producer_config cfg;
    tr_ref *workers;  /* nworkers, spawned in on_start */
    uint32_t *credit; /* per worker: items it may still be sent */
    /* Round-robin line of the workers that have credit, each at most once:
     * picking the next worker is O(1) however many are waiting for credit
     * (a scan over all workers would cost O(workers) per item). */
    uint32_t *ready;
    uint32_t ready_head, ready_count;
    uint64_t next_id; /* next item to produce; produced = next_id - 1 */
    uint32_t done;    /* workers that said DONE */
    bool eof_sent;
    bool interrupted;
};

static void producer_ready(struct producer_state *p, uint32_t k) {
    uint32_t n = p->cfg.nworkers;
    p->ready[(p->ready_head + p->ready_count) % n] = k;
    p->ready_count++;
}

/* Sends items while some worker has credit (at most nworkers *
 * CREDIT_WINDOW per call, so a turn stays short), then EOF once all are
 * out. */
static int producer_pump(tr_ctx *ctx, struct producer_state *p) {
    int rc;
    uint32_t n = p->cfg.nworkers;
    while (p->next_id <= p->cfg.items && p->ready_count > 0) {
        uint32_t k = p->ready[p->ready_head];
        p->ready_head = (p->ready_head + 1) % n;
        p->ready_count--;
        struct item it = {p->next_id, item_value(p->next_id)};
        rc = send_bytes(ctx, p->workers[k], TAG_ITEM, &it, sizeof it);
        if (rc != 0)
            return rc;
        if (--p->credit[k] > 0)
            producer_ready(p, k); /* to the back of the line */
        uint64_t produced = p->next_id++;
        if (produced % PROGRESS_EVERY == 0 &&
            (rc = tr_send_u64(ctx, p->cfg.progress, TAG_PRODUCED, produced)) !=
                0)
            return rc;
    }
    if (p->next_id > p->cfg.items && !p->eof_sent) {
        p->eof_sent = true;
        if ((rc = tr_send_u64(ctx, p->cfg.progress, TAG_PRODUCED,
                              p->next_id - 1)) != 0)
            return rc;
        for (uint32_t k = 0; k < n; k++)
            if ((rc = tr_send_tag(ctx, p->workers[k], TAG_EOF)) != 0)
                return rc;
    }
    return 0;
}

static int producer_start(tr_ctx *ctx, void *state) {
    struct producer_state *p = state;
    uint32_t n = p->cfg.nworkers;
    p->workers = calloc(n, sizeof *p->workers);
    p->credit = calloc(n, sizeof *p->credit);
    p->ready = calloc(n, sizeof *p->ready);
    if (p->workers == NULL || p->credit == NULL || p->ready == NULL)
        return TR_ENOMEM; /* on_stop frees what was allocated */
    p->next_id = 1;
    for (uint32_t k = 0; k < n; k++) {
        struct worker_config wc = {tr_self(ctx), p->cfg.consumer, k};
        int rc =
            tr_spawn(ctx, &worker_behavior, &wc, sizeof wc, &p->workers[k]);
        if (rc != 0)
            return rc;
        p->credit[k] = CREDIT_WINDOW;
        producer_ready(p, k);
    }
    return producer_pump(ctx, p);
}

static int producer_handle(tr_ctx *ctx, void *state, tr_msg *msg) {
    struct producer_state *p = state;
    switch (tr_msg_tag(msg)) {
    case TAG_CREDIT: {
        uint64_t v = tr_msg_u64(msg);
        uint32_t k = (uint32_t)(v >> 32);
        uint32_t granted = (uint32_t)v;
        if (k >= p->cfg.nworkers || granted > CREDIT_WINDOW - p->credit[k])
            return TR_EPROTO; /* more credit than the window: a bug */
        if (p->credit[k] == 0 && granted > 0)
            producer_ready(p, k); /* was out of the line */
        p->credit[k] += granted;
        return producer_pump(ctx, p);
    }
    case TAG_DONE: {
        if (++p->done < p->cfg.nworkers)
            return 0;
        struct producer_report rep = {p->next_id - 1, p->interrupted};
        int rc = send_bytes(ctx, p->cfg.report_to, TAG_PRODUCER_REPORT, &rep,
                            sizeof rep);
        return rc != 0 ? rc : TR_STOP;
    }
    default:
        return TR_EPROTO;
    }
}

/* Graceful shutdown (SIGINT/SIGTERM): produce nothing more, let the items
 * in flight drain through the workers and the consumer, then end as
 * usual: nothing accepted is lost. Past its grace the runtime kills it. */
static int producer_cancel(tr_ctx *ctx, void *state, int reason) {
    struct producer_state *p = state;
    (void)reason;
    if (p->workers == NULL)
        return 0;
    p->interrupted = true;
    p->cfg.items = p->next_id - 1;
    return producer_pump(ctx, p) == 0 ? TR_DRAIN : 0;
}

static void producer_stop(tr_ctx *ctx, void *state, int reason) {
    struct producer_state *p = state;
    free(p->workers);
    free(p->credit);
    free(p->ready);
    p->workers = NULL;
    p->credit = NULL;
    p->ready = NULL;
    stop_on_failure(ctx, "producer", reason);
}

static const tr_behavior producer_behavior = {
    .name = "producer",
    .handle = producer_handle,
    .on_start = producer_start,
    .on_stop = producer_stop,
    .on_cancel = producer_cancel,
    .state_size = sizeof(struct producer_state),
};

/* ---- consumer ---- */

struct consumer_config {
    uint64_t items;
    uint32_t nworkers;
    tr_ref progress, report_to;
};

struct consumer_report {
    uint64_t consumed;   /* distinct valid ids received */
    uint64_t duplicates; /* ids received more than once */
    uint64_t invalid;    /* ids outside 1..N */
    uint64_t checksum;   /* sum (mod 2^64) of the digests of distinct ids */
    int64_t finished_ns; /* tr_now_ns when the last result was in */
};

struct consumer_state {
    struct consumer_config cfg;
    uint64_t *seen; /* bitmap of ids, bit id-1 */
    uint32_t *owed; /* per worker: credits earned, not yet granted back */
    struct consumer_report rep;
    uint32_t eofs; /* workers that sent EOF */
};

static int consumer_start(tr_ctx *ctx, void *state) {
    (void)ctx;
    struct consumer_state *c = state;
    c->seen = calloc((size_t)(c->cfg.items / 64 + 1), sizeof *c->seen);
    c->owed = calloc(c->cfg.nworkers, sizeof *c->owed);
    return c->seen != NULL && c->owed != NULL ? 0 : TR_ENOMEM;
}

/* Grants credit back to the worker that sent msg. A worker that has sent
 * its last result may already have ended: it needs no more credit, so
 * TR_ENOACTOR is fine here (a grant that races with its end is dropped as
 * a dead letter, also harmless). */
static int consumer_grant(tr_ctx *ctx, struct consumer_state *c,
                          const tr_msg *msg, uint64_t worker) {
    if (++c->owed[worker] < CREDIT_BATCH)
        return 0;
    int rc = tr_send_u64(ctx, tr_msg_sender(msg), TAG_CREDIT, c->owed[worker]);
    c->owed[worker] = 0;
    return rc == TR_ENOACTOR ? 0 : rc;
}

static int consumer_result(tr_ctx *ctx, struct consumer_state *c,
                           const tr_msg *msg) {
    struct result r;
    if (read_bytes(msg, &r, sizeof r) != 0 || r.worker >= c->cfg.nworkers)
        return TR_EPROTO; /* cannot even return the credit: a bug */
    int rc = consumer_grant(ctx, c, msg, r.worker);
    if (rc != 0)
        return rc;
    if (r.id == 0 || r.id > c->cfg.items) {
        c->rep.invalid++;
        return 0;
    }
    uint64_t bit = (uint64_t)1 << ((r.id - 1) % 64);
    uint64_t *word = &c->seen[(r.id - 1) / 64];
    if (*word & bit) {
        c->rep.duplicates++;
        return 0;
    }
    *word |= bit;
    c->rep.checksum += r.digest;
    if (++c->rep.consumed % PROGRESS_EVERY == 0)
        return tr_send_u64(ctx, c->cfg.progress, TAG_CONSUMED, c->rep.consumed);
    return 0;
}

static int consumer_handle(tr_ctx *ctx, void *state, tr_msg *msg) {
    struct consumer_state *c = state;
    switch (tr_msg_tag(msg)) {
    case TAG_RESULT:
        return consumer_result(ctx, c, msg);
    case TAG_EOF: {
        if (++c->eofs < c->cfg.nworkers)
            return 0;
        /* Every worker's results came before its EOF: we have them all. */
        c->rep.finished_ns = tr_now_ns();
        int rc = send_bytes(ctx, c->cfg.report_to, TAG_CONSUMER_REPORT, &c->rep,
                            sizeof c->rep);
        if (rc == 0)
            rc = tr_send_u64(ctx, c->cfg.progress, TAG_FINISH, c->rep.consumed);
        return rc != 0 ? rc : TR_STOP;
    }
    default:
        return TR_EPROTO;
    }
}

static void consumer_stop(tr_ctx *ctx, void *state, int reason) {
    struct consumer_state *c = state;
    free(c->seen);
    free(c->owed);
    c->seen = NULL;
    c->owed = NULL;
    stop_on_failure(ctx, "consumer", reason);
}

/* Shutdown reaches the consumer once the producer has ended, but results
 * and end-of-stream marks from the workers may still be on their way:
 * keep consuming until every worker's EOF is in (then it stops itself). */
static int consumer_cancel(tr_ctx *ctx, void *state, int reason) {
    (void)ctx;
    (void)state;
    (void)reason;
    return TR_DRAIN;
}

static const tr_behavior consumer_behavior = {
    .name = "consumer",
    .handle = consumer_handle,
    .on_start = consumer_start,
    .on_stop = consumer_stop,
    .on_cancel = consumer_cancel,
    .state_size = sizeof(struct consumer_state),
};

/* ---- command line ---- */

struct options {
    uint64_t items, workers, threads;
    bool quiet;
};

static void usage(FILE *out) {
    fprintf(out,
            "usage: pipeline [--items N] [--workers K] [--threads T] "
            "[--quiet] [--help]\n"
            "  --items N     items to produce, 0..%u (default %u)\n"
            "  --workers K   worker actors, 1..%u (default %u)\n"
            "  --threads T   scheduler threads, 0..%u; 0 = online CPUs "
            "(default 0)\n"
            "  --quiet       no live progress line on stderr\n"
            "The last line of stdout is: produced=<n> consumed=<n> lost=<n> "
            "duplicates=<n>\n"
            "invalid=<n> checksum_ok=<0|1> complete=<0|1> elapsed_s=<s> "
            "items_per_s=<r>\n"
            "(complete=0: an actor failed, see stderr). Exit status: 0 when "
            "nothing was\n"
            "lost and the checksum matches, 1 otherwise, 2 for invalid "
            "arguments.\n",
            MAX_ITEMS, DEFAULT_ITEMS, MAX_WORKERS, DEFAULT_WORKERS,
            MAX_THREADS);
}

/* Strict decimal: digits only, no sign, no overflow, at most max. */
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

/* Accepts "--name value" and "--name=value". 0 ok, 1 --help, -1 error. */
static int parse_args(int argc, char **argv, struct options *o) {
    *o = (struct options){DEFAULT_ITEMS, DEFAULT_WORKERS, 0, false};
    const struct {
        const char *name;
        uint64_t min, max, *value;
    } numeric[] = {{"--items", 0, MAX_ITEMS, &o->items},
                   {"--workers", 1, MAX_WORKERS, &o->workers},
                   {"--threads", 0, MAX_THREADS, &o->threads}};
    const size_t nnumeric = sizeof numeric / sizeof numeric[0];
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0)
            return 1;
        if (strcmp(arg, "--quiet") == 0) {
            o->quiet = true;
            continue;
        }
        size_t k = 0, len = 0;
        for (; k < nnumeric; k++) {
            len = strlen(numeric[k].name);
            if (strncmp(arg, numeric[k].name, len) == 0 &&
                (arg[len] == '\0' || arg[len] == '='))
                break;
        }
        if (k == nnumeric) {
            fprintf(stderr, "pipeline: unknown argument '%s'\n", arg);
            return -1;
        }
        const char *value = arg[len] == '=' ? arg + len + 1
                            : i + 1 < argc  ? argv[++i]
                                            : NULL;
        if (!parse_u64(value, numeric[k].max, numeric[k].value) ||
            *numeric[k].value < numeric[k].min) {
            fprintf(stderr,
                    "pipeline: %s needs a number in %" PRIu64 "..%" PRIu64 "\n",
                    numeric[k].name, numeric[k].min, numeric[k].max);
            return -1;
        }
    }
    return 0;
}

/* ---- main ---- */

static int fail(const char *what, int rc) {
    fprintf(stderr, "pipeline: %s: %s\n", what, tr_strerror(rc));
    return 1;
}

int main(int argc, char **argv) {
    struct options opt;
    int parsed = parse_args(argc, argv, &opt);
    if (parsed != 0) {
        usage(parsed > 0 ? stdout : stderr);
        return parsed > 0 ? 0 : 2;
    }

    tr_runtime *rt = NULL;
    tr_inbox *inbox = NULL;
    /* SIGINT/SIGTERM: orderly shutdown (the producer drains, see
     * producer_cancel); a second signal stops at once. */
    tr_runtime_config cfg = {.workers = (unsigned)opt.threads,
                             .handle_signals = true};
    int rc = tr_runtime_create(&rt, &cfg);
    if (rc != 0)
        return fail("tr_runtime_create", rc);
    if ((rc = tr_inbox_create(rt, &inbox)) != 0) {
        tr_runtime_destroy(&rt);
        return fail("tr_inbox_create", rc);
    }

    /* Spawn order follows the references each actor needs; the producer
     * spawns the workers itself (they need its reference). */
    tr_ref progress, consumer, producer;
    struct progress_config pc = {opt.items,
                                 !opt.quiet && isatty(STDERR_FILENO)};
    if ((rc = tr_runtime_spawn(rt, &progress_behavior, &pc, sizeof pc,
                               &progress)) == 0) {
        struct consumer_config cc = {opt.items, (uint32_t)opt.workers, progress,
                                     tr_inbox_ref(inbox)};
        rc =
            tr_runtime_spawn(rt, &consumer_behavior, &cc, sizeof cc, &consumer);
    }
    if (rc == 0) {
        struct producer_config prc = {opt.items, (uint32_t)opt.workers,
                                      consumer, progress, tr_inbox_ref(inbox)};
        rc = tr_runtime_spawn(rt, &producer_behavior, &prc, sizeof prc,
                              &producer);
    }
    if (rc != 0) {
        tr_inbox_destroy(&inbox);
        tr_runtime_destroy(&rt); /* ends the actors already spawned */
        return fail("tr_runtime_spawn", rc);
    }

    printf("pipeline: %" PRIu64 " items, producer -> %" PRIu64
           " workers -> consumer, %u scheduler threads, credit window %u "
           "per link\n",
           opt.items, opt.workers, tr_runtime_workers(rt), CREDIT_WINDOW);
    fflush(stdout);

    /* Runs until every actor has stopped (or one failed and stopped the
     * runtime); the reports are then waiting in the inbox. */
    int64_t start_ns = tr_now_ns();
    int run_rc = tr_runtime_run(rt);
    int64_t end_ns = tr_now_ns();
    if (run_rc != 0)
        fprintf(stderr, "pipeline: tr_runtime_run: %s\n", tr_strerror(run_rc));

    struct producer_report prep = {0};
    struct consumer_report crep = {0};
    bool have_prep = false, have_crep = false;
    tr_msg *m = NULL;
    while (tr_inbox_recv(inbox, 0, &m) == 0) {
        if (tr_msg_tag(m) == TAG_PRODUCER_REPORT)
            have_prep = read_bytes(m, &prep, sizeof prep) == 0;
        else if (tr_msg_tag(m) == TAG_CONSUMER_REPORT)
            have_crep = read_bytes(m, &crep, sizeof crep) == 0;
        tr_msg_destroy(&m);
    }
    int exit_code = tr_runtime_exit_code(rt);
    tr_inbox_destroy(&inbox);
    tr_runtime_destroy(&rt);

    /* A missing report means an actor failed: the counts below are then
     * zeros, and complete=0 says so. */
    if (!have_prep)
        fprintf(stderr, "pipeline: no report from the producer\n");
    if (!have_crep)
        fprintf(stderr, "pipeline: no report from the consumer\n");

    /* The reference result, computed sequentially with the same function. */
    bool interrupted = have_prep && prep.interrupted;
    uint64_t target = interrupted ? prep.produced : opt.items;
    uint64_t expected = 0;
    /* Without both reports there is nothing to check (and --items may be
     * huge when a run was stopped at once). */
    for (uint64_t id = 1; have_prep && have_crep && id <= target; id++)
        expected += item_digest(item_value(id));
    bool checksum_ok = have_crep && crep.checksum == expected;

    if (have_crep)
        end_ns = crep.finished_ns;
    double elapsed_s = (double)(end_ns - start_ns) / 1e9;
    double rate = elapsed_s > 0 ? (double)crep.consumed / elapsed_s : 0;
    int64_t lost = (int64_t)prep.produced - (int64_t)crep.consumed;

    printf("pipeline: checksum 0x%016" PRIx64 ", expected 0x%016" PRIx64
           " (%s)\n",
           crep.checksum, expected, checksum_ok ? "match" : "MISMATCH");
    printf("produced=%" PRIu64 " consumed=%" PRIu64 " lost=%" PRId64
           " duplicates=%" PRIu64 " invalid=%" PRIu64
           " checksum_ok=%d complete=%d interrupted=%d elapsed_s=%.3f"
           " items_per_s=%.0f\n",
           prep.produced, crep.consumed, lost, crep.duplicates, crep.invalid,
           checksum_ok ? 1 : 0, have_prep && have_crep ? 1 : 0,
           interrupted ? 1 : 0, elapsed_s, rate);

    bool ok = run_rc == 0 && have_prep && have_crep &&
              prep.produced == target && lost == 0 && crep.duplicates == 0 &&
              crep.invalid == 0 && checksum_ok;
    /* Stopped by a signal: 128 + signal, as shells expect (the summary
     * says whether the orderly shutdown drained everything). */
    if (exit_code != 0)
        return exit_code;
    return ok ? 0 : 1;
}
