/* A SQLite VFS over the default one that hands the write-ahead log's many
 * small writes to the OS as few large ones (core/walbuf.c). */
#ifndef WEFT_CORE_WALBUF_H
#define WEFT_CORE_WALBUF_H

/* The name to pass to sqlite3_open_v2; NULL (SQLite's default VFS) if the
 * VFS could not be registered, which costs speed, not correctness. Safe to
 * call from any thread, any number of times. */
const char *walbuf_vfs_name(void);

#endif
