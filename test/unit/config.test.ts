import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { hostname } from 'node:os';
import { CONFIG_KEYS, ConfigError, envName, loadConfig, resolveNodeId } from '../../src/config.js';

let dir: string;
before(() => {
  dir = mkdtempSync(join(tmpdir(), 'presenced-config-'));
});
after(() => {
  rmSync(dir, { recursive: true, force: true });
});

let fileCounter = 0;
/** Writes `content` (an object is JSON-encoded) to a fresh file in the temp dir and returns its path. */
function configFile(content: unknown): string {
  const path = join(dir, `config-${++fileCounter}.json`);
  writeFileSync(path, typeof content === 'string' ? content : JSON.stringify(content));
  return path;
}

/** Runs loadConfig expecting a ConfigError and returns its problems. */
function problemsOf(opts: Parameters<typeof loadConfig>[0]): string[] {
  let caught: unknown;
  try {
    loadConfig(opts);
  } catch (e) {
    caught = e;
  }
  assert.ok(caught instanceof ConfigError, `expected a ConfigError, got ${caught instanceof Error ? `${caught.name}: ${caught.message}` : String(caught)}`);
  assert.equal(caught.name, 'ConfigError');
  assert.ok(caught.problems.length > 0);
  // The message lists every problem, so a user sees them all on one run.
  for (const p of caught.problems) assert.ok(caught.message.includes(p), `message should include "${p}"`);
  return caught.problems;
}

function hasProblem(problems: string[], ...parts: Array<string | RegExp>): boolean {
  return problems.some((p) => parts.every((part) => (typeof part === 'string' ? p.includes(part) : part.test(p))));
}

describe('loadConfig defaults', () => {
  test('with no file and an empty environment every key has its documented default', () => {
    const c = loadConfig({ env: {} });
    assert.equal(c.host, '127.0.0.1');
    assert.equal(c.http_port, 5280);
    assert.deepEqual(c.domains, ['localhost']);
    assert.equal(c.data_dir, resolve('./data'));
    assert.equal(c.data_dir, join(process.cwd(), 'data'));
    assert.equal(c.admin_token, '');
    assert.equal(c.log_level, 'info');
    assert.equal(c.public_presence_default, false);
    for (const [k, spec] of Object.entries(CONFIG_KEYS)) {
      if (k === 'data_dir') continue;
      assert.deepEqual((c as unknown as Record<string, unknown>)[k], spec.def, k);
    }
  });

  test('the defaults are not shared between calls (mutating one config does not leak)', () => {
    const a = loadConfig({ env: {} });
    a.domains.push('example.com');
    assert.deepEqual(loadConfig({ env: {} }).domains, ['localhost']);
  });

  test('envName maps a key to its PRESENCED_ variable', () => {
    assert.equal(envName('http_port'), 'PRESENCED_HTTP_PORT');
    assert.equal(envName('admin_token'), 'PRESENCED_ADMIN_TOKEN');
  });

  test('variables without the PRESENCED_ prefix are ignored', () => {
    const c = loadConfig({ env: { HTTP_PORT: 'abc', PATH: '/usr/bin', PRESENCED: 'x' } });
    assert.equal(c.http_port, 5280);
  });
});

