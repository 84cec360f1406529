import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { CONFIG_KEYS, ConfigError, envName, loadConfig, type Config } from './config.js';
import { isPresenceError } from './core/errors.js';
import { MemoryBus } from './adapters/memory/memory-bus.js';
import { PresenceEngine } from './engine/engine.js';
import { startIdleCollector } from './idle-collector.js';
import { tuneRuntime } from './runtime-tuning.js';
import { controlRequest, DataDirInUseError } from './control-channel.js';
import { createLogger, openStore, passwordSettings, startServer, VERSION } from './server.js';
import { Passwords } from './engine/passwords.js';
import { APP_USAGE, appCommand, AppUsageError } from './features/apps/cli.js';
import { EXTENSIONS_USAGE, extensionsCommand, ExtensionsUsageError } from './features/extensions/cli.js';
import { extensionsOf } from './features/extensions/extensions-feature.js';

const USAGE = `presenced ${VERSION}: a presence server

Usage:
  presenced start [--config FILE]                      start the server
  presenced account add <jid> [--password P]           create an account
  presenced account remove <jid>                       delete an account
  presenced account passwd <jid> [--password P]        change a password
  presenced account list [--domain D]                  list accounts
${APP_USAGE}
${EXTENSIONS_USAGE}
  presenced config                                     list configuration keys
  presenced --version | --help

Without --password the password is read from standard input (prompted on a terminal).
Every command reads the same configuration as the server: --config FILE, then PRESENCED_* variables.
Account commands work while the server runs: they go through the running server (its control socket
in the data directory), so its sessions and caches follow at once; with no server running they
write to the database directly.`;

class UsageError extends Error {}

/** A command that can only be done right by a running node (printed with exit 1, not usage). */
class NeedsNodeError extends Error {}

/**
 * In a cluster, ending an account's sessions or revoking its tokens is work for the nodes that hold
 * them: written to the database from here, the sessions on every node would carry on, logged in with
 * a password that no longer exists. So without a node on this machine (its control socket) the command
 * is refused, and says where it works.
 */
function refuseOffNodeInCluster(config: Config, command: string, rest: string): void {
  if (config.bus === '') return;
  throw new NeedsNodeError(
    `${command}: no presenced node is running with this data directory (${config.data_dir}), and in a cluster ` +
      `only a node can end the account's sessions on every node. Run the command on a node, or use the REST API: ${rest}`,
  );
}

/** An error answered by the running server, printed like the same error raised here. */
function failed(r: { code: string; message: string }): number {
  console.error(`presenced: ${r.message} (${r.code})`);
  return 1;
}

function readPassword(prompt: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const tty = process.stdin.isTTY === true;
    const rl = createInterface({ input: process.stdin, output: tty ? process.stderr : undefined, terminal: tty });
    if (tty) {
      process.stderr.write(prompt);
      // Mute the echo so the password does not appear on screen.
      (rl as unknown as { _writeToOutput: (s: string) => void })._writeToOutput = () => {};
    }
    let answered = false;
    rl.once('line', (line) => {
      answered = true;
      if (tty) process.stderr.write('\n');
      rl.close();
      resolve(line);
    });
    rl.once('close', () => {
      if (!answered) reject(new UsageError('no password given (use --password or pipe it on standard input)'));
    });
  });
}

async function withEngine<T>(config: Config, fn: (engine: PresenceEngine) => Promise<T>): Promise<T> {
  const store = openStore(config);
  try {
    await store.migrate();
    // The CLI never holds sessions: an in-memory bus with no subscribers is all the engine needs here.
    const passwords = new Passwords(passwordSettings(config));
    const engine = new PresenceEngine(store, new MemoryBus(), {
      domains: config.domains,
      gracePeriodMs: 0,
      defaultPublicPresence: config.public_presence_default,
      tokenSecret: Buffer.alloc(32),
      passwords,
    });
    try {
      return await fn(engine);
    } finally {
      await passwords.close();
    }
  } finally {
    await store.close();
  }
}

