/* Internal: the process transport shared by the main side (pool.c) and
 * the worker side (worker.c): the behaviour registry, proxies, and the
 * link actor that owns a ZeroMQ socket and the codec. */
#ifndef TR_TRANSPORT_REMOTE_H
#define TR_TRANSPORT_REMOTE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "actors/system.h"
#include "transport/codec.h"
#include "troupe/reactor.h"
#include "troupe/remote.h"
#include "troupe/timer.h"

#define TR__REG_NAME_MAX 64

/* Link actor tags (local messages only; 0xFFFF0600-06FF). */
#define TR__LT_ZMQ 0xFFFF0600u   /* socket readable (tr_watch) */
#define TR__LT_FWD 0xFFFF0601u   /* PTR tr__fwd from a proxy */
#define TR__LT_FLUSH 0xFFFF0602u /* u64: peer index */
#define TR__LT_DEAD 0xFFFF0603u  /* a worker's pidfd is readable */
#define TR__LT_TICK 0xFFFF0604u  /* heartbeat period (main side) */
#define TR__LT_CONNECT 0xFFFF0605u /* u64: node peer slot to connect */
#define TR__LT_SUBSCRIBE 0xFFFF0606u /* u64: actor told of node up/down */
#define TR__LT_CREDIT 0xFFFF0607u    /* retry credit held back (busy actor) */
/* Proxy tags. */
#define TR__PT_SPAWNED 0xFFFF0610u     /* u64: the remote actor's id */
#define TR__PT_REMOTE_DOWN 0xFFFF0611u /* u64: (int64) exit reason */
#define TR__PT_RETRY 0xFFFF0612u       /* PTR tr__fwd: a request to resend */

/* One envelope on its way out, from a proxy (or spawn) to the link. */
typedef struct tr__fwd {
    uint32_t peer; /* main: worker index; worker: 0 */
    /* main: the worker process incarnation the target lives in (0 = any):
     * an envelope for an actor of a process that has died since is failed
     * back instead of reaching an unrelated actor of its restart, which
     * hands out the same ids. */
    uint32_t gen;
    uint8_t kind;  /* tr__env_kind */
    uint16_t flags;
    uint64_t sender; /* actor id in the sending process */
    uint64_t target; /* actor id in the receiving process */
    uint64_t req_id;
    int64_t aux;
    uint32_t tag;
    bool retry;      /* REQUEST of an idempotent actor: resend if lost */
    uint64_t proxy;  /* with retry: the proxy that resends it */
    tr_msg *payload; /* owned; NULL = none */
} tr__fwd;

const tr_behavior *tr__registry_find(const char *name, size_t len);
/* The TR_REG_* flags name was registered with (0 if unknown). */
unsigned tr__registry_flags(const char *name);
/* A deep copy of f (payload copied), or NULL. */
tr__fwd *tr__fwd_clone(const tr__fwd *f);
/* The live actor registered under name in rt (names.c): 0 or
 * TR_ENOTFOUND. */
int tr__names_find(tr_runtime *rt, const char *name, size_t len, tr_ref *out);

/* Answers requester's request req_id with a TR_TAG_REMOTE_FAILED reply
 * (value err). ctx NULL: from any thread (refused once the runtime
 * stops). */
void tr__remote_fail(tr_runtime *rt, tr_ctx *ctx, uint64_t requester,
                     uint64_t req_id, int err);
/* A TR__PT_RETRY message handing request f back to its proxy (takes f;
 * NULL, f untouched, when out of memory). The message owns the duty to
 * answer: dropped without the proxy taking f (the proxy ended first, gave
 * up, or refused it), it fails the request back with TR_ELOST. */
tr_msg *tr__retry_msg_new(tr_runtime *rt, tr__fwd *f);
/* The proxy's side: takes the request out of a TR__PT_RETRY message (the
 * duty to answer goes with it), or NULL. */
tr__fwd *tr__retry_msg_take(tr_msg *m);

/* Builds a tr__fwd from a message handled by a proxy (payload moved). */
tr__fwd *tr__fwd_from_msg(tr_msg *m, uint32_t peer, uint64_t target);
void tr__fwd_free(void *fwd);
/* Sends f to the link actor (takes f). */
int tr__fwd_send(tr_ctx *ctx, tr_runtime *rt, tr_ref link, tr__fwd *f);

struct tr__link;
/* Spawns (key "behavior") or looks up (key "lookup") `name` on peer
 * `peer` of link l: *out is the new proxy (a child of ctx's actor, or
 * top-level from outside). */
int tr__remote_spawn(tr_runtime *rt, tr_ctx *ctx, struct tr__link *l,
                     uint32_t peer, const char *key, const char *name,
                     const void *init, size_t init_len, uint32_t started_tag,
                     tr_ref *out);
/* Spawns registered behaviour `name` in the worker pool (node NULL) or on
 * node `node`, as a child of ctx's actor; the proxy sends `started_tag`
 * to its parent once the remote actor exists (0: nothing). For
 * supervisors (remote placement of child specs). */
int tr__spawn_placed(tr_ctx *ctx, const char *node, const char *name,
                     const void *init, size_t init_len, uint32_t started_tag,
                     tr_ref *out);
/* TR_EINVAL / TR_ETOOBIG for a bad name or init. */
int tr__remote_args_check(const char *name, const void *init,
                          size_t init_len);

/* A message to deliver locally, built from a decoded envelope. */
tr_msg *tr__msg_from_env(const tr__env *env);

#endif
