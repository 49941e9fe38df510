// runbook serve in a real browser: Debian's chromium, headless, driven by
// playwright-core. Every run here is a real `runbook exec`; every wait is
// for an event (a line on stderr, an element on the page, a process exit),
// never a fixed sleep.
'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const h = require('./harness');

const BOOK = `
local secret = require "runbook.secret"
runbook "shop" { params = { dir = {} } }
step "gen" { title = "Generate the database password", run = function(ctx)
  local pw = ctx:once("pw", function() return secret.random { bytes = 16, encoding = "hex" } end)
  local f = assert(io.open(ctx.params.dir .. "/secrets.txt", "a"))
  f:write(secret.reveal(pw), "\\n")
  f:close()
  ctx:log("generated %s", pw)
  ctx:log("<script>window.__pwned = 1</script><img src=x onerror=\\"window.__pwned = 2\\">")
  ctx:action { kind = "demo", summary = "stored the password " .. secret.reveal(pw) }
end }
step "flaky" { needs = "gen", retry = { attempts = 3, delay = 0 }, run = function(ctx)
  local marker = ctx.params.dir .. "/flaky-once"
  local f = io.open(marker, "r")
  if not f then
    assert(io.open(marker, "w")):close()
    error("the first attempt fails")
  end
  f:close()
  ctx:log("second attempt worked")
end }
parallel "assets" {
  step "css" { needs = "flaky", run = function(ctx) ctx:sleep(0.3) ctx:log("css built") end },
  step "js" { needs = "flaky", run = function(ctx) ctx:sleep(0.4) ctx:log("js built") end },
}
step "done" { needs = { "css", "js" }, run = function(ctx) ctx:log("all done") end }
`;

const LIVE = `
runbook "live" { params = { dir = {} } }
step "one" { run = function(ctx) ctx:log("one") end }
step "two" { needs = "one", run = function(ctx)
  local go = ctx.params.dir .. "/go"
  while not io.open(go, "r") do ctx:sleep(0.05) end
  ctx:log("two saw the file")
end }
step "three" { needs = "two", run = function(ctx) ctx:log("three") end }
`;

let dir, state, browser, finished;

test.before(async () => {
  dir = h.tmpdir();
  state = path.join(dir, 'state');
  fs.writeFileSync(path.join(dir, 'shop.lua'), BOOK);
  fs.writeFileSync(path.join(dir, 'live.lua'), LIVE);
  const r = await h.runbook(['exec', 'shop.lua', '--state', state, '--param', 'dir=' + dir], { cwd: dir });
  assert.equal(r.code, 0, r.stderr);
  finished = fs.readdirSync(path.join(state, 'runs'))[0];
  browser = await h.browser(dir);
});

test.after(async () => {
  if (browser) await browser.close();
  h.cleanup();
});

test('the runs page lists the runs of the file store, newest first, and filters them', async () => {
  const srv = await h.serve(state);
  const second = await h.runbook(['exec', 'shop.lua', '--new', '--state', state, '--param', 'dir=' + dir], { cwd: dir });
  assert.equal(second.code, 0, second.stderr);
  const page = await browser.newPage();
  await page.goto(srv.url + '/');
  const runs = await page.$$eval('#runs tbody tr', (trs) => trs.map((tr) => tr.getAttribute('data-run')));
  const ids = fs.readdirSync(path.join(state, 'runs'));
  assert.equal(runs.length, ids.length);
  assert.deepEqual([...runs].sort(), [...ids].sort());
  assert.equal(runs[1], finished, 'the first run is listed last');
  await page.selectOption('select[name=status]', 'finished');
  await Promise.all([page.waitForURL(/status=finished/), page.click('button[type=submit]')]);
  assert.equal(await page.locator('#runs tbody tr').count(), 2);
  await page.goto(srv.url + '/?status=failed');
  assert.equal(await page.locator('#runs tbody tr').count(), 0);
  await page.goto(srv.url + '/?actor=nobody-here');
  assert.equal(await page.locator('#runs tbody tr').count(), 0);
  await page.close();
  await srv.stop();
});

