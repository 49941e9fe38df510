#!/bin/sh
# The demo: Tezca's first production deploy (runbooks/first-deploy.lua, the
# guide's M1-M14) in the rehearsal sandbox (scripts/sandbox.sh: PostgreSQL,
# Redis, moto, a fake Kubernetes API with an ArgoCD stand-in, HTTPS
# stand-ins for Tezca and Janua). The migration Job fails on purpose, the
# same command resumes at M7, people confirm their steps, the run finishes,
# and its audit trail verifies while a tampered copy is caught. Everything
# the demo starts is stopped when it ends, however it ends.
#
#   scripts/demo.sh          the Tezca first deploy
#   scripts/demo.sh --shop   the older, smaller example: a shop's database and
#                            cache, a migration with a bug fixed by hand
set -eu
cd "$(dirname "$0")/.."
root=$PWD
mode=tezca
case ${1:-} in
  "") ;;
  --shop) mode=shop ;;
  *) echo "usage: scripts/demo.sh [--shop]" >&2; exit 2 ;;
esac
t0=$(date +%s)
scripts/deps.sh test
echo "== building runbook"
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
ninja -C build >/dev/null
RB=$root/build/runbook
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
show() { printf '\033[2m$ %s\033[0m\n' "$*"; }

shop_demo() {
PGBIN=/usr/lib/postgresql/15/bin

work=$(mktemp -d /tmp/runbook-demo.XXXXXX)
chmod 755 "$work"
pg_started=""; redis_pid=""
cleanup() {
  [ -n "$pg_started" ] && runuser -u postgres -- "$PGBIN/pg_ctl" -D "$work/pgdata" -m fast stop >/dev/null 2>&1 || true
  [ -n "$redis_pid" ] && kill "$redis_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }

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
}

tezca_demo() {
  sb=$(mktemp -d /tmp/runbook-demo.XXXXXX)
  chmod 755 "$sb"
  cleanup() {
    RUNBOOK_BIN=$RB "$root/scripts/sandbox.sh" down "$sb" >/dev/null 2>&1 || true
    rm -rf "$sb"
  }
  trap cleanup EXIT
  trap 'exit 130' INT TERM

  say "starting the rehearsal sandbox (scripts/sandbox.sh up)"
  RUNBOOK_BIN=$RB scripts/sandbox.sh up "$sb"
  # PATH (runbook in the sandbox: tezca.mx and friends resolve to its
  # stand-ins), KUBECONFIG, RUNBOOK_STATE and the runbook's credentials
  . "$sb/env"
  values=$sb/values/first-deploy.yaml
  rb_exec() {
    show "runbook exec runbooks/first-deploy.lua --values \$SANDBOX/values/first-deploy.yaml --yes"
    set +e; runbook exec runbooks/first-deploy.lua --values "$values" --yes; code=$?; set -e
    echo "exit code $code"
  }

  say "the runbook, as the checklist it replaces (runbook doc, its steps)"
  runbook doc runbooks/first-deploy.lua | grep '^- \[ \]'

  say "the sandbox breaks something: the database refuses the tezca role (fault migration)"
  RUNBOOK_BIN=$RB scripts/sandbox.sh fault migration "$sb"

  say "1. run it: the first two steps are people's (exit 3: waiting)"
  rb_exec

  say "2. people do M1 and M2: Dev confirms M1; the Repo Admin sets the three GitHub secrets"
  show 'runbook confirm last M1 --note "@janua/nextjs 1.4.0 in a1b2c3d"'
  runbook confirm last M1 --note "@janua/nextjs 1.4.0 in a1b2c3d"
  for name in MADFAM_BOT_PAT ENCLII_CALLBACK_TOKEN NEXT_PUBLIC_JANUA_PUBLISHABLE_KEY; do
    show "gh secret set $name --repo madfam-org/tezca"
    printf 'demo-value\n' | gh secret set "$name" --repo madfam-org/tezca
  done
  echo "   (gh is the sandbox's recording stub; M2 lists the secrets with gh and confirms itself)"
  echo "   ... and DevOps adds tezca to ArgoCD's root application (the sandbox plays them;"
  echo "   its ArgoCD stand-in syncs the seven Deployments), so M6 will confirm itself"
  RUNBOOK_BIN=$RB scripts/sandbox.sh play runbooks/first-deploy.lua M6 "$sb"

  say "3. the same command: M2-M6 pass (M2 sees the secrets, M3-db makes the tezca role and database, M5 and M6 see DNS and ArgoCD), then M7's migration Job fails"
  rb_exec
  show "runbook log last --step M7"
  runbook log last --step M7 | tail -4
  echo "the Job's own output, in the run log:"
  grep -h "OperationalError" "$RUNBOOK_STATE"/runs/*/log | tail -1

  say "4. fix the cause (here: scripts/sandbox.sh fault clear), the same command resumes at M7"
  RUNBOOK_BIN=$RB scripts/sandbox.sh fault clear "$sb"
  rb_exec
  echo "(M7-M10 ran, and M10-images and M10-ci saw CI's builds and ArgoCD run their digests;"
  echo " M3's generated secrets were not generated again. It waits for QA.)"

  say "5. QA signs in to the admin console and confirms; the same command runs M11-M13 and M14's dry run"
  show 'runbook confirm last M10-login --note "signed in as qa@madfam.io, Firefox"'
  runbook confirm last M10-login --note "signed in as qa@madfam.io, Firefox"
  rb_exec
  echo "(it stops again: a person reads the R2 migration's dry run before anything moves)"
  show 'runbook confirm last M14-approve --note "the dry run lists what we expect"'
  runbook confirm last M14-approve --note "the dry run lists what we expect"
  rb_exec

  say "6. runbook status last"
  runbook status last
  say "   runbook log last: who did what (the manual steps)"
  runbook log last | grep -E "step.confirmed|run.resumed|run.finished" | head -12
  echo "... $(runbook log last | wc -l) events in all"

  say "   runbook audit verify last"
  runbook audit verify last

  say "7. someone edits the journal: audit verify names the event"
  cp -r "$RUNBOOK_STATE" "$sb/tampered"
  run=$(ls "$sb/tampered/runs" | grep tezca-first-deploy | head -1)
  sed -i '0,/"attempt":1/s//"attempt":9/' "$sb/tampered/runs/$run/journal.jsonl"
  show "runbook audit verify last --state tampered"
  set +e; runbook audit verify last --state "$sb/tampered"; code=$?; set -e
  echo "exit code $code"
  say "demo complete in $(( $(date +%s) - t0 )) s; stopping the sandbox"
}

if [ $mode = shop ]; then shop_demo; else tezca_demo; fi
