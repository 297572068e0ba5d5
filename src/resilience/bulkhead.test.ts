import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { Bulkhead } from './bulkhead.js';

function full(maxConcurrent: number, maxQueue: number): Bulkhead {
  const bulkhead = new Bulkhead({ maxConcurrent, maxQueue });
  for (let i = 0; i < maxConcurrent; i++) assert.equal(bulkhead.tryAcquire(), true);
  return bulkhead;
}

describe('Bulkhead', () => {
  it('takes-slots-up-to-maxConcurrent-and-frees-them-on-release', () => {
    const bulkhead = full(2, 0);
    assert.equal(bulkhead.tryAcquire(), false);
    bulkhead.release();
    assert.equal(bulkhead.tryAcquire(), true);
    assert.deepEqual(bulkhead.snapshot(), { active: 2, queued: 0, rejected: 0 });
  });

  it('hands-a-freed-slot-to-the-oldest-waiter-so-tryAcquire-cannot-jump-the-queue', () => {
    const bulkhead = full(1, 3);
    const served: string[] = [];
    for (const name of ['a', 'b', 'c']) assert.ok(bulkhead.enqueue(() => served.push(name)));
    assert.deepEqual(bulkhead.snapshot(), { active: 1, queued: 3, rejected: 0 });
    bulkhead.release();
    assert.deepEqual(served, ['a']);
    assert.equal(bulkhead.tryAcquire(), false, 'the slot went to a, not back to the pool');
    bulkhead.release();
    bulkhead.release();
    assert.deepEqual(served, ['a', 'b', 'c']);
    assert.deepEqual(bulkhead.snapshot(), { active: 1, queued: 0, rejected: 0 });
    bulkhead.release();
    assert.deepEqual(bulkhead.snapshot(), { active: 0, queued: 0, rejected: 0 });
  });

  it('rejects-a-wait-when-the-queue-is-full-and-counts-it', () => {
    const bulkhead = full(1, 1);
    assert.ok(bulkhead.enqueue(() => {}));
    assert.equal(bulkhead.enqueue(() => assert.fail('a rejected wait must never run')), undefined);
    bulkhead.release();
    bulkhead.release();
    assert.deepEqual(bulkhead.snapshot(), { active: 0, queued: 0, rejected: 1 });
  });

  it('never-gives-a-slot-to-a-cancelled-wait-wherever-it-was-in-line', () => {
    const bulkhead = full(1, 5);
    const served: string[] = [];
    const cancel = new Map(['a', 'b', 'c', 'd'].map((name) => [name, bulkhead.enqueue(() => served.push(name))!]));
    cancel.get('b')!();
    cancel.get('d')!();
    cancel.get('b')!();
    assert.equal(bulkhead.snapshot().queued, 2);
    bulkhead.release();
    cancel.get('a')!();
    assert.equal(bulkhead.snapshot().queued, 1, 'cancelling a wait that was served changes nothing');
    bulkhead.release();
    bulkhead.release();
    assert.deepEqual(served, ['a', 'c']);
    assert.deepEqual(bulkhead.snapshot(), { active: 0, queued: 0, rejected: 0 });
  });

  it('runs-the-wait-at-once-when-a-slot-is-free', () => {
    const bulkhead = new Bulkhead({ maxConcurrent: 1, maxQueue: 0 });
    let ran = false;
    const cancel = bulkhead.enqueue(() => (ran = true));
    assert.equal(ran, true);
    cancel?.();
    assert.deepEqual(bulkhead.snapshot(), { active: 1, queued: 0, rejected: 0 });
  });

  it('stays-consistent-when-a-waiter-releases-its-slot-at-once', () => {
    const bulkhead = full(1, 2);
    const served: string[] = [];
    bulkhead.enqueue(() => {
      served.push('a');
      bulkhead.release();
    });
    bulkhead.enqueue(() => served.push('b'));
    bulkhead.release();
    assert.deepEqual(served, ['a', 'b']);
    assert.deepEqual(bulkhead.snapshot(), { active: 1, queued: 0, rejected: 0 });
  });

  it('rejects-an-invalid-config-when-built', () => {
    assert.throws(() => new Bulkhead({ maxConcurrent: 0, maxQueue: 1 }), RangeError);
    assert.throws(() => new Bulkhead({ maxConcurrent: 1, maxQueue: -1 }), RangeError);
    assert.throws(() => new Bulkhead({ maxConcurrent: 1.5, maxQueue: 0 }), RangeError);
  });

  it('serves-live-waits-first-come-first-served-within-its-limits (property)', () => {
    const op = fc.oneof(
      fc.constant({ kind: 'acquire' as const }),
      fc.constant({ kind: 'enqueue' as const }),
      fc.record({ kind: fc.constant('release' as const), which: fc.nat() }),
      fc.record({ kind: fc.constant('cancel' as const), which: fc.nat() }),
    );
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 4 }), fc.nat(4), fc.array(op, { maxLength: 300, size: 'max' }), (maxConcurrent, maxQueue, ops) => {
        const bulkhead = new Bulkhead({ maxConcurrent, maxQueue });
        let holders = 0;
        let nextId = 0;
        let rejected = 0;
        // Waits in the order they were queued, and the order they were served in.
        const waiting: { id: number; cancel: () => void }[] = [];
        const served: number[] = [];
        const cancelled = new Set<number>();
        for (const o of ops) {
          if (o.kind === 'acquire') {
            if (bulkhead.tryAcquire()) holders++;
          } else if (o.kind === 'enqueue') {
            const id = nextId++;
            const cancel = bulkhead.enqueue(() => {
              assert.ok(!cancelled.has(id), `cancelled wait ${id} got a slot`);
              served.push(id);
              holders++;
            });
            if (cancel === undefined) rejected++;
            else waiting.push({ id, cancel });
          } else if (o.kind === 'release') {
            if (holders === 0) continue;
            holders--;
            bulkhead.release();
          } else if (waiting.length > 0) {
            const [w] = waiting.splice(o.which % waiting.length, 1);
            if (w !== undefined && !served.includes(w.id)) cancelled.add(w.id);
            w?.cancel();
          }
          const live = waiting.filter((w) => !served.includes(w.id) && !cancelled.has(w.id));
          assert.deepEqual(bulkhead.snapshot(), { active: holders, queued: live.length, rejected });
          assert.ok(holders <= maxConcurrent && live.length <= maxQueue);
          assert.ok(live.length === 0 || holders === maxConcurrent, 'nobody waits while a slot is free');
        }
        const queuedOrder = [...served].sort((a, b) => a - b);
        assert.deepEqual(served, queuedOrder, 'served oldest first');
      }),
    );
  });
});
