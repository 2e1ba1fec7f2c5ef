// The GDTS web UI: a page per hash route, data from /api/v1, live updates
// from the server-sent event stream. Plain modules, no build step; Bootstrap
// (window.bootstrap) and cronstrue (window.cronstrue) come from node_modules.


import {
  API,
  main,
  esc,
  api,
  apiResponse,
  jobPath,
  findJob,
  fmtTime,
  timeTag,
  fmtDuration,
  fmtBytes,
  describeCron,
  exitText,
  statusBadge,
  toast,
  replaceKeepingFocus,
  pending,
  soon,
  errorAlert,
  returnFocusOnClose,
  pager,
} from './core.js';
import { currentSession, applyIdentity, signInPage, tokensPage, auditPage } from './access.js';
import { jobRunsChart, overviewPage } from './charts.js';
// ---------- job actions (list and detail pages share them) ----------

function confirmDelete(name) {
  return new Promise((resolve) => {
    const el = document.getElementById('confirm-modal');
    document.getElementById('confirm-title').textContent = `Delete job ${name}?`;
    document.getElementById('confirm-body').innerHTML =
      `<p class="mb-0">The job <strong>${esc(name)}</strong> stops being scheduled on every worker. Its run history stays.</p>`;
    const modal = window.bootstrap.Modal.getOrCreateInstance(el);
    const ok = document.getElementById('confirm-ok');
    let confirmed = false;
    const onOk = () => { confirmed = true; modal.hide(); };
    ok.addEventListener('click', onOk, { once: true });
    el.addEventListener('shown.bs.modal', () => ok.focus(), { once: true });
    returnFocusOnClose(el);
    el.addEventListener('hidden.bs.modal', () => {
      ok.removeEventListener('click', onOk);
      resolve(confirmed);
    }, { once: true });
    modal.show();
  });
}

/** The job actions that are one POST, and what each says when done. */
const POST_ACTIONS = {
  run: (name) => [`Run of ${name} requested`, 'success'],
  pause: (name) => [`${name} paused`, 'success'],
  resume: (name) => [`${name} resumed`, 'success'],
  kill: (name) => [`Kill of ${name}'s running runs requested`, 'warning'],
};

async function jobAction(action, name) {
  try {
    if (action === 'delete') {
      if (!(await confirmDelete(name))) return false;
      await api('DELETE', jobPath(name));
      toast(`${name} deleted`);
      return 'deleted';
    }
    const done = POST_ACTIONS[action];
    if (!done) return false;
    await api('POST', `${jobPath(name)}/${action}`);
    toast(...done(name));
    return true;
  } catch (e) {
    toast(e.message, 'danger');
    return false;
  }
}

function actionButtons(job, { edit = true } = {}) {
  const n = esc(job.name);
  // data-need: the role the action takes (hidden from roles below it).
  const btn = (action, label, cls, extra = '') =>
    `<button type="button" class="btn btn-sm ${cls}" data-action="${action}" data-job="${n}" data-focus="${action}" data-need="${action === 'delete' ? 'admin' : 'operator'}" ${extra}>${label}</button>`;
  return [
    btn('run', 'Run now', 'btn-outline-primary', `aria-label="Run ${n} now"`),
    job.paused
      ? btn('resume', 'Resume', 'btn-outline-success', `aria-label="Resume ${n}"`)
      : btn('pause', 'Pause', 'btn-outline-secondary', `aria-label="Pause ${n}"`),
    btn('kill', 'Kill', 'btn-outline-warning', `aria-label="Kill running runs of ${n}"${job.running ? '' : ' disabled'}`),
    edit ? `<a class="btn btn-sm btn-outline-secondary" href="#/jobs/${encodeURIComponent(job.name)}/edit" data-focus="edit" data-need="admin" aria-label="Edit ${n}">Edit</a>` : '',
    btn('delete', 'Delete', 'btn-outline-danger', `aria-label="Delete ${n}"`),
  ].join('');
}

function scheduleCell(job) {
  const description = describeCron(job.cronExpr);
  return `<code class="cron">${esc(job.cronExpr)}</code>
    ${description ? `<div class="small text-body-secondary" data-cron-description>${esc(description)}</div>` : ''}
    ${job.timezone ? `<div class="small text-body-secondary">${esc(job.timezone)}</div>` : ''}`;
}

function nextFireCell(job) {
  if (job.paused) return '<span class="text-body-secondary">paused</span>';
  if (!job.nextFireTimes || !job.nextFireTimes.length) return '—';
  return `<ul class="fire-times" data-next-fire>${job.nextFireTimes
    .map((t) => `<li>${timeTag(t)} <span class="small text-body-secondary text-nowrap">· ${esc(fmtTime(t, job.timezone, true))}</span></li>`)
    .join('')}</ul>`;
}

function lastRunCell(job) {
  const r = job.lastRun;
  if (!r) return '<span class="text-body-secondary">never</span>';
  return `${statusBadge(r.status)} ${timeTag(r.endTime || r.startTime || r.planTime)}`;
}

function stateCell(job) {
  const parts = [];
  if (job.running) parts.push(`<span class="badge text-bg-primary" data-running="${job.running}">${job.running} running</span>`);
  if (job.paused) parts.push('<span class="badge text-bg-secondary" data-paused>paused</span>');
  if (job.unmatched) parts.push('<span class="badge text-bg-warning" data-unmatched title="no live worker has the labels its selector asks for: nothing runs it">no worker matches</span>');
  if (!parts.length) parts.push('<span class="badge bg-body-secondary text-body-emphasis border" data-idle>scheduled</span>');
  return parts.join(' ');
}

// ---------- pages ----------

