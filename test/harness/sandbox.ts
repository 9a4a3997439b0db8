// Real processes for tests, the demo and the bench: a temp persist root and registry, sessions
// in their own process groups, and a teardown that kills only what it started, by pid, then
// checks that nothing of it is left.
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { cpSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import lockfile from "proper-lockfile";
import { errnoCode } from "../../src/errors.js";
import {
  commandLine,
  establishedRemotePortsOf,
  isAlive,
  openFiles,
  processGroupMembers,
  procPids,
  procStat,
  unixSockets,
} from "../../src/process-info.js";
import { readOwner, readStandby, rootPaths, type OwnerRecord } from "../../src/records.js";
import { sleep } from "../../src/wait.js";

export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
export const OUR_BIN = path.join(REPO, "bin", "wrangler.mjs");
export const REAL_BIN = path.join(REPO, "node_modules", "wrangler", "bin", "wrangler.js");
/** Runs the TypeScript tools (bench, demo) as `npm run bench`/`npm run demo` do, with no build step. */
export const TOOL_RUNNER = path.join(REPO, "node_modules", "vite-node", "vite-node.mjs");
export const NODE = process.execPath;

// The package's one sleep, re-exported for the tests and the bench.
export { sleep };

export async function waitFor<T>(
  what: string | (() => string),
  probe: () => T | undefined | null | false | Promise<T | undefined | null | false>,
  timeoutMs = 30_000,
  intervalMs = 100,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    // null is "not yet" too (a lookup that found nothing); 0 and "" are values a probe may want.
    if (value !== undefined && value !== false && value !== null) return value;
    if (Date.now() > deadline)
      throw new Error(
        `timed out after ${timeoutMs} ms waiting for ${typeof what === "string" ? what : what()}`,
      );
    await sleep(intervalMs);
  }
}

/**
 * A free port below Linux's ephemeral range (32768+), where no `port: 0` socket (owners, workerd,
 * other tests) can take it between our check and wrangler's bind. Each test process (a vitest
 * fork, the bench or demo it runs) picks from a stripe of 300 ports that it holds a lock on while
 * it lives, so processes running at once never pick the same port: one could take it between
 * the other's check and its session's bind, and that session's wait then saw the other's
 * server answer. (Stripes by pid alone, walked into each other's: two failed runs.)
 */
const PORTS = { low: 20_000, high: 32_000, stripe: 300 };
let stripe: { base: number; next: number } | undefined;

/** The first stripe no live process holds, from one this pid names; held until it exits. */
function claimStripe(): { base: number; next: number } {
  const count = (PORTS.high - PORTS.low) / PORTS.stripe;
  const dir = path.join(os.tmpdir(), "x-shared-storage-port-stripes");
  mkdirSync(dir, { recursive: true });
  for (let k = 0; k < count; k++) {
    const index = (process.pid + k) % count;
    try {
      // Refreshed by a timer: stale only well after the longest blocking install (sync) ends.
      lockfile.lockSync(path.join(dir, String(index)), {
        realpath: false,
        stale: 300_000,
        onCompromised: () => {},
      });
      return { base: PORTS.low + index * PORTS.stripe, next: 0 };
    } catch (error) {
      if (errnoCode(error) !== "ELOCKED") throw error;
    }
  }
  // More live test processes than stripes: share one, as before the locks.
  return { base: PORTS.low + (process.pid % count) * PORTS.stripe, next: 0 };
}

export async function freePort(): Promise<number> {
  stripe ??= claimStripe();
  for (let attempt = 0; attempt < PORTS.stripe; attempt++) {
    const port = stripe.base + (stripe.next++ % PORTS.stripe);
    if (await canBind(port)) return port;
  }
  throw new Error(`no free port in ${stripe.base}-${stripe.base + PORTS.stripe - 1}`);
}

function canBind(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once("error", () => resolve(false));
    server.listen(port, "127.0.0.1", () => server.close(() => resolve(true)));
  });
}

export interface Session {
  pid: number;
  port: number;
  worker: string;
  child: ChildProcess;
  output: () => string;
  exited: Promise<number | null>;
  url: (p: string) => string;
}

export interface SandboxOptions {
  graceMs?: number;
  idleMs?: number;
}

export class Sandbox {
  readonly dir: string;
  readonly project: string;
  readonly persistTo: string;
  readonly registry: string;
  readonly env: NodeJS.ProcessEnv;
  private readonly groups = new Set<number>();
  private readonly sessions: Session[] = [];
  private readonly owners = new Set<number>();

