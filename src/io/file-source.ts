/**
 * Random-access byte source over a file: reads exactly what a parser asks for (the header, the
 * tables it names, the tail) and nothing else. Matches the formats layer's `ByteSource` shape.
 */
import { open, type FileHandle } from 'node:fs/promises';

export class FileSource {
  private constructor(
    private readonly fh: FileHandle,
    readonly size: number,
    readonly path: string,
  ) {}

  static async open(path: string): Promise<FileSource> {
    const fh = await open(path, 'r');
    try {
      const st = await fh.stat();
      if (!st.isFile() && !st.isBlockDevice()) throw new Error(`${path} is not a regular file`);
      return new FileSource(fh, st.size, path);
    } catch (e) {
      await fh.close();
      throw e;
    }
  }

  async read(offset: number, length: number): Promise<Uint8Array> {
    if (!Number.isSafeInteger(offset) || offset < 0) throw new RangeError(`invalid read offset ${offset}`);
    if (!Number.isSafeInteger(length) || length < 0) throw new RangeError(`invalid read length ${length}`);
    if (offset >= this.size || length === 0) return new Uint8Array(0);
    const want = Math.min(length, this.size - offset);
    const buf = new Uint8Array(want);
    let done = 0;
    while (done < want) {
      const { bytesRead } = await this.fh.read(buf, done, want - done, offset + done);
      if (bytesRead === 0) break; // the file shrank under us: a short read
      done += bytesRead;
    }
    return done === want ? buf : buf.subarray(0, done);
  }

  async close(): Promise<void> {
    await this.fh.close();
  }
}
