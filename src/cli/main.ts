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

export async function main(argv: string[]): Promise<number> {
  let exitCode = 0;
  const program = new Command();
  program
    .name('imago')
    .description('Imago — registry and lifecycle service for virtual machine images')
    .version('0.1.0')
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
    throw e;
  }
  return exitCode;
}

/** The server-admin token a local `imago serve` wrote into its data dir, when this user can read it. */
function localAdminToken(dataDir: string): string | undefined {
  try {
    return readFileSync(join(dataDir, 'admin.token'), 'utf8').trim() || undefined;
  } catch {
    return undefined;
  }
}
