// Who may do what, in the web UI: the sign-in page, the signed-in bar, what
// each role sees, and the admin's Tokens and Audit pages.
//
// The session is an HttpOnly cookie the server sets when a token signs in;
// this code never sees it, nor keeps the token. What a role may not do is
// hidden (elements marked data-need="operator" or data-need="admin"); the
// server refuses it anyway.

import { api, apiResponse, main, timeTag, fmtTime, toast, errorAlert, pager } from './core.js';
import { html, render } from './html.js';

const RANK = { viewer: 0, operator: 1, admin: 2 };

/** `{authEnabled, identity}` from the server (public, always 200). */
export async function currentSession() {
  return api('GET', '/session');
}

/** Marks the page with what the signed-in role may do, and shows who. */
export function applyIdentity(session) {
  const role = session.identity ? session.identity.role : 'viewer';
  document.body.classList.toggle('can-operate', RANK[role] >= RANK.operator);
  document.body.classList.toggle('can-admin', RANK[role] >= RANK.admin);
  const who = document.getElementById('who');
  if (!session.authEnabled) {
    render(who, html`<span class="badge text-bg-warning" title="GDTS_AUTH=off: anyone who reaches the manager is admin">auth off</span>`);
    return;
  }
  const id = session.identity;
  // Behind Identity-Aware Proxy there is nothing to sign out of here.
  const signOut = id.via === 'iap' ? ''
    : html`<button type="button" class="btn btn-sm btn-outline-secondary" id="sign-out">Sign out</button>`;
  render(who, html`<span class="navbar-text small me-2" data-identity data-role="${id.role}">
      <span class="fw-semibold">${id.name}</span> · ${id.role}</span>${signOut}`);
  if (!signOut) return;
  document.getElementById('sign-out').addEventListener('click', async () => {
    try { await api('DELETE', '/session'); } catch { /* signed out either way */ }
    // The reload shows the sign-in page (and, after it, this same page).
    location.reload();
  });
}

/** The sign-in page; reloads the UI once a token is accepted. */
export function signInPage(message) {
  document.body.classList.remove('can-operate', 'can-admin');
  document.getElementById('who').replaceChildren();
  render(main, html`
    <div class="row justify-content-center py-4">
      <div class="col-sm-10 col-md-7 col-lg-5">
        <h1 class="h3 mb-3">Sign in</h1>
        ${message ? html`<div class="alert alert-info" role="status">${message}</div>` : ''}
        <form id="sign-in" novalidate>
          <label class="form-label" for="token">Token</label>
          <input class="form-control" type="password" id="token" name="token" autocomplete="current-password"
            aria-describedby="token-help token-error" required>
          <div class="invalid-feedback" id="token-error"></div>
          <div class="form-text" id="token-help">An API token (an admin creates them on the Tokens page),
            or the bootstrap admin token (<code>GDTS_ADMIN_TOKEN</code>). It stays in this browser only as a
            session cookie for 12 hours.</div>
          <button class="btn btn-primary mt-3" type="submit">Sign in</button>
        </form>
      </div>
    </div>`);
  const form = document.getElementById('sign-in');
  const input = document.getElementById('token');
  input.focus();
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    input.classList.remove('is-invalid');
    const token = input.value.trim();
    if (!token) {
      input.classList.add('is-invalid');
      document.getElementById('token-error').textContent = 'Paste a token.';
      return;
    }
    try {
      await apiResponse('POST', '/session', { token });
      location.reload();
    } catch (e) {
      input.classList.add('is-invalid');
      document.getElementById('token-error').textContent = e.message;
      input.focus();
    }
  });
  return {};
}

