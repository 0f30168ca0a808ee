/* troupe — an actor / message-passing runtime for C.
 * Umbrella header: include this one. */
#ifndef TROUPE_H
#define TROUPE_H

#define TROUPE_VERSION_MAJOR 0
#define TROUPE_VERSION_MINOR 1
#define TROUPE_VERSION_PATCH 0

#include "actor.h"
#include "error.h"
#include "inbox.h"
#include "lifecycle.h"
#include "log.h"
#include "message.h"
#include "mpack.h"
#include "reactor.h"
#include "remote.h"
#include "node.h"
#include "bounded.h"
#include "limiter.h"
#include "batch.h"
#include "channel.h"
#include "router.h"
#include "runtime.h"
#include "scope.h"
#include "supervisor.h"
#include "taskgroup.h"
#include "timer.h"

#endif
