/* Fixed-size block pool for message nodes (TR__BLOCK_SIZE bytes).
 *
 * Hot paths (send, receive) allocate and free one block per message, often
 * on different threads (a producer allocates, a consumer frees). Each thread
 * keeps two magazines of blocks; full/empty magazines are exchanged with a
 * global depot under a mutex, so the lock is taken once per TR__MAG blocks. */
#ifndef TR_RUNTIME_POOL_H
#define TR_RUNTIME_POOL_H

#include <stddef.h>

#define TR__BLOCK_SIZE 64
#define TR__MAG 256

/* Returns a TR__BLOCK_SIZE-byte block aligned to 16, or NULL when out of
 * memory. Any thread. */
void *tr__block_alloc(void);
/* Returns a block to the pool. Any thread. */
void tr__block_free(void *block);
/* Releases the calling thread's cached blocks to the depot (worker exit). */
void tr__pool_thread_flush(void);
/* Frees the depot's blocks to the system (last runtime destroyed). Blocks
 * still in other threads' caches are freed when those threads exit. */
void tr__pool_trim(void);

#endif
