/* troupe — symbol visibility.
 *
 * The library is built with -fvisibility=hidden; every public function is
 * marked TR_API so that exactly the documented API is exported. */
#ifndef TROUPE_EXPORT_H
#define TROUPE_EXPORT_H

#if defined(TROUPE_BUILDING) && defined(__GNUC__)
#define TR_API __attribute__((visibility("default")))
#else
#define TR_API
#endif

#endif
