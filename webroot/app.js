// The GDTS web UI: a page per hash route, data from /api/v1, live updates
// from the server-sent event stream. Plain modules, no build step; Bootstrap
// (window.bootstrap) and cronstrue (window.cronstrue) come from node_modules.


import { API, main, api, pending, errorAlert } from './core.js';
import { render } from './html.js';
import { currentSession, applyIdentity, signInPage, tokensPage, auditPage } from './access.js';
import { jobRunsChart, overviewPage } from './charts.js';
import { jobsPage } from './jobs.js';
import { jobPage } from './job.js';
import { workersPage } from './workers.js';
import { jobForm } from './form.js';

// ---------- routing and the event stream ----------

let current = null;

function route() {
  if (current && current.dispose) current.dispose();
  // Work the previous page scheduled is dropped with it.
  for (const timer of pending.values()) clearTimeout(timer);
  pending.clear();
  const hash = location.hash.replace(/^#\/?/, '');
  // A hand-typed address may hold a broken %-escape: keep that part as typed.
  const decode = (part) => { try { return decodeURIComponent(part); } catch { return part; } };
  const parts = hash.split('/').map(decode);
  let section = 'jobs';
  if (parts[0] === 'overview') {
    section = 'overview';
    current = overviewPage();
    document.title = 'Overview · GDTS';
  } else if (parts[0] === 'workers') {
    section = 'workers';
    current = workersPage();
    document.title = 'Workers · GDTS';
  } else if (parts[0] === 'tokens') {
    section = 'tokens';
    current = tokensPage();
    document.title = 'Tokens · GDTS';
  } else if (parts[0] === 'audit') {
    section = 'audit';
    current = auditPage();
    document.title = 'Audit · GDTS';
  } else if (parts[0] === 'jobs' && parts[1] === 'new' && parts.length === 2) {
    current = jobForm(null);
    document.title = 'New job · GDTS';
  } else if (parts[0] === 'jobs' && parts[1] && parts[2] === 'edit') {
    current = jobForm(parts[1]);
    document.title = `Edit ${parts[1]} · GDTS`;
  } else if (parts[0] === 'jobs' && parts[1]) {
    current = jobPage(parts[1]);
    document.title = `${parts[1]} · GDTS`;
  } else {
    current = jobsPage();
    document.title = 'Jobs · GDTS';
  }
  for (const a of document.querySelectorAll('[data-nav]')) {
    if (a.dataset.nav === section) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
    a.classList.toggle('active', a.dataset.nav === section);
  }
}

const live = document.getElementById('live');
function setLive(state) {
  const [text, cls] = {
    open: ['Live', 'text-bg-success'],
    connecting: ['Reconnecting…', 'text-bg-warning'],
  }[state];
  live.textContent = text;
  live.className = `badge rounded-pill ${cls}`;
  live.dataset.state = state;
}

let events = null;
function connect(again = false) {
  if (signedOut) return;
  events = new EventSource(`${API}/events`);
  events.addEventListener('open', () => {
    setLive('open');
    // A new stream starts from now: what happened meanwhile is re-read.
    if (again && current && current.onEvent) current.onEvent('reset', {});
    again = false;
  });
  events.addEventListener('error', () => {
    setLive('connecting');
    // EventSource retries by itself, resuming with Last-Event-ID, unless
    // the server answered with an error; then start over a little later.
    if (events.readyState === EventSource.CLOSED) {
      events.close();
      // A 401 here means the session ended: the next API call (the page's
      // reload on `reset`) finds out and shows the sign-in page.
      if (current && current.onEvent) current.onEvent('reset', {});
      setTimeout(() => connect(true), 3000);
    }
  });
  const types = ['job.saved', 'job.deleted', 'run.started', 'run.finished',
    'worker.joined', 'worker.updated', 'worker.left', 'reset'];
  for (const type of types) {
    events.addEventListener(type, (ev) => {
      let data = {};
      try { data = JSON.parse(ev.data); } catch { /* keep {} */ }
      if (current && current.onEvent) current.onEvent(type, data);
    });
  }
}

let signedOut = false;
function showSignIn(message) {
  signedOut = true;
  if (events) events.close();
  if (current && current.dispose) current.dispose();
  live.hidden = true;
  current = signInPage(message);
}

// Any API call answered 401 means the session ended.
// The job form's "load the current version".
window.addEventListener('gdts:reload', () => route());

window.addEventListener('gdts:signed-out', () => {
  if (!signedOut) showSignIn('Your session has ended (signed out, expired, or its token was revoked). Sign in again.');
});

async function start() {
  let session;
  try {
    session = await currentSession();
  } catch (e) {
    render(main, errorAlert(e));
    return;
  }
  if (session.authEnabled && !session.identity) {
    showSignIn();
    return;
  }
  applyIdentity(session);
  window.addEventListener('hashchange', () => {
    if (signedOut) return;
    route();
    main.focus({ preventScroll: true });
  });
  route();
  connect();
}

start();
