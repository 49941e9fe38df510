// Helpers of the browser tests: temporary directories, the runbook binary
// as real processes, `runbook serve` on a free loopback port (read from its
// first line, not guessed), and Debian's chromium through playwright-core.
'use strict';
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawn } = require('node:child_process');

const BIN = process.env.RUNBOOK_BIN || path.resolve(__dirname, '../../build/runbook');
const CHROMIUM = process.env.RUNBOOK_CHROMIUM || '/usr/bin/chromium';
const started = new Set();
const dirs = [];

function tmpdir() {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'rbweb-'));
  dirs.push(d);
  return d;
}

function env(extra) {
  const e = Object.assign({}, process.env, { NO_COLOR: '1' }, extra || {});
  for (const k of Object.keys(e)) if (e[k] === '') delete e[k];
  return e;
}

// Starts the binary; .done resolves to {code, signal, stdout, stderr}.
function start(args, opts) {
  opts = opts || {};
  const p = spawn(BIN, args, { cwd: opts.cwd, env: env(opts.env), stdio: ['ignore', 'pipe', 'pipe'] });
  started.add(p);
  const out = { stdout: '', stderr: '' };
  p.stdout.on('data', (d) => { out.stdout += d; });
  p.stderr.on('data', (d) => { out.stderr += d; if (p.onStderr) p.onStderr(out.stderr); });
  p.done = new Promise((resolve) => p.on('close', (code, signal) => {
    started.delete(p);
    resolve({ code, signal, stdout: out.stdout, stderr: out.stderr });
  }));
  p.out = out;
  return p;
}

async function runbook(args, opts) {
  const p = start(args, opts);
  const timer = setTimeout(() => p.kill('SIGKILL'), (opts && opts.timeout || 120) * 1000);
  const r = await p.done;
  clearTimeout(timer);
  return r;
}

// Polls fn until it returns something truthy (generous deadline: the
// machine is shared).
async function waitFor(fn, what, seconds) {
  const deadline = Date.now() + (seconds || 30) * 1000;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error('timed out waiting for ' + what);
    await new Promise((r) => setTimeout(r, 20));
  }
}

// `runbook serve` on 127.0.0.1, port chosen by the kernel; resolves once it
// says where it listens.
function serve(state, extraEnv) {
  // state null: the store comes from RUNBOOK_STATE in extraEnv (a URL with
  // a password is refused on the command line)
  const args = state ? ['serve', '--state', state, '--listen', '127.0.0.1:0'] : ['serve', '--listen', '127.0.0.1:0'];
  const p = start(args, { env: Object.assign({ RUNBOOK_SERVE_TOKEN: '' }, extraEnv) });
  return new Promise((resolve, reject) => {
    let settled = false;
    const timer = setTimeout(() => { if (!settled) { settled = true; p.kill('SIGKILL'); reject(new Error('serve did not start: ' + p.out.stderr)); } }, 30000);
    p.onStderr = (text) => {
      const m = text.match(/on (http:\/\/127\.0\.0\.1:\d+)\/\n([\s\S]*)/);
      if (m && !settled && (!extraEnv || !extraEnv.RUNBOOK_SERVE_TOKEN || /needs RUNBOOK_SERVE_TOKEN/.test(text))) {
        settled = true;
        clearTimeout(timer);
        resolve({
          url: m[1], banner: text, process: p,
          stop: async () => { p.kill('SIGTERM'); const r = await p.done; if (r.code !== 0) throw new Error('serve exited ' + r.code + ': ' + r.stderr); return r; },
        });
      }
    };
    p.done.then((r) => { if (!settled) { settled = true; clearTimeout(timer); reject(new Error('serve exited ' + r.code + ': ' + r.stderr)); } });
  });
}

async function browser(dir, extra) {
  const { chromium } = require('playwright-core');
  const profile = fs.mkdtempSync(path.join(dir, 'chromium-profile-'));
  // a persistent context is how playwright takes a --user-data-dir: a
  // fresh one per test file, so no profile state carries over
  return chromium.launchPersistentContext(profile, Object.assign({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  }, extra || {}));
}

function cleanup() {
  for (const p of started) p.kill('SIGKILL');
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
}

module.exports = { BIN, tmpdir, start, runbook, waitFor, serve, browser, cleanup };
