#include "core/schema.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/alloc.h"

typedef enum { T_END, T_IDENT, T_NUMBER, T_STRING, T_BLOB, T_PUNCT } tok_kind;

typedef struct lexer {
	const char *src, *p;
	int line;
	tok_kind kind;
	const char *tok; /* start of the token */
	size_t len;      /* its length (for strings: of the raw text) */
	int quoted;      /* identifier was in double quotes */
	int unterminated; /* string, blob or quoted name without its closing quote */
	int tok_line;    /* line of the token's first character */
	weft_err *err;
} lexer;

/* A token remembered for an error found after the lexer moved past it. */
typedef struct tokpos {
	const char *tok;
	size_t len;
	int line;
} tokpos;

static tokpos here(const lexer *lx)
{
	tokpos t = {lx->kind == T_END ? NULL : lx->tok, lx->kind == T_END ? 0 : lx->len, lx->tok_line};
	return t;
}

static int error_at(lexer *lx, tokpos at, const char *fmt, const char *detail)
{
	char near[40];
	size_t n = at.len < 32 ? at.len : 32;
	if (at.tok)
		memcpy(near, at.tok, n);
	near[n] = '\0';
	char msg[300];
	snprintf(msg, sizeof(msg), fmt, detail ? detail : "");
	return err_set(lx->err, WEFT_EINVAL, "schema line %d near '%s': %s", at.line,
	               at.tok ? near : "end of input", msg);
}

static int lex_error(lexer *lx, const char *fmt, const char *detail)
{
	return error_at(lx, here(lx), fmt, detail);
}

static void next(lexer *lx)
{
	for (;;) {
		while (isspace((unsigned char)*lx->p)) {
			if (*lx->p == '\n')
				lx->line++;
			lx->p++;
		}
		if (lx->p[0] == '-' && lx->p[1] == '-') {
			while (*lx->p && *lx->p != '\n')
				lx->p++;
			continue;
		}
		if (lx->p[0] == '/' && lx->p[1] == '*') {
			const char *e = strstr(lx->p + 2, "*/");
			for (const char *q = lx->p; q < (e ? e : lx->p + strlen(lx->p)); q++)
				lx->line += *q == '\n';
			lx->p = e ? e + 2 : lx->p + strlen(lx->p);
			continue;
		}
		break;
	}
	lx->tok = lx->p;
	lx->tok_line = lx->line;
	lx->quoted = 0;
	lx->unterminated = 0;
	char c = *lx->p;
	if (!c) {
		lx->kind = T_END;
		lx->len = 0;
	} else if ((c == 'x' || c == 'X') && lx->p[1] == '\'') {
		const char *e = strchr(lx->p + 2, '\'');
		lx->kind = T_BLOB;
		lx->unterminated = !e;
		lx->p = e ? e + 1 : lx->p + strlen(lx->p);
		lx->len = (size_t)(lx->p - lx->tok);
	} else if (isalpha((unsigned char)c) || c == '_') {
		while (isalnum((unsigned char)*lx->p) || *lx->p == '_')
			lx->p++;
		lx->kind = T_IDENT;
		lx->len = (size_t)(lx->p - lx->tok);
	} else if (c == '"') {
		const char *e = strchr(lx->p + 1, '"');
		lx->kind = T_IDENT;
		lx->quoted = 1;
		lx->unterminated = !e;
		lx->tok = lx->p + 1;
		lx->len = e ? (size_t)(e - lx->tok) : strlen(lx->tok);
		lx->p = e ? e + 1 : lx->tok + lx->len;
	} else if (isdigit((unsigned char)c) || (c == '.' && isdigit((unsigned char)lx->p[1]))) {
		while (isalnum((unsigned char)*lx->p) || *lx->p == '.' ||
		       ((*lx->p == '+' || *lx->p == '-') && (lx->p[-1] == 'e' || lx->p[-1] == 'E')))
			lx->p++;
		lx->kind = T_NUMBER;
		lx->len = (size_t)(lx->p - lx->tok);
	} else if (c == '\'') {
		const char *q = lx->p + 1;
		while (*q && !(q[0] == '\'' && q[1] != '\''))
			q += q[0] == '\'' ? 2 : 1;
		lx->kind = T_STRING;
		lx->unterminated = !*q;
		lx->p = *q ? q + 1 : q;
		lx->len = (size_t)(lx->p - lx->tok);
	} else {
		lx->kind = T_PUNCT;
		lx->p++;
		lx->len = 1;
	}
	for (const char *q = lx->tok; q < lx->p; q++)
		lx->line += *q == '\n'; /* strings and quoted names may span lines */
}

