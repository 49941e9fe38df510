// runbook serve on the shared PostgreSQL store, in a real browser: the
// sandbox's real PostgreSQL (scripts/sandbox.sh up), runs made by real
// `runbook exec` processes into it, listed and shown by the runs page.
'use strict';
const test = require('node:test');
const assert = require('node:assert');
const fs = require('node:fs');
const path = require('node:path');
const { spawnSync } = require('node:child_process');
const h = require('./harness');

const ROOT = path.resolve(__dirname, '../..');
const BOOK = `
runbook "shared" {}
step "one" { run = function(ctx) ctx:log("one done") end }
step "two" { run = function(ctx) ctx:log("two done") end }
`;

// the sandbox's env file: export KEY='value' lines, shell-quoted
function readEnv(file) {
  const out = {};
  for (const line of fs.readFileSync(file, 'utf8').split('\n')) {
    const m = line.match(/^export ([A-Za-z_][A-Za-z0-9_]*)='(.*)'$/);
    if (m) out[m[1]] = m[2].replace(/'\\''/g, "'");
  }
  return out;
}

let dir, sandboxDir, url, browser;

function sandbox(cmd) {
  const r = spawnSync(path.join(ROOT, 'scripts/sandbox.sh'), [cmd, sandboxDir],
    { cwd: ROOT, env: Object.assign({}, process.env, { RUNBOOK_BIN: h.BIN }), encoding: 'utf8', timeout: 180000 });
  return r;
}

test.before(async () => {
  dir = h.tmpdir();
  fs.chmodSync(dir, 0o755); // the postgres user enters it to start the server
  sandboxDir = path.join(dir, 'sandbox');
  const up = sandbox('up');
  assert.equal(up.status, 0, 'sandbox up: ' + up.stdout + up.stderr);
  url = readEnv(path.join(sandboxDir, 'env')).SCRATCH_DATABASE_URL;
  assert.match(url, /^postgres:\/\//);
  fs.writeFileSync(path.join(dir, 'shared.lua'), BOOK);
  browser = await h.browser(dir);
});

test.after(async () => {
  if (browser) await browser.close();
  if (sandboxDir) sandbox('down');
  h.cleanup();
});

test('the runs page lists the runs of the PostgreSQL store, and a run page shows its steps', async () => {
  const env = { RUNBOOK_STATE: url };
  for (let i = 0; i < 2; i++) {
    const r = await h.runbook(['exec', 'shared.lua', '--new'], { cwd: dir, env });
    assert.equal(r.code, 0, r.stderr);
  }
  const listed = await h.runbook(['runs', '--output', 'json'], { cwd: dir, env });
  assert.equal(listed.code, 0, listed.stderr);
  const ids = listed.stdout.trim().split('\n').map((l) => JSON.parse(l).id || JSON.parse(l).run).filter(Boolean);
  assert.ok(ids.length >= 2, listed.stdout);
  const srv = await h.serve(null, env);
  const page = await browser.newPage();
  await page.goto(srv.url + '/');
  const runs = await page.$$eval('#runs tbody tr', (trs) => trs.map((tr) => tr.getAttribute('data-run')));
  assert.deepEqual([...runs].sort(), [...ids].sort());
  assert.ok(!(await page.content()).includes(url.replace(/^postgres:\/\/[^:]*:([^@]*)@.*$/, '$1')), 'the password is not on the page');
  await page.goto(srv.url + '/runs/' + runs[0]);
  const steps = await page.$$eval('#steps section.step', (ss) => ss.map((s) => [s.getAttribute('data-step'), s.getAttribute('data-status')]));
  assert.deepEqual(steps, [['one', 'done'], ['two', 'done']]);
  assert.match(await page.locator('#head-chain').innerText(), /hash chain intact/);
  await page.close();
  await srv.stop();
});
