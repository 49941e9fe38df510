-- Step library: what GitHub knows about a repository, read with the `gh`
-- CLI (authenticated with `gh auth login` or GH_TOKEN): the names of its
-- Actions secrets, the newest run of a workflow, a file at a ref. Every
-- call is read-only (it also runs under --dry-run) and its output is kept
-- out of the run log; errors name the command and what gh said.
--
--   local github = require "lib.github"
--   local missing = github.missing_secrets("madfam-org/tezca", { "MADFAM_BOT_PAT" })
--   github.workflows_pass "M10-images" { title = ..., repo = "madfam-org/tezca",
--     workflows = { "deploy-api.yml", "deploy-web.yml" }, branch = "main" }
local sh = require "runbook.sh"
local json = require "runbook.json"
local errors = require "runbook.errors"
local wait = require "runbook.wait"

local M = {}

local function first_line(s)
  return (tostring(s or ""):match("[^\n]*[^\n%s]") or ""):gsub("^%s+", "")
end

--- Runs gh with args (read-only) and returns its stdout; raises a
--- `{kind = "github"}` error naming the command when gh is missing or fails.
function M.gh(args)
  if not sh.which("gh") then
    errors.raise { kind = "github", code = "not-found",
      message = "gh (GitHub's CLI) is not on PATH: install it (https://cli.github.com) and sign in with `gh auth login`" }
  end
  local argv = { "gh" }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  local r = sh.run(argv, { read_only = true, log = false, check = false, timeout = 120 })
  if r.code ~= 0 then
    errors.raise { kind = "github", code = "gh-failed", message = string.format("gh %s failed (exit %s): %s",
      table.concat(args, " "), tostring(r.code or r.signal), first_line(r.stderr ~= "" and r.stderr or r.stdout)) }
  end
  return r.stdout
end

local function decode(args, text)
  local ok, v = pcall(json.decode, text)
  if not ok or type(v) ~= "table" then
    errors.raise { kind = "github", code = "bad-output",
      message = string.format("gh %s: its output is not the JSON list expected: %s", table.concat(args, " "), first_line(text)) }
  end
  return v
end

--- The names of repo's Actions secrets, as a set.
function M.secret_names(repo)
  local args = { "secret", "list", "--repo", repo, "--json", "name" }
  local set = {}
  for _, s in ipairs(decode(args, M.gh(args))) do
    if type(s) == "table" and s.name then set[s.name] = true end
  end
  return set
end

--- The names of `names` that repo has no Actions secret of, in order.
function M.missing_secrets(repo, names)
  local have, missing = M.secret_names(repo), {}
  for _, n in ipairs(names) do
    if not have[n] then missing[#missing + 1] = n end
  end
  return missing
end

local RUN_FIELDS = "databaseId,status,conclusion,headSha,headBranch,createdAt,url,displayTitle"

--- The newest run of workflow (its file name, e.g. deploy-api.yml) on
--- branch, or nil when it never ran there: {databaseId=, status=,
--- conclusion=, headSha=, url=, ...} as `gh run list --json` gives them.
function M.latest_run(repo, workflow, branch)
  local args = { "run", "list", "--repo", repo, "--workflow", workflow, "--branch", branch, "--limit", "1", "--json", RUN_FIELDS }
  return decode(args, M.gh(args))[1]
end

--- The newest run of workflow on branch once it has completed (waiting for
--- one in progress, up to timeout seconds); raises when there is none or
--- it did not succeed, naming the run's URL.
function M.await_success(ctx, repo, workflow, branch, timeout)
  -- asked once outside the wait: gh missing or refusing is said at once
  local run = M.latest_run(repo, workflow, branch)
  if not run then
    errors.raise { kind = "github", code = "no-run", message = string.format(
      "%s has never run on %s of %s: push to %s (or start it with `gh workflow run %s --repo %s`)", workflow, branch, repo, branch, workflow, repo) }
  end
  if run.status ~= "completed" then
    ctx:log("%s: run %s on %s is %s: waiting for it", workflow, tostring(run.databaseId), branch, tostring(run.status))
    run = wait(function()
      local r = M.latest_run(repo, workflow, branch)
      if r and r.status == "completed" then return r end
      return false, string.format("run %s is %s", tostring(r and r.databaseId), tostring(r and r.status))
    end, { timeout = timeout or 1800, interval = 15, what = workflow .. " on " .. branch .. " to complete" })
  end
  if run.conclusion ~= "success" then
    errors.raise { kind = "github", code = "run-failed", message = string.format("the newest %s run on %s (%s, commit %s) ended %s: %s",
      workflow, branch, tostring(run.databaseId), tostring(run.headSha):sub(1, 12), tostring(run.conclusion), tostring(run.url)) }
  end
  ctx:log("%s: run %s on %s succeeded (commit %s)", workflow, tostring(run.databaseId), branch, tostring(run.headSha):sub(1, 12))
  return run
end

--- The text of path in repo at ref (a branch, tag or commit).
function M.file(repo, path, ref)
  return M.gh { "api", "-H", "Accept: application/vnd.github.raw+json",
    string.format("repos/%s/contents/%s?ref=%s", repo, path, ref) }
end

--- Declares step `id`: the newest run of each of `workflows` on `branch`
--- (default "main") of `repo` (a string or a function of ctx) succeeded,
--- waiting up to `timeout` (default 1800 s) for runs in progress. Takes the
--- step fields title, owner, doc, needs. Returns {[workflow] = {run=, sha=}}.
function M.workflows_pass(id)
  return function(opts)
    step(id) {
      title = opts.title, owner = opts.owner, doc = opts.doc, needs = opts.needs,
      timeout = (opts.timeout or 1800) + 120,
      run = function(ctx)
        local repo = type(opts.repo) == "function" and opts.repo(ctx) or opts.repo
        local out = {}
        for _, w in ipairs(opts.workflows) do
          local run = M.await_success(ctx, repo, w, opts.branch or "main", opts.timeout)
          out[w] = { run = run.databaseId, sha = run.headSha }
        end
        return out
      end,
    }
  end
end

return M
