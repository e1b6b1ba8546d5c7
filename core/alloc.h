/* One allocation hook for all of weft, so tests can fail the Nth allocation. */
#ifndef WEFT_CORE_ALLOC_H
#define WEFT_CORE_ALLOC_H

#include <stddef.h>

void *weft__malloc(size_t n);
void *weft__calloc(size_t count, size_t size);
void *weft__realloc(void *p, size_t n);
void weft__free(void *p);
char *weft__strdup(const char *s);

/* Test hook: the Nth allocation from now (1 = the next) and all after it
 * fail until reset with 0. Not thread-safe; tests only. */
void alloc_fail_after(unsigned long n);
/* Allocations attempted since the last alloc_fail_after(). */
unsigned long alloc_count(void);

#endif
