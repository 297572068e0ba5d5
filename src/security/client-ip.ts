/**
 * Who the client is. The address a request came from is the peer's, unless
 * the peer is a proxy the manifest trusts (`gateway.edge.trustedProxies`):
 * then it is read from X-Forwarded-For, as far as trusted hops vouch for it.
 * Everything keyed by client (rate limits, logs) uses this address, so a
 * client must never be able to choose it.
 */
import { BlockList, isIP } from 'node:net';

/** One trusted range, as `BlockList` takes it. */
export interface Cidr {
  address: string;
  /** 32 (IPv4) or 128 (IPv6) for a single address. */
  prefix: number;
  family: 'ipv4' | 'ipv6';
}

const PREFIX = /^(?:0|[1-9][0-9]{0,2})$/;

/**
 * Reads an address (`10.0.0.7`, `fd00::1`) or a range (`10.0.0.0/8`,
 * `fd00::/8`). Bits past the prefix are allowed and ignored (`10.0.0.1/8` is
 * `10.0.0.0/8`). An IPv4-mapped IPv6 range (`::ffff:10.0.0.0/104`) matches
 * the IPv4 addresses it maps, so `::/0` trusts every IPv4 address too (as
 * `BlockList` matches). Throws a TypeError naming the entry.
 */
export function parseCidr(text: string): Cidr {
  const slash = text.indexOf('/');
  const address = slash === -1 ? text : text.slice(0, slash);
  const version = address.includes('%') ? 0 : isIP(address);
  if (version === 0) throw new TypeError(`"${text}" is not an IP address or CIDR range (such as 10.0.0.0/8 or fd00::/8)`);
  const bits = version === 4 ? 32 : 128;
  let prefix = bits;
  if (slash !== -1) {
    const p = text.slice(slash + 1);
    prefix = PREFIX.test(p) ? Number(p) : Number.NaN;
    if (!(prefix <= bits)) throw new TypeError(`"${text}": the prefix length must be a whole number from 0 to ${bits}`);
  }
  return { address, prefix, family: version === 4 ? 'ipv4' : 'ipv6' };
}

/** Whether `text` is an address or range `parseCidr` reads (for the manifest's validation). */
export function isCidr(text: string): boolean {
  try {
    parseCidr(text);
    return true;
  } catch {
    return false;
  }
}

/** `::ffff:1.2.3.4` (an IPv4 client on a dual-stack socket) as `1.2.3.4`; any other address as it is. */
export function normalizeIp(address: string): string {
  // Cheap test first: a mapped address is the only kind with a "." after a ":".
  if (address.length < 14 || address.charCodeAt(0) !== 0x3a /* : */ || address.indexOf('.') === -1) return address;
  const prefix = address.slice(0, 7).toLowerCase();
  if (prefix !== '::ffff:') return address;
  const v4 = address.slice(7);
  return isIP(v4) === 4 ? v4 : address;
}

/**
 * The key a client address is rate limited by: an IPv4 address itself, an
 * IPv6 address's /64. One IPv6 client usually holds a whole /64 (SLAAC hands
 * a host 2^64 addresses), so keying by the full address would let it spread
 * its requests over as many buckets as it likes.
 */
export function rateLimitKey(address: string): string {
  if (address.indexOf(':') === -1) return address;
  const at = address.indexOf('::');
  const head = (at === -1 ? address : address.slice(0, at)).split(':').filter((g) => g !== '');
  const tail = at === -1 ? [] : address.slice(at + 2).split(':').filter((g) => g !== '');
  const groups = at === -1 ? head : [...head, ...Array<string>(Math.max(0, 8 - head.length - tail.length)).fill('0'), ...tail];
  return `${groups
    .slice(0, 4)
    .map((g) => (Number.parseInt(g, 16) || 0).toString(16))
    .join(':')}::/64`;
}

/** Addresses whose trust is remembered: BlockList.check costs ~1.7 µs (it builds a SocketAddress), a Map hit ~20 ns. */
const MEMO_SIZE = 4_096;

/**
 * The proxies whose X-Forwarded-For is believed, and the client address and
 * forwarded chain that follow from a request's peer and header.
 */
export class TrustedProxies {
  readonly #list = new BlockList();
  readonly #memo = new Map<string, boolean>();
  /** No proxy is trusted: the client is always the peer, and headers are not read. */
  readonly empty: boolean;

  /** Throws a TypeError naming the first entry that is not an address or range. */
  constructor(entries: readonly string[]) {
    for (const entry of entries) {
      const { address, prefix, family } = parseCidr(entry);
      this.#list.addSubnet(address, prefix, family);
    }
    this.empty = entries.length === 0;
  }