export async function main(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        config: { type: 'string', short: 'c' },
        password: { type: 'string', short: 'p' },
        domain: { type: 'string' },
        // presenced app add
        name: { type: 'string' },
        description: { type: 'string' },
        homepage: { type: 'string' },
        'icon-url': { type: 'string' },
        'redirect-uri': { type: 'string', multiple: true },
        'webhook-url': { type: 'string' },
        'webhook-format': { type: 'string' },
        manifest: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
        version: { type: 'boolean', short: 'v' },
      },
    });
  } catch (e) {
    console.error(`presenced: ${(e as Error).message}\n\n${USAGE}`);
    return 2;
  }
  const { values, positionals } = parsed;
  if (values.version) {
    console.log(VERSION);
    return 0;
  }
  if (values.help || positionals.length === 0) {
    console.log(USAGE);
    return positionals.length === 0 && !values.help ? 2 : 0;
  }

  try {
    const [cmd, sub, arg, ...extra] = positionals;
    if (cmd === 'config') {
      for (const [k, spec] of Object.entries(CONFIG_KEYS)) {
        console.log(`${k.padEnd(24)} ${envName(k).padEnd(34)} default ${JSON.stringify(spec.def)}\n    ${spec.doc}`);
      }
      return 0;
    }
    const config = loadConfig({ file: values.config });
    if (cmd === 'start') {
      if (sub !== undefined) throw new UsageError(`unexpected argument "${sub}"`);
      return await runServer(config, () => loadConfig({ file: values.config }));
    }
    if (cmd === 'app') {
      const store = openStore(config);
      try {
        await store.migrate();
        return await appCommand(config, store, sub, positionals.slice(2), values, (line) => console.log(line));
      } finally {
        await store.close();
      }
    }
    if (cmd === 'extensions') return await extensionsCommand(config, sub, positionals.slice(2), (line) => console.log(line));
    if (cmd !== 'account') throw new UsageError(`unknown command "${cmd}"`);
    if (extra.length) throw new UsageError(`unexpected argument "${extra[0]}"`);
    switch (sub) {
      case 'add':
      case 'passwd': {
        if (!arg) throw new UsageError(`account ${sub} needs a jid`);
        const password = values.password ?? (await readPassword(`password for ${arg}: `));
        const op = sub === 'add' ? 'account.add' : 'account.passwd';
        const done = (jid: string): number => {
          console.log(sub === 'add' ? `created ${jid}` : `password changed for ${jid}`);
          return 0;
        };
        const viaServer = await controlRequest(config.data_dir, { op, jid: arg, password });
        if (viaServer) return viaServer.ok ? done(viaServer.jid) : failed(viaServer);
        if (sub === 'passwd') refuseOffNodeInCluster(config, 'account passwd', 'PUT /api/v1/accounts/{jid}/password');
        return await withEngine(config, async (engine) => {
          if (sub === 'add') return done(await engine.createAccount(arg, password));
          await engine.changePassword(arg, password);
          return done(engine.localJid(arg));
        });
      }
      case 'remove': {
        if (!arg) throw new UsageError('account remove needs a jid');
        const result = (jid: string, removed: boolean): number => {
          if (!removed) {
            console.error(`presenced: no account ${jid}`);
            return 1;
          }
          console.log(`removed ${jid}`);
          return 0;
        };
        const viaServer = await controlRequest(config.data_dir, { op: 'account.remove', jid: arg });
        if (viaServer) return viaServer.ok ? result(viaServer.jid, viaServer.removed === true) : failed(viaServer);
        refuseOffNodeInCluster(config, 'account remove', 'DELETE /api/v1/accounts/{jid}');
        return await withEngine(config, async (engine) => result(engine.localJid(arg), await engine.deleteAccount(arg)));
      }
      case 'list': {
        if (arg) throw new UsageError(`unexpected argument "${arg}"`);
        return await withEngine(config, async (engine) => {
          let after: string | undefined;
          do {
            const page = await engine.store.listAccounts({ limit: 1000, ...(after ? { after } : {}), ...(values.domain ? { domain: values.domain.toLowerCase() } : {}) });
            for (const j of page.jids) console.log(j);
            after = page.next ?? undefined;
          } while (after);
          return 0;
        });
      }
      default:
        throw new UsageError(sub ? `unknown account command "${sub}"` : 'account needs a command: add, remove, passwd, list');
    }
  } catch (e) {
    if (e instanceof UsageError || e instanceof AppUsageError || e instanceof ExtensionsUsageError) {
      console.error(`presenced: ${e.message}\n\nRun "presenced --help" for usage.`);
      return 2;
    }
    if (e instanceof ConfigError) {
      console.error(`presenced: ${e.message}`);
      return 2;
    }
    if (isPresenceError(e)) {
      console.error(`presenced: ${e.message} (${e.code})`);
      return 1;
    }
    if (e instanceof DataDirInUseError || e instanceof NeedsNodeError) {
      console.error(`presenced: ${e.message}`);
      return 1;
    }
    throw e;
  }
}

async function runServer(config: Config, rereadConfig: () => Config): Promise<number> {
  const log = createLogger(config.log_level);
  const tuned = tuneRuntime({ semiSpaceCapMb: config.semi_space_mb });
  if (tuned.length) log.info({ v8Flags: tuned }, 'runtime tuned for this machine');
  const server = await startServer(config, log, { rereadConfig });
  const stopCollector = startIdleCollector({ intervalMs: config.idle_gc_interval_ms }, log);
  return new Promise<number>((resolve) => {
    const onSignal = (signal: string): void => {
      stopCollector();
      process.off('SIGHUP', onHup);
      const timer = setTimeout(() => {
        log.error({ timeoutMs: config.shutdown_timeout_ms }, 'graceful shutdown timed out; exiting');
        resolve(1);
        process.exit(1);
      }, config.shutdown_timeout_ms);
      timer.unref();
      server.stop(signal).then(
        () => resolve(0),
        (err: unknown) => {
          log.error({ err }, 'shutdown failed');
          resolve(1);
        },
      );
    };
    // SIGHUP reloads the extensions (new code, fresh workers), as daemons reload on a hang-up.
    const onHup = (): void => {
      const m = extensionsOf(server.engine);
      if (!m) return void log.info('SIGHUP: no extensions to reload (extensions: false)');
      log.info('SIGHUP: reloading extensions');
      m.reload().catch((err: unknown) => log.error({ err }, 'extension reload failed'));
    };
    process.on('SIGHUP', onHup);
    process.once('SIGTERM', () => onSignal('SIGTERM'));
    process.once('SIGINT', () => onSignal('SIGINT'));
  });
}
