/* prodcons — producers and consumers over a bounded channel, with a
 * capacity limiter in front of a slow service.
 *
 * Design notes
 * ------------
 *
 *   source --spawns--> producer x P --put--> channel (capacity K)
 *                                                 | take, one at a time
 *                                                 v
 *   limiter (L) <--acquire/release-- consumer x C --CALL--> service
 *               ------GRANT--------->      |      <-RESULT- (D ms a call)
 *                                          v
 *   tally (the consumers' parent) <--DONE(item), CLOSED
 *
 *   - The channel (troupe/channel.h) is the only buffer between the two
 *     sides. A producer puts one item per message it handles, so when
 *     the channel is full the producer is muted (parked after that turn,
 *     never a thread) until the consumers have taken it down to half.
 *   - End of stream without a sentinel: each consumer takes one item at a
 *     time and stops on TR_TAG_CHANNEL_CLOSED, which every consumer gets
 *     once every producer has closed (or ended) and the channel is empty.
 *     A producer that opened late could find the stream already ended,
 *     so the source opens the channel before it starts any producer and
 *     closes its own hold once each producer has said it opened (its open
 *     was queued at the channel before that message left).
 *   - The service stands for an external system that tolerates only a
 *     few callers at once: each call takes D ms (a timer, no thread
 *     blocked). A consumer calls it only while it holds a permit of the
 *     capacity limiter (troupe/limiter.h) and releases the permit once
 *     its result came back, so the calls in progress, which the service
 *     counts, never exceed L. The limiter serves waiters in order and
 *     takes back the permit of a consumer that ends holding one.
 *   - --remote-consumers: the consumers run in a pool of worker processes
 *     (this program again, in worker mode). They find the channel, the
 *     limiter, the service and the tally of the main process by name
 *     (tr_name_register there, tr_main_lookup here) and use them exactly
 *     as local consumers do; each item crosses when its consumer takes
 *     it, and a consumer whose process dies counts as ended (its proxy
 *     ends; the limiter takes its permit back).
 *   - Ending: the tally is the consumers' parent; once they have all
 *     ended it ends the service, the limiter and the channel, and the run
 *     is over (tr_runtime_run returns when no actor is left). Ctrl-C
 *     stops everything in order; a consumer in the middle of a call
 *     finishes it first (on_cancel returns TR_DRAIN).
 *   - Checks: the tally marks each item in a bitmap (duplicates, items
 *     never put, items missing), counts the consumers that saw the end,
 *     and ends the run once every consumer has ended; the service
 *     records the most calls it had at once. "In the channel" is counted
 *     by the producers (before each put) and the consumers (when an item
 *     arrives; a remote consumer tells the tally), so channel_peak is the
 *     most items put and not yet taken: what the channel held plus what
 *     was on its way to a consumer (one at most per consumer). K is where
 *     backpressure starts, not a hard cap (a put never blocks or fails):
 *     a producer is muted after the put that finds the channel full, and
 *     puts the channel has not handled yet count against K too, so the
 *     channel holds about 2 K at most (troupe/channel.h), plus a few puts
 *     per producer at the start, when producers race a channel that has
 *     not run yet (and a system message, such as the channel's monitor,
 *     wakes a muted producer for a turn). channel_peak is reported, not
 *     part of the exit status. */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L /* isatty */
#endif

#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <troupe/troupe.h>

/* ---- parameters ---- */

#define DEFAULT_PRODUCERS 4u
#define DEFAULT_CONSUMERS 8u
#define DEFAULT_ITEMS 1000u
#define DEFAULT_CAPACITY 32u
#define DEFAULT_LIMIT 4u
#define DEFAULT_SERVICE_MS 1u
#define DEFAULT_PROCESSES 2u
#define MAX_ACTORS 1024u      /* producers, consumers */
#define MAX_TOTAL 100000000u  /* items in all: a 12.5 MB bitmap */
#define MAX_CAPACITY 1000000u /* channel */
#define MAX_SERVICE_MS 60000u
#define MAX_PROCESSES 256u /* tr_pool_start's limit */
#define MAX_THREADS 1024u
#define PROGRESS_PERIOD_MS 100

