/* pipeline — producer -> CPU-heavy stage in worker processes -> consumer.
 *
 * Design notes
 * ------------
 * Two modes share the producer's item stream, the consumer and the
 * progress line; they differ in where the CPU stage runs.
 *
 * Worker processes (the default). The K workers are remote actors of the
 * registered behaviour "pipeline.worker", spread over a pool of P worker
 * processes (tr_pool_start; each process is this program run again in
 * worker mode, which is why main() registers the behaviour and calls
 * tr_worker_main() before anything else). The producer is also the
 * dispatcher:
 *
 *   producer --request ITEM--> proxy ~~ipc~~> worker[k] (process p)
 *      |  ^   <--reply RESULT--  proxy <~~~~~ (id, digest)
 *      |  +---------CREDIT--------+
 *      +--RESULT--> consumer --REPORT--> main
 *
 *   - Each item is a tr_request carrying plain data (BYTES: id, value,
 *     ticket); the worker replies with (id, digest, ticket). No pointer
 *     crosses the process boundary.
 *   - Flow control: at most CREDIT_WINDOW requests in flight per worker
 *     (the slot's entries), and at most K * CREDIT_WINDOW results in
 *     flight to the consumer, which grants credit back CREDIT_BATCH at a
 *     time as in local mode. New items are taken only when the outbox to
 *     the consumer is empty and no item waits for a resend, so the items
 *     the producer holds (in flight + waiting to resend + waiting for
 *     consumer credit) never exceed K * CREDIT_WINDOW: memory is bounded
 *     whatever the speed of each stage or process.
 *   - Reliability (at-least-once to the workers, exactly-once to the
 *     consumer). The producer monitors every worker. When a worker's
 *     process dies, the runtime answers its requests in flight with
 *     TR_TAG_REMOTE_FAILED and ends its proxy with TR_ELOST (DOWN). A
 *     failed request moves its item to the resend queue and suspends the
 *     slot; the DOWN moves every item still in flight there to the resend
 *     queue, spawns a replacement worker (the pool has restarted the
 *     process by then) and resumes the slot. Items are idempotent, so a
 *     resend is always safe; each one is counted in `retried`.
 *   - Exactly-once to the consumer: a reply is accepted only if its
 *     ticket (slot, entry, slot generation) and request id name an entry
 *     still in flight; anything else is a stale reply from a replaced
 *     worker, already resent, and is dropped. The consumer's bitmap
 *     still checks it: any duplicate fails the run.
 *   - A watchdog tick (once a second) fails the run if a worker holds
 *     items but has not answered for STALL_MS: a request the runtime
 *     neither answered nor failed back would otherwise hang the pipeline.
 *   - --kill-worker-every: a "killer" child of the producer kill -9s a
 *     random worker process (tr_pool_worker_pid) each period.
 *
 * Local (--local), everything on one runtime, no processes:
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
 *     speed of each stage. No deadlock: a receiver owes fewer than
 *     CREDIT_BATCH <= CREDIT_WINDOW credits, so when a sender holds none,
 *     the receiver has items queued or a credit message is on its way.
 *   - Shutdown is ordered by per-sender FIFO alone. After item N the
 *     producer sends EOF to every worker. A worker's EOF comes after all of
 *     its items; once it has also passed all its results on, it returns
 *     its last credits, tells the producer DONE and the consumer EOF, and
 *     stops. The producer stays alive until every worker said DONE (their
 *     credit messages must find it alive), then reports to main and stops.
 *
 * Both modes: the consumer has every result once it has seen an EOF from
 * each of its senders (the K workers, or the producer); it reports to
 * main, tells the progress actor to finish, and stops. Every actor has
 * then ended, so tr_runtime_run returns by quiescence and main prints the
 * summary. SIGINT/SIGTERM: the producer stops taking new items, lets the
 * ones it holds drain (resending as needed), then ends as usual. The
 * progress actor owns a periodic timer (tr_send_every) and redraws one
 * status line on stderr per tick from counts sent to it every
 * PROGRESS_EVERY items: monitoring stays off the hot path. Any actor that
 * fails stops the whole runtime (on_stop); main then finds a report
 * missing and exits 1 instead of hanging.
 *
 * Correctness checks: the consumer marks each id in a bitmap (duplicates
 * and out-of-range ids are counted, never silently summed) and adds up the
 * workers' digests; main recomputes the digest sum sequentially with the
 * same function and compares. */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L /* isatty, kill */
#endif

#include <inttypes.h>
#include <signal.h>
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
#define DEFAULT_PROCESSES 2u
#define MAX_ITEMS 1000000000u /* the consumer's bitmap: 125 MB at most */
#define MAX_WORKERS 1024u
#define MAX_THREADS 1024u
#define MAX_PROCESSES 256u          /* tr_pool_start's limit */
#define MAX_KILL_PERIOD_MS 3600000u /* an hour */

/* The registered name of the remote CPU stage. */
#define REMOTE_WORKER "pipeline.worker"

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

