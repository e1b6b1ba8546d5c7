/* The POSIX port of platform/platform.h. */
#include "platform/platform.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "core/alloc.h"
#include "weft.h"

static int os_error(char err[PLAT_ERR_LEN], int e, const char *what, const char *path)
{
	if (err)
		snprintf(err, PLAT_ERR_LEN, "%s %.400s: %s", what, path, strerror(e));
	switch (e) {
	case ENOENT:
		return WEFT_ENOTFOUND;
	case EEXIST:
		return WEFT_EEXISTS;
	case EACCES:
	case EPERM:
	case EROFS:
		return WEFT_EPERM;
	case ENOMEM:
		return WEFT_ENOMEM;
	default:
		return WEFT_EIO;
	}
}

uint64_t plat_wall_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

uint64_t plat_mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

void plat_random(void *buf, size_t len)
{
	randombytes_buf(buf, len);
}

int plat_file_exists(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0;
}

int plat_file_mode(unsigned *mode, const char *path, char err[PLAT_ERR_LEN])
{
	struct stat st;
	if (stat(path, &st) != 0)
		return os_error(err, errno, "cannot inspect", path);
	*mode = (unsigned)(st.st_mode & 07777);
	return 0;
}

int plat_fsync_dir_of(const char *path, char err[PLAT_ERR_LEN])
{
	char dir[PATH_MAX];
	const char *slash = strrchr(path, '/');
	if (!slash) {
		strcpy(dir, ".");
	} else if (slash == path) {
		strcpy(dir, "/");
	} else {
		size_t n = (size_t)(slash - path);
		if (n >= sizeof(dir))
			return os_error(err, ENAMETOOLONG, "cannot sync directory of", path);
		memcpy(dir, path, n);
		dir[n] = '\0';
	}
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return os_error(err, errno, "cannot open directory", dir);
	int rc = fsync(fd);
	int e = errno;
	close(fd);
	if (rc != 0 && e != EINVAL) /* some filesystems cannot sync directories */
		return os_error(err, e, "cannot sync directory", dir);
	return 0;
}

int plat_create_private(const char *path, char err[PLAT_ERR_LEN])
{
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0)
		return os_error(err, errno, "cannot create", path);
	close(fd);
	return 0;
}

static int write_all(int fd, const unsigned char *p, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, p, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

int plat_write_file_atomic(const char *path, const void *data, size_t len,
                           int exclusive, char err[PLAT_ERR_LEN])
{
	char tmp[PATH_MAX];
	if (snprintf(tmp, sizeof(tmp), "%s.tmp-XXXXXX", path) >= (int)sizeof(tmp))
		return os_error(err, ENAMETOOLONG, "cannot write", path);
	if (exclusive && plat_file_exists(path))
		return os_error(err, EEXIST, "refusing to overwrite", path);
	int fd = mkstemp(tmp); /* mkstemp creates the file with mode 0600 */
	if (fd < 0)
		return os_error(err, errno, "cannot create a file beside", path);
	int rc = 0;
	if (fchmod(fd, 0600) != 0 || write_all(fd, data, len) != 0 || fsync(fd) != 0)
		rc = os_error(err, errno, "cannot write", tmp);
	if (close(fd) != 0 && rc == 0)
		rc = os_error(err, errno, "cannot close", tmp);
	if (rc == 0) {
		if (exclusive) {
			/* link() fails if path appeared meanwhile: no overwrite race */
			if (link(tmp, path) != 0)
				rc = os_error(err, errno, "cannot create", path);
			unlink(tmp);
		} else if (rename(tmp, path) != 0) {
			rc = os_error(err, errno, "cannot rename into", path);
		}
	}
	if (rc != 0) {
		unlink(tmp);
		return rc;
	}
	return plat_fsync_dir_of(path, err);
}

int plat_read_file(void **out, size_t *len, const char *path, size_t max,
                   char err[PLAT_ERR_LEN])
{
	*out = NULL;
	*len = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return os_error(err, errno, "cannot open", path);
	struct stat st;
	if (fstat(fd, &st) != 0) {
		int rc = os_error(err, errno, "cannot inspect", path);
		close(fd);
		return rc;
	}
	if (st.st_size < 0 || (uint64_t)st.st_size > max) {
		if (err)
			snprintf(err, PLAT_ERR_LEN, "%.400s is %lld bytes, more than the %zu allowed",
			         path, (long long)st.st_size, max);
		close(fd);
		return WEFT_ELIMIT;
	}
	size_t size = (size_t)st.st_size;
	unsigned char *buf = weft__malloc(size + 1);
	if (!buf) {
		close(fd);
		if (err)
			snprintf(err, PLAT_ERR_LEN, "out of memory reading %.400s", path);
		return WEFT_ENOMEM;
	}
	size_t got = 0;
	while (got < size) {
		ssize_t n = read(fd, buf + got, size - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			int rc = n < 0 ? os_error(err, errno, "cannot read", path)
			               : os_error(err, EIO, "file shrank while reading", path);
			weft__free(buf);
			close(fd);
			return rc;
		}
		got += (size_t)n;
	}
	close(fd);
	buf[size] = 0;
	*out = buf;
	*len = size;
	return 0;
}
