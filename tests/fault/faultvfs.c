#include "faultvfs.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static sqlite3_vfs *real_vfs;
static sqlite3_vfs fault_vfs;
static char target[1024];

/* I/O faults. */
static unsigned arm_classes;
static unsigned long arm_nth, arm_seen, arm_failures;
static int arm_code, arm_persistent;
static unsigned long counts[4];

/* Power loss. */
static int buffering;
static unsigned long crash_at, syncs;
static unsigned torn;
static int crashed;

typedef struct rec {
	sqlite3_int64 off;
	int len;
	unsigned char *data;
} rec;

typedef struct fv_file {
	sqlite3_file base;
	const char *name; /* valid until xClose (SQLite's promise) */
	int targeted;     /* matched the target prefix when last checked */
	rec *recs; /* unsynced writes, in order */
	size_t nrecs, caprecs;
	struct fv_file *next; /* open target files */
	sqlite3_file *real;   /* follows this struct */
} fv_file;

static fv_file *open_files;

static int on_target(const char *name)
{
	return name && target[0] && strncmp(name, target, strlen(target)) == 0;
}

/* Targets may change while files are open: look again at every call. */
#define REFRESH(f) ((f)->targeted = on_target((f)->name))

static int class_index(unsigned cls)
{
	return cls == FV_READ ? 0 : cls == FV_WRITE ? 1 : cls == FV_SYNC ? 2 : 3;
}

/* The error the armed fault gives op (of class cls), or 0. */
static int fault(fv_file *f, unsigned cls, int ioerr)
{
	if (!f->targeted)
		return 0;
	counts[class_index(cls)]++;
	if (!arm_nth || !(arm_classes & cls))
		return 0;
	arm_seen++;
	if (arm_seen == arm_nth || (arm_persistent && arm_seen > arm_nth)) {
		arm_failures++;
		return arm_code == SQLITE_FULL && cls == FV_WRITE ? SQLITE_FULL : ioerr;
	}
	return 0;
}

static void recs_free(fv_file *f)
{
	for (size_t i = 0; i < f->nrecs; i++)
		free(f->recs[i].data);
	free(f->recs);
	f->recs = NULL;
	f->nrecs = f->caprecs = 0;
}

static int flush_recs(fv_file *f, int subset, unsigned *rng)
{
	int rc = SQLITE_OK;
	for (size_t i = 0; i < f->nrecs && rc == SQLITE_OK; i++) {
		if (subset) {
			*rng = *rng * 1103515245u + 12345u;
			if ((*rng >> 16) & 1)
				continue;
		}
		rc = f->real->pMethods->xWrite(f->real, f->recs[i].data, f->recs[i].len, f->recs[i].off);
	}
	recs_free(f);
	return rc;
}

static void power_loss(void)
{
	unsigned rng = torn;
	for (fv_file *f = open_files; f; f = f->next) {
		if (!REFRESH(f))
			continue;
		if (torn)
			flush_recs(f, 1, &rng);
		else
			recs_free(f);
	}
	crashed = 1;
}

static sqlite3_int64 recs_end(const fv_file *f)
{
	sqlite3_int64 end = 0;
	for (size_t i = 0; i < f->nrecs; i++)
		if (f->recs[i].off + f->recs[i].len > end)
			end = f->recs[i].off + f->recs[i].len;
	return end;
}

/* ------------------------------------------------------------- io methods */

static int fv_close(sqlite3_file *pf)
{
	fv_file *f = (fv_file *)pf;
	REFRESH(f);
	/* Closing does not lose data unless the power went: the unsynced
	 * writes stay in the page cache. */
	if (!crashed || !f->targeted)
		flush_recs(f, 0, NULL);
	recs_free(f);
	for (fv_file **p = &open_files; *p; p = &(*p)->next)
		if (*p == f) {
			*p = f->next;
			break;
		}
	return f->real->pMethods->xClose(f->real);
}

