/* The monotonic clock in milliseconds (see cg_clock.h). */
#include <time.h>

#include "cg_clock.h"

uint64_t cg_monotonic_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}
