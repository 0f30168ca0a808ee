/* Design notes
 * ------------
 * Slots: actors live in 64-byte slots inside 256 KiB chunks aligned to
 * their size; chunks are never freed while the runtime lives. A tr_ref is
 * (generation << 32 | index + 1). A send checks the slot's live_gen against
 * the reference's generation, so a dead actor is a clean TR_ENOACTOR, and a
 * message that races with the death carries a target_gen that no longer
 * matches: the worker drops it as a dead letter (counted, payload freed).
 *
 * Incarnations start through the mailbox: spawn pushes a START message
 * carrying the behaviour and state, so the fields of a slot are only ever
 * written by the thread running it. A slot freed at death can therefore be
 * reused at once, even while late messages still sit in its mailbox or the
 * slot is still queued to run: they are dead letters for the old
 * generation, and START installs the new one in queue order.
 *
 * Turns: a worker pops at most cfg.batch messages, then tries to mark the
 * mailbox empty; if messages arrived meanwhile the actor stays runnable
 * (mailbox.h explains why it can never be run by two threads). */
#include <stdlib.h>
#include <string.h>

#include "actors/system.h"
#include "runtime/log.h"
#include "runtime/platform.h"
#include "runtime/pool.h"

static _Atomic uint64_t dead_letter_log_count;

tr__actor *tr__slot_lookup(tr_runtime *rt, uint64_t id) {
    uint32_t low = (uint32_t)id;
    if (low == 0)
        return NULL;
    uint32_t index = low - 1;
    /* Relaxed: a slot beyond nslots has no chunk yet or is not handed out;
     * the acquire on the chunk pointer below publishes its initialization. */
    if (index >= atomic_load_explicit(&rt->nslots, memory_order_relaxed) ||
        (index >> TR__CHUNK_SHIFT) >= TR__MAX_CHUNKS ||
        (index & (TR__CHUNK_SLOTS - 1)) == 0)
        return NULL;
    tr__actor *chunk = atomic_load_explicit(
        &rt->chunks[index >> TR__CHUNK_SHIFT], memory_order_acquire);
    if (chunk == NULL)
        return NULL;
    return &chunk[index & (TR__CHUNK_SLOTS - 1)];
}

static tr__actor *new_chunk(uint32_t chunk_no) {
    tr__actor *c = aligned_alloc(TR__CHUNK_BYTES, TR__CHUNK_BYTES);
    /* depth[] then mflags[], one allocation. */
    _Atomic uint32_t *depth = calloc(
        1, TR__CHUNK_SLOTS * (sizeof *depth + sizeof(_Atomic uint8_t)));
    if (c == NULL || depth == NULL) {
        free(c);
        free(depth);
        return NULL;
    }
    memset(c, 0, TR__CHUNK_BYTES);
    ((tr__chunk_head *)c)->chunk_no = chunk_no;
    ((tr__chunk_head *)c)->depth = depth;
    ((tr__chunk_head *)c)->mflags = (_Atomic uint8_t *)(depth + TR__CHUNK_SLOTS);
    for (uint32_t i = 1; i < TR__CHUNK_SLOTS; i++) {
        tr__actor *a = &c[i];
        tr__mailbox_init(&a->mb, &a->stub, false);
        atomic_store_explicit(&a->live_gen, TR__GEN_DEAD, memory_order_relaxed);
    }
    return c;
}

/* Bump-allocates a never-used slot index; 0 on failure. */
static uint32_t slot_bump(tr_runtime *rt) {
    for (;;) {
        uint32_t idx =
            atomic_fetch_add_explicit(&rt->nslots, 1, memory_order_relaxed);
        uint32_t cno = idx >> TR__CHUNK_SHIFT;
        if (cno >= TR__MAX_CHUNKS)
            return 0;
        if ((idx & (TR__CHUNK_SLOTS - 1)) == 0)
            continue; /* chunk header */
        if (atomic_load_explicit(&rt->chunks[cno], memory_order_acquire) ==
            NULL) {
            pthread_mutex_lock(&rt->slots_lock);
            if (atomic_load_explicit(&rt->chunks[cno], memory_order_relaxed) ==
                NULL) {
                tr__actor *c = new_chunk(cno);
                if (c == NULL) {
                    pthread_mutex_unlock(&rt->slots_lock);
                    return 0;
                }
                /* Release: slot initialization is visible to lookups. */
                atomic_store_explicit(&rt->chunks[cno], c,
                                      memory_order_release);
            }
            pthread_mutex_unlock(&rt->slots_lock);
        }
        return idx;
    }
}

static bool push_index(uint32_t **arr, uint32_t *n, uint32_t *cap,
                       uint32_t idx) {
    if (*n == *cap) {
        uint32_t ncap = *cap ? *cap * 2 : 256;
        uint32_t *na = realloc(*arr, ncap * sizeof **arr);
        if (na == NULL)
            return false;
        *arr = na;
        *cap = ncap;
    }
    (*arr)[(*n)++] = idx;
    return true;
}

