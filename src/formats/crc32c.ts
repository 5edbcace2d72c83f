/** CRC-32C (Castagnoli, reflected polynomial 0x82F63B78) — VHDX header, region and log checksums (MS-VHDX §2.2.2). */
import { reflectedCrc32 } from './crc32.js';

/** CRC-32C of `b`, treating bytes [skipAt, skipAt + skipLength) as zeros (the stored checksum field). */
export const crc32c = reflectedCrc32(0x82f63b78);
