/* Session internals used by the drivers in sync/. */
#ifndef WEFT_SYNC_SESSION_H
#define WEFT_SYNC_SESSION_H

#include "weft.h"

/* Stores the received batches the session still holds (checked, not yet
 * acknowledged), as a cut connection requires; acknowledges nothing.
 * weft_session_free does it too. */
void session_settle(weft_session *s);

#endif
