/*
 * negentropy.h — range-based set reconciliation, Negentropy protocol V1.
 *
 * Two peers each hold a set of items (u64 timestamp, 32-byte id) and find
 * the ids one has and the other lacks by exchanging fingerprints of ranges
 * (A. Meyer, arXiv 2212.13567; protocol V1 by D. Hoyte, as in Nostr NIP-77).
 * Messages are byte-compatible with the reference implementation; the
 * conformance harness is cli/negentropy_harness.c. Pure bytes in, bytes
 * out: no I/O, no clock, no SQLite.
 *
 * Use:
 *   1. Build a neg_set: neg_set_new(), neg_set_add() / neg_set_add_iter()
 *      any number of items in any order, then neg_set_seal() (sorts, drops
 *      exact duplicates, builds the fingerprint index). A sealed set is
 *      immutable: it may be shared by several reconcilers, also across
 *      threads, as long as it outlives them.
 *   2. neg_reconciler_new() over the whole set or a contiguous slice of it
 *      (neg_set_lower_bound() turns a (timestamp, id) window into indices).
 *      To reconcile an arbitrary subset (some scopes only), build a set from
 *      just those items instead. Items kept elsewhere (a store) can be
 *      reconciled through a neg_storage (neg_reconciler_new_storage).
 *   3. Client: neg_reconciler_initiate(), send the bytes, then feed every
 *      reply to neg_reconciler_reconcile() until it returns an empty output
 *      (out_len == 0): the reconciliation is complete.
 *      Server: feed every message to neg_reconciler_reconcile() and always
 *      send back its output (at least one byte).
 *
 * The client learns the differences through a callback: NEG_HAVE for an id
 * it holds and the server lacks, NEG_NEED for an id the server holds and it
 * lacks. With a frame size limit an id may be reported more than once over
 * several rounds; deduplicating is the caller's job (so is anything done
 * with the ids). The server learns nothing: it gets what it lacks when the
 * client sends it.
 *
 * Errors are negative WEFT_* codes from weft.h. neg_last_error() says what
 * went wrong, for protocol errors with the byte offset in the peer's
 * message. After initiate/reconcile fail with anything but WEFT_EINVAL the
 * reconciler refuses further calls (WEFT_EINVAL): abandon the
 * reconciliation and start a new one. A reconciler is used by one thread at
 * a time.
 *
 * Fingerprints are sums of ids, so ids must be hashes (weft's event ids
 * are): with structured ids, two differences in one range can cancel out.
 *
 * All allocation goes through core/alloc.h.
 */
#ifndef WEFT_SYNC_NEGENTROPY_H
#define WEFT_SYNC_NEGENTROPY_H

#include <stddef.h>
#include <stdint.h>

#define NEG_ID_BYTES 32
#define NEG_FINGERPRINT_BYTES 16
#define NEG_PROTOCOL_VERSION 0x61
/* The timestamp that means "infinity"; no item may have it. */
#define NEG_TS_INFINITY UINT64_MAX
/* A frame size limit must be 0 (none) or at least this. */
#define NEG_FRAME_SIZE_MIN 4096
/* Longest varint: 64 bits in 7-bit groups. */
#define NEG_VARINT_MAX 10

/* ------------------------------------------------------------- item set */

typedef struct neg_set neg_set;

/* Creates an empty, unsealed set. WEFT_ENOMEM. */
int neg_set_new(neg_set **out);
/* Frees the set (NULL is fine). Reconcilers using it must be freed first. */
void neg_set_free(neg_set *s);

/*
 * Reserves room for n items in total, so that building a set of known size
 * allocates exactly once (no growth slack). Optional.
 * WEFT_EINVAL (sealed), WEFT_ENOMEM.
 */
int neg_set_reserve(neg_set *s, size_t n);

/*
 * Adds one item; order does not matter. Adding an identical (ts, id) twice
 * keeps one. WEFT_EINVAL (set sealed, ts == NEG_TS_INFINITY), WEFT_ENOMEM.
 */
int neg_set_add(neg_set *s, uint64_t ts, const uint8_t id[NEG_ID_BYTES]);

