/**
 * How an isolated instance is started: one argv, a chain of small programs
 * that each do one thing and then `exec` the next, so the pid Berth spawned
 * (the process-group leader it signals) is the same process all the way down
 * to the sandbox:
 *
 *   /bin/sh -c SCRIPT     as root: join the instance's cgroups, set RLIMIT_NOFILE
 *   → setpriv …           become the service's user: uid, gid, groups, no caps
 *   → bwrap …             the filesystem sandbox (an unprivileged user namespace)
 *   → env --default-signal  inside it: signals back to their defaults
 *   → the service's command
 *
 * Links that have nothing to do are left out; with no isolation at all the
 * command is the service's own. Nothing from the manifest is ever part of the
 * `-c` script: paths, limits and the command are positional arguments.
 */
import { execFile } from 'node:child_process';
import { accessSync, constants as fsConstants } from 'node:fs';
import { chmod, chown, lstat, mkdir, readFile, stat } from 'node:fs/promises';
import { delimiter, dirname, isAbsolute, join } from 'node:path';
import { promisify } from 'node:util';
import { BerthError } from '../../errors.js';
import type { CommandSpec, RunAsSpec } from '../../manifest/types.js';

const run = promisify(execFile);

/** A user instances may run as: never root. */
export interface ResolvedUser {
  uid: number;
  gid: number;
  /** The passwd name when the manifest gave one; null for numeric ids. */
  name: string | null;
}

/** Who the service runs as; with a `name`, it also gets that user's own supplementary groups. */
export interface LaunchUser {
  uid: number;
  gid: number;
  name?: string | null;
}

export interface LaunchSandbox {
  /** Berth's data dir: hidden (an empty tmpfs over it). */
  dataDir: string;
  /** The service's own data dir, writable (see prepareServiceDir); usually under dataDir. */
  serviceDir: string;
  /** More folders the service may write. */
  writable: readonly string[];
  /** Where the command runs. */
  cwd: string;
}

export interface LaunchOptions {
  command: CommandSpec;
  /** cgroup.procs files the instance joins before anything of the service runs. */
  procsFiles: readonly string[];
  /** RLIMIT_NOFILE, soft and hard; null: inherited. */
  openFiles: number | null;
  /** null: as Berth's own user. */
  user: LaunchUser | null;
  sandbox: LaunchSandbox | null;
}

export interface LaunchArgv {
  file: string;
  args: string[];
}

/** What isolation works on this machine: true, or why not. */
export interface IsolationSupport {
  user: true | string;
  sandbox: true | string;
}

/** The launcher's own failures (a cgroup it cannot join, a limit it cannot set) exit with this, before the service starts. */
export const LAUNCH_FAILED_EXIT = 125;

/**
 * Signals the bwrap monitor ignores. It is the group leader Berth signals,
 * and by default a stop signal kills it at once, and with it (--die-with-parent)
 * the sandbox, before the service's handler has finished. Ignored, the signal
 * only reaches the service (same process group); the monitor exits when the
 * service does, with its status. The dispositions are reset for the service
 * by `env --default-signal`. SIGKILL and SIGSTOP cannot be ignored, which is
 * what killGroup relies on.
 */
const MONITOR_IGNORES = 'HUP INT QUIT ABRT USR1 USR2 PIPE ALRM TERM TSTP TTIN TTOU XCPU XFSZ VTALRM PROF';

// Each fragment consumes its own positional arguments, then shifts them away.
const JOIN_CGROUPS = String.raw`n=$1; shift
while [ "$n" -gt 0 ]; do
  printf '%s\n' "$$" > "$1" || { printf 'berth: cannot join cgroup (%s)\n' "$1" >&2; exit ${LAUNCH_FAILED_EXIT}; }
  shift; n=$((n - 1))
done`;
const LIMIT_OPEN_FILES = String.raw`ulimit -n "$1" || { printf 'berth: cannot set the open files limit to %s\n' "$1" >&2; exit ${LAUNCH_FAILED_EXIT}; }
shift`;
const IGNORE_STOP_SIGNALS = `trap '' ${MONITOR_IGNORES}`;
const EXEC = 'exec "$@"';

