#include "core/identity.h"

#include <ctype.h>
#include <string.h>

#include <sodium.h>

#include "core/alloc.h"
#include "core/codec.h"
#include "platform/platform.h"

/* ------------------------------------------------------------ device ids */

static const char b32[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

static int b32_value(char c)
{
	const char *p = strchr(b32, c);
	return c && p ? (int)(p - b32) : -1;
}

/* Luhn mod 32 over a group: the character that makes the group check. */
static char luhn32(const char *s, size_t n)
{
	int factor = 2, sum = 0;
	for (size_t i = n; i-- > 0;) {
		int addend = factor * b32_value(s[i]);
		factor = factor == 2 ? 1 : 2;
		sum += addend / 32 + addend % 32;
	}
	return b32[(32 - sum % 32) % 32];
}

int weft_device_id_format(char out[WEFT_DEVICE_ID_LEN + 1],
                          const unsigned char pk[WEFT_PUBLIC_KEY_BYTES])
{
	if (!out || !pk)
		return err_set(NULL, WEFT_EINVAL, "weft_device_id_format: NULL argument");
	char raw[52], chk[56];
	unsigned buf = 0, bits = 0;
	size_t n = 0;
	for (size_t i = 0; i < 32; i++) {
		buf = buf << 8 | pk[i];
		bits += 8;
		while (bits >= 5) {
			raw[n++] = b32[(buf >> (bits - 5)) & 31];
			bits -= 5;
		}
	}
	raw[n++] = b32[(buf << (5 - bits)) & 31]; /* 256 = 51*5 + 1 */
	for (size_t g = 0; g < 4; g++) {
		memcpy(chk + g * 14, raw + g * 13, 13);
		chk[g * 14 + 13] = luhn32(raw + g * 13, 13);
	}
	char *o = out;
	for (size_t i = 0; i < 56; i++) {
		if (i && i % 7 == 0)
			*o++ = '-';
		*o++ = chk[i];
	}
	*o = '\0';
	return WEFT_OK;
}

int weft_device_id_parse(unsigned char pk[WEFT_PUBLIC_KEY_BYTES], const char *text)
{
	if (!pk || !text)
		return err_set(NULL, WEFT_EINVAL, "weft_device_id_parse: NULL argument");
	char s[56];
	size_t n = 0;
	for (const char *p = text; *p; p++) {
		char c = (char)toupper((unsigned char)*p);
		if (c == '-' || c == ' ')
			continue;
		if (c == '0')
			c = 'O';
		else if (c == '1')
			c = 'I';
		else if (c == '8')
			c = 'B';
		if (b32_value(c) < 0)
			return err_set(NULL, WEFT_EINVAL, "\"%.80s\" is not a device id: '%c' is not one of its characters (A-Z, 2-7)",
			               text, *p);
		if (n == 56)
			return err_set(NULL, WEFT_EINVAL, "\"%.80s\" is not a device id: too long (a device id has 56 characters plus dashes)", text);
		s[n++] = c;
	}
	if (n != 56)
		return err_set(NULL, WEFT_EINVAL, "\"%.80s\" is not a device id: it has %zu characters, a device id has 56 plus dashes",
		               text, n);
	char raw[52];
	for (size_t g = 0; g < 4; g++) {
		if (luhn32(s + g * 14, 13) != s[g * 14 + 13])
			return err_set(NULL, WEFT_EINVAL, "device id \"%.80s\" has a typo in characters %zu-%zu (check digit mismatch); compare it again with `weft id` on that device",
			               text, g * 14 + 1, g * 14 + 14);
		memcpy(raw + g * 13, s + g * 14, 13);
	}
	unsigned buf = 0, bits = 0;
	size_t o = 0;
	for (size_t i = 0; i < 52; i++) {
		buf = buf << 5 | (unsigned)b32_value(raw[i]);
		bits += 5;
		if (bits >= 8) {
			if (o < 32)
				pk[o++] = (unsigned char)(buf >> (bits - 8));
			bits -= 8;
		}
		buf &= (1u << bits) - 1;
	}
	if (buf != 0) /* the 4 padding bits must be zero: one text per key */
		return err_set(NULL, WEFT_EINVAL, "\"%.80s\" is not a device id: its last character is not canonical", text);
	return WEFT_OK;
}

/* ------------------------------------------------------------- key files */

#define KEYFILE_MAGIC "WEFTKEY1"
#define KEYFILE_PLAIN 0
#define KEYFILE_SEALED 1
#define KEYFILE_PLAIN_LEN (8 + 1 + 32 + 32)
#define KEYFILE_SEALED_LEN (8 + 1 + 32 + 8 + 8 + crypto_pwhash_SALTBYTES + \
                            crypto_secretbox_NONCEBYTES + crypto_secretbox_MACBYTES + 32)

