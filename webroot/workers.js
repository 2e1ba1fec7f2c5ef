// The workers page: registrations, labels, clock offsets, what each runs.

import { main, api, timeTag, soon, errorAlert } from './core.js';
import { labelBadges } from './fields.js';
import { html, render } from './html.js';

/** A worker's clock against the reference (MongoDB's): skewed ones claim nothing. */
export function clockCell(w) {
  if (w.clockOffsetMs === undefined || w.clockOffsetMs === null) return html`<span class="text-body-secondary">not measured</span>`;
  const off = `${w.clockOffsetMs > 0 ? 'behind' : 'ahead'} ${(Math.abs(w.clockOffsetMs) / 1000).toFixed(1)} s`;
  return w.clockSkewed
    ? html`<span class="badge text-bg-danger" title="off by more than the 30 s bound: claims nothing">skewed</span> ${off}`
    : off;
}

/** Live workers, refreshed as they join, change and leave. */
export function workersPage() {
  render(main, html`<h1 class="h3 mb-3">Workers</h1><div id="workers"></div>`);
  const holder = document.getElementById('workers');
  async function load() {
    try {
      const workers = await api('GET', '/workers');
      render(holder, workers.length ? html`
        <table class="table align-middle table-stack" aria-label="Workers">
          <thead><tr><th scope="col">Worker</th><th scope="col">Host</th><th scope="col">Version</th><th scope="col">Started</th>
            <th scope="col">Running</th><th scope="col">Last seen</th><th scope="col">Clock</th><th scope="col">Labels</th></tr></thead>
          <tbody>${workers.map((w) => html`
            <tr data-worker="${w.id}">
              <td data-label="Worker" class="fw-semibold text-break"><div class="cell">${w.id}</div></td>
              <td data-label="Host" class="text-break"><div class="cell">${w.hostname}</div></td>
              <td data-label="Version"><div class="cell">${w.version}</div></td>
              <td data-label="Started"><div class="cell">${timeTag(w.startTime)}</div></td>
              <td data-label="Running"><div class="cell">${w.running}</div></td>
              <td data-label="Last seen"><div class="cell">${timeTag(w.lastSeen)}</div></td>
              <td data-label="Clock"><div class="cell">${clockCell(w)}</div></td>
              <td data-label="Labels"><div class="cell" data-labels>${labelBadges(w.labels) || html`<span class="text-body-secondary">none</span>`}</div></td>
            </tr>`)}</tbody>
        </table>
        <p class="small text-body-secondary">${workers.length} worker${workers.length === 1 ? '' : 's'} alive</p>`
        : html`<div class="alert alert-warning" role="status">No workers are registered: nothing will run until one starts.</div>`);
    } catch (e) {
      render(holder, errorAlert(e));
    }
  }
  load();
  return {
    onEvent(type) {
      if (type.startsWith('worker.') || type === 'reset') soon('workers', load);
    },
  };
}
