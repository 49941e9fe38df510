-- Splits SQL text into statements at top-level semicolons, the way psql
-- reads a file: quotes ('...', E'...', "..."), dollar quotes ($tag$...$tag$)
-- and comments (--, nested /* */) are skipped over. Migrations run their
-- statements one by one so a failure can be pinned to a line even when
-- the server gives no position.
--
-- SQL-standard function bodies (BEGIN ATOMIC ... END) hold semicolons
-- that psql tracks with a grammar of its own; text containing one is
-- reported as unsplittable and runs whole.
local M = {}

local function is_ident(c) return c ~= "" and c:match("[%w_]") ~= nil end

--- Returns a list of {sql=, line=, content_line=} (line offsets from the
--- start of text, 0-based: where the statement's text starts and where its
--- first token is) and a flag that is true when the text cannot be split.
---@param text string
---@return {sql:string, line:integer, content_line:integer}[], boolean
function M.split(text)
  local out = {}
  local n = #text
  local i = 1
  local start = 1
  local line = 0          -- newlines seen before i
  local start_line = 0
  local content_line = nil -- line of the current statement's first token
  local prev_word, atomic = nil, false
  local function note_content()
    if not content_line then content_line = line end
  end
  local function count_lines(a, b)
    local c = 0
    for _ in text:sub(a, b):gmatch("\n") do c = c + 1 end
    return c
  end
  while i <= n do
    local c = text:sub(i, i)
    local c2 = text:sub(i, i + 1)
    if c == "\n" then
      line = line + 1
      i = i + 1
    elseif c2 == "--" then
      local e = text:find("\n", i, true) or n + 1
      i = e
    elseif c2 == "/*" then
      local depth, j = 1, i + 2
      while j <= n and depth > 0 do
        local d = text:sub(j, j + 1)
        if d == "/*" then depth, j = depth + 1, j + 2
        elseif d == "*/" then depth, j = depth - 1, j + 2
        else j = j + 1 end
      end
      line = line + count_lines(i, j - 1)
      i = j
    elseif c == "'" or c == '"' then
      note_content()
      local backslash = c == "'" and i > 1 and text:sub(i - 1, i - 1):match("[eE]") and not is_ident(text:sub(i - 2, i - 2))
      local j = i + 1
      while j <= n do
        local d = text:sub(j, j)
        if backslash and d == "\\" then
          j = j + 2
        elseif d == c then
          if text:sub(j + 1, j + 1) == c then j = j + 2 else break end
        else
          j = j + 1
        end
      end
      line = line + count_lines(i, j)
      i = j + 1
      prev_word = nil
    elseif c == "$" and not is_ident(text:sub(i - 1, i - 1))
      and (text:match("^%$[%a_][%w_]*%$", i) or text:match("^%$%$", i)) then
      note_content()
      local tag = text:match("^%$[%a_][%w_]*%$", i) or "$$"
      local e = text:find(tag, i + #tag, true)
      local j = e and (e + #tag - 1) or n
      line = line + count_lines(i, j)
      i = j + 1
      prev_word = nil
    elseif c == ";" then
      note_content()
      out[#out + 1] = { sql = text:sub(start, i), line = start_line, content_line = content_line }
      i = i + 1
      start, start_line, content_line, prev_word = i, line, nil, nil
    elseif c:match("[%a_]") then
      note_content()
      local w = text:match("^[%w_]+", i)
      local lw = w:lower()
      if prev_word == "begin" and lw == "atomic" then atomic = true end
      prev_word = lw
      i = i + #w
    else
      if not c:match("%s") then
        note_content()
        prev_word = nil
      end
      i = i + 1
    end
  end
  if content_line then
    out[#out + 1] = { sql = text:sub(start), line = start_line, content_line = content_line }
  end
  return out, atomic
end

return M
