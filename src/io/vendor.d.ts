// Minimal typings for the two decoders that ship none (see docs/DEPENDENCIES.md).
declare module 'lzma-native' {
  import type { Transform } from 'node:stream';
  export function createDecompressor(options?: { memlimit?: number; synchronous?: boolean }): Transform;
}
declare module 'unbzip2-stream' {
  import type { Duplex } from 'node:stream';
  export default function unbzip2(): Duplex;
}
