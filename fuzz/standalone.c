/*
 * Replays files through a fuzz target without libFuzzer, so that any
 * compiler (gcc, with or without sanitizers) runs every corpus as an
 * ordinary test. Arguments are files or directories (all regular files in
 * them, in name order). Exits non-zero if a directory is empty or a file
 * cannot be read; a property violation aborts inside the target.
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz/fuzz_common.h"

static int run_file(const char *path)
{
	size_t len;
	unsigned char *data = fuzz_read_file(path, &len);
	if (!data) {
		fprintf(stderr, "standalone: cannot read %s\n", path);
		return -1;
	}
	/* An exact-size copy, so ASan sees reads past the end of the input. */
	unsigned char *copy = malloc(len ? len : 1);
	memcpy(copy, data, len);
	free(data);
	LLVMFuzzerTestOneInput(copy, len);
	free(copy);
	return 0;
}

static int by_name(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static int run_dir(const char *dir, size_t *count)
{
	DIR *d = opendir(dir);
	if (!d) {
		fprintf(stderr, "standalone: cannot open %s\n", dir);
		return -1;
	}
	char **names = NULL;
	size_t n = 0, cap = 0;
	struct dirent *e;
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 64;
			names = realloc(names, cap * sizeof(*names));
		}
		names[n++] = strdup(e->d_name);
	}
	closedir(d);
	qsort(names, n, sizeof(*names), by_name);
	int rc = 0;
	for (size_t i = 0; i < n; i++) {
		char path[4096];
		struct stat st;
		snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
		if (stat(path, &st) == 0 && S_ISREG(st.st_mode)) {
			if (run_file(path) < 0)
				rc = -1;
			(*count)++;
		}
		free(names[i]);
	}
	free(names);
	return rc;
}

int main(int argc, char **argv)
{
	LLVMFuzzerInitialize(&argc, &argv);
	size_t count = 0;
	int rc = 0;
	for (int i = 1; i < argc; i++) {
		struct stat st;
		if (stat(argv[i], &st) != 0) {
			fprintf(stderr, "standalone: no such file or directory: %s\n", argv[i]);
			rc = -1;
		} else if (S_ISDIR(st.st_mode)) {
			size_t before = count;
			if (run_dir(argv[i], &count) < 0)
				rc = -1;
			if (count == before) {
				fprintf(stderr, "standalone: %s holds no inputs\n", argv[i]);
				rc = -1;
			}
		} else {
			if (run_file(argv[i]) < 0)
				rc = -1;
			count++;
		}
	}
	printf("%s: replayed %zu inputs%s\n", argv[0], count, rc ? " (with errors)" : "");
	return rc ? 1 : 0;
}
