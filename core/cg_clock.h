/* The monotonic clock every process measures deadlines, idle times and
 * heartbeats with, in milliseconds. Part of the base layer (core/). */
#ifndef CG_CLOCK_H
#define CG_CLOCK_H

#include <stdint.h>

/* Milliseconds on CLOCK_MONOTONIC (never goes back; unrelated to the wall
 * clock). Thread-safe and async-signal-safe. */
uint64_t cg_monotonic_ms(void);

#endif
