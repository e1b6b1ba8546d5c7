/*
 * weft_test_gen STORE COUNT [SCOPE [PAYLOAD_BYTES]]: appends COUNT signed
 * events to an existing store in one process (a `weft append` loop costs a
 * process per event). The integration tests use it to make syncs big enough
 * to interrupt.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "weft.h"

int main(int argc, char **argv)
{
	if (argc < 3 || argc > 5) {
		fprintf(stderr, "usage: weft_test_gen STORE COUNT [SCOPE [PAYLOAD_BYTES]]\n");
		return 2;
	}
	long n = strtol(argv[2], NULL, 10);
	const char *scope = argc > 3 ? argv[3] : "bulk";
	long size = argc > 4 ? strtol(argv[4], NULL, 10) : 64;
	if (n < 0 || size < 16 || size > 65536) {
		fprintf(stderr, "weft_test_gen: bad COUNT or PAYLOAD_BYTES\n");
		return 2;
	}
	weft_db *db;
	if (weft_db_open(&db, argv[1], NULL) < 0) {
		fprintf(stderr, "weft_test_gen: %s\n", weft_error_last());
		return 1;
	}
	char *payload = malloc((size_t)size);
	if (!payload)
		return 1;
	for (long i = 0; i < n; i++) {
		memset(payload, 'a' + (int)(i % 26), (size_t)size);
		int k = snprintf(payload, (size_t)size, "event %ld of %s", i, scope);
		payload[k] = ' ';
		weft_id id;
		if (weft_db_append(&id, db, scope, "bulk", NULL, payload, (size_t)size) < 0) {
			fprintf(stderr, "weft_test_gen: %s\n", weft_errmsg(db));
			weft_db_close(db);
			free(payload);
			return 1;
		}
	}
	free(payload);
	weft_db_close(db);
	return 0;
}
