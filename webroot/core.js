// Helpers every page of the web UI shares: API calls, formatting, toasts,
// the pager. No page logic here. Markup comes from the `html` tag (html.js).

import { html, render, fragment } from './html.js';

export const API = '/api/v1';
export const main = document.getElementById('main');

// ---------- helpers ----------

/** A failed API call: the HTTP status and the field the server blamed. */
export class ApiError extends Error {
  constructor(status, message, field) {
    super(message);
    this.status = status;
    this.field = field ?? null;
  }
}

/** The body of a successful API call (see apiResponse). */
export async function api(method, path, body, headers = {}) {
  return (await apiResponse(method, path, body, headers)).data;
}

/** An API call: `{data, etag}` on success, an ApiError otherwise. */
export async function apiResponse(method, path, body, headers = {}) {
  let res;
  try {
    // X-GDTS-CSRF: the server takes a change made with the session cookie
    // only with this header, which no page of another origin can send.
    const all = { ...headers, 'X-GDTS-CSRF': '1' };
    res = await fetch(API + path, {
      method,
      headers: body === undefined ? all : { ...all, 'Content-Type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    throw new ApiError(0, 'The manager cannot be reached; check your connection.');
  }
  let data = null;
  if (res.status !== 204) {
    try { data = await res.json(); } catch { data = null; }
  }
  if (res.status === 401 && path !== '/session') {
    // The session ended (signed out elsewhere, expired, token revoked).
    window.dispatchEvent(new CustomEvent('gdts:signed-out'));
  }
  if (!res.ok) {
    const e = data && data.error;
    throw new ApiError(res.status, (e && e.message) || `Request failed (HTTP ${res.status})`, e && e.field);
  }
  return { data, etag: res.headers.get('ETag') };
}

export const jobPath = (name) => `/jobs/${encodeURIComponent(name)}`;

/** A job as listed, or null if there is none. Asked of the list (the name
 *  sorts first among names it prefixes) so that a job deleted meanwhile is
 *  an answer, not a 404 in the browser's console. */
export async function findJob(name) {
  const data = await api('GET', `/jobs?${new URLSearchParams({ prefix: name, pageSize: 1 })}`);
  const job = data.items[0];
  return job && job.name === name ? job : null;
}

const MEDIUM = { dateStyle: 'medium', timeStyle: 'medium' };
const SHORT = { month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', second: '2-digit' };
const localTime = { medium: new Intl.DateTimeFormat(undefined, MEDIUM), short: new Intl.DateTimeFormat(undefined, SHORT) };
const relative = new Intl.RelativeTimeFormat(undefined, { numeric: 'auto' });

/** Date and time of epoch `ms`, in `timeZone` (else local), `short` or medium. */
export function fmtTime(ms, timeZone, short = false) {
  if (!ms) return '—';
  if (timeZone) {
    try {
      return new Intl.DateTimeFormat(undefined, { ...(short ? SHORT : MEDIUM), timeZone }).format(new Date(ms));
    } catch { /* an unknown zone: fall back to local time */ }
  }
  return localTime[short ? 'short' : 'medium'].format(new Date(ms));
}

export function fmtRelative(ms) {
  const s = Math.round((ms - Date.now()) / 1000);
  const a = Math.abs(s);
  if (a < 60) return relative.format(s, 'second');
  if (a < 3600) return relative.format(Math.round(s / 60), 'minute');
  if (a < 86400) return relative.format(Math.round(s / 3600), 'hour');
  return relative.format(Math.round(s / 86400), 'day');
}

/** A <time> whose text is kept relative ("in 3 seconds") by a timer. */
export const timeTag = (ms) => (ms
  ? html`<time datetime="${new Date(ms).toISOString()}" data-rel="${ms}" title="${fmtTime(ms)}">${fmtRelative(ms)}</time>`
  : '—');

setInterval(() => {
  for (const t of document.querySelectorAll('time[data-rel]')) {
    t.textContent = fmtRelative(Number(t.dataset.rel));
  }
}, 1000);

export function fmtDuration(ms) {
  if (ms == null || ms < 0) return '—';
  if (ms < 1000) return `${ms} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(1)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${Math.round(s % 60)} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

export function fmtBytes(n) {
  if (!n) return '0 B';
  const units = ['B', 'KiB', 'MiB', 'GiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return `${i ? n.toFixed(1) : n} ${units[i]}`;
}

/** A human reading of a cron expression, or '' when cronstrue cannot. */
export function describeCron(expr) {
  try {
    return window.cronstrue.toString(expr, { use24HourTimeFormat: true, verbose: false });
  } catch {
    return '';
  }
}

/** A run's exit code, or the signal that ended it. */
export const exitText = (r) => (r.exitCode != null ? String(r.exitCode) : r.signal != null ? `signal ${r.signal}` : '—');

const STATUS_CLASS = {
  succeeded: 'text-bg-success',
  failed: 'text-bg-danger',
  killed: 'text-bg-warning',
  'timed-out': 'text-bg-warning',
  skipped: 'text-bg-secondary',
  missed: 'text-bg-secondary',
  lost: 'text-bg-dark',
  running: 'text-bg-primary',
};
export const statusBadge = (status) =>
  html`<span class="badge ${STATUS_CLASS[status] || 'text-bg-light'}" data-status="${status}">${status}</span>`;

export function toast(message, kind = 'success') {
  const el = document.createElement('div');
  el.className = `toast align-items-center text-bg-${kind} border-0`;
  el.setAttribute('role', kind === 'danger' ? 'alert' : 'status');
  render(el, html`<div class="d-flex"><div class="toast-body">${message}</div>
    <button type="button" class="btn-close btn-close-white me-2 m-auto" data-bs-dismiss="toast" aria-label="Close"></button></div>`);
  document.getElementById('toasts').append(el);
  el.addEventListener('hidden.bs.toast', () => el.remove());
  window.bootstrap.Toast.getOrCreateInstance(el, { delay: kind === 'danger' ? 8000 : 3000 }).show();
}

/** Replaces `old` with the element `markup` builds, keeping keyboard focus
 *  on the control with the same data-focus key. */
export function replaceKeepingFocus(old, markup) {
  const active = document.activeElement;
  const key = old.contains(active) && active.dataset ? active.dataset.focus : null;
  const el = fragment(markup);
  old.replaceWith(el);
  if (key) {
    const again = el.querySelector(`[data-focus="${CSS.escape(key)}"]`);
    if (again && !again.disabled) again.focus();
  }
  return el;
}

/** Runs `fn` once, `ms` after the last call with the same key. */
export const pending = new Map();
export function soon(key, fn, ms = 250) {
  clearTimeout(pending.get(key));
  pending.set(key, setTimeout(() => { pending.delete(key); fn(); }, ms));
}

export function errorAlert(e) {
  return html`<div class="alert alert-danger" role="alert">${e.message}</div>`;
}

/** Puts keyboard focus back where it was when the modal `el` closes. */
export function returnFocusOnClose(el) {
  const opener = document.activeElement;
  el.addEventListener('hidden.bs.modal', () => {
    if (opener && opener.isConnected && typeof opener.focus === 'function') opener.focus();
  }, { once: true });
}

export function pager(page, pages, label) {
  const item = (p, text, disabled) => html`<li class="page-item${disabled ? ' disabled' : ''}">
      <button type="button" class="page-link" data-page="${p}" ${disabled ? html`disabled` : ''}>${text}</button></li>`;
  return html`<nav aria-label="${label} pages"><ul class="pagination pagination-sm flex-wrap">
    ${item(page - 1, 'Newer', page <= 1)}
    <li class="page-item disabled"><span class="page-link">Page ${page} of ${pages}</span></li>
    ${item(page + 1, 'Older', page >= pages)}</ul></nav>`;
}
