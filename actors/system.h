/* The actor system: struct tr_runtime, actor slots, the per-worker
 * context. Internal to the library. */
#ifndef TR_ACTORS_SYSTEM_H
#define TR_ACTORS_SYSTEM_H

#include <pthread.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "actors/kids.h"
#include "actors/msg.h"
#include "runtime/mailbox.h"
#include "runtime/offload.h"
#include "runtime/reactor.h"
#include "runtime/sched.h"
#include "troupe/actor.h"

/* An actor slot: 64 bytes, one cache line. Slots live in chunks that are
 * never freed while the runtime lives (type-stable memory), so a sender
 * holding a stale reference can always touch the slot's mailbox safely;
 * the generation check and the per-message target_gen decide whether the
 * message is for the current incarnation. */
typedef struct tr__actor {
    tr__mailbox mb;
    tr__node stub;
    /* Generation of the live incarnation; DEAD bit set when none. Written
     * by the spawner (new incarnation) and by the worker at death; read by
     * senders. */
    _Atomic uint32_t live_gen;
    /* Fields below: only the thread running the slot (or the spawner
     * through the START message) touches them. */
    uint32_t run_gen; /* | TR__STUB_QUEUED */
    const tr_behavior *beh;
    void *state;
    void *sched_link; /* inject-queue link, owned by the scheduler */
    struct tr__actor_ext *ext;
} tr__actor;

/* Slot 0 of every chunk is this header (never handed out): chunks are
 * aligned to their size, so a slot's index follows from its address. */
typedef struct tr__chunk_head {
    uint32_t chunk_no;
    /* Mailbox depth per slot of this chunk (maintained when the runtime
     * tracks depths): kept out of the slots so idle actors stay 64 bytes.
     * The same allocation holds mflags (TR__MF_*) per slot after it. */
    _Atomic uint32_t *depth;
    _Atomic uint8_t *mflags;
    /* Bounded mailboxes of this chunk's slots (bounded.c), allocated on
     * the first bounded spawn in the chunk. */
    struct tr__bound *_Atomic bounds;
} tr__chunk_head;

#define TR__TURN_SEND_BUDGET 1024u

/* Muting (mute.c): per-slot flags. Senders to an actor with HELD or
 * BEHIND are muted after their turn. */
#define TR__MF_HELD 1u   /* set from outside (tr__overload_set) */
#define TR__MF_MUTED 2u  /* parked: not scheduled until woken */
#define TR__MF_BEHIND 4u /* its own: a full batch and more waiting */
#define TR__MF_SYSTEM 8u /* a system actor, or exempt: never muted */
#define TR__MF_BOUNDED 16u /* its mailbox has a limit (bounded.c) */
#define TR__MF_FULL 32u    /* bounded, backpressure policy, at its limit */
#define TR__MF_PARKING 64u /* MUTED, but its own thread still finishing */
#define TR__MF_OVERLOADED (TR__MF_HELD | TR__MF_BEHIND | TR__MF_FULL)

_Static_assert(sizeof(tr__actor) == 64, "an actor slot is one cache line");

#define TR__GEN_DEAD 0x80000000u
/* Set (with the generation kept) by tr_kill: sends are refused and the
 * actor is killed at its next turn, ahead of its queued messages. */
#define TR__GEN_KILL 0x40000000u
#define TR__GEN_MASK 0x3fffffffu
/* In run_gen: the embedded stub is queued in the mailbox. */
#define TR__STUB_QUEUED 0x80000000u
#define TR__CHUNK_SHIFT 12
#define TR__CHUNK_SLOTS (1u << TR__CHUNK_SHIFT)
#define TR__MAX_CHUNKS 65536u
#define TR__CHUNK_BYTES ((size_t)TR__CHUNK_SLOTS * sizeof(tr__actor))

typedef struct tr__pending {
    uint64_t req_id;
    uint64_t timer_id;
    /* Told (SYS_REQ_CANCEL) when the request times out or its requester
     * stops first. */
    tr_ref target;
} tr__pending;

/* A request its requester gave up on (timed out, or the requester stopped
 * first): dropped if it is still queued when it comes up, visible to
 * tr_request_cancelled while it is handled (see send.c). */
typedef struct tr__cancelled_req {
    uint64_t requester;
    uint64_t req_id;
} tr__cancelled_req;

