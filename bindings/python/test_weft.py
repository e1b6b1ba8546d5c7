"""Tests of the Python bindings against a real libweft (WEFT_LIB)."""
import os
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import weft  # noqa: E402

SCHEMA = "CREATE TABLE todo(id TEXT PRIMARY KEY, title TEXT, votes INTEGER DEFAULT 0, owner TEXT UNIQUE)"


class BindingTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()

    def tearDown(self):
        self.dir.cleanup()

    def path(self, name):
        return os.path.join(self.dir.name, name)

    def test_append_is_idempotent_per_key(self):
        with weft.Store(self.path("a.db"), create=True) as db:
            first, dup = db.append("home", "note", "hello", idem_key="k1")
            again, dup2 = db.append("home", "note", "hello!", idem_key="k1")
            self.assertFalse(dup)
            self.assertTrue(dup2)
            self.assertEqual(first, again)
            self.assertEqual(len(db.device_id), 63)

    def test_tables_merge_and_sync(self):
        with weft.Store(self.path("a.db"), create=True) as a, weft.Store(self.path("b.db"), create=True) as b:
            for db in (a, b):
                db.schema_define(SCHEMA)
            with a.transaction("home") as t:
                t.set("todo", "t1", "title", "milk")
                t.incr("todo", "t1", "votes", 2)
            with b.transaction("home") as t:
                t.incr("todo", "t1", "votes", 3)
            stats = a.sync_local(b)
            self.assertEqual(stats["events_sent"], 1)
            self.assertEqual(stats["events_received"], 1)
            rows_a = a.query("SELECT * FROM todo ORDER BY id")
            self.assertEqual(rows_a, b.query("SELECT * FROM todo ORDER BY id"))
            self.assertEqual(rows_a, [{"id": "t1", "title": "milk", "votes": 5, "owner": None}])
            a.rebuild()
            self.assertEqual(a.query("SELECT * FROM todo ORDER BY id"), rows_a)
            a.verify()

    def test_errors_carry_code_name_and_message(self):
        with self.assertRaises(weft.WeftError) as cm:
            weft.Store(self.path("missing.db"))
        self.assertEqual(cm.exception.name, "WEFT_ENOTFOUND")
        self.assertIn("weft init", cm.exception.message)
        with weft.Store(self.path("a.db"), create=True) as db:
            db.schema_define(SCHEMA)
            t = db.transaction("home")
            with self.assertRaises(weft.WeftError) as cm:
                t.set("todo", "t1", "nope", 1)
            self.assertIn("no column nope", cm.exception.message)
            t.abort()
            with self.assertRaises(weft.WeftError) as cm:
                db.query("DELETE FROM todo")
            self.assertEqual(cm.exception.name, "WEFT_EPERM")


if __name__ == "__main__":
    unittest.main()
