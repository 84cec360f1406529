import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { resolve } from 'node:path';
import { parseJid } from './core/jid.js';

/**
 * Configuration: defaults, overridden by a JSON file (--config), overridden by PRESENCED_* environment
 * variables. Every key is declared once below with its type, default and description; the README's
 * configuration table is generated from the same list (`presenced config --help`), so they cannot drift.
 */
type Kind = 'string' | 'int' | 'bool' | 'list' | 'level' | 'json';

interface KeySpec {
  readonly kind: Kind;
  readonly def: unknown;
  readonly doc: string;
  readonly min?: number;
  readonly max?: number;
}

export const CONFIG_KEYS = {
  host: { kind: 'string', def: '127.0.0.1', doc: 'Address the HTTP/WebSocket listener binds to.' },
  http_port: { kind: 'int', def: 5280, min: 0, max: 65535, doc: 'HTTP port (REST, /ws, /metrics). 0 picks a free port, which is logged.' },
  domains: { kind: 'list', def: ['localhost'], doc: 'Domains this server hosts accounts for (comma-separated in the environment).' },
  data_dir: { kind: 'string', def: './data', doc: 'Directory for the SQLite database and generated secrets.' },
  store: { kind: 'string', def: '', doc: 'Where durable state lives. Empty: SQLite in data_dir (one node). A PostgreSQL URL, postgres://user:password@host:5432/database (TLS and other options as libpq URL parameters, e.g. ?sslmode=require): every node of a cluster shares it (docs/cluster.md). Migrated at start; a database that cannot be reached at start stops the server with an error naming it.' },
  store_pool_size: { kind: 'int', def: 10, min: 1, max: 1_000, doc: 'PostgreSQL connections each node keeps at most (store a postgres:// URL). All nodes together must stay under the server\'s max_connections.' },
  node_id: { kind: 'string', def: '', doc: 'This node\'s name in a cluster: it tags the presence checkpoint rows the node writes in a shared database (after a crash a node recovers only its own) and its sessions on the bus. Letters, digits and . _ : - (at most 128). Empty: <hostname>:<http_port>, stable across restarts on one machine; with http_port 0, <hostname>:<pid>:<random>, new for every process. Set it explicitly where hostnames change (containers). Unused by the embedded SQLite deployment.' },
  admin_token: { kind: 'string', def: '', doc: 'Bearer token for the admin REST API. Empty disables the admin API.' },
  log_level: { kind: 'level', def: 'info', doc: 'One of fatal, error, warn, info, debug, trace, silent.' },
  grace_period_ms: { kind: 'int', def: 5_000, min: 0, max: 600_000, doc: 'How long a session whose connection was lost (closed without a goodbye, or found silent by the idle sweep) stays online awaiting a reconnect of the same resource. See docs/liveness.md.' },
  heartbeat_interval_ms: { kind: 'int', def: 10_000, min: 50, max: 600_000, doc: 'A connection silent for this long is pinged (WebSocket ping, XEP-0199 on XMPP); also the TCP keep-alive delay of XMPP sockets.' },
  idle_timeout_ms: { kind: 'int', def: 15_000, min: 100, max: 3_600_000, doc: 'A connection silent (no frame, no pong) for this long is dead. A silent client is shown offline within idle_timeout_ms + grace_period_ms + one sweep tick (at most 1 s): about 20 s by default.' },
  bus: { kind: 'string', def: '', doc: 'Where live presence (the session registry and fan-out across nodes) lives. Empty: in this process (one node). redis://[user:password@]host:port[/db] or rediss://...: Redis 7, shared by every node of a cluster (docs/cluster.md).' },
  node_lease_ms: { kind: 'int', def: 5_000, min: 300, max: 600_000, doc: 'Cluster (bus on Redis): a node that has not renewed its lease for this long is declared dead by the others, which declare its sessions offline (reason node_down). Death to every watcher seeing it: at most this plus one sweep (lease/5, at most 1 s) plus the fan-out, about 6.5 s by default. Too short, and a long GC pause or a Redis failover gets a live node fenced (its clients reconnect).' },
  presence_checkpoint_ms: { kind: 'int', def: 5_000, min: 0, max: 600_000, doc: 'How often the online accounts\' "online since / last heard / last status" are written down (one transaction, only accounts that changed), so that after a crash (kill -9) their last seen is their last activity, at most this much early. 0 turns it off.' },
  auth_timeout_ms: { kind: 'int', def: 10_000, min: 100, max: 600_000, doc: 'A connection must authenticate within this time.' },
  ws_max_frame_bytes: { kind: 'int', def: 65_536, min: 1024, max: 16_777_216, doc: 'Largest WebSocket frame accepted; bigger ones close the connection with 1009.' },
  ws_rate_limit: { kind: 'int', def: 20, min: 1, max: 100_000, doc: 'Sustained requests per second per connection.' },
  ws_rate_burst: { kind: 'int', def: 60, min: 1, max: 100_000, doc: 'Requests a connection may send at once above the sustained rate.' },
  ws_flood_strikes: { kind: 'int', def: 50, min: 1, max: 100_000, doc: 'Rate-limited requests in a row after which the connection is closed (1008).' },
  max_auth_failures: { kind: 'int', def: 3, min: 1, max: 100, doc: 'Failed logins on one connection after which it is closed (1008).' },
  listen_backlog: { kind: 'int', def: 4096, min: 1, max: 65_535, doc: 'Connections the kernel holds for the HTTP/WebSocket and XMPP listeners before the server accepts them (capped by net.core.somaxconn). A reconnect storm beyond it has its connects dropped and retried by the clients\' kernels after 1 s, 3 s, 7 s...: keep it above the connections expected at once after a restart (Node\'s own default is 511).' },
  max_connections: { kind: 'int', def: 100_000, min: 1, max: 10_000_000, doc: 'WebSocket connections accepted at once; beyond this upgrades get 503.' },
  token_ttl_s: { kind: 'int', def: 86_400, min: 60, max: 31_536_000, doc: 'Default lifetime of login tokens issued by the REST API.' },
  token_secret: { kind: 'string', def: '', doc: 'Secret signing login tokens (at least 32 characters). Empty: generated once and kept in data_dir/token-secret.' },
  public_presence_default: { kind: 'bool', def: false, doc: 'Whether accounts that did not choose show their presence to anyone (anonymous HTTP included).' },
  idle_gc_interval_ms: { kind: 'int', def: 10_000, min: 0, max: 3_600_000, doc: 'Quiet time after which a server gives memory back after a load spike: one full garbage collection once the event loop has been under 5% busy in every second of this window and memory grew by 8 MB since the last one (the first quiet window after start always collects); 0 turns it off.' },
  semi_space_mb: { kind: 'int', def: 4, min: 0, max: 256, doc: "Largest size of each of V8's two young-generation semi-spaces, in MB. Smaller gives shorter, more frequent collection pauses (about 2 ms at 4 under heavy presence traffic, 5-9 ms at V8's own 16); 0 leaves V8's sizing." },
  shutdown_timeout_ms: { kind: 'int', def: 10_000, min: 100, max: 600_000, doc: 'Longest a graceful shutdown waits before exiting anyway.' },
  demo: { kind: 'bool', def: true, doc: 'Serve the live presence demo page at /demo (and the client SDK it uses under /demo/sdk/).' },
  trust_req_jid: { kind: 'bool', def: false, doc: "UNSAFE, closed networks only: the HTTP status endpoint believes an unproven req_jid, as Openfire's plugin does, so anyone can see what that account may see. A warning is logged at start." },
  http_trust_proxy: { kind: 'bool', def: false, doc: 'Behind one reverse proxy: take the client address of HTTP requests from the last X-Forwarded-For entry (the one the proxy added), so login throttling counts clients, not the proxy. Only when the HTTP port is reachable through the proxy alone.' },
  public_url: { kind: 'string', def: '', doc: "The server's public origin as browsers and apps reach it, e.g. https://presence.example (scheme, host and port only, no path). Published as the OAuth issuer and in the endpoint URLs of /.well-known/oauth-authorization-server. Empty: each request's own scheme and Host (X-Forwarded-Proto/-Host with http_trust_proxy), which suits development only: set it on a public server, behind a proxy above all." },
  http_batch_max: { kind: 'int', def: 500, min: 1, max: 10_000, doc: 'Most JIDs in one presence batch request (POST /api/v1/presence/batch; GET /api/v1/presence takes the smaller of this and 100). More gets 413 with a JSON error.' },
  login_throttle_account_free: { kind: 'int', def: 5, min: 1, max: 100_000, doc: 'Failed logins of one account (any front door) before its next attempts wait: 1 s, then doubling up to login_throttle_max_delay_ms. The wait binds only addresses that failed themselves, so the real user is not locked out.' },
  login_throttle_address_free: { kind: 'int', def: 20, min: 1, max: 1_000_000, doc: 'Failed logins from one address (IPv6: one /64) before its next attempts wait, as for accounts.' },
  login_throttle_max_delay_ms: { kind: 'int', def: 30_000, min: 0, max: 3_600_000, doc: 'Longest wait imposed on a throttled account or address (refused attempts get XMPP temporary-auth-failure, native rate-limited, HTTP 429 with Retry-After). 0 turns login throttling off.' },
  scrypt_cost: { kind: 'int', def: 15, min: 10, max: 20, doc: 'scrypt cost of the password hash made for each new or changed password, as log2 N (r = 8, p = 1): each step doubles its time and memory (15: 32 MiB, 60-140 ms of one core here; 17: 128 MiB, four times that; at most 20, 1 GiB per hash in each password worker). Existing hashes keep the cost they were made with. See docs/security.md, "Password work during login storms".' },
  scram_iterations: { kind: 'int', def: 4096, min: 4096, max: 10_000_000, doc: 'PBKDF2 iterations of the SCRAM-SHA-1 and SCRAM-SHA-256 keys made for each new or changed password (RFC 7677 minimum 4096). Sets what an offline guess against a stolen database costs, and what a PLAIN, native or HTTP Basic login costs the server (about 1.7 ms per 4096 on this machine) when the password is not in the verified-password cache; SCRAM logins cost the server a few HMACs whatever the count (the client derives). Existing keys keep their count.' },
  password_pool: { kind: 'string', def: 'workers', doc: 'Where password hashing runs: workers (worker threads of the server at a lower CPU priority than the event loop, so connected sessions keep their latency during a login storm) or libuv (node:crypto on libuv\'s thread pool, at the event loop\'s priority). See docs/benchmarks.md, "Login and reconnect storms".' },
  password_pool_size: { kind: 'int', def: 0, min: 0, max: 256, doc: 'Password derivations run at once (worker threads, or libuv jobs in flight); the rest wait in a fair queue (round robin per account, per address for registrations). 0: one per CPU the process may run on (1 under taskset -c 0 or a one-CPU container).' },
  password_cache_size: { kind: 'int', def: 100_000, min: 0, max: 10_000_000, doc: 'Accounts whose last verified password is remembered in memory (an HMAC under a per-process key, never written) so that the same password sent again in clear is accepted without a derivation; wrong passwords always pay the full derivation. 0 turns it off. docs/security.md says what it protects and what not.' },
  xmpp_port: { kind: 'int', def: 5222, min: -1, max: 65535, doc: 'XMPP client port (STARTTLS). 0 picks a free port (logged); -1 disables it.' },
  xmpps_port: { kind: 'int', def: 5223, min: -1, max: 65535, doc: 'XMPP client port with direct TLS (XEP-0368). 0 picks a free port; -1 disables it.' },
  xmpp_require_tls: { kind: 'bool', def: true, doc: 'XMPP clients must use TLS before authenticating. false allows plaintext streams with PLAIN (logged as a warning).' },
  xmpp_registration: { kind: 'string', def: 'closed', doc: 'XEP-0077 in-band registration: closed, or open (anyone may create an account).' },
  xmpp_resource_conflict: { kind: 'string', def: 'replace_old', doc: 'A login binding a resource already connected: replace_old (the old stream gets a conflict error) or new_resource (the new one gets a generated resource).' },
  xmpp_max_stanza_bytes: { kind: 'int', def: 262_144, min: 1024, max: 16_777_216, doc: 'Largest XMPP stanza (in characters); bigger ones end the stream with policy-violation.' },
  xmpp_negotiation_timeout_ms: { kind: 'int', def: 30_000, min: 100, max: 600_000, doc: 'An XMPP stream must be authenticated and bound within this time, or it ends with connection-timeout.' },
  xmpp_stanza_timeout_ms: { kind: 'int', def: 30_000, min: 100, max: 600_000, doc: 'A stanza (or stream header) that was started must be complete within this time (slow senders get connection-timeout).' },
  xmpp_max_offline_messages: { kind: 'int', def: 1000, min: 0, max: 1_000_000, doc: 'Messages stored per account while it is offline; beyond this further messages are dropped (senders who may see the account\'s presence get service-unavailable, others nothing, so existence does not leak).' },
  xmpp_parser_rest_ms: { kind: 'int', def: 5_000, min: 0, max: 3_600_000, doc: "An XMPP stream over TCP silent this long between stanzas gives its XML parser's memory (about 3 KB) back until it sends again; 0 keeps every parser." },
  xmpp_close_timeout_ms: { kind: 'int', def: 2_000, min: 100, max: 60_000, doc: 'How long an XMPP peer has to answer our closing of its stream before its socket is destroyed.' },
  xmpp_sm_resume_timeout_ms: { kind: 'int', def: 300_000, min: 0, max: 86_400_000, doc: 'XEP-0198: how long a dropped XMPP stream may be resumed (messages to it are kept meanwhile). Watchers see it unavailable after grace_period_ms like any lost connection; a later resume announces it again. 0 disables resumption.' },
  xmpp_sm_max_unacked: { kind: 'int', def: 1_000, min: 10, max: 1_000_000, doc: 'XEP-0198: stanzas a client may leave unacknowledged; beyond this its stream ends with resource-constraint and the unacknowledged messages go to offline storage (within xmpp_max_offline_messages).' },
  xmpp_sm_max_unacked_bytes: { kind: 'int', def: 4_194_304, min: 65_536, max: 1_073_741_824, doc: 'XEP-0198: characters of unacknowledged stanzas a client may hold on the server; beyond this its stream ends as for xmpp_sm_max_unacked.' },
  xmpp_max_output_bytes: { kind: 'int', def: 1_048_576, min: 16_384, max: 268_435_456, doc: 'Output waiting for one XMPP client (not yet taken by the kernel) beyond which the server stops reading from it until it has read half; four times this at once ends its stream.' },
  xmpp_output_timeout_ms: { kind: 'int', def: 30_000, min: 100, max: 600_000, doc: 'An XMPP client whose waiting output stays above xmpp_max_output_bytes this long has its stream ended (policy-violation).' },
  tls_cert: { kind: 'string', def: '', doc: 'PEM certificate (chain) for XMPP TLS. Empty with tls_key empty: a self-signed one is generated in data_dir/tls.' },
  tls_key: { kind: 'string', def: '', doc: 'PEM private key matching tls_cert.' },
  apps: { kind: 'bool', def: true, doc: 'The third-party apps feature (docs/apps.md): app registration under /api/v1/apps and `presenced app`. false registers none of its routes.' },
  app_registration: { kind: 'string', def: 'accounts', doc: 'Who may register apps: accounts (any account, each seeing only its own apps) or admin (the admin token only).' },
  webhooks_allow_private: { kind: 'bool', def: false, doc: 'Allow app webhook URLs over plain http and the domain proof of apps whose homepage is http://localhost or 127.0.0.1 (tests, development). Never on a public server.' },
  webhook_flush_ms: { kind: 'int', def: 5, min: 0, max: 10_000, doc: 'Webhook updates are gathered in memory and written to the outbox in one transaction this many ms after the first (off the presence path); once written they survive a crash.' },
  webhook_batch_max: { kind: 'int', def: 100, min: 1, max: 10_000, doc: 'Most presence updates in one webhook request.' },
  webhook_batch_ms: { kind: 'int', def: 50, min: 0, max: 60_000, doc: 'How long a webhook update waits for others to share its request (a full batch goes at once).' },
  webhook_timeout_ms: { kind: 'int', def: 10_000, min: 100, max: 120_000, doc: 'A webhook request without a 2xx answer within this time has failed and is retried.' },
  webhook_retry_window_ms: { kind: 'int', def: 86_400_000, min: 100, max: 30 * 86_400_000, doc: 'An app webhook failing for this long is disabled (its owner sees why; pending updates are kept and resume when it is enabled again).' },
  webhook_backoff_base_ms: { kind: 'int', def: 1_000, min: 1, max: 3_600_000, doc: 'First webhook retry delay; it doubles per failure up to webhook_backoff_cap_ms, with full jitter. Retry-After is honoured up to the cap. Also the first wait before the outbox writes again after the database refused a write.' },
  webhook_backoff_cap_ms: { kind: 'int', def: 3_600_000, min: 1, max: 86_400_000, doc: 'Longest delay between two webhook retries, also the most of a Retry-After that is honoured.' },
  webhook_retention_ms: { kind: 'int', def: 86_400_000, min: 0, max: 30 * 86_400_000, doc: 'Delivered webhook updates and the delivery log are kept this long (for the owner\'s replay and log), then purged.' },
  stream_retention_ms: { kind: 'int', def: 3_600_000, min: 0, max: 30 * 86_400_000, doc: 'An app stream resumed with Last-Event-ID or ?since= replays the updates it missed if its cursor is at most this old; an older cursor gets a fresh snapshot, marked as such.' },
  stream_keepalive_ms: { kind: 'int', def: 15_000, min: 100, max: 600_000, doc: 'An open app stream with nothing to say sends a keep-alive line this often (so proxies and the app see it is alive).' },
  stream_max_lag_bytes: { kind: 'int', def: 1_048_576, min: 1_024, max: 268_435_456, doc: 'An app stream whose consumer leaves more than this many bytes waiting in the server (past what the socket buffers of the operating system took) is ended with the reason "excessive client-side lag" (memory stays bounded).' },
  push: { kind: 'bool', def: true, doc: 'The push notifications feature (docs/push.md): device registrations (native push.register/unregister/list), the push queue, and POST /api/v1/accounts/{jid}/notify. false registers none of them.' },
  push_providers: { kind: 'json', def: {}, doc: 'Push providers by name, a JSON object: {"<name>": {"type": "fcm"|"apns"|"webpush"|"webhook", ...fields}} (docs/push.md, "Providers"). In the environment, PRESENCED_PUSH_PROVIDERS holds the same object as JSON text. Clients name a provider when they register a device; an empty object accepts no registration.' },
  push_max_registrations: { kind: 'int', def: 10, min: 1, max: 1_000, doc: 'Push registrations (devices) an account may hold; registering one more is refused with a clear error (unregister an old device first). Registering a token again replaces its registration and does not count twice.' },
  push_include_sender: { kind: 'bool', def: false, doc: 'Whether a push for a waiting message names its sender (XEP-0357 last-message-sender). Off: the push service learns only that something waits.' },
  push_include_body: { kind: 'bool', def: false, doc: 'Whether a push for a waiting message carries its text (XEP-0357 last-message-body; never for an encrypted message). Off: the push service never sees message text. The notify API\'s title and body are the operator\'s own words and always go.' },
  push_rate_per_device_per_minute: { kind: 'int', def: 30, min: 1, max: 100_000, doc: 'Most pushes sent to one device per minute; more wait in the queue (where a newer push with the same collapse key replaces the waiting one).' },
  push_max_failures: { kind: 'int', def: 5, min: 1, max: 10_000, doc: 'Consecutive failed pushes (refused by the provider, or given up after push_max_attempts) after which a registration is disabled; push.list shows it with the reason. Registering the token again enables it.' },
  push_max_attempts: { kind: 'int', def: 8, min: 1, max: 1_000, doc: 'Attempts of one push (network errors, 429 and 5xx are retried with exponential backoff and jitter, never sooner than Retry-After) before it is given up and counts as one failure of its registration.' },
  push_backoff_base_ms: { kind: 'int', def: 1_000, min: 1, max: 3_600_000, doc: 'First retry delay of a push; it doubles per attempt up to push_backoff_cap_ms, with full jitter.' },
  push_backoff_cap_ms: { kind: 'int', def: 600_000, min: 1, max: 86_400_000, doc: 'Longest delay between two attempts of a push, also the most of a Retry-After that is honoured.' },
  push_timeout_ms: { kind: 'int', def: 10_000, min: 100, max: 120_000, doc: 'A push request without an answer within this time is retried.' },
  push_concurrency: { kind: 'int', def: 256, min: 1, max: 100_000, doc: 'Push requests in flight at once (one per device at a time, so a device gets its pushes in order).' },
  push_ttl_s: { kind: 'int', def: 86_400, min: 0, max: 2_419_200, doc: 'How long the push service keeps a push for a device that is off (FCM ttl, apns-expiration, Web Push TTL).' },
  push_service_name: { kind: 'string', def: 'push', doc: 'The built-in XMPP push service (XEP-0357 app server, Tigase\'s push component) answers at <name>.<domain>: clients register their device there with the ad-hoc command register-device and enable push with jid=\'<name>.<domain>\'. One DNS label (docs/push.md, "XMPP").' },
  push_xmpp_offline: { kind: 'bool', def: true, doc: 'XEP-0357 trigger: a message with a body stored offline pushes the account\'s enabled devices that are not in use.' },
  push_xmpp_away: { kind: 'bool', def: true, doc: 'Tigase\'s away extension: a message with a body delivered while every connected available resource is away, xa or dnd pushes the registrations enabled with away=\'true\'.' },
  push_xmpp_sm: { kind: 'bool', def: true, doc: 'A message for a device whose stream-management session is held for resumption (its connection lost) pushes that device; also what it had not acknowledged when the connection was lost.' },
  push_xmpp_inactive: { kind: 'bool', def: true, doc: 'A message delivered to a session that said it is inactive (XEP-0352) pushes that session\'s device: an app in the background may not be reading its connection.' },
  push_xmpp_clear: { kind: 'bool', def: true, doc: 'Once offline messages were fetched, the account\'s other enabled devices get a push with message-count 0 (reason clear) so they clear their badge.' },
  extensions: { kind: 'bool', def: true, doc: 'Server-side presence extensions (docs/extensions.md): the modules listed in extensions_list and those in data_dir/extensions/, each in a worker thread of its own. Nothing is loaded unless one is configured or dropped there. false loads none, even if listed.' },
  extensions_list: { kind: 'json', def: {}, doc: 'Extensions by name, a JSON object: {"<name>": {"module": "/path/to/ext.mjs" | "npm-package", "settings": {...}, "enabled": true}}. An entry without "module" gives settings to (or, with "enabled": false, turns off) the module of that name in data_dir/extensions/. In the environment, PRESENCED_EXTENSIONS_LIST holds the same object as JSON text.' },
  extensions_required: { kind: 'bool', def: false, doc: 'Refuse to start when an extension cannot be loaded (missing module, bad export, failing onStart). false: the server starts without it and logs why; `presenced extensions list` shows it as failed.' },
  extension_budget_ms: { kind: 'int', def: 1_000, min: 10, max: 600_000, doc: 'Longest one extension hook call may take; an extension that runs past it (a blocked thread included) is stopped and restarted.' },
  extension_queue_max: { kind: 'int', def: 10_000, min: 1, max: 1_000_000, doc: 'Events waiting for one extension; beyond this new events for it are dropped and counted (presence itself never waits for an extension).' },
  extension_memory_mb: { kind: 'int', def: 64, min: 8, max: 16_384, doc: "Heap limit of each extension's worker thread; an extension that exceeds it is stopped and restarted." },
  extension_max_failures: { kind: 'int', def: 5, min: 1, max: 1_000, doc: 'Failures in a row (throw, budget exceeded, out of memory, crash, failed restart) after which an extension is disabled until `presenced extensions reload` or a restart.' },
  extension_backoff_base_ms: { kind: 'int', def: 1_000, min: 1, max: 600_000, doc: 'Wait before restarting a failed extension; it doubles per failure in a row, up to 30 s.' },
} as const satisfies Record<string, KeySpec>;