/**
 * The argv that starts `command` isolated as asked: spawn it detached (its own
 * process group), with the instance's env and cwd, like the bare command.
 */
export function launchCommand(options: LaunchOptions): LaunchArgv {
  const { command, procsFiles, openFiles, user, sandbox } = options;
  let argv = [command.file, ...command.args];

  if (sandbox) {
    for (const path of [sandbox.dataDir, sandbox.serviceDir, sandbox.cwd, ...sandbox.writable]) requireAbsolute(path);
    argv = [tool('bwrap'), ...bwrapArgs(sandbox), '--', tool('env'), '--default-signal', '--', ...argv];
  }
  if (user) {
    requireUnprivileged(user.uid, user.gid);
    argv = [
      tool('setpriv'),
      '--reuid', String(user.uid),
      '--regid', String(user.gid),
      user.name ? '--init-groups' : '--clear-groups',
      '--inh-caps=-all',
      '--bounding-set=-all',
      '--no-new-privs',
      '--',
      ...argv,
    ];
  }

  const script: string[] = [];
  const positional: string[] = [];
  if (procsFiles.length > 0) {
    for (const path of procsFiles) requireAbsolute(path);
    script.push(JOIN_CGROUPS);
    positional.push(String(procsFiles.length), ...procsFiles);
  }
  if (openFiles !== null) {
    if (!Number.isSafeInteger(openFiles) || openFiles < 1) throw new BerthError('BERTH_ERR_ISOLATION', `the open files limit must be a positive integer, not ${openFiles}`);
    script.push(LIMIT_OPEN_FILES);
    positional.push(String(openFiles));
  }
  if (sandbox) script.push(IGNORE_STOP_SIGNALS);
  if (script.length > 0) argv = ['/bin/sh', '-c', [...script, EXEC].join('\n'), 'sh', ...positional, ...argv];

  const [file, ...args] = argv as [string, ...string[]];
  return { file, args };
}

/**
 * bwrap run as the service's user (so in an unprivileged user namespace).
 * Order matters: later mounts go on top of earlier ones, so the service dir
 * and the writable folders are bound after the tmpfs that hides the data dir.
 */
function bwrapArgs(sandbox: LaunchSandbox): string[] {
  return [
    '--ro-bind', '/', '/',
    '--dev', '/dev',
    '--proc', '/proc',
    '--tmpfs', '/tmp',
    // A service that lives under /tmp (a CI checkout, a scratch project) would find its own folder hidden by the private /tmp: shown again, read-only.
    ...(sandbox.cwd.startsWith('/tmp/') ? ['--ro-bind', sandbox.cwd, sandbox.cwd] : []),
    '--tmpfs', sandbox.dataDir,
    '--bind', sandbox.serviceDir, sandbox.serviceDir,
    ...sandbox.writable.flatMap((path) => ['--bind', path, path]),
    '--chdir', sandbox.cwd,
    // Berth (or the monitor) gone: the sandbox is SIGKILLed, nothing is orphaned.
    '--die-with-parent',
    '--unshare-ipc',
    // Its own pid namespace: the service sees and signals only its own
    // processes (not other instances running as the same user), and when
    // bwrap's init dies the kernel kills everything left in it, even a
    // process that called setsid() to leave the group. Its tasks still count
    // in the pids cgroup, and the group's signals still reach them (the
    // process group is the same one, seen from outside).
    '--unshare-pid',
    // No capability even when the sandbox runs as root (no user given).
    '--cap-drop', 'ALL',
    // Not --new-session: setsid() there would take the service out of the
    // process group Berth signals, so a stop would reach the monitor only.
    // What it guards against (TIOCSTI into the controlling terminal) cannot
    // happen here: the leader is spawned detached, a session with no terminal.
  ];
}

/**
 * Looks `spec` up: a name in the passwd database (`getent`, so NSS sources
 * count), numeric ids as given. Rejects (BERTH_ERR_ISOLATION) an unknown name and
 * uid 0.
 */
