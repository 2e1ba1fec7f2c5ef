// Charts (Chart.js, window.Chart from node_modules): a job's recent runs,
// and the overview page (runs, failures, start lag, workers) from
// /api/v1/stats.

import { main, api, jobPath, fmtTime, fmtDuration, errorAlert } from './core.js';
import { html, render } from './html.js';

/** `fn` at most once per `ms`, however often asked (events come every second). */
function throttled(fn, ms) {
  let timer = null;
  const call = () => {
    if (timer) return;
    timer = setTimeout(() => { timer = null; fn(); }, ms);
  };
  call.cancel = () => { clearTimeout(timer); timer = null; };
  return call;
}

const OK = '#198754';
const FAILED = '#dc3545';
const MISSED = '#fd7e14';
const OTHER = '#6c757d';

const statusColor = (s) =>
  s === 'succeeded' ? OK
    : s === 'failed' || s === 'timed-out' || s === 'lost' ? FAILED
      : s === 'missed' ? MISSED : OTHER;

/** Runs counted as judged: what a success rate is out of. */
const judged = (r) => ['succeeded', 'failed', 'timed-out', 'lost', 'missed'].includes(r.status);

/**
 * A job's last runs (up to 100) into `holder`: duration per run, coloured
 * by status, and the success rate. Returns a refresh function and a dispose.
 */
export function jobRunsChart(holder, name) {
  let chart = null;
  render(holder, html`
    <div class="d-flex flex-wrap align-items-baseline gap-3 mb-1">
      <h2 class="h6 mb-0">Recent runs</h2>
      <span class="small text-body-secondary" data-success-rate></span>
    </div>
    <div class="chart-box"><canvas data-runs-chart role="img" aria-label="Duration of the recent runs of ${name}, coloured by status"></canvas></div>`);
  const rate = holder.querySelector('[data-success-rate]');
  const canvas = holder.querySelector('canvas');

  async function refresh() {
    let data;
    try {
      data = await api('GET', `${jobPath(name)}/runs?page=1&pageSize=100`);
    } catch (e) {
      rate.textContent = '';
      return;
    }
    const runs = data.items.slice().reverse();
    const counted = runs.filter(judged);
    const ok = counted.filter((r) => r.status === 'succeeded').length;
    rate.textContent = counted.length
      ? `success rate ${Math.round((100 * ok) / counted.length)} % of the last ${counted.length} runs`
      : 'no runs yet';
    rate.dataset.value = counted.length ? String(ok / counted.length) : '';
    const labels = runs.map((r) => fmtTime(r.planTime, undefined, true));
    const seconds = runs.map((r) => (r.status === 'skipped' || r.status === 'missed' ? 0 : Math.max(0, (r.endTime - r.startTime) / 1000)));
    const colors = runs.map((r) => statusColor(r.status));
    if (!window.Chart) return;
    if (chart) {
      chart.data.labels = labels;
      chart.data.datasets[0].data = seconds;
      chart.data.datasets[0].backgroundColor = colors;
      chart.$runs = runs;
      chart.update('none');
      return;
    }
    chart = new window.Chart(canvas, {
      type: 'bar',
      data: { labels, datasets: [{ label: 'Duration (s)', data: seconds, backgroundColor: colors }] },
      options: {
        animation: false,
        maintainAspectRatio: false,
        plugins: {
          legend: { display: false },
          tooltip: {
            callbacks: {
              label: (ctx) => {
                const r = chart.$runs[ctx.dataIndex];
                return `${r.status} · ${fmtDuration(r.endTime - r.startTime)} · ${r.worker}`;
              },
            },
          },
        },
        scales: { x: { ticks: { maxTicksLimit: 8 } }, y: { beginAtZero: true, title: { display: true, text: 'seconds' } } },
      },
    });
    chart.$runs = runs;
  }

  refresh();
  const later = throttled(refresh, 3000);
  return {
    refresh: later,
    dispose() { later.cancel(); if (chart) chart.destroy(); chart = null; },
  };
}

