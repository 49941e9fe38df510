local yaml = require "runbook.yaml"
local json = require "runbook.json"
local secret = require "runbook._secret"
local host = require "runbook._host"

local null = json.null

local function raised(fn, ...)
  local ok, err = pcall(fn, ...)
  assert.is_false(ok, "expected an error")
  return err
end

local function load_error(text, name)
  local err = raised(yaml.load, text, name)
  assert.are.equal(host.error_mt, getmetatable(err))
  assert.are.equal("yaml", err.kind)
  return err.message
end

local function write_tmp(text)
  local path = os.tmpname()
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
  return path
end

-- Deep equality that also tells integers from floats, -0.0 from 0.0, NaN
-- from NaN and [] from {} (assert.same does not).
local function identical(a, b, path)
  path = path or "value"
  if type(a) ~= type(b) then return false, path .. ": " .. type(a) .. " vs " .. type(b) end
  if type(a) == "number" then
    if math.type(a) ~= math.type(b) then return false, path .. ": " .. math.type(a) .. " vs " .. math.type(b) end
    if a ~= a and b ~= b then return true end
    if a ~= b or (a == 0 and 1 / a ~= 1 / b) then return false, path .. ": " .. a .. " vs " .. b end
    return true
  end
  if type(a) ~= "table" then
    if a ~= b then return false, path .. ": " .. tostring(a) .. " vs " .. tostring(b) end
    return true
  end
  -- the mark matters for empty tables only ([] vs {}); non-empty sequences need none
  if next(a) == nil and json.is_array(a) ~= json.is_array(b) then return false, path .. ": array mark differs" end
  for k, v in pairs(a) do
    local ok, why = identical(v, b[k], path .. "." .. tostring(k))
    if not ok then return false, why end
  end
  for k in pairs(b) do
    if a[k] == nil then return false, path .. "." .. tostring(k) .. ": missing" end
  end
  return true
end

local function assert_identical(expected, actual)
  local ok, why = identical(expected, actual)
  assert(ok, why)
end

