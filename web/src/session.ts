/** Who is signed in and what the server said about sign-in: what every page receives. */
import type { ConsoleConfig, Whoami } from './api.js';

export interface Session {
  me: Whoami;
  config: ConsoleConfig;
}
