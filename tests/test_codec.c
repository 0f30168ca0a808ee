/* test_codec — the wire codec (transport/codec.h) and the public msgpack
 * helpers (troupe/mpack.h).
 *
 * - every envelope kind with every payload kind, accepted or refused as
 *   the protocol table says, and decoded back equal; zero-copy views;
 * - batching: header widths, max_batch / max_frame -> TR_EAGAIN, a single
 *   envelope too big -> TR_ETOOBIG, no allocation after warm-up;
 * - every rejection class with its exact code and reason: truncation at
 *   every byte offset, oversize, wrong version, unknown kind, huge claimed
 *   counts in tiny inputs (without allocating), nesting past the limit,
 *   wrong types and disallowed values in every field; all-or-nothing;
 * - HELLO payload and version negotiation;
 * - tr_mp_writer / tr_mp_reader round trips, encodings at every width
 *   boundary, bounds errors, sticky writer errors, injected ENOMEM;
 * - interoperability with msgpack-c both ways;
 * - a seeded random round trip + mutation test (TROUPE_TEST_SEED replays).
 */
#include "testutil.h"

#include <ctype.h>
#include <math.h>

#include <msgpack.h>

#include "transport/codec.h"
#include "troupe/mpack.h"

/* ---- helpers ----------------------------------------------------------------
 */

/* Allocation hook: counts calls; fails once g_fail_after reaches 0. */
static unsigned long g_allocs;
static long g_fail_after = -1;

static void *hook_realloc(void *p, size_t n) {
    g_allocs++;
    if (g_fail_after == 0)
        return NULL;
    if (g_fail_after > 0)
        g_fail_after--;
    return realloc(p, n);
}

static int group_setup(void **state) {
    (void)state;
    tr__codec_set_realloc(hook_realloc);
    return 0;
}

static int group_teardown(void **state) {
    (void)state;
    tr__codec_set_realloc(NULL);
    return 0;
}

static int test_setup(void **state) {
    (void)state;
    g_allocs = 0;
    g_fail_after = -1;
    return 0;
}

#define T(fn) cmocka_unit_test_setup(fn, test_setup)

#define ASSERT_REJECT(dec, p, len, code, why)                                  \
    do {                                                                       \
        uint32_t n_ = 99;                                                      \
        TU_ASSERT_RC(tr__decoder_decode((dec), (p), (len), &n_), (code));      \
        if ((dec)->reason != (why))                                            \
            fail_msg("reason %s, expected %s",                                 \
                     tr__codec_reject_name((dec)->reason),                     \
                     tr__codec_reject_name(why));                              \
        assert_int_equal(n_, 0);                                               \
    } while (0)

/* "91 9a 01 ..." -> bytes; returns the length. */
static size_t unhex(unsigned char *out, size_t cap, const char *hex) {
    size_t n = 0;
    for (const char *p = hex; *p != '\0';) {
        if (*p == ' ') {
            p++;
            continue;
        }
        assert_true(isxdigit((unsigned char)p[0]) &&
                    isxdigit((unsigned char)p[1]));
        assert_true(n < cap);
        char pair[3] = {p[0], p[1], 0};
        out[n++] = (unsigned char)strtoul(pair, NULL, 16);
        p += 2;
    }
    return n;
}

static tr__env mk(uint8_t kind, uint64_t s, uint64_t t, uint64_t req,
                  uint32_t tag, int64_t aux) {
    return (tr__env){.kind = kind,
                     .sender = s,
                     .target = t,
                     .req_id = req,
                     .tag = tag,
                     .aux = aux,
                     .pkind = TR_PAYLOAD_NONE};
}

typedef struct frame {
    unsigned char *p;
    size_t len;
} frame;

/* Encodes envs into one frame with the given limits (NULL = default) and
 * returns a heap copy. */
static frame encode_lim(const tr__env *envs, size_t n,
                        const tr__codec_limits *lim) {
    tr__encoder e;
    TU_ASSERT_OK(tr__encoder_init(&e, lim));
    for (size_t i = 0; i < n; i++)
        TU_ASSERT_OK(tr__encoder_add(&e, &envs[i]));
    const unsigned char *f;
    size_t len;
    TU_ASSERT_OK(tr__encoder_finish(&e, &f, &len));
    frame out = {malloc(len), len};
    assert_non_null(out.p);
    memcpy(out.p, f, len);
    tr__encoder_free(&e);
    return out;
}

static frame encode(const tr__env *envs, size_t n) {
    return encode_lim(envs, n, NULL);
}

/* Decodes f and asserts it gives exactly envs. */
static void assert_decodes_to(const frame *f, const tr__env *envs, size_t n) {
    tr__decoder d;
    TU_ASSERT_OK(tr__decoder_init(&d, NULL));
    uint32_t got = 0;
    TU_ASSERT_OK(tr__decoder_decode(&d, f->p, f->len, &got));
    assert_int_equal(got, n);
    for (size_t i = 0; i < n; i++) {
        if (!tr__env_equal(&d.envs[i], &envs[i]))
            fail_msg("envelope %zu (kind %u) differs after decoding", i,
                     envs[i].kind);
        if (d.envs[i].len > 0) /* zero copy: a view into the frame */
            assert_true(d.envs[i].data >= f->p &&
                        d.envs[i].data + d.envs[i].len <= f->p + f->len);
    }
    assert_int_equal(d.stats.frames, 1);
    assert_int_equal(d.stats.envelopes, n);
    tr__decoder_free(&d);
}

/* A sample MSGPACK payload: {"op": "sum", "args": [1, -2, 300]} */
static const unsigned char k_obj[] = {0x82, 0xa2, 'o',  'p',  0xa3, 's', 'u',
                                      'm',  0xa4, 'a',  'r',  'g',  's', 0x93,
                                      0x01, 0xfe, 0xcd, 0x01, 0x2c};

static void set_payload(tr__env *e, uint8_t pkind) {
    e->pkind = pkind;
    e->u64 = 0;
    e->data = NULL;
    e->len = 0;
    if (pkind == TR_PAYLOAD_U64) {
        e->u64 = 0xfedcba9876543210ull;
    } else if (pkind == TR_PAYLOAD_BYTES) {
        e->data = (const unsigned char *)"bytes\0with\0nuls";
        e->len = 15;
    } else if (pkind == TR_PAYLOAD_MSGPACK) {
        e->data = k_obj;
        e->len = sizeof k_obj;
    }
}

/* ---- the protocol table, restated independently of codec.c
 * ------------------- */

#define N (1u << TR_PAYLOAD_NONE)
#define U (1u << TR_PAYLOAD_U64)
#define B (1u << TR_PAYLOAD_BYTES)
#define M (1u << TR_PAYLOAD_MSGPACK)

static const struct valid_case {
    uint8_t kind;
    unsigned pkinds;
    uint64_t s, t, req;
    uint32_t tag;
    int64_t aux;
    uint16_t flags;
} k_valid[] = {
    {TR__K_HELLO, M, 0, 0, 0, 0, 0, 0},
    {TR__K_BYE, N | B, 0, 0, 0, 0, TR_EPROTO, 0},
    {TR__K_HEARTBEAT, N | U, 0, 0, 0, 0, 5, 0},
    {TR__K_CREDIT, N, 1, 0, 0, 0, 64, 0},
    {TR__K_SEND, N | U | B | M, 1, 2, 0, 7, 0, 0},
    {TR__K_SEND, N | U | B | M, 0, 2, 0, TR_TAG_SYSTEM - 1, 0, 0},
    /* A channel's and a limiter's tags cross (open, close, take, closed;
     * grant, acquire, release). */
    {TR__K_SEND, N | U | B | M, 1, 2, 0, TR__TAG_CHANNEL_MIN, 0, 0},
    {TR__K_SEND, N | U | B | M, 1, 2, 0, TR__TAG_CHANNEL_MAX, 0, 0},
    {TR__K_SEND, N | U | B | M, 1, 2, 0, TR__TAG_LIMITER_MIN, 0, 0},
    {TR__K_SEND, N | U | B | M, 1, 2, 0, TR__TAG_LIMITER_MAX, 0, 0},
    {TR__K_REQUEST, N | U | B | M, 1, 2, 9, 7, 1000, 0},
    {TR__K_REQUEST, N | U | B | M, 1, 2, UINT64_MAX, 7, -1, 0},
    {TR__K_REPLY, N | U | B | M, 2, 1, 9, 7, 0, 0},
    {TR__K_REPLY, N | U | B | M, 2, 1, 9, 0, TR_ETIMEDOUT, 0},
    {TR__K_CANCEL, N | U, 1, 2, 9, 0, 2, 0},
    {TR__K_CANCEL, N | U, 1, 2, 0, 0, 4, TR__ENV_F_KILL},
    {TR__K_SPAWN, M, 1, 0, 9, 0, 0, 0},
    {TR__K_SPAWN_REPLY, N | B, 3, 1, 9, 0, 0, 0},
    {TR__K_SPAWN_REPLY, N | B, 0, 1, 9, 0, TR_ENOTFOUND, 0},
    {TR__K_LINK, N, 1, 2, 0, 0, 0, 0},
    {TR__K_LINK, N, 1, 2, 0, 0, 0, TR__ENV_F_UNDO},
    {TR__K_MONITOR, N, 1, 2, 4, 0, 0, 0},
    {TR__K_MONITOR, N, 1, 2, 4, 0, 0, TR__ENV_F_UNDO},
    {TR__K_EXIT, N | B, 2, 1, 0, 0, INT64_MIN, 0},
    {TR__K_DOWN, N | B, 2, 1, 4, 0, INT64_MAX, 0},
};

static void test_every_kind_and_payload(void **state) {
    (void)state;
    tr__env all[128];
    size_t nall = 0;
    unsigned kinds_seen = 0;
    for (size_t i = 0; i < sizeof k_valid / sizeof k_valid[0]; i++) {
        const struct valid_case *c = &k_valid[i];
        kinds_seen |= 1u << c->kind;
        for (uint8_t pk = TR_PAYLOAD_NONE; pk <= TR_PAYLOAD_MSGPACK; pk++) {
            tr__env e = mk(c->kind, c->s, c->t, c->req, c->tag, c->aux);
            e.flags = c->flags;
            set_payload(&e, pk);
            tr__encoder enc;
            TU_ASSERT_OK(tr__encoder_init(&enc, NULL));
            int want = pk == TR_PAYLOAD_PTR       ? TR_EPAYLOAD
                       : (c->pkinds & (1u << pk)) ? 0
                                                  : TR_EINVAL;
            int rc = tr__encoder_add(&enc, &e);
            if (rc != want)
                fail_msg("kind %u pkind %u: %s, expected %s", c->kind, pk,
                         tu_err_text(rc), tu_err_text(want));
            tr__encoder_free(&enc);
            if (want != 0)
                continue;
            frame f = encode(&e, 1);
            assert_int_equal(f.len, 1 + tr__env_size(&e));
            assert_decodes_to(&f, &e, 1);
            free(f.p);
            all[nall++] = e;
        }
    }
    assert_int_equal(kinds_seen, ((1u << TR__K_COUNT) - 1) & ~1u);
    /* All of them in one batch, in order. */
    frame f = encode(all, nall);
    assert_int_equal(f.p[0], 0xdc); /* array16: more than 15 */
    assert_decodes_to(&f, all, nall);
    free(f.p);
}