describe('loadConfig from a file and the environment', () => {
  test('a JSON file overrides the defaults', () => {
    const file = configFile({ host: '0.0.0.0', http_port: 8080, domains: ['example.com', 'chat.example.org'], data_dir: join(dir, 'from-file'), public_presence_default: true });
    const c = loadConfig({ env: {}, file });
    assert.equal(c.host, '0.0.0.0');
    assert.equal(c.http_port, 8080);
    assert.deepEqual(c.domains, ['example.com', 'chat.example.org']);
    assert.equal(c.data_dir, join(dir, 'from-file'));
    assert.equal(c.public_presence_default, true);
    // Keys the file leaves out keep their defaults.
    assert.equal(c.log_level, 'info');
  });

  test('the environment overrides the file, key by key', () => {
    const file = configFile({ host: '0.0.0.0', http_port: 8080, domains: ['example.com'], log_level: 'debug' });
    const c = loadConfig({ file, env: { PRESENCED_HTTP_PORT: '9090', PRESENCED_HOST: '::1' } });
    assert.equal(c.http_port, 9090);
    assert.equal(c.host, '::1');
    // Not overridden by the environment: still from the file.
    assert.deepEqual(c.domains, ['example.com']);
    assert.equal(c.log_level, 'debug');
  });

  test('PRESENCED_HTTP_PORT, PRESENCED_HOST, PRESENCED_DOMAINS, PRESENCED_DATA_DIR, PRESENCED_ADMIN_TOKEN are read', () => {
    const c = loadConfig({
      env: {
        PRESENCED_HTTP_PORT: '6000',
        PRESENCED_HOST: '10.0.0.1',
        PRESENCED_DOMAINS: 'example.com, Chat.Example.org ,,localhost',
        PRESENCED_DATA_DIR: 'relative/dir',
        PRESENCED_ADMIN_TOKEN: 'a-very-long-admin-token',
      },
    });
    assert.equal(c.http_port, 6000);
    assert.equal(c.host, '10.0.0.1');
    // A comma list: items trimmed, empty items dropped, domains normalised to lower case.
    assert.deepEqual(c.domains, ['example.com', 'chat.example.org', 'localhost']);
    assert.equal(c.data_dir, resolve('relative/dir'));
    assert.equal(c.admin_token, 'a-very-long-admin-token');
  });

  test('duplicate domains (after normalisation) are listed once', () => {
    const c = loadConfig({ env: { PRESENCED_DOMAINS: 'example.com,EXAMPLE.com,example.com.' } });
    assert.deepEqual(c.domains, ['example.com']);
  });

  test('booleans from the environment accept true/false/1/0/yes/no', () => {
    for (const [raw, want] of [['true', true], ['1', true], ['YES', true], ['false', false], ['0', false], ['no', false]] as const) {
      assert.equal(loadConfig({ env: { PRESENCED_PUBLIC_PRESENCE_DEFAULT: raw } }).public_presence_default, want, raw);
    }
  });

  test('port 0 (pick a free port) is accepted from the environment and from a file', () => {
    assert.equal(loadConfig({ env: { PRESENCED_HTTP_PORT: '0' } }).http_port, 0);
    assert.equal(loadConfig({ env: {}, file: configFile({ http_port: 0 }) }).http_port, 0);
  });

  test('the port bounds 0 and 65535 are accepted, 65536 and -1 are not', () => {
    assert.equal(loadConfig({ env: { PRESENCED_HTTP_PORT: '65535' } }).http_port, 65535);
    assert.ok(hasProblem(problemsOf({ env: { PRESENCED_HTTP_PORT: '65536' } }), 'http_port', 'between 0 and 65535'));
    assert.ok(hasProblem(problemsOf({ env: { PRESENCED_HTTP_PORT: '-1' } }), 'http_port', 'between 0 and 65535'));
  });

  test('an empty admin token is accepted (admin API disabled); 16 characters is the minimum', () => {
    assert.equal(loadConfig({ env: { PRESENCED_ADMIN_TOKEN: '' } }).admin_token, '');
    assert.equal(loadConfig({ env: { PRESENCED_ADMIN_TOKEN: 'x'.repeat(16) } }).admin_token, 'x'.repeat(16));
    assert.ok(hasProblem(problemsOf({ env: { PRESENCED_ADMIN_TOKEN: 'x'.repeat(15) } }), 'admin_token', '16'));
  });

  test('overrides win over the environment and the file', () => {
    const file = configFile({ http_port: 8080 });
    const c = loadConfig({ file, env: { PRESENCED_HTTP_PORT: '9090' }, overrides: { http_port: 1234 } });
    assert.equal(c.http_port, 1234);
  });
});

