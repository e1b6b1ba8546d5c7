/* Device identity: an Ed25519 key pair, its key file, its printable id. */
#ifndef WEFT_CORE_IDENTITY_H
#define WEFT_CORE_IDENTITY_H

#include "core/error.h"
#include "weft.h"

/* A seal stands in for the signature of an own event that is stored
 * before it is signed (core/signer.c, docs/FORMAT.md section 5). */
#define IDENTITY_SEAL_BYTES 32

typedef struct identity {
	unsigned char pk[WEFT_PUBLIC_KEY_BYTES];
	/* 64 bytes of Ed25519 secret key, then the 32-byte seal key derived
	 * from it, in sodium_malloc'd memory; NULL if none. */
	unsigned char *sk;
	char device_id[WEFT_DEVICE_ID_LEN + 1];
} identity;

/* A new identity from a 32-byte seed, or a random one when seed is NULL. */
int identity_from_seed(identity *id, const unsigned char *seed, weft_err *err);
/* Writes the key file (mode 0600, never overwriting). passphrase NULL or ""
 * stores the seed in clear; otherwise Argon2id + XSalsa20-Poly1305. */
int identity_save(const identity *id, const char *path, const char *passphrase,
                  weft_err *err);
/* Reads a key file, refusing one that others may read (WEFT_EPERM) and a
 * wrong or missing passphrase (WEFT_EAUTH). */
int identity_load(identity *id, const char *path, const char *passphrase,
                  weft_err *err);
/* Just the public key from meta, no secret (read-only stores). */
void identity_public_only(identity *id, const unsigned char pk[32]);
/* The seal of the event with this id: a BLAKE2b MAC under a key only
 * this device has (derived from its seed), so that a row stored with a
 * seal was written by this device. Needs the secret key. */
void identity_seal(const identity *id, const unsigned char event_id[32], unsigned char out[IDENTITY_SEAL_BYTES]);
/* Wipes and frees the secret key. */
void identity_wipe(identity *id);

#endif
