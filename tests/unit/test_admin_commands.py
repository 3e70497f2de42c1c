"""admin.commands: every command form and ProxySQL alias, client-library noise, and the exact error
messages for what is not accepted. Pure parsing, no store, no servers."""

from __future__ import annotations

import pytest

from admin.commands import (
    ACCEPTED,
    ALL_SECTIONS,
    Answer,
    CommandError,
    Diff,
    DiffRoutes,
    ExplainRoute,
    Kill,
    Layer,
    Load,
    Noop,
    Passthrough,
    ReloadTLS,
    Save,
    Section,
    SelectVariables,
    SetVariable,
    ShowCreateTable,
    ShowDatabases,
    ShowProcesslist,
    ShowTables,
    parse,
)

MODULES = [
    ("MYSQL SERVERS", (Section.SERVERS,)),
    ("MYSQL USERS", (Section.USERS,)),
    ("MYSQL QUERY RULES", (Section.QUERY_RULES,)),
    ("MYSQL VARIABLES", (Section.VARIABLES,)),
    ("MYSQL ALL", ALL_SECTIONS),
]
MOVES = [
    ("LOAD", "TO RUNTIME", Layer.MEMORY, Layer.RUNTIME),
    ("LOAD", "TO RUN", Layer.MEMORY, Layer.RUNTIME),
    ("LOAD", "FROM MEMORY", Layer.MEMORY, Layer.RUNTIME),
    ("LOAD", "FROM MEM", Layer.MEMORY, Layer.RUNTIME),
    ("LOAD", "TO MEMORY", Layer.DISK, Layer.MEMORY),
    ("LOAD", "TO MEM", Layer.DISK, Layer.MEMORY),
    ("LOAD", "FROM DISK", Layer.DISK, Layer.MEMORY),
    ("LOAD", "FROM CONFIG", Layer.CONFIG, Layer.MEMORY),
    ("SAVE", "TO DISK", Layer.MEMORY, Layer.DISK),
    ("SAVE", "FROM MEMORY", Layer.MEMORY, Layer.DISK),
    ("SAVE", "FROM MEM", Layer.MEMORY, Layer.DISK),
    ("SAVE", "TO MEMORY", Layer.RUNTIME, Layer.MEMORY),
    ("SAVE", "TO MEM", Layer.RUNTIME, Layer.MEMORY),
    ("SAVE", "FROM RUNTIME", Layer.RUNTIME, Layer.MEMORY),
    ("SAVE", "FROM RUN", Layer.RUNTIME, Layer.MEMORY),
]


@pytest.mark.parametrize("module,sections", MODULES)
@pytest.mark.parametrize("verb,direction,source,target", MOVES)
def test_every_move_and_alias(verb, direction, source, target, module, sections):
    cmd = parse(f"{verb} {module} {direction}")
    assert cmd == (Load if verb == "LOAD" else Save)(sections, source, target)
    # case, spacing, trailing semicolons and a leading comment do not matter
    sloppy = f"  /* from a script */ {verb.lower()}   {module.title()}\n {direction.lower()} ;; "
    assert parse(sloppy) == cmd


def test_canonical_text():
    assert str(parse("load mysql servers to run")) == "LOAD MYSQL SERVERS TO RUNTIME"
    assert str(parse("load mysql servers from mem")) == "LOAD MYSQL SERVERS TO RUNTIME"
    assert str(parse("load mysql users to mem")) == "LOAD MYSQL USERS FROM DISK"
    assert str(parse("LOAD MYSQL ALL FROM CONFIG")) == "LOAD MYSQL ALL FROM CONFIG"
    assert str(parse("save mysql query rules from memory")) == "SAVE MYSQL QUERY RULES TO DISK"
    assert str(parse("save mysql variables from run")) == "SAVE MYSQL VARIABLES TO MEMORY"
    assert str(parse("diff mysql users")) == "DIFF MYSQL USERS RUNTIME"


