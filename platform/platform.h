/*
 * What a port of weft must provide. One implementation per OS
 * (platform/posix.c); nothing above this layer uses #ifdef <os>.
 * Functions return 0 or a negative WEFT_E* code and, on failure, fill
 * `err` (when not NULL) with a sentence naming the file and the OS reason.
 */
#ifndef WEFT_PLATFORM_H
#define WEFT_PLATFORM_H

#include <stddef.h>
#include <stdint.h>

#define PLAT_ERR_LEN 512

/* Wall clock, milliseconds since the Unix epoch. May jump either way. */
uint64_t plat_wall_ms(void);
/* Monotonic clock in milliseconds, for timeouts. Never goes back. */
uint64_t plat_mono_ms(void);
/* Cryptographically secure random bytes (libsodium's randombytes). */
void plat_random(void *buf, size_t len);

/* 1 if a file exists at path, 0 if not. */
int plat_file_exists(const char *path);
/* Mode bits (e.g. 0600) of an existing file, or a negative error. */
int plat_file_mode(unsigned *mode, const char *path, char err[PLAT_ERR_LEN]);
/*
 * Writes data to path atomically and durably: a temporary file created
 * with mode 0600 beside it, fsync, rename over path, fsync of the
 * directory. With exclusive, fails with WEFT_EEXISTS if path exists.
 */
int plat_write_file_atomic(const char *path, const void *data, size_t len,
                           int exclusive, char err[PLAT_ERR_LEN]);
/* Reads a whole file of at most max bytes into a malloc'd (weft__malloc)
 * buffer. WEFT_ENOTFOUND if absent, WEFT_ELIMIT if larger than max. */
int plat_read_file(void **out, size_t *len, const char *path, size_t max,
                   char err[PLAT_ERR_LEN]);
/* Creates an empty file with mode 0600 (WEFT_EEXISTS if present), so
 * that files which later fill with private data never start readable. */
int plat_create_private(const char *path, char err[PLAT_ERR_LEN]);
/* fsync of the directory holding path (makes a create or rename durable). */
int plat_fsync_dir_of(const char *path, char err[PLAT_ERR_LEN]);

#endif
