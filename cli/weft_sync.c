/* Network commands: trust, serve, sync. */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli/weft_cli.h"
#include "platform/platform.h"

/* Signals received: 1 asks for a clean stop, 2 for an immediate one. */
static volatile sig_atomic_t stopping;

static void on_signal(int sig)
{
	(void)sig;
	if (stopping < 2)
		stopping++;
}

static void catch_signals(void)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
}

static void hex_groups(char *out, const unsigned char *h, size_t n)
{
	static const char digits[] = "0123456789abcdef";
	char *o = out;
	for (size_t i = 0; i < n; i++) {
		if (i && i % 4 == 0)
			*o++ = ' ';
		*o++ = digits[h[i] >> 4];
		*o++ = digits[h[i] & 15];
	}
	*o = '\0';
}

int cmd_id(cli *c)
{
	if (cli_no_more_options(c, "id") < 0 || c->argc)
		return cli_usage("id", "");
	weft_db *db;
	int rc = cli_open(&db, c, 0);
	if (rc)
		return rc;
	unsigned char h[32];
	char hex[100];
	printf("%s\n", weft_db_device_id(db));
	if (weft_tls_key_hash(h, db) == WEFT_OK) {
		hex_groups(hex, h, 16);
		if (isatty(1))
			printf("TLS key: %s (compare both lines on the other device before `weft trust add`)\n", hex);
		else
			printf("TLS key: %s\n", hex);
	}
	weft_db_close(db);
	return CLI_OK;
}

/* ------------------------------------------------------------------ trust */

#define SCOPES_MAX 256

/* Splits a comma-separated list in place; 1 if it has too many items. */
static int split_scopes(char *copy, char **list, size_t *n)
{
	*n = 0;
	for (char *tok = copy ? strtok(copy, ",") : NULL; tok; tok = strtok(NULL, ",")) {
		if (*n == SCOPES_MAX)
			return 1;
		list[(*n)++] = tok;
	}
	return 0;
}

/* A whole number in [lo, hi], or -1. */
static long parse_count(const char *s, long lo, long hi)
{
	char *end;
	errno = 0;
	long v = s && *s ? strtol(s, &end, 10) : -1;
	if (!s || !*s || errno || *end || v < lo || v > hi)
		return -1;
	return v;
}

static int print_trust(const weft_trust_entry *e, void *p)
{
	char dev[WEFT_DEVICE_ID_LEN + 1], hex[100];
	(*(int *)p)++;
	weft_device_id_format(dev, e->pk);
	printf("%s  scopes %s  %s%s", dev, e->scopes,
	       e->perms & WEFT_TRUST_READ ? "read" : "", (e->perms & (WEFT_TRUST_READ | WEFT_TRUST_WRITE)) == 3 ? "+write"
	                                                 : e->perms & WEFT_TRUST_WRITE ? "write" : "");
	if (!e->perms)
		printf("no access");
	if (e->tls_pinned) {
		hex_groups(hex, e->tls_key_hash, 16);
		printf("  TLS key %s", hex);
	} else {
		printf("  (not connected yet)");
	}
	printf("\n");
	return 0;
}