test('a run page shows every step with its attempts, the parallel group and the log', async () => {
  const srv = await h.serve(state);
  const page = await browser.newPage();
  const errors = [];
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  await page.goto(srv.url + '/runs/' + finished);
  const steps = await page.$$eval('#steps section.step', (ss) => ss.map((s) => [s.getAttribute('data-step'), s.getAttribute('data-attempts'), s.getAttribute('data-status')]));
  assert.deepEqual(steps, [['gen', '1', 'done'], ['flaky', '2', 'done'], ['css', '1', 'done'], ['js', '1', 'done'], ['done', '1', 'done']]);
  assert.equal(await page.locator('#timeline rect.bar').count(), 6);
  assert.equal(await page.locator('#timeline rect.bar.failed').count(), 1);
  assert.equal(await page.locator('#timeline rect.group').count(), 1, 'css and js ran side by side');
  assert.match(await page.locator('#head-chain').innerText(), /hash chain intact/);
  assert.match(await page.locator('section[data-step="css"] pre.log').innerText(), /css built/);
  await page.fill('#filter', 'flaky');
  const visible = await page.$$eval('#trail tbody tr', (trs) => trs.filter((t) => t.className !== 'hidden').length);
  assert.ok(visible > 0 && visible < await page.locator('#trail tbody tr').count());
  if (process.env.RUNBOOK_SCREENSHOTS) {
    const out = process.env.RUNBOOK_SCREENSHOTS;
    await page.fill('#filter', '');
    await page.setViewportSize({ width: 1200, height: 900 });
    await page.evaluate(() => window.scrollTo(0, 0));
    await page.screenshot({ path: path.join(out, 'run-page.png'), fullPage: false });
    await page.locator('#timeline').screenshot({ path: path.join(out, 'timeline.png') });
  }
  assert.deepEqual(errors, [], 'no CSP violation or script error');
  await page.close();
  await srv.stop();
});

test('a live run page gains the next steps without a reload', async () => {
  const srv = await h.serve(state);
  const exec = h.start(['exec', 'live.lua', '--state', state, '--param', 'dir=' + dir], { cwd: dir });
  await h.waitFor(() => fs.readdirSync(path.join(state, 'runs')).find((id) => id.startsWith('live-')), 'the live run to start');
  const id = fs.readdirSync(path.join(state, 'runs')).find((id) => id.startsWith('live-'));
  const page = await browser.newPage();
  let navigations = 0;
  page.on('framenavigated', (f) => { if (f === page.mainFrame()) navigations++; });
  await page.goto(srv.url + '/runs/' + id);
  await page.evaluate(() => { window.__same = true; });
  await page.waitForSelector('section[data-step="two"][data-status="running"]');
  assert.equal(await page.locator('section[data-step="three"]').getAttribute('data-status'), 'pending');
  const rowsBefore = await page.locator('#trail tbody tr').count();
  fs.writeFileSync(path.join(dir, 'go'), '');
  await page.waitForSelector('section[data-step="three"][data-status="done"]');
  await page.waitForSelector('#timeline rect.bar[data-step="three"]');
  assert.equal(await page.locator('#head-status').innerText(), 'finished');
  assert.ok(await page.locator('#trail tbody tr').count() > rowsBefore);
  assert.equal(await page.evaluate(() => window.__same), true, 'the same document');
  assert.equal(navigations, 1, 'no reload');
  assert.equal((await exec.done).code, 0);
  await page.close();
  await srv.stop();
});

