/* troupe-keygen — CURVE key pairs for troupe nodes (troupe/node.h).
 *
 *   troupe-keygen                 prints a new pair: "public=<z85>" and
 *                                 "secret=<z85>" (keep the secret one
 *                                 secret: redirect it to a 0600 file)
 *   troupe-keygen -o PREFIX       writes PREFIX.key (the pair, mode 0600)
 *                                 and PREFIX.pub (the public key), prints
 *                                 the public key
 *   troupe-keygen -p SECRET       prints the public key of a secret key
 *   troupe-keygen -f FILE         prints the public key of the secret key
 *                                 in FILE (a PREFIX.key written by -o)
 *
 * Keys are libzmq's CurveZMQ keys in Z85 text (40 characters). Exit
 * status: 0, 1 on a bad key or I/O error, 2 on a usage error. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#define KEY_LEN 40

static int usage(void) {
    fprintf(stderr, "usage: troupe-keygen [-o PREFIX | -p SECRET | -f FILE]\n");
    return 2;
}

static int print_public(const char *secret) {
    char pub[KEY_LEN + 1];
    uint8_t bin[32];
    if (strlen(secret) != KEY_LEN || zmq_z85_decode(bin, secret) == NULL ||
        zmq_curve_public(pub, secret) != 0) {
        fprintf(stderr, "troupe-keygen: not a Z85 CURVE secret key\n");
        return 1;
    }
    printf("public=%s\n", pub);
    return 0;
}

/* The value of "secret=" in a key file. */
static int public_from_file(const char *path) {
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        fprintf(stderr, "troupe-keygen: %s: %s\n", path, strerror(errno));
        return 1;
    }
    char line[256];
    int rc = 1;
    while (fgets(line, sizeof line, f) != NULL) {
        if (strncmp(line, "secret=", 7) != 0)
            continue;
        line[strcspn(line, "\r\n")] = 0;
        rc = print_public(line + 7);
        break;
    }
    fclose(f);
    if (rc != 0)
        fprintf(stderr, "troupe-keygen: %s: no valid secret= line\n", path);
    return rc;
}

static int write_file(const char *path, mode_t mode, const char *text) {
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (fd < 0) {
        fprintf(stderr, "troupe-keygen: %s: %s\n", path, strerror(errno));
        return 1;
    }
    size_t len = strlen(text);
    ssize_t w = write(fd, text, len);
    int rc = (w == (ssize_t)len && close(fd) == 0) ? 0 : 1;
    if (rc != 0)
        fprintf(stderr, "troupe-keygen: %s: write failed\n", path);
    return rc;
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "-p") == 0)
        return print_public(argv[2]);
    if (argc == 3 && strcmp(argv[1], "-f") == 0)
        return public_from_file(argv[2]);
    if (argc != 1 && !(argc == 3 && strcmp(argv[1], "-o") == 0))
        return usage();
    if (!zmq_has("curve")) {
        fprintf(stderr, "troupe-keygen: this libzmq has no CURVE support\n");
        return 1;
    }
    char pub[KEY_LEN + 1], sec[KEY_LEN + 1];
    if (zmq_curve_keypair(pub, sec) != 0) {
        fprintf(stderr, "troupe-keygen: zmq_curve_keypair: %s\n",
                zmq_strerror(zmq_errno()));
        return 1;
    }
    if (argc == 1) {
        printf("public=%s\nsecret=%s\n", pub, sec);
        return 0;
    }
    char path[4096], text[256];
    snprintf(text, sizeof text, "public=%s\nsecret=%s\n", pub, sec);
    if (snprintf(path, sizeof path, "%s.key", argv[2]) >= (int)sizeof path ||
        write_file(path, 0600, text) != 0)
        return 1;
    snprintf(text, sizeof text, "public=%s\n", pub);
    snprintf(path, sizeof path, "%s.pub", argv[2]);
    if (write_file(path, 0644, text) != 0)
        return 1;
    printf("public=%s\n", pub);
    return 0;
}
