-- `runbook doc`: a runbook rendered as the Markdown checklist it replaces.
-- The page opens with how to run it, then the runbook's own text, its
-- params and its steps, parallel groups under their own headings.
--
-- Runbook text is prose written for a terminal, not Markdown: placeholders
-- such as <run> or <domain> would vanish in a browser as unknown HTML
-- tags, and command lines would be reflowed into the sentence above them.
-- So text outside code spans has '<' and entity-like '&' escaped, lines
-- indented under a paragraph (or starting with "$ ") become code blocks,
-- "Label: command ..." splits into the label and a code block, and list
-- items that are commands become inline code. Author's `code spans` stay.
local M = {}

-- programs whose invocation starts a command line in instructions
local COMMANDS = {}
for w in ([[runbook kubectl gh git npm npx pnpm yarn node cd curl wget doctl helm kustomize argocd psql pg_dump
  pg_restore redis-cli aws gcloud az docker podman make ssh scp rsync wrangler terraform export sudo python3
  python pip openssl dbmate flyctl vercel heroku systemctl journalctl]]):gmatch("%S+") do
  COMMANDS[w] = true
end

local function is_command(text)
  local first = text:match("^([%w_./-]+)%s") or text:match("^([%w_./-]+)$")
  return first ~= nil and COMMANDS[first] == true
end