/** The overview page: the last minutes of the fleet, refreshed live. */
export function overviewPage() {
  let minutes = 15;
  let alive = true;
  const charts = [];
  render(main, html`
    <div class="d-flex flex-wrap align-items-center gap-2 mb-3">
      <h1 class="h3 mb-0 me-auto">Overview</h1>
      <label class="small text-body-secondary" for="window">Window</label>
      <select class="form-select form-select-sm w-auto" id="window" aria-label="Window">
        <option value="5">5 minutes</option><option value="15" selected>15 minutes</option><option value="60">1 hour</option>
      </select>
    </div>
    <div id="overview"><div class="placeholder-glow"><span class="placeholder col-6"></span></div></div>`);
  const holder = document.getElementById('overview');
  document.getElementById('window').addEventListener('change', (ev) => { minutes = Number(ev.target.value); load(); });

  const card = (label, value, key, tone = '') => html`
    <div class="col-6 col-lg-3"><div class="card h-100"><div class="card-body">
      <div class="small text-body-secondary">${label}</div>
      <div class="fs-3 fw-semibold ${tone}" data-stat="${key}">${value}</div>
    </div></div></div>`;

  async function load() {
    let s;
    try {
      s = await api('GET', `/stats?minutes=${minutes}`);
    } catch (e) {
      if (alive) render(holder, errorAlert(e));
      return;
    }
    if (!alive) return;
    const t = s.totals;
    const perSecond = t.runs / ((s.to - s.from) / 1000);
    const rate = t.successRate == null ? '—' : `${(100 * t.successRate).toFixed(1)} %`;
    render(holder, html`
      <div class="row g-3 mb-3">
        ${card('Runs per second', perSecond >= 10 ? perSecond.toFixed(0) : perSecond >= 1 ? perSecond.toFixed(1) : perSecond === 0 ? '0' : perSecond.toPrecision(2), 'runs-per-second')}
        ${card('Failed or missed', `${t.failed + t.missed}`, 'failed', t.failed + t.missed ? 'text-danger' : '')}
        ${card('Start lag p99', t.lagP99Ms == null ? '—' : fmtDuration(t.lagP99Ms), 'lag-p99')}
        ${card('Workers ready', `${s.workersReady} of ${s.workers}`, 'workers', s.workersReady ? '' : 'text-danger')}
      </div>
      <p class="small text-body-secondary">Success rate ${rate} over ${t.runs} runs since ${fmtTime(s.from)}${s.truncated ? ' (the newest 50,000 runs only)' : ''}.</p>
      <div class="row g-3">
        <div class="col-lg-6"><h2 class="h6">Runs per minute</h2><div class="chart-box"><canvas id="runs-chart" role="img" aria-label="Runs per minute by outcome"></canvas></div></div>
        <div class="col-lg-6"><h2 class="h6">Start lag p99 per minute</h2><div class="chart-box"><canvas id="lag-chart" role="img" aria-label="Start lag p99 per minute"></canvas></div></div>
      </div>`);
    for (const c of charts.splice(0)) c.destroy();
    if (!window.Chart) return;
    const labels = s.minutes.map((m) => fmtTime(m.start, undefined, true));
    charts.push(new window.Chart(document.getElementById('runs-chart'), {
      type: 'bar',
      data: {
        labels,
        datasets: [
          { label: 'succeeded', data: s.minutes.map((m) => m.succeeded), backgroundColor: OK },
          { label: 'failed', data: s.minutes.map((m) => m.failed), backgroundColor: FAILED },
          { label: 'missed', data: s.minutes.map((m) => m.missed), backgroundColor: MISSED },
        ],
      },
      options: { animation: false, maintainAspectRatio: false, scales: { x: { stacked: true, ticks: { maxTicksLimit: 8 } }, y: { stacked: true, beginAtZero: true } } },
    }));
    charts.push(new window.Chart(document.getElementById('lag-chart'), {
      type: 'line',
      data: { labels, datasets: [{ label: 'p99 (ms)', data: s.minutes.map((m) => m.lagP99Ms), borderColor: '#0d6efd', spanGaps: true }] },
      options: { animation: false, maintainAspectRatio: false, plugins: { legend: { display: false } }, scales: { x: { ticks: { maxTicksLimit: 8 } }, y: { beginAtZero: true, title: { display: true, text: 'ms' } } } },
    }));
  }

  load();
  const later = throttled(() => { if (alive) load(); }, 5000);
  return {
    dispose() { alive = false; later.cancel(); for (const c of charts.splice(0)) c.destroy(); },
    onEvent(type) {
      if (type === 'run.finished' || type.startsWith('worker.') || type === 'reset') later();
    },
  };
}
