-- The sandbox's recording stubs of the platform CLIs the guides call:
-- each appends its argv to the sandbox's logs/cli.log and answers
-- plausibly. Not the real tools.
local S = {}

S.TOOLS = { "enclii", "gh", "op", "doctl", "helm" }

local function quote(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local SCRIPT = [[#!/bin/sh
# A recording stub of %s for the rehearsal sandbox: appends its argv to
# %s and answers plausibly. Not the real tool.
log=%s
{ printf '%%s' %s; for a in "$@"; do printf ' %%s' "$a"; done; printf '\n'; } >>"$log"
%s
exit 0
]]

S.ANSWERS = {
  enclii = [[case "$1" in
  exec) shift; while [ $# -gt 0 ] && [ "$1" != "--" ]; do shift; done; echo "enclii (sandbox): would run in tezca-api:${2:+ $*}" ;;
  *) echo "enclii (sandbox): ok" ;;
esac]],
  -- GitHub as the sandbox's DIR/stubs/gh/ holds it: secrets/REPO/NAME
  -- (set by `secret set`, listed by `secret list`), runs/REPO/WORKFLOW.json
  -- (what `run list --workflow` answers), repos/REPO/PATH (the files
  -- `api repos/REPO/contents/PATH` answers, raw)
  gh = [[d=$(dirname "$(dirname "$log")")/stubs/gh
opt() { want=$1; shift; prev=; for a in "$@"; do [ "$prev" = "$want" ] && printf '%s' "$a"; prev=$a; done; }
repo=$(opt --repo "$@")
case "$1 $2" in
  "secret set")
    [ -t 0 ] || cat >/dev/null
    mkdir -p "$d/secrets/$repo"; date -u +%Y-%m-%dT%H:%M:%SZ >"$d/secrets/$repo/$3"
    echo "✓ Set Actions secret $3 for $repo (sandbox)" ;;
  "secret list")
    sep=; printf '['
    for f in "$d/secrets/$repo"/*; do
      [ -e "$f" ] || continue
      printf '%s{"name":"%s","updatedAt":"%s"}' "$sep" "$(basename "$f")" "$(cat "$f")"; sep=,
    done
    echo ']' ;;
  "run list")
    f="$d/runs/$repo/$(opt --workflow "$@").json"
    if [ -e "$f" ]; then cat "$f"; else echo '[]'; fi ;;
  "api "*)
    rel=
    for a in "$@"; do
      case "$a" in repos/*/contents/*) rel=$(printf '%s' "${a%%\?*}" | sed 's#^repos/\([^/]*/[^/]*\)/contents/#\1/#') ;; esac
    done
    if [ -n "$rel" ] && [ -f "$d/repos/$rel" ]; then cat "$d/repos/$rel"
    else echo '{"message":"Not Found","status":"404"}'; echo "gh: Not Found (HTTP 404)" >&2; exit 1; fi ;;
  "pr merge") echo "✓ Merged pull request (sandbox)" ;;
  "auth status") echo "Logged in to github.com as sandbox" ;;
  *) echo "gh (sandbox): ok" ;;
esac]],
  -- the sandbox's vault is DIR/stubs/op/: an item made from a template
  -- (--template FILE) is kept there, mode 0600, as ITEM.json, its tags
  -- (--tags) as ITEM.tags; each item has its own id; item list --tags T
  -- answers the items tagged T
  op = [[d=$(dirname "$(dirname "$log")")/stubs/op
opt() { want=$1; shift; prev=; for a in "$@"; do [ "$prev" = "$want" ] && printf '%s' "$a"; prev=$a; done; }
case "$1 $2" in
  "item create")
    mkdir -p "$d"
    id=sandbox0item$(( $(ls "$d" | grep -c '\.tags$') + 1 ))
    t=$(opt --template "$@")
    if [ -n "$t" ]; then (umask 077; cat "$t" >"$d/$id.json"); fi
    opt --tags "$@" >"$d/$id.tags"
    echo "{\"id\":\"$id\",\"title\":\"Bow-Mark Production K8s\",\"vault\":{\"name\":\"Private\"}}" ;;
  "item list")
    want=$(opt --tags "$@"); sep=; printf '['
    for f in "$d"/*.tags; do
      [ -e "$f" ] && [ "$(cat "$f")" = "$want" ] || continue
      printf '%s{"id":"%s","title":"Bow-Mark Production K8s"}' "$sep" "$(basename "$f" .tags)"; sep=,
    done
    echo ']' ;;
  "whoami "*|"whoami") echo "sandbox@example.com" ;;
  *) echo "op (sandbox): ok" ;;
esac]],
  doctl = [[case "$1 $2 $3" in
  "kubernetes cluster kubeconfig") echo "Notice: Adding cluster credentials to kubeconfig file found in \"$KUBECONFIG\" (sandbox)" ;;
  *) echo "doctl (sandbox): ok" ;;
esac]],
  helm = [[case "$1" in
  version) echo 'version.BuildInfo{Version:"v3.14.0-sandbox"}' ;;
  upgrade|install) echo "Release \"$2\" has been upgraded. Happy Helming! (sandbox)" ;;
  *) echo "helm (sandbox): ok" ;;
esac]],
}

--- The shell script of tool's stub, logging to log.
function S.script(tool, log)
  return string.format(SCRIPT, tool, log, quote(log), quote(tool), S.ANSWERS[tool])
end

return S
