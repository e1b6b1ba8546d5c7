#include "alloc.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* Atomic: the verifier threads (core/ingest.c) allocate too. */
static _Atomic unsigned long fail_at;
static _Atomic unsigned long counter;

static int should_fail(void)
{
	unsigned long c = atomic_fetch_add_explicit(&counter, 1, memory_order_relaxed) + 1;
	unsigned long at = atomic_load_explicit(&fail_at, memory_order_relaxed);
	return at != 0 && c >= at;
}

void alloc_fail_after(unsigned long n)
{
	atomic_store(&fail_at, n);
	atomic_store(&counter, 0);
}

unsigned long alloc_count(void)
{
	return atomic_load(&counter);
}

void *weft__malloc(size_t n)
{
	if (should_fail())
		return NULL;
	return malloc(n ? n : 1);
}

void *weft__calloc(size_t count, size_t size)
{
	if (should_fail())
		return NULL;
	return calloc(count ? count : 1, size ? size : 1);
}

void *weft__realloc(void *p, size_t n)
{
	if (should_fail())
		return NULL;
	return realloc(p, n ? n : 1);
}

void weft__free(void *p)
{
	free(p);
}

char *weft__strdup(const char *s)
{
	size_t n = strlen(s) + 1;
	char *d = weft__malloc(n);
	if (d)
		memcpy(d, s, n);
	return d;
}
