-- runbook.template: ${VAR} substitution over strings and files, without a
-- shell (the envsubst step of a deploy guide). A missing variable is an
-- error naming it and its line, never an empty string; a secret value
-- makes the whole result a secret.
--
--   ${NAME}            the value of NAME; an error when NAME is not set
--   ${NAME:-default}   the value, or default when NAME is unset or empty
--                      (default may itself hold ${...})
--   $$                 a literal $
--   any other $        left as it is ($HOME, $1, a lone $)
local secretcore = require "runbook._secret"
local errors = require "runbook.errors"

local M = {}

local function where(st, line)
  if st.name then return string.format("template %s:%d", st.name, line) end
  return string.format("template line %d", line)
end

local function fail(st, line, code, fmt, ...)
  errors.raise { kind = "template", code = code, message = where(st, line) .. ": " .. string.format(fmt, ...),
    details = { file = st.name, line = line } }
end

local function value_of(st, var)
  local v = st.vars[var]
  if v == nil and st.env then v = os.getenv(var) end
  return v
end

local function is_empty(v)
  if type(v) == "string" then return v == "" end
  if secretcore.is(v) then return #v == 0 end
  return false
end

local function to_text(st, var, v, line)
  local t = type(v)
  if t == "string" then return v end
  if t == "number" then return math.type(v) == "integer" and string.format("%d", v) or tostring(v) end
  if t == "boolean" then return tostring(v) end
  if secretcore.is(v) then
    st.secret = true
    return v:reveal()
  end
  fail(st, line, "type", "variable %s is a %s (a string, number, boolean or secret expected)", var, t)
end

-- the '}' that closes a default starting at i, skipping nested ${...}
local function closing(text, i)
  local depth = 0
  local n = #text
  while i <= n do
    local c = text:byte(i)
    if c == 36 and text:byte(i + 1) == 36 then -- $$
      i = i + 2
    elseif c == 36 and text:byte(i + 1) == 123 then -- ${
      depth = depth + 1
      i = i + 2
    elseif c == 125 then -- }
      if depth == 0 then return i end
      depth = depth - 1
      i = i + 1
    else
      i = i + 1
    end
  end
  return nil
end

local function count_lines(s)
  local _, n = s:gsub("\n", "")
  return n
end

-- Expands text[i..j] into out; line is the line number at i. Returns the
-- line number at j + 1.
local function expand(st, text, i, j, line, out)
  while i <= j do
    local k = text:find("[$\n]", i)
    if not k or k > j then
      out[#out + 1] = text:sub(i, j)
      return line
    end
    if k > i then out[#out + 1] = text:sub(i, k - 1) end
    if text:byte(k) == 10 then
      out[#out + 1] = "\n"
      line = line + 1
      i = k + 1
    else
      local nx = k + 1 <= j and text:byte(k + 1) or nil
      if nx == 36 then -- $$
        out[#out + 1] = "$"
        i = k + 2
      elseif nx == 123 then -- ${
        local var, p = text:match("^([%a_][%w_]*)()", k + 2)
        if not var then
          fail(st, line, "syntax", "'${' must be followed by a variable name ([A-Za-z_][A-Za-z0-9_]*); write $$ for a literal $")
        end
        if text:byte(p) == 125 then
          local v = value_of(st, var)
          if v == nil then
            st.missing[#st.missing + 1] = { name = var, line = line }
          else
            out[#out + 1] = to_text(st, var, v, line)
          end
          i = p + 1
        elseif text:sub(p, p + 1) == ":-" then
          local close = closing(text, p + 2)
          if not close or close > j then fail(st, line, "syntax", "${%s:- is not closed with }", var) end
          local v = value_of(st, var)
          if v == nil or is_empty(v) then
            line = expand(st, text, p + 2, close - 1, line, out)
          else
            out[#out + 1] = to_text(st, var, v, line)
            line = line + count_lines(text:sub(p + 2, close - 1))
          end
          i = close + 1
        elseif p > #text then
          fail(st, line, "syntax", "${%s is not closed with }", var)
        else
          fail(st, line, "syntax", "unsupported expansion ${%s%s...}: only ${NAME} and ${NAME:-default} are supported",
            var, text:sub(p, p))
        end
      else
        out[#out + 1] = "$"
        i = k + 1
      end
    end
  end
  return line
end

local function render(text, vars, opts, name)
  opts = opts or {}
  if type(opts) ~= "table" then error("template: options must be a table", 3) end
  if vars == nil then vars = {} end
  if type(vars) ~= "table" then error("template: vars must be a table of NAME = value", 3) end
  local st = { vars = vars, env = opts.env, name = opts.name or name, missing = {}, secret = false }
  if secretcore.is(text) then
    st.secret = true
    text = text:reveal()
  elseif type(text) ~= "string" then
    error("template: text (string or secret) expected, got " .. type(text), 3)
  end
  local out = {}
  expand(st, text, 1, #text, 1, out)
  if #st.missing > 0 then
    local first = st.missing[1]
    local others = {}
    for i = 2, #st.missing do
      local m = st.missing[i]
      others[#others + 1] = string.format("%s at line %d", m.name, m.line)
    end
    errors.raise {
      kind = "template", code = "missing",
      message = string.format("%s: variable %s is not set and has no default%s", where(st, first.line), first.name,
        #others > 0 and (" (also missing: " .. table.concat(others, ", ") .. ")") or ""),
      details = { variable = first.name, line = first.line, file = st.name, missing = st.missing },
    }
  end
  local result = table.concat(out)
  if st.secret then return secretcore.new(result) end
  return result
end

--- Substitutes ${NAME} and ${NAME:-default} in text from vars (values:
--- strings, numbers, booleans or secrets). With opts.env, names missing
--- from vars are looked up in the environment. Returns a string, or a
--- secret when any substituted value (or text itself) is a secret.
--- Raises {kind="template", code="missing"} naming the first missing
--- variable and its line.
---@param text string|userdata
---@param vars table<string, string|number|boolean|userdata>|nil
---@param opts {env:boolean|nil, name:string|nil}|nil
---@return string|userdata
function M.render(text, vars, opts)
  return render(text, vars, opts, nil)
end

--- Like render, over the contents of a file; errors name the file and line.
---@param path string
---@param vars table<string, string|number|boolean|userdata>|nil
---@param opts {env:boolean|nil, name:string|nil}|nil
---@return string|userdata
function M.file(path, vars, opts)
  if type(path) ~= "string" then error("template.file: path expected", 2) end
  local f, err = io.open(path, "rb")
  if not f then
    errors.raise { kind = "template", code = "unreadable", message = "template: cannot read " .. tostring(err) }
  end
  local text = f:read("a")
  f:close()
  return render(text, vars, opts, path)
end

--- The variable names text refers to, in order of first use (defaults
--- included), so a runbook can check its inputs before rendering.
---@param text string
---@return string[]
function M.names(text)
  if type(text) ~= "string" then error("template.names: text expected", 2) end
  local seen, out = {}, {}
  for name in text:gsub("%$%$", ""):gmatch("%${([%a_][%w_]*)") do
    if not seen[name] then
      seen[name] = true
      out[#out + 1] = name
    end
  end
  return out
end

return M
