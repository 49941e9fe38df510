-- runbook.template: ${VAR} and ${VAR:-default} without a shell.
local template = require "runbook.template"
local secret = require "runbook.secret"
local host = require "runbook._host"
local errors = require "runbook.errors"
local rbtest = require "rbtest"

local function raised(fn, ...)
  local ok, err = pcall(fn, ...)
  assert(not ok, "expected an error")
  return err
end

describe("runbook.template", function()
  describe("render", function()
    it("substitutes ${VAR} from vars", function()
      assert.are.equal("host=db.internal port=5432 tls=true ratio=0.5",
        template.render("host=${HOST} port=${PORT} tls=${TLS} ratio=${R}", { HOST = "db.internal", PORT = 5432, TLS = true, R = 0.5 }))
      assert.are.equal("ab", template.render("${A}${B}", { A = "a", B = "b" }))
      assert.are.equal("x==x", template.render("${_x1}==${_x1}", { _x1 = "x" }))
      assert.are.equal("empty:[]", template.render("empty:[${E}]", { E = "" }))
    end)

    it("uses the default when the variable is unset or empty", function()
      assert.are.equal("ns=tezca", template.render("ns=${NS:-tezca}", {}))
      assert.are.equal("ns=tezca", template.render("ns=${NS:-tezca}", { NS = "" }))
      assert.are.equal("ns=prod", template.render("ns=${NS:-tezca}", { NS = "prod" }))
      assert.are.equal("x=", template.render("x=${X:-}", {}))
      assert.are.equal("url=http://api:8000/v1", template.render("url=${URL:-http://${H:-api}:${P}/v1}", { P = 8000 }))
      assert.are.equal("ab}", template.render("${A:-a}b}", {}))
    end)

    it("keeps $$ as $ and leaves other $ alone", function()
      assert.are.equal("cost: $5, ${NOT_A_VAR}, $HOME, $1, $", template.render("cost: $$5, $${NOT_A_VAR}, $HOME, $1, $", {}))
      assert.are.equal("${X} is $X", template.render("$${X} is $X", {}))
      assert.are.equal("pre$", template.render("${A:-pre$}", {}))
    end)

    it("names a missing variable and its line, never substituting an empty string", function()
      local err = raised(template.render, "a: 1\nhost: ${DB_HOST}\nport: ${DB_PORT:-5432}\nkey: ${API_KEY}\n", {})
      assert.is_true(errors.is(err, "template"))
      assert.are.equal("missing", err.code)
      assert.are.equal("template line 2: variable DB_HOST is not set and has no default (also missing: API_KEY at line 4)", err.message)
      assert.are.equal("DB_HOST", err.details.variable)
      assert.are.equal(2, err.details.line)
      assert.are.same({ { name = "DB_HOST", line = 2 }, { name = "API_KEY", line = 4 } }, err.details.missing)
    end)

    it("counts lines across multi-line defaults", function()
      local err = raised(template.render, "${A:-one\ntwo\nthree}\n${B:-x\ny}\n${MISSING}", { A = "set" })
      assert.are.equal("template line 6: variable MISSING is not set and has no default", err.message)
      local err2 = raised(template.render, "${A:-one\n${INNER}}", {})
      assert.are.equal("template line 2: variable INNER is not set and has no default", err2.message)
    end)

    it("names the template in messages when given a name", function()
      local err = raised(template.render, "\n\n${X}", {}, { name = "deploy.yaml" })
      assert.are.equal("template deploy.yaml:3: variable X is not set and has no default", err.message)
    end)

    it("rejects expansions it does not support", function()
      local cases = {
        { "x ${1ABC}", "template line 1: '${' must be followed by a variable name ([A-Za-z_][A-Za-z0-9_]*); write $$ for a literal $" },
        { "${}", "template line 1: '${' must be followed by a variable name ([A-Za-z_][A-Za-z0-9_]*); write $$ for a literal $" },
        { "\n${X:?required}", "template line 2: unsupported expansion ${X:...}: only ${NAME} and ${NAME:-default} are supported" },
        { "${X-default}", "template line 1: unsupported expansion ${X-...}: only ${NAME} and ${NAME:-default} are supported" },
        { "${X", "template line 1: ${X is not closed with }" },
        { "${X:-abc", "template line 1: ${X:- is not closed with }" },
      }
      for _, c in ipairs(cases) do
        local err = raised(template.render, c[1], { X = "x" })
        assert.are.equal("syntax", err.code)
        assert.are.equal(c[2], err.message)
      end
    end)

    it("rejects values that are not text", function()
      local err = raised(template.render, "${T}", { T = { 1 } })
      assert.are.equal("type", err.code)
      assert.are.equal("template line 1: variable T is a table (a string, number, boolean or secret expected)", err.message)
    end)

    it("falls back to the environment with env = true, vars first", function()
      local path = os.getenv("PATH")
      assert.are.equal("p=" .. path, template.render("p=${PATH}", nil, { env = true }))
      assert.are.equal("p=mine", template.render("p=${PATH}", { PATH = "mine" }, { env = true }))
      assert.are.equal("missing", raised(template.render, "${PATH}", {}).code)
    end)

    it("makes the result a secret when a secret is substituted", function()
      local pw = secret.wrap("pw-" .. require("runbook._crypto").random_hex(8))
      local out = template.render("user: app\npassword: ${PW}\n", { PW = pw })
      assert.is_true(secret.is(out))
      assert.are.equal("[REDACTED]", tostring(out))
      assert.are.equal("user: app\npassword: " .. pw:reveal() .. "\n", out:reveal())
      -- the whole result is registered too, and the value alone stays known
      assert.are.equal("[REDACTED]", host.scrub(out:reveal()))
      assert.are.equal("password: [REDACTED]", host.scrub("password: " .. pw:reveal()))
      -- a default is not secret, so nothing is wrapped when the secret is not used
      assert.is_false(secret.is(template.render("${X:-plain}", { PW = pw })))
      assert.is_true(secret.is(template.render(secret.wrap("literal text"), {})))
    end)

    it("checks its arguments", function()
      assert.matches("template: text %(string or secret%) expected, got nil", tostring(raised(template.render, nil, {})))
      assert.matches("template: vars must be a table", tostring(raised(template.render, "x", "y")))
    end)
  end)

  describe("file", function()
    local dir
    setup(function() dir = rbtest.tmpdir("tpl") end)
    teardown(function() rbtest.rmtree(dir) end)

    it("renders a manifest, leaving shell text in it alone", function()
      local path = dir .. "/deploy.yaml"
      rbtest.write(path, [[
apiVersion: apps/v1
kind: Deployment
metadata:
  name: ${APP}
  namespace: ${NAMESPACE:-default}
spec:
  template:
    spec:
      containers:
        - name: api
          image: ${IMAGE}
          command: ["sh", "-c", "echo $HOSTNAME && exec gunicorn --bind 0.0.0.0:$${PORT:-8000}"]
]])
      local out = template.file(path, { APP = "tezca-api", IMAGE = "ghcr.io/x/api:1.2.3" })
      assert.are.equal([[
apiVersion: apps/v1
kind: Deployment
metadata:
  name: tezca-api
  namespace: default
spec:
  template:
    spec:
      containers:
        - name: api
          image: ghcr.io/x/api:1.2.3
          command: ["sh", "-c", "echo $HOSTNAME && exec gunicorn --bind 0.0.0.0:${PORT:-8000}"]
]], out)
    end)

    it("names the file and line of a missing variable", function()
      local path = dir .. "/secret.yaml"
      rbtest.write(path, "kind: Secret\nstringData:\n  DB_URL: ${DATABASE_URL}\n")
      local err = raised(template.file, path, {})
      assert.are.equal("template " .. path .. ":3: variable DATABASE_URL is not set and has no default", err.message)
      assert.are.equal(path, err.details.file)
    end)

    it("says when the file cannot be read", function()
      local err = raised(template.file, dir .. "/nope.yaml", {})
      assert.are.equal("unreadable", err.code)
      assert.are.equal("template: cannot read " .. dir .. "/nope.yaml: No such file or directory", err.message)
    end)
  end)

  describe("names", function()
    it("lists the variables a template uses, defaults included", function()
      assert.are.same({ "A", "URL", "H", "B" }, template.names("${A} ${URL:-http://${H}} $${NOT} ${A} ${B} $C"))
      assert.are.same({}, template.names("no vars, $$ and $HOME"))
    end)
  end)
end)
