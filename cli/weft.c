/* `weft` — the command-line front end of the weft library. */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "cli/weft_cli.h"

static const cli_command commands[] = {
	{"init", "", "create a store and a device identity here", cmd_init},
	{"id", "", "print this device's id and TLS key hash (compare them when pairing)", cmd_id},
	{"append", "--scope S --kind K [--idem KEY] [--file F | DATA]", "append a signed event", cmd_append},
	{"log", "[--scope S] [--limit N] [--json]", "list events in (time, id) order", cmd_log},
	{"verify", "", "re-check every event's id, signature and chain link", cmd_verify},
	{"heads", "", "show each author's latest event and fork flag", cmd_heads},
	{"export", "[--scope S] [--out FILE]", "write events as a stream another store can import", cmd_export},
	{"import", "FILE|-", "verify and store events exported by another store", cmd_import},
	{"schema", "apply FILE.sql | show", "declare the derived tables (re-derives them from the log)", cmd_schema},
	{"put", "TABLE PK COL=VAL... [--scope S] [--idem K]", "set columns of a row (one signed event)", cmd_put},
	{"del", "TABLE PK [--scope S] [--idem K]", "delete a row", cmd_del},
	{"incr", "TABLE PK COL=DELTA... [--scope S] [--idem K]", "add to counter columns", cmd_incr},
	{"query", "\"SELECT ...\" [--json]", "read derived tables", cmd_query},
	{"rebuild", "", "drop and re-derive every derived table from the log", cmd_rebuild},
	{"conflicts", "", "list rows that lost a UNIQUE value", cmd_conflicts},
	{"duplicates", "", "list events whose idempotency key was used before", cmd_duplicates},
	{"feed", "NAME [--no-ack]", "print row changes since NAME's cursor as JSON lines, then ack", cmd_feed},
	{"blame", "TABLE PK", "which event set each column's current value", cmd_blame},
	{"trust", "add ID [--scopes a,b] [--read] [--write] | list | remove ID", "devices allowed to sync", cmd_trust},
	{"serve", "--listen HOST:PORT [--max-conns N] [--grace S]", "accept sync sessions from trusted devices (TLS)", cmd_serve},
	{"sync", "HOST:PORT [--scopes a,b] [--watch [--interval S]]", "sync with a device running `weft serve`", cmd_sync},
};

static void usage(FILE *f)
{
	fprintf(f, "usage: weft [--db PATH] COMMAND [ARGS]\n\n"
	           "The store is PATH, $WEFT_DB, or ./weft.db. A passphrase-protected key is\n"
	           "unlocked with $WEFT_PASSPHRASE or --passphrase-file FILE.\n\ncommands:\n");
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		fprintf(f, "  %-10s %-50s %s\n", commands[i].name, commands[i].args, commands[i].help);
	fprintf(f, "\nweft %s\n", weft_version());
}

