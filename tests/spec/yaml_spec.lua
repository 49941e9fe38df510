local yaml = require "runbook.yaml"
local json = require "runbook.json"
local secret = require "runbook.secret"

describe("runbook.yaml", function()
  it("resolves plain scalars by the YAML 1.2 core schema; quoted ones stay strings", function()
    local v = yaml.load([[
null1: ~
null2: null
null3:
bools: [true, False, TRUE, yes, no, on]
ints: [0, -12, +7, 0x1F, 0o17, 9223372036854775807]
big: 99999999999999999999
floats: [1.5, -0.25, 1e3, .5, .inf, -.Inf]
nan: .nan
quoted: ["1", '2.5', "true", 'null', "~"]
tagged: [!!str 12, !!int "42", !!float 3, !!bool "true", !!null ""]
version: 1.10
]])
    assert.are.equal(yaml.null, v.null1)
    assert.are.equal(yaml.null, v.null2)
    assert.are.equal(yaml.null, v.null3)
    assert.are.same({ true, false, true, "yes", "no", "on" }, v.bools)
    assert.are.same({ 0, -12, 7, 31, 15, math.maxinteger }, v.ints)
    for _, i in ipairs(v.ints) do assert.are.equal("integer", math.type(i)) end
    assert.are.equal("float", math.type(v.big))
    assert.are.equal(1e20, v.big)
    assert.are.same({ 1.5, -0.25, 1000.0, 0.5, math.huge, -math.huge }, v.floats)
    assert.are_not.equal(v.nan, v.nan)
    assert.are.same({ "1", "2.5", "true", "null", "~" }, v.quoted)
    assert.are.same({ "12", 42, 3.0, true, yaml.null }, v.tagged)
    assert.are.equal("float", math.type(v.tagged[3]))
    assert.are.equal(1.1, v.version)
    assert.are.equal(yaml.null, json.null)
  end)

  it("loads multi-document streams", function()
    local docs = yaml.load_all("a: 1\n---\nb: 2\n...\n---\n- x\n---\n")
    assert.are.equal(4, #docs)
    assert.are.same({ a = 1 }, docs[1])
    assert.are.same({ b = 2 }, docs[2])
    assert.are.same({ "x" }, docs[3])
    assert.are.equal(yaml.null, docs[4])
    assert.are.same({}, yaml.load_all(""))
    assert.is_nil(yaml.load(""))
  end)

  it("resolves anchors, aliases and merge keys", function()
    local v = yaml.load([[
defaults: &defaults
  adapter: postgres
  host: localhost
  pool: 5
extra: &extra
  pool: 10
  timeout: 30
dev:
  <<: *defaults
  database: dev
multi:
  <<: [*extra, *defaults]
  host: db.internal
again: *defaults
list: &l [1, 2]
same: *l
]])
    assert.are.same({ adapter = "postgres", host = "localhost", pool = 5, database = "dev" }, v.dev)
    -- explicit keys win; earlier merge sources win over later ones
    assert.are.same({ adapter = "postgres", host = "db.internal", pool = 10, timeout = 30 }, v.multi)
    assert.are.equal(v.defaults, v.again) -- an alias shares the anchored value
    assert.are.same({ 1, 2 }, v.same)
  end)

  it("loads block scalars with every chomping mode, and folded ones", function()
    local v = yaml.load("clip: |\n  a\n  b\n\nstrip: |-\n  a\n  b\n\nkeep: |+\n  a\n  b\n\nfolded: >\n  one\n  two\n\n  three\nindented: |2\n    four\n  five\nlast: end\n")
    assert.are.equal("a\nb\n", v.clip)
    assert.are.equal("a\nb", v.strip)
    assert.are.equal("a\nb\n\n", v.keep)
    assert.are.equal("one two\nthree\n", v.folded)
    assert.are.equal("  four\nfive\n", v.indented)
  end)

  it("decodes !!binary", function()
    assert.are.equal("\0\1\2hello", yaml.load("b: !!binary AAECaGVsbG8=\n").b)
    local ok, err = pcall(yaml.load, "b: !!binary '***'\n")
    assert.is_false(ok)
    assert.are.equal("yaml.load: line 1 column 4: !!binary value is not valid base64", err.message)
  end)

  it("names duplicate keys, unknown aliases, syntax errors and the file", function()
    local cases = {
      { "a: 1\nb:\n  c: 1\n  c: 2\n", "yaml.load: line 4 column 3: duplicate mapping key 'c'" },
      { "a: *missing\n", "yaml.load: line 1 column 4: unknown alias *missing" },
      { "a: [1, 2\n", "yaml.load: line 2 column 1: did not find expected ',' or ']' (while parsing a flow sequence at line 1)" },
      { "a: b: c\n", "yaml.load: line 1 column 5: mapping values are not allowed in this context" },
      { "? [complex]\n: key\n", "yaml.load: line 1 column 3: complex mapping keys are not supported" },
      { "x: !!int abc\n", "yaml.load: line 1 column 4: value is not a valid !!int" },
    }
    for _, c in ipairs(cases) do
      local ok, err = pcall(yaml.load, c[1])
      assert.is_false(ok, c[1])
      assert.are.equal("yaml", err.kind)
      assert.are.equal(c[2], err.message)
    end
    local _, err = pcall(yaml.load_all, "a: [", "k8s/app.yaml")
    assert.truthy(err.message:find("^yaml.load_all: k8s/app.yaml: line 2 column 1: "))
    local v, perr = yaml.pload("a: *x")
    assert.is_nil(v)
    assert.truthy(perr.message:find("unknown alias", 1, true))
  end)

  it("stops an alias bomb", function()
    local lines = { "a: &a [x, x, x, x, x, x, x, x, x, x]" }
    local prev = "a"
    for i = 1, 8 do
      local name = string.char(string.byte("a") + i)
      local refs = {}
      for _ = 1, 10 do refs[#refs + 1] = "*" .. prev end
      lines[#lines + 1] = string.format("%s: &%s [%s]", name, name, table.concat(refs, ", "))
      prev = name
    end
    local ok, err = pcall(yaml.load, table.concat(lines, "\n") .. "\n")
    assert.is_false(ok)
    assert.truthy(err.message:find("expands to more than 10000000 nodes (an alias bomb?)", 1, true), err.message)
  end)

  it("loads a Kubernetes multi-document manifest", function()
    local docs = yaml.load_all([[
apiVersion: apps/v1
kind: Deployment
metadata:
  name: tezca-api
  namespace: tezca
  labels: {app: tezca-api}
spec:
  replicas: 2
  selector:
    matchLabels:
      app: tezca-api
  template:
    metadata:
      labels:
        app: tezca-api
    spec:
      containers:
        - name: api
          image: "ghcr.io/madfam-org/tezca/api:${TAG}"
          ports:
            - containerPort: 8000
          env:
            - name: DJANGO_DEBUG
              value: "false"
          args: []
---
apiVersion: v1
kind: Service
metadata: {name: tezca-api, namespace: tezca}
spec:
  ports: [{port: 8000, targetPort: 8000}]
---
apiVersion: v1
kind: Secret
metadata:
  name: tezca-secrets
type: Opaque
stringData:
  DB_USER: tezca
  on: "yes"
]])
    assert.are.equal(3, #docs)
    local d = docs[1]
    assert.are.equal(2, d.spec.replicas)
    assert.are.equal("ghcr.io/madfam-org/tezca/api:${TAG}", d.spec.template.spec.containers[1].image)
    assert.are.equal(8000, d.spec.template.spec.containers[1].ports[1].containerPort)
    assert.are.equal("false", d.spec.template.spec.containers[1].env[1].value)
    assert.is_true(json.is_array(d.spec.template.spec.containers[1].args))
    assert.are.same({ { port = 8000, targetPort = 8000 } }, docs[2].spec.ports)
    assert.are.same({ DB_USER = "tezca", on = "yes" }, docs[3].stringData)
    -- and it encodes as the JSON a server expects
    assert.truthy(json.encode(d):find('"args":[]', 1, true))
  end)

  it("loads a docker-compose file", function()
    local v = yaml.load([[
version: "3.8"
x-env: &env
  REDIS_URL: redis://redis:6379/0
services:
  api:
    image: tessera/api:latest
    environment:
      <<: *env
      DATABASE_URL: postgres://tessera@db/tessera
    ports: ["8000:8000"]
    depends_on: [db, redis]
    healthcheck:
      test: ["CMD", "curl", "-f", "http://localhost:8000/health"]
      interval: 30s
  db:
    image: postgres:15
]])
    assert.are.equal("3.8", v.version)
    assert.are.same({ REDIS_URL = "redis://redis:6379/0", DATABASE_URL = "postgres://tessera@db/tessera" }, v.services.api.environment)
    assert.are.same({ "8000:8000" }, v.services.api.ports)
    assert.are.equal("30s", v.services.api.healthcheck.interval)
  end)

  it("dumps values that load back unchanged", function()
    local values = {
      { name = "web", replicas = 2, ratio = 0.5, whole = 3.0, on = true, none = json.null,
        empty_list = json.array(), empty_map = {}, tricky = { "yes", "no", "1", "true", "null", "", " pad", "a: b", "#x", "- y", "x #y" },
        text = "line 1\nline 2\n", trailing = "keep\n\n", nested = { { a = { 1, { b = "c" } } } } },
      { math.maxinteger, math.mininteger, 1e300, -0.5 },
      "just a string",
    }
    for _, v in ipairs(values) do
      local text = yaml.dump(v)
      assert.are.same(v, yaml.load(text), text)
    end
    assert.are.equal("- a: 1\n  b: 2\n", yaml.dump({ { a = 1, b = 2 } }))
    assert.are.equal('key: "yes"\n', yaml.dump({ key = "yes" }))
    assert.are.equal("text: |-\n  a\n  b\n", yaml.dump({ text = "a\nb" }))
    assert.are.equal("list: []\nmap: {}\n", yaml.dump({ list = json.array(), map = {} }))
  end)

  it("refuses secrets and cycles when dumping", function()
    assert.has_error(function() yaml.dump({ pw = secret.wrap("hunter2-secret") }) end, "yaml.dump: cannot encode a secret value (reveal it explicitly)")
    local cyc = {}
    cyc.self = cyc
    assert.has_error(function() yaml.dump(cyc) end, "yaml.dump: value nested too deeply (a cycle?)")
  end)
end)
