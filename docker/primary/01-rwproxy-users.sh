# Primary: users for replication, the application (through rwproxy) and the proxy's monitor.
#
# Run once, on first start with an empty data dir, by the mariadb image's entrypoint from
# /docker-entrypoint-initdb.d. Without the executable bit it is *sourced* (so docker_process_sql
# from the entrypoint is available); with it, it runs on its own and falls back to the CLI.
# These statements are binlogged on purpose: the replica receives the same users by replication.
# Passwords come from the environment (see docker-compose.yml).

: "${RWPROXY_REPL_PASSWORD:?RWPROXY_REPL_PASSWORD must be set}"
: "${RWPROXY_APP_PASSWORD:?RWPROXY_APP_PASSWORD must be set}"
: "${RWPROXY_MONITOR_PASSWORD:?RWPROXY_MONITOR_PASSWORD must be set}"

rwproxy_sql() {
	if declare -F docker_process_sql >/dev/null; then
		docker_process_sql "$@"
	else
		MYSQL_PWD="$MARIADB_ROOT_PASSWORD" mariadb --protocol=socket -uroot "$@"
	fi
}

# SQL string literal body: backslash and quote escaped.
rwproxy_quote() {
	local s=${1//\\/\\\\}
	printf '%s' "${s//\'/\\\'}"
}

rwproxy_sql <<EOSQL
CREATE USER 'repl'@'%' IDENTIFIED BY '$(rwproxy_quote "$RWPROXY_REPL_PASSWORD")';
GRANT REPLICATION SLAVE ON *.* TO 'repl'@'%';

CREATE USER 'app'@'%' IDENTIFIED BY '$(rwproxy_quote "$RWPROXY_APP_PASSWORD")';
GRANT ALL PRIVILEGES ON *.* TO 'app'@'%';
-- A write that reaches the read-only replica must fail, not succeed quietly.
REVOKE READ_ONLY ADMIN ON *.* FROM 'app'@'%';

CREATE USER 'monitor'@'%' IDENTIFIED BY '$(rwproxy_quote "$RWPROXY_MONITOR_PASSWORD")';
GRANT REPLICATION CLIENT, SLAVE MONITOR, PROCESS ON *.* TO 'monitor'@'%';
EOSQL
