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
  gh = [[case "$1 $2" in
  "secret set") [ -t 0 ] || cat >/dev/null; echo "✓ Set Actions secret $3 (sandbox)" ;;
  "pr merge") echo "✓ Merged pull request (sandbox)" ;;
  "auth status") echo "Logged in to github.com as sandbox" ;;
  *) echo "gh (sandbox): ok" ;;
esac]],
  op = [[case "$1 $2" in
  "item create") echo '{"id":"sandbox0item0id","title":"Bow-Mark Production K8s","vault":{"name":"Private"}}' ;;
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
