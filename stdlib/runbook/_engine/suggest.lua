-- "Did you mean ...?": the one edit-distance helper behind every suggestion
-- the tool makes (misspelt fields, unknown needs, commands, options, params,
-- modules, globals), so they all agree on what counts as close.
local M = {}

-- Levenshtein distance over lower case; a case-only difference scores 0.5,
-- so 'm7' suggests 'M7' ahead of 'M8'.
function M.distance(word, cand)
  local a, b = word:lower(), cand:lower()
  local prev = {}
  for j = 0, #b do prev[j] = j end
  for i = 1, #a do
    local cur = { [0] = i }
    local ca = a:byte(i)
    for j = 1, #b do
      local cost = ca == b:byte(j) and 0 or 1
      cur[j] = math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
    end
    prev = cur
  end
  local d = prev[#b]
  if d == 0 and word ~= cand then d = 0.5 end
  return d
end

--- The candidate closest to word, or nil when none is close enough: at most
--- max(2, #word // 2) edits, and fewer edits than the candidate's length (so
--- 'x' does not suggest 'y'). Ties go to the alphabetically first.
--- candidates is a set (string keys) or a list of strings.
---@param word string
---@param candidates table
---@return string|nil
function M.nearest(word, candidates)
  local best, bestd
  local limit = math.max(2, #word // 2)
  for k, v in pairs(candidates) do
    local cand = type(k) == "string" and k or v
    if type(cand) == "string" and cand ~= word then
      local d = M.distance(word, cand)
      if d <= limit and d < #cand and (not bestd or d < bestd or (d == bestd and cand < best)) then
        best, bestd = cand, d
      end
    end
  end
  return best
end

--- " (did you mean 'x'?)" for the nearest candidate, or "" when there is none:
--- ready to append to an error message.
---@param word string
---@param candidates table
---@return string
function M.hint(word, candidates)
  local best = M.nearest(word, candidates)
  return best and (" (did you mean '" .. best .. "'?)") or ""
end

return M
