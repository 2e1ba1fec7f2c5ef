// The page of one job: its definition, live state, runs and their output.

import {
  main, api, jobPath, findJob, fmtTime, timeTag, fmtDuration, fmtBytes, exitText,
  statusBadge, replaceKeepingFocus, soon, errorAlert, returnFocusOnClose, pager,
} from './core.js';
import { jobRunsChart } from './charts.js';
import { details } from './fields.js';
import { html, render } from './html.js';
import { jobAction, actionButtons, nextFireCell, stateCell } from './jobs.js';

export function jobPage(name) {
  const PAGE_SIZE = 20;
  let page = 1;
  let job = null;
  if (!/^[A-Za-z0-9._-]+$/.test(name)) {
    // Not a name a job can have (a mistyped address): nothing to ask for.
    render(main, html`<div class="alert alert-warning" role="alert">There is no job named <strong>${name}</strong>. <a href="#/jobs" class="alert-link">Back to jobs</a></div>`);
    return {};
  }

  render(main, html`
    <nav aria-label="breadcrumb"><ol class="breadcrumb">
      <li class="breadcrumb-item"><a href="#/jobs">Jobs</a></li>
      <li class="breadcrumb-item active text-break" aria-current="page">${name}</li></ol></nav>
    <div id="job-head"><div class="placeholder-glow"><span class="placeholder col-6"></span></div></div>
    <div id="job-chart" class="mt-4"></div>
    <h2 class="h5 mt-4">Runs</h2>
    <div id="runs"></div>`);
  const runs = document.getElementById('runs');
  const chart = jobRunsChart(document.getElementById('job-chart'), name);

  function renderHead() {
    const j = job;
    const markup = html`<div id="job-head">
      <div class="d-flex flex-wrap align-items-center gap-2 mb-2">
        <h1 class="h3 mb-0 me-auto text-break">${j.name}</h1>
        <div data-job-state>${stateCell(j)}</div>
      </div>
      <div class="actions mb-3" data-job-actions>${actionButtons(j)}</div>
      <div class="row g-3">
        <div class="col-lg-7"><dl class="row mb-0">
          ${details(j).map(([term, value]) => html`<dt class="col-sm-4 col-lg-3">${term}</dt><dd class="col-sm-8 col-lg-9 text-break">${value}</dd>`)}
        </dl></div>
        <div class="col-lg-5"><h2 class="h6">Next runs</h2>${nextFireCell(j)}</div>
      </div></div>`;
    const now = document.getElementById('job-head');
    if (now) replaceKeepingFocus(now, markup);
  }

  let alive = true;
  async function loadJob() {
    let shown = null;
    try {
      job = await findJob(name);
      if (!alive) return;
      if (job) { renderHead(); return; }
      shown = html`<div class="alert alert-warning" role="alert">There is no job named <strong>${name}</strong> (it may have been deleted). <a href="#/jobs" class="alert-link">Back to jobs</a></div>`;
    } catch (e) {
      job = null;
      shown = errorAlert(e);
    }
    const h = document.getElementById('job-head');
    if (alive && h) render(h, shown);
  }

  const runRow = (r) => html`
    <tr data-run="${r.runId}">
      <td data-label="Status"><div class="cell">${statusBadge(r.status)}${r.attempt > 1 ? html` <span class="small text-body-secondary">attempt ${r.attempt}</span>` : ''}</div></td>
      <td data-label="Trigger"><div class="cell">${r.trigger || 'schedule'}</div></td>
      <td data-label="Tick"><div class="cell">${fmtTime(r.planTime)}</div></td>
      <td data-label="Started"><div class="cell">${timeTag(r.startTime)}</div></td>
      <td data-label="Duration"><div class="cell">${r.status === 'skipped' ? '—' : fmtDuration(r.endTime - r.startTime)}</div></td>
      <td data-label="Worker" class="text-break"><div class="cell">${r.worker}</div></td>
      <td data-label="Exit"><div class="cell">${exitText(r)}</div></td>
      <td data-label="" class="actions"><div class="cell">${r.status === 'skipped' ? '' : html`<button type="button" class="btn btn-sm btn-outline-secondary" data-output="${r.runId}" aria-label="Output of the run at ${fmtTime(r.planTime)}">Output</button>`}</div></td>
    </tr>`;

  async function loadRuns() {
    try {
      const data = await api('GET', `${jobPath(name)}/runs?${new URLSearchParams({ page, pageSize: PAGE_SIZE })}`);
      if (!data.items.length) {
        render(runs, page > 1
          ? pager(page, page, 'runs')
          : html`<p class="text-body-secondary" data-no-runs>No runs yet. They appear here as they finish.</p>`);
        return;
      }
      const pages = Math.max(1, Math.ceil(data.total / PAGE_SIZE));
      render(runs, html`
        <table class="table table-sm align-middle table-stack" aria-label="Runs of ${name}">
          <thead><tr><th scope="col">Status</th><th scope="col">Trigger</th><th scope="col">Tick</th><th scope="col">Started</th>
            <th scope="col">Duration</th><th scope="col">Worker</th><th scope="col">Exit</th><th scope="col"><span class="visually-hidden">Output</span></th></tr></thead>
          <tbody>${data.items.map(runRow)}</tbody>
        </table>
        ${pages > 1 ? pager(page, pages, 'runs') : ''}
        <p class="small text-body-secondary">${data.total} run${data.total === 1 ? '' : 's'} on record</p>`);
    } catch (e) {
      render(runs, errorAlert(e));
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

export async function showOutput(name, runId) {
  const el = document.getElementById('output-modal');
  const body = document.getElementById('output-body');
  document.getElementById('output-title').textContent = `Output of ${name}`;
  render(body, html`<div class="spinner-border" role="status"><span class="visually-hidden">Loading…</span></div>`);
  returnFocusOnClose(el);
  window.bootstrap.Modal.getOrCreateInstance(el).show();
  try {
    const r = await api('GET', `${jobPath(name)}/runs/${encodeURIComponent(runId)}`);
    const whole = r.outputUri
      ? html`<a class="btn btn-sm btn-outline-primary" href="/job/output?${new URLSearchParams({ name, runId })}" download>Download the whole output (${fmtBytes(r.outputBytes)})</a>`
      : '';
    render(body, html`
      <dl class="row small mb-2">
        <dt class="col-4 col-md-2">Status</dt><dd class="col-8 col-md-4">${statusBadge(r.status)}</dd>
        <dt class="col-4 col-md-2">Worker</dt><dd class="col-8 col-md-4 text-break">${r.worker}</dd>
        <dt class="col-4 col-md-2">Tick</dt><dd class="col-8 col-md-4">${fmtTime(r.planTime)}</dd>
        <dt class="col-4 col-md-2">Duration</dt><dd class="col-8 col-md-4">${fmtDuration(r.endTime - r.startTime)}</dd>
        <dt class="col-4 col-md-2">Exit</dt><dd class="col-8 col-md-4">${exitText(r)}</dd>
        <dt class="col-4 col-md-2">Output</dt><dd class="col-8 col-md-4">${fmtBytes(r.outputBytes)}${r.truncated ? ' (truncated)' : ''}</dd>
        ${r.err ? html`<dt class="col-4 col-md-2">Error</dt><dd class="col-8 col-md-10 text-danger text-break">${r.err}</dd>` : ''}
        <dt class="col-4 col-md-2">Command</dt><dd class="col-8 col-md-10"><code class="text-break">${r.command}</code></dd>
      </dl>
      ${whole}
      <pre class="output mt-2 mb-0" tabindex="0" aria-label="Output" data-run-output>${r.output ? r.output : html`<span class="text-body-secondary">(no output)</span>`}</pre>`);
  } catch (e) {
    render(body, errorAlert(e));
  }
}

/** Live workers. */