/*
 * Pulls items from an iterator until it returns WEFT_ITEROVER (the
 * convention of weft_iter_next). The iterator fills *ts and id and returns
 * WEFT_OK for each item; any other negative code stops and is returned as
 * is. Items already added stay added on failure. Items coming in sorted
 * order make neg_set_seal() skip its sort.
 */
typedef int (*neg_item_iter_fn)(void *payload, uint64_t *ts,
				uint8_t id[NEG_ID_BYTES]);
int neg_set_add_iter(neg_set *s, neg_item_iter_fn next, void *payload);

/*
 * Sorts by (ts, id), drops duplicates and builds the fingerprint index.
 * Afterwards the set is read-only. Sealing twice is a no-op.
 * WEFT_ENOMEM (the set stays unsealed and intact; seal again to retry).
 */
int neg_set_seal(neg_set *s);

/* Number of items (after sealing: distinct items). */
size_t neg_set_size(const neg_set *s);
/* Item i of a sealed set (i < size); the id pointer is borrowed. */
uint64_t neg_set_ts(const neg_set *s, size_t i);
const uint8_t *neg_set_id(const neg_set *s, size_t i);
/*
 * First index whose item is >= (ts, id) in a sealed set, or the size if
 * none. id NULL means all zeros, so (ts, NULL) finds the first item with a
 * timestamp >= ts.
 */
size_t neg_set_lower_bound(const neg_set *s, uint64_t ts, const uint8_t *id);
/*
 * Fingerprint of items [lo, hi) of a sealed set (lo <= hi <= size): SHA-256
 * of (sum of the ids as 256-bit little-endian numbers mod 2^256 || varint
 * count), first 16 bytes. O(1) block sums plus at most ~64 id additions.
 */
void neg_set_fingerprint(uint8_t out[NEG_FINGERPRINT_BYTES], const neg_set *s,
			 size_t lo, size_t hi);
/* Bytes of heap held by the set (items + index), for memory budgets. */
size_t neg_set_memory_usage(const neg_set *s);

/* ---------------------------------------------------- fingerprint sums */

/* acc += x and acc -= x, as 256-bit little-endian numbers mod 2^256. */
void neg_sum_add(uint8_t acc[NEG_ID_BYTES], const uint8_t x[NEG_ID_BYTES]);
void neg_sum_sub(uint8_t acc[NEG_ID_BYTES], const uint8_t x[NEG_ID_BYTES]);
/* The fingerprint of count items whose ids add up to sum. */
void neg_fingerprint_of_sum(uint8_t out[NEG_FINGERPRINT_BYTES],
			    const uint8_t sum[NEG_ID_BYTES], uint64_t count);

/* ------------------------------------------------------------ storage */

/*
 * Items a reconciler can run over besides a neg_set (sync/neg_view.c reads
 * them from a store). Ranks 0..size-1 follow (ts, id) order and must not
 * change during one initiate/reconcile call; size is read at the start of
 * each call, so the items may change between calls. Callbacks return
 * WEFT_OK or a negative code, which fails the call with that code.
 */
typedef struct neg_storage {
	void *ctx;
	size_t (*size)(void *ctx);
	int (*item)(void *ctx, size_t i, uint64_t *ts, uint8_t id[NEG_ID_BYTES]);
	/* First rank in [lo, hi) whose item is >= (ts, id), or hi. */
	int (*lower_bound)(void *ctx, size_t lo, size_t hi, uint64_t ts,
			   const uint8_t id[NEG_ID_BYTES], size_t *out);
	/* Sum of the ids of ranks [lo, hi), lo < hi (see neg_sum_add). */
	int (*sum)(void *ctx, size_t lo, size_t hi, uint8_t out[NEG_ID_BYTES]);
	/*
	 * Optional (NULL: none). The rank b in (lo, hi) nearest to target
	 * with a timestamp *ts that every item below b is under and every
	 * item from b on is at or above; 1 if there is one, else 0. A range
	 * holding such ranks is split only there (bounds without id bytes),
	 * so that peers with the same boundaries compare the same ranges.
	 */
	int (*boundary)(void *ctx, size_t lo, size_t hi, size_t target,
			size_t *at, uint64_t *ts);
} neg_storage;

/* ----------------------------------------------------------- reconciler */

typedef struct neg_reconciler neg_reconciler;

enum neg_diff_kind {
	NEG_HAVE = 1, /* we (the client) have it, the server lacks it */
	NEG_NEED = 2, /* the server has it, we lack it */
};

