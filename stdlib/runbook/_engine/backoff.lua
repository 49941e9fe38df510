-- The one backoff rule for every retry loop: a step's retry policy, and the
-- retries inside runbook.http, runbook.s3 and the Kubernetes client. The
-- delay before attempt + 1, after `attempt` failed attempts, is base times
-- 1 (fixed), attempt (linear) or 2^(attempt-1) (exponential), capped at max.
local M = {}

M.POLICIES = { fixed = true, linear = true, exponential = true }

---@param policy "fixed"|"linear"|"exponential"
---@param base number  seconds
---@param attempt integer  attempts made so far (1 for the first retry)
---@param max number|nil  cap in seconds
---@return number
function M.delay(policy, base, attempt, max)
  local d
  if policy == "fixed" then
    d = base
  elseif policy == "linear" then
    d = base * attempt
  elseif policy == "exponential" then
    d = base * 2 ^ (attempt - 1)
  else
    error("backoff: unknown policy " .. tostring(policy), 2)
  end
  if max then d = math.min(d, max) end
  return d
end

return M