  /** Sandboxes not yet cleaned up, for `cleanUpOnSignal`. */
  static readonly live = new Set<Sandbox>();

  constructor(options: SandboxOptions = {}) {
    Sandbox.live.add(this);
    this.dir = mkdtempSync(path.join(os.tmpdir(), "x-shared-storage-"));
    this.project = path.join(this.dir, "project");
    cpSync(path.join(REPO, "templates"), this.project, {
      recursive: true,
      filter: (src) => !src.includes(`${path.sep}.wrangler`) && !src.includes("node_modules"),
    });
    this.persistTo = path.join(this.dir, "state");
    this.registry = path.join(this.dir, "registry");
    const env: NodeJS.ProcessEnv = {};
    for (const [key, value] of Object.entries(process.env)) {
      if (!key.startsWith("CLOUDFLARE_") && !key.startsWith("WRANGLER_") && !key.startsWith("npm_"))
        env[key] = value;
    }
    this.env = {
      ...env,
      PATH: `${path.dirname(NODE)}${path.delimiter}${process.env.PATH ?? ""}`,
      WRANGLER_SEND_METRICS: "false",
      WRANGLER_SEND_ERROR_REPORTS: "false",
      WRANGLER_REGISTRY_PATH: this.registry,
      XDG_CONFIG_HOME: path.join(this.dir, "config"),
      WRANGLER_LOG_PATH: path.join(this.dir, "logs"),
      WRANGLER_X_OWNER_GRACE_MS: String(options.graceMs ?? 3000),
      WRANGLER_X_OWNER_IDLE_MS: String(options.idleMs ?? 1000),
      CI: "true",
      NO_COLOR: "1",
      FORCE_COLOR: "0",
    };
  }

  get persistRoot(): string {
    return path.join(this.persistTo, "v3");
  }

  workerDir(worker: string): string {
    return path.join(this.project, "workers", worker);
  }

  owner(): OwnerRecord | undefined {
    const standby = readStandby(rootPaths(this.persistRoot));
    if (standby?.ok && isAlive(standby.value)) this.owners.add(standby.value.pid);
    const record = readOwner(rootPaths(this.persistRoot));
    if (record?.ok) {
      // Only a pid the record proves (start time): tests plant records naming unrelated pids.
      if (isAlive(record.value)) this.owners.add(record.value.pid);
      return record.value;
    }
    return undefined;
  }

  /** Any command of ours or of the real wrangler, to completion. */
  async run(
    args: string[],
    options: {
      cwd?: string;
      env?: NodeJS.ProcessEnv;
      bin?: string;
      timeoutMs?: number;
      /** A launcher instead of node and a bin, as for `startSession`. */
      via?: string[];
    } = {},
  ): Promise<{ code: number | null; stdout: string; stderr: string; ms: number }> {
    const started = Date.now();
    const [command, ...launcher] = options.via ?? [NODE, options.bin ?? OUR_BIN];
    const child = spawn(command!, [...launcher, ...args], {
      cwd: options.cwd ?? this.project,
      env: { ...this.env, ...options.env },
      stdio: ["ignore", "pipe", "pipe"],
      detached: true,
    });
    this.groups.add(child.pid!);
    let stdout = "";
    let stderr = "";
    child.stdout!.on("data", (d) => (stdout += d));
    child.stderr!.on("data", (d) => (stderr += d));
    // SIGTERM first: a child that started sandboxes of its own (the bench) cleans them up; then
    // SIGKILL of its group.
    let hardKill: NodeJS.Timeout | undefined;
    const timer = setTimeout(() => {
      killGroup(child.pid!, "SIGTERM");
      hardKill = setTimeout(() => killGroup(child.pid!, "SIGKILL"), 20_000);
    }, options.timeoutMs ?? 120_000);
    const code = await new Promise<number | null>((resolve) => child.on("close", resolve));
    clearTimeout(timer);
    clearTimeout(hardKill);
    this.rememberOwner();
    return { code, stdout, stderr, ms: Date.now() - started };
  }