static uint32_t slot_alloc(tr_runtime *rt, tr_ctx *ctx) {
    if (ctx != NULL && ctx->nfree > 0)
        return ctx->free_slots[--ctx->nfree];
    uint32_t idx = 0;
    pthread_mutex_lock(&rt->slots_lock);
    if (rt->ngfree > 0) {
        idx = rt->gfree[--rt->ngfree];
        /* Take a batch so the next spawns on this worker stay lock-free. */
        while (ctx != NULL && rt->ngfree > 0 && ctx->nfree < 128 &&
               push_index(&ctx->free_slots, &ctx->nfree, &ctx->capfree,
                          rt->gfree[rt->ngfree - 1]))
            rt->ngfree--;
    }
    pthread_mutex_unlock(&rt->slots_lock);
    return idx != 0 ? idx : slot_bump(rt);
}

static void slot_release(tr_runtime *rt, tr_ctx *ctx, uint32_t idx) {
    if (ctx != NULL && ctx->w != NULL && ctx->nfree < 8192 &&
        push_index(&ctx->free_slots, &ctx->nfree, &ctx->capfree, idx))
        return;
    pthread_mutex_lock(&rt->slots_lock);
    /* On allocation failure the slot is leaked (never reused), not lost
     * memory: chunks are freed at destroy. */
    (void)push_index(&rt->gfree, &rt->ngfree, &rt->capgfree, idx);
    pthread_mutex_unlock(&rt->slots_lock);
}

static int spawn_locked(tr_runtime *rt, tr_ctx *ctx, const tr_behavior *beh,
                        const void *init, size_t init_len, tr_ref *out,
                        struct tr_inbox *inbox, tr_ref parent);

int tr__spawn(tr_runtime *rt, tr_ctx *ctx, const tr_behavior *beh,
              const void *init, size_t init_len, tr_ref *out,
              struct tr_inbox *inbox, tr_ref parent) {
    if (rt == NULL)
        return TR_EINVAL;
    if (ctx != NULL && ctx->w != NULL)
        return spawn_locked(rt, ctx, beh, init, init_len, out, inbox, parent);
    /* From outside the workers: guarded like a foreign send (send.c). */
    if (!tr__foreign_enter(rt))
        return TR_ESTOPPED;
    int rc = spawn_locked(rt, ctx, beh, init, init_len, out, inbox, parent);
    tr__foreign_leave(rt);
    return rc;
}

static int spawn_locked(tr_runtime *rt, tr_ctx *ctx, const tr_behavior *beh,
                        const void *init, size_t init_len, tr_ref *out,
                        struct tr_inbox *inbox, tr_ref parent) {
    if (rt == NULL || beh == NULL || (beh->handle == NULL && inbox == NULL) ||
        (init == NULL && init_len > 0) || init_len > beh->state_size)
        return TR_EINVAL;
    if (atomic_load_explicit(&rt->stopping, memory_order_acquire))
        return TR_ESTOPPED;
    /* Only uncounted system actors (inbox, root, link) have no owner. */
    bool system = parent.id == UINT64_MAX; /* tr__spawn_system */
    bool counted = inbox == NULL && beh != &tr__root_behavior && !system;
    if (counted && parent.id != 0 &&
        (ctx == NULL || ctx->cur == NULL || ctx->cur->ext == NULL
             ? false
             : ctx->cur->ext->phase == TR__PH_STOPPING))
        return TR_ESTATE; /* a stopping actor cannot take new children */
    void *state = inbox;
    if (inbox == NULL && beh->state_size > 0) {
        state = calloc(1, beh->state_size);
        if (state == NULL)
            return TR_ENOMEM;
        if (init_len > 0)
            memcpy(state, init, init_len);
    }
    tr_msg *start = tr__msg_alloc(0, TR_PAYLOAD_NONE);
    uint32_t idx = start != NULL ? slot_alloc(rt, ctx) : 0;
    if (idx == 0) {
        if (start != NULL)
            tr__msg_free(start);
        if (inbox == NULL)
            free(state);
        return TR_ENOMEM;
    }
    tr__actor *a = tr__slot_lookup(rt, (uint64_t)idx + 1);
    uint32_t gen =
        (atomic_load_explicit(&a->live_gen, memory_order_relaxed) + 1) &
        ~TR__GEN_DEAD;
    if (gen == 0)
        gen = 1;
    start->flags = TR__F_START;
    tr__set_magic(start, TR__MSG_QUEUED);
    start->target_gen = gen;
    start->u.start.beh = beh;
    start->u.start.state = state;
    start->sender = parent;
    if (counted) {
        if (ctx != NULL && ctx->w != NULL)
            atomic_store_explicit(
                &ctx->st.spawned,
                atomic_load_explicit(&ctx->st.spawned, memory_order_relaxed) +
                    1,
                memory_order_relaxed);
        else
            atomic_fetch_add_explicit(&rt->foreign_spawned, 1,
                                      memory_order_relaxed);
    }
    /* Release: a sender that sees the new generation also sees the slot
     * state the previous incarnation left (it acquires live_gen). */
    /* System actors are never muted: a sender muted on one cannot be part
     * of a cycle of muted actors (mute.c). Set before the release below. */
    uint8_t mf = system ? TR__MF_SYSTEM : 0;
    const struct tr_mailbox_limit *lim = tr__bound_pending();
    if (lim != NULL && !system && inbox == NULL) {
        if (tr__bound_install(a, lim) == 0)
            mf |= TR__MF_BOUNDED;
        else
            tr__log(TR_LOG_ERROR, "spawn: out of memory for a bounded "
                                  "mailbox: spawned unbounded");
    }
    atomic_store_explicit(tr__mflags_of(a), mf, memory_order_relaxed);
    atomic_store_explicit(&a->live_gen, gen, memory_order_release);
    tr_ref ref = tr__make_ref(idx, gen);
    if (out != NULL)
        *out = ref;
    if (rt->track_depth)
        atomic_fetch_add_explicit(tr__depth_of(a), 1, memory_order_relaxed);
    /* START goes first: a stop the (root) parent sends as soon as it
     * knows the child must find the START ahead of it in the mailbox, or
     * it would be dropped as a dead letter and the child never stopped.
     * A child spawned from a handler is recorded before its parent's turn
     * ends, so its exit always finds it in the parent's list. */
    if (tr__mailbox_push(&a->mb, &start->node))
        tr__sched_push(&rt->sched, ctx != NULL ? ctx->w : NULL, a);
    if (counted)
        tr__adopt(rt, parent.id != 0 ? ctx : NULL, ref);
    return 0;
}

