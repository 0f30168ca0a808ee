/* Batchers (troupe/batch.h). The batcher moves each message it gets into
 * its current batch (tr__msg_move: the payload changes hands, nothing is
 * copied); a full batch, or the window's timer, sends the batch to the
 * target as one PTR message whose destructor frees the messages. Timers
 * carry the batch's sequence number, so a timer armed for a batch that
 * already left (full) is ignored. */
#include <stdlib.h>

#include "actors/msg.h"
#include "runtime/log.h"
#include "troupe/batch.h"
#include "troupe/error.h"
#include "troupe/lifecycle.h"
#include "troupe/timer.h"

#define BATCH_TICK 0xFFFF0711u

typedef struct tr_batch {
    uint32_t n;
    tr_msg *m[];
} tr_batch;

typedef struct batcher {
    tr_ref target;
    uint32_t max_n;
    int64_t window_ms;
    uint64_t seq; /* the current batch's number */
    tr_batch *cur;
} batcher;

static void batch_free(void *p) {
    tr_batch *b = p;
    for (uint32_t i = 0; i < b->n; i++)
        tr__msg_free(b->m[i]);
    free(b);
}

static int flush(tr_ctx *ctx, batcher *s) {
    tr_batch *b = s->cur;
    if (b == NULL || b->n == 0)
        return 0;
    s->cur = NULL;
    s->seq++;
    tr_msg *m = tr_msg_new_ptr(TR_TAG_BATCH, b, sizeof *b, batch_free);
    if (m == NULL) {
        batch_free(b);
        return TR_ENOMEM;
    }
    int rc = tr_send(ctx, s->target, &m);
    if (rc != 0)
        tr_msg_destroy(&m); /* frees the batch */
    return rc;
}

static int batcher_handle(tr_ctx *ctx, void *state, tr_msg *msg) {
    batcher *s = state;
    if (tr_msg_tag(msg) == BATCH_TICK) {
        if (tr_msg_u64(msg) == s->seq)
            return flush(ctx, s);
        return 0; /* that batch left already */
    }
    if (tr_msg_tag(msg) == TR_TAG_DOWN)
        return TR_STOP; /* the target ended */
    if (s->cur == NULL) {
        s->cur = malloc(sizeof *s->cur + s->max_n * sizeof(tr_msg *));
        if (s->cur == NULL)
            return TR_ENOMEM;
        s->cur->n = 0;
        if (s->window_ms > 0) {
            tr_msg *t = tr_msg_new_u64(BATCH_TICK, s->seq);
            if (t == NULL || tr_send_after(tr_ctx_runtime(ctx), tr_self(ctx),
                                           s->window_ms, &t, NULL) != 0) {
                tr_msg_destroy(&t);
                return TR_ENOMEM;
            }
        }
    }
    tr_msg *moved = tr__msg_move(msg);
    if (moved == NULL)
        return TR_ENOMEM;
    s->cur->m[s->cur->n++] = moved;
    return s->cur->n == s->max_n ? flush(ctx, s) : 0;
}

static int batcher_start(tr_ctx *ctx, void *state) {
    batcher *s = state;
    uint64_t mon;
    return tr_monitor(ctx, s->target, &mon);
}

static void batcher_stop(tr_ctx *ctx, void *state, int reason) {
    (void)reason;
    batcher *s = state;
    if (ctx != NULL && s->cur != NULL && flush(ctx, s) == 0)
        return;
    if (s->cur != NULL)
        batch_free(s->cur);
    s->cur = NULL;
}

static const tr_behavior batcher_behavior = {.name = "troupe.batcher",
                                             .handle = batcher_handle,
                                             .on_start = batcher_start,
                                             .on_stop = batcher_stop,
                                             .state_size = sizeof(batcher)};

static int spawn(tr_runtime *rt, tr_ctx *ctx, tr_ref target, uint32_t max_n,
                 int64_t window_ms, tr_ref *out) {
    if (max_n == 0 || max_n > (1u << 20) || window_ms < 0)
        return TR_EINVAL;
    batcher b = {.target = target, .max_n = max_n, .window_ms = window_ms};
    return ctx != NULL
               ? tr_spawn(ctx, &batcher_behavior, &b, sizeof b, out)
               : tr_runtime_spawn(rt, &batcher_behavior, &b, sizeof b, out);
}

TR_API int tr_batcher_spawn(tr_ctx *ctx, tr_ref target, uint32_t max_n,
                            int64_t window_ms, tr_ref *out) {
    if (ctx == NULL)
        return TR_EINVAL;
    return spawn(NULL, ctx, target, max_n, window_ms, out);
}

TR_API int tr_runtime_batcher_spawn(tr_runtime *rt, tr_ref target,
                                    uint32_t max_n, int64_t window_ms,
                                    tr_ref *out) {
    if (rt == NULL)
        return TR_EINVAL;
    return spawn(rt, NULL, target, max_n, window_ms, out);
}

static const tr_batch *batch_of(const tr_msg *m) {
    if (m == NULL || tr_msg_tag(m) != TR_TAG_BATCH ||
        tr_msg_kind(m) != TR_PAYLOAD_PTR)
        return NULL;
    return m->u.p.ptr;
}

TR_API uint32_t tr_batch_count(const tr_msg *batch) {
    const tr_batch *b = batch_of(batch);
    return b != NULL ? b->n : 0;
}

TR_API const tr_msg *tr_batch_get(const tr_msg *batch, uint32_t i) {
    const tr_batch *b = batch_of(batch);
    return b != NULL && i < b->n ? b->m[i] : NULL;
}