static int fv_read(sqlite3_file *pf, void *buf, int amt, sqlite3_int64 off)
{
	fv_file *f = (fv_file *)pf;
	REFRESH(f);
	int rc = fault(f, FV_READ, SQLITE_IOERR_READ);
	if (rc)
		return rc;
	if (f->targeted && crashed)
		return SQLITE_IOERR_READ;
	if (!f->nrecs)
		return f->real->pMethods->xRead(f->real, buf, amt, off);
	memset(buf, 0, (size_t)amt);
	rc = f->real->pMethods->xRead(f->real, buf, amt, off);
	if (rc != SQLITE_OK && rc != SQLITE_IOERR_SHORT_READ)
		return rc;
	sqlite3_int64 size = 0;
	int src = f->real->pMethods->xFileSize(f->real, &size);
	if (src != SQLITE_OK)
		return src;
	for (size_t i = 0; i < f->nrecs; i++) {
		const rec *r = &f->recs[i];
		sqlite3_int64 lo = r->off > off ? r->off : off;
		sqlite3_int64 hi = r->off + r->len < off + amt ? r->off + r->len : off + amt;
		if (lo < hi)
			memcpy((unsigned char *)buf + (lo - off), r->data + (lo - r->off), (size_t)(hi - lo));
		if (r->off + r->len > size)
			size = r->off + r->len;
	}
	return off + amt > size ? SQLITE_IOERR_SHORT_READ : SQLITE_OK;
}

static int fv_write(sqlite3_file *pf, const void *buf, int amt, sqlite3_int64 off)
{
	fv_file *f = (fv_file *)pf;
	REFRESH(f);
	int rc = fault(f, FV_WRITE, SQLITE_IOERR_WRITE);
	if (rc)
		return rc;
	if (f->targeted && crashed)
		return SQLITE_IOERR_WRITE;
	if (!f->targeted || !buffering)
		return f->real->pMethods->xWrite(f->real, buf, amt, off);
	if (f->nrecs == f->caprecs) {
		f->caprecs = f->caprecs ? f->caprecs * 2 : 16;
		f->recs = realloc(f->recs, f->caprecs * sizeof(rec));
	}
	rec *r = &f->recs[f->nrecs++];
	r->off = off;
	r->len = amt;
	r->data = malloc((size_t)amt);
	memcpy(r->data, buf, (size_t)amt);
	return SQLITE_OK;
}

static int fv_truncate(sqlite3_file *pf, sqlite3_int64 size)
{
	fv_file *f = (fv_file *)pf;
	REFRESH(f);
	int rc = fault(f, FV_WRITE, SQLITE_IOERR_TRUNCATE);
	if (rc)
		return rc;
	if (f->targeted && crashed)
		return SQLITE_IOERR_TRUNCATE;
	/* Applied at once (one of the outcomes a crash allows); pending
	 * writes past the new end are cut. */
	for (size_t i = 0; i < f->nrecs; i++) {
		rec *r = &f->recs[i];
		if (r->off >= size)
			r->len = 0;
		else if (r->off + r->len > size)
			r->len = (int)(size - r->off);
	}
	return f->real->pMethods->xTruncate(f->real, size);
}

static int fv_sync(sqlite3_file *pf, int flags)
{
	fv_file *f = (fv_file *)pf;
	REFRESH(f);
	int rc = fault(f, FV_SYNC, SQLITE_IOERR_FSYNC);
	if (rc)
		return rc;
	if (f->targeted && crashed)
		return SQLITE_IOERR_FSYNC;
	if (f->targeted && buffering) {
		syncs++;
		if (crash_at && syncs == crash_at) {
			power_loss();
			return SQLITE_IOERR_FSYNC;
		}
		if ((rc = flush_recs(f, 0, NULL)) != SQLITE_OK)
			return rc;
	}
	return f->real->pMethods->xSync(f->real, flags);
}

static int fv_file_size(sqlite3_file *pf, sqlite3_int64 *size)
{
	fv_file *f = (fv_file *)pf;
	REFRESH(f);
	if (f->targeted && crashed)
		return SQLITE_IOERR_FSTAT;
	int rc = f->real->pMethods->xFileSize(f->real, size);
	if (rc == SQLITE_OK && f->nrecs) {
		sqlite3_int64 end = recs_end(f);
		if (end > *size)
			*size = end;
	}
	return rc;
}

static int fv_lock(sqlite3_file *pf, int level)
{
	fv_file *f = (fv_file *)pf;
	REFRESH(f);
	int rc = fault(f, FV_LOCK, SQLITE_IOERR_LOCK);
	if (rc)
		return rc;
	if (f->targeted && crashed)
		return SQLITE_IOERR_LOCK;
	return f->real->pMethods->xLock(f->real, level);
}

static int fv_unlock(sqlite3_file *pf, int level)
{
	fv_file *f = (fv_file *)pf;
	REFRESH(f);
	return f->real->pMethods->xUnlock(f->real, level);
}

