/* Internal: the link actor, the only user of a process's ZeroMQ socket
 * (ROUTER in the main process, one peer per worker; DEALER in a worker,
 * one peer: the main process). */
#ifndef TR_TRANSPORT_LINK_H
#define TR_TRANSPORT_LINK_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "transport/idmap.h"
#include "transport/remote.h"

typedef struct tr__pending_req {
    uint64_t requester; /* local actor id */
    uint64_t req_id;
} tr__pending_req;

typedef struct tr__peer {
    char ident[16]; /* ROUTER routing id "w<i>" */
    size_t identlen;
    pid_t pid;
    int pidfd;
    tr_watch_id pidwatch;
    bool connected, dead, ever_connected;
    unsigned generation; /* restarts of this worker slot */
    tr__encoder enc;
    bool flush_sched;
    tr__fwd **waiting; /* envelopes before the peer said HELLO */
    uint32_t nwaiting, capwaiting;
    uint32_t load;      /* live remote actors */
    int64_t last_rx_ms; /* last frame from this peer */
    uint64_t hb_seq;
    tr__idmap proxies;     /* main: remote actor id -> proxy id */
    tr__idmap spawning;    /* main: proxy ids whose SPAWN is unanswered */
    unsigned failed_starts;
    tr__pending_req *reqs; /* main: requests in flight to this peer */
    uint32_t nreqs, capreqs;
} tr__peer;

typedef struct tr__link {
    tr_runtime *rt;
    bool main_side;
    bool stopping;
    void *zctx, *sock;
    int zfd;
    tr_watch_id zwatch;
    char endpoint[160];
    char path[128]; /* ipc socket file (main side), unlinked at the end */
    tr__peer *peers;
    unsigned npeers;
    unsigned worker_threads;
    int64_t hang_timeout_ms; /* -1: no hang detection */
    tr_timer_id tick;
    tr__decoder dec;
    tr_ref self;
    /* worker side */
    tr__idmap reverse;  /* main-side actor id -> local proxy id */
    tr__idmap watching; /* local actor id -> main-side proxy id */
    unsigned index;     /* this worker's index */
} tr__link;

extern const tr_behavior tr__link_behavior;

/* Opens the socket (bind or connect) and the codec. */
int tr__link_open(tr__link *l);
/* Closes everything (no actor runs any more). */
void tr__link_close(tr__link *l);
/* Starts (or restarts) worker process i (main side). */
int tr__link_start_worker(tr__link *l, unsigned i);
/* Main side, at the end: BYE to every worker, then reap them. */
void tr__link_stop_workers(tr__link *l);

#endif