/* Names in the main process, for remote consumers (tr_main_lookup). */
#define NAME_CHANNEL "prodcons.channel"
#define NAME_LIMITER "prodcons.limiter"
#define NAME_SERVICE "prodcons.service"
#define NAME_TALLY "prodcons.tally"
/* The registered behaviour of a remote consumer. */
#define REMOTE_CONSUMER "prodcons.consumer"

enum {
    TAG_NEXT = 1, /* producer: put the next item */
    TAG_OPENED,   /* producer -> source: my open is queued */
    TAG_ITEM,     /* through the channel: u64 = producer * items + i */
    TAG_CALL,     /* consumer -> service: u64 = the item */
    TAG_SERVED,   /* service's timer: u64 = the call's slot */
    TAG_RESULT,   /* service -> consumer: u64 = the item */
    TAG_QUIT,     /* tally -> service: the run is over */
    TAG_TOOK,     /* remote consumer -> tally: an item arrived */
    TAG_DONE,     /* consumer -> tally: u64 = an item served */
    TAG_CLOSED,   /* consumer -> tally: it saw the end of the stream */
    TAG_TICK      /* tally: redraw the progress line */
};

/* Counters shared by the actors of the main process; main reads them
 * after tr_runtime_run has returned (its worker threads are joined).
 * Atomics: several actors write them from different worker threads;
 * relaxed everywhere, they order nothing, they only count. */
typedef struct shared {
    _Atomic uint64_t produced;    /* producers: items put */
    _Atomic int64_t in_channel;   /* put and not yet taken */
    _Atomic int64_t channel_peak; /* the most of in_channel */
    _Atomic uint32_t busy;        /* service: calls in progress */
    _Atomic uint32_t max_busy;    /* the most at once */
    /* Written by the tally alone, before it ends. */
    uint64_t consumed, duplicates, invalid, distinct, calls;
    uint32_t closed_seen, consumers_failed, producers_failed;
    bool tally_done;
    int64_t finished_ns;
} shared;

static void raise_peak(_Atomic int64_t *peak, int64_t v) {
    int64_t cur = atomic_load_explicit(peak, memory_order_relaxed);
    while (v > cur &&
           !atomic_compare_exchange_weak_explicit(
               peak, &cur, v, memory_order_relaxed, memory_order_relaxed))
        ;
}

static void raise_max(_Atomic uint32_t *max, uint32_t v) {
    uint32_t cur = atomic_load_explicit(max, memory_order_relaxed);
    while (v > cur &&
           !atomic_compare_exchange_weak_explicit(
               max, &cur, v, memory_order_relaxed, memory_order_relaxed))
        ;
}

/* ---- producers and their source ---- */

typedef struct producer {
    uint32_t id;
    uint64_t items; /* puts items id * items + 0 .. items-1 */
    tr_ref ch;
    shared *sh;
    uint64_t next;
} producer;

static int producer_start(tr_ctx *ctx, void *state) {
    producer *p = state;
    int rc = tr_channel_open(ctx, p->ch);
    if (rc == 0)
        rc = tr_send_tag(ctx, tr_parent(ctx), TAG_OPENED);
    return rc != 0 ? rc : tr_send_tag(ctx, tr_self(ctx), TAG_NEXT);
}

static int producer_handle(tr_ctx *ctx, void *state, tr_msg *msg) {
    producer *p = state;
    if (tr_msg_tag(msg) != TAG_NEXT)
        return TR_UNHANDLED;
    if (p->next == p->items) {
        int rc = tr_channel_close(ctx, p->ch);
        return rc != 0 ? rc : TR_STOP;
    }
    /* Counted before the put: a consumer may take the item before this
     * handler goes on. */
    int64_t now =
        atomic_fetch_add_explicit(&p->sh->in_channel, 1, memory_order_relaxed) +
        1;
    raise_peak(&p->sh->channel_peak, now);
    tr_msg *item =
        tr_msg_new_u64(TAG_ITEM, (uint64_t)p->id * p->items + p->next);
    int rc = item != NULL ? tr_channel_put(ctx, p->ch, &item) : TR_ENOMEM;
    if (rc != 0) {
        tr_msg_destroy(&item);
        atomic_fetch_sub_explicit(&p->sh->in_channel, 1, memory_order_relaxed);
        return rc;
    }
    atomic_fetch_add_explicit(&p->sh->produced, 1, memory_order_relaxed);
    p->next++;
    /* One put per message: a full channel mutes this producer right
     * after the put that found it full. */
    return tr_send_tag(ctx, tr_self(ctx), TAG_NEXT);
}

