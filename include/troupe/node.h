/* troupe — nodes: runtimes in other processes or on other hosts, over
 * tcp:// (or ipc://) with ZeroMQ, CURVE-encrypted and authenticated.
 *
 * A node has a name, unique among the nodes it talks to. It may listen
 * (tr_node_config.listen) and it may connect to other nodes
 * (tr_node_connect); either way the connection carries messages both
 * ways. On a connection, a node can spawn the other node's registered
 * behaviours (tr_node_spawn, as tr_spawn_remote does for worker
 * processes) and look up actors the other node registered under a name
 * (tr_name_register there, tr_node_lookup here). Both give an ordinary
 * tr_ref (a local proxy): send, request, monitor, link and cancel work as
 * for a local actor.
 *
 * Security: by default every connection uses CURVE (libzmq's
 * CurveZMQ: encryption plus authentication by key pair). A listening node
 * accepts only peers whose public key is on its allowlist (checked by a
 * ZAP handler of its own, with ZMQ_ZAP_ENFORCE_DOMAIN: without a ZAP
 * handler libzmq would accept every key); a node connecting out names the
 * server's public key, so it talks only to that server. A peer that is
 * not allowed never completes the handshake, so nothing it sends reaches
 * any actor. Plain tcp is an explicit opt-in (plaintext = true) for
 * trusted networks and tests. Key pairs: tools/troupe-keygen.
 *
 * Loss: nodes exchange heartbeats; a node silent for loss_timeout_ms
 * (default 1000) is declared lost: its actors' proxies end with TR_ELOST
 * (monitors get DOWN, links EXIT), requests in flight to it are answered
 * with TR_TAG_REMOTE_FAILED (TR_ELOST), and the actors this node ran on
 * its behalf (spawned by it) are cancelled — nothing is orphaned. When it
 * comes back (ZeroMQ reconnects by itself) a new session starts: old
 * proxies stay ended; spawn or look up again.
 *
 * Delivery is as for worker processes (remote.h): per sender-receiver
 * pair in order, at most once, and never silently lost. */
#ifndef TROUPE_NODE_H
#define TROUPE_NODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "actor.h"
#include "export.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Length of a CURVE key in Z85 text, without the NUL. */
#define TR_NODE_KEY_LEN 40

typedef struct tr_node_config {
    const char *name;   /* required: 1..63 bytes of [A-Za-z0-9._-] */
    const char *listen; /* e.g. "tcp://127.0.0.1:7000" ("tcp://127.0.0.1:*"
                           picks a port: tr_node_endpoint); NULL: do not
                           listen */
    /* This node's CURVE key pair (Z85, 40 characters each). Required
     * unless plaintext. */
    const char *public_key;
    const char *secret_key;
    /* Public keys (Z85) of the nodes allowed to connect to this one. */
    const char *const *allow;
    size_t nallow;
    /* Opt-in: no encryption, no authentication (any peer may connect). */
    bool plaintext;
    int64_t loss_timeout_ms; /* 0 = 1000 */
    unsigned max_peers;      /* distinct peer names; 0 = 64 */
    /* Largest frame accepted from a peer (bytes; ZMQ_MAXMSGSIZE too: a
     * peer that sends more is disconnected). 0 = 64 MiB + 64 KiB. */
    size_t max_frame;
    /* Credit per remote actor, as tr_pool_config.window: 0 = 1024, -1 =
     * none. Set tr_runtime_config.track_depth for this node to hold its
     * credit back while its actors are behind. */
    int32_t window;
} tr_node_config;

/* Makes rt a node (once: TR_ESTATE the second time). Errors: TR_EINVAL
 * (bad name, keys missing or malformed without plaintext, bad endpoint),
 * TR_ESYS (cannot listen: the log says why). */
TR_API int tr_node_start(tr_runtime *rt, const tr_node_config *cfg);

/* The endpoint this node listens on, with the port filled in (for
 * "tcp://host:*"). TR_ESTATE if it does not listen, TR_ETOOBIG if cap is
 * too small. */
TR_API int tr_node_endpoint(tr_runtime *rt, char *buf, size_t cap);