int identity_from_seed(identity *id, const unsigned char *seed, weft_err *err)
{
	memset(id, 0, sizeof(*id));
	id->sk = sodium_malloc(crypto_sign_SECRETKEYBYTES + crypto_kdf_KEYBYTES);
	if (!id->sk)
		return err_set(err, WEFT_ENOMEM, "out of memory for the device key");
	if (seed) {
		crypto_sign_seed_keypair(id->pk, id->sk, seed);
	} else {
		crypto_sign_keypair(id->pk, id->sk);
	}
	/* libsodium keeps the seed in sk[0..31]. */
	crypto_kdf_derive_from_key(id->sk + crypto_sign_SECRETKEYBYTES, crypto_kdf_KEYBYTES, 1, "weftseal", id->sk);
	weft_device_id_format(id->device_id, id->pk);
	return WEFT_OK;
}

void identity_seal(const identity *id, const unsigned char event_id[32], unsigned char out[IDENTITY_SEAL_BYTES])
{
	crypto_generichash(out, IDENTITY_SEAL_BYTES, event_id, 32, id->sk + crypto_sign_SECRETKEYBYTES,
	                   crypto_kdf_KEYBYTES);
}

void identity_public_only(identity *id, const unsigned char pk[32])
{
	memset(id, 0, sizeof(*id));
	memcpy(id->pk, pk, 32);
	weft_device_id_format(id->device_id, id->pk);
}

void identity_wipe(identity *id)
{
	if (id->sk)
		sodium_free(id->sk); /* zeroes before freeing */
	id->sk = NULL;
}

static int derive_key(unsigned char key[32], const char *passphrase,
                      const unsigned char *salt, uint64_t ops, uint64_t mem,
                      weft_err *err)
{
	if (crypto_pwhash(key, 32, passphrase, strlen(passphrase), salt, ops, (size_t)mem,
	                  crypto_pwhash_ALG_ARGON2ID13) != 0)
		return err_set(err, WEFT_ENOMEM, "not enough memory to derive the key file's passphrase key (%llu bytes needed)",
		               (unsigned long long)mem);
	return WEFT_OK;
}

int identity_save(const identity *id, const char *path, const char *passphrase,
                  weft_err *err)
{
	unsigned char buf[KEYFILE_SEALED_LEN];
	size_t len;
	char perr[PLAT_ERR_LEN];
	unsigned char *seed = id->sk; /* libsodium keeps the seed in sk[0..31] */
	memcpy(buf, KEYFILE_MAGIC, 8);
	memcpy(buf + 9, id->pk, 32);
	if (!passphrase || !passphrase[0]) {
		buf[8] = KEYFILE_PLAIN;
		memcpy(buf + 41, seed, 32);
		len = KEYFILE_PLAIN_LEN;
	} else {
		unsigned char *p = buf + 41;
		uint64_t ops = crypto_pwhash_OPSLIMIT_INTERACTIVE;
		uint64_t mem = crypto_pwhash_MEMLIMIT_INTERACTIVE;
		buf[8] = KEYFILE_SEALED;
		codec_put_u64(p, ops), p += 8;
		codec_put_u64(p, mem), p += 8;
		unsigned char *salt = p;
		randombytes_buf(salt, crypto_pwhash_SALTBYTES), p += crypto_pwhash_SALTBYTES;
		unsigned char *nonce = p;
		randombytes_buf(nonce, crypto_secretbox_NONCEBYTES), p += crypto_secretbox_NONCEBYTES;
		unsigned char key[32];
		int rc = derive_key(key, passphrase, salt, ops, mem, err);
		if (rc < 0)
			return rc;
		crypto_secretbox_easy(p, seed, 32, nonce, key);
		sodium_memzero(key, sizeof(key));
		len = KEYFILE_SEALED_LEN;
	}
	int rc = plat_write_file_atomic(path, buf, len, 1, perr);
	sodium_memzero(buf, sizeof(buf));
	if (rc == WEFT_EEXISTS)
		return err_set(err, rc, "key file %s already exists; refusing to overwrite a device identity", path);
	if (rc < 0)
		return err_set(err, rc, "cannot write the key file: %s", perr);
	return WEFT_OK;
}

