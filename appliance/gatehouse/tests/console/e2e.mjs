// The admin console end to end in headless Chromium (playwright-core), against a running
// `gatehouse up` on a fresh data directory. Run by tests/console_e2e.rs, which sets:
//
//   GATEHOUSE_URL          the console, https://127.0.0.1:PORT/
//   GATEHOUSE_HTTP_URL     the hub's plain HTTP listener (gates and the event webhook)
//   GATEHOUSE_ENROL_TOKEN  the one-time token `gatehouse admin enrol-token` printed
//   GATEHOUSE_FINGERPRINT  the certificate's SHA-256 as `gatehouse console` printed it
//   GATEHOUSE_SCREENSHOTS  where the screenshots go (target/console-screenshots)
//   GATEHOUSE_CHROMIUM     the browser (/usr/bin/chromium)
//
// It drives the page through the UI contract of .design/issue5.md (routes, data-page,
// data-nav, data-form, data-table, #flash, #popups, #gate-credentials, #peer-created,
// #page-denied, #logout, #whoami) and plays the gate and the NVR itself over the hub's
// HTTP. One line per step; on a failure: failure.png, the step, the error, the page's
// #flash text and the page's script errors, exit status 1.
//
// Steps:
//  1. the server presents the certificate whose fingerprint `gatehouse console` printed
//  2. a wrong enrolment token is refused with the API's error in #flash; the right one
//     enrols the first admin, who lands on the dashboard
//  3. log out, log in again
//  4. add a person; the same name again shows the API's error in #flash, nothing saved
//  5. a gate name with a space shows the API's error in #flash, nothing saved; a good
//     one: its provisioning JSON (with the gate's key) is in #gate-credentials
//  6. a level opening that gate at all times, granted to the person (the levels table's
//     row: select[name=person] and button[data-action=grant], beyond the UI contract)
//  7. add a card, typed in, for the person; the raw id is never shown
//  8. the gate presents the card over HTTP: allowed; the access log page shows the
//     decision with the person's name
//  9. an event source; the NVR posts a critical event with its key; its pop-up appears
//     on the dashboard without a reload; ack removes it; the events page and the event's
//     detail show it acknowledged
// 10. add a VPN peer: #peer-created has the QR code (svg) and the .conf download
// 10b. add a LoRa sensor: #sensor-provisioning shows its TOML with the key, the sensors
//     table lists it, GET /api/v1/sensors does not carry the key
// 11. the alerts page lists the default console rule
// 12. add an operator on the admins page; in a fresh browser context the operator logs
//     in, has no people link, and #/people shows #page-denied with the API's 403 text
// 13. a POST without the CSRF header (the admin's session cookie, no x-csrf-token) is
//     refused with 403 and the person list is unchanged
// 14. the dashboard at phone width (390x844) fits without sideways scrolling
// 15. no request left the box (no CDN) and no page had an uncaught script error

import { chromium } from 'playwright-core';
import tls from 'node:tls';
import fs from 'node:fs';
import path from 'node:path';

const env = (name) => {
  const v = process.env[name];
  if (!v) {
    console.error(`e2e: ${name} is not set (tests/console_e2e.rs sets it)`);
    process.exit(2);
  }
  return v;
};
const BASE = new URL(env('GATEHOUSE_URL'));
const HTTP = new URL(env('GATEHOUSE_HTTP_URL'));
const TOKEN = env('GATEHOUSE_ENROL_TOKEN');
const FINGERPRINT = env('GATEHOUSE_FINGERPRINT');
const SHOTS = env('GATEHOUSE_SCREENSHOTS');
const CHROMIUM = env('GATEHOUSE_CHROMIUM');

const ADMIN = { name: 'ines', password: 'first admin of the yard' };
const OPERATOR = { name: 'olga', password: 'watching the yard gate' };
const PERSON = 'carol';
const GATE = 'yard-gate';
const LEVEL = 'yard-staff';
const CARD_TYPED = '0x04A1B2C3D4E5F6';
const CARD_READ = '04a1b2c3d4e5f6'; // the bytes a reader sends, as the gate link's hex
const SOURCE = 'nvr-yard';
const PEER = 'ines-laptop';

