/* Derived-table commands: schema, put, del, incr, query, rebuild, conflicts,
 * duplicates, feed, blame. */
#include <errno.h>
#include <strings.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/weft_cli.h"
#include "core/codec.h"

int cmd_schema(cli *c)
{
	if (c->argc >= 1 && strcmp(c->argv[0], "show") == 0) {
		weft_db *db;
		int rc = cli_open(&db, c, WEFT_OPEN_READONLY);
		if (rc)
			return rc;
		int version;
		const char *ddl;
		weft_schema_version(&version, &ddl, db);
		if (version)
			printf("-- schema version %d\n%s\n", version, ddl);
		else
			printf("-- no schema declared yet; declare one with `weft schema apply FILE.sql`\n");
		weft_db_close(db);
		return CLI_OK;
	}
	if (c->argc != 2 || strcmp(c->argv[0], "apply") != 0)
		return cli_usage("schema", "apply FILE.sql | show");
	FILE *f = strcmp(c->argv[1], "-") ? fopen(c->argv[1], "r") : stdin;
	if (!f)
		return cli_fail("cannot open %s: %s", c->argv[1], strerror(errno));
	size_t cap = 1 << 20, n;
	char *ddl = malloc(cap + 1);
	n = ddl ? fread(ddl, 1, cap, f) : 0;
	if (f != stdin)
		fclose(f);
	if (!ddl)
		return cli_fail("out of memory");
	ddl[n] = '\0';
	weft_db *db;
	int rc = cli_open(&db, c, 0);
	if (rc) {
		free(ddl);
		return rc;
	}
	int before, after;
	weft_schema_version(&before, NULL, db);
	rc = weft_schema_define(db, ddl);
	free(ddl);
	if (rc < 0) {
		rc = cli_fail("%s", weft_errmsg(db));
	} else {
		weft_schema_version(&after, NULL, db);
		if (after == before)
			printf("schema unchanged (version %d)\n", after);
		else
			printf("schema version %d applied; tables re-derived from the log\n", after);
		rc = CLI_OK;
	}
	weft_db_close(db);
	return rc;
}

/* Column types, looked up with a query so values parse by declared type. */
typedef struct coltypes {
	char names[64][65];
	char types[64][16];
	int pk[64];
	int n;
} coltypes;

static int collect_cols(int n, const char *const *names, const weft_value *v, void *p)
{
	coltypes *ct = p;
	if (ct->n == 64)
		return 0;
	snprintf(ct->names[ct->n], 65, "%.*s", (int)v[1].n, (const char *)v[1].p);
	snprintf(ct->types[ct->n], 16, "%.*s", (int)v[2].n, (const char *)v[2].p);
	ct->pk[ct->n] = (int)v[5].i;
	ct->n++;
	return 0;
}

static int load_types(weft_db *db, const char *table, coltypes *ct)
{
	char sql[200];
	memset(ct, 0, sizeof(*ct));
	for (const char *p = table; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '_'))
			return cli_fail("\"%s\" is not a table name", table);
	snprintf(sql, sizeof(sql), "PRAGMA table_info(\"%.64s\")", table);
	if (weft_db_query(db, sql, collect_cols, ct) < 0)
		return cli_fail("%s", weft_errmsg(db));
	if (ct->n == 0)
		return cli_fail("table %s is not declared; see `weft schema show`", table);
	return CLI_OK;
}

static int parse_value(weft_value *v, const char *type, const char *text, unsigned char *blobbuf)
{
	char *end;
	if (strcmp(type, "INTEGER") == 0) {
		errno = 0;
		long long i = strtoll(text, &end, 10);
		if (!*text || *end || errno)
			return -1;
		*v = weft_int(i);
	} else if (strcmp(type, "REAL") == 0) {
		double r = strtod(text, &end);
		if (!*text || *end)
			return -1;
		*v = weft_real(r);
	} else if (strcmp(type, "BLOB") == 0) {
		size_t n = strlen(text);
		if (n % 2 || codec_unhex(blobbuf, n / 2, text) != 0)
			return -1;
		*v = weft_blob(blobbuf, n / 2);
	} else {
		*v = weft_text(text);
	}
	return 0;
}

static int find_col(const coltypes *ct, const char *name)
{
	for (int i = 0; i < ct->n; i++)
		if (strcasecmp(ct->names[i], name) == 0)
			return i;
	return -1;
}

