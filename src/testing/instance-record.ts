import type { InstanceRecord } from '../catalog/types.js';

/**
 * A complete InstanceRecord for tests: a passing supervised instance, with
 * `fields` on top. One place to change when the record gains a field.
 */
export function instanceRecord(fields: Partial<InstanceRecord> & Pick<InstanceRecord, 'id'>): InstanceRecord {
  return {
    node: 'node-a',
    group: 'core',
    service: 'web',
    version: '1.0.0',
    address: '127.0.0.1',
    port: 4000,
    pid: 1234,
    status: 'passing',
    restarts: 0,
    source: 'supervised',
    createdAt: '2024-01-01T00:00:00.000Z',
    startedAt: '2024-01-01T00:00:00.000Z',
    updatedAt: '2024-01-01T00:00:00.000Z',
    lastCheck: null,
    lastExit: null,
    reason: null,
    weight: 1,
    registration: null,
    ...fields,
  };
}