export async function resolveUser(spec: RunAsSpec): Promise<ResolvedUser> {
  if ('uid' in spec) {
    requireUnprivileged(spec.uid, spec.gid);
    return { uid: spec.uid, gid: spec.gid, name: null };
  }
  const { name } = spec;
  // A leading digit would be looked up as a uid, a dash as an option.
  if (!/^[A-Za-z_][A-Za-z0-9_.-]*\$?$/.test(name)) throw new BerthError('BERTH_ERR_ISOLATION', `user "${name}" is not a valid user name`);
  const entry = await passwdEntry(name);
  if (!entry) throw new BerthError('BERTH_ERR_ISOLATION', `user "${name}" does not exist on this machine (not in the passwd database)`);
  if (entry.uid === 0) throw new BerthError('BERTH_ERR_ISOLATION', `user "${name}" is root (uid 0): instances run only as unprivileged users`);
  return { uid: entry.uid, gid: entry.gid, name };
}

async function passwdEntry(name: string): Promise<{ uid: number; gid: number } | undefined> {
  let text: string;
  try {
    text = (await run('getent', ['passwd', name], { timeout: 10_000 })).stdout;
  } catch (err) {
    const e = err as { code?: unknown; message: string };
    if (e.code === 2) return undefined; // getent's exit status for "not found"
    if (e.code !== 'ENOENT') throw new BerthError('BERTH_ERR_ISOLATION', `cannot look up user "${name}": ${e.message}`, { cause: err });
    // No getent (not glibc): /etc/passwd alone.
    text = await readFile('/etc/passwd', 'utf8');
  }
  for (const line of text.split('\n')) {
    const [entryName, , uid, gid] = line.split(':');
    if (entryName === name && uid !== undefined && gid !== undefined && /^\d+$/.test(uid) && /^\d+$/.test(gid)) {
      return { uid: Number(uid), gid: Number(gid) };
    }
  }
  return undefined;
}

/**
 * Creates the service's writable dir, mode 0700 and owned by `user`, its
 * missing parents 0711 (searchable, not listable). Every folder above it must
 * be searchable by `user` (owner, primary group or others bits: a folder open
 * to a supplementary group only is refused): bwrap, running as that user,
 * binds it from there.
 */
export async function prepareServiceDir(serviceDir: string, user: { uid: number; gid: number } | null): Promise<void> {
  requireAbsolute(serviceDir);
  await mkdir(dirname(serviceDir), { recursive: true, mode: 0o711 });
  await mkdir(serviceDir, { mode: 0o700 }).catch((err: NodeJS.ErrnoException) => {
    if (err.code !== 'EEXIST') throw err;
  });
  const info = await lstat(serviceDir);
  if (!info.isDirectory()) throw new BerthError('BERTH_ERR_ISOLATION', `${serviceDir} exists and is not a folder`);
  if (user) await chown(serviceDir, user.uid, user.gid);
  await chmod(serviceDir, 0o700);
  if (!user) return;
  for (let dir = dirname(serviceDir); ; dir = dirname(dir)) {
    const { mode, uid, gid } = await stat(dir);
    const searchable = uid === user.uid ? mode & 0o100 : gid === user.gid ? mode & 0o010 : mode & 0o001;
    if (!searchable) {
      throw new BerthError('BERTH_ERR_ISOLATION', `${dir} (mode ${(mode & 0o777).toString(8)}) is not searchable by uid ${user.uid}: the sandbox cannot reach ${serviceDir}`);
    }
    if (dir === dirname(dir)) return;
  }
}

/**
 * What of the isolation works here, each tried for real: switching users
 * (Berth is root and has setpriv) and the sandbox (bwrap can build one, as an
 * unprivileged user when Berth is root). For `berth up` to report.
 */
export async function isolationSupport(): Promise<IsolationSupport> {
  if (process.platform !== 'linux') return { user: 'only on Linux', sandbox: 'only on Linux' };
  const uid = process.getuid?.() ?? -1;
  const user = uid === 0 ? await probeUser() : `Berth runs as uid ${uid}, not root: it cannot switch users`;
  const sandbox = await probeSandbox(user === true);
  return { user, sandbox };
}

/** nobody's ids: the probe needs no passwd entry, only an unprivileged uid. */
const PROBE_ID = 65534;

