#!/usr/bin/env bash
# runbook.pg benchmark: each figure side by side with the tool people use
# today, in one run on this machine, against a real PostgreSQL 15 started
# here (durable settings: fsync and synchronous_commit on).
#
#   1. copy 1,000,000 rows between two databases, checkpoint every 50,000
#      rows (pg.copy_rows)  vs  psql "\copy (...) to stdout" | psql "\copy ... from stdin"
#   2. in-place backfill of 1,000,000 rows in batches of 10,000
#      (pg.backfill)  vs  one UPDATE of all rows
#   3. backup to a file (pg.backup, streamed, sha256)  vs  pg_dump -Fc > file
#
# Each runbook figure is a whole `runbook exec` process, as an operator
# runs it. Every measurement is repeated ($REPEAT, default 3); the median
# is compared. Usage: bench/pg_bench.sh [path/to/runbook]
set -euo pipefail

RUNBOOK=${1:-${RUNBOOK_BIN:-build/runbook}}
RUNBOOK=$(realpath "$RUNBOOK")
ROWS=${ROWS:-1000000}
REPEAT=${REPEAT:-3}

. "$(dirname "$0")/pg_lib.sh"
pg_start

psql_ -d postgres -c "CREATE DATABASE src" -c "CREATE DATABASE dst"
echo "generating $ROWS rows..." >&2
psql_ -d src <<SQL
CREATE TABLE items (id bigint PRIMARY KEY, a int NOT NULL, b text NOT NULL, c timestamptz NOT NULL, d numeric(12,2), new_col int);
INSERT INTO items SELECT g, (g::bigint * 7919) % 100003, md5(g::text) || '-' || (g % 977), timestamptz '2024-01-01' + g * interval '1 second', g / 3.0, NULL
  FROM generate_series(1, $ROWS) g;
VACUUM ANALYZE items;
CREATE TABLE template AS TABLE items;
SQL
psql_ -d dst -c "CREATE TABLE items (id bigint PRIMARY KEY, a int NOT NULL, b text NOT NULL, c timestamptz NOT NULL, d numeric(12,2), new_col int)"

book() { # name, step body
  cat >"$work/$1.lua" <<LUA
local pg = require "runbook.pg"
runbook "bench-$1" {}
step "S" { title = "$1", run = function() $2 end }
LUA
}
book copy "return pg.copy_rows { from = '$(url src)', to = '$(url dst)', table = 'items', batch = 50000, name = 'bench-' .. os.time() }.rows"
book backfill "return pg.backfill { url = '$(url src)', table = 'items', set = 'new_col = a * 2', batch = 10000, name = 'bench-' .. os.time() }.rows"
book backup "return pg.backup { url = '$(url src)', path = '$work/out/runbook.dump' }.size"

run_book() { # name
  (cd "$work" && "$RUNBOOK" exec "$work/$1.lua" --state "$work/state" --new >"$work/$1.out" 2>&1) ||
    { cat "$work/$1.out" >&2; exit 1; }
}

reset_dst() { psql_ -d dst -c "TRUNCATE items" -c "DROP TABLE IF EXISTS runbook_backfill_checkpoints" -c "CHECKPOINT"; }
reset_src() { # a fresh, identical table for each update measurement
  psql_ -d src -c "DROP TABLE items" -c "CREATE TABLE items AS TABLE template" \
    -c "ALTER TABLE items ADD PRIMARY KEY (id)" -c "DROP TABLE IF EXISTS runbook_backfill_checkpoints" \
    -c "VACUUM ANALYZE items" -c "CHECKPOINT"
}

declare -a copy_rb copy_psql fill_rb fill_sql dump_rb dump_pg
for i in $(seq "$REPEAT"); do
  echo "round $i/$REPEAT" >&2
  reset_dst; t0=$(now)
  psql -X -h "$work/sock" -p "$port" -U postgres -d src -c "\\copy (SELECT * FROM items) to stdout" |
    psql -X -q -h "$work/sock" -p "$port" -U postgres -d dst -c "\\copy items from stdin"
  copy_psql+=("$(secs "$t0" "$(now)")")
  [ "$(psql_ -d dst -Atc 'SELECT count(*) FROM items')" = "$ROWS" ]

  reset_dst; t0=$(now); run_book copy; copy_rb+=("$(secs "$t0" "$(now)")")
  [ "$(psql_ -d dst -Atc 'SELECT count(*) FROM items')" = "$ROWS" ]

  reset_src; t0=$(now); psql_ -d src -c "UPDATE items SET new_col = a * 2"; fill_sql+=("$(secs "$t0" "$(now)")")
  reset_src; t0=$(now); run_book backfill; fill_rb+=("$(secs "$t0" "$(now)")")
  [ "$(psql_ -d src -Atc 'SELECT count(*) FROM items WHERE new_col = a * 2')" = "$ROWS" ]

  psql_ -d src -c "CHECKPOINT"
  t0=$(now); pg_dump -Fc -h "$work/sock" -p "$port" -U postgres -d src >"$work/out/pg_dump.dump"; dump_pg+=("$(secs "$t0" "$(now)")")
  t0=$(now); run_book backup; dump_rb+=("$(secs "$t0" "$(now)")")
  pg_restore --list "$work/out/runbook.dump" >/dev/null
done

dump_size=$(stat -c %s "$work/out/runbook.dump")
c_rb=$(median "${copy_rb[@]}"); c_ps=$(median "${copy_psql[@]}")
f_rb=$(median "${fill_rb[@]}"); f_sq=$(median "${fill_sql[@]}")
d_rb=$(median "${dump_rb[@]}"); d_pg=$(median "${dump_pg[@]}")

echo
echo "runbook.pg benchmark, $(date -u +%Y-%m-%dT%H:%MZ)"
echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GB RAM; $($PGBIN/postgres --version); $ROWS rows; median of $REPEAT"
echo
printf '%-58s %10s %10s %8s  %s\n' "" "runbook" "baseline" "ratio" "target"
python3 - "$c_rb" "$c_ps" "$f_rb" "$f_sq" "$d_rb" "$d_pg" "$ROWS" "$dump_size" <<'PY'
import sys
c_rb, c_ps, f_rb, f_sq, d_rb, d_pg, rows, size = map(float, sys.argv[1:])
def line(what, rb, base, ratio, target, ok):
    print(f"{what:<58} {rb:>8.2f} s {base:>8.2f} s {ratio:>7.2f}x  {target} {'ok' if ok else 'MISSED'}")
line(f"copy rows between databases (checkpoint/50k) vs psql|psql", c_rb, c_ps, c_ps / c_rb, ">= 0.80 of baseline throughput", c_ps / c_rb >= 0.8)
line(f"in-place backfill, batches of 10k vs one UPDATE", f_rb, f_sq, f_rb / f_sq, "<= 1.50x baseline time", f_rb / f_sq <= 1.5)
line(f"backup to a file ({size/1048576:.0f} MB, sha256) vs pg_dump -Fc > file", d_rb, d_pg, d_rb / d_pg, "<= 1.10x baseline time", d_rb / d_pg <= 1.1)
print(f"\nthroughput: copy {rows/c_rb:,.0f} rows/s (psql pipe {rows/c_ps:,.0f}); backfill {rows/f_rb:,.0f} rows/s (UPDATE {rows/f_sq:,.0f})")
PY
echo "all runs (s): copy runbook ${copy_rb[*]} | psql ${copy_psql[*]}; backfill runbook ${fill_rb[*]} | UPDATE ${fill_sql[*]}; backup runbook ${dump_rb[*]} | pg_dump ${dump_pg[*]}"
