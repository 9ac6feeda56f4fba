#!/usr/bin/env node
// The README's screenshots of the console (docs/img/), taken from a server under a little
// load: a minute of mixed demo jobs (quick, slow, retried, failing), then the overview and a
// kind's page at 1280 px. Not part of CI; run it when the console's look changes:
//
//   cargo run --features http --bin jobforge-server -- --demo-handlers --bind 127.0.0.1:8080 &
//   JOBFORGE_URL=http://127.0.0.1:8080 node tests/ui/readme-shots.mjs
//
// Environment: JOBFORGE_URL, JOBFORGE_API_KEY (when the server checks keys), CHROMIUM
// (default /usr/bin/chromium), SHOTS_DIR (default docs/img), SECONDS (default 40).

import { mkdir } from 'node:fs/promises';
import { chromium } from 'playwright-core';

const env = process.env;
const BASE = (env.JOBFORGE_URL || 'http://127.0.0.1:8080').replace(/\/+$/, '');
const KEY = env.JOBFORGE_API_KEY || '';
const DIR = env.SHOTS_DIR || 'docs/img';
const SECONDS = Number(env.SECONDS || 40);

async function submit(jobs) {
  const headers = { 'content-type': 'application/json' };
  if (KEY) headers['x-api-key'] = KEY;
  const res = await fetch(`${BASE}/v1/jobs/batch`, { method: 'POST', headers, body: JSON.stringify({ jobs }) });
  if (!res.ok) throw new Error(`batch: ${res.status} ${await res.text()}`);
}

function tick(i) {
  const jobs = [];
  const wave = 1 + Math.sin(i / 6);
  for (let n = 0; n < Math.round(30 * wave) + 5; n += 1) jobs.push({ kind: 'echo', payload: { n } });
  for (let n = 0; n < 6; n += 1) jobs.push({ kind: 'sleep', payload: { ms: 20 + ((n * 37 + i * 11) % 180) } });
  if (i % 2 === 0) jobs.push({ kind: 'fail_n_times', payload: { times: 2 } });
  if (i % 5 === 0) jobs.push({ kind: 'fail_n_times', payload: { permanent: true } });
  if (i % 3 === 0) jobs.push({ kind: 'echo', payload: { later: true }, delay_ms: 600_000 });
  return jobs;
}

const browser = await chromium.launch({
  executablePath: env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-dev-shm-usage'],
});
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 860 }, colorScheme: 'light' });
  const page = await context.newPage();
  if (KEY) {
    await page.goto(`${BASE}/ui/login`);
    await page.fill('#key', KEY);
    await Promise.all([page.waitForURL(`${BASE}/ui`), page.click('#login')]);
  } else {
    await page.goto(`${BASE}/ui`);
  }
  // A first batch, so the by-kind table has its rows when the overview is loaded again.
  await submit(tick(0));
  await page.goto(`${BASE}/ui`);
  for (let i = 1; i < SECONDS; i += 1) {
    await submit(tick(i));
    await new Promise((r) => setTimeout(r, 1000));
  }
  await mkdir(DIR, { recursive: true });
  await page.screenshot({ path: `${DIR}/console-overview.png` });
  await page.goto(`${BASE}/ui/kinds/sleep`);
  await page.screenshot({ path: `${DIR}/console-kind.png` });
  console.log(`wrote ${DIR}/console-overview.png and ${DIR}/console-kind.png`);
} finally {
  await browser.close();
}