TR_API int tr_spawn(tr_ctx *ctx, const tr_behavior *beh, const void *init,
                    size_t init_len, tr_ref *out) {
    if (ctx == NULL)
        return TR_EINVAL;
    if (ctx->shutdown)
        return TR_ESTOPPED;
    if (ctx->cur == NULL)
        return TR_ENOCTX;
    return tr__spawn(ctx->rt, ctx, beh, init, init_len, out, NULL, ctx->self);
}

int tr__spawn_system(tr_runtime *rt, const tr_behavior *beh, const void *init,
                     size_t init_len, tr_ref *out) {
    /* parent UINT64_MAX marks "system": see spawn_locked. */
    return tr__spawn(rt, NULL, beh, init, init_len, out, NULL,
                     (tr_ref){UINT64_MAX});
}

TR_API int tr_runtime_spawn(tr_runtime *rt, const tr_behavior *beh,
                            const void *init, size_t init_len, tr_ref *out) {
    tr__worker *w = tr__sched_current();
    tr_ctx *ctx = (w != NULL && rt != NULL && w->sched == &rt->sched)
                      ? (tr_ctx *)w->user
                      : NULL;
    return tr__spawn(rt, ctx, beh, init, init_len, out, NULL, TR_REF_NONE);
}

static inline void bump(_Atomic uint64_t *c) {
    /* Owner-only counter: a relaxed load+store is enough (readers only
     * need an eventually consistent sum). */
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + 1,
                          memory_order_relaxed);
}

static _Atomic uint64_t unhandled_log_count, mailbox_log_count;

static void count_unhandled(tr_ctx *ctx, tr__actor *a, tr_msg *m) {
    bump(&ctx->st.unhandled);
    if (ctx->rt->debug)
        tr__log_sampled(&unhandled_log_count, TR_LOG_WARN,
                        "debug: actor %s (slot %u) did not handle a message "
                        "with tag 0x%x",
                        a->beh->name ? a->beh->name : "?", tr__slot_index(a),
                        m->tag);
}

/* Debug mode: the handler about to run, published for the monitor. */
static void debug_enter(tr_ctx *ctx, const tr_behavior *beh) {
    atomic_store_explicit(&ctx->dbg_beh, beh, memory_order_relaxed);
    /* Release: the monitor that reads a start time also reads beh. */
    atomic_store_explicit(&ctx->dbg_since, tr__now_ns(), memory_order_release);
}

static void debug_leave(tr_ctx *ctx, tr__actor *a, uint32_t tag) {
    int64_t since = atomic_load_explicit(&ctx->dbg_since, memory_order_relaxed);
    atomic_store_explicit(&ctx->dbg_since, 0, memory_order_relaxed);
    int64_t took = tr__now_ns() - since;
    if (took > ctx->rt->debug_block_ns)
        tr__log(TR_LOG_WARN,
                "debug: actor %s (slot %u) blocked worker %u for %lld ms "
                "handling tag 0x%x",
                a->beh && a->beh->name ? a->beh->name : "?", tr__slot_index(a),
                ctx->w->index, (long long)(took / 1000000), tag);
}

static void debug_mailbox(tr_ctx *ctx, tr__actor *a) {
    uint32_t d = atomic_load_explicit(tr__depth_of(a), memory_order_relaxed);
    if (d > ctx->rt->debug_mailbox_warn && a->beh != NULL)
        tr__log_sampled(&mailbox_log_count, TR_LOG_WARN,
                        "debug: mailbox of actor %s (slot %u) holds %u "
                        "messages",
                        a->beh->name ? a->beh->name : "?", tr__slot_index(a),
                        d);
}

/* Monitor hook (reactor thread, every ~1 ms): names a handler that is
 * still blocking its worker past the threshold, once per call. */
