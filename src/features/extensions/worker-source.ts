/**
 * The program each extension's worker thread runs: it imports the extension's module, checks its
 * default export, then answers the host's calls one message at a time and forwards the extension's
 * context calls (kv, push, notify, presence) to the host.
 *
 * It is plain JavaScript handed to the Worker as a data: URL, so that it runs the same from the
 * TypeScript sources (tests, under tsx) and from the compiled build, without a loader in the worker:
 * extensions are JavaScript modules and the worker starts with an empty execArgv.
 *
 * Messages (structured clone):
 *   host -> worker: {t:'call', id, hook, args} | {t:'ctx-ok', id, value} | {t:'ctx-err', id, message}
 *   worker -> host: {t:'ready', name, hooks} | {t:'load-error', message}
 *                   {t:'done', id} | {t:'fail', id, message} | {t:'ctx', id, op, args} | {t:'log', level, msg, fields}
 */
const SOURCE = String.raw`
import { parentPort, workerData } from 'node:worker_threads';

const HOOKS = ${JSON.stringify(['onStart', 'onStop', 'onUserPresence', 'onSessionClosed', 'onSubscriptionChanged'])};
const NAME = /^[a-z0-9][a-z0-9_-]{0,63}$/;
const port = parentPort;
const pending = new Map();
let nextId = 1;

function errorText(e) {
  if (e instanceof Error) return (e.name && e.name !== 'Error' ? e.name + ': ' : '') + e.message;
  try { return 'non-Error thrown: ' + JSON.stringify(e).slice(0, 200); } catch { return 'non-Error thrown: ' + String(e).slice(0, 200); }
}

function ctxCall(op, args) {
  const id = nextId++;
  return new Promise((resolve, reject) => {
    pending.set(id, { resolve, reject });
    port.postMessage({ t: 'ctx', id, op, args });
  });
}

function logger(level) {
  return (msg, fields) => {
    let f;
    try { f = fields === undefined ? undefined : structuredClone(fields); } catch { f = { unclonable: true }; }
    port.postMessage({ t: 'log', level, msg: String(msg).slice(0, 2000), fields: f });
  };
}

const ctx = Object.freeze({
  name: workerData.name,
  settings: workerData.settings,
  log: Object.freeze({ debug: logger('debug'), info: logger('info'), warn: logger('warn'), error: logger('error') }),
  kv: Object.freeze({
    get: (key) => ctxCall('kv.get', { key }),
    set: (key, value) => ctxCall('kv.set', { key, value }),
    delete: (key) => ctxCall('kv.delete', { key }),
    list: (prefix) => ctxCall('kv.list', { prefix: prefix ?? '' }),
  }),
  push: Object.freeze({ send: (jid, notification) => ctxCall('push.send', { jid, notification }) }),
  notify: (jid, payload) => ctxCall('notify', { jid, payload }),
  presence: Object.freeze({
    get: (jid) => ctxCall('presence.get', { jid }),
    followers: (jid) => ctxCall('presence.followers', { jid }),
  }),
});

let ext;
try {
  let mod;
  try {
    mod = await import(workerData.url);
  } catch (e) {
    throw new Error('cannot load its module ' + workerData.where + ': ' + errorText(e));
  }
  ext = mod.default;
  if (ext === undefined) {
    const names = Object.keys(mod).slice(0, 10).join(', ');
    throw new Error('its module ' + workerData.where + ' has no default export' + (names ? ' (it exports ' + names + '); export default definePresenceExtension({...})' : '; export default definePresenceExtension({...})'));
  }
  if (typeof ext !== 'object' || ext === null || Array.isArray(ext)) {
    throw new Error('the default export of ' + workerData.where + ' must be an object with a name and hooks (got ' + (Array.isArray(ext) ? 'an array' : ext === null ? 'null' : typeof ext) + ')');
  }
  if (typeof ext.name !== 'string' || !NAME.test(ext.name)) {
    throw new Error('the default export of ' + workerData.where + ' must have a "name": lower-case letters, digits, - and _, up to 64 (got ' + String(JSON.stringify(ext.name)).slice(0, 80) + ')');
  }
  for (const k of Object.keys(ext)) {
    if (k === 'name') continue;
    if (!HOOKS.includes(k)) throw new Error('the default export of ' + workerData.where + ' has an unknown member "' + k.slice(0, 64) + '" (hooks are ' + HOOKS.join(', ') + ')');
    if (typeof ext[k] !== 'function') throw new Error('the default export of ' + workerData.where + ': ' + k + ' must be a function (got ' + typeof ext[k] + ')');
  }
  port.postMessage({ t: 'ready', name: ext.name, hooks: HOOKS.filter((h) => typeof ext[h] === 'function') });
} catch (e) {
  port.postMessage({ t: 'load-error', message: e instanceof Error ? e.message : String(e) });
}

port.on('message', async (m) => {
  if (m.t === 'ctx-ok' || m.t === 'ctx-err') {
    const p = pending.get(m.id);
    if (!p) return;
    pending.delete(m.id);
    if (m.t === 'ctx-ok') p.resolve(m.value);
    else p.reject(new Error(m.message));
    return;
  }
  if (m.t !== 'call' || ext === undefined) return;
  try {
    const fn = ext[m.hook];
    if (typeof fn === 'function') await fn.apply(ext, [...m.args, ctx]);
    port.postMessage({ t: 'done', id: m.id });
  } catch (e) {
    port.postMessage({ t: 'fail', id: m.id, message: errorText(e).slice(0, 1000) });
  }
});
`;

export const WORKER_URL = new URL(`data:text/javascript,${encodeURIComponent(SOURCE)}`);
