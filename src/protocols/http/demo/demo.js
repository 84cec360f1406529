// The live presence demo: everything shown comes from the SDK's view (client.contacts, client.roster),
// re-rendered on its events, so the page is right after a reconnect without any code of its own.
import { PresencedClient, PresencedError } from '/demo/sdk/index.js';

const LABEL = {
  available: 'Available',
  chat: 'Free to chat',
  away: 'Away',
  xa: 'Extended away',
  dnd: 'Do not disturb',
  offline: 'Offline',
};

const $ = (id) => document.getElementById(id);
const wsUrl = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`;

/** @type {PresencedClient | null} */
let client = null;

function el(tag, props = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === 'class') e.className = v;
    else if (k.includes('-')) e.setAttribute(k, v);
    else e[k] = v;
  }
  for (const c of children) e.append(c);
  return e;
}

function ago(date) {
  const s = Math.max(0, Math.round((Date.now() - date.getTime()) / 1000));
  if (s < 60) return 'just now';
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return date.toLocaleDateString();
}

function message(e) {
  if (e instanceof PresencedError) {
    if (e.code === 'auth-failed') return 'Wrong account or password.';
    if (e.code === 'disconnected' || e.code === 'timeout') return 'Cannot reach the server. Is it running?';
    return e.message;
  }
  return String(e);
}

// ------------------------------------------------------------------ rendering

/** Contacts first by availability, then by name. */
const RANK = { chat: 0, available: 1, away: 2, xa: 3, dnd: 4, offline: 5, pending: 6 };

function contactRow(item) {
  const p = client.contacts.get(item.jid);
  const sees = item.subscription === 'to' || item.subscription === 'both';
  let show;
  let text;
  if (sees && p) {
    show = p.available ? p.show : 'offline';
    const parts = [];
    if (p.status) parts.push(p.status);
    else parts.push(LABEL[show]);
    if (!p.available && p.lastSeen) parts.push(`last seen ${ago(p.lastSeen)}`);
    text = parts.join(' · ');
  } else if (item.pendingOut) {
    show = 'pending';
    text = 'Waiting for approval';
  } else {
    show = 'offline';
    text = item.subscription === 'from' ? 'Sees you; does not share their presence' : 'Not sharing presence';
  }
  const name = item.name ?? item.jid.split('@')[0];
  const row = el(
    'li',
    { 'data-jid': item.jid, 'data-show': show, title: LABEL[show] ?? 'Pending' },
    el('span', { class: `dot ${show}`, 'aria-hidden': 'true' }),
    el('div', { class: 'who' }, el('div', { class: 'name' }, name, el('span', { class: 'jid' }, item.jid)), el('div', { class: 'status-text' }, text)),
  );
  if (!sees && !item.pendingOut) {
    row.append(el('button', { type: 'button', class: 'small ask', textContent: 'Ask to see', onclick: () => addContactJid(item.jid) }));
  }
  return { show, name, node: row };
}

function render() {
  if (!client) return;
  const items = [...client.roster.values()];

  const rows = items
    .filter((i) => i.subscription !== 'none' || i.pendingOut)
    .map(contactRow)
    .sort((a, b) => RANK[a.show] - RANK[b.show] || a.name.localeCompare(b.name));
  $('contacts').replaceChildren(...rows.map((r) => r.node));
  $('no-contacts').hidden = rows.length > 0;

  const requests = items.filter((i) => i.pendingIn);
  $('requests').replaceChildren(
    ...requests.map((i) =>
      el(
        'li',
        { 'data-jid': i.jid },
        el('span', { class: 'dot pending', 'aria-hidden': 'true' }),
        el('div', { class: 'who' }, el('div', { class: 'name' }, i.jid), el('div', { class: 'status-text' }, 'wants to see your presence')),
        el(
          'div',
          { class: 'actions' },
          el('button', { type: 'button', class: 'small primary approve', textContent: 'Approve', onclick: () => answer('approve', i.jid) }),
          el('button', { type: 'button', class: 'small deny', textContent: 'Deny', onclick: () => answer('deny', i.jid) }),
        ),
      ),
    ),
  );
  $('requests-card').hidden = requests.length === 0;
  $('request-count').textContent = String(requests.length);
}

function renderMe() {
  const p = client?.presence;
  const show = p ? (p.show ?? 'available') : 'offline';
  $('my-dot').className = `dot ${show}`;
  $('my-summary').textContent = p && p.status ? `${LABEL[show]} · ${p.status}` : LABEL[show];
}

function renderState(state) {
  const badge = $('conn-state');
  badge.dataset.state = state;
  badge.textContent = state === 'connected' ? 'connected' : state === 'reconnecting' ? 'reconnecting…' : 'disconnected';
}

// ------------------------------------------------------------------ actions

async function answer(kind, jid) {
  try {
    if (kind === 'approve') await client.approve(jid);
    else await client.deny(jid);
  } catch (e) {
    $('add-result').textContent = message(e);
  }
}

async function signIn(ev) {
  ev.preventDefault();
  const form = ev.currentTarget;
  const button = form.querySelector('button');
  const jid = form.jid.value.trim();
  $('login-error').hidden = true;
  button.disabled = true;
  const c = new PresencedClient({ url: wsUrl, jid, password: form.password.value });
  for (const type of ['presence', 'roster']) c.on(type, render);
  c.on('connected', () => renderState('connected'));
  c.on('reconnecting', () => renderState('reconnecting'));
  c.on('disconnected', (d) => renderState(d.willReconnect ? 'reconnecting' : 'closed'));
  c.on('error', (e) => {
    renderState('closed');
    $('add-result').textContent = message(e);
  });
  client = c;
  try {
    await c.connect();
  } catch (e) {
    client = null;
    $('login-error').textContent = message(e);
    $('login-error').hidden = false;
    return;
  } finally {
    button.disabled = false;
  }
  form.password.value = '';
  $('me-jid').textContent = c.jid;
  $('login').hidden = true;
  $('app').hidden = false;
  $('session').hidden = false;
  renderState('connected');
  renderMe();
  render();
}

async function signOut() {
  const c = client;
  client = null;
  $('app').hidden = true;
  $('session').hidden = true;
  $('login').hidden = false;
  $('contacts').replaceChildren();
  $('requests').replaceChildren();
  await c?.close();
}

async function updatePresence(ev) {
  ev.preventDefault();
  const form = ev.currentTarget;
  const button = form.querySelector('button');
  button.disabled = true;
  try {
    await client.setPresence({ show: form.show.value, status: form.status.value.trim() || null });
    renderMe();
  } catch (e) {
    $('my-summary').textContent = message(e);
  } finally {
    button.disabled = false;
  }
}

async function addContactJid(jid) {
  try {
    await client.subscribe(jid);
    $('add-result').textContent = `Asked ${jid} to share their presence.`;
    return true;
  } catch (e) {
    $('add-result').textContent = message(e);
    return false;
  }
}

async function addContact(ev) {
  ev.preventDefault();
  const form = ev.currentTarget;
  if (await addContactJid(form.jid.value.trim())) form.jid.value = '';
}

$('login-form').addEventListener('submit', signIn);
$('presence-form').addEventListener('submit', updatePresence);
$('add-form').addEventListener('submit', addContact);
$('sign-out').addEventListener('click', signOut);
// A laptop waking up or a phone regaining signal: retry now rather than after the backoff delay.
window.addEventListener('online', () => client?.reconnectNow());
// Leaving the page says goodbye, so contacts see you offline at once instead of after the grace period.
window.addEventListener('pagehide', () => void client?.close());
