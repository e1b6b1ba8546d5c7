/*
 * Projections: derived tables kept from the log (docs/MERGE.md). Every
 * rule is a pure function of the set of events, so applying events one by
 * one (project_event) and re-deriving everything (weft_db_rebuild) give
 * identical tables.
 */
#ifndef WEFT_CORE_PROJECT_H
#define WEFT_CORE_PROJECT_H

#include <stdint.h>

#include "core/codec.h"
#include "core/store.h"

/* SQL creating projection bookkeeping, run with the store schema. */
extern const char project_schema_sql[];

/* Loads the current declared schema (on open). */
int project_load(weft_db *db);
/* Frees schema and cached statements (on close). */
void project_unload(weft_db *db);
/* Inside a write transaction: applies a just-stored event (row n). */
int project_event(weft_db *db, const struct weft_event *ev, int64_t n, int64_t scope_ref);
/* Inside a write transaction, before COMMIT: records the change feed. */
int project_finish(weft_db *db);

#endif
