import { createHash } from 'node:crypto';

/**
 * The Lua scripts of the Redis bus. Each one changes keys of a single hash slot (see keys.ts), so it is
 * atomic on one Redis and on Redis Cluster alike. Registry scripts publish the account's new session
 * list on the feed from inside the script: subscribers see changes of one account in version order.
 *
 * Numbers cross as decimal strings: epochs and versions are millisecond-sized integers (13 digits),
 * which Lua's doubles and its "%.14g" formatting carry exactly.
 */

const NOW_MS = `
local function now_ms()
  local t = redis.call('TIME')
  return t[1] .. string.format('%03d', math.floor(tonumber(t[2]) / 1000))
end`;

/** Versions start from Redis's clock, so they keep growing even if Redis loses the account's meta hash. */
const ACCOUNT = `${NOW_MS}
local function bump(m, ttl)
  if redis.call('HEXISTS', m, 'v') == 0 then redis.call('HSET', m, 'v', now_ms()) end
  local v = redis.call('HINCRBY', m, 'v', 1)
  redis.call('PEXPIRE', m, ttl)
  return v
end
local function fenced(m, node, epoch)
  local f = redis.call('HGET', m, 'f:' .. node)
  return f ~= false and tonumber(epoch) <= tonumber(f)
end
local function feed(channel, origin, jid, v, all)
  redis.call('PUBLISH', channel, '{"t":"s","o":' .. cjson.encode(origin) .. ',"j":' .. cjson.encode(jid) .. ',"v":' .. v .. ',"s":[' .. table.concat(all, ',') .. ']}')
end
local function version(m)
  return tonumber(redis.call('HGET', m, 'v') or '0')
end`;

/**
 * KEYS: sessions, meta. ARGV: node, epoch, resource, entry, jid, channel, meta ttl, mode.
 * mode "open" takes the resource over from whoever holds it; "update" refuses (-2) when another node
 * or incarnation holds it now. -1: this node's epoch is fenced off for this account.
 * Returns version, entries after, 1 (changed), entries before.
 */
export const PUT = `${ACCOUNT}
if fenced(KEYS[2], ARGV[1], ARGV[2]) then return {-1} end
local before = redis.call('HVALS', KEYS[1])
if ARGV[8] == 'update' then
  local cur = redis.call('HGET', KEYS[1], ARGV[3])
  if cur then
    local e = cjson.decode(cur)
    if e.node ~= ARGV[1] or e.epoch ~= tonumber(ARGV[2]) then return {-2} end
  end
end
redis.call('HSET', KEYS[1], ARGV[3], ARGV[4])
local v = bump(KEYS[2], ARGV[7])
local all = redis.call('HVALS', KEYS[1])
feed(ARGV[6], ARGV[1], ARGV[5], v, all)
return {v, all, 1, before}`;

/**
 * KEYS: sessions, meta. ARGV: node, epoch, resource, jid, channel, meta ttl. Removes only this
 * incarnation's entry. Returns version, entries after, 1 if removed (else 0), entries before.
 */
export const REMOVE = `${ACCOUNT}
if fenced(KEYS[2], ARGV[1], ARGV[2]) then return {-1} end
local cur = redis.call('HGET', KEYS[1], ARGV[3])
if cur then
  local e = cjson.decode(cur)
  if e.node == ARGV[1] and e.epoch == tonumber(ARGV[2]) then
    local before = redis.call('HVALS', KEYS[1])
    redis.call('HDEL', KEYS[1], ARGV[3])
    local v = bump(KEYS[2], ARGV[6])
    local all = redis.call('HVALS', KEYS[1])
    feed(ARGV[5], ARGV[1], ARGV[4], v, all)
    return {v, all, 1, before}
  end
end
local all = redis.call('HVALS', KEYS[1])
return {version(KEYS[2]), all, 0, all}`;

/**
 * KEYS: sessions, meta. ARGV: node, epoch, jid, channel, meta ttl, then resource/entry pairs.
 * Replaces every entry of this node by the given ones (re-registration after Redis came back), leaving
 * resources another node holds now to it; returns them as taken.
 */
export const SYNC = `${ACCOUNT}
if fenced(KEYS[2], ARGV[1], ARGV[2]) then return {-1} end
local cur = redis.call('HGETALL', KEYS[1])
for i = 1, #cur, 2 do
  if cjson.decode(cur[i + 1]).node == ARGV[1] then redis.call('HDEL', KEYS[1], cur[i]) end
end
local taken = {}
for i = 6, #ARGV, 2 do
  if redis.call('HEXISTS', KEYS[1], ARGV[i]) == 1 then table.insert(taken, ARGV[i])
  else redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
end
local v = bump(KEYS[2], ARGV[5])
local all = redis.call('HVALS', KEYS[1])
feed(ARGV[4], ARGV[1], ARGV[3], v, all)
return {v, all, taken}`;