@pytest.mark.parametrize(
    "sql,message",
    [
        (
            "LOAD MYSQL SERVERS TO DISK",
            ("LOAD MYSQL SERVERS TO DISK is not a command: LOAD accepts TO RUNTIME (= FROM MEMORY), TO MEMORY (= FROM DISK), "
            "FROM CONFIG (SAVE does the other moves; to write the disk use SAVE MYSQL SERVERS TO DISK)"),
        ),
        (
            "LOAD MYSQL USERS FROM RUNTIME",
            ("LOAD MYSQL USERS FROM RUNTIME is not a command: LOAD accepts TO RUNTIME (= FROM MEMORY), TO MEMORY (= FROM DISK), "
            "FROM CONFIG (SAVE does the other moves; to write the disk use SAVE MYSQL USERS TO DISK)"),
        ),
        (
            "SAVE MYSQL USERS TO RUNTIME",
            ("SAVE MYSQL USERS TO RUNTIME is not a command: SAVE accepts TO DISK (= FROM MEMORY), TO MEMORY (= FROM RUNTIME) "
            "(LOAD does the other moves; to make memory live use LOAD MYSQL USERS TO RUNTIME; to read the disk or the "
            "config file use LOAD MYSQL USERS FROM DISK|CONFIG)"),
        ),
        (
            "SAVE MYSQL QUERY RULES FROM CONFIG",
            ("SAVE MYSQL QUERY RULES FROM CONFIG is not a command: SAVE accepts TO DISK (= FROM MEMORY), TO MEMORY (= FROM RUNTIME) "
            "(LOAD does the other moves; to make memory live use LOAD MYSQL QUERY RULES TO RUNTIME; to read the disk or the "
            "config file use LOAD MYSQL QUERY RULES FROM DISK|CONFIG)"),
        ),
        (
            "LOAD MYSQL SERVERS",
            "LOAD MYSQL SERVERS: missing the direction; LOAD accepts TO RUNTIME (= FROM MEMORY), TO MEMORY (= FROM DISK), FROM CONFIG",
        ),
        ("LOAD MYSQL SERVERS TO NOWHERE", "LOAD MYSQL SERVERS TO NOWHERE: unknown layer; LOAD accepts TO RUNTIME (= FROM MEMORY), TO MEMORY (= FROM DISK), FROM CONFIG"),
        ("SAVE MYSQL SERVERS TO DISK NOW", "SAVE MYSQL SERVERS TO DISK NOW: unknown layer; SAVE accepts TO DISK (= FROM MEMORY), TO MEMORY (= FROM RUNTIME)"),
        (
            "LOAD ADMIN VARIABLES TO RUNTIME",
            ("LOAD ADMIN VARIABLES: not in rwproxy (the admin listener is configured in the config file); "
            "modules: MYSQL SERVERS, MYSQL USERS, MYSQL QUERY RULES, MYSQL VARIABLES, MYSQL ALL"),
        ),
        (
            "SAVE SCHEDULER TO DISK",
            "SAVE SCHEDULER: not in rwproxy (rwproxy has no scheduler); modules: MYSQL SERVERS, MYSQL USERS, MYSQL QUERY RULES, MYSQL VARIABLES, MYSQL ALL",
        ),
        (
            "LOAD MYSQL SERVER TO RUNTIME",
            "LOAD MYSQL SERVER: unknown module; modules: MYSQL SERVERS, MYSQL USERS, MYSQL QUERY RULES, MYSQL VARIABLES, MYSQL ALL",
        ),
        ("LOAD TO RUNTIME", "LOAD needs a module: LOAD {MYSQL SERVERS|MYSQL USERS|MYSQL QUERY RULES|MYSQL VARIABLES|MYSQL ALL} ..."),
        ("DIFF", "DIFF needs a module: DIFF MYSQL {SERVERS|USERS|QUERY RULES|VARIABLES|ALL} [RUNTIME|DISK], or DIFF MYSQL ROUTES"),
        (
            "DIFF MYSQL SERVERS CONFIG",
            "DIFF compares memory with RUNTIME or DISK, not CONFIG; DIFF MYSQL {SERVERS|USERS|QUERY RULES|VARIABLES|ALL} [RUNTIME|DISK], or DIFF MYSQL ROUTES",
        ),
        ("KILL", "KILL expects a connection id (a number, as in SHOW PROCESSLIST): KILL [CONNECTION|QUERY] <id>"),
        ("KILL QUERY abc", "KILL expects a connection id (a number, as in SHOW PROCESSLIST): KILL [CONNECTION|QUERY] <id>"),
        ("KILL 1 2", "KILL expects a connection id (a number, as in SHOW PROCESSLIST): KILL [CONNECTION|QUERY] <id>"),
        ("EXPLAIN ROUTE", "EXPLAIN ROUTE needs a statement: EXPLAIN ROUTE [USER <name>] [SCHEMA <name>] <statement>"),
        ("EXPLAIN ROUTE USER app", "EXPLAIN ROUTE needs a statement: EXPLAIN ROUTE [USER <name>] [SCHEMA <name>] <statement>"),
        ("EXPLAIN ROUTE USER a USER b SELECT 1", "EXPLAIN ROUTE: USER given twice; EXPLAIN ROUTE [USER <name>] [SCHEMA <name>] <statement>"),
        (
            "EXPLAIN SELECT * FROM mysql_servers",
            "EXPLAIN on the admin port is EXPLAIN ROUTE [USER <name>] [SCHEMA <name>] <statement> (where the proxy would send the statement, and why)",
        ),
        (
            "SET admin-admin_credentials = 'a:b'",
            ("SET admin-admin_credentials: rwproxy has no admin-* variables (the admin listener is configured in the config file); "
            "its variables are mysql-* (SHOW VARIABLES)"),
        ),
        ("SET mysql-max_connections =", "SET mysql-max_connections: missing the value (SET mysql-max_connections = <value>)"),
        (
            "SET mysql-max_connections = 1, mysql-wait_timeout = 2",
            ("SET mysql-max_connections: expected one value, quoted or not (SET mysql-max_connections = <value>; one variable per SET), "
            "got '1, mysql-wait_timeout = 2'"),
        ),
        ("USE nope", "Unknown database 'nope' (the admin schemas are main, disk, stats, monitor)"),
        ("TRUNCATE", "malformed TRUNCATE: 'TRUNCATE' (expected TRUNCATE [TABLE] <table>)"),
        (
            "SHOW ENGINES",
            ("unknown SHOW command 'SHOW ENGINES'; SHOW accepts DATABASES, TABLES [FROM <schema>] [LIKE '<pattern>'], CREATE TABLE <table>, "
            "VARIABLES [LIKE '<pattern>'], [FULL] PROCESSLIST, WARNINGS"),
        ),
        ("PROXYSQL RESTART", f"PROXYSQL RESTART: the only PROXYSQL command rwproxy has is PROXYSQL RELOAD TLS; {ACCEPTED}"),
        ("FOO BAR", f"unknown admin command 'FOO'; {ACCEPTED}"),
        ("", f"empty statement; {ACCEPTED}"),
        (" ; ", f"empty statement; {ACCEPTED}"),
    ],
)
def test_errors_say_what_is_accepted(sql, message):
    with pytest.raises(CommandError) as e:
        parse(sql)
    assert e.value.message == message
    assert str(e.value) == message


