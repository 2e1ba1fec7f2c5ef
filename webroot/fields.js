// The job's fields, once: for each, the form's input, how a job fills it and
// how the form reads it back into a job, and how the job page shows it. The
// form (form.js), the job page (job.js) and the jobs list (jobs.js) are all
// driven from FIELDS; adding a job field to the UI is one entry here (see
// "Adding a job field" in ARCHITECTURE.md).

import { describeCron } from './core.js';
import { html, join } from './html.js';

/** Label pairs (a worker's labels, a job's selector) as badges; '' for none. */
export function labelBadges(labels) {
  const badges = Object.entries(labels || {})
    .map(([k, v]) => html`<span class="badge rounded-pill text-bg-light border font-monospace">${k}=${v}</span>`);
  return badges.length ? join(badges, ' ') : '';
}

/** A job's schedule: the expression, a human reading, the zone. */
export function scheduleCell(job) {
  const description = describeCron(job.cronExpr);
  return html`<code class="cron">${job.cronExpr}</code>
    ${description && html`<div class="small text-body-secondary" data-cron-description>${description}</div>`}
    ${job.timezone && html`<div class="small text-body-secondary">${job.timezone}</div>`}`;
}

/** What a job runs, in one line (the jobs list). */
export const summary = (job) => (job.image ? `image ${job.image}` : job.command);

const hasPairs = (o) => !!o && Object.keys(o).length > 0;

// ---------- kinds of input ----------

/** The column around an input: label, control, help and error text. */
function cell(f, control) {
  const described = [f.help && `h-${f.key}`, `e-${f.key}`, f.describedBy].filter(Boolean).join(' ');
  return html`<div class="${f.col}" ${f.container && html`data-kind="container" hidden`}>
    <label class="form-label" for="f-${f.key}">${f.label}</label>
    ${control(described)}
    ${f.help && html`<div class="form-text" id="h-${f.key}">${f.help}</div>`}
    <div class="invalid-feedback" id="e-${f.key}"></div>
  </div>`;
}

/** The attributes every text-like input shares. */
const common = (f, described) => html`id="f-${f.key}" name="${f.key}" aria-describedby="${described}"
  ${f.placeholder && html`placeholder="${f.placeholder}"`} ${f.required && html`required`}`;

/** A one-line text input; `trim: false` keeps the text as typed. */
function text(key, label, o = {}) {
  const f = { key, label, col: 'col-12', trim: true, ...o };
  return {
    ...f,
    cells: (editing) => cell(f, (d) => html`<input class="form-control${f.mono ? ' font-monospace' : ''}" ${common(f, d)}
      autocomplete="off" spellcheck="false" ${f.pattern && html`pattern="${f.pattern}"`}
      ${f.list && html`list="${f.list}"`} ${editing && f.fixed && html`readonly`}>${f.datalist}`),
    fill: (el, job) => { el.value = job[key] ?? ''; },
    read: (el, spec) => {
      const v = f.trim ? el.value.trim() : el.value;
      if (v || f.required || f.keep) spec[key] = v;
    },
    show: f.show ?? ((job) => job[key] && html`<code>${job[key]}</code>`),
  };
}

/** A multi-line text input. */
function textarea(key, label, o = {}) {
  const base = text(key, label, o);
  return {
    ...base,
    cells: () => cell(base, (d) => html`<textarea class="form-control font-monospace" ${common(base, d)} rows="2"
      spellcheck="false"></textarea>`),
  };
}

/** A number; empty means unset. `unit` follows the value on the job page. */
function number(key, label, o = {}) {
  const f = { key, label, col: 'col-sm-6 col-md-4', step: 1, ...o };
  return {
    ...f,
    cells: () => cell(f, (d) => html`<input class="form-control" ${common(f, d)} type="number"
      ${f.min != null && html`min="${f.min}"`} ${f.max != null && html`max="${f.max}"`} step="${f.step}"
      inputmode="${f.step === 1 ? 'numeric' : 'decimal'}">`),
    fill: (el, job) => { el.value = job[key] ?? ''; },
    read: (el, spec, fail) => {
      if (el.value.trim() === '') {
        if (el.validity.badInput) fail(key, 'is not a number');
        return;
      }
      spec[key] = Number(el.value);
    },
    show: f.show ?? ((job) => (job[key] ? `${job[key]}${f.unit ?? ''}` : f.unset)),
  };
}

/** One of `options` ([value, text] pairs); the first is the default, left
 *  out of the job. */
