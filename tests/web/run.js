// ctest's entry for the browser tests: runs every *.test.js here under
// node's test runner and exits with its status; 77 (skipped) when
// playwright-core or chromium is not installed (scripts/deps.sh installs both).
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const { spawnSync } = require('node:child_process');

try {
  require.resolve('playwright-core');
} catch (e) {
  console.error('web tests skipped: playwright-core is not installed (run scripts/deps.sh, or npm ci in tests/web)');
  process.exit(77);
}
const chromium = process.env.RUNBOOK_CHROMIUM || '/usr/bin/chromium';
if (!fs.existsSync(chromium)) {
  console.error('web tests skipped: no browser at ' + chromium + ' (apt-get install chromium)');
  process.exit(77);
}
const files = fs.readdirSync(__dirname).filter((f) => f.endsWith('.test.js')).map((f) => path.join(__dirname, f));
const r = spawnSync(process.execPath, ['--test', '--test-concurrency=1', ...files], { stdio: 'inherit' });
process.exit(r.status === null ? 1 : r.status);
