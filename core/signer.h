/*
 * Own events signed after their commit (docs/FORMAT.md section 5,
 * docs/DECISIONS.md).
 *
 * An event's id does not cover its signature, and an Ed25519 signature is
 * a function of the key and the message alone, so an append may commit
 * its row with a seal where the signature goes (identity_seal: a MAC
 * under a key only this device has) and sign afterwards, off the path
 * that waits for the disk. A thread per handle computes the signatures;
 * the handle's next write transaction writes them (store_begin), close
 * writes the rest, and a read-write open signs what a crash left
 * (signer_recover). Until then a read of the row checks its seal and
 * signs it on the spot (store_row_event).
 *
 * At most SIGNER_MAX events of a handle wait; beyond that, or if no
 * thread can be started, appends sign before they commit as before.
 */
#ifndef WEFT_CORE_SIGNER_H
#define WEFT_CORE_SIGNER_H

#include <stdint.h>

#include "weft.h"

#define SIGNER_MAX 64
/* After its last job the thread polls this long before it sleeps: waking
 * a sleeping thread costs an append about what signing inline does. */
#define SIGNER_POLL_MS 2
#define SIGNER_POLL_US 20

typedef struct signer signer;

/* 1 if the next append may be stored sealed (starts the thread on the
 * first call), 0 if it must be signed inline. */
int signer_room(weft_db *db);
/* After the commit of the sealed event id at row n. */
void signer_push(weft_db *db, int64_t n, const weft_id *id, const unsigned char seal[32]);
/* Inside a write transaction that just began: writes the signatures
 * computed so far. Fails only if the transaction failed. */
int signer_write(weft_db *db);
/* The transaction signer_write wrote into committed, or rolled back. */
void signer_committed(weft_db *db);
void signer_rolled_back(weft_db *db);
/* Stops the thread, signs what is left and writes it in one transaction
 * (what cannot be written stays sealed: signer_recover signs it). */
void signer_close(weft_db *db);
/* Read-write open: signs the sealed rows a crash left. */
int signer_recover(weft_db *db);

#endif
