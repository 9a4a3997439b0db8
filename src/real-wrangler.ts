// Hands a command to the real wrangler the way its own bin/wrangler.js does: one child node
// running wrangler-dist/cli.js with the same stdio (TTY, hotkeys), an IPC channel, forwarded
// SIGINT/SIGTERM and the child's exit status. Starting cli.js directly, rather than wrangler's
// bin, saves a node start-up on every passthrough command.
import { spawn } from "node:child_process";
import { constants } from "node:os";
import { wranglerBin, wranglerCli } from "./environment.js";

/**
 * Our pid, set for every real wrangler we start: the register in that process (NODE_OPTIONS)
 * must not route the command a second time. Only there: its descendants (a build command, a
 * script that runs wrangler again) are routed as any other process is (takeOverRealWrangler).
 */
export const DISPATCHED_ENV = "WRANGLER_X_DISPATCHED";

const MIN_NODE_VERSION = [22, 12, 0];

function nodeIsSupported(version = process.versions.node): boolean {
  const parts = version.split(".").map((part) => parseInt(part, 10));
  for (let i = 0; i < MIN_NODE_VERSION.length; i++) {
    const have = parts[i] ?? 0;
    const need = MIN_NODE_VERSION[i] ?? 0;
    if (have !== need) return have > need;
  }
  return true;
}

export function exitCodeOf(code: number | null, signal: NodeJS.Signals | null): number {
  if (code !== null) return code;
  const number = signal ? constants.signals[signal] : undefined;
  return number ? 128 + number : 1;
}

export interface RealWranglerOptions {
  /** Extra node flags for the wrangler process, e.g. our `--import` preload. */
  nodeArgs?: string[];
  env?: NodeJS.ProcessEnv;
}

export function runRealWrangler(args: string[], options: RealWranglerOptions = {}): void {
  // Let wrangler's own bin print its own "requires Node.js" message.
  const entry = nodeIsSupported() ? wranglerCli() : wranglerBin();
  const child = spawn(
    process.execPath,
    ["--no-warnings", ...process.execArgv, ...(options.nodeArgs ?? []), entry, ...args],
    {
      stdio: ["inherit", "inherit", "inherit", "ipc"],
      env: { ...(options.env ?? process.env), [DISPATCHED_ENV]: String(process.pid) },
    },
  );
  child
    .on("exit", (code, signal) => process.exit(exitCodeOf(code, signal)))
    .on("message", (message) => process.send?.(message))
    .on("disconnect", () => process.disconnect?.());
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    process.on(signal, () => child.kill(signal));
  }
}
