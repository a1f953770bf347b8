// The browser console: token login (sessionStorage), a VM list read with the user's own
// token, noVNC for the graphical console and xterm.js for the serial one. Both WebSockets
// go to this server with the token in the base64url.bearer.authorization.k8s.io subprotocol.
import RFB from '/novnc/core/rfb.js';
import { initDesktops, loadDesktops, stopDesktops } from '/static/portal.js';

const API = '/apis/subresources.ironvisor.io/v1';
const $ = (id) => document.getElementById(id);
let active = null; // {close()} of the open console

function token() { return sessionStorage.getItem('ironvisor.token'); }

function b64url(s) {
  const bytes = new TextEncoder().encode(s);
  let bin = '';
  bytes.forEach((b) => { bin += String.fromCharCode(b); });
  return btoa(bin).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

function protocols() {
  return ['binary.ironvisor.io', 'base64url.bearer.authorization.k8s.io.' + b64url(token())];
}

function show(id) {
  // The home view: the user's desktops above the VM list.
  const visible = id === 'picker' ? ['desktops', 'picker'] : [id];
  for (const s of ['login', 'desktops', 'picker', 'console']) $(s).hidden = !visible.includes(s);
  $('logout').hidden = id === 'login';
}

function error(msg) { $('error').textContent = msg || ''; }
function status(msg) { $('status').textContent = msg; $('status').dataset.state = msg; }

async function listVms() {
  error('');
  const ns = $('namespace').value.trim();
  const url = '/ui/virtualmachines' + (ns ? '?namespace=' + encodeURIComponent(ns) : '');
  const r = await fetch(url, { headers: { Authorization: 'Bearer ' + token() } });
  const body = await r.json();
  if (!r.ok) {
    if (r.status === 401) { sessionStorage.removeItem('ironvisor.token'); route(); }
    error(body.message || r.statusText);
    return;
  }
  const tbody = $('vms').querySelector('tbody');
  tbody.replaceChildren();
  for (const vm of body.items) {
    const tr = document.createElement('tr');
    for (const v of [vm.namespace, vm.name, vm.phase || '', vm.node || '']) {
      const td = document.createElement('td');
      td.textContent = v;
      tr.append(td);
    }
    const td = document.createElement('td');
    const link = (kind, text) => {
      const a = document.createElement('a');
      a.href = `#/${encodeURIComponent(vm.namespace)}/${encodeURIComponent(vm.name)}/${kind}`;
      a.textContent = text;
      a.className = 'connect-' + kind;
      td.append(a, ' ');
    };
    link('serial', 'Serial');
    if (vm.graphics) link('vnc', 'Graphical');
    tr.append(td);
    tbody.append(tr);
  }
}

function openVnc(url) {
  const rfb = new RFB($('screen'), url, { wsProtocols: protocols() });
  rfb.scaleViewport = true;
  rfb.addEventListener('connect', () => status('connected'));
  rfb.addEventListener('disconnect', (e) => status(e.detail.clean ? 'disconnected' : 'failed'));
  rfb.addEventListener('securityfailure', (e) => error('VNC security failure: ' + e.detail.reason));
  return { close() { rfb.disconnect(); $('screen').replaceChildren(); } };
}

function openSerial(url) {
  const term = new window.Terminal({ convertEol: false, cursorBlink: true });
  term.open($('terminal'));
  const ws = new WebSocket(url, protocols());
  ws.binaryType = 'arraybuffer';
  ws.onopen = () => { status('connected'); term.focus(); };
  ws.onclose = (e) => status(e.wasClean ? 'disconnected' : 'failed');
  ws.onerror = () => error('the console connection failed (is the VM running, may you open it?)');
  ws.onmessage = (e) => term.write(new Uint8Array(e.data));
  const enc = new TextEncoder();
  term.onData((d) => { if (ws.readyState === WebSocket.OPEN) ws.send(enc.encode(d)); });
  return { close() { ws.close(); term.dispose(); $('terminal').replaceChildren(); } };
}

function loggedOut() { sessionStorage.removeItem('ironvisor.token'); route(); }

function route() {
  stopDesktops();
  if (active) { active.close(); active = null; }
  error('');
  if (!token()) { show('login'); return; }
  const m = location.hash.match(/^#\/([^/]+)\/([^/]+)\/(serial|vnc)$/);
  if (!m) { show('picker'); loadDesktops(token(), loggedOut); listVms(); return; }
  const [ns, name, kind] = [decodeURIComponent(m[1]), decodeURIComponent(m[2]), m[3]];
  show('console');
  $('title').textContent = `${ns}/${name} (${kind})`;
  status('connecting');
  const sub = kind === 'vnc' ? 'vnc' : 'console';
  const url = `wss://${location.host}${API}/namespaces/${encodeURIComponent(ns)}` +
    `/virtualmachines/${encodeURIComponent(name)}/${sub}`;
  active = kind === 'vnc' ? openVnc(url) : openSerial(url);
}

$('login-form').addEventListener('submit', (e) => {
  e.preventDefault();
  sessionStorage.setItem('ironvisor.token', $('token').value.trim());
  $('token').value = '';
  route();
});
initDesktops(token, loggedOut);
$('ns-form').addEventListener('submit', (e) => { e.preventDefault(); listVms(); });
$('logout').addEventListener('click', () => { sessionStorage.removeItem('ironvisor.token'); location.hash = ''; route(); });
$('back').addEventListener('click', (e) => { e.preventDefault(); location.hash = ''; });
window.addEventListener('hashchange', route);
route();