/**
 * KEYS: sessions, meta. ARGV: dead node, its epoch, jid, channel, meta ttl, origin (the declaring node).
 * Fences the dead incarnation off this account first (a late write of it is refused from now on), then
 * removes its entries. Returns version, removed entries, remaining entries.
 */
export const CLEAN = `${ACCOUNT}
local fkey = 'f:' .. ARGV[1]
local f = redis.call('HGET', KEYS[2], fkey)
if not f or tonumber(f) < tonumber(ARGV[2]) then redis.call('HSET', KEYS[2], fkey, ARGV[2]) end
local removed = {}
local cur = redis.call('HGETALL', KEYS[1])
for i = 1, #cur, 2 do
  local e = cjson.decode(cur[i + 1])
  if e.node == ARGV[1] and e.epoch <= tonumber(ARGV[2]) then
    redis.call('HDEL', KEYS[1], cur[i])
    table.insert(removed, cur[i + 1])
  end
end
local all = redis.call('HVALS', KEYS[1])
if #removed == 0 then
  redis.call('PEXPIRE', KEYS[2], ARGV[5])
  return {version(KEYS[2]), removed, all}
end
local v = bump(KEYS[2], ARGV[5])
feed(ARGV[4], ARGV[6], ARGV[3], v, all)
return {v, removed, all}`;

/** KEYS: sessions, meta. An account's sessions and version, read together. */
export const READ = `
return {tonumber(redis.call('HGET', KEYS[2], 'v') or '0'), redis.call('HVALS', KEYS[1])}`;

/** KEYS: lease, index. ARGV: epoch, jid, "add" | "rem". 0 when the lease is not this epoch's (fenced). */
export const INDEX = `
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[3] == 'add' then redis.call('SADD', KEYS[2], ARGV[2]) else redis.call('SREM', KEYS[2], ARGV[2]) end
return 1`;

/**
 * KEYS: epoch counter, nodes, lease, dead, run. ARGV: node, lease ms, a fresh run id.
 * {"busy"} while a lease of this node id is live (a previous process not yet expired, or a second
 * process with the same node_id). A previous incarnation still in the node table is handed to the reapers.
 */
export const JOIN = `${NOW_MS}
if redis.call('EXISTS', KEYS[3]) == 1 then return {'busy'} end
local prev = redis.call('HGET', KEYS[2], ARGV[1])
if prev then
  local e, r = string.match(prev, '^(%d+):(%d+)$')
  redis.call('HSET', KEYS[4], ARGV[1] .. '|' .. e, r)
end
local now = now_ms()
if redis.call('EXISTS', KEYS[1]) == 0 then redis.call('SET', KEYS[1], now) end
local e = redis.call('INCR', KEYS[1])
redis.call('HSET', KEYS[2], ARGV[1], e .. ':' .. now)
redis.call('SET', KEYS[3], e, 'PX', ARGV[2])
local run = redis.call('GET', KEYS[5])
if not run then run = ARGV[3]; redis.call('SET', KEYS[5], run) end
return {'ok', tostring(e), run}`;

/**
 * KEYS: lease, nodes, run, epoch counter, dead, reaped. ARGV: node, epoch, lease ms, our run id, a fresh run id.
 * - ok: the lease was ours and is extended;
 * - resumed: it had lapsed but nobody declared us dead yet (nothing was shown offline): it is ours again;
 * - restored: Redis lost its data (another run id, we are unknown): lease and node entry are re-created
 *   under the same epoch, and the caller must register its sessions again;
 * - fenced: we were declared dead (or another process holds this node id): we must drop everything.
 */
