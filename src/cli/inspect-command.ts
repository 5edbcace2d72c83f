/**
 * `imago inspect FILE... [--json] [--claimed-format F] [--container-format C]` — what an image
 * really is, and whether Imago would accept it. Exit 0 when every file is safe, 1 when any is
 * refused, 2 on a usage or I/O error.
 */
import type { Command } from 'commander';
import type { InspectLimits } from '../formats/limits.js';
import type { FileReport } from '../inspect/inspect-file.js';
import { humanBytes, toJson } from './json.js';

export const EXIT_SAFE = 0;
export const EXIT_REFUSED = 1;
export const EXIT_ERROR = 2;

interface InspectFlags {
  json?: boolean;
  claimedFormat?: string;
  containerFormat?: string;
  maxVirtualSize?: string;
}

export function registerInspect(program: Command, setExit: (code: number) => void): void {
  program
    .command('inspect')
    .description('detect the format of disk images, read their facts and check them for hostile content')
    .argument('<files...>', 'image files (compressed gz/xz/zstd/bz2 files are inspected through the wrapper)')
    .option('--json', 'print one JSON object per file')
    .option(
      '--claimed-format <format>',
      'the format the image is declared as (qcow2, raw, vmdk, ...; an unknown name lists them); a different detected format is refused',
    )
    .option(
      '--container-format <container>',
      'the container the image is declared in (bare, ova); with ova, --claimed-format is checked against the disks inside the OVA (Glance: disk_format=vmdk, container_format=ova)',
    )
    .option('--max-virtual-size <bytes>', 'refuse images whose virtual size is larger (bytes; default 64 TiB)')
    .action(async (files: string[], flags: InspectFlags) => {
      setExit(await runInspect(files, flags));
    });
}

export async function runInspect(files: string[], flags: InspectFlags): Promise<number> {
  // the inspection engine loads with the verb that runs it, not with every start of the command
  const [{ knownClaimedFormats }, { inspectFile }] = await Promise.all([import('../formats/inspect-source.js'), import('../inspect/inspect-file.js')]);
  const limits: Partial<InspectLimits> = {};
  if (flags.maxVirtualSize !== undefined) {
    if (!/^\d+$/.test(flags.maxVirtualSize)) {
      process.stderr.write(`imago inspect: --max-virtual-size must be a number of bytes, got "${flags.maxVirtualSize}"\n`);
      return EXIT_ERROR;
    }
    limits.maxVirtualSize = BigInt(flags.maxVirtualSize);
  }
  if (flags.claimedFormat !== undefined && !knownClaimedFormats().includes(flags.claimedFormat.toLowerCase())) {
    process.stderr.write(`imago inspect: unknown --claimed-format "${flags.claimedFormat}"; use one of ${knownClaimedFormats().join(', ')}\n`);
    return EXIT_ERROR;
  }
  if (flags.containerFormat !== undefined && !['bare', 'ova'].includes(flags.containerFormat.toLowerCase())) {
    process.stderr.write(`imago inspect: unknown --container-format "${flags.containerFormat}"; use bare or ova\n`);
    return EXIT_ERROR;
  }
  let exit = EXIT_SAFE;
  const reports: FileReport[] = [];
  for (const file of files) {
    let report: FileReport;
    try {
      report = await inspectFile(file, { limits, claimedFormat: flags.claimedFormat, claimedContainerFormat: flags.containerFormat });
    } catch (e) {
      const msg = e instanceof Error ? e.message : String(e);
      process.stderr.write(`imago inspect: ${file}: ${msg}\n`);
      exit = EXIT_ERROR;
      continue;
    }
    if (report.verdict === 'refused' && exit === EXIT_SAFE) exit = EXIT_REFUSED;
    if (flags.json) process.stdout.write(`${toJson(report)}\n`);
    reports.push(report);
  }
  if (!flags.json && reports.length > 0) process.stdout.write(renderTable(reports));
  return exit;
}

export function renderTable(reports: FileReport[]): string {
  const rows = [['FILE', 'FORMAT', 'SUBFORMAT', 'VIRTUAL SIZE', 'FILE SIZE', 'VERDICT']];
  for (const r of reports) {
    const format = r.compression?.length ? `${r.format} (in ${r.compression.map((c) => c.format).join(' in ')})` : r.format;
    rows.push([r.file, format, r.subformat ?? '-', humanBytes(r.virtualSize), humanBytes(r.fileSize), r.verdict]);
  }
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((row) => row[i]!.length)));
  let out =
    rows
      .map((row) =>
        row
          .map((c, i) => c.padEnd(widths[i]!))
          .join('  ')
          .trimEnd(),
      )
      .join('\n') + '\n';
  for (const r of reports) {
    if (r.findings.length === 0) continue;
    out += `\n${r.file}:\n`;
    for (const f of r.findings) out += `  ${f.severity.toUpperCase().padEnd(7)} ${f.code}: ${f.message}\n`;
  }
  return out;
}
