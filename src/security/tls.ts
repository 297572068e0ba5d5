/**
 * TLS at the edge. The HTTPS listener's certificate and key come from files
 * that are replaced in place when they are renewed (cert-manager, certbot):
 * `CertificateWatcher` reloads them without a restart, and only once the new
 * pair is known to work. And the options Berth connects to a service's
 * instances with when they speak TLS (`upstreamTls`).
 */
import { X509Certificate, createPrivateKey, type KeyObject } from 'node:crypto';
import { watch } from 'node:fs';
import { readFile } from 'node:fs/promises';
import type { ServerOptions } from 'node:https';
import { dirname } from 'node:path';
import tls from 'node:tls';
import { systemClock, type Clock, type Timer } from '../clock.js';
import { BerthError } from '../errors.js';
import type { TlsListenerSpec, UpstreamTlsSpec } from '../manifest/types.js';

/** A certificate (chain, PEM) and its private key (PEM). */
export interface TlsMaterial {
  cert: string;
  key: string;
}

/** What `server.setSecureContext` takes: the pair and the protocol floor, which a new context must repeat. */
export type ServerContext = TlsMaterial & Pick<tls.SecureContextOptions, 'minVersion' | 'honorCipherOrder'>;

/** Bursts of file events closer together than this are one change. */
const DEBOUNCE_MS = 100;

// TLS 1.0 and 1.1 are deprecated (RFC 8996): whatever a spec says, never below 1.2.
const floorVersion = (version: string): tls.SecureVersion => (version === 'TLSv1.3' ? 'TLSv1.3' : 'TLSv1.2');

function materialError(message: string, cause?: unknown): BerthError {
  return new BerthError('BERTH_ERR_TLS_MATERIAL', message, { cause });
}

function reason(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  return e.code ?? e.message;
}

async function readPem(file: string, what: string): Promise<string> {
  try {
    return await readFile(file, 'utf8');
  } catch (err) {
    throw materialError(`${file}: cannot read the ${what}: ${reason(err)}`, err);
  }
}

function parseCertificate(file: string, pem: string): X509Certificate {
  try {
    return new X509Certificate(pem);
  } catch (err) {
    throw materialError(`${file}: not a PEM certificate`, err);
  }
}

function parseKey(file: string, pem: string): KeyObject {
  try {
    return createPrivateKey(pem);
  } catch (err) {
    const encrypted = (err as NodeJS.ErrnoException).code === 'ERR_MISSING_PASSPHRASE';
    throw materialError(`${file}: ${encrypted ? 'the private key is encrypted, which is not supported' : 'not a PEM private key'}`, err);
  }
}

/** Reads a certificate and its key and proves they work together, naming the file at fault. */
async function loadPair(certFile: string, keyFile: string): Promise<TlsMaterial & { certificate: X509Certificate }> {
  // Both read at once; when both fail, the certificate's error is the one told, whichever came first.
  const [certRead, keyRead] = await Promise.allSettled([readPem(certFile, 'certificate'), readPem(keyFile, 'private key')]);
  if (certRead.status === 'rejected') throw certRead.reason;
  if (keyRead.status === 'rejected') throw keyRead.reason;
  const cert = certRead.value;
  const key = keyRead.value;
  const certificate = parseCertificate(certFile, cert);
  if (!certificate.checkPrivateKey(parseKey(keyFile, key))) {
    throw materialError(`${keyFile}: this private key does not belong to the certificate in ${certFile}`);
  }
  try {
    // What the listener will do with the pair: this also checks the rest of the chain parses.
    tls.createSecureContext({ cert, key });
  } catch (err) {
    throw materialError(`${certFile} with ${keyFile}: not a usable certificate and key: ${reason(err)}`, err);
  }
  return { cert, key, certificate };
}

/** Reads and checks a certificate and its key, as a listener would load them, and keeps nothing: a reload's preflight. */
export async function checkCertificatePair(certFile: string, keyFile: string): Promise<void> {
  await loadPair(certFile, keyFile);
}

function contextOptions(material: TlsMaterial, minVersion: string): ServerContext {
  return { cert: material.cert, key: material.key, minVersion: floorVersion(minVersion), honorCipherOrder: true };
}