/* A worker that holds items but answers nothing for this long fails the
 * run (checked every WATCHDOG_PERIOD_MS). An item takes about 0.5 us, so
 * this is never a slow worker, only a request nobody will answer. Twice
 * the pool's default hang timeout (tr_pool_config.hang_timeout_ms, 10 s):
 * a hung process is killed and its items resent before this fires. */
#define STALL_MS 20000u
#define WATCHDOG_PERIOD_MS 1000u

/* Message tags (application tags are below TR_TAG_SYSTEM). */
enum {
    TAG_ITEM = 1,        /* producer -> worker: BYTES struct item (a request
                            to a remote worker) */
    TAG_EOF,             /* producer -> worker, worker or producer ->
                            consumer: no more */
    TAG_CREDIT,          /* worker -> producer: U64 index << 32 | credits;
                            consumer -> its sender: U64 credits */
    TAG_DONE,            /* worker -> producer: all my items are handled */
    TAG_RESULT,          /* worker -> consumer, remote worker -> producer
                            (the reply), producer -> consumer: BYTES
                            struct result */
    TAG_PRODUCED,        /* producer -> progress: U64 items produced so far */
    TAG_CONSUMED,        /* consumer -> progress: U64 items consumed so far */
    TAG_RETRIED,         /* producer -> progress: U64 items resent so far */
    TAG_KILLED,          /* killer -> producer, producer -> progress: U64
                            worker processes killed so far */
    TAG_TICK,            /* timer -> progress: redraw */
    TAG_FINISH,          /* consumer -> progress: U64 final count; stop */
    TAG_KILL,            /* timer -> killer: kill -9 a worker process */
    TAG_WATCHDOG,        /* timer -> producer: look for stalled workers */
    TAG_PRODUCER_REPORT, /* producer -> main: BYTES struct producer_report */
    TAG_CONSUMER_REPORT  /* consumer -> main: BYTES struct consumer_report */
};

/* ---- the work ---- */

/* Plain data only (these cross process boundaries as BYTES); 24 bytes,
 * inline in a message (TR_MSG_INLINE), no padding to leak. */
struct item {
    uint64_t id; /* 1..N */
    uint64_t value;
    uint64_t ticket; /* remote mode: which in-flight entry this is (see
                        dispatch_item), echoed in the result; else 0 */
};

struct result {
    uint64_t id;
    uint64_t digest;
    /* To the consumer: the sender's index, for its credit (a local
     * worker's index; 0 for the producer, its only sender in remote
     * mode). From a remote worker: the item's ticket. */
    uint64_t route;
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
    bool live;   /* draw the line (stderr is a terminal, not --quiet) */
    bool remote; /* worker processes: show resends and kills too */
};

