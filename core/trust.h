/* The trust store: devices allowed to sync, their scopes and TLS pin. */
#ifndef WEFT_CORE_TRUST_H
#define WEFT_CORE_TRUST_H

#include "core/store.h"

/* A weft_authorize_fn over the trust store (payload: the weft_db). */
int trust_authorize(const unsigned char peer[32], const char *const *scopes, size_t n, int *readable,
                    int *writable, void *payload);
/* 1 if pk is trusted (fills pinned / hash), 0 if not, negative on error. */
int trust_lookup(weft_db *db, const unsigned char pk[32], int *pinned, unsigned char hash[32]);
/* Pins the TLS key hash of a trusted device (after its endorsement checked). */
int trust_pin(weft_db *db, const unsigned char pk[32], const unsigned char hash[32]);

#endif