static int fv_check_reserved(sqlite3_file *pf, int *out)
{
	fv_file *f = (fv_file *)pf;
	REFRESH(f);
	return f->real->pMethods->xCheckReservedLock(f->real, out);
}

static int fv_file_control(sqlite3_file *pf, int op, void *arg)
{
	fv_file *f = (fv_file *)pf;
	REFRESH(f);
	/* Growing the file ahead would bypass the buffered writes. */
	if (op == SQLITE_FCNTL_SIZE_HINT && f->targeted && buffering)
		return SQLITE_OK;
	return f->real->pMethods->xFileControl(f->real, op, arg);
}

static int fv_sector_size(sqlite3_file *pf)
{
	fv_file *f = (fv_file *)pf;
	REFRESH(f);
	return f->real->pMethods->xSectorSize(f->real);
}

static int fv_device_characteristics(sqlite3_file *pf)
{
	fv_file *f = (fv_file *)pf;
	REFRESH(f);
	return f->real->pMethods->xDeviceCharacteristics(f->real);
}

static int fv_shm_map(sqlite3_file *pf, int pg, int pgsz, int extend, void volatile **pp)
{
	fv_file *f = (fv_file *)pf;
	REFRESH(f);
	int rc = fault(f, FV_LOCK, SQLITE_IOERR_SHMMAP);
	if (rc)
		return rc;
	return f->real->pMethods->xShmMap(f->real, pg, pgsz, extend, pp);
}

static int fv_shm_lock(sqlite3_file *pf, int offset, int n, int flags)
{
	fv_file *f = (fv_file *)pf;
	REFRESH(f);
	if (flags & SQLITE_SHM_LOCK) {
		int rc = fault(f, FV_LOCK, SQLITE_IOERR_SHMLOCK);
		if (rc)
			return rc;
		if (f->targeted && crashed)
			return SQLITE_IOERR_SHMLOCK;
	}
	return f->real->pMethods->xShmLock(f->real, offset, n, flags);
}

static void fv_shm_barrier(sqlite3_file *pf)
{
	fv_file *f = (fv_file *)pf;
	REFRESH(f);
	f->real->pMethods->xShmBarrier(f->real);
}

static int fv_shm_unmap(sqlite3_file *pf, int del)
{
	fv_file *f = (fv_file *)pf;
	REFRESH(f);
	return f->real->pMethods->xShmUnmap(f->real, del);
}

static int fv_fetch(sqlite3_file *pf, sqlite3_int64 off, int amt, void **pp)
{
	(void)pf, (void)off, (void)amt;
	*pp = NULL; /* no memory-mapped reads: every read goes through xRead */
	return SQLITE_OK;
}

static int fv_unfetch(sqlite3_file *pf, sqlite3_int64 off, void *p)
{
	(void)pf, (void)off, (void)p;
	return SQLITE_OK;
}

static const sqlite3_io_methods fv_io = {
	3,
	fv_close,
	fv_read,
	fv_write,
	fv_truncate,
	fv_sync,
	fv_file_size,
	fv_lock,
	fv_unlock,
	fv_check_reserved,
	fv_file_control,
	fv_sector_size,
	fv_device_characteristics,
	fv_shm_map,
	fv_shm_lock,
	fv_shm_barrier,
	fv_shm_unmap,
	fv_fetch,
	fv_unfetch,
};

/* ----------------------------------------------------------- vfs methods */

static int fv_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *pf, int flags, int *out_flags)
{
	(void)vfs;
	fv_file *f = (fv_file *)pf;
	REFRESH(f);
	memset(f, 0, sizeof(*f));
	f->real = (sqlite3_file *)(f + 1);
	int rc = real_vfs->xOpen(real_vfs, name, f->real, flags, out_flags);
	if (rc != SQLITE_OK) {
		f->base.pMethods = NULL;
		return rc;
	}
	f->name = name;
	/* Every file is listed: a later target may name it. */
	f->next = open_files;
	open_files = f;
	f->base.pMethods = &fv_io;
	return SQLITE_OK;
}

static int fv_delete(sqlite3_vfs *vfs, const char *name, int sync_dir)
{
	(void)vfs;
	if (crashed && on_target(name))
		return SQLITE_IOERR_DELETE;
	return real_vfs->xDelete(real_vfs, name, sync_dir);
}

static int fv_access(sqlite3_vfs *vfs, const char *name, int flags, int *out)
{
	(void)vfs;
	return real_vfs->xAccess(real_vfs, name, flags, out);
}