static void test_payload_values(void **state) {
    (void)state;
    static const uint64_t u64s[] = {0,
                                    1,
                                    127,
                                    128,
                                    255,
                                    256,
                                    65535,
                                    65536,
                                    0xffffffffu,
                                    1ull << 32,
                                    UINT64_MAX - 1,
                                    UINT64_MAX};
    tr__env envs[64];
    size_t n = 0;
    for (size_t i = 0; i < sizeof u64s / sizeof u64s[0]; i++) {
        envs[n] = mk(TR__K_SEND, u64s[i], u64s[i] | 1, 0,
                     (uint32_t)u64s[i] % TR_TAG_SYSTEM, 0);
        envs[n].pkind = TR_PAYLOAD_U64;
        envs[n++].u64 = u64s[i];
    }
    static const int64_t auxs[] = {INT64_MIN, INT32_MIN - 1ll,
                                   INT32_MIN, -32769,
                                   -32768,    -129,
                                   -128,      -33,
                                   -32,       -1,
                                   0};
    for (size_t i = 0; i < sizeof auxs / sizeof auxs[0]; i++)
        envs[n++] = mk(TR__K_EXIT, 5, 6, 0, 0, auxs[i]);
    static const size_t blens[] = {0, 1, 24, 255, 256, 65535, 65536, 1 << 20};
    unsigned char *big = malloc(1 << 20);
    assert_non_null(big);
    for (size_t i = 0; i < (1u << 20); i++)
        big[i] = (unsigned char)(i * 31 + 7);
    for (size_t i = 0; i < sizeof blens / sizeof blens[0]; i++) {
        envs[n] = mk(TR__K_SEND, 1, 2, 0, 3, 0);
        envs[n].pkind = TR_PAYLOAD_BYTES;
        envs[n].data = big;
        envs[n++].len = blens[i];
    }
    /* MSGPACK payloads of every msgpack type, scalars included. */
    static const char *const objs[] = {"c0",
                                       "c2",
                                       "c3",
                                       "00",
                                       "7f",
                                       "ff",
                                       "d3 80 00 00 00 00 00 00 00",
                                       "cf ff ff ff ff ff ff ff ff",
                                       "ca 3f c0 00 00",
                                       "cb 40 09 21 fb 54 44 2d 18",
                                       "a0",
                                       "a3 61 62 63",
                                       "c4 00",
                                       "c4 02 00 ff",
                                       "d6 ff 00 00 00 01",
                                       "c7 03 05 01 02 03",
                                       "90",
                                       "80",
                                       "93 90 80 91 c0",
                                       "82 a1 61 01 01 a1 62"};
    unsigned char objbuf[sizeof objs / sizeof objs[0]][32];
    for (size_t i = 0; i < sizeof objs / sizeof objs[0]; i++) {
        envs[n] = mk(TR__K_REPLY, 2, 1, i + 1, 4, 0);
        envs[n].pkind = TR_PAYLOAD_MSGPACK;
        envs[n].data = objbuf[i];
        envs[n++].len = unhex(objbuf[i], sizeof objbuf[i], objs[i]);
    }
    assert_true(n <= sizeof envs / sizeof envs[0]);
    frame f = encode(envs, n);
    assert_decodes_to(&f, envs, n);
    free(f.p);
    free(big);
}

/* Known bytes: the envelope layout is the protocol, so pin it. */
static void test_exact_bytes(void **state) {
    (void)state;
    unsigned char want[64];
    tr__env e = mk(TR__K_SEND, 1, 2, 0, 7, 0);
    frame f = encode(&e, 1);
    size_t wl = unhex(want, sizeof want, "91 9a 01 05 00 01 02 00 07 00 00 c0");
    assert_int_equal(f.len, wl);
    assert_memory_equal(f.p, want, wl);
    free(f.p);

    e = mk(TR__K_REQUEST, 0x100000001ull, 0x300000002ull, 300, 0x10000, -1);
    e.pkind = TR_PAYLOAD_BYTES;
    e.data = (const unsigned char *)"hi";
    e.len = 2;
    f = encode(&e, 1);
    wl = unhex(want, sizeof want,
               "91 9a 01 06 00 cf 00 00 00 01 00 00 00 01"
               " cf 00 00 00 03 00 00 00 02 cd 01 2c ce 00 01 00 00 ff 02"
               " c4 02 68 69");
    assert_int_equal(f.len, wl);
    assert_memory_equal(f.p, want, wl);
    free(f.p);
}

/* ---- batching
 * ------------------------------------------------------------------- */

static void test_batch_header_widths(void **state) {
    (void)state;
    tr__codec_limits lim;
    tr__codec_limits_default(&lim);
    lim.max_batch = 70000;
    tr__env *envs = calloc(70000, sizeof *envs);
    assert_non_null(envs);
    for (uint32_t i = 0; i < 70000; i++) {
        envs[i] = mk(TR__K_SEND, 1, 2, 0, i % 1000, 0);
        envs[i].pkind = TR_PAYLOAD_U64;
        envs[i].u64 = i;
    }
    static const struct {
        uint32_t n;
        unsigned char first;
    } cases[] = {{1, 0x91},     {15, 0x9f},    {16, 0xdc},
                 {65535, 0xdc}, {65536, 0xdd}, {70000, 0xdd}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        frame f = encode_lim(envs, cases[c].n, &lim);
        assert_int_equal(f.p[0], cases[c].first);
        tr__decoder d;
        TU_ASSERT_OK(tr__decoder_init(&d, &lim));
        uint32_t got;
        TU_ASSERT_OK(tr__decoder_decode(&d, f.p, f.len, &got));
        assert_int_equal(got, cases[c].n);
        for (uint32_t i = 0; i < got; i++)
            assert_true(tr__env_equal(&d.envs[i], &envs[i]));
        tr__decoder_free(&d);
        free(f.p);
    }
    free(envs);
}

static void test_batch_full_and_too_big(void **state) {
    (void)state;
    tr__encoder e;
    TU_ASSERT_OK(tr__encoder_init(&e, NULL));
    const unsigned char *f;
    size_t len;
    TU_ASSERT_RC(tr__encoder_finish(&e, &f, &len), TR_ESTATE);
    tr__env s = mk(TR__K_SEND, 1, 2, 0, 7, 0);
    for (uint32_t i = 0; i < TR__LIM_BATCH; i++)
        TU_ASSERT_OK(tr__encoder_add(&e, &s));
    TU_ASSERT_RC(tr__encoder_add(&e, &s), TR_EAGAIN);
    TU_ASSERT_OK(tr__encoder_finish(&e, &f, &len));
    assert_int_equal(len, 3 + TR__LIM_BATCH * 11u);
    /* A second finish gives the same frame; adding after reset works. */
    const unsigned char *f2;
    size_t len2;
    TU_ASSERT_OK(tr__encoder_finish(&e, &f2, &len2));
    assert_ptr_equal(f, f2);
    assert_int_equal(len, len2);
    tr__encoder_reset(&e);
    TU_ASSERT_OK(tr__encoder_add(&e, &s));
    TU_ASSERT_OK(tr__encoder_finish(&e, &f, &len));
    assert_int_equal(len, 12);
    /* add after finish: the frame grows, the header follows. */
    TU_ASSERT_OK(tr__encoder_add(&e, &s));
    TU_ASSERT_OK(tr__encoder_finish(&e, &f, &len));
    assert_int_equal(len, 23);
    assert_int_equal(f[0], 0x92);
    tr__encoder_free(&e);

    /* max_frame: fill to EAGAIN; the frame fits the limit exactly-ish. */
    tr__codec_limits lim;
    tr__codec_limits_default(&lim);
    lim.max_frame = 100;
    TU_ASSERT_OK(tr__encoder_init(&e, &lim));
    uint32_t added = 0;
    int rc;
    while ((rc = tr__encoder_add(&e, &s)) == 0)
        added++;
    TU_ASSERT_RC(rc, TR_EAGAIN);
    assert_int_equal(added, 9); /* 1 + 9 * 11 = 100 */
    TU_ASSERT_OK(tr__encoder_finish(&e, &f, &len));
    assert_int_equal(len, 100);
    tr__decoder d;
    TU_ASSERT_OK(tr__decoder_init(&d, &lim));
    uint32_t got;
    TU_ASSERT_OK(tr__decoder_decode(&d, f, len, &got));
    assert_int_equal(got, 9);
    /* An envelope that cannot fit even alone: ETOOBIG, not EAGAIN. */
    tr__encoder_reset(&e);
    tr__env b = s;
    b.pkind = TR_PAYLOAD_BYTES;
    b.data = (const unsigned char *)"0123456789012345678901234567890123456789"
                                    "0123456789012345678901234567890123456789"
                                    "0123456789";
    b.len = 90;
    TU_ASSERT_RC(tr__encoder_add(&e, &b), TR_ETOOBIG);
    b.len = 88; /* batch 1 + fields 10 + bin8 header 2 + 88 = 101 */
    TU_ASSERT_RC(tr__encoder_add(&e, &b), TR_ETOOBIG);
    b.len = 87; /* = 100: fits exactly */
    TU_ASSERT_OK(tr__encoder_add(&e, &b));
    TU_ASSERT_OK(tr__encoder_finish(&e, &f, &len));
    assert_int_equal(len, 100);
    TU_ASSERT_OK(tr__decoder_decode(&d, f, len, &got));
    tr__decoder_free(&d);
    tr__encoder_free(&e);

    /* The payload limit. */
    tr__codec_limits_default(&lim);
    lim.max_payload = 10;
    TU_ASSERT_OK(tr__encoder_init(&e, &lim));
    b.len = 11;
    TU_ASSERT_RC(tr__encoder_add(&e, &b), TR_ETOOBIG);
    b.len = 10;
    TU_ASSERT_OK(tr__encoder_add(&e, &b));
    tr__encoder_free(&e);
}

static void test_encoder_refuses_bad_envelopes(void **state) {
    (void)state;
    tr__encoder e;
    TU_ASSERT_OK(tr__encoder_init(&e, NULL));
    TU_ASSERT_OK(tr__encoder_add(&e, &(tr__env){.kind = TR__K_BYE}));
    size_t len0 = e.len;
    static const struct {
        const char *what;
        tr__env env;
        int rc;
    } bad[] = {
        {"kind 0", {.kind = 0}, TR_EINVAL},
        {"kind COUNT", {.kind = TR__K_COUNT}, TR_EINVAL},
        {"PTR",
         {.kind = TR__K_SEND, .target = 2, .pkind = TR_PAYLOAD_PTR},
         TR_EPAYLOAD},
        {"pkind 9", {.kind = TR__K_SEND, .target = 2, .pkind = 9}, TR_EINVAL},
        {"SEND target 0", {.kind = TR__K_SEND}, TR_EINVAL},
        {"SEND req_id",
         {.kind = TR__K_SEND, .target = 2, .req_id = 1},
         TR_EINVAL},
        {"SEND system tag",
         {.kind = TR__K_SEND, .target = 2, .tag = TR_TAG_SYSTEM},
         TR_EINVAL},
        {"SEND system tag below the channel's",
         {.kind = TR__K_SEND, .target = 2, .tag = TR__TAG_CHANNEL_MIN - 1},
         TR_EINVAL},
        {"SEND system tag above the channel's",
         {.kind = TR__K_SEND, .target = 2, .tag = TR__TAG_CHANNEL_MAX + 1},
         TR_EINVAL},
        {"SEND a limiter's timer tag",
         {.kind = TR__K_SEND, .target = 2, .tag = TR__TAG_LIMITER_MAX + 1},
         TR_EINVAL},
        {"SEND DOWN tag",
         {.kind = TR__K_SEND, .target = 2, .tag = TR_TAG_DOWN},
         TR_EINVAL},
        {"REQUEST channel tag",
         {.kind = TR__K_REQUEST,
          .sender = 1,
          .target = 2,
          .req_id = 1,
          .tag = TR__TAG_CHANNEL_MIN},
         TR_EINVAL},
        {"REPLY channel tag",
         {.kind = TR__K_REPLY, .target = 2, .req_id = 1,
          .tag = TR__TAG_CHANNEL_MIN},
         TR_EINVAL},
        {"SEND aux", {.kind = TR__K_SEND, .target = 2, .aux = 1}, TR_EINVAL},
        {"SEND flag", {.kind = TR__K_SEND, .target = 2, .flags = 1}, TR_EINVAL},
        {"REQUEST req_id 0",
         {.kind = TR__K_REQUEST, .sender = 1, .target = 2},
         TR_EINVAL},
        {"REQUEST no sender",
         {.kind = TR__K_REQUEST, .target = 2, .req_id = 1},
         TR_EINVAL},
        {"REQUEST timeout -2",
         {.kind = TR__K_REQUEST,
          .sender = 1,
          .target = 2,
          .req_id = 1,
          .aux = -2},
         TR_EINVAL},
        {"REPLY status 1",
         {.kind = TR__K_REPLY, .target = 2, .req_id = 1, .aux = 1},
         TR_EINVAL},
        {"CANCEL kill a request",
         {.kind = TR__K_CANCEL,
          .target = 2,
          .req_id = 1,
          .flags = TR__ENV_F_KILL},
         TR_EINVAL},
        {"CANCEL undo flag",
         {.kind = TR__K_CANCEL, .target = 2, .flags = TR__ENV_F_UNDO},
         TR_EINVAL},
        {"SPAWN_REPLY ok without actor",
         {.kind = TR__K_SPAWN_REPLY, .target = 2, .req_id = 1},
         TR_EINVAL},
        {"SPAWN_REPLY failed with actor",
         {.kind = TR__K_SPAWN_REPLY,
          .sender = 3,
          .target = 2,
          .req_id = 1,
          .aux = -3},
         TR_EINVAL},
        {"CREDIT 0", {.kind = TR__K_CREDIT}, TR_EINVAL},
        {"HEARTBEAT seq -1", {.kind = TR__K_HEARTBEAT, .aux = -1}, TR_EINVAL},
        {"BYE reason 1", {.kind = TR__K_BYE, .aux = 1}, TR_EINVAL},
        {"LINK tag",
         {.kind = TR__K_LINK, .sender = 1, .target = 2, .tag = 1},
         TR_EINVAL},
        {"MONITOR id 0",
         {.kind = TR__K_MONITOR, .sender = 1, .target = 2},
         TR_EINVAL},
        {"HELLO without payload", {.kind = TR__K_HELLO}, TR_EINVAL},
        {"HELLO empty msgpack",
         {.kind = TR__K_HELLO, .pkind = TR_PAYLOAD_MSGPACK},
         TR_EPROTO},
        {"MSGPACK two objects",
         {.kind = TR__K_SEND,
          .target = 2,
          .pkind = TR_PAYLOAD_MSGPACK,
          .data = (const unsigned char *)"\x01\x02",
          .len = 2},
         TR_EPROTO},
        {"MSGPACK truncated",
         {.kind = TR__K_SEND,
          .target = 2,
          .pkind = TR_PAYLOAD_MSGPACK,
          .data = (const unsigned char *)"\x92\x01",
          .len = 2},
         TR_EPROTO},
        {"MSGPACK 0xc1",
         {.kind = TR__K_SEND,
          .target = 2,
          .pkind = TR_PAYLOAD_MSGPACK,
          .data = (const unsigned char *)"\xc1",
          .len = 1},
         TR_EPROTO},
        {"MSGPACK array over max_array",
         {.kind = TR__K_SEND,
          .target = 2,
          .pkind = TR_PAYLOAD_MSGPACK,
          .data = (const unsigned char *)"\xdd\x00\x10\x00\x01",
          .len = 5},
         TR_ETOOBIG},
        {"BYTES NULL data",
         {.kind = TR__K_SEND, .target = 2, .pkind = TR_PAYLOAD_BYTES, .len = 3},
         TR_EINVAL},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc = tr__encoder_add(&e, &bad[i].env);
        if (rc != bad[i].rc)
            fail_msg("%s: %s, expected %s", bad[i].what, tu_err_text(rc),
                     tu_err_text(bad[i].rc));
        assert_int_equal(e.count, 1); /* the frame is unchanged */
        assert_int_equal(e.len, len0);
    }
    TU_ASSERT_RC(tr__encoder_add(NULL, &bad[0].env), TR_EINVAL);
    TU_ASSERT_RC(tr__encoder_add(&e, NULL), TR_EINVAL);
    tr__encoder_free(&e);
}

