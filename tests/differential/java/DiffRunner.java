// The Java driver's script runner of rwproxy's differential harness (tests/differential).
//
// Runs every scenario file given on the command line with MariaDB Connector/J (Debian's
// libmariadb-java) and writes a transcript of what a JDBC application sees, one JSON object per
// line on stdout (format: ../runners/README.md): getObject() values with their Java classes,
// ResultSetMetaData, update counts, generated keys, SQLWarnings (the driver runs SHOW WARNINGS
// itself), SQLExceptions (code, SQLState, message). `--server-prep true` uses server-side prepared
// statements (useServerPrepStmts=true: COM_STMT_PREPARE/EXECUTE), `false` the driver's client-side
// emulation. A `sync` step writes a barrier line and waits for "ok" on stdin.
//
// Compiled once per test session by the harness with the machine's javac (JDK 17); JSON by gson
// (Debian libgoogle-gson-java).

import com.google.gson.Gson;
import com.google.gson.GsonBuilder;
import com.google.gson.JsonArray;
import com.google.gson.JsonElement;
import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.math.BigDecimal;
import java.math.BigInteger;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.ResultSetMetaData;
import java.sql.SQLException;
import java.sql.SQLWarning;
import java.sql.Statement;
import java.sql.Types;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

public final class DiffRunner {
    // A reply that never comes becomes an error (the harness sets the timeout).
    static final int READ_TIMEOUT_MS = (int) (1000 * Double.parseDouble(System.getenv().getOrDefault("RWPROXY_DIFF_READ_TIMEOUT", "5")));
    static final Gson GSON = new GsonBuilder().serializeNulls().disableHtmlEscaping().create();
    static final PrintStream OUT = new PrintStream(System.out, true, StandardCharsets.UTF_8);
    static final BufferedReader IN = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));

    final Map<String, String> args;
    final boolean serverPrep;
    final Path tmpdir;
    final Map<String, Connection> conns = new LinkedHashMap<>();
    final Map<String, Long> threadIds = new LinkedHashMap<>();

    DiffRunner(Map<String, String> args, Path tmpdir) {
        this.args = args;
        this.serverPrep = Boolean.parseBoolean(args.get("server-prep"));
        this.tmpdir = tmpdir;
    }

    static void emit(Object o) {
        OUT.println(GSON.toJson(o));
    }

    static void barrier(String action) throws Exception {
        JsonObject b = new JsonObject();
        b.addProperty("type", "barrier");
        b.addProperty("action", action);
        emit(b);
        String line = IN.readLine();
        if (line == null || !line.trim().equals("ok")) throw new IllegalStateException("harness did not answer a barrier");
    }

    static String hex(byte[] b) {
        StringBuilder sb = new StringBuilder();
        for (byte x : b) sb.append(String.format("%02x", x));
        return sb.toString();
    }

    static JsonElement enc(Object v) {
        if (v == null) return null;
        JsonArray a = new JsonArray();
        a.add(v.getClass().getName());
        a.add(v instanceof byte[] ? hex((byte[]) v) : String.valueOf(v));
        return a;
    }

    static JsonObject error(SQLException e) {
        JsonObject o = new JsonObject();
        o.addProperty("class", e.getClass().getName());
        o.addProperty("code", e.getErrorCode());
        o.addProperty("sqlstate", e.getSQLState());
        o.addProperty("message", e.getMessage());
        return o;
    }

    static JsonObject error(Exception e) {
        if (e instanceof SQLException) return error((SQLException) e);
        JsonObject o = new JsonObject();
        o.addProperty("class", e.getClass().getName());
        o.addProperty("message", String.valueOf(e.getMessage()));
        // The runner's own mistake, not the driver's answer: the harness refuses such a baseline.
        if (e instanceof NullPointerException || e instanceof ClassCastException || e instanceof IndexOutOfBoundsException) o.addProperty("runner_bug", true);
        return o;
    }

    static JsonArray columns(ResultSetMetaData md) throws SQLException {
        JsonArray cols = new JsonArray();
        for (int i = 1; i <= md.getColumnCount(); i++) {
            JsonObject c = new JsonObject();
            c.addProperty("label", md.getColumnLabel(i));
            c.addProperty("name", md.getColumnName(i));
            c.addProperty("table", md.getTableName(i));
            c.addProperty("catalog", md.getCatalogName(i));
            c.addProperty("type", md.getColumnType(i));
            c.addProperty("typeName", md.getColumnTypeName(i));
            c.addProperty("className", md.getColumnClassName(i));
            c.addProperty("precision", md.getPrecision(i));
            c.addProperty("scale", md.getScale(i));
            c.addProperty("displaySize", md.getColumnDisplaySize(i));
            c.addProperty("nullable", md.isNullable(i));
            c.addProperty("signed", md.isSigned(i));
            c.addProperty("autoIncrement", md.isAutoIncrement(i));
            cols.add(c);
        }
        return cols;
    }

    static JsonObject resultSet(ResultSet rs) throws SQLException {
        JsonObject r = new JsonObject();
        ResultSetMetaData md = rs.getMetaData();
        r.add("columns", columns(md));
        JsonArray rows = new JsonArray();
        while (rs.next()) {
            JsonArray row = new JsonArray();
            for (int i = 1; i <= md.getColumnCount(); i++) row.add(enc(rs.getObject(i)));
            rows.add(row);
        }
        r.add("rows", rows);
        return r;
    }

    static JsonArray warnings(SQLWarning w) {
        JsonArray a = new JsonArray();
        for (; w != null; w = w.getNextWarning()) {
            JsonObject o = new JsonObject();
            o.addProperty("code", w.getErrorCode());
            o.addProperty("sqlstate", w.getSQLState());
            o.addProperty("message", w.getMessage());
            a.add(o);
        }
        return a;
    }

    /** Every result of an executed statement: result sets, update counts with their generated keys. */
    static JsonObject drain(Statement st, boolean hasResultSet, JsonArray results) throws SQLException {
        for (int guard = 0; guard < 1000; guard++) {
            if (hasResultSet) {
                try (ResultSet rs = st.getResultSet()) {
                    results.add(resultSet(rs));
                }
            } else {
                int count = st.getUpdateCount();
                if (count == -1) break;
                JsonObject ok = new JsonObject();
                ok.addProperty("updateCount", count);
                JsonArray keys = new JsonArray();
                try (ResultSet gk = st.getGeneratedKeys()) {
                    while (gk != null && gk.next()) keys.add(gk.getString(1));
                }
                ok.add("generatedKeys", keys);
                results.add(ok);
            }
            hasResultSet = st.getMoreResults();
        }
        JsonObject out = new JsonObject();
        out.add("results", results);
        out.add("warnings", warnings(st.getWarnings()));
        return out;
    }

    JsonObject query(Connection c, String sql) {
        JsonArray results = new JsonArray();
        try (Statement st = c.createStatement()) {
            boolean rs = st.execute(sql, Statement.RETURN_GENERATED_KEYS);
            return drain(st, rs, results);
        } catch (Exception e) {
            JsonObject out = new JsonObject();
            out.add("results", results);
            out.add("error", error(e));
            return out;
        }
    }

    static void bind(PreparedStatement ps, int i, JsonArray p) throws SQLException {
        String kind = p.get(0).getAsString();
        String text = p.get(1).isJsonNull() ? null : p.get(1).getAsString();
        if (text == null || kind.equals("null")) {
            ps.setNull(i, Types.NULL);
            return;
        }
        switch (kind) {
            case "int": {
                BigInteger b = new BigInteger(text);
                if (b.bitLength() < 64) ps.setLong(i, b.longValue());
                else ps.setBigDecimal(i, new BigDecimal(b));
                break;
            }
            case "float": ps.setDouble(i, Double.parseDouble(text)); break;
            case "decimal": ps.setBigDecimal(i, new BigDecimal(text)); break;
            case "str": ps.setString(i, text); break;
            case "bytes": {
                byte[] b = new byte[text.length() / 2];
                for (int k = 0; k < b.length; k++) b[k] = (byte) Integer.parseInt(text.substring(2 * k, 2 * k + 2), 16);
                ps.setBytes(i, b);
                break;
            }
            case "bool": ps.setBoolean(i, text.equals("true")); break;
            case "date": ps.setDate(i, java.sql.Date.valueOf(text)); break;
            case "datetime": ps.setTimestamp(i, java.sql.Timestamp.valueOf(text)); break;
            case "time": {
                // java.sql.Time cannot hold a negative or >24h duration: bind the server's TIME literal.
                double s = Double.parseDouble(text);
                long a = (long) Math.floor(Math.abs(s));
                ps.setString(i, String.format("%s%d:%02d:%02d", s < 0 ? "-" : "", a / 3600, (a % 3600) / 60, a % 60));
                break;
            }
            default: throw new IllegalArgumentException("unknown parameter type " + kind);
        }
    }

    JsonObject prepared(Connection c, String sql, JsonArray runs) {
        JsonObject out = new JsonObject();
        out.addProperty("binary_protocol", serverPrep);
        JsonArray outs = new JsonArray();
        try (PreparedStatement ps = c.prepareStatement(sql, Statement.RETURN_GENERATED_KEYS)) {
            for (JsonElement run : runs) {
                JsonArray results = new JsonArray();
                try {
                    JsonArray params = run.getAsJsonArray();
                    for (int i = 0; i < params.size(); i++) bind(ps, i + 1, params.get(i).getAsJsonArray());
                    outs.add(drain(ps, ps.execute(), results));
                } catch (Exception e) {
                    JsonObject r = new JsonObject();
                    r.add("results", results);
                    r.add("error", error(e));
                    outs.add(r);
                }
            }
        } catch (Exception e) {
            out.add("error", error(e));
        }
        out.add("runs", outs);
        return out;
    }

    JsonObject connect(String name, JsonObject s) throws Exception {
        JsonObject o = s.has("options") ? s.getAsJsonObject("options") : new JsonObject();
        JsonObject out = new JsonObject();
        if (o.has("handshake_collation") || o.has("charset")) {
            out.addProperty("unsupported", "Connector/J always logs in with its own utf8mb4 collation");
            return out;
        }
        String db = s.has("database") ? s.get("database").getAsString() : "";
        String url = "jdbc:mariadb://" + args.get("host") + ":" + args.get("port") + "/" + db
            + "?useServerPrepStmts=" + serverPrep + "&allowMultiQueries=true&allowLocalInfile=true"
            + "&socketTimeout=" + READ_TIMEOUT_MS + "&connectTimeout=10000";
        String user = o.has("user") ? o.get("user").getAsString() : args.get("user");
        String password = o.has("password") ? o.get("password").getAsString() : args.get("password");
        try {
            Connection c = DriverManager.getConnection(url, user, password);
            conns.put(name, c);
            long id = ((org.mariadb.jdbc.MariaDbConnection) c).getServerThreadId();
            threadIds.put(name, id);
            out.addProperty("connected", true);
            out.addProperty("thread_id", id);
        } catch (SQLException e) {
            out.add("error", error(e));
        }
        return out;
    }

    static JsonObject ok() {
        JsonObject o = new JsonObject();
        o.addProperty("ok", true);
        return o;
    }

    static JsonObject unsupported(String why) {
        JsonObject o = new JsonObject();
        o.addProperty("unsupported", why);
        return o;
    }

    JsonObject step(String op, String conn, JsonObject s) throws Exception {
        if (op.equals("sync")) {
            barrier("sync");
            return new JsonObject();
        }
        if (op.equals("sleep")) {
            Thread.sleep((long) (s.get("seconds").getAsDouble() * 1000));
            return new JsonObject();
        }
        if (op.equals("connect")) return connect(conn, s);
        Connection c = conns.get(conn);
        if (c == null) {
            JsonObject o = new JsonObject();
            JsonObject e = new JsonObject();
            e.addProperty("message", "no open connection '" + conn + "'");
            o.add("error", e);
            return o;
        }
        String file = tmpdir.resolve("load.txt").toString();
        switch (op) {
            case "query": return query(c, s.get("sql").getAsString().replace("{file}", file));
            case "load_data":
                Files.writeString(tmpdir.resolve("load.txt"), s.get("content").getAsString());
                return query(c, s.get("sql").getAsString().replace("{file}", file));
            case "prepared": {
                JsonArray runs;
                if (s.has("runs")) runs = s.getAsJsonArray("runs");
                else {
                    runs = new JsonArray();
                    runs.add(s.has("params") ? s.getAsJsonArray("params") : new JsonArray());
                }
                return prepared(c, s.get("sql").getAsString(), runs);
            }
            case "cursor": return unsupported("Connector/J has no server-side cursor (COM_STMT_FETCH) API");
            case "connection_id": {
                JsonObject o = new JsonObject();
                Long got = null;
                try (Statement st = c.createStatement(); ResultSet rs = st.executeQuery("SELECT CONNECTION_ID()")) {
                    if (rs.next()) got = rs.getLong(1);
                } catch (SQLException e) {
                    o.add("error", error(e));
                }
                o.addProperty("CONNECTION_ID() equals the handshake's connection id", got != null && got.equals(threadIds.get(conn)));
                return o;
            }
            case "kill": {
                String sql = (s.has("sql") ? s.get("sql").getAsString() : "KILL {id}").replace("{id}", String.valueOf(threadIds.get(s.get("target").getAsString())));
                return query(c, sql);
            }
            case "change_user": return unsupported("Connector/J has no COM_CHANGE_USER API");
            case "reset_connection":
                try {
                    ((org.mariadb.jdbc.MariaDbConnection) c).reset();
                    return ok();
                } catch (SQLException e) {
                    JsonObject o = new JsonObject();
                    o.add("error", error(e));
                    return o;
                }
            case "init_db":
                try {
                    c.setCatalog(s.get("database").getAsString());
                    JsonObject o = ok();
                    o.addProperty("catalog", c.getCatalog());
                    return o;
                } catch (SQLException e) {
                    JsonObject o = new JsonObject();
                    o.add("error", error(e));
                    return o;
                }
            case "ping": {
                JsonObject o = new JsonObject();
                o.addProperty("valid", c.isValid(5));
                return o;
            }
            case "close": {
                conns.remove(conn);
                c.close();
                JsonObject o = new JsonObject();
                o.addProperty("closed", true);
                return o;
            }
            default: return unsupported("unknown op " + op);
        }
    }

    void runScenario(JsonObject sc) {
        String name = sc.get("name").getAsString();
        JsonArray steps = sc.getAsJsonArray("steps");
        for (int i = 0; i < steps.size(); i++) {
            JsonObject s = steps.get(i).getAsJsonObject();
            String op = s.get("op").getAsString();
            String conn = s.has("conn") ? s.get("conn").getAsString() : "a";
            long t0 = System.nanoTime();
            JsonObject out;
            try {
                out = step(op, conn, s);
            } catch (Exception e) {
                out = new JsonObject();
                out.add("error", error(e));
            }
            JsonObject rec = new JsonObject();
            rec.addProperty("type", "step");
            rec.addProperty("scenario", name);
            rec.addProperty("index", i);
            rec.addProperty("op", op);
            rec.addProperty("conn", conn);
            rec.add("out", out);
            rec.addProperty("elapsed", (System.nanoTime() - t0) / 1e9);
            emit(rec);
        }
        for (Connection c : new ArrayList<>(conns.values())) {
            try {
                c.close();
            } catch (SQLException e) {
                // the transcript already holds whatever broke it
            }
        }
        conns.clear();
    }

    public static void main(String[] argv) throws Exception {
        Map<String, String> args = new LinkedHashMap<>();
        List<String> files = new ArrayList<>();
        args.put("host", "127.0.0.1");
        for (int i = 0; i < argv.length; i++) {
            if (argv[i].startsWith("--")) args.put(argv[i].substring(2), argv[++i]);
            else files.add(argv[i]);
        }
        Path tmp = Files.createTempDirectory("rwproxy-diff-java-");
        try {
            DiffRunner r = new DiffRunner(args, tmp);
            for (String f : files) r.runScenario(JsonParser.parseString(Files.readString(Path.of(f))).getAsJsonObject());
            JsonObject done = new JsonObject();
            done.addProperty("type", "done");
            emit(done);
        } finally {
            Files.deleteIfExists(tmp.resolve("load.txt"));
            Files.deleteIfExists(tmp);
        }
        System.exit(0);
    }
}
