#!/usr/bin/env node
// Browser checks of the jobforge operator console (/ui), driving Debian's chromium through
// playwright-core. A plain Node script: one `ok - ...` line per passed check, and on the first
// failure a `not ok - ...` line with the reason, a screenshot `failure.png`, and exit 1.
//
// Environment:
//   JOBFORGE_URL        the server, e.g. http://127.0.0.1:8080 (jobforge-server --demo-handlers)
//   JOBFORGE_ADMIN_KEY  an API key with admin (or jobs:read + jobs:write)
//   JOBFORGE_READ_KEY   a read-only API key: jobs:read and schedules:read
//   CHROMIUM            the browser (default /usr/bin/chromium)
//   UI_SCREENSHOTS      where screenshots go (default target/ui)
//   UI_SKIP_RETRY=1     skip the retry check
//
// The server must be fresh enough that it holds no more than a few thousand jobs: the checks
// submit their own jobs and look for them.

import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { isDeepStrictEqual } from 'node:util';
import { chromium } from 'playwright-core';

const env = process.env;
const BASE = (env.JOBFORGE_URL || '').replace(/\/+$/, '');
const ADMIN_KEY = env.JOBFORGE_ADMIN_KEY || '';
const READ_KEY = env.JOBFORGE_READ_KEY || '';
const CHROMIUM = env.CHROMIUM || '/usr/bin/chromium';
const SHOTS = env.UI_SCREENSHOTS || 'target/ui';
const SKIP_RETRY = env.UI_SKIP_RETRY === '1';

/** The longest any single wait may take. */
const WAIT = 15_000;
/** How often a polled condition is looked at again. */
const POLL_MS = 100;
const DESKTOP = { width: 1280, height: 900 };
const PHONE = { width: 390, height: 844 };
const NAV = ['overview', 'jobs', 'kinds', 'queues', 'schedules'];
const COUNT_STATES = ['queued', 'running', 'succeeded', 'dead', 'cancelled', 'pending'];
/** A well-formed API key that no server knows. */
const WRONG_KEY = `jfk_0000000000000000_${'0'.repeat(64)}`;
const XSS_SCRIPT = '<script>window.__xss=1</script>';
const XSS_PAYLOAD = { html: `${XSS_SCRIPT}<b>bold</b>` };

// ---------------------------------------------------------------------------------------------
// Reporting

class CheckFailed extends Error {}

let passed = 0;
let skipped = 0;
let current = 'setup';
/** The page a failure screenshot is taken of. */
let activePage = null;
/** CSP violations and uncaught script errors seen on any page: checked at the end. */
const scriptProblems = [];

function fail(message) {
  throw new CheckFailed(message);
}

function ok(what) {
  passed += 1;
  console.log(`ok - ${what}`);
}

function note(what) {
  console.log(`# ${what}`);
}

/** Run one check: `what` names it in the `ok` line and in a failure. */
async function check(what, body) {
  current = what;
  await body();
  ok(what);
}

// ---------------------------------------------------------------------------------------------
// Small helpers

const url = (p) => `${BASE}${p}`;
const pathOf = (u) => new URL(u, BASE).pathname;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Poll `probe` until it answers something truthy (which is returned), for at most `timeout`
 * ms. A probe that throws counts as not yet (a page may be between documents); the last
 * answer or error is in the failure message.
 */
async function until(what, probe, timeout = WAIT) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      const value = await probe();
      if (value) return value;
      last = value;
    } catch (e) {
      if (e instanceof CheckFailed) throw e;
      last = `error: ${e.message.split('\n')[0]}`;
    }
    if (Date.now() >= deadline) {
      fail(`timed out after ${timeout} ms waiting for ${what} (last seen: ${JSON.stringify(last)})`);
    }
    await sleep(POLL_MS);
  }
}

function asInteger(text, what) {
  const t = (text ?? '').trim();
  if (!/^\d+$/.test(t)) fail(`${what} should be an integer, is ${JSON.stringify(text)}`);
  return Number(t);
}

async function count(page, selector) {
  return page.locator(selector).count();
}

async function text(page, selector) {
  return (await page.locator(selector).first().textContent({ timeout: WAIT })) ?? '';
}

async function expectPresent(page, selector, what = selector) {
  try {
    await page.locator(selector).first().waitFor({ state: 'attached', timeout: WAIT });
  } catch {
    fail(`${what} is missing on ${pathOf(page.url())}`);
  }
}

async function expectAbsent(page, selector, what = selector) {
  const n = await count(page, selector);
  if (n !== 0) fail(`${what} should not be on ${pathOf(page.url())} (found ${n})`);
}

async function screenshot(page, name) {
  const file = path.join(SHOTS, name);
  await page.screenshot({ path: file, fullPage: true });
  return file;
}

// ---------------------------------------------------------------------------------------------
// The JSON API

