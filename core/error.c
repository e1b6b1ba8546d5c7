#include "core/error.h"

#include <stdio.h>
#include <string.h>

#include "weft.h"

static _Thread_local weft_err thread_last;

int err_setv(weft_err *e, int code, const char *fmt, va_list ap)
{
	/* Format aside first: an argument may point into either record. */
	char msg[WEFT_ERRMSG_LEN];
	vsnprintf(msg, sizeof(msg), fmt, ap);
	thread_last.code = code;
	memcpy(thread_last.msg, msg, sizeof(msg));
	if (e && e != &thread_last) {
		e->code = code;
		memcpy(e->msg, msg, sizeof(msg));
	}
	return code;
}

int err_set(weft_err *e, int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	err_setv(e, code, fmt, ap);
	va_end(ap);
	return code;
}

int err_copy(weft_err *dst, const weft_err *src)
{
	return err_set(dst, src->code, "%s", src->msg);
}

void err_clear(weft_err *e)
{
	if (e) {
		e->code = 0;
		e->msg[0] = '\0';
	}
}

const char *err_short_hex(char out[16], const unsigned char *bytes)
{
	static const char digits[] = "0123456789abcdef";
	for (int i = 0; i < 6; i++) {
		out[2 * i] = digits[bytes[i] >> 4];
		out[2 * i + 1] = digits[bytes[i] & 15];
	}
	memcpy(out + 12, "\xe2\x80\xa6", 3); /* U+2026 ellipsis */
	out[15] = '\0';
	return out;
}

const char *weft_error_last(void)
{
	return thread_last.msg[0] ? thread_last.msg : "no error";
}

struct code_text {
	int code;
	const char *name;
	const char *text;
};

static const struct code_text codes[] = {
	{WEFT_OK, "WEFT_OK", "success"},
	{WEFT_DUPLICATE, "WEFT_DUPLICATE", "success: already known, nothing changed"},
	{WEFT_ERROR, "WEFT_ERROR", "unexpected failure"},
	{WEFT_ENOMEM, "WEFT_ENOMEM", "out of memory"},
	{WEFT_EINVAL, "WEFT_EINVAL", "invalid argument"},
	{WEFT_ENOTFOUND, "WEFT_ENOTFOUND", "not found"},
	{WEFT_EEXISTS, "WEFT_EEXISTS", "already exists"},
	{WEFT_ECORRUPT, "WEFT_ECORRUPT", "malformed, truncated or non-canonical data"},
	{WEFT_EAUTH, "WEFT_EAUTH", "signature, id or passphrase check failed"},
	{WEFT_EFUTURE, "WEFT_EFUTURE", "timestamp too far in the future"},
	{WEFT_ELIMIT, "WEFT_ELIMIT", "size limit exceeded"},
	{WEFT_EVERSION, "WEFT_EVERSION", "unsupported version"},
	{WEFT_EBUSY, "WEFT_EBUSY", "store is busy (locked by another writer)"},
	{WEFT_EIO, "WEFT_EIO", "input/output error"},
	{WEFT_EPERM, "WEFT_EPERM", "permission denied"},
	{WEFT_EPROTO, "WEFT_EPROTO", "peer broke the sync protocol"},
	{WEFT_EUSER, "WEFT_EUSER", "stopped by a callback"},
	{WEFT_ITEROVER, "WEFT_ITEROVER", "no more items"},
	{WEFT_ETIMEOUT, "WEFT_ETIMEOUT", "the peer did not answer in time"},
};

static const struct code_text *lookup(int code)
{
	for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++)
		if (codes[i].code == code)
			return &codes[i];
	return NULL;
}

const char *weft_strerror(int code)
{
	const struct code_text *c = lookup(code);
	return c ? c->text : "unknown error code";
}

const char *weft_errname(int code)
{
	const struct code_text *c = lookup(code);
	return c ? c->name : "WEFT_UNKNOWN";
}
