import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { stripVTControlCharacters } from 'node:util';
import type { InstanceRecord } from '../catalog/types.js';
import { instanceRecord } from '../testing/instance-record.js';
import type { InstanceView } from '../admin/api.js';
import { formatBytes, formatPercent, renderServices, renderStatus } from './render.js';

const NOW = Date.parse('2025-01-01T12:00:00.000Z');

function instance(partial: Partial<InstanceRecord> & Pick<InstanceRecord, 'id' | 'group' | 'service'>): InstanceRecord {
  return instanceRecord({
    node: 'node-1',
    port: 40000,
    pid: 1000,
    createdAt: '2025-01-01T11:00:00.000Z',
    startedAt: new Date(NOW - 192_000).toISOString(),
    updatedAt: '2025-01-01T11:00:00.000Z',
    ...partial,
  });
}

const shop: InstanceRecord[] = [
  instance({ id: 'profiles-2', group: 'users', service: 'profiles', port: 40011, pid: 2002 }),
  instance({ id: 'charges-1', group: 'payments', service: 'charges', port: 40001, pid: 1001, restarts: 2 }),
  instance({ id: 'charges-v2-1', group: 'payments', service: 'charges', version: '2.0.0', port: 40004, pid: 1004, status: 'critical' }),
  instance({ id: 'profiles-1', group: 'users', service: 'profiles', port: 40010, pid: null, status: 'stopped', startedAt: null }),
  instance({ id: 'tokens-1', group: 'auth', service: 'tokens', port: 40020, pid: 3001, startedAt: new Date(NOW - 4_000).toISOString() }),
  instance({ id: 'charges-10', group: 'payments', service: 'charges', port: 40003, pid: null, status: 'failed', startedAt: null }),
  instance({ id: 'charges-2', group: 'payments', service: 'charges', port: 40002, pid: 1002 }),
];

describe('renderStatus', () => {
  it('says-no-instances-when-empty', () => {
    assert.equal(renderStatus([], { now: NOW, color: false }), 'no instances');
  });

  it('renders-summary-sorted-rows-uptime-and-hidden-footer', () => {
    const out = renderStatus(shop, { now: NOW, color: false });
    assert.equal(
      out,
      [
        '3 groups, 3 services, 7 instances: 4 passing, 1 critical, 1 stopped, 1 failed',
        'GROUP     SERVICE   VERSION  INSTANCE      STATUS     PID   PORT  RESTARTS  UPTIME  CPU  MEM',
        'auth      tokens    1.0.0    tokens-1      passing   3001  40020         0      4s    -    -',
        'payments  charges   1.0.0    charges-1     passing   1001  40001         2   3m12s    -    -',
        'payments  charges   1.0.0    charges-2     passing   1002  40002         0   3m12s    -    -',
        'payments  charges   1.0.0    charges-10    failed       -  40003         0       -    -    -',
        'payments  charges   2.0.0    charges-v2-1  critical  1004  40004         0   3m12s    -    -',
        'users     profiles  1.0.0    profiles-2    passing   2002  40011         0   3m12s    -    -',
        '1 stopped instance hidden (--all)',
      ].join('\n'),
    );
  });

  it('shows-stopped-instances-with-all', () => {
    const out = renderStatus(shop, { now: NOW, color: false, all: true });
    assert.ok(out.split('\n').includes('users     profiles  1.0.0    profiles-1    stopped      -  40010         0       -    -    -'), out);
    assert.doesNotMatch(out, /hidden/);
  });

  it('hides-the-table-but-keeps-the-footer-when-all-are-stopped', () => {
    const stopped = [
      instance({ id: 'a-1', group: 'g', service: 'a', status: 'stopped' }),
      instance({ id: 'a-2', group: 'g', service: 'a', status: 'stopped' }),
    ];
    assert.equal(
      renderStatus(stopped, { now: NOW, color: false }),
      '1 group, 1 service, 2 instances: 2 stopped\n2 stopped instances hidden (--all)',
    );
  });

  it('colours-statuses-only-when-asked-and-keeps-alignment', () => {
    const plain = renderStatus(shop, { now: NOW, color: false });
    const coloured = renderStatus(shop, { now: NOW, color: true });
    assert.ok(!plain.includes('\u001b'));
    assert.ok(coloured.includes('\u001b[31mcritical\u001b[0m'));
    assert.equal(stripVTControlCharacters(coloured), plain);
  });
});

