/* Internal: the link actor, the only user of a process's ZeroMQ sockets.
 * Three modes share it (and one envelope handler):
 *   POOL   main process: a ROUTER, one peer per worker process it started;
 *   WORKER a worker process: a DEALER, one peer (the main process);
 *   NODE   a node: a ROUTER it listens on (CURVE server) for peers that
 *          connect in, and one DEALER (CURVE client) per peer it connects
 *          out to; peers are named nodes. */
#ifndef TR_TRANSPORT_LINK_H
#define TR_TRANSPORT_LINK_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "runtime/ring.h"
#include "transport/idmap.h"
#include "transport/remote.h"

typedef enum tr__link_mode {
    TR__LINK_POOL,
    TR__LINK_WORKER,
    TR__LINK_NODE
} tr__link_mode;

typedef struct tr__pending_req {
    uint64_t requester; /* local actor id */
    uint64_t req_id;
    tr__fwd *copy; /* to send again if the peer is lost (retry), or NULL */
} tr__pending_req;

/* Flow control toward one consumer (a remote actor) of a peer: data
 * envelopes (SEND, REQUEST) in flight without credit, and those held
 * back, in order, while the window is full (link.c). */
typedef struct tr__flow {
    uint32_t inflight;
    tr__ring held; /* tr__fwd *, oldest first */
    uint64_t *flagged; /* proxies marked overloaded for it */
    uint32_t nflagged, capflagged;
} tr__flow;

/* The DOWN of one of our actors, waiting until the envelopes it sent
 * before it ended have left (link.c, send_down). */
typedef struct tr__down_wait {
    uint64_t who, proxy, mon;
    int64_t reason;
} tr__down_wait;

typedef struct tr__peer {
    /* ROUTER routing id: "w<i>.<n>" (worker slot i, its n-th process:
     * procs.c) or the node's name. */
    char ident[TR__REG_NAME_MAX];
    size_t identlen;
    bool used; /* node slots: taken by a name */
    /* Where its frames go: the link's ROUTER (routed: ident frame first)
     * or the peer's own DEALER (node peers we connect out to). */
    void *sock;
    bool routed;
    bool outgoing; /* node: we connect to it */
    int zfd;       /* own DEALER's ZMQ_FD, -1 if none */
    tr_watch_id zwatch;
    char endpoint[160];  /* node, outgoing: where */
    char serverkey[41];  /* node, outgoing: its CURVE public key (z85) */
    uint64_t session[2]; /* node: the peer's (pid, epoch) of this session */
    pid_t pid;
    int pidfd;
    tr_watch_id pidwatch;
    bool connected, dead, ever_connected;
    unsigned generation; /* restarts of this worker / sessions with a node */
    tr__encoder enc;
    bool flush_sched;
    tr__fwd **waiting; /* envelopes before the peer said HELLO */
    uint32_t nwaiting, capwaiting;
    uint32_t load;      /* live remote actors */
    int64_t last_rx_ms; /* last frame from this peer */
    uint64_t hb_seq;
    tr__idmap proxies;  /* remote actor id -> local proxy id */
    tr__idmap spawning; /* proxy ids whose SPAWN is unanswered */
    tr__idmap reverse;  /* remote sender id -> local stand-in proxy id */
    tr__idmap watching; /* local monitor id -> remote proxy id */
    tr__idmap spawned;  /* local monitor id -> local actor spawned for it */
    unsigned failed_starts;
    tr__pending_req *reqs; /* requests in flight to this peer */
    uint32_t nreqs, capreqs;
    /* Credit (docs/protocol.md, CREDIT): what the peer grants per
     * consumer (0: no flow control), our flows toward its actors, and the
     * credit we owe it for each of ours. */
    uint32_t window;
    tr__idmap flows; /* its actor id -> tr__flow * */
    tr__idmap owed;  /* our actor id -> envelopes not yet credited back */
    tr__down_wait *downs; /* DOWNs behind their actors' held envelopes */
    uint32_t ndowns, capdowns;
} tr__peer;

/* Counters (relaxed atomics: statistics, read by any thread). */
typedef struct tr__link_counters {
    uint64_t frames_in, frames_out, rejected, unknown_peer, zap_denied,
        zap_allowed, dropped_out, peers_lost, retried, held, held_peak;
} tr__link_counters;

