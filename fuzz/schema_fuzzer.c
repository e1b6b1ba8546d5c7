/*
 * The schema (DDL subset) parser, core/schema.c, on arbitrary text.
 *
 * Properties:
 *  - parsing never crashes, reads past the terminating NUL or leaks;
 *    failures are WEFT_EINVAL / WEFT_ELIMIT with a message naming a line;
 *  - an accepted schema is well formed: 1..256 tables, each with 1..256
 *    columns, valid distinct names, exactly one INTEGER/TEXT/BLOB primary
 *    key, no UNIQUE NOT NULL, no non-NULL default on a UNIQUE column;
 *  - printing an accepted schema in a canonical form and parsing that
 *    again gives the same tables, columns, types, constraints and
 *    defaults (bit for bit), and the same canonical text.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/schema.h"
#include "fuzz/fuzz_common.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc, (void)argv;
	return 0;
}

typedef struct sbuf {
	char *s;
	size_t len, cap;
} sbuf;

static void put(sbuf *b, const char *s, size_t n)
{
	if (b->len + n + 1 > b->cap) {
		while (b->len + n + 1 > b->cap)
			b->cap = b->cap ? b->cap * 2 : 1024;
		b->s = realloc(b->s, b->cap);
	}
	memcpy(b->s + b->len, s, n);
	b->len += n;
	b->s[b->len] = '\0';
}

static void puts_(sbuf *b, const char *s)
{
	put(b, s, strlen(s));
}

static void put_default(sbuf *b, const weft_value *v)
{
	char num[64];
	switch (v->type) {
	case WEFT_NULL:
		puts_(b, "NULL");
		break;
	case WEFT_INTEGER:
		snprintf(num, sizeof(num), "%lld", (long long)v->i);
		puts_(b, num);
		break;
	case WEFT_REAL:
		snprintf(num, sizeof(num), "%.17g", v->r);
		/* Keep it a REAL when reparsed: 1 would read as INTEGER. */
		if (!strpbrk(num, ".e"))
			strcat(num, ".0");
		puts_(b, num);
		break;
	case WEFT_TEXT:
		put(b, "'", 1);
		for (size_t i = 0; i < v->n; i++) {
			char c = ((const char *)v->p)[i];
			put(b, &c, 1);
			if (c == '\'')
				put(b, "'", 1);
		}
		put(b, "'", 1);
		break;
	case WEFT_BLOB:
		puts_(b, "X'");
		for (size_t i = 0; i < v->n; i++) {
			snprintf(num, sizeof(num), "%02x", ((const unsigned char *)v->p)[i]);
			puts_(b, num);
		}
		put(b, "'", 1);
		break;
	}
}

static void print_schema(sbuf *b, const schema *s)
{
	for (int t = 0; t < s->ntables; t++) {
		const schema_table *tb = &s->tables[t];
		/* Names quoted: a column may be called "primary" or "unique". */
		puts_(b, "CREATE TABLE \"");
		puts_(b, tb->name);
		puts_(b, "\"(\n");
		for (int c = 0; c < tb->ncols; c++) {
			const schema_col *col = &tb->cols[c];
			puts_(b, "  \"");
			puts_(b, col->name);
			puts_(b, "\" ");
			puts_(b, schema_type_sql(col->type));
			if (col->pk)
				puts_(b, " PRIMARY KEY");
			if (col->unique)
				puts_(b, " UNIQUE");
			if (col->notnull)
				puts_(b, " NOT NULL");
			if (col->has_default) {
				puts_(b, " DEFAULT ");
				put_default(b, &col->def);
			}
			puts_(b, c + 1 < tb->ncols ? ",\n" : "\n");
		}
		puts_(b, ");\n");
	}
}

static int ci_equal(const char *a, const char *b)
{
	for (; *a && *b; a++, b++) {
		char x = *a >= 'A' && *a <= 'Z' ? (char)(*a + 32) : *a;
		char y = *b >= 'A' && *b <= 'Z' ? (char)(*b + 32) : *b;
		if (x != y)
			return 0;
	}
	return *a == *b;
}

