/* tests/fuzz/fuzz_codec.c — libFuzzer target for the wire codec.
 *
 * Every input is decoded with the default limits. A rejected frame must
 * come with a reason that maps to the returned code. An accepted frame is
 * re-encoded, the re-encoding decoded again, and the envelopes compared
 * (abort on any difference); the re-encoding must be canonical (encoding
 * it again gives the same bytes) and never longer than the input. Every
 * MSGPACK payload the decoder accepted must also be readable, object by
 * object, with the public tr_mp_reader (and tr_mp_skip must consume it
 * exactly); HELLO payloads go through the HELLO decoder and back.
 *
 * Two builds:
 *   libFuzzer:  tests/fuzz/run.sh [seconds]
 *   standalone: cc -DTR_FUZZ_STANDALONE ... gives a main() that
 *     fuzz_codec FILE|DIR...         replays inputs (a corpus regression run)
 *     fuzz_codec --write-corpus DIR  writes the seed frames
 *     fuzz_codec --hexdump           prints the seed frames in hex
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "transport/codec.h"
#include "troupe/mpack.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(bool ok, const char *what) {
    if (!ok) {
        fprintf(stderr, "fuzz_codec: invariant broken: %s\n", what);
        abort();
    }
}

/* Reads one object with the public reader, containers included. */
static bool read_object(tr_mp_reader *r) {
    bool b;
    uint64_t u;
    int64_t i;
    double d;
    const char *s;
    const void *p;
    size_t len;
    int8_t et;
    uint32_t n;
    switch (tr_mp_next_type(r)) {
    case TR_MP_NIL:
        return tr_mp_read_nil(r) == 0;
    case TR_MP_BOOL:
        return tr_mp_read_bool(r, &b) == 0;
    case TR_MP_UINT:
        return tr_mp_read_uint(r, &u) == 0;
    case TR_MP_INT:
        return tr_mp_read_int(r, &i) == 0 && i < 0;
    case TR_MP_FLOAT:
        return tr_mp_read_double(r, &d) == 0;
    case TR_MP_STR:
        return tr_mp_read_str(r, &s, &len) == 0;
    case TR_MP_BIN:
        return tr_mp_read_bin(r, &p, &len) == 0;
    case TR_MP_EXT:
        return tr_mp_read_ext(r, &et, &p, &len) == 0;
    case TR_MP_ARRAY:
        if (tr_mp_read_array(r, &n) != 0)
            return false;
        for (uint32_t k = 0; k < n; k++)
            if (!read_object(r))
                return false;
        return true;
    case TR_MP_MAP:
        if (tr_mp_read_map(r, &n) != 0)
            return false;
        for (uint64_t k = 0; k < 2 * (uint64_t)n; k++)
            if (!read_object(r))
                return false;
        return true;
    default:
        return false;
    }
}

static void check_payload_readable(const tr__env *env) {
    tr_mp_reader r;
    tr_mp_reader_init(&r, env->data, env->len);
    check(read_object(&r) && tr_mp_reader_left(&r) == 0,
          "MSGPACK payload readable with tr_mp_reader");
    tr_mp_reader_init(&r, env->data, env->len);
    check(tr_mp_skip(&r) == 0 && tr_mp_reader_left(&r) == 0,
          "tr_mp_skip consumes the payload exactly");
}

