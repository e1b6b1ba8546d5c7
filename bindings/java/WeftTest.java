import java.nio.file.Files;
import java.nio.file.Path;
import org.weft.Weft;

/** Tests of the Java bindings against a real libweft (no test framework needed). */
public class WeftTest {
    static int failures = 0;

    static void check(boolean ok, String what) {
        if (!ok) {
            System.out.println("FAIL: " + what);
            failures++;
        }
    }

    public static void main(String[] args) throws Exception {
        Path dir = Files.createTempDirectory("weft-java");
        String schema = "CREATE TABLE todo(id TEXT PRIMARY KEY, title TEXT, votes INTEGER DEFAULT 0)";
        try (Weft.Store a = Weft.Store.open(dir.resolve("a.db").toString(), true, null);
             Weft.Store b = Weft.Store.open(dir.resolve("b.db").toString(), true, null)) {
            check(a.deviceId().length() == 63, "device id length");
            String first = a.append("home", "note", "k1", "hello".getBytes());
            check(first.equals(a.append("home", "note", "k1", "again".getBytes())), "idempotent append");
            a.schemaDefine(schema);
            b.schemaDefine(schema);
            try (Weft.Txn t = a.begin("home", null)) {
                t.set("todo", "t1", "title", "milk");
                t.incr("todo", "t1", "votes", 2);
                t.commit();
            }
            try (Weft.Txn t = b.begin("home", null)) {
                t.incr("todo", "t1", "votes", 3);
                t.commit();
            }
            long[] st = a.syncLocal(b);
            check(st[0] == 2 && st[1] == 1, "sync moved 2 events out and 1 in, got " + st[0] + "/" + st[1]);
            String[][] ra = a.query("SELECT id, title, votes FROM todo ORDER BY id");
            String[][] rb = b.query("SELECT id, title, votes FROM todo ORDER BY id");
            check(java.util.Arrays.deepEquals(ra, rb), "identical tables");
            check(ra.length == 2 && ra[1][1].equals("milk") && ra[1][2].equals("5"), "merged row");
            a.verify();
            try (Weft.Txn t = a.begin("home", null)) {
                t.set("todo", "t1", "nope", 1);
                check(false, "unknown column must throw");
            } catch (Weft.WeftException e) {
                check(e.name.equals("WEFT_EINVAL") && e.getMessage().contains("no column nope"), "error message");
            }
        }
        try {
            Weft.Store.open(dir.resolve("missing.db").toString(), false, null);
            check(false, "missing store must throw");
        } catch (Weft.WeftException e) {
            check(e.name.equals("WEFT_ENOTFOUND"), "missing store code");
        }
        System.out.println(failures == 0 ? "java bindings: all checks passed" : failures + " failed");
        System.exit(failures == 0 ? 0 : 1);
    }
}