export const RENEW = `${NOW_MS}
local rec = ARGV[2] .. ':' .. now_ms()
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[2] then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  redis.call('HSET', KEYS[2], ARGV[1], rec)
  return {'ok', ARGV[4]}
end
if cur then return {'fenced'} end
local known = redis.call('HGET', KEYS[2], ARGV[1])
if known then
  if string.match(known, '^(%d+):') ~= ARGV[2] then return {'fenced'} end
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  redis.call('HSET', KEYS[2], ARGV[1], rec)
  return {'resumed', ARGV[4]}
end
local run = redis.call('GET', KEYS[3])
if run == ARGV[4] then return {'fenced'} end
if redis.call('HEXISTS', KEYS[5], ARGV[1] .. '|' .. ARGV[2]) == 1 then return {'fenced'} end
if redis.call('ZSCORE', KEYS[6], ARGV[1] .. '|' .. ARGV[2]) then return {'fenced'} end
if not run then run = ARGV[5]; redis.call('SET', KEYS[3], run) end
if tonumber(redis.call('GET', KEYS[4]) or '0') < tonumber(ARGV[2]) then redis.call('SET', KEYS[4], ARGV[2]) end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
redis.call('HSET', KEYS[2], ARGV[1], rec)
return {'restored', run}`;

/**
 * KEYS: nodes, dead, then the lease of each node in ARGV. Every node whose lease is gone (or is another
 * epoch's) moves from the node table to the dead table, atomically: that is the moment it is declared
 * dead. Returns the whole dead table (field, last renewal, ...).
 */
export const SWEEP = `
for i = 1, #ARGV do
  local rec = redis.call('HGET', KEYS[1], ARGV[i])
  if rec then
    local e, r = string.match(rec, '^(%d+):(%d+)$')
    if redis.call('GET', KEYS[i + 2]) ~= e then
      redis.call('HDEL', KEYS[1], ARGV[i])
      redis.call('HSET', KEYS[2], ARGV[i] .. '|' .. e, r)
    end
  end
end
return redis.call('HGETALL', KEYS[2])`;

/**
 * KEYS: dead, claim. ARGV: incarnation, claimer, ttl ms. The claim to declare an incarnation's sessions
 * offline, taken only while it is still listed dead (a node that read the dead table before another
 * node finished with it must not start over).
 */
export const CLAIM = `
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
if redis.call('SET', KEYS[2], ARGV[2], 'NX', 'PX', ARGV[3]) then return 1 end
return 0`;

/**
 * KEYS: dead, index, claim, reaped. ARGV: incarnation, claimer. The reaper is done with the
 * incarnation; it is remembered for a day as reaped (it must not come back, nor be reaped again).
 */
export const REAPED = `${NOW_MS}
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2])
if redis.call('GET', KEYS[3]) == ARGV[2] then redis.call('DEL', KEYS[3]) end
local now = tonumber(now_ms())
redis.call('ZADD', KEYS[4], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now - 86400000)
return 1`;

/**
 * KEYS: nodes, dead, reaped. ARGV: node, epoch, last heard. An incarnation this node saw holding
 * sessions that Redis no longer knows of at all (Redis lost its data while that node was down too):
 * listed dead so that it is reaped like any other, unless it is live, listed or reaped already.
 */
export const ADOPT = `
local rec = redis.call('HGET', KEYS[1], ARGV[1])
if rec then return 0 end
local inc = ARGV[1] .. '|' .. ARGV[2]
if redis.call('HEXISTS', KEYS[2], inc) == 1 or redis.call('ZSCORE', KEYS[3], inc) then return 0 end
redis.call('HSET', KEYS[2], inc, ARGV[3])
return 1`;

/**
 * KEYS: lease, nodes, index, dead. ARGV: node, epoch. A graceful stop: the lease and the node entry go
 * at once. If the incarnation's index still names accounts (sessions it could not remove), it is handed
 * to the reapers instead of being forgotten.
 */
export const LEAVE = `${NOW_MS}
local rec = redis.call('HGET', KEYS[2], ARGV[1])
local mine = rec and string.match(rec, '^(%d+):') == ARGV[2]
if redis.call('GET', KEYS[1]) == ARGV[2] then redis.call('DEL', KEYS[1]) end
if mine then redis.call('HDEL', KEYS[2], ARGV[1]) end
if redis.call('SCARD', KEYS[3]) > 0 then
  redis.call('HSET', KEYS[4], ARGV[1] .. '|' .. ARGV[2], now_ms())
  return 'reap'
end
return 'left'`;

export interface Script {
  readonly source: string;
  readonly sha: string;
}

export function script(source: string): Script {
  return { source, sha: createHash('sha1').update(source).digest('hex') };
}

export const SCRIPTS = {
  put: script(PUT),
  remove: script(REMOVE),
  sync: script(SYNC),
  clean: script(CLEAN),
  read: script(READ),
  index: script(INDEX),
  join: script(JOIN),
  renew: script(RENEW),
  sweep: script(SWEEP),
  claim: script(CLAIM),
  reaped: script(REAPED),
  adopt: script(ADOPT),
  leave: script(LEAVE),
} as const;
