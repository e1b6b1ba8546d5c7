/*
 * weft-negentropy-harness — the Negentropy conformance harness.
 *
 * Reads lines on stdin, writes lines on stdout (see NEGENTROPY.md):
 *   item,<ts>,<64 hex>  add an item          seal      build the reconciler
 *   initiate            client: first msg    msg,<hex> process a message
 * Replies: have,<id> / need,<id> (client), then msg,<hex> or done.
 * FRAMESIZELIMIT in the environment sets the frame size limit (0 = none).
 * Exit status: 0 at end of input, 1 on a protocol error, 2 on bad input.
 */
#include "sync/negentropy.h"

#include "weft.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

static const char *prog = "weft-negentropy-harness";

static void die(int status, const char *what, unsigned long lineno)
{
	if (lineno)
		fprintf(stderr, "%s: line %lu: %s\n", prog, lineno, what);
	else
		fprintf(stderr, "%s: %s\n", prog, what);
	exit(status);
}

static int hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Decodes hex in place into out (may alias text); returns bytes or -1. */
static ssize_t unhex(uint8_t *out, const char *text, size_t len)
{
	if (len % 2)
		return -1;
	for (size_t i = 0; i < len / 2; i++) {
		int hi = hexval((unsigned char)text[2 * i]);
		int lo = hexval((unsigned char)text[2 * i + 1]);

		if (hi < 0 || lo < 0)
			return -1;
		out[i] = (uint8_t)(hi << 4 | lo);
	}
	return (ssize_t)(len / 2);
}

static void print_hex(const uint8_t *p, size_t n)
{
	static const char digits[] = "0123456789abcdef";
	char chunk[1024];
	size_t k = 0;

	for (size_t i = 0; i < n; i++) {
		chunk[k++] = digits[p[i] >> 4];
		chunk[k++] = digits[p[i] & 15];
		if (k == sizeof(chunk)) {
			fwrite(chunk, 1, k, stdout);
			k = 0;
		}
	}
	fwrite(chunk, 1, k, stdout);
}

static int print_diff(void *payload, enum neg_diff_kind kind,
		      const uint8_t id[NEG_ID_BYTES])
{
	fputs(kind == NEG_HAVE ? "have," : "need,", stdout);
	print_hex(id, NEG_ID_BYTES);
	putchar('\n');
	return 0;
}

static void print_msg(const uint8_t *p, size_t n, size_t limit,
		      unsigned long lineno)
{
	if (limit && n > limit)
		die(1, "reply exceeds FRAMESIZELIMIT", lineno);
	fputs("msg,", stdout);
	print_hex(p, n);
	putchar('\n');
	if (fflush(stdout) != 0)
		die(2, "cannot write to stdout", 0);
}

static int parse_u64(uint64_t *out, const char *s)
{
	char *end;
	unsigned long long v;

	if (*s < '0' || *s > '9')
		return -1;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || *end)
		return -1;
	*out = v;
	return 0;
}

int main(void)
{
	neg_set *set = NULL;
	neg_reconciler *r = NULL;
	size_t limit = 0;
	char *line = NULL;
	size_t cap = 0;
	ssize_t len;
	unsigned long lineno = 0;
	const uint8_t *out;
	size_t out_len;
	int rc;

	if (neg_set_new(&set) < 0)
		die(2, "out of memory", 0);

	while ((len = getline(&line, &cap, stdin)) >= 0) {
		lineno++;
		while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
			line[--len] = '\0';
		if (len == 0)
			continue;

		if (strncmp(line, "item,", 5) == 0) {
			char *ts_text = line + 5, *comma = strchr(ts_text, ',');
			uint8_t id[NEG_ID_BYTES];
			uint64_t ts;

			if (r)
				die(2, "item after seal", lineno);
			if (!comma)
				die(2, "item needs <ts>,<id>", lineno);
			*comma = '\0';
			if (parse_u64(&ts, ts_text) < 0)
				die(2, "bad timestamp", lineno);
			if (strlen(comma + 1) != 2 * NEG_ID_BYTES ||
			    unhex(id, comma + 1, 2 * NEG_ID_BYTES) < 0)
				die(2, "id must be 64 hex digits", lineno);
			rc = neg_set_add(set, ts, id);
			if (rc < 0)
				die(2, rc == WEFT_ENOMEM ? "out of memory"
							 : "invalid item",
				    lineno);
		} else if (strcmp(line, "seal") == 0) {
			const char *env = getenv("FRAMESIZELIMIT");
			uint64_t v = 0;

			if (r)
				die(2, "sealed twice", lineno);
			if (env && *env && (parse_u64(&v, env) < 0 || v > SIZE_MAX))
				die(2, "bad FRAMESIZELIMIT", 0);
			limit = (size_t)v;
			if (neg_set_seal(set) < 0)
				die(2, "out of memory", lineno);
			rc = neg_reconciler_new(&r, set, 0, neg_set_size(set),
						limit);
			if (rc < 0)
				die(2, rc == WEFT_EINVAL
					       ? "FRAMESIZELIMIT must be 0 or >= 4096"
					       : "cannot create the reconciler",
				    lineno);
		} else if (strcmp(line, "initiate") == 0) {
			if (!r)
				die(2, "initiate before seal", lineno);
			rc = neg_reconciler_initiate(&out, &out_len, r);
			if (rc < 0)
				die(rc == WEFT_EINVAL ? 2 : 1, neg_last_error(r),
				    lineno);
			print_msg(out, out_len, limit, lineno);
		} else if (strncmp(line, "msg,", 4) == 0) {
			uint8_t *msg = (uint8_t *)line + 4;
			ssize_t n;

			if (!r)
				die(2, "msg before seal", lineno);
			n = unhex(msg, line + 4, (size_t)len - 4);
			if (n < 0)
				die(1, "message is not hex", lineno);
			rc = neg_reconciler_reconcile(&out, &out_len, r, msg,
						      (size_t)n, print_diff,
						      NULL);
			if (rc < 0)
				die(1, neg_last_error(r), lineno);
			if (neg_reconciler_is_client(r) && out_len == 0) {
				puts("done");
				if (fflush(stdout) != 0)
					die(2, "cannot write to stdout", 0);
			} else {
				print_msg(out, out_len, limit, lineno);
			}
		} else {
			die(2, "unknown command", lineno);
		}
	}
	if (ferror(stdin))
		die(2, "cannot read stdin", 0);

	free(line);
	neg_reconciler_free(r);
	neg_set_free(set);
	return 0;
}