static void test_no_allocation_after_warmup(void **state) {
    (void)state;
    tr__encoder e;
    tr__decoder d;
    TU_ASSERT_OK(tr__encoder_init(&e, NULL));
    TU_ASSERT_OK(tr__decoder_init(&d, NULL));
    tr__env s = mk(TR__K_SEND, 1, 2, 0, 7, 0);
    set_payload(&s, TR_PAYLOAD_MSGPACK);
    for (int round = 0; round < 3; round++) {
        unsigned long before = g_allocs;
        tr__encoder_reset(&e);
        for (int i = 0; i < 1000; i++)
            TU_ASSERT_OK(tr__encoder_add(&e, &s));
        const unsigned char *f;
        size_t len;
        TU_ASSERT_OK(tr__encoder_finish(&e, &f, &len));
        uint32_t got;
        TU_ASSERT_OK(tr__decoder_decode(&d, f, len, &got));
        assert_int_equal(got, 1000);
        if (round > 0) /* warm: no allocation to encode or decode a frame */
            assert_int_equal(g_allocs, before);
    }
    /* A huge frame's buffer is not kept by reset. */
    unsigned char *big = calloc(1, 2u << 20);
    assert_non_null(big);
    tr__env b = mk(TR__K_SEND, 1, 2, 0, 7, 0);
    b.pkind = TR_PAYLOAD_BYTES;
    b.data = big;
    b.len = 2u << 20;
    tr__encoder_reset(&e);
    TU_ASSERT_OK(tr__encoder_add(&e, &b));
    assert_true(e.cap > TR__ENC_KEEP);
    tr__encoder_reset(&e);
    assert_int_equal(e.cap, 0);
    free(big);
    tr__decoder_free(&d);
    tr__encoder_free(&e);
}

static void test_out_of_memory(void **state) {
    (void)state;
    tr__encoder e;
    TU_ASSERT_OK(tr__encoder_init(&e, NULL)); /* allocates nothing */
    tr__env s = mk(TR__K_SEND, 1, 2, 0, 7, 0);
    g_fail_after = 0;
    TU_ASSERT_RC(tr__encoder_add(&e, &s), TR_ENOMEM);
    assert_int_equal(e.count, 0);
    g_fail_after = -1;
    TU_ASSERT_OK(tr__encoder_add(&e, &s));
    /* Growth failure keeps what is there. */
    unsigned char big[8000] = {0};
    tr__env b = s;
    b.pkind = TR_PAYLOAD_BYTES;
    b.data = big;
    b.len = sizeof big;
    g_fail_after = 0;
    TU_ASSERT_RC(tr__encoder_add(&e, &b), TR_ENOMEM);
    g_fail_after = -1;
    const unsigned char *f;
    size_t len;
    TU_ASSERT_OK(tr__encoder_finish(&e, &f, &len));
    assert_int_equal(len, 12);
    tr__encoder_free(&e);

    tr__decoder d;
    g_fail_after = 0;
    TU_ASSERT_RC(tr__decoder_init(&d, NULL), TR_ENOMEM);
    g_fail_after = -1;
}

/* ---- rejection
 * ---------------------------------------------------------------------- */

#define SEND_ENV "9a 01 05 00 01 02 00 07 00 00 c0"
#define EP TR_EPROTO
#define TB TR_ETOOBIG

static const struct reject_case {
    const char *what;
    const char *hex;
    int code;
    tr__codec_reject why;
} k_rejects[] = {
    {"empty frame", "", EP, TR__REJ_TRUNCATED},
    {"frame is nil", "c0", EP, TR__REJ_MALFORMED},
    {"empty batch", "90", EP, TR__REJ_MALFORMED},
    {"reserved byte 0xc1", "c1", EP, TR__REJ_MALFORMED},
    {"envelope is nil", "91 c0", EP, TR__REJ_MALFORMED},
    {"envelope is empty", "91 90", EP, TR__REJ_MALFORMED},
    {"version 2", "91 9a 02 05 00 01 02 00 07 00 00 c0", EP, TR__REJ_VERSION},
    {"version 0", "91 9a 00 05 00 01 02 00 07 00 00 c0", EP, TR__REJ_VERSION},
    {"version -1", "91 9a ff 05 00 01 02 00 07 00 00 c0", EP, TR__REJ_VERSION},
    {"version 2, other shape", "91 93 02 05 00", EP, TR__REJ_VERSION},
    {"version 2^64-1", "91 91 cf ff ff ff ff ff ff ff ff", EP, TR__REJ_VERSION},
    {"version is a str", "91 9a a1 31 05 00 01 02 00 07 00 00 c0", EP,
     TR__REJ_MALFORMED},
    {"9 fields", "91 99 01 05 00 01 02 00 07 00 00", EP, TR__REJ_MALFORMED},
    {"11 fields", "91 9b 01 05 00 01 02 00 07 00 00 c0 c0", EP,
     TR__REJ_MALFORMED},
    {"kind 0", "91 9a 01 00 00 01 02 00 07 00 00 c0", EP, TR__REJ_KIND},
    {"kind 15", "91 9a 01 0f 00 01 02 00 07 00 00 c0", EP, TR__REJ_KIND},
    {"kind 200", "91 9a 01 cc c8 00 01 02 00 07 00 00 c0", EP, TR__REJ_KIND},
    {"kind -1", "91 9a 01 ff 00 01 02 00 07 00 00 c0", EP, TR__REJ_FIELD},
    {"kind is nil", "91 9a 01 c0 00 01 02 00 07 00 00 c0", EP,
     TR__REJ_MALFORMED},
    {"SEND with flag UNDO", "91 9a 01 05 01 01 02 00 07 00 00 c0", EP,
     TR__REJ_FIELD},
    {"flags over 16 bits", "91 9a 01 05 ce 00 01 00 00 01 02 00 07 00 00 c0",
     EP, TR__REJ_FIELD},
    {"flags is a bool", "91 9a 01 05 c2 01 02 00 07 00 00 c0", EP,
     TR__REJ_MALFORMED},
    {"sender is a str", "91 9a 01 05 00 a1 78 02 00 07 00 00 c0", EP,
     TR__REJ_MALFORMED},
    {"sender is negative", "91 9a 01 05 00 ff 02 00 07 00 00 c0", EP,
     TR__REJ_FIELD},
    {"sender is a float",
     "91 9a 01 05 00 cb 3f f0 00 00 00 00 00 00 02 00 07 00 00 c0", EP,
     TR__REJ_MALFORMED},
    {"target is bin", "91 9a 01 05 00 01 c4 01 02 00 07 00 00 c0", EP,
     TR__REJ_MALFORMED},
    {"SEND to target 0", "91 9a 01 05 00 01 00 00 07 00 00 c0", EP,
     TR__REJ_FIELD},
    {"SEND with req_id", "91 9a 01 05 00 01 02 09 07 00 00 c0", EP,
     TR__REJ_FIELD},
    {"req_id is an array", "91 9a 01 06 00 01 02 91 01 07 00 00 c0", EP,
     TR__REJ_MALFORMED},
    {"REQUEST with req_id 0", "91 9a 01 06 00 01 02 00 07 00 00 c0", EP,
     TR__REJ_FIELD},
    {"tag over 32 bits",
     "91 9a 01 05 00 01 02 00 cf 00 00 00 01 00 00 00 00 00 00 c0", EP,
     TR__REJ_FIELD},
    {"SEND with a system tag",
     "91 9a 01 05 00 01 02 00 ce ff ff 00 01 00 00 c0", EP, TR__REJ_FIELD},
    {"LINK with a tag", "91 9a 01 0b 00 01 02 00 07 00 00 c0", EP,
     TR__REJ_FIELD},
    {"SEND with aux", "91 9a 01 05 00 01 02 00 07 05 00 c0", EP, TR__REJ_FIELD},
    {"aux over INT64_MAX",
     "91 9a 01 06 00 01 02 09 07 cf 80 00 00 00 00 00 00 00 00 c0", EP,
     TR__REJ_FIELD},
    {"aux is a bool", "91 9a 01 05 00 01 02 00 07 c3 00 c0", EP,
     TR__REJ_MALFORMED},
    {"REQUEST timeout -2", "91 9a 01 06 00 01 02 09 07 fe 00 c0", EP,
     TR__REJ_FIELD},
    {"REPLY status +1", "91 9a 01 07 00 02 01 09 07 01 00 c0", EP,
     TR__REJ_FIELD},
    {"CREDIT of 0", "91 9a 01 04 00 00 00 00 00 00 00 c0", EP, TR__REJ_FIELD},
    {"CANCEL KILL of a request", "91 9a 01 08 02 01 02 09 00 00 00 c0", EP,
     TR__REJ_FIELD},
    {"SPAWN_REPLY ok, no actor", "91 9a 01 0a 00 00 01 09 00 00 00 c0", EP,
     TR__REJ_FIELD},
    {"pkind 3 (PTR)", "91 9a 01 05 00 01 02 00 07 00 03 c0", EP, TR__REJ_FIELD},
    {"pkind 5", "91 9a 01 05 00 01 02 00 07 00 05 c0", EP, TR__REJ_FIELD},
    {"pkind is nil", "91 9a 01 05 00 01 02 00 07 00 c0 c0", EP,
     TR__REJ_MALFORMED},
    {"LINK with MSGPACK", "91 9a 01 0b 00 01 02 00 00 00 04 c0", EP,
     TR__REJ_FIELD},
    {"HELLO with U64", "91 9a 01 01 00 00 00 00 00 00 01 05", EP,
     TR__REJ_FIELD},
    {"NONE payload is 1", "91 9a 01 05 00 01 02 00 07 00 00 01", EP,
     TR__REJ_MALFORMED},
    {"U64 payload is -1", "91 9a 01 05 00 01 02 00 07 00 01 ff", EP,
     TR__REJ_FIELD},
    {"U64 payload is a str", "91 9a 01 05 00 01 02 00 07 00 01 a1 78", EP,
     TR__REJ_MALFORMED},
    {"BYTES payload is a str", "91 9a 01 05 00 01 02 00 07 00 02 a1 78", EP,
     TR__REJ_MALFORMED},
    {"BYTES bin32 claims 4 GiB",
     "91 9a 01 05 00 01 02 00 07 00 02 c6 ff ff ff ff", TB, TR__REJ_LENGTH},
    {"BYTES bin8 claims 5, has 2",
     "91 9a 01 05 00 01 02 00 07 00 02 c4 05 61 62", EP, TR__REJ_TRUNCATED},
    {"MSGPACK payload 0xc1", "91 9a 01 05 00 01 02 00 07 00 04 c1", EP,
     TR__REJ_MALFORMED},
    {"MSGPACK array32 claims 4e9",
     "91 9a 01 05 00 01 02 00 07 00 04 dd ff ff ff ff", TB, TR__REJ_LENGTH},
    {"MSGPACK array16 claims 1000, has 3",
     "91 9a 01 05 00 01 02 00 07 00 04 dc 03 e8 01 02 03", EP,
     TR__REJ_TRUNCATED},
    {"MSGPACK map32 claims 4e9",
     "91 9a 01 05 00 01 02 00 07 00 04 df ff ff ff ff", TB, TR__REJ_LENGTH},
    {"MSGPACK map16 claims 2 pairs, has 3 bytes",
     "91 9a 01 05 00 01 02 00 07 00 04 de 00 02 01 02 03", EP,
     TR__REJ_TRUNCATED},
    {"MSGPACK str32 claims 4 GiB",
     "91 9a 01 05 00 01 02 00 07 00 04 db ff ff ff ff", TB, TR__REJ_LENGTH},
    {"MSGPACK ext32 claims 4 GiB",
     "91 9a 01 05 00 01 02 00 07 00 04 c9 ff ff ff ff 01", TB, TR__REJ_LENGTH},
    {"MSGPACK nested str cut short",
     "91 9a 01 05 00 01 02 00 07 00 04 92 01 d9 20 61", EP, TR__REJ_TRUNCATED},
    {"trailing byte", "91 " SEND_ENV " 00", EP, TR__REJ_TRAILING},
    {"batch claims 3, holds 1", "93 " SEND_ENV, EP, TR__REJ_TRUNCATED},
    {"batch array32 claims 4e9", "dd ff ff ff ff", TB, TR__REJ_BATCH},
    {"batch of 2000 > max_batch", "dc 07 d0", TB, TR__REJ_BATCH},
    {"envelope array32 claims 4e9", "91 dd ff ff ff ff", EP, TR__REJ_TRUNCATED},
    {"second envelope bad: whole frame rejected",
     "92 " SEND_ENV " 9a 02 05 00 01 02 00 07 00 00 c0", EP, TR__REJ_VERSION},
};

