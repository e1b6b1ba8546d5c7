/*
 * Shared by the fuzz targets, their standalone driver and the seed
 * generator: property checks that abort (so libFuzzer and the replay tests
 * both see a failure), fixed keys and a fixed clock, and the deterministic
 * stores the session target and its recorded transcripts are built from.
 */
#ifndef WEFT_FUZZ_COMMON_H
#define WEFT_FUZZ_COMMON_H

#include <stddef.h>
#include <stdint.h>

#include "weft.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* A property that must hold for every input: aborts with the location. */
#define FUZZ_CHECK(cond)                                                                  \
	do {                                                                              \
		if (!(cond))                                                              \
			fuzz_fail(__FILE__, __LINE__, #cond);                             \
	} while (0)
void fuzz_fail(const char *file, int line, const char *what) __attribute__((noreturn));

/* Wall clock of every fuzz store: a fixed instant, so that HLCs, ids and
 * recorded transcripts never change. */
#define FUZZ_NOW_MS UINT64_C(1700000000000)
uint64_t fuzz_clock(void *payload);

/* A private scratch directory for this process (removed at exit). */
const char *fuzz_tmpdir(void);

/* Creates (or replaces) a store at path with the fixed clock, the device
 * key derived from seed_byte, and the events of `variant`:
 *   0  the "local" store: a schema, rows in scopes notes and todo
 *   1  the "peer" store: other events in notes, todo and private
 * Returns the open store or NULL (message on stderr). */
weft_db *fuzz_make_store(const char *path, int seed_byte, int variant);
/* Opens an existing fuzz store (fixed clock, key from seed_byte). */
weft_db *fuzz_open_store(const char *path, int seed_byte);

/* Removes path and its -wal / -shm / -journal companions. */
void fuzz_remove_db(const char *path);
/* Whole-file helpers; read returns a malloc'd buffer or NULL. */
void *fuzz_read_file(const char *path, size_t *len);
int fuzz_write_file(const char *path, const void *data, size_t len);

/* The Negentropy target's item ids (BLAKE2b of k) and its fixed set:
 * FUZZ_NEG_ITEMS items k = 0.., timestamp 1000 + k / 3. */
#define FUZZ_NEG_ITEMS 48
void fuzz_neg_item_id(uint8_t id[32], uint32_t k);
struct neg_set;
struct neg_set *fuzz_neg_fixed_set(void);

/* Device key seeds used by the fuzz stores. */
#define FUZZ_SEED_LOCAL 0x11
#define FUZZ_SEED_PEER 0x22

#endif