#define TR__CANCELLED_MAX 1024
/* Buckets of the lock-free pre-check of the notes (a counting filter, see
 * send.c); a power of two. */
#define TR__CANCEL_BUCKETS 8192

/* Rarely needed per-actor data, allocated on first use. */
typedef struct tr__watcher {
    tr_ref who;
    uint64_t id;
} tr__watcher;

enum { TR__PH_RUNNING = 0, TR__PH_DRAINING = 1, TR__PH_STOPPING = 2 };

/* Rarely needed per-actor data, allocated on first use (an actor spawned
 * from outside that never links, monitors, requests or spawns has none). */
typedef struct tr__actor_ext {
    uint64_t next_req_id;
    tr__pending *pending;
    uint32_t npending, cappending;
    struct tr_inbox *inbox; /* non-NULL for an inbox slot */
    tr_ref parent;          /* TR_REF_NONE: the root */
    tr__kids kids;          /* children, start order */
    tr__kids asked;         /* children already asked to stop */
    tr_ref *links;
    uint32_t nlinks, caplinks;
    tr__watcher *watchers; /* who monitors me */
    uint32_t nwatchers, capwatchers;
    tr__watcher *mons; /* monitors I hold: target (who) and id */
    uint32_t nmons, capmons;
    uint64_t next_mon_id;
    tr_ref waiting;      /* child asked to stop, its EXIT not seen yet */
    uint64_t kill_timer; /* self-kill when the grace runs out */
    char *text;          /* failure text (tr_fail) */
    int reason;
    uint8_t phase;
    bool trap;
    bool killed;
    bool is_root;
    bool system; /* tr__spawn_system: uncounted, parentless */

} tr__actor_ext;

/* Per-worker counters: written by the owner only (relaxed), summed by
 * readers. */
typedef struct tr__wstats {
    _Atomic uint64_t spawned, ended, dead_letters, late_replies, refused,
        unhandled, muted;
} tr__wstats;

struct tr_ctx {
    tr_runtime *rt;
    tr__worker *w;
    tr__actor *cur;
    tr_ref self;
    bool stop_req;
    int fail_code; /* tr_fail's code while the handler runs */
    bool shutdown; /* cleanup during runtime shutdown: no sends */
    /* The running handler sent to an overloaded actor (this ref id): the
     * actor is muted when its turn ends (mute.c). */
    uint64_t mute_on;
    /* Messages sent by the running actor in this turn: a turn ends early
     * past TR__TURN_SEND_BUDGET, so a flooding actor lets the actors it
     * floods run (and mark themselves behind) before it goes on. */
    uint32_t turn_sends;
    tr__wstats st;
    /* Debug mode: what this worker runs since when (read by the monitor). */
    const tr_behavior *_Atomic dbg_beh;
    _Atomic int64_t dbg_since;
    int64_t dbg_reported; /* monitor thread only */
    /* Free slot indices of this worker. */
    uint32_t *free_slots;
    uint32_t nfree, capfree;
};

struct tr_runtime {
    tr__sched sched;
    tr__reactor reactor;
    tr__offload offload;
    tr_runtime_config cfg;
    tr_ctx *ctxs;   /* one per worker */
    tr_ctx foreign; /* stats for foreign threads (atomic adds) */

    alignas(64) _Atomic int stopping;
    _Atomic int run_state; /* 0 created, 1 running, 2 finished */
    _Atomic uint64_t foreign_spawned;
    _Atomic uint64_t foreign_refused;
    _Atomic uint64_t foreign_inflight; /* see tr__foreign_enter */