typedef struct tr__link {
    tr_runtime *rt;
    tr__link_mode mode;
    bool stopping;
    void *zctx, *sock; /* sock: ROUTER (POOL, NODE listening) or DEALER */
    int zfd;
    tr_watch_id zwatch;
    char endpoint[160];
    tr__peer *peers;
    unsigned npeers; /* slots */
    unsigned worker_threads;
    int64_t hang_timeout_ms; /* -1: no hang detection */
    tr_timer_id tick;
    tr__codec_limits lim; /* the decoder's and every encoder's */
    uint32_t grant;       /* credit we grant per consumer; 0 = none */
    bool credit_timer;    /* a TR__LT_CREDIT is on its way */
    tr__decoder dec;
    tr_ref self;
    unsigned index; /* WORKER: this worker's index */
    char routing_id[TR__REG_NAME_MAX]; /* WORKER: its DEALER's ("" = w<i>) */
    /* NODE */
    pthread_mutex_t lock; /* slots' names (read by tr_node_* callers) */
    char name[TR__REG_NAME_MAX];
    char public_key[41], secret_key[41];
    bool plaintext;
    char (*allow)[41]; /* allowed public keys (z85) */
    size_t nallow;
    void *zap; /* ZAP handler (REP on inproc://zeromq.zap.01) */
    int zapfd;
    tr_watch_id zapwatch;
    int64_t loss_timeout_ms;
    tr_ref *subs; /* told TR_TAG_NODE_UP / _DOWN */
    uint32_t nsubs, capsubs;
    tr__link_counters c;
} tr__link;

extern const tr_behavior tr__link_behavior;

/* Is slot p taken? Node slots are taken by other threads (node.c,
 * slot_take: release), read by the link's (acquire). */
static inline bool tr__peer_used(const tr__peer *p) {
    return __atomic_load_n(&p->used, __ATOMIC_ACQUIRE);
}

/* Creates a link with npeers slots (ZeroMQ not touched yet). */
tr__link *tr__link_new(tr_runtime *rt, tr__link_mode mode, unsigned npeers);
/* Opens the main socket (bind or connect) and the codec. */
int tr__link_open(tr__link *l);
/* Closes everything (no actor runs any more) and frees l. */
void tr__link_free(tr__link *l);

/* ---- shared by link.c, procs.c and node.c (the link actor's thread) ---- */

/* Encodes f for its peer (takes f). */
void tr__link_enqueue(tr_ctx *ctx, tr__link *l, tr__fwd *f);
/* An envelope with no payload to peer index `peer`. */
void tr__link_send_env(tr_ctx *ctx, tr__link *l, unsigned peer, uint8_t kind,
                       uint64_t sender, uint64_t target, uint64_t req_id,
                       int64_t aux);
/* Sends a HELLO (role from the mode) to peer p, at once. */
void tr__link_send_hello(tr_ctx *ctx, tr__link *l, tr__peer *p);
/* The peer's session is over (process died, node lost): everything that
 * waits on it is failed back with err, its actors' proxies end, and what
 * this process ran for it is cancelled. */
void tr__link_peer_lost(tr_ctx *ctx, tr__link *l, tr__peer *p, int err);
/* The peer said HELLO: flush what waited for it. */
void tr__link_peer_up(tr_ctx *ctx, tr__link *l, tr__peer *p);
/* Sends one already-encoded frame to p (logs and counts a failure). */
int tr__link_send_frame(tr__link *l, tr__peer *p, const void *data,
                        size_t len);
/* Tells a proxy (REMOTE_DOWN / SPAWNED). */
void tr__link_tell_proxy(tr_ctx *ctx, uint64_t proxy, uint32_t tag,
                         uint64_t v);
void tr__link_count(uint64_t *counter);
/* The options every socket gets (see the list in link.c). */
void tr__link_sockopts(tr__link *l, void *sock);

/* procs.c (POOL mode) */
int tr__link_start_worker(tr__link *l, unsigned i);
void tr__link_watch_worker(tr__link *l, unsigned i);
void tr__link_worker_lost(tr_ctx *ctx, tr__link *l, unsigned i);
void tr__link_pool_tick(tr_ctx *ctx, tr__link *l);
void tr__link_stop_workers(tr__link *l);
/* Is id the routing id of a worker process of l that has died (an
 * earlier process of a slot)? */
bool tr__link_past_worker(const tr__link *l, const void *id, size_t len);

/* node.c (NODE mode) */
int tr__node_open(tr__link *l);
void tr__node_tick(tr_ctx *ctx, tr__link *l);
/* A frame from an unknown ROUTER peer: a HELLO makes it a peer. */
tr__peer *tr__node_accept(tr_ctx *ctx, tr__link *l, const void *id,
                          size_t idlen, const void *data, size_t len);
/* A HELLO from a known peer. */
void tr__node_hello(tr_ctx *ctx, tr__link *l, tr__peer *p,
                    const tr__env *env);
/* Tells subscribers that p came up or was lost. */
void tr__node_notify(tr_ctx *ctx, tr__link *l, tr__peer *p, bool up);
/* Answers pending ZAP requests. */
void tr__node_zap(tr__link *l);
/* Handles the link's node messages (connect, subscribe); TR_UNHANDLED
 * otherwise. */
int tr__node_handle(tr_ctx *ctx, tr__link *l, tr_msg *msg);
void tr__node_close(tr__link *l);

#endif
