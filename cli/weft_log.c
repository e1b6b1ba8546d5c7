/* Log commands: init, id, append, log, verify, heads, export, import. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli/weft_cli.h"
#include "core/alloc.h"
#include "core/codec.h"
#include "platform/platform.h"

#define EXPORT_MAGIC "WEFTEXP1"

int cmd_init(cli *c)
{
	if (cli_no_more_options(c, "init") < 0 || c->argc)
		return cli_usage("init", "");
	if (plat_file_exists(c->db_path))
		return cli_fail("%s already exists; refusing to create a second identity over it", c->db_path);
	weft_db *db;
	int rc = cli_open(&db, c, WEFT_OPEN_CREATE);
	if (rc)
		return rc;
	printf("created store %s\ndevice id: %s\n", c->db_path, weft_db_device_id(db));
	weft_db_close(db);
	return CLI_OK;
}

/* Reads all of a stream (stdin or a file) up to max bytes. */
static int slurp(FILE *f, unsigned char **out, size_t *len, size_t max)
{
	size_t cap = 4096, n = 0;
	unsigned char *buf = malloc(cap);
	if (!buf)
		return -1;
	for (;;) {
		if (n == cap) {
			if (cap > max) {
				free(buf);
				errno = EFBIG;
				return -1;
			}
			unsigned char *nb = realloc(buf, cap * 2);
			if (!nb) {
				free(buf);
				return -1;
			}
			buf = nb;
			cap *= 2;
		}
		size_t got = fread(buf + n, 1, cap - n, f);
		n += got;
		if (got == 0)
			break;
	}
	if (ferror(f) || n > max) {
		free(buf);
		errno = ferror(f) ? EIO : EFBIG;
		return -1;
	}
	*out = buf;
	*len = n;
	return 0;
}

int cmd_append(cli *c)
{
	const char *args = "--scope S --kind K [--idem KEY] [--file F | DATA]";
	const char *scope = cli_opt(c, "scope");
	const char *kind = cli_opt(c, "kind");
	const char *idem = cli_opt(c, "idem");
	const char *file = cli_opt(c, "file");
	if (cli_no_more_options(c, "append") < 0 || !scope || !kind || c->argc > 1 || (file && c->argc))
		return cli_usage("append", args);
	unsigned char *payload = NULL;
	size_t len = 0;
	int owned = 0;
	if (c->argc == 1) {
		payload = (unsigned char *)c->argv[0];
		len = strlen(c->argv[0]);
	} else {
		FILE *f = file && strcmp(file, "-") ? fopen(file, "rb") : stdin;
		if (!f)
			return cli_fail("cannot open %s: %s", file, strerror(errno));
		int r = slurp(f, &payload, &len, WEFT_PAYLOAD_HARD_MAX);
		if (f != stdin)
			fclose(f);
		if (r < 0)
			return cli_fail("cannot read the payload: %s", strerror(errno));
		owned = 1;
	}
	weft_db *db;
	int rc = cli_open(&db, c, 0);
	if (rc) {
		if (owned)
			free(payload);
		return rc;
	}
	weft_id id;
	rc = weft_db_append(&id, db, scope, kind, idem, payload, len);
	if (owned)
		free(payload);
	if (rc < 0) {
		int r = cli_fail("%s", weft_errmsg(db));
		weft_db_close(db);
		return r;
	}
	char hex[65];
	printf("%s\n", weft_id_to_hex(hex, &id));
	if (rc == WEFT_DUPLICATE)
		fprintf(stderr, "weft: idempotency key \"%s\" was already used in scope %s: nothing written, "
		        "this is the earlier event\n", idem, scope);
	weft_db_close(db);
	return CLI_OK;
}

static int printable(const unsigned char *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if ((p[i] < 0x20 && p[i] != '\n' && p[i] != '\t') || p[i] == 0x7f)
			return 0;
	return 1;
}