int cli_fail(const char *fmt, ...)
{
	va_list ap;
	fputs("weft: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return CLI_FAIL;
}

int cli_usage(const char *cmd, const char *args)
{
	fprintf(stderr, "usage: weft %s %s\n", cmd, args);
	return CLI_USAGE;
}

static void take(cli *c, int i, int n)
{
	memmove(&c->argv[i], &c->argv[i + n], (size_t)(c->argc - i - n + 1) * sizeof(char *));
	c->argc -= n;
}

const char *cli_opt(cli *c, const char *name)
{
	size_t n = strlen(name);
	for (int i = 0; i < c->argc; i++) {
		const char *a = c->argv[i];
		if (strcmp(a, "--") == 0)
			break;
		if (strncmp(a, "--", 2) || strncmp(a + 2, name, n))
			continue;
		if (a[2 + n] == '=') {
			take(c, i, 1);
			return a + 3 + n;
		}
		if (a[2 + n] == '\0' && i + 1 < c->argc) {
			const char *v = c->argv[i + 1];
			take(c, i, 2);
			return v;
		}
	}
	return NULL;
}

int cli_flag(cli *c, const char *name)
{
	for (int i = 0; i < c->argc; i++) {
		if (strcmp(c->argv[i], "--") == 0)
			break;
		if (strncmp(c->argv[i], "--", 2) == 0 && strcmp(c->argv[i] + 2, name) == 0) {
			take(c, i, 1);
			return 1;
		}
	}
	return 0;
}

int cli_no_more_options(cli *c, const char *cmd)
{
	for (int i = 0; i < c->argc; i++) {
		if (strcmp(c->argv[i], "--") == 0) {
			take(c, i, 1);
			break;
		}
		if (strncmp(c->argv[i], "--", 2) == 0) {
			fprintf(stderr, "weft %s: unknown option %s (see `weft help`)\n", cmd, c->argv[i]);
			return -1;
		}
	}
	return 0;
}

const char *cli_passphrase(cli *c)
{
	static char buf[1024];
	const char *file = c->passphrase_file;
	if (file) {
		FILE *f = fopen(file, "r");
		if (!f) {
			cli_fail("cannot read passphrase file %s", file);
			exit(CLI_FAIL);
		}
		size_t n = fread(buf, 1, sizeof(buf) - 1, f);
		fclose(f);
		buf[n] = '\0';
		buf[strcspn(buf, "\r\n")] = '\0';
		return buf;
	}
	const char *env = getenv("WEFT_PASSPHRASE");
	return env && *env ? env : NULL;
}

int cli_open(weft_db **db, cli *c, unsigned flags)
{
	weft_open_options o = WEFT_OPEN_OPTIONS_INIT;
	o.flags = flags;
	o.passphrase = cli_passphrase(c);
	int rc = weft_db_open(db, c->db_path, &o);
	if (rc < 0)
		return cli_fail("%s", weft_error_last());
	return CLI_OK;
}

int cli_progress(uint64_t done, uint64_t total, void *payload)
{
	const cli_progress_state *p = payload;
	if (p->tty)
		fprintf(stderr, "\r%s %llu/%llu", p->what, (unsigned long long)done, (unsigned long long)total);
	return 0;
}

void cli_json_string(FILE *f, const char *s, size_t n)
{
	fputc('"', f);
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)s[i];
		if (ch == '"' || ch == '\\')
			fprintf(f, "\\%c", ch);
		else if (ch == '\n')
			fputs("\\n", f);
		else if (ch < 0x20 || ch == 0x7f)
			fprintf(f, "\\u%04x", ch);
		else
			fputc(ch, f);
	}
	fputc('"', f);
}

int main(int argc, char **argv)
{
	cli c = {NULL, NULL, argc - 1, argv + 1};
	c.db_path = cli_opt(&c, "db");
	c.passphrase_file = cli_opt(&c, "passphrase-file");
	if (!c.db_path)
		c.db_path = getenv("WEFT_DB");
	if (!c.db_path || !*c.db_path)
		c.db_path = "weft.db";
	if (c.argc < 1 || strcmp(c.argv[0], "help") == 0 || strcmp(c.argv[0], "--help") == 0 ||
	    strcmp(c.argv[0], "-h") == 0) {
		usage(c.argc < 1 ? stderr : stdout);
		return c.argc < 1 ? CLI_USAGE : CLI_OK;
	}
	if (strcmp(c.argv[0], "--version") == 0 || strcmp(c.argv[0], "version") == 0) {
		printf("weft %s\n", weft_version());
		return CLI_OK;
	}
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
		if (strcmp(c.argv[0], commands[i].name) == 0) {
			c.argc--;
			c.argv++;
			return commands[i].run(&c);
		}
	}
	fprintf(stderr, "weft: unknown command \"%s\"\n\n", c.argv[0]);
	usage(stderr);
	return CLI_USAGE;
}