describe('renderStatus: usage and limits', () => {
  const MiB = 1024 ** 2;
  const sample = (cpuPercent: number | null, rssBytes: number): InstanceView['usage'] => ({ at: '2025-01-01T12:00:00.000Z', cpuPercent, cpuSeconds: 1, rssBytes, openFds: 30, threads: 7, processes: 1 });
  const unlimited = { memoryBytes: null, cpu: null, pids: null, openFiles: null };
  const view = (partial: Parameters<typeof instance>[0], usage: InstanceView['usage'], limits: InstanceView['limits']): InstanceView => ({ ...instance(partial), usage, limits });

  it('shows-cpu-and-memory-each-against-its-limit-when-it-has-one', () => {
    const out = renderStatus(
      [
        view({ id: 'charges-1', group: 'payments', service: 'charges', pid: 1001 }, sample(12.4, 48 * MiB), { memoryBytes: 128 * MiB, cpu: 0.5, pids: 64, openFiles: null }),
        view({ id: 'charges-2', group: 'payments', service: 'charges', pid: 1002 }, sample(150, 1.5 * 1024 * MiB), unlimited),
        // Started, not sampled twice yet: no CPU figure, the limit still shown.
        view({ id: 'charges-3', group: 'payments', service: 'charges', pid: 1003 }, sample(null, 300 * 1024), { ...unlimited, cpu: 2 }),
        view({ id: 'charges-4', group: 'payments', service: 'charges', pid: 1004 }, null, { ...unlimited, memoryBytes: 1024 * MiB }),
        // External, or a node without a sampler.
        view({ id: 'charges-5', group: 'payments', service: 'charges', pid: 1005 }, null, null),
      ],
      { now: NOW, color: false },
    );
    assert.equal(
      out,
      [
        '1 group, 1 service, 5 instances: 5 passing',
        'GROUP     SERVICE  VERSION  INSTANCE   STATUS    PID   PORT  RESTARTS  UPTIME      CPU           MEM',
        'payments  charges  1.0.0    charges-1  passing  1001  40000         0   3m12s  12%/50%  48MiB/128MiB',
        'payments  charges  1.0.0    charges-2  passing  1002  40000         0   3m12s     150%        1.5GiB',
        'payments  charges  1.0.0    charges-3  passing  1003  40000         0   3m12s   -/200%        300KiB',
        'payments  charges  1.0.0    charges-4  passing  1004  40000         0   3m12s        -        -/1GiB',
        'payments  charges  1.0.0    charges-5  passing  1005  40000         0   3m12s        -             -',
      ].join('\n'),
    );
  });

  it('keeps-a-wide-row-within-120-columns', () => {
    const wide = view(
      { id: 'charges-1.10.0-3fa9c', group: 'payments', service: 'charges', version: '1.10.0', pid: 4_194_303, port: 40123, restarts: 12, status: 'critical', startedAt: new Date(NOW - 3 * 86_400_000).toISOString() },
      sample(150, 1000 * MiB),
      { memoryBytes: 1024 * MiB, cpu: 2, pids: null, openFiles: null },
    );
    const out = renderStatus([wide], { now: NOW, color: false });
    for (const line of out.split('\n')) assert.ok(line.length <= 120, `${line.length} columns: ${line}`);
    assert.match(out, / 3d {2}150%\/200% {2}1000MiB\/1GiB$/m);
  });

  it('formats-bytes-and-percents-for-people', () => {
    assert.deepEqual([0, 512, 1024, 1536, 10 * 1024 * 1024 - 1, 128 * 1024 ** 2, 1024 ** 3 * 1.25].map(formatBytes), ['0B', '512B', '1KiB', '1.5KiB', '10MiB', '128MiB', '1.3GiB']);
    assert.deepEqual([0, 0.04, 3.25, 9.96, 12.4, 150].map(formatPercent), ['0%', '0%', '3.3%', '10%', '12%', '150%']);
  });
});

describe('renderServices', () => {
  it('lists-services-sorted-with-versions', () => {
    const out = renderServices([
      { group: 'users', service: 'profiles', versions: ['1.0.0'], instances: 2, passing: 1 },
      { group: 'payments', service: 'charges', versions: ['2.0.0', '1.10.0', '1.9.0'], instances: 4, passing: 4 },
    ]);
    assert.equal(
      out,
      [
        'GROUP     SERVICE   VERSIONS            INSTANCES  PASSING',
        'payments  charges   1.9.0,1.10.0,2.0.0          4        4',
        'users     profiles  1.0.0                       2        1',
      ].join('\n'),
    );
  });

  it('says-no-services-when-empty', () => {
    assert.equal(renderServices([]), 'no services');
  });
});
