-- The demo: the first deploy of a small shop's data tier, on a local
-- PostgreSQL and Redis (scripts/demo.sh starts both). Its second migration
-- has a bug, so the first run fails at D3; the fix is applied and the same
-- command resumes there. A person confirms M7, and the journal keeps who
-- did what.
local pg = require "runbook.pg"
local redis = require "runbook.redis"
local secret = require "runbook.secret"

runbook "shop-demo" {
  description = "First deploy of the demo shop's database and cache",
  params = {
    admin_url = { env = "DEMO_ADMIN_URL", secret = true, doc = "a PostgreSQL superuser URL" },
    db_host = { default = "127.0.0.1" },
    db_port = { env = "DEMO_PG_PORT", type = "integer", doc = "PostgreSQL port" },
    redis_url = { env = "DEMO_REDIS_URL", doc = "redis://host:port/0" },
    orders = { default = 60000, doc = "demo orders to create" },
  },
}

-- the shop's own connection URL: a secret, since it holds the password
local function shop_url(ctx)
  local pw = ctx.outputs.D1.password
  return "postgres://shop:" .. pw .. "@" .. ctx.params.db_host .. ":" .. ctx.params.db_port .. "/shop"
end

step "D1" {
  title = "Generate the shop database password",
  owner = "DevOps",
  run = function(ctx)
    -- once per run: a resumed or retried run gets the very same password
    local pw = ctx:once("shop-password", function() return secret.random { bytes = 24, encoding = "hex" } end)
    return { password = pw }
  end,
}

step "D2" {
  title = "Create the shop role and database",
  owner = "DevOps",
  needs = "D1",
  verify = function(ctx)
    local c = pg.try_connect(shop_url(ctx), { connect_timeout = 5 })
    if c then c:close() return true end
    return false
  end,
  run = function(ctx)
    local admin <close> = pg.connect(ctx.params.admin_url)
    local pw = ctx.outputs.D1.password:reveal()
    if admin:value("SELECT count(*) FROM pg_roles WHERE rolname = 'shop'") == 0 then
      admin:exec("CREATE ROLE shop LOGIN PASSWORD " .. admin:literal(pw))
    else
      admin:exec("ALTER ROLE shop PASSWORD " .. admin:literal(pw))
    end
    if admin:value("SELECT count(*) FROM pg_database WHERE datname = 'shop'") == 0 then
      admin:exec("CREATE DATABASE shop OWNER shop")
    end
  end,
}

step "D3" {
  title = "Run the shop's migrations",
  owner = "DevOps",
  needs = "D2",
  retry = { attempts = 2, delay = 1 },
  run = function(ctx)
    local r = pg.migrate { url = shop_url(ctx), dir = "migrations" }
    return { applied = #r.applied, already = r.already }
  end,
}

step "D4" {
  title = "Load the demo orders",
  needs = "D3",
  run = function(ctx)
    local db <close> = pg.connect(shop_url(ctx))
    if db:value("SELECT count(*) FROM orders") == 0 then
      db:exec([[INSERT INTO orders (customer, cents)
                SELECT 'customer-' || (g % 977), (g * 7919) % 100000 FROM generate_series(1, $1::int) g]], ctx.params.orders)
    end
    return { orders = db:value("SELECT count(*) FROM orders") }
  end,
}

step "D5" {
  title = "Backfill order amounts in batches",
  needs = "D4",
  run = function(ctx)
    local r = pg.backfill { url = shop_url(ctx), table = "orders", set = "amount = cents / 100.0",
                            where = "amount IS NULL", batch = 5000, throttle = 20 }
    return { rows = r.rows, batches = r.batches }
  end,
}

parallel "warm-up" {
  step "D6a" {
    title = "Warm the product cache in Redis",
    needs = "D5",
    run = function(ctx)
      redis.wait_ready(ctx.params.redis_url, { timeout = 30 })
      local r <close> = redis.connect(ctx.params.redis_url)
      r:pipeline(function(p)
        for i = 1, 200 do p:call("SET", "shop:product:" .. i, "{\"id\":" .. i .. "}") end
      end)
      return { cached = 200 }
    end,
  },
  step "D6b" {
    title = "Refresh the planner's statistics",
    needs = "D5",
    run = function(ctx)
      local db <close> = pg.connect(shop_url(ctx))
      db:exec("ANALYZE orders")
    end,
  },
}

manual "M7" {
  title = "Announce that the shop is open",
  owner = "Support",
  needs = { "D6a", "D6b" },
  instructions = [[
Post in #shop-launch that the new database is live, then confirm this step:
  runbook confirm <run> M7 --note "announced in #shop-launch"]],
}

step "D8" {
  title = "Back up the shop database",
  needs = "M7",
  run = function(ctx)
    local store = pg.local_store("backups")
    local r = pg.backup { url = shop_url(ctx), store = store, prefix = "nightly/" }
    pg.verify_backup { store = store, name = r.name, sha256 = r.sha256 }
    return { name = r.name, bytes = r.size, sha256 = r.sha256 }
  end,
}

step "D9" {
  title = "Smoke-check the data",
  needs = "D8",
  run = function(ctx)
    local db <close> = pg.connect(shop_url(ctx))
    local row = db:query_one("SELECT count(*) AS n, count(amount) AS filled FROM orders")
    if row.n ~= row.filled then error(string.format("%d orders have no amount", row.n - row.filled)) end
    local r <close> = redis.connect(ctx.params.redis_url)
    if not r:call("GET", "shop:product:200") then error("the product cache is cold") end
    ctx:log("%d orders, all with amounts; cache warm", row.n)
  end,
}
