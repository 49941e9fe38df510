---@meta
-- Type stubs for lua-language-server: the runbook vocabulary (globals in a
-- runbook's environment) and the values implemented in C. Point your editor
-- at this folder and stdlib/ (see .luarc.json).

---@class runbook.ParamSpec
---@field default any
---@field required boolean|nil
---@field env string|nil
---@field secret boolean|nil
---@field type "string"|"number"|"integer"|"boolean"|nil
---@field choices any[]|nil
---@field doc string|nil

---@class runbook.RunbookSpec
---@field description string|nil
---@field doc string|nil
---@field owner string|nil
---@field params table<string, runbook.ParamSpec|any>|nil

---@class runbook.Retry
---@field attempts integer
---@field backoff "fixed"|"linear"|"exponential"|nil
---@field delay number|nil
---@field max_delay number|nil

---@class runbook.StepSpec
---@field run fun(ctx: runbook.Ctx): any
---@field title string|nil
---@field owner string|nil
---@field doc string|nil
---@field needs string|string[]|nil
---@field retry integer|runbook.Retry|nil
---@field timeout number|nil
---@field verify (fun(ctx: runbook.Ctx): boolean)|nil
---@field undo (fun(ctx: runbook.Ctx))|nil

---@class runbook.ManualSpec
---@field instructions string
---@field title string|nil
---@field owner string|nil
---@field doc string|nil
---@field needs string|string[]|nil
---@field verify (fun(ctx: runbook.Ctx): boolean)|nil

---@class runbook.Step
---@field id string

--- Names the runbook and declares its params.
---@param name string
---@return fun(spec: runbook.RunbookSpec)
function runbook(name) end

--- Declares a step.
---@param id string
---@return fun(spec: runbook.StepSpec): runbook.Step
function step(id) end

--- Declares a step a person does.
---@param id string
---@return fun(spec: runbook.ManualSpec): runbook.Step
function manual(id) end

--- Groups steps that may run at the same time: parallel "name" { step ..., ... }
---@param name_or_steps string|runbook.Step[]
---@return any
function parallel(name_or_steps) end

---@class runbook.Ctx
---@field params table
---@field outputs table<string, any>
---@field run_id string
---@field step string
---@field title string
---@field attempt integer
---@field dry_run boolean
local Ctx = {}
---@generic T
---@param key string
---@param fn fun(): T
---@return T
function Ctx:once(key, fn) end
---@param key string
---@param value any
function Ctx:checkpoint(key, value) end
---@param key string
---@return any
function Ctx:cursor(key) end
function Ctx:log(fmt, ...) end
function Ctx:info(fmt, ...) end
function Ctx:warn(fmt, ...) end
function Ctx:error(fmt, ...) end
function Ctx:debug(fmt, ...) end
---@param done number
---@param total number|nil
---@param note string|nil
function Ctx:progress(done, total, note) end
---@param t table
function Ctx:action(t) end
---@param seconds number
function Ctx:sleep(seconds) end

--- A secret value (implemented in C: src/lua_secret.c).
---@class runbook.Secret
local Secret = {}
---@return string
function Secret:reveal() end
---@return integer
function Secret:len() end
---@param url boolean|nil
---@return runbook.Secret
function Secret:base64(url) end
---@return runbook.Secret
function Secret:hex() end
---@param i integer
---@param j integer|nil
---@return runbook.Secret
function Secret:sub(i, j) end
function Secret:wipe() end
