import type { ServiceSummary } from '../catalog/catalog.js';
import type { InstanceRecord, InstanceStatus } from '../catalog/types.js';
import { INSTANCE_STATUSES } from '../catalog/types.js';
import { formatDuration } from '../duration.js';
import type { InstanceView } from '../admin/api.js';
import { colorStatus, renderTable } from './table.js';

export interface StatusOptions {
  /** Epoch ms the uptimes are measured to; passed in so output is reproducible. */
  now: number;
  color: boolean;
  /** Show stopped instances too. */
  all?: boolean;
}

export type { ServiceSummary } from '../catalog/catalog.js';

/** An instance as `/v1/instances` answers it; a node that predates usage and limits sends neither. */
type InstanceRow = InstanceRecord & Partial<Pick<InstanceView, 'usage' | 'limits'>>;

// Numeric collation orders `1.10.0` after `1.9.0` and `charges-10` after `charges-2`.
const collator = new Intl.Collator('en', { numeric: true });

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}

function uptime(r: InstanceRecord, now: number): string {
  if (r.pid === null || r.startedAt === null || r.status === 'stopped' || r.status === 'failed') return '-';
  const started = Date.parse(r.startedAt);
  if (Number.isNaN(started)) return '-';
  return formatDuration(Math.max(0, now - started));
}

/** `4 groups, 6 services, 11 instances: 10 passing, 1 critical` — counted over every instance. */
export function summarize(instances: readonly InstanceRecord[]): string {
  const groups = new Set(instances.map((r) => r.group));
  const services = new Set(instances.map((r) => `${r.group}\u0000${r.service}`));
  const counts = new Map<InstanceStatus, number>();
  for (const r of instances) counts.set(r.status, (counts.get(r.status) ?? 0) + 1);
  const byStatus = INSTANCE_STATUSES.filter((s) => counts.has(s)).map((s) => `${counts.get(s)} ${s}`);
  return `${plural(groups.size, 'group')}, ${plural(services.size, 'service')}, ${plural(instances.length, 'instance')}: ${byStatus.join(', ')}`;
}

const BYTE_UNITS = [
  ['GiB', 1024 ** 3],
  ['MiB', 1024 ** 2],
  ['KiB', 1024],
] as const;

/** `48MiB`, `1.5GiB`, `512B`: one decimal below 10 units, whole numbers above; no space, for narrow columns. */
export function formatBytes(bytes: number): string {
  for (const [unit, factor] of BYTE_UNITS) {
    if (bytes >= factor) return `${roundForDisplay(bytes / factor)}${unit}`;
  }
  return `${bytes}B`;
}

/** `12%`, `0.4%`, `150%`: percent of one core. */
export function formatPercent(percent: number): string {
  return `${roundForDisplay(percent)}%`;
}

function roundForDisplay(n: number): string {
  return n < 10 ? String(Math.round(n * 10) / 10) : String(Math.round(n));
}

/**
 * `used/limit`, `-` for a usage not sampled yet; just `used` when unlimited.
 * No spaces around the slash: with them a realistic row (7-digit pid, a
 * critical instance, both limits set) passes 120 columns.
 */
function againstLimit(used: string | undefined, limit: string | undefined): string {
  if (limit === undefined) return used ?? '-';
  return `${used ?? '-'}/${limit}`;
}

function cpuCell(r: InstanceRow): string {
  const percent = r.usage?.cpuPercent;
  const cores = r.limits?.cpu;
  return againstLimit(percent === null || percent === undefined ? undefined : formatPercent(percent), cores === null || cores === undefined ? undefined : formatPercent(cores * 100));
}

function memCell(r: InstanceRow): string {
  const limit = r.limits?.memoryBytes;
  return againstLimit(r.usage ? formatBytes(r.usage.rssBytes) : undefined, limit === null || limit === undefined ? undefined : formatBytes(limit));
}

/**
 * The `berth status` table: a summary line, the instances, and how many
 * stopped ones are hidden. CPU is in percent of one core (150% is one and a
 * half cores), MEM the resident memory, each against its limit when it has one.
 */
export function renderStatus(instances: readonly InstanceRow[], options: StatusOptions): string {
  if (instances.length === 0) return 'no instances';
  const sorted = [...instances].sort(
    (a, b) =>
      collator.compare(a.group, b.group) ||
      collator.compare(a.service, b.service) ||
      collator.compare(a.version, b.version) ||
      collator.compare(a.id, b.id),
  );
  const shown = options.all === true ? sorted : sorted.filter((r) => r.status !== 'stopped');
  const hidden = sorted.length - shown.length;

  const parts = [summarize(instances)];
  if (shown.length > 0) {
    parts.push(
      renderTable(
        [
          { header: 'group' },
          { header: 'service' },
          { header: 'version' },
          { header: 'instance' },
          { header: 'status' },
          { header: 'pid', align: 'right' },
          { header: 'port', align: 'right' },
          { header: 'restarts', align: 'right' },
          { header: 'uptime', align: 'right' },
          { header: 'cpu', align: 'right' },
          { header: 'mem', align: 'right' },
        ],
        shown.map((r) => [
          r.group,
          r.service,
          r.version,
          r.id,
          colorStatus(r.status, options.color),
          r.pid === null ? '-' : String(r.pid),
          String(r.port),
          String(r.restarts),
          uptime(r, options.now),
          cpuCell(r),
          memCell(r),
        ]),
      ),
    );
  }
  if (hidden > 0) parts.push(`${plural(hidden, 'stopped instance')} hidden (--all)`);
  return parts.join('\n');
}

/** The `berth services` table: one row per service with its versions and how many instances pass. */
export function renderServices(services: readonly ServiceSummary[]): string {
  if (services.length === 0) return 'no services';
  const sorted = [...services].sort(
    (a, b) => collator.compare(a.group, b.group) || collator.compare(a.service, b.service),
  );
  return renderTable(
    [
      { header: 'group' },
      { header: 'service' },
      { header: 'versions' },
      { header: 'instances', align: 'right' },
      { header: 'passing', align: 'right' },
    ],
    sorted.map((s) => [
      s.group,
      s.service,
      [...s.versions].sort(collator.compare).join(','),
      String(s.instances),
      String(s.passing),
    ]),
  );
}