static void test_reject_table(void **state) {
    (void)state;
    tr__decoder d;
    TU_ASSERT_OK(tr__decoder_init(&d, NULL));
    uint64_t per_reason[TR__REJ_COUNT] = {0};
    unsigned char buf[256];
    for (size_t i = 0; i < sizeof k_rejects / sizeof k_rejects[0]; i++) {
        const struct reject_case *c = &k_rejects[i];
        size_t len = unhex(buf, sizeof buf, c->hex);
        uint32_t n = 99;
        unsigned long allocs = g_allocs;
        int rc = tr__decoder_decode(&d, buf, len, &n);
        if (rc != c->code || d.reason != c->why)
            fail_msg("%s: %s/%s, expected %s/%s", c->what, tu_err_text(rc),
                     tr__codec_reject_name(d.reason), tu_err_text(c->code),
                     tr__codec_reject_name(c->why));
        assert_int_equal(n, 0);
        assert_true(d.offset <= len);
        assert_int_equal(g_allocs, allocs); /* the decoder never allocates */
        per_reason[c->why]++;
    }
    assert_int_equal(d.stats.frames, 0);
    for (int r = 0; r < TR__REJ_COUNT; r++)
        assert_int_equal(d.stats.rejected[r], per_reason[r]);
    /* Offsets name the culprit. */
    size_t len = unhex(buf, sizeof buf, "91 9a 02 05 00 01 02 00 07 00 00 c0");
    ASSERT_REJECT(&d, buf, len, TR_EPROTO, TR__REJ_VERSION);
    assert_int_equal(d.offset, 2);
    len = unhex(buf, sizeof buf, "91 9a 01 05 00 01 02 00 07 00 04 92 01 c1");
    ASSERT_REJECT(&d, buf, len, TR_EPROTO, TR__REJ_MALFORMED);
    assert_int_equal(d.offset, 13);
    /* After rejections the decoder still decodes good frames. */
    len = unhex(buf, sizeof buf, "91 " SEND_ENV);
    uint32_t n;
    TU_ASSERT_OK(tr__decoder_decode(&d, buf, len, &n));
    assert_int_equal(n, 1);
    assert_int_equal(d.stats.frames, 1);
    TU_ASSERT_RC(tr__decoder_decode(&d, NULL, 5, &n), TR_EINVAL);
    TU_ASSERT_RC(tr__decoder_decode(&d, buf, len, NULL), TR_EINVAL);
    ASSERT_REJECT(&d, NULL, 0, TR_EPROTO, TR__REJ_TRUNCATED);
    tr__decoder_free(&d);
}

/* A batch with every kind and payload kind, cut at every byte offset:
 * each prefix is rejected as truncated, never accepted or misread. */
static void test_truncated_at_every_offset(void **state) {
    (void)state;
    tr__env envs[64];
    size_t n = 0;
    for (size_t i = 0; i < sizeof k_valid / sizeof k_valid[0]; i++)
        for (uint8_t pk = 0; pk <= TR_PAYLOAD_MSGPACK; pk++)
            if (k_valid[i].pkinds & (1u << pk)) {
                envs[n] = mk(k_valid[i].kind, k_valid[i].s, k_valid[i].t,
                             k_valid[i].req, k_valid[i].tag, k_valid[i].aux);
                envs[n].flags = k_valid[i].flags;
                set_payload(&envs[n], pk);
                if (++n == 15) /* also a fixarray batch below */
                    break;
            }
    frame frames[3] = {encode(envs, 1), encode(envs, 15), encode(envs, n)};
    tr__decoder d;
    TU_ASSERT_OK(tr__decoder_init(&d, NULL));
    uint64_t cuts = 0;
    for (int f = 0; f < 3; f++) {
        /* Each prefix in its own exact-size heap block, so ASan catches
         * any read past the end. */
        for (size_t cut = 0; cut < frames[f].len; cut++) {
            unsigned char *p = malloc(cut > 0 ? cut : 1);
            assert_non_null(p);
            memcpy(p, frames[f].p, cut);
            uint32_t got = 99;
            int rc = tr__decoder_decode(&d, p, cut, &got);
            if (rc != TR_EPROTO || d.reason != TR__REJ_TRUNCATED)
                fail_msg("frame %d cut at %zu/%zu: %s/%s", f, cut,
                         frames[f].len, tu_err_text(rc),
                         tr__codec_reject_name(d.reason));
            assert_int_equal(got, 0);
            assert_true(d.offset <= cut);
            free(p);
            cuts++;
        }
        uint32_t got;
        TU_ASSERT_OK(tr__decoder_decode(&d, frames[f].p, frames[f].len, &got));
        free(frames[f].p);
    }
    assert_int_equal(d.stats.rejected[TR__REJ_TRUNCATED], cuts);
    assert_int_equal(d.stats.frames, 3);
    tr__decoder_free(&d);
}

static void test_oversize_frame(void **state) {
    (void)state;
    tr__decoder d;
    TU_ASSERT_OK(tr__decoder_init(&d, NULL));
    size_t len = TR__LIM_FRAME + 1;
    unsigned char *big = calloc(1, len);
    assert_non_null(big);
    big[0] = 0x91;
    ASSERT_REJECT(&d, big, len, TR_ETOOBIG, TR__REJ_FRAME_SIZE);
    assert_int_equal(d.offset, 0);
    free(big);
    tr__decoder_free(&d);

    /* The same frame passes or fails only by the configured limit. */
    tr__env e = mk(TR__K_SEND, 1, 2, 0, 7, 0);
    frame f = encode(&e, 1); /* 12 bytes */
    tr__codec_limits lim;
    tr__codec_limits_default(&lim);
    lim.max_frame = 64;
    TU_ASSERT_OK(tr__decoder_init(&d, &lim));
    uint32_t n;
    TU_ASSERT_OK(tr__decoder_decode(&d, f.p, f.len, &n));
    unsigned char buf[65] = {0x91};
    ASSERT_REJECT(&d, buf, sizeof buf, TR_ETOOBIG, TR__REJ_FRAME_SIZE);
    tr__decoder_free(&d);
    free(f.p);

    /* BYTES payload over max_payload, under max_frame. */
    tr__codec_limits_default(&lim);
    lim.max_payload = 4;
    TU_ASSERT_OK(tr__decoder_init(&d, &lim));
    len = unhex(buf, sizeof buf,
                "91 9a 01 05 00 01 02 00 07 00 02 c4 05 01 02 03 04 05");
    ASSERT_REJECT(&d, buf, len, TR_ETOOBIG, TR__REJ_LENGTH);
    len = unhex(buf, sizeof buf,
                "91 9a 01 05 00 01 02 00 07 00 04 95 01 02 03 04 05");
    ASSERT_REJECT(&d, buf, len, TR_ETOOBIG, TR__REJ_LENGTH);
    len =
        unhex(buf, sizeof buf, "91 9a 01 05 00 01 02 00 07 00 04 93 01 02 03");
    TU_ASSERT_OK(tr__decoder_decode(&d, buf, len, &n));
    tr__decoder_free(&d);

    /* str/array/map limits inside a MSGPACK payload. */
    tr__codec_limits_default(&lim);
    lim.max_str = 2;
    lim.max_array = 2;
    lim.max_map = 1;
    TU_ASSERT_OK(tr__decoder_init(&d, &lim));
    static const struct {
        const char *payload;
        int code;
    } lc[] = {{"a2 61 62", 0},
              {"a3 61 62 63", TR_ETOOBIG},
              {"c4 02 00 00", 0},
              {"c4 03 00 00 00", TR_ETOOBIG},
              {"d5 01 00 00", 0},
              {"d6 01 00 00 00 00", TR_ETOOBIG},
              {"92 01 02", 0},
              {"93 01 02 03", TR_ETOOBIG},
              {"81 01 02", 0},
              {"82 01 02 03 04", TR_ETOOBIG},
              {"92 92 01 02 93 01 02 03", TR_ETOOBIG}};
    for (size_t i = 0; i < sizeof lc / sizeof lc[0]; i++) {
        char hex[200];
        snprintf(hex, sizeof hex, "91 9a 01 05 00 01 02 00 07 00 04 %s",
                 lc[i].payload);
        len = unhex(buf, sizeof buf, hex);
        int rc = tr__decoder_decode(&d, buf, len, &n);
        if (rc != lc[i].code)
            fail_msg("payload %s: %s", lc[i].payload, tu_err_text(rc));
        if (rc != 0)
            assert_int_equal(d.reason, TR__REJ_LENGTH);
    }
    tr__decoder_free(&d);
}

/* d nested arrays around a nil, as a SEND's MSGPACK payload. */
static frame nested_frame(size_t depth, bool maps) {
    size_t len = 12 + depth * 2 + 1;
    frame f = {malloc(len), 0};
    assert_non_null(f.p);
    f.len = unhex(f.p, len, "91 9a 01 05 00 01 02 00 07 00 04");
    for (size_t i = 0; i < depth; i++) {
        if (maps) { /* {0: {0: ... nil}} */
            f.p[f.len++] = 0x81;
            f.p[f.len++] = 0x00;
        } else {
            f.p[f.len++] = 0x91;
        }
    }
    f.p[f.len++] = 0xc0;
    return f;
}

static void test_nesting_depth(void **state) {
    (void)state;
    tr__decoder d;
    TU_ASSERT_OK(tr__decoder_init(&d, NULL));
    for (int maps = 0; maps < 2; maps++) {
        static const size_t depths[] = {1, 31, 32, 33, 64, 65, 100000};
        for (size_t i = 0; i < sizeof depths / sizeof depths[0]; i++) {
            frame f = nested_frame(depths[i], maps);
            uint32_t n;
            int rc = tr__decoder_decode(&d, f.p, f.len, &n);
            if (depths[i] <= TR__LIM_DEPTH) {
                TU_ASSERT_OK(rc);
                assert_int_equal(d.envs[0].len, f.len - 11);
            } else {
                TU_ASSERT_RC(rc, TR_ETOOBIG);
                assert_int_equal(d.reason, TR__REJ_DEPTH);
                /* Reported where the 33rd container starts. */
                assert_int_equal(d.offset,
                                 11 + TR__LIM_DEPTH * (maps ? 2u : 1u));
            }
            free(f.p);
        }
    }
    tr__decoder_free(&d);

    /* A custom limit, and the encoder applies it too. */
    tr__codec_limits lim;
    tr__codec_limits_default(&lim);
    lim.max_depth = 4;
    TU_ASSERT_OK(tr__decoder_init(&d, &lim));
    frame ok = nested_frame(4, false), deep = nested_frame(5, false);
    uint32_t n;
    TU_ASSERT_OK(tr__decoder_decode(&d, ok.p, ok.len, &n));
    ASSERT_REJECT(&d, deep.p, deep.len, TR_ETOOBIG, TR__REJ_DEPTH);
    tr__encoder e;
    TU_ASSERT_OK(tr__encoder_init(&e, &lim));
    tr__env env = mk(TR__K_SEND, 1, 2, 0, 7, 0);
    env.pkind = TR_PAYLOAD_MSGPACK;
    env.data = deep.p + 11;
    env.len = deep.len - 11;
    TU_ASSERT_RC(tr__encoder_add(&e, &env), TR_ETOOBIG);
    env.data = ok.p + 11;
    env.len = ok.len - 11;
    TU_ASSERT_OK(tr__encoder_add(&e, &env));
    tr__encoder_free(&e);
    free(ok.p);
    free(deep.p);
    tr__decoder_free(&d);
}