static void check_hello(const tr__env *env) {
    tr__hello h, h2;
    if (tr__hello_decode(env->data, env->len, &h) != 0)
        return;
    unsigned char buf[TR__HELLO_MAX];
    size_t len = 0;
    check(tr__hello_encode(&h, buf, sizeof buf, &len) == 0, "hello re-encode");
    check(tr__hello_decode(buf, len, &h2) == 0, "hello re-decode");
    check(h.proto_min == h2.proto_min && h.proto_max == h2.proto_max &&
              h.role_len == h2.role_len &&
              memcmp(h.role, h2.role, h.role_len) == 0 &&
              h.node_len == h2.node_len &&
              (h.node == NULL) == (h2.node == NULL) &&
              (h.node == NULL || memcmp(h.node, h2.node, h.node_len) == 0) &&
              h.pid == h2.pid && h.max_frame == h2.max_frame &&
              h.max_batch == h2.max_batch && h.credit == h2.credit,
          "hello round trip");
    uint32_t v;
    int rc = tr__hello_version(&h, &v);
    check(rc == TR_EPROTO || (rc == 0 && v >= h.proto_min && v <= h.proto_max),
          "hello version");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static tr__decoder dec, dec2;
    static tr__encoder enc, enc2;
    static bool ready;
    if (!ready) {
        check(tr__decoder_init(&dec, NULL) == 0 &&
                  tr__decoder_init(&dec2, NULL) == 0 &&
                  tr__encoder_init(&enc, NULL) == 0 &&
                  tr__encoder_init(&enc2, NULL) == 0,
              "init");
        ready = true;
    }

    uint32_t n = 0;
    int rc = tr__decoder_decode(&dec, data, size, &n);
    if (rc != 0) {
        check(dec.reason != TR__REJ_NONE && dec.reason < TR__REJ_COUNT,
              "reject reason set");
        check(rc == tr__codec_reject_code(dec.reason), "code matches reason");
        check(dec.offset <= size, "reject offset within the frame");
        check(n == 0, "count 0 on reject");
        return 0;
    }
    check(n >= 1 && n <= dec.lim.max_batch, "count within limits");

    tr__encoder_reset(&enc);
    for (uint32_t i = 0; i < n; i++) {
        const tr__env *env = &dec.envs[i];
        if (env->len > 0)
            check(env->data >= data && env->data + env->len <= data + size,
                  "payload view inside the frame");
        check(tr__encoder_add(&enc, env) == 0, "re-encode accepted");
        if (env->pkind == TR_PAYLOAD_MSGPACK)
            check_payload_readable(env);
        if (env->kind == TR__K_HELLO)
            check_hello(env);
    }
    const unsigned char *f1;
    size_t l1;
    check(tr__encoder_finish(&enc, &f1, &l1) == 0, "finish");
    check(l1 <= size, "canonical re-encoding is never longer");

    uint32_t n2 = 0;
    check(tr__decoder_decode(&dec2, f1, l1, &n2) == 0, "re-decode");
    check(n2 == n, "same count");
    tr__encoder_reset(&enc2);
    for (uint32_t i = 0; i < n; i++) {
        check(tr__env_equal(&dec.envs[i], &dec2.envs[i]), "same envelopes");
        check(tr__encoder_add(&enc2, &dec2.envs[i]) == 0, "re-re-encode");
    }
    const unsigned char *f2;
    size_t l2;
    check(tr__encoder_finish(&enc2, &f2, &l2) == 0, "finish 2");
    check(l2 == l1 && memcmp(f1, f2, l1) == 0, "canonical form is stable");
    return 0;
}

#ifdef TR_FUZZ_STANDALONE
/* ---- seed frames, built with the codec's own encoder ----------------------
 */

#include <dirent.h>
#include <sys/stat.h>

/* A tr_ref: generation << 32 | (slot index + 1). */
#define A(gen, idx) ((uint64_t)(gen) << 32 | ((uint64_t)(idx) + 1))

typedef struct seed {
    const char *name;
    const unsigned char *frame;
    size_t len;
} seed;

static unsigned char g_pl[4][2048]; /* payload scratch */

static size_t put_str(unsigned char *p, const char *s) {
    size_t len = strlen(s);
    size_t n = tr__mp_put_str_hdr(p, (uint32_t)len);
    memcpy(p + n, s, len);
    return n + len;
}