/* Connects to node `name` at `endpoint` (tcp://host:port or ipc://...),
 * whose CURVE public key is server_key (NULL with plaintext). Returns at
 * once; ZeroMQ connects (and reconnects) in the background. Spawns,
 * lookups and sends to that node made meanwhile wait for the handshake.
 * Errors: TR_ESTATE (not a node), TR_EINVAL, TR_EEXIST (already
 * connected to a node of that name), TR_ENOMEM (max_peers names). */
TR_API int tr_node_connect(tr_runtime *rt, const char *name,
                           const char *endpoint, const char *server_key);

/* 1 if node `name` is connected now, else 0. */
TR_API int tr_node_is_up(tr_runtime *rt, const char *name);

/* `to` is told of every node that connects (TR_TAG_NODE_UP) or is lost
 * (TR_TAG_NODE_DOWN); the payload (BYTES) is the node's name. */
#define TR_TAG_NODE_UP 0xFFFF0620u
#define TR_TAG_NODE_DOWN 0xFFFF0621u
TR_API int tr_node_subscribe(tr_runtime *rt, tr_ref to);

/* Spawns the registered behaviour `behavior` on node `node`: *out is its
 * local proxy, usable at once (what is sent before the actor exists waits
 * in order). The remote actor lives as long as the proxy: ending the
 * proxy (cancel, kill, its parent stopping) ends it. Errors: TR_ESTATE
 * (not a node), TR_ENOTFOUND (no such node: tr_node_connect first, or it
 * has not connected in yet), TR_EINVAL, TR_ETOOBIG; an unknown behaviour
 * over there ends the proxy with TR_ENOTFOUND. */
TR_API int tr_node_spawn(tr_ctx *ctx, const char *node, const char *behavior,
                         const void *init, size_t init_len, tr_ref *out);
TR_API int tr_runtime_node_spawn(tr_runtime *rt, const char *node,
                                 const char *behavior, const void *init,
                                 size_t init_len, tr_ref *out);

/* Registers ref under name in this runtime (for lookups by other nodes
 * and tr_whereis). The name is released when the actor ends.
 * TR_EINVAL, TR_EEXIST (taken by a live actor), TR_ENOACTOR. */
TR_API int tr_name_register(tr_runtime *rt, const char *name, tr_ref ref);
TR_API int tr_name_unregister(tr_runtime *rt, const char *name);
/* The local actor registered under name: 0 or TR_ENOTFOUND. */
TR_API int tr_whereis(tr_runtime *rt, const char *name, tr_ref *out);

/* Looks up the actor registered as `name` on node `node`: *out is a proxy
 * for it, usable at once. The proxy does not own the actor: ending the
 * proxy leaves it running. If there is no such name over there, the proxy
 * ends with TR_ENOTFOUND (monitor it to know). Errors as tr_node_spawn. */
TR_API int tr_node_lookup(tr_ctx *ctx, const char *node, const char *name,
                          tr_ref *out);
TR_API int tr_runtime_node_lookup(tr_runtime *rt, const char *node,
                                  const char *name, tr_ref *out);

typedef struct tr_transport_stats {
    uint64_t frames_in;    /* accepted */
    uint64_t frames_out;   /* sent */
    uint64_t rejected;     /* malformed, oversized, wrong version */
    uint64_t unknown_peer; /* frames from a peer without a HELLO */
    uint64_t zap_denied;   /* CURVE handshakes refused by the allowlist */
    uint64_t zap_allowed;
    uint64_t dropped_out; /* frames that could not be sent */
    uint64_t peers_lost;  /* worker deaths and node losses */
    uint64_t retried;     /* requests sent again (TR_REG_IDEMPOTENT) */
    uint64_t held;        /* envelopes held back now for want of credit */
    uint64_t held_peak;   /* the most ever held back at once */
} tr_transport_stats;

/* Counters of the node transport (node = true) or of the worker pool. */
TR_API int tr_transport_stats_get(tr_runtime *rt, bool node,
                                  tr_transport_stats *out);

#ifdef __cplusplus
}
#endif
#endif