function select(key, label, options, o = {}) {
  const f = { key, label, col: 'col-sm-6 col-md-4', ...o };
  const [dflt] = options[0];
  return {
    ...f,
    cells: () => cell(f, (d) => html`<select class="form-select" id="f-${key}" name="${key}" aria-describedby="${d}">
      ${options.map(([v, t]) => html`<option value="${v}">${t}</option>`)}</select>`),
    fill: (el, job) => { el.value = job[key] || dflt; },
    read: (el, spec) => { if (el.value !== dflt) spec[key] = el.value; },
    show: (job) => job[key] || dflt,
  };
}

/** A checkbox; unticked is left out of the job. */
function check(key, label, o = {}) {
  const f = { key, label, col: 'col-sm-6 col-md-4 d-flex align-items-end', ...o };
  return {
    ...f,
    cells: () => html`<div class="${f.col}"><div class="form-check mb-2">
      <input class="form-check-input" type="checkbox" id="f-${key}" name="${key}" aria-describedby="e-${key}">
      <label class="form-check-label" for="f-${key}">${label}</label>
      <div class="invalid-feedback" id="e-${key}"></div></div></div>`,
    fill: (el, job) => { el.checked = !!job[key]; },
    read: (el, spec) => { if (el.checked) spec[key] = true; },
    show: () => null,
  };
}

/** KEY=value pairs, one per `separator`; `bad(item, index)` says why an item
 *  is refused. One per line: a textarea, and values kept as typed; otherwise
 *  one text input, and values trimmed. */
function pairs(key, label, separator, bad, o = {}) {
  const f = { key, label, ...o };
  const perLine = separator === '\n';
  const base = perLine ? textarea(key, label, f) : text(key, label, { ...f, mono: true });
  return {
    ...base,
    fill: (el, job) => {
      el.value = Object.entries(job[key] || {}).map(([k, v]) => `${k}=${v}`).join(perLine ? '\n' : ', ');
    },
    read: (el, spec, fail) => {
      const out = {};
      for (const [i, item] of el.value.split(separator).entries()) {
        if (!item.trim()) continue;
        const eq = item.indexOf('=');
        if (eq <= 0) { fail(key, bad(item, i)); return; }
        out[item.slice(0, eq).trim()] = perLine ? item.slice(eq + 1) : item.slice(eq + 1).trim();
      }
      if (hasPairs(out)) spec[key] = out;
    },
  };
}

// ---------- the table ----------

const ZONES = ['UTC', ...(typeof Intl.supportedValuesOf === 'function' ? Intl.supportedValuesOf('timeZone') : [])];

