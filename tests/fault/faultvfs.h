/*
 * A test SQLite VFS layered over the default one, registered as the new
 * default (weft_db_open takes no VFS name). It only touches files whose
 * path starts with the target prefix; every other file passes through.
 *
 * Two kinds of fault:
 *  - I/O errors: the Nth read, write, sync or lock operation (counted per
 *    class since arming) fails with SQLITE_IOERR_* or SQLITE_FULL, once or
 *    from then on (a disk that died).
 *  - Power loss: writes are held in memory until the file is synced
 *    (xSync), as an OS page cache would hold them. At the chosen sync the
 *    machine "loses power": the unsynced writes of every target file are
 *    dropped (or a random subset of them reaches the disk first: torn
 *    writes), and every later operation fails, until fv_recover().
 */
#ifndef WEFT_FAULTVFS_H
#define WEFT_FAULTVFS_H

enum fv_class {
	FV_READ = 1,  /* xRead */
	FV_WRITE = 2, /* xWrite, xTruncate */
	FV_SYNC = 4,  /* xSync */
	FV_LOCK = 8   /* xLock, xShmLock (taking a lock), xShmMap */
};

/* Registers the VFS as the default. Call once, before opening stores. */
void fv_install(void);
/* Only files whose path starts with prefix are affected (NULL: none). */
void fv_target(const char *prefix);

/* Operations of the classes seen on target files since the last arm or
 * fv_disarm. */
unsigned long fv_count(unsigned classes);

/*
 * Arms an I/O fault: the nth operation (1-based) of the given classes
 * fails with code (SQLITE_FULL applies to writes; other classes then get
 * their SQLITE_IOERR_* code). persistent: every later one fails too.
 * nth 0 only counts.
 */
void fv_fail(unsigned classes, unsigned long nth, int code, int persistent);
/* How many operations the armed fault has failed. */
unsigned long fv_failures(void);
/* Stops injecting I/O faults and resets the counters. */
void fv_disarm(void);

/* Power loss: buffer target files' writes until xSync; crash at the kth
 * sync (0: never, only count). torn_seed 0 drops all unsynced writes;
 * otherwise a pseudo-random subset of them is written before the crash. */
void fv_powerloss(unsigned long k, unsigned torn_seed);
/* Syncs seen since fv_powerloss, and whether the crash happened. */
unsigned long fv_syncs(void);
int fv_crashed(void);
/* After the crashed connections are closed: forget the crash and stop
 * buffering (the disk holds exactly what was synced, plus torn writes). */
void fv_recover(void);

#endif