/**
 * The HTTPS listener's options. Ciphers are Node's defaults (OpenSSL's
 * forward-secret AEAD suites first); the server's order wins; HTTP/1.1 only.
 */
export function serverTlsOptions(spec: Pick<TlsListenerSpec, 'minVersion'>, material: TlsMaterial): ServerOptions {
  return { ...contextOptions(material, spec.minVersion), ALPNProtocols: ['http/1.1'] };
}

/** The Strict-Transport-Security value for `tls.hsts`. */
export function hstsHeader(hsts: NonNullable<TlsListenerSpec['hsts']>): string {
  let value = `max-age=${Math.max(0, Math.floor(hsts.maxAgeSeconds))}`;
  if (hsts.includeSubDomains) value += '; includeSubDomains';
  if (hsts.preload) value += '; preload';
  return value;
}

/** Watches one directory; `onEvent` for anything that happens in it. */
export type WatchDirectory = (dir: string, onEvent: () => void, onError: (err: Error) => void) => { close(): void };

const fsWatchDirectory: WatchDirectory = (dir, onEvent, onError) => {
  const watcher = watch(dir, { persistent: false }, () => onEvent());
  watcher.on('error', onError);
  return watcher;
};

/** The listener's files (absolute paths) and protocol floor. */
export interface CertificateFiles {
  certFile: string;
  keyFile: string;
  minVersion: TlsListenerSpec['minVersion'];
}

export interface CertificateHandlers {
  /** The files changed and hold a new, working pair: give it to `server.setSecureContext` (if that throws, the old pair stays and `onError` is told). */
  onChange: (context: ServerContext) => void;
  /** The files changed but the new pair cannot be used (or watching failed); the pair in use stays. */
  onError: (err: BerthError) => void;
  clock?: Clock;
  /** Replaces `fs.watch`, for tests. */
  watchDirectory?: WatchDirectory;
}

/**
 * The listener's certificate and key, reloaded when their files change.
 *
 * The containing directories are watched, not the files: a renewal replaces a
 * file by renaming a new one over it (or, in a Kubernetes secret volume, by
 * swapping a `..data` symlink), and a watch on the old file would never see
 * it. Any event in those directories schedules a re-read once they have been
 * quiet for 100 ms, because the certificate and the key are replaced one
 * after the other; a pair read between the two fails validation, is
 * reported, and the second replacement's event reads it again.
 */
export class CertificateWatcher {
  readonly #files: CertificateFiles;
  readonly #handlers: CertificateHandlers;
  readonly #clock: Clock;
  #pair: TlsMaterial & { certificate: X509Certificate };
  #watchers: { close(): void }[] = [];
  #timer: Timer | undefined;
  /** Reloads run one after another, so an older read never overwrites a newer one. */
  #reloading: Promise<void> = Promise.resolve();
  #closed = false;

  private constructor(files: CertificateFiles, handlers: CertificateHandlers, pair: TlsMaterial & { certificate: X509Certificate }) {
    this.#files = files;
    this.#handlers = handlers;
    this.#clock = handlers.clock ?? systemClock;
    this.#pair = pair;
  }

  /**
   * Reads and validates the pair, then watches for changes. Throws
   * `BERTH_ERR_TLS_MATERIAL` naming the file when a file cannot be read, is
   * not PEM, or the key is not the certificate's.
   */
  static async load(files: CertificateFiles, handlers: CertificateHandlers): Promise<CertificateWatcher> {
    // Watch before reading, so a replacement that lands while the files are
    // read is not missed: events until then are remembered and replayed.
    const early: { watcher?: CertificateWatcher; missed: boolean; error?: Error } = { missed: false };
    const onEvent = (): void => {
      if (early.watcher) early.watcher.#schedule();
      else early.missed = true;
    };
    const onError = (err: Error): void => {
      if (early.watcher) early.watcher.#watchFailed(err);
      else early.error ??= err;
    };
    const watchers: { close(): void }[] = [];
    const watchDirectory = handlers.watchDirectory ?? fsWatchDirectory;
    let pair: TlsMaterial & { certificate: X509Certificate };
    try {
      for (const dir of new Set([dirname(files.certFile), dirname(files.keyFile)])) {
        try {
          watchers.push(watchDirectory(dir, onEvent, onError));
        } catch (err) {
          early.error ??= err as Error;
          break;
        }
      }
      // A missing directory is better told as the file that cannot be read.
      pair = await loadPair(files.certFile, files.keyFile);
      if (early.error) throw materialError(`cannot watch ${files.certFile} and ${files.keyFile} for changes: ${reason(early.error)}`, early.error);
    } catch (err) {
      for (const w of watchers) w.close();
      throw err;
    }
    const watcher = new CertificateWatcher(files, handlers, pair);
    watcher.#watchers = watchers;
    early.watcher = watcher;
    if (early.missed) watcher.#schedule();
    return watcher;
  }