static int pk_col(const coltypes *ct)
{
	for (int i = 0; i < ct->n; i++)
		if (ct->pk[i])
			return i;
	return -1;
}

/* put/del/incr share: open, begin, ops, commit, print. */
static int row_command(cli *c, const char *cmd, const char *args)
{
	const char *scope = cli_opt(c, "scope");
	const char *idem = cli_opt(c, "idem");
	if (!scope)
		scope = "default";
	if (cli_no_more_options(c, cmd) < 0 || c->argc < 2)
		return cli_usage(cmd, args);
	const char *table = c->argv[0];
	weft_db *db;
	int rc = cli_open(&db, c, 0);
	if (rc)
		return rc;
	coltypes ct;
	unsigned char *bufs = NULL;
	weft_txn *t = NULL;
	if ((rc = load_types(db, table, &ct)) != CLI_OK)
		goto out;
	int pki = pk_col(&ct);
	size_t total = 0;
	for (int i = 1; i < c->argc; i++)
		total += strlen(c->argv[i]) / 2 + 1;
	bufs = malloc(total + 1);
	unsigned char *next = bufs;
	weft_value pk;
	if (!bufs || pki < 0 || parse_value(&pk, ct.types[pki], c->argv[1], next) < 0) {
		rc = cli_fail("primary key \"%s\" is not a valid %s", c->argv[1], pki >= 0 ? ct.types[pki] : "key");
		goto out;
	}
	next += strlen(c->argv[1]) / 2 + 1;
	if (weft_txn_begin(&t, db, scope, idem) < 0) {
		rc = cli_fail("%s", weft_errmsg(db));
		goto out;
	}
	if (strcmp(cmd, "del") == 0) {
		if (c->argc != 2) {
			rc = cli_usage(cmd, args);
			goto out;
		}
		rc = weft_txn_delete(t, table, pk);
	}
	for (int i = 2; rc == 0 && i < c->argc; i++) {
		char *eq = strchr(c->argv[i], '=');
		if (!eq) {
			rc = cli_fail("expected COLUMN=VALUE, got \"%s\"", c->argv[i]);
			goto out;
		}
		*eq = '\0';
		int k = find_col(&ct, c->argv[i]);
		if (k < 0) {
			rc = cli_fail("table %s has no column %s", table, c->argv[i]);
			goto out;
		}
		if (strcmp(cmd, "incr") == 0) {
			char *end;
			errno = 0;
			long long d = strtoll(eq + 1, &end, 10);
			if (!eq[1] || *end || errno) {
				rc = cli_fail("increment \"%s\" is not an integer", eq + 1);
				goto out;
			}
			rc = weft_txn_incr(t, table, pk, c->argv[i], d);
		} else {
			weft_value v;
			if (strcmp(eq + 1, "\\N") == 0) {
				v = weft_null();
			} else if (parse_value(&v, ct.types[k], eq + 1, next) < 0) {
				rc = cli_fail("\"%s\" is not a valid %s for column %s%s", eq + 1, ct.types[k], c->argv[i],
				              strcmp(ct.types[k], "BLOB") ? "" : " (give hex digits)");
				goto out;
			}
			next += strlen(eq + 1) / 2 + 1;
			rc = weft_txn_set(t, table, pk, c->argv[i], v);
		}
	}
	if (rc < 0) {
		rc = cli_fail("%s", weft_errmsg(db));
		goto out;
	}
	weft_id id;
	rc = weft_txn_commit(&id, t);
	t = NULL;
	if (rc < 0) {
		rc = cli_fail("%s", weft_errmsg(db));
		goto out;
	}
	char hex[65];
	printf("%s\n", weft_id_to_hex(hex, &id));
	if (rc == WEFT_DUPLICATE)
		fprintf(stderr, "weft: idempotency key \"%s\" was already used in scope %s: nothing written\n", idem, scope);
	rc = CLI_OK;
out:
	weft_txn_abort(t);
	free(bufs);
	weft_db_close(db);
	return rc;
}

int cmd_put(cli *c)
{
	return row_command(c, "put", "TABLE PK COLUMN=VALUE... [--scope S] [--idem KEY]   (VALUE \\N is NULL)");
}

int cmd_del(cli *c)
{
	return row_command(c, "del", "TABLE PK [--scope S] [--idem KEY]");
}

