/* A SQLite VFS that gathers the writes of a write-ahead log.
 *
 * SQLite appends each WAL frame with two writes (a 24-byte frame header,
 * then the page), so a commit that touches six b-trees makes twelve
 * pwrite() calls before its fsync, and a bulk ingest thousands. Each is a
 * system call (a VM exit on virtual machines); the bytes are the same
 * either way. This VFS wraps the default one: the database and its shared
 * memory go straight through, and only files opened as a WAL get a buffer
 * of WALBUF_SIZE bytes that holds contiguous writes.
 *
 * What makes holding writes safe:
 * - Other connections read only frames below the WAL index's mxFrame, and
 *   SQLite moves mxFrame only after writing a transaction's commit frame
 *   (and syncing it, with synchronous=FULL). A commit frame's header says
 *   so (its bytes 4..7, the database size after the commit, are non-zero),
 *   so the buffer is written out right after the commit frame's page, in
 *   that xWrite call, and a failure fails the commit like any write error.
 *   Anything SQLite writes after it and before the next transaction's
 *   first frame (the padding frames it adds without powersafe overwrite,
 *   split by a sync) goes straight to the file.
 * - Every other way the file can be observed (xRead, xSync, xFileSize,
 *   xTruncate, xFileControl, xClose) writes the buffer out first, so this
 *   connection's own reads of frames it spilled mid-transaction see them.
 * - A write that is not contiguous with the buffer writes it out first; a
 *   write over bytes still held replaces them in the buffer.
 * If the buffer cannot be allocated the file is written through. */
#include "core/walbuf.h"

#include <sqlite3.h>
#include <string.h>

#include "core/alloc.h"

#define WALBUF_VFS "weft-walbuf"
/* SQLite's unix VFS takes writes below 128 KiB only (it masks the length
 * to 17 bits and reports a short write as SQLITE_FULL). */
#define WALBUF_SIZE (64 * 1024)
#define WAL_FRAME_HEADER 24
/* The default VFS's file follows ours, aligned for any type it holds. */
#define WALBUF_FILE_SIZE ((sizeof(walbuf_file) + 15) & ~(size_t)15)

typedef struct {
	sqlite3_file base; /* pMethods = &walbuf_io */
	sqlite3_file *real; /* the default VFS's file, after this struct */
	unsigned char *buf; /* WALBUF_SIZE bytes once the first write comes */
	sqlite3_int64 off; /* file offset of buf[0] */
	int len; /* bytes held */
	int commit_page; /* the last write was a commit frame's header */
	int after_commit; /* from the commit frame's page to the next transaction */
} walbuf_file;

static sqlite3_vfs *real_vfs;
static sqlite3_vfs walbuf_vfs;

static int flush(walbuf_file *w)
{
	if (!w->len)
		return SQLITE_OK;
	int len = w->len;
	w->len = 0; /* on failure the transaction fails; the bytes are not needed */
	return w->real->pMethods->xWrite(w->real, w->buf, len, w->off);
}

static int wb_close(sqlite3_file *f)
{
	walbuf_file *w = (walbuf_file *)f;
	int rc = flush(w);
	int rc2 = w->real->pMethods->xClose(w->real);
	weft__free(w->buf);
	w->buf = NULL;
	return rc != SQLITE_OK ? rc : rc2;
}

static int wb_read(sqlite3_file *f, void *out, int amt, sqlite3_int64 off)
{
	walbuf_file *w = (walbuf_file *)f;
	int rc = flush(w);
	return rc != SQLITE_OK ? rc : w->real->pMethods->xRead(w->real, out, amt, off);
}

/* 1 for a frame header of a commit (the database size after the commit is
 * set), 0 for another frame header, -1 for anything else. */
static int frame_header(const unsigned char *p, int amt)
{
	if (amt != WAL_FRAME_HEADER)
		return -1;
	return (p[4] | p[5] | p[6] | p[7]) != 0;
}

static int wb_write(sqlite3_file *f, const void *data, int amt, sqlite3_int64 off)
{
	walbuf_file *w = (walbuf_file *)f;
	int commit_now = w->commit_page, header = frame_header(data, amt);
	w->commit_page = header == 1;
	/* After a commit frame SQLite may pad to a sector boundary with copies
	 * of it, syncing in the middle of one, and then publishes them all:
	 * write through until the next transaction's first frame. */
	if (w->after_commit && header == 0)
		w->after_commit = 0;
	if (!w->buf && amt < WALBUF_SIZE)
		w->buf = weft__malloc(WALBUF_SIZE);
	int rc;
	if (!w->buf || amt >= WALBUF_SIZE || w->after_commit) {
		if ((rc = flush(w)) != SQLITE_OK)
			return rc;
		return w->real->pMethods->xWrite(w->real, data, amt, off);
	}
	int inside = w->len && off >= w->off && off <= w->off + w->len && off + amt - w->off <= WALBUF_SIZE;
	if (!inside) {
		/* Elsewhere in the file, or no room left: write out what is held. */
		if ((rc = flush(w)) != SQLITE_OK)
			return rc;
		w->off = off;
	}
	int at = (int)(off - w->off);
	memcpy(w->buf + at, data, (size_t)amt);
	if (at + amt > w->len)
		w->len = at + amt;
	/* The commit frame is complete: readers may look once the WAL index
	 * says so, and that comes after this call. */
	if (!commit_now)
		return SQLITE_OK;
	w->after_commit = 1;
	return flush(w);
}