static void print_event_text(const weft_event *ev)
{
	char hex[65], author[WEFT_DEVICE_ID_LEN + 1];
	size_t plen;
	const unsigned char *p = weft_event_payload(ev, &plen);
	weft_device_id_format(author, weft_event_author(ev));
	uint64_t hlc = weft_event_hlc(ev);
	time_t secs = (time_t)((hlc >> 16) / 1000);
	struct tm tm;
	char when[32];
	gmtime_r(&secs, &tm);
	strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
	printf("%.12s  %s.%03lluZ", weft_id_to_hex(hex, weft_event_id(ev)), when,
	       (unsigned long long)(hlc >> 16) % 1000);
	if (hlc & 0xffff)
		printf("+%llu", (unsigned long long)(hlc & 0xffff));
	printf("  %.7s #%llu  %s  %s", author, (unsigned long long)weft_event_seq(ev), weft_event_scope(ev),
	       weft_event_kind(ev));
	if (weft_event_idem_key(ev))
		printf("  idem=%s", weft_event_idem_key(ev));
	if (!p)
		printf("  (payload erased, %zu bytes)\n", plen);
	else if (printable(p, plen) && plen <= 200)
		printf("  %.*s\n", (int)plen, (const char *)p);
	else
		printf("  (%zu bytes)\n", plen);
}

static void print_event_json(const weft_event *ev)
{
	char hex[65], author[WEFT_DEVICE_ID_LEN + 1];
	size_t plen;
	const unsigned char *p = weft_event_payload(ev, &plen);
	weft_device_id_format(author, weft_event_author(ev));
	printf("{\"id\":\"%s\",\"author\":\"%s\",\"seq\":%llu,\"hlc\":%llu,\"scope\":",
	       weft_id_to_hex(hex, weft_event_id(ev)), author,
	       (unsigned long long)weft_event_seq(ev), (unsigned long long)weft_event_hlc(ev));
	cli_json_string(stdout, weft_event_scope(ev), strlen(weft_event_scope(ev)));
	printf(",\"kind\":");
	cli_json_string(stdout, weft_event_kind(ev), strlen(weft_event_kind(ev)));
	if (weft_event_idem_key(ev)) {
		printf(",\"idem\":");
		cli_json_string(stdout, weft_event_idem_key(ev), strlen(weft_event_idem_key(ev)));
	}
	printf(",\"payload_len\":%zu", plen);
	if (!p) {
		printf(",\"erased\":true");
	} else if (printable(p, plen)) {
		printf(",\"payload\":");
		cli_json_string(stdout, (const char *)p, plen);
	} else {
		char *h = malloc(2 * plen + 1);
		if (h) {
			codec_hex(h, p, plen);
			printf(",\"payload_hex\":\"%s\"", h);
			free(h);
		}
	}
	printf("}\n");
}

int cmd_log(cli *c)
{
	weft_iter_options o = WEFT_ITER_OPTIONS_INIT;
	o.scope = cli_opt(c, "scope");
	const char *limit_s = cli_opt(c, "limit");
	int json = cli_flag(c, "json");
	if (cli_no_more_options(c, "log") < 0 || c->argc)
		return cli_usage("log", "[--scope S] [--limit N] [--json]");
	unsigned long long limit = limit_s ? strtoull(limit_s, NULL, 10) : 0;
	weft_db *db;
	int rc = cli_open(&db, c, WEFT_OPEN_READONLY);
	if (rc)
		return rc;
	weft_iter *it;
	if ((rc = weft_db_iter(&it, db, &o)) < 0) {
		rc = cli_fail("%s", weft_errmsg(db));
		weft_db_close(db);
		return rc;
	}
	const weft_event *ev;
	unsigned long long n = 0;
	while ((!limit || n < limit) && (rc = weft_iter_next(&ev, it)) == WEFT_OK) {
		if (json)
			print_event_json(ev);
		else
			print_event_text(ev);
		n++;
	}
	int status = rc == WEFT_OK || rc == WEFT_ITEROVER ? CLI_OK : cli_fail("%s", weft_errmsg(db));
	weft_iter_free(it);
	weft_db_close(db);
	return status;
}