  async startSession(
    worker: string,
    options: {
      flag?: boolean;
      extraArgs?: string[];
      env?: NodeJS.ProcessEnv;
      wait?: boolean;
      persistTo?: string;
      /** Our bin as another install has it (a fixture project's node_modules/.bin/wrangler). */
      bin?: string;
      /** A launcher instead of node and a bin, e.g. `["/…/pnpm", "exec", "wrangler"]`. */
      via?: string[];
      /** Where to start it (the worker's directory by default). */
      cwd?: string;
    } = {},
  ): Promise<Session> {
    const port = await freePort();
    const [command, ...launcher] = options.via ?? [NODE, options.bin ?? OUR_BIN];
    const args = [
      ...launcher,
      "dev",
      ...(options.flag === false ? [] : ["--x-shared-storage"]),
      "--persist-to",
      options.persistTo ?? this.persistTo,
      "--port",
      String(port),
      "--ip",
      "127.0.0.1",
      "--inspector-port",
      String(await freePort()),
      ...(options.extraArgs ?? []),
    ];
    return this.startProcess(worker, port, args, {
      cwd: options.cwd ?? this.workerDir(worker),
      env: options.env,
      wait: options.wait,
      command,
    });
  }

  /**
   * Any long-running node program that serves the example API on `port` (a `vite dev`, a script),
   * in its own process group, killed with the sandbox.
   */
  async startProcess(
    worker: string,
    port: number,
    args: string[],
    options: {
      cwd: string;
      env?: NodeJS.ProcessEnv;
      wait?: boolean;
      stdin?: boolean;
      /** The program to start (node by default). */
      command?: string;
    },
  ): Promise<Session> {
    const child = spawn(options.command ?? NODE, args, {
      cwd: options.cwd,
      env: { ...this.env, ...options.env },
      stdio: [options.stdin ? "pipe" : "ignore", "pipe", "pipe"],
      detached: true,
    });
    this.groups.add(child.pid!);
    let output = "";
    child.stdout!.on("data", (d) => (output += d));
    child.stderr!.on("data", (d) => (output += d));
    const exited = new Promise<number | null>((resolve) =>
      child.on("close", (code) => resolve(code)),
    );
    const session: Session = {
      pid: child.pid!,
      port,
      worker,
      child,
      output: () => output,
      exited,
      url: (p) => `http://127.0.0.1:${port}${p}`,
    };
    this.sessions.push(session);
    if (options.wait !== false) await this.waitReady(session);
    this.rememberOwner();
    return session;
  }

  async waitReady(session: Session, timeoutMs = 90_000): Promise<void> {
    let exitCode: number | null | undefined;
    void session.exited.then((code) => (exitCode = code));
    await waitFor(
      `${session.worker} on port ${session.port} to answer`,
      async () => {
        if (exitCode !== undefined) {
          throw new Error(
            `session ${session.worker} exited with ${exitCode}:\n${session.output()}`,
          );
        }
        try {
          const response = await fetch(session.url("/whoami"));
          return response.ok;
        } catch {
          return false;
        }
      },
      timeoutMs,
      // Every session start waits here: a refused connect is cheap, a coarser poll is not.
      50,
    );
  }

  /** Ctrl-C, as a person would stop `wrangler dev`; SIGKILL if it does not go. */
  async stopSession(session: Session, timeoutMs = 15_000): Promise<void> {
    killGroup(session.pid, "SIGINT");
    const done = await Promise.race([
      session.exited.then(() => true),
      sleep(timeoutMs).then(() => false),
    ]);
    if (!done) killGroup(session.pid, "SIGKILL");
    await waitFor(
      `session ${session.pid}'s processes to exit`,
      () => groupGone(session.pid),
      10_000,
    );
  }

  async stopAllSessions(): Promise<void> {
    await Promise.all(this.sessions.map((s) => this.stopSession(s)));
  }

  rememberOwner(): void {
    this.owner();
  }

  /**
   * Every process this sandbox started or caused: sessions' groups, and the groups of owners and
   * standbys, found by their records and by the sandbox's own directory in their command line.
   */
  leftovers(): number[] {
    this.rememberOwner();
    for (const pid of procPids()) {
      if (pid !== process.pid && commandLine(pid).includes(`--persist-root ${this.dir}`))
        this.owners.add(pid);
    }
    return [
      ...new Set([...this.groups, ...this.owners].flatMap((pgid) => processGroupMembers(pgid))),
    ];
  }

  /** Waits (bounded) until nothing this sandbox started is running; returns what is left. */
  async settledLeftovers(timeoutMs = 10_000): Promise<number[]> {
    try {
      await waitFor(
        "processes of this test to exit",
        () => this.leftovers().length === 0,
        timeoutMs,
      );
    } catch {
      // reported by the caller's assertion
    }
    return this.leftovers();
  }