int cmd_incr(cli *c)
{
	return row_command(c, "incr", "TABLE PK COLUMN=DELTA... [--scope S] [--idem KEY]");
}

static void print_value_json(const weft_value *v)
{
	switch (v->type) {
	case WEFT_INTEGER:
		printf("%lld", (long long)v->i);
		break;
	case WEFT_REAL:
		printf("%.17g", v->r);
		break;
	case WEFT_TEXT:
		cli_json_string(stdout, v->p, v->n);
		break;
	case WEFT_BLOB: {
		printf("\"x'");
		for (size_t i = 0; i < v->n; i++)
			printf("%02x", ((const unsigned char *)v->p)[i]);
		printf("'\"");
		break;
	}
	default:
		printf("null");
	}
}

static void print_value_text(const weft_value *v)
{
	if (v->type == WEFT_TEXT)
		printf("%.*s", (int)v->n, (const char *)v->p);
	else if (v->type == WEFT_NULL)
		printf("NULL");
	else
		print_value_json(v);
}

typedef struct qstate {
	int json, rows;
} qstate;

static int print_row(int n, const char *const *names, const weft_value *v, void *p)
{
	qstate *q = p;
	if (q->json) {
		printf("{");
		for (int i = 0; i < n; i++) {
			printf("%s", i ? "," : "");
			cli_json_string(stdout, names[i], strlen(names[i]));
			printf(":");
			print_value_json(&v[i]);
		}
		printf("}\n");
	} else {
		if (q->rows == 0) {
			for (int i = 0; i < n; i++)
				printf("%s%s", i ? " | " : "", names[i]);
			printf("\n");
		}
		for (int i = 0; i < n; i++) {
			printf("%s", i ? " | " : "");
			print_value_text(&v[i]);
		}
		printf("\n");
	}
	q->rows++;
	return 0;
}

int cmd_query(cli *c)
{
	qstate q = {cli_flag(c, "json"), 0};
	if (cli_no_more_options(c, "query") < 0 || c->argc != 1)
		return cli_usage("query", "\"SELECT ...\" [--json]");
	weft_db *db;
	int rc = cli_open(&db, c, WEFT_OPEN_READONLY);
	if (rc)
		return rc;
	rc = weft_db_query(db, c->argv[0], print_row, &q) < 0 ? cli_fail("%s", weft_errmsg(db)) : CLI_OK;
	weft_db_close(db);
	return rc;
}

int cmd_rebuild(cli *c)
{
	if (cli_no_more_options(c, "rebuild") < 0 || c->argc)
		return cli_usage("rebuild", "");
	weft_db *db;
	int rc = cli_open(&db, c, 0);
	if (rc)
		return rc;
	cli_progress_state ps = {isatty(2), "re-deriving events"};
	rc = weft_db_rebuild(db, cli_progress, &ps);
	if (ps.tty)
		fputc('\n', stderr);
	rc = rc < 0 ? cli_fail("%s", weft_errmsg(db)) : (printf("derived tables rebuilt from the log\n"), CLI_OK);
	weft_db_close(db);
	return rc;
}

static int print_conflict(const weft_conflict *k, void *p)
{
	char hex[65];
	(*(int *)p)++;
	printf("%s.%s = ", k->table, k->column);
	print_value_json(&k->value);
	printf(": kept by row ");
	print_value_json(&k->winner_pk);
	printf(" (earliest claim); row ");
	print_value_json(&k->loser_pk);
	printf(" lost it (event %.12s) and holds NULL there until the app writes a new value\n",
	       weft_id_to_hex(hex, &k->loser_event));
	return 0;
}

int cmd_conflicts(cli *c)
{
	if (cli_no_more_options(c, "conflicts") < 0 || c->argc)
		return cli_usage("conflicts", "");
	weft_db *db;
	int rc = cli_open(&db, c, WEFT_OPEN_READONLY), n = 0;
	if (rc)
		return rc;
	rc = weft_db_conflicts(db, print_conflict, &n) < 0 ? cli_fail("%s", weft_errmsg(db)) : CLI_OK;
	if (rc == CLI_OK && n == 0)
		printf("no conflicts\n");
	weft_db_close(db);
	return rc;
}

static int print_dup(const weft_id *ev, const weft_id *winner, const char *scope, const char *key, void *p)
{
	char a[65], b[65];
	(*(int *)p)++;
	printf("event %.12s (scope %s, idempotency key %s) had no effect: event %.12s carried the key first\n",
	       weft_id_to_hex(a, ev), scope, key, weft_id_to_hex(b, winner));
	return 0;
}

