/* Opens a store, appends an event, reads it back: the installed API works. */
#include <stdio.h>
#include <string.h>

#include <weft.h>

int main(int argc, char **argv)
{
	if (argc != 2)
		return 2;
	weft_open_options o = WEFT_OPEN_OPTIONS_INIT;
	o.flags = WEFT_OPEN_CREATE;
	weft_db *db;
	if (weft_db_open(&db, argv[1], &o) != WEFT_OK) {
		fprintf(stderr, "%s\n", weft_error_last());
		return 1;
	}
	weft_id id;
	weft_event *ev = NULL;
	int ok = weft_db_append(&id, db, "demo", "note", NULL, "hi", 2) == WEFT_OK &&
	         weft_db_get(&ev, db, &id) == WEFT_OK &&
	         strcmp(weft_event_kind(ev), "note") == 0;
	weft_event_free(ev);
	weft_db_close(db);
	printf("%s %s\n", ok ? "ok" : "FAILED", weft_version());
	return ok ? 0 : 1;
}
