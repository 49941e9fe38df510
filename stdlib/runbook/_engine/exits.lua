local M = {}

-- Every exit code the tool returns, by name. cli.lua renders them into
-- --help, the man pages and docs/cli.md; engine.lua returns them
-- (tests/spec/cli_docs_spec.lua checks every table in the docs against this).
M.CODES = {
  { code = 0, name = "ok", short = "finished",
    meaning = "the run finished (or the command succeeded)" },
  { code = 1, name = "failed", short = "a step failed",
    meaning = "a step failed (after its retries); `audit verify` found damage; `rollback` stopped at a step without `undo`" },
  { code = 2, name = "usage", short = "usage, runbook or configuration error",
    meaning = "usage error, or an error in the runbook (syntax, duplicate ids, unknown `needs`, a cycle, an unknown or missing param, a damaged journal, a refused resume), or a configuration error that retrying cannot fix (a kubeconfig naming an unknown context): fix it and run the same command again" },
  { code = 3, name = "waiting", short = "waiting for a manual step",
    meaning = "waiting for a manual step: confirm it, then run the same command again" },
  { code = 4, name = "locked", short = "locked by another process",
    meaning = "the run is locked by another process, named by pid, host and user (or another exec is choosing the runbook's run)" },
  { code = 130, name = "interrupted", short = "interrupted",
    meaning = "interrupted (Ctrl-C or SIGTERM): the run stopped at a resumable point" },
}
M.EXIT = {}
for _, e in ipairs(M.CODES) do M.EXIT[e.name] = e.code end

return M