static void test_limits_and_names(void **state) {
    (void)state;
    tr__codec_limits lim;
    tr__codec_limits_default(&lim);
    assert_int_equal(lim.max_frame, TR_MSG_MAX_BYTES + 65536u);
    assert_int_equal(lim.max_batch, 1024);
    assert_int_equal(lim.max_payload, TR_MSG_MAX_BYTES);
    assert_int_equal(lim.max_depth, 32);
    TU_ASSERT_OK(tr__codec_limits_check(&lim));
    tr__codec_limits bad[6];
    for (int i = 0; i < 6; i++)
        bad[i] = lim;
    bad[0].max_frame = 63;
    bad[1].max_batch = 0;
    bad[2].max_payload = 0;
    bad[3].max_depth = 0;
    bad[4].max_depth = TR__MP_DEPTH_MAX + 1;
    bad[5].max_batch = (1u << 20) + 1;
    tr__encoder e;
    tr__decoder d;
    for (int i = 0; i < 6; i++) {
        TU_ASSERT_RC(tr__codec_limits_check(&bad[i]), TR_EINVAL);
        TU_ASSERT_RC(tr__encoder_init(&e, &bad[i]), TR_EINVAL);
        TU_ASSERT_RC(tr__decoder_init(&d, &bad[i]), TR_EINVAL);
    }
    TU_ASSERT_RC(tr__codec_limits_check(NULL), TR_EINVAL);
    TU_ASSERT_RC(tr__encoder_init(NULL, NULL), TR_EINVAL);
    TU_ASSERT_RC(tr__decoder_init(NULL, NULL), TR_EINVAL);

    /* Names are distinct; codes follow the class. */
    for (tr__codec_reject a = 0; a < TR__REJ_COUNT; a++) {
        for (tr__codec_reject b = a + 1; b < TR__REJ_COUNT; b++)
            assert_string_not_equal(tr__codec_reject_name(a),
                                    tr__codec_reject_name(b));
        int code = tr__codec_reject_code(a);
        if (a == TR__REJ_NONE)
            assert_int_equal(code, 0);
        else if (a >= TR__REJ_FRAME_SIZE)
            assert_int_equal(code, TR_ETOOBIG);
        else
            assert_int_equal(code, TR_EPROTO);
    }
    assert_string_equal(tr__codec_reject_name(TR__REJ_COUNT), "?");
    assert_string_equal(tr__codec_reject_name(TR__REJ_TRUNCATED), "truncated");
}

/* ---- HELLO
 * -------------------------------------------------------------------------- */

static void test_hello(void **state) {
    (void)state;
    tr__hello h = {.proto_min = 1,
                   .proto_max = 1,
                   .role = "worker",
                   .role_len = 6,
                   .node = "n1",
                   .node_len = 2,
                   .pid = 77,
                   .max_frame = 1000,
                   .max_batch = 10,
                   .credit = 5};
    unsigned char buf[TR__HELLO_MAX];
    size_t len;
    TU_ASSERT_OK(tr__hello_encode(&h, buf, sizeof buf, &len));
    tr__hello g;
    TU_ASSERT_OK(tr__hello_decode(buf, len, &g));
    assert_int_equal(g.proto_min, 1);
    assert_int_equal(g.proto_max, 1);
    assert_int_equal(g.role_len, 6);
    assert_memory_equal(g.role, "worker", 6);
    assert_int_equal(g.node_len, 2);
    assert_memory_equal(g.node, "n1", 2);
    assert_int_equal(g.pid, 77);
    assert_int_equal(g.max_frame, 1000);
    assert_int_equal(g.max_batch, 10);
    assert_int_equal(g.credit, 5);
    uint32_t v;
    TU_ASSERT_OK(tr__hello_version(&g, &v));
    assert_int_equal(v, 1);
    TU_ASSERT_RC(tr__hello_encode(&h, buf, 10, &len), TR_ETOOBIG);

    /* Minimal: required keys only; optional ones read as absent. */
    tr__hello m = {
        .proto_min = 1, .proto_max = 3, .role = "main", .role_len = 4};
    TU_ASSERT_OK(tr__hello_encode(&m, buf, sizeof buf, &len));
    TU_ASSERT_OK(tr__hello_decode(buf, len, &g));
    assert_null(g.node);
    assert_int_equal(g.pid, 0);
    TU_ASSERT_OK(tr__hello_version(&g, &v));
    assert_int_equal(v, 1); /* min(our 1, their 3) */

    /* Encode refusals. */
    tr__hello bad = m;
    bad.role = NULL;
    TU_ASSERT_RC(tr__hello_encode(&bad, buf, sizeof buf, &len), TR_EINVAL);
    bad = m;
    bad.proto_min = 4;
    TU_ASSERT_RC(tr__hello_encode(&bad, buf, sizeof buf, &len), TR_EINVAL);
    bad = m;
    bad.proto_min = 0;
    TU_ASSERT_RC(tr__hello_encode(&bad, buf, sizeof buf, &len), TR_EINVAL);
    bad = m;
    bad.role_len = TR__HELLO_NAME_MAX + 1;
    TU_ASSERT_RC(tr__hello_encode(&bad, buf, sizeof buf, &len), TR_EINVAL);

    /* Longest names fit TR__HELLO_MAX. */
    char name[TR__HELLO_NAME_MAX];
    memset(name, 'x', sizeof name);
    tr__hello longest = {.proto_min = 1,
                         .proto_max = UINT32_MAX,
                         .role = name,
                         .role_len = sizeof name,
                         .node = name,
                         .node_len = sizeof name,
                         .pid = UINT64_MAX,
                         .max_frame = UINT64_MAX,
                         .max_batch = UINT64_MAX,
                         .credit = UINT64_MAX};
    TU_ASSERT_OK(tr__hello_encode(&longest, buf, sizeof buf, &len));
    TU_ASSERT_OK(tr__hello_decode(buf, len, &g));

    /* Decoding: unknown keys skipped, bad shapes refused. */
    static const struct {
        const char *hex;
        int rc;
    } dc[] = {
        /* {"proto_min":1,"proto_max":1,"role":"w","future":[1,{}]} */
        {"84 a9 70 72 6f 74 6f 5f 6d 69 6e 01 a9 70 72 6f 74 6f 5f 6d 61 78 01"
         " a4 72 6f 6c 65 a1 77 a6 66 75 74 75 72 65 92 01 80",
         0},
        /* missing role */
        {"82 a9 70 72 6f 74 6f 5f 6d 69 6e 01 a9 70 72 6f 74 6f 5f 6d 61 78 01",
         TR_EPROTO},
        /* proto_min repeated */
        {"84 a9 70 72 6f 74 6f 5f 6d 69 6e 01 a9 70 72 6f 74 6f 5f 6d 69 6e 01"
         " a9 70 72 6f 74 6f 5f 6d 61 78 01 a4 72 6f 6c 65 a1 77",
         TR_EPROTO},
        /* proto_min 2 > proto_max 1 */
        {"83 a9 70 72 6f 74 6f 5f 6d 69 6e 02 a9 70 72 6f 74 6f 5f 6d 61 78 01"
         " a4 72 6f 6c 65 a1 77",
         TR_EPROTO},
        /* role is an int */
        {"83 a9 70 72 6f 74 6f 5f 6d 69 6e 01 a9 70 72 6f 74 6f 5f 6d 61 78 01"
         " a4 72 6f 6c 65 01",
         TR_EPROTO},
        /* an int key */
        {"84 a9 70 72 6f 74 6f 5f 6d 69 6e 01 a9 70 72 6f 74 6f 5f 6d 61 78 01"
         " a4 72 6f 6c 65 a1 77 01 01",
         TR_EPROTO},
        /* not a map; a map claiming more pairs than bytes; trailing */
        {"93 01 01 01", TR_EPROTO},
        {"df 00 00 ff ff 01", TR_EPROTO},
        {"80 c0", TR_EPROTO},
        {"", TR_EPROTO},
    };
    for (size_t i = 0; i < sizeof dc / sizeof dc[0]; i++) {
        len = unhex(buf, sizeof buf, dc[i].hex);
        int rc = tr__hello_decode(buf, len, &g);
        if (rc != dc[i].rc)
            fail_msg("hello case %zu: %s", i, tu_err_text(rc));
    }

    /* Negotiation. */
    static const struct {
        uint32_t lo, hi;
        int rc;
    } nc[] = {{1, 1, 0}, {1, 9, 0}, {2, 3, TR_EPROTO}};
    for (size_t i = 0; i < sizeof nc / sizeof nc[0]; i++) {
        tr__hello p = {.proto_min = nc[i].lo, .proto_max = nc[i].hi};
        TU_ASSERT_RC(tr__hello_version(&p, &v), nc[i].rc);
        if (nc[i].rc == 0)
            assert_int_equal(v, 1);
    }
}

/* ---- tr_mp_writer / tr_mp_reader
 * ---------------------------------------------------- */

static const void *wdata(const tr_mp_writer *w, size_t *len) {
    return tr_mp_writer_data(w, len);
}

static void test_mp_int_encodings(void **state) {
    (void)state;
    static const struct {
        int64_t v;
        const char *hex;
    } ic[] = {{0, "00"},
              {127, "7f"},
              {128, "cc 80"},
              {255, "cc ff"},
              {256, "cd 01 00"},
              {65535, "cd ff ff"},
              {65536, "ce 00 01 00 00"},
              {4294967295ll, "ce ff ff ff ff"},
              {4294967296ll, "cf 00 00 00 01 00 00 00 00"},
              {INT64_MAX, "cf 7f ff ff ff ff ff ff ff"},
              {-1, "ff"},
              {-32, "e0"},
              {-33, "d0 df"},
              {-128, "d0 80"},
              {-129, "d1 ff 7f"},
              {-32768, "d1 80 00"},
              {-32769, "d2 ff ff 7f ff"},
              {INT32_MIN, "d2 80 00 00 00"},
              {INT32_MIN - 1ll, "d3 ff ff ff ff 7f ff ff ff"},
              {INT64_MIN, "d3 80 00 00 00 00 00 00 00"}};
    tr_mp_writer w;
    tr_mp_writer_init(&w);
    for (size_t i = 0; i < sizeof ic / sizeof ic[0]; i++) {
        tr_mp_writer_reset(&w);
        TU_ASSERT_OK(tr_mp_write_int(&w, ic[i].v));
        unsigned char want[16];
        size_t wl = unhex(want, sizeof want, ic[i].hex), len;
        const void *got = wdata(&w, &len);
        assert_int_equal(len, wl);
        assert_memory_equal(got, want, wl);
        tr_mp_reader r;
        tr_mp_reader_init(&r, got, len);
        assert_int_equal(tr_mp_next_type(&r),
                         ic[i].v < 0 ? TR_MP_INT : TR_MP_UINT);
        int64_t back;
        TU_ASSERT_OK(tr_mp_read_int(&r, &back));
        assert_true(back == ic[i].v);
        assert_int_equal(tr_mp_next_type(&r), TR_MP_END);
        if (ic[i].v >= 0) { /* same bytes as write_uint */
            tr_mp_writer_reset(&w);
            TU_ASSERT_OK(tr_mp_write_uint(&w, (uint64_t)ic[i].v));
            got = wdata(&w, &len);
            assert_memory_equal(got, want, wl);
        }
    }
    tr_mp_writer_reset(&w);
    TU_ASSERT_OK(tr_mp_write_uint(&w, UINT64_MAX));
    size_t len;
    const unsigned char *p = wdata(&w, &len);
    assert_int_equal(len, 9);
    assert_int_equal(p[0], 0xcf);
    tr_mp_reader r;
    tr_mp_reader_init(&r, p, len);
    int64_t i64;
    TU_ASSERT_RC(tr_mp_read_int(&r, &i64), TR_EPROTO); /* > INT64_MAX */
    uint64_t u64;
    TU_ASSERT_OK(tr_mp_read_uint(&r, &u64));
    assert_true(u64 == UINT64_MAX);
    /* A non-negative value sent as int8 reads as an unsigned. */
    tr_mp_reader_init(&r, "\xd0\x05", 2);
    assert_int_equal(tr_mp_next_type(&r), TR_MP_UINT);
    TU_ASSERT_OK(tr_mp_read_uint(&r, &u64));
    assert_int_equal(u64, 5);
    tr_mp_reader_init(&r, "\xff", 1);
    TU_ASSERT_RC(tr_mp_read_uint(&r, &u64), TR_EPROTO);
    tr_mp_writer_free(&w);
}

