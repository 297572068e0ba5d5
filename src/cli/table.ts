import { stripVTControlCharacters } from 'node:util';
import type { InstanceStatus } from '../catalog/types.js';

export interface Column {
  header: string;
  align?: 'left' | 'right';
}

/** Width as a terminal shows it: colour escapes take no columns. */
export function visibleWidth(text: string): number {
  return stripVTControlCharacters(text).length;
}

/**
 * Plain aligned columns separated by two spaces, header upper-case, no
 * trailing spaces: the output of `berth status` is read by people and by
 * `grep`/`awk`, so it carries no borders.
 */
export function renderTable(columns: readonly Column[], rows: readonly (readonly string[])[]): string {
  const header = columns.map((c) => c.header.toUpperCase());
  const widths = columns.map((_, i) =>
    Math.max(visibleWidth(header[i] ?? ''), ...rows.map((r) => visibleWidth(r[i] ?? ''))),
  );
  const line = (cells: readonly string[]): string =>
    columns
      .map((c, i) => {
        const cell = cells[i] ?? '';
        const pad = ' '.repeat((widths[i] ?? 0) - visibleWidth(cell));
        return c.align === 'right' ? pad + cell : cell + pad;
      })
      .join('  ')
      .trimEnd();
  return [header, ...rows].map(line).join('\n');
}

const ESC = '\u001b[';
const STATUS_COLOR: Record<InstanceStatus, string> = {
  passing: '32', // green
  warning: '33', // yellow
  critical: '31', // red
  failed: '31',
  starting: '36', // cyan
  draining: '36',
  stopped: '2', // dim
};

/** The status word, coloured when `enabled` (the caller enables it only on a TTY). */
export function colorStatus(status: string, enabled: boolean): string {
  const code = STATUS_COLOR[status as InstanceStatus] as string | undefined;
  if (!enabled || code === undefined) return status;
  return `${ESC}${code}m${status}${ESC}0m`;
}
