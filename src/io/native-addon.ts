/**
 * Loads one of our own small N-API addons (`native/`, built by `npm install` with node-gyp). They
 * are optional: undefined when the addon did not build, and each caller falls back.
 */
import { createRequire } from 'node:module';

let requireHere: NodeJS.Require | undefined;

/** The addon of target `name` in native/binding.gyp, or a `.node` path relative to this file (tests). */
export function loadNativeAddon<T>(name: string): T | undefined {
  try {
    // src/io and dist/io are both two levels below the package root
    requireHere ??= createRequire(import.meta.url);
    return requireHere(name.endsWith('.node') ? name : `../../native/build/Release/${name}.node`) as T;
  } catch {
    return undefined;
  }
}
