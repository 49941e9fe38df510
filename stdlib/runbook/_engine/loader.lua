-- Loading a runbook: the sandboxed environment, the declarative vocabulary
-- (runbook, step, manual, parallel) and the static checks. The file runs
-- once to collect its declarations; nothing in a step runs here.
local host = require "runbook._host"
local crypto = require "runbook._crypto"
local errors = require "runbook.errors"
-- the spelling suggestions, loaded with the first mistake
local function nearest(word, set) return require("runbook._engine.suggest").nearest(word, set) end

local M = {}

local STEP_FIELDS = {
  title = "string", owner = "string", needs = "needs", retry = "retry", timeout = "number",
  run = "function", verify = "function", undo = "function", doc = "string", description = "string",
  tags = "table",
}
local MANUAL_FIELDS = {
  title = "string", owner = "string", needs = "needs", instructions = "string", verify = "function",
  doc = "string", description = "string", tags = "table", timeout = "number", approvers = "number",
}
local RUNBOOK_FIELDS = { description = "string", params = "table", owner = "string", version = "string", doc = "string" }
local PARAM_FIELDS = {
  default = "any", required = "boolean", env = "string", secret = "boolean", doc = "string",
  type = "string", choices = "table",
}
local BACKOFFS = require("runbook._engine.backoff").POLICIES


-- raises a runbook error that names the file and line of the declaration
local function fail(site, fmt, ...)
  errors.raisef("runbook", nil, "%s" .. fmt, site and (site.file .. ":" .. site.line .. ": ") or "", ...)
end

M.nearest = nearest

