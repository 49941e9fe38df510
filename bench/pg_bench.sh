#!/usr/bin/env bash
# runbook.pg benchmark: each figure side by side with what a user runs
# today, in the same run on this machine, against a real PostgreSQL 15
# started here (durable settings: fsync and synchronous_commit on).
#
#   1. copy all rows between two databases, checkpoint every 50,000 rows
#      (pg.copy_rows), in COPY's binary and text formats, each against the
#      psql pipe in the same format:
#        psql -c "\copy (SELECT * FROM items) to stdout [with (format binary)]" |
#          psql -c "\copy items from stdin [with (format binary)]"
#      target: >= 0.95 of the pipe's throughput
#   2. backup to a file (pg.backup: streamed, sha256, fsync'd, renamed into
#      place) vs `pg_dump -Fc > file` followed by an fsync of that file
#      (the same durability); target <= 1.05x its time
#   3. in-place backfill in batches of 10,000 (pg.backfill) vs one UPDATE of
#      all rows; target <= 1.1x its time
#
# Each runbook figure is a whole `runbook exec` process, as an operator runs
# it. Each pair runs back to back, REPEAT times (default 3), the side that
# goes first alternating round by round; medians compared, and each
# round's own ratio printed. ROWS: one size or several ("200000 1000000", the default).
# Usage: bench/pg_bench.sh [path/to/runbook]
set -euo pipefail

RUNBOOK=${1:-${RUNBOOK_BIN:-build/runbook}}
RUNBOOK=$(realpath "$RUNBOOK")
SIZES=${ROWS:-200000 1000000}
REPEAT=${REPEAT:-3}

. "$(dirname "$0")/pg_lib.sh"
pg_start