async function probeUser(): Promise<true | string> {
  const setpriv = findTool('setpriv');
  if (!setpriv) return 'setpriv not found (util-linux)';
  const { file, args } = launchCommand({ command: trueCommand(), procsFiles: [], openFiles: null, user: { uid: PROBE_ID, gid: PROBE_ID }, sandbox: null });
  const failed = await probe(file, args);
  return failed === undefined ? true : `setpriv cannot switch users: ${failed}`;
}

async function probeSandbox(asUser: boolean): Promise<true | string> {
  if (!findTool('bwrap')) return 'bwrap not found: install bubblewrap';
  if (!findTool('env')) return 'env not found (coreutils)';
  const sysctl = await userNamespacesOff();
  if (sysctl) return sysctl;
  // The launch's own bwrap link; /tmp (there on every system, searchable by all) stands for both data dirs.
  const { file, args } = launchCommand({
    command: trueCommand(),
    procsFiles: [],
    openFiles: null,
    user: asUser ? { uid: PROBE_ID, gid: PROBE_ID } : null,
    sandbox: { dataDir: '/tmp', serviceDir: '/tmp', writable: [], cwd: '/' },
  });
  const failed = await probe(file, args);
  return failed === undefined ? true : `bubblewrap cannot build a sandbox here: ${failed}`;
}

async function userNamespacesOff(): Promise<string | undefined> {
  const read = (path: string): Promise<string | undefined> => readFile(path, 'utf8').then((s) => s.trim(), () => undefined);
  if ((await read('/proc/sys/user/max_user_namespaces')) === '0') return 'user namespaces are disabled (user.max_user_namespaces = 0)';
  if ((await read('/proc/sys/kernel/unprivileged_userns_clone')) === '0') return 'unprivileged user namespaces are disabled (kernel.unprivileged_userns_clone = 0)';
  if ((await read('/proc/sys/kernel/apparmor_restrict_unprivileged_userns')) === '1') {
    return 'AppArmor restricts unprivileged user namespaces (kernel.apparmor_restrict_unprivileged_userns = 1): bwrap needs a profile that allows them';
  }
  return undefined;
}

/** undefined when the command exits 0, else its first line of complaint. */
async function probe(file: string, args: string[]): Promise<string | undefined> {
  try {
    await run(file, args, { cwd: '/', timeout: 10_000, env: { PATH: process.env.PATH ?? '/usr/bin:/bin' } });
    return undefined;
  } catch (err) {
    const e = err as Error & { stderr?: string };
    const line = e.stderr?.trim().split('\n')[0];
    return line || e.message;
  }
}

function trueCommand(): CommandSpec {
  return { line: 'true', file: findTool('true') ?? '/bin/true', args: [], shell: false };
}

const tools = new Map<string, string | undefined>();

/**
 * A helper program's absolute path, found on Berth's own PATH once: never
 * through the instance's PATH, which the manifest may set and which the
 * first links (run as root) would otherwise search.
 */
function findTool(name: string): string | undefined {
  if (!tools.has(name)) {
    const dirs = (process.env.PATH ?? '').split(delimiter).filter(isAbsolute);
    const found = [...dirs, '/usr/bin', '/bin', '/usr/sbin', '/sbin'].map((dir) => join(dir, name)).find((path) => {
      try {
        accessSync(path, fsConstants.X_OK);
        return true;
      } catch {
        return false;
      }
    });
    tools.set(name, found);
  }
  return tools.get(name);
}

/** A missing tool stays a bare name: the launch then fails with "not found" in the instance's stderr. */
function tool(name: string): string {
  return findTool(name) ?? name;
}

function requireAbsolute(path: string): void {
  if (!isAbsolute(path)) throw new BerthError('BERTH_ERR_ISOLATION', `isolation needs absolute paths, not "${path}"`);
}

function requireUnprivileged(uid: number, gid: number): void {
  if (!Number.isSafeInteger(uid) || !Number.isSafeInteger(gid) || uid < 0 || gid < 0) {
    throw new BerthError('BERTH_ERR_ISOLATION', `"${uid}:${gid}" is not a uid:gid`);
  }
  if (uid === 0) throw new BerthError('BERTH_ERR_ISOLATION', 'uid 0 is root: instances run only as unprivileged users');
}
