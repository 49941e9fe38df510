-- `runbook doc` renders right in a real Markdown renderer (markdown-it,
-- CommonMark with inline HTML allowed, as on GitHub): for every shipped
-- runbook no text of the source is lost (placeholders such as <run> used
-- to vanish as unknown HTML tags), no tag comes from runbook text, command
-- lines in instructions are code blocks, parallel groups have their own
-- headings, and the page starts with how to run the runbook.
local rb = require "rbtest"
local proc = require "runbook._proc"
local fs = require "runbook._fs"
local npmtool = require "npmtool"
local loader = require "runbook._engine.loader"

local function render(markdown, dir)
  local src = dir .. "/doc.md"
  rb.write(src, markdown)
  local r = assert(proc.spawn { argv = { npmtool.bin("markdown-it"), src } }):communicate { timeout = 60 }
  assert(r.code == 0, "markdown-it failed: " .. r.stderr)
  return r.stdout
end

local ENTITIES = { lt = "<", gt = ">", amp = "&", quot = '"', apos = "'", nbsp = " " }

local function decode(s)
  return (s:gsub("&(#?x?)(%w+);", function(kind, v)
    if kind == "#" then return utf8.char(tonumber(v)) end
    if kind == "#x" then return utf8.char(tonumber(v, 16)) end
    return ENTITIES[v]
  end))
end