struct progress_state {
    struct progress_config cfg;
    tr_timer_id timer;
    uint64_t produced, consumed, retried, killed;
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
    char extra[96] = "";
    if (p->cfg.remote)
        snprintf(extra, sizeof extra,
                 "  retried %" PRIu64 "  workers killed %" PRIu64, p->retried,
                 p->killed);
    fprintf(stderr,
            "\rpipeline: produced %" PRIu64 "/%" PRIu64 "  consumed %" PRIu64
            " (%5.1f%%)  %s%.0f items/s%s\033[K%s",
            p->produced, p->cfg.items, p->consumed, pct, final ? "avg " : "",
            rate, extra, final ? "\n" : "");
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
    case TAG_RETRIED:
        p->retried = tr_msg_u64(msg);
        return 0;
    case TAG_KILLED:
        p->killed = tr_msg_u64(msg);
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

/* The runtime's log lines (a worker process died, ...) come from any
 * thread: with the live line on screen, each one first erases it (the
 * next tick redraws it), so the two never share a terminal line. */
static void log_above_progress(tr_log_level level, const char *line,
                               void *arg) {
    static const char *const names[] = {"error", "warn", "info", "debug"};
    (void)arg;
    fprintf(stderr, "\r\033[Ktroupe %s: %s\n",
            (unsigned)level < 4 ? names[level] : "log", line);
}

static const tr_behavior progress_behavior = {
    .name = "progress",
    .handle = progress_handle,
    .on_start = progress_start,
    .on_stop = progress_stop,
    .state_size = sizeof(struct progress_state),
};

/* ---- local worker (--local) ---- */

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

/* ---- local producer (--local) ---- */

struct producer_config {
    uint64_t items;
    uint32_t nworkers;
    tr_ref consumer, progress, report_to;
};

struct producer_report {
    uint64_t produced;
    uint64_t interrupted; /* 1: cancelled (SIGINT/SIGTERM) and drained */
    uint64_t retried;     /* items resent after a worker process was lost */
    uint64_t killed;      /* worker processes kill -9'd (--kill-worker-every) */
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
        struct item it = {p->next_id, item_value(p->next_id), 0};
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
        struct producer_report rep = {p->next_id - 1, p->interrupted, 0, 0};
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

/* ---- remote worker (runs in a worker process) ---- */

/* Stateless: each request is one item, each reply its digest. A worker
 * process may die at any time; the producer resends what it held. */
static int remote_worker_handle(tr_ctx *ctx, void *state, tr_msg *msg) {
    (void)state;
    struct item it;
    if (tr_msg_tag(msg) != TAG_ITEM || !tr_msg_is_request(msg) ||
        read_bytes(msg, &it, sizeof it) != 0)
        return TR_EPROTO;
    struct result r = {it.id, item_digest(it.value), it.ticket};
    tr_msg *reply = tr_msg_new_bytes(TAG_RESULT, &r, sizeof r);
    if (reply == NULL)
        return TR_ENOMEM;
    int rc = tr_reply(ctx, msg, &reply);
    if (rc != 0)
        tr_msg_destroy(&reply);
    return rc;
}

static const tr_behavior remote_worker_behavior = {
    .name = REMOTE_WORKER,
    .handle = remote_worker_handle,
};

/* ---- killer (--kill-worker-every) ---- */

struct killer_state {
    int64_t period_ms;
    uint64_t rng; /* xorshift64 state; never 0 */
    uint64_t killed;
};

static int killer_start(tr_ctx *ctx, void *state) {
    struct killer_state *k = state;
    k->rng = ((uint64_t)tr_now_ns() ^ ((uint64_t)getpid() << 32)) | 1u;
    return tr_send_every(tr_ctx_runtime(ctx), tr_self(ctx), k->period_ms,
                         TAG_KILL, NULL); /* ends with this actor */
}

/* kill -9 of a random worker process. Its pid may already be gone (the
 * pool replaces a dead process at once, so this is rare): then this
 * period kills nothing. */
static int killer_handle(tr_ctx *ctx, void *state, tr_msg *msg) {
    struct killer_state *k = state;
    if (tr_msg_tag(msg) != TAG_KILL)
        return TR_EPROTO;
    tr_runtime *rt = tr_ctx_runtime(ctx);
    unsigned n = tr_pool_size(rt);
    if (n == 0)
        return 0;
    k->rng ^= k->rng << 13;
    k->rng ^= k->rng >> 7;
    k->rng ^= k->rng << 17;
    int pid = tr_pool_worker_pid(rt, (unsigned)(k->rng % n));
    if (pid <= 0 || kill((pid_t)pid, SIGKILL) != 0)
        return 0;
    return tr_send_u64(ctx, tr_parent(ctx), TAG_KILLED, ++k->killed);
}

static const tr_behavior killer_behavior = {
    .name = "killer",
    .handle = killer_handle,
    .on_start = killer_start,
    .state_size = sizeof(struct killer_state),
};

/* ---- producer with remote workers (the default mode) ---- */

struct dispatcher_config {
    uint64_t items;
    uint32_t nworkers;
    int64_t kill_every_ms; /* 0: no killer */
    tr_ref consumer, progress, report_to;
};

/* One remote worker and the requests in flight to it. An entry is free
 * when its id is 0; free_pos is a stack of the free entries. */
struct slot {
    tr_ref worker;    /* the remote actor's local proxy */
    uint64_t monitor; /* our monitor on it */
    uint32_t gen;     /* bumped when the worker is replaced */
    uint32_t nfree;
    bool in_ring;   /* in the dispatcher's ready ring */
    bool suspended; /* lost (a request failed back): wait for its DOWN */
    uint32_t stalled_ticks;         /* watchdog ticks without a reply */
    uint64_t replies, replies_seen; /* replies_seen: at the last tick */
    uint8_t free_pos[CREDIT_WINDOW];
    struct {
        uint64_t id, req_id;
    } entry[CREDIT_WINDOW];
};
_Static_assert(CREDIT_WINDOW <= 256, "free_pos holds entry numbers in bytes");
_Static_assert(UINT32_MAX / CREDIT_WINDOW >= MAX_WORKERS,
               "a ticket holds slot * CREDIT_WINDOW + entry in 32 bits");

struct dispatcher_state {
    struct dispatcher_config cfg;
    struct slot *slots;
    uint32_t *ready; /* ring of slots with a free entry, each at most once */
    uint32_t ready_head, ready_count;
    uint64_t *resend; /* ring of items to resend, capacity `held` */
    uint32_t resend_head, resend_count;
    struct result *outbox; /* results waiting for consumer credit */
    uint32_t out_head, out_count;
    uint32_t held;     /* K * CREDIT_WINDOW: the bound on items held */
    uint32_t credit;   /* results the consumer will still accept */
    uint64_t inflight; /* entries in use over all slots */
    uint64_t next_id;  /* next new item; produced = next_id - 1 */
    uint64_t retried, killed;
    tr_timer_id watchdog;
    tr_ref killer;
    bool interrupted, finished;
};

static void ready_push(struct dispatcher_state *d, uint32_t k) {
    struct slot *s = &d->slots[k];
    if (s->in_ring || s->suspended || s->nfree == 0)
        return;
    s->in_ring = true;
    d->ready[(d->ready_head + d->ready_count) % d->cfg.nworkers] = k;
    d->ready_count++;
}

static void resend_push(struct dispatcher_state *d, uint64_t id) {
    /* Cannot overflow: see "Flow control" in the design notes. */
    d->resend[(d->resend_head + d->resend_count) % d->held] = id;
    d->resend_count++;
}

/* Moves slot k's entry e back to the resend queue. */
static void entry_resend(struct dispatcher_state *d, uint32_t k, uint32_t e) {
    struct slot *s = &d->slots[k];
    resend_push(d, s->entry[e].id);
    s->entry[e].id = 0;
    s->free_pos[s->nfree++] = (uint8_t)e;
    d->inflight--;
    d->retried++;
}

/* Spawns slot k's worker (first time or replacement) and monitors it. The
 * proxy is usable at once: requests wait in it until the remote actor
 * exists. */
static int slot_spawn(tr_ctx *ctx, struct dispatcher_state *d, uint32_t k) {
    struct slot *s = &d->slots[k];
    int rc = tr_spawn_remote(ctx, REMOTE_WORKER, NULL, 0, &s->worker);
    if (rc == 0)
        rc = tr_monitor(ctx, s->worker, &s->monitor);
    if (rc != 0)
        return rc;
    s->gen++;
    s->suspended = false;
    s->stalled_ticks = 0;
    ready_push(d, k);
    return 0;
}

/* Sends item id to slot k as a request. The ticket names the entry and
 * the slot's generation, so a reply is matched in O(1) and a reply from a
 * replaced worker is recognised. */
static int dispatch_item(tr_ctx *ctx, struct dispatcher_state *d, uint32_t k,
                         uint64_t id) {
    struct slot *s = &d->slots[k];
    uint32_t e = s->free_pos[s->nfree - 1];
    struct item it = {id, item_value(id),
                      (uint64_t)s->gen << 32 | (k * CREDIT_WINDOW + e)};
    tr_msg *m = tr_msg_new_bytes(TAG_ITEM, &it, sizeof it);
    if (m == NULL)
        return TR_ENOMEM;
    uint64_t req_id = 0;
    int rc = tr_request(ctx, s->worker, &m, -1, &req_id);
    if (rc != 0) {
        tr_msg_destroy(&m);
        if (rc != TR_ENOACTOR)
            return rc;
        /* The proxy has just ended (its DOWN is on its way): the item
         * goes to another worker. */
        s->suspended = true;
        resend_push(d, id);
        return 0;
    }
    s->nfree--;
    s->entry[e].id = id;
    s->entry[e].req_id = req_id;
    d->inflight++;
    return 0;
}

/* Hands waiting results to the consumer while it has credit. */
static int dispatcher_flush(tr_ctx *ctx, struct dispatcher_state *d) {
    while (d->out_count > 0 && d->credit > 0) {
        int rc = send_bytes(ctx, d->cfg.consumer, TAG_RESULT,
                            &d->outbox[d->out_head], sizeof(struct result));
        if (rc != 0)
            return rc;
        d->out_head = (d->out_head + 1) % d->held;
        d->out_count--;
        d->credit--;
    }
    return 0;
}

/* All items answered and handed on (or interrupted and drained): EOF to
 * the consumer, report to main, stop (the workers' proxies and the killer
 * are our children: they stop with us, and the remote actors with them). */
static int dispatcher_finish(tr_ctx *ctx, struct dispatcher_state *d) {
    d->finished = true;
    int rc;
    if (d->watchdog.id != 0) {
        (void)tr_timer_cancel(tr_ctx_runtime(ctx), d->watchdog);
        d->watchdog.id = 0;
    }
    struct producer_report rep = {d->next_id - 1, d->interrupted, d->retried,
                                  d->killed};
    if ((rc = tr_send_u64(ctx, d->cfg.progress, TAG_PRODUCED,
                          d->next_id - 1)) != 0 ||
        (rc = tr_send_u64(ctx, d->cfg.progress, TAG_RETRIED, d->retried)) !=
            0 ||
        (rc = tr_send_tag(ctx, d->cfg.consumer, TAG_EOF)) != 0 ||
        (rc = send_bytes(ctx, d->cfg.report_to, TAG_PRODUCER_REPORT, &rep,
                         sizeof rep)) != 0)
        return rc;
    return TR_STOP;
}

/* Sends items (resends first) while a worker has room and the consumer
 * keeps up (empty outbox); at most K * CREDIT_WINDOW per call, so a turn
 * stays short. Returns TR_STOP once everything is done. */
static int dispatcher_pump(tr_ctx *ctx, struct dispatcher_state *d) {
    int rc = dispatcher_flush(ctx, d);
    if (rc != 0)
        return rc;
    while (d->out_count == 0 && d->ready_count > 0 &&
           (d->resend_count > 0 || d->next_id <= d->cfg.items)) {
        uint32_t k = d->ready[d->ready_head];
        d->ready_head = (d->ready_head + 1) % d->cfg.nworkers;
        d->ready_count--;
        struct slot *s = &d->slots[k];
        s->in_ring = false;
        if (s->suspended || s->nfree == 0)
            continue; /* left the ring lazily */
        uint64_t id;
        if (d->resend_count > 0) {
            id = d->resend[d->resend_head];
            d->resend_head = (d->resend_head + 1) % d->held;
            d->resend_count--;
        } else {
            id = d->next_id++;
            if (id % PROGRESS_EVERY == 0 &&
                (rc = tr_send_u64(ctx, d->cfg.progress, TAG_PRODUCED, id)) != 0)
                return rc;
        }
        if ((rc = dispatch_item(ctx, d, k, id)) != 0)
            return rc;
        ready_push(d, k); /* to the back of the line, if it has room */
    }
    if (!d->finished && d->next_id > d->cfg.items && d->resend_count == 0 &&
        d->inflight == 0 && d->out_count == 0)
        return dispatcher_finish(ctx, d);
    return 0;
}

/* A reply from a worker: accepted only if it matches an entry in flight
 * (same slot generation, entry, item and request id); anything else is a
 * stale reply from a replaced worker whose items were resent. */
static int dispatcher_result(tr_ctx *ctx, struct dispatcher_state *d,
                             const tr_msg *msg) {
    struct result r;
    if (read_bytes(msg, &r, sizeof r) != 0)
        return TR_EPROTO;
    uint32_t gen = (uint32_t)(r.route >> 32);
    uint32_t k = (uint32_t)r.route / CREDIT_WINDOW;
    uint32_t e = (uint32_t)r.route % CREDIT_WINDOW;
    if (k >= d->cfg.nworkers)
        return TR_EPROTO; /* not a ticket we made */
    struct slot *s = &d->slots[k];
    if (s->gen != gen || s->entry[e].id == 0 || s->entry[e].id != r.id ||
        s->entry[e].req_id != tr_msg_request_id(msg))
        return 0;
    s->entry[e].id = 0;
    s->free_pos[s->nfree++] = (uint8_t)e;
    s->replies++;
    d->inflight--;
    ready_push(d, k);
    /* Cannot overflow: see "Flow control" in the design notes. */
    d->outbox[(d->out_head + d->out_count) % d->held] =
        (struct result){r.id, r.digest, 0};
    d->out_count++;
    return dispatcher_pump(ctx, d);
}

/* A request failed back (its worker's process died): resend that item
 * elsewhere, and send nothing more to that worker until its DOWN. */
static int dispatcher_failed(tr_ctx *ctx, struct dispatcher_state *d,
                             const tr_msg *msg) {
    uint64_t req_id = tr_msg_request_id(msg);
    /* A rare event: a scan of K * CREDIT_WINDOW entries is fine. */
    for (uint32_t k = 0; k < d->cfg.nworkers; k++) {
        struct slot *s = &d->slots[k];
        for (uint32_t e = 0; e < CREDIT_WINDOW; e++) {
            if (s->entry[e].id != 0 && s->entry[e].req_id == req_id) {
                entry_resend(d, k, e);
                s->suspended = true;
                (void)tr_send_u64(ctx, d->cfg.progress, TAG_RETRIED,
                                  d->retried);
                return dispatcher_pump(ctx, d);
            }
        }
    }
    return 0; /* its item was already resent (after the DOWN) */
}

/* A worker ended. Lost with its process (TR_ELOST): resend what it held
 * and replace it. Any other end is a bug in the pipeline: fail. */
static int dispatcher_down(tr_ctx *ctx, struct dispatcher_state *d,
                           const tr_msg *msg) {
    tr_exit x;
    if (tr_msg_exit(msg, &x) != 0)
        return TR_EPROTO;
    uint32_t k = 0;
    while (k < d->cfg.nworkers && !(tr_ref_eq(d->slots[k].worker, x.who) &&
                                    d->slots[k].monitor == x.id))
        k++;
    if (k == d->cfg.nworkers)
        return 0; /* not a current worker */
    if (x.reason != TR_ELOST) {
        fprintf(stderr, "pipeline: worker %" PRIu32 " ended: %s\n", k,
                tr_exit_reason_name(x.reason));
        return x.reason < 0 ? x.reason : TR_EPROTO;
    }
    struct slot *s = &d->slots[k];
    for (uint32_t e = 0; e < CREDIT_WINDOW; e++)
        if (s->entry[e].id != 0)
            entry_resend(d, k, e);
    int rc = slot_spawn(ctx, d, k);
    if (rc == 0)
        rc = tr_send_u64(ctx, d->cfg.progress, TAG_RETRIED, d->retried);
    return rc != 0 ? rc : dispatcher_pump(ctx, d);
}

/* Once a period: a worker that holds items and has not answered for
 * STALL_MS will never answer (a dead request the runtime did not fail
 * back): fail the run rather than hang. */
static int dispatcher_watchdog(struct dispatcher_state *d) {
    for (uint32_t k = 0; k < d->cfg.nworkers; k++) {
        struct slot *s = &d->slots[k];
        if (s->nfree == CREDIT_WINDOW || s->replies != s->replies_seen) {
            s->replies_seen = s->replies;
            s->stalled_ticks = 0;
            continue;
        }
        if (++s->stalled_ticks * WATCHDOG_PERIOD_MS >= STALL_MS) {
            fprintf(stderr,
                    "pipeline: worker %" PRIu32 " holds %" PRIu32
                    " items and has not answered for %u ms%s\n",
                    k, CREDIT_WINDOW - s->nfree, STALL_MS,
                    s->suspended ? " (a request failed back, no DOWN)" : "");
            return TR_ETIMEDOUT;
        }
    }
    return 0;
}

static int dispatcher_start(tr_ctx *ctx, void *state) {
    struct dispatcher_state *d = state;
    uint32_t n = d->cfg.nworkers;
    d->held = n * CREDIT_WINDOW;
    d->credit = d->held;
    d->next_id = 1;
    d->slots = calloc(n, sizeof *d->slots);
    d->ready = calloc(n, sizeof *d->ready);
    d->resend = calloc(d->held, sizeof *d->resend);
    d->outbox = calloc(d->held, sizeof *d->outbox);
    if (d->slots == NULL || d->ready == NULL || d->resend == NULL ||
        d->outbox == NULL)
        return TR_ENOMEM; /* on_stop frees what was allocated */
    int rc;
    for (uint32_t k = 0; k < n; k++) {
        struct slot *s = &d->slots[k];
        s->nfree = CREDIT_WINDOW;
        for (uint32_t e = 0; e < CREDIT_WINDOW; e++)
            s->free_pos[e] = (uint8_t)(CREDIT_WINDOW - 1 - e);
        if ((rc = slot_spawn(ctx, d, k)) != 0)
            return rc;
    }
    tr_runtime *rt = tr_ctx_runtime(ctx);
    if ((rc = tr_send_every(rt, tr_self(ctx), WATCHDOG_PERIOD_MS, TAG_WATCHDOG,
                            &d->watchdog)) != 0)
        return rc;
    if (d->cfg.kill_every_ms > 0) {
        struct killer_state ks = {.period_ms = d->cfg.kill_every_ms};
        if ((rc = tr_spawn(ctx, &killer_behavior, &ks, sizeof ks,
                           &d->killer)) != 0)
            return rc;
    }
    return dispatcher_pump(ctx, d);
}

static int dispatcher_handle(tr_ctx *ctx, void *state, tr_msg *msg) {
    struct dispatcher_state *d = state;
    switch (tr_msg_tag(msg)) {
    case TAG_RESULT:
        return tr_msg_is_reply(msg) ? dispatcher_result(ctx, d, msg)
                                    : TR_EPROTO;
    case TR_TAG_REMOTE_FAILED:
        return dispatcher_failed(ctx, d, msg);
    case TR_TAG_DOWN:
        return dispatcher_down(ctx, d, msg);
    case TAG_CREDIT: {
        uint64_t granted = tr_msg_u64(msg);
        if (granted > d->held - d->credit)
            return TR_EPROTO; /* more credit than the window: a bug */
        d->credit += (uint32_t)granted;
        return dispatcher_pump(ctx, d);
    }
    case TAG_KILLED:
        d->killed = tr_msg_u64(msg);
        return tr_send_u64(ctx, d->cfg.progress, TAG_KILLED, d->killed);
    case TAG_WATCHDOG:
        return dispatcher_watchdog(d);
    default:
        return TR_EPROTO;
    }
}

/* Graceful shutdown (SIGINT/SIGTERM): no new items, no more kills; the
 * items held drain through the workers (resent if need be) and the
 * consumer, then the producer ends as usual. Past its grace the runtime
 * kills it. */
static int dispatcher_cancel(tr_ctx *ctx, void *state, int reason) {
    struct dispatcher_state *d = state;
    (void)reason;
    if (d->slots == NULL)
        return 0;
    d->interrupted = true;
    d->cfg.items = d->next_id - 1;
    if (!tr_ref_is_none(d->killer))
        (void)tr_cancel(tr_ctx_runtime(ctx), d->killer, TR_EXIT_CANCELLED, -1);
    return dispatcher_pump(ctx, d) == 0 ? TR_DRAIN : 0;
}

static void dispatcher_stop(tr_ctx *ctx, void *state, int reason) {
    struct dispatcher_state *d = state;
    free(d->slots);
    free(d->ready);
    free(d->resend);
    free(d->outbox);
    d->slots = NULL;
    d->ready = NULL;
    d->resend = NULL;
    d->outbox = NULL;
    stop_on_failure(ctx, "producer", reason);
}

static const tr_behavior dispatcher_behavior = {
    .name = "producer",
    .handle = dispatcher_handle,
    .on_start = dispatcher_start,
    .on_stop = dispatcher_stop,
    .on_cancel = dispatcher_cancel,
    .state_size = sizeof(struct dispatcher_state),
};

/* ---- consumer ---- */

struct consumer_config {
    uint64_t items;
    uint32_t nsenders; /* the K local workers, or the producer alone */
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
    uint32_t eofs; /* senders that sent EOF */
};

static int consumer_start(tr_ctx *ctx, void *state) {
    (void)ctx;
    struct consumer_state *c = state;
    c->seen = calloc((size_t)(c->cfg.items / 64 + 1), sizeof *c->seen);
    c->owed = calloc(c->cfg.nsenders, sizeof *c->owed);
    return c->seen != NULL && c->owed != NULL ? 0 : TR_ENOMEM;
}

/* Grants credit back to the sender of msg. A worker that has sent its
 * last result may already have ended: it needs no more credit, so
 * TR_ENOACTOR is fine here (a grant that races with its end is dropped as
 * a dead letter, also harmless). */
static int consumer_grant(tr_ctx *ctx, struct consumer_state *c,
                          const tr_msg *msg, uint64_t sender) {
    if (++c->owed[sender] < CREDIT_BATCH)
        return 0;
    int rc = tr_send_u64(ctx, tr_msg_sender(msg), TAG_CREDIT, c->owed[sender]);
    c->owed[sender] = 0;
    return rc == TR_ENOACTOR ? 0 : rc;
}

static int consumer_result(tr_ctx *ctx, struct consumer_state *c,
                           const tr_msg *msg) {
    struct result r;
    if (read_bytes(msg, &r, sizeof r) != 0 || r.route >= c->cfg.nsenders)
        return TR_EPROTO; /* cannot even return the credit: a bug */
    int rc = consumer_grant(ctx, c, msg, r.route);
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
        if (++c->eofs < c->cfg.nsenders)
            return 0;
        /* Every sender's results came before its EOF: we have them all. */
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
 * keep consuming until every sender's EOF is in (then it stops itself). */
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
    uint64_t processes;     /* 0: not given (DEFAULT_PROCESSES) */
    uint64_t kill_every_ms; /* 0: no killer */
    bool quiet, local;
};

static void usage(FILE *out) {
    fprintf(out,
            "usage: pipeline [--items N] [--workers K] [--processes P] "
            "[--local]\n"
            "                [--kill-worker-every MS] [--threads T] [--quiet] "
            "[--help]\n"
            "  --items N              items to produce, 0..%u (default %u)\n"
            "  --workers K            worker actors, 1..%u (default %u)\n"
            "  --processes P          worker processes they run in, 1..%u "
            "(default %u)\n"
            "  --local                run the workers in this process "
            "instead\n"
            "  --kill-worker-every MS kill -9 a random worker process every "
            "MS ms,\n"
            "                         1..%u (its items are resent: still "
            "lost=0)\n"
            "  --threads T            scheduler threads, 0..%u; 0 = online "
            "CPUs (default 0)\n"
            "  --quiet                no live progress line on stderr\n"
            "The last line of stdout is: produced=<n> consumed=<n> lost=<n> "
            "retried=<n>\n"
            "duplicates=<n> invalid=<n> checksum_ok=<0|1> complete=<0|1> "
            "interrupted=<0|1>\n"
            "workers_killed=<n> elapsed_s=<s> items_per_s=<r> (complete=0: "
            "an actor failed,\n"
            "see stderr). Exit status: 0 when nothing was lost and the "
            "checksum matches,\n"
            "1 otherwise, 2 for invalid arguments, 128 + signal when "
            "interrupted.\n",
            MAX_ITEMS, DEFAULT_ITEMS, MAX_WORKERS, DEFAULT_WORKERS,
            MAX_PROCESSES, DEFAULT_PROCESSES, MAX_KILL_PERIOD_MS, MAX_THREADS);
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
    *o = (struct options){.items = DEFAULT_ITEMS, .workers = DEFAULT_WORKERS};
    const struct {
        const char *name;
        uint64_t min, max, *value;
    } numeric[] = {
        {"--items", 0, MAX_ITEMS, &o->items},
        {"--workers", 1, MAX_WORKERS, &o->workers},
        {"--processes", 1, MAX_PROCESSES, &o->processes},
        {"--kill-worker-every", 1, MAX_KILL_PERIOD_MS, &o->kill_every_ms},
        {"--threads", 0, MAX_THREADS, &o->threads}};
    const size_t nnumeric = sizeof numeric / sizeof numeric[0];
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0)
            return 1;
        if (strcmp(arg, "--quiet") == 0 || strcmp(arg, "--local") == 0) {
            *(arg[2] == 'q' ? &o->quiet : &o->local) = true;
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
    if (o->local && (o->processes != 0 || o->kill_every_ms != 0)) {
        fprintf(stderr, "pipeline: --processes and --kill-worker-every need "
                        "worker processes (not --local)\n");
        return -1;
    }
    if (o->processes == 0)
        o->processes = DEFAULT_PROCESSES;
    return 0;
}

/* ---- main ---- */

static int fail(const char *what, int rc) {
    fprintf(stderr, "pipeline: %s: %s\n", what, tr_strerror(rc));
    return 1;
}

int main(int argc, char **argv) {
    /* Worker processes run this same program: the remote stage must be
     * registered, and tr_worker_main called, before anything else. In a
     * worker process tr_worker_main runs the worker and never returns. */
    int rc = tr_register(REMOTE_WORKER, &remote_worker_behavior);
    if (rc != 0 || (rc = tr_worker_main(argc, argv)) != 0)
        return fail("worker setup", rc);

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
    if ((rc = tr_runtime_create(&rt, &cfg)) != 0)
        return fail("tr_runtime_create", rc);
    if ((rc = tr_inbox_create(rt, &inbox)) != 0) {
        tr_runtime_destroy(&rt);
        return fail("tr_inbox_create", rc);
    }
    /* One scheduler thread per worker process: the CPU stage is spread
     * over processes, not threads. */
    tr_pool_config pool = {.processes = (unsigned)opt.processes,
                           .worker_threads = 1};
    if (!opt.local && (rc = tr_pool_start(rt, &pool)) != 0) {
        tr_inbox_destroy(&inbox);
        tr_runtime_destroy(&rt);
        return fail("tr_pool_start", rc);
    }

    /* Spawn order follows the references each actor needs; the producer
     * spawns the workers itself (they need its reference). In remote mode
     * the producer is the consumer's only sender. */
    tr_ref progress, consumer, producer;
    struct progress_config pc = {opt.items, !opt.quiet && isatty(STDERR_FILENO),
                                 !opt.local};
    if (pc.live)
        tr_log_set_sink(log_above_progress, NULL);
    if ((rc = tr_runtime_spawn(rt, &progress_behavior, &pc, sizeof pc,
                               &progress)) == 0) {
        struct consumer_config cc = {opt.items,
                                     opt.local ? (uint32_t)opt.workers : 1,
                                     progress, tr_inbox_ref(inbox)};
        rc =
            tr_runtime_spawn(rt, &consumer_behavior, &cc, sizeof cc, &consumer);
    }
    if (rc == 0 && opt.local) {
        struct producer_config prc = {opt.items, (uint32_t)opt.workers,
                                      consumer, progress, tr_inbox_ref(inbox)};
        rc = tr_runtime_spawn(rt, &producer_behavior, &prc, sizeof prc,
                              &producer);
    } else if (rc == 0) {
        struct dispatcher_config dc = {.items = opt.items,
                                       .nworkers = (uint32_t)opt.workers,
                                       .kill_every_ms =
                                           (int64_t)opt.kill_every_ms,
                                       .consumer = consumer,
                                       .progress = progress,
                                       .report_to = tr_inbox_ref(inbox)};
        rc = tr_runtime_spawn(rt, &dispatcher_behavior, &dc, sizeof dc,
                              &producer);
    }
    if (rc != 0) {
        tr_inbox_destroy(&inbox);
        tr_runtime_destroy(&rt); /* ends the actors already spawned */
        return fail("tr_runtime_spawn", rc);
    }

    if (opt.local)
        printf("pipeline: %" PRIu64 " items, producer -> %" PRIu64
               " local workers -> consumer, %u scheduler threads, credit "
               "window %u per link\n",
               opt.items, opt.workers, tr_runtime_workers(rt), CREDIT_WINDOW);
    else
        printf("pipeline: %" PRIu64 " items, producer -> %" PRIu64
               " workers in %u processes -> consumer, %u scheduler threads, "
               "window %u per worker\n",
               opt.items, opt.workers, tr_pool_size(rt), tr_runtime_workers(rt),
               CREDIT_WINDOW);
    if (opt.kill_every_ms > 0)
        printf("pipeline: kill -9 of a random worker process every %" PRIu64
               " ms\n",
               opt.kill_every_ms);
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
    tr_runtime_destroy(&rt); /* stops the worker processes too */
    tr_log_set_sink(NULL, NULL);

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
           " retried=%" PRIu64 " duplicates=%" PRIu64 " invalid=%" PRIu64
           " checksum_ok=%d complete=%d interrupted=%d workers_killed=%" PRIu64
           " elapsed_s=%.3f items_per_s=%.0f\n",
           prep.produced, crep.consumed, lost, prep.retried, crep.duplicates,
           crep.invalid, checksum_ok ? 1 : 0, have_prep && have_crep ? 1 : 0,
           interrupted ? 1 : 0, prep.killed, elapsed_s, rate);

    bool ok = run_rc == 0 && have_prep && have_crep &&
              prep.produced == target && lost == 0 && crep.duplicates == 0 &&
              crep.invalid == 0 && checksum_ok;
    /* Stopped by a signal: 128 + signal, as shells expect (the summary
     * says whether the orderly shutdown drained everything). */
    if (exit_code != 0)
        return exit_code;
    return ok ? 0 : 1;
}
