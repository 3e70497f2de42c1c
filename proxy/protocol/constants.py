"""MySQL client/server protocol constants.

Theory of operation: names and values come from the MySQL and MariaDB protocol documentation
(https://dev.mysql.com/doc/dev/mysql-server/latest/PAGE_PROTOCOL.html,
https://mariadb.com/kb/en/clientserver-protocol/). Enums here are pure data; nothing in this module
does I/O.
"""

from __future__ import annotations

import enum

MAX_PAYLOAD = 0xFFFFFF  # a payload of exactly this length is continued in the next packet


class Command(enum.IntEnum):
    """Command byte of a client packet (first payload byte in the command phase)."""

    SLEEP = 0x00
    QUIT = 0x01
    INIT_DB = 0x02
    QUERY = 0x03
    FIELD_LIST = 0x04
    CREATE_DB = 0x05
    DROP_DB = 0x06
    REFRESH = 0x07
    SHUTDOWN = 0x08
    STATISTICS = 0x09
    PROCESS_INFO = 0x0A
    CONNECT = 0x0B
    PROCESS_KILL = 0x0C
    DEBUG = 0x0D
    PING = 0x0E
    TIME = 0x0F
    DELAYED_INSERT = 0x10
    CHANGE_USER = 0x11
    BINLOG_DUMP = 0x12
    TABLE_DUMP = 0x13
    CONNECT_OUT = 0x14
    REGISTER_SLAVE = 0x15
    STMT_PREPARE = 0x16
    STMT_EXECUTE = 0x17
    STMT_SEND_LONG_DATA = 0x18
    STMT_CLOSE = 0x19
    STMT_RESET = 0x1A
    SET_OPTION = 0x1B
    STMT_FETCH = 0x1C
    DAEMON = 0x1D
    BINLOG_DUMP_GTID = 0x1E
    RESET_CONNECTION = 0x1F


class Capability(enum.IntFlag):
    """Capability flags (lower 32 bits; MariaDB's extended flags live in a separate field)."""

    LONG_PASSWORD = 1 << 0  # also "CLIENT_MYSQL": a MariaDB server clears it to announce extended caps
    FOUND_ROWS = 1 << 1
    LONG_FLAG = 1 << 2
    CONNECT_WITH_DB = 1 << 3
    NO_SCHEMA = 1 << 4
    COMPRESS = 1 << 5
    ODBC = 1 << 6
    LOCAL_FILES = 1 << 7
    IGNORE_SPACE = 1 << 8
    PROTOCOL_41 = 1 << 9
    INTERACTIVE = 1 << 10
    SSL = 1 << 11
    IGNORE_SIGPIPE = 1 << 12
    TRANSACTIONS = 1 << 13
    RESERVED = 1 << 14
    SECURE_CONNECTION = 1 << 15
    MULTI_STATEMENTS = 1 << 16
    MULTI_RESULTS = 1 << 17
    PS_MULTI_RESULTS = 1 << 18
    PLUGIN_AUTH = 1 << 19
    CONNECT_ATTRS = 1 << 20
    PLUGIN_AUTH_LENENC_CLIENT_DATA = 1 << 21
    CAN_HANDLE_EXPIRED_PASSWORDS = 1 << 22
    SESSION_TRACK = 1 << 23
    DEPRECATE_EOF = 1 << 24
    OPTIONAL_RESULTSET_METADATA = 1 << 25
    QUERY_ATTRIBUTES = 1 << 27
    SSL_VERIFY_SERVER_CERT = 1 << 30
    REMEMBER_OPTIONS = 1 << 31


class MariaDBCapability(enum.IntFlag):
    """MariaDB's extended capability flags: the 4 bytes a MariaDB server puts in the greeting's
    filler (and a client in its handshake response's) when CLIENT_MYSQL (bit 0) is clear
    (https://mariadb.com/kb/en/connection/#capabilities). The proxy keeps them in bits 32..63 of
    the capabilities it mirrors to a backend (`MARIADB_SHIFT`)."""

    PROGRESS = 1 << 0  # progress reports (ERR 0xFFFF packets inside a reply)
    COM_MULTI = 1 << 1
    STMT_BULK_OPERATIONS = 1 << 2  # COM_STMT_BULK_EXECUTE
    EXTENDED_METADATA = 1 << 3  # column definitions carry extended type info (json, uuid, ...)
    CACHE_METADATA = 1 << 4  # COM_STMT_EXECUTE may omit column definitions


MARIADB_SHIFT = 32
# The extended capabilities the proxy offers (when the writer offers them): those that change no
# reply's framing. Extended metadata adds a field inside each column definition, which the reply
# scanner skips by count. Not offered: PROGRESS (ERR-like packets inside a reply), bulk operations
# (a command the proxy does not relay) and metadata caching (a reply shape keyed to one connection's
# statement cache, which multiplexing breaks).
PROXY_MARIADB_CAPABILITIES = MariaDBCapability.EXTENDED_METADATA