int cmd_verify(cli *c)
{
	if (cli_no_more_options(c, "verify") < 0 || c->argc)
		return cli_usage("verify", "");
	weft_db *db;
	int rc = cli_open(&db, c, WEFT_OPEN_READONLY);
	if (rc)
		return rc;
	cli_progress_state ps = {isatty(2), "verifying"};
	weft_verify_report r;
	rc = weft_db_verify(&r, db, cli_progress, &ps);
	if (ps.tty)
		fputc('\n', stderr);
	int status;
	if (rc == WEFT_OK) {
		printf("ok: %llu events verified", (unsigned long long)r.checked);
		if (r.forks || r.broken_links)
			printf("; %llu fork(s) and %llu disagreeing chain link(s) kept as evidence of authors "
			       "who signed two histories (see `weft heads`)", (unsigned long long)r.forks,
			       (unsigned long long)r.broken_links);
		if (r.unsigned_own)
			printf("; %llu of this device's newest events are stored but not signed yet (the writer "
			       "signs them; after a crash, the next read-write open does)", (unsigned long long)r.unsigned_own);
		printf("\n");
		status = CLI_OK;
	} else if (rc == WEFT_ECORRUPT) {
		fprintf(stderr, "weft: verify FAILED: %s\n", weft_errmsg(db));
		status = CLI_PROBLEM;
	} else {
		status = cli_fail("%s", weft_errmsg(db));
	}
	weft_db_close(db);
	return status;
}

static int print_head(const unsigned char *author, uint64_t seq, const weft_id *id, int forked, void *payload)
{
	char dev[WEFT_DEVICE_ID_LEN + 1], hex[65];
	weft_device_id_format(dev, author);
	printf("%s  seq %llu  head %.12s%s%s\n", dev, (unsigned long long)seq, weft_id_to_hex(hex, id),
	       forked ? "  FORKED (two events at one sequence number are kept as evidence)" : "",
	       memcmp(author, payload, 32) == 0 ? "  (this device)" : "");
	return 0;
}

int cmd_heads(cli *c)
{
	if (cli_no_more_options(c, "heads") < 0 || c->argc)
		return cli_usage("heads", "");
	weft_db *db;
	int rc = cli_open(&db, c, WEFT_OPEN_READONLY);
	if (rc)
		return rc;
	rc = weft_db_heads(db, print_head, (void *)weft_db_public_key(db));
	int status = rc < 0 ? cli_fail("%s", weft_errmsg(db)) : CLI_OK;
	weft_db_close(db);
	return status;
}

int cmd_export(cli *c)
{
	weft_iter_options o = WEFT_ITER_OPTIONS_INIT;
	o.scope = cli_opt(c, "scope");
	const char *out = cli_opt(c, "out");
	if (cli_no_more_options(c, "export") < 0 || c->argc)
		return cli_usage("export", "[--scope S] [--out FILE]");
	if (!out && isatty(1))
		return cli_fail("refusing to write binary events to a terminal; use --out FILE or a pipe");
	FILE *f = out ? fopen(out, "wb") : stdout;
	if (!f)
		return cli_fail("cannot create %s: %s", out, strerror(errno));
	weft_db *db;
	int rc = cli_open(&db, c, WEFT_OPEN_READONLY);
	if (rc) {
		if (out)
			fclose(f);
		return rc;
	}
	weft_iter *it = NULL;
	const weft_event *ev;
	unsigned long long n = 0;
	int status = CLI_OK;
	fwrite(EXPORT_MAGIC, 1, 8, f);
	if ((rc = weft_db_iter(&it, db, &o)) == WEFT_OK) {
		while ((rc = weft_iter_next(&ev, it)) == WEFT_OK) {
			size_t len;
			const void *b = weft_event_bytes(ev, &len);
			if (!b) {
				char a[WEFT_ID_BYTES * 2 + 1];
				weft_id_to_hex(a, weft_event_id(ev));
				rc = WEFT_EBUSY;
				status = cli_fail("event %s of this device is stored but its signature is not written "
				                  "yet (its writer writes it on its next write or when it closes); export "
				                  "again then", a);
				break;
			}
			unsigned char hdr[4];
			codec_put_u32(hdr, (uint32_t)len);
			fwrite(hdr, 1, 4, f);
			fwrite(b, 1, len, f);
			n++;
		}
	}
	if (rc != WEFT_ITEROVER && status == CLI_OK)
		status = cli_fail("%s", weft_errmsg(db));
	if ((out ? fclose(f) : fflush(f)) != 0 && status == CLI_OK)
		status = cli_fail("cannot write the export: %s", strerror(errno));
	if (status == CLI_OK)
		fprintf(stderr, "exported %llu events\n", n);
	weft_iter_free(it);
	weft_db_close(db);
	return status;
}