    tr_ref root;
    _Atomic int shutdown_calls;
    /* Cancelled requests: a bounded ring under a lock; ncancelled and the
     * note's bucket count are read without it first (relaxed: a stale 0
     * only means a request queued at the very moment of its cancellation
     * runs anyway, at most once, or a poll sees it one poll later). The
     * counts are written under the lock only. */
    pthread_mutex_t cancel_lock;
    tr__cancelled_req cancelled[TR__CANCELLED_MAX];
    uint32_t cancelled_head;
    _Atomic uint32_t ncancelled;
    _Atomic uint16_t cancel_buckets[TR__CANCEL_BUCKETS];
    /* The process pool (transport/), freed by tr_runtime_destroy after
     * every actor has been cleaned up. */
    void *pool;
    void (*pool_destroy)(void *pool);
    /* In a worker process: its link to the main process (tr_main_lookup);
     * owned by tr_worker_main. */
    void *main_link;
    /* The node transport and the name registry (transport/node.c,
     * names.c), freed the same way. */
    void *node;
    void (*node_destroy)(void *node);
    void *names;
    void (*names_destroy)(void *names);
    /* Who is muted on whom (mute.c). */
    pthread_mutex_t mute_lock;
    struct tr__mutes *mutes;
    /* Bumped by every tr_kill: a turn in progress compares it (an L1 hit,
     * rarely written) before each handler and only then checks its own
     * KILL bit, so a kill stops an actor between two messages without a
     * per-message load of the contended slot line. */
    alignas(64) _Atomic uint64_t kill_epoch;
    _Atomic int exit_signal; /* first signal that started the shutdown */
    bool track_depth;        /* read-only after create */
    bool debug;
    int64_t debug_block_ns;
    uint32_t debug_mailbox_warn;

    /* Slot table. */
    alignas(64) pthread_mutex_t slots_lock; /* chunk growth, global free list */
    tr__actor *_Atomic chunks[TR__MAX_CHUNKS];
    _Atomic uint32_t nslots; /* slots handed out by bump allocation */
    uint32_t *gfree;         /* global free list, under slots_lock */
    uint32_t ngfree, capgfree;
};

tr__actor *tr__slot_lookup(tr_runtime *rt, uint64_t id);
int tr__send(tr_runtime *rt, tr_ctx *ctx, tr_ref to, tr_msg *m);
/* Answers request req_id of `requester` with a failure in place of the
 * reply: a U64 message `tag` (TR_TAG_REQUEST_FAILED, TR_TAG_REMOTE_FAILED)
 * carrying err. ctx NULL: from any thread. Nothing if out of memory (the
 * requester's timeout still tells) or the requester is gone. */
void tr__reply_failure(tr_runtime *rt, tr_ctx *ctx, tr_ref requester,
                       uint64_t req_id, uint32_t tag, int err);
/* If m is a request (not a reply, not a system message), answers its
 * requester with TR_TAG_REQUEST_FAILED (err): it will never be handled. */
void tr__request_fail(tr_runtime *rt, tr_ctx *ctx, const tr_msg *m, int err);
/* Guard for pushes from non-worker threads (see send.c). */
bool tr__foreign_enter(tr_runtime *rt);
void tr__foreign_leave(tr_runtime *rt);
void tr__count_refused(tr_runtime *rt, tr_ctx *ctx);
void tr__actor_shutdown_all(tr_runtime *rt);
bool tr__actor_run(tr__worker *w, void *unit, void *arg);
bool tr__quiescent(void *arg);
/* Handles reply/timeout bookkeeping for a message about to be handled;
 * returns false if the message must be dropped (late reply). */
bool tr__request_filter(tr_ctx *ctx, tr__actor *a, tr_msg *m);
/* The actor stops (or is stopping) with requests still pending: each is
 * cancelled as its timeout would (note + SYS_REQ_CANCEL to its target) and
 * forgotten. No-op for the notes and sends during runtime shutdown. */
void tr__request_cancel_all(tr_ctx *ctx, tr__actor *a);
/* Frees the pending table and ext (timers cancelled, nothing sent). */
void tr__request_cleanup(tr_runtime *rt, tr__actor *a);

/* actors/family.c: ownership, stop sequence, links, monitors. */
enum {
    TR__SYS_EXIT = 1,  /* child -> parent: reason (req_id), text (bytes) */
    TR__SYS_STOP,      /* cancel: reason (req_id), grace ms (u64) */
    TR__SYS_KILL,      /* kill at once */
    TR__SYS_LINK,      /* sender links to me */
    TR__SYS_UNLINK,    /* sender unlinks */
    TR__SYS_LINK_EXIT, /* linked sender ended: reason, text */
    TR__SYS_MONITOR,   /* sender monitors me with id (req_id) */
    TR__SYS_DEMONITOR, /* sender drops monitor id (req_id) */
    TR__SYS_ADOPT,     /* root: req_id is a new top-level child's id */
    TR__SYS_REQ_CANCEL /* sender gave up on its request req_id */
};
tr__actor_ext *tr__ext(tr__actor *a);
void tr__ext_free(tr_runtime *rt, tr__actor *a);
/* Handles a system message for the live incarnation; the caller then
 * marks it done. Returns true if m was turned into an ordinary message the
 * handler must see (a trapped exit). */
