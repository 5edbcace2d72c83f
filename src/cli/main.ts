/** The `imago` command. Local verbs work on files without a server. */
import { Command, CommanderError } from 'commander';
import { EXIT_ERROR, registerInspect } from './inspect-command.js';

export async function main(argv: string[]): Promise<number> {
  let exitCode = 0;
  const program = new Command();
  program
    .name('imago')
    .description('Imago — registry and lifecycle service for virtual machine images')
    .version('0.1.0')
    .exitOverride()
    .showHelpAfterError();
  registerInspect(program, (code) => {
    exitCode = code;
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