void tr__debug_monitor(tr_runtime *rt) {
    int64_t now = tr__now_ns();
    for (unsigned i = 0; i < rt->cfg.workers; i++) {
        tr_ctx *c = &rt->ctxs[i];
        int64_t since =
            atomic_load_explicit(&c->dbg_since, memory_order_acquire);
        if (since == 0 || since == c->dbg_reported ||
            now - since <= rt->debug_block_ns)
            continue;
        const tr_behavior *beh =
            atomic_load_explicit(&c->dbg_beh, memory_order_relaxed);
        c->dbg_reported = since;
        tr__log(TR_LOG_WARN,
                "debug: worker %u is blocked in a handler of actor %s for "
                "%lld ms so far",
                i, beh && beh->name ? beh->name : "?",
                (long long)((now - since) / 1000000));
    }
}

/* A message that will never be handled. A request among them is failed
 * back to its requester (TR_TAG_REQUEST_FAILED), unless the requester has
 * given up on it already (then it would only be a late reply). */
static void drop_unhandled(tr_ctx *ctx, tr__actor *a, tr_msg *m,
                          bool requester_waits) {
    bump(&ctx->st.dead_letters);
    if (requester_waits)
        tr__request_fail(ctx->rt, ctx, m, TR_ENOACTOR);
    if (tr__log_enabled(TR_LOG_DEBUG))
        tr__log_sampled(&dead_letter_log_count, TR_LOG_DEBUG,
                        "dead letter: tag 0x%x to slot %u gen %u", m->tag,
                        tr__slot_index(a), m->target_gen);
    tr__msg_release_payload(m);
}

/* Frees the ended incarnation of a and releases its slot. Runs on the
 * worker that runs a, after tr__finish (on_stop + notifications). */
void tr__die(tr_ctx *ctx, tr__actor *a) {
    bool counted = a->beh != &tr__inbox_behavior &&
                   a->beh != &tr__root_behavior &&
                   !(a->ext != NULL && a->ext->system);
    free(a->state);
    tr__ext_free(ctx->rt, a);
    a->beh = NULL;
    a->state = NULL;
    uint32_t gen = a->run_gen & ~TR__STUB_QUEUED;
    a->run_gen &= TR__STUB_QUEUED;
    /* Actors muted on this one go on (nobody relieves a dead actor). */
    if (atomic_exchange_explicit(tr__mflags_of(a), 0, memory_order_seq_cst) &
        TR__MF_OVERLOADED)
        tr__mute_release(ctx->rt, ctx, tr__make_ref(tr__slot_index(a), gen).id);
    /* Release: senders that see DEAD see nothing newer they could race.
     * This also clears a KILL bit. */
    atomic_store_explicit(&a->live_gen, gen | TR__GEN_DEAD,
                          memory_order_release);
    if (counted)
        bump(&ctx->st.ended);
    slot_release(ctx->rt, ctx, tr__slot_index(a));
}

/* After a handler or hook: ends the actor if it asked to. Returns true if
 * it did (the actor is stopping or gone). */
static bool after_callback(tr_ctx *ctx, tr__actor *a, int rc) {
    if (ctx->fail_code != 0) {
        rc = ctx->fail_code;
        ctx->fail_code = 0;
    }
    if (rc == 0 && !ctx->stop_req)
        return false;
    ctx->stop_req = false;
    int reason = rc < 0 ? rc : TR_EXIT_NORMAL;
    /* A drained actor that now stops ends with the reason it was
     * cancelled with (its parent and monitors learn why it stopped). */
    if (reason == TR_EXIT_NORMAL && a->ext != NULL &&
        a->ext->phase == TR__PH_DRAINING)
        reason = a->ext->reason;
    tr__begin_stop(ctx, a, reason);
    return true;
}

static void set_current(tr_ctx *ctx, tr__actor *a) {
    ctx->cur = a;
    ctx->self = tr__make_ref(tr__slot_index(a), a->run_gen & ~TR__STUB_QUEUED);
    ctx->stop_req = false;
    ctx->fail_code = 0;
}

static void start_incarnation(tr_ctx *ctx, tr__actor *a, tr_msg *m) {
    a->beh = m->u.start.beh;
    a->run_gen = m->target_gen | (a->run_gen & TR__STUB_QUEUED);
    a->ext = NULL;
    if (a->beh == &tr__inbox_behavior) {
        a->state = NULL;
        a->ext = calloc(1, sizeof *a->ext);
        if (a->ext == NULL) {
            tr__log(TR_LOG_ERROR, "inbox: out of memory");
            a->beh = NULL;
            a->run_gen &= TR__STUB_QUEUED;
            atomic_store_explicit(&a->live_gen, m->target_gen | TR__GEN_DEAD,
                                  memory_order_release);
            return;
        }
        a->ext->inbox = m->u.start.state;
        return;
    }
    a->state = m->u.start.state;
    if (a->beh == &tr__root_behavior || m->sender.id != 0) {
        tr__actor_ext *e = tr__ext(a);
        if (e == NULL) {
            tr__log(TR_LOG_ERROR, "spawn: out of memory; parent not recorded");
        } else {
            e->system = m->sender.id == UINT64_MAX;
            e->parent = e->system ? TR_REF_NONE : m->sender;
            e->is_root = a->beh == &tr__root_behavior;
        }
    }
    if (a->beh->on_start == NULL)
        return;
    set_current(ctx, a);
    int rc = a->beh->on_start(ctx, a->state);
    (void)after_callback(ctx, a, rc);
}

