import { execFile } from 'node:child_process';
import { X509Certificate, randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before } from 'node:test';
import { promisify } from 'node:util';

const run = promisify(execFile);

/** From PATH: scripts/install-deps.sh installs it on CI. */
const OPENSSL = 'openssl';

/** A certificate and its key, as files and as PEM. */
export interface CertPair {
  certFile: string;
  keyFile: string;
  cert: string;
  key: string;
  /** Upper-case hex, as `getPeerCertificate().serialNumber` and `X509Certificate.serialNumber` give it. */
  serial: string;
}

/** Test certificates, all EC P-256, valid for 30 days from now. */
export interface Certs {
  /** The CA that signs `server`, `server2` and `client`. */
  ca: CertPair;
  /** For `localhost`, `127.0.0.1` and `::1`. */
  server: CertPair;
  /** The same names, another key and serial: what a rotation swaps in. */
  server2: CertPair;
  /** A client certificate (CN `berth-test-client`) for mutual TLS. */
  client: CertPair;
  /** A CA nobody trusts. */
  otherCa: CertPair;
  /** For `localhost`, `127.0.0.1` and `::1`, signed by `otherCa`. */
  other: CertPair;
}

const DAYS = '30';
const EC_KEY = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
// `-config /dev/null` keeps the system's openssl.cnf (which differs between
// distributions) out: every extension is set here.
const NO_CONFIG = ['-config', '/dev/null'];

async function openssl(args: string[]): Promise<void> {
  try {
    await run(OPENSSL, args, { timeout: 10_000 });
  } catch (err) {
    const stderr = (err as { stderr?: string }).stderr ?? '';
    throw new Error(`openssl ${args.join(' ')} failed: ${stderr.trim() || String(err)}`, { cause: err });
  }
}

async function readPair(certFile: string, keyFile: string): Promise<CertPair> {
  const [cert, key] = await Promise.all([readFile(certFile, 'utf8'), readFile(keyFile, 'utf8')]);
  return { certFile, keyFile, cert, key, serial: new X509Certificate(cert).serialNumber };
}

async function makeCa(dir: string, name: string, cn: string): Promise<CertPair> {
  const certFile = join(dir, `${name}.crt`);
  const keyFile = join(dir, `${name}.key`);
  await openssl([
    'req', '-x509', '-new', ...EC_KEY, ...NO_CONFIG,
    '-keyout', keyFile, '-out', certFile, '-days', DAYS, '-subj', `/CN=${cn}`,
    '-addext', 'basicConstraints=critical,CA:TRUE',
    '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
    '-addext', 'subjectKeyIdentifier=hash',
  ]);
  return readPair(certFile, keyFile);
}

async function makeLeaf(dir: string, name: string, ca: CertPair, cn: string, extensions: string[]): Promise<CertPair> {
  const certFile = join(dir, `${name}.crt`);
  const keyFile = join(dir, `${name}.key`);
  const csrFile = join(dir, `${name}.csr`);
  const extFile = join(dir, `${name}.ext`);
  await Promise.all([
    openssl(['req', '-new', ...EC_KEY, ...NO_CONFIG, '-keyout', keyFile, '-out', csrFile, '-subj', `/CN=${cn}`]),
    // An extfile rather than `-copy_extensions`: the same on OpenSSL 1.1 and 3.x.
    writeFile(extFile, ['basicConstraints=critical,CA:FALSE', 'keyUsage=critical,digitalSignature', 'authorityKeyIdentifier=keyid', ...extensions, ''].join('\n')),
  ]);
  // A random serial each run, so two certificates for the same names are told apart.
  await openssl([
    'x509', '-req', '-in', csrFile, '-CA', ca.certFile, '-CAkey', ca.keyFile,
    '-set_serial', randomSerial(), '-days', DAYS, '-out', certFile, '-extfile', extFile,
  ]);
  return readPair(certFile, keyFile);
}

function randomSerial(): string {
  // 64 bits, top bit clear (a serial is positive) and the next one set (no leading zero to trip up a comparison).
  const bytes = randomBytes(8);
  bytes.writeUInt8((bytes.readUInt8(0) & 0x3f) | 0x40, 0);
  return `0x${bytes.toString('hex')}`;
}

const SERVER = ['extendedKeyUsage=serverAuth', 'subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1'];
const CLIENT = ['extendedKeyUsage=clientAuth'];

/**
 * Writes a test PKI into `dir` (which must exist) with the `openssl` CLI:
 * two CAs, server certificates for the loopback names, and a client
 * certificate. Independent steps run in parallel; the whole takes well under
 * a second.
 */
export async function makeCerts(dir: string): Promise<Certs> {
  const [ca, otherCa] = await Promise.all([makeCa(dir, 'ca', 'Berth Test CA'), makeCa(dir, 'other-ca', 'Berth Untrusted CA')]);
  const [server, server2, client, other] = await Promise.all([
    makeLeaf(dir, 'server', ca, 'localhost', SERVER),
    makeLeaf(dir, 'server2', ca, 'localhost', SERVER),
    makeLeaf(dir, 'client', ca, 'berth-test-client', CLIENT),
    makeLeaf(dir, 'other', otherCa, 'localhost', SERVER),
  ]);
  return { ca, server, server2, client, otherCa, other };
}

/**
 * A test PKI for the suite it is called in: made in a temp dir of its own
 * before the suite's tests (node:test `before`), removed after them. Read
 * `certs` and `root` (the dir, for other files a test writes) from the tests.
 */
export function useCerts(prefix: string): { readonly certs: Certs; readonly root: string } {
  let made: { certs: Certs; root: string } | undefined;
  before(async () => {
    const root = await mkdtemp(join(tmpdir(), prefix));
    made = { certs: await makeCerts(root), root };
  });
  after(async () => {
    if (made) await rm(made.root, { recursive: true, force: true });
  });
  const ready = (): { certs: Certs; root: string } => {
    if (!made) throw new Error('useCerts: read certs in tests, not while the suite is declared');
    return made;
  };
  return {
    get certs() {
      return ready().certs;
    },
    get root() {
      return ready().root;
    },
  };
}