def test_error_codes():
    with pytest.raises(CommandError) as e:
        parse("LOAD MYSQL SERVERS TO DISK")
    assert (e.value.errno, e.value.sqlstate) == (1064, "42000")  # ER_PARSE_ERROR
    with pytest.raises(CommandError) as e:
        parse("USE nope")
    assert (e.value.errno, e.value.sqlstate) == (1049, "42000")  # ER_BAD_DB_ERROR


@pytest.mark.parametrize(
    "sql,why",
    [
        ("DROP TABLE mysql_servers", "the admin schema is fixed"),
        ("CREATE TABLE x (a INT)", "the admin schema is fixed"),
        ("ALTER TABLE mysql_servers ADD COLUMN x", "the admin schema is fixed"),
        ("ATTACH DATABASE '/tmp/x' AS y", "the disk layer is attached by the proxy (use SAVE ... TO DISK / LOAD ... FROM DISK)"),
        ("DETACH DATABASE disk", "the disk layer is attached by the proxy"),
        ("PRAGMA writable_schema = 1", "it would change the store's settings (use SHOW CREATE TABLE to see a table's columns)"),
        ("VACUUM", "the store maintains itself"),
        ("BEGIN", "transactions are not supported on the admin port: each statement commits on its own"),
        ("START TRANSACTION", "transactions are not supported on the admin port: each statement commits on its own"),
        ("SAVEPOINT a", "transactions are not supported on the admin port: each statement commits on its own"),
    ],
)
def test_forbidden_statements(sql, why):
    with pytest.raises(CommandError) as e:
        parse(sql)
    keyword = sql.split()[0]
    assert e.value.message == f"{keyword} is not allowed on the admin port: {why}; {ACCEPTED}"
    assert e.value.errno == 1227  # ER_SPECIFIC_ACCESS_DENIED_ERROR