/** The jobs page: paged, filtered by name prefix, rows refreshed by events. */
function jobsPage() {
  const PAGE_SIZE = 25;
  let page = 1;
  let prefix = '';
  let items = [];
  let total = 0;

  main.innerHTML = `
    <div class="d-flex flex-wrap align-items-center gap-2 mb-3">
      <h1 class="h3 mb-0 me-auto">Jobs</h1>
      <form class="d-flex" role="search" id="job-filter">
        <label class="visually-hidden" for="prefix">Filter jobs by name prefix</label>
        <input class="form-control form-control-sm" type="search" id="prefix" placeholder="Filter by name prefix" autocomplete="off">
      </form>
      <a class="btn btn-primary btn-sm" href="#/jobs/new" data-need="admin">New job</a>
    </div>
    <div id="jobs"></div>`;
  const holder = document.getElementById('jobs');

  const row = (job) => `
    <tr data-job-row="${esc(job.name)}">
      <td data-label="Name"><div class="cell"><a href="#/jobs/${encodeURIComponent(job.name)}" class="fw-semibold text-break">${esc(job.name)}</a>
        <div class="small text-body-secondary text-truncate" style="max-width: 18rem">${esc(job.image ? `image ${job.image}` : job.command)}</div>
        ${job.selector && Object.keys(job.selector).length ? `<div class="small" data-selector title="runs only on workers with these labels">${labelBadges(job.selector)}</div>` : ''}</div></td>
      <td data-label="Schedule"><div class="cell">${scheduleCell(job)}</div></td>
      <td data-label="Next runs"><div class="cell">${nextFireCell(job)}</div></td>
      <td data-label="Last run" data-last-run><div class="cell">${lastRunCell(job)}</div></td>
      <td data-label="State"><div class="cell">${stateCell(job)}</div></td>
      <td data-label="" class="actions"><div class="cell">${actionButtons(job)}</div></td>
    </tr>`;

  function render() {
    if (!items.length) {
      holder.innerHTML = prefix
        ? `<p class="text-body-secondary">No job name starts with “${esc(prefix)}”.</p>`
        : '<div class="text-center py-5"><p class="lead">No jobs yet.</p><a class="btn btn-primary" href="#/jobs/new" data-need="admin">Create the first job</a></div>';
      return;
    }
    const pages = Math.max(1, Math.ceil(total / PAGE_SIZE));
    holder.innerHTML = `
      <table class="table align-middle table-stack" aria-label="Jobs">
        <thead><tr><th scope="col">Name</th><th scope="col">Schedule</th><th scope="col">Next runs</th>
          <th scope="col">Last run</th><th scope="col">State</th><th scope="col"><span class="visually-hidden">Actions</span></th></tr></thead>
        <tbody>${items.map(row).join('')}</tbody>
      </table>
      ${pages > 1 ? pager(page, pages, 'jobs') : ''}
      <p class="small text-body-secondary">${total} job${total === 1 ? '' : 's'}</p>`;
  }

  async function load() {
    try {
      const q = new URLSearchParams({ page, pageSize: PAGE_SIZE });
      if (prefix) q.set('prefix', prefix);
      const data = await api('GET', `/jobs?${q}`);
      if (data.items.length === 0 && page > 1) { page -= 1; return load(); }
      items = data.items;
      total = data.total;
      render();
    } catch (e) {
      holder.innerHTML = errorAlert(e);
    }
  }

  async function refreshJob(name) {
    const i = items.findIndex((j) => j.name === name);
    if (i < 0) return;
    try {
      const job = await findJob(name);
      if (!job) { soon('jobs', load); return; }
      const k = items.findIndex((j) => j.name === name);
      if (k < 0) return;
      items[k] = job;
      const el = holder.querySelector(`tr[data-job-row="${CSS.escape(name)}"]`);
      if (el) replaceKeepingFocus(el, row(job));
    } catch {
      soon('jobs', load);
    }
  }

  document.getElementById('job-filter').addEventListener('submit', (ev) => ev.preventDefault());
  document.getElementById('prefix').addEventListener('input', (ev) => {
    prefix = ev.target.value.trim();
    page = 1;
    soon('jobs-filter', load, 200);
  });
  holder.addEventListener('click', async (ev) => {
    const pageBtn = ev.target.closest('[data-page]');
    if (pageBtn) { page = Number(pageBtn.dataset.page); load(); return; }
    const b = ev.target.closest('button[data-action]');
    if (!b) return;
    const done = await jobAction(b.dataset.action, b.dataset.job);
    if (done === 'deleted') soon('jobs', load, 0);
    else if (done) soon(`job:${b.dataset.job}`, () => refreshJob(b.dataset.job), 0);
  });

  // Rows touched by events are re-fetched together a moment later: one by
  // one when few changed, the whole page in one request when many did.
  const dirty = new Set();
  function touched(name) {
    if (!items.some((j) => j.name === name)) return;
    dirty.add(name);
    soon('jobs-dirty', () => {
      const names = [...dirty];
      dirty.clear();
      if (names.length > 3) load();
      else names.forEach(refreshJob);
    }, 300);
  }

  load();
  return {
    onEvent(type, data) {
      if (type === 'job.saved') {
        if (items.some((j) => j.name === data.name)) touched(data.name);
        else soon('jobs', load);
      } else if (type === 'job.deleted' || type === 'reset') {
        soon('jobs', load);
      } else if (type === 'run.started' || type === 'run.finished') {
        touched(data.job);
      }
    },
  };
}


/** Label pairs (a worker's labels, a job's selector) as badges; '' for none. */
function labelBadges(labels) {
  return Object.entries(labels || {})
    .map(([k, v]) => `<span class="badge rounded-pill text-bg-light border font-monospace">${esc(k)}=${esc(v)}</span>`)
    .join(' ');
}

/** A worker's clock against the reference (MongoDB's): skewed ones claim nothing. */
function clockCell(w) {
  if (w.clockOffsetMs === undefined || w.clockOffsetMs === null) return '<span class="text-body-secondary">not measured</span>';
  const off = `${w.clockOffsetMs > 0 ? 'behind' : 'ahead'} ${(Math.abs(w.clockOffsetMs) / 1000).toFixed(1)} s`;
  return w.clockSkewed
    ? `<span class="badge text-bg-danger" title="off by more than the 30 s bound: claims nothing">skewed</span> ${esc(off)}`
    : esc(off);
}

