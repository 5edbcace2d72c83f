/**
 * Reflected CRC-32s (Node 20's zlib has none): the IEEE 802.3 one (polynomial 0xEDB88320) for GPT
 * header and entry array checksums (UEFI 2.x §5.3.2), and the builder crc32c.ts uses for CRC-32C.
 */

/** A CRC-32 over the reflected polynomial `poly`: of `b`, treating bytes [skipAt, skipAt + skipLength) as zeros (the stored checksum field). */
export function reflectedCrc32(poly: number): (b: Uint8Array, skipAt?: number, skipLength?: number) => number {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? poly ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return (b, skipAt = -1, skipLength = 0) => {
    let c = 0xffffffff;
    for (let i = 0; i < b.length; i++) {
      const byte = i >= skipAt && i < skipAt + skipLength ? 0 : b[i]!;
      c = table[(c ^ byte) & 0xff]! ^ (c >>> 8);
    }
    return (c ^ 0xffffffff) >>> 0;
  };
}

/** CRC-32 (IEEE 802.3) of `b`, treating bytes [skipAt, skipAt + skipLength) as zeros. */
export const crc32 = reflectedCrc32(0xedb88320);