def test_diff():
    assert parse("DIFF MYSQL SERVERS") == Diff((Section.SERVERS,), Layer.RUNTIME)
    assert parse("diff mysql query rules run") == Diff((Section.QUERY_RULES,), Layer.RUNTIME)
    assert parse("DIFF MYSQL USERS DISK;") == Diff((Section.USERS,), Layer.DISK)
    assert parse("DIFF MYSQL ALL") == Diff(ALL_SECTIONS, Layer.RUNTIME)
    assert parse("diff mysql routes") == DiffRoutes()


def test_explain_route():
    assert parse("EXPLAIN ROUTE SELECT * FROM t WHERE id = 1") == ExplainRoute("SELECT * FROM t WHERE id = 1")
    assert parse("explain route user app schema shop select 1;") == ExplainRoute("select 1", "app", "shop")
    assert parse("EXPLAIN ROUTE SCHEMA `my db` USER 'app' UPDATE t SET a = 1") == ExplainRoute("UPDATE t SET a = 1", "app", "my db")
    # the statement keeps its own text, comments and case
    assert parse("EXPLAIN ROUTE /* route=reader */ Select 1").sql == "/* route=reader */ Select 1"


def test_kill_and_processlist():
    assert parse("KILL 42") == Kill(42, False)
    assert parse("kill connection 42;") == Kill(42, False)
    assert parse("KILL QUERY 7") == Kill(7, True)
    assert parse("SHOW PROCESSLIST") == ShowProcesslist(False)
    assert parse("show full processlist") == ShowProcesslist(True)


def test_proxysql_reload_tls():
    assert parse("PROXYSQL RELOAD TLS") == ReloadTLS()
    assert parse("proxysql reload tls;") == ReloadTLS()


def test_set_variable():
    assert parse("SET mysql-max_connections = 100") == SetVariable("mysql-max_connections", "100")
    assert parse("set mysql-wait_timeout='60000';") == SetVariable("mysql-wait_timeout", "60000")
    assert parse('SET mysql-log_level = "debug"') == SetVariable("mysql-log_level", "debug")
    assert parse("SET MYSQL-Multiplexing=false") == SetVariable("mysql-multiplexing", "false")
    assert parse("SET mysql-log_level = 'it''s'") == SetVariable("mysql-log_level", "it's")


@pytest.mark.parametrize(
    "sql",
    [
        "SET NAMES utf8mb4",
        "SET NAMES 'utf8mb4' COLLATE 'utf8mb4_general_ci'",
        "SET CHARACTER SET utf8",
        "SET autocommit=1",
        "SET AUTOCOMMIT = 0",
        "SET character_set_results = NULL",
        "SET SESSION sql_mode = ''",
        "SET @@session.time_zone = '+00:00'",
        "SET SQL_SELECT_LIMIT=DEFAULT",
        "SET TRANSACTION ISOLATION LEVEL READ COMMITTED",
        "USE main",
        "use `disk`",
        "COMMIT",
        "rollback;",
    ],
)
def test_client_noise_is_answered_ok(sql):
    assert parse(sql) == Noop(sql.rstrip(";"))


