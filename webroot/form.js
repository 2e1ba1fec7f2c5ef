// The job form: create and edit, every field of a job, validated as the
// server validates it, saved with optimistic concurrency (If-Match).

import {
  main, esc, api, apiResponse, jobPath, fmtTime, describeCron, toast, soon, errorAlert,
} from './core.js';

export function jobForm(name) {
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
    if (ev.target.closest('[data-reload]')) { ev.preventDefault(); window.dispatchEvent(new Event('gdts:reload')); }
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