/** One job: its definition, actions, and its runs, paged, newest first. */
function jobPage(name) {
  const PAGE_SIZE = 20;
  let page = 1;
  let job = null;
  if (!/^[A-Za-z0-9._-]+$/.test(name)) {
    // Not a name a job can have (a mistyped address): nothing to ask for.
    main.innerHTML = `<div class="alert alert-warning" role="alert">There is no job named <strong>${esc(name)}</strong>. <a href="#/jobs" class="alert-link">Back to jobs</a></div>`;
    return {};
  }

  main.innerHTML = `
    <nav aria-label="breadcrumb"><ol class="breadcrumb">
      <li class="breadcrumb-item"><a href="#/jobs">Jobs</a></li>
      <li class="breadcrumb-item active text-break" aria-current="page">${esc(name)}</li></ol></nav>
    <div id="job-head"><div class="placeholder-glow"><span class="placeholder col-6"></span></div></div>
    <div id="job-chart" class="mt-4"></div>
    <h2 class="h5 mt-4">Runs</h2>
    <div id="runs"></div>`;
  const runs = document.getElementById('runs');
  const chart = jobRunsChart(document.getElementById('job-chart'), name);

  const detail = (label, value) => value === undefined || value === null || value === ''
    ? '' : `<dt class="col-sm-4 col-lg-3">${esc(label)}</dt><dd class="col-sm-8 col-lg-9 text-break">${value}</dd>`;

  function renderHead() {
    const j = job;
    const html = `<div id="job-head">
      <div class="d-flex flex-wrap align-items-center gap-2 mb-2">
        <h1 class="h3 mb-0 me-auto text-break">${esc(j.name)}</h1>
        <div data-job-state>${stateCell(j)}</div>
      </div>
      <div class="actions mb-3" data-job-actions>${actionButtons(j)}</div>
      <div class="row g-3">
        <div class="col-lg-7"><dl class="row mb-0">
          ${detail('Schedule', scheduleCell(j))}
          ${detail(j.image ? 'Image' : 'Command', `<code>${esc(j.image || j.command)}</code>`)}
          ${j.image && j.command ? detail('Command', `<code>${esc(j.command)}</code>`) : ''}
          ${j.image ? detail('Limits', esc([j.cpus ? `${j.cpus} CPUs` : 'no CPU limit', j.memoryMb ? `${j.memoryMb} MB` : 'no memory limit', `network ${j.network || 'none'}`, `pull ${j.pull || 'if-not-present'}`].join(' · '))) : ''}
          ${j.env && Object.keys(j.env).length ? detail('Environment', `<code>${esc(Object.entries(j.env).map(([k, v]) => `${k}=${v}`).join(' '))}</code>`) : ''}
          ${j.notify ? detail('Notifies', `<span data-notify>${esc((j.notify.on || []).join(', '))} → ${j.notify.webhooks.map((u) => `<code>${esc(u.replace(/^(https?:\/\/[^/?#]+).*$/, '$1/…'))}</code>`).join(' ')}</span>`) : ''}
          ${j.selector && Object.keys(j.selector).length ? detail('Runs on workers with', `<span data-selector>${labelBadges(j.selector)}</span>${j.unmatched ? ' <span class="text-warning-emphasis">(no live worker has them)</span>' : ''}`) : ''}
          ${detail('Overlap', esc(j.overlap || 'allow'))}
          ${detail('Timeout', j.timeoutSeconds ? esc(`${j.timeoutSeconds} s`) : 'none')}
          ${detail('Retries', esc(`${j.retries || 0}${j.retries ? ` (backoff ${j.retryBackoffSeconds || 10} s, doubling)` : ''}`))}
          ${detail('Catch-up window', j.catchUpSeconds ? esc(`${j.catchUpSeconds} s`) : 'none')}
        </dl></div>
        <div class="col-lg-5"><h2 class="h6">Next runs</h2>${nextFireCell(j)}</div>
      </div></div>`;
    const now = document.getElementById('job-head');
    if (now) replaceKeepingFocus(now, html);
  }

  let alive = true;
  async function loadJob() {
    let html = null;
    try {
      job = await findJob(name);
      if (!alive) return;
      if (job) { renderHead(); return; }
      html = `<div class="alert alert-warning" role="alert">There is no job named <strong>${esc(name)}</strong> (it may have been deleted). <a href="#/jobs" class="alert-link">Back to jobs</a></div>`;
    } catch (e) {
      job = null;
      html = errorAlert(e);
    }
    const h = document.getElementById('job-head');
    if (alive && h) h.innerHTML = html;
  }

  const runRow = (r) => `
    <tr data-run="${esc(r.runId)}">
      <td data-label="Status"><div class="cell">${statusBadge(r.status)}${r.attempt > 1 ? ` <span class="small text-body-secondary">attempt ${r.attempt}</span>` : ''}</div></td>
      <td data-label="Trigger"><div class="cell">${esc(r.trigger || 'schedule')}</div></td>
      <td data-label="Tick"><div class="cell">${esc(fmtTime(r.planTime))}</div></td>
      <td data-label="Started"><div class="cell">${timeTag(r.startTime)}</div></td>
      <td data-label="Duration"><div class="cell">${r.status === 'skipped' ? '—' : esc(fmtDuration(r.endTime - r.startTime))}</div></td>
      <td data-label="Worker" class="text-break"><div class="cell">${esc(r.worker)}</div></td>
      <td data-label="Exit"><div class="cell">${esc(exitText(r))}</div></td>
      <td data-label="" class="actions"><div class="cell">${r.status === 'skipped' ? '' : `<button type="button" class="btn btn-sm btn-outline-secondary" data-output="${esc(r.runId)}" aria-label="Output of the run at ${esc(fmtTime(r.planTime))}">Output</button>`}</div></td>
    </tr>`;

  async function loadRuns() {
    try {
      const data = await api('GET', `${jobPath(name)}/runs?${new URLSearchParams({ page, pageSize: PAGE_SIZE })}`);
      if (!data.items.length) {
        runs.innerHTML = page > 1
          ? pager(page, page, 'runs')
          : '<p class="text-body-secondary" data-no-runs>No runs yet. They appear here as they finish.</p>';
        return;
      }
      const pages = Math.max(1, Math.ceil(data.total / PAGE_SIZE));
      runs.innerHTML = `
        <table class="table table-sm align-middle table-stack" aria-label="Runs of ${esc(name)}">
          <thead><tr><th scope="col">Status</th><th scope="col">Trigger</th><th scope="col">Tick</th><th scope="col">Started</th>
            <th scope="col">Duration</th><th scope="col">Worker</th><th scope="col">Exit</th><th scope="col"><span class="visually-hidden">Output</span></th></tr></thead>
          <tbody>${data.items.map(runRow).join('')}</tbody>
        </table>
        ${pages > 1 ? pager(page, pages, 'runs') : ''}
        <p class="small text-body-secondary">${data.total} run${data.total === 1 ? '' : 's'} on record</p>`;
    } catch (e) {
      runs.innerHTML = errorAlert(e);
    }
  }

  main.addEventListener('click', onClick);
  async function onClick(ev) {
    const pageBtn = ev.target.closest('[data-page]');
    if (pageBtn && runs.contains(pageBtn)) { page = Number(pageBtn.dataset.page); loadRuns(); return; }
    const out = ev.target.closest('[data-output]');
    if (out) { showOutput(name, out.dataset.output); return; }
    const b = ev.target.closest('button[data-action]');
    if (!b) return;
    const done = await jobAction(b.dataset.action, name);
    if (done === 'deleted') location.hash = '#/jobs';
    else if (done) soon('job', loadJob, 0);
  }

  loadJob();
  loadRuns();
  return {
    dispose() { alive = false; chart.dispose(); main.removeEventListener('click', onClick); },
    onEvent(type, data) {
      const about = data.job || data.name;
      if (about !== name && type !== 'reset') return;
      soon('job', loadJob);
      if (type === 'run.finished' || type === 'reset') {
        chart.refresh();
        // The run's record is written in a batch shortly after it ends (later
        // while MongoDB is slow): look again a few times.
        if (page === 1) {
          soon('runs', loadRuns, 300);
          for (const ms of [2500, 6000]) setTimeout(() => { if (alive && page === 1) soon('runs', loadRuns, 0); }, ms);
        }
      }
    },
  };
}

