#!/usr/bin/env bash
# Entrypoint for localhost/idemsink/postgres:15, a minimal re-implementation
# of the official image's docker-entrypoint.sh (same env vars, same two-phase
# first start). Why two phases: initialisation (user password, database,
# init scripts) runs on a temporary server that listens on the unix socket
# only, so clients never see a half-initialised database on TCP; the
# readiness line is therefore logged twice on a fresh data directory, which
# is what testcontainers' postgres.BasicWaitStrategies() counts on.
set -Eeuo pipefail

# "docker run image -c foo=bar" → "postgres -c foo=bar", as upstream.
if [ "$#" -eq 0 ] || [ "${1:0:1}" = '-' ]; then
  set -- postgres "$@"
fi

if [ "$1" != postgres ]; then
  exec "$@"   # e.g. bash, psql: run as given
fi

: "${PGDATA:=/var/lib/postgresql/data}"
export PGDATA

# As root: fix ownership, then re-exec as the postgres user. setpriv is in
# util-linux (essential), so no gosu is needed.
if [ "$(id -u)" = 0 ]; then
  mkdir -p "$PGDATA" /var/run/postgresql
  chmod 00700 "$PGDATA"
  chown -R postgres:postgres "$PGDATA" /var/run/postgresql
  exec setpriv --reuid=postgres --regid=postgres --init-groups "${BASH_SOURCE[0]}" "$@"
fi

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  : "${POSTGRES_USER:=postgres}"
  : "${POSTGRES_DB:=$POSTGRES_USER}"
  : "${POSTGRES_HOST_AUTH_METHOD:=scram-sha-256}"
  if [ -z "${POSTGRES_PASSWORD:-}" ] && [ "$POSTGRES_HOST_AUTH_METHOD" != trust ]; then
    echo >&2 'error: database is uninitialized and POSTGRES_PASSWORD is not set'
    echo >&2 '       (set POSTGRES_PASSWORD, or POSTGRES_HOST_AUTH_METHOD=trust)'
    exit 1
  fi

  # shellcheck disable=SC2086  # POSTGRES_INITDB_ARGS is word-split on purpose
  initdb --username="$POSTGRES_USER" --pwfile=<(printf '%s\n' "${POSTGRES_PASSWORD:-}") \
         --auth-local=trust --auth-host="$POSTGRES_HOST_AUTH_METHOD" \
         ${POSTGRES_INITDB_ARGS:-}
  # initdb's host lines only cover loopback; clients come from the host
  # through the port mapping, i.e. from the container network.
  printf '\nhost all all all %s\n' "$POSTGRES_HOST_AUTH_METHOD" >> "$PGDATA/pg_hba.conf"

  # Temporary server: unix socket only (listen_addresses=''), same extra
  # args as the real one (e.g. -c fsync=off).
  # (printf '%q ' with no arguments would print '' : an empty argument
  # that postgres rejects, so only with arguments.)
  shift
  extra=""
  if [ "$#" -gt 0 ]; then extra="$(printf '%q ' "$@")"; fi
  PGUSER="$POSTGRES_USER" pg_ctl -D "$PGDATA" -w \
    -o "$extra -c listen_addresses='' -p 5432" start

  psql_=(psql -v ON_ERROR_STOP=1 --no-password --no-psqlrc -U "$POSTGRES_USER")
  if [ "$POSTGRES_DB" != postgres ]; then
    "${psql_[@]}" -d postgres --set db="$POSTGRES_DB" <<<'CREATE DATABASE :"db";'
  fi

  for f in /docker-entrypoint-initdb.d/*; do
    [ -e "$f" ] || continue
    case "$f" in
      *.sh)
        if [ -x "$f" ]; then echo "$0: running $f"; "$f"
        else echo "$0: sourcing $f"; # shellcheck disable=SC1090
          . "$f"; fi ;;
      *.sql)    echo "$0: running $f"; "${psql_[@]}" -d "$POSTGRES_DB" -f "$f" ;;
      *.sql.gz) echo "$0: running $f"; gunzip -c "$f" | "${psql_[@]}" -d "$POSTGRES_DB" ;;
      *)        echo "$0: ignoring $f" ;;
    esac
  done

  pg_ctl -D "$PGDATA" -m fast -w stop
  echo
  echo 'PostgreSQL init process complete; ready for start up.'
  echo
  set -- postgres "$@"
fi

exec "$@"
