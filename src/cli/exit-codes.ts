/** Exit codes of the `berth` CLI; listed in docs/cli.md. */
export const ExitCode = {
  /** Success. */
  OK: 0,
  /** The command ran and failed (a node stopped on an error, an operation was refused). */
  FAILURE: 1,
  /** Bad usage: unknown command or option, missing argument. */
  USAGE: 2,
  /** The manifest is missing, not YAML, or breaks the schema. */
  MANIFEST_INVALID: 3,
  /** No node answers at the admin address. */
  NODE_UNREACHABLE: 4,
  /** The named service or instance does not exist. */
  NOT_FOUND: 5,
  /** The node refused the call: no token or an unknown one (401), or a role too low (403). */
  NOT_AUTHORIZED: 6,
} as const;

export type ExitCode = (typeof ExitCode)[keyof typeof ExitCode];
