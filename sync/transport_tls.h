/* TLS transport internals shared with its tests. */
#ifndef WEFT_SYNC_TRANSPORT_TLS_H
#define WEFT_SYNC_TRANSPORT_TLS_H

#include "weft.h"

/*
 * Test-only misbehaviour, so tests/unit/test_tls.c can check that the other
 * side refuses what an attacker would try. Nothing outside tests calls it.
 */
enum tls_fault {
	TLS_FAULT_NONE = 0,
	/* Present a certificate naming this device but holding a TLS key
	 * derived from another seed, while sending this device's genuine
	 * endorsement (of its real TLS key): a replayed endorsement. */
	TLS_FAULT_FOREIGN_KEY = 1,
	/* Sign a channel binding that is not this session's. */
	TLS_FAULT_BAD_BINDING = 2,
	/* Neither offer nor require the extended master secret. */
	TLS_FAULT_NO_EMS = 3
};

/* Applies fault to connections made or accepted from now on. */
int transport_tls_test_fault(weft_transport *t, enum tls_fault fault);

#endif
