/** CRC-32 (IEEE 802.3, reflected polynomial 0xEDB88320) — GPT header and entry array checksums (UEFI 2.x §5.3.2). Node 20's zlib has no crc32. */
const TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

/** CRC-32 of `b`, treating bytes [skipAt, skipAt + skipLength) as zeros (the stored checksum field). */
export function crc32(b: Uint8Array, skipAt = -1, skipLength = 0): number {
  let c = 0xffffffff;
  for (let i = 0; i < b.length; i++) {
    const byte = i >= skipAt && i < skipAt + skipLength ? 0 : b[i]!;
    c = TABLE[(c ^ byte) & 0xff]! ^ (c >>> 8);
  }
  return (c ^ 0xffffffff) >>> 0;
}
