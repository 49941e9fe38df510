-- `runbook doc`: a runbook rendered as the Markdown checklist it replaces.
local M = {}

local function esc(s)
  return (tostring(s):gsub("|", "\\|"):gsub("\n", " "))
end

local function indent(text, prefix)
  local lines = {}
  for line in (text .. "\n"):gmatch("(.-)\n") do lines[#lines + 1] = (line == "" and "" or prefix .. line) end
  while lines[#lines] == "" do lines[#lines] = nil end
  return table.concat(lines, "\n")
end

local function dedent(text)
  local min
  for line in (text .. "\n"):gmatch("(.-)\n") do
    if line:match("%S") then
      local n = #line:match("^%s*")
      if not min or n < min then min = n end
    end
  end
  if not min or min == 0 then return (text:gsub("^%s*\n", ""):gsub("%s+$", "")) end
  local out = {}
  for line in (text .. "\n"):gmatch("(.-)\n") do out[#out + 1] = line:sub(min + 1) end
  return (table.concat(out, "\n"):gsub("^%s*\n", ""):gsub("%s+$", ""))
end

--- The Markdown text for a loaded book.
function M.render(book)
  local o = {}
  local function add(s) o[#o + 1] = s end
  add("# " .. book.name)
  add("")
  if book.description then add(book.description) add("") end
  if book.doc then add(dedent(book.doc)) add("") end
  if book.owner then add("Owner: " .. book.owner) add("") end
  local names = {}
  for k in pairs(book.params) do names[#names + 1] = k end
  table.sort(names)
  if #names > 0 then
    add("## Parameters")
    add("")
    add("| name | default | environment | secret | description |")
    add("| --- | --- | --- | --- | --- |")
    for _, n in ipairs(names) do
      local p = book.params[n]
      local def = p.default ~= nil and ("`" .. esc(p.default) .. "`") or (p.required == false and "(optional)" or "(required)")
      add(string.format("| `%s` | %s | %s | %s | %s |", n, def, p.env and ("`" .. p.env .. "`") or "", p.secret and "yes" or "",
        p.doc and esc(p.doc) or ""))
    end
    add("")
  end
  add("## Steps")
  add("")
  local group_seen = {}
  for _, s in ipairs(book.order) do
    if s.group and not group_seen[s.group] then
      group_seen[s.group] = true
      add(string.format("The following steps of group `%s` may run at the same time.", s.group))
      add("")
    end
    local meta = {}
    if s.owner then meta[#meta + 1] = "owner: " .. s.owner end
    if #s.needs > 0 then meta[#meta + 1] = "after " .. table.concat(s.needs, ", ") end
    if s.retry and s.retry.attempts > 1 then
      meta[#meta + 1] = string.format("up to %d attempts (%s backoff)", s.retry.attempts, s.retry.backoff)
    end
    if s.timeout then meta[#meta + 1] = string.format("timeout %s s", tostring(s.timeout)) end
    if s.verify then meta[#meta + 1] = s.kind == "manual" and "verified automatically when possible" or "verified" end
    if s.undo then meta[#meta + 1] = "can be rolled back" end
    add(string.format("- [ ] **%s** %s%s", s.id, s.title, s.kind == "manual" and " *(manual)*" or ""))
    if #meta > 0 then add("  <br>" .. table.concat(meta, "; ")) end
    if s.doc then add("") add(indent(dedent(s.doc), "  ")) end
    if s.instructions then
      add("")
      add(indent(dedent(s.instructions), "  > "))
    end
  end
  add("")
  return table.concat(o, "\n")
end

return M
