import type { Target } from '../target.js';
import type { Balancer, PickOptions } from './balancer.js';
import { effectiveExclusion } from './exclusion.js';

/** Ketama's 160 points per unit of weight: each target's share stays within a few per cent of its weight's. */
export const RING_POINTS_PER_WEIGHT = 160;
/** Past this the ring is scaled down (and keys of every target may move when one leaves): sorted in a few ms. */
export const RING_MAX_POINTS = 65_536;

// A ring point packs its 32-bit position above the owner's index, so one
// Float64Array (exact up to 2^53) sorts natively and binary-searches.
const OWNER_SPACE = 65_536;

/**
 * Consistent hashing on a ring (Envoy's ring_hash, Ketama): every target owns
 * points `hash("<id>#<i>")`, in number proportional to its weight, and a key
 * goes to the owner of the first point clockwise from `hash(key)`. A target
 * leaving moves only the keys it owned; one joining takes keys only from the
 * others. Built once per route table.
 *
 * A retry walks on clockwise past the targets it tried, so it lands where the
 * key would go if they were gone. No key (or an empty one): the fallback
 * balancer picks. The ring ignores slow start: a key moving as weights ramp
 * would defeat the point of hashing.
 */
export class Hash implements Balancer {
  readonly #targets: readonly Target[];
  readonly #ring: Float64Array;
  readonly #fallback: Balancer;

  constructor(targets: readonly Target[], fallback: Balancer) {
    // Sorted by id so that ring ties (equal 32-bit positions) fall the same way whatever the input order.
    this.#targets = targets.filter((t) => t.weight > 0 && Number.isFinite(t.weight)).sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)).slice(0, OWNER_SPACE);
    this.#fallback = fallback;
    const wanted = this.#targets.reduce((sum, t) => sum + Math.max(1, Math.round(t.weight * RING_POINTS_PER_WEIGHT)), 0);
    const scale = wanted > RING_MAX_POINTS ? RING_MAX_POINTS / wanted : 1;
    const points: number[] = [];
    this.#targets.forEach((t, owner) => {
      const count = Math.max(1, Math.round(t.weight * RING_POINTS_PER_WEIGHT * scale));
      for (let i = 0; i < count; i++) points.push(ringPosition(`${t.id}#${i}`) * OWNER_SPACE + owner);
    });
    this.#ring = Float64Array.from(points).sort();
  }

  pick(options: PickOptions): Target | undefined {
    const key = options.hashKey;
    if (key === undefined || key === '') return this.#fallback.pick(options);
    const ring = this.#ring;
    const m = ring.length;
    if (m === 0) return undefined;
    const exclude = effectiveExclusion(this.#targets, options.exclude);
    const start = ringPosition(key) * OWNER_SPACE;
    let lo = 0;
    let hi = m;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (ring[mid]! < start) lo = mid + 1;
      else hi = mid;
    }
    // Every target owns a point, and the exclusion leaves at least one target: the walk ends within one turn.
    for (let k = 0; k < m; k++) {
      const i = lo + k < m ? lo + k : lo + k - m;
      const target = this.#targets[ring[i]! % OWNER_SPACE]!;
      if (exclude === undefined || !exclude.includes(target)) return target;
    }
    return undefined;
  }
}

/** The top 32 bits of cyrb53 (bryc, public domain): fast, well mixed on short similar strings like "a#1", "a#2". */
export function ringPosition(s: string): number {
  let h1 = 0xdeadbeef;
  let h2 = 0x41c6ce57;
  for (let i = 0; i < s.length; i++) {
    const ch = s.charCodeAt(i);
    h1 = Math.imul(h1 ^ ch, 2654435761);
    h2 = Math.imul(h2 ^ ch, 1597334677);
  }
  h1 = Math.imul(h1 ^ (h1 >>> 16), 2246822507);
  h1 ^= Math.imul(h2 ^ (h2 >>> 13), 3266489909);
  h2 = Math.imul(h2 ^ (h2 >>> 16), 2246822507);
  h2 ^= Math.imul(h1 ^ (h1 >>> 13), 3266489909);
  // 53 bits = (h2 & 0x1fffff) · 2^32 + h1; its top 32 bits:
  return ((h2 & 0x1fffff) * 2048 + (h1 >>> 21)) >>> 0;
}