test('a secret generated in the run appears nowhere: page, API, network', async () => {
  const srv = await h.serve(state);
  // the browser's own network log: a HAR with every body embedded,
  // written when this context closes
  const har = path.join(dir, 'network.har');
  const ctx = await h.browser(dir, { recordHar: { path: har, content: 'embed', mode: 'full' } });
  const page = await ctx.newPage();
  const html = [];
  await Promise.all([
    page.waitForResponse((r) => r.url().includes('/events?after=') && r.ok()),
    page.goto(srv.url + '/runs/' + finished),
  ]);
  html.push(await page.content());
  for (const p of ['/', '/waiting', '/runs/' + finished + '/verify']) {
    await page.goto(srv.url + p);
    html.push(await page.content());
  }
  await ctx.close();
  const api = [];
  for (const p of ['/api/runs', '/api/runs/' + finished, '/api/runs/' + finished + '/events?after=0', '/api/runs/' + finished + '/verify']) {
    const r = await fetch(srv.url + p);
    assert.equal(r.status, 200, p);
    api.push(await r.text());
  }
  const entries = JSON.parse(fs.readFileSync(har, 'utf8')).log.entries;
  const network = entries.map((e) => {
    const c = e.response.content || {};
    const body = c.text ? (c.encoding === 'base64' ? Buffer.from(c.text, 'base64').toString('latin1') : c.text) : '';
    return [e.request.url, JSON.stringify(e.request.headers), JSON.stringify(e.response.headers), body].join('\n');
  });
  const urls = entries.map((e) => new URL(e.request.url).pathname);
  for (const p of ['/runs/' + finished, '/app.js', '/api/runs/' + finished + '/events', '/', '/waiting']) {
    assert.ok(urls.includes(p), 'the network log has ' + p);
  }
  assert.ok(network.some((n) => n.includes('"events":[')), 'the log holds the API bodies');
  const secrets = fs.readFileSync(path.join(dir, 'secrets.txt'), 'utf8').split('\n').filter(Boolean);
  assert.equal(secrets.length, 2);
  const forms = [];
  for (const v of secrets) {
    assert.equal(v.length, 32);
    forms.push(v, v.toUpperCase(), Buffer.from(v).toString('base64'), Buffer.from(v, 'hex').toString('base64'));
  }
  for (const s of forms) {
    for (const x of html) assert.ok(!x.includes(s), 'page HTML');
    for (const a of api) assert.ok(!a.includes(s), 'API JSON');
    for (const n of network) assert.ok(!n.includes(s), 'network log');
  }
  assert.ok(api[2].includes('[REDACTED]'), 'the redacted value is what shows');
  await srv.stop();
});

test("a <script> in a step's log shows as text", async () => {
  const srv = await h.serve(state);
  const page = await browser.newPage();
  await page.goto(srv.url + '/runs/' + finished);
  const log = await page.locator('section[data-step="gen"] pre.log').innerText();
  assert.ok(log.includes('<script>window.__pwned = 1</script><img src=x'), log);
  assert.equal(await page.evaluate(() => window.__pwned), undefined);
  assert.equal(await page.locator('section[data-step="gen"] pre.log script, section[data-step="gen"] pre.log img').count(), 0);
  await page.close();
  await srv.stop();
});

test('listening beyond loopback without a token refuses to start', async () => {
  const r = await h.runbook(['serve', '--state', state, '--listen', '0.0.0.0:0'], { env: { RUNBOOK_SERVE_TOKEN: '' } });
  assert.equal(r.code, 2);
  assert.match(r.stderr, /refusing to listen on 0\.0\.0\.0:0 without a token/);
  const v6 = await h.runbook(['serve', '--state', state, '--listen', '[::]:0'], { env: { RUNBOOK_SERVE_TOKEN: '' } });
  assert.equal(v6.code, 2);
});

test('with a token, a request without it gets 401; the header or the cookie from ?token= lets it in', async () => {
  const token = 'a'.repeat(8) + require('node:crypto').randomBytes(16).toString('hex');
  const srv = await h.serve(state, { RUNBOOK_SERVE_TOKEN: token });
  assert.match(srv.banner, /every request needs RUNBOOK_SERVE_TOKEN/);
  for (const p of ['/', '/api/runs', '/runs/' + finished, '/app.js']) {
    assert.equal((await fetch(srv.url + p)).status, 401, p);
  }
  assert.equal((await fetch(srv.url + '/api/runs', { headers: { Authorization: 'Bearer wrong' + token } })).status, 401);
  assert.equal((await fetch(srv.url + '/api/runs', { headers: { Authorization: 'Bearer ' + token } })).status, 200);
  const page = await browser.newPage();
  const first = await page.goto(srv.url + '/runs/' + finished + '?token=' + token);
  assert.equal(first.status(), 200);
  assert.ok(!page.url().includes(token), 'the token leaves the address bar');
  assert.equal(await page.locator('#steps section.step').count(), 5);
  await page.waitForFunction(() => document.documentElement.getAttribute('data-live') === 'polling');
  await page.close();
  await srv.stop();
});