async function showOutput(name, runId) {
  const el = document.getElementById('output-modal');
  const body = document.getElementById('output-body');
  document.getElementById('output-title').textContent = `Output of ${name}`;
  body.innerHTML = '<div class="spinner-border" role="status"><span class="visually-hidden">Loading…</span></div>';
  returnFocusOnClose(el);
  window.bootstrap.Modal.getOrCreateInstance(el).show();
  try {
    const r = await api('GET', `${jobPath(name)}/runs/${encodeURIComponent(runId)}`);
    const whole = r.outputUri
      ? `<a class="btn btn-sm btn-outline-primary" href="/job/output?${new URLSearchParams({ name, runId })}" download>Download the whole output (${esc(fmtBytes(r.outputBytes))})</a>`
      : '';
    body.innerHTML = `
      <dl class="row small mb-2">
        <dt class="col-4 col-md-2">Status</dt><dd class="col-8 col-md-4">${statusBadge(r.status)}</dd>
        <dt class="col-4 col-md-2">Worker</dt><dd class="col-8 col-md-4 text-break">${esc(r.worker)}</dd>
        <dt class="col-4 col-md-2">Tick</dt><dd class="col-8 col-md-4">${esc(fmtTime(r.planTime))}</dd>
        <dt class="col-4 col-md-2">Duration</dt><dd class="col-8 col-md-4">${esc(fmtDuration(r.endTime - r.startTime))}</dd>
        <dt class="col-4 col-md-2">Exit</dt><dd class="col-8 col-md-4">${esc(exitText(r))}</dd>
        <dt class="col-4 col-md-2">Output</dt><dd class="col-8 col-md-4">${esc(fmtBytes(r.outputBytes))}${r.truncated ? ' (truncated)' : ''}</dd>
        ${r.err ? `<dt class="col-4 col-md-2">Error</dt><dd class="col-8 col-md-10 text-danger text-break">${esc(r.err)}</dd>` : ''}
        <dt class="col-4 col-md-2">Command</dt><dd class="col-8 col-md-10"><code class="text-break">${esc(r.command)}</code></dd>
      </dl>
      ${whole}
      <pre class="output mt-2 mb-0" tabindex="0" aria-label="Output" data-run-output>${r.output ? esc(r.output) : '<span class="text-body-secondary">(no output)</span>'}</pre>`;
  } catch (e) {
    body.innerHTML = errorAlert(e);
  }
}

/** Live workers. */
function workersPage() {
  main.innerHTML = `<h1 class="h3 mb-3">Workers</h1><div id="workers"></div>`;
  const holder = document.getElementById('workers');
  async function load() {
    try {
      const workers = await api('GET', '/workers');
      holder.innerHTML = workers.length ? `
        <table class="table align-middle table-stack" aria-label="Workers">
          <thead><tr><th scope="col">Worker</th><th scope="col">Host</th><th scope="col">Version</th><th scope="col">Started</th>
            <th scope="col">Running</th><th scope="col">Last seen</th><th scope="col">Clock</th><th scope="col">Labels</th></tr></thead>
          <tbody>${workers.map((w) => `
            <tr data-worker="${esc(w.id)}">
              <td data-label="Worker" class="fw-semibold text-break"><div class="cell">${esc(w.id)}</div></td>
              <td data-label="Host" class="text-break"><div class="cell">${esc(w.hostname)}</div></td>
              <td data-label="Version"><div class="cell">${esc(w.version)}</div></td>
              <td data-label="Started"><div class="cell">${timeTag(w.startTime)}</div></td>
              <td data-label="Running"><div class="cell">${esc(w.running)}</div></td>
              <td data-label="Last seen"><div class="cell">${timeTag(w.lastSeen)}</div></td>
              <td data-label="Clock"><div class="cell">${clockCell(w)}</div></td>
              <td data-label="Labels"><div class="cell" data-labels>${labelBadges(w.labels) || '<span class="text-body-secondary">none</span>'}</div></td>
            </tr>`).join('')}</tbody>
        </table>
        <p class="small text-body-secondary">${workers.length} worker${workers.length === 1 ? '' : 's'} alive</p>`
        : '<div class="alert alert-warning" role="status">No workers are registered: nothing will run until one starts.</div>';
    } catch (e) {
      holder.innerHTML = errorAlert(e);
    }
  }
  load();
  return {
    onEvent(type) {
      if (type.startsWith('worker.') || type === 'reset') soon('workers', load);
    },
  };
}

