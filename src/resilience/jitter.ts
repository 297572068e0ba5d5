/**
 * The delay before retry number `retry` (1, 2, …): exponential backoff with
 * full jitter, uniform in [0, min(maxMs, baseMs × 2^(retry-1))). Full jitter
 * spreads the retries of requests that failed together over the whole
 * interval, so they do not arrive again in a burst (AWS, "Exponential Backoff
 * and Jitter"; Envoy's retry back-off).
 */
export function retryDelay(retry: number, baseMs: number, maxMs: number, random: () => number = Math.random): number {
  if (!(retry >= 1)) throw new RangeError(`retryDelay: retry counts from 1, got ${retry}`);
  // 2^1023 is the largest finite power of two: past it the cap would be
  // Infinity, and 0 × Infinity is NaN for a zero base.
  const cap = Math.min(maxMs, baseMs * 2 ** Math.min(retry - 1, 1023));
  return random() * cap;
}
