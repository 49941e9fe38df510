#!/bin/sh
# The demo: a runbook deploying a small shop's database and cache (on a
# throwaway PostgreSQL and Redis this script starts) fails at its third step,
# is fixed, resumes exactly there, waits for a person, finishes, and leaves
# an audit trail whose tampering is detected.
set -eu
cd "$(dirname "$0")/.."
root=$PWD
scripts/deps.sh test
echo "== building runbook"
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
ninja -C build >/dev/null
RB=$root/build/runbook
PGBIN=/usr/lib/postgresql/15/bin

work=$(mktemp -d /tmp/runbook-demo.XXXXXX)
chmod 755 "$work"
pg_started=""; redis_pid=""
cleanup() {
  [ -n "$pg_started" ] && runuser -u postgres -- "$PGBIN/pg_ctl" -D "$work/pgdata" -m fast stop >/dev/null 2>&1 || true
  [ -n "$redis_pid" ] && kill "$redis_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT INT TERM
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "starting a throwaway PostgreSQL 15 and Redis on loopback ports"
pg_port=$(free_port); redis_port=$(free_port)
admin_pw=$(openssl rand -hex 16)
mkdir -p "$work/pgdata" "$work/pgsock"
printf '%s\n' "$admin_pw" > "$work/pwfile"
: > "$work/pg.log"
chown -R postgres:postgres "$work/pgdata" "$work/pgsock" "$work/pwfile" "$work/pg.log"
(cd "$work" && runuser -u postgres -- "$PGBIN/initdb" -D "$work/pgdata" -U postgres --pwfile="$work/pwfile" \
  --auth=scram-sha-256 --no-sync --no-instructions -E UTF8 --locale=C >/dev/null)
(cd "$work" && runuser -u postgres -- "$PGBIN/pg_ctl" -D "$work/pgdata" -l "$work/pg.log" -w \
  -o "-c listen_addresses=127.0.0.1 -c port=$pg_port -c unix_socket_directories=$work/pgsock" start >/dev/null)
pg_started=1
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no --daemonize no >"$work/redis.log" 2>&1 &
redis_pid=$!
echo "PostgreSQL on 127.0.0.1:$pg_port, Redis on 127.0.0.1:$redis_port, work folder $work"

cp -r runbooks/demo/shop.lua runbooks/demo/migrations "$work/"
cd "$work"
export DEMO_ADMIN_URL="postgres://postgres:$admin_pw@127.0.0.1:$pg_port/postgres"
export DEMO_PG_PORT=$pg_port DEMO_REDIS_URL="redis://127.0.0.1:$redis_port/0" NO_COLOR=${NO_COLOR:-}

say "the runbook, as a checklist (runbook doc shop.lua | head)"
$RB doc shop.lua | sed -n '1,12p'

say "1. runbook exec shop.lua   (its second migration has a bug)"
set +e; $RB exec shop.lua --yes; code=$?; set -e
echo "exit code $code"

say "runbook status last"
$RB status last

say "2. fix the migration, then run the same command again: it resumes at D3"
cp "$root/runbooks/demo/fixes/20261102090000_add_amount.sql" migrations/
set +e; $RB exec shop.lua --yes; code=$?; set -e
echo "exit code $code (3: waiting for a person)"

say "3. a person confirms the manual step"
$RB confirm last M7 --note "announced in #shop-launch"

say "   ... and the same command finishes the run"
$RB exec shop.lua --yes

say "4. the audit trail: who did what (runbook log last --step D2, D3, M7)"
$RB log last --step D2
$RB log last --step D3
$RB log last --step M7
echo "... $($RB log last | wc -l) events in all. The generated password is in none in clear: the"
echo "D1 memo and output are sealed with AES-256-GCM ($(grep -o '"\$secret"' .runbook/runs/*/journal.jsonl | wc -l) sealed values), and the SQL that set it reads"
grep -o "PASSWORD '[^']*'" .runbook/runs/*/journal.jsonl | head -1

say "runbook audit verify last"
$RB audit verify last

say "5. someone edits the journal: audit verify names the event"
run=$(ls .runbook/runs | head -1)
cp -r .runbook tampered
sed -i '5s/"attempt":1/"attempt":9/' "tampered/runs/$run/journal.jsonl"
set +e; $RB audit verify last --state tampered; code=$?; set -e
echo "exit code $code"
say "demo complete"