  /** The pair in use, with the protocol floor: what the listener is built with. */
  current(): ServerContext {
    return contextOptions(this.#pair, this.#files.minVersion);
  }

  /** When the certificate in use expires. */
  get notAfter(): Date {
    return new Date(this.#pair.certificate.validTo);
  }

  /** Resolves once the reloads started so far are over (their callbacks made): for tests, and a shutdown that wants no read left. */
  settled(): Promise<void> {
    return this.#reloading;
  }

  /** Stops watching. A reload under way (a file read) finishes without calling back. */
  close(): void {
    this.#closed = true;
    if (this.#timer !== undefined) this.#clock.clearTimeout(this.#timer);
    this.#timer = undefined;
    for (const w of this.#watchers) w.close();
    this.#watchers = [];
  }

  #schedule(): void {
    if (this.#closed) return;
    if (this.#timer !== undefined) this.#clock.clearTimeout(this.#timer);
    this.#timer = this.#clock.setTimeout(() => {
      this.#timer = undefined;
      this.#reloading = this.#reloading.then(() => this.#reload());
    }, DEBOUNCE_MS);
  }

  async #reload(): Promise<void> {
    if (this.#closed) return;
    let pair: TlsMaterial & { certificate: X509Certificate };
    try {
      pair = await loadPair(this.#files.certFile, this.#files.keyFile);
    } catch (err) {
      if (!this.#closed) this.#handlers.onError(err as BerthError);
      return;
    }
    if (this.#closed) return;
    // Events come for any file in the directories, and for a touch: only a new pair is a change.
    if (pair.cert === this.#pair.cert && pair.key === this.#pair.key) return;
    try {
      this.#handlers.onChange(contextOptions(pair, this.#files.minVersion));
    } catch (err) {
      // The listener did not take it (setSecureContext threw): the pair in use is still the old one.
      this.#handlers.onError(materialError(`${this.#files.certFile} with ${this.#files.keyFile}: the new pair was not taken: ${reason(err)}`, err));
      return;
    }
    this.#pair = pair;
  }

  #watchFailed(err: Error): void {
    if (this.#closed) return;
    this.#handlers.onError(materialError(`stopped watching ${this.#files.certFile} and ${this.#files.keyFile} for changes: ${reason(err)}`, err));
  }
}

/** How Berth connects to a service's instances over TLS: undici's `connect` options. */
export interface UpstreamConnectOptions {
  ca?: string;
  cert?: string;
  key?: string;
  servername?: string;
  rejectUnauthorized: boolean;
}

/**
 * Reads a service's `upstreamTls` files once. Throws `BERTH_ERR_TLS_MATERIAL`
 * naming the file when one cannot be read or parsed, or when the client key
 * is not the client certificate's.
 */
export async function upstreamConnectOptions(spec: UpstreamTlsSpec): Promise<UpstreamConnectOptions> {
  const options: UpstreamConnectOptions = { rejectUnauthorized: spec.verify };
  if (spec.caFile !== undefined) {
    const ca = await readPem(spec.caFile, 'CA bundle');
    parseCertificate(spec.caFile, ca);
    options.ca = ca;
  }
  if ((spec.certFile === undefined) !== (spec.keyFile === undefined)) {
    throw materialError(`${spec.certFile ?? spec.keyFile}: a client certificate needs both certFile and keyFile`);
  }
  if (spec.certFile !== undefined && spec.keyFile !== undefined) {
    const pair = await loadPair(spec.certFile, spec.keyFile);
    options.cert = pair.cert;
    options.key = pair.key;
  }
  if (spec.serverName !== undefined) options.servername = spec.serverName;
  return options;
}