  /** Whether `address` is a trusted proxy (an IPv4-mapped address matches the IPv4 ranges). */
  trusts(address: string): boolean {
    if (this.empty) return false;
    let trusted = this.#memo.get(address);
    if (trusted === undefined) {
      const version = isIP(address);
      // BlockList itself matches ::ffff:1.2.3.4 against 1.2.3.0/24.
      trusted = version !== 0 && this.#list.check(address, version === 4 ? 'ipv4' : 'ipv6');
      // Many distinct addresses (direct clients): start again rather than track recency.
      if (this.#memo.size >= MEMO_SIZE) this.#memo.clear();
      this.#memo.set(address, trusted);
    }
    return trusted;
  }

  /**
   * The client's address. From an untrusted peer, the peer, whatever
   * X-Forwarded-For says: a client cannot choose its own rate-limit key. From
   * a trusted peer, the list is walked from the right (the entry the peer
   * added) past trusted addresses; the first untrusted one is the client. If
   * all are trusted, the leftmost is.
   *
   * An entry that is not an address (`unknown`, garbage, an obfuscated
   * RFC 7239 name) stops the walk, and the client is the last address before
   * it, i.e. the trusted hop that passed it on. Everything left of a bad entry
   * is unverifiable, and skipping it would let a client behind a trusted
   * proxy pick its address by putting one there; the cost of stopping is that
   * the requests of that hop share one key. Empty entries (`a,,b`) are
   * skipped, as lists allow. Entries may carry a port (`1.2.3.4:5678`,
   * `[2001:db8::1]:443`), which is dropped. The result is normalised:
   * `::ffff:1.2.3.4` is `1.2.3.4`.
   */
  clientIp(peer: string, xForwardedFor: string | string[] | undefined): string {
    const client = normalizeIp(peer);
    if (this.empty || xForwardedFor === undefined || !this.trusts(client)) return client;
    const list = typeof xForwardedFor === 'string' ? xForwardedFor : xForwardedFor.join(',');
    return this.#walk(list, client);
  }

  /**
   * The X-Forwarded-For to send to an instance: from a trusted peer, the
   * list it sent with the peer appended; from any other, the peer alone (what
   * it claims is dropped, so instances that read the header are not misled).
   */
  forwardedFor(peer: string, xForwardedFor: string | string[] | undefined): string {
    const client = normalizeIp(peer);
    if (this.empty || xForwardedFor === undefined || !this.trusts(client)) return client;
    const list = typeof xForwardedFor === 'string' ? xForwardedFor : xForwardedFor.join(', ');
    return isBlank(list) ? client : `${list}, ${client}`;
  }

  #walk(list: string, peer: string): string {
    let client = peer;
    // Entries are found by index from the right, without splitting the list.
    let end = list.length;
    while (end > 0) {
      const comma = list.lastIndexOf(',', end - 1);
      let from = comma + 1;
      let to = end;
      while (from < to && isSpace(list.charCodeAt(from))) from++;
      while (to > from && isSpace(list.charCodeAt(to - 1))) to--;
      end = comma;
      if (from === to) continue;
      const address = hostOf(list.slice(from, to));
      if (address === undefined) return client;
      client = normalizeIp(address);
      if (!this.trusts(client)) return client;
    }
    return client;
  }
}

/** The address in one X-Forwarded-For entry (port and brackets dropped), or undefined if it holds none. */
function hostOf(entry: string): string | undefined {
  if (entry.charCodeAt(0) === 0x5b /* [ */) {
    const close = entry.indexOf(']');
    if (close === -1) return undefined;
    const rest = entry.slice(close + 1);
    if (rest !== '' && !isPort(rest)) return undefined;
    const inner = entry.slice(1, close);
    return isIP(inner) === 6 && !inner.includes('%') ? inner : undefined;
  }
  const version = isIP(entry);
  if (version === 4) return entry;
  if (version === 6) return entry.includes('%') ? undefined : entry;
  // IPv4 with a port: exactly one colon.
  const colon = entry.indexOf(':');
  if (colon === -1 || !isPort(entry.slice(colon))) return undefined;
  const host = entry.slice(0, colon);
  return isIP(host) === 4 ? host : undefined;
}

const PORT = /^:[0-9]{1,5}$/;
const isPort = (text: string): boolean => PORT.test(text);
const isSpace = (c: number): boolean => c === 0x20 || c === 0x09;
const isBlank = (text: string): boolean => !/[^ \t,]/.test(text);