#define RAW_MAX 4
/* Small sets of behaviours with a property, registered once at start-up
 * (a relaxed CAS is enough: readers only compare pointers). */
typedef const tr_behavior *_Atomic beh_set[RAW_MAX];

static void beh_set_add(beh_set set, const tr_behavior *beh) {
    for (int i = 0; i < RAW_MAX; i++) {
        const tr_behavior *none = NULL;
        if (atomic_compare_exchange_strong_explicit(&set[i], &none, beh,
                                                    memory_order_relaxed,
                                                    memory_order_relaxed) ||
            none == beh)
            return;
    }
}

static bool beh_set_has(beh_set set, const tr_behavior *beh) {
    for (int i = 0; i < RAW_MAX; i++)
        if (atomic_load_explicit(&set[i], memory_order_relaxed) == beh)
            return true;
    return false;
}

/* Behaviours that get replies and timeouts unfiltered (the proxy). */
static beh_set raw_replies;
/* Behaviours whose actors mute their senders while they are behind (a
 * full batch handled and more waiting), after Pony: the transport's proxy
 * and link, so a producer cannot outrun the path to another process. */
static beh_set pressure;

void tr__behavior_mark_raw_replies(const tr_behavior *beh) {
    beh_set_add(raw_replies, beh);
}

static bool raw_replies_of(const tr_behavior *beh) {
    return beh_set_has(raw_replies, beh);
}

bool tr__behavior_raw(const tr_behavior *beh) { return raw_replies_of(beh); }

void tr__behavior_mark_pressure(const tr_behavior *beh) {
    beh_set_add(pressure, beh);
}

static bool pressure_of(const tr_behavior *beh) {
    return beh_set_has(pressure, beh);
}

/* Kills a if tr_kill marked it (the kill jumps the queue). Returns true
 * if it did. */
static bool check_kill(tr_ctx *ctx, tr__actor *a) {
    /* Acquire: pairs with tr_kill's CAS. */
    if (!(atomic_load_explicit(&a->live_gen, memory_order_acquire) &
          TR__GEN_KILL))
        return false;
    if (a->ext != NULL && a->ext->killed)
        return false;
    tr__begin_kill(ctx, a);
    return true;
}

/* One turn. The slot's cache line is also written by every sender (the
 * mailbox head), so the loop keeps what it needs from the slot in locals
 * and touches the slot again only on rare events (start, death, empty):
 * a producer on another core then keeps the line to itself instead of
 * bouncing it once per message. */
