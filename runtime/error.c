/* tr_strerror / tr_err_name, generated from TR_ERRNO_MAP. */
#include "troupe/error.h"

TR_API const char *tr_strerror(int err) {
    switch (err) {
    case 0:
        return "success";
#define TR__ERR_STR(name, val, msg)                                            \
    case val:                                                                  \
        return msg;
        TR_ERRNO_MAP(TR__ERR_STR)
#undef TR__ERR_STR
    default:
        return "unknown error";
    }
}

TR_API const char *tr_err_name(int err) {
    switch (err) {
    case 0:
        return "TR_OK";
#define TR__ERR_NAME(name, val, msg)                                           \
    case val:                                                                  \
        return "TR_" #name;
        TR_ERRNO_MAP(TR__ERR_NAME)
#undef TR__ERR_NAME
    default:
        return "TR_E?";
    }
}