--- " (did you mean 'x'?)" for the candidate of set (its keys) nearest to
--- word, or "" when none is near enough (runbook._engine.suggest's rule).
function M.hint(word, set)
  if type(word) ~= "string" then return "" end
  return require("runbook._engine.suggest").hint(word, set)
end

local KEYWORDS = {}
for kw in ("and break do else elseif end false for function goto if in local nil not or repeat return then true until while"):gmatch("%S+") do
  KEYWORDS[kw] = true
end

-- the names a mistyped global may have meant: the environment's and Lua's keywords
local function global_names(env)
  local set = {}
  for k in next, env do if type(k) == "string" then set[k] = true end end
  for k in pairs(KEYWORDS) do set[k] = true end
  return set
end

-- the public modules, for a mistyped require
local function public_modules()
  local set = {}
  for name in pairs(package.preload) do
    if name:match("^runbook%.") and not name:match("%._") then set[name] = true end
  end
  return set
end

local function check_fields(site, what, spec, fields)
  for k, v in pairs(spec) do
    local want = fields[k]
    if type(k) ~= "string" or not want then
      local hint = type(k) == "string" and nearest(k, fields)
      fail(site, "%s: unknown field '%s'%s", what, tostring(k), hint and (" (did you mean '" .. hint .. "'?)") or "")
    end
    if want == "string" or want == "number" or want == "function" or want == "table" or want == "boolean" then
      if type(v) ~= want then fail(site, "%s: %s must be a %s, got %s", what, k, want, type(v)) end
    end
  end
end

local function normalize_needs(site, id, needs)
  if needs == nil then return {} end
  if type(needs) == "string" then return { needs } end
  if type(needs) ~= "table" then fail(site, "step %s: needs must be a step id or a list of ids", id) end
  local out = {}
  for i, n in ipairs(needs) do
    if type(n) ~= "string" then fail(site, "step %s: needs[%d] must be a step id", id, i) end
    out[#out + 1] = n
  end
  return out
end

local function normalize_retry(site, id, r)
  if r == nil then return { attempts = 1, backoff = "exponential", delay = 1, max_delay = 60 } end
  if math.type(r) == "integer" then r = { attempts = r } end
  if type(r) ~= "table" then fail(site, "step %s: retry must be a number of attempts or a table", id) end
  for k in pairs(r) do
    if k ~= "attempts" and k ~= "backoff" and k ~= "delay" and k ~= "max_delay" then
      fail(site, "step %s: retry has unknown field '%s' (attempts, backoff, delay, max_delay)", id, tostring(k))
    end
  end
  local out = {
    attempts = r.attempts or 1,
    backoff = r.backoff or "exponential",
    delay = r.delay or 1,
    max_delay = r.max_delay or 60,
  }
  if math.type(out.attempts) ~= "integer" or out.attempts < 1 then
    fail(site, "step %s: retry.attempts must be a positive integer", id)
  end
  if not BACKOFFS[out.backoff] then
    fail(site, "step %s: retry.backoff must be fixed, linear or exponential", id)
  end
  if type(out.delay) ~= "number" or out.delay < 0 or type(out.max_delay) ~= "number" or out.max_delay < 0 then
    fail(site, "step %s: retry.delay and retry.max_delay must be non-negative numbers", id)
  end
  return out
end

--- The sandboxed environment a runbook and its modules run in.
local function make_env(book, declare)
  local env = {}
  for _, name in ipairs {
    "assert", "error", "ipairs", "next", "pairs", "pcall", "select", "tonumber", "tostring",
    "type", "xpcall", "rawequal", "rawget", "rawlen", "rawset", "setmetatable", "getmetatable",
  } do
    env[name] = _G[name]
  end
  env._VERSION = _VERSION
  local function copy(t)
    local c = {}
    for k, v in pairs(t) do c[k] = v end
    return c
  end
  env.string = copy(string)
  env.table = copy(table)
  env.math = copy(math)
  env.utf8 = copy(utf8)
  env.os = { time = os.time, clock = os.clock, date = os.date, getenv = os.getenv, difftime = os.difftime }
  -- under --dry-run a runbook writes nothing, not even a file of its own
  local function open(path, mode)
    if mode and mode:match("[wa+]") and require("runbook._engine.audit").dry_run() then
      error("io.open: cannot open " .. tostring(path) .. " for writing in a dry run", 2)
    end
    return io.open(path, mode)
  end
  env.io = { open = open, lines = io.lines, type = io.type }
  local co = copy(coroutine)
  co.create = function(f)
    local c = coroutine.create(f)
    host.guard_coroutine(c)
    return c
  end
  co.wrap = function(f)
    local c = co.create(f)
    return function(...)
      local r = table.pack(coroutine.resume(c, ...))
      if not r[1] then error(r[2], 0) end
      return table.unpack(r, 2, r.n)
    end
  end
  env.coroutine = co
  env.print = function(...)
    local parts = table.pack(...)
    for i = 1, parts.n do parts[i] = tostring(parts[i]) end
    require("runbook._engine.audit").log("info", table.concat(parts, "\t", 1, parts.n))
  end
  env.load = function(chunk, name, mode, e)
    if mode ~= nil and mode ~= "t" then error("load: only text chunks may be loaded in a runbook", 2) end
    return load(chunk, name, "t", e or env)
  end

  local loaded = {}
  env.require = function(name)
    if type(name) ~= "string" then error("require: module name expected", 2) end
    if loaded[name] ~= nil then return loaded[name] end
    if name:match("^runbook%.") then
      -- privacy is in the name: any part starting with '_' (the engine in
      -- runbook._engine, C cores as runbook._x, helpers as runbook.k8s._client)
      if name:match("%._") then
        error("module '" .. name .. "' is not available to runbooks", 2)
      elseif not package.preload[name] then
        error("module '" .. name .. "' is not available to runbooks" .. M.hint(name, public_modules()), 2)
      end
      loaded[name] = require(name)
      return loaded[name]
    end
    local rel = name:gsub("%.", "/")
    local dirs = { book.dir }
    for d in (os.getenv("RUNBOOK_PATH") or ""):gmatch("[^:]+") do dirs[#dirs + 1] = d end
    local tried = {}
    for _, d in ipairs(dirs) do
      for _, pat in ipairs { "%s/%s.lua", "%s/%s/init.lua" } do
        local path = string.format(pat, d, rel)
        local f = io.open(path, "rb")
        if f then
          local src = f:read("a")
          f:close()
          local chunk, err = load(src, "@" .. path, "t", env)
          if not chunk then error(err, 0) end
          local sum = crypto.sha256(src)
          -- a signed runbook's modules are checked before they run
          if book.check_module then book.check_module(path, sum) end
          book.modules[#book.modules + 1] = { name = name, path = path, sha256 = sum }
          local v = chunk(name, path)
          if v == nil then v = true end
          loaded[name] = v
          return v
        end
        tried[#tried + 1] = path
      end
    end
    local hint = package.preload["runbook." .. name] and not name:match("^_") and not name:match("%._")
      and (" (did you mean 'runbook." .. name .. "'?)") or ""
    error("module '" .. name .. "' not found in the runbook's folder or RUNBOOK_PATH" .. hint .. ":\n\t" .. table.concat(tried, "\n\t"), 2)
  end

  for k, f in pairs(declare) do env[k] = f end
  return setmetatable(env, {
    __index = function(t, k)
      error("undefined global '" .. tostring(k) .. "'" .. M.hint(k, global_names(t)), 2)
    end,
  })
end

local function site_of(level)
  local info = debug.getinfo(level + 1, "Sl")
  local file = info and info.source:sub(1, 1) == "@" and info.source:sub(2) or (info and info.short_src) or "?"
  return { file = file, line = info and info.currentline or 0 }
end

--- Loads a runbook file and returns its book: name, params, steps in order.
--- Raises a structured error {kind="runbook"} naming file and line; with
--- opts.problems (a list), the static checks after loading add to it instead.
--- opts.check_module(path, sha256) is called before a local module runs
--- (signed runbooks); opts.expect_sha256 refuses a file that is not the one
--- checked.
---@param path string
---@param opts {problems:table|nil, check_module:function|nil, expect_sha256:string|nil}|nil
---@return table book
function M.load(path, opts)
  local pst = require("runbook._fs").stat(path)
  if pst and pst.type == "directory" then
    errors.raisef("runbook", nil, "%s is a directory: give the runbook file itself (runbook exec %s/NAME.lua)", path, (path:gsub("/+$", "")))
  end
  local f, err = io.open(path, "rb")
  if not f then errors.raisef("runbook", nil, "cannot open runbook: %s", tostring(err)) end
  local src = f:read("a")
  f:close()
  local abs = require("runbook._fs").realpath(path) or path
  local book = {
    file = abs,
    path = path,
    dir = abs:match("^(.*)/[^/]*$") or ".",
    sha256 = crypto.sha256(src),
    source = src,
    name = (abs:match("([^/]+)$") or abs):gsub("%.lua$", ""),
    params = {},
    steps = {},
    by_id = {},
    groups = {},
    modules = {},
    check_module = opts and opts.check_module,
  }
  -- the file checked against a signature is the file loaded
  if opts and opts.expect_sha256 and book.sha256 ~= opts.expect_sha256 then
    errors.raisef("signature", "refused", "%s changed while it was being checked against its signature", abs)
  end
  local declared_runbook = nil

  local declare = {}
  declare.runbook = function(name)
    local site = site_of(2)
    if type(name) ~= "string" or name == "" then fail(site, "runbook: a name string expected") end
    if not name:match("^[%w._-]+$") then
      fail(site, "runbook: name '%s' may use only letters, digits, '.', '_' and '-'", name)
    end
    return function(spec)
      site = site_of(2)
      if declared_runbook then fail(site, "runbook declared twice (first at line %d)", declared_runbook.line) end
      if type(spec) ~= "table" then fail(site, "runbook %s: a table expected", name) end
      check_fields(site, "runbook " .. name, spec, RUNBOOK_FIELDS)
      declared_runbook = site
      book.name = name
      book.description = spec.description
      book.owner = spec.owner
      book.doc = spec.doc
      for pname, p in pairs(spec.params or {}) do
        if type(pname) ~= "string" or not pname:match("^[%a_][%w_]*$") then
          fail(site, "runbook %s: param name '%s' must be an identifier", name, tostring(pname))
        end
        if type(p) ~= "table" then p = { default = p } end
        check_fields(site, "param " .. pname, p, PARAM_FIELDS)
        if p.type and p.type ~= "string" and p.type ~= "number" and p.type ~= "integer" and p.type ~= "boolean" then
          fail(site, "param %s: type must be string, number, integer or boolean", pname)
        end
        book.params[pname] = p
      end
      return book
    end
  end

  local function declare_step(kind, fields)
    return function(id)
      local site = site_of(2)
      if type(id) ~= "string" or not id:match("^[%w._-]+$") then
        fail(site, "%s: id must be a non-empty string of letters, digits, '.', '_' or '-'", kind)
      end
      return function(spec)
        site = site_of(2)
        if type(spec) ~= "table" then fail(site, "%s %s: a table expected", kind, id) end
        if book.by_id[id] then
          fail(site, "duplicate step id '%s' (first declared at line %d)", id, book.by_id[id].site.line)
        end
        check_fields(site, kind .. " " .. id, spec, fields)
        local s = {
          id = id, kind = kind, site = site, title = spec.title or id, owner = spec.owner,
          needs = normalize_needs(site, id, spec.needs),
          run = spec.run, verify = spec.verify, undo = spec.undo,
          instructions = spec.instructions, doc = spec.doc or spec.description,
          timeout = spec.timeout, tags = spec.tags,
        }
        if kind == "step" then
          if not spec.run then fail(site, "step %s: run function required", id) end
          s.retry = normalize_retry(site, id, spec.retry)
        else
          if not spec.instructions then fail(site, "manual %s: instructions required", id) end
          if spec.approvers ~= nil and (math.type(spec.approvers) ~= "integer" or spec.approvers < 1) then
            fail(site, "manual %s: approvers must be a whole number of people, 1 or more", id)
          end
          s.approvers = spec.approvers or 1
          s.retry = normalize_retry(site, id, nil)
        end
        if s.timeout ~= nil and s.timeout <= 0 then fail(site, "%s %s: timeout must be positive", kind, id) end
        s.index = #book.steps + 1
        book.steps[s.index] = s
        book.by_id[id] = s
        return s
      end
    end
  end
  declare.step = declare_step("step", STEP_FIELDS)
  declare.manual = declare_step("manual", MANUAL_FIELDS)

  local function group(name, list)
    local site = site_of(3)
    if type(list) ~= "table" or #list == 0 then fail(site, "parallel: a list of steps expected") end
    name = name or ("parallel-" .. (#book.groups + 1))
    local g = { name = name, steps = {}, site = site }
    for i, s in ipairs(list) do
      if type(s) ~= "table" or not s.id or book.by_id[s.id] ~= s then
        fail(site, "parallel %s: item %d is not a step declared with step \"ID\" {...}", name, i)
      end
      if s.kind ~= "step" then fail(site, "parallel %s: manual step %s cannot run in parallel", name, s.id) end
      if s.group then fail(site, "parallel %s: step %s is already in group %s", name, s.id, s.group) end
      s.group = name
      g.steps[#g.steps + 1] = s.id
    end
    book.groups[#book.groups + 1] = g
    return g
  end
  -- not tail calls: group's site_of(3) is the runbook line that declared it
  declare.parallel = function(a)
    if type(a) == "string" then
      return function(list) local g = group(a, list) return g end
    end
    local g = group(nil, a)
    return g
  end

  local env = make_env(book, declare)
  local chunk, lerr = load(src, "@" .. path, "t", env)
  if not chunk then errors.raisef("runbook", nil, "%s", lerr) end
  local ok, rerr = xpcall(chunk, function(e) return host.error_of(e, "runbook") end)
  if not ok then error(rerr, 0) end
  book.env = env
  M.validate(book, opts and opts.problems)
  return book
end

--- Static checks over a loaded book: unknown needs, cycles, groups whose
--- members need each other. Computes book.order (declaration order, moved
--- only as far as needs require). With a problems list, every problem is
--- added to it ("file:line: message") instead of the first being raised.
function M.validate(book, problems)
  local function report(site, fmt, ...)
    if not problems then return fail(site, fmt, ...) end
    problems[#problems + 1] = (site and (site.file .. ":" .. site.line .. ": ") or "") .. string.format(fmt, ...)
  end
  if #book.steps == 0 then
    if problems then problems[#problems + 1] = book.file .. ": no steps declared" return book end
    errors.raisef("runbook", nil, "%s: no steps declared", book.file)
  end
  local known = {}
  for _, s in ipairs(book.steps) do
    local ok = {}
    for _, n in ipairs(s.needs) do
      if not book.by_id[n] then
        report(s.site, "step %s needs unknown step '%s'%s", s.id, n, M.hint(n, book.by_id))
      elseif n == s.id then
        report(s.site, "step %s needs itself", s.id)
      else
        if s.group and book.by_id[n].group == s.group then
          report(s.site, "step %s needs %s, but both are in parallel group %s", s.id, n, s.group)
        end
        ok[#ok + 1] = n
      end
    end
    known[s.id] = ok
  end
  -- stable topological order: repeatedly take the first declared step whose needs are placed
  local placed, order = {}, {}
  while #order < #book.steps do
    local progress = false
    for _, s in ipairs(book.steps) do
      if not placed[s.id] then
        local ready = true
        for _, n in ipairs(known[s.id]) do
          if not placed[n] then ready = false break end
        end
        if ready then
          placed[s.id] = true
          order[#order + 1] = s
          progress = true
          break
        end
      end
    end
    if not progress then
      -- report one cycle: follow unplaced needs until a step repeats
      local s
      for _, c in ipairs(book.steps) do
        if not placed[c.id] then s = c break end
      end
      local path, seen = {}, {}
      while s and not seen[s.id] do
        seen[s.id] = #path + 1
        path[#path + 1] = s.id
        local nxt
        for _, n in ipairs(known[s.id]) do
          if not placed[n] then nxt = book.by_id[n] break end
        end
        s = nxt
      end
      local cycle = {}
      for i = seen[s.id], #path do cycle[#cycle + 1] = path[i] end
      cycle[#cycle + 1] = s.id
      report(book.by_id[cycle[1]].site, "steps form a cycle: %s", table.concat(cycle, " -> "))
      -- the rest of the order is moot: place the cycle's steps as declared and go on
      for _, c in ipairs(book.steps) do
        if not placed[c.id] and seen[c.id] then
          placed[c.id] = true
          order[#order + 1] = c
        end
      end
    end
  end
  book.order = order
  for i, s in ipairs(order) do s.position = i end
  return book
end

-- The globals the runbook file's functions read that nothing defines: not
-- in its environment once loaded (the vocabulary, the standard library,
-- what the top level and its modules set) and not assigned anywhere in the
-- file. Each as "file:line: undefined global 'x' (did you mean 'y'?)".
local function undefined_globals_in(book, path, src, problems)
  local acc, err = require("runbook._engine.globals").accesses(src, "@" .. path)
  if not acc then
    problems[#problems + 1] = path .. ": " .. tostring(err)
    return
  end
  local set = {}
  for _, a in ipairs(acc) do
    if a.kind == "set" then set[a.name] = true end
  end
  local seen = {}
  for i, a in ipairs(acc) do a.order = i end
  table.sort(acc, function(x, y) if x.line ~= y.line then return x.line < y.line end return x.order < y.order end)
  for _, a in ipairs(acc) do
    local key = a.name .. "\0" .. a.line
    if a.kind == "get" and a.in_function and not set[a.name] and rawget(book.env, a.name) == nil and not seen[key] then
      seen[key] = true
      problems[#problems + 1] = string.format("%s:%d: undefined global '%s'%s", path, a.line, a.name,
        M.hint(a.name, global_names(book.env)))
    end
  end
end

-- the runbook file and every module it loaded from its folder or RUNBOOK_PATH
local function undefined_globals(book, problems)
  undefined_globals_in(book, book.path, book.source, problems)
  for _, m in ipairs(book.modules) do
    local f = io.open(m.path, "rb")
    if f then
      local src = f:read("a")
      f:close()
      undefined_globals_in(book, m.path, src, problems)
    end
  end
end

-- The required params that --param, --values and the environment leave unset.
local function missing_params(book, given, problems)
  local missing = require("runbook._engine.params").missing(book.params, given)
  for _, m in ipairs(missing) do
    problems[#problems + 1] = string.format("%s: missing required param '%s' (set %s)", book.path, m.name, m.how)
  end
end

--- `runbook check`: every problem of a runbook at once, without running a
--- step. Loading errors (syntax, a misspelt field, an error at the top
--- level) still stop at the first, as the file cannot be read past it.
--- given: {cli=, values=} as for params.resolve. Returns book, problems.
function M.check(path, given)
  local problems = {}
  local book = M.load(path, { problems = problems })
  undefined_globals(book, problems)
  missing_params(book, given or {}, problems)
  return book, problems
end

return M
