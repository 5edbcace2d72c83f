/** The `imago` command. Local verbs work on files without a server. */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Command, CommanderError } from 'commander';
import { loadConfig } from '../config.js';
import { ImagoClient } from './client.js';
import { registerAccessCommands } from './access-commands.js';
import { registerImageCommands } from './image-commands.js';
import { registerConvert } from './convert-command.js';
import { EXIT_ERROR, registerInspect } from './inspect-command.js';
import { registerServe } from './serve-command.js';

/**
 * Runs the command line `argv` and returns the exit code. An error no verb handled is printed as
 * one line (`imago: <message>`); its stack trace only with the global `--debug` flag or
 * IMAGO_DEBUG=1 in `env`, the one place that setting is read.
 */
export async function main(argv: string[], env: NodeJS.ProcessEnv = process.env): Promise<number> {
  let exitCode = 0;
  const program = new Command();
  program
    .name('imago')
    .description('Imago — registry and lifecycle service for virtual machine images')
    .version('0.1.0')
    .option('--debug', 'print the stack trace of an unexpected error (or set IMAGO_DEBUG=1)')
    .exitOverride()
    .showHelpAfterError();
  const setExit = (code: number) => {
    exitCode = code;
  };
  registerInspect(program, setExit);
  registerConvert(program, setExit);
  registerServe(program, setExit);
  const remote = {
    setExit,
    client: (o: { server?: string; token?: string; data?: string }) => {
      const c = loadConfig({ server: o.server, token: o.token, data: o.data });
      return new ImagoClient(c.serverUrl, c.token ?? localAdminToken(c.dataDir));
    },
  };
  registerImageCommands(program, remote);
  registerAccessCommands(program, remote);
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

/** The server-admin token a local `imago serve` wrote into its data dir, when this user can read it. */
function localAdminToken(dataDir: string): string | undefined {
  try {
    return readFileSync(join(dataDir, 'admin.token'), 'utf8').trim() || undefined;
  } catch {
    return undefined;
  }
}
