# Sourced by the runbook.pg benchmarks: a throwaway PostgreSQL 15 in a
# temporary folder on a free loopback port, with durable settings (fsync
# and synchronous_commit on), stopped and removed on exit.
#
#   . bench/pg_lib.sh; pg_start; psql_ -d postgres -c ...; url dbname
#   $work is the scratch folder (removed on exit; add cleanups to on_exit).

PGBIN=${RUNBOOK_PG_BIN:-/usr/lib/postgresql/15/bin}
work=$(mktemp -d /tmp/pgbench-XXXXXX)
chmod 755 "$work"
mkdir -p "$work/data" "$work/sock" "$work/out"
touch "$work/log"
chown -R postgres:postgres "$work/data" "$work/sock" "$work/log"
chmod 777 "$work/out"
free_port() { python3 -c "import socket;s=socket.socket();s.bind(('127.0.0.1',0));print(s.getsockname()[1])"; }
port=$(free_port)
on_exit=()

pg_stop() {
  for c in "${on_exit[@]}"; do eval "$c" || true; done
  if [ -f "$work/data/postmaster.pid" ]; then
    pid=$(head -1 "$work/data/postmaster.pid")
    kill -INT "$pid" 2>/dev/null || true
    for _ in $(seq 200); do [ -f "$work/data/postmaster.pid" ] || break; sleep 0.05; done
  fi
  rm -rf "$work"
}
trap pg_stop EXIT

pg_start() {
  (cd "$work" && runuser -u postgres -- "$PGBIN/initdb" -D "$work/data" -U postgres --auth=trust \
    --no-sync --no-instructions -E UTF8 --locale=C >/dev/null)
  printf 'local all all trust\nhost all all 127.0.0.1/32 trust\n' >"$work/data/pg_hba.conf"
  (cd "$work" && runuser -u postgres -- "$PGBIN/pg_ctl" -D "$work/data" -l "$work/log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$work/sock -c shared_buffers=512MB -c max_wal_size=4GB -c checkpoint_timeout=30min -c autovacuum=off" \
    start >/dev/null)
}

psql_() { PGOPTIONS="-c client_min_messages=warning" psql -X -q -v ON_ERROR_STOP=1 -h "$work/sock" -p "$port" -U postgres "$@"; }
url() { echo "postgres://postgres@127.0.0.1:$port/$1"; }

now() { date +%s.%N; }
secs() { python3 -c "print(f'{$2 - $1:.3f}')"; }
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