/*
 * Called by the client for each difference found. id is borrowed for the
 * duration of the call. Return 0 to go on, non-zero to stop: the reconcile
 * call then fails with WEFT_EUSER.
 */
typedef int (*neg_diff_cb)(void *payload, enum neg_diff_kind kind,
			   const uint8_t id[NEG_ID_BYTES]);

/*
 * Creates a reconciler over items [begin, end) of a sealed set, which must
 * outlive it. frame_size_limit is 0 (no limit) or >= NEG_FRAME_SIZE_MIN:
 * every message this side produces is then at most that many bytes, and a
 * large reconciliation takes more rounds. Without a limit one reply can
 * list every id of the slice (32 bytes each), so a side facing untrusted
 * peers should set one. The role is decided by the first call:
 * neg_reconciler_initiate() makes a client, neg_reconciler_reconcile() a
 * server.
 * WEFT_EINVAL (set not sealed, bad slice, bad limit), WEFT_ENOMEM.
 */
int neg_reconciler_new(neg_reconciler **out, const neg_set *set, size_t begin,
		       size_t end, size_t frame_size_limit);
/*
 * The same over every item of a storage (copied; st->ctx must outlive the
 * reconciler). Messages are valid V1 but, where st->boundary offers
 * boundaries, split differently from the reference.
 * WEFT_EINVAL (missing callback, bad limit), WEFT_ENOMEM.
 */
int neg_reconciler_new_storage(neg_reconciler **out, const neg_storage *st,
			       size_t frame_size_limit);
/* Frees the reconciler and its output buffer (NULL is fine). */
void neg_reconciler_free(neg_reconciler *r);

/*
 * Client: produces the first message (version byte and the whole slice
 * split into ranges). *out is owned by the reconciler and valid until the
 * next call on it or its free.
 * WEFT_EINVAL (already initiated or already acting as server), WEFT_ENOMEM.
 */
int neg_reconciler_initiate(const uint8_t **out, size_t *out_len,
			    neg_reconciler *r);

/*
 * Processes one message from the peer and produces the reply in *out
 * (owned by the reconciler, valid until the next call or its free).
 * Client: reports differences through cb (may be NULL to ignore them);
 * *out_len == 0 (and *out == NULL) means the reconciliation is complete.
 * Server: cb is unused; the reply is never empty. A server given a version
 * byte it does not support (0x60..0x6F other than 0x61) replies 0x61.
 * Errors: WEFT_EPROTO (malformed or hostile message; see neg_last_error),
 * WEFT_EVERSION (client: the server speaks another version), WEFT_EUSER
 * (cb stopped), WEFT_ENOMEM, WEFT_EINVAL (misuse, or an earlier error).
 *
 * Deliberate difference from the reference implementation: when the frame
 * size limit cuts a message short while a range's reply is discarded, the
 * closing Fingerprint range starts where the last processed range ended
 * (a pending Skip is written first) and fingerprints exactly the items
 * between that bound and infinity. The reference fingerprints only the
 * items after the discarded range, which disagrees with the range it
 * sends. Messages are otherwise identical to the reference's.
 */
int neg_reconciler_reconcile(const uint8_t **out, size_t *out_len,
			     neg_reconciler *r, const uint8_t *msg,
			     size_t msg_len, neg_diff_cb cb, void *payload);

/* Whether this reconciler initiated (1) or not (0). */
int neg_reconciler_is_client(const neg_reconciler *r);
/*
 * What the last failure was ("negentropy: range bounds not ascending at
 * byte 37"); "" if none. Never NULL; owned by r, valid until its next call.
 */
const char *neg_last_error(const neg_reconciler *r);

/* ---------------------------------------------------------- varints */

/* Encodes v MSB-first, shortest form; returns the length (1..10). */
size_t neg_varint_encode(uint8_t out[NEG_VARINT_MAX], uint64_t v);
/*
 * Decodes one varint from buf[0..len). On success stores the value and the
 * number of bytes used. WEFT_EPROTO if truncated, not in shortest form
 * (leading 0x80 group) or wider than 64 bits.
 */
int neg_varint_decode(uint64_t *out, size_t *used, const uint8_t *buf,
		      size_t len);

#endif
