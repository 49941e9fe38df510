-- Runs every "-- example: NAME" block of docs/api/k8s.md against the fake
-- API server, so the docs cannot drift from the code. Examples assert
-- their own results; they get KUBECONFIG (the fake's kubeconfig path).
local k8sfake = require "k8sfake"
local rbtest = require "rbtest"

local function examples(path)
  local text = assert(rbtest.read(path), "cannot read " .. path)
  local out = {}
  for body in text:gmatch("```lua\n(.-)```") do
    local name = body:match("^%-%- example: ([%w_%-]+)\n")
    if name then out[#out + 1] = { name = name, code = body } end
  end
  return out
end

describe("k8s doc examples", function()
  local fake, backend
  setup(function() fake = k8sfake.start() end)
  teardown(function()
    if backend then backend:kill("KILL"); backend:wait() end
    if fake then fake:stop() end
  end)

  -- what the exec and port-forward examples find in the cluster: a
  -- running pod web-1, and behind its port 8080 an HTTP server
  local seeded = false
  local function seed_pod()
    if seeded then return end
    seeded = true
    fake:control("POST", "/_fake/objects", { reconcile = false, objects = { { apiVersion = "v1", kind = "Pod",
      metadata = { name = "web-1", namespace = "default" },
      spec = { containers = { { name = "app", image = "web:1" } } }, status = { phase = "Running" } } } })
  end
  local before = {
    exec = seed_pod,
    ["port-forward"] = function()
      seed_pod()
      local port
      backend, port = k8sfake.http_backend()
      fake:control("POST", "/_fake/pod-ports", { namespace = "default", pod = "web-1", port = 8080, local_port = port })
    end,
  }

  local path = rbtest.source_dir .. "/docs/api/k8s.md"
  local list = examples(path)

  it("k8s.md has an example for each part", function()
    local names = {}
    for _, ex in ipairs(list) do names[#names + 1] = ex.name end
    assert.are.same({ "connect", "get-list", "create-replace-patch", "apply", "apply-manifests", "delete", "manifests",
      "secrets", "wait", "rollout", "jobs", "exec", "port-forward", "errors", "rules" }, names)
  end)

  for _, ex in ipairs(list) do
    it("k8s.md: " .. ex.name, function()
      if before[ex.name] then before[ex.name]() end
      local env = setmetatable({ KUBECONFIG = fake.kubeconfig }, { __index = _G })
      local fn = assert(load(ex.code, "=docs/api/k8s.md:" .. ex.name, "t", env))
      fn()
    end)
  end
end)