static void test_mp_lengths(void **state) {
    (void)state;
    static const struct {
        uint32_t n;
        unsigned char str0, bin0, arr0, map0;
        size_t hlen_str, hlen_bin, hlen_arr;
    } lc[] = {{0, 0xa0, 0xc4, 0x90, 0x80, 1, 2, 1},
              {15, 0xaf, 0xc4, 0x9f, 0x8f, 1, 2, 1},
              {16, 0xb0, 0xc4, 0xdc, 0xde, 1, 2, 3},
              {31, 0xbf, 0xc4, 0xdc, 0xde, 1, 2, 3},
              {32, 0xd9, 0xc4, 0xdc, 0xde, 2, 2, 3},
              {255, 0xd9, 0xc4, 0xdc, 0xde, 2, 2, 3},
              {256, 0xda, 0xc5, 0xdc, 0xde, 3, 3, 3},
              {65535, 0xda, 0xc5, 0xdc, 0xde, 3, 3, 3},
              {65536, 0xdb, 0xc6, 0xdd, 0xdf, 5, 5, 5}};
    char *text = malloc(65536);
    assert_non_null(text);
    memset(text, 'q', 65536);
    tr_mp_writer w;
    tr_mp_writer_init(&w);
    for (size_t i = 0; i < sizeof lc / sizeof lc[0]; i++) {
        uint32_t n = lc[i].n;
        size_t len;
        const unsigned char *p;
        tr_mp_reader r;
        /* str */
        tr_mp_writer_reset(&w);
        TU_ASSERT_OK(tr_mp_write_str(&w, text, n));
        p = wdata(&w, &len);
        assert_int_equal(p[0], lc[i].str0);
        assert_int_equal(len, lc[i].hlen_str + n);
        tr_mp_reader_init(&r, p, len);
        const char *s;
        size_t sl;
        TU_ASSERT_OK(tr_mp_read_str(&r, &s, &sl));
        assert_int_equal(sl, n);
        assert_ptr_equal(s, (const char *)p + lc[i].hlen_str); /* zero copy */
        /* bin */
        tr_mp_writer_reset(&w);
        TU_ASSERT_OK(tr_mp_write_bin(&w, text, n));
        p = wdata(&w, &len);
        assert_int_equal(p[0], lc[i].bin0);
        assert_int_equal(len, lc[i].hlen_bin + n);
        tr_mp_reader_init(&r, p, len);
        const void *bd;
        TU_ASSERT_OK(tr_mp_read_bin(&r, &bd, &sl));
        assert_int_equal(sl, n);
        /* array of n nils, map of n nil:nil pairs */
        for (int map = 0; map < 2; map++) {
            tr_mp_writer_reset(&w);
            TU_ASSERT_OK(map ? tr_mp_write_map(&w, n)
                             : tr_mp_write_array(&w, n));
            for (uint32_t k = 0; k < (map ? 2 * n : n); k++) {
                assert_false(tr_mp_writer_complete(&w));
                TU_ASSERT_OK(tr_mp_write_nil(&w));
            }
            assert_true(tr_mp_writer_complete(&w));
            p = wdata(&w, &len);
            assert_int_equal(p[0], map ? lc[i].map0 : lc[i].arr0);
            assert_int_equal(len, lc[i].hlen_arr + (map ? 2 * n : n));
            tr_mp_reader_init(&r, p, len);
            uint32_t cnt;
            TU_ASSERT_OK(map ? tr_mp_read_map(&r, &cnt)
                             : tr_mp_read_array(&r, &cnt));
            assert_int_equal(cnt, n);
            tr_mp_reader_init(&r, p, len);
            TU_ASSERT_OK(tr_mp_skip(&r));
            assert_int_equal(tr_mp_reader_left(&r), 0);
        }
    }
    free(text);
    tr_mp_writer_free(&w);
}

static void test_mp_round_trip_msg(void **state) {
    (void)state;
    tr_mp_writer w;
    tr_mp_writer_init(&w);
    /* {"id": 42, "name": "ada", "score": -1.25, "ok": true, "none": nil,
     *  "blob": bin, "list": [1, -2, [ ]], "neg": -300} */
    TU_ASSERT_OK(tr_mp_write_map(&w, 8));
    tr_mp_write_cstr(&w, "id");
    tr_mp_write_uint(&w, 42);
    tr_mp_write_cstr(&w, "name");
    tr_mp_write_cstr(&w, "ada");
    tr_mp_write_cstr(&w, "score");
    tr_mp_write_double(&w, -1.25);
    tr_mp_write_cstr(&w, "ok");
    tr_mp_write_bool(&w, true);
    tr_mp_write_cstr(&w, "none");
    tr_mp_write_nil(&w);
    tr_mp_write_cstr(&w, "blob");
    tr_mp_write_bin(&w, "\x00\x01", 2);
    tr_mp_write_cstr(&w, "list");
    tr_mp_write_array(&w, 3);
    tr_mp_write_int(&w, 1);
    tr_mp_write_int(&w, -2);
    tr_mp_write_array(&w, 0);
    tr_mp_write_cstr(&w, "neg");
    assert_false(tr_mp_writer_complete(&w));
    TU_ASSERT_OK(tr_mp_write_int(&w, -300));
    TU_ASSERT_OK(tr_mp_writer_error(&w));
    assert_true(tr_mp_writer_complete(&w));

    tr_msg *m = NULL;
    TU_ASSERT_OK(tr_mp_writer_to_msg(&w, 77, &m));
    assert_non_null(m);
    assert_int_equal(tr_msg_kind(m), TR_PAYLOAD_MSGPACK);
    assert_int_equal(tr_msg_tag(m), 77);
    size_t wl, ml;
    const void *wd = tr_mp_writer_data(&w, &wl);
    const void *md = tr_msg_data(m, &ml);
    assert_int_equal(ml, wl);
    assert_memory_equal(md, wd, wl);

    tr_mp_reader r;
    TU_ASSERT_OK(tr_mp_reader_init_msg(&r, m));
    uint32_t n;
    TU_ASSERT_OK(tr_mp_read_map(&r, &n));
    assert_int_equal(n, 8);
    const char *k, *sv;
    size_t kl, sl;
    uint64_t u;
    int64_t i;
    double dv;
    bool bv;
    const void *bin;
    TU_ASSERT_OK(tr_mp_read_str(&r, &k, &kl));
    assert_true(kl == 2 && memcmp(k, "id", 2) == 0);
    TU_ASSERT_OK(tr_mp_read_uint(&r, &u));
    assert_int_equal(u, 42);
    TU_ASSERT_OK(tr_mp_read_str(&r, &k, &kl));
    TU_ASSERT_OK(tr_mp_read_str(&r, &sv, &sl));
    assert_true(sl == 3 && memcmp(sv, "ada", 3) == 0);
    TU_ASSERT_OK(tr_mp_read_str(&r, &k, &kl));
    TU_ASSERT_OK(tr_mp_read_double(&r, &dv));
    assert_true(dv == -1.25);
    TU_ASSERT_OK(tr_mp_read_str(&r, &k, &kl));
    TU_ASSERT_OK(tr_mp_read_bool(&r, &bv));
    assert_true(bv);
    TU_ASSERT_OK(tr_mp_read_str(&r, &k, &kl));
    assert_int_equal(tr_mp_next_type(&r), TR_MP_NIL);
    TU_ASSERT_OK(tr_mp_read_nil(&r));
    TU_ASSERT_OK(tr_mp_read_str(&r, &k, &kl));
    TU_ASSERT_OK(tr_mp_read_bin(&r, &bin, &sl));
    assert_true(sl == 2 && memcmp(bin, "\x00\x01", 2) == 0);
    TU_ASSERT_OK(tr_mp_read_str(&r, &k, &kl));
    TU_ASSERT_OK(tr_mp_skip(&r)); /* the whole list */
    TU_ASSERT_OK(tr_mp_read_str(&r, &k, &kl));
    TU_ASSERT_OK(tr_mp_read_int(&r, &i));
    assert_int_equal(i, -300);
    assert_int_equal(tr_mp_next_type(&r), TR_MP_END);
    assert_int_equal(tr_mp_reader_left(&r), 0);
    TU_ASSERT_OK(tr_msg_destroy(&m));

    /* Not a msgpack message. */
    tr_msg *u64m = tr_msg_new_u64(1, 5);
    TU_ASSERT_RC(tr_mp_reader_init_msg(&r, u64m), TR_EPAYLOAD);
    TU_ASSERT_RC(tr_mp_reader_init_msg(&r, NULL), TR_EINVAL);
    TU_ASSERT_OK(tr_msg_destroy(&u64m));

    /* The payload is also a valid envelope payload, bytes unchanged. */
    tr__env e = mk(TR__K_SEND, 1, 2, 0, 77, 0);
    e.pkind = TR_PAYLOAD_MSGPACK;
    e.data = wd;
    e.len = wl;
    frame f = encode(&e, 1);
    assert_decodes_to(&f, &e, 1);
    free(f.p);
    tr_mp_writer_free(&w);
}