class SessionTrack(enum.IntEnum):
    """Entry types of the session state information in an OK packet
    (https://mariadb.com/kb/en/ok_packet/#session-change-type)."""

    SYSTEM_VARIABLES = 0
    SCHEMA = 1
    STATE_CHANGE = 2
    GTIDS = 3
    TRANSACTION_CHARACTERISTICS = 4
    TRANSACTION_STATE = 5


# What the proxy offers its clients. Flags that change the shape of what flows through the relay
# are negotiated end to end: the backend connection is opened with the client's choice of them.
PROXY_CAPABILITIES = (
    Capability.LONG_PASSWORD
    | Capability.FOUND_ROWS
    | Capability.LONG_FLAG
    | Capability.CONNECT_WITH_DB
    | Capability.NO_SCHEMA
    | Capability.ODBC
    | Capability.LOCAL_FILES
    | Capability.IGNORE_SPACE
    | Capability.PROTOCOL_41
    | Capability.INTERACTIVE
    | Capability.IGNORE_SIGPIPE
    | Capability.TRANSACTIONS
    | Capability.RESERVED
    | Capability.SECURE_CONNECTION
    | Capability.MULTI_STATEMENTS
    | Capability.MULTI_RESULTS
    | Capability.PS_MULTI_RESULTS
    | Capability.PLUGIN_AUTH
    | Capability.CONNECT_ATTRS
    | Capability.PLUGIN_AUTH_LENENC_CLIENT_DATA
    | Capability.CAN_HANDLE_EXPIRED_PASSWORDS
    | Capability.SESSION_TRACK
    | Capability.DEPRECATE_EOF
)

# Client-chosen flags that the backend connection must mirror so relayed bytes mean the same thing
# on both legs (result format, OK packet format, affected-rows semantics, statement batching).
MIRRORED_CAPABILITIES = (
    Capability.FOUND_ROWS
    | Capability.LONG_FLAG
    | Capability.NO_SCHEMA
    | Capability.ODBC
    | Capability.LOCAL_FILES
    | Capability.IGNORE_SPACE
    | Capability.INTERACTIVE
    | Capability.MULTI_STATEMENTS
    | Capability.MULTI_RESULTS
    | Capability.PS_MULTI_RESULTS
    | Capability.DEPRECATE_EOF
    | PROXY_MARIADB_CAPABILITIES << MARIADB_SHIFT  # MariaDB's extended capabilities, bits 32..63
)

# Always requested from a backend, whatever the client said.
BACKEND_REQUIRED = (
    Capability.LONG_PASSWORD
    | Capability.PROTOCOL_41
    | Capability.TRANSACTIONS
    | Capability.SECURE_CONNECTION
    | Capability.PLUGIN_AUTH
    | Capability.PLUGIN_AUTH_LENENC_CLIENT_DATA
    | Capability.CONNECT_ATTRS
)


class ServerStatus(enum.IntFlag):
    IN_TRANS = 0x0001
    AUTOCOMMIT = 0x0002
    MORE_RESULTS_EXISTS = 0x0008
    NO_GOOD_INDEX_USED = 0x0010
    NO_INDEX_USED = 0x0020
    CURSOR_EXISTS = 0x0040
    LAST_ROW_SENT = 0x0080
    DB_DROPPED = 0x0100
    NO_BACKSLASH_ESCAPES = 0x0200
    METADATA_CHANGED = 0x0400
    QUERY_WAS_SLOW = 0x0800
    PS_OUT_PARAMS = 0x1000
    IN_TRANS_READONLY = 0x2000
    SESSION_STATE_CHANGED = 0x4000


class CursorType(enum.IntFlag):
    NO_CURSOR = 0
    READ_ONLY = 1
    FOR_UPDATE = 2
    SCROLLABLE = 4


