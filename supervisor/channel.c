/* Channels (troupe/channel.h). The channel actor keeps a FIFO of items
 * (messages moved in: tr__msg_move), a FIFO of consumers waiting for one,
 * and its producers (monitored: one that ends counts as closed). With
 * `capacity` items buffered it marks itself HELD (actors/mute.c): its
 * producers are muted until the buffer is down to half; remote ones
 * (their items arrive from the link, which is never muted) get no credit
 * meanwhile (transport/link.c), which mutes them in their process.
 * HELD needs the channel to run; its mailbox is bounded at `capacity`
 * too (FULL at the put, bounded.c), so producers that outrun a channel
 * not yet scheduled (a start, a busy machine) are muted as well: the
 * channel never holds much more than twice its capacity. */
#include <stdlib.h>

#include "actors/system.h"
#include "runtime/grow.h"
#include "runtime/ring.h"
#include "supervisor/channel_int.h"
#include "troupe/bounded.h"
#include "troupe/channel.h"
#include "troupe/lifecycle.h"

typedef struct producer_ent {
    tr_ref who;
    uint64_t mon;
} producer_ent;

typedef struct channel {
    uint32_t capacity;
    bool opened, held;
    tr__ring items;  /* tr_msg * */
    tr__ring takers; /* consumers' ref ids (uint64_t) */
    producer_ent *p;
    uint32_t np, capp;
} channel;

static bool closed(const channel *c) { return c->opened && c->np == 0; }

/* Hands items to waiting consumers; at the end of the stream, CLOSED. */
static void serve(tr_ctx *ctx, channel *c) {
    tr_runtime *rt = tr_ctx_runtime(ctx);
    while (c->takers.n > 0 && c->items.n > 0) {
        tr_ref to;
        tr__ring_pop(&c->takers, &to.id, sizeof to.id);
        tr_msg *m = *(tr_msg **)tr__ring_front(&c->items, sizeof m);
        if (tr__send(rt, ctx, to, m) != 0)
            continue; /* that consumer is gone: the next one gets it */
        tr__ring_pop(&c->items, NULL, sizeof m);
    }
    while (closed(c) && c->items.n == 0 && c->takers.n > 0) {
        tr_ref to;
        tr__ring_pop(&c->takers, &to.id, sizeof to.id);
        (void)tr_send_tag(ctx, to, TR_TAG_CHANNEL_CLOSED);
    }
    bool full = c->items.n >= c->capacity;
    if (full != c->held && (full || c->items.n <= c->capacity / 2)) {
        c->held = full;
        (void)tr__overload_set(rt, ctx, tr_self(ctx), full);
    }
}

static void producer_gone(tr_ctx *ctx, channel *c, uint32_t i) {
    if (c->p[i].mon != 0)
        (void)tr_demonitor(ctx, c->p[i].mon);
    c->p[i] = c->p[--c->np];
}

static int channel_handle(tr_ctx *ctx, void *state, tr_msg *msg) {
    channel *c = state;
    tr_ref who = tr_msg_sender(msg);
    switch (tr_msg_tag(msg)) {
    case TR__CH_OPEN:
        if (c->np == c->capp &&
            !tr__grow((void **)&c->p, &c->capp, c->np + 1, sizeof *c->p, 4))
            return TR_ENOMEM;
        c->p[c->np] = (producer_ent){.who = who};
        if (tr_monitor(ctx, who, &c->p[c->np].mon) != 0)
            c->p[c->np].mon = 0;
        c->np++;
        c->opened = true;
        return 0;
    case TR__CH_CLOSE:
        for (uint32_t i = 0; i < c->np; i++)
            if (tr_ref_eq(c->p[i].who, who)) {
                producer_gone(ctx, c, i);
                break;
            }
        serve(ctx, c);
        return 0;
    case TR__CH_TAKE:
        if (!tr__ring_push(&c->takers, &who.id, sizeof who.id))
            return TR_ENOMEM;
        serve(ctx, c);
        return 0;
    case TR_TAG_DOWN: { /* a producer ended: closed for it */
        tr_exit x;
        if (tr_msg_exit(msg, &x) == 0)
            for (uint32_t i = 0; i < c->np; i++)
                if (c->p[i].mon == x.id) {
                    c->p[i].mon = 0;
                    producer_gone(ctx, c, i);
                    break;
                }
        serve(ctx, c);
        return 0;
    }
    default: { /* an item */
        if (tr_msg_tag(msg) >= TR_TAG_SYSTEM)
            return TR_UNHANDLED;
        tr_msg *m = tr__msg_move(msg);
        if (m == NULL)
            return TR_ENOMEM;
        if (!tr__ring_push(&c->items, &m, sizeof m)) {
            tr__msg_free(m);
            return TR_ENOMEM;
        }
        serve(ctx, c);
        return 0;
    }
    }
}

static void channel_stop(tr_ctx *ctx, void *state, int reason) {
    (void)ctx;
    (void)reason;
    channel *c = state;
    while (c->items.n > 0) {
        tr_msg *m;
        tr__ring_pop(&c->items, &m, sizeof m);
        tr__msg_free(m);
    }
    tr__ring_free(&c->items);
    tr__ring_free(&c->takers);
    free(c->p);
}

static const tr_behavior channel_behavior = {.name = "troupe.channel",
                                             .handle = channel_handle,
                                             .on_stop = channel_stop,
                                             .state_size = sizeof(channel)};

TR_API int tr_channel_spawn(tr_ctx *ctx, uint32_t capacity, tr_ref *out) {
    if (ctx == NULL || capacity == 0)
        return TR_EINVAL;
    channel c = {.capacity = capacity};
    return tr_spawn_bounded(ctx, &channel_behavior, &c, sizeof c,
                            &(tr_mailbox_limit){.max_msgs = capacity}, out);
}

TR_API int tr_runtime_channel_spawn(tr_runtime *rt, uint32_t capacity,
                                    tr_ref *out) {
    if (rt == NULL || capacity == 0)
        return TR_EINVAL;
    channel c = {.capacity = capacity};
    return tr_runtime_spawn_bounded(rt, &channel_behavior, &c, sizeof c,
                                    &(tr_mailbox_limit){.max_msgs = capacity},
                                    out);
}

TR_API int tr_channel_open(tr_ctx *ctx, tr_ref ch) {
    return ctx != NULL ? tr_send_tag(ctx, ch, TR__CH_OPEN) : TR_ENOCTX;
}

TR_API int tr_channel_put(tr_ctx *ctx, tr_ref ch, tr_msg **item) {
    if (ctx == NULL)
        return TR_ENOCTX;
    if (item == NULL || *item == NULL || tr_msg_tag(*item) >= TR_TAG_SYSTEM)
        return TR_EINVAL;
    return tr_send(ctx, ch, item);
}

TR_API int tr_channel_close(tr_ctx *ctx, tr_ref ch) {
    return ctx != NULL ? tr_send_tag(ctx, ch, TR__CH_CLOSE) : TR_ENOCTX;
}

TR_API int tr_channel_take(tr_ctx *ctx, tr_ref ch) {
    return ctx != NULL ? tr_send_tag(ctx, ch, TR__CH_TAKE) : TR_ENOCTX;
}
