/*
 * The items of a store (some scopes, or all) as Negentropy storage, read
 * from the reconciliation buckets (core/buckets.h) instead of listing every
 * event: cells are merged into segments of about NEG_VIEW_SEGMENT items;
 * fingerprints of whole segments come from the bucket sums, and a
 * segment's items are read from the store only when a range bound or a
 * split falls inside it. Segment starts are offered as split boundaries,
 * so two weft peers mostly compare whole segments.
 */
#ifndef WEFT_SYNC_NEG_VIEW_H
#define WEFT_SYNC_NEG_VIEW_H

#include "sync/negentropy.h"
#include "weft.h"

#define NEG_VIEW_SEGMENT 1024

typedef struct neg_view neg_view;

/* scopes NULL: every scope. The names are copied. WEFT_ENOMEM. */
int neg_view_new(neg_view **out, weft_db *db, const char *const *scopes, size_t n);
void neg_view_free(neg_view *v);

/*
 * Re-reads the bucket summaries and forgets loaded items. Call inside a
 * read transaction that lasts until the reconciler call using the view
 * returns. Errors are the store's (weft_errmsg(db)).
 */
int neg_view_refresh(neg_view *v);
/* Storage callbacks over the view; a failing callback leaves the store's
 * error on the db (WEFT_ECORRUPT if a bucket disagrees with the events). */
void neg_view_storage(neg_view *v, neg_storage *st);
/* Segments close once they hold at least n items (default
 * NEG_VIEW_SEGMENT; tests use small ones). Takes effect at the next refresh. */
void neg_view_set_segment_items(neg_view *v, size_t n);
/* Items as of the last refresh. */
size_t neg_view_size(const neg_view *v);
/* Heap bytes held (summaries and loaded items). */
size_t neg_view_memory_usage(const neg_view *v);

#endif
