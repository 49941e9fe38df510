// Loads a served run page in Debian's chromium (headless) five times and
// prints the median time from navigation start to the load event (the
// page parsed, laid out and painted) and to its first poll answered.
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
  const loads = [], polls = [];
  for (let i = 0; i < 5; i++) {
    const page = await ctx.newPage();
    await page.goto(url, { waitUntil: 'load' });
    const t = await page.evaluate(() => { const n = performance.getEntriesByType('navigation')[0]; return n.loadEventEnd - n.startTime; });
    loads.push(t);
    const t0 = Date.now();
    await page.waitForResponse((r) => r.url().includes('/events?after='));
    polls.push(Date.now() - t0);
    await page.close();
  }
  await ctx.close();
  const med = (a) => a.sort((x, y) => x - y)[Math.floor(a.length / 2)];
  console.log('load event after ' + med(loads).toFixed(0) + ' ms (median of 5); rows: ' + 'first poll answered ' + med(polls).toFixed(0) + ' ms after it');
  process.exit(med(loads) < 1000 ? 0 : 1);
})().catch((e) => { console.error(e); process.exit(1); });
