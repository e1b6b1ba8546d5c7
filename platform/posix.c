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

void plat_sleep_us(unsigned us)
{
	struct timespec ts = {(time_t)(us / 1000000u), (long)(us % 1000000u) * 1000};
	nanosleep(&ts, NULL);
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

/* ---------------------------------------------------------------- sockets */

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <sys/socket.h>
#include <arpa/inet.h>

static void sock_options(int fd)
{
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
#ifdef SO_NOSIGPIPE
	setsockopt(fd, SOL_SOCKET, SO_NOSIGPIPE, &one, sizeof(one));
#endif
}

static void addr_text(const struct sockaddr *sa, char out[80])
{
	char host[64] = "?";
	unsigned port = 0;
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
		inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
		port = ntohs(in->sin_port);
		snprintf(out, 80, "%s:%u", host, port);
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
		inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
		port = ntohs(in6->sin6_port);
		snprintf(out, 80, "[%s]:%u", host, port);
	} else {
		snprintf(out, 80, "?");
	}
}

int plat_split_addr(const char *addr, char host[256], char port[16])
{
	const char *colon;
	if (addr[0] == '[') {
		const char *end = strchr(addr, ']');
		if (!end || end[1] != ':' || (size_t)(end - addr - 1) >= 256)
			return WEFT_EINVAL;
		memcpy(host, addr + 1, (size_t)(end - addr - 1));
		host[end - addr - 1] = '\0';
		colon = end + 1;
	} else {
		colon = strrchr(addr, ':');
		if (!colon || (size_t)(colon - addr) >= 256)
			return WEFT_EINVAL;
		memcpy(host, addr, (size_t)(colon - addr));
		host[colon - addr] = '\0';
	}
	if (strlen(colon + 1) == 0 || strlen(colon + 1) >= 16 || strspn(colon + 1, "0123456789") != strlen(colon + 1))
		return WEFT_EINVAL;
	strcpy(port, colon + 1);
	return 0;
}

int plat_tcp_listen(int *fd, const char *host, const char *port, char bound[80], char err[PLAT_ERR_LEN])
{
	struct addrinfo hints, *res = NULL;
	memset(&hints, 0, sizeof(hints));
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE;
	int g = getaddrinfo(host && *host ? host : NULL, port, &hints, &res);
	if (g != 0) {
		snprintf(err, PLAT_ERR_LEN, "cannot resolve %.200s: %s", host, gai_strerror(g));
		return WEFT_ENOTFOUND;
	}
	int rc = WEFT_EIO, e = 0;
	for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
		int s = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
		if (s < 0) {
			e = errno;
			continue;
		}
		int one = 1;
		setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(s, ai->ai_addr, ai->ai_addrlen) == 0 && listen(s, 64) == 0) {
			struct sockaddr_storage ss;
			socklen_t sl = sizeof(ss);
			getsockname(s, (struct sockaddr *)&ss, &sl);
			addr_text((struct sockaddr *)&ss, bound);
			*fd = s;
			rc = 0;
			break;
		}
		e = errno;
		close(s);
	}
	freeaddrinfo(res);
	if (rc)
		snprintf(err, PLAT_ERR_LEN, "cannot listen on %.200s:%s: %s", host, port, strerror(e));
	return rc;
}

static int wait_fd(int fd, short events, uint64_t timeout_ms)
{
	struct pollfd p = {fd, events, 0};
	uint64_t end = plat_mono_ms() + timeout_ms;
	for (;;) {
		uint64_t now = plat_mono_ms();
		int left = now >= end ? 0 : (int)(end - now > 1000000 ? 1000000 : end - now);
		int n = poll(&p, 1, left);
		if (n > 0)
			return 0;
		if (n == 0)
			return WEFT_ETIMEOUT;
		if (errno != EINTR)
			return WEFT_EIO;
	}
}

int plat_tcp_accept(int *cfd, int lfd, uint64_t timeout_ms, char peer[80], char err[PLAT_ERR_LEN])
{
	int rc = wait_fd(lfd, POLLIN, timeout_ms);
	if (rc)
		return rc;
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	int s = accept(lfd, (struct sockaddr *)&ss, &sl);
	if (s < 0) {
		snprintf(err, PLAT_ERR_LEN, "accept failed: %s", strerror(errno));
		return errno == EINTR || errno == EAGAIN || errno == ECONNABORTED ? WEFT_ETIMEOUT : WEFT_EIO;
	}
	fcntl(s, F_SETFD, FD_CLOEXEC);
	sock_options(s);
	addr_text((struct sockaddr *)&ss, peer);
	*cfd = s;
	return 0;
}