int cmd_duplicates(cli *c)
{
	if (cli_no_more_options(c, "duplicates") < 0 || c->argc)
		return cli_usage("duplicates", "");
	weft_db *db;
	int rc = cli_open(&db, c, WEFT_OPEN_READONLY), n = 0;
	if (rc)
		return rc;
	rc = weft_db_duplicates(db, print_dup, &n) < 0 ? cli_fail("%s", weft_errmsg(db)) : CLI_OK;
	if (rc == CLI_OK && n == 0)
		printf("no duplicates\n");
	weft_db_close(db);
	return rc;
}

int cmd_feed(cli *c)
{
	int peek = cli_flag(c, "no-ack");
	if (cli_no_more_options(c, "feed") < 0 || c->argc != 1)
		return cli_usage("feed", "NAME [--no-ack]");
	weft_db *db;
	int rc = cli_open(&db, c, 0);
	if (rc)
		return rc;
	weft_feed *f;
	if (weft_feed_open(&f, db, c->argv[0]) < 0) {
		rc = cli_fail("%s", weft_errmsg(db));
		weft_db_close(db);
		return rc;
	}
	const weft_change *ch;
	uint64_t last = 0;
	while ((rc = weft_feed_next(&ch, f)) == WEFT_OK) {
		char hex[65];
		printf("{\"seq\":%llu,\"table\":", (unsigned long long)ch->seq);
		cli_json_string(stdout, ch->table, strlen(ch->table));
		printf(",\"pk\":");
		print_value_json(&ch->pk);
		printf(",\"op\":\"%s\",\"columns\":[", ch->op == WEFT_CHANGE_DELETE ? "delete" : "upsert");
		const char *p = ch->columns;
		for (int first = 1; *p; first = 0) {
			size_t n = strcspn(p, ",");
			printf("%s", first ? "" : ",");
			cli_json_string(stdout, p, n);
			p += n + (p[n] == ',');
		}
		printf("],\"event\":\"%s\"}\n", weft_id_to_hex(hex, &ch->event));
		last = ch->seq;
	}
	if (rc != WEFT_ITEROVER) {
		rc = cli_fail("%s", weft_errmsg(db));
	} else {
		rc = CLI_OK;
		if (fflush(stdout) != 0)
			rc = cli_fail("cannot write the changes; not acknowledging them");
		else if (last && !peek && weft_feed_ack(f, last) < 0)
			rc = cli_fail("%s", weft_errmsg(db));
	}
	weft_feed_free(f);
	weft_db_close(db);
	return rc;
}

static int print_blame(const weft_blame *b, void *p)
{
	char dev[WEFT_DEVICE_ID_LEN + 1], hex[65];
	printf("%-16s ", b->column);
	print_value_json(&b->value);
	if (b->author) {
		weft_device_id_format(dev, b->author);
		printf("  <- event %.12s by %.15s at %llu.%03llu", weft_id_to_hex(hex, &b->event), dev,
		       (unsigned long long)(b->hlc >> 16) / 1000, (unsigned long long)(b->hlc >> 16) % 1000);
		if (b->contributions > 1)
			printf(" (%llu writes summed)", (unsigned long long)b->contributions);
	} else {
		printf("  (no write: default or primary key)");
	}
	printf("\n");
	return 0;
}

int cmd_blame(cli *c)
{
	if (cli_no_more_options(c, "blame") < 0 || c->argc != 2)
		return cli_usage("blame", "TABLE PK");
	weft_db *db;
	int rc = cli_open(&db, c, 0);
	if (rc)
		return rc;
	coltypes ct;
	weft_value pk;
	unsigned char buf[512];
	int pki;
	if ((rc = load_types(db, c->argv[0], &ct)) == CLI_OK) {
		pki = pk_col(&ct);
		if (pki < 0 || strlen(c->argv[1]) / 2 > sizeof(buf) || parse_value(&pk, ct.types[pki], c->argv[1], buf) < 0)
			rc = cli_fail("primary key \"%s\" is not valid for %s", c->argv[1], c->argv[0]);
		else if (weft_db_blame(db, c->argv[0], pk, print_blame, NULL) < 0)
			rc = cli_fail("%s", weft_errmsg(db));
	}
	weft_db_close(db);
	return rc;
}