int cmd_trust(cli *c)
{
	const char *usage = "add DEVICE-ID [--scopes a,b] [--read] [--write] | list | remove DEVICE-ID";
	const char *scopes = cli_opt(c, "scopes");
	int r = cli_flag(c, "read"), w = cli_flag(c, "write");
	if (cli_no_more_options(c, "trust") < 0 || c->argc < 1)
		return cli_usage("trust", usage);
	const char *sub = c->argv[0];
	int need_id = strcmp(sub, "add") == 0 || strcmp(sub, "remove") == 0;
	if ((need_id && c->argc != 2) || (!need_id && (strcmp(sub, "list") != 0 || c->argc != 1)))
		return cli_usage("trust", usage);
	unsigned char pk[32];
	if (need_id && weft_device_id_parse(pk, c->argv[1]) < 0)
		return cli_fail("%s", weft_error_last());
	weft_db *db;
	int rc = cli_open(&db, c, strcmp(sub, "list") == 0 ? WEFT_OPEN_READONLY : 0);
	if (rc)
		return rc;
	if (strcmp(sub, "list") == 0) {
		int n = 0;
		rc = weft_trust_list(db, print_trust, &n) < 0 ? cli_fail("%s", weft_errmsg(db)) : CLI_OK;
		if (rc == CLI_OK && n == 0)
			printf("no trusted devices; pair one with `weft trust add DEVICE-ID`\n");
	} else if (strcmp(sub, "remove") == 0) {
		rc = weft_trust_remove(db, pk) < 0 ? cli_fail("%s", weft_errmsg(db)) : CLI_OK;
		if (rc == CLI_OK)
			printf("removed %s; it is refused from its next connection\n", c->argv[1]);
	} else {
		char *list[SCOPES_MAX];
		size_t n = 0;
		char *copy = scopes ? strdup(scopes) : NULL;
		int too_many = split_scopes(copy, list, &n);
		unsigned perms = (r ? WEFT_TRUST_READ : 0) | (w ? WEFT_TRUST_WRITE : 0);
		if (!perms)
			perms = WEFT_TRUST_READ | WEFT_TRUST_WRITE;
		if (scopes && !copy)
			rc = cli_fail("out of memory");
		else if (too_many)
			rc = cli_fail("--scopes lists more than %d scopes", SCOPES_MAX);
		else if (scopes && n == 0)
			rc = cli_fail("--scopes needs at least one scope");
		else if (weft_trust_add(db, pk, scopes ? (const char *const *)list : NULL, n, perms) < 0)
			rc = cli_fail("%s", weft_errmsg(db));
		else
			printf("trusted %s (%s, %s)\n", c->argv[1], scopes ? scopes : "all scopes",
			       perms == 3 ? "read and write" : perms == 1 ? "read only" : "write only");
		free(copy);
	}
	weft_db_close(db);
	return rc;
}

/* ------------------------------------------------------------------ serve */

/* Sessions are interrupted when this is set (shutdown after the grace
 * period): the transport below reports it from wait(). */
static volatile sig_atomic_t cancel_sessions;
static const weft_transport *serve_inner;

static int sv_accept(void **conn, void *ctx, uint64_t timeout_ms)
{
	return serve_inner->accept(conn, ctx, timeout_ms);
}
static int sv_handshake(void *conn, uint64_t timeout_ms)
{
	return serve_inner->handshake(conn, timeout_ms);
}
static int sv_send(void *conn, const void *buf, size_t len, size_t *sent)
{
	return serve_inner->send(conn, buf, len, sent);
}
static int sv_recv(void *conn, void *buf, size_t cap, size_t *got)
{
	return serve_inner->recv(conn, buf, cap, got);
}
static int sv_wait(void *conn, int want_write, uint64_t timeout_ms)
{
	if (cancel_sessions)
		return WEFT_EUSER;
	return serve_inner->wait(conn, want_write, timeout_ms);
}
static void sv_close(void *conn)
{
	serve_inner->close(conn);
}
static const unsigned char *sv_peer(void *conn)
{
	return serve_inner->peer(conn);
}

typedef struct server {
	cli *c;
	const char *passphrase;
	weft_transport t; /* the TLS transport, interruptible */
	plat_mutex *lock;
	int active;
} server;

typedef struct worker {
	server *sv;
	void *conn;
	plat_thread *thread;
	int done;
	struct worker *next;
} worker;

