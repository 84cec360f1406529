import type { Config } from '../../config.js';
import { featureControlRequest } from '../../control-channel.js';
import { PresenceError } from '../../core/errors.js';
import type { ExtensionView } from './extensions-feature.js';

export const EXTENSIONS_USAGE = `  presenced extensions list                            the running server's extensions: state, counters, why one failed
  presenced extensions reload                          reload them (new code, fresh workers) without a restart; also SIGHUP`;

export class ExtensionsUsageError extends Error {}

function table(rows: readonly ExtensionView[]): string[] {
  if (rows.length === 0) return ['no extensions (list them in extensions_list, or put modules in data_dir/extensions/)'];
  const head = ['NAME', 'STATE', 'HANDLED', 'FAILED', 'DROPPED', 'RESTARTS', 'QUEUE', 'SOURCE', 'MODULE'];
  const cells = rows.map((r) => [r.name, r.state, String(r.handled), String(r.failed), String(r.dropped), String(r.restarts), String(r.queueDepth), r.source, r.module]);
  const widths = head.map((h, i) => Math.max(h.length, ...cells.map((c) => (c[i] as string).length)));
  const line = (c: readonly string[]) => c.map((x, i) => (i === c.length - 1 ? x : x.padEnd(widths[i] as number))).join('  ');
  const out = [line(head)];
  rows.forEach((r, i) => {
    out.push(line(cells[i] as string[]));
    if (r.reason !== null) out.push(`    why: ${r.reason}`);
    else if (r.lastError !== null) out.push(`    last error (${new Date(r.lastError.at).toISOString()}): ${r.lastError.kind}: ${r.lastError.message}`);
  });
  return out;
}

/**
 * `presenced extensions ...`: extensions live only inside a running server, so these commands ask it
 * through its control socket; with no server running there is nothing to show.
 */
export async function extensionsCommand(config: Config, sub: string | undefined, args: readonly string[], out: (line: string) => void): Promise<number> {
  if (args.length) throw new ExtensionsUsageError(`unexpected argument "${args[0]}"`);
  if (sub !== 'list' && sub !== 'reload') throw new ExtensionsUsageError(sub ? `unknown extensions command "${sub}"` : 'extensions needs a command: list, reload');
  const r = await featureControlRequest(config.data_dir, `extensions.${sub}`);
  if (r === null) throw new PresenceError('not-found', `no server is running with data directory ${config.data_dir}; extensions run inside a running server`);
  if (!r.ok) throw new PresenceError(r.code as never, r.message);
  for (const l of table(r.result as ExtensionView[])) out(l);
  return 0;
}
