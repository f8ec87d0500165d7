#!/usr/bin/env bash
# A throwaway PostgreSQL server for tests and trials: its own data folder, a free local port,
# trust authentication for the role `speechnas` on 127.0.0.1 only.
#   bash scripts/pg.sh start DIR   initdb into a new temporary folder, start the server, note
#                                  the folder and port in DIR (created if missing); prints the URL
#   bash scripts/pg.sh stop DIR    stop the server noted in DIR and delete its temporary folder
#   bash scripts/pg.sh bin         the folder of the PostgreSQL binaries used
# Exits 3 when the binaries are missing (Debian: apt-get install postgresql). As root, the
# server runs as the `postgres` user, since PostgreSQL refuses to run as root.
set -euo pipefail

pg_bin() {
  if command -v pg_ctl >/dev/null && command -v initdb >/dev/null; then
    dirname "$(command -v pg_ctl)"
    return
  fi
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  if [ -n "$d" ] && [ -x "$d/pg_ctl" ] && [ -x "$d/initdb" ]; then
    echo "$d"
    return
  fi
  echo "PostgreSQL binaries (pg_ctl, initdb) not found; install them with" \
    "'apt-get install postgresql' (scripts/install.sh --dev does this as root)" >&2
  exit 3
}

as_owner() {  # runs "$@" as the server's user
  if [ "$(id -u)" = 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

cmd="${1:-}"
case "$cmd" in
  bin)
    pg_bin
    ;;
  start)
    dir="${2:?usage: pg.sh start DIR}"
    bin=$(pg_bin)
    mkdir -p "$dir"
    # The server's own folder, owned by its user (DIR may sit below folders it cannot enter).
    root=$(as_owner mktemp -d "${TMPDIR:-/tmp}/speechnas-pg.XXXXXX")
    echo "$root" >"$dir/root"
    as_owner "$bin/initdb" -D "$root/data" -U speechnas --auth=trust -E UTF8 --no-sync \
      >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; exit 1; }
    port=$(free_port)
    as_owner "$bin/pg_ctl" -D "$root/data" -l "$root/server.log" -w -t 60 \
      -o "-h 127.0.0.1 -p $port -k $root -c fsync=off -c max_connections=200" start >/dev/null \
      || { cat "$root/server.log" >&2; exit 1; }
    echo "$port" >"$dir/port"
    echo "postgresql+psycopg2://speechnas@127.0.0.1:$port/postgres"
    ;;
  stop)
    dir="${2:?usage: pg.sh stop DIR}"
    bin=$(pg_bin)
    root=$(cat "$dir/root")
    as_owner "$bin/pg_ctl" -D "$root/data" -m fast -w stop >/dev/null
    rm -rf "$root"
    ;;
  *)
    echo "usage: pg.sh start DIR | stop DIR | bin" >&2
    exit 2
    ;;
esac