static void log_line(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void log_line(const char *fmt, ...)
{
	char ts[32];
	time_t now = time(NULL);
	struct tm tm;
	gmtime_r(&now, &tm);
	strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%SZ", &tm);
	/* One write per line, so lines of concurrent sessions never mix. */
	char line[2048];
	int n = snprintf(line, sizeof(line), "%s weft serve: ", ts);
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
	va_end(ap);
	strcat(line, "\n");
	fputs(line, stderr);
	fflush(stderr);
}

static void on_refused(const char *msg, void *p)
{
	(void)p;
	log_line("%s", msg);
}

static void *serve_one(void *arg)
{
	worker *w = arg;
	server *sv = w->sv;
	weft_open_options o = WEFT_OPEN_OPTIONS_INIT;
	o.passphrase = sv->passphrase;
	weft_db *db;
	uint64_t start = plat_mono_ms();
	int rc = weft_db_open(&db, sv->c->db_path, &o);
	if (rc < 0) {
		log_line("cannot open the store for a session: %s", weft_error_last());
	} else {
		weft_session_stats st;
		rc = weft_sync_conn(&st, db, &sv->t, w->conn, WEFT_ROLE_SERVER, NULL, NULL, NULL);
		const unsigned char *peer = sv->t.peer(w->conn);
		char dev[WEFT_DEVICE_ID_LEN + 1] = "an unauthenticated peer";
		if (peer)
			weft_device_id_format(dev, peer);
		if (rc == WEFT_OK)
			log_line("session with %s ok: received %llu events, sent %llu; %llu bytes in, %llu out; "
			         "%llu round trips; %llu ms", dev, (unsigned long long)st.events_received,
			         (unsigned long long)st.events_sent, (unsigned long long)st.bytes_received,
			         (unsigned long long)st.bytes_sent, (unsigned long long)st.round_trips,
			         (unsigned long long)(plat_mono_ms() - start));
		else if (cancel_sessions)
			log_line("session with %s interrupted by the shutdown after %llu ms; received %llu events "
			         "(kept), sent %llu", dev, (unsigned long long)(plat_mono_ms() - start),
			         (unsigned long long)st.events_received, (unsigned long long)st.events_sent);
		else if (peer || rc != WEFT_EAUTH) /* refusals were logged by on_refused */
			log_line("session with %s failed (%s): %s", dev, weft_errname(rc), weft_errmsg(db));
		weft_db_close(db);
	}
	sv->t.close(w->conn);
	plat_mutex_lock(sv->lock);
	sv->active--;
	w->done = 1;
	plat_mutex_unlock(sv->lock);
	return NULL;
}

static void reap(server *sv, worker **list, int all)
{
	for (worker **pw = list; *pw;) {
		worker *w = *pw;
		plat_mutex_lock(sv->lock);
		int done = w->done;
		plat_mutex_unlock(sv->lock);
		if (done || all) {
			plat_thread_join(w->thread);
			*pw = w->next;
			free(w);
		} else {
			pw = &w->next;
		}
	}
}

static int active_sessions(server *sv)
{
	plat_mutex_lock(sv->lock);
	int n = sv->active;
	plat_mutex_unlock(sv->lock);
	return n;
}

int cmd_serve(cli *c)
{
	const char *pass = cli_passphrase(c);
	const char *listen = cli_opt(c, "listen");
	const char *max_s = cli_opt(c, "max-conns");
	const char *grace_s = cli_opt(c, "grace");
	const char *usage = "--listen HOST:PORT [--max-conns N] [--grace SECONDS]";
	if (cli_no_more_options(c, "serve") < 0 || c->argc || !listen)
		return cli_usage("serve", usage);
	long max_conns = max_s ? parse_count(max_s, 1, 10000) : 32;
	long grace = grace_s ? parse_count(grace_s, 0, 3600) : 10;
	if (max_conns < 0)
		return cli_fail("--max-conns must be a whole number from 1 to 10000");
	if (grace < 0)
		return cli_fail("--grace must be a whole number of seconds from 0 to 3600");
	server sv;
	memset(&sv, 0, sizeof(sv));
	sv.c = c;
	sv.passphrase = pass;
	weft_db *db;
	int rc = cli_open(&db, c, 0);
	if (rc)
		return rc;
	weft_transport *tls = NULL;
	weft_tls_options to = WEFT_TLS_OPTIONS_INIT;
	to.listen = listen;
	to.on_refused = on_refused;
	if (weft_tls_transport_new(&tls, db, &to) < 0 || plat_mutex_new(&sv.lock) < 0) {
		rc = cli_fail("%s", weft_errmsg(db));
		weft_tls_transport_free(tls);
		weft_db_close(db);
		return rc;
	}
	serve_inner = tls;
	sv.t = *tls;
	sv.t.connect = NULL;
	sv.t.accept = sv_accept;
	sv.t.handshake = sv_handshake;
	sv.t.send = sv_send;
	sv.t.recv = sv_recv;
	sv.t.wait = sv_wait;
	sv.t.close = sv_close;
	sv.t.peer = sv_peer;
	catch_signals();
	printf("listening on %s as %s\n", weft_tls_listen_address(tls), weft_db_device_id(db));
	fflush(stdout);
	log_line("serving %s as %s on %s (at most %ld sessions at once)", c->db_path, weft_db_device_id(db),
	         weft_tls_listen_address(tls), max_conns);
	worker *workers = NULL;
	while (!stopping) {
		void *conn;
		rc = sv.t.accept(&conn, sv.t.ctx, 250);
		reap(&sv, &workers, 0);
		if (rc == WEFT_ETIMEOUT)
			continue;
		if (rc < 0) {
			log_line("accept failed: %s", weft_error_last());
			continue;
		}
		plat_mutex_lock(sv.lock);
		int busy = sv.active >= max_conns;
		if (!busy)
			sv.active++;
		plat_mutex_unlock(sv.lock);
		if (busy) {
			log_line("refusing a connection: %ld sessions already running (--max-conns)", max_conns);
			sv.t.close(conn);
			continue;
		}
		worker *w = calloc(1, sizeof(*w));
		if (w) {
			w->sv = &sv;
			w->conn = conn;
		}
		if (!w || plat_thread_start(&w->thread, serve_one, w) < 0) {
			log_line("cannot start a session thread (out of memory or threads)");
			free(w);
			sv.t.close(conn);
			plat_mutex_lock(sv.lock);
			sv.active--;
			plat_mutex_unlock(sv.lock);
			continue;
		}
		w->next = workers;
		workers = w;
	}
	int running = active_sessions(&sv);
	if (running)
		log_line("shutting down: letting %d running session(s) finish (at most %ld s; signal again to "
		         "interrupt them now)", running, grace);
	else
		log_line("shutting down");
	uint64_t deadline = plat_mono_ms() + (uint64_t)grace * 1000;
	while (active_sessions(&sv) && stopping < 2 && plat_mono_ms() < deadline) {
		reap(&sv, &workers, 0);
		usleep(20000);
	}
	if ((running = active_sessions(&sv)) > 0) {
		log_line("interrupting %d session(s); what they received so far is kept", running);
		cancel_sessions = 1;
	}
	reap(&sv, &workers, 1);
	weft_tls_transport_free(tls);
	plat_mutex_free(sv.lock);
	weft_db_close(db);
	log_line("stopped");
	return CLI_OK;
}

/* ------------------------------------------------------------------- sync */

typedef struct progress_state {
	int tty;
	int shown;
} progress_state;

static void show_progress(const weft_session_stats *st, void *p)
{
	progress_state *ps = p;
	if (!ps->tty)
		return;
	ps->shown = 1;
	fprintf(stderr, "\r\033[Ksyncing: %llu events in, %llu out, %.1f KiB in, %.1f KiB out",
	        (unsigned long long)st->events_received, (unsigned long long)st->events_sent,
	        (double)st->bytes_received / 1024, (double)st->bytes_sent / 1024);
	if (st->events_to_fetch)
		fprintf(stderr, ", %llu to fetch", (unsigned long long)st->events_to_fetch);
}

/* One session with addr. quiet: print the summary only if events moved. */
static int sync_once(weft_db *db, weft_transport *t, const char *addr, const weft_session_options *so, int quiet)
{
	progress_state ps = {isatty(2), 0};
	uint64_t start = plat_mono_ms();
	void *conn = NULL;
	int rc = t->connect(&conn, t->ctx, addr, 0);
	if (rc < 0) {
		cli_fail("cannot sync with %s: %s", addr, weft_error_last());
		return rc;
	}
	weft_session_stats st;
	rc = weft_sync_conn(&st, db, t, conn, WEFT_ROLE_CLIENT, so, show_progress, &ps);
	char dev[WEFT_DEVICE_ID_LEN + 1] = "?";
	if (t->peer(conn))
		weft_device_id_format(dev, t->peer(conn));
	t->close(conn);
	if (ps.shown)
		fputs("\r\033[K", stderr);
	if (rc < 0) {
		cli_fail("sync with %s failed (%s): %s", addr, weft_errname(rc), weft_errmsg(db));
		return rc;
	}
	if (!quiet || st.events_received || st.events_sent)
		printf("in sync with %s at %s: received %llu events, sent %llu; %llu bytes in, %llu out; "
		       "%llu round trips; %llu ms\n", dev, addr, (unsigned long long)st.events_received,
		       (unsigned long long)st.events_sent, (unsigned long long)st.bytes_received,
		       (unsigned long long)st.bytes_sent, (unsigned long long)st.round_trips,
		       (unsigned long long)(plat_mono_ms() - start));
	fflush(stdout);
	return WEFT_OK;
}

int cmd_sync(cli *c)
{
	const char *scopes = cli_opt(c, "scopes");
	const char *interval_s = cli_opt(c, "interval");
	int watch = cli_flag(c, "watch");
	const char *usage = "HOST:PORT [--scopes a,b] [--watch [--interval SECONDS]]";
	if (cli_no_more_options(c, "sync") < 0 || c->argc != 1)
		return cli_usage("sync", usage);
	long interval = interval_s ? parse_count(interval_s, 1, 86400) : 5;
	if (interval < 0)
		return cli_fail("--interval must be a whole number of seconds from 1 to 86400");
	if (interval_s && !watch)
		return cli_fail("--interval only applies with --watch");
	char *list[SCOPES_MAX];
	size_t n = 0;
	char *copy = scopes ? strdup(scopes) : NULL;
	if (scopes && !copy)
		return cli_fail("out of memory");
	if (split_scopes(copy, list, &n) || (scopes && !n)) {
		free(copy);
		return cli_fail("--scopes needs 1 to %d comma-separated scopes", SCOPES_MAX);
	}
	weft_db *db;
	int rc = cli_open(&db, c, 0);
	if (rc) {
		free(copy);
		return rc;
	}
	weft_transport *t;
	if (weft_tls_transport_new(&t, db, NULL) < 0) {
		rc = cli_fail("%s", weft_errmsg(db));
		weft_db_close(db);
		free(copy);
		return rc;
	}
	weft_session_options so = WEFT_SESSION_OPTIONS_INIT;
	if (scopes) {
		so.scopes = (const char *const *)list;
		so.nscopes = n;
	}
	if (!watch) {
		rc = sync_once(db, t, c->argv[0], &so, 0) == WEFT_OK ? CLI_OK : CLI_PROBLEM;
	} else {
		/* Sync every interval; after a failure retry after 1, 2, 4 ...
		 * up to 60 s (never longer than the interval would be). */
		catch_signals();
		unsigned backoff = 1;
		int ok_before = 0;
		while (!stopping) {
			unsigned wait_s;
			if (sync_once(db, t, c->argv[0], &so, ok_before) == WEFT_OK) {
				backoff = 1;
				ok_before = 1;
				wait_s = (unsigned)interval;
			} else {
				ok_before = 0;
				wait_s = backoff;
				fprintf(stderr, "weft: retrying in %u s\n", backoff);
				backoff = backoff >= 32 ? 60 : backoff * 2;
			}
			for (unsigned i = 0; i < wait_s * 20 && !stopping; i++)
				usleep(50000);
		}
		rc = CLI_OK;
	}
	free(copy);
	weft_tls_transport_free(t);
	weft_db_close(db);
	return rc;
}
