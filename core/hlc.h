/*
 * Hybrid logical clock: 48 bits of wall-clock milliseconds, 16 bits of
 * counter. Stamps only move forward, even when the wall clock jumps back,
 * and remote stamps too far ahead of the local wall clock are refused
 * without moving the clock.
 */
#ifndef WEFT_CORE_HLC_H
#define WEFT_CORE_HLC_H

#include <stdint.h>

/* Stamps keep their top bit clear (see EVENT_HLC_MAX): 47 bits of ms. */
#define HLC_MS_MAX ((UINT64_C(1) << 47) - 1)
#define HLC_MS(h) ((h) >> 16)
#define HLC_COUNTER(h) ((h) & 0xffffu)
#define HLC_MAKE(ms, c) (((uint64_t)(ms) << 16) | ((uint64_t)(c) & 0xffffu))

/* The next own stamp after last, given the wall clock: strictly greater. */
uint64_t hlc_next(uint64_t last, uint64_t wall_ms);
/* 1 if a remote stamp lies beyond wall_ms + max_drift_ms, else 0. */
int hlc_too_far_ahead(uint64_t remote, uint64_t wall_ms, uint64_t max_drift_ms);

#endif
