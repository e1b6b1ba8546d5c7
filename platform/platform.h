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


/* ---------------------------------------------------------------- sockets
 * Blocking TCP with deadlines. Every socket gets TCP_NODELAY (weft sends
 * small frames; Nagle would add ~40-200 ms per round trip). Timeouts
 * return WEFT_ETIMEOUT; a closed peer during recv gives *got = 0. */

/* host may be a name, an IPv4 or an IPv6 address ("::1"); port is text.
 * bound receives "addr:port" actually bound (port 0 picks a free one). */
int plat_tcp_listen(int *fd, const char *host, const char *port, char bound[80], char err[PLAT_ERR_LEN]);
int plat_tcp_accept(int *cfd, int lfd, uint64_t timeout_ms, char peer[80], char err[PLAT_ERR_LEN]);
int plat_tcp_connect(int *fd, const char *host, const char *port, uint64_t timeout_ms, char err[PLAT_ERR_LEN]);
int plat_sock_send(int fd, const void *buf, size_t len, uint64_t timeout_ms, char err[PLAT_ERR_LEN]);
int plat_sock_recv(int fd, void *buf, size_t cap, size_t *got, uint64_t timeout_ms, char err[PLAT_ERR_LEN]);
void plat_sock_close(int fd);
/* Splits "host:port" or "[v6]:port" into its parts (host 256, port 16). */
int plat_split_addr(const char *addr, char host[256], char port[16]);

/* ---------------------------------------------------------------- threads */
typedef struct plat_thread plat_thread;
int plat_thread_start(plat_thread **t, void *(*fn)(void *), void *arg);
void plat_thread_join(plat_thread *t);
typedef struct plat_mutex plat_mutex;
int plat_mutex_new(plat_mutex **m);
void plat_mutex_lock(plat_mutex *m);
void plat_mutex_unlock(plat_mutex *m);
void plat_mutex_free(plat_mutex *m);
/* Condition variable used with a plat_mutex (spurious wake-ups possible). */
typedef struct plat_cond plat_cond;
int plat_cond_new(plat_cond **c);
void plat_cond_wait(plat_cond *c, plat_mutex *m);
void plat_cond_signal(plat_cond *c);
void plat_cond_broadcast(plat_cond *c);
void plat_cond_free(plat_cond *c);
/* Sleeps about us microseconds (at least that long, unless interrupted). */
void plat_sleep_us(unsigned us);
/* Processors online (at least 1). */
int plat_cpu_count(void);

#endif
