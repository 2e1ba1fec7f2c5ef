// The jobs page, and the job actions and cells the job page shares.

import {
  main, api, jobPath, findJob, fmtTime, timeTag, statusBadge, toast,
  replaceKeepingFocus, soon, errorAlert, returnFocusOnClose, pager,
} from './core.js';
import { labelBadges, scheduleCell, summary as jobSummary } from './fields.js';
import { html, join, render } from './html.js';

// ---------- job actions (list and detail pages share them) ----------

export function confirmDelete(name) {
  return new Promise((resolve) => {
    const el = document.getElementById('confirm-modal');
    document.getElementById('confirm-title').textContent = `Delete job ${name}?`;
    render(document.getElementById('confirm-body'),
      html`<p class="mb-0">The job <strong>${name}</strong> stops being scheduled on every worker. Its run history stays.</p>`);
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
export const POST_ACTIONS = {
  run: (name) => [`Run of ${name} requested`, 'success'],
  pause: (name) => [`${name} paused`, 'success'],
  resume: (name) => [`${name} resumed`, 'success'],
  kill: (name) => [`Kill of ${name}'s running runs requested`, 'warning'],
};

export async function jobAction(action, name) {
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

export function actionButtons(job, { edit = true } = {}) {
  const n = job.name;
  // data-need: the role the action takes (hidden from roles below it).
  const btn = (action, label, cls, aria, disabled = false) =>
    html`<button type="button" class="btn btn-sm ${cls}" data-action="${action}" data-job="${n}" data-focus="${action}" data-need="${action === 'delete' ? 'admin' : 'operator'}" aria-label="${aria}" ${disabled && html`disabled`}>${label}</button>`;
  return [
    btn('run', 'Run now', 'btn-outline-primary', `Run ${n} now`),
    job.paused
      ? btn('resume', 'Resume', 'btn-outline-success', `Resume ${n}`)
      : btn('pause', 'Pause', 'btn-outline-secondary', `Pause ${n}`),
    btn('kill', 'Kill', 'btn-outline-warning', `Kill running runs of ${n}`, !job.running),
    edit && html`<a class="btn btn-sm btn-outline-secondary" href="#/jobs/${encodeURIComponent(job.name)}/edit" data-focus="edit" data-need="admin" aria-label="Edit ${n}">Edit</a>`,
    btn('delete', 'Delete', 'btn-outline-danger', `Delete ${n}`),
  ];
}

export function nextFireCell(job) {
  if (job.paused) return html`<span class="text-body-secondary">paused</span>`;
  if (!job.nextFireTimes || !job.nextFireTimes.length) return '—';
  return html`<ul class="fire-times" data-next-fire>${job.nextFireTimes
    .map((t) => html`<li>${timeTag(t)} <span class="small text-body-secondary text-nowrap">· ${fmtTime(t, job.timezone, true)}</span></li>`)}</ul>`;
}

export function lastRunCell(job) {
  const r = job.lastRun;
  if (!r) return html`<span class="text-body-secondary">never</span>`;
  return html`${statusBadge(r.status)} ${timeTag(r.endTime || r.startTime || r.planTime)}`;
}

export function stateCell(job) {
  const parts = [];
  if (job.running) parts.push(html`<span class="badge text-bg-primary" data-running="${job.running}">${job.running} running</span>`);
  if (job.paused) parts.push(html`<span class="badge text-bg-secondary" data-paused>paused</span>`);
  if (job.unmatched) parts.push(html`<span class="badge text-bg-warning" data-unmatched title="no live worker has the labels its selector asks for: nothing runs it">no worker matches</span>`);
  if (!parts.length) parts.push(html`<span class="badge bg-body-secondary text-body-emphasis border" data-idle>scheduled</span>`);
  return join(parts, ' ');
}

// ---------- pages ----------

/** The jobs page: paged, filtered by name prefix, rows refreshed by events. */
export function jobsPage() {
  const PAGE_SIZE = 25;
  let page = 1;
  let prefix = '';
  let items = [];
  let total = 0;

  render(main, html`
    <div class="d-flex flex-wrap align-items-center gap-2 mb-3">
      <h1 class="h3 mb-0 me-auto">Jobs</h1>
      <form class="d-flex" role="search" id="job-filter">
        <label class="visually-hidden" for="prefix">Filter jobs by name prefix</label>
        <input class="form-control form-control-sm" type="search" id="prefix" placeholder="Filter by name prefix" autocomplete="off">
      </form>
      <a class="btn btn-primary btn-sm" href="#/jobs/new" data-need="admin">New job</a>
    </div>
    <div id="jobs"></div>`);
  const holder = document.getElementById('jobs');

  const row = (job) => html`
    <tr data-job-row="${job.name}">
      <td data-label="Name"><div class="cell"><a href="#/jobs/${encodeURIComponent(job.name)}" class="fw-semibold text-break">${job.name}</a>
        <div class="small text-body-secondary text-truncate" style="max-width: 18rem">${jobSummary(job)}</div>
        ${job.selector && Object.keys(job.selector).length > 0 && html`<div class="small" data-selector title="runs only on workers with these labels">${labelBadges(job.selector)}</div>`}</div></td>
      <td data-label="Schedule"><div class="cell">${scheduleCell(job)}</div></td>
      <td data-label="Next runs"><div class="cell">${nextFireCell(job)}</div></td>
      <td data-label="Last run" data-last-run><div class="cell">${lastRunCell(job)}</div></td>
      <td data-label="State"><div class="cell">${stateCell(job)}</div></td>
      <td data-label="" class="actions"><div class="cell">${actionButtons(job)}</div></td>
    </tr>`;

  function show() {
    if (!items.length) {
      render(holder, prefix
        ? html`<p class="text-body-secondary">No job name starts with “${prefix}”.</p>`
        : html`<div class="text-center py-5"><p class="lead">No jobs yet.</p><a class="btn btn-primary" href="#/jobs/new" data-need="admin">Create the first job</a></div>`);
      return;
    }
    const pages = Math.max(1, Math.ceil(total / PAGE_SIZE));
    render(holder, html`
      <table class="table align-middle table-stack" aria-label="Jobs">
        <thead><tr><th scope="col">Name</th><th scope="col">Schedule</th><th scope="col">Next runs</th>
          <th scope="col">Last run</th><th scope="col">State</th><th scope="col"><span class="visually-hidden">Actions</span></th></tr></thead>
        <tbody>${items.map(row)}</tbody>
      </table>
      ${pages > 1 && pager(page, pages, 'jobs')}
      <p class="small text-body-secondary">${total} job${total === 1 ? '' : 's'}</p>`);
  }

  async function load() {
    try {
      const q = new URLSearchParams({ page, pageSize: PAGE_SIZE });
      if (prefix) q.set('prefix', prefix);
      const data = await api('GET', `/jobs?${q}`);
      if (data.items.length === 0 && page > 1) { page -= 1; return load(); }
      items = data.items;
      total = data.total;
      show();
    } catch (e) {
      render(holder, errorAlert(e));
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
