// The workers page: registrations, labels, clock offsets, what each runs.

import { API, main, esc, api, timeTag, soon, errorAlert } from './core.js';
import { labelBadges } from './jobs.js';

/** A worker's clock against the reference (MongoDB's): skewed ones claim nothing. */
export function clockCell(w) {
  if (w.clockOffsetMs === undefined || w.clockOffsetMs === null) return '<span class="text-body-secondary">not measured</span>';
  const off = `${w.clockOffsetMs > 0 ? 'behind' : 'ahead'} ${(Math.abs(w.clockOffsetMs) / 1000).toFixed(1)} s`;
  return w.clockSkewed
    ? `<span class="badge text-bg-danger" title="off by more than the 30 s bound: claims nothing">skewed</span> ${esc(off)}`
    : esc(off);
}

/** One job: its definition, actions, and its runs, paged, newest first. */
export function workersPage() {
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