export type ConfigKey = keyof typeof CONFIG_KEYS;

export interface Config {
  host: string;
  http_port: number;
  domains: string[];
  data_dir: string;
  store: string;
  store_pool_size: number;
  node_id: string;
  admin_token: string;
  log_level: string;
  grace_period_ms: number;
  heartbeat_interval_ms: number;
  idle_timeout_ms: number;
  presence_checkpoint_ms: number;
  bus: string;
  node_lease_ms: number;
  auth_timeout_ms: number;
  ws_max_frame_bytes: number;
  ws_rate_limit: number;
  ws_rate_burst: number;
  ws_flood_strikes: number;
  max_auth_failures: number;
  listen_backlog: number;
  max_connections: number;
  token_ttl_s: number;
  token_secret: string;
  public_presence_default: boolean;
  idle_gc_interval_ms: number;
  semi_space_mb: number;
  shutdown_timeout_ms: number;
  demo: boolean;
  trust_req_jid: boolean;
  http_trust_proxy: boolean;
  public_url: string;
  http_batch_max: number;
  login_throttle_account_free: number;
  login_throttle_address_free: number;
  login_throttle_max_delay_ms: number;
  scrypt_cost: number;
  scram_iterations: number;
  password_pool: string;
  password_pool_size: number;
  password_cache_size: number;
  xmpp_port: number;
  xmpps_port: number;
  xmpp_require_tls: boolean;
  xmpp_registration: string;
  xmpp_resource_conflict: string;
  xmpp_max_stanza_bytes: number;
  xmpp_negotiation_timeout_ms: number;
  xmpp_stanza_timeout_ms: number;
  xmpp_max_offline_messages: number;
  xmpp_close_timeout_ms: number;
  xmpp_parser_rest_ms: number;
  xmpp_sm_resume_timeout_ms: number;
  xmpp_sm_max_unacked: number;
  xmpp_sm_max_unacked_bytes: number;
  xmpp_max_output_bytes: number;
  xmpp_output_timeout_ms: number;
  tls_cert: string;
  tls_key: string;
  apps: boolean;
  app_registration: string;
  webhooks_allow_private: boolean;
  webhook_flush_ms: number;
  webhook_batch_max: number;
  webhook_batch_ms: number;
  webhook_timeout_ms: number;
  webhook_retry_window_ms: number;
  webhook_backoff_base_ms: number;
  webhook_backoff_cap_ms: number;
  webhook_retention_ms: number;
  stream_retention_ms: number;
  stream_keepalive_ms: number;
  stream_max_lag_bytes: number;
  push: boolean;
  push_providers: Record<string, Record<string, unknown>>;
  push_max_registrations: number;
  push_include_sender: boolean;
  push_include_body: boolean;
  push_rate_per_device_per_minute: number;
  push_max_failures: number;
  push_max_attempts: number;
  push_backoff_base_ms: number;
  push_backoff_cap_ms: number;
  push_timeout_ms: number;
  push_concurrency: number;
  push_ttl_s: number;
  push_service_name: string;
  push_xmpp_offline: boolean;
  push_xmpp_away: boolean;
  push_xmpp_sm: boolean;
  push_xmpp_inactive: boolean;
  push_xmpp_clear: boolean;
  extensions: boolean;
  extensions_list: Record<string, Record<string, unknown>>;
  extensions_required: boolean;
  extension_budget_ms: number;
  extension_queue_max: number;
  extension_memory_mb: number;
  extension_max_failures: number;
  extension_backoff_base_ms: number;
}