static int fv_full_pathname(sqlite3_vfs *vfs, const char *name, int n, char *out)
{
	(void)vfs;
	return real_vfs->xFullPathname(real_vfs, name, n, out);
}

static void *fv_dlopen(sqlite3_vfs *vfs, const char *name)
{
	(void)vfs;
	return real_vfs->xDlOpen(real_vfs, name);
}

static void fv_dlerror(sqlite3_vfs *vfs, int n, char *msg)
{
	(void)vfs;
	real_vfs->xDlError(real_vfs, n, msg);
}

static void (*fv_dlsym(sqlite3_vfs *vfs, void *h, const char *sym))(void)
{
	(void)vfs;
	return real_vfs->xDlSym(real_vfs, h, sym);
}

static void fv_dlclose(sqlite3_vfs *vfs, void *h)
{
	(void)vfs;
	real_vfs->xDlClose(real_vfs, h);
}

static int fv_randomness(sqlite3_vfs *vfs, int n, char *out)
{
	(void)vfs;
	return real_vfs->xRandomness(real_vfs, n, out);
}

static int fv_sleep(sqlite3_vfs *vfs, int us)
{
	(void)vfs;
	return real_vfs->xSleep(real_vfs, us);
}

static int fv_current_time(sqlite3_vfs *vfs, double *out)
{
	(void)vfs;
	return real_vfs->xCurrentTime(real_vfs, out);
}

static int fv_last_error(sqlite3_vfs *vfs, int n, char *out)
{
	(void)vfs;
	return real_vfs->xGetLastError ? real_vfs->xGetLastError(real_vfs, n, out) : 0;
}

static int fv_current_time64(sqlite3_vfs *vfs, sqlite3_int64 *out)
{
	(void)vfs;
	return real_vfs->xCurrentTimeInt64(real_vfs, out);
}

void fv_install(void)
{
	if (real_vfs)
		return;
	real_vfs = sqlite3_vfs_find(NULL);
	if (!real_vfs) {
		fprintf(stderr, "faultvfs: no default SQLite VFS\n");
		abort();
	}
	fault_vfs.iVersion = 2;
	fault_vfs.szOsFile = (int)sizeof(fv_file) + real_vfs->szOsFile;
	fault_vfs.mxPathname = real_vfs->mxPathname;
	fault_vfs.zName = "weft-fault";
	fault_vfs.xOpen = fv_open;
	fault_vfs.xDelete = fv_delete;
	fault_vfs.xAccess = fv_access;
	fault_vfs.xFullPathname = fv_full_pathname;
	fault_vfs.xDlOpen = fv_dlopen;
	fault_vfs.xDlError = fv_dlerror;
	fault_vfs.xDlSym = fv_dlsym;
	fault_vfs.xDlClose = fv_dlclose;
	fault_vfs.xRandomness = fv_randomness;
	fault_vfs.xSleep = fv_sleep;
	fault_vfs.xCurrentTime = fv_current_time;
	fault_vfs.xGetLastError = fv_last_error;
	fault_vfs.xCurrentTimeInt64 = fv_current_time64;
	if (sqlite3_vfs_register(&fault_vfs, 1) != SQLITE_OK) {
		fprintf(stderr, "faultvfs: cannot register the VFS\n");
		abort();
	}
}

void fv_target(const char *prefix)
{
	snprintf(target, sizeof(target), "%s", prefix ? prefix : "");
}

unsigned long fv_count(unsigned classes)
{
	unsigned long n = 0;
	for (int i = 0; i < 4; i++)
		if (classes & (1u << i))
			n += counts[i];
	return n;
}

void fv_fail(unsigned classes, unsigned long nth, int code, int persistent)
{
	arm_classes = classes;
	arm_nth = nth;
	arm_code = code;
	arm_persistent = persistent;
	arm_seen = arm_failures = 0;
	memset(counts, 0, sizeof(counts));
}

unsigned long fv_failures(void)
{
	return arm_failures;
}

void fv_disarm(void)
{
	fv_fail(0, 0, 0, 0);
}

void fv_powerloss(unsigned long k, unsigned torn_seed)
{
	buffering = 1;
	crash_at = k;
	torn = torn_seed;
	syncs = 0;
	crashed = 0;
}

unsigned long fv_syncs(void)
{
	return syncs;
}

int fv_crashed(void)
{
	return crashed;
}

void fv_recover(void)
{
	for (fv_file *f = open_files; f; f = f->next)
		recs_free(f);
	buffering = 0;
	crashed = 0;
	crash_at = 0;
	syncs = 0;
}
