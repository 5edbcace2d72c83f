/**
 * The real Glance clients as the tests run them: Debian's python3-glanceclient (through
 * ../shared/peers/bin/glance, which only works around its schema-cache bug) and
 * python3-openstackclient with keystoneauth's admin_token plugin on the versioned endpoint.
 */
import { execFile } from 'node:child_process';

export const GLANCE = '/work/shared/peers/bin/glance';

export interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs a client with its standard input closed: glanceclient's image-create reads image data from
 * any stdin that is not a terminal (even /dev/null), so an open one would upload 0 bytes.
 */
export function run(cmd: string, args: string[], home: string): Promise<Run> {
  return new Promise((resolve) => {
    execFile(
      '/bin/sh',
      ['-c', 'exec "$@" 0<&-', 'sh', cmd, ...args],
      { env: { PATH: process.env.PATH, HOME: home, LANG: 'C.UTF-8' }, timeout: 120_000, maxBuffer: 16 << 20 },
      (err, stdout, stderr) => {
        resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
      },
    );
  });
}

/** `glance` against the door at `url` (the server's origin) with an X-Auth-Token. */
export function runGlance(url: string, token: string, home: string, args: string[]): Promise<Run> {
  return run(GLANCE, ['--os-image-url', `${url}/image`, '--os-auth-token', token, ...args], home);
}

/** `openstack` against the door: admin_token takes the endpoint as given, the versioned one (as for Glance itself). */
export function runOpenstack(url: string, token: string, home: string, args: string[]): Promise<Run> {
  return run(
    'openstack',
    ['--os-auth-type', 'admin_token', '--os-endpoint', `${url}/image/v2`, '--os-token', token, '--os-image-api-version', '2', ...args],
    home,
  );
}