-- Escapes text that is to read literally, outside its `code spans`.
local function inline(s)
  s = tostring(s)
  local out, pos = {}, 1
  local function plain(t)
    t = t:gsub("&(#?%w+;)", "&amp;%1"):gsub("<", "&lt;")
    out[#out + 1] = t
  end
  while pos <= #s do
    local a, b = s:find("`+", pos)
    if not a then plain(s:sub(pos)) break end
    local ticks = s:sub(a, b)
    local c, d = s:find(ticks, b + 1, true)
    -- a run of backticks with no closing run of the same length is literal
    while c and (s:sub(d + 1, d + 1) == "`") do c, d = s:find(ticks, d + 2, true) end
    if not c then plain(s:sub(pos)) break end
    plain(s:sub(pos, a - 1))
    out[#out + 1] = s:sub(a, d)
    pos = d + 1
  end
  return table.concat(out)
end
M.inline = inline

-- A table cell: one line, '|' escaped.
local function cell(s)
  return (inline(s):gsub("|", "\\|"):gsub("\n", " "))
end

local function code_span(s)
  local longest = 0
  for run in s:gmatch("`+") do longest = math.max(longest, #run) end
  local ticks = ("`"):rep(longest + 1)
  local pad = (s:sub(1, 1) == "`" or s:sub(-1) == "`") and " " or ""
  return ticks .. pad .. s .. pad .. ticks
end

local function fence(lines)
  local longest = 2
  for _, l in ipairs(lines) do
    for run in l:gmatch("`+") do longest = math.max(longest, #run) end
  end
  local f = ("`"):rep(longest + 1)
  local out = { f }
  for _, l in ipairs(lines) do out[#out + 1] = l end
  out[#out + 1] = f
  return out
end

local function dedent(text)
  local min
  for line in (text .. "\n"):gmatch("(.-)\n") do
    if line:match("%S") then
      local n = #line:match("^%s*")
      if not min or n < min then min = n end
    end
  end
  local out = {}
  for line in (text .. "\n"):gmatch("(.-)\n") do out[#out + 1] = line:sub((min or 0) + 1) end
  while out[1] and not out[1]:match("%S") do table.remove(out, 1) end
  while out[#out] and not out[#out]:match("%S") do out[#out] = nil end
  for i, l in ipairs(out) do out[i] = l:gsub("%s+$", "") end
  return out
end

-- A prose line, already escaped, kept from starting a Markdown block by
-- accident.
local function guard(s)
  if s:match("^#") or s:match("^>") or s:match("^=+$") or s:match("^%-%-%-*$") or s:match("^[+*]%s") then
    s = "\\" .. s
  end
  return s
end

local function prose(line) return guard(inline(line)) end

-- The lines of one paragraph, escaped together: a code span may run over
-- a line break (Markdown pairs backticks across the paragraph), so what
-- lies inside it must be told on the whole paragraph, not line by line.
local function paragraph(lines)
  local out = {}
  for l in (inline(table.concat(lines, "\n")) .. "\n"):gmatch("(.-)\n") do out[#out + 1] = guard(l) end
  return out
end

--- Markdown blocks (a list of lines) for a runbook's prose: doc text or
--- a manual step's instructions.
function M.blocks(text)
  local lines = dedent(tostring(text))
  local out = {}
  local kind -- the kind of the last block: "p", "li", "code"
  local item_width -- the indentation of the last list item's content
  local function start(k)
    if #out > 0 and (kind ~= k or k == "code") then out[#out + 1] = "" end
    kind = k
  end
  local para = {} -- the raw lines of the paragraph being read
  local function flush()
    for _, l in ipairs(paragraph(para)) do out[#out + 1] = l end
    para = {}
  end
  local i = 1
  while i <= #lines do
    local line = lines[i]
    local plain = line ~= "" and not line:match("^%s") and not line:match("^%$ ")
      and not line:match("^%d+[.)]%s") and not line:match("^[-*+]%s") and not is_command(line)
    if plain then
      local label, cmd = line:match("^([^:`]+:)%s+(.+)$")
      if label and #label <= 40 and is_command(cmd) then plain = false end
    end
    if not plain and #para > 0 then flush() end
    if line == "" then
      kind = nil
      if #out > 0 and out[#out] ~= "" then out[#out + 1] = "" end
      i = i + 1
    elseif line:match("^%s") or line:match("^%$ ") then
      -- indented lines (blank ones between them included) or "$ " lines: a code block
      local block, j = {}, i
      local indented = line:match("^%s") ~= nil
      while j <= #lines do
        local l = lines[j]
        if indented and (l:match("^%s") or (l == "" and lines[j + 1] and lines[j + 1]:match("^%s"))) then
          block[#block + 1] = l
        elseif not indented and l:match("^%$ ") then
          block[#block + 1] = l
        else
          break
        end
        j = j + 1
      end
      local min
      for _, l in ipairs(block) do
        if l:match("%S") then
          local n = #l:match("^%s*")
          if not min or n < min then min = n end
        end
      end
      for k, l in ipairs(block) do block[k] = l:sub((min or 0) + 1) end
      -- right under a list item, the block belongs to that item
      local pad = (kind == "li" and item_width) and (" "):rep(item_width) or ""
      start("code")
      for _, l in ipairs(fence(block)) do out[#out + 1] = pad .. l end
      kind = "code"
      i = j
    else
      local marker, body = line:match("^(%d+[.)])%s+(.*)$")
      if not marker then marker, body = line:match("^([-*+])%s+(.*)$") end
      if marker then
        start("li")
        out[#out + 1] = marker .. " " .. (is_command(body) and code_span(body) or inline(body))
        item_width = #marker + 1
      else
        local label, cmd = line:match("^([^:`]+:)%s+(.+)$")
        if label and #label <= 40 and is_command(cmd) then
          start("p")
          out[#out + 1] = prose(label)
          out[#out + 1] = ""
          for _, l in ipairs(fence { cmd }) do out[#out + 1] = l end
          kind = "code"
        elseif is_command(line) then
          start("code")
          for _, l in ipairs(fence { line }) do out[#out + 1] = l end
          kind = "code"
        else
          if #para == 0 then start("p") end
          para[#para + 1] = line
        end
      end
      i = i + 1
    end
  end
  if #para > 0 then flush() end
  while out[#out] == "" do out[#out] = nil end
  return out
end

local function indent(lines, prefix)
  local out = {}
  for i, l in ipairs(lines) do out[i] = l == "" and "" or prefix .. l end
  return table.concat(out, "\n")
end

local function sorted_keys(t)
  local out = {}
  for k in pairs(t) do out[#out + 1] = k end
  table.sort(out)
  return out
end

local function shell_word(s)
  if s:match("^[%w@%%+=:,./_-]+$") then return s end
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

-- "## How to run": the commands, with what the runbook needs set
local function how_to_run(book, add)
  local file = shell_word(book.path or book.file)
  local exports, args = {}, {}
  for _, n in ipairs(sorted_keys(book.params)) do
    local p = book.params[n]
    if p.default == nil and p.required ~= false then
      if p.env then
        exports[#exports + 1] = string.format("export %s=...   # %s%s", p.env, n, p.secret and " (secret)" or "")
      else
        args[#args + 1] = " --param " .. n .. "=..."
      end
    end
  end
  local manual
  for _, s in ipairs(book.order) do
    if s.kind == "manual" then manual = manual or s.id end
  end
  add("## How to run")
  add("")
  local code = {}
  for _, e in ipairs(exports) do code[#code + 1] = e end
  code[#code + 1] = "runbook check " .. file .. table.concat(args)
  code[#code + 1] = "runbook exec " .. file .. table.concat(args)
  add("```sh")
  for _, l in ipairs(code) do add(l) end
  add("```")
  add("")
  add("`check` reads the runbook and names every problem without running a step; `exec` runs it, and "
    .. "resumes where it stopped when run again: done steps are not repeated. `runbook plan " .. file
    .. "` shows what would run next.")
  if manual then
    add("")
    add(string.format("Manual steps wait for a person: once %s is done, `runbook confirm RUN %s --note '...'`, "
      .. "then run `runbook exec` again.", manual, manual))
  end
  add("")
end

local function step_item(s, add)
  local meta = {}
  if s.owner then meta[#meta + 1] = "owner: " .. inline(s.owner) end
  if #s.needs > 0 then meta[#meta + 1] = "after " .. table.concat(s.needs, ", ") end
  if s.retry and s.retry.attempts > 1 then
    meta[#meta + 1] = string.format("up to %d attempts (%s backoff)", s.retry.attempts, s.retry.backoff)
  end
  if s.timeout then meta[#meta + 1] = string.format("timeout %s s", tostring(s.timeout)) end
  if s.verify then meta[#meta + 1] = s.kind == "manual" and "verified automatically when possible" or "verified" end
  if s.undo then meta[#meta + 1] = "can be rolled back" end
  add(string.format("- [ ] **%s** %s%s", s.id, inline(s.title), s.kind == "manual" and " *(manual)*" or ""))
  if #meta > 0 then add("  <br>" .. table.concat(meta, "; ")) end
  if s.doc then add("") add(indent(M.blocks(s.doc), "  ")) end
  if s.instructions then
    add("")
    add(indent(M.blocks(s.instructions), "  "))
  end
end

--- The Markdown text for a loaded book.
function M.render(book)
  local o = {}
  local function add(s) o[#o + 1] = s end
  add("# " .. inline(book.name))
  add("")
  if book.description then add(inline(book.description)) add("") end
  how_to_run(book, add)
  if book.doc then
    add("## About")
    add("")
    add(table.concat(M.blocks(book.doc), "\n"))
    add("")
  end
  if book.owner then add("Owner: " .. inline(book.owner)) add("") end
  local names = sorted_keys(book.params)
  if #names > 0 then
    add("## Parameters")
    add("")
    add("| name | default | environment | secret | description |")
    add("| --- | --- | --- | --- | --- |")
    for _, n in ipairs(names) do
      local p = book.params[n]
      local def = p.default ~= nil and code_span(tostring(p.default)):gsub("|", "\\|") or (p.required == false and "(optional)" or "(required)")
      add(string.format("| `%s` | %s | %s | %s | %s |", n, def, p.env and ("`" .. p.env .. "`") or "", p.secret and "yes" or "",
        p.doc and cell(p.doc) or ""))
    end
    add("")
  end
  add("## Steps")
  add("")
  local current -- the parallel group being listed
  for i, s in ipairs(book.order) do
    if s.group ~= current then
      if s.group then
        if i > 1 then add("") end
        add(string.format("### Parallel group `%s`", s.group))
        add("")
        add(string.format("The following steps of group `%s` may run at the same time.", s.group))
        add("")
      else
        add("")
        add(string.format("### After parallel group `%s`", current))
        add("")
      end
      current = s.group
    elseif i > 1 and (s.doc or s.instructions or book.order[i - 1].doc or book.order[i - 1].instructions) then
      add("") -- items with paragraphs: a loose list reads better
    end
    step_item(s, add)
  end
  add("")
  return table.concat(o, "\n")
end

return M