static const tr_behavior producer_behavior = {.name = "producer",
                                              .handle = producer_handle,
                                              .on_start = producer_start,
                                              .state_size = sizeof(producer)};

typedef struct source {
    uint32_t producers;
    uint64_t items;
    tr_ref ch;
    shared *sh;
    uint32_t opened, ended;
    bool closed;
} source;

static int source_close(tr_ctx *ctx, source *s) {
    if (s->closed)
        return 0;
    s->closed = true;
    return tr_channel_close(ctx, s->ch);
}

static int source_start(tr_ctx *ctx, void *state) {
    source *s = state;
    int rc = tr_channel_open(ctx, s->ch);
    for (uint32_t i = 0; rc == 0 && i < s->producers; i++) {
        producer p = {.id = i, .items = s->items, .ch = s->ch, .sh = s->sh};
        rc = tr_spawn(ctx, &producer_behavior, &p, sizeof p, NULL);
    }
    return rc;
}

static int source_handle(tr_ctx *ctx, void *state, tr_msg *msg) {
    source *s = state;
    if (tr_msg_tag(msg) != TAG_OPENED)
        return TR_UNHANDLED;
    /* Every producer's open is queued at the channel: our hold can go. */
    return ++s->opened == s->producers ? source_close(ctx, s) : 0;
}

static void source_child_exit(tr_ctx *ctx, void *state, const tr_exit *x) {
    source *s = state;
    if (x->reason != TR_EXIT_NORMAL) {
        s->sh->producers_failed++; /* only this actor writes it */
        fprintf(stderr, "prodcons: a producer ended: %s\n",
                tr_exit_reason_name(x->reason));
    }
    if (++s->ended == s->producers) {
        (void)source_close(ctx, s); /* one may have died before opening */
        tr_stop(ctx);
    }
}

static const tr_behavior source_behavior = {.name = "source",
                                            .handle = source_handle,
                                            .on_start = source_start,
                                            .on_child_exit = source_child_exit,
                                            .state_size = sizeof(source)};

/* ---- the service ---- */

/* Each call takes delay_ms; calls in progress are counted (shared->busy,
 * ->max_busy). A call's caller and item wait in a slot. */
typedef struct call_slot {
    tr_ref who;
    uint64_t item;
} call_slot;

typedef struct service {
    int64_t delay_ms;
    shared *sh;
    call_slot *slot;
    uint32_t nslots, cap;
    uint32_t *free_slots;
    uint32_t nfree;
    uint64_t calls;
} service;

static int service_handle(tr_ctx *ctx, void *state, tr_msg *msg) {
    service *s = state;
    switch (tr_msg_tag(msg)) {
    case TAG_CALL: {
        uint32_t i;
        if (s->nfree > 0) {
            i = s->free_slots[--s->nfree];
        } else {
            if (s->nslots == s->cap) {
                uint32_t ncap = s->cap ? s->cap * 2 : 16;
                call_slot *ns = realloc(s->slot, ncap * sizeof *ns);
                if (ns == NULL)
                    return TR_ENOMEM;
                s->slot = ns;
                uint32_t *nf = realloc(s->free_slots, ncap * sizeof *nf);
                if (nf == NULL)
                    return TR_ENOMEM;
                s->free_slots = nf;
                s->cap = ncap;
            }
            i = s->nslots++;
        }
        s->slot[i] = (call_slot){tr_msg_sender(msg), tr_msg_u64(msg)};
        s->calls++;
        uint32_t busy =
            atomic_fetch_add_explicit(&s->sh->busy, 1, memory_order_relaxed) +
            1;
        raise_max(&s->sh->max_busy, busy);
        tr_msg *t = tr_msg_new_u64(TAG_SERVED, i);
        int rc = t != NULL ? tr_send_after(tr_ctx_runtime(ctx), tr_self(ctx),
                                           s->delay_ms, &t, NULL)
                           : TR_ENOMEM;
        if (rc != 0)
            tr_msg_destroy(&t);
        return rc;
    }
    case TAG_SERVED: {
        uint64_t i = tr_msg_u64(msg);
        if (i >= s->nslots)
            return TR_EPROTO;
        call_slot c = s->slot[i];
        s->free_slots[s->nfree++] = (uint32_t)i;
        /* Not busy any more before the caller hears of it: it releases
         * its permit only then, so the count never runs past the limit. */
        atomic_fetch_sub_explicit(&s->sh->busy, 1, memory_order_relaxed);
        int rc = tr_send_u64(ctx, c.who, TAG_RESULT, c.item);
        /* A caller that is gone (its process died) needs no answer. */
        return rc == TR_ENOACTOR ? 0 : rc;
    }
    case TAG_QUIT:
        return TR_STOP;
    default:
        return TR_UNHANDLED;
    }
}