// Every wait on the page is bounded, so a missing element fails the step quickly.
const WAIT_MS = 10_000;

fs.mkdirSync(SHOTS, { recursive: true });

let current = null; // the page the running step works on (for failure.png)
let stepName = '(setup)';
let stepNo = 0;
const pageErrors = [];
const offBox = [];

function assert(cond, message) {
  if (!cond) throw new Error(message);
}

async function step(name, fn) {
  stepNo += 1;
  stepName = `${stepNo}. ${name}`;
  const t0 = Date.now();
  await fn();
  console.log(`ok   ${stepName} (${Date.now() - t0} ms)`);
}

async function shot(page, name) {
  await page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });
}

/** Every request of a page must stay on the box: the console's origin only. */
function watch(page, label) {
  page.on('pageerror', (e) => pageErrors.push(`${label}: ${e.message}`));
  page.on('request', (r) => {
    const u = r.url();
    if (u.startsWith('data:') || u.startsWith('blob:') || u.startsWith('about:')) return;
    if (new URL(u).origin !== BASE.origin) offBox.push(`${label}: ${r.method()} ${u}`);
  });
  page.setDefaultTimeout(WAIT_MS);
}

/** Open live feeds (EventSource responses not yet finished) of a page. */
function trackStreams(page) {
  const open = new Set();
  page.on('response', (r) => {
    if (r.url().includes('/api/v1/events/stream') && r.status() === 200) open.add(r.request());
  });
  const done = (req) => open.delete(req);
  page.on('requestfinished', done);
  page.on('requestfailed', done);
  return open;
}

async function waitPage(page, name) {
  await page.waitForSelector(`main#page[data-page="${name}"]`, { state: 'attached' });
}

async function nav(page, name) {
  await page.click(`a[data-nav="${name}"]`);
  await waitPage(page, name);
}

/** Fills `form[data-form=form]`: text inputs are typed into, selects chosen by value or label. */
async function fillForm(page, form, values) {
  for (const [name, value] of Object.entries(values)) {
    const field = page.locator(`form[data-form="${form}"] [name="${name}"]`).first();
    const tag = await field.evaluate((e) => e.tagName);
    if (tag === 'SELECT') await field.selectOption(value);
    else await field.fill(value);
  }
}

async function submit(page, form) {
  await page.click(`form[data-form="${form}"] button[type="submit"]`);
}

/** The #flash text (empty when there is none). */
async function flashText(page) {
  if (!page) return '';
  try {
    return ((await page.locator('#flash').first().textContent({ timeout: 1000 })) ?? '').trim();
  } catch {
    return '';
  }
}

/** Waits for #flash to show an error containing `text`. */
async function expectFlashError(page, text) {
  await page.waitForFunction(
    (want) => {
      const f = document.querySelector('#flash');
      return f && f.classList.contains('error') && f.textContent.includes(want);
    },
    text,
  ).catch(async () => {
    throw new Error(`#flash should show the error ${JSON.stringify(text)}; it shows ${JSON.stringify(await flashText(page))}`);
  });
}

/**
 * A JSON API call from the page, with its session cookie, as the console's script makes
 * it; with the CSRF header (from GET /api/v1/auth/me) unless `csrf` is false.
 */