class ErrorCode(enum.IntEnum):
    """Server error codes the proxy itself sends, with their SQLSTATE in SQLSTATE below.

    Never a client-library number (2000-2999): libmariadb clients (the `mariadb` CLI, sysbench)
    turn an ERR packet carrying one into "2027 Received malformed packet" and the message is lost.
    make_err refuses them."""

    CON_COUNT_ERROR = 1040
    OUT_OF_RESOURCES = 1041
    HANDSHAKE_ERROR = 1043
    ACCESS_DENIED = 1045
    UNKNOWN_COM_ERROR = 1047
    BAD_DB_ERROR = 1049
    SERVER_SHUTDOWN = 1053
    HOST_IS_BLOCKED = 1129
    NET_PACKET_TOO_LARGE = 1153
    NET_READ_ERROR = 1158
    NET_READ_INTERRUPTED = 1159
    NET_PACKETS_OUT_OF_ORDER = 1156
    TOO_MANY_USER_CONNECTIONS = 1203
    NOT_SUPPORTED_AUTH_MODE = 1251
    UNKNOWN_STMT_HANDLER = 1243
    MALFORMED_PACKET = 1835
    QUERY_INTERRUPTED = 1317  # a statement stopped by its timeout (the server's own word for KILL QUERY)
    CONNECTION_KILLED = 1927  # MariaDB: the session's server connection is gone, with its state
    CLIENT_INTERACTION_TIMEOUT = 4031  # MySQL 8.0.24+: sent before closing an idle client
    USER_IS_BLOCKED = 4150  # MariaDB: too many failed logins for an account (max_password_errors)
    # ProxySQL's own: no server of a hostgroup could be reached within connect_timeout_server_max.
    HOSTGROUP_UNREACHABLE = 9001


SQLSTATE: dict[int, str] = {
    ErrorCode.CON_COUNT_ERROR: "08004",
    ErrorCode.OUT_OF_RESOURCES: "HY000",
    ErrorCode.HOST_IS_BLOCKED: "HY000",
    ErrorCode.USER_IS_BLOCKED: "HY000",
    ErrorCode.HANDSHAKE_ERROR: "08S01",
    ErrorCode.ACCESS_DENIED: "28000",
    ErrorCode.UNKNOWN_COM_ERROR: "08S01",
    ErrorCode.BAD_DB_ERROR: "42000",
    ErrorCode.SERVER_SHUTDOWN: "08S01",
    ErrorCode.NET_PACKET_TOO_LARGE: "08S01",
    ErrorCode.NET_READ_ERROR: "08S01",
    ErrorCode.NET_READ_INTERRUPTED: "08S01",
    ErrorCode.NET_PACKETS_OUT_OF_ORDER: "08S01",
    ErrorCode.TOO_MANY_USER_CONNECTIONS: "42000",
    ErrorCode.NOT_SUPPORTED_AUTH_MODE: "08004",
    ErrorCode.UNKNOWN_STMT_HANDLER: "HY000",
    ErrorCode.MALFORMED_PACKET: "HY000",
    ErrorCode.CLIENT_INTERACTION_TIMEOUT: "HY000",
    ErrorCode.QUERY_INTERRUPTED: "70100",
    ErrorCode.CONNECTION_KILLED: "70100",
    ErrorCode.HOSTGROUP_UNREACHABLE: "HY000",
}

# Payload header bytes
OK_HEADER = 0x00
EOF_HEADER = 0xFE
ERR_HEADER = 0xFF
LOCAL_INFILE_HEADER = 0xFB
AUTH_SWITCH_HEADER = 0xFE
AUTH_MORE_DATA_HEADER = 0x01

# caching_sha2_password "more data" status bytes
CACHING_SHA2_FAST_AUTH_OK = 0x03
CACHING_SHA2_FULL_AUTH = 0x04
CACHING_SHA2_REQUEST_PUBLIC_KEY = 0x02

NATIVE_PASSWORD = "mysql_native_password"
CACHING_SHA2_PASSWORD = "caching_sha2_password"
SUPPORTED_AUTH_PLUGINS = (NATIVE_PASSWORD, CACHING_SHA2_PASSWORD)


class ColumnType(enum.IntEnum):
    """Column types of a ColumnDefinition41 (the ones the proxy itself sends, and their neighbours)
    (https://dev.mysql.com/doc/dev/mysql-server/latest/field__types_8h.html)."""

    DECIMAL = 0x00
    TINY = 0x01
    SHORT = 0x02
    LONG = 0x03
    FLOAT = 0x04
    DOUBLE = 0x05
    NULL = 0x06
    TIMESTAMP = 0x07
    LONGLONG = 0x08
    INT24 = 0x09
    DATE = 0x0A
    TIME = 0x0B
    DATETIME = 0x0C
    YEAR = 0x0D
    VARCHAR = 0x0F
    BIT = 0x10
    JSON = 0xF5
    NEWDECIMAL = 0xF6
    BLOB = 0xFC
    VAR_STRING = 0xFD
    STRING = 0xFE


class ColumnFlag(enum.IntFlag):
    """Column definition flags (the ones the proxy sets)."""

    NOT_NULL = 0x0001
    PRI_KEY = 0x0002
    BLOB = 0x0010
    UNSIGNED = 0x0020
    BINARY = 0x0080
    NUM = 0x8000


BINARY_COLLATION = 63  # the "binary" character set: numbers and byte strings
UTF8MB4_COLLATION = 45  # utf8mb4_general_ci