static tr__env env_of(uint8_t kind, uint64_t sender, uint64_t target,
                      uint64_t req, uint32_t tag, int64_t aux) {
    return (tr__env){.kind = kind,
                     .sender = sender,
                     .target = target,
                     .req_id = req,
                     .tag = tag,
                     .aux = aux,
                     .pkind = TR_PAYLOAD_NONE};
}

/* Encodes envs into a fresh heap frame. */
static seed make(const char *name, const tr__env *envs, size_t n) {
    tr__encoder e;
    const unsigned char *f;
    size_t len;
    check(tr__encoder_init(&e, NULL) == 0, "seed init");
    for (size_t i = 0; i < n; i++)
        check(tr__encoder_add(&e, &envs[i]) == 0, name);
    check(tr__encoder_finish(&e, &f, &len) == 0, "seed finish");
    unsigned char *copy = malloc(len);
    check(copy != NULL, "seed alloc");
    memcpy(copy, f, len);
    tr__encoder_free(&e);
    return (seed){name, copy, len};
}

static size_t build_seeds(seed *out) {
    size_t ns = 0;
    const uint64_t main_a = A(1, 0), main_b = A(1, 7), wk = A(3, 41);

    /* 1. HELLO from a worker. */
    tr__hello h = {.proto_min = 1,
                   .proto_max = 1,
                   .role = "worker",
                   .role_len = 6,
                   .node = "w1",
                   .node_len = 2,
                   .pid = 4242,
                   .max_frame = TR__LIM_FRAME,
                   .max_batch = TR__LIM_BATCH,
                   .credit = 1000};
    size_t hl = 0;
    check(tr__hello_encode(&h, g_pl[0], sizeof g_pl[0], &hl) == 0, "hello");
    tr__env e = env_of(TR__K_HELLO, 0, 0, 0, 0, 0);
    e.pkind = TR_PAYLOAD_MSGPACK;
    e.data = g_pl[0];
    e.len = hl;
    out[ns++] = make("hello", &e, 1);

    /* 2-5. SEND with each payload kind. */
    e = env_of(TR__K_SEND, main_a, wk, 0, 7, 0);
    out[ns++] = make("send_none", &e, 1);
    e.pkind = TR_PAYLOAD_U64;
    e.u64 = 1234567890123ull;
    out[ns++] = make("send_u64", &e, 1);
    e.pkind = TR_PAYLOAD_BYTES;
    e.data = (const unsigned char *)"hello, troupe";
    e.len = 13;
    out[ns++] = make("send_bytes", &e, 1);
    unsigned char *p = g_pl[1];
    size_t n = tr__mp_put_map_hdr(p, 4);
    n += put_str(p + n, "op");
    n += put_str(p + n, "sum");
    n += put_str(p + n, "args");
    n += tr__mp_put_array_hdr(p + n, 3);
    n += tr__mp_put_int(p + n, 1);
    n += tr__mp_put_int(p + n, -2);
    n += tr__mp_put_uint(p + n, 300);
    n += put_str(p + n, "scale");
    n += tr__mp_put_double(p + n, 1.5);
    n += put_str(p + n, "blob");
    n += tr__mp_put_bin_hdr(p + n, 3);
    memcpy(p + n, "\x00\x01\x02", 3);
    n += 3;
    e.pkind = TR_PAYLOAD_MSGPACK;
    e.data = p;
    e.len = n;
    out[ns++] = make("send_msgpack", &e, 1);
    size_t msgpack_len = n;

    /* 6. REQUEST and its REPLY, a failed REPLY, a CANCEL of the request. */
    tr__env rr[4];
    rr[0] = env_of(TR__K_REQUEST, main_a, wk, 17, 8, 5000);
    rr[0].pkind = TR_PAYLOAD_MSGPACK;
    rr[0].data = g_pl[1];
    rr[0].len = msgpack_len;
    rr[1] = env_of(TR__K_REPLY, wk, main_a, 17, 9, 0);
    rr[1].pkind = TR_PAYLOAD_U64;
    rr[1].u64 = 299;
    rr[2] = env_of(TR__K_REPLY, wk, main_a, 18, 9, TR_ENOACTOR);
    rr[2].pkind = TR_PAYLOAD_BYTES;
    rr[2].data = (const unsigned char *)"no such actor";
    rr[2].len = 13;
    rr[3] = env_of(TR__K_CANCEL, main_a, wk, 19, 0, 2 /* CANCELLED */);
    out[ns++] = make("request_reply", rr, 4);

    /* 7. SPAWN, a successful and a failed SPAWN_REPLY. */
    p = g_pl[2];
    n = tr__mp_put_map_hdr(p, 2);
    n += put_str(p + n, "behavior");
    n += put_str(p + n, "hasher");
    n += put_str(p + n, "init");
    n += tr__mp_put_bin_hdr(p + n, 4);
    memcpy(p + n, "\xde\xad\xbe\xef", 4);
    n += 4;
    tr__env sp[3];
    sp[0] = env_of(TR__K_SPAWN, main_a, 0, 21, 0, 0);
    sp[0].pkind = TR_PAYLOAD_MSGPACK;
    sp[0].data = p;
    sp[0].len = n;
    sp[1] = env_of(TR__K_SPAWN_REPLY, wk, main_a, 21, 0, 0);
    sp[2] = env_of(TR__K_SPAWN_REPLY, 0, main_a, 22, 0, TR_ENOTFOUND);
    sp[2].pkind = TR_PAYLOAD_BYTES;
    sp[2].data = (const unsigned char *)"unregistered behaviour";
    sp[2].len = 22;
    out[ns++] = make("spawn", sp, 3);

    /* 8. LINK, MONITOR and their undo, EXIT and DOWN. */
    tr__env lm[6];
    lm[0] = env_of(TR__K_LINK, main_a, wk, 0, 0, 0);
    lm[1] = env_of(TR__K_MONITOR, main_b, wk, 5, 0, 0);
    lm[2] = lm[0];
    lm[2].flags = TR__ENV_F_UNDO;
    lm[3] = lm[1];
    lm[3].flags = TR__ENV_F_UNDO;
    lm[4] = env_of(TR__K_EXIT, wk, main_a, 0, 0, TR_EPROTO);
    lm[4].pkind = TR_PAYLOAD_BYTES;
    lm[4].data = (const unsigned char *)"bad input";
    lm[4].len = 9;
    lm[5] = env_of(TR__K_DOWN, wk, main_b, 5, 0, 4 /* KILLED */);
    out[ns++] = make("link_monitor", lm, 6);

    /* 9. Stop and kill an actor. */
    tr__env ck[2];
    ck[0] = env_of(TR__K_CANCEL, main_a, wk, 0, 0, 2);
    ck[0].pkind = TR_PAYLOAD_U64;
    ck[0].u64 = 250; /* grace ms */
    ck[1] = env_of(TR__K_CANCEL, main_a, wk, 0, 0, 4);
    ck[1].flags = TR__ENV_F_KILL;
    out[ns++] = make("cancel_actor", ck, 2);

    /* 10. Heartbeat with load, credit, bye. */
    tr__env hb[3];
    hb[0] = env_of(TR__K_HEARTBEAT, 0, 0, 0, 0, 42);
    hb[0].pkind = TR_PAYLOAD_U64;
    hb[0].u64 = 3;
    hb[1] = env_of(TR__K_CREDIT, wk, main_a, 0, 0, 512);
    hb[2] = env_of(TR__K_BYE, 0, 0, 0, 0, 0);
    out[ns++] = make("control", hb, 3);

    /* 11. A batch of 20 sends (array16 batch header). */
    tr__env batch[20];
    for (unsigned i = 0; i < 20; i++) {
        batch[i] = env_of(TR__K_SEND, main_a, wk, 0, 7, 0);
        batch[i].pkind = TR_PAYLOAD_U64;
        batch[i].u64 = i * 1000003ull;
    }
    out[ns++] = make("batch20", batch, 20);

    /* 12. A payload nested exactly to the default depth limit. */
    p = g_pl[3];
    n = 0;
    for (unsigned i = 0; i < TR__LIM_DEPTH; i++)
        n += tr__mp_put_array_hdr(p + n, 1);
    n += tr__mp_put_nil(p + n);
    e = env_of(TR__K_SEND, main_a, wk, 0, 7, 0);
    e.pkind = TR_PAYLOAD_MSGPACK;
    e.data = p;
    e.len = n;
    out[ns++] = make("deep32", &e, 1);

    /* 13. A 300-byte BYTES payload (bin16) in a REQUEST without timeout. */
    static unsigned char big[300];
    for (unsigned i = 0; i < sizeof big; i++)
        big[i] = (unsigned char)(i * 7);
    e = env_of(TR__K_REQUEST, main_a, wk, 1ull << 40, 0x1234, -1);
    e.pkind = TR_PAYLOAD_BYTES;
    e.data = big;
    e.len = sizeof big;
    out[ns++] = make("bytes300", &e, 1);
    return ns;
}

