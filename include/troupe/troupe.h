/* troupe — an actor / message-passing runtime for C.
 * Umbrella header: include this one. */
#ifndef TROUPE_H
#define TROUPE_H

#define TROUPE_VERSION_MAJOR 0
#define TROUPE_VERSION_MINOR 1
#define TROUPE_VERSION_PATCH 0

#include "error.h"
#include "message.h"
#include "runtime.h"
#include "actor.h"
#include "timer.h"
#include "reactor.h"
#include "inbox.h"
#include "mpack.h"
#include "remote.h"
#include "lifecycle.h"
#include "supervisor.h"
#include "taskgroup.h"
#include "scope.h"
#include "log.h"

#endif