static void service_stop(tr_ctx *ctx, void *state, int reason) {
    (void)ctx;
    (void)reason;
    service *s = state;
    s->sh->calls = s->calls; /* read by main after the run */
    free(s->slot);
    free(s->free_slots);
}

static const tr_behavior service_behavior = {.name = "service",
                                             .handle = service_handle,
                                             .on_stop = service_stop,
                                             .state_size = sizeof(service)};

/* ---- consumers: local, or in worker processes ---- */

typedef struct consumer {
    uint32_t id;
    /* Local: given; remote: looked up by name at start (sh is NULL). */
    tr_ref ch, lim, svc, tally;
    shared *sh;
    uint64_t item; /* the one it works on */
    bool calling;  /* it holds a permit and its call is in progress */
    bool draining; /* cancelled: finish that call, then stop */
} consumer;

static int consumer_start(tr_ctx *ctx, void *state) {
    consumer *c = state;
    int rc = 0;
    if (c->sh == NULL &&
        ((rc = tr_main_lookup(ctx, NAME_CHANNEL, &c->ch)) != 0 ||
         (rc = tr_main_lookup(ctx, NAME_LIMITER, &c->lim)) != 0 ||
         (rc = tr_main_lookup(ctx, NAME_SERVICE, &c->svc)) != 0 ||
         (rc = tr_main_lookup(ctx, NAME_TALLY, &c->tally)) != 0))
        return rc;
    return tr_channel_take(ctx, c->ch);
}

static int consumer_handle(tr_ctx *ctx, void *state, tr_msg *msg) {
    consumer *c = state;
    int rc;
    switch (tr_msg_tag(msg)) {
    case TAG_ITEM: /* from the channel: ask for a permit first */
        if (c->draining)
            return TR_STOP; /* taken before the stop: it goes unserved */
        c->item = tr_msg_u64(msg);
        if (c->sh != NULL)
            atomic_fetch_sub_explicit(&c->sh->in_channel, 1,
                                      memory_order_relaxed);
        else if ((rc = tr_send_tag(ctx, c->tally, TAG_TOOK)) != 0)
            return rc;
        return tr_limiter_acquire(ctx, c->lim, c->item);
    case TR_TAG_LIMIT_GRANT:
        if (c->draining) /* no new call: the permit goes back as we end */
            return TR_STOP;
        c->calling = true;
        return tr_send_u64(ctx, c->svc, TAG_CALL, c->item);
    case TAG_RESULT:
        if (tr_msg_u64(msg) != c->item)
            return TR_EPROTO;
        c->calling = false;
        if ((rc = tr_limiter_release(ctx, c->lim)) != 0 ||
            (rc = tr_send_u64(ctx, c->tally, TAG_DONE, c->item)) != 0)
            return rc;
        return c->draining ? TR_STOP : tr_channel_take(ctx, c->ch);
    case TR_TAG_CHANNEL_CLOSED: /* the end of the stream */
        rc = tr_send_u64(ctx, c->tally, TAG_CLOSED, c->id);
        return rc != 0 ? rc : TR_STOP;
    default:
        return TR_UNHANDLED;
    }
}

/* Stopped (Ctrl-C, or the run ends early): a call in progress is
 * finished first, so the service never sees more than L calls, even
 * then: if the consumer ended holding its permit, the limiter would hand
 * the permit on while the service still works on its call. */
static int consumer_cancel(tr_ctx *ctx, void *state, int reason) {
    (void)ctx;
    (void)reason;
    consumer *c = state;
    c->draining = true;
    return c->calling ? TR_DRAIN : 0;
}

static const tr_behavior consumer_behavior = {.name = "consumer",
                                              .handle = consumer_handle,
                                              .on_start = consumer_start,
                                              .on_cancel = consumer_cancel,
                                              .state_size = sizeof(consumer)};