/** The notify field: webhooks, one per line, and the statuses to send on. */
const notify = {
  key: 'notify',
  term: 'Notifies',
  focus: 'webhooks',
  cells: () => html`<div class="col-md-8">
      <label class="form-label" for="f-webhooks">Notify webhooks</label>
      <textarea class="form-control font-monospace" id="f-webhooks" name="webhooks" rows="2" spellcheck="false" placeholder="https://hooks.example.com/..., one per line" aria-describedby="h-webhooks e-notify"></textarea>
      <div class="form-text" id="h-webhooks">A JSON POST (Slack-compatible) for each run that ends with one of the statuses below.</div>
      <div class="invalid-feedback" id="e-notify"></div>
    </div>
    <div class="col-md-4">
      <label class="form-label" for="f-notifyOn">Notify on</label>
      <input class="form-control" id="f-notifyOn" name="notifyOn" autocomplete="off" spellcheck="false" placeholder="failed, timed-out, lost, missed">
    </div>`,
  fill: (el, job) => {
    el.value = (job.notify?.webhooks || []).join('\n');
    document.getElementById('f-notifyOn').value = (job.notify?.on || []).join(', ');
  },
  read: (el, spec) => {
    const webhooks = el.value.split('\n').map((u) => u.trim()).filter(Boolean);
    if (!webhooks.length) return;
    spec.notify = { webhooks };
    const on = document.getElementById('f-notifyOn').value.split(',').map((s) => s.trim()).filter(Boolean);
    if (on.length) spec.notify.on = on;
  },
  show: (job) => job.notify && html`<span data-notify>${(job.notify.on || []).join(', ')} → ${join(job.notify.webhooks
    .map((u) => html`<code>${u.replace(/^(https?:\/\/[^/?#]+).*$/, '$1/…')}</code>`), ' ')}</span>`,
};

/** Every job field the UI shows, in the form's order (and the job page's).
 *  Each has `cells(editing)`: its form columns, with the input `f-KEY` (or
 *  `f-FOCUS`) and the error text `e-KEY`; `fill(input, job)`; `read(input,
 *  spec, fail)`, which sets the field on `spec` or calls `fail(key,
 *  message)`; `show(job)`: the job page's value (markup or text, nothing for
 *  none) under `term` (else `label`). `container`: container jobs only. */
export const FIELDS = [
  text('name', 'Name', {
    col: 'col-md-6', required: true, fixed: true, pattern: '[A-Za-z0-9._-]+',
    help: 'Letters, digits, “.”, “_” and “-”. A job keeps its name.', show: () => null,
  }),
  text('image', 'Image', { container: true, placeholder: 'e.g. busybox:1.36' }),
  textarea('command', 'Command', {
    trim: false, keep: true,
    help: html`Run by <code>sh -c</code>; in a container, optional (the image's own command otherwise).`,
  }),
  number('cpus', 'CPUs', {
    container: true, col: 'col-sm-6 col-md-3', step: 0.01, min: 0.01, placeholder: 'no limit', unset: 'no limit',
  }),
  number('memoryMb', 'Memory (MB)', {
    container: true, col: 'col-sm-6 col-md-3', min: 6, placeholder: 'no limit', term: 'Memory', unit: ' MB', unset: 'no limit',
  }),
  text('network', 'Network', {
    container: true, col: 'col-sm-6 col-md-3', placeholder: 'none', list: 'networks',
    datalist: html`<datalist id="networks"><option value="none"><option value="bridge"><option value="host"></datalist>`,
    show: (job) => job.network || 'none',
  }),
  select('pull', 'Pull image', [['if-not-present', 'if not present'], ['always', 'always'], ['never', 'never']], {
    container: true, col: 'col-sm-6 col-md-3',
  }),
  pairs('env', 'Environment', '\n', (_, i) => `line ${i + 1} is not KEY=value`, {
    placeholder: 'KEY=value, one per line',
    show: (job) => hasPairs(job.env) && html`<code>${Object.entries(job.env).map(([k, v]) => `${k}=${v}`).join(' ')}</code>`,
  }),
  pairs('selector', 'Run only on workers labelled', ',', (item) => `"${item.trim()}" is not key=value`, {
    placeholder: 'gpu=true, zone=a', term: 'Runs on workers with',
    help: html`Pairs a worker's <code>GDTS_WORKER_LABELS</code> must all include; empty: any worker.`,
    show: (job) => hasPairs(job.selector) && html`<span data-selector>${labelBadges(job.selector)}</span>${job.unmatched
      && html` <span class="text-warning-emphasis">(no live worker has them)</span>`}`,
  }),
  text('cronExpr', 'Schedule (cron)', {
    col: 'col-md-7', required: true, mono: true, placeholder: '*/5 * * * * * *', term: 'Schedule',
    describedBy: 'cron-preview',
    help: html`7 fields <code>sec min hour day month weekday year</code>; 6 (no year) and 5 (classic crontab) work too.`,
    show: scheduleCell,
  }),
  text('timezone', 'Time zone', {
    col: 'col-md-5', placeholder: 'UTC', list: 'zones',
    datalist: html`<datalist id="zones">${ZONES.map((z) => html`<option value="${z}">`)}</datalist>`,
    // Shown with the schedule.
    show: () => null,
  }),
  select('overlap', 'If still running at the next tick', [
    ['allow', 'run anyway (allow)'], ['forbid', 'skip the tick (forbid)'], ['replace', 'kill it, run the new one (replace)'],
  ], { term: 'Overlap' }),
  number('timeoutSeconds', 'Timeout (s)', { min: 1, placeholder: 'none', term: 'Timeout', unit: ' s', unset: 'none' }),
  number('catchUpSeconds', 'Catch up missed ticks within (s)', {
    min: 0, placeholder: '0 (never)', term: 'Catch-up window', unit: ' s', unset: 'none',
  }),
  number('retries', 'Retries on failure', { min: 0, max: 10, placeholder: '0', term: 'Retries', show: (job) => `${job.retries || 0}` }),
  number('retryBackoffSeconds', 'First retry after (s)', {
    min: 1, placeholder: '10, doubling', term: 'First retry after',
    show: (job) => job.retries > 0 && `${job.retryBackoffSeconds || 10} s, doubling`,
  }),
  check('paused', 'Paused (saved, not scheduled)'),
  notify,
];

/** The field an API error names (`notify.webhooks[0]` is notify's). */
export const fieldOf = (name) => name && FIELDS.find((f) => name === f.key || name.startsWith(`${f.key}.`) || name.startsWith(`${f.key}[`));

/** The job page's rows: [term, value] for each field with something to show. */
export function details(job) {
  return FIELDS
    .filter((f) => !f.container || job.image)
    .map((f) => [f.term ?? f.label, f.show(job)])
    .filter(([, v]) => v !== undefined && v !== null && v !== '' && v !== false);
}