/** Create (no name) or edit a job. Errors from the API land on their field. */
function jobForm(name) {
  const editing = name != null;
  main.innerHTML = `
    <nav aria-label="breadcrumb"><ol class="breadcrumb">
      <li class="breadcrumb-item"><a href="#/jobs">Jobs</a></li>
      ${editing ? `<li class="breadcrumb-item"><a href="#/jobs/${encodeURIComponent(name)}">${esc(name)}</a></li>` : ''}
      <li class="breadcrumb-item active" aria-current="page">${editing ? 'Edit' : 'New job'}</li></ol></nav>
    <h1 class="h3 mb-3">${editing ? `Edit ${esc(name)}` : 'New job'}</h1>
    <div id="form-alert"></div>
    <form id="job-form" novalidate class="row g-3" style="max-width: 60rem">
      <div class="col-md-6">
        <label class="form-label" for="f-name">Name</label>
        <input class="form-control" id="f-name" name="name" required autocomplete="off" spellcheck="false" ${editing ? 'readonly' : ''}
          aria-describedby="h-name e-name" pattern="[A-Za-z0-9._-]+">
        <div class="form-text" id="h-name">Letters, digits, “.”, “_” and “-”. A job keeps its name.</div>
        <div class="invalid-feedback" id="e-name"></div>
      </div>
      <fieldset class="col-md-6">
        <legend class="form-label fs-6 mb-2">Runs as</legend>
        <div class="form-check form-check-inline">
          <input class="form-check-input" type="radio" name="kind" id="f-kind-shell" value="shell" checked>
          <label class="form-check-label" for="f-kind-shell">Shell command</label>
        </div>
        <div class="form-check form-check-inline">
          <input class="form-check-input" type="radio" name="kind" id="f-kind-container" value="container">
          <label class="form-check-label" for="f-kind-container">Container</label>
        </div>
      </fieldset>

      <div class="col-12" data-kind="container" hidden>
        <label class="form-label" for="f-image">Image</label>
        <input class="form-control" id="f-image" name="image" autocomplete="off" spellcheck="false" placeholder="e.g. busybox:1.36" aria-describedby="e-image">
        <div class="invalid-feedback" id="e-image"></div>
      </div>
      <div class="col-12">
        <label class="form-label" for="f-command">Command</label>
        <textarea class="form-control font-monospace" id="f-command" name="command" rows="2" spellcheck="false" aria-describedby="h-command e-command"></textarea>
        <div class="form-text" id="h-command">Run by <code>sh -c</code>; in a container, optional (the image's own command otherwise).</div>
        <div class="invalid-feedback" id="e-command"></div>
      </div>
      <div class="col-sm-6 col-md-3" data-kind="container" hidden>
        <label class="form-label" for="f-cpus">CPUs</label>
        <input class="form-control" id="f-cpus" name="cpus" type="number" step="0.01" min="0.01" inputmode="decimal" placeholder="no limit" aria-describedby="e-cpus">
        <div class="invalid-feedback" id="e-cpus"></div>
      </div>
      <div class="col-sm-6 col-md-3" data-kind="container" hidden>
        <label class="form-label" for="f-memoryMb">Memory (MB)</label>
        <input class="form-control" id="f-memoryMb" name="memoryMb" type="number" step="1" min="6" inputmode="numeric" placeholder="no limit" aria-describedby="e-memoryMb">
        <div class="invalid-feedback" id="e-memoryMb"></div>
      </div>
      <div class="col-sm-6 col-md-3" data-kind="container" hidden>
        <label class="form-label" for="f-network">Network</label>
        <input class="form-control" id="f-network" name="network" list="networks" placeholder="none" autocomplete="off" aria-describedby="e-network">
        <datalist id="networks"><option value="none"><option value="bridge"><option value="host"></datalist>
        <div class="invalid-feedback" id="e-network"></div>
      </div>
      <div class="col-sm-6 col-md-3" data-kind="container" hidden>
        <label class="form-label" for="f-pull">Pull image</label>
        <select class="form-select" id="f-pull" name="pull" aria-describedby="e-pull">
          <option value="if-not-present">if not present</option><option value="always">always</option><option value="never">never</option>
        </select>
        <div class="invalid-feedback" id="e-pull"></div>
      </div>
      <div class="col-12">
        <label class="form-label" for="f-env">Environment</label>
        <textarea class="form-control font-monospace" id="f-env" name="env" rows="2" spellcheck="false" placeholder="KEY=value, one per line" aria-describedby="e-env"></textarea>
        <div class="invalid-feedback" id="e-env"></div>
      </div>
      <div class="col-12">
        <label class="form-label" for="f-selector">Run only on workers labelled</label>
        <input class="form-control font-monospace" id="f-selector" name="selector" autocomplete="off" spellcheck="false"
          placeholder="gpu=true, zone=a" aria-describedby="h-selector e-selector">
        <div class="form-text" id="h-selector">Pairs a worker's <code>GDTS_WORKER_LABELS</code> must all include; empty: any worker.</div>
        <div class="invalid-feedback" id="e-selector"></div>
      </div>

      <div class="col-md-7">
        <label class="form-label" for="f-cronExpr">Schedule (cron)</label>
        <input class="form-control font-monospace" id="f-cronExpr" name="cronExpr" required autocomplete="off" spellcheck="false"
          placeholder="*/5 * * * * * *" aria-describedby="h-cronExpr e-cronExpr cron-preview">
        <div class="form-text" id="h-cronExpr">7 fields <code>sec min hour day month weekday year</code>; 6 (no year) and 5 (classic crontab) work too.</div>
        <div class="invalid-feedback" id="e-cronExpr"></div>
      </div>
      <div class="col-md-5">
        <label class="form-label" for="f-timezone">Time zone</label>
        <input class="form-control" id="f-timezone" name="timezone" list="zones" placeholder="UTC" autocomplete="off" aria-describedby="e-timezone">
        <datalist id="zones"></datalist>
        <div class="invalid-feedback" id="e-timezone"></div>
      </div>
      <div class="col-12"><div id="cron-preview" class="card card-body py-2 small" aria-live="polite"><span class="text-body-secondary">Type a schedule to see when it fires.</span></div></div>

      <div class="col-sm-6 col-md-4">
        <label class="form-label" for="f-overlap">If still running at the next tick</label>
        <select class="form-select" id="f-overlap" name="overlap" aria-describedby="e-overlap">
          <option value="allow">run anyway (allow)</option><option value="forbid">skip the tick (forbid)</option><option value="replace">kill it, run the new one (replace)</option>
        </select>
        <div class="invalid-feedback" id="e-overlap"></div>
      </div>
      <div class="col-sm-6 col-md-4">
        <label class="form-label" for="f-timeoutSeconds">Timeout (s)</label>
        <input class="form-control" id="f-timeoutSeconds" name="timeoutSeconds" type="number" min="1" step="1" inputmode="numeric" placeholder="none" aria-describedby="e-timeoutSeconds">
        <div class="invalid-feedback" id="e-timeoutSeconds"></div>
      </div>
      <div class="col-sm-6 col-md-4">
        <label class="form-label" for="f-catchUpSeconds">Catch up missed ticks within (s)</label>
        <input class="form-control" id="f-catchUpSeconds" name="catchUpSeconds" type="number" min="0" step="1" inputmode="numeric" placeholder="0 (never)" aria-describedby="e-catchUpSeconds">
        <div class="invalid-feedback" id="e-catchUpSeconds"></div>
      </div>
      <div class="col-sm-6 col-md-4">
        <label class="form-label" for="f-retries">Retries on failure</label>
        <input class="form-control" id="f-retries" name="retries" type="number" min="0" max="10" step="1" inputmode="numeric" placeholder="0" aria-describedby="e-retries">
        <div class="invalid-feedback" id="e-retries"></div>
      </div>
      <div class="col-sm-6 col-md-4">
        <label class="form-label" for="f-retryBackoffSeconds">First retry after (s)</label>
        <input class="form-control" id="f-retryBackoffSeconds" name="retryBackoffSeconds" type="number" min="1" step="1" inputmode="numeric" placeholder="10, doubling" aria-describedby="e-retryBackoffSeconds">
        <div class="invalid-feedback" id="e-retryBackoffSeconds"></div>
      </div>
      <div class="col-sm-6 col-md-4 d-flex align-items-end">
        <div class="form-check mb-2">
          <input class="form-check-input" type="checkbox" id="f-paused" name="paused">
          <label class="form-check-label" for="f-paused">Paused (saved, not scheduled)</label>
        </div>
      </div>
      <div class="col-md-8">
        <label class="form-label" for="f-webhooks">Notify webhooks</label>
        <textarea class="form-control font-monospace" id="f-webhooks" name="webhooks" rows="2" spellcheck="false" placeholder="https://hooks.example.com/..., one per line" aria-describedby="h-webhooks e-notify"></textarea>
        <div class="form-text" id="h-webhooks">A JSON POST (Slack-compatible) for each run that ends with one of the statuses below.</div>
        <div class="invalid-feedback" id="e-notify"></div>
      </div>
      <div class="col-md-4">
        <label class="form-label" for="f-notifyOn">Notify on</label>
        <input class="form-control" id="f-notifyOn" name="notifyOn" autocomplete="off" spellcheck="false" placeholder="failed, timed-out, lost, missed">
      </div>
      <div class="col-12 d-flex gap-2">
        <button type="submit" class="btn btn-primary" id="save">${editing ? 'Save changes' : 'Create job'}</button>
        <a class="btn btn-outline-secondary" href="${editing ? `#/jobs/${encodeURIComponent(name)}` : '#/jobs'}">Cancel</a>
      </div>
    </form>`;

  const form = document.getElementById('job-form');
  document.getElementById('form-alert').addEventListener('click', (ev) => {
    if (ev.target.closest('[data-reload]')) { ev.preventDefault(); route(); }
  });
  /** The ETag of the job being edited, as it was when the form was filled. */
  let version = null;
  const $ = (id) => document.getElementById(`f-${id}`);
  const zones = typeof Intl.supportedValuesOf === 'function' ? Intl.supportedValuesOf('timeZone') : [];
  document.getElementById('zones').innerHTML = ['UTC', ...zones].map((z) => `<option value="${esc(z)}">`).join('');

  function setKind(kind) {
    for (const el of form.querySelectorAll('[data-kind="container"]')) el.hidden = kind !== 'container';
  }
  for (const r of form.querySelectorAll('input[name="kind"]')) r.addEventListener('change', () => setKind(r.value));

  function clearErrors() {
    document.getElementById('form-alert').innerHTML = '';
    for (const el of form.querySelectorAll('.is-invalid')) el.classList.remove('is-invalid');
  }

  /** Shows `message` on `field`'s input, or above the form if none. */
  function fieldError(field, message) {
    const input = field && $(field);
    if (input) {
      if (input.closest('[data-kind="container"]')) setKind('container');
      input.classList.add('is-invalid');
      document.getElementById(`e-${field}`).textContent = message;
      input.focus();
    } else {
      document.getElementById('form-alert').innerHTML = `<div class="alert alert-danger" role="alert" tabindex="-1">${esc(message)}</div>`;
      document.querySelector('#form-alert .alert').focus();
    }
  }

  // The cron preview: a human reading and the next fire times, while typing.
  const preview = document.getElementById('cron-preview');
  let previewSeq = 0;
  async function updatePreview() {
    if (!form.isConnected) return;
    const expr = $('cronExpr').value.trim();
    const timezone = $('timezone').value.trim();
    const seq = ++previewSeq;
    if (!expr) {
      preview.innerHTML = '<span class="text-body-secondary">Type a schedule to see when it fires.</span>';
      return;
    }
    const q = new URLSearchParams({ expr, count: 5 });
    if (timezone) q.set('timezone', timezone);
    try {
      const data = await api('GET', `/cron/preview?${q}`);
      if (seq !== previewSeq || !form.isConnected) return;
      $('cronExpr').classList.remove('is-invalid');
      $('timezone').classList.remove('is-invalid');
      const description = describeCron(expr);
      preview.innerHTML = `${description ? `<div class="fw-semibold" data-cron-description>${esc(description)}${timezone ? ` (${esc(timezone)})` : ''}</div>` : ''}
        ${data.fireTimes.length
          ? `<div>Next: <ul class="fire-times d-inline" data-preview-times>${data.fireTimes.map((t) => `<li class="d-inline-block me-3">${esc(fmtTime(t, timezone, true))}</li>`).join('')}</ul></div>`
          : '<div class="text-warning">It never fires again.</div>'}`;
    } catch (e) {
      if (seq !== previewSeq || !form.isConnected) return;
      if (e.status === 422 || e.status === 400) {
        preview.innerHTML = '<span class="text-body-secondary">No preview: the schedule is not valid yet.</span>';
        const field = e.field === 'timezone' ? 'timezone' : 'cronExpr';
        $(field).classList.add('is-invalid');
        document.getElementById(`e-${field}`).textContent = e.message;
      } else {
        preview.innerHTML = `<span class="text-danger">${esc(e.message)}</span>`;
      }
    }
  }
  $('cronExpr').addEventListener('input', () => soon('preview', updatePreview, 300));
  $('timezone').addEventListener('input', () => soon('preview', updatePreview, 300));

  /** The job as loaded for editing (none for a new job). */
  let loaded = null;

  function fill(j) {
    $('name').value = j.name;
    const container = !!j.image;
    $(container ? 'kind-container' : 'kind-shell').checked = true;
    setKind(container ? 'container' : 'shell');
    $('image').value = j.image || '';
    $('command').value = j.command || '';
    $('cpus').value = j.cpus ?? '';
    $('memoryMb').value = j.memoryMb ?? '';
    $('network').value = j.network || '';
    $('pull').value = j.pull || 'if-not-present';
    $('env').value = Object.entries(j.env || {}).map(([k, v]) => `${k}=${v}`).join('\n');
    $('selector').value = Object.entries(j.selector || {}).map(([k, v]) => `${k}=${v}`).join(', ');
    $('cronExpr').value = j.cronExpr;
    $('timezone').value = j.timezone || '';
    $('overlap').value = j.overlap || 'allow';
    $('timeoutSeconds').value = j.timeoutSeconds ?? '';
    $('catchUpSeconds').value = j.catchUpSeconds ?? '';
    $('retries').value = j.retries ?? '';
    $('retryBackoffSeconds').value = j.retryBackoffSeconds ?? '';
    $('paused').checked = !!j.paused;
    $('webhooks').value = (j.notify?.webhooks || []).join('\n');
    $('notifyOn').value = (j.notify?.on || []).join(', ');
    loaded = j;
    updatePreview();
  }

  /** The job the form describes, or null after marking a field invalid. */
  function read() {
    const spec = { name: $('name').value.trim(), command: $('command').value, cronExpr: $('cronExpr').value.trim() };
    const number = (field) => {
      const input = $(field);
      if (input.value.trim() === '') {
        if (input.validity.badInput) { fieldError(field, 'is not a number'); return undefined; }
        return null;
      }
      return Number(input.value);
    };
    if (form.querySelector('input[name="kind"]:checked').value === 'container') {
      spec.image = $('image').value.trim();
      for (const f of ['cpus', 'memoryMb']) {
        const v = number(f);
        if (v === undefined) return null;
        if (v !== null) spec[f] = v;
      }
      if ($('network').value.trim()) spec.network = $('network').value.trim();
      spec.pull = $('pull').value;
    }
    const env = {};
    for (const [i, line] of $('env').value.split('\n').entries()) {
      if (!line.trim()) continue;
      const eq = line.indexOf('=');
      if (eq <= 0) { fieldError('env', `line ${i + 1} is not KEY=value`); return null; }
      env[line.slice(0, eq).trim()] = line.slice(eq + 1);
    }
    if (Object.keys(env).length) spec.env = env;
    const selector = {};
    for (const pair of $('selector').value.split(',')) {
      if (!pair.trim()) continue;
      const eq = pair.indexOf('=');
      if (eq <= 0) { fieldError('selector', `"${pair.trim()}" is not key=value`); return null; }
      selector[pair.slice(0, eq).trim()] = pair.slice(eq + 1).trim();
    }
    if (Object.keys(selector).length) spec.selector = selector;
    if ($('timezone').value.trim()) spec.timezone = $('timezone').value.trim();
    if ($('overlap').value !== 'allow') spec.overlap = $('overlap').value;
    for (const f of ['timeoutSeconds', 'catchUpSeconds', 'retries', 'retryBackoffSeconds']) {
      const v = number(f);
      if (v === undefined) return null;
      if (v !== null) spec[f] = v;
    }
    if ($('paused').checked) spec.paused = true;
    const webhooks = $('webhooks').value.split('\n').map((u) => u.trim()).filter(Boolean);
    if (webhooks.length) {
      spec.notify = { webhooks };
      const on = $('notifyOn').value.split(',').map((s) => s.trim()).filter(Boolean);
      if (on.length) spec.notify.on = on;
    }
    // Fields this form does not show stay as they were.
    const shown = new Set(['name', 'command', 'cronExpr', 'image', 'cpus', 'memoryMb', 'network', 'pull', 'env',
      'selector', 'timezone', 'overlap', 'timeoutSeconds', 'catchUpSeconds', 'retries', 'retryBackoffSeconds', 'paused', 'notify']);
    const derived = new Set(['running', 'nextFireTimes', 'lastRun', 'unmatched']);
    for (const [k, v] of Object.entries(loaded || {})) {
      if (!shown.has(k) && !derived.has(k) && !(k in spec)) spec[k] = v;
    }
    return spec;
  }

  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    clearErrors();
    const spec = read();
    if (!spec) return;
    if (!spec.name) { fieldError('name', 'is required'); return; }
    const save = document.getElementById('save');
    save.disabled = true;
    try {
      // A new job never silently replaces one of the same name, and an edit
      // never overwrites a change someone made after the form was filled.
      await api('PUT', jobPath(spec.name), spec, editing ? { 'If-Match': version } : { 'If-None-Match': '*' });
      toast(editing ? `${spec.name} saved` : `${spec.name} created`);
      location.hash = `#/jobs/${encodeURIComponent(spec.name)}`;
    } catch (e) {
      if (editing && e.status === 412) {
        document.getElementById('form-alert').innerHTML = `<div class="alert alert-warning" role="alert" tabindex="-1">
          ${esc(name)} was changed (or deleted) by someone else after this form was filled, so nothing was saved.
          <a class="alert-link" href="#/jobs/${encodeURIComponent(name)}/edit" data-reload>Load the current version</a> and make your change again.</div>`;
        document.querySelector('#form-alert .alert').focus();
      } else {
        fieldError(e.field, e.message);
      }
    } finally {
      save.disabled = false;
    }
  });

  if (editing) {
    apiResponse('GET', jobPath(name)).then(({ data, etag }) => {
      if (!form.isConnected) return;
      version = etag;
      fill(data);
    }).catch((e) => {
      document.getElementById('form-alert').innerHTML = errorAlert(e);
      form.hidden = true;
    });
  } else {
    $('name').focus();
  }
  return {};
}

