/* Shared pieces of the `weft` command. */
#ifndef WEFT_CLI_H
#define WEFT_CLI_H

#include <stdio.h>

#include "weft.h"

/* Exit codes: 0 ok, 1 the operation found a problem (verify failed, not in
 * sync), 2 usage error, 3 the operation could not run. */
#define CLI_OK 0
#define CLI_PROBLEM 1
#define CLI_USAGE 2
#define CLI_FAIL 3

typedef struct cli {
	const char *db_path;
	const char *passphrase_file; /* global --passphrase-file */
	int argc;
	char **argv;
} cli;

typedef struct cli_command {
	const char *name;
	const char *args;
	const char *help;
	int (*run)(cli *c);
} cli_command;

/* Opens the store named by --db / $WEFT_DB (default ./weft.db). */
int cli_open(weft_db **db, cli *c, unsigned flags);
/* Prints "weft: <msg>" to stderr and returns CLI_FAIL. */
int cli_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int cli_usage(const char *cmd, const char *args);
/* Takes the value of --name from argv (removing it); NULL if absent. */
const char *cli_opt(cli *c, const char *name);
/* 1 if the flag --name is present (removing it). */
int cli_flag(cli *c, const char *name);
/* After options are taken: fails on any leftover --option. */
int cli_no_more_options(cli *c, const char *cmd);
/* The passphrase from $WEFT_PASSPHRASE or --passphrase-file (NULL: none). */
const char *cli_passphrase(cli *c);
/* A weft_progress_cb that draws "\r<what> done/total" on a terminal. */
typedef struct cli_progress_state {
	int tty;
	const char *what;
} cli_progress_state;
int cli_progress(uint64_t done, uint64_t total, void *payload);
/* Prints a string as a JSON string literal. */
void cli_json_string(FILE *f, const char *s, size_t n);

/* Command implementations (cli/weft_*.c). */
int cmd_init(cli *c);
int cmd_id(cli *c);
int cmd_append(cli *c);
int cmd_log(cli *c);
int cmd_verify(cli *c);
int cmd_export(cli *c);
int cmd_import(cli *c);
int cmd_heads(cli *c);
int cmd_schema(cli *c);
int cmd_put(cli *c);
int cmd_del(cli *c);
int cmd_incr(cli *c);
int cmd_query(cli *c);
int cmd_rebuild(cli *c);
int cmd_conflicts(cli *c);
int cmd_duplicates(cli *c);
int cmd_feed(cli *c);
int cmd_blame(cli *c);
int cmd_trust(cli *c);
int cmd_serve(cli *c);
int cmd_sync(cli *c);

#endif