bool tr__actor_run(tr__worker *w, void *unit, void *arg) {
    tr_runtime *rt = arg;
    tr_ctx *ctx = w->user;
    tr__actor *a = unit;
    unsigned batch = rt->cfg.batch;
    tr__node *tail = a->mb.tail;
    uint32_t gen = a->run_gen & ~TR__STUB_QUEUED;
    const tr_behavior *beh = a->beh;
    void *state = a->state;
    /* Acquire: pairs with tr_kill's release increment. */
    uint64_t epoch =
        atomic_load_explicit(&rt->kill_epoch, memory_order_acquire);
    if (gen != 0) {
        set_current(ctx, a);
        if (check_kill(ctx, a)) {
            gen = a->run_gen & ~TR__STUB_QUEUED;
            beh = a->beh;
            state = a->state;
        }
    }
    /* Ordinary messages are dropped once the actor is stopping. */
    bool stopping = a->ext != NULL && a->ext->phase == TR__PH_STOPPING;
    bool debug = rt->debug;
    if (debug)
        debug_mailbox(ctx, a);
    ctx->turn_sends = 0;
    unsigned n = 0;
    /* Bounded mailbox (bounded.c): ordinary messages taken this turn. */
    bool bounded = atomic_load_explicit(tr__mflags_of(a), memory_order_relaxed) &
                   TR__MF_BOUNDED;
    uint32_t n_ord = 0;
    uint64_t bytes_ord = 0;
    while (n < batch) {
        /* Acquire: pairs with the producer's release link (mailbox.h). */
        tr__node *node =
            atomic_load_explicit(&tail->next, memory_order_acquire);
        if (node == NULL) {
            /* Looks empty, but the last handled message is the stub. Swap
             * the embedded stub back in so an idle actor holds no message
             * (64 bytes per idle actor instead of 144). STUB_QUEUED says
             * whether the stub is already queued: NULL may also mean a
             * producer is between its exchange and its link, so reaching
             * NULL does not prove the stub was passed. */
            if (tail != &a->stub && !(a->run_gen & TR__STUB_QUEUED)) {
                a->run_gen |= TR__STUB_QUEUED;
                (void)tr__mailbox_push(&a->mb, &a->stub);
                continue;
            }
            break;
        }
        if (tail != &a->stub)
            tr__block_free(tail); /* a handled message: payload released */
        tail = node;
        if (node == &a->stub) {
            a->run_gen &= ~TR__STUB_QUEUED;
            continue;
        }
        n++;
        tr_msg *m = (tr_msg *)node;
        bool deliver = false, recheck = false;
        bool ordinary =
            bounded && m->target_gen == gen && gen != 0 && tr__bound_counts(m);
        n_ord += ordinary;
        if (ordinary)
            bytes_ord += m->len;
        if (m->flags & TR__F_START) {
            start_incarnation(ctx, a, m);
            recheck = true;
        } else if (m->target_gen != gen || gen == 0) {
            tr__sys_dead_letter(ctx, a, m);
            drop_unhandled(ctx, a, m, true);
        } else if (beh == &tr__inbox_behavior) {
            if ((m->flags & TR__F_SYS) && m->tag == TR__SYS_KILL) {
                /* tr_inbox_destroy: let go of the inbox, free the slot. */
                tr__inbox_release(a->ext->inbox);
                a->ext->inbox = NULL;
                tr__die(ctx, a);
                recheck = true;
            } else if (!(m->flags & TR__F_SYS)) {
                tr__inbox_deliver(a->ext->inbox, m);
            }
        } else if (m->flags & TR__F_SYS) {
            deliver = tr__sys_handle(ctx, a, m);
            recheck = true;
        } else if (stopping) {
            drop_unhandled(ctx, a, m, true);
        } else if ((m->flags & (TR__F_REPLY | TR__F_TIMEOUT)) &&
                   !raw_replies_of(beh) && !tr__request_filter(ctx, a, m)) {
            tr__msg_release_payload(m);
        } else if (m->tag == TR_TAG_DOWN && !tr__down_wanted(a, m)) {
            tr__msg_release_payload(m); /* demonitored */
        } else if ((m->flags & TR__F_REQUEST) &&
                   tr__req_cancel_check(rt, m->sender.id, m->req_id)) {
            drop_unhandled(ctx, a, m, false); /* its requester gave up */
        } else if (ordinary && tr__bound_drop_oldest(a)) {
            tr__msg_release_payload(m); /* drop-oldest: counted there */
        } else {
            deliver = true;
        }
        if (deliver && atomic_load_explicit(&rt->kill_epoch,
                                            memory_order_acquire) != epoch) {
            epoch = atomic_load_explicit(&rt->kill_epoch, memory_order_acquire);
            if (check_kill(ctx, a)) {
                deliver = false; /* killed: this message is not handled */
                recheck = true;
                drop_unhandled(ctx, a, m, true);
            }
        }
        if (deliver) {
            ctx->stop_req = false;
            if (debug)
                debug_enter(ctx, beh);
            int rc = beh->handle(ctx, state, m);
            if (debug)
                debug_leave(ctx, a, m->tag);
            if (rc == TR_UNHANDLED) {
                count_unhandled(ctx, a, m);
                rc = 0;
            }
            tr__msg_release_payload(m);
            recheck |= after_callback(ctx, a, rc);
        } else if (tr__magic(m) == TR__MSG_QUEUED) {
            tr__msg_release_payload(m);
        }
        tr__set_magic(m, TR__MSG_DONE);
        if (ctx->mute_on != 0 && !recheck)
            break; /* it sent to an overloaded actor: muted from here */
        if (ctx->turn_sends >= TR__TURN_SEND_BUDGET)
            break; /* flooding: the receivers get a turn first */
        /* Start, system messages and a handler's end may have started,
         * stopped or ended the actor: reload what the loop caches. */
        if (recheck) {
            gen = a->run_gen & ~TR__STUB_QUEUED;
            beh = a->beh;
            state = a->state;
            if (gen != 0)
                set_current(ctx, a);
            stopping = a->ext != NULL && a->ext->phase == TR__PH_STOPPING;
        }
    }
    a->mb.tail = tail;
    ctx->cur = NULL;
    if (rt->track_depth && n > 0)
        atomic_fetch_sub_explicit(tr__depth_of(a), n, memory_order_relaxed);
    if (bounded)
        tr__bound_turn_end(rt, ctx, a, n_ord, bytes_ord, gen);
    /* Behind (a full batch and more waiting): senders are muted until
     * it catches up (pressure behaviours only). */
    _Atomic uint8_t *mf = tr__mflags_of(a);
    if (n == batch && gen != 0 &&
        !(atomic_load_explicit(mf, memory_order_relaxed) & TR__MF_BEHIND) &&
        pressure_of(beh))
        atomic_fetch_or_explicit(mf, TR__MF_BEHIND, memory_order_seq_cst);
    if (ctx->mute_on != 0) {
        uint64_t target = ctx->mute_on;
        ctx->mute_on = 0;
        /* Parked: not rescheduled and the mailbox not marked empty, so
         * nothing schedules it but a wake. Nothing of a is touched after
         * this: a waker may run it on another thread at once. */
        if (gen != 0 && tr__mute_park(ctx, a, target))
            return false;
    }
    bool more = !tr__mailbox_mark_empty(&a->mb);
    /* Caught up: relieve its muted senders. (After mark_empty a may run
     * elsewhere; the flags and the mute table are safe to touch: atomics
     * and a lock, and the ref is only a key.) */
    if (!more && (atomic_load_explicit(mf, memory_order_relaxed) &
                  TR__MF_BEHIND))
        tr__overload_clear(rt, ctx, a, TR__MF_BEHIND, gen);
    return more;
}