bool tr__sys_handle(tr_ctx *ctx, tr__actor *a, tr_msg *m);
/* The actor's own decision to end (handler/on_start result). */
void tr__begin_stop(tr_ctx *ctx, tr__actor *a, int reason);
void tr__begin_kill(tr_ctx *ctx, tr__actor *a);
/* A dead letter that deserves an answer (link/monitor to a dead actor). */
void tr__sys_dead_letter(tr_ctx *ctx, tr__actor *a, tr_msg *m);
/* Spawn bookkeeping: record child under the spawning actor (or root). */
void tr__adopt(tr_runtime *rt, tr_ctx *ctx, tr_ref child);
int tr__send_sys(tr_runtime *rt, tr_ctx *ctx, tr_ref from, tr_ref to,
                 uint32_t kind, uint64_t arg, tr_msg *payload);
/* Called by actor.c when the stop sequence is complete. */
void tr__finish(tr_ctx *ctx, tr__actor *a, int reason);
int tr__root_create(tr_runtime *rt);
bool tr__down_wanted(tr__actor *a, tr_msg *m);
/* Spawns a system actor: no parent, not counted for quiescence, cleaned up
 * at the very end of a shutdown (like the root and inboxes). */
int tr__spawn_system(tr_runtime *rt, const tr_behavior *beh, const void *init,
                     size_t init_len, tr_ref *out);
void tr__debug_monitor(tr_runtime *rt);
/* Marks a behaviour whose actors see replies unfiltered (the transport's
 * proxies pass them on to the requester in another process). */
void tr__behavior_mark_raw_replies(const tr_behavior *beh);
bool tr__behavior_raw(const tr_behavior *beh);
/* Tag under which a raw-replies actor (proxy) sees a SYS_REQ_CANCEL: the
 * requester is the sender, the request id is tr_msg_request_id. */
#define TR__TAG_REQ_CANCEL 0xFFFF0007u
/* Requests given up by their requesters (send.c): noted by the requester's
 * side, checked (and the note consumed) by the target when the request
 * comes up; tr_request_cancelled looks without consuming. */
void tr__req_cancel_note(tr_runtime *rt, uint64_t requester, uint64_t req_id);
bool tr__req_cancel_check(tr_runtime *rt, uint64_t requester, uint64_t req_id);
/* actor.c: frees the incarnation and releases the slot (after finish). */
void tr__die(tr_ctx *ctx, tr__actor *a);
extern const tr_behavior tr__root_behavior;
/* parent: the spawning actor, or TR_REF_NONE for the root's child. */
int tr__spawn(tr_runtime *rt, tr_ctx *ctx, const tr_behavior *beh,
              const void *init, size_t init_len, tr_ref *out,
              struct tr_inbox *inbox, tr_ref parent);
/* Inbox slot delivery (actors/inbox.c). */
void tr__inbox_deliver(struct tr_inbox *ib, tr_msg *m);
/* Drops the slot's reference to the inbox. */
void tr__inbox_release(struct tr_inbox *ib);

static inline uint32_t tr__slot_index(const tr__actor *a) {
    uintptr_t base = (uintptr_t)a & ~(uintptr_t)(TR__CHUNK_BYTES - 1);
    const tr__chunk_head *h = (const tr__chunk_head *)base;
    return (h->chunk_no << TR__CHUNK_SHIFT) |
           (uint32_t)(((uintptr_t)a - base) / sizeof(tr__actor));
}

static inline _Atomic uint32_t *tr__depth_of(const tr__actor *a) {
    uintptr_t base = (uintptr_t)a & ~(uintptr_t)(TR__CHUNK_BYTES - 1);
    const tr__chunk_head *h = (const tr__chunk_head *)base;
    return &h->depth[((uintptr_t)a - base) / sizeof(tr__actor)];
}

static inline _Atomic uint8_t *tr__mflags_of(const tr__actor *a) {
    uintptr_t base = (uintptr_t)a & ~(uintptr_t)(TR__CHUNK_BYTES - 1);
    const tr__chunk_head *h = (const tr__chunk_head *)base;
    return &h->mflags[((uintptr_t)a - base) / sizeof(tr__actor)];
}