int identity_load(identity *id, const char *path, const char *passphrase,
                  weft_err *err)
{
	char perr[PLAT_ERR_LEN];
	unsigned mode;
	memset(id, 0, sizeof(*id));
	int rc = plat_file_mode(&mode, path, perr);
	if (rc == WEFT_ENOTFOUND)
		return err_set(err, rc, "key file %s is missing: the store cannot sign without its device key "
		               "(restore the key file, or pass the key in weft_open_options.secret_key)", path);
	if (rc < 0)
		return err_set(err, rc, "%s", perr);
	if (mode & 077)
		return err_set(err, WEFT_EPERM, "key file %s has mode %04o, so other users may read the device key; "
		               "run `chmod 600 %s` and try again", path, mode, path);
	void *data;
	size_t len;
	if ((rc = plat_read_file(&data, &len, path, 4096, perr)) < 0)
		return err_set(err, rc, "cannot read the key file: %s", perr);
	const unsigned char *b = data;
	unsigned char seed[32];
	if (len < 9 || memcmp(b, KEYFILE_MAGIC, 8) != 0 ||
	    (b[8] == KEYFILE_PLAIN && len != KEYFILE_PLAIN_LEN) ||
	    (b[8] == KEYFILE_SEALED && len != KEYFILE_SEALED_LEN) || b[8] > KEYFILE_SEALED) {
		rc = err_set(err, WEFT_ECORRUPT, "%s is not a weft key file (wrong size or header)", path);
		goto out;
	}
	if (b[8] == KEYFILE_PLAIN) {
		memcpy(seed, b + 41, 32);
	} else {
		if (!passphrase || !passphrase[0]) {
			rc = err_set(err, WEFT_EAUTH, "key file %s is protected by a passphrase; supply it "
			             "(weft_open_options.passphrase; for the weft command $WEFT_PASSPHRASE or --passphrase-file)", path);
			goto out;
		}
		const unsigned char *p = b + 41;
		uint64_t ops = codec_get_u64(p), mem = codec_get_u64(p + 8);
		p += 16;
		/* Hostile files must not make us burn CPU or memory without bound. */
		if (ops < crypto_pwhash_OPSLIMIT_MIN || ops > crypto_pwhash_OPSLIMIT_SENSITIVE ||
		    mem < crypto_pwhash_MEMLIMIT_MIN || mem > crypto_pwhash_MEMLIMIT_SENSITIVE) {
			rc = err_set(err, WEFT_ECORRUPT, "key file %s asks for out-of-range passphrase hashing costs", path);
			goto out;
		}
		const unsigned char *salt = p;
		const unsigned char *nonce = p + crypto_pwhash_SALTBYTES;
		const unsigned char *box = nonce + crypto_secretbox_NONCEBYTES;
		unsigned char key[32];
		if ((rc = derive_key(key, passphrase, salt, ops, mem, err)) < 0)
			goto out;
		rc = crypto_secretbox_open_easy(seed, box, 32 + crypto_secretbox_MACBYTES, nonce, key);
		sodium_memzero(key, sizeof(key));
		if (rc != 0) {
			rc = err_set(err, WEFT_EAUTH, "wrong passphrase for key file %s", path);
			goto out;
		}
	}
	if ((rc = identity_from_seed(id, seed, err)) < 0)
		goto out;
	if (sodium_memcmp(id->pk, b + 9, 32) != 0) {
		identity_wipe(id);
		rc = err_set(err, WEFT_ECORRUPT, "key file %s is damaged: its secret key does not match its public key", path);
	}
out:
	sodium_memzero(seed, sizeof(seed));
	sodium_memzero(data, len);
	weft__free(data);
	return rc;
}
