/** The `imago` command. Local verbs work on files without a server. */
import { Command, CommanderError } from 'commander';
import { loadConfig } from '../config.js';
import { ImagoClient } from './client.js';
import { registerImageCommands } from './image-commands.js';
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
  registerServe(program, setExit);
  registerImageCommands(program, {
    setExit,
    client: (o) => {
      const c = loadConfig({ server: o.server, token: o.token });
      return new ImagoClient(c.serverUrl, c.token);
    },
  });
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