static void test_mp_reader_errors(void **state) {
    (void)state;
    unsigned char buf[64];
    tr_mp_reader r;
    int64_t i;
    uint64_t u;
    double dv;
    bool bv;
    const char *s;
    const void *p;
    size_t len;
    uint32_t n;
    int8_t et;

    /* Wrong type: EPROTO, cursor unchanged, the right reader then works. */
    len = unhex(buf, sizeof buf, "a3 61 62 63");
    tr_mp_reader_init(&r, buf, len);
    TU_ASSERT_RC(tr_mp_read_int(&r, &i), TR_EPROTO);
    TU_ASSERT_RC(tr_mp_read_uint(&r, &u), TR_EPROTO);
    TU_ASSERT_RC(tr_mp_read_bin(&r, &p, &len), TR_EPROTO);
    TU_ASSERT_RC(tr_mp_read_array(&r, &n), TR_EPROTO);
    TU_ASSERT_RC(tr_mp_read_map(&r, &n), TR_EPROTO);
    TU_ASSERT_RC(tr_mp_read_nil(&r), TR_EPROTO);
    TU_ASSERT_RC(tr_mp_read_bool(&r, &bv), TR_EPROTO);
    TU_ASSERT_RC(tr_mp_read_double(&r, &dv), TR_EPROTO);
    TU_ASSERT_RC(tr_mp_read_ext(&r, &et, &p, &len), TR_EPROTO);
    assert_int_equal(tr_mp_reader_left(&r), 4);
    TU_ASSERT_OK(tr_mp_read_str(&r, &s, &len));
    assert_int_equal(len, 3);
    /* Reading past the end. */
    assert_int_equal(tr_mp_next_type(&r), TR_MP_END);
    TU_ASSERT_RC(tr_mp_read_nil(&r), TR_EPROTO);
    TU_ASSERT_RC(tr_mp_skip(&r), TR_EPROTO);

    static const struct {
        const char *hex;
        tr_mp_type type;
    } bad[] = {
        {"a5 61 62", TR_MP_STR},          /* str cut short */
        {"d9", TR_MP_INVALID},            /* str8 header cut */
        {"c4 09 00", TR_MP_BIN},          /* bin cut short */
        {"dc 03 e8 01 02", TR_MP_ARRAY},  /* 1000 elements, 2 bytes */
        {"dd ff ff ff ff", TR_MP_ARRAY},  /* 4e9 elements */
        {"df ff ff ff ff", TR_MP_MAP},    /* 4e9 pairs */
        {"82 01 02 03", TR_MP_MAP},       /* 2 pairs need 4 bytes */
        {"c1", TR_MP_INVALID},            /* reserved */
        {"cf 00 00", TR_MP_INVALID},      /* uint64 cut */
        {"c9 00 00 00 05 01", TR_MP_EXT}, /* ext cut short */
    };
    for (size_t c = 0; c < sizeof bad / sizeof bad[0]; c++) {
        len = unhex(buf, sizeof buf, bad[c].hex);
        tr_mp_reader_init(&r, buf, len);
        assert_int_equal(tr_mp_next_type(&r), bad[c].type);
        TU_ASSERT_RC(tr_mp_read_str(&r, &s, &len), TR_EPROTO);
        TU_ASSERT_RC(tr_mp_read_bin(&r, &p, &len), TR_EPROTO);
        TU_ASSERT_RC(tr_mp_read_array(&r, &n), TR_EPROTO);
        TU_ASSERT_RC(tr_mp_read_map(&r, &n), TR_EPROTO);
        TU_ASSERT_RC(tr_mp_read_ext(&r, &et, &p, &len), TR_EPROTO);
        TU_ASSERT_RC(tr_mp_read_uint(&r, &u), TR_EPROTO);
        TU_ASSERT_RC(tr_mp_skip(&r), TR_EPROTO);
    }
    /* Floats: float32 and float64; an int is not a double. */
    len =
        unhex(buf, sizeof buf, "ca 3f c0 00 00 cb 40 09 21 fb 54 44 2d 18 01");
    tr_mp_reader_init(&r, buf, len);
    TU_ASSERT_OK(tr_mp_read_double(&r, &dv));
    assert_true(dv == 1.5);
    TU_ASSERT_OK(tr_mp_read_double(&r, &dv));
    assert_true(fabs(dv - 3.141592653589793) < 1e-15);
    TU_ASSERT_RC(tr_mp_read_double(&r, &dv), TR_EPROTO);
    /* ext: a timestamp32 (type -1) and an ext8. */
    len = unhex(buf, sizeof buf, "d6 ff 00 00 00 01 c7 02 07 aa bb");
    tr_mp_reader_init(&r, buf, len);
    TU_ASSERT_OK(tr_mp_read_ext(&r, &et, &p, &len));
    assert_int_equal(et, -1);
    assert_int_equal(len, 4);
    TU_ASSERT_OK(tr_mp_read_ext(&r, &et, &p, &len));
    assert_int_equal(et, 7);
    assert_int_equal(len, 2);
    /* skip: bounded depth, and never trusts a count. */
    unsigned char deep[80];
    memset(deep, 0x91, sizeof deep);
    deep[64] = 0xc0; /* 64 levels: ok */
    tr_mp_reader_init(&r, deep, 65);
    TU_ASSERT_OK(tr_mp_skip(&r));
    deep[64] = 0x91;
    deep[65] = 0xc0; /* 65 levels */
    tr_mp_reader_init(&r, deep, 66);
    TU_ASSERT_RC(tr_mp_skip(&r), TR_EPROTO);
    assert_int_equal(tr_mp_reader_left(&r), 66);
    /* NULL handling. */
    tr_mp_reader_init(&r, NULL, 0);
    assert_int_equal(tr_mp_next_type(&r), TR_MP_END);
    TU_ASSERT_RC(tr_mp_read_int(NULL, &i), TR_EINVAL);
    TU_ASSERT_RC(tr_mp_read_int(&r, NULL), TR_EINVAL);
    TU_ASSERT_RC(tr_mp_read_str(&r, NULL, &len), TR_EINVAL);
}

static void test_mp_writer_errors(void **state) {
    (void)state;
    tr_mp_writer w;
    tr_mp_writer_init(&w);
    tr_msg *m = NULL;
    /* Nothing written: not a payload. */
    TU_ASSERT_RC(tr_mp_writer_to_msg(&w, 1, &m), TR_ESTATE);
    /* Open container: not complete. */
    TU_ASSERT_OK(tr_mp_write_array(&w, 2));
    TU_ASSERT_OK(tr_mp_write_nil(&w));
    TU_ASSERT_RC(tr_mp_writer_to_msg(&w, 1, &m), TR_ESTATE);
    TU_ASSERT_OK(tr_mp_write_nil(&w));
    TU_ASSERT_RC(tr_mp_writer_to_msg(&w, 1, NULL), TR_EINVAL);
    /* A second top-level value: ESTATE, sticky. */
    TU_ASSERT_RC(tr_mp_write_int(&w, 1), TR_ESTATE);
    TU_ASSERT_RC(tr_mp_write_nil(&w), TR_ESTATE);
    TU_ASSERT_RC(tr_mp_writer_error(&w), TR_ESTATE);
    TU_ASSERT_RC(tr_mp_writer_to_msg(&w, 1, &m), TR_ESTATE);
    assert_null(m);
    size_t len;
    tr_mp_writer_data(&w, &len);
    assert_int_equal(len, 3); /* nothing was added */
    tr_mp_writer_reset(&w);
    TU_ASSERT_OK(tr_mp_writer_error(&w));

    /* Depth: TR_MP_MAX_DEPTH containers fine, one more is ETOOBIG. */
    for (int d = 0; d < TR_MP_MAX_DEPTH; d++)
        TU_ASSERT_OK(tr_mp_write_array(&w, 1));
    TU_ASSERT_RC(tr_mp_write_array(&w, 0), TR_ETOOBIG);
    tr_mp_writer_reset(&w);
    for (int d = 0; d < TR_MP_MAX_DEPTH; d++) {
        TU_ASSERT_OK(tr_mp_write_map(&w, 1));
        TU_ASSERT_OK(tr_mp_write_nil(&w));
    }
    TU_ASSERT_OK(tr_mp_write_nil(&w));
    assert_true(tr_mp_writer_complete(&w));
    /* ...and the default decoder accepts the deepest writer payload. */
    const void *wd = tr_mp_writer_data(&w, &len);
    tr__env e = mk(TR__K_SEND, 1, 2, 0, 3, 0);
    e.pkind = TR_PAYLOAD_MSGPACK;
    e.data = wd;
    e.len = len;
    frame f = encode(&e, 1);
    assert_decodes_to(&f, &e, 1);
    free(f.p);

    /* Bad arguments. */
    tr_mp_writer_reset(&w);
    TU_ASSERT_RC(tr_mp_write_str(&w, NULL, 3), TR_EINVAL);
    tr_mp_writer_reset(&w);
    TU_ASSERT_RC(tr_mp_write_cstr(&w, NULL), TR_EINVAL);
    tr_mp_writer_reset(&w);
    TU_ASSERT_RC(tr_mp_write_bin(&w, "x", (size_t)TR_MSG_MAX_BYTES + 1),
                 TR_ETOOBIG); /* refused before reading the bytes */
    TU_ASSERT_RC(tr_mp_write_nil(NULL), TR_EINVAL);
    tr_mp_writer_reset(&w);
    TU_ASSERT_OK(tr_mp_write_str(&w, NULL, 0));

    /* raw: exactly one valid object, depth counted with open containers. */
    tr_mp_writer_reset(&w);
    TU_ASSERT_OK(tr_mp_write_array(&w, 2));
    TU_ASSERT_OK(tr_mp_write_raw(&w, "\x92\x01\xa1x", 4));
    TU_ASSERT_OK(tr_mp_write_raw(&w, "\xc0", 1));
    assert_true(tr_mp_writer_complete(&w));
    static const struct {
        const char *bytes;
        size_t len;
        int rc;
    } rc_[] = {{"\x01\x02", 2, TR_EPROTO},
               {"\x92\x01", 2, TR_EPROTO},
               {"\xc1", 1, TR_EPROTO},
               {"", 0, TR_EPROTO}};
    for (size_t i = 0; i < sizeof rc_ / sizeof rc_[0]; i++) {
        tr_mp_writer_reset(&w);
        TU_ASSERT_RC(tr_mp_write_raw(&w, rc_[i].bytes, rc_[i].len), rc_[i].rc);
    }
    tr_mp_writer_reset(&w);
    for (int d = 0; d < TR_MP_MAX_DEPTH - 1; d++)
        TU_ASSERT_OK(tr_mp_write_array(&w, 1));
    TU_ASSERT_RC(tr_mp_write_raw(&w, "\x91\x91\xc0", 3), TR_ETOOBIG);
    tr_mp_writer_reset(&w);
    for (int d = 0; d < TR_MP_MAX_DEPTH - 1; d++)
        TU_ASSERT_OK(tr_mp_write_array(&w, 1));
    TU_ASSERT_OK(tr_mp_write_raw(&w, "\x91\xc0", 2));
    assert_true(tr_mp_writer_complete(&w));
    tr_mp_writer_free(&w);
}

static void test_mp_writer_memory(void **state) {
    (void)state;
    tr_mp_writer w;
    tr_mp_writer_init(&w);
    /* Small payloads stay inline: no allocation. */
    TU_ASSERT_OK(tr_mp_write_array(&w, 3));
    TU_ASSERT_OK(tr_mp_write_cstr(&w, "inline"));
    TU_ASSERT_OK(tr_mp_write_int(&w, -1));
    /* A moved writer keeps working (no pointer into itself). */
    tr_mp_writer moved;
    memcpy(&moved, &w, sizeof w);
    TU_ASSERT_OK(tr_mp_write_nil(&moved));
    assert_true(tr_mp_writer_complete(&moved));
    assert_int_equal(g_allocs, 0);
    size_t len;
    const unsigned char *p = tr_mp_writer_data(&moved, &len);
    assert_int_equal(len, 10);
    assert_int_equal(p[0], 0x93);

    /* Growth failure: ENOMEM, sticky, bytes kept; reset clears it. */
    char text[300];
    memset(text, 'z', sizeof text);
    tr_mp_writer_reset(&w);
    TU_ASSERT_OK(tr_mp_write_array(&w, 2));
    g_fail_after = 0;
    TU_ASSERT_RC(tr_mp_write_str(&w, text, sizeof text), TR_ENOMEM);
    g_fail_after = -1;
    TU_ASSERT_RC(tr_mp_write_nil(&w), TR_ENOMEM);
    tr_msg *m = NULL;
    TU_ASSERT_RC(tr_mp_writer_to_msg(&w, 1, &m), TR_ENOMEM);
    tr_mp_writer_data(&w, &len);
    assert_int_equal(len, 1);
    tr_mp_writer_reset(&w);
    TU_ASSERT_OK(tr_mp_write_array(&w, 2));
    TU_ASSERT_OK(tr_mp_write_str(&w, text, sizeof text));
    TU_ASSERT_OK(tr_mp_write_str(&w, text, sizeof text));
    unsigned long allocs = g_allocs;
    assert_true(allocs > 0);
    /* Reset keeps the heap buffer: the next payload allocates nothing. */
    tr_mp_writer_reset(&w);
    TU_ASSERT_OK(tr_mp_write_array(&w, 2));
    TU_ASSERT_OK(tr_mp_write_str(&w, text, sizeof text));
    TU_ASSERT_OK(tr_mp_write_str(&w, text, sizeof text));
    assert_int_equal(g_allocs, allocs);
    TU_ASSERT_OK(tr_mp_writer_to_msg(&w, 9, &m));
    tr_mp_reader r;
    TU_ASSERT_OK(tr_mp_reader_init_msg(&r, m));
    uint32_t n;
    TU_ASSERT_OK(tr_mp_read_array(&r, &n));
    assert_int_equal(n, 2);
    TU_ASSERT_OK(tr_msg_destroy(&m));
    tr_mp_writer_free(&w);
    tr_mp_writer_free(NULL);
}

/* ---- msgpack-c interoperability
 * ----------------------------------------------------- */