static void free_seeds(seed *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        free((void *)s[i].frame);
}

static int write_corpus(const char *dir) {
    seed s[16];
    size_t n = build_seeds(s);
    for (size_t i = 0; i < n; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s.bin", dir, s[i].name);
        FILE *f = fopen(path, "wb");
        if (f == NULL || fwrite(s[i].frame, 1, s[i].len, f) != s[i].len) {
            perror(path);
            free_seeds(s, n);
            return 1;
        }
        fclose(f);
        LLVMFuzzerTestOneInput(s[i].frame, s[i].len);
    }
    printf("wrote %zu seeds to %s\n", n, dir);
    free_seeds(s, n);
    return 0;
}

static int hexdump(void) {
    seed s[16];
    size_t n = build_seeds(s);
    for (size_t i = 0; i < n; i++) {
        printf("== %s (%zu bytes)\n", s[i].name, s[i].len);
        for (size_t off = 0; off < s[i].len; off += 16) {
            printf("%04zx ", off);
            for (size_t j = off; j < off + 16 && j < s[i].len; j++)
                printf(" %02x", s[i].frame[j]);
            printf("\n");
        }
    }
    free_seeds(s, n);
    return 0;
}

static int replay_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        perror(path);
        return 1;
    }
    unsigned char *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len == cap) {
            cap = cap ? cap * 2 : 4096;
            unsigned char *nb = realloc(buf, cap);
            check(nb != NULL, "replay alloc");
            buf = nb;
        }
        size_t got = fread(buf + len, 1, cap - len, f);
        len += got;
        if (got == 0)
            break;
    }
    fclose(f);
    LLVMFuzzerTestOneInput(buf, len);
    free(buf);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "--write-corpus") == 0)
        return write_corpus(argv[2]);
    if (argc == 2 && strcmp(argv[1], "--hexdump") == 0)
        return hexdump();
    int files = 0;
    for (int i = 1; i < argc; i++) {
        struct stat st;
        if (stat(argv[i], &st) != 0) {
            perror(argv[i]);
            return 1;
        }
        if (!S_ISDIR(st.st_mode)) {
            if (replay_file(argv[i]) != 0)
                return 1;
            files++;
            continue;
        }
        DIR *d = opendir(argv[i]);
        struct dirent *de;
        while (d != NULL && (de = readdir(d)) != NULL) {
            if (de->d_name[0] == '.')
                continue;
            char path[4096];
            snprintf(path, sizeof path, "%s/%s", argv[i], de->d_name);
            if (replay_file(path) != 0)
                return 1;
            files++;
        }
        if (d != NULL)
            closedir(d);
    }
    printf("fuzz_codec: %d inputs replayed, no invariant broken\n", files);
    return files > 0 ? 0 : 1;
}
#endif
