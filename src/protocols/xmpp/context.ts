import type { PresenceEngine } from '../../engine/engine.js';
import type { XmppIqRegistry } from '../../features/registries.js';
import type { LoginTurns } from '../login-turns.js';
import type { XmlLimits } from './parser.js';
import type { StreamManagement } from './stream-management.js';

export interface XmppOptions {
  readonly limits: XmlLimits;
  readonly requireTls: boolean;
  readonly registration: 'open' | 'closed';
  readonly resourceConflict: 'replace_old' | 'new_resource';
  readonly maxAuthFailures: number;
  /** Stream header to bound resource within this time, or connection-timeout. */
  readonly negotiationTimeoutMs: number;
  /** A stanza (or the stream header) started must be complete within this time. */
  readonly stanzaTimeoutMs: number;
  /** A connection silent this long is pinged (XEP-0199). */
  readonly pingIntervalMs: number;
  /** A connection silent this long is dead. */
  readonly idleTimeoutMs: number;
  /** A TCP stream silent this long between stanzas lets its XML parser go until it sends again; 0 never. */
  readonly parserRestMs: number;
  readonly maxOfflineMessages: number;
  /** XEP-0198: how long a dropped stream can be resumed (watchers see it go after the grace period); 0 disables resumption. */
  readonly smResumeTimeoutMs: number;
  /** XEP-0198: unacknowledged stanzas (and their characters) beyond which a stream ends with resource-constraint. */
  readonly smMaxUnacked: number;
  readonly smMaxUnackedChars: number;
  readonly serverVersion: string;
  /** The clock of the liveness sweep and its timeouts (ms); Date.now unless a test drives it. */
  readonly now?: () => number;
  /** Where login work waits behind the online sessions' traffic; shared with the other front doors. */
  readonly loginTurns?: LoginTurns;
  /** Output waiting for a client beyond which its stream stops being read (see OutputLimits). */
  readonly maxOutputBytes: number;
  /** A client whose output stays above `maxOutputBytes` this long has its stream ended. */
  readonly outputTimeoutMs: number;
}

export interface XmppLog {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

/** What every XMPP connection shares. */
export interface XmppContext {
  readonly engine: PresenceEngine;
  readonly opts: XmppOptions;
  readonly log: XmppLog;
  /** Secret for the fake SCRAM salts of unknown accounts. */
  readonly saltSecret: Buffer;
  readonly startedAt: number;
  /** opts.now or Date.now. */
  readonly now: () => number;
  /** opts.loginTurns or one of this server's own. */
  readonly loginTurns: LoginTurns;
  readonly sm: StreamManagement;
  /** IQ namespaces registered by features, consulted for payloads the server does not handle itself. */
  readonly extensions: XmppIqRegistry | null;
}