  async cleanup(): Promise<void> {
    Sandbox.live.delete(this);
    // Kill in a loop: an owner killed now may have just started a standby.
    await waitFor(
      "no process of this test left",
      () => {
        const left = this.leftovers();
        for (const pgid of [...this.groups, ...this.owners]) killGroup(pgid, "SIGKILL");
        return left.length === 0;
      },
      10_000,
    );
    // X_KEEP_SANDBOX=1 keeps the files (records, logs) of a failing run to look at.
    if (process.env.X_KEEP_SANDBOX) console.log(`kept sandbox ${this.dir}`);
    else rmSync(this.dir, { recursive: true, force: true });
  }
}

export function killGroup(pgid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pgid, signal);
  } catch {
    // already gone
  }
}

export function groupGone(pgid: number): boolean {
  return processGroupMembers(pgid).length === 0;
}

/** pids of processes (by default only workerd ones, which is fast) that have a matching file open. */
/**
 * Every process (whatever its name) with a matching file open, from /proc/<pid>/fd. One walk sees
 * what was open at the moment it read each process; a file opened and closed between two walks is
 * invisible. SQLite keeps a database file open for as long as its connection lives, so a process
 * that serves a database stays visible for as long as it serves it.
 */
export function processesWithOpen(match: (file: string) => boolean): number[] {
  return procPids().filter((pid) => pid !== process.pid && openFiles(pid)?.some(match));
}

/** The per-database D1/KV/R2 files (not the shared metadata.sqlite every instance opens). */
export function isDatabaseFile(persistRoot: string) {
  return (file: string) =>
    file.startsWith(persistRoot + path.sep) &&
    /\/(d1|kv|r2)\//.test(file) &&
    /\/[0-9a-f]{64}\.sqlite$/.test(file);
}

export function parentPid(pid: number): number | undefined {
  return procStat(pid)?.ppid;
}

export async function post(url: string): Promise<{ ok: boolean; status: number; body: string }> {
  try {
    const response = await fetch(url, { method: "POST" });
    return { ok: response.ok, status: response.status, body: await response.text() };
  } catch (error) {
    return { ok: false, status: 0, body: String(error) };
  }
}

export async function getJson<T>(url: string): Promise<T> {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${url}: ${response.status} ${await response.text()}`);
  return (await response.json()) as T;
}

/**
 * A launcher that runs our bin in a mount namespace whose /proc is an empty tmpfs: every process
 * it starts (session, owner, standby, workerd, the CLI) sees no /proc, as on macOS, while the test
 * observes them through the host's. Node by absolute path: without /proc it cannot find itself.
 * Undefined, with the reason, where `unshare -m` is not possible (not root, no namespaces).
 */
export function withoutProc(): { via: string[] } | { skip: string } {
  const script = 'mount -t tmpfs none /proc && exec "$@"';
  const check = spawnSync(
    "unshare",
    ["-m", "sh", "-c", script, "sh", "sh", "-c", "test ! -e /proc/self"],
    {
      encoding: "utf8",
    },
  );
  if (check.error || check.status !== 0)
    return {
      skip: `unshare -m with a tmpfs over /proc failed here (${check.error?.message ?? check.stderr.trim() ?? `exit ${check.status}`})`,
    };
  return { via: ["unshare", "-m", "sh", "-c", script, "sh", NODE, OUR_BIN] };
}

/**
 * For programs that start sandboxes (the bench, the demo): on SIGTERM or SIGINT, clean up every
 * live sandbox (its sessions are detached process groups that would outlive us) and exit.
 */
export function cleanUpOnSignal(): void {
  for (const signal of ["SIGTERM", "SIGINT"] as const) {
    process.once(signal, () => {
      void Promise.allSettled([...Sandbox.live].map((sandbox) => sandbox.cleanup())).finally(() =>
        process.exit(signal === "SIGTERM" ? 143 : 130),
      );
    });
  }
}

/**
 * Remote loopback ports of the established TCP connections that the processes of a group hold
 * (from /proc/net/tcp and each process's fds): which session holds a lifeline to which owner.
 */
export function establishedRemotePorts(pgid: number): number[] {
  return establishedRemotePortsOf(processGroupMembers(pgid));
}

/** Connected (not listening) Unix sockets bound at `file`: accepted pooled connections (Linux). */
export function acceptedConnections(file: string): number {
  return unixSockets().filter((socket) => socket.connected && socket.path === file).length;
}