def test_select_variables_probe():
    cmd = parse("select @@version_comment limit 1")
    assert cmd == SelectVariables(("@@version_comment",), ("version_comment",))
    assert cmd.answer() == (("@@version_comment",), (("rwproxy admin",),))

    cmd = parse("SELECT DATABASE(), USER()")
    assert cmd.columns == ("DATABASE()", "USER()")
    assert cmd.answer({"user()": "admin@localhost"}) == (("DATABASE()", "USER()"), (("main", "admin@localhost"),))

    # mysql-connector-java's connect probe: aliases name the columns; unknown variables are NULL
    cmd = parse(
        "/* mysql-connector-java-8.0 */SELECT @@session.auto_increment_increment AS auto_increment_increment, "
        "@@character_set_client AS character_set_client, @@GLOBAL.no_such_var, version() AS v"
    )
    columns, rows = cmd.answer({"version()": "8.0.36-rwproxy"})
    assert columns == ("auto_increment_increment", "character_set_client", "@@GLOBAL.no_such_var", "v")
    assert rows == ((1, "utf8mb4", None, "8.0.36-rwproxy"),)


def test_selects_go_to_the_store():
    for sql in [
        "SELECT * FROM mysql_servers",
        "select hostgroup_id, @@version from mysql_servers",  # a variable next to a column: not a probe
        "SELECT 1",
        "INSERT INTO mysql_servers (hostgroup_id, hostname, port) VALUES (1, 'db2', 3306)",
        "UPDATE mysql_query_rules SET active = 1 WHERE rule_id = 10",
        "DELETE FROM mysql_users WHERE username = 'old'",
        "REPLACE INTO global_variables VALUES ('mysql-max_connections', '100')",
        "WITH x AS (SELECT 1) SELECT * FROM x",
        "(SELECT 1)",
    ]:
        assert parse(sql + ";") == Passthrough(sql)


def test_show_commands():
    assert parse("SHOW DATABASES") == ShowDatabases()
    assert parse("show schemas") == ShowDatabases()
    assert parse("SHOW TABLES") == ShowTables()
    assert parse("show full tables from disk like 'mysql%'") == ShowTables("disk", "mysql%")
    assert parse("SHOW TABLES IN `main`") == ShowTables("main")
    assert parse("SHOW CREATE TABLE mysql_servers") == ShowCreateTable("mysql_servers")
    assert parse("show create table disk.`mysql_users`") == ShowCreateTable("mysql_users", "disk")
    assert parse("SHOW WARNINGS") == Answer(("Level", "Code", "Message"))
    assert parse("SHOW VARIABLES") == Passthrough(
        "SELECT variable_name AS Variable_name, variable_value AS Value FROM global_variables ORDER BY variable_name"
    )
    assert parse("SHOW GLOBAL VARIABLES LIKE 'mysql-%timeout%'") == Passthrough(
        "SELECT variable_name AS Variable_name, variable_value AS Value FROM global_variables WHERE variable_name LIKE ? ORDER BY variable_name",
        ("mysql-%timeout%",),
    )


def test_truncate_is_a_delete():
    assert parse("TRUNCATE TABLE mysql_query_rules") == Passthrough("DELETE FROM mysql_query_rules")
    assert parse("truncate mysql_servers;") == Passthrough("DELETE FROM mysql_servers")


def test_sections_name_their_tables():
    assert Section.SERVERS.tables == ("mysql_servers", "mysql_replication_hostgroups")
    assert Section.USERS.tables == ("mysql_users",)
    assert Section.QUERY_RULES.tables == ("mysql_query_rules",)
    assert Section.VARIABLES.tables == ("global_variables",)
