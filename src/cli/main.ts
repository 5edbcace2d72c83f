/**
 * The `imago` command. Local verbs work on files without a server.
 *
 * Start-up is kept to what the verb run needs (issue 20: local verbs start in ≤ 60 ms, so that
 * small files are not dominated by it): `--version` loads nothing, and a start registers only the
 * module of its verb (`VERB_MODULES`), which imports its engine when its action runs. `--help`, no
 * verb or an unknown one registers every module, so help and "unknown command" list them all.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Command } from 'commander';
import type { RemoteContext } from './image-commands.js';

const VERSION = '0.1.0';
const EXIT_ERROR = 2;

type Register = (program: Command, setExit: (code: number) => void) => Promise<void>;

/** The top-level verbs each CLI module registers, in the order help lists them. */
export const VERB_MODULES: readonly { verbs: readonly string[]; register: Register }[] = [
  { verbs: ['inspect'], register: async (p, setExit) => (await import('./inspect-command.js')).registerInspect(p, setExit) },
  { verbs: ['convert', 'compare'], register: async (p, setExit) => (await import('./convert-command.js')).registerConvert(p, setExit) },
  { verbs: ['serve', 'gc', 'admin-token'], register: async (p, setExit) => (await import('./serve-command.js')).registerServe(p, setExit) },
  {
    verbs: ['image'],
    register: async (p, setExit) => (await import('./image-commands.js')).registerImageCommands(p, await remoteContext(setExit)),
  },
  {
    verbs: ['whoami', 'project', 'quota', 'user', 'group', 'token', 'member', 'audit', 'oidc'],
    register: async (p, setExit) => (await import('./access-commands.js')).registerAccessCommands(p, await remoteContext(setExit)),
  },
];

/**
 * Runs the command line `argv` and returns the exit code. An error no verb handled is printed as
 * one line (`imago: <message>`); its stack trace only with the global `--debug` flag or
 * IMAGO_DEBUG=1 in `env`, the one place that setting is read.
 */
export async function main(argv: string[], env: NodeJS.ProcessEnv = process.env): Promise<number> {
  if (argv.length === 1 && (argv[0] === '--version' || argv[0] === '-V')) {
    process.stdout.write(`${VERSION}\n`);
    return 0;
  }
  const { Command, CommanderError } = await import('commander');
  let exitCode = 0;
  const program = new Command();
  program
    .name('imago')
    .description('Imago — registry and lifecycle service for virtual machine images')
    .version(VERSION)
    .option('--debug', 'print the stack trace of an unexpected error (or set IMAGO_DEBUG=1)')
    .exitOverride()
    .showHelpAfterError();
  const setExit = (code: number) => {
    exitCode = code;
  };
  // the verb is the first word that is not an option (the global options take no value)
  const verb = argv.find((a) => !a.startsWith('-'));
  const mine = VERB_MODULES.find((m) => verb !== undefined && m.verbs.includes(verb));
  for (const m of mine ? [mine] : VERB_MODULES) await m.register(program, setExit);
  try {
    await program.parseAsync(argv, { from: 'user' });
  } catch (e) {
    if (e instanceof CommanderError) {
      if (e.code === 'commander.helpDisplayed' || e.code === 'commander.version' || e.code === 'commander.help') return 0;
      return EXIT_ERROR;
    }
    const debug = program.opts<{ debug?: boolean }>().debug === true || /^(1|true|yes|on)$/i.test(env.IMAGO_DEBUG ?? '');
    process.stderr.write(`imago: ${unexpectedErrorText(e, debug)}\n`);
    return EXIT_ERROR;
  }
  return exitCode;
}

/** One line naming what went wrong, or with `debug` the whole stack trace. */
export function unexpectedErrorText(e: unknown, debug: boolean): string {
  if (!(e instanceof Error)) return String(e);
  if (debug) return e.stack ?? e.message;
  const cause = e.cause instanceof Error && !e.message.includes(e.cause.message) ? `: ${e.cause.message}` : '';
  return `${e.message.split('\n')[0]}${cause} (run again with --debug for the stack trace)`;
}

async function remoteContext(setExit: (code: number) => void): Promise<RemoteContext> {
  const [{ loadConfig }, { ImagoClient }] = await Promise.all([import('../config.js'), import('./client.js')]);
  return {
    setExit,
    client: (o: { server?: string; token?: string; data?: string }) => {
      const c = loadConfig({ server: o.server, token: o.token, data: o.data });
      return new ImagoClient(c.serverUrl, c.token ?? localAdminToken(c.dataDir));
    },
  };
}

/** The server-admin token a local `imago serve` wrote into its data dir, when this user can read it. */
function localAdminToken(dataDir: string): string | undefined {
  try {
    return readFileSync(join(dataDir, 'admin.token'), 'utf8').trim() || undefined;
  } catch {
    return undefined;
  }
}
