#!/usr/bin/env bash
# Peak memory of a backup streamed to object storage, for a ~50 MB and a
# ~500 MB database side by side: pg.backup into client:store{} (pg_dump -Fc
# -> multipart upload, 8 MiB parts) against a local moto_server, then
# pg.verify_backup streaming the object back through pg_restore --list.
# Target (issue 5): the runbook process's peak RSS is the same, within
# 16 MB, for both sizes.
#
# Two peaks per run: VmHWM of the runbook process itself (read from
# /proc/self/status by the runbook at the end of the step) and the maximum
# RSS /usr/bin/time reports for the command (the largest of runbook and its
# children, pg_dump and pg_restore included).
#
# Usage: bench/pg_s3_rss.sh [path/to/runbook]   (SMALL_ROWS, BIG_ROWS to resize)
set -euo pipefail

RUNBOOK=${1:-${RUNBOOK_BIN:-build/runbook}}
RUNBOOK=$(realpath "$RUNBOOK")
SMALL_ROWS=${SMALL_ROWS:-350000}
BIG_ROWS=${BIG_ROWS:-3900000}

. "$(dirname "$0")/pg_lib.sh"
pg_start

# moto_server without signature checking: signing is the specs' business,
# memory is this benchmark's
moto=$(command -v moto_server || echo "$HOME/.pyenv/shims/moto_server")
mport=$(free_port)
TMPDIR=$work "$moto" -H 127.0.0.1 -p "$mport" >"$work/moto.log" 2>&1 &
moto_pid=$!
on_exit+=("kill $moto_pid")
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$mport/moto-api/" >/dev/null && break; sleep 0.2; done

make_db() { # name rows
  psql_ -d postgres -c "CREATE DATABASE $1"
  psql_ -d "$1" <<SQL
CREATE TABLE docs (id bigint PRIMARY KEY, body text NOT NULL);
INSERT INTO docs SELECT g, md5(random()::text) || md5(random()::text) FROM generate_series(1, $2) g;
VACUUM ANALYZE docs;
SQL
}

cat >"$work/backup.lua" <<'LUA'
local pg = require "runbook.pg"
local s3 = require "runbook.s3"
runbook "bench-s3-backup" { params = { url = {}, endpoint = {}, db = {}, out = {} } }

local function hwm_kb()
  for line in io.lines("/proc/self/status") do
    local kb = line:match("^VmHWM:%s+(%d+) kB")
    if kb then return math.tointeger(tonumber(kb)) end
  end
end

step "S" {
  title = "pg_dump -Fc to object storage",
  run = function(ctx)
    local p = ctx.params
    local c <close> = s3.connect { endpoint = p.endpoint, access_key = "bench", secret_key = "bench" }
    c:ensure_bucket("bench")
    local store = c:store { bucket = "bench", prefix = "pg" }
    local b = pg.backup { url = p.url, store = store, name = p.db .. ".dump" }
    local after_backup = hwm_kb()
    local v = pg.verify_backup { store = store, name = p.db .. ".dump", sha256 = b.sha256 }
    local f = assert(io.open(p.out, "w"))
    f:write(string.format("%d %d %d %d %d\n", b.size, b.parts, after_backup, hwm_kb(), v.tables))
    f:close()
  end,
}
LUA

declare -A size dump parts hwm_b hwm_v tmax secs
for db in small big; do
  rows=$SMALL_ROWS; [ "$db" = big ] && rows=$BIG_ROWS
  echo "generating $db: $rows rows..." >&2
  make_db "$db" "$rows"
  size[$db]=$(psql_ -d "$db" -Atc "SELECT pg_database_size(current_database())")
  psql_ -d "$db" -c "CHECKPOINT"
  echo "backing up $db..." >&2
  (cd "$work" && /usr/bin/time -f "%M %e" -o "$work/time-$db" "$RUNBOOK" exec "$work/backup.lua" --state "$work/state" --new \
    --param "url=$(url "$db")" --param "endpoint=http://127.0.0.1:$mport" --param "db=$db" --param "out=$work/out-$db" \
    >"$work/run-$db.out" 2>&1) || { cat "$work/run-$db.out" >&2; exit 1; }
  read -r dump[$db] parts[$db] hwm_b[$db] hwm_v[$db] _ <"$work/out-$db"
  read -r tmax[$db] secs[$db] <"$work/time-$db"
done

echo
echo "runbook.pg backup to object storage: peak memory, $(date -u +%Y-%m-%dT%H:%MZ)"
echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GB RAM; $($PGBIN/postgres --version); moto_server"
echo
python3 - "${size[small]}" "${dump[small]}" "${parts[small]}" "${hwm_b[small]}" "${hwm_v[small]}" "${tmax[small]}" "${secs[small]}" \
  "${size[big]}" "${dump[big]}" "${parts[big]}" "${hwm_b[big]}" "${hwm_v[big]}" "${tmax[big]}" "${secs[big]}" <<'PY'
import sys
v = list(map(float, sys.argv[1:]))
s, b = v[:7], v[7:]
MB = 1048576
print(f"{'':<44} {'~50 MB db':>12} {'~500 MB db':>12} {'difference':>12}")
def row(name, i, scale, unit, diff=True):
    d = f"{(b[i] - s[i]) / scale:>+9.1f} {unit}" if diff else ""
    print(f"{name:<44} {s[i] / scale:>9.1f} {unit} {b[i] / scale:>9.1f} {unit} {d:>12}")
row("database size (pg_database_size)", 0, MB, "MB", False)
row("archive uploaded (pg_dump -Fc)", 1, MB, "MB", False)
print(f"{'multipart parts (8 MiB)':<44} {s[2]:>12.0f} {b[2]:>12.0f}")
row("runbook peak RSS after the backup (VmHWM)", 3, 1024, "MB")
row("runbook peak RSS after verify (VmHWM)", 4, 1024, "MB")
row("largest process of the run (/usr/bin/time)", 5, 1024, "MB")
print(f"{'wall time of the run (backup + verify)':<44} {s[6]:>10.1f} s {b[6]:>10.1f} s")
d = abs(b[4] - s[4]) / 1024
print(f"\ntarget: runbook peak RSS the same within 16 MB for both: difference {d:.1f} MB -> {'ok' if d <= 16 else 'MISSED'}")
PY
