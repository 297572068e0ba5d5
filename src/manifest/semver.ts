import semver from 'semver';

/**
 * The manifest's versions are strict semver (`MAJOR.MINOR.PATCH[-pre]`, no
 * `v` prefix). Build metadata is refused: two versions differing only by it
 * could not be told apart by the gateway's version routing.
 */
export function isSemver(text: unknown): text is string {
  return typeof text === 'string' && !text.includes('+') && semver.valid(text) === text;
}

export function isPrerelease(version: string): boolean {
  return semver.prerelease(version) !== null;
}

/** Negative when `a` has lower precedence than `b`, zero when equal, positive otherwise. */
export function compareSemver(a: string, b: string): number {
  return semver.compare(a, b);
}