static void check_well_formed(const schema *s)
{
	FUZZ_CHECK(s->ntables >= 1 && s->ntables <= SCHEMA_MAX_TABLES);
	for (int t = 0; t < s->ntables; t++) {
		const schema_table *tb = &s->tables[t];
		FUZZ_CHECK(schema_name_ok(tb->name, strlen(tb->name)));
		FUZZ_CHECK(ci_equal(tb->name, tb->lname));
		FUZZ_CHECK(schema_table_find(s, tb->lname) == tb);
		FUZZ_CHECK(tb->ncols >= 1 && tb->ncols <= SCHEMA_MAX_COLUMNS);
		FUZZ_CHECK(tb->pk >= 0 && tb->pk < tb->ncols);
		int pks = 0;
		for (int c = 0; c < tb->ncols; c++) {
			const schema_col *col = &tb->cols[c];
			FUZZ_CHECK(schema_name_ok(col->name, strlen(col->name)));
			FUZZ_CHECK(ci_equal(col->name, col->lname));
			FUZZ_CHECK(schema_col_find(tb, col->lname) == c);
			FUZZ_CHECK(col->type >= WEFT_INTEGER && col->type <= WEFT_BLOB);
			pks += col->pk;
			if (col->pk)
				FUZZ_CHECK(c == tb->pk && col->type != WEFT_REAL && !col->unique);
			FUZZ_CHECK(!(col->unique && col->notnull));
			if (col->unique && col->has_default)
				FUZZ_CHECK(col->def.type == WEFT_NULL);
			if (col->has_default && col->def.type == WEFT_REAL)
				FUZZ_CHECK(isfinite(col->def.r));
			if (col->has_default && col->notnull)
				FUZZ_CHECK(col->def.type != WEFT_NULL);
		}
		FUZZ_CHECK(pks == 1);
	}
}

static int value_same(const weft_value *a, const weft_value *b)
{
	if (a->type != b->type)
		return 0;
	switch (a->type) {
	case WEFT_INTEGER:
		return a->i == b->i;
	case WEFT_REAL:
		return memcmp(&a->r, &b->r, sizeof(double)) == 0;
	case WEFT_TEXT:
	case WEFT_BLOB:
		return a->n == b->n && (a->n == 0 || memcmp(a->p, b->p, a->n) == 0);
	default:
		return 1;
	}
}

static void check_same(const schema *a, const schema *b)
{
	FUZZ_CHECK(a->ntables == b->ntables);
	for (int t = 0; t < a->ntables; t++) {
		const schema_table *x = &a->tables[t], *y = &b->tables[t];
		FUZZ_CHECK(strcmp(x->name, y->name) == 0 && x->ncols == y->ncols && x->pk == y->pk);
		for (int c = 0; c < x->ncols; c++) {
			const schema_col *p = &x->cols[c], *q = &y->cols[c];
			FUZZ_CHECK(strcmp(p->name, q->name) == 0 && p->type == q->type && p->pk == q->pk);
			FUZZ_CHECK(p->unique == q->unique && p->notnull == q->notnull);
			FUZZ_CHECK(p->has_default == q->has_default);
			if (p->has_default)
				FUZZ_CHECK(value_same(&p->def, &q->def));
		}
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > SCHEMA_DDL_MAX + 16)
		return 0;
	/* The parser takes C text: an exact-size copy with its NUL. */
	char *ddl = malloc(size + 1);
	memcpy(ddl, data, size);
	ddl[size] = '\0';
	schema *s = NULL;
	weft_err err;
	int rc = schema_parse(&s, ddl, &err);
	FUZZ_CHECK((rc == WEFT_OK) == (s != NULL));
	if (rc < 0) {
		FUZZ_CHECK(rc == WEFT_EINVAL || rc == WEFT_ELIMIT);
		FUZZ_CHECK(err.msg[0] != '\0');
		free(ddl);
		return 0;
	}
	FUZZ_CHECK(strcmp(s->ddl, ddl) == 0);
	check_well_formed(s);

	sbuf text = {0};
	print_schema(&text, s);
	schema *again = NULL;
	rc = schema_parse(&again, text.s, &err);
	if (rc != WEFT_OK)
		fprintf(stderr, "canonical schema refused: %s\n%s", err.msg, text.s);
	FUZZ_CHECK(rc == WEFT_OK);
	check_same(s, again);
	sbuf text2 = {0};
	print_schema(&text2, again);
	FUZZ_CHECK(strcmp(text.s, text2.s) == 0);

	free(text.s);
	free(text2.s);
	schema_free(again);
	schema_free(s);
	free(ddl);
	return 0;
}