static void test_msgpack_c_interop(void **state) {
    (void)state;
    /* Ours -> msgpack-c. */
    tr_mp_writer w;
    tr_mp_writer_init(&w);
    tr_mp_write_array(&w, 6);
    tr_mp_write_int(&w, -100000);
    tr_mp_write_uint(&w, UINT64_MAX);
    tr_mp_write_cstr(&w, "héllo");
    tr_mp_write_bin(&w, "\x00\xff", 2);
    tr_mp_write_double(&w, 0.5);
    tr_mp_write_map(&w, 1);
    tr_mp_write_cstr(&w, "k");
    tr_mp_write_bool(&w, false);
    TU_ASSERT_OK(tr_mp_writer_error(&w));
    size_t len;
    const char *data = tr_mp_writer_data(&w, &len);
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    size_t off = 0;
    assert_int_equal(msgpack_unpack_next(&up, data, len, &off),
                     MSGPACK_UNPACK_SUCCESS);
    assert_int_equal(off, len);
    msgpack_object o = up.data;
    assert_int_equal(o.type, MSGPACK_OBJECT_ARRAY);
    assert_int_equal(o.via.array.size, 6);
    msgpack_object *a = o.via.array.ptr;
    assert_int_equal(a[0].type, MSGPACK_OBJECT_NEGATIVE_INTEGER);
    assert_true(a[0].via.i64 == -100000);
    assert_int_equal(a[1].type, MSGPACK_OBJECT_POSITIVE_INTEGER);
    assert_true(a[1].via.u64 == UINT64_MAX);
    assert_int_equal(a[2].type, MSGPACK_OBJECT_STR);
    assert_int_equal(a[2].via.str.size, strlen("héllo"));
    assert_int_equal(a[3].type, MSGPACK_OBJECT_BIN);
    assert_int_equal(a[3].via.bin.size, 2);
    assert_int_equal(a[4].type, MSGPACK_OBJECT_FLOAT64);
    assert_true(a[4].via.f64 == 0.5);
    assert_int_equal(a[5].type, MSGPACK_OBJECT_MAP);
    assert_int_equal(a[5].via.map.ptr[0].val.type, MSGPACK_OBJECT_BOOLEAN);
    msgpack_unpacked_destroy(&up);

    /* msgpack-c -> ours: read it, embed it raw, send it as a payload. */
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 2);
    msgpack_pack_str(&pk, 1);
    msgpack_pack_str_body(&pk, "n", 1);
    msgpack_pack_int64(&pk, -7);
    msgpack_pack_str(&pk, 1);
    msgpack_pack_str_body(&pk, "v", 1);
    msgpack_pack_array(&pk, 2);
    msgpack_pack_float(&pk, 2.5f);
    msgpack_pack_uint16(&pk, 40000);
    tr_mp_reader r;
    tr_mp_reader_init(&r, sb.data, sb.size);
    uint32_t n;
    const char *k;
    size_t kl;
    int64_t i;
    double dv;
    uint64_t u;
    TU_ASSERT_OK(tr_mp_read_map(&r, &n));
    assert_int_equal(n, 2);
    TU_ASSERT_OK(tr_mp_read_str(&r, &k, &kl));
    TU_ASSERT_OK(tr_mp_read_int(&r, &i));
    assert_int_equal(i, -7);
    TU_ASSERT_OK(tr_mp_read_str(&r, &k, &kl));
    TU_ASSERT_OK(tr_mp_read_array(&r, &n));
    TU_ASSERT_OK(tr_mp_read_double(&r, &dv));
    assert_true(dv == 2.5);
    TU_ASSERT_OK(tr_mp_read_uint(&r, &u));
    assert_int_equal(u, 40000);
    assert_int_equal(tr_mp_reader_left(&r), 0);
    tr_mp_writer_reset(&w);
    TU_ASSERT_OK(tr_mp_write_raw(&w, sb.data, sb.size));
    tr_msg *m = NULL;
    TU_ASSERT_OK(tr_mp_writer_to_msg(&w, 5, &m));
    TU_ASSERT_OK(tr_msg_destroy(&m));

    /* A whole frame is plain msgpack: msgpack-c reads our envelopes. */
    tr__env e = mk(TR__K_REQUEST, 0x100000001ull, 9, 33, 12, -1);
    e.pkind = TR_PAYLOAD_MSGPACK;
    e.data = (const unsigned char *)sb.data;
    e.len = sb.size;
    frame f = encode(&e, 1);
    msgpack_unpacked_init(&up);
    off = 0;
    assert_int_equal(msgpack_unpack_next(&up, (const char *)f.p, f.len, &off),
                     MSGPACK_UNPACK_SUCCESS);
    assert_int_equal(off, f.len);
    o = up.data;
    assert_int_equal(o.type, MSGPACK_OBJECT_ARRAY);
    assert_int_equal(o.via.array.size, 1);
    msgpack_object env = o.via.array.ptr[0];
    assert_int_equal(env.via.array.size, TR__ENV_FIELDS);
    msgpack_object *fl = env.via.array.ptr;
    assert_int_equal(fl[0].via.u64, TR__PROTO_VERSION);
    assert_int_equal(fl[1].via.u64, TR__K_REQUEST);
    assert_true(fl[3].via.u64 == 0x100000001ull);
    assert_int_equal(fl[5].via.u64, 33);
    assert_int_equal(fl[7].type, MSGPACK_OBJECT_NEGATIVE_INTEGER);
    assert_int_equal(fl[7].via.i64, -1);
    assert_int_equal(fl[8].via.u64, TR_PAYLOAD_MSGPACK);
    assert_int_equal(fl[9].type, MSGPACK_OBJECT_MAP); /* embedded, not bin */
    msgpack_unpacked_destroy(&up);
    free(f.p);
    msgpack_sbuffer_destroy(&sb);
    tr_mp_writer_free(&w);
}

/* ---- seeded random round trip and mutation
 * -------------------------------------------- */

/* A random msgpack object of bounded depth, via the public writer. */
static void rand_obj(tr_mp_writer *w, uint64_t *s, int depth) {
    switch (tu_rand(s) % (depth > 0 ? 10 : 7)) {
    case 0:
        tr_mp_write_nil(w);
        break;
    case 1:
        tr_mp_write_bool(w, tu_rand(s) & 1);
        break;
    case 2:
        tr_mp_write_int(w, (int64_t)tu_rand(s) >> (tu_rand(s) % 64));
        break;
    case 3:
        tr_mp_write_uint(w, tu_rand(s) >> (tu_rand(s) % 64));
        break;
    case 4:
        tr_mp_write_double(w, (double)(int64_t)tu_rand(s) / 7.0);
        break;
    case 5: {
        char t[40];
        size_t n = tu_rand(s) % sizeof t;
        for (size_t i = 0; i < n; i++)
            t[i] = (char)('a' + tu_rand(s) % 26);
        tr_mp_write_str(w, t, n);
        break;
    }
    case 6: {
        unsigned char b[300];
        size_t n = tu_rand(s) % sizeof b;
        for (size_t i = 0; i < n; i++)
            b[i] = (unsigned char)tu_rand(s);
        tr_mp_write_bin(w, b, n);
        break;
    }
    case 7:
    case 8: {
        uint32_t n = (uint32_t)(tu_rand(s) % 20);
        tr_mp_write_array(w, n);
        for (uint32_t i = 0; i < n; i++)
            rand_obj(w, s, depth - 1);
        break;
    }
    default: {
        uint32_t n = (uint32_t)(tu_rand(s) % 6);
        tr_mp_write_map(w, n);
        for (uint32_t i = 0; i < 2 * n; i++)
            rand_obj(w, s, depth - 1);
        break;
    }
    }
}

static uint64_t rand_u64(uint64_t *s) {
    return tu_rand(s) >> (tu_rand(s) % 65 == 64 ? 63 : tu_rand(s) % 64);
}

static tr__env rand_env(uint64_t *s, tr_mp_writer *w, unsigned char *bytes) {
    const struct valid_case *c =
        &k_valid[tu_rand(s) % (sizeof k_valid / sizeof k_valid[0])];
    tr__env e = mk(c->kind, c->s, c->t, c->req, c->tag, c->aux);
    e.flags = c->flags;
    /* Randomise what the rules leave free. */
    if (c->s != 0)
        e.sender = rand_u64(s) | 1;
    if (c->t != 0)
        e.target = rand_u64(s) | 1;
    if (c->req != 0)
        e.req_id = rand_u64(s) | 1;
    if (c->tag != 0)
        e.tag = (uint32_t)(tu_rand(s) % TR_TAG_SYSTEM);
    if (c->kind == TR__K_EXIT || c->kind == TR__K_DOWN ||
        c->kind == TR__K_CANCEL)
        e.aux = (int64_t)tu_rand(s) >> (tu_rand(s) % 64);
    uint8_t pks[4];
    int npk = 0;
    for (uint8_t pk = 0; pk <= TR_PAYLOAD_MSGPACK; pk++)
        if (c->pkinds & (1u << pk))
            pks[npk++] = pk;
    e.pkind = pks[tu_rand(s) % (uint64_t)npk];
    if (e.pkind == TR_PAYLOAD_U64) {
        e.u64 = rand_u64(s);
    } else if (e.pkind == TR_PAYLOAD_BYTES) {
        e.len = tu_rand(s) % 600;
        for (size_t i = 0; i < e.len; i++)
            bytes[i] = (unsigned char)tu_rand(s);
        e.data = bytes;
    } else if (e.pkind == TR_PAYLOAD_MSGPACK) {
        tr_mp_writer_reset(w);
        rand_obj(w, s, (int)(tu_rand(s) % 5));
        e.data = tr_mp_writer_data(w, &e.len);
    }
    return e;
}

static void test_random_round_trip_and_mutation(void **state) {
    (void)state;
    uint64_t seed = tu_seed("codec random");
    uint64_t s = seed;
    enum { ROUNDS = 300, MAXN = 40 };
    tr_mp_writer w[MAXN];
    static unsigned char bytes[MAXN][600];
    tr__env envs[MAXN];
    tr__decoder d, d2;
    tr__encoder e2;
    TU_ASSERT_OK(tr__decoder_init(&d, NULL));
    TU_ASSERT_OK(tr__decoder_init(&d2, NULL));
    TU_ASSERT_OK(tr__encoder_init(&e2, NULL));
    for (int i = 0; i < MAXN; i++)
        tr_mp_writer_init(&w[i]);
    uint64_t accepted = 0, rejected = 0;
    for (int round = 0; round < ROUNDS; round++) {
        size_t n = 1 + tu_rand(&s) % MAXN;
        for (size_t i = 0; i < n; i++)
            envs[i] = rand_env(&s, &w[i], bytes[i]);
        frame f = encode(envs, n);
        uint32_t got;
        int rc = tr__decoder_decode(&d, f.p, f.len, &got);
        if (rc != 0 || got != n)
            fail_msg("seed %" PRIu64 " round %d: %s", seed, round,
                     tu_err_text(rc));
        for (size_t i = 0; i < n; i++)
            if (!tr__env_equal(&d.envs[i], &envs[i]))
                fail_msg("seed %" PRIu64 " round %d env %zu differs", seed,
                         round, i);
        /* Mutations: flip, insert or delete bytes; the decoder must reject
         * cleanly or accept something that re-encodes identically. */
        for (int m = 0; m < 20; m++) {
            unsigned char *p = malloc(f.len + 1);
            assert_non_null(p);
            memcpy(p, f.p, f.len);
            size_t len = f.len;
            size_t at = tu_rand(&s) % len;
            switch (tu_rand(&s) % 3) {
            case 0:
                p[at] ^= (unsigned char)(1u << (tu_rand(&s) % 8));
                break;
            case 1:
                p[at] = (unsigned char)tu_rand(&s);
                break;
            default:
                memmove(p + at, p + at + 1, len - at - 1);
                len--;
                break;
            }
            rc = tr__decoder_decode(&d, p, len, &got);
            if (rc != 0) {
                if (rc != tr__codec_reject_code(d.reason) ||
                    d.reason == TR__REJ_NONE)
                    fail_msg("seed %" PRIu64 ": code %s reason %s", seed,
                             tu_err_text(rc), tr__codec_reject_name(d.reason));
                rejected++;
            } else {
                tr__encoder_reset(&e2);
                for (uint32_t i = 0; i < got; i++)
                    TU_ASSERT_OK(tr__encoder_add(&e2, &d.envs[i]));
                const unsigned char *f2;
                size_t l2;
                TU_ASSERT_OK(tr__encoder_finish(&e2, &f2, &l2));
                uint32_t got2;
                TU_ASSERT_OK(tr__decoder_decode(&d2, f2, l2, &got2));
                assert_int_equal(got2, got);
                for (uint32_t i = 0; i < got; i++)
                    if (!tr__env_equal(&d.envs[i], &d2.envs[i]))
                        fail_msg("seed %" PRIu64 ": mutated frame does not "
                                 "round-trip",
                                 seed);
                accepted++;
            }
            free(p);
        }
        free(f.p);
    }
    assert_true(rejected > 0);
    print_message("[ INFO     ] mutations: %" PRIu64 " rejected, %" PRIu64
                  " still valid\n",
                  rejected, accepted);
    for (int i = 0; i < MAXN; i++)
        tr_mp_writer_free(&w[i]);
    tr__encoder_free(&e2);
    tr__decoder_free(&d2);
    tr__decoder_free(&d);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        T(test_every_kind_and_payload),
        T(test_payload_values),
        T(test_exact_bytes),
        T(test_batch_header_widths),
        T(test_batch_full_and_too_big),
        T(test_encoder_refuses_bad_envelopes),
        T(test_no_allocation_after_warmup),
        T(test_out_of_memory),
        T(test_reject_table),
        T(test_truncated_at_every_offset),
        T(test_oversize_frame),
        T(test_nesting_depth),
        T(test_limits_and_names),
        T(test_hello),
        T(test_mp_int_encodings),
        T(test_mp_lengths),
        T(test_mp_round_trip_msg),
        T(test_mp_reader_errors),
        T(test_mp_writer_errors),
        T(test_mp_writer_memory),
        T(test_msgpack_c_interop),
        T(test_random_round_trip_and_mutation),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