/* ---- the tally: consumers' parent, checks, progress, the end ---- */

typedef struct tally {
    uint32_t consumers, producers;
    uint64_t items, total; /* per producer; all */
    bool remote, live;
    tr_ref ch, lim, svc;
    shared *sh;
    uint8_t *seen; /* bitmap of items served */
    uint32_t ended;
    tr_timer_id tick;
    int64_t start_ns, last_ns;
    uint64_t last_consumed;
} tally;

static void tally_draw(tally *t, bool final) {
    int64_t now = tr_now_ns();
    shared *sh = t->sh;
    int64_t since = final ? t->start_ns : t->last_ns;
    uint64_t base = final ? 0 : t->last_consumed;
    double dt = (double)(now - since) / 1e9;
    double rate = dt > 0 ? (double)(sh->consumed - base) / dt : 0;
    fprintf(stderr,
            "\rprodcons: produced %" PRIu64 "/%" PRIu64 "  consumed %" PRIu64
            "  channel %" PRId64 " (peak %" PRId64 ")  service %" PRIu32
            " (max %" PRIu32 ")  %s%.0f items/s\033[K%s",
            atomic_load_explicit(&sh->produced, memory_order_relaxed), t->total,
            sh->consumed,
            atomic_load_explicit(&sh->in_channel, memory_order_relaxed),
            atomic_load_explicit(&sh->channel_peak, memory_order_relaxed),
            atomic_load_explicit(&sh->busy, memory_order_relaxed),
            atomic_load_explicit(&sh->max_busy, memory_order_relaxed),
            final ? "avg " : "", rate, final ? "\n" : "");
    fflush(stderr);
    t->last_ns = now;
    t->last_consumed = sh->consumed;
}

static int tally_start(tr_ctx *ctx, void *state) {
    tally *t = state;
    t->start_ns = t->last_ns = tr_now_ns();
    t->seen = calloc(t->total / 8 + 1, 1);
    if (t->seen == NULL)
        return TR_ENOMEM;
    int rc = 0;
    for (uint32_t i = 0; rc == 0 && i < t->consumers; i++) {
        if (t->remote) {
            consumer c = {.id = i};
            rc = tr_spawn_remote(ctx, REMOTE_CONSUMER, &c, sizeof c, NULL);
        } else {
            consumer c = {.id = i,
                          .ch = t->ch,
                          .lim = t->lim,
                          .svc = t->svc,
                          .tally = tr_self(ctx),
                          .sh = t->sh};
            rc = tr_spawn(ctx, &consumer_behavior, &c, sizeof c, NULL);
        }
    }
    if (rc == 0 && t->live)
        rc = tr_send_every(tr_ctx_runtime(ctx), tr_self(ctx),
                           PROGRESS_PERIOD_MS, TAG_TICK, &t->tick);
    return rc;
}

static int tally_handle(tr_ctx *ctx, void *state, tr_msg *msg) {
    tally *t = state;
    shared *sh = t->sh;
    (void)ctx;
    switch (tr_msg_tag(msg)) {
    case TAG_DONE: {
        uint64_t v = tr_msg_u64(msg);
        if (v >= t->total) {
            sh->invalid++;
            return 0;
        }
        uint8_t bit = (uint8_t)(1u << (v % 8));
        if (t->seen[v / 8] & bit) {
            sh->duplicates++;
            return 0;
        }
        t->seen[v / 8] |= bit;
        sh->distinct++;
        sh->consumed++;
        return 0;
    }
    case TAG_TOOK:
        atomic_fetch_sub_explicit(&sh->in_channel, 1, memory_order_relaxed);
        return 0;
    case TAG_CLOSED:
        sh->closed_seen++;
        return 0;
    case TAG_TICK:
        tally_draw(t, false);
        return 0;
    default:
        return TR_UNHANDLED;
    }
}