static int wb_truncate(sqlite3_file *f, sqlite3_int64 size)
{
	walbuf_file *w = (walbuf_file *)f;
	int rc = flush(w);
	return rc != SQLITE_OK ? rc : w->real->pMethods->xTruncate(w->real, size);
}

static int wb_sync(sqlite3_file *f, int flags)
{
	walbuf_file *w = (walbuf_file *)f;
	int rc = flush(w);
	return rc != SQLITE_OK ? rc : w->real->pMethods->xSync(w->real, flags);
}

static int wb_file_size(sqlite3_file *f, sqlite3_int64 *size)
{
	walbuf_file *w = (walbuf_file *)f;
	int rc = flush(w);
	return rc != SQLITE_OK ? rc : w->real->pMethods->xFileSize(w->real, size);
}

static int wb_lock(sqlite3_file *f, int level)
{
	walbuf_file *w = (walbuf_file *)f;
	return w->real->pMethods->xLock(w->real, level);
}

static int wb_unlock(sqlite3_file *f, int level)
{
	walbuf_file *w = (walbuf_file *)f;
	return w->real->pMethods->xUnlock(w->real, level);
}

static int wb_check_reserved(sqlite3_file *f, int *out)
{
	walbuf_file *w = (walbuf_file *)f;
	return w->real->pMethods->xCheckReservedLock(w->real, out);
}

static int wb_file_control(sqlite3_file *f, int op, void *arg)
{
	walbuf_file *w = (walbuf_file *)f;
	int rc = flush(w);
	return rc != SQLITE_OK ? rc : w->real->pMethods->xFileControl(w->real, op, arg);
}

static int wb_sector_size(sqlite3_file *f)
{
	walbuf_file *w = (walbuf_file *)f;
	return w->real->pMethods->xSectorSize(w->real);
}

static int wb_device_characteristics(sqlite3_file *f)
{
	walbuf_file *w = (walbuf_file *)f;
	return w->real->pMethods->xDeviceCharacteristics(w->real);
}

/* Version 1: SQLite maps shared memory and pages through the database
 * file's handle, never the WAL's. */
static const sqlite3_io_methods walbuf_io = {
	1, wb_close, wb_read, wb_write, wb_truncate, wb_sync, wb_file_size, wb_lock, wb_unlock,
	wb_check_reserved, wb_file_control, wb_sector_size, wb_device_characteristics,
	NULL, NULL, NULL, NULL, NULL, NULL,
};

static int wb_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *f, int flags, int *out_flags)
{
	(void)vfs;
	if (!(flags & SQLITE_OPEN_WAL))
		return real_vfs->xOpen(real_vfs, name, f, flags, out_flags); /* the default VFS's own file */
	walbuf_file *w = (walbuf_file *)f;
	memset(w, 0, sizeof(*w));
	w->real = (sqlite3_file *)((char *)w + WALBUF_FILE_SIZE);
	int rc = real_vfs->xOpen(real_vfs, name, w->real, flags, out_flags);
	if (rc != SQLITE_OK) {
		if (w->real->pMethods)
			w->real->pMethods->xClose(w->real);
		return rc;
	}
	w->base.pMethods = &walbuf_io;
	return SQLITE_OK;
}

const char *walbuf_vfs_name(void)
{
	sqlite3_mutex *m = sqlite3_mutex_alloc(SQLITE_MUTEX_STATIC_APP1);
	sqlite3_mutex_enter(m);
	if (!real_vfs) {
		sqlite3_vfs *def = sqlite3_vfs_find(NULL);
		if (def && def->iVersion >= 1) {
			/* Everything but opening a file is the default VFS's own. */
			walbuf_vfs = *def;
			walbuf_vfs.pNext = NULL;
			walbuf_vfs.zName = WALBUF_VFS;
			walbuf_vfs.szOsFile = (int)WALBUF_FILE_SIZE + def->szOsFile;
			walbuf_vfs.xOpen = wb_open;
			real_vfs = def;
			if (sqlite3_vfs_register(&walbuf_vfs, 0) != SQLITE_OK)
				real_vfs = NULL;
		}
	}
	const char *name = real_vfs ? WALBUF_VFS : NULL;
	sqlite3_mutex_leave(m);
	return name;
}
