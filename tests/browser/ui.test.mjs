// Browser tests of the GDTS web UI: playwright-core driving the system's
// Chromium against a real manager, workers, etcd and Mongo-protocol server,
// which tests/tests/ui_browser.rs starts and names in the environment:
//   GDTS_URL          the manager (serving webroot/)
//   GDTS_WORKERS      comma-separated ids of the running workers
//   GDTS_SCREENSHOTS  where the page screenshots go (docs/screenshots/)
//   GDTS_ARTIFACTS    where a failing step's screenshot goes
//   GDTS_CHROMIUM     the browser (default /usr/bin/chromium)
//   GDTS_ADMIN_TOKEN  the manager's bootstrap admin token (authentication is on)
// Every step waits on a condition of the page, never on a fixed delay.

import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const base = process.env.GDTS_URL;
const workers = (process.env.GDTS_WORKERS || '').split(',').filter(Boolean);
const shots = process.env.GDTS_SCREENSHOTS;
const artifacts = process.env.GDTS_ARTIFACTS || shots;
const adminToken = process.env.GDTS_ADMIN_TOKEN;
assert.ok(adminToken, 'GDTS_ADMIN_TOKEN is not set');
assert.ok(base, 'GDTS_URL is not set');
assert.ok(shots, 'GDTS_SCREENSHOTS is not set');
mkdirSync(shots, { recursive: true });

const TIMEOUT = 20_000;
const DESKTOP = { width: 1280, height: 860 };
const PHONE = { width: 390, height: 844 };

const browser = await chromium.launch({
  executablePath: process.env.GDTS_CHROMIUM || '/usr/bin/chromium',
  headless: true,
  // Playwright starts the browser with a fresh, empty profile of its own.
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});

/** Console errors and uncaught exceptions of every page. */
const problems = [];
/** The browser's own log line for an HTTP error response the UI handles. */
const handledHttpErrors = [];

async function newPage(viewport, label) {
  const context = await browser.newContext({ viewport, deviceScaleFactor: 1, reducedMotion: 'reduce' });
  const page = await context.newPage();
  page.setDefaultTimeout(TIMEOUT);
  page.on('pageerror', (e) => problems.push(`${label}: uncaught ${e.message}`));
  page.on('console', (msg) => {
    if (msg.type() !== 'error') return;
    const text = msg.text();
    // Chromium logs every 4xx response as a console error. The bad-cron and
    // taken-name checks provoke 422s and a 412 on purpose (the form shows
    // them); those and only those are allowed.
    const url = msg.location().url || '';
    // The wrong-token check provokes a 401 from the sign-in endpoint.
    if ((/status of (422|412)/.test(text) && /\/api\/v1\/(jobs\/|cron\/preview)/.test(url))
      || (/status of 401/.test(text) && /\/api\/v1\/session$/.test(url))
      // The revoked viewer's next request is refused; the page then signs out.
      || (label === 'viewer' && /status of 401/.test(text))) {
      handledHttpErrors.push(text);
      return;
    }
    problems.push(`${label}: console error: ${text} (${msg.location().url || ''})`);
  });
  return page;
}

