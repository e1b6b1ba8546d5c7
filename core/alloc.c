#include "alloc.h"

#include <stdlib.h>
#include <string.h>

static unsigned long fail_at;
static unsigned long counter;

static int should_fail(void)
{
	counter++;
	return fail_at != 0 && counter >= fail_at;
}

void alloc_fail_after(unsigned long n)
{
	fail_at = n;
	counter = 0;
}

unsigned long alloc_count(void)
{
	return counter;
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
