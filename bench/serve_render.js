// Loads a served run page in Debian's chromium (headless) five times and
// prints the medians of: the wall time from navigation start to the load
// event (parsed, styled, laid out), and the renderer's CPU time for it
// (CDP Performance.getMetrics ThreadTime and ProcessTime deltas), which a
// shared machine's load does not inflate the way it does wall time.
'use strict';
const path = require('node:path');
const fs = require('node:fs');
const { chromium } = require(path.resolve(__dirname, '../tests/web/node_modules/playwright-core'));
(async () => {
  const [url, tmp] = process.argv.slice(2);
  const profile = fs.mkdtempSync(path.join(tmp, 'profile-'));
  const ctx = await chromium.launchPersistentContext(profile, {
    executablePath: '/usr/bin/chromium', headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const wall = [], thread = [], proc = [];
  for (let i = 0; i < 5; i++) {
    const page = await ctx.newPage();
    const cdp = await ctx.newCDPSession(page);
    await cdp.send('Performance.enable');
    const m = async () => Object.fromEntries((await cdp.send('Performance.getMetrics')).metrics.map((x) => [x.name, x.value]));
    await page.goto('about:blank');
    const before = await m();
    await page.goto(url, { waitUntil: 'load' });
    const after = await m();
    wall.push(await page.evaluate(() => { const n = performance.getEntriesByType('navigation')[0]; return n.loadEventEnd - n.startTime; }));
    thread.push((after.ThreadTime - before.ThreadTime) * 1000);
    proc.push((after.ProcessTime - before.ProcessTime) * 1000);
    await page.close();
  }
  await ctx.close();
  const med = (a) => a.slice().sort((x, y) => x - y)[Math.floor(a.length / 2)];
  console.log('load event ' + med(wall).toFixed(0) + ' ms wall; renderer CPU ' + med(thread).toFixed(0) +
    ' ms main thread, ' + med(proc).toFixed(0) + ' ms process (medians of 5)');
  process.exit(med(proc) < 1000 ? 0 : 1);
})().catch((e) => { console.error(e); process.exit(1); });
