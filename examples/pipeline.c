/* pipeline — source -> parse -> CPU stage in worker processes -> sink.
 *
 * Design notes
 * ------------
 * A distributed pipeline built from troupe's toolkit, with no flow-control
 * code of its own: every hop is bounded by the runtime.
 *
 *   supervisor "pipeline" (one_for_all, intensity 0: a failed stage ends
 *   |                      the run, every stage stopped in order)
 *   +- progress  live status line (a periodic timer)
 *   +- sink      bounded mailbox (backpressure): checks each id once,
 *   |            sums the digests, aggregates them into 16 buckets
 *   +- parse     bounded mailbox (backpressure): text record -> item;
 *   |  |         one request per item to the CPU pool; replies forwarded
 *   |  |         to the sink; failed requests sent again
 *   |  +- pool   router (least loaded) over K routees of the registered
 *   |            behaviour "pipeline.worker" in P worker processes, the
 *   |            children of the pool's own supervisor (router.h)
 *   +- source    makes the records id 1..N, 256 per turn
 *      +- killer (--kill-worker-every) kill -9 of a random worker process
 *
 * Backpressure, end to end: the sink's mailbox holds at most SINK_LIMIT
 * results; past that, whoever sends to it (parse) is muted — parked after
 * its turn, never a thread. A muted parse stops taking records, so its
 * own mailbox (PARSE_LIMIT) fills and the source is muted. Toward the
 * worker processes, each remote routee gets at most `window` requests in
 * flight (credit, granted as its mailbox drains); past that the link
 * holds them and mutes the router, which mutes parse, which mutes the
 * source. So a slow sink (--slow-sink) or a slow worker slows the whole
 * pipeline down and memory stays bounded: the summary shows the peak RSS
 * and the most requests parse ever had in flight.
 *
 * Reliability: the CPU stage is registered TR_REG_IDEMPOTENT, so when a
 * worker process dies the routee's proxy starts it again and resends the
 * requests it had in flight (at least once; stats.retried). If a proxy
 * gives up (5 losses in a second) its requests come back failed
 * (TR_TAG_REMOTE_FAILED) and the pool's supervisor restarts the routee;
 * parse keeps every request in flight in a table (request id -> item), so
 * a failed or timed-out request is sent again (counted in `retried`). Each
 * request has exactly one outcome (a reply, a failure or a timeout; late
 * replies are discarded by the runtime), so each item reaches the sink
 * once; the sink's bitmap would catch a duplicate, and main recomputes
 * the checksum and the buckets sequentially.
 *
 * End of stream and shutdown are ordered by per-sender FIFO: the source
 * sends EOF after its last record; parse, once it has seen EOF and has
 * nothing in flight, sends EOF to the sink; the sink reports to main and
 * ends the supervisor. SIGINT/SIGTERM: the runtime cancels the tree,
 * youngest first: the source stops making records and sends EOF, parse and
 * the sink drain (on_cancel returns TR_DRAIN) until their EOF, so every
 * record made is still accounted for (exit status 128 + signal, lost=0).
 * Any stage that fails takes the supervisor down with it (intensity 0):
 * main then finds a report missing and exits 1 instead of hanging. */
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
#include <sys/resource.h>
#include <unistd.h>

#include <troupe/troupe.h>

/* ---- parameters ---- */

#define DEFAULT_ITEMS 200000u
#define DEFAULT_WORKERS 4u
#define DEFAULT_PROCESSES 2u
#define MAX_ITEMS 1000000000u /* the sink's bitmap: 125 MB at most */
#define MAX_WORKERS 1024u
#define MAX_THREADS 1024u
#define MAX_PROCESSES 256u          /* tr_pool_start's limit */
#define MAX_KILL_PERIOD_MS 3600000u /* an hour */
#define MAX_SLOW_SINK_US 1000000u

/* The registered name of the remote CPU stage. */
#define REMOTE_WORKER "pipeline.worker"

/* Mailbox limits (messages) of the two bounded stages. */
#define PARSE_LIMIT 1024u
#define SINK_LIMIT 1024u
#define ROUTEE_LIMIT 1024u /* local routees (--local) */
/* Records the source makes per turn (then it yields: a muted source is
 * parked between turns). */
#define SOURCE_BATCH 256u
/* Requests in flight to one remote routee (tr_pool_config.window). */
#define POOL_WINDOW 1024
/* A request not answered within this is sent again (a worker hung for
 * longer than the pool's hang timeout has been killed by then). */
#define REQUEST_TIMEOUT_MS 5000

/* Rounds of the per-item CPU job (see item_digest). */
#define WORK_ROUNDS 256u
#define BUCKETS 16u

/* Stages tell the progress actor their count this often. */
#define PROGRESS_EVERY 1024u
#define PROGRESS_PERIOD_MS 100

/* Names the stages find each other by (tr_whereis; the supervisor starts
 * them in this order, so each finds the ones before it). */
#define NAME_PROGRESS "pipeline.progress"
#define NAME_SINK "pipeline.sink"
#define NAME_PARSE "pipeline.parse"
#define NAME_SOURCE "pipeline.source"