bench_size() {
psql_ -d postgres -c "DROP DATABASE IF EXISTS src" -c "DROP DATABASE IF EXISTS dst" -c "CREATE DATABASE src" -c "CREATE DATABASE dst"
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
for f in binary text; do
  book copy_$f "local r = pg.copy_rows { from = '$(url src)', to = '$(url dst)', table = 'items', batch = 50000, format = '$f', name = 'bench-' .. os.time() }; assert(r.format == '$f'); return r.rows"
done
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

declare -a cb_rb=() cb_ps=() ct_rb=() ct_ps=() fill_rb=() fill_sql=() dump_rb=() dump_pg=()
pipe() { # format option ("" or " with (format binary)")
  psql -X -h "$work/sock" -p "$port" -U postgres -d src -c "\\copy (SELECT * FROM items) to stdout$1" |
    psql -X -q -h "$work/sock" -p "$port" -U postgres -d dst -c "\\copy items from stdin$1"
}
# one measurement of each side of a pair, in the order given
copy_pipe() { reset_dst; t0=$(now); pipe "$1"; eval "$2+=(\"\$(secs \"\$t0\" \"\$(now)\")\")"; count_dst; }
copy_book() { reset_dst; t0=$(now); run_book "$1"; eval "$2+=(\"\$(secs \"\$t0\" \"\$(now)\")\")"; count_dst; }
count_dst() { [ "$(psql_ -d dst -Atc 'SELECT count(*) FROM items')" = "$ROWS" ]; }
fill_sql_() { reset_src; t0=$(now); psql_ -d src -c "UPDATE items SET new_col = a * 2"; fill_sql+=("$(secs "$t0" "$(now)")"); }
fill_book() {
  reset_src; t0=$(now); run_book backfill; fill_rb+=("$(secs "$t0" "$(now)")")
  [ "$(psql_ -d src -Atc 'SELECT count(*) FROM items WHERE new_col = a * 2')" = "$ROWS" ]
}
dump_pg_() {
  psql_ -d src -c "CHECKPOINT"; rm -f "$work/out/pg_dump.dump"
  t0=$(now)
  pg_dump -Fc -h "$work/sock" -p "$port" -U postgres -d src >"$work/out/pg_dump.dump"
  python3 -c 'import os,sys; fd=os.open(sys.argv[1], os.O_RDONLY); os.fsync(fd)' "$work/out/pg_dump.dump"
  dump_pg+=("$(secs "$t0" "$(now)")")
}
dump_book() {
  psql_ -d src -c "CHECKPOINT"; rm -f "$work/out/runbook.dump"
  t0=$(now); run_book backup; dump_rb+=("$(secs "$t0" "$(now)")")
  pg_restore --list "$work/out/runbook.dump" >/dev/null
}
# each pair back to back; the side that goes first alternates round by
# round, so a machine getting busier or quieter during a round weighs on
# both sides alike
for i in $(seq "$REPEAT"); do
  echo "$ROWS rows: round $i/$REPEAT" >&2
  if [ $((i % 2)) = 1 ]; then
    copy_pipe " with (format binary)" cb_ps; copy_book copy_binary cb_rb
    copy_pipe "" ct_ps; copy_book copy_text ct_rb
    fill_sql_; fill_book
    dump_pg_; dump_book
  else
    copy_book copy_binary cb_rb; copy_pipe " with (format binary)" cb_ps
    copy_book copy_text ct_rb; copy_pipe "" ct_ps
    fill_book; fill_sql_
    dump_book; dump_pg_
  fi
done
dump_size=$(stat -c %s "$work/out/runbook.dump")
python3 - "$ROWS" "$dump_size" "$(uptime)" "${cb_rb[*]}" "${cb_ps[*]}" "${ct_rb[*]}" "${ct_ps[*]}" \
  "${dump_rb[*]}" "${dump_pg[*]}" "${fill_rb[*]}" "${fill_sql[*]}" <<'PY' | tee -a "$work/report"
import statistics, sys
rows, size, load = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
cb_rb, cb_ps, ct_rb, ct_ps, d_rb, d_pg, f_rb, f_sq = ([float(x) for x in a.split()] for a in sys.argv[4:12])
m = statistics.median
print(f"\n{rows:,} rows (median of {len(cb_rb)}); load after: {load.strip()}")
print(f"{'':<62} {'runbook':>9} {'baseline':>9} {'ratio':>7}  target")
def line(what, rb, base, ratio, label, target, ok):
    print(f"{what:<62} {m(rb):>7.2f} s {m(base):>7.2f} s {ratio:>6.2f}{label}  {target} {'ok' if ok else 'MISSED'}")
for fmt, rb, ps in (("binary", cb_rb, cb_ps), ("text", ct_rb, ct_ps)):
    r = m(ps) / m(rb)
    line(f"copy between databases, {fmt} (checkpoint/50k) vs psql|psql {fmt}", rb, ps, r, " thr", ">= 0.95 of its throughput", r >= 0.95)
r = m(d_rb) / m(d_pg)
line(f"backup to a file ({size / 1048576:.0f} MB, sha256) vs pg_dump -Fc > file; fsync", d_rb, d_pg, r, "x", "<= 1.05x its time", r <= 1.05)
r = m(f_rb) / m(f_sq)
line("in-place backfill, batches of 10k vs one UPDATE", f_rb, f_sq, r, "x", "<= 1.10x its time", r <= 1.1)
def rounds(a, b):
    return " ".join("%.2f" % (x / y) for x, y in zip(a, b))
print("each round's ratio (the median of these says the same as the medians above when the machine holds still):")
print("  copy binary", rounds(cb_ps, cb_rb), "| copy text", rounds(ct_ps, ct_rb), "| backup", rounds(d_rb, d_pg), "| backfill", rounds(f_rb, f_sq))
print("all runs (s), in round order: copy binary runbook", cb_rb, "pipe", cb_ps, "| copy text runbook", ct_rb, "pipe", ct_ps)
print("  backup runbook", d_rb, "pg_dump+fsync", d_pg, "| backfill runbook", f_rb, "UPDATE", f_sq)
PY
}

echo "runbook.pg benchmark, $(date -u +%Y-%m-%dT%H:%MZ)" | tee "$work/report"
echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GB RAM; $($PGBIN/postgres --version)" | tee -a "$work/report"
echo "load before: $(uptime)" | tee -a "$work/report"
for ROWS in $SIZES; do bench_size; done
