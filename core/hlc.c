#include "core/hlc.h"

uint64_t hlc_next(uint64_t last, uint64_t wall_ms)
{
	/* A clock beyond the 47-bit millisecond range (a clock in µs by
	 * mistake) must not wrap the stamp around. */
	if (wall_ms > HLC_MS_MAX)
		wall_ms = HLC_MS_MAX;
	if (wall_ms > HLC_MS(last))
		return HLC_MAKE(wall_ms, 0);
	/* Wall clock behind or equal: stay on the logical time, count up.
	 * A full counter borrows the next millisecond. */
	return last + 1;
}

int hlc_too_far_ahead(uint64_t remote, uint64_t wall_ms, uint64_t max_drift_ms)
{
	return HLC_MS(remote) > wall_ms + max_drift_ms;
}