// ---------- routing and the event stream ----------

let current = null;

function route() {
  if (current && current.dispose) current.dispose();
  // Work the previous page scheduled is dropped with it.
  for (const timer of pending.values()) clearTimeout(timer);
  pending.clear();
  const hash = location.hash.replace(/^#\/?/, '');
  // A hand-typed address may hold a broken %-escape: keep that part as typed.
  const decode = (part) => { try { return decodeURIComponent(part); } catch { return part; } };
  const parts = hash.split('/').map(decode);
  let section = 'jobs';
  if (parts[0] === 'overview') {
    section = 'overview';
    current = overviewPage();
    document.title = 'Overview · GDTS';
  } else if (parts[0] === 'workers') {
    section = 'workers';
    current = workersPage();
    document.title = 'Workers · GDTS';
  } else if (parts[0] === 'tokens') {
    section = 'tokens';
    current = tokensPage();
    document.title = 'Tokens · GDTS';
  } else if (parts[0] === 'audit') {
    section = 'audit';
    current = auditPage();
    document.title = 'Audit · GDTS';
  } else if (parts[0] === 'jobs' && parts[1] === 'new' && parts.length === 2) {
    current = jobForm(null);
    document.title = 'New job · GDTS';
  } else if (parts[0] === 'jobs' && parts[1] && parts[2] === 'edit') {
    current = jobForm(parts[1]);
    document.title = `Edit ${parts[1]} · GDTS`;
  } else if (parts[0] === 'jobs' && parts[1]) {
    current = jobPage(parts[1]);
    document.title = `${parts[1]} · GDTS`;
  } else {
    current = jobsPage();
    document.title = 'Jobs · GDTS';
  }
  for (const a of document.querySelectorAll('[data-nav]')) {
    if (a.dataset.nav === section) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
    a.classList.toggle('active', a.dataset.nav === section);
  }
}

const live = document.getElementById('live');
function setLive(state) {
  const [text, cls] = {
    open: ['Live', 'text-bg-success'],
    connecting: ['Reconnecting…', 'text-bg-warning'],
  }[state];
  live.textContent = text;
  live.className = `badge rounded-pill ${cls}`;
  live.dataset.state = state;
}

let events = null;
function connect(again = false) {
  if (signedOut) return;
  events = new EventSource(`${API}/events`);
  events.addEventListener('open', () => {
    setLive('open');
    // A new stream starts from now: what happened meanwhile is re-read.
    if (again && current && current.onEvent) current.onEvent('reset', {});
    again = false;
  });
  events.addEventListener('error', () => {
    setLive('connecting');
    // EventSource retries by itself, resuming with Last-Event-ID, unless
    // the server answered with an error; then start over a little later.
    if (events.readyState === EventSource.CLOSED) {
      events.close();
      // A 401 here means the session ended: the next API call (the page's
      // reload on `reset`) finds out and shows the sign-in page.
      if (current && current.onEvent) current.onEvent('reset', {});
      setTimeout(() => connect(true), 3000);
    }
  });
  const types = ['job.saved', 'job.deleted', 'run.started', 'run.finished',
    'worker.joined', 'worker.updated', 'worker.left', 'reset'];
  for (const type of types) {
    events.addEventListener(type, (ev) => {
      let data = {};
      try { data = JSON.parse(ev.data); } catch { /* keep {} */ }
      if (current && current.onEvent) current.onEvent(type, data);
    });
  }
}

let signedOut = false;
function showSignIn(message) {
  signedOut = true;
  if (events) events.close();
  if (current && current.dispose) current.dispose();
  live.hidden = true;
  current = signInPage(message);
}

// Any API call answered 401 means the session ended.
window.addEventListener('gdts:signed-out', () => {
  if (!signedOut) showSignIn('Your session has ended (signed out, expired, or its token was revoked). Sign in again.');
});

async function start() {
  let session;
  try {
    session = await currentSession();
  } catch (e) {
    main.innerHTML = errorAlert(e);
    return;
  }
  if (session.authEnabled && !session.identity) {
    showSignIn();
    return;
  }
  applyIdentity(session);
  window.addEventListener('hashchange', () => {
    if (signedOut) return;
    route();
    main.focus({ preventScroll: true });
  });
  route();
  connect();
}

start();