static int is_kw(const lexer *lx, const char *kw)
{
	return lx->kind == T_IDENT && !lx->quoted && strlen(kw) == lx->len &&
	       strncasecmp(lx->tok, kw, lx->len) == 0;
}

static int is_punct(const lexer *lx, char c)
{
	return lx->kind == T_PUNCT && *lx->tok == c;
}

static int expect_kw(lexer *lx, const char *kw)
{
	if (!is_kw(lx, kw))
		return lex_error(lx, "expected %s", kw);
	next(lx);
	return 0;
}

static int expect_punct(lexer *lx, char c)
{
	if (!is_punct(lx, c)) {
		char what[4] = {'\'', c, '\'', 0};
		return lex_error(lx, "expected %s", what);
	}
	next(lx);
	return 0;
}

int schema_name_ok(const char *name, size_t len)
{
	if (len == 0 || len > SCHEMA_NAME_MAX)
		return 0;
	if (!isalpha((unsigned char)name[0]) && name[0] != '_')
		return 0;
	for (size_t i = 0; i < len; i++)
		if (!isalnum((unsigned char)name[i]) && name[i] != '_')
			return 0;
	if ((len >= 5 && strncasecmp(name, "weft_", 5) == 0) ||
	    (len >= 7 && strncasecmp(name, "sqlite_", 7) == 0))
		return 0;
	return 1;
}

static int take_name(lexer *lx, char name[SCHEMA_NAME_MAX + 1], char lname[SCHEMA_NAME_MAX + 1],
                     const char *what)
{
	if (lx->kind != T_IDENT)
		return lex_error(lx, "expected a %s name", what);
	if (lx->unterminated)
		return lex_error(lx, "a quoted %s name lacks its closing '\"'", what);
	if (!schema_name_ok(lx->tok, lx->len))
		return lex_error(lx, "%s names are 1-64 letters, digits or '_', not starting with a digit, "
		                 "weft_ or sqlite_", what);
	memcpy(name, lx->tok, lx->len);
	name[lx->len] = '\0';
	for (size_t i = 0; i <= lx->len; i++)
		lname[i] = (char)tolower((unsigned char)name[i]);
	next(lx);
	return 0;
}

static const char *const type_names[] = {"", "INTEGER", "REAL", "TEXT", "BLOB"};

const char *schema_type_sql(weft_type t)
{
	return t >= WEFT_INTEGER && t <= WEFT_BLOB ? type_names[t] : "";
}

static int take_type(lexer *lx, schema_col *c)
{
	if (is_kw(lx, "INTEGER") || is_kw(lx, "INT"))
		c->type = WEFT_INTEGER;
	else if (is_kw(lx, "REAL"))
		c->type = WEFT_REAL;
	else if (is_kw(lx, "TEXT"))
		c->type = WEFT_TEXT;
	else if (is_kw(lx, "BLOB"))
		c->type = WEFT_BLOB;
	else
		return lex_error(lx, "column %s needs a type: INTEGER, REAL, TEXT or BLOB", c->name);
	next(lx);
	return 0;
}

static int hexv(char c)
{
	return isdigit((unsigned char)c) ? c - '0' : (tolower((unsigned char)c) - 'a' + 10);
}

