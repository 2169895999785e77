/* Memory allocator settings for processes that move large dirty frames. */
#ifndef CG_DIRTY_MEM_H
#define CG_DIRTY_MEM_H

/* Makes glibc malloc keep large blocks (up to 32 MiB) on the heap and keep
 * up to 64 MiB of freed heap instead of returning it to the kernel at once.
 * Without it every 1 MiB payload is a fresh mmap()/munmap() or a heap
 * trim: 256 page faults plus zeroing per copy, which cost more than the
 * copies themselves (1 MiB echo: 260 -> ~1000 calls/s). Process-wide; called
 * once by the dirty arbiter, each dirty worker, and the first import of the
 * client codec in an HTTP worker. Idempotent. */
void cg_dirty_mem_tune(void);

#endif