typedef struct tr__mutes tr__mutes;

/* Bounded mailboxes (bounded.c). Ordinary messages count; system
 * messages, replies, timeouts and START never do (the system lane). */
static inline bool tr__bound_counts(const tr_msg *m) {
    return !(m->flags & (TR__F_SYS | TR__F_REPLY | TR__F_START |
                         TR__F_TIMEOUT));
}
/* Send side, for a bounded target: 0 = enqueue m; 1 = m was dropped (and
 * freed: the send succeeded); TR_EAGAIN = refused (m still the
 * caller's). */
int tr__bound_admit(tr_runtime *rt, tr_ctx *ctx, tr__actor *a, tr_msg *m);
/* Receive side: drop this ordinary message instead of handling it (the
 * drop-oldest policy owes drops)? */
bool tr__bound_drop_oldest(tr__actor *a);
/* End of a's turn: n ordinary messages left its mailbox. */
void tr__bound_turn_end(tr_runtime *rt, tr_ctx *ctx, tr__actor *a,
                        uint32_t n, uint64_t nbytes, uint32_t gen);
/* At spawn (spawn_locked): the limit the spawning thread asked for, or
 * NULL; and installing it in slot a. */
const struct tr_mailbox_limit *tr__bound_pending(void);
int tr__bound_install(tr__actor *a, const struct tr_mailbox_limit *lim);
void tr__bounds_free(tr__chunk_head *h);
/* Marks target overloaded (on) or relieves it, waking the actors muted on
 * it. Any thread. */
int tr__overload_set(tr_runtime *rt, tr_ctx *ctx, tr_ref target, bool on);
/* Clears bit (HELD or BEHIND) of a, whose generation is gen; wakes its
 * muted senders if no overload bit is left. */
void tr__overload_clear(tr_runtime *rt, tr_ctx *ctx, tr__actor *a,
                        uint8_t bit, uint32_t gen);
void tr__behavior_mark_pressure(const tr_behavior *beh);
/* True while the live actor ref is HELD or FULL (it mutes its local
 * senders): the transport then holds back the credit of its remote ones.
 * A snapshot. Any thread. */
bool tr__overload_blocks(tr_runtime *rt, tr_ref ref);
/* Wakes the actors muted on target_id (it was relieved or it died). */
void tr__mute_release(tr_runtime *rt, tr_ctx *ctx, uint64_t target_id);
/* At the end of a's turn: parks it (true) if target_id is still
 * overloaded; false: run on as usual. */
bool tr__mute_park(tr_ctx *ctx, tr__actor *a, uint64_t target_id);
/* Schedules a if it is parked. */
void tr__mute_wake(tr_runtime *rt, tr_ctx *ctx, tr__actor *a);
/* Never mutes target (an ordinary actor that must keep running for the
 * pressure to be relieved: a worker process's link). Before it runs. */
int tr__mute_exempt(tr_runtime *rt, tr_ref target);
void tr__mutes_destroy(tr_runtime *rt);

extern const tr_behavior tr__inbox_behavior;

/* The last step of every send: stamp, count, push, schedule on the
 * empty->non-empty transition. After the push m belongs to the receiver. */
static inline void tr__enqueue(tr_runtime *rt, tr_ctx *ctx, tr__actor *a,
                               tr_msg *m, uint32_t gen) {
    m->target_gen = gen;
    tr__set_magic(m, TR__MSG_QUEUED);
    if (rt->track_depth)
        atomic_fetch_add_explicit(tr__depth_of(a), 1, memory_order_relaxed);
    bool sys = (m->flags & TR__F_SYS) != 0; /* m is the receiver's after */
    if (tr__mailbox_push(&a->mb, &m->node)) {
        tr__sched_push(&rt->sched, ctx != NULL ? ctx->w : NULL, a);
    } else if (sys) {
        /* A muted (parked) actor must still get its system messages: the
         * handshake with tr__mute_park (mute.c) is an RMW on the flags. */
        if (atomic_fetch_or_explicit(tr__mflags_of(a), 0,
                                     memory_order_acq_rel) &
            TR__MF_MUTED)
            tr__mute_wake(rt, ctx, a);
    }
}

static inline tr_ref tr__make_ref(uint32_t index, uint32_t gen) {
    return (tr_ref){((uint64_t)gen << 32) | ((uint64_t)index + 1)};
}

#endif