static int take_default(lexer *lx, schema_col *c)
{
	int neg = 0;
	if (is_punct(lx, '-') || is_punct(lx, '+')) {
		neg = *lx->tok == '-';
		next(lx);
		if (lx->kind != T_NUMBER)
			return lex_error(lx, "expected a number after the sign%s", NULL);
	}
	c->has_default = 1;
	if (lx->kind == T_NUMBER) {
		char buf[64];
		if (lx->len + 1 >= sizeof(buf))
			return lex_error(lx, "number too long%s", NULL);
		if (lx->len > 1 && lx->tok[0] == '0' && (lx->tok[1] == 'x' || lx->tok[1] == 'X'))
			return lex_error(lx, "write the default in decimal (hexadecimal literals are not supported)%s", NULL);
		/* The sign is part of the literal, so -9223372036854775808 is
		 * an INTEGER as in SQLite. */
		buf[0] = neg ? '-' : '+';
		memcpy(buf + 1, lx->tok, lx->len);
		buf[lx->len + 1] = '\0';
		char *end;
		errno = 0;
		long long v = strtoll(buf, &end, 10);
		if (*end == '\0' && errno == 0) {
			c->def = weft_int(v);
		} else {
			double d = strtod(buf, &end);
			if (*end != '\0' || !isfinite(d))
				return lex_error(lx, "not a number%s", NULL);
			c->def = weft_real(d);
		}
	} else if (lx->kind == T_STRING) {
		if (lx->unterminated)
			return lex_error(lx, "unterminated string%s", NULL);
		char *s = weft__malloc(lx->len);
		if (!s)
			return err_set(lx->err, WEFT_ENOMEM, "out of memory parsing the schema");
		size_t n = 0;
		for (size_t i = 1; i + 1 < lx->len; i++) {
			s[n++] = lx->tok[i];
			if (lx->tok[i] == '\'')
				i++; /* '' is one quote */
		}
		s[n] = '\0';
		c->def = weft_textn(s, n);
	} else if (lx->kind == T_BLOB) {
		size_t digits = lx->len >= 3 ? lx->len - 3 : 0;
		if (lx->unterminated || digits % 2)
			return lex_error(lx, "a blob literal is X'' with an even number of hex digits%s", NULL);
		unsigned char *b = weft__malloc(digits / 2 + 1);
		if (!b)
			return err_set(lx->err, WEFT_ENOMEM, "out of memory parsing the schema");
		for (size_t i = 0; i < digits / 2; i++) {
			char h = lx->tok[2 + 2 * i], l = lx->tok[3 + 2 * i];
			if (!isxdigit((unsigned char)h) || !isxdigit((unsigned char)l)) {
				weft__free(b);
				return lex_error(lx, "bad hex digit in blob literal%s", NULL);
			}
			b[i] = (unsigned char)(hexv(h) << 4 | hexv(l));
		}
		c->def = weft_blob(b, digits / 2);
	} else if (is_kw(lx, "NULL")) {
		c->def = weft_null();
	} else {
		return lex_error(lx, "DEFAULT takes a literal: a number, 'text', X'hex' or NULL%s", NULL);
	}
	next(lx);
	return 0;
}

static int take_column(lexer *lx, schema_table *t)
{
	if (t->ncols == SCHEMA_MAX_COLUMNS)
		return lex_error(lx, "a table has at most 256 columns%s", NULL);
	schema_col *c = &t->cols[t->ncols];
	memset(c, 0, sizeof(*c));
	int rc;
	tokpos name_at = here(lx);
	if ((rc = take_name(lx, c->name, c->lname, "column")) < 0)
		return rc;
	for (int i = 0; i < t->ncols; i++)
		if (strcmp(t->cols[i].lname, c->lname) == 0)
			return error_at(lx, name_at, "column %s is declared twice", c->name);
	t->ncols++; /* owned from here on, so its default is freed on error */
	if ((rc = take_type(lx, c)) < 0)
		return rc;
	for (;;) {
		if (is_kw(lx, "PRIMARY")) {
			for (int i = 0; i < t->ncols - 1; i++)
				if (t->cols[i].pk)
					return lex_error(lx, "a second PRIMARY KEY column: weft supports a single-column "
					                 "primary key (rows are merged by their key)%s", NULL);
			next(lx);
			if ((rc = expect_kw(lx, "KEY")) < 0)
				return rc;
			c->pk = 1;
		} else if (is_kw(lx, "UNIQUE")) {
			next(lx);
			c->unique = 1;
		} else if (is_kw(lx, "NOT")) {
			next(lx);
			if ((rc = expect_kw(lx, "NULL")) < 0)
				return rc;
			c->notnull = 1;
		} else if (is_kw(lx, "DEFAULT")) {
			next(lx);
			if (c->has_default)
				return lex_error(lx, "two DEFAULTs for column %s", c->name);
			if ((rc = take_default(lx, c)) < 0)
				return rc;
		} else if (is_punct(lx, ',') || is_punct(lx, ')')) {
			break;
		} else {
			return lex_error(lx, "weft supports only PRIMARY KEY, UNIQUE, NOT NULL and DEFAULT on a column "
			                 "(no CHECK, REFERENCES, COLLATE, GENERATED or AUTOINCREMENT)%s", NULL);
		}
	}
	if (c->pk && c->type == WEFT_REAL)
		return error_at(lx, name_at, "primary key %s is REAL; a primary key is INTEGER, TEXT or BLOB",
		                c->name);
	if (c->unique && c->pk)
		c->unique = 0; /* the key is unique by definition */
	if (c->unique && c->notnull)
		return error_at(lx, name_at, "column %s cannot be both UNIQUE and NOT NULL: a row that loses a "
		                "uniqueness conflict keeps NULL in that column (docs/MERGE.md)", c->name);
	if (c->unique && c->has_default && c->def.type != WEFT_NULL)
		return error_at(lx, name_at, "column %s is UNIQUE with a DEFAULT: every row left at the default "
		                "would claim the same value; drop the DEFAULT", c->name);
	if (c->has_default && c->def.type == WEFT_NULL && c->notnull)
		return error_at(lx, name_at, "column %s is NOT NULL but defaults to NULL", c->name);
	return 0;
}

