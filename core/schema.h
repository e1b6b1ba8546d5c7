/*
 * The declared schema: a checked subset of SQL DDL, parsed into tables and
 * columns. weft generates the SQL of derived tables from this structure,
 * never from the app's text.
 */
#ifndef WEFT_CORE_SCHEMA_H
#define WEFT_CORE_SCHEMA_H

#include "core/error.h"
#include "weft.h"

#define SCHEMA_NAME_MAX 64
#define SCHEMA_MAX_TABLES 256
#define SCHEMA_MAX_COLUMNS 256
#define SCHEMA_DDL_MAX (1u << 20)

typedef struct schema_col {
	char name[SCHEMA_NAME_MAX + 1];  /* as declared */
	char lname[SCHEMA_NAME_MAX + 1]; /* lowercase: how ops name it */
	weft_type type;
	int pk, unique, notnull, has_default;
	weft_value def; /* text/blob bytes owned by the schema */
} schema_col;

typedef struct schema_table {
	char name[SCHEMA_NAME_MAX + 1];
	char lname[SCHEMA_NAME_MAX + 1];
	int ncols;
	int pk; /* index of the primary key column */
	schema_col *cols;
} schema_table;

typedef struct schema {
	int ntables;
	schema_table *tables;
	char *ddl; /* the app's text, as given */
} schema;

/* Parses ddl. WEFT_EINVAL with "line N near 'word': ..." on anything
 * outside the subset, WEFT_ELIMIT when too large. */
int schema_parse(schema **out, const char *ddl, weft_err *err);
void schema_free(schema *s);
/* Lookups by lowercase name; NULL / -1 when absent. */
const schema_table *schema_table_find(const schema *s, const char *lname);
int schema_col_find(const schema_table *t, const char *lname);
/* 1 if name is a valid identifier for a table or column (bare SQL
 * identifier, 1..64 bytes, not reserved). */
int schema_name_ok(const char *name, size_t len);
/* SQL type keyword of a weft_type ("INTEGER"...). */
const char *schema_type_sql(weft_type t);

#endif