#define IMPORT_BATCH 256

int cmd_import(cli *c)
{
	if (cli_no_more_options(c, "import") < 0 || c->argc != 1)
		return cli_usage("import", "FILE|-");
	const char *path = c->argv[0];
	FILE *f = strcmp(path, "-") ? fopen(path, "rb") : stdin;
	if (!f)
		return cli_fail("cannot open %s: %s", path, strerror(errno));
	char magic[8];
	if (fread(magic, 1, 8, f) != 8 || memcmp(magic, EXPORT_MAGIC, 8) != 0) {
		if (f != stdin)
			fclose(f);
		return cli_fail("%s is not a weft export (made by `weft export`)", path);
	}
	weft_db *db;
	int rc = cli_open(&db, c, 0);
	if (rc) {
		if (f != stdin)
			fclose(f);
		return rc;
	}
	weft_bytes batch[IMPORT_BATCH];
	int result[IMPORT_BATCH];
	unsigned long long counts[3] = {0}, refused = 0, total = 0;
	int status = CLI_OK, done = 0;
	while (!done && status == CLI_OK) {
		size_t n = 0;
		while (n < IMPORT_BATCH) {
			unsigned char hdr[4];
			size_t got = fread(hdr, 1, 4, f);
			if (got == 0) {
				done = 1;
				break;
			}
			uint32_t len = got == 4 ? codec_get_u32(hdr) : 0;
			/* Hostile input: bound the length before allocating. */
			if (got != 4 || len > EVENT_OVERHEAD_MAX + WEFT_PAYLOAD_HARD_MAX) {
				status = cli_fail("%s is damaged after %llu events (bad length)", path, total + n);
				break;
			}
			void *b = malloc(len ? len : 1);
			if (!b || fread(b, 1, len, f) != len) {
				free(b);
				status = cli_fail("%s is truncated after %llu events", path, total + n);
				break;
			}
			batch[n].data = b;
			batch[n].len = len;
			n++;
		}
		if (n && weft_db_ingest_batch(result, db, batch, n) < 0) {
			status = cli_fail("%s", weft_errmsg(db));
		} else {
			for (size_t i = 0; i < n; i++) {
				if (result[i] < 0) {
					char h[65];
					weft_event *e = NULL;
					refused++;
					/* Say which event and why (the message of the batch
					 * names only the first refusal). */
					int why = weft_event_decode(&e, batch[i].data, batch[i].len, WEFT_PAYLOAD_HARD_MAX);
					fprintf(stderr, "weft: refused event #%llu%s%.12s: %s\n", total + i + 1,
					        e ? " " : "", e ? weft_id_to_hex(h, weft_event_id(e)) : "",
					        why < 0 ? weft_error_last() : weft_strerror(result[i]));
					weft_event_free(e);
				} else {
					counts[result[i]]++;
				}
			}
		}
		for (size_t i = 0; i < n; i++)
			free((void *)batch[i].data);
		total += n;
	}
	if (f != stdin)
		fclose(f);
	printf("imported %llu new, %llu already present, %llu forks kept as evidence, %llu refused\n",
	       counts[WEFT_INGEST_NEW], counts[WEFT_INGEST_DUPLICATE], counts[WEFT_INGEST_FORK], refused);
	weft_db_close(db);
	if (status == CLI_OK && refused)
		status = CLI_PROBLEM;
	return status;
}
