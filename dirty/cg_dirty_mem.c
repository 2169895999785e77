/* See cg_dirty_mem.h. */
#include <malloc.h>
#include <stdbool.h>

#include "cg_dirty_mem.h"

void cg_dirty_mem_tune(void)
{
    static bool done;

    if (done) {
        return;
    }
    done = true;
    /* Fixing M_MMAP_THRESHOLD turns glibc's dynamic threshold off; the trim
     * threshold bounds what a process keeps after a burst of big frames. */
    (void)mallopt(M_MMAP_THRESHOLD, 32 * 1024 * 1024);
    (void)mallopt(M_TRIM_THRESHOLD, 64 * 1024 * 1024);
}