describe('loadConfig errors', () => {
  test('a JSON-object key (push_providers): an object from the file, JSON text from the environment, anything else refused', () => {
    const providers = { gw: { type: 'webhook', url: 'https://push.example/hook', secret: 'whsec_x' } };
    assert.deepEqual(loadConfig({ env: {}, file: configFile({ push_providers: providers }) }).push_providers, providers);
    assert.deepEqual(loadConfig({ env: { PRESENCED_PUSH_PROVIDERS: JSON.stringify(providers) } }).push_providers, providers);
    assert.ok(hasProblem(problemsOf({ env: { PRESENCED_PUSH_PROVIDERS: '{"gw":' } }), 'push_providers must be a JSON object', 'PRESENCED_PUSH_PROVIDERS is not valid JSON'));
    assert.ok(hasProblem(problemsOf({ env: { PRESENCED_PUSH_PROVIDERS: '[1]' } }), 'push_providers must be a JSON object'));
    assert.ok(hasProblem(problemsOf({ env: {}, file: configFile({ push_providers: 'fcm' }) }), 'push_providers must be a JSON object'));
    assert.ok(hasProblem(problemsOf({ env: {}, file: configFile({ push_providers: { gw: 'webhook' } }) }), 'push_providers.gw must be an object'));
    assert.ok(hasProblem(problemsOf({ env: {}, file: configFile({ push_providers: { 'bad name': {} } }) }), '"bad name" is not a valid provider name'));
  });

  test('an unknown key in the file is reported with a "did you mean" hint', () => {
    const file = configFile({ htp_port: 80 });
    const problems = problemsOf({ env: {}, file });
    assert.ok(hasProblem(problems, 'unknown key "htp_port"', file, 'did you mean "http_port"'), problems.join('\n'));
  });

  test('an unknown key far from every known key gets no hint', () => {
    const problems = problemsOf({ env: {}, file: configFile({ completely_unrelated_setting: 1 }) });
    assert.ok(hasProblem(problems, 'unknown key "completely_unrelated_setting"'));
    assert.ok(!hasProblem(problems, 'did you mean'), problems.join('\n'));
  });

  test('a non-integer port is reported naming the key, the value and where it came from', () => {
    const envProblems = problemsOf({ env: { PRESENCED_HTTP_PORT: 'abc' } });
    assert.ok(hasProblem(envProblems, 'http_port must be an integer', '"abc"', 'PRESENCED_HTTP_PORT'), envProblems.join('\n'));
    const file = configFile({ http_port: 80.5 });
    assert.ok(hasProblem(problemsOf({ env: {}, file }), 'http_port must be an integer', '80.5', file));
    // A JSON string is not an integer, even if it looks like one: only the environment is all strings.
    assert.ok(hasProblem(problemsOf({ env: {}, file: configFile({ http_port: '80' }) }), 'http_port must be an integer'));
    assert.ok(hasProblem(problemsOf({ env: { PRESENCED_HTTP_PORT: '80.0' } }), 'http_port must be an integer'));
    assert.ok(hasProblem(problemsOf({ env: { PRESENCED_HTTP_PORT: '' } }), 'http_port must be an integer'));
  });

  test('an out-of-range port is reported with the allowed range', () => {
    const problems = problemsOf({ env: { PRESENCED_HTTP_PORT: '70000' } });
    assert.ok(hasProblem(problems, 'http_port must be between 0 and 65535', '70000'), problems.join('\n'));
  });

  test('an unknown PRESENCED_ variable is reported, with a hint when one is close', () => {
    const problems = problemsOf({ env: { PRESENCED_HTTP_PROT: '80', PRESENCED_NOPE_NOTHING_LIKE_IT: '1' } });
    assert.ok(hasProblem(problems, 'unknown environment variable PRESENCED_HTTP_PROT', 'did you mean PRESENCED_HTTP_PORT'), problems.join('\n'));
    assert.ok(hasProblem(problems, 'unknown environment variable PRESENCED_NOPE_NOTHING_LIKE_IT'), problems.join('\n'));
  });

  test('bad domains are reported: invalid characters, a JID with a localpart, an empty list', () => {
    const p1 = problemsOf({ env: { PRESENCED_DOMAINS: 'good.example,bad domain' } });
    assert.ok(hasProblem(p1, 'domains', '"bad domain"', 'not a valid domain'), p1.join('\n'));
    assert.equal(p1.length, 1, 'the good domain is not reported');
    const p2 = problemsOf({ env: { PRESENCED_DOMAINS: 'user@example.com' } });
    assert.ok(hasProblem(p2, 'domains', '"user@example.com"', 'not a bare domain'), p2.join('\n'));
    const p3 = problemsOf({ env: {}, file: configFile({ domains: [] }) });
    assert.ok(hasProblem(p3, 'domains must be a non-empty list'), p3.join('\n'));
    const p4 = problemsOf({ env: { PRESENCED_DOMAINS: ' , ' } });
    assert.ok(hasProblem(p4, 'domains must be a non-empty list'), p4.join('\n'));
    const p5 = problemsOf({ env: {}, file: configFile({ domains: 'example.com' }) });
    assert.ok(hasProblem(p5, 'domains must be a non-empty list'), p5.join('\n'));
  });

  test('a too short admin token is reported', () => {
    const problems = problemsOf({ env: { PRESENCED_ADMIN_TOKEN: 'short' } });
    assert.ok(hasProblem(problems, 'admin_token must be at least 16 characters'), problems.join('\n'));
  });

  test('a wrong type or value for other kinds of key is reported', () => {
    const file = configFile({ host: 5, log_level: 'loud', public_presence_default: 'yes' });
    const problems = problemsOf({ env: {}, file });
    assert.ok(hasProblem(problems, 'host must be a string'), problems.join('\n'));
    assert.ok(hasProblem(problems, 'log_level must be one of', '"loud"'), problems.join('\n'));
    // "yes" is only understood from the environment; in JSON a boolean must be a boolean.
    assert.ok(hasProblem(problems, 'public_presence_default must be true or false'), problems.join('\n'));
    assert.equal(problems.length, 3);
  });

  test('every problem, from the file and from the environment, is listed in one error', () => {
    const file = configFile({ htp_port: 1, grace_period_ms: 'soon', domains: ['ok.example', 'not valid'] });
    const problems = problemsOf({
      file,
      env: {
        PRESENCED_HTTP_PORT: '99999',
        PRESENCED_HOSTT: 'x',
        PRESENCED_ADMIN_TOKEN: 'tiny',
        PRESENCED_AUTH_TIMEOUT_MS: 'abc',
      },
    });
    const expected = [
      ['unknown key "htp_port"', 'did you mean "http_port"'],
      ['grace_period_ms must be an integer'],
      ['domains', '"not valid"'],
      ['http_port must be between 0 and 65535'],
      ['unknown environment variable PRESENCED_HOSTT', 'did you mean PRESENCED_HOST'],
      ['admin_token must be at least 16 characters'],
      ['auth_timeout_ms must be an integer'],
    ];
    for (const parts of expected) assert.ok(hasProblem(problems, ...parts), `missing ${JSON.stringify(parts)} in:\n${problems.join('\n')}`);
    assert.equal(problems.length, expected.length, problems.join('\n'));
  });

  test('a missing config file is a ConfigError naming the file', () => {
    const missing = join(dir, 'does-not-exist.json');
    const problems = problemsOf({ env: {}, file: missing });
    assert.ok(hasProblem(problems, missing, 'file not found'), problems.join('\n'));
  });

  test('a file that is not valid JSON is a ConfigError naming the file', () => {
    const file = configFile('{ "http_port": 80, ');
    const problems = problemsOf({ env: {}, file });
    assert.ok(hasProblem(problems, `cannot read config file ${file}`), problems.join('\n'));
  });

  test('a file that holds JSON but not an object is a ConfigError', () => {
    for (const content of ['[1, 2]', '42', '"text"', 'null']) {
      const file = configFile(content);
      const problems = problemsOf({ env: {}, file });
      assert.ok(hasProblem(problems, file, 'must hold a JSON object'), `${content}: ${problems.join('\n')}`);
    }
  });

  test('idle_timeout_ms must exceed heartbeat_interval_ms', () => {
    const problems = problemsOf({ env: { PRESENCED_HEARTBEAT_INTERVAL_MS: '5000', PRESENCED_IDLE_TIMEOUT_MS: '5000' } });
    assert.ok(hasProblem(problems, 'idle_timeout_ms must be greater than heartbeat_interval_ms'), problems.join('\n'));
  });

  test('a short token secret is reported, an empty one is accepted', () => {
    assert.equal(loadConfig({ env: { PRESENCED_TOKEN_SECRET: '' } }).token_secret, '');
    assert.ok(hasProblem(problemsOf({ env: { PRESENCED_TOKEN_SECRET: 'x'.repeat(31) } }), 'token_secret must be at least 32 characters'));
    assert.equal(loadConfig({ env: { PRESENCED_TOKEN_SECRET: 'x'.repeat(32) } }).token_secret, 'x'.repeat(32));
  });

  test('public_url is an http(s) origin: a trailing slash is dropped, a path, query, credentials or other scheme are refused', () => {
    assert.equal(loadConfig({ env: {} }).public_url, '');
    assert.equal(loadConfig({ env: { PRESENCED_PUBLIC_URL: 'https://presence.example/' } }).public_url, 'https://presence.example');
    assert.equal(loadConfig({ env: { PRESENCED_PUBLIC_URL: 'http://presence.example:8443' } }).public_url, 'http://presence.example:8443');
    for (const bad of ['presence.example', 'https://presence.example/presence', 'https://presence.example/?a=1', 'https://presence.example/#x', 'https://u:p@presence.example', 'ftp://presence.example']) {
      assert.ok(hasProblem(problemsOf({ env: { PRESENCED_PUBLIC_URL: bad } }), 'public_url must be an http(s) origin', JSON.stringify(bad)), bad);
    }
  });

  test('store: empty (SQLite) or a PostgreSQL URL; anything else is refused without echoing a password', () => {
    assert.equal(loadConfig({ env: {} }).store, '');
    for (const good of ['postgres://u:p@db.example:5432/presenced', 'postgresql://db/presenced?sslmode=require', 'POSTGRES://localhost/x', 'postgres:///presenced?host=/var/run/postgresql']) {
      assert.equal(loadConfig({ env: { PRESENCED_STORE: good } }).store, good);
    }
    for (const bad of ['sqlite', './data/x.sqlite', 'mysql://u:hunter2@db/x', 'postgres://u:hunter2@db:99999/x', 'postgres://u:hunter2@[bad/x', 'postgres://db/x#frag']) {
      const problems = problemsOf({ env: { PRESENCED_STORE: bad } });
      assert.ok(hasProblem(problems, 'store must be empty (SQLite in data_dir) or a PostgreSQL URL such as postgres://'), bad);
      assert.ok(!problems.some((p) => p.includes('hunter2')), `${bad}: the password must not be shown`);
    }
  });

  test('store_pool_size is a positive integer', () => {
    assert.equal(loadConfig({ env: { PRESENCED_STORE_POOL_SIZE: '25' } }).store_pool_size, 25);
    assert.ok(hasProblem(problemsOf({ env: { PRESENCED_STORE_POOL_SIZE: '0' } }), 'store_pool_size must be between 1 and 1000'));
  });

  test('node_id: empty derives one, a set one is checked and kept as is', () => {
    assert.equal(loadConfig({ env: { PRESENCED_NODE_ID: 'eu-1.node:7' } }).node_id, 'eu-1.node:7');
    for (const bad of ['-lead', 'has space', 'a{tag}', 'x'.repeat(129)]) {
      assert.ok(hasProblem(problemsOf({ env: { PRESENCED_NODE_ID: bad } }), 'node_id must be 1 to 128 letters'), bad);
    }
    assert.equal(resolveNodeId({ node_id: 'given', http_port: 5280 }), 'given');
    // Derived from a fixed port: the same id after a restart on this machine.
    const fixed = resolveNodeId({ node_id: '', http_port: 5280 });
    assert.equal(fixed, resolveNodeId({ node_id: '', http_port: 5280 }));
    assert.ok(fixed.endsWith(':5280') && fixed.startsWith(hostname().slice(0, 3)), fixed);
    // With a port picked at start, several processes on one machine must not share an id.
    const a = resolveNodeId({ node_id: '', http_port: 0 });
    assert.notEqual(a, resolveNodeId({ node_id: '', http_port: 0 }));
    assert.match(a, /^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/);
    assert.match(fixed, /^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/);
  });
});