async function api(method, path, body, token = adminToken) {
  const res = await fetch(`${base}/api/v1${path}`, {
    method,
    headers: {
      Authorization: `Bearer ${token}`,
      ...(body ? { 'Content-Type': 'application/json' } : {}),
    },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

/** Follows a link of the main navigation bar. */
async function nav(page, name) {
  await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name, exact: true }).click();
}

const steps = [];
function step(name, fn) { steps.push({ name, fn }); }

/** Fails unless the page still is the document it was (no reload happened). */
async function markDocument(page) {
  await page.evaluate(() => { window.__gdtsNoReload = true; });
}
async function assertNoReload(page) {
  assert.equal(await page.evaluate(() => window.__gdtsNoReload === true), true, 'the page reloaded');
}

async function noHorizontalScroll(page) {
  const [scroll, width] = await page.evaluate(() => [document.documentElement.scrollWidth, window.innerWidth]);
  assert.ok(scroll <= width, `the page is ${scroll}px wide in a ${width}px viewport`);
}

/** Signs `page` in through the sign-in form, with `token`. */
async function signIn(page, token = adminToken) {
  await page.goto(base);
  await page.getByRole('heading', { name: 'Sign in' }).waitFor();
  await page.getByLabel('Token', { exact: true }).fill(token);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.locator('[data-identity]').waitFor();
}

const desktop = await newPage(DESKTOP, 'desktop');
let phone;

step('signed out, the page asks for a token and refuses a wrong one', async () => {
  await desktop.goto(base);
  await desktop.getByRole('heading', { name: 'Sign in' }).waitFor();
  assert.equal(await desktop.locator('#live').isVisible(), false, 'the event stream is not for the signed out');
  await desktop.getByLabel('Token', { exact: true }).fill('gdts_0123456789abcdef_wrong');
  await desktop.getByRole('button', { name: 'Sign in' }).click();
  await desktop.locator('#token.is-invalid').waitFor();
  assert.match(await desktop.locator('#token-error').textContent(), /not valid/);
  await desktop.screenshot({ path: join(shots, 'sign-in-desktop.png') });
});

step('the page loads, connects to the event stream and shows an empty jobs list', async () => {
  await signIn(desktop);
  assert.match(await desktop.locator('[data-identity]').textContent(), /bootstrap admin\s*·\s*admin/);
  await desktop.getByRole('heading', { name: 'Jobs', exact: true }).waitFor();
  await desktop.locator('#live[data-state="open"]').waitFor();
  await desktop.getByText('No jobs yet.').waitFor();
});

step('keyboard: the first Tab reaches the skip link, which moves focus to the content', async () => {
  await desktop.keyboard.press('Tab');
  assert.equal(await desktop.evaluate(() => document.activeElement.textContent.trim()), 'Skip to content');
  await desktop.keyboard.press('Enter');
  assert.equal(await desktop.evaluate(() => document.activeElement.id), 'main');
});

step('the workers page lists the running workers', async () => {
  await nav(desktop, 'Workers');
  for (const id of workers) await desktop.locator(`tr[data-worker="${id}"]`).waitFor();
  assert.equal(await desktop.locator('tr[data-worker]').count(), workers.length);
  await desktop.screenshot({ path: join(shots, 'workers-desktop.png') });
});

step('a bad cron is refused with the message on the cron field', async () => {
  await nav(desktop, 'Jobs');
  await desktop.getByRole('link', { name: 'New job' }).click();
  await desktop.getByLabel('Name', { exact: true }).fill('ui-hello');
  await desktop.getByLabel('Command', { exact: true }).fill('echo hello-from-the-ui');
  await desktop.getByLabel('Schedule (cron)', { exact: true }).fill('61 * * * * * *');
  // The live preview flags it while typing...
  await desktop.locator('#f-cronExpr.is-invalid').waitFor();
  await desktop.getByText('No preview: the schedule is not valid yet.').waitFor();
  // ...and saving is refused by the API with a 422 naming cronExpr.
  await desktop.getByRole('button', { name: 'Create job' }).click();
  await desktop.locator('#f-cronExpr.is-invalid').waitFor();
  const message = (await desktop.locator('#e-cronExpr').textContent()).trim();
  assert.ok(message.length > 0, 'no message under the cron field');
  assert.ok(await desktop.locator('#e-cronExpr').isVisible(), 'the cron error is not visible');
  assert.equal(await desktop.evaluate(() => document.activeElement.id), 'f-cronExpr', 'focus is not on the bad field');
  assert.equal((await api('GET', '/jobs/ui-hello')).status, 404, 'the invalid job was saved');
  await desktop.screenshot({ path: join(shots, 'form-error-desktop.png'), fullPage: true });
});

step('creating a job through the form shows the cron preview, then the job', async () => {
  await desktop.getByLabel('Schedule (cron)', { exact: true }).fill('*/2 * * * * * *');
  await desktop.locator('[data-preview-times] li').nth(4).waitFor();
  await desktop.locator('#cron-preview').getByText('Every 2 seconds').waitFor();
  assert.equal(await desktop.locator('#f-cronExpr.is-invalid').count(), 0);
  await desktop.screenshot({ path: join(shots, 'form-desktop.png'), fullPage: true });
  await desktop.getByRole('button', { name: 'Create job' }).click();
  await desktop.getByRole('heading', { name: 'ui-hello', exact: true }).waitFor();
  const saved = await api('GET', '/jobs/ui-hello');
  assert.equal(saved.status, 200);
  assert.equal(saved.body.command, 'echo hello-from-the-ui');
  assert.equal(saved.body.cronExpr, '*/2 * * * * * *');
});

step('the jobs list shows the job with its schedule, next fire times and, live, its last run', async () => {
  // A few more jobs, saved through the API, for a realistic list.
  assert.equal((await api('PUT', '/jobs/nightly-report', {
    command: 'generate-report --since yesterday', cronExpr: '0 30 2 * * * *', timezone: 'Europe/Berlin',
    overlap: 'forbid', timeoutSeconds: 3600, retries: 2,
  })).status, 201);
  assert.equal((await api('PUT', '/jobs/backup-db', {
    image: 'busybox:1.36', command: 'echo backup', cronExpr: '0 0 */6 * * * *', cpus: 0.5, memoryMb: 128, paused: true,
  })).status, 201);
  await nav(desktop, 'Jobs');
  const row = desktop.locator('tr[data-job-row="ui-hello"]');
  await row.waitFor();
  await markDocument(desktop);
  assert.equal(await row.locator('[data-next-fire] li').count(), 3, 'three next fire times');
  assert.equal((await row.locator('[data-cron-description]').textContent()).trim(), 'Every 2 seconds');
  await desktop.locator('tr[data-job-row="backup-db"] [data-paused]').waitFor();
  await desktop.locator('tr[data-job-row="nightly-report"]').getByText('Europe/Berlin').waitFor();
  // The row's last run fills in from the event stream, without a reload.
  await row.locator('[data-last-run] [data-status="succeeded"]').waitFor();
  await assertNoReload(desktop);
  await desktop.screenshot({ path: join(shots, 'jobs-desktop.png') });
});

step('the job page shows runs appearing live, and a run\'s output', async () => {
  await desktop.getByRole('link', { name: 'ui-hello', exact: true }).click();
  await desktop.locator('tr[data-run]').first().waitFor();
  await markDocument(desktop);
  const before = await desktop.locator('tr[data-run]').count();
  await desktop.waitForFunction((n) => document.querySelectorAll('tr[data-run]').length > n, before, { timeout: TIMEOUT });
  await assertNoReload(desktop);
  await desktop.screenshot({ path: join(shots, 'job-desktop.png') });
  await desktop.locator('tr[data-run]').first().getByRole('button', { name: /^Output/ }).click();
  const output = desktop.locator('#output-modal [data-run-output]');
  await output.waitFor();
  assert.match(await output.textContent(), /hello-from-the-ui/);
  await desktop.screenshot({ path: join(shots, 'output-desktop.png') });
  await desktop.keyboard.press('Escape');
  await desktop.locator('#output-modal').waitFor({ state: 'hidden' });
});

step('the job page charts its recent runs; the overview shows the fleet', async () => {
  // Still on ui-hello's page: its chart and success rate.
  await desktop.locator('canvas[data-runs-chart]').waitFor();
  await desktop.waitForFunction(() => /success rate 100 %/.test(document.querySelector('[data-success-rate]')?.textContent || ''), null, { timeout: TIMEOUT });
  assert.ok(await desktop.evaluate(() => !!window.Chart), 'Chart.js did not load');
  await nav(desktop, 'Overview');
  await desktop.locator('[data-stat="runs-per-second"]').waitFor();
  assert.ok(Number(await desktop.locator('[data-stat="runs-per-second"]').textContent()) > 0, 'no runs counted');
  assert.equal((await desktop.locator('[data-stat="workers"]').textContent()).trim(), `${workers.length} of ${workers.length}`);
  await desktop.locator('#runs-chart').waitFor();
  await desktop.locator('#lag-chart').waitFor();
  await desktop.screenshot({ path: join(shots, 'overview-desktop.png') });
  await nav(desktop, 'Jobs');
});

step('pause and resume from the list', async () => {
  await nav(desktop, 'Jobs');
  const row = desktop.locator('tr[data-job-row="ui-hello"]');
  await row.getByRole('button', { name: 'Pause ui-hello' }).click();
  await row.locator('[data-paused]').waitFor();
  assert.equal((await api('GET', '/jobs/ui-hello')).body.paused, true);
  await row.getByRole('button', { name: 'Resume ui-hello' }).click();
  await desktop.locator('tr[data-job-row="ui-hello"] [data-next-fire]').waitFor();
  assert.equal((await api('GET', '/jobs/ui-hello')).body.paused ?? false, false);
});

step('run now, see it running live, kill it, see the killed run', async () => {
  assert.equal((await api('PUT', '/jobs/ui-sleeper', {
    command: 'echo sleeping; sleep 120', cronExpr: '0 0 0 1 1 * 2099', paused: true,
  })).status, 201);
  await desktop.goto(`${base}/#/jobs/ui-sleeper`);
  await desktop.getByRole('heading', { name: 'ui-sleeper', exact: true }).waitFor();
  await desktop.locator('[data-no-runs]').waitFor();
  await markDocument(desktop);
  await desktop.getByRole('button', { name: 'Run ui-sleeper now' }).click();
  await desktop.locator('[data-job-state] [data-running]').waitFor();
  const kill = desktop.getByRole('button', { name: 'Kill running runs of ui-sleeper' });
  assert.equal(await kill.isEnabled(), true);
  await kill.click();
  await desktop.locator('[data-job-state] [data-running]').waitFor({ state: 'detached' });
  await desktop.locator('tr[data-run] [data-status="killed"]').waitFor();
  await assertNoReload(desktop);
});

step('deleting a job asks for confirmation; Cancel keeps it, Delete removes it', async () => {
  await nav(desktop, 'Jobs');
  const row = desktop.locator('tr[data-job-row="ui-sleeper"]');
  await row.getByRole('button', { name: 'Delete ui-sleeper' }).click();
  const modal = desktop.locator('#confirm-modal');
  await modal.getByText('stops being scheduled').waitFor();
  await modal.getByRole('button', { name: 'Cancel' }).click();
  await modal.waitFor({ state: 'hidden' });
  assert.equal((await api('GET', '/jobs/ui-sleeper')).status, 200, 'cancel deleted the job');
  // Keyboard this time: Enter on the focused Delete button, then on the confirm button.
  await row.getByRole('button', { name: 'Delete ui-sleeper' }).focus();
  await desktop.keyboard.press('Enter');
  await modal.getByText('stops being scheduled').waitFor();
  await desktop.waitForFunction(() => document.activeElement && document.activeElement.id === 'confirm-ok');
  await desktop.keyboard.press('Enter');
  await row.waitFor({ state: 'detached' });
  assert.equal((await api('GET', '/jobs/ui-sleeper')).status, 404);
});

step('a job deleted elsewhere disappears from the open list (event stream)', async () => {
  await desktop.locator('tr[data-job-row="nightly-report"]').waitFor();
  await markDocument(desktop);
  assert.equal((await api('DELETE', '/jobs/nightly-report')).status, 204);
  await desktop.locator('tr[data-job-row="nightly-report"]').waitFor({ state: 'detached' });
  await assertNoReload(desktop);
  assert.equal((await api('PUT', '/jobs/nightly-report', {
    command: 'generate-report --since yesterday', cronExpr: '0 30 2 * * * *', timezone: 'Europe/Berlin',
    overlap: 'forbid', timeoutSeconds: 3600, retries: 2,
  })).status, 201);
  await desktop.locator('tr[data-job-row="nightly-report"]').waitFor();
});

step('a job deleted while its page is open says so', async () => {
  assert.equal((await api('PUT', '/jobs/ui-gone', { command: 'true', cronExpr: '@yearly' })).status, 201);
  await desktop.goto(`${base}/#/jobs/ui-gone`);
  await desktop.getByRole('heading', { name: 'ui-gone', exact: true }).waitFor();
  await markDocument(desktop);
  assert.equal((await api('DELETE', '/jobs/ui-gone')).status, 204);
  await desktop.getByText('There is no job named ui-gone').waitFor();
  await assertNoReload(desktop);
});

step('a malformed address (a broken %-escape) says there is no such job, with no exception', async () => {
  await desktop.goto(`${base}/#/jobs/%E0%A4%A`);
  await desktop.getByText('There is no job named %E0%A4%A').waitFor();
});

step('the form refuses a new job with a taken name, on the name field', async () => {
  await desktop.goto(`${base}/#/jobs/new`);
  await desktop.getByLabel('Name', { exact: true }).fill('nightly-report');
  await desktop.getByLabel('Command', { exact: true }).fill('echo would-replace');
  await desktop.getByLabel('Schedule (cron)', { exact: true }).fill('0 0 * * * * *');
  await desktop.getByRole('button', { name: 'Create job' }).click();
  await desktop.locator('#f-name.is-invalid').waitFor();
  assert.match(await desktop.locator('#e-name').textContent(), /already exists/);
  assert.equal((await api('GET', '/jobs/nightly-report')).body.command, 'generate-report --since yesterday');
});

step('an edit never overwrites a change made after the form was filled', async () => {
  await desktop.goto(`${base}/#/jobs/nightly-report/edit`);
  await desktop.waitForFunction(() => document.getElementById('f-cronExpr')?.value === '0 30 2 * * * *');
  // Someone else changes the job meanwhile.
  assert.equal((await api('PUT', '/jobs/nightly-report', {
    command: 'generate-report --since yesterday', cronExpr: '0 30 2 * * * *', timezone: 'Europe/Berlin',
    overlap: 'forbid', timeoutSeconds: 1800, retries: 2,
  })).status, 200);
  await desktop.getByLabel('Retries on failure', { exact: true }).fill('5');
  await desktop.getByRole('button', { name: 'Save changes' }).click();
  await desktop.locator('#form-alert').getByText('was changed (or deleted) by someone else').waitFor();
  const j = (await api('GET', '/jobs/nightly-report')).body;
  assert.equal(j.retries, 2, 'the stale edit was saved');
  assert.equal(j.timeoutSeconds, 1800);
});

step('editing a job keeps every field it does not change', async () => {
  // The current version, loaded from the warning's link.
  await desktop.locator('#form-alert').getByRole('link', { name: 'Load the current version' }).click();
  await desktop.waitForFunction(() => document.getElementById('f-timeoutSeconds')?.value === '1800');
  assert.equal(await desktop.getByLabel('Time zone', { exact: true }).inputValue(), 'Europe/Berlin');
  assert.equal(await desktop.locator('#f-overlap').inputValue(), 'forbid');
  await desktop.getByLabel('Retries on failure', { exact: true }).fill('3');
  await desktop.getByRole('button', { name: 'Save changes' }).click();
  await desktop.getByRole('heading', { name: 'nightly-report', exact: true }).waitFor();
  const j = (await api('GET', '/jobs/nightly-report')).body;
  assert.equal(j.retries, 3);
  assert.equal(j.timeoutSeconds, 1800);
  assert.equal(j.overlap, 'forbid');
  assert.equal(j.timezone, 'Europe/Berlin');
});

step('a job whose selector no worker matches is flagged; editing the selector fixes it', async () => {
  const put = await api('PUT', '/jobs/gpu-only', { command: 'echo gpu', cronExpr: '0 0 * * * * *', selector: { gpu: 'h100' } });
  assert.equal(put.status, 201, JSON.stringify(put.body));
  assert.equal(put.body.unmatched, true);
  await nav(desktop, 'Jobs');
  await desktop.locator('tr[data-job-row="gpu-only"] [data-unmatched]').waitFor();
  await desktop.locator('tr[data-job-row="gpu-only"] [data-selector]').getByText('gpu=h100').waitFor();
  await desktop.locator('tr[data-job-row="gpu-only"]').getByRole('link', { name: 'gpu-only', exact: true }).click();
  await desktop.locator('[data-selector]').getByText('gpu=h100').waitFor();
  await desktop.locator('#job-head [data-unmatched]').waitFor();
  await desktop.screenshot({ path: join(shots, 'job-unmatched-desktop.png') });
  await desktop.getByRole('link', { name: 'Edit' }).click();
  const selector = desktop.getByLabel('Run only on workers labelled', { exact: true });
  await desktop.waitForFunction(() => document.getElementById('f-selector')?.value === 'gpu=h100');
  await selector.fill('zone=a');
  await desktop.getByLabel('Notify webhooks', { exact: true }).fill('https://hooks.example.com/gdts');
  await desktop.getByLabel('Notify on', { exact: true }).fill('failed, missed');
  await desktop.getByRole('button', { name: 'Save changes' }).click();
  await desktop.getByRole('heading', { name: 'gpu-only', exact: true }).waitFor();
  await desktop.locator('[data-selector]').getByText('zone=a').waitFor();
  assert.equal(await desktop.locator('#job-head [data-unmatched]').count(), 0);
  const j = (await api('GET', '/jobs/gpu-only')).body;
  assert.deepEqual(j.selector, { zone: 'a' });
  assert.equal(j.unmatched, false);
  assert.deepEqual(j.notify, { webhooks: ['https://hooks.example.com/gdts'], on: ['failed', 'missed'] });
  // The workers page shows each worker's labels.
  await nav(desktop, 'Workers');
  await desktop.locator(`tr[data-worker="${workers[0]}"] [data-labels]`).getByText('zone=a').waitFor();
  assert.equal((await api('DELETE', '/jobs/gpu-only')).status, 204);
});

step('at phone width (390 px) every page fits and works', async () => {
  phone = await newPage(PHONE, 'phone');
  await signIn(phone);
  await noHorizontalScroll(phone);
  const row = phone.locator('tr[data-job-row="ui-hello"]');
  await row.waitFor();
  await row.locator('[data-last-run] [data-status]').waitFor();
  await noHorizontalScroll(phone);
  await phone.screenshot({ path: join(shots, 'jobs-phone.png'), fullPage: true });
  await phone.getByRole('link', { name: 'ui-hello', exact: true }).click();
  await phone.locator('tr[data-run]').first().waitFor();
  await noHorizontalScroll(phone);
  await phone.screenshot({ path: join(shots, 'job-phone.png') });
  await phone.locator('tr[data-run]').first().getByRole('button', { name: /^Output/ }).click();
  await phone.locator('#output-modal [data-run-output]').waitFor();
  await phone.screenshot({ path: join(shots, 'output-phone.png') });
  await phone.keyboard.press('Escape');
  await phone.locator('#output-modal').waitFor({ state: 'hidden' });
  await phone.goto(`${base}/#/jobs/new`);
  await phone.getByLabel('Schedule (cron)', { exact: true }).fill('0 */15 9-17 * * 1-5 *');
  await phone.locator('[data-preview-times] li').first().waitFor();
  await noHorizontalScroll(phone);
  await phone.screenshot({ path: join(shots, 'form-phone.png'), fullPage: true });
  await nav(phone, 'Workers');
  await phone.locator('tr[data-worker]').first().waitFor();
  await noHorizontalScroll(phone);
  await phone.screenshot({ path: join(shots, 'workers-phone.png') });
});

step('delete the form-made job through the UI', async () => {
  await nav(desktop, 'Jobs');
  const row = desktop.locator('tr[data-job-row="ui-hello"]');
  await row.getByRole('button', { name: 'Delete ui-hello' }).click();
  await desktop.locator('#confirm-ok').click();
  await row.waitFor({ state: 'detached' });
  assert.equal((await api('GET', '/jobs/ui-hello')).status, 404);
});

let viewerToken;
step('an admin creates a token on the Tokens page; it is shown once', async () => {
  await nav(desktop, 'Tokens');
  await desktop.getByLabel('Name', { exact: true }).fill('ui-viewer');
  await desktop.getByLabel('Role', { exact: true }).selectOption('viewer');
  await desktop.getByRole('button', { name: 'Create token' }).click();
  viewerToken = (await desktop.locator('[data-token-value]').textContent()).trim();
  assert.match(viewerToken, /^gdts_[0-9a-f]{16}_[0-9a-f]{64}$/);
  await desktop.locator('tr[data-token]').filter({ hasText: 'ui-viewer' }).waitFor();
  assert.equal(await desktop.locator('tr[data-token]').filter({ hasText: viewerToken }).count(), 0,
    'the list shows the token value');
  await desktop.screenshot({ path: join(shots, 'tokens-desktop.png') });
});

step('the audit page shows who changed what', async () => {
  await nav(desktop, 'Audit');
  await desktop.locator('tr[data-audit="token.create"]').first().waitFor();
  const save = desktop.locator('tr[data-audit="job.save"]').filter({ hasText: 'ui-hello' }).first();
  await save.waitFor();
  assert.match(await save.textContent(), /bootstrap admin/);
  await desktop.screenshot({ path: join(shots, 'audit-desktop.png') });
});

step('a viewer sees the jobs but no control it may not use', async () => {
  const viewer = await newPage(DESKTOP, 'viewer');
  await signIn(viewer, viewerToken);
  assert.match(await viewer.locator('[data-identity]').textContent(), /ui-viewer\s*·\s*viewer/);
  const row = viewer.locator('tr[data-job-row="backup-db"]');
  await row.waitFor();
  for (const name of ['New job']) {
    assert.equal(await viewer.getByRole('link', { name }).isVisible(), false, `${name} is shown to a viewer`);
  }
  for (const label of ['Run backup-db now', 'Delete backup-db', 'Edit backup-db']) {
    assert.equal(await row.getByLabel(label).isVisible(), false, `${label} is shown to a viewer`);
  }
  const mainNav = viewer.getByRole('navigation', { name: 'Main' });
  assert.equal(await mainNav.getByRole('link', { name: 'Tokens' }).isVisible(), false);
  assert.equal(await mainNav.getByRole('link', { name: 'Audit' }).isVisible(), false);
  await viewer.screenshot({ path: join(shots, 'viewer-jobs-desktop.png') });
  // Revoking the token ends the viewer's session at its next request.
  const id = viewerToken.split('_')[1];
  assert.equal((await api('DELETE', `/tokens/${id}`)).status, 204);
  await nav(viewer, 'Workers');
  await viewer.getByRole('heading', { name: 'Sign in' }).waitFor();
  await viewer.getByText('Your session has ended').waitFor();
  await viewer.context().close();
});

step('signing out returns to the sign-in page', async () => {
  await desktop.getByRole('button', { name: 'Sign out' }).click();
  await desktop.getByRole('heading', { name: 'Sign in' }).waitFor();
  assert.equal((await desktop.evaluate(async () => (await fetch('/api/v1/session')).json())).identity, null);
});

step('no console errors and no uncaught exceptions on any page', async () => {
  assert.deepEqual(problems, []);
  assert.ok(handledHttpErrors.length > 0, 'the bad-cron checks saw no 422 at all');
});

let failed = false;
for (const { name, fn } of steps) {
  const started = Date.now();
  try {
    await fn();
    console.log(`ok   ${name} (${Date.now() - started} ms)`);
  } catch (e) {
    failed = true;
    console.log(`FAIL ${name}\n${e.stack || e}`);
    if (artifacts) {
      mkdirSync(artifacts, { recursive: true });
      await desktop.screenshot({ path: join(artifacts, 'failure-desktop.png') }).catch(() => {});
      if (phone) await phone.screenshot({ path: join(artifacts, 'failure-phone.png') }).catch(() => {});
      console.log(`screenshots of the failure in ${artifacts}`);
    }
    break;
  }
}
await browser.close();
process.exit(failed ? 1 : 0);