static void table_free(schema_table *t)
{
	for (int i = 0; i < t->ncols; i++)
		if (t->cols[i].def.type == WEFT_TEXT || t->cols[i].def.type == WEFT_BLOB)
			weft__free((void *)t->cols[i].def.p);
	weft__free(t->cols);
}

static int take_table(lexer *lx, schema *s)
{
	int rc;
	if ((rc = expect_kw(lx, "CREATE")) < 0)
		return rc;
	if (is_kw(lx, "TEMP") || is_kw(lx, "TEMPORARY") || is_kw(lx, "VIEW") || is_kw(lx, "INDEX") ||
	    is_kw(lx, "TRIGGER") || is_kw(lx, "VIRTUAL") || is_kw(lx, "UNIQUE"))
		return lex_error(lx, "weft schemas hold only CREATE TABLE statements (indexes on UNIQUE "
		                 "columns are made for you)%s", NULL);
	if ((rc = expect_kw(lx, "TABLE")) < 0)
		return rc;
	if (is_kw(lx, "IF")) {
		next(lx);
		if ((rc = expect_kw(lx, "NOT")) < 0 || (rc = expect_kw(lx, "EXISTS")) < 0)
			return rc;
	}
	if (s->ntables == SCHEMA_MAX_TABLES)
		return lex_error(lx, "a schema has at most 256 tables%s", NULL);
	schema_table *t = &s->tables[s->ntables];
	memset(t, 0, sizeof(*t));
	tokpos table_at = here(lx);
	if ((rc = take_name(lx, t->name, t->lname, "table")) < 0)
		return rc;
	for (int i = 0; i < s->ntables; i++)
		if (strcmp(s->tables[i].lname, t->lname) == 0)
			return error_at(lx, table_at, "table %s is declared twice", t->name);
	t->cols = weft__calloc(SCHEMA_MAX_COLUMNS, sizeof(schema_col));
	if (!t->cols)
		return err_set(lx->err, WEFT_ENOMEM, "out of memory parsing the schema");
	s->ntables++;
	if ((rc = expect_punct(lx, '(')) < 0)
		return rc;
	char pkname[SCHEMA_NAME_MAX + 1] = "", lpk[SCHEMA_NAME_MAX + 1] = "";
	tokpos pk_at = {NULL, 0, 0};
	for (;;) {
		if (is_kw(lx, "PRIMARY")) {
			int had = lpk[0] != 0;
			for (int i = 0; i < t->ncols; i++)
				had |= t->cols[i].pk;
			if (had)
				return lex_error(lx, "a second PRIMARY KEY: weft supports a single-column primary key "
				                 "(rows are merged by their key)%s", NULL);
			next(lx);
			if ((rc = expect_kw(lx, "KEY")) < 0 || (rc = expect_punct(lx, '(')) < 0)
				return rc;
			pk_at = here(lx);
			if ((rc = take_name(lx, pkname, lpk, "column")) < 0)
				return rc;
			if (is_punct(lx, ','))
				return lex_error(lx, "weft supports a single-column primary key%s", NULL);
			if ((rc = expect_punct(lx, ')')) < 0)
				return rc;
		} else if (is_kw(lx, "UNIQUE") || is_kw(lx, "CHECK") || is_kw(lx, "FOREIGN") ||
		           is_kw(lx, "CONSTRAINT")) {
			return lex_error(lx, "table constraints other than PRIMARY KEY(col) are not supported; "
			                 "put UNIQUE on the column itself%s", NULL);
		} else if ((rc = take_column(lx, t)) < 0) {
			return rc;
		}
		if (is_punct(lx, ')'))
			break;
		if ((rc = expect_punct(lx, ',')) < 0)
			return rc;
	}
	next(lx);
	if (is_kw(lx, "WITHOUT")) { /* derived tables are WITHOUT ROWID anyway */
		next(lx);
		if ((rc = expect_kw(lx, "ROWID")) < 0)
			return rc;
	} else if (is_kw(lx, "STRICT")) {
		next(lx);
	}
	if (lpk[0]) {
		int i = schema_col_find(t, lpk);
		if (i < 0)
			return error_at(lx, pk_at, "PRIMARY KEY names column %s, which the table does not have", pkname);
		t->cols[i].pk = 1;
		if (t->cols[i].type == WEFT_REAL)
			return error_at(lx, pk_at, "primary key %s is REAL; a primary key is INTEGER, TEXT or BLOB",
			                t->cols[i].name);
		t->cols[i].unique = 0; /* the key is unique by definition */
	}
	t->pk = -1;
	for (int i = 0; i < t->ncols; i++) {
		if (!t->cols[i].pk)
			continue;
		if (t->pk >= 0)
			return lex_error(lx, "table %s has more than one primary key column; weft needs exactly one",
			                 t->name);
		t->pk = i;
	}
	if (t->pk < 0)
		return error_at(lx, table_at, "table %s needs a PRIMARY KEY column: rows are merged by their key",
		                t->name);
	return 0;
}

