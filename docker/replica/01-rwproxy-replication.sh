# Replica: replicate from the `primary` service with GTIDs, starting from the beginning of its
# binlog (so the users created by docker/primary/01-rwproxy-users.sh arrive here too).
#
# Run once, on first start with an empty data dir, by the mariadb image's entrypoint from
# /docker-entrypoint-initdb.d (sourced unless executable; see the primary's script).
# The replication threads keep running after the entrypoint's temporary server is replaced by the
# real one (master.info persists), and retry every 5 s until the primary answers.

: "${RWPROXY_REPL_PASSWORD:?RWPROXY_REPL_PASSWORD must be set}"

rwproxy_sql() {
	if declare -F docker_process_sql >/dev/null; then
		docker_process_sql "$@"
	else
		MYSQL_PWD="$MARIADB_ROOT_PASSWORD" mariadb --protocol=socket -uroot "$@"
	fi
}

rwproxy_quote() {
	local s=${1//\\/\\\\}
	printf '%s' "${s//\'/\\\'}"
}

rwproxy_sql <<EOSQL
-- Nothing local may enter this server's binlog: with gtid_strict_mode a local GTID would
-- conflict with the primary's sequence.
SET SESSION sql_log_bin = 0;
CHANGE MASTER TO
  master_host = '${RWPROXY_PRIMARY_HOST:-primary}',
  master_port = ${RWPROXY_PRIMARY_PORT:-3306},
  master_user = 'repl',
  master_password = '$(rwproxy_quote "$RWPROXY_REPL_PASSWORD")',
  master_use_gtid = slave_pos,
  master_connect_retry = 5;
START SLAVE;
EOSQL