/* Every consumer has ended (after CLOSED, or failed): the run is over. */
static void tally_child_exit(tr_ctx *ctx, void *state, const tr_exit *x) {
    tally *t = state;
    if (x->reason != TR_EXIT_NORMAL) {
        t->sh->consumers_failed++;
        fprintf(stderr, "\rprodcons: a consumer ended: %s%s%s\033[K\n",
                tr_exit_reason_name(x->reason), x->text[0] ? ": " : "",
                x->text);
    }
    if (++t->ended < t->consumers)
        return;
    tr_runtime *rt = tr_ctx_runtime(ctx);
    if (t->tick.id != 0) {
        (void)tr_timer_cancel(rt, t->tick);
        t->tick.id = 0;
    }
    t->sh->finished_ns = tr_now_ns();
    t->sh->tally_done = true;
    if (t->live)
        tally_draw(t, true);
    /* The shared pieces go too, so the run ends (quiescence). */
    (void)tr_send_tag(ctx, t->svc, TAG_QUIT);
    (void)tr_cancel(rt, t->lim, TR_EXIT_CANCELLED, -1);
    (void)tr_cancel(rt, t->ch, TR_EXIT_CANCELLED, -1);
    tr_stop(ctx);
}

static void tally_stop(tr_ctx *ctx, void *state, int reason) {
    (void)ctx;
    (void)reason;
    tally *t = state;
    free(t->seen);
    t->seen = NULL;
}

static const tr_behavior tally_behavior = {.name = "tally",
                                           .handle = tally_handle,
                                           .on_start = tally_start,
                                           .on_stop = tally_stop,
                                           .on_child_exit = tally_child_exit,
                                           .state_size = sizeof(tally)};

/* ---- options ---- */

struct options {
    uint64_t producers, consumers, items, capacity, limit, service_ms,
        processes, threads;
    bool remote, quiet;
};

static void usage(FILE *out) {
    fprintf(out,
            "usage: prodcons [--producers P] [--consumers C] [--items N]\n"
            "                [--capacity K] [--limit L] [--service-ms D]\n"
            "                [--remote-consumers [--processes W]]\n"
            "                [--threads T] [--quiet]\n"
            "\n"
            "P producers put N items each into a channel of capacity K;\n"
            "C consumers take them one at a time until the channel says\n"
            "it is closed, and each item goes to a service that takes D ms\n"
            "a call and lets at most L calls in at once (a limiter).\n"
            "\n"
            "  --producers P       producers (default %u)\n"
            "  --consumers C       consumers (default %u)\n"
            "  --items N           items per producer (default %u)\n"
            "  --capacity K        channel capacity (default %u)\n"
            "  --limit L           service calls at once (default %u)\n"
            "  --service-ms D      a call's duration, ms (default %u)\n"
            "  --remote-consumers  consumers in worker processes\n"
            "  --processes W       worker processes for them (default %u)\n"
            "  --threads T         scheduler threads, 0 = online CPUs\n"
            "  --quiet             no progress line (also off when stderr\n"
            "                      is not a terminal)\n"
            "\n"
            "The last line of stdout is the summary; exit status 0 when\n"
            "every item was consumed exactly once, every consumer saw the\n"
            "end of the stream and the service never had more than L\n"
            "calls at once, 1 otherwise, 2 for invalid options, 130/143\n"
            "when interrupted.\n",
            DEFAULT_PRODUCERS, DEFAULT_CONSUMERS, DEFAULT_ITEMS,
            DEFAULT_CAPACITY, DEFAULT_LIMIT, DEFAULT_SERVICE_MS,
            DEFAULT_PROCESSES);
}

static bool parse_u64(const char *s, uint64_t max, uint64_t *out) {
    if (s == NULL || *s < '0' || *s > '9')
        return false;
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0' || v > max)
        return false;
    *out = (uint64_t)v;
    return true;
}

