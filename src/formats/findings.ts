/**
 * The catalog of safety findings. Codes are stable (clients and tests match on them); the
 * message is built where the finding is raised and says what was wrong and what to do.
 *
 * Severity: `error` refuses the image; `warning` is reported but does not refuse; `info` is a
 * fact worth showing (encryption, say).
 */
export const FINDING_CODES = [
  // references outside the image
  'BACKING_FILE', // qcow2/qcow/qed backing file, vmdk parent: the image reads another file
  'DATA_FILE', // qcow2 external data file (CVE-2024-32498)
  'VMDK_EXTENT_OUTSIDE', // vmdk extent naming a file other than the image itself (CVE-2022-47951)
  'VMDK_CREATE_TYPE', // createType other than monolithicSparse / streamOptimized
  'DIFFERENCING_DISK', // vhd / vhdx differencing disk with a parent
  // header and table sanity
  'UNKNOWN_FEATURES', // unknown incompatible feature bits
  'CORRUPT_IMAGE', // the format's own "corrupt" marker is set
  'MALFORMED_HEADER', // a header field has a value the spec does not allow
  'OFFSET_PAST_END', // a header, a table or a table entry points past the end of the image
  'TABLE_MALFORMED', // a block-mapping table entry is invalid in itself (misaligned, into the header, over another table)
  'FIELD_OUT_OF_RANGE', // a 64-bit field that cannot be a real offset or size
  'OVER_LIMIT', // a table, count or descriptor over our limits
  'CHECKSUM_MISMATCH', // a header checksum does not match its bytes
  'TRUNCATED', // the image ends before the structures it declares
  // detection
  'POLYGLOT', // more than one format matches the same bytes (CVE-2024-40767)
  'FORMAT_MISMATCH', // the claimed format is not the detected one
  'UNSUPPORTED_FORMAT', // a format we detect but do not accept (qed)
  // partition tables
  'MBR_MALFORMED', // protective MBR that does not protect, overlapping or out-of-disk partitions
  'HYBRID_MBR', // GPT disk whose MBR also describes real partitions
  'GPT_MALFORMED', // GPT header or table inconsistent
  // ova
  'OVA_UNSAFE_MEMBER', // tar member with `..`, an absolute path, a link or a device
  'OVA_DIGEST_MISMATCH', // manifest digest differs from the member's bytes
  'OVA_MALFORMED', // OVF missing, disk references missing members, ...
  // compression wrappers
  'DECOMPRESSION_BOMB', // decompressed size or ratio over a limit
  'WRAPPER_DEPTH', // too many nested compression layers
  'COMPRESSION_ERROR', // the compressed stream is corrupt or truncated
  // limits
  'VIRTUAL_SIZE_LIMIT', // virtual size over the configured limit
  // the inspector itself
  'CHECK_FAILED', // a safety check threw: fail closed
  'INSPECTION_INCOMPLETE', // (streaming) bytes the inspection needed never came by
  'ENCRYPTED', // encrypted payload (qcow2 AES/LUKS, LUKS): facts only
] as const;

export type FindingCode = (typeof FINDING_CODES)[number];

export const SEVERITIES = ['error', 'warning', 'info'] as const;
export type Severity = (typeof SEVERITIES)[number];

export interface Finding {
  code: FindingCode;
  severity: Severity;
  message: string;
}

export function finding(code: FindingCode, message: string, severity: Severity = 'error'): Finding {
  return { code, severity, message };
}

export function isFindingCode(s: string): s is FindingCode {
  return (FINDING_CODES as readonly string[]).includes(s);
}