async function api(method, p, body, key = ADMIN_KEY) {
  const res = await fetch(url(p), {
    method,
    headers: {
      'X-API-Key': key,
      Accept: 'application/json',
      ...(body === undefined ? {} : { 'Content-Type': 'application/json' }),
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const raw = await res.text();
  let json = null;
  try {
    json = raw ? JSON.parse(raw) : null;
  } catch {
    json = null;
  }
  return { status: res.status, json, raw };
}

/** Submit a job through the API; answers its id. */
async function submit(job) {
  const res = await api('POST', '/v1/jobs', job);
  if ((res.status !== 201 && res.status !== 200) || !res.json?.id) {
    fail(`POST /v1/jobs ${JSON.stringify(job)} answered ${res.status}: ${res.raw.slice(0, 300)}`);
  }
  return res.json.id;
}

async function getJob(id) {
  const res = await api('GET', `/v1/jobs/${id}`);
  if (res.status !== 200 || !res.json) {
    fail(`GET /v1/jobs/${id} answered ${res.status}: ${res.raw.slice(0, 300)}`);
  }
  return res.json;
}

async function waitForState(id, states, timeout = WAIT) {
  const wanted = [].concat(states);
  return until(`job ${id} to be ${wanted.join(' or ')} per the API`, async () => {
    const job = await getJob(id);
    return wanted.includes(job.state) ? job : false;
  }, timeout);
}

/** A `fail_n_times` job that fails permanently, waited for until the API says dead. */
async function makeDeadJob() {
  const id = await submit({
    kind: 'fail_n_times',
    payload: { permanent: true },
    max_attempts: 1,
    tags: ['ui-test'],
  });
  await waitForState(id, 'dead');
  return id;
}

// ---------------------------------------------------------------------------------------------
// The browser

async function newContext(browser, options = {}) {
  const context = await browser.newContext({ viewport: DESKTOP, ...options });
  context.setDefaultTimeout(WAIT);
  context.setDefaultNavigationTimeout(WAIT);
  return context;
}

async function newPage(context, role) {
  const page = await context.newPage();
  page.on('dialog', (dialog) => dialog.accept().catch(() => {}));
  page.on('pageerror', (err) => {
    scriptProblems.push(`[${role}] uncaught error on ${pathOf(page.url())}: ${err.message}`);
  });
  page.on('console', (msg) => {
    if (msg.type() === 'error' && /content security policy/i.test(msg.text())) {
      scriptProblems.push(`[${role}] CSP violation on ${pathOf(page.url())}: ${msg.text()}`);
    }
  });
  activePage = page;
  return page;
}

/** Open a console page; it must answer 200 as an HTML page with the console's frame. */
async function open(page, p) {
  activePage = page;
  const res = await page.goto(url(p));
  if (!res) fail(`no response for ${p}`);
  if (res.status() !== 200) fail(`GET ${p} answered ${res.status()} (ended at ${page.url()})`);
  if (pathOf(page.url()) !== pathOf(url(p))) fail(`GET ${p} ended at ${page.url()}`);
  await expectFrame(page, res);
  return res;
}

/** Every console page: a strict CSP, the navigation bar, the logout form. */
async function expectFrame(page, res) {
  const where = pathOf(page.url());
  const csp = res.headers()['content-security-policy'];
  if (!csp) fail(`${where} has no Content-Security-Policy header`);
  if (!csp.includes("script-src 'self'")) fail(`${where}: the CSP lacks script-src 'self': ${csp}`);
  if (csp.includes('unsafe-inline')) fail(`${where}: the CSP allows unsafe-inline: ${csp}`);
  await expectPresent(page, 'nav#nav', 'the navigation bar (nav#nav)');
  for (const section of NAV) {
    const link = page.locator(`nav#nav a[data-nav=${section}]`);
    if ((await link.count()) !== 1) fail(`${where}: nav#nav has no single a[data-nav=${section}]`);
    const href = await link.getAttribute('href');
    if (!href || !pathOf(href).startsWith('/ui')) fail(`${where}: a[data-nav=${section}] goes to ${href}`);
  }
  await expectPresent(page, 'form#logout #logout-button', 'the logout form (form#logout with #logout-button)');
}

/**
 * Click a submit button of a form that posts to `postPath`, and wait for the document the
 * post lands on (the post's own answer, or the page it redirects to). Answers both
 * responses; `landed.url()` is where the browser is now.
 */
async function submitForm(page, button, postPath) {
  activePage = page;
  const isPost = (r) => r.request().method() === 'POST' && pathOf(r.url()) === postPath;
  const posted = page.waitForResponse(isPost);
  const landed = page.waitForResponse((r) => {
    const req = r.request();
    if (!req.isNavigationRequest() || req.frame() !== page.mainFrame()) return false;
    if (isPost(r)) return r.status() < 300 || r.status() >= 400;
    let from = req.redirectedFrom();
    while (from) {
      if (from.method() === 'POST' && pathOf(from.url()) === postPath) return true;
      from = from.redirectedFrom();
    }
    return false;
  });
  await page.locator(button).click();
  const [post, land] = await Promise.all([posted, landed]);
  await page.waitForLoadState('load');
  return { post, landed: land };
}

/** For a refused form post: what the browser sent that a same-origin check looks at. */
async function originHint(post) {
  if (post.status() !== 403) return '';
  const h = await post.request().allHeaders();
  const why = h.origin === 'null'
    ? '; browsers send Origin: null on a form post from a page with Referrer-Policy: no-referrer'
    : '';
  return ` (the browser sent Origin: ${h.origin ?? '(none)'}, Sec-Fetch-Site: ${h['sec-fetch-site'] ?? '(none)'}${why})`;
}

async function login(page, key) {
  activePage = page;
  const res = await page.goto(url('/ui/login'));
  if (!res || res.status() !== 200) fail(`GET /ui/login answered ${res?.status()}`);
  await page.locator('#key').fill(key);
  return submitForm(page, '#login', '/ui/login');
}

/** Log in and expect to land on the overview with a session cookie. */
async function loginOk(page, key, role) {
  const { post } = await login(page, key);
  if (post.status() !== 303) fail(`${role} login answered ${post.status()}, not 303${await originHint(post)}`);
  const location = post.headers().location;
  if (!location || !['/ui', '/ui/'].includes(pathOf(location))) {
    fail(`${role} login redirected to ${location}, not /ui`);
  }
  await until(`the ${role} login to land on /ui`, () => ['/ui', '/ui/'].includes(pathOf(page.url())));
  const cookie = (await page.context().cookies(url('/ui'))).find((c) => c.name === 'jobforge_session');
  if (!cookie) fail(`${role} login set no jobforge_session cookie`);
  return cookie;
}

/** A GET without following redirects must send the browser to the login page. */
async function expectLoginRedirect(request, p) {
  const res = await request.get(url(p), { maxRedirects: 0 });
  if (![302, 303, 307].includes(res.status())) {
    fail(`GET ${p} without a session answered ${res.status()}, not a redirect to /ui/login`);
  }
  const location = res.headers().location;
  if (!location || pathOf(location) !== '/ui/login') {
    fail(`GET ${p} without a session redirected to ${location}, not /ui/login`);
  }
}

async function stateCounts(page) {
  const out = {};
  for (const s of COUNT_STATES) {
    out[s] = asInteger(await text(page, `table#state-counts [data-count=${s}]`), `[data-count=${s}]`);
  }
  return out;
}

/** The elements sticking out past `width`, for a failure message. */
async function overflowing(page, width) {
  return page.evaluate((w) => {
    const out = [];
    for (const el of document.querySelectorAll('body *')) {
      const r = el.getBoundingClientRect();
      if (r.right > w + 1 && r.width > 0) {
        const id = el.id ? `#${el.id}` : '';
        const cls = el.classList.length ? `.${[...el.classList].join('.')}` : '';
        out.push(`${el.tagName.toLowerCase()}${id}${cls} (right ${Math.round(r.right)})`);
      }
      if (out.length >= 8) break;
    }
    return out;
  }, width);
}

async function expectNoHorizontalScroll(page, width, where) {
  const sw = await page.evaluate(() => Math.max(
    document.documentElement.scrollWidth,
    document.body ? document.body.scrollWidth : 0,
  ));
  if (sw > width + 1) {
    fail(`${where} scrolls sideways at ${width} px: scrollWidth ${sw}; wide: ${(await overflowing(page, width)).join(', ')}`);
  }
}

// ---------------------------------------------------------------------------------------------
// The checks

/** What the checks pass on to each other. */
const state = {
  echo: new Map(), // id -> payload
  sleepIds: [],
  xssId: null,
  deadId: null,
};

async function checkRefusal(browser) {
  await check('a wrong key is refused (401 with .error) and /ui without a session goes to /ui/login', async () => {
    const context = await newContext(browser);
    const page = await newPage(context, 'anonymous');
    const res = await page.goto(url('/ui/login'));
    if (!res || res.status() !== 200) fail(`GET /ui/login answered ${res?.status()}`);
    const form = page.locator('form#login-form');
    if ((await form.count()) !== 1) fail('the login page has no form#login-form');
    if ((await form.getAttribute('method'))?.toLowerCase() !== 'post') fail('form#login-form does not post');
    if (pathOf((await form.getAttribute('action')) || '') !== '/ui/login') {
      fail(`form#login-form posts to ${await form.getAttribute('action')}, not /ui/login`);
    }
    const key = page.locator('form#login-form input#key[name=key]');
    if ((await key.count()) !== 1) fail('the login form has no input#key[name=key]');
    if ((await key.getAttribute('type')) !== 'password') fail('input#key is not type=password');
    await expectPresent(page, 'form#login-form button#login');

    await page.locator('#key').fill(WRONG_KEY);
    const { post } = await submitForm(page, '#login', '/ui/login');
    if (post.status() !== 401) fail(`a wrong key answered ${post.status()}, not 401${await originHint(post)}`);
    const error = await until('.error on the refused login page', async () => {
      const n = await count(page, '.error');
      return n > 0 ? text(page, '.error') : false;
    });
    if (!/refused/i.test(error)) fail(`.error says ${JSON.stringify(error)}, not "refused"`);
    await expectPresent(page, 'form#login-form', 'the login form on the refused page');
    if ((await context.cookies(url('/ui'))).some((c) => c.name === 'jobforge_session')) {
      fail('a refused login set a jobforge_session cookie');
    }

    for (const p of ['/ui', '/ui/jobs', '/ui/kinds/echo']) {
      await expectLoginRedirect(context.request, p);
      await page.goto(url(p));
      if (pathOf(page.url()) !== '/ui/login') fail(`visiting ${p} without a session ended at ${page.url()}`);
      await expectPresent(page, 'form#login-form', `the login form after visiting ${p}`);
    }
    await context.close();
  });
}

async function checkLogin(browser) {
  const context = await newContext(browser);
  const page = await newPage(context, 'admin');
  await check('the admin key logs in (303 to /ui, HttpOnly SameSite=Strict cookie); the overview shows with a strict CSP', async () => {
    const cookie = await loginOk(page, ADMIN_KEY, 'admin');
    if (!cookie.httpOnly) fail('the jobforge_session cookie is not HttpOnly');
    if (cookie.sameSite !== 'Strict') fail(`the jobforge_session cookie is SameSite=${cookie.sameSite}, not Strict`);
    const visible = await page.evaluate(() => document.cookie);
    if (visible.includes('jobforge_session')) fail('document.cookie shows jobforge_session to scripts');

    await open(page, '/ui');
    await expectPresent(page, 'table#state-counts');
    await stateCounts(page);
    await expectPresent(page, 'svg#chart-throughput');
    await expectPresent(page, 'svg#chart-depth');
    await expectPresent(page, 'table#kind-counts');
    await screenshot(page, 'overview.png');
  });
  return { context, page };
}

async function checkLiveCounts(admin) {
  const { page } = admin;
  await check('20 echo and 5 sleep jobs: [data-count=succeeded] rises by 20 without a reload', async () => {
    activePage = page;
    const before = (await stateCounts(page)).succeeded;
    // Set on this document: a reload would lose it.
    await page.evaluate(() => { window.__jobforgeNoReload = true; });
    const at = page.url();
    const submitted = [];
    for (let i = 0; i < 20; i += 1) {
      const payload = { n: i, check: 'live counts', note: 'ui-test' };
      submitted.push(submit({ kind: 'echo', payload, tags: ['ui-test'] }).then((id) => state.echo.set(id, payload)));
    }
    for (let i = 0; i < 5; i += 1) {
      submitted.push(submit({ kind: 'sleep', payload: { ms: 300 }, tags: ['ui-test'] }).then((id) => state.sleepIds.push(id)));
    }
    await Promise.all(submitted);

    await until(`[data-count=succeeded] to reach ${before + 20} (it was ${before})`, async () => {
      const n = asInteger(await text(page, 'table#state-counts [data-count=succeeded]'), '[data-count=succeeded]');
      return n >= before + 20;
    });
    const kept = await page.evaluate(() => window.__jobforgeNoReload === true);
    if (!kept || page.url() !== at) fail('the overview reloaded: the counts must update in place');
    for (const chart of ['svg#chart-throughput', 'svg#chart-depth']) {
      await until(`${chart} to draw something`, async () => (await count(page, `${chart} > *`)) > 0);
    }
    // Lines need three samples (two rates): the overview with its charts drawn, for the README.
    await until('svg#chart-throughput to draw a line', async () => (await count(page, 'svg#chart-throughput path')) > 0);
    await screenshot(page, 'overview-live.png');
    for (const id of [...state.echo.keys(), ...state.sleepIds]) await waitForState(id, 'succeeded');
    await open(page, '/ui');
    for (const kind of ['echo', 'sleep']) {
      await expectPresent(page, `table#kind-counts tr[data-kind="${kind}"]`, `the ${kind} row of table#kind-counts`);
    }
  });
}

async function jobRows(page) {
  return page.locator('table#jobs tr.job').evaluateAll((rows) => rows.map((r) => ({
    id: r.getAttribute('data-id'),
    kind: r.getAttribute('data-kind'),
    state: r.getAttribute('data-state'),
    links: [...r.querySelectorAll('a.job-link')].map((a) => a.getAttribute('href')),
  })));
}

function expectRows(rows, where, want) {
  if (rows.length === 0) fail(`${where}: table#jobs has no tr.job`);
  for (const r of rows) {
    if (!r.id || !r.kind || !r.state) fail(`${where}: a tr.job lacks data-id, data-kind or data-state: ${JSON.stringify(r)}`);
    if (want.kind && r.kind !== want.kind) fail(`${where}: row ${r.id} has data-kind=${r.kind}, not ${want.kind}`);
    if (want.state && r.state !== want.state) fail(`${where}: row ${r.id} has data-state=${r.state}, not ${want.state}`);
    if (r.links.length !== 1 || pathOf(r.links[0]) !== `/ui/jobs/${r.id}`) {
      fail(`${where}: row ${r.id} should have one a.job-link to /ui/jobs/${r.id}, has ${JSON.stringify(r.links)}`);
    }
  }
}

/** Fill the filter form and submit it; answers the rows shown. */
async function applyFilter(page, { state: st = '', kind = '', queue = '' }) {
  await page.locator('form#filter select[name=state]').selectOption(st);
  await page.locator('form#filter input[name=kind]').fill(kind);
  await page.locator('form#filter input[name=queue]').fill(queue);
  await page.locator('#apply-filter').click();
  await until(`the jobs list filtered by ${JSON.stringify({ state: st, kind, queue })}`, () => {
    const u = new URL(page.url());
    return u.pathname === '/ui/jobs'
      && (u.searchParams.get('kind') ?? '') === kind
      && (u.searchParams.get('state') ?? '') === st
      && (u.searchParams.get('queue') ?? '') === queue;
  });
  await page.waitForLoadState('load');
  return jobRows(page);
}

async function checkJobsList(admin) {
  const { page } = admin;
  await check('jobs list: the filter form with kind=echo shows only echo jobs, each linking to its page', async () => {
    await open(page, '/ui/jobs');
    const form = page.locator('form#filter');
    if ((await form.count()) !== 1) fail('no form#filter on /ui/jobs');
    if (((await form.getAttribute('method')) || 'get').toLowerCase() !== 'get') fail('form#filter does not use GET');
    for (const field of ['select[name=state]', 'input[name=kind]', 'input[name=queue]', 'button#apply-filter']) {
      await expectPresent(page, `form#filter ${field}`);
    }
    const rows = await applyFilter(page, { kind: 'echo' });
    expectRows(rows, '/ui/jobs?kind=echo', { kind: 'echo' });
    const mine = rows.filter((r) => state.echo.has(r.id)).length;
    if (mine === 0) fail('none of the echo jobs this run submitted is listed under kind=echo');
    await screenshot(page, 'jobs.png');
  });

  await check('jobs list: state and kind combine, and a#next-page leads to further, different jobs', async () => {
    // More echo jobs than a page holds (the console shows 50), all of them finished.
    const extra = [];
    for (let i = 0; i < 45; i += 1) {
      const payload = { n: 100 + i, check: 'pager', note: 'ui-test' };
      extra.push(submit({ kind: 'echo', payload, tags: ['ui-test'] }).then((id) => { state.echo.set(id, payload); return id; }));
    }
    for (const id of await Promise.all(extra)) await waitForState(id, 'succeeded');
    await open(page, '/ui/jobs');
    const first = await applyFilter(page, { state: 'succeeded', kind: 'echo' });
    expectRows(first, 'page 1 of succeeded echo jobs', { kind: 'echo', state: 'succeeded' });
    const next = page.locator('a#next-page');
    if ((await next.count()) !== 1) fail(`no a#next-page with ${state.echo.size} succeeded echo jobs (page 1 shows ${first.length})`);
    const href = await next.getAttribute('href');
    await next.click();
    await until('the next page to open', () => page.url() === new URL(href, page.url()).href);
    await page.waitForLoadState('load');
    const second = await jobRows(page);
    expectRows(second, 'page 2 of succeeded echo jobs', { kind: 'echo', state: 'succeeded' });
    const seen = new Set(first.map((r) => r.id));
    const again = second.filter((r) => seen.has(r.id));
    if (again.length) fail(`page 2 repeats jobs of page 1: ${again.map((r) => r.id).join(', ')}`);
  });
}

async function expectPayload(page, payload, where) {
  const shown = await text(page, 'pre#payload');
  let parsed;
  try {
    parsed = JSON.parse(shown);
  } catch {
    fail(`${where}: pre#payload is not JSON: ${JSON.stringify(shown.slice(0, 200))}`);
  }
  if (!isDeepStrictEqual(parsed, payload)) {
    fail(`${where}: pre#payload shows ${JSON.stringify(parsed)}, the job's payload is ${JSON.stringify(payload)}`);
  }
  return shown;
}

async function checkJobPage(admin) {
  const { page } = admin;
  await check('a job page opened from its a.job-link shows the payload, result and history', async () => {
    await open(page, '/ui/jobs?kind=echo');
    const link = page.locator('table#jobs tr.job a.job-link').first();
    const row = page.locator('table#jobs tr.job').first();
    const id = await row.getAttribute('data-id');
    await link.click();
    await until(`the job page /ui/jobs/${id}`, () => pathOf(page.url()) === `/ui/jobs/${id}`);
    await page.waitForLoadState('load');
    const job = await getJob(id);
    const shown = await expectPayload(page, job.payload, `/ui/jobs/${id}`);
    if (job.payload && typeof job.payload === 'object' && Object.keys(job.payload).length > 1 && !shown.includes('\n')) {
      fail(`pre#payload is not pretty printed: ${JSON.stringify(shown)}`);
    }
    const st = (await text(page, '#job-state')).trim();
    if (st !== job.state) fail(`#job-state says ${JSON.stringify(st)}, the API ${job.state}`);
    if (job.state === 'succeeded') {
      const result = await text(page, 'pre#result');
      if (!isDeepStrictEqual(JSON.parse(result), job.result)) fail(`pre#result shows ${result}, the API ${JSON.stringify(job.result)}`);
    }
    await expectAbsent(page, '#cancel-button', '#cancel-button on a finished job');
    await expectAbsent(page, '#retry-button', '#retry-button on a job that is not dead');
    if ((await count(page, 'table#events tr.event')) === 0) fail('table#events has no tr.event');
  });

  await check('a payload with markup is shown as text: no script runs, no element is made', async () => {
    state.xssId = await submit({ kind: 'echo', payload: XSS_PAYLOAD, delay_ms: 600_000, tags: ['ui-test'] });
    await open(page, `/ui/jobs/${state.xssId}`);
    const st = (await text(page, '#job-state')).trim();
    if (st !== 'queued') fail(`#job-state of a delayed job says ${JSON.stringify(st)}, not queued`);
    await expectPayload(page, XSS_PAYLOAD, 'the markup job');
    const rendered = await page.locator('pre#payload').innerText();
    if (!rendered.includes(XSS_SCRIPT)) fail(`pre#payload does not show ${XSS_SCRIPT} as text: ${JSON.stringify(rendered)}`);
    if (!rendered.includes('<b>bold</b>')) fail(`pre#payload does not show <b>bold</b> as text: ${JSON.stringify(rendered)}`);
    const xss = await page.evaluate(() => typeof window.__xss);
    if (xss !== 'undefined') fail(`window.__xss is ${xss}: the payload's script ran`);
    await expectAbsent(page, 'pre#payload b', 'a <b> element made from the payload');
    await expectAbsent(page, 'pre#payload script', 'a <script> element made from the payload');
    const scripts = await page.locator('script').evaluateAll((all) => all.filter((s) => s.textContent.includes('__xss')).length);
    if (scripts) fail('the page holds a script element with the payload\'s code');
    await screenshot(page, 'job.png');
  });
}

async function checkCancel(admin) {
  const { page } = admin;
  await check('cancelling the queued job with #cancel-button: the page and the API say cancelled', async () => {
    const id = state.xssId;
    await open(page, `/ui/jobs/${id}`);
    const form = page.locator('form#cancel-form');
    if ((await form.count()) !== 1) fail('a queued job\'s page has no form#cancel-form for the admin');
    if ((await form.getAttribute('method'))?.toLowerCase() !== 'post') fail('form#cancel-form does not post');
    if (pathOf((await form.getAttribute('action')) || '') !== `/ui/jobs/${id}/cancel`) {
      fail(`form#cancel-form posts to ${await form.getAttribute('action')}`);
    }
    const { post, landed } = await submitForm(page, '#cancel-button', `/ui/jobs/${id}/cancel`);
    if (post.status() !== 303) fail(`the cancel post answered ${post.status()}, not 303${await originHint(post)}`);
    if (pathOf(landed.url()) !== `/ui/jobs/${id}`) fail(`the cancel post led to ${landed.url()}, not the job's page`);
    await until('#job-state to say cancelled', async () => (await text(page, '#job-state')).trim() === 'cancelled');
    await expectAbsent(page, '#cancel-button', '#cancel-button on a cancelled job');
    const job = await getJob(id);
    if (job.state !== 'cancelled') fail(`the API says the job is ${job.state}, not cancelled`);
  });
}

/** Delete a finished job from its page: the console goes back to the list and says so. */
async function checkDelete(admin) {
  const { page } = admin;
  await check('deleting a succeeded job with #delete-button: back on the list, and the API answers 404', async () => {
    const id = await submit({ kind: 'echo', payload: { delete: 'me' }, tags: ['ui-test'] });
    await waitForState(id, 'succeeded');
    await open(page, `/ui/jobs/${id}`);
    await expectAbsent(page, '#cancel-button', '#cancel-button on a succeeded job');
    const form = page.locator('form#delete-form');
    if ((await form.count()) !== 1) fail('a succeeded job\'s page has no form#delete-form for the admin');
    const { post, landed } = await submitForm(page, '#delete-button', `/ui/jobs/${id}/delete`);
    if (post.status() !== 303) fail(`the delete post answered ${post.status()}, not 303${await originHint(post)}`);
    if (pathOf(landed.url()) !== '/ui/jobs') fail(`the delete post led to ${landed.url()}, not the jobs list`);
    const notice = (await count(page, '#bulk-done')) ? (await text(page, '#bulk-done')) : '';
    if (!notice.includes(id)) fail(`the list does not say the job was deleted: ${JSON.stringify(notice)}`);
    const res = await api('GET', `/v1/jobs/${id}`);
    if (res.status !== 404) fail(`GET /v1/jobs/${id} after the delete answered ${res.status}, not 404`);
  });
}

/**
 * Retry a dead job from its page. The engine runs a dead job again as a new job (tagged
 * `retry-of:<id>`; the dead one stays dead), so the console may show the copy or the dead job
 * again: either way the retry must be visible.
 */
async function checkRetry(admin) {
  if (SKIP_RETRY) {
    skipped += 1;
    console.log('skip - retry (UI_SKIP_RETRY=1)');
    return;
  }
  const { page } = admin;
  await check('retrying a dead job with #retry-button runs it again', async () => {
    const deadId = await makeDeadJob();
    state.deadId = deadId;
    await open(page, `/ui/jobs/${deadId}`);
    const st = (await text(page, '#job-state')).trim();
    if (st !== 'dead') fail(`#job-state of a dead job says ${JSON.stringify(st)}`);
    const error = (await count(page, '#last-error')) ? (await text(page, '#last-error')).trim() : '';
    if (!error) fail('a dead job\'s page shows no #last-error');
    await expectAbsent(page, '#cancel-button', '#cancel-button on a dead job');
    const form = page.locator('form#retry-form');
    if ((await form.count()) !== 1) fail('a dead job\'s page has no form#retry-form for the admin');
    if (pathOf((await form.getAttribute('action')) || '') !== `/ui/jobs/${deadId}/retry`) {
      fail(`form#retry-form posts to ${await form.getAttribute('action')}`);
    }

    const { post, landed } = await submitForm(page, '#retry-button', `/ui/jobs/${deadId}/retry`);
    if (post.status() !== 303) fail(`the retry post answered ${post.status()}, not 303${await originHint(post)}`);
    const landedPath = pathOf(landed.url());
    const m = /^\/ui\/jobs\/([^/]+)$/.exec(landedPath);
    if (!m) fail(`the retry post led to ${landed.url()}, not a job's page`);
    const shownId = decodeURIComponent(m[1]);
    if (shownId !== deadId) {
      // The copy's page: a new job, its attempts from the start, that says what it retries.
      const copy = await getJob(shownId);
      if (!(copy.tags || []).includes(`retry-of:${deadId}`)) {
        fail(`the job shown after the retry (${shownId}) is not tagged retry-of:${deadId}: ${JSON.stringify(copy.tags)}`);
      }
      if (copy.attempt > 1) fail(`the retried job starts at attempt ${copy.attempt}`);
      const shown = await until('#job-state of the retried job', async () => {
        const s = (await text(page, '#job-state')).trim();
        return ['queued', 'running', 'succeeded', 'dead'].includes(s) ? s : false;
      });
      note(`retry: ${deadId} ran again as ${shownId} (${shown})`);
    } else {
      // The dead job's page again: it must show the retry happened.
      await until('the dead job\'s page to show the retry (state left dead, or a retry event or link)', async () => {
        const s = (await text(page, '#job-state')).trim();
        if (s !== 'dead') return true;
        const events = await page.locator('table#events tr.event').allTextContents();
        if (events.some((e) => /retr/i.test(e))) return true;
        await page.reload();
        return false;
      });
    }
    const still = await getJob(deadId);
    if (still.state !== 'dead') note(`the retried job ${deadId} is now ${still.state}`);
  });
}

async function checkKind(admin) {
  const { page } = admin;
  await check('kinds: the echo kind page shows its reflection, decision, histogram and recent jobs', async () => {
    await open(page, '/ui/kinds');
    const row = page.locator('table#kinds tr[data-kind="echo"]');
    if ((await row.count()) !== 1) fail('table#kinds has no tr[data-kind="echo"]');
    const link = row.locator('a.kind-link');
    if ((await link.count()) !== 1 || pathOf((await link.getAttribute('href')) || '') !== '/ui/kinds/echo') {
      fail('the echo row has no a.kind-link to /ui/kinds/echo');
    }
    await link.click();
    await until('the echo kind page', () => pathOf(page.url()) === '/ui/kinds/echo');
    await page.waitForLoadState('load');
    // Executions are recorded as jobs finish: look again until the count shows them.
    const executions = await until('[data-field=count] to be a positive integer', async () => {
      const t = (await text(page, '#reflection [data-field=count]')).trim();
      if (/^\d+$/.test(t) && Number(t) > 0) return Number(t);
      await page.reload();
      return false;
    });
    const rate = (await text(page, '#reflection [data-field=success_rate]')).trim();
    if (!rate) fail('[data-field=success_rate] is empty');
    if (!/\d/.test(rate)) fail(`[data-field=success_rate] shows no figure (${JSON.stringify(rate)}) after ${executions} executions`);
    for (const f of ['p50', 'p99']) await expectPresent(page, `#reflection [data-field=${f}]`);
    const decision = (await page.locator('#decision').first().innerText()).trim();
    if (!decision) fail('#decision is empty');
    await expectPresent(page, 'svg#histogram');
    const recent = await page.locator('table#recent tr.job').evaluateAll((rows) => rows.map((r) => r.getAttribute('data-kind')));
    if (recent.length === 0) fail('table#recent has no tr.job');
    if (recent.some((k) => k !== 'echo')) fail(`table#recent lists other kinds: ${recent.join(', ')}`);
    await screenshot(page, 'kind.png');
  });

  await check('queues, schedules and workflows pages render from the navigation bar', async () => {
    for (const [section, expected, selector] of [
      ['queues', '/ui/queues', 'table#queues tr[data-queue]'],
      ['schedules', '/ui/schedules', '#schedules'],
      ['workflows', '/ui/workflows', 'form#workflow-open'],
    ]) {
      const nav = page.waitForResponse((r) => r.request().isNavigationRequest() && pathOf(r.url()) === expected);
      await page.locator(`nav#nav a[data-nav=${section}]`).click();
      const res = await nav;
      if (res.status() !== 200) fail(`${expected} answered ${res.status()}`);
      await until(`the ${section} page`, () => pathOf(page.url()) === expected);
      await page.waitForLoadState('load');
      await expectFrame(page, res);
      await expectPresent(page, selector);
      await screenshot(page, `${section}.png`);
    }
  });
}

async function checkReader(browser, admin) {
  await check('a read-only key: logs in, sees no actions, and its forged posts answer 403', async () => {
    const context = await newContext(browser);
    const page = await newPage(context, 'reader');
    await loginOk(page, READ_KEY, 'read-only');
    await open(page, '/ui');
    await expectPresent(page, 'table#state-counts');

    const queuedId = await submit({ kind: 'echo', payload: { check: 'read only' }, delay_ms: 600_000, tags: ['ui-test'] });
    await open(page, `/ui/jobs/${queuedId}`);
    const st = (await text(page, '#job-state')).trim();
    if (st !== 'queued') fail(`#job-state says ${JSON.stringify(st)}, not queued`);
    await expectAbsent(page, '#cancel-button', '#cancel-button for a read-only principal');
    await expectAbsent(page, 'form#cancel-form', 'form#cancel-form for a read-only principal');

    const deadId = state.deadId ?? await makeDeadJob();
    await open(page, `/ui/jobs/${deadId}`);
    await expectAbsent(page, '#retry-button', '#retry-button for a read-only principal');
    await expectAbsent(page, 'form#retry-form', 'form#retry-form for a read-only principal');

    // Forged posts with the reader's session cookie, from the console's own origin.
    const forged = { headers: { Origin: BASE }, form: { forged: '1' }, maxRedirects: 0 };
    const cancel = await page.request.post(url(`/ui/jobs/${queuedId}/cancel`), forged);
    if (cancel.status() !== 403) fail(`the reader's forged cancel answered ${cancel.status()}, not 403`);
    const retry = await page.request.post(url(`/ui/jobs/${deadId}/retry`), forged);
    if (retry.status() !== 403) fail(`the reader's forged retry answered ${retry.status()}, not 403`);
    const after = await getJob(queuedId);
    if (after.state !== 'queued') fail(`after the reader's forged cancel the API says ${after.state}, not queued`);

    // The same post from another site is refused even with the admin's session...
    const crossSite = await admin.page.request.post(url(`/ui/jobs/${queuedId}/cancel`), {
      ...forged, headers: { Origin: 'http://evil.example' },
    });
    if (crossSite.status() !== 403) fail(`a cross-site cancel with the admin's session answered ${crossSite.status()}, not 403`);
    if ((await getJob(queuedId)).state !== 'queued') fail('a cross-site cancel cancelled the job');
    // ...and accepted from the console's origin: the 403s above are the scope's doing.
    const control = await admin.page.request.post(url(`/ui/jobs/${queuedId}/cancel`), forged);
    if (control.status() !== 303) fail(`the same post with the admin's session answered ${control.status()}, not 303`);
    await waitForState(queuedId, 'cancelled');
    await context.close();
  });
}

async function checkPhoneAndDark(browser, admin) {
  const storageState = await admin.context.storageState();
  await check('at 390x844 the overview, jobs list and a job page do not scroll sideways', async () => {
    const context = await newContext(browser, {
      viewport: PHONE, isMobile: true, hasTouch: true, deviceScaleFactor: 2, storageState,
    });
    const page = await newPage(context, 'phone');
    await open(page, '/ui');
    await expectPresent(page, 'table#state-counts');
    // Let the first live update draw the charts before measuring.
    await until('the charts to draw', async () => (await count(page, 'svg#chart-depth > *')) > 0);
    await expectNoHorizontalScroll(page, PHONE.width, 'the overview');
    await screenshot(page, 'overview-phone.png');
    await open(page, '/ui/jobs?kind=echo');
    await expectNoHorizontalScroll(page, PHONE.width, 'the jobs list');
    const id = [...state.echo.keys()][0];
    await open(page, `/ui/jobs/${id}`);
    await expectNoHorizontalScroll(page, PHONE.width, 'a job page');
    await context.close();
  });

  await check('the overview in a dark color scheme (overview-dark.png)', async () => {
    const context = await newContext(browser, { colorScheme: 'dark', storageState });
    const page = await newPage(context, 'dark');
    await open(page, '/ui');
    await expectPresent(page, 'table#state-counts');
    const bg = (p) => p.evaluate(() => getComputedStyle(document.body).backgroundColor);
    const dark = await bg(page);
    await open(admin.page, '/ui');
    const light = await bg(admin.page);
    if (dark === light) note(`the dark scheme has the same body background as the light one (${dark})`);
    await screenshot(page, 'overview-dark.png');
    await context.close();
  });
}

async function checkLogout(admin) {
  const { page } = admin;
  await check('logging out with #logout-button: /ui goes to the login page again', async () => {
    await open(page, '/ui');
    await page.locator('#logout-button').click();
    await until('the logout to land on /ui/login', () => pathOf(page.url()) === '/ui/login');
    await page.waitForLoadState('load');
    await expectPresent(page, 'form#login-form');
    if ((await admin.context.cookies(url('/ui'))).some((c) => c.name === 'jobforge_session' && c.value)) {
      fail('the jobforge_session cookie is still set after logging out');
    }
    await expectLoginRedirect(admin.context.request, '/ui');
    await page.goto(url('/ui'));
    if (pathOf(page.url()) !== '/ui/login') fail(`after logging out /ui ended at ${page.url()}`);
  });
}

async function checkScriptProblems() {
  await check('no page broke its CSP or threw an uncaught script error', async () => {
    if (scriptProblems.length) fail(scriptProblems.join('\n  '));
  });
}

// ---------------------------------------------------------------------------------------------

async function main() {
  const missing = ['JOBFORGE_URL', 'JOBFORGE_ADMIN_KEY', 'JOBFORGE_READ_KEY'].filter((k) => !env[k]);
  if (missing.length) {
    console.error(`console.mjs: set ${missing.join(', ')} (see tests/ui/README.md)`);
    process.exit(2);
  }
  await mkdir(SHOTS, { recursive: true });
  let browser;
  try {
    current = `launching ${CHROMIUM}`;
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: ['--no-sandbox', '--disable-dev-shm-usage'],
    });
    note(`${CHROMIUM} ${browser.version()} against ${BASE}; screenshots in ${SHOTS}/`);

    await checkRefusal(browser);
    const admin = await checkLogin(browser);
    await checkLiveCounts(admin);
    await checkJobsList(admin);
    await checkJobPage(admin);
    await checkCancel(admin);
    await checkRetry(admin);
    await checkDelete(admin);
    await checkKind(admin);
    await checkReader(browser, admin);
    await checkPhoneAndDark(browser, admin);
    await checkLogout(admin);
    await checkScriptProblems();
  } catch (err) {
    const reason = err instanceof CheckFailed ? err.message : (err.stack || String(err));
    console.error(`not ok - ${current}\n  ${reason}`);
    if (activePage && !activePage.isClosed()) {
      try {
        console.error(`  page: ${activePage.url()}; screenshot: ${await screenshot(activePage, 'failure.png')}`);
      } catch {
        // The page may be gone with its browser.
      }
    }
    console.log(`ui: ${passed} passed, 1 failed${skipped ? `, ${skipped} skipped` : ''}`);
    await browser?.close().catch(() => {});
    process.exit(1);
  }
  await browser.close();
  console.log(`ui: ${passed} passed, 0 failed${skipped ? `, ${skipped} skipped` : ''}`);
}

await main();