/** API tokens: create (the value is shown once), list, revoke. Admin only. */
export function tokensPage() {
  render(main, html`
    <h1 class="h3 mb-3">API tokens</h1>
    <form class="row g-2 align-items-end mb-3" id="new-token" novalidate>
      <div class="col-sm-6 col-md-4">
        <label class="form-label" for="token-name">Name</label>
        <input class="form-control" id="token-name" maxlength="64" placeholder="e.g. ci-deployer" aria-describedby="token-name-error" required>
        <div class="invalid-feedback" id="token-name-error"></div>
      </div>
      <div class="col-sm-4 col-md-3">
        <label class="form-label" for="token-role">Role</label>
        <select class="form-select" id="token-role">
          <option value="viewer">viewer: reads</option>
          <option value="operator">operator: also runs, kills, pauses</option>
          <option value="admin">admin: also saves, deletes, tokens</option>
        </select>
      </div>
      <div class="col-auto"><button class="btn btn-primary" type="submit">Create token</button></div>
    </form>
    <div id="token-created"></div>
    <div id="tokens"></div>`);
  const holder = document.getElementById('tokens');
  async function load() {
    try {
      const tokens = await api('GET', '/tokens');
      render(holder, tokens.length ? html`
        <table class="table align-middle table-stack" aria-label="API tokens">
          <thead><tr><th scope="col">Name</th><th scope="col">Role</th><th scope="col">Id</th>
            <th scope="col">Created</th><th scope="col">By</th><th scope="col"><span class="visually-hidden">Actions</span></th></tr></thead>
          <tbody>${tokens.map((t) => html`
            <tr data-token="${t.id}">
              <td data-label="Name" class="fw-semibold text-break"><div class="cell">${t.name}</div></td>
              <td data-label="Role"><div class="cell">${t.role}</div></td>
              <td data-label="Id"><div class="cell"><code>${t.id}</code></div></td>
              <td data-label="Created"><div class="cell">${timeTag(t.createdAt)}</div></td>
              <td data-label="By" class="text-break"><div class="cell">${t.createdBy}</div></td>
              <td data-label="" class="actions"><div class="cell">
                <button type="button" class="btn btn-sm btn-outline-danger" data-revoke="${t.id}"
                  aria-label="Revoke ${t.name}">Revoke</button></div></td>
            </tr>`)}</tbody>
        </table>`
        : html`<p class="text-body-secondary">No API tokens yet. Only the bootstrap admin token can sign in.</p>`);
    } catch (e) {
      render(holder, errorAlert(e));
    }
  }
  document.getElementById('new-token').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const nameInput = document.getElementById('token-name');
    nameInput.classList.remove('is-invalid');
    try {
      const created = await api('POST', '/tokens', {
        name: nameInput.value.trim(),
        role: document.getElementById('token-role').value,
      });
      render(document.getElementById('token-created'), html`
        <div class="alert alert-success" role="status" data-new-token>
          <p class="mb-1">Token <strong>${created.name}</strong> (${created.role}) created. Copy it now: it is not shown again.</p>
          <code class="user-select-all text-break" data-token-value>${created.token}</code>
        </div>`);
      nameInput.value = '';
      load();
    } catch (e) {
      if (e.field === 'name' || e.status === 400) {
        nameInput.classList.add('is-invalid');
        document.getElementById('token-name-error').textContent = e.message;
        nameInput.focus();
      } else {
        toast(e.message, 'danger');
      }
    }
  });
  holder.addEventListener('click', async (ev) => {
    const b = ev.target.closest('button[data-revoke]');
    if (!b) return;
    const row = b.closest('tr');
    const name = row.querySelector('td').textContent.trim();
    if (!window.confirm(`Revoke token ${name}? Whoever uses it is signed out at once.`)) return;
    try {
      await api('DELETE', `/tokens/${encodeURIComponent(b.dataset.revoke)}`);
      toast(`Token ${name} revoked`, 'warning');
      load();
    } catch (e) {
      toast(e.message, 'danger');
    }
  });
  load();
  return {};
}

/** The audit trail: every change, newest first. Admin only. */
export function auditPage() {
  const PAGE_SIZE = 50;
  let page = 1;
  render(main, html`<h1 class="h3 mb-3">Audit trail</h1><div id="audit"></div>`);
  const holder = document.getElementById('audit');
  const changeOf = (e) => {
    if (!e.before && !e.after) return '';
    const show = (label, v) => (v == null ? '' : html`<div class="small fw-semibold mt-1">${label}</div><pre class="output small mb-1">${JSON.stringify(v, null, 2)}</pre>`);
    return html`<details><summary class="small">before / after</summary>${show('Before', e.before)}${show('After', e.after)}</details>`;
  };
  async function load() {
    try {
      const data = await api('GET', `/audit?${new URLSearchParams({ page, pageSize: PAGE_SIZE })}`);
      const pages = Math.max(1, Math.ceil(data.total / PAGE_SIZE));
      render(holder, data.items.length ? html`
        <table class="table align-middle table-stack" aria-label="Audit trail">
          <thead><tr><th scope="col">When</th><th scope="col">Who</th><th scope="col">Action</th>
            <th scope="col">Target</th><th scope="col">From</th></tr></thead>
          <tbody>${data.items.map((e) => html`
            <tr data-audit="${e.action}">
              <td data-label="When"><div class="cell" title="${fmtTime(e.at)}">${timeTag(e.at)}</div></td>
              <td data-label="Who" class="text-break"><div class="cell"><span class="fw-semibold">${e.actor}</span>
                ${e.role ? html`<span class="small text-body-secondary">${e.role} · ${e.via}</span>` : ''}</div></td>
              <td data-label="Action"><div class="cell"><code>${e.action}</code>${changeOf(e)}</div></td>
              <td data-label="Target" class="text-break"><div class="cell">${e.target}</div></td>
              <td data-label="From" class="text-break small"><div class="cell">${e.from}</div></td>
            </tr>`)}</tbody>
        </table>
        ${pages > 1 ? pager(page, pages, 'Audit trail') : ''}`
        : html`<p class="text-body-secondary">No changes recorded yet.</p>`);
    } catch (e) {
      render(holder, errorAlert(e));
    }
  }
  holder.addEventListener('click', (ev) => {
    const b = ev.target.closest('button[data-page]');
    if (!b || b.disabled) return;
    page = Number(b.dataset.page);
    load();
  });
  load();
  return {
    onEvent(type) {
      // Changes to jobs are audited: show them as they happen.
      if (type.startsWith('job.') && page === 1) load();
    },
  };
}
