/* Error messages a person can act on, kept on a handle and per thread. */
#ifndef WEFT_CORE_ERROR_H
#define WEFT_CORE_ERROR_H

#include <stdarg.h>

#define WEFT_ERRMSG_LEN 768

typedef struct weft_err {
	int code;
	char msg[WEFT_ERRMSG_LEN];
} weft_err;

/* Records code and message in e (may be NULL) and in the thread's last
 * error; returns code so callers can `return err_set(...)`. */
int err_set(weft_err *e, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
int err_setv(weft_err *e, int code, const char *fmt, va_list ap);
/* Copies an error from one record to another (and to the thread's). */
int err_copy(weft_err *dst, const weft_err *src);
void err_clear(weft_err *e);
/* "3f2a9c1b…" — the first 6 bytes of a key or id in hex, for messages. */
const char *err_short_hex(char out[16], const unsigned char *bytes);

#endif