int schema_parse(schema **out, const char *ddl, weft_err *err)
{
	*out = NULL;
	if (!ddl)
		return err_set(err, WEFT_EINVAL, "the schema text is NULL");
	size_t len = strnlen(ddl, SCHEMA_DDL_MAX + 1);
	if (len > SCHEMA_DDL_MAX)
		return err_set(err, WEFT_ELIMIT, "the schema text is over %u bytes", SCHEMA_DDL_MAX);
	schema *s = weft__calloc(1, sizeof(*s));
	if (s)
		s->tables = weft__calloc(SCHEMA_MAX_TABLES, sizeof(schema_table));
	if (s && s->tables)
		s->ddl = weft__strdup(ddl);
	if (!s || !s->tables || !s->ddl) {
		schema_free(s);
		return err_set(err, WEFT_ENOMEM, "out of memory parsing the schema");
	}
	lexer lx;
	memset(&lx, 0, sizeof(lx));
	lx.src = lx.p = ddl;
	lx.line = lx.tok_line = 1;
	lx.err = err;
	next(&lx);
	int rc = 0;
	while (lx.kind != T_END) {
		if (is_punct(&lx, ';')) {
			next(&lx);
			continue;
		}
		if ((rc = take_table(&lx, s)) < 0)
			break;
		if (lx.kind != T_END && !is_punct(&lx, ';')) {
			rc = lex_error(&lx, "expected ';' between statements%s", NULL);
			break;
		}
	}
	if (rc == 0 && s->ntables == 0)
		rc = err_set(err, WEFT_EINVAL, "the schema declares no tables; give one or more CREATE TABLE statements");
	if (rc < 0) {
		schema_free(s);
		return rc;
	}
	*out = s;
	return WEFT_OK;
}

void schema_free(schema *s)
{
	if (!s)
		return;
	for (int i = 0; i < s->ntables; i++)
		table_free(&s->tables[i]);
	weft__free(s->tables);
	weft__free(s->ddl);
	weft__free(s);
}

const schema_table *schema_table_find(const schema *s, const char *lname)
{
	for (int i = 0; s && i < s->ntables; i++)
		if (strcmp(s->tables[i].lname, lname) == 0)
			return &s->tables[i];
	return NULL;
}

int schema_col_find(const schema_table *t, const char *lname)
{
	for (int i = 0; i < t->ncols; i++)
		if (strcmp(t->cols[i].lname, lname) == 0)
			return i;
	return -1;
}

weft_value weft_null(void)
{
	weft_value v = {WEFT_NULL, 0, 0, NULL, 0};
	return v;
}

weft_value weft_int(int64_t i)
{
	weft_value v = {WEFT_INTEGER, i, 0, NULL, 0};
	return v;
}

weft_value weft_real(double r)
{
	weft_value v = {WEFT_REAL, 0, r, NULL, 0};
	return v;
}

weft_value weft_textn(const char *s, size_t n)
{
	weft_value v = {WEFT_TEXT, 0, 0, s ? s : "", s ? n : 0};
	return v;
}

weft_value weft_text(const char *s)
{
	return weft_textn(s, s ? strlen(s) : 0);
}

weft_value weft_blob(const void *p, size_t n)
{
	weft_value v = {WEFT_BLOB, 0, 0, p ? p : "", p ? n : 0};
	return v;
}