int plat_tcp_connect(int *fd, const char *host, const char *port, uint64_t timeout_ms, char err[PLAT_ERR_LEN])
{
	struct addrinfo hints, *res = NULL;
	memset(&hints, 0, sizeof(hints));
	hints.ai_socktype = SOCK_STREAM;
	int g = getaddrinfo(host, port, &hints, &res);
	if (g != 0) {
		snprintf(err, PLAT_ERR_LEN, "cannot resolve %.200s: %s", host, gai_strerror(g));
		return WEFT_ENOTFOUND;
	}
	int rc = WEFT_EIO, e = ECONNREFUSED;
	for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
		int s = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
		if (s < 0) {
			e = errno;
			continue;
		}
		int flags = fcntl(s, F_GETFL);
		fcntl(s, F_SETFL, flags | O_NONBLOCK);
		int c = connect(s, ai->ai_addr, ai->ai_addrlen);
		if (c != 0 && errno == EINPROGRESS) {
			int w = wait_fd(s, POLLOUT, timeout_ms);
			socklen_t sl = sizeof(e);
			if (w == 0 && getsockopt(s, SOL_SOCKET, SO_ERROR, &e, &sl) == 0 && e == 0)
				c = 0;
			else if (w == WEFT_ETIMEOUT)
				e = ETIMEDOUT;
		} else if (c != 0) {
			e = errno;
		}
		if (c == 0) {
			fcntl(s, F_SETFL, flags);
			sock_options(s);
			*fd = s;
			rc = 0;
			break;
		}
		close(s);
	}
	freeaddrinfo(res);
	if (rc) {
		snprintf(err, PLAT_ERR_LEN, "cannot connect to %.200s port %s: %s", host, port, strerror(e));
		if (e == ETIMEDOUT)
			rc = WEFT_ETIMEOUT;
	}
	return rc;
}

int plat_sock_send(int fd, const void *buf, size_t len, uint64_t timeout_ms, char err[PLAT_ERR_LEN])
{
	const unsigned char *p = buf;
	while (len) {
		int rc = wait_fd(fd, POLLOUT, timeout_ms);
		if (rc) {
			snprintf(err, PLAT_ERR_LEN, "the peer stopped reading for %llu ms", (unsigned long long)timeout_ms);
			return rc;
		}
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			snprintf(err, PLAT_ERR_LEN, "send failed: %s", strerror(errno));
			return WEFT_EIO;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

int plat_sock_recv(int fd, void *buf, size_t cap, size_t *got, uint64_t timeout_ms, char err[PLAT_ERR_LEN])
{
	*got = 0;
	for (;;) {
		int rc = wait_fd(fd, POLLIN, timeout_ms);
		if (rc) {
			snprintf(err, PLAT_ERR_LEN, "the peer sent nothing for %llu ms", (unsigned long long)timeout_ms);
			return rc;
		}
		ssize_t n = recv(fd, buf, cap, 0);
		if (n < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			snprintf(err, PLAT_ERR_LEN, "receive failed: %s", strerror(errno));
			return WEFT_EIO;
		}
		*got = (size_t)n;
		return 0;
	}
}

void plat_sock_close(int fd)
{
	if (fd >= 0)
		close(fd);
}

/* ---------------------------------------------------------------- threads */

struct plat_thread {
	pthread_t t;
};

int plat_thread_start(plat_thread **t, void *(*fn)(void *), void *arg)
{
	*t = weft__malloc(sizeof(**t));
	if (!*t)
		return WEFT_ENOMEM;
	if (pthread_create(&(*t)->t, NULL, fn, arg) != 0) {
		weft__free(*t);
		*t = NULL;
		return WEFT_EIO;
	}
	return 0;
}

void plat_thread_join(plat_thread *t)
{
	if (!t)
		return;
	pthread_join(t->t, NULL);
	weft__free(t);
}

struct plat_mutex {
	pthread_mutex_t m;
};

int plat_mutex_new(plat_mutex **m)
{
	*m = weft__malloc(sizeof(**m));
	if (!*m)
		return WEFT_ENOMEM;
	pthread_mutex_init(&(*m)->m, NULL);
	return 0;
}

void plat_mutex_lock(plat_mutex *m)
{
	pthread_mutex_lock(&m->m);
}

void plat_mutex_unlock(plat_mutex *m)
{
	pthread_mutex_unlock(&m->m);
}

void plat_mutex_free(plat_mutex *m)
{
	if (!m)
		return;
	pthread_mutex_destroy(&m->m);
	weft__free(m);
}

struct plat_cond {
	pthread_cond_t c;
};

int plat_cond_new(plat_cond **c)
{
	*c = weft__malloc(sizeof(**c));
	if (!*c)
		return WEFT_ENOMEM;
	if (pthread_cond_init(&(*c)->c, NULL) != 0) {
		weft__free(*c);
		*c = NULL;
		return WEFT_ENOMEM;
	}
	return 0;
}

void plat_cond_wait(plat_cond *c, plat_mutex *m)
{
	pthread_cond_wait(&c->c, &m->m);
}

void plat_cond_signal(plat_cond *c)
{
	pthread_cond_signal(&c->c);
}

void plat_cond_broadcast(plat_cond *c)
{
	pthread_cond_broadcast(&c->c);
}

void plat_cond_free(plat_cond *c)
{
	if (!c)
		return;
	pthread_cond_destroy(&c->c);
	weft__free(c);
}

int plat_cpu_count(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);
	return n < 1 ? 1 : n > 64 ? 64 : (int)n;
}