-- The rendered page's text as a list of words.
local function words_of_html(html)
  local text = decode(html:gsub("<[^>]*>", " "))
  local out = {}
  for w in text:gmatch("%S+") do out[#out + 1] = w end
  return out
end

-- The words of a piece of runbook text as a reader should see them: what
-- Markdown itself consumes (code span backticks, list markers) left out.
local function words_of_source(s)
  local out = {}
  for w in tostring(s):gsub("`", " "):gmatch("%S+") do out[#out + 1] = w end
  -- a list item's marker becomes the list's numbering
  if out[1] and (out[1]:match("^%d+[.)]$") or out[1]:match("^[-*+]$")) then table.remove(out, 1) end
  return out
end

-- Whether the words appear together, in order, in the page; the page may
-- add punctuation at either end ("owner: QA;" holds the owner "QA").
local function contains(page, words)
  local n = #words
  if n == 0 then return true end
  for i = 1, #page - n + 1 do
    local ok = true
    for j = 1, n do
      local w, p = words[j], page[i + j - 1]
      if n == 1 then ok = p:find(w, 1, true) ~= nil
      elseif j == 1 then ok = p:sub(-#w) == w
      elseif j == n then ok = p:sub(1, #w) == w
      else ok = p == w end
      if not ok then break end
    end
    if ok then return true end
  end
  return false
end

-- Every text of the runbook a reader needs: names, titles, owners, docs,
-- instructions (line by line), params with their defaults and docs.
local function source_texts(book)
  local out = { book.name, book.description, book.owner }
  local function lines(text)
    for l in (tostring(text) .. "\n"):gmatch("(.-)\n") do out[#out + 1] = l end
  end
  if book.doc then lines(book.doc) end
  for name, p in pairs(book.params) do
    out[#out + 1] = name
    if p.doc then out[#out + 1] = p.doc end
    if p.env then out[#out + 1] = p.env end
    if p.default ~= nil then out[#out + 1] = tostring(p.default) end
  end
  for _, s in ipairs(book.steps) do
    out[#out + 1] = s.id
    out[#out + 1] = s.title
    if s.owner then out[#out + 1] = s.owner end
    if s.doc then lines(s.doc) end
    if s.instructions then lines(s.instructions) end
  end
  return out
end

local ALLOWED_TAGS = { h1 = 1, h2 = 1, h3 = 1, p = 1, ul = 1, ol = 1, li = 1, code = 1, pre = 1, strong = 1, em = 1,
  br = 1, table = 1, thead = 1, tbody = 1, tr = 1, th = 1, td = 1, a = 1, hr = 1 }

local dir
before_each(function() dir = rb.tmpdir("doc") end)
after_each(function() rb.rmtree(dir) end)

describe("runbook doc in a Markdown renderer", function()
  local books = {}
  for _, name in ipairs(fs.listdir(rb.source_dir .. "/runbooks")) do
    if name:match("%.lua$") then books[#books + 1] = "runbooks/" .. name end
  end
  table.sort(books)
  assert(#books >= 5, "the shipped runbooks")

  for _, path in ipairs(books) do
    it("renders " .. path .. " with every text of its source", function()
      local r = rb.run({ "doc", path }, { cwd = rb.source_dir })
      assert.are.equal(0, r.code, r.stderr)
      local html = render(r.stdout, dir)
      local page = words_of_html(html)
      local book = loader.load(rb.source_dir .. "/" .. path)
      for _, text in ipairs(source_texts(book)) do
        local words = words_of_source(text)
        assert.is_true(contains(page, words), "lost in the rendered page: " .. tostring(text))
      end
      -- no tag comes from the runbook's text
      for tag in html:gmatch("<(%a[%w-]*)") do
        assert.truthy(ALLOWED_TAGS[tag:lower()], "unexpected tag <" .. tag .. "> in the page of " .. path)
      end
      -- it starts with how to run it
      local first_h2 = html:match("<h2>(.-)</h2>")
      assert.are.equal("How to run", first_h2)
      assert.truthy(html:find("runbook exec " .. path, 1, true), html)
      -- each parallel group under its own heading, its steps after it
      for _, g in ipairs(book.groups) do
        local at = html:find("<h3>Parallel group <code>" .. g.name .. "</code></h3>", 1, true)
        assert.truthy(at, "no heading for parallel group " .. g.name)
        local section = html:sub(at):match("^.-</h3>(.-)<h[23]>") or html:sub(at)
        for _, id in ipairs(g.steps) do
          assert.truthy(section:find("<strong>" .. id .. "</strong>", 1, true), id .. " is not under group " .. g.name)
        end
      end
    end)
  end

  it("turns command lines in instructions into code blocks and escapes placeholders", function()
    local r = rb.run({ "doc", "runbooks/first-deploy.lua" }, { cwd = rb.source_dir })
    local html = render(r.stdout, dir)
    assert.truthy(html:find('<pre><code>runbook confirm &lt;run&gt; M1 --note &quot;&lt;commit&gt;&quot;\n</code></pre>', 1, true), html)
    assert.truthy(html:find("<pre><code>gh secret set MADFAM_BOT_PAT --repo madfam-org/tezca", 1, true), html)
    assert.truthy(html:find("<li>\n<p><code>cd apps/admin &amp;&amp; npm install @janua/nextjs</code></p>", 1, true), html)
    assert.truthy(html:find("https://admin.&lt;domain&gt;", 1, true), html)
  end)

  it("keeps an author's code spans and separates what follows a parallel group", function()
    rb.write(dir .. "/g.lua", [[
runbook "g" { description = "Tags <b>bold</b> & entities &amp; stay text", params = { who = { doc = "a `<name>` here" } } }
step "A" { run = function() end }
parallel "pair" { step "B" { run = function() end }, step "C" { run = function() end } }
manual "D" { instructions = [[
# not a heading
Run it:
  $ runbook exec g.lua --param who=<you>
Then confirm: runbook confirm <run> D]] .. "]]" .. [[ }
]])
    local r = rb.run({ "doc", "g.lua" }, { cwd = dir })
    assert.are.equal(0, r.code, r.stderr)
    local html = render(r.stdout, dir)
    assert.truthy(html:find("<p>Tags &lt;b&gt;bold&lt;/b&gt; &amp; entities &amp;amp; stay text</p>", 1, true), html)
    assert.truthy(html:find("a <code>&lt;name&gt;</code> here", 1, true), html)
    assert.truthy(html:find("# not a heading", 1, true), html)
    assert.truthy(html:find("<pre><code>$ runbook exec g.lua --param who=&lt;you&gt;\n</code></pre>", 1, true), html)
    assert.truthy(html:find("<pre><code>runbook confirm &lt;run&gt; D\n</code></pre>", 1, true), html)
    assert.truthy(html:find("<h3>Parallel group <code>pair</code></h3>", 1, true), html)
    assert.truthy(html:find("<h3>After parallel group <code>pair</code></h3>", 1, true), html)
    assert.truthy(html:find("<pre><code class=\"language-sh\">export", 1, true) == nil) -- who has no env
    assert.truthy(html:find("runbook exec g.lua --param who=...", 1, true), html)
  end)

  it("keeps a code span that runs over a line break as one span, its placeholders literal", function()
    rb.write(dir .. "/s.lua", [[
runbook "s" { description = "spans" }
step "A" { doc = "Then the guide's `kubectl run\nbackfill-<app>` as a Job, and <b> stays text.", run = function() end }
]])
    local r = rb.run({ "doc", "s.lua" }, { cwd = dir })
    assert.are.equal(0, r.code, r.stderr)
    local html = render(r.stdout, dir)
    assert.truthy(html:find("<code>kubectl run backfill-&lt;app&gt;</code> as a Job, and &lt;b&gt; stays text.", 1, true), html)
  end)
end)