bool tr__quiescent(void *arg) {
    tr_runtime *rt = arg;
    uint64_t spawned =
        atomic_load_explicit(&rt->foreign_spawned, memory_order_relaxed);
    uint64_t ended = 0;
    for (unsigned i = 0; i < rt->sched.n; i++) {
        spawned +=
            atomic_load_explicit(&rt->ctxs[i].st.spawned, memory_order_relaxed);
        ended +=
            atomic_load_explicit(&rt->ctxs[i].st.ended, memory_order_relaxed);
    }
    return spawned == ended;
}

/* Shutdown cleanup of the incarnation installed in a, if any. */
static void shutdown_incarnation(tr_ctx *ctx, tr__actor *a) {
    bool system = a->ext != NULL && a->ext->system;
    if (a->beh != NULL && a->beh != &tr__inbox_behavior &&
        a->beh != &tr__root_behavior) {
        if (ctx->rt->debug && !system)
            tr__log(TR_LOG_WARN,
                    "debug: actor %s (slot %u) still alive at "
                    "shutdown",
                    a->beh->name ? a->beh->name : "?", tr__slot_index(a));
        set_current(ctx, a);
        if (a->beh->on_stop != NULL)
            a->beh->on_stop(ctx, a->state, TR_EXIT_SHUTDOWN);
        free(a->state);
        if (!system)
            bump(&ctx->st.ended);
    }
    if (a->ext != NULL && a->ext->inbox != NULL)
        tr__inbox_release(a->ext->inbox);
    tr__ext_free(ctx->rt, a);
    a->beh = NULL;
    a->state = NULL;
    a->run_gen &= TR__STUB_QUEUED;
}

/* Frees everything queued in a's mailbox and its stub (shutdown only:
 * no thread runs a and no sends are accepted). An actor spawned but never
 * started still owns its state: it gets its on_stop too, so cleanup runs
 * exactly once for every spawned actor. */
/* Shutdown only: the next queued message (the old stub is freed, the
 * embedded stub skipped), or NULL. */
static tr_msg *shutdown_pop(tr__actor *a) {
    tr__node *old, *node;
    while ((node = tr__mailbox_pop(&a->mb, &old)) != NULL) {
        if (old != &a->stub)
            tr__block_free(old);
        if (node != &a->stub)
            return (tr_msg *)node;
    }
    return NULL;
}

static void drain_slot(tr_ctx *ctx, tr__actor *a) {
    tr_msg *m;
    while ((m = shutdown_pop(a)) != NULL) {
        bool pending = tr__magic(m) == TR__MSG_QUEUED;
        if ((m->flags & TR__F_START) && pending) {
            if (m->u.start.beh == &tr__inbox_behavior) {
                tr__inbox_release(m->u.start.state);
            } else {
                a->beh = m->u.start.beh;
                a->state = m->u.start.state;
                a->run_gen = m->target_gen;
                shutdown_incarnation(ctx, a);
            }
        } else if (pending) {
            tr__msg_release_payload(m);
        }
        tr__set_magic(m, TR__MSG_DONE);
    }
    if (a->mb.tail != &a->stub) {
        tr__block_free(a->mb.tail);
        tr__mailbox_init(&a->mb, &a->stub, false);
    }
    a->run_gen = 0;
    atomic_store_explicit(tr__depth_of(a), 0, memory_order_relaxed);
}

/* Shutdown, before any cleanup: what is still queued may change the tree.
 * An actor spawned but not yet started has its START in its mailbox, and a
 * top-level actor may not be in the root's list yet (its ADOPT is queued):
 * install both, so the post-order cleanup sees every actor in its place.
 * No thread pushes any more, so the queues can be walked in place. */
static void settle_queued(tr_runtime *rt, tr__actor *a) {
    tr__node *n = atomic_load_explicit(&a->mb.tail->next, memory_order_acquire);
    for (; n != NULL;
         n = atomic_load_explicit(&n->next, memory_order_acquire)) {
        if (n == &a->stub)
            continue;
        tr_msg *m = (tr_msg *)n;
        if (tr__magic(m) != TR__MSG_QUEUED)
            continue;
        if ((m->flags & TR__F_START) && a->beh == NULL) {
            a->beh = m->u.start.beh;
            a->run_gen = m->target_gen | (a->run_gen & TR__STUB_QUEUED);
            a->state =
                m->u.start.beh == &tr__inbox_behavior ? NULL : m->u.start.state;
            tr__actor_ext *e = NULL;
            if (a->beh == &tr__inbox_behavior || m->sender.id != 0 ||
                a->beh == &tr__root_behavior)
                e = tr__ext(a);
            if (e != NULL) {
                e->system = m->sender.id == UINT64_MAX;
                e->parent = e->system ? TR_REF_NONE : m->sender;
                e->is_root = a->beh == &tr__root_behavior;
                if (a->beh == &tr__inbox_behavior)
                    e->inbox = m->u.start.state;
            } else if (a->beh == &tr__inbox_behavior) {
                tr__inbox_release(m->u.start.state); /* out of memory */
                a->beh = NULL;
            }
            tr__set_magic(m, TR__MSG_DONE);
        } else if ((m->flags & TR__F_SYS) && m->tag == TR__SYS_ADOPT &&
                   a->beh == &tr__root_behavior) {
            tr_ref child = {m->req_id};
            if (tr__ext(a) != NULL && tr_actor_alive(rt, child))
                (void)tr__kids_add(&a->ext->kids, child);
            tr__set_magic(m, TR__MSG_DONE);
        }
    }
}