export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`invalid configuration:\n  - ${problems.join('\n  - ')}`);
    this.name = 'ConfigError';
  }
}

const LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];
const ENV_PREFIX = 'PRESENCED_';

export function envName(key: string): string {
  return ENV_PREFIX + key.toUpperCase();
}

function closest(word: string): string | null {
  let best: string | null = null;
  let bestD = Infinity;
  for (const k of Object.keys(CONFIG_KEYS)) {
    const d = editDistance(word, k);
    if (d < bestD) {
      bestD = d;
      best = k;
    }
  }
  return bestD <= 3 ? best : null;
}

function editDistance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let prev = row[0] as number;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = row[j] as number;
      row[j] = Math.min((row[j] as number) + 1, (row[j - 1] as number) + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = tmp;
    }
  }
  return row[b.length] as number;
}

/** The origin a public_url names (trailing slash dropped), or null when it is more or other than an origin. */
function publicOrigin(raw: string): string | null {
  let u: URL;
  try {
    u = new URL(raw);
  } catch {
    return null;
  }
  const bare = (u.pathname === '/' || u.pathname === '') && u.search === '' && u.hash === '' && !raw.endsWith('?') && !raw.endsWith('#');
  if ((u.protocol !== 'https:' && u.protocol !== 'http:') || u.username !== '' || u.password !== '' || !bare) return null;
  return u.origin;
}