async function api(page, method, p, body, { csrf = true } = {}) {
  return page.evaluate(async ({ method, p, body, csrf }) => {
    const headers = {};
    if (body !== undefined) headers['content-type'] = 'application/json';
    if (csrf && method !== 'GET') {
      const me = await (await fetch('/api/v1/auth/me', { credentials: 'same-origin' })).json();
      headers['x-csrf-token'] = me.csrf;
    }
    const r = await fetch(p, {
      method,
      headers,
      credentials: 'same-origin',
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await r.text();
    let json = null;
    try { json = JSON.parse(text); } catch { /* not JSON */ }
    return { status: r.status, json, text };
  }, { method, p, body, csrf });
}

/** The rows of `table[data-table=name]`: [{id, text}]. */
async function rows(page, name) {
  return page.$$eval(`table[data-table="${name}"] tr[data-id]`, (trs) =>
    trs.map((tr) => ({ id: tr.getAttribute('data-id'), text: tr.textContent })));
}

/** Waits for a row of `table[data-table=name]` whose text contains every one of `texts`. */
async function waitRow(page, name, texts) {
  await page.waitForFunction(
    ({ name, texts }) => [...document.querySelectorAll(`table[data-table="${name}"] tr[data-id]`)]
      .some((tr) => texts.every((t) => tr.textContent.includes(t))),
    { name, texts },
  ).catch(async () => {
    throw new Error(`no row with ${JSON.stringify(texts)} in table[data-table="${name}"]; rows: ${JSON.stringify(await rows(page, name).catch(() => []))}`);
  });
}

/** The TLS certificate's SHA-256 fingerprint as the server presents it. */
function serverFingerprint() {
  return new Promise((resolve, reject) => {
    const s = tls.connect({
      host: BASE.hostname,
      port: Number(BASE.port || 443),
      servername: 'localhost',
      rejectUnauthorized: false, // self-signed: compared by fingerprint below
    }, () => {
      const fp = s.getPeerCertificate().fingerprint256;
      s.end();
      resolve(fp);
    });
    s.setTimeout(WAIT_MS, () => { s.destroy(); reject(new Error('TLS handshake timed out')); });
    s.on('error', reject);
  });
}

/** The provisioning JSON shown in #gate-credentials (a pre, textarea or the element's text). */
async function gateCredentials(page) {
  const box = page.locator('#gate-credentials');
  await box.waitFor();
  const texts = [];
  for (const ta of await box.locator('textarea').all()) texts.push(await ta.inputValue());
  for (const pre of await box.locator('pre, code').all()) texts.push(await pre.textContent());
  texts.push(await box.textContent());
  for (const t of texts) {
    const a = t.indexOf('{');
    const b = t.lastIndexOf('}');
    if (a < 0 || b < a) continue;
    try {
      const j = JSON.parse(t.slice(a, b + 1));
      return j.provisioning ?? j;
    } catch { /* try the next */ }
  }
  throw new Error(`#gate-credentials shows no provisioning JSON: ${JSON.stringify(texts.at(-1))}`);
}

/** Prints what failed, with the page's #flash and a screenshot (failure.png). */
async function report(e) {
  const plain = (s) => String(s).replace(/\x1b\[[0-9;]*m/g, '');
  console.log(`FAIL ${stepName}`);
  console.log(`     ${plain(e?.stack ?? e)}`);
  if (current && !current.isClosed()) {
    try {
      console.log(`     page: ${current.url()}`);
      console.log(`     #flash: ${JSON.stringify(await flashText(current))}`);
      await current.screenshot({ path: path.join(SHOTS, 'failure.png'), fullPage: true });
      console.log(`     screenshot: ${path.join(SHOTS, 'failure.png')}`);
    } catch (e2) {
      console.log(`     (no failure screenshot: ${plain(e2.message)})`);
    }
  }
  if (pageErrors.length) console.log(`     script errors: ${pageErrors.join('; ')}`);
}

/** Runs every step; true when all passed. */
async function main() {
  try {
    await step('the server presents the certificate `gatehouse console` printed', async () => {
      const fp = await serverFingerprint();
      assert(fp && fp.toUpperCase() === FINGERPRINT.toUpperCase(),
        `certificate SHA-256 ${fp}, but \`gatehouse console\` printed ${FINGERPRINT}`);
    });
  } catch (e) {
    await report(e);
    return false;
  }
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
  try {
    await run(browser);
    return true;
  } catch (e) {
    await report(e);
    return false;
  } finally {
    await browser.close();
  }
}

async function run(browser) {
  // The certificate is self-signed; the fingerprint check above is what pins it, so the
  // browser may accept it without a CA.
  const contextOptions = { ignoreHTTPSErrors: true, viewport: { width: 1280, height: 800 } };
  const admin = await browser.newContext(contextOptions);
  const page = await admin.newPage();
  watch(page, 'admin');
  const streams = trackStreams(page);
  current = page;

  await step('enrol the first admin (a wrong token is refused first)', async () => {
    await page.goto(new URL('#/enrol', BASE).href);
    await waitPage(page, 'enrol');
    await shot(page, 'enrol');
    const wrong = 'AAAA-BBBB-CCCC-DDDD-EEEE-FFFF-GGGG';
    await fillForm(page, 'enrol', { token: wrong, name: ADMIN.name, password: ADMIN.password });
    await submit(page, 'enrol');
    await page.waitForSelector('#flash.error');
    const flash = await flashText(page);
    assert(/token/i.test(flash), `a wrong token should be refused with the API's error; #flash: ${JSON.stringify(flash)}`);
    await fillForm(page, 'enrol', { token: TOKEN, name: ADMIN.name, password: ADMIN.password });
    await submit(page, 'enrol');
    await waitPage(page, 'dashboard');
    await page.waitForFunction((n) => document.querySelector('#whoami')?.textContent.includes(n), ADMIN.name);
    const enrol = await api(page, 'GET', '/api/v1/auth/enrol');
    assert(enrol.status === 200 && enrol.json?.needed === false, `GET /api/v1/auth/enrol after enrolment: ${enrol.text}`);
  });

  await step('log out and log in', async () => {
    await page.click('button#logout');
    await waitPage(page, 'login');
    const me = await api(page, 'GET', '/api/v1/auth/me');
    assert(me.status === 401, `after logout GET /api/v1/auth/me answered ${me.status}: ${me.text}`);
    await shot(page, 'login');
    await fillForm(page, 'login', { name: ADMIN.name, password: ADMIN.password });
    await submit(page, 'login');
    await waitPage(page, 'dashboard');
    await page.waitForFunction((n) => document.querySelector('#whoami')?.textContent.includes(n), ADMIN.name);
  });

  await step('add a person; a taken name shows the API error and saves nothing', async () => {
    await nav(page, 'people');
    await fillForm(page, 'person-add', { name: PERSON });
    await submit(page, 'person-add');
    await waitRow(page, 'people', [PERSON]);
    // What the API answers to this very input (refused: nothing is written).
    const want = await api(page, 'POST', '/api/v1/people', { name: PERSON });
    assert(want.status === 409 && want.json?.error, `POST /api/v1/people with a taken name answered ${want.status}: ${want.text}`);
    await fillForm(page, 'person-add', { name: PERSON });
    await submit(page, 'person-add');
    await expectFlashError(page, want.json.error);
    const people = await api(page, 'GET', '/api/v1/people');
    const names = people.json.map((p) => p.name);
    assert(JSON.stringify(names) === JSON.stringify([PERSON]), `people after the refused inputs: ${JSON.stringify(names)}`);
    assert((await rows(page, 'people')).length === 1, 'the people table should have one row');
    await shot(page, 'people');
  });

  let creds;
  await step('a gate name with a space shows the API error; a good one, its credentials', async () => {
    await nav(page, 'gates');
    const bad = 'yard gate';
    const want = await api(page, 'POST', '/api/v1/gates', { name: bad });
    assert(want.status === 400 && want.json?.error, `POST /api/v1/gates ${JSON.stringify(bad)} answered ${want.status}: ${want.text}`);
    await fillForm(page, 'gate-add', { name: bad });
    await submit(page, 'gate-add');
    await expectFlashError(page, want.json.error);
    const none = await api(page, 'GET', '/api/v1/gates');
    assert(none.status === 200 && none.json.length === 0, `gates after the refused name: ${none.text}`);
    // The zone: a new one typed in, or (a select of the zones) the one there is.
    const zone = page.locator('form[data-form="gate-add"] [name="zone"]').first();
    if (await zone.evaluate((e) => e.tagName) === 'SELECT') {
      const first = await zone.locator('option:not([value=""])').first().getAttribute('value');
      await zone.selectOption(first);
    } else {
      await zone.fill('yard');
    }
    await fillForm(page, 'gate-add', { name: GATE, direction: 'in' });
    await submit(page, 'gate-add');
    creds = await gateCredentials(page);
    assert(creds.name === GATE && Number.isInteger(creds.gate_id) && /^[0-9a-f]{64}$/.test(creds.secret ?? ''),
      `#gate-credentials: ${JSON.stringify({ ...creds, secret: creds.secret && '<hidden>' })}`);
    const link = page.locator('#gate-credentials a[download], #gate-credentials a[href]');
    assert(await link.count() > 0, '#gate-credentials has no download link');
    await waitRow(page, 'gates', [GATE]);
    await shot(page, 'gates');
  });

  await step('a level opening the gate at all times, granted to the person', async () => {
    await nav(page, 'levels');
    await fillForm(page, 'level-add', { name: LEVEL, schedule: 'always' });
    await page.check(`form[data-form="level-add"] input[name="gates"][value="${creds.gate_id}"]`);
    await submit(page, 'level-add');
    await waitRow(page, 'levels', [LEVEL, GATE]);
    // The grant: the level's row has a person select and a grant button.
    const row = page.locator('table[data-table="levels"] tr[data-id]', { hasText: LEVEL });
    await row.locator('select[name="person"]').selectOption({ label: PERSON });
    await row.locator('button[data-action="grant"]').click();
    await page.waitForFunction(
      (n) => document.querySelector('#flash.ok')?.textContent.includes(n), PERSON,
    );
    const people = await api(page, 'GET', '/api/v1/people');
    const levels = await api(page, 'GET', '/api/v1/levels');
    const level = levels.json.find((l) => l.name === LEVEL);
    assert(level && people.json.find((p) => p.name === PERSON)?.levels.includes(level.id),
      `${PERSON} was not granted ${LEVEL}: ${people.text}`);
    await shot(page, 'levels');
  });

  await step('add a card (typed in) for the person', async () => {
    await nav(page, 'cards');
    await fillForm(page, 'card-add', { person: PERSON, card_id: CARD_TYPED, label: 'blue fob' });
    await submit(page, 'card-add');
    await waitRow(page, 'cards', [PERSON, 'blue fob']);
    const text = await page.locator('main#page').textContent();
    for (const raw of [CARD_TYPED, CARD_READ, CARD_READ.toUpperCase()]) {
      assert(!text.includes(raw), `the cards page shows the raw card id ${raw}`);
    }
    await shot(page, 'cards');
  });

  await step('the gate presents the card: allowed, in the access log with the name', async () => {
    let url = creds.http_url;
    if (!url || url.includes('<')) url = new URL('/api/v1/access/check', HTTP).href;
    const r = await fetch(url, {
      method: 'POST',
      headers: { authorization: `Bearer ${creds.secret}`, 'content-type': 'application/json' },
      body: JSON.stringify({ gate_id: creds.gate_id, acc_id: CARD_READ }),
    });
    const body = await r.json();
    assert(r.status === 200 && body.allow === true, `access check at ${url}: ${r.status} ${JSON.stringify(body)}`);
    await nav(page, 'log');
    await waitRow(page, 'log', [PERSON, GATE]);
    const logged = (await rows(page, 'log')).filter((r) => r.text.includes(PERSON));
    assert(logged.length === 1 && /granted|allowed/i.test(logged[0].text) && !/denied/i.test(logged[0].text),
      `the log should show one allowed decision for ${PERSON}: ${JSON.stringify(logged)}`);
    await shot(page, 'log');
  });

  let eventId;
  await step('an event posted by an NVR pops up live; ack removes it', async () => {
    const src = await api(page, 'POST', '/api/v1/sources', { name: SOURCE, kind: 'nvr' });
    assert(src.status === 201 && src.json?.api_key, `POST /api/v1/sources: ${src.status} ${src.text}`);
    await nav(page, 'dashboard');
    assert(!(await page.isChecked('input#sound')), 'the sound toggle should be off by default');
    // A reload or a page load would lose this; hash routes keep it.
    await page.evaluate(() => { window.__marker = 'no reload'; });
    // The feed starts at what is committed when it opens: post once it is open.
    const t0 = Date.now();
    while (streams.size === 0) {
      assert(Date.now() - t0 < WAIT_MS, 'the dashboard opened no live feed (GET /api/v1/events/stream)');
      await page.waitForTimeout(50);
    }
    const hook = src.json.webhook?.url ?? new URL('/api/v1/events', HTTP).href;
    const r = await fetch(hook, {
      method: 'POST',
      headers: { authorization: `Bearer ${src.json.api_key}`, 'content-type': 'application/json' },
      body: JSON.stringify({
        kind: 'intrusion',
        severity: 'critical',
        camera: 'yard-east',
        zone: 'fence',
        message: 'fence cut near the yard gate',
        snapshot_url: 'http://192.0.2.10/snapshot.jpg',
        id: 'e2e-1',
      }),
    });
    const posted = await r.json();
    assert(r.status === 201 && posted.id, `POST ${hook}: ${r.status} ${JSON.stringify(posted)}`);
    eventId = posted.id;
    const popup = page.locator(`#popups div.popup[data-event-id="${eventId}"]`);
    await popup.waitFor();
    const text = await popup.textContent();
    for (const want of ['intrusion', 'critical', SOURCE, 'yard-east', 'fence cut near the yard gate']) {
      assert(text.includes(want), `the pop-up should show ${JSON.stringify(want)}: ${JSON.stringify(text)}`);
    }
    assert(await popup.locator('a[href="http://192.0.2.10/snapshot.jpg"]').count() === 1, 'the pop-up has no snapshot link');
    const marker = await page.evaluate(() => window.__marker);
    assert(marker === 'no reload', 'the page was reloaded to show the pop-up');
    await shot(page, 'dashboard');
    await popup.locator('button[data-action="ack"]').click();
    await popup.waitFor({ state: 'detached' });
    const ev = await api(page, 'GET', `/api/v1/events/${eventId}`);
    const acked = ev.json?.ack ?? ev.json?.event?.ack;
    assert(ev.status === 200 && acked?.by, `the event is not acknowledged: ${ev.text}`);
  });

  await step('the events page and the event detail show it acknowledged', async () => {
    await nav(page, 'events');
    await waitRow(page, 'events', ['intrusion']);
    const row = page.locator(`table[data-table="events"] tr[data-id="${eventId}"]`);
    await row.waitFor();
    const text = await row.textContent();
    assert((/acked|acknowledged/i.test(text) || text.includes(ADMIN.name))
      && await row.locator('button[data-action="ack"]').count() === 0,
      `the events row does not show the acknowledgement: ${JSON.stringify(text)}`);
    await shot(page, 'events');
    // The list's table is marked: the detail is rendered once it is gone.
    await page.evaluate((id) => {
      document.querySelector('table[data-table="events"]').dataset.e2eStale = '1';
      window.location.hash = `#/events/${id}`;
    }, eventId);
    await page.waitForFunction(
      () => !document.querySelector('table[data-e2e-stale]')
        && /fence cut near the yard gate/.test(document.querySelector('main#page')?.textContent ?? ''),
    );
    const detail = await page.locator('main#page').textContent();
    assert(/ack/i.test(detail) && detail.includes(ADMIN.name),
      `the event detail does not show who acknowledged it: ${JSON.stringify(detail.slice(0, 400))}`);
    assert(await page.evaluate(() => window.__marker) === 'no reload', 'the page was reloaded');
    await shot(page, 'event-detail');
  });

  await step('add a VPN peer: QR code and config download', async () => {
    await nav(page, 'vpn');
    await fillForm(page, 'peer-add', { name: PEER, role: 'admin' });
    await submit(page, 'peer-add');
    await page.locator('#peer-created svg').first().waitFor();
    const a = page.locator('#peer-created a[download]').first();
    await a.waitFor();
    const file = await a.getAttribute('download');
    const href = await a.getAttribute('href');
    assert(file === `${PEER}.conf` && href, `download link: download=${file} href=${href}`);
    await waitRow(page, 'peers', [PEER]);
    // The live tunnel (userspace mode) answers for its peers.
    const status = await api(page, 'GET', '/api/v1/status');
    assert(status.status === 200 && status.json.peers?.available === true
      && status.json.peers.items.some((p) => p.name === PEER),
      `GET /api/v1/status: the tunnel's peers are not available: ${status.text}`);
    await shot(page, 'vpn');
  });

  await step('add a LoRa sensor: its provisioning (with the key) is shown once', async () => {
    await nav(page, 'sensors');
    await fillForm(page, 'sensor-add', { name: 'porch-door', kind: 'door', heartbeat: '2m' });
    await submit(page, 'sensor-add');
    await page.locator('#sensor-provisioning pre').first().waitFor();
    const toml = (await page.locator('#sensor-provisioning pre').first().textContent()) ?? '';
    const key = /key = "([0-9a-f]{32})"/.exec(toml)?.[1];
    assert(toml.startsWith('[[sensor]]') && key && /heartbeat_s = 120/.test(toml),
      `#sensor-provisioning: ${JSON.stringify(toml)}`);
    await waitRow(page, 'sensors', ['porch-door', 'door']);
    const list = await api(page, 'GET', '/api/v1/sensors');
    assert(list.status === 200 && !list.text.includes(key), `the key is listed: ${list.text}`);
    await shot(page, 'sensors');
  });

  await step('the alerts page lists the default console rule', async () => {
    await nav(page, 'alerts');
    await waitRow(page, 'rules', ['console']);
    await shot(page, 'alerts');
  });

  await step('add an operator; as the operator, no people pages', async () => {
    await nav(page, 'admins');
    await fillForm(page, 'admin-add', { name: OPERATOR.name, role: 'operator', password: OPERATOR.password });
    await submit(page, 'admin-add');
    await waitRow(page, 'admins', [OPERATOR.name, 'operator']);
    await shot(page, 'admins');

    const ctx = await browser.newContext(contextOptions);
    const op = await ctx.newPage();
    watch(op, 'operator');
    current = op;
    await op.goto(new URL('#/login', BASE).href);
    await waitPage(op, 'login');
    await fillForm(op, 'login', { name: OPERATOR.name, password: OPERATOR.password });
    await submit(op, 'login');
    await waitPage(op, 'dashboard');
    await op.waitForFunction((n) => document.querySelector('#whoami')?.textContent.includes(n), OPERATOR.name);
    assert(await op.locator('a[data-nav="dashboard"]').count() > 0, 'the operator sees no navigation');
    assert(await op.locator('a[data-nav="people"]').count() === 0, 'the operator is shown the people link');
    const refused = await api(op, 'GET', '/api/v1/people');
    assert(refused.status === 403 && refused.json?.error, `GET /api/v1/people as operator: ${refused.status} ${refused.text}`);
    await op.evaluate(() => { window.location.hash = '#/people'; });
    const denied = op.locator('#page-denied');
    await denied.waitFor();
    const text = await denied.textContent();
    assert(text.includes(refused.json.error), `#page-denied should show ${JSON.stringify(refused.json.error)}: ${JSON.stringify(text)}`);
    assert(await op.locator('table[data-table="people"]').count() === 0, 'the operator sees the people table');
    await ctx.close();
    current = page;
  });

  await step('a POST without the CSRF header is refused, nothing saved', async () => {
    const r = await api(page, 'POST', '/api/v1/people', { name: 'mallory' }, { csrf: false });
    assert(r.status === 403, `POST /api/v1/people without x-csrf-token answered ${r.status}: ${r.text}`);
    const people = await api(page, 'GET', '/api/v1/people');
    const names = people.json.map((p) => p.name);
    assert(JSON.stringify(names) === JSON.stringify([PERSON]), `people after the refused POST: ${JSON.stringify(names)}`);
  });

  await step('the dashboard at phone width', async () => {
    const phone = await admin.newPage();
    await phone.setViewportSize({ width: 390, height: 844 });
    watch(phone, 'phone');
    current = phone;
    await phone.goto(new URL('#/dashboard', BASE).href);
    await waitPage(phone, 'dashboard');
    const [scroll, inner] = await phone.evaluate(() => [document.documentElement.scrollWidth, window.innerWidth]);
    assert(scroll <= inner, `the dashboard is ${scroll} px wide at a ${inner} px viewport (sideways scrolling)`);
    await shot(phone, 'phone-dashboard');
    await phone.close();
    current = page;
  });

  await step('no request left the box, no script error', async () => {
    assert(offBox.length === 0, `requests to other origins: ${offBox.join('; ')}`);
    assert(pageErrors.length === 0, `uncaught script errors: ${pageErrors.join('; ')}`);
  });
  await admin.close();
}

if (await main()) {
  console.log(`all ${stepNo} steps passed; screenshots in ${SHOTS}`);
  process.exit(0);
}
process.exit(1);
