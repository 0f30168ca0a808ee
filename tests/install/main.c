/* Consumer of an installed troupe: compiles against the installed header,
 * links the installed library, and calls into it. Exit 0 on success. */
#include <stdio.h>

#include <troupe/troupe.h>

int main(void) {
    tr_runtime *rt = NULL;
    int rc = tr_runtime_create(&rt, NULL);
    if (rc != 0) {
        fprintf(stderr, "tr_runtime_create: %s\n", tr_strerror(rc));
        return 1;
    }
    tr_runtime_destroy(&rt);
    if (rt != NULL) {
        fprintf(stderr, "tr_runtime_destroy did not reset the pointer\n");
        return 1;
    }

    const char *msg = tr_strerror(TR_ENOACTOR);
    printf("TR_ENOACTOR: %s\n", msg);
    return (msg != NULL && msg[0] != '\0') ? 0 : 1;
}
