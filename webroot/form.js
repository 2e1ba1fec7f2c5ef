// The job form: create and edit, every field of a job (fields.js), validated
// as the server validates it, saved with optimistic concurrency (If-Match).

import {
  main, api, apiResponse, jobPath, fmtTime, describeCron, toast, soon, errorAlert,
} from './core.js';
import { FIELDS, fieldOf } from './fields.js';
import { html, render } from './html.js';

/** Shell command or container: which of the fields apply. */
const KIND = html`<fieldset class="col-md-6">
    <legend class="form-label fs-6 mb-2">Runs as</legend>
    <div class="form-check form-check-inline">
      <input class="form-check-input" type="radio" name="kind" id="f-kind-shell" value="shell" checked>
      <label class="form-check-label" for="f-kind-shell">Shell command</label>
    </div>
    <div class="form-check form-check-inline">
      <input class="form-check-input" type="radio" name="kind" id="f-kind-container" value="container">
      <label class="form-check-label" for="f-kind-container">Container</label>
    </div>
  </fieldset>`;

const PREVIEW_HINT = html`<span class="text-body-secondary">Type a schedule to see when it fires.</span>`;

/** When the schedule fires, kept up to date while typing. */
const PREVIEW = html`<div class="col-12"><div id="cron-preview" class="card card-body py-2 small" aria-live="polite">${PREVIEW_HINT}</div></div>`;

export function jobForm(name) {
  const editing = name != null;
  render(main, html`
    <nav aria-label="breadcrumb"><ol class="breadcrumb">
      <li class="breadcrumb-item"><a href="#/jobs">Jobs</a></li>
      ${editing && html`<li class="breadcrumb-item"><a href="#/jobs/${encodeURIComponent(name)}">${name}</a></li>`}
      <li class="breadcrumb-item active" aria-current="page">${editing ? 'Edit' : 'New job'}</li></ol></nav>
    <h1 class="h3 mb-3">${editing ? `Edit ${name}` : 'New job'}</h1>
    <div id="form-alert"></div>
    <form id="job-form" novalidate class="row g-3" style="max-width: 60rem">
      ${FIELDS.map((f) => [f.cells(editing), f.key === 'name' && KIND, f.key === 'timezone' && PREVIEW])}
      <div class="col-12 d-flex gap-2">
        <button type="submit" class="btn btn-primary" id="save">${editing ? 'Save changes' : 'Create job'}</button>
        <a class="btn btn-outline-secondary" href="${editing ? `#/jobs/${encodeURIComponent(name)}` : '#/jobs'}">Cancel</a>
      </div>
    </form>`);

  const form = document.getElementById('job-form');
  document.getElementById('form-alert').addEventListener('click', (ev) => {
    if (ev.target.closest('[data-reload]')) { ev.preventDefault(); window.dispatchEvent(new Event('gdts:reload')); }
  });
  /** The ETag of the job being edited, as it was when the form was filled. */
  let version = null;
  const $ = (id) => document.getElementById(`f-${id}`);
  /** A field's input. */
  const input = (f) => $(f.focus ?? f.key);

  function setKind(kind) {
    for (const el of form.querySelectorAll('[data-kind="container"]')) el.hidden = kind !== 'container';
  }
  for (const r of form.querySelectorAll('input[name="kind"]')) r.addEventListener('change', () => setKind(r.value));

  const alertBox = document.getElementById('form-alert');
  function clearErrors() {
    alertBox.replaceChildren();
    for (const el of form.querySelectorAll('.is-invalid')) el.classList.remove('is-invalid');
  }

  /** Shows `message` on the input of the field the API named, or above the
   *  form if none. */
  function fieldError(field, message) {
    const f = fieldOf(field);
    const el = f && input(f);
    if (el) {
      if (el.closest('[data-kind="container"]')) setKind('container');
      el.classList.add('is-invalid');
      document.getElementById(`e-${f.key}`).textContent = message;
      el.focus();
    } else {
      render(alertBox, html`<div class="alert alert-danger" role="alert" tabindex="-1">${message}</div>`);
      alertBox.querySelector('.alert').focus();
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
      render(preview, PREVIEW_HINT);
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
      render(preview, html`${description && html`<div class="fw-semibold" data-cron-description>${description}${timezone && ` (${timezone})`}</div>`}
        ${data.fireTimes.length
          ? html`<div>Next: <ul class="fire-times d-inline" data-preview-times>${data.fireTimes.map((t) => html`<li class="d-inline-block me-3">${fmtTime(t, timezone, true)}</li>`)}</ul></div>`
          : html`<div class="text-warning">It never fires again.</div>`}`);
    } catch (e) {
      if (seq !== previewSeq || !form.isConnected) return;
      if (e.status === 422 || e.status === 400) {
        render(preview, html`<span class="text-body-secondary">No preview: the schedule is not valid yet.</span>`);
        const field = e.field === 'timezone' ? 'timezone' : 'cronExpr';
        $(field).classList.add('is-invalid');
        document.getElementById(`e-${field}`).textContent = e.message;
      } else {
        render(preview, html`<span class="text-danger">${e.message}</span>`);
      }
    }
  }
  $('cronExpr').addEventListener('input', () => soon('preview', updatePreview, 300));
  $('timezone').addEventListener('input', () => soon('preview', updatePreview, 300));

  /** The job as loaded for editing (none for a new job). */
  let loaded = null;

  function fill(j) {
    const container = !!j.image;
    $(container ? 'kind-container' : 'kind-shell').checked = true;
    setKind(container ? 'container' : 'shell');
    for (const f of FIELDS) f.fill(input(f), j);
    loaded = j;
    updatePreview();
  }

  /** Fields the API adds to a job it lists: never sent back. */
  const DERIVED = new Set(['running', 'nextFireTimes', 'lastRun', 'unmatched']);

  /** The job the form describes, or null after marking a field invalid. */
  function read() {
    const container = form.querySelector('input[name="kind"]:checked').value === 'container';
    const spec = {};
    let failed = false;
    const fail = (field, message) => { if (!failed) fieldError(field, message); failed = true; };
    for (const f of FIELDS) {
      if (f.container && !container) continue;
      f.read(input(f), spec, fail);
      if (failed) return null;
    }
    // Fields this form does not show stay as they were.
    const shown = new Set(FIELDS.map((f) => f.key));
    for (const [k, v] of Object.entries(loaded || {})) {
      if (!shown.has(k) && !DERIVED.has(k) && !(k in spec)) spec[k] = v;
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
        render(alertBox, html`<div class="alert alert-warning" role="alert" tabindex="-1">
          ${name} was changed (or deleted) by someone else after this form was filled, so nothing was saved.
          <a class="alert-link" href="#/jobs/${encodeURIComponent(name)}/edit" data-reload>Load the current version</a> and make your change again.</div>`);
        alertBox.querySelector('.alert').focus();
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
      render(alertBox, errorAlert(e));
      form.hidden = true;
    });
  } else {
    $('name').focus();
  }
  return {};
}