describe("runbook.yaml", function()
  describe("plain scalars (YAML 1.2 core schema)", function()
    local cases = {
      { "null", null }, { "Null", null }, { "NULL", null }, { "~", null }, { "", null },
      { "true", true }, { "True", true }, { "TRUE", true },
      { "false", false }, { "False", false }, { "FALSE", false },
      { "0", 0 }, { "42", 42 }, { "-17", -17 }, { "+17", 17 }, { "0123", 123 },
      { "0x1F", 31 }, { "0xff", 255 }, { "0o17", 15 },
      { "9223372036854775807", math.maxinteger }, { "-9223372036854775808", math.mininteger },
      { "1.5", 1.5 }, { "-0.0", -0.0 }, { "1e3", 1000.0 }, { "1.", 1.0 }, { ".5", 0.5 }, { "-2.5E-3", -0.0025 },
      { "6.02e+23", 6.02e23 }, { ".inf", math.huge }, { "+.Inf", math.huge }, { "-.INF", -math.huge },
      { "yes", "yes" }, { "no", "no" }, { "on", "on" }, { "off", "off" }, { "y", "y" },
      { "nULL", "nULL" }, { "tRUE", "tRUE" }, { "1_000", "1_000" }, { "0b101", "0b101" }, { "0x", "0x" },
      { "0o8", "0o8" }, { "-0x1", "-0x1" }, { "12:30", "12:30" }, { "2026-11-22", "2026-11-22" },
      { "1e", "1e" }, { ".", "." }, { "inf", "inf" }, { "v1.2.3", "v1.2.3" }, { "hello world", "hello world" },
    }
    for _, c in ipairs(cases) do
      it(string.format("%q", c[1]), function()
        assert_identical(c[2], yaml.load("v: " .. c[1]).v)
      end)
    end
    it(".nan is NaN", function()
      for _, text in ipairs({ ".nan", ".NaN", ".NAN" }) do
        local v = yaml.load("v: " .. text).v
        assert.are.equal("float", math.type(v))
        assert.is_true(v ~= v)
      end
    end)
    it("refuses integers outside 64 bits", function()
      assert.are.equal(
        "yaml.load: line 1 column 4: integer 9223372036854775808 is outside the 64-bit range (quote it to keep it as a string)",
        load_error("v: 9223372036854775808"))
      assert.are.equal(
        "yaml.load: line 2 column 4: integer 0x10000000000000000 is outside the 64-bit range (quote it to keep it as a string)",
        load_error("a: 1\nb: 0x10000000000000000"))
    end)
  end)

  describe("quoted and block scalars", function()
    it("are always strings", function()
      assert_identical({ "1", "true", "null", "", "~", "0x1F", "1.5" },
        yaml.load([=[["1", 'true', "null", '', "~", '0x1F', "1.5"]]=]))
    end)
    it("decode double-quoted escapes, binary-safe", function()
      assert.are.equal("a\0b\tc\u{e9}\u{1F600}", yaml.load([[v: "a\0b\tc\xe9\U0001F600"]]).v)
      assert.are.equal("it's", yaml.load([[v: 'it''s']]).v)
    end)
    it("keep lines with | and each chomping mode", function()
      local v = yaml.load("clip: |\n  one\n  two\n\n\nstrip: |-\n  one\n  two\n\nkeep: |+\n  one\n  two\n\n\nlast: x\n")
      assert.are.equal("one\ntwo\n", v.clip)
      assert.are.equal("one\ntwo", v.strip)
      assert.are.equal("one\ntwo\n\n\n", v.keep)
      assert.are.equal("x", v.last)
    end)
    it("fold lines with > and each chomping mode", function()
      local v = yaml.load("clip: >\n  one\n  two\n\n  three\n    indented\n\nstrip: >-\n  a\n  b\nkeep: >+\n  a\n  b\n\n")
      assert.are.equal("one two\nthree\n  indented\n", v.clip)
      assert.are.equal("a b", v.strip)
      assert.are.equal("a b\n\n", v.keep)
    end)
    it("honour an indentation indicator", function()
      assert.are.equal("  indented\nflush\n", yaml.load("v: |2\n    indented\n  flush\n").v)
    end)
    it("are strings even when they look like numbers", function()
      assert_identical({ a = "123\n", b = "true" }, yaml.load("a: |\n  123\nb: >-\n  true\n"))
    end)
  end)

  describe("tags", function()
    it("honour the standard scalar tags", function()
      local v = yaml.load([[
s: !!str 12
i: !!int "12"
h: !!int 0x10
f: !!float 1
g: !!float "2.5"
b: !!bool "true"
n: !!null ""
t: !!str true
]])
      assert_identical({ s = "12", i = 12, h = 16, f = 1.0, g = 2.5, b = true, n = null, t = "true" }, v)
    end)
    it("decode !!binary into bytes", function()
      local v = yaml.load("png: !!binary |\n  iVBORw0KGgo=\nraw: !!binary AP8=\n")
      assert.are.equal("\137PNG\r\n\26\n", v.png)
      assert.are.equal("\0\255", v.raw)
    end)
    it("refuse values that do not fit the tag", function()
      assert.are.equal('yaml.load: line 1 column 4: invalid !!int value "twelve"', load_error("v: !!int twelve"))
      assert.are.equal('yaml.load: line 1 column 4: invalid !!bool value "yes"', load_error("v: !!bool yes"))
      assert.are.equal('yaml.load: line 1 column 4: invalid !!float value "x1"', load_error("v: !!float x1"))
      assert.are.equal('yaml.load: line 1 column 4: invalid !!null value "0"', load_error("v: !!null 0"))
      assert.are.equal("yaml.load: line 1 column 4: !!binary value is not valid base64",
        load_error("v: !!binary '#not base64'"))
    end)
    it("keep the value and ignore unknown tags", function()
      local v = yaml.load("ref: !Ref MyBucket\nn: !custom 12\nq: !custom '12'\nm: !thing {a: 1}\nl: !!set [x]\nt: !!timestamp 2026-11-22\n")
      assert_identical({ ref = "MyBucket", n = 12, q = "12", m = { a = 1 }, l = { "x" }, t = "2026-11-22" }, v)
    end)
    it("treat the non-specific tag ! as a string", function()
      assert.are.equal("12", yaml.load("v: ! 12").v)
    end)
  end)

  describe("collections", function()
    it("mark empty sequences as arrays and leave empty mappings plain", function()
      local v = yaml.load("list: []\nmap: {}\nblock:\n  - 1\n")
      assert.is_true(json.is_array(v.list))
      assert.is_false(json.is_array(v.map))
      assert.are.equal('{"block":[1],"list":[],"map":{}}', json.encode(v))
    end)
    it("keep null items in sequences", function()
      local v = yaml.load("- 1\n-\n- ~\n- 4\n")
      assert.are.equal(4, #v)
      assert_identical(json.array { 1, null, null, 4 }, json.array(v))
    end)
    it("convert integer, boolean and null keys to strings", function()
      assert_identical({ ["1"] = "a", ["true"] = "b", ["null"] = "c", ["1.5"] = "d", ["31"] = "e", ["-0.0"] = "f" },
        yaml.load("1: a\ntrue: b\n~: c\n1.5: d\n0x1F: e\n-0.0: f\n"))
    end)
    it("refuse duplicate keys, naming the key and its line", function()
      assert.are.equal('yaml.load: line 3 column 3: duplicate key "name"',
        load_error("metadata:\n  name: a\n  name: b\n"))
      assert.are.equal('yaml.load: line 2 column 1: duplicate key "1"', load_error("1: a\n'1': b\n"))
      assert.are.equal('yaml.load: line 1 column 8: duplicate key "a"', load_error("{a: 1, a: 2}"))
    end)
    it("refuse complex keys", function()
      assert.are.equal("yaml.load: line 1 column 3: a mapping key must be a scalar (complex keys are not supported)",
        load_error("? [a, b]\n: c\n"))
    end)
    it("refuse nesting deeper than 512 levels", function()
      assert.are.equal("yaml.load: line 1 column 513: collections nested deeper than 512 levels",
        load_error(string.rep("[", 600) .. string.rep("]", 600)))
      assert.are.equal(511, (function()
        local v, depth = yaml.load(string.rep("[", 512) .. string.rep("]", 512)), 0
        while v[1] do v, depth = v[1], depth + 1 end
        return depth
      end)())
    end)
  end)

  describe("multi-document streams", function()
    local text = "# first\n--- a\n...\n---\nname: b\n--- [c]\n---\n--- 3\n...\n"
    it("load_all returns every document", function()
      local docs = yaml.load_all(text)
      assert.is_true(json.is_array(docs))
      assert_identical(json.array { "a", { name = "b" }, { "c" }, null, 3 }, docs)
    end)
    it("load returns the first document", function()
      assert.are.equal("a", yaml.load(text))
    end)
    it("an empty stream has no document", function()
      assert.is_nil(yaml.load(""))
      assert.is_nil(yaml.load("# only a comment\n"))
      local docs = yaml.load_all("")
      assert.are.equal(0, #docs)
      assert.are.equal("[]", json.encode(docs))
    end)
    it("an empty document is null", function()
      assert.are.equal(null, yaml.load("---\n"))
      assert.are.equal(null, yaml.load("--- ~\n"))
    end)
    it("anchors do not carry over to the next document", function()
      assert.are.equal("yaml.load_all: line 2 column 5: unknown alias *a (no anchor &a before it in this document)",
        raised(yaml.load_all, "--- &a x\n--- *a\n").message)
    end)
  end)

  describe("anchors and aliases", function()
    it("resolve to the anchored value", function()
      local v = yaml.load("a: &port 8080\nb: *port\nc: &name web\nd: [*name, *port]\n")
      assert_identical({ a = 8080, b = 8080, c = "web", d = { "web", 8080 } }, v)
    end)
    it("share one table between an anchored collection and its aliases", function()
      local v = yaml.load("base: &b {x: 1}\nlist: &l [1, 2]\nuse: {m: *b, s: *l}\n")
      assert.are.equal(v.base, v.use.m)
      assert.are.equal(v.list, v.use.s)
      v.use.m.x = 2
      assert.are.equal(2, v.base.x)
    end)
    it("may be redefined; an alias names the latest anchor", function()
      assert_identical({ 1, 1, 2, 2 }, yaml.load("[&a 1, *a, &a 2, *a]"))
    end)
    it("refuse an unknown alias, naming it", function()
      assert.are.equal("yaml.load: line 2 column 8: unknown alias *missing (no anchor &missing before it in this document)",
        load_error("a: 1\nb: [1, *missing]\n"))
    end)
    it("refuse an alias inside the collection it names", function()
      assert.are.equal(
        "yaml.load: line 1 column 11: alias *loop refers to a collection that contains it (recursive data is not supported)",
        load_error("a: &loop [*loop]"))
    end)
    it("stop an alias bomb before it expands", function()
      local lines = { 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]' }
      local prev = "a"
      for _, name in ipairs({ "b", "c", "d", "e", "f", "g", "h", "i" }) do
        lines[#lines + 1] = string.format("%s: &%s [%s]", name, name, string.rep("*" .. prev, 10, ","))
        prev = name
      end
      local text = table.concat(lines, "\n") .. "\n"
      local t0 = os.clock()
      assert.are.equal(
        "yaml.load: line 7 column 29: aliases expand this YAML to more than 10000000 nodes (an alias bomb?)",
        load_error(text))
      assert.is_true(os.clock() - t0 < 1)
      -- five levels (111111 nodes once expanded) are fine
      local ok = yaml.load(table.concat(lines, "\n", 1, 5))
      assert.are.equal("lol", ok.e[10][10][10][10][10])
    end)
  end)

  describe("merge keys", function()
    it("merge one mapping; explicit keys win", function()
      local v = yaml.load("base: &base {image: api, replicas: 1}\nweb:\n  <<: *base\n  replicas: 3\n")
      assert_identical({ image = "api", replicas = 3 }, v.web)
      assert_identical({ image = "api", replicas = 1 }, v.base)
      assert.are_not.equal(v.base, v.web)
    end)
    it("explicit keys win even before the merge key", function()
      local v = yaml.load("base: &base {a: 1, b: 2}\nm:\n  b: 20\n  <<: *base\n")
      assert_identical({ a = 1, b = 20 }, v.m)
    end)
    it("merge a sequence of mappings; earlier ones win", function()
      local v = yaml.load([[
one: &one {a: 1, b: 1}
two: &two {b: 2, c: 2}
three: &three {c: 3, d: 3}
m:
  <<: [*one, *two, *three]
  d: 4
]])
      assert_identical({ a = 1, b = 1, c = 2, d = 4 }, v.m)
    end)
    it("merge inline mappings and nested merges", function()
      local v = yaml.load("a: &a {x: 1}\nb: &b {<<: *a, y: 2}\nc: {<<: [*b, {z: 3}]}\n")
      assert_identical({ x = 1, y = 2, z = 3 }, v.c)
    end)
    it('treat a quoted "<<" as an ordinary key', function()
      assert_identical({ ["<<"] = "x" }, yaml.load('"<<": x'))
    end)
    it("refuse a merge of anything but mappings", function()
      assert.are.equal("yaml.load: line 1 column 9: the merge key << takes a mapping or a sequence of mappings",
        load_error("m: {<<: 1}"))
      assert.are.equal("yaml.load: line 2 column 9: the merge key << takes a mapping or a sequence of mappings",
        load_error("a: &a {x: 1}\nm: {<<: [*a, [1]]}"))
    end)
    it("refuse two merge keys in one mapping", function()
      assert.are.equal('yaml.load: line 4 column 3: duplicate key "<<" (merge several mappings with <<: [*a, *b])',
        load_error("a: &a {x: 1}\nm:\n  <<: *a\n  <<: *a\n"))
    end)
  end)

  describe("errors", function()
    it("give the line, column, problem and context", function()
      assert.are.equal("yaml.load: line 3 column 2: did not find expected key (while parsing a block mapping)",
        load_error("a:\n  b: 1\n c: 2\n"))
      assert.are.equal("yaml.load: line 2 column 1: did not find expected '-' indicator (while parsing a block collection)",
        load_error("- a\nb: 1\n"))
      assert.are.equal("yaml.load: line 1 column 6: found unknown escape character (while parsing a quoted scalar)",
        load_error('a: "x\\q"'))
      assert.are.equal("yaml.load: line 2 column 2: did not find expected ',' or ']' (while parsing a flow sequence)",
        load_error("a: [1, 2\nb: 3"))
      -- at the end of text without a final newline, the position is the end
      assert.are.equal("yaml.load: line 1 column 19: found unexpected end of stream (while scanning a quoted scalar)",
        load_error("key: 'unterminated"))
      assert.are.equal("yaml.load: line 2 column 1: found unexpected end of stream (while scanning a quoted scalar)",
        load_error("key: 'unterminated\n"))
    end)
    it("name the text and keep the position in details", function()
      local err = raised(yaml.load, "a: b: c", "values.yaml")
      assert.are.equal("syntax", err.code)
      assert.are.equal("yaml.load: values.yaml: line 1 column 5: mapping values are not allowed in this context", err.message)
      assert.are.same({ line = 1, column = 5, name = "values.yaml" }, err.details)
      assert.are.equal(err.message, tostring(err))
    end)
    it("refuse invalid UTF-8", function()
      assert.are.equal("yaml.load: line 2 column 4: invalid leading UTF-8 octet (#xFF)", load_error("a: 1\nb: \255\n"))
    end)
    it("refuse control characters", function()
      assert.are.equal("yaml.load: line 1 column 4: control characters are not allowed (#x01)", load_error("a: \1"))
    end)
    it("refuse a non-string", function()
      assert.has_error(function() yaml.load({}) end, "yaml.load: text must be a string, got table")
      assert.has_error(function() yaml.load("a", 1) end, "yaml.load: name must be a string, got number")
    end)
  end)

  describe("pload", function()
    it("returns the first document", function()
      assert_identical({ a = 1 }, yaml.pload("a: 1\n--- 2\n"))
    end)
    it("returns nil and the error instead of raising", function()
      local v, err = yaml.pload("a: [", "x.yaml")
      assert.is_nil(v)
      assert.are.equal("yaml", err.kind)
      assert.are.equal("yaml.pload: x.yaml: line 1 column 5: did not find expected node content (while parsing a flow node)",
        err.message)
    end)
  end)

  describe("files", function()
    it("load_file loads the first document and load_all_file all of them", function()
      local path = write_tmp("a: 1\n---\nb: 2\n")
      finally(function() os.remove(path) end)
      assert_identical({ a = 1 }, yaml.load_file(path))
      assert_identical(json.array { { a = 1 }, { b = 2 } }, yaml.load_all_file(path))
    end)
    it("name the file in a parse error", function()
      local path = write_tmp("a: 1\na: 2\n")
      finally(function() os.remove(path) end)
      local err = raised(yaml.load_file, path)
      assert.are.equal("yaml.load_file: " .. path .. ': line 2 column 1: duplicate key "a"', err.message)
      assert.are.equal(path, err.details.name)
      assert.are.equal("yaml.load_all_file: " .. path .. ': line 2 column 1: duplicate key "a"',
        raised(yaml.load_all_file, path).message)
    end)
    it("name the file they cannot read", function()
      local err = raised(yaml.load_file, "/nonexistent/values.yaml")
      assert.are.equal("io", err.code)
      assert.are.equal("yaml.load_file: /nonexistent/values.yaml: No such file or directory", err.message)
    end)
  end)

  describe("real files", function()
    it("a Kubernetes multi-document manifest", function()
      local docs = yaml.load_all([[
# tezca api: Deployment, Service and its Secret
apiVersion: apps/v1
kind: Deployment
metadata:
  name: api
  namespace: tezca
  labels: &labels
    app.kubernetes.io/name: api
    app.kubernetes.io/part-of: tezca
spec:
  replicas: 2
  revisionHistoryLimit: 0
  selector:
    matchLabels: *labels
  template:
    metadata:
      labels: *labels
      annotations: {}
    spec:
      containers:
        - name: api
          image: ghcr.io/tezca/api:1.4.2
          args: ["--port", "8000"]
          ports:
            - containerPort: 8000
              protocol: TCP
          env:
            - name: DEBUG
              value: "false"
            - name: WORKERS
              value: "4"
          envFrom:
            - secretRef:
                name: tezca-secrets
          resources:
            limits: {cpu: 500m, memory: 512Mi}
          readinessProbe:
            httpGet: {path: /health/, port: 8000}
            initialDelaySeconds: 5
      volumes: []
---
apiVersion: v1
kind: Service
metadata:
  name: api
  namespace: tezca
spec:
  type: ClusterIP
  selector:
    app.kubernetes.io/name: api
  ports:
  - name: http
    port: 80
    targetPort: 8000
---
apiVersion: v1
kind: Secret
metadata:
  name: tezca-secrets
  namespace: tezca
type: Opaque
stringData:
  DJANGO_SECRET_KEY: "change-me"
  DB_PORT: "5432"
  ENABLE_SEARCH: "true"
  DATABASE_URL: postgres://tezca@db:5432/tezca
  CA_CERT: |
    -----BEGIN CERTIFICATE-----
    MIIB
    -----END CERTIFICATE-----
...
]], "tezca.yaml")
      assert.are.equal(3, #docs)
      local labels = { ["app.kubernetes.io/name"] = "api", ["app.kubernetes.io/part-of"] = "tezca" }
      assert_identical({
        apiVersion = "apps/v1", kind = "Deployment",
        metadata = { name = "api", namespace = "tezca", labels = labels },
        spec = {
          replicas = 2, revisionHistoryLimit = 0,
          selector = { matchLabels = labels },
          template = {
            metadata = { labels = labels, annotations = {} },
            spec = {
              containers = { {
                name = "api", image = "ghcr.io/tezca/api:1.4.2", args = { "--port", "8000" },
                ports = { { containerPort = 8000, protocol = "TCP" } },
                env = { { name = "DEBUG", value = "false" }, { name = "WORKERS", value = "4" } },
                envFrom = { { secretRef = { name = "tezca-secrets" } } },
                resources = { limits = { cpu = "500m", memory = "512Mi" } },
                readinessProbe = { httpGet = { path = "/health/", port = 8000 }, initialDelaySeconds = 5 },
              } },
              volumes = json.array {},
            },
          },
        },
      }, docs[1])
      assert_identical({
        apiVersion = "v1", kind = "Service",
        metadata = { name = "api", namespace = "tezca" },
        spec = {
          type = "ClusterIP", selector = { ["app.kubernetes.io/name"] = "api" },
          ports = { { name = "http", port = 80, targetPort = 8000 } },
        },
      }, docs[2])
      assert_identical({
        apiVersion = "v1", kind = "Secret", type = "Opaque",
        metadata = { name = "tezca-secrets", namespace = "tezca" },
        stringData = {
          DJANGO_SECRET_KEY = "change-me", DB_PORT = "5432", ENABLE_SEARCH = "true",
          DATABASE_URL = "postgres://tezca@db:5432/tezca",
          CA_CERT = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        },
      }, docs[3])
      -- what goes to the API server: the JSON body keeps [] and {} and "4"
      assert.are.equal('{"apiVersion":"v1","kind":"Service","metadata":{"name":"api","namespace":"tezca"},'
        .. '"spec":{"ports":[{"name":"http","port":80,"targetPort":8000}],"selector":{"app.kubernetes.io/name":"api"},'
        .. '"type":"ClusterIP"}}', json.encode(docs[2]))
      assert.is_truthy(json.encode(docs[1]):find('"annotations":{}', 1, true))
      assert.is_truthy(json.encode(docs[1]):find('"volumes":[]', 1, true))
    end)

    it("a docker-compose file with extension fields and merge keys", function()
      local c = yaml.load([[
version: "3.9"
x-common: &common
  restart: unless-stopped
  env_file: .env
  logging:
    driver: json-file
    options: {max-size: 10m}
services:
  db:
    image: postgres:15
    environment:
      POSTGRES_PASSWORD: example
      POSTGRES_DB: tessera
    ports:
      - 5432:5432
    volumes:
      - db-data:/var/lib/postgresql/data
    healthcheck:
      test: ["CMD-SHELL", "pg_isready -U postgres"]
      interval: 5s
      retries: 5
  api:
    <<: *common
    build: .
    ports:
      - "8000:8000"
    depends_on:
      db:
        condition: service_healthy
    command: >
      uvicorn app.main:app
      --host 0.0.0.0 --port 8000
    environment:
      - DATABASE_URL=postgresql://postgres:example@db/tessera
      - LOG_LEVEL
  worker:
    <<: *common
    restart: "no"
    command: ["python", "-m", "worker"]
    deploy:
      replicas: 2
volumes:
  db-data: {}
]], "compose.yaml")
      local logging = { driver = "json-file", options = { ["max-size"] = "10m" } }
      assert_identical({
        version = "3.9",
        ["x-common"] = { restart = "unless-stopped", env_file = ".env", logging = logging },
        services = {
          db = {
            image = "postgres:15",
            environment = { POSTGRES_PASSWORD = "example", POSTGRES_DB = "tessera" },
            ports = { "5432:5432" },
            volumes = { "db-data:/var/lib/postgresql/data" },
            healthcheck = { test = { "CMD-SHELL", "pg_isready -U postgres" }, interval = "5s", retries = 5 },
          },
          api = {
            restart = "unless-stopped", env_file = ".env", logging = logging,
            build = ".", ports = { "8000:8000" },
            depends_on = { db = { condition = "service_healthy" } },
            command = "uvicorn app.main:app --host 0.0.0.0 --port 8000\n",
            environment = { "DATABASE_URL=postgresql://postgres:example@db/tessera", "LOG_LEVEL" },
          },
          worker = {
            restart = "no", env_file = ".env", logging = logging,
            command = { "python", "-m", "worker" }, deploy = { replicas = 2 },
          },
        },
        volumes = { ["db-data"] = {} },
      }, c)
      -- merged values are shared with the anchor, not copied
      assert.are.equal(c["x-common"].logging, c.services.api.logging)
      assert.are.equal(c.services.api.logging, c.services.worker.logging)
    end)
  end)
end)