/* 0: run; 1: --help; -1: invalid (the reason is on stderr). */
static int parse_args(int argc, char **argv, struct options *o) {
    *o = (struct options){.producers = DEFAULT_PRODUCERS,
                          .consumers = DEFAULT_CONSUMERS,
                          .items = DEFAULT_ITEMS,
                          .capacity = DEFAULT_CAPACITY,
                          .limit = DEFAULT_LIMIT,
                          .service_ms = DEFAULT_SERVICE_MS};
    const struct {
        const char *name;
        uint64_t min, max, *value;
    } numeric[] = {{"--producers", 1, MAX_ACTORS, &o->producers},
                   {"--consumers", 1, MAX_ACTORS, &o->consumers},
                   {"--items", 1, MAX_TOTAL, &o->items},
                   {"--capacity", 1, MAX_CAPACITY, &o->capacity},
                   {"--limit", 1, MAX_ACTORS, &o->limit},
                   {"--service-ms", 0, MAX_SERVICE_MS, &o->service_ms},
                   {"--processes", 1, MAX_PROCESSES, &o->processes},
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
        if (strcmp(arg, "--remote-consumers") == 0) {
            o->remote = true;
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
            fprintf(stderr, "prodcons: unknown argument '%s'\n", arg);
            return -1;
        }
        const char *value = arg[len] == '=' ? arg + len + 1
                            : i + 1 < argc  ? argv[++i]
                                            : NULL;
        if (!parse_u64(value, numeric[k].max, numeric[k].value) ||
            *numeric[k].value < numeric[k].min) {
            fprintf(stderr,
                    "prodcons: %s needs a number in %" PRIu64 "..%" PRIu64 "\n",
                    numeric[k].name, numeric[k].min, numeric[k].max);
            return -1;
        }
    }
    if (o->processes != 0 && !o->remote) {
        fprintf(stderr, "prodcons: --processes needs --remote-consumers\n");
        return -1;
    }
    if (o->producers * o->items > MAX_TOTAL) {
        fprintf(stderr,
                "prodcons: --producers x --items is at most %u in all\n",
                MAX_TOTAL);
        return -1;
    }
    if (o->processes == 0)
        o->processes = DEFAULT_PROCESSES;
    return 0;
}

/* ---- main ---- */

static int fail(const char *what, int rc) {
    fprintf(stderr, "prodcons: %s: %s\n", what, tr_strerror(rc));
    return 1;
}

/* The runtime's log lines (a worker process died, ...) may come while the
 * progress line is on screen: each erases it first (the next tick
 * redraws it). */
static void log_above_progress(tr_log_level level, const char *line,
                               void *arg) {
    static const char *const names[] = {"error", "warn", "info", "debug"};
    (void)arg;
    fprintf(stderr, "\r\033[Ktroupe %s: %s\n",
            (unsigned)level < 4 ? names[level] : "log", line);
}