/* An inbox keeps what was sent to it: messages its worker had not moved
 * yet when the runtime stopped still reach tr_inbox_recv. */
static void flush_inbox(tr__actor *a) {
    tr_msg *m;
    while ((m = shutdown_pop(a)) != NULL) {
        if (tr__magic(m) == TR__MSG_QUEUED && !(m->flags & TR__F_SYS) &&
            m->target_gen == (a->run_gen & ~TR__STUB_QUEUED))
            tr__inbox_deliver(a->ext->inbox, m);
        else if (tr__magic(m) == TR__MSG_QUEUED)
            tr__msg_release_payload(m);
        tr__set_magic(m, TR__MSG_DONE);
    }
}

/* The live incarnation behind ref, or NULL. */
static tr__actor *live_slot(tr_runtime *rt, tr_ref ref) {
    tr__actor *a = tr__slot_lookup(rt, ref.id);
    if (a == NULL || a->beh == NULL ||
        (atomic_load_explicit(&a->live_gen, memory_order_relaxed) &
         TR__GEN_MASK) != (uint32_t)(ref.id >> 32))
        return NULL;
    return a;
}

/* Cleans up the tree under the root in post-order, youngest child first:
 * children before parents, as an orderly stop would. */
static void shutdown_tree(tr_runtime *rt, tr_ctx *ctx) {
    struct frame {
        tr__actor *a;
        uint32_t done;
    } *stack = NULL;
    uint32_t depth = 0, cap = 0;
    tr__actor *root = live_slot(rt, rt->root);
    if (root == NULL)
        return;
    cap = 64;
    stack = malloc(cap * sizeof *stack);
    if (stack == NULL)
        return; /* the flat pass below still cleans everything */
    stack[depth++] = (struct frame){root, 0};
    while (depth > 0) {
        struct frame *f = &stack[depth - 1];
        tr__actor_ext *e = f->a->ext;
        if (e != NULL && f->done < e->kids.n) {
            tr_ref c = e->kids.v[e->kids.n - 1 - f->done];
            f->done++;
            tr__actor *ca = live_slot(rt, c);
            if (ca == NULL)
                continue;
            if (depth == cap) {
                struct frame *ns = realloc(stack, 2 * cap * sizeof *stack);
                if (ns == NULL)
                    continue; /* the flat pass cleans this subtree */
                stack = ns;
                cap *= 2;
            }
            stack[depth++] = (struct frame){ca, 0};
            continue;
        }
        if (f->a != root)
            shutdown_incarnation(ctx, f->a);
        depth--;
    }
    free(stack);
}

void tr__actor_shutdown_all(tr_runtime *rt) {
    tr_ctx *ctx = &rt->foreign;
    ctx->shutdown = true;
    uint32_t n = atomic_load_explicit(&rt->nslots, memory_order_relaxed);
    for (uint32_t idx = 1; idx < n; idx++) {
        tr__actor *a = tr__slot_lookup(rt, (uint64_t)idx + 1);
        if (a != NULL)
            settle_queued(rt, a);
    }
    shutdown_tree(rt, ctx);
    for (uint32_t idx = 1; idx < n; idx++) {
        tr__actor *a = tr__slot_lookup(rt, (uint64_t)idx + 1);
        if (a == NULL)
            continue;
        if (a->beh == &tr__inbox_behavior && a->ext != NULL &&
            a->ext->inbox != NULL)
            flush_inbox(a);
        shutdown_incarnation(ctx, a);
        atomic_fetch_or_explicit(&a->live_gen, TR__GEN_DEAD,
                                 memory_order_relaxed);
        drain_slot(ctx, a);
    }
    ctx->cur = NULL;
}

TR_API bool tr_actor_alive(tr_runtime *rt, tr_ref ref) {
    if (rt == NULL)
        return false;
    tr__actor *a = tr__slot_lookup(rt, ref.id);
    return a != NULL &&
           atomic_load_explicit(&a->live_gen, memory_order_acquire) ==
               (uint32_t)(ref.id >> 32);
}

TR_API int64_t tr_actor_mailbox_depth(tr_runtime *rt, tr_ref ref) {
    if (rt == NULL || !rt->track_depth || !tr_actor_alive(rt, ref))
        return -1;
    tr__actor *a = tr__slot_lookup(rt, ref.id);
    return atomic_load_explicit(tr__depth_of(a), memory_order_relaxed);
}

TR_API tr_ref tr_self(const tr_ctx *ctx) {
    return ctx != NULL ? ctx->self : TR_REF_NONE;
}

TR_API tr_runtime *tr_ctx_runtime(const tr_ctx *ctx) {
    return ctx != NULL ? ctx->rt : NULL;
}

TR_API unsigned tr_ctx_worker(const tr_ctx *ctx) {
    return ctx != NULL && ctx->w != NULL ? ctx->w->index : 0;
}

TR_API void tr_stop(tr_ctx *ctx) {
    if (ctx != NULL)
        ctx->stop_req = true;
}
