/* examples/service_wire.h — the wire format of examples/service.c and the
 * job its workers run, shared by the service, its client
 * (examples/service_client.c) and tests/integration/test_service.c.
 *
 * The format is documented at the top of examples/service.c. Everything
 * here is plain C (no troupe, no ZeroMQ): fixed-size frames encoded byte
 * by byte in little-endian order, so no struct padding or host byte order
 * ever reaches the wire. */
#ifndef TROUPE_EXAMPLE_SERVICE_WIRE_H
#define TROUPE_EXAMPLE_SERVICE_WIRE_H

#include <stddef.h>
#include <stdint.h>

/* "SVQ1" and "SVR1" as they appear on the wire (little-endian u32). */
#define SVC_REQ_MAGIC 0x31515653u
#define SVC_REP_MAGIC 0x31525653u
#define SVC_REQ_SIZE 24u
#define SVC_REP_SIZE 24u

/* Limits a valid request respects. A job of SVC_MAX_WORK rounds takes
 * about 20 s on a 2020s core; the deadline bounds it anyway. */
#define SVC_MAX_WORK 10000000000ull
#define SVC_MAX_DEADLINE_MS 60000u

typedef enum svc_status {
    SVC_OK = 0,            /* result = the job's digest */
    SVC_DEADLINE = 1,      /* accepted; not done within its deadline */
    SVC_BUSY = 2,          /* rejected at once: over the rate, or full */
    SVC_BAD = 3,           /* malformed request (id = 0 if unreadable) */
    SVC_SHUTTING_DOWN = 4, /* rejected at once: the service is stopping */
    SVC_FAILED = 5         /* accepted; its worker was lost or it was
                              still running when the drain time ran out */
} svc_status;
#define SVC_NSTATUS 6

static inline const char *svc_status_name(uint32_t s) {
    static const char *const names[SVC_NSTATUS] = {
        "ok", "deadline", "busy", "bad", "shutting_down", "failed"};
    return s < SVC_NSTATUS ? names[s] : "unknown";
}

typedef struct svc_request {
    uint64_t id;          /* chosen by the client, echoed in the reply */
    uint64_t work;        /* rounds of the job, 1..SVC_MAX_WORK */
    uint32_t deadline_ms; /* 1..SVC_MAX_DEADLINE_MS, from arrival */
} svc_request;

typedef struct svc_reply {
    uint64_t id;
    uint32_t status; /* svc_status */
    uint64_t result; /* SVC_OK: the digest; 0 otherwise */
} svc_reply;

static inline void svc_put32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static inline void svc_put64(unsigned char *p, uint64_t v) {
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static inline uint32_t svc_get32(const unsigned char *p) {
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static inline uint64_t svc_get64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static inline void svc_request_encode(const svc_request *r,
                                      unsigned char out[SVC_REQ_SIZE]) {
    svc_put32(out, SVC_REQ_MAGIC);
    svc_put32(out + 4, r->deadline_ms);
    svc_put64(out + 8, r->id);
    svc_put64(out + 16, r->work);
}

/* Decodes and validates one request frame. Returns NULL when it is valid,
 * else a short reason for the log. r->id is filled whenever the frame is
 * long enough to hold one (so a BAD reply can still name it), else 0. */
static inline const char *svc_request_decode(const void *data, size_t len,
                                             svc_request *r) {
    const unsigned char *p = data;
    *r = (svc_request){0};
    if (len >= 16)
        r->id = svc_get64(p + 8);
    if (len != SVC_REQ_SIZE)
        return "wrong size";
    if (svc_get32(p) != SVC_REQ_MAGIC)
        return "wrong magic";
    r->deadline_ms = svc_get32(p + 4);
    r->work = svc_get64(p + 16);
    if (r->work == 0 || r->work > SVC_MAX_WORK)
        return "work out of range";
    if (r->deadline_ms == 0 || r->deadline_ms > SVC_MAX_DEADLINE_MS)
        return "deadline out of range";
    return NULL;
}

static inline void svc_reply_encode(const svc_reply *r,
                                    unsigned char out[SVC_REP_SIZE]) {
    svc_put32(out, SVC_REP_MAGIC);
    svc_put32(out + 4, r->status);
    svc_put64(out + 8, r->id);
    svc_put64(out + 16, r->result);
}

/* 0, or -1 for a frame that is not a reply. */
static inline int svc_reply_decode(const void *data, size_t len, svc_reply *r) {
    const unsigned char *p = data;
    if (len != SVC_REP_SIZE || svc_get32(p) != SVC_REP_MAGIC)
        return -1;
    r->status = svc_get32(p + 4);
    r->id = svc_get64(p + 8);
    r->result = svc_get64(p + 16);
    return 0;
}

/* The job: rounds [from, to) of a 64-bit mixer, each depending on the
 * last (no vectorising, no shortcut), so `work` rounds cost `work` times
 * a few cycles. The digest of request id with work w is
 * svc_job_rounds(id, 0, w), which is what a client recomputes to check a
 * result; a worker runs it in slices to look at its deadline between
 * them. */
static inline uint64_t svc_job_rounds(uint64_t h, uint64_t from, uint64_t to) {
    for (uint64_t round = from; round < to; round++) {
        h ^= h >> 33;
        h *= 0xff51afd7ed558ccdu;
        h ^= h >> 29;
        h += round;
    }
    return h;
}

#endif
