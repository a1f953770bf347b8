// "My desktops": the signed-in user's desktop claims and the pools they may claim from,
// read and changed through this server's /ui/desktops API, which calls the Kubernetes API
// with the user's own token. Everything the API returns is put on the page as text
// (textContent, dataset), never as HTML.

const $ = (id) => document.getElementById(id);
const NS_KEY = 'ironvisor.desktopNamespaces';
let timer = null;
let generation = 0; // a newer load makes older answers stale

function cell(tr, text, title) {
  const td = document.createElement('td');
  td.textContent = text == null ? '' : String(text);
  if (title) td.title = String(title);
  tr.append(td);
  return td;
}

function button(text, cls, onClick) {
  const b = document.createElement('button');
  b.type = 'button';
  b.textContent = text;
  b.className = cls;
  b.addEventListener('click', onClick);
  return b;
}

function deskError(msg) { $('desk-error').textContent = msg || ''; }

async function call(method, url, token, body) {
  const headers = { Authorization: 'Bearer ' + token };
  if (body) headers['Content-Type'] = 'application/json';
  const r = await fetch(url, { method, headers, body: body ? JSON.stringify(body) : undefined });
  let json = {};
  try { json = await r.json(); } catch (_) { /* an empty or non-JSON body */ }
  return { ok: r.ok, status: r.status, body: json };
}

function since(iso) {
  if (!iso) return '';
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : d.toLocaleString();
}

function claimRow(c, ctx) {
  const tr = document.createElement('tr');
  tr.dataset.claim = c.name;
  tr.dataset.phase = c.phase;
  cell(tr, c.namespace);
  cell(tr, c.pool);
  cell(tr, c.vm || '');
  cell(tr, c.releasing ? 'Releasing' : c.phase);
  cell(tr, since(c.since), c.since);
  cell(tr, [c.reason, c.message].filter(Boolean).join(': '));
  const actions = cell(tr, '');
  if (c.phase === 'Bound' && c.vm && !c.releasing) {
    actions.append(button('Connect', 'connect-desktop', () => {
      location.hash = `#/${encodeURIComponent(c.namespace)}/${encodeURIComponent(c.vm)}/vnc`;
    }), ' ');
  }
  if (!c.releasing) {
    actions.append(button('Release', 'release-desktop', async () => {
      const r = await call('DELETE',
        `/ui/desktops/${encodeURIComponent(c.namespace)}/${encodeURIComponent(c.name)}`, ctx.token);
      if (!r.ok) deskError(r.body.message || `release failed (${r.status})`);
      ctx.reload();
    }));
  }
  return tr;
}

function poolRow(p, section, ctx) {
  const tr = document.createElement('tr');
  tr.dataset.pool = p.name;
  cell(tr, p.namespace);
  cell(tr, p.name);
  cell(tr, p.assignment);
  cell(tr, `${p.spare} of ${p.size}`);
  cell(tr, [p.reason, p.message].filter(Boolean).join(': '));
  const actions = cell(tr, '');
  if (section.canClaim) {
    actions.append(button('Get a desktop', 'get-desktop', async () => {
      deskError('');
      const r = await call('POST', '/ui/desktops', ctx.token,
        { namespace: p.namespace, pool: p.name });
      if (!r.ok) deskError(r.body.message || `claim failed (${r.status})`);
      ctx.reload();
    }));
  }
  return tr;
}

function render(body, ctx) {
  $('me').textContent = body.user ? `(${body.user})` : '';
  const claims = $('my-desktops').querySelector('tbody');
  const pools = $('pools').querySelector('tbody');
  const rowsC = [];
  const rowsP = [];
  const problems = [];
  let busy = false;
  for (const s of body.namespaces || []) {
    if (s.error) { problems.push(`${s.namespace}: ${s.error}`); continue; }
    for (const c of s.claims || []) {
      rowsC.push(claimRow(c, ctx));
      busy = busy || c.phase === 'Pending' || c.releasing;
    }
    for (const p of s.pools || []) rowsP.push(poolRow(p, s, ctx));
  }
  claims.replaceChildren(...rowsC);
  pools.replaceChildren(...rowsP);
  $('desk-empty').hidden = rowsC.length > 0;
  deskError(problems.join('\n'));
  $('desktops').dataset.loaded = String(ctx.gen);
  return busy;
}

/// Loads and shows the user's desktops; polls while a claim waits or is being released.
export async function loadDesktops(token, onUnauthorized) {
  stopDesktops();
  const gen = ++generation;
  const ns = localStorage.getItem(NS_KEY) || '';
  if ($('desk-namespaces').value === '' && ns) $('desk-namespaces').value = ns;
  const ctx = { token, gen, reload: () => loadDesktops(token, onUnauthorized) };
  const q = $('desk-namespaces').value.trim();
  const r = await call('GET', '/ui/desktops' + (q ? '?namespaces=' + encodeURIComponent(q) : ''), token);
  if (gen !== generation) return;
  if (!r.ok) {
    if (r.status === 401) { onUnauthorized(); return; }
    $('my-desktops').querySelector('tbody').replaceChildren();
    $('pools').querySelector('tbody').replaceChildren();
    deskError(r.body.message || `listing desktops failed (${r.status})`);
    $('desktops').dataset.loaded = String(gen);
    return;
  }
  if (render(r.body, ctx)) timer = setTimeout(ctx.reload, 2000);
}

/// Stops polling (the page shows something else).
export function stopDesktops() {
  if (timer) { clearTimeout(timer); timer = null; }
  generation++;
}

/// Wires the namespace form; `token()` and `onUnauthorized()` come from the page.
export function initDesktops(token, onUnauthorized) {
  $('desk-ns-form').addEventListener('submit', (e) => {
    e.preventDefault();
    localStorage.setItem(NS_KEY, $('desk-namespaces').value.trim());
    loadDesktops(token(), onUnauthorized);
  });
}
