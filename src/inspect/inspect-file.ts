/**
 * `inspectFile`: the format engine on a file. An uncompressed file is read at random — only the
 * header, the structures it names and the tail (O(header), whatever the size); a compressed one
 * is streamed through its bounded decoders (see inspect-stream.ts).
 */
import { createReadStream } from 'node:fs';
import { COMPRESSION_PROBE_BYTES, detectCompression } from '../formats/compression.js';
import { inspectSource, type InspectOptions } from '../formats/inspect-source.js';
import { FileSource } from '../io/file-source.js';
import { inspectStream, type ImageReport } from './inspect-stream.js';

export interface FileReport extends ImageReport {
  file: string;
}

export async function inspectFile(path: string, opts: InspectOptions = {}): Promise<FileReport> {
  const src = await FileSource.open(path);
  try {
    const head = await src.read(0, COMPRESSION_PROBE_BYTES);
    if (detectCompression(head) === undefined) {
      return { file: path, ...(await inspectSource(src, opts)) };
    }
  } finally {
    await src.close();
  }
  const report = await inspectStream(createReadStream(path, { highWaterMark: 1024 * 1024 }), opts);
  return { file: path, ...report };
}
