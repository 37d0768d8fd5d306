#!/bin/sh
# A hospital's PostgreSQL for its datasite's PySyft store: the cluster is made on first start,
# with the role and database the datasite's --db URL names and the password from a secret file.
set -eu
: "${POSTGRES_USER:=medsyft}" "${POSTGRES_DB:=medsyft}" "${POSTGRES_PASSWORD_FILE:=/run/secrets/db_password}"
BIN=$(ls -d /usr/lib/postgresql/*/bin | tail -n 1)
PGDATA=/var/lib/postgresql/data
install -d -o postgres /var/run/postgresql
# The marker is written last: a first start that failed half-way (nothing stored yet) starts over.
if [ ! -e "$PGDATA/.medsyft-initialized" ]; then
    rm -rf "${PGDATA:?}"/* "$PGDATA"/.[!.]* 2>/dev/null || true
    install -d -o postgres -m 0700 "$PGDATA"
    tr -d '\n' < "$POSTGRES_PASSWORD_FILE" > /tmp/pw && chown postgres /tmp/pw
    su postgres -s /bin/sh -c "$BIN/initdb -D $PGDATA -U postgres --auth-local=peer --auth-host=scram-sha-256 --pwfile=/tmp/pw -E UTF8" >/dev/null
    su postgres -s /bin/sh -c "$BIN/pg_ctl -D $PGDATA -w -o '-c listen_addresses=' start" >/dev/null
    PW=$(sed "s/'/''/g" /tmp/pw)
    su postgres -s /bin/sh -c "psql -q -v ON_ERROR_STOP=1 -h /var/run/postgresql -d postgres" <<SQL
CREATE ROLE "$POSTGRES_USER" LOGIN PASSWORD '$PW';
CREATE DATABASE "$POSTGRES_DB" OWNER "$POSTGRES_USER";
SQL
    su postgres -s /bin/sh -c "$BIN/pg_ctl -D $PGDATA -w stop" >/dev/null
    echo "host all all 0.0.0.0/0 scram-sha-256" >> "$PGDATA/pg_hba.conf"
    rm -f /tmp/pw
    touch "$PGDATA/.medsyft-initialized"
fi
exec su postgres -s /bin/sh -c "exec $BIN/postgres -D $PGDATA -c listen_addresses='*'"
