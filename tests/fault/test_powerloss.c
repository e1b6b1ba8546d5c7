/*
 * Power loss: the device writes (events and row transactions) and syncs
 * with a peer; at a chosen sync point of its store the power goes: every
 * write not yet synced is lost (or, torn, a random part of it reached the
 * disk). Swept over every sync point. After reopening:
 *  - the store passes integrity_check and verify, and its tables equal a
 *    rebuild;
 *  - every event weft_db_append / weft_txn_commit reported written is there;
 *  - every own event the peer holds (it was sent) is there, so the device
 *    continues its chain where the peer knows it ends: a new event and a
 *    sync afterwards make no fork.
 */
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "faultutil.h"
#include "faultvfs.h"

#define SEED_DEVICE 0x51
#define SEED_PEER 0x52

static char device_tpl[700], peer_tpl[700], device[700], peer[700];

static int setup(void **state)
{
	(void)state;
	fu_path_to(device_tpl, "device-template.db");
	fu_path_to(peer_tpl, "peer-template.db");
	fu_path_to(device, "device.db");
	fu_path_to(peer, "peer.db");
	fu_make_store(device_tpl, SEED_DEVICE, 10, 1);
	fu_make_store(peer_tpl, SEED_PEER, 10, 2);
	return 0;
}

/* The device's life until the power goes: writes, and every few writes a
 * sync with the peer (whose store is not affected). */
static void live(weft_db *dev, weft_db *p, fu_ids *acked)
{
	for (int i = 0; i < 24 && !fv_crashed(); i++) {
		weft_id id;
		char note[32];
		snprintf(note, sizeof(note), "note %d", i);
		int rc = i % 2 ? fu_write(dev, 1, 100 + i, acked)
		               : weft_db_append(&id, dev, "notes", "note.put", NULL, note, strlen(note));
		if (rc == WEFT_OK && i % 2 == 0)
			fu_ids_add(acked, &id);
		if (rc < 0)
			break;
		if (i % 5 == 4) {
			weft_session_stats st;
			if (weft_sync_local(&st, dev, p, NULL) < 0)
				break;
		}
	}
}

/* The device's own events the peer holds. */
static void sent_ids(weft_db *p, const unsigned char *dev_pk, fu_ids *out)
{
	weft_iter *it;
	assert_int_equal(weft_db_iter(&it, p, NULL), WEFT_OK);
	const weft_event *ev;
	while (weft_iter_next(&ev, it) == WEFT_OK)
		if (memcmp(weft_event_author(ev), dev_pk, 32) == 0)
			fu_ids_add(out, weft_event_id(ev));
	weft_iter_free(it);
}

static void crash_at(unsigned long k, unsigned torn, unsigned long *syncs_seen)
{
	fu_copy(device_tpl, device);
	fu_copy(peer_tpl, peer);
	weft_db *dev = fu_open_ok(device, SEED_DEVICE), *p = fu_open_ok(peer, SEED_PEER);
	unsigned char pk[32];
	memcpy(pk, weft_db_public_key(dev), 32);
	fv_target(device);
	fv_powerloss(k, torn);
	fu_ids acked = {0}, sent = {0};
	live(dev, p, &acked);
	*syncs_seen = fv_syncs();
	int crashed = fv_crashed();
	weft_db_close(dev); /* the process dies with the power */
	fv_recover();
	fv_target(NULL);
	char what[120];
	snprintf(what, sizeof(what), "power lost at sync %lu%s", k, torn ? " (torn writes)" : "");
	dev = fu_open(device, SEED_DEVICE, 0);
	if (!dev)
		print_error("%s: the store does not reopen: %s\n", what, weft_error_last());
	assert_non_null(dev);
	fu_check_store(dev, what);
	for (size_t i = 0; i < acked.n; i++) {
		if (!fu_has(dev, &acked.v[i])) {
			char h[65];
			print_error("%s: event %s was reported written and is gone\n", what, weft_id_to_hex(h, &acked.v[i]));
		}
		assert_true(fu_has(dev, &acked.v[i]));
	}
	sent_ids(p, pk, &sent);
	for (size_t i = 0; i < sent.n; i++) {
		if (!fu_has(dev, &sent.v[i]))
			print_error("%s: an event the peer received is gone from its author\n", what);
		assert_true(fu_has(dev, &sent.v[i]));
	}
	/* Life goes on without forking the device's chain. */
	weft_id id;
	assert_int_equal(weft_db_append(&id, dev, "notes", "note.put", NULL, "after", 5), WEFT_OK);
	weft_session_stats st;
	int rc = weft_sync_local(&st, dev, p, NULL);
	if (rc < 0)
		print_error("%s: sync after reopening: %s\n", what, weft_errmsg(dev));
	assert_int_equal(rc, WEFT_OK);
	weft_db_stats ps;
	assert_int_equal(weft_db_stats_get(&ps, p), WEFT_OK);
	if (ps.forked_authors)
		print_error("%s: the device forked its own chain\n", what);
	assert_int_equal(ps.forked_authors, 0);
	fu_check_store(p, what);
	if (k)
		assert_true(crashed); /* the sweep really cut the power */
	fu_ids_free(&acked);
	fu_ids_free(&sent);
	weft_db_close(dev);
	weft_db_close(p);
}

static void sweep(unsigned torn)
{
	unsigned long total;
	crash_at(0, 0, &total); /* count the sync points */
	assert_true(total > 0);
	unsigned long max_steps = fu_slow_build() ? 12 : 60;
	unsigned long stride = total / max_steps + 1;
	unsigned long steps = 0, seen;
	for (unsigned long k = 1; k <= total; k += stride, steps++)
		crash_at(k, torn ? torn * 7919u + (unsigned)k : 0, &seen);
	printf("%lu sync points, power lost at %lu of them%s: nothing acknowledged or sent was lost, no fork\n",
	       total, steps, torn ? " with torn writes" : "");
}

static void test_power_loss_loses_nothing_acknowledged(void **state)
{
	(void)state;
	sweep(0);
}

static void test_power_loss_with_torn_writes(void **state)
{
	(void)state;
	sweep(1);
}

int main(void)
{
	fv_install();
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_power_loss_loses_nothing_acknowledged),
		cmocka_unit_test(test_power_loss_with_torn_writes),
	};
	return cmocka_run_group_tests_name("powerloss", tests, setup, NULL);
}