/** Why `raw` is not a usable `store` value, or null. The password never appears in the message. */
function storeProblem(raw: string): string | null {
  const shown = JSON.stringify(raw.replace(/:\/\/([^:/@]*):[^@/]*@/, '://$1:***@').slice(0, 200));
  const expected = 'store must be empty (SQLite in data_dir) or a PostgreSQL URL such as postgres://user:password@host:5432/presenced';
  if (!/^postgres(ql)?:\/\//i.test(raw)) return `${expected} (got ${shown})`;
  let u: URL;
  try {
    u = new URL(raw);
  } catch {
    return `${expected} (got ${shown}, which is not a valid URL: percent-encode special characters of the password)`;
  }
  if (u.hash !== '') return `${expected} (got ${shown}, with a #fragment)`;
  return null;
}

const NODE_ID = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/;

/**
 * This process's node id: `node_id`, or derived (see its doc). Derived ids with http_port 0 are new on
 * every call, so the composition root calls this once and hands the id to everything that needs it.
 */
export function resolveNodeId(config: Pick<Config, 'node_id' | 'http_port'>): string {
  if (config.node_id !== '') return config.node_id;
  const host = hostname().replace(/[^A-Za-z0-9._-]/g, '-').replace(/^[^A-Za-z0-9]+/, '').slice(0, 80) || 'node';
  return config.http_port !== 0 ? `${host}:${config.http_port}` : `${host}:${process.pid}:${randomBytes(4).toString('hex')}`;
}

/** Converts one raw value (from JSON or from an environment string) to the key's type, or explains why not. */
function coerce(key: ConfigKey, raw: unknown, fromEnv: boolean, where: string): { value?: unknown; problem?: string } {
  const spec: KeySpec = CONFIG_KEYS[key];
  const shown = JSON.stringify(raw);
  switch (spec.kind) {
    case 'string':
      if (typeof raw !== 'string') return { problem: `${key} must be a string (got ${shown} from ${where})` };
      return { value: raw };
    case 'level':
      if (typeof raw !== 'string' || !LEVELS.includes(raw)) return { problem: `${key} must be one of ${LEVELS.join(', ')} (got ${shown} from ${where})` };
      return { value: raw };
    case 'bool': {
      if (typeof raw === 'boolean') return { value: raw };
      if (fromEnv && typeof raw === 'string' && /^(true|false|1|0|yes|no)$/i.test(raw)) return { value: /^(true|1|yes)$/i.test(raw) };
      return { problem: `${key} must be true or false (got ${shown} from ${where})` };
    }
    case 'int': {
      const n = fromEnv && typeof raw === 'string' && /^-?\d+$/.test(raw.trim()) ? Number(raw) : raw;
      if (typeof n !== 'number' || !Number.isInteger(n)) return { problem: `${key} must be an integer (got ${shown} from ${where})` };
      if ((spec.min !== undefined && n < spec.min) || (spec.max !== undefined && n > spec.max)) {
        return { problem: `${key} must be between ${spec.min} and ${spec.max} (got ${n} from ${where})` };
      }
      return { value: n };
    }
    case 'json': {
      // A JSON object: as is from the file, as JSON text from the environment.
      let v = raw;
      if (fromEnv && typeof raw === 'string') {
        try {
          v = JSON.parse(raw);
        } catch (e) {
          return { problem: `${key} must be a JSON object (${where} is not valid JSON: ${(e as Error).message})` };
        }
      }
      if (typeof v !== 'object' || v === null || Array.isArray(v)) return { problem: `${key} must be a JSON object (got ${shown.slice(0, 80)} from ${where})` };
      return { value: v };
    }
    case 'list': {
      const list = fromEnv && typeof raw === 'string' ? raw.split(',').map((s) => s.trim()).filter(Boolean) : raw;
      if (!Array.isArray(list) || list.length === 0 || !list.every((x) => typeof x === 'string')) {
        return { problem: `${key} must be a non-empty list of strings (got ${shown} from ${where})` };
      }
      return { value: list };
    }
  }
}

export interface LoadOptions {
  readonly file?: string | undefined;
  readonly env?: NodeJS.ProcessEnv;
  /** Values that win over everything (used by tests and embedding). */
  readonly overrides?: Partial<Config>;
}

export function loadConfig(opts: LoadOptions = {}): Config {
  const env = opts.env ?? process.env;
  const problems: string[] = [];
  const cfg: Record<string, unknown> = {};
  for (const [k, spec] of Object.entries(CONFIG_KEYS)) cfg[k] = spec.def;

  if (opts.file) {
    let parsed: unknown = {};
    try {
      parsed = JSON.parse(readFileSync(opts.file, 'utf8'));
    } catch (e) {
      const why = (e as NodeJS.ErrnoException).code === 'ENOENT' ? 'file not found' : (e as Error).message;
      problems.push(`cannot read config file ${opts.file}: ${why}`);
    }
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
      problems.push(`config file ${opts.file} must hold a JSON object`);
      parsed = {};
    }
    for (const [k, v] of Object.entries(parsed as object)) {
      if (!Object.hasOwn(CONFIG_KEYS, k)) {
        const hint = closest(k);
        problems.push(`unknown key "${k}" in ${opts.file}${hint ? ` (did you mean "${hint}"?)` : ''}`);
        continue;
      }
      const r = coerce(k as ConfigKey, v, false, opts.file);
      if (r.problem) problems.push(r.problem);
      else cfg[k] = r.value;
    }
  }

  for (const [name, v] of Object.entries(env)) {
    if (!name.startsWith(ENV_PREFIX) || v === undefined) continue;
    const k = name.slice(ENV_PREFIX.length).toLowerCase();
    if (!Object.hasOwn(CONFIG_KEYS, k)) {
      const hint = closest(k);
      problems.push(`unknown environment variable ${name}${hint ? ` (did you mean ${envName(hint)}?)` : ''}`);
      continue;
    }
    const r = coerce(k as ConfigKey, v, true, name);
    if (r.problem) problems.push(r.problem);
    else cfg[k] = r.value;
  }

  Object.assign(cfg, opts.overrides ?? {});
  const c = cfg as unknown as Config;

  const domains: string[] = [];
  for (const d of c.domains) {
    try {
      const j = parseJid(d);
      if (j.local !== '' || j.resource !== null) problems.push(`domains: "${d}" is not a bare domain`);
      else domains.push(j.domain);
    } catch (e) {
      problems.push(`domains: "${d}" is not a valid domain: ${(e as Error).message}`);
    }
  }
  c.domains = [...new Set(domains)];
  c.push_providers = { ...c.push_providers };
  if (c.token_secret !== '' && c.token_secret.length < 32) problems.push('token_secret must be at least 32 characters (or empty to generate one)');
  if (c.admin_token !== '' && c.admin_token.length < 16) problems.push('admin_token must be at least 16 characters (or empty to disable the admin API)');
  if (c.idle_timeout_ms <= c.heartbeat_interval_ms) problems.push('idle_timeout_ms must be greater than heartbeat_interval_ms, or live connections would be dropped');
  if (c.ws_rate_burst < 1) problems.push('ws_rate_burst must be at least 1');
  if (c.password_pool !== 'workers' && c.password_pool !== 'libuv') problems.push('password_pool must be workers or libuv');
  if (c.xmpp_registration !== 'open' && c.xmpp_registration !== 'closed') problems.push('xmpp_registration must be open or closed');
  if (c.xmpp_resource_conflict !== 'replace_old' && c.xmpp_resource_conflict !== 'new_resource') problems.push('xmpp_resource_conflict must be replace_old or new_resource');
  if (c.xmpp_sm_max_unacked_bytes < c.xmpp_max_stanza_bytes) problems.push('xmpp_sm_max_unacked_bytes must be at least xmpp_max_stanza_bytes, or one large message would end a stream');
  if (c.app_registration !== 'accounts' && c.app_registration !== 'admin') problems.push('app_registration must be accounts or admin');
  for (const [name, p] of Object.entries(c.push_providers)) {
    // Each entry's own fields are checked by its provider when the push feature starts; the shape is checked here.
    if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/.test(name)) problems.push(`push_providers: "${name.slice(0, 80)}" is not a valid provider name (letters, digits, . _ -, at most 64)`);
    if (typeof p !== 'object' || p === null || Array.isArray(p)) problems.push(`push_providers.${name.slice(0, 80)} must be an object with a "type"`);
  }
  c.extensions_list = { ...c.extensions_list };
  for (const [name, e] of Object.entries(c.extensions_list)) {
    // Shape only: whether the module loads is found out (and reported, naming it) when the server starts it.
    const at = `extensions_list.${name.slice(0, 64)}`;
    if (!/^[a-z0-9][a-z0-9_-]{0,63}$/.test(name)) problems.push(`extensions_list: "${name.slice(0, 80)}" is not a valid extension name (lower-case letters, digits, - and _, at most 64)`);
    if (typeof e !== 'object' || e === null || Array.isArray(e)) {
      problems.push(`${at} must be an object such as {"module": "./ext.mjs", "settings": {}}`);
      continue;
    }
    for (const k of Object.keys(e)) if (k !== 'module' && k !== 'settings' && k !== 'enabled') problems.push(`${at}: unknown field "${k.slice(0, 40)}" (an entry takes module, settings, enabled)`);
    if (e.module !== undefined && (typeof e.module !== 'string' || e.module === '')) problems.push(`${at}.module must be a non-empty string (a path or a package name)`);
    if (e.settings !== undefined && (typeof e.settings !== 'object' || e.settings === null || Array.isArray(e.settings))) problems.push(`${at}.settings must be an object`);
    if (e.enabled !== undefined && typeof e.enabled !== 'boolean') problems.push(`${at}.enabled must be true or false`);
  }
  if ((c.tls_cert === '') !== (c.tls_key === '')) problems.push('tls_cert and tls_key must be set together');
  if (c.store !== '') {
    const why = storeProblem(c.store);
    if (why !== null) problems.push(why);
  }
  if (c.bus !== '' && !/^rediss?:\/\/[^\s]+$/.test(c.bus)) problems.push('bus must be empty (in-process) or a redis:// or rediss:// URL');
  if (c.node_id !== '' && !NODE_ID.test(c.node_id)) problems.push(`node_id must be 1 to 128 letters, digits and . _ : - starting with a letter or digit (got ${JSON.stringify(c.node_id.slice(0, 140))})`);
  if (c.public_url !== '') {
    const origin = publicOrigin(c.public_url);
    if (origin === null) problems.push(`public_url must be an http(s) origin such as https://presence.example, without path, query or credentials (got ${JSON.stringify(c.public_url)})`);
    else c.public_url = origin;
  }
  if (problems.length) throw new ConfigError(problems);
  c.data_dir = resolve(c.data_dir);
  return c;
}
