#!/usr/bin/env bash
# The `weft` command as a person uses it: init, append, log, verify, a
# tampered copy, key file permissions, passphrases, export/import, tables.
set -uo pipefail
weft=$(realpath "$1")
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cd "$dir"
fails=0
pass=0
check() { # name, then a command that must succeed
  local name=$1; shift
  if "$@"; then pass=$((pass + 1)); else echo "FAIL: $name"; fails=$((fails + 1)); fi
}
contains() { grep -q -- "$2" <<<"$1"; }

out=$("$weft" init 2>&1); check "init prints the device id" contains "$out" "device id: "
id=$("$weft" id | head -1)
check "id is 63 characters" test ${#id} -eq 63
ev=$("$weft" append --scope home --kind note "buy milk")
check "append prints an event id" test ${#ev} -eq 64
"$weft" append --scope home --kind note "call mom" >/dev/null
again=$("$weft" append --scope home --kind note --idem k1 "once" 2>/dev/null)
dup=$("$weft" append --scope home --kind note --idem k1 "once" 2>/dev/null)
check "an idempotency key writes once" test "$again" = "$dup"
log=$("$weft" log)
check "log lists the events" test "$(wc -l <<<"$log")" -eq 3
check "log shows payloads" contains "$log" "buy milk"
check "verify passes" "$weft" verify >/dev/null
json=$("$weft" log --json | head -1)
check "log --json" contains "$json" "\"id\":\"$ev\""

# A copied, tampered database fails verify, naming the bad event.
cp weft.db t.db && cp weft.db.key t.db.key
# The store keeps an id's first 6 bytes, sign-extended (core/store.h).
idp=$((16#${ev:0:12})); [ "$idp" -ge $((1 << 47)) ] && idp=$((idp - (1 << 48)))
sqlite3 t.db "UPDATE weft_event SET payload = CAST('buy beer' AS BLOB) WHERE idp = $idp"
out=$("$weft" --db t.db verify 2>&1); rc=$?
check "tampered store fails verify" test $rc -eq 1
check "verify names the bad event" contains "$out" "${ev:0:12}"

# Key file permissions and passphrases.
chmod 644 weft.db.key
out=$("$weft" append --scope home --kind note x 2>&1); rc=$?
check "a readable key file is refused" test $rc -ne 0
check "the message says what to run" contains "$out" "chmod 600"
chmod 600 weft.db.key
WEFT_PASSPHRASE=correct-horse "$weft" --db p.db init >/dev/null
out=$(WEFT_PASSPHRASE=wrong "$weft" --db p.db append --scope s --kind k x 2>&1); rc=$?
check "a wrong passphrase is refused" test $rc -ne 0
check "the message says wrong passphrase" contains "$out" "wrong passphrase"
check "the right passphrase works" env WEFT_PASSPHRASE=correct-horse "$weft" --db p.db append --scope s --kind k x >/dev/null

# Export and import into a second store, twice: idempotent.
"$weft" export --out all.bin 2>/dev/null
"$weft" --db b.db init >/dev/null
out=$("$weft" --db b.db import all.bin); check "import stores new events" contains "$out" "imported 3 new"
out=$("$weft" --db b.db import all.bin); check "re-import changes nothing" contains "$out" "3 already present"
check "imported store verifies" "$weft" --db b.db verify >/dev/null

# Tables: rebuild gives the same query output.
printf 'CREATE TABLE todo(id TEXT PRIMARY KEY, title TEXT, votes INTEGER DEFAULT 0);\n' > s.sql
"$weft" schema apply s.sql >/dev/null
"$weft" put todo t1 title=milk >/dev/null
"$weft" incr todo t1 votes=2 >/dev/null
before=$("$weft" query "SELECT * FROM todo ORDER BY id")
"$weft" rebuild >/dev/null
after=$("$weft" query "SELECT * FROM todo ORDER BY id")
check "rebuild keeps the same rows" test "$before" = "$after"
check "the row is there" contains "$after" "t1 | milk | 2"
out=$("$weft" query "DELETE FROM todo" 2>&1); rc=$?
check "query refuses writes" test $rc -ne 0
out=$("$weft" put todo t1 nope=1 2>&1); rc=$?
check "unknown column is refused" contains "$out" "no column nope"
out=$("$weft" --db missing.db log 2>&1); rc=$?
check "a missing store says how to create one" contains "$out" "weft init"

echo "$pass passed, $fails failed"
test $fails -eq 0