/* Message tags (application tags are below TR_TAG_SYSTEM). */
enum {
    TAG_RECORD = 1,    /* source -> parse: BYTES text "id value" */
    TAG_ITEM,          /* parse -> pool (a request): BYTES struct item */
    TAG_RESULT,        /* worker -> parse (the reply), parse -> sink:
                          BYTES struct result */
    TAG_EOF,           /* source -> parse, parse -> sink: no more */
    TAG_PUMP,          /* source -> itself: make the next batch */
    TAG_PRODUCED,      /* source -> progress: U64 records made so far */
    TAG_CONSUMED,      /* sink -> progress: U64 items consumed so far */
    TAG_RETRIED,       /* parse -> progress: U64 requests sent again */
    TAG_KILLED,        /* killer -> source -> progress: U64 kills so far */
    TAG_TICK,          /* timer -> progress: redraw */
    TAG_FINISH,        /* sink -> progress: U64 final count; stop */
    TAG_KILL,          /* timer -> killer */
    TAG_SOURCE_REPORT, /* -> main: BYTES struct source_report */
    TAG_PARSE_REPORT,  /* -> main: BYTES struct parse_report */
    TAG_SINK_REPORT    /* -> main: BYTES struct sink_report */
};

/* What every stage is started with (the supervisor copies it into each
 * child's state: init bytes). */
struct setup {
    uint64_t items;
    uint32_t workers;
    bool local; /* CPU stage in this process */
    bool live;  /* progress line on screen */
    int64_t kill_every_ms;
    uint32_t slow_sink_us; /* the sink's extra work per item */
    tr_ref report_to;      /* main's inbox */
};

/* ---- the work ---- */

/* Plain data only (these cross process boundaries as BYTES); 16 bytes,
 * inline in a message, no padding to leak. */
struct item {
    uint64_t id; /* 1..N */
    uint64_t value;
};