int main(int argc, char **argv) {
    /* Worker processes run this same program: the remote consumer must be
     * registered, and tr_worker_main called, before anything else (in a
     * worker process it runs the worker and never returns). */
    int rc = tr_register(REMOTE_CONSUMER, &consumer_behavior);
    if (rc != 0 || (rc = tr_worker_main(argc, argv)) != 0)
        return fail("worker setup", rc);

    struct options opt;
    int parsed = parse_args(argc, argv, &opt);
    if (parsed > 0) {
        usage(stdout);
        return 0;
    }
    if (parsed < 0) {
        fprintf(stderr, "prodcons: see prodcons --help\n");
        return 2;
    }
    uint64_t total = opt.producers * opt.items;

    shared *sh = calloc(1, sizeof *sh);
    if (sh == NULL)
        return fail("calloc", TR_ENOMEM);
    tr_runtime *rt = NULL;
    /* SIGINT/SIGTERM stop the run in order (every actor is cancelled);
     * the summary then shows what was done, and the status is 130/143. */
    tr_runtime_config cfg = {.workers = (unsigned)opt.threads,
                             .handle_signals = true};
    if ((rc = tr_runtime_create(&rt, &cfg)) != 0) {
        free(sh);
        return fail("tr_runtime_create", rc);
    }
    if (opt.remote &&
        (rc = tr_pool_start(
             rt, &(tr_pool_config){.processes = (unsigned)opt.processes})) !=
            0) {
        tr_runtime_destroy(&rt);
        free(sh);
        return fail("tr_pool_start", rc);
    }
    bool live = !opt.quiet && isatty(STDERR_FILENO);
    if (live)
        tr_log_set_sink(log_above_progress, NULL);

    /* The shared pieces, then the consumers' side (the tally spawns the
     * consumers), then the producers' side. */
    tr_ref ch, lim, svc, tal;
    service sv = {.delay_ms = (int64_t)opt.service_ms, .sh = sh};
    if ((rc = tr_runtime_channel_spawn(rt, (uint32_t)opt.capacity, &ch)) != 0 ||
        (rc = tr_runtime_limiter_spawn(rt, (uint32_t)opt.limit, &lim)) != 0 ||
        (rc = tr_runtime_spawn(rt, &service_behavior, &sv, sizeof sv, &svc)) !=
            0) {
        tr_runtime_destroy(&rt);
        free(sh);
        return fail("spawn", rc);
    }
    tally ta = {.consumers = (uint32_t)opt.consumers,
                .producers = (uint32_t)opt.producers,
                .items = opt.items,
                .total = total,
                .remote = opt.remote,
                .live = live,
                .ch = ch,
                .lim = lim,
                .svc = svc,
                .sh = sh};
    source so = {.producers = (uint32_t)opt.producers,
                 .items = opt.items,
                 .ch = ch,
                 .sh = sh};
    if ((rc = tr_runtime_spawn(rt, &tally_behavior, &ta, sizeof ta, &tal)) !=
            0 ||
        (opt.remote && ((rc = tr_name_register(rt, NAME_CHANNEL, ch)) != 0 ||
                        (rc = tr_name_register(rt, NAME_LIMITER, lim)) != 0 ||
                        (rc = tr_name_register(rt, NAME_SERVICE, svc)) != 0 ||
                        (rc = tr_name_register(rt, NAME_TALLY, tal)) != 0)) ||
        (rc = tr_runtime_spawn(rt, &source_behavior, &so, sizeof so, NULL)) !=
            0) {
        tr_runtime_destroy(&rt);
        free(sh);
        return fail("spawn", rc);
    }

    printf("prodcons: %" PRIu64 " producers x %" PRIu64
           " items -> channel (capacity %" PRIu64 ") -> %" PRIu64
           " consumers%s -> limiter (%" PRIu64 ") -> service (%" PRIu64
           " ms a call), %u scheduler threads\n",
           opt.producers, opt.items, opt.capacity, opt.consumers,
           opt.remote ? " in worker processes" : "", opt.limit, opt.service_ms,
           tr_runtime_workers(rt));
    if (opt.remote)
        printf("prodcons: consumers in %u worker processes reach the channel, "
               "the limiter and the service by name\n",
               tr_pool_size(rt));
    fflush(stdout);

    /* Runs until every actor has ended: the tally ends the shared pieces
     * once every consumer has. */
    int64_t start_ns = tr_now_ns();
    int run_rc = tr_runtime_run(rt);
    if (run_rc != 0)
        fprintf(stderr, "prodcons: tr_runtime_run: %s\n", tr_strerror(run_rc));
    int exit_code = tr_runtime_exit_code(rt);
    tr_runtime_destroy(&rt); /* stops the worker processes too */
    tr_log_set_sink(NULL, NULL);

    uint64_t produced = atomic_load(&sh->produced);
    uint32_t max_busy = atomic_load(&sh->max_busy);
    int64_t end_ns = sh->tally_done ? sh->finished_ns : tr_now_ns();
    double elapsed_s = (double)(end_ns - start_ns) / 1e9;
    double rate = elapsed_s > 0 ? (double)sh->consumed / elapsed_s : 0;
    uint64_t missing = total - sh->distinct;
    int64_t peak = atomic_load(&sh->channel_peak);
    bool ok = run_rc == 0 && sh->tally_done && produced == total &&
              sh->consumed == total && sh->duplicates == 0 &&
              sh->invalid == 0 && missing == 0 &&
              sh->closed_seen == opt.consumers && max_busy <= opt.limit &&
              sh->consumers_failed == 0 && sh->producers_failed == 0;
    printf("prodcons: %" PRIu64 " service calls, at most %" PRIu32
           " at once (limit %" PRIu64 "); at most %" PRId64
           " items put and not yet taken (capacity %" PRIu64 "); %s\n",
           sh->calls, max_busy, opt.limit, peak, opt.capacity,
           ok               ? "every item exactly once"
           : exit_code != 0 ? "interrupted"
                            : "FAILED");
    printf("produced=%" PRIu64 " consumed=%" PRIu64 " duplicates=%" PRIu64
           " missing=%" PRIu64 " invalid=%" PRIu64 " closed_seen=%" PRIu32
           "/%" PRIu64 " max_concurrent=%" PRIu32 " (limit %" PRIu64
           ") channel_peak=%" PRId64 " (capacity %" PRIu64
           ") elapsed_s=%.3f items_per_s=%.0f\n",
           produced, sh->consumed, sh->duplicates, missing, sh->invalid,
           sh->closed_seen, opt.consumers, max_busy, opt.limit, peak,
           opt.capacity, elapsed_s, rate);
    free(sh);
    if (exit_code != 0)
        return exit_code;
    return ok ? 0 : 1;
}