struct result {
    uint64_t id;
    uint64_t digest;
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

/* The sink's aggregate: which of the 16 buckets a digest falls in. */
static unsigned bucket_of(uint64_t digest) { return (unsigned)(digest >> 60); }

/* ---- helpers shared by the actors ---- */

/* Builds a BYTES message and sends it; freed if the send fails. */
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

/* A stage finds an earlier one by name (registered in its on_start). */
static int find(tr_ctx *ctx, const char *name, tr_ref *out) {
    int rc = tr_whereis(tr_ctx_runtime(ctx), name, out);
    if (rc != 0)
        return tr_fail(ctx, rc, "stage '%s' not found", name);
    return 0;
}

static int register_as(tr_ctx *ctx, const char *name) {
    int rc = tr_name_register(tr_ctx_runtime(ctx), name, tr_self(ctx));
    if (rc != 0)
        return tr_fail(ctx, rc, "cannot register '%s'", name);
    return 0;
}

static void report_failure(const char *who, int reason) {
    if (reason < 0)
        fprintf(stderr, "pipeline: %s failed: %s (%s)\n", who,
                tr_strerror(reason), tr_err_name(reason));
}

/* ---- progress ---- */

struct progress_state {
    struct setup cfg;
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

/* One write to a terminal per tick: cheap enough to do in the handler.
 * Ticks show the rate since the previous tick; the final line shows the
 * average over the run and ends the line. */
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
    if (!p->cfg.local)
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
    int rc = register_as(ctx, NAME_PROGRESS);
    if (rc != 0 || !p->cfg.live)
        return rc;
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
    (void)ctx;
    progress_erase(state); /* failure: no half line before the summary */
    report_failure("progress", reason);
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

/* Stopped by the supervisor: wait for the sink's FINISH (the final line)
 * within its grace. */
static int progress_cancel(tr_ctx *ctx, void *state, int reason) {
    (void)ctx;
    (void)state;
    (void)reason;
    return TR_DRAIN;
}

static const tr_behavior progress_behavior = {
    .name = "progress",
    .handle = progress_handle,
    .on_start = progress_start,
    .on_cancel = progress_cancel,
    .on_stop = progress_stop,
    .state_size = sizeof(struct progress_state),
};

/* ---- the CPU stage (runs in a worker process, or locally) ---- */

/* Stateless: each request is one item, each reply its digest. */
static int worker_handle(tr_ctx *ctx, void *state, tr_msg *msg) {
    (void)state;
    struct item it;
    if (tr_msg_tag(msg) != TAG_ITEM || !tr_msg_is_request(msg) ||
        read_bytes(msg, &it, sizeof it) != 0)
        return TR_EPROTO;
    struct result r = {it.id, item_digest(it.value)};
    tr_msg *reply = tr_msg_new_bytes(TAG_RESULT, &r, sizeof r);
    if (reply == NULL)
        return TR_ENOMEM;
    int rc = tr_reply(ctx, msg, &reply);
    if (rc != 0)
        tr_msg_destroy(&reply);
    return rc;
}

static const tr_behavior worker_behavior = {
    .name = REMOTE_WORKER,
    .handle = worker_handle,
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

/* ---- source ---- */

struct source_report {
    uint64_t produced;
    uint64_t killed;
    uint64_t interrupted; /* 1: stopped early by a signal */
};

struct source_state {
    struct setup cfg;
    tr_ref parse, progress;
    uint64_t next; /* the next id to make */
    struct source_report rep;
    bool done;
};

static int source_start(tr_ctx *ctx, void *state) {
    struct source_state *s = state;
    s->next = 1;
    int rc = find(ctx, NAME_PARSE, &s->parse);
    if (rc == 0)
        rc = find(ctx, NAME_PROGRESS, &s->progress);
    if (rc == 0 && s->cfg.kill_every_ms > 0) {
        struct killer_state k = {.period_ms = s->cfg.kill_every_ms};
        rc = tr_spawn(ctx, &killer_behavior, &k, sizeof k, NULL);
    }
    if (rc == 0)
        rc = register_as(ctx, NAME_SOURCE);
    return rc != 0 ? rc : tr_send_tag(ctx, tr_self(ctx), TAG_PUMP);
}

/* End of stream: EOF after the last record (FIFO per sender), and the
 * count to main. */
static int source_finish(tr_ctx *ctx, struct source_state *s) {
    if (s->done)
        return 0;
    s->done = true;
    int rc = tr_send_tag(ctx, s->parse, TAG_EOF);
    if (rc == 0)
        rc = tr_send_u64(ctx, s->progress, TAG_PRODUCED, s->rep.produced);
    if (rc == 0)
        rc = send_bytes(ctx, s->cfg.report_to, TAG_SOURCE_REPORT, &s->rep,
                        sizeof s->rep);
    return rc;
}

/* A batch of text records per turn. If parse is behind, this actor is
 * muted after the turn and the PUMP waits in its mailbox. */
static int source_pump(tr_ctx *ctx, struct source_state *s) {
    for (uint32_t k = 0; k < SOURCE_BATCH && s->next <= s->cfg.items; k++) {
        char rec[48];
        int n = snprintf(rec, sizeof rec, "%" PRIu64 " %016" PRIx64, s->next,
                         item_value(s->next));
        int rc = send_bytes(ctx, s->parse, TAG_RECORD, rec, (size_t)n);
        if (rc != 0)
            return rc;
        s->next++;
        if (++s->rep.produced % PROGRESS_EVERY == 0 &&
            (rc = tr_send_u64(ctx, s->progress, TAG_PRODUCED,
                              s->rep.produced)) != 0)
            return rc;
    }
    if (s->next <= s->cfg.items)
        return tr_send_tag(ctx, tr_self(ctx), TAG_PUMP);
    int rc = source_finish(ctx, s);
    return rc != 0 ? rc : TR_STOP;
}

static int source_handle(tr_ctx *ctx, void *state, tr_msg *msg) {
    struct source_state *s = state;
    switch (tr_msg_tag(msg)) {
    case TAG_PUMP:
        return s->done ? 0 : source_pump(ctx, s);
    case TAG_KILLED:
        s->rep.killed = tr_msg_u64(msg);
        return tr_send_u64(ctx, s->progress, TAG_KILLED, s->rep.killed);
    default:
        return TR_EPROTO;
    }
}

/* SIGINT/SIGTERM (or a failing stage): no more records; EOF so that the
 * stages after drain what was made. */
static int source_cancel(tr_ctx *ctx, void *state, int reason) {
    struct source_state *s = state;
    (void)reason;
    if (!s->done)
        s->rep.interrupted = 1;
    (void)source_finish(ctx, s);
    return 0;
}

static void source_stop(tr_ctx *ctx, void *state, int reason) {
    (void)ctx;
    (void)state;
    report_failure("source", reason);
}

static const tr_behavior source_behavior = {
    .name = "source",
    .handle = source_handle,
    .on_start = source_start,
    .on_cancel = source_cancel,
    .on_stop = source_stop,
    .state_size = sizeof(struct source_state),
};

/* ---- parse ---- */

struct parse_report {
    uint64_t parsed;
    uint64_t malformed;     /* records that did not parse (dropped, logged) */
    uint64_t retried;       /* requests sent again after a failure/timeout */
    uint64_t inflight_peak; /* most requests in flight at once */
};

/* A request in flight: its id -> the item, to send it again. */
struct flight {
    uint64_t req; /* 0: free slot */
    struct item it;
};

struct parse_state {
    struct setup cfg;
    tr_ref sink, progress, pool;
    struct flight *tab; /* open addressing, linear probing */
    uint32_t cap, n;    /* cap: a power of two, n < cap / 2 */
    bool eof, finished;
    struct parse_report rep;
};

static uint32_t slot_of(const struct parse_state *p, uint64_t req) {
    uint64_t h = req * 0x9e3779b97f4a7c15u;
    return (uint32_t)(h >> 32) & (p->cap - 1);
}

static int flight_put(struct parse_state *p, uint64_t req, struct item it) {
    if ((p->n + 1) * 2 > p->cap) {
        uint32_t ncap = p->cap ? p->cap * 2 : 1024;
        struct flight *old = p->tab, *nt = calloc(ncap, sizeof *nt);
        if (nt == NULL)
            return TR_ENOMEM;
        uint32_t ocap = p->cap;
        p->tab = nt;
        p->cap = ncap;
        for (uint32_t i = 0; i < ocap; i++)
            if (old[i].req != 0) {
                uint32_t j = slot_of(p, old[i].req);
                while (nt[j].req != 0)
                    j = (j + 1) & (ncap - 1);
                nt[j] = old[i];
            }
        free(old);
    }
    uint32_t j = slot_of(p, req);
    while (p->tab[j].req != 0)
        j = (j + 1) & (p->cap - 1);
    p->tab[j] = (struct flight){req, it};
    if (++p->n > p->rep.inflight_peak)
        p->rep.inflight_peak = p->n;
    return 0;
}

/* Removes request req (backward-shift deletion: no tombstones). */
static bool flight_take(struct parse_state *p, uint64_t req, struct item *out) {
    if (p->cap == 0 || req == 0)
        return false;
    uint32_t mask = p->cap - 1, i = slot_of(p, req);
    while (p->tab[i].req != req) {
        if (p->tab[i].req == 0)
            return false;
        i = (i + 1) & mask;
    }
    *out = p->tab[i].it;
    for (uint32_t j = (i + 1) & mask; p->tab[j].req != 0; j = (j + 1) & mask) {
        uint32_t home = slot_of(p, p->tab[j].req);
        /* Move j into the hole at i unless its home lies in (i, j]. */
        if (((j - home) & mask) >= ((j - i) & mask)) {
            p->tab[i] = p->tab[j];
            i = j;
        }
    }
    p->tab[i].req = 0;
    p->n--;
    return true;
}

static int parse_send(tr_ctx *ctx, struct parse_state *p, struct item it) {
    tr_msg *m = tr_msg_new_bytes(TAG_ITEM, &it, sizeof it);
    if (m == NULL)
        return TR_ENOMEM;
    uint64_t req = 0;
    int rc = tr_request(ctx, p->pool, &m, REQUEST_TIMEOUT_MS, &req);
    if (rc != 0) {
        tr_msg_destroy(&m);
        return rc;
    }
    return flight_put(p, req, it);
}

/* "id value": decimal id, 16 hex digits. Anything else is malformed. */
static bool parse_record(const tr_msg *msg, struct item *out) {
    size_t len = 0;
    const char *d = tr_msg_data(msg, &len);
    char buf[48];
    if (tr_msg_kind(msg) != TR_PAYLOAD_BYTES || d == NULL || len == 0 ||
        len >= sizeof buf)
        return false;
    memcpy(buf, d, len);
    buf[len] = 0;
    char *end = NULL;
    if (buf[0] < '0' || buf[0] > '9')
        return false;
    out->id = strtoull(buf, &end, 10);
    if (*end != ' ' || strlen(end + 1) != 16)
        return false;
    char *hex = end + 1;
    out->value = strtoull(hex, &end, 16);
    return *end == 0 && hex[0] != '-' && hex[0] != '+' && out->id != 0;
}

static int parse_finish(tr_ctx *ctx, struct parse_state *p) {
    if (!p->eof || p->n != 0 || p->finished)
        return 0;
    p->finished = true;
    int rc = tr_send_tag(ctx, p->sink, TAG_EOF);
    if (rc == 0)
        rc = send_bytes(ctx, p->cfg.report_to, TAG_PARSE_REPORT, &p->rep,
                        sizeof p->rep);
    return rc != 0 ? rc : TR_STOP;
}

static int parse_handle(tr_ctx *ctx, void *state, tr_msg *msg) {
    struct parse_state *p = state;
    struct item it;
    int rc;
    switch (tr_msg_tag(msg)) {
    case TAG_RECORD:
        if (!parse_record(msg, &it)) {
            if (p->rep.malformed++ < 10)
                fprintf(stderr, "pipeline: parse: malformed record dropped\n");
            return 0;
        }
        p->rep.parsed++;
        return parse_send(ctx, p, it);
    case TAG_RESULT: {
        struct result r = {0, 0};
        if (!tr_msg_is_reply(msg) ||
            !flight_take(p, tr_msg_request_id(msg), &it))
            return TR_EPROTO; /* every reply answers a request in flight */
        if (read_bytes(msg, &r, sizeof r) != 0 || r.id != it.id)
            return tr_fail(ctx, TR_EPROTO,
                           "reply for item %" PRIu64 " names item %" PRIu64,
                           it.id, r.id);
        if ((rc = tr_forward(ctx, p->sink, msg)) != 0)
            return rc;
        return parse_finish(ctx, p);
    }
    case TR_TAG_REMOTE_FAILED:  /* its worker process was lost for good */
    case TR_TAG_REQUEST_FAILED: /* its routee ended with it queued */
    case TR_TAG_TIMEOUT:        /* no answer in REQUEST_TIMEOUT_MS */
        if (!flight_take(p, tr_msg_request_id(msg), &it))
            return 0; /* not ours: a stale outcome */
        p->rep.retried++;
        if ((rc = tr_send_u64(ctx, p->progress, TAG_RETRIED, p->rep.retried)) !=
            0)
            return rc;
        return parse_send(ctx, p, it);
    case TAG_EOF:
        p->eof = true;
        return parse_finish(ctx, p);
    default:
        return TR_EPROTO;
    }
}

static int parse_start(tr_ctx *ctx, void *state) {
    struct parse_state *p = state;
    int rc = find(ctx, NAME_SINK, &p->sink);
    if (rc == 0)
        rc = find(ctx, NAME_PROGRESS, &p->progress);
    if (rc != 0)
        return rc;
    /* The CPU stage: a supervised pool, its routees restarted by their
     * own supervisor (a routee whose proxy gave up ends TR_ELOST). Local
     * routees get bounded mailboxes (remote ones are bounded by credit). */
    static const tr_mailbox_limit routee_limit = {
        .max_msgs = ROUTEE_LIMIT, .policy = TR_OVERFLOW_BACKPRESSURE};
    tr_router_pool_config pc = {
        .how = TR_ROUTE_ROUND_ROBIN,
        .routee = {.name = "cpu",
                   .behavior = p->cfg.local ? &worker_behavior : NULL,
                   .remote = p->cfg.local ? NULL : REMOTE_WORKER,
                   .restart = TR_RESTART_PERMANENT,
                   .shutdown_ms = 1000,
                   .mailbox = &routee_limit},
        .size = p->cfg.workers,
        .sup = {.name = "cpu-pool",
                .strategy = TR_SUP_ONE_FOR_ONE,
                .intensity = 1000,
                .period_ms = 1000}};
    if ((rc = tr_router_pool_spawn(ctx, &pc, &p->pool)) != 0)
        return rc;
    return register_as(ctx, NAME_PARSE);
}

/* True if the stage registered as `name` is running. */
static bool stage_alive(tr_ctx *ctx, const char *name) {
    tr_ref r;
    return tr_whereis(tr_ctx_runtime(ctx), name, &r) == 0;
}

/* Shutdown: keep going until the source's EOF and every reply are in.
 * (Stages stop youngest first: a source that is not running now never
 * will, e.g. a signal during the start; its EOF is not coming.) */
static int parse_cancel(tr_ctx *ctx, void *state, int reason) {
    struct parse_state *p = state;
    (void)reason;
    if (!p->eof && !stage_alive(ctx, NAME_SOURCE))
        p->eof = true;
    int rc = parse_finish(ctx, p);
    return rc == TR_STOP ? 0 : rc < 0 ? rc : TR_DRAIN;
}

static void parse_stop(tr_ctx *ctx, void *state, int reason) {
    (void)ctx;
    struct parse_state *p = state;
    free(p->tab);
    p->tab = NULL;
    report_failure("parse", reason);
}

static const tr_behavior parse_behavior = {
    .name = "parse",
    .handle = parse_handle,
    .on_start = parse_start,
    .on_cancel = parse_cancel,
    .on_stop = parse_stop,
    .state_size = sizeof(struct parse_state),
};

/* ---- sink ---- */

struct sink_report {
    uint64_t consumed;   /* distinct valid ids received */
    uint64_t duplicates; /* ids received more than once */
    uint64_t invalid;    /* ids outside 1..N, malformed results */
    uint64_t checksum;   /* sum (mod 2^64) of the digests of distinct ids */
    uint64_t buckets[BUCKETS]; /* the aggregate: digests per top nibble */
    uint64_t full;             /* times its mailbox reached its limit */
    int64_t finished_ns;       /* tr_now_ns when the last result was in */
};

struct sink_state {
    struct setup cfg;
    tr_ref progress;
    uint64_t *seen; /* bitmap of ids, bit id-1 */
    struct sink_report rep;
    bool cancelled;
};

static int sink_start(tr_ctx *ctx, void *state) {
    struct sink_state *s = state;
    s->seen = calloc((size_t)(s->cfg.items / 64 + 1), sizeof *s->seen);
    if (s->seen == NULL)
        return TR_ENOMEM;
    int rc = find(ctx, NAME_PROGRESS, &s->progress);
    return rc != 0 ? rc : register_as(ctx, NAME_SINK);
}

static int sink_result(tr_ctx *ctx, struct sink_state *s, const tr_msg *msg) {
    struct result r;
    if (read_bytes(msg, &r, sizeof r) != 0 || r.id == 0 ||
        r.id > s->cfg.items) {
        s->rep.invalid++;
        return 0;
    }
    if (s->cfg.slow_sink_us > 0) { /* an artificially slow sink */
        int64_t until = tr_now_ns() + (int64_t)s->cfg.slow_sink_us * 1000;
        while (tr_now_ns() < until)
            ;
    }
    uint64_t bit = (uint64_t)1 << ((r.id - 1) % 64);
    uint64_t *word = &s->seen[(r.id - 1) / 64];
    if (*word & bit) {
        s->rep.duplicates++;
        return 0;
    }
    *word |= bit;
    s->rep.checksum += r.digest;
    s->rep.buckets[bucket_of(r.digest)]++;
    if (++s->rep.consumed % PROGRESS_EVERY == 0)
        return tr_send_u64(ctx, s->progress, TAG_CONSUMED, s->rep.consumed);
    return 0;
}

/* End of stream: the report to main, the final count to progress, and
 * (unless the supervisor is stopping us already) the end of the run. */
static int sink_finish(tr_ctx *ctx, struct sink_state *s) {
    tr_runtime *rt = tr_ctx_runtime(ctx);
    s->rep.finished_ns = tr_now_ns();
    tr_mailbox_stats ms;
    if (tr_mailbox_stats_get(rt, tr_self(ctx), &ms) == 0)
        s->rep.full = ms.full;
    int rc = send_bytes(ctx, s->cfg.report_to, TAG_SINK_REPORT, &s->rep,
                        sizeof s->rep);
    if (rc == 0)
        rc = tr_send_u64(ctx, s->progress, TAG_FINISH, s->rep.consumed);
    /* The last stage: the run is over, end the supervisor (unless it
     * is already stopping us). */
    if (rc == 0 && !s->cancelled)
        rc = tr_cancel(rt, tr_parent(ctx), TR_EXIT_SHUTDOWN, -1);
    return rc != 0 ? rc : TR_STOP;
}

static int sink_handle(tr_ctx *ctx, void *state, tr_msg *msg) {
    struct sink_state *s = state;
    switch (tr_msg_tag(msg)) {
    case TAG_RESULT:
        return sink_result(ctx, s, msg);
    case TAG_EOF:
        return sink_finish(ctx, s);
    default:
        return TR_EPROTO;
    }
}

/* Drains until parse's EOF; if parse is not running (it never started),
 * none is coming. */
static int sink_cancel(tr_ctx *ctx, void *state, int reason) {
    struct sink_state *s = state;
    (void)reason;
    s->cancelled = true;
    if (stage_alive(ctx, NAME_PARSE))
        return TR_DRAIN;
    int rc = sink_finish(ctx, s);
    return rc == TR_STOP ? 0 : rc;
}

static void sink_stop(tr_ctx *ctx, void *state, int reason) {
    (void)ctx;
    struct sink_state *s = state;
    free(s->seen);
    s->seen = NULL;
    report_failure("sink", reason);
}

static const tr_behavior sink_behavior = {
    .name = "sink",
    .handle = sink_handle,
    .on_start = sink_start,
    .on_cancel = sink_cancel,
    .on_stop = sink_stop,
    .state_size = sizeof(struct sink_state),
};

/* ---- command line ---- */

struct options {
    uint64_t items, workers, threads;
    uint64_t processes;     /* 0: not given (DEFAULT_PROCESSES) */
    uint64_t kill_every_ms; /* 0: no killer */
    uint64_t slow_sink_us;  /* 0: a sink at full speed */
    bool quiet, local;
};

static void usage(FILE *out) {
    fprintf(out,
            "usage: pipeline [--items N] [--workers K] [--processes P] "
            "[--local]\n"
            "                [--kill-worker-every MS] [--slow-sink US] "
            "[--threads T]\n"
            "                [--quiet] [--help]\n"
            "  --items N              records to make, 0..%u (default %u)\n"
            "  --workers K            CPU-stage actors, 1..%u (default %u)\n"
            "  --processes P          worker processes they run in, 1..%u "
            "(default %u)\n"
            "  --local                run the CPU stage in this process "
            "instead\n"
            "  --kill-worker-every MS kill -9 a random worker process every "
            "MS ms,\n"
            "                         1..%u (its requests are resent: still "
            "lost=0)\n"
            "  --slow-sink US         the sink spends US more microseconds "
            "per item,\n"
            "                         0..%u (backpressure: memory stays "
            "bounded)\n"
            "  --threads T            scheduler threads, 0..%u; 0 = online "
            "CPUs (default 0)\n"
            "  --quiet                no live progress line on stderr\n"
            "The last line of stdout is: produced=<n> consumed=<n> lost=<n> "
            "retried=<n>\n"
            "duplicates=<n> invalid=<n> malformed=<n> checksum_ok=<0|1> "
            "aggregate_ok=<0|1>\n"
            "complete=<0|1> interrupted=<0|1> workers_killed=<n> "
            "inflight_peak=<n>\n"
            "sink_full=<n> peak_rss_kib=<n> elapsed_s=<s> items_per_s=<r> "
            "(complete=0: a stage\n"
            "failed, see stderr). Exit status: 0 when nothing was lost and "
            "the checks match,\n"
            "1 otherwise, 2 for invalid arguments, 128 + signal when "
            "interrupted.\n",
            MAX_ITEMS, DEFAULT_ITEMS, MAX_WORKERS, DEFAULT_WORKERS,
            MAX_PROCESSES, DEFAULT_PROCESSES, MAX_KILL_PERIOD_MS,
            MAX_SLOW_SINK_US, MAX_THREADS);
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
        {"--slow-sink", 0, MAX_SLOW_SINK_US, &o->slow_sink_us},
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

/* Starts the stages under one supervisor (a child of the runtime's root):
 * progress, sink, parse, source, in that order (each finds the earlier
 * ones by name). */
static int start_stages(tr_runtime *rt, const struct setup *su) {
    static const tr_mailbox_limit parse_limit = {
        .max_msgs = PARSE_LIMIT, .policy = TR_OVERFLOW_BACKPRESSURE};
    static const tr_mailbox_limit sink_limit = {
        .max_msgs = SINK_LIMIT, .policy = TR_OVERFLOW_BACKPRESSURE};
    /* Transient: a stage that has done its part ends normally and stays
     * ended; a failure exceeds intensity 0 and ends the run. Draining
     * stages get a generous grace; the sink may be slow. */
    const tr_sup_spec specs[] = {
        {.name = "progress",
         .behavior = &progress_behavior,
         .init = su,
         .init_len = sizeof *su,
         .restart = TR_RESTART_TRANSIENT,
         .shutdown_ms = 1000},
        {.name = "sink",
         .behavior = &sink_behavior,
         .init = su,
         .init_len = sizeof *su,
         .restart = TR_RESTART_TRANSIENT,
         .shutdown_ms = 60000,
         .mailbox = &sink_limit},
        {.name = "parse",
         .behavior = &parse_behavior,
         .init = su,
         .init_len = sizeof *su,
         .restart = TR_RESTART_TRANSIENT,
         .shutdown_ms = 60000,
         .mailbox = &parse_limit},
        {.name = "source",
         .behavior = &source_behavior,
         .init = su,
         .init_len = sizeof *su,
         .restart = TR_RESTART_TRANSIENT,
         .shutdown_ms = 1000},
    };
    tr_sup_config sc = {.name = "pipeline",
                        .strategy = TR_SUP_ONE_FOR_ALL,
                        .intensity = 0,
                        .period_ms = 1000};
    return tr_sup_runtime_start(rt, &sc, specs, sizeof specs / sizeof *specs,
                                NULL);
}

int main(int argc, char **argv) {
    /* Worker processes run this same program: the remote stage must be
     * registered, and tr_worker_main called, before anything else. In a
     * worker process tr_worker_main runs the worker and never returns.
     * Idempotent: a request lost with its process is sent again. */
    int rc =
        tr_register_flags(REMOTE_WORKER, &worker_behavior, TR_REG_IDEMPOTENT);
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
    /* SIGINT/SIGTERM: orderly shutdown (the stages drain); a second
     * signal stops at once. Depths tracked: this process then holds back
     * the credit of worker actors sending to a busy local actor. */
    tr_runtime_config cfg = {.workers = (unsigned)opt.threads,
                             .handle_signals = true,
                             .track_depth = true};
    if ((rc = tr_runtime_create(&rt, &cfg)) != 0)
        return fail("tr_runtime_create", rc);
    if ((rc = tr_inbox_create(rt, &inbox)) != 0) {
        tr_runtime_destroy(&rt);
        return fail("tr_inbox_create", rc);
    }
    /* One scheduler thread per worker process: the CPU stage is spread
     * over processes, not threads. */
    tr_pool_config pool = {.processes = (unsigned)opt.processes,
                           .worker_threads = 1,
                           .window = POOL_WINDOW};
    if (!opt.local && (rc = tr_pool_start(rt, &pool)) != 0) {
        tr_inbox_destroy(&inbox);
        tr_runtime_destroy(&rt);
        return fail("tr_pool_start", rc);
    }

    struct setup su = {.items = opt.items,
                       .workers = (uint32_t)opt.workers,
                       .local = opt.local,
                       .live = !opt.quiet && isatty(STDERR_FILENO),
                       .kill_every_ms = (int64_t)opt.kill_every_ms,
                       .slow_sink_us = (uint32_t)opt.slow_sink_us,
                       .report_to = tr_inbox_ref(inbox)};
    if (su.live)
        tr_log_set_sink(log_above_progress, NULL);
    if ((rc = start_stages(rt, &su)) != 0) {
        tr_inbox_destroy(&inbox);
        tr_runtime_destroy(&rt);
        return fail("tr_sup_runtime_start", rc);
    }

    if (opt.local)
        printf("pipeline: %" PRIu64 " items, source -> parse -> %" PRIu64
               " local workers -> sink, %u scheduler threads\n",
               opt.items, opt.workers, tr_runtime_workers(rt));
    else
        printf("pipeline: %" PRIu64 " items, source -> parse -> %" PRIu64
               " workers in %u processes -> sink, %u scheduler threads, "
               "window %d per worker\n",
               opt.items, opt.workers, tr_pool_size(rt), tr_runtime_workers(rt),
               POOL_WINDOW);
    printf("pipeline: mailbox limits parse %u, sink %u (backpressure)%s\n",
           PARSE_LIMIT, SINK_LIMIT, opt.slow_sink_us > 0 ? ", slow sink" : "");
    if (opt.slow_sink_us > 0)
        printf("pipeline: the sink spends %" PRIu64 " us more per item\n",
               opt.slow_sink_us);
    if (opt.kill_every_ms > 0)
        printf("pipeline: kill -9 of a random worker process every %" PRIu64
               " ms\n",
               opt.kill_every_ms);
    fflush(stdout);

    /* Runs until every actor has stopped; the reports are then waiting in
     * the inbox. */
    int64_t start_ns = tr_now_ns();
    int run_rc = tr_runtime_run(rt);
    int64_t end_ns = tr_now_ns();
    if (run_rc != 0)
        fprintf(stderr, "pipeline: tr_runtime_run: %s\n", tr_strerror(run_rc));

    struct source_report srep = {0};
    struct parse_report prep = {0};
    struct sink_report krep = {0};
    bool have_s = false, have_p = false, have_k = false;
    tr_msg *m = NULL;
    while (tr_inbox_recv(inbox, 0, &m) == 0) {
        if (tr_msg_tag(m) == TAG_SOURCE_REPORT)
            have_s = read_bytes(m, &srep, sizeof srep) == 0;
        else if (tr_msg_tag(m) == TAG_PARSE_REPORT)
            have_p = read_bytes(m, &prep, sizeof prep) == 0;
        else if (tr_msg_tag(m) == TAG_SINK_REPORT)
            have_k = read_bytes(m, &krep, sizeof krep) == 0;
        tr_msg_destroy(&m);
    }
    tr_transport_stats ts = {0};
    if (!opt.local)
        (void)tr_transport_stats_get(rt, false, &ts);
    int exit_code = tr_runtime_exit_code(rt);
    tr_inbox_destroy(&inbox);
    tr_runtime_destroy(&rt); /* stops the worker processes too */
    tr_log_set_sink(NULL, NULL);
    struct rusage ru;
    long peak_kib = getrusage(RUSAGE_SELF, &ru) == 0 ? ru.ru_maxrss : -1;

    /* A missing report means a stage failed: the counts below are then
     * zeros, and complete=0 says so. */
    if (!have_s)
        fprintf(stderr, "pipeline: no report from the source\n");
    if (!have_p)
        fprintf(stderr, "pipeline: no report from parse\n");
    if (!have_k)
        fprintf(stderr, "pipeline: no report from the sink\n");
    bool complete = have_s && have_p && have_k;

    /* The reference result, computed sequentially with the same
     * functions: the checksum and the 16 buckets. */
    bool interrupted = have_s && srep.interrupted;
    uint64_t target = interrupted ? srep.produced : opt.items;
    uint64_t expected = 0, buckets[BUCKETS] = {0};
    for (uint64_t id = 1; complete && id <= target; id++) {
        uint64_t d = item_digest(item_value(id));
        expected += d;
        buckets[bucket_of(d)]++;
    }
    bool checksum_ok = have_k && krep.checksum == expected;
    bool aggregate_ok =
        have_k && memcmp(buckets, krep.buckets, sizeof buckets) == 0;

    if (have_k)
        end_ns = krep.finished_ns;
    double elapsed_s = (double)(end_ns - start_ns) / 1e9;
    double rate = elapsed_s > 0 ? (double)krep.consumed / elapsed_s : 0;
    int64_t lost = (int64_t)srep.produced - (int64_t)krep.consumed;
    uint64_t retried = prep.retried + ts.retried;

    printf("pipeline: checksum 0x%016" PRIx64 ", expected 0x%016" PRIx64
           " (%s); buckets %s\n",
           krep.checksum, expected, checksum_ok ? "match" : "MISMATCH",
           aggregate_ok ? "match" : "MISMATCH");
    printf("pipeline: requests in flight at most %" PRIu64
           " (held back for credit at most %" PRIu64
           "), sink mailbox full %" PRIu64 " times, peak RSS %ld KiB\n",
           prep.inflight_peak, ts.held_peak, krep.full, peak_kib);
    printf("produced=%" PRIu64 " consumed=%" PRIu64 " lost=%" PRId64
           " retried=%" PRIu64 " duplicates=%" PRIu64 " invalid=%" PRIu64
           " malformed=%" PRIu64 " checksum_ok=%d aggregate_ok=%d complete=%d"
           " interrupted=%d workers_killed=%" PRIu64 " inflight_peak=%" PRIu64
           " sink_full=%" PRIu64 " peak_rss_kib=%ld elapsed_s=%.3f"
           " items_per_s=%.0f\n",
           srep.produced, krep.consumed, lost, retried, krep.duplicates,
           krep.invalid, prep.malformed, checksum_ok ? 1 : 0,
           aggregate_ok ? 1 : 0, complete ? 1 : 0, interrupted ? 1 : 0,
           srep.killed, prep.inflight_peak, krep.full, peak_kib, elapsed_s,
           rate);

    bool ok = run_rc == 0 && complete && srep.produced == target && lost == 0 &&
              krep.duplicates == 0 && krep.invalid == 0 &&
              prep.malformed == 0 && checksum_ok && aggregate_ok;
    /* Stopped by a signal: 128 + signal, as shells expect (the summary
     * says whether the orderly shutdown drained everything). */
    if (exit_code != 0)
        return exit_code;
    return ok ? 0 : 1;
}
