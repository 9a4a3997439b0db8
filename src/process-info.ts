// Process identity and liveness. A pid alone is not an identity: pids are reused, so every record
// that names a process also stores the kernel's start time for it, and "alive" means both match.
import { readFileSync, readdirSync } from "node:fs";

export interface ProcessIdentity {
  pid: number;
  /** Start time in clock ticks since boot (field 22 of /proc/<pid>/stat); absent where /proc is not. */
  startTime?: string;
}

interface ProcStat {
  state: string;
  ppid: number;
  pgrp: number;
  startTime: string;
}

function readProcStat(pid: number): ProcStat | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, "utf8");
  } catch {
    return undefined;
  }
  // The command name may contain spaces and parentheses; fields resume after the last ')'.
  const fields = text.slice(text.lastIndexOf(")") + 2).split(" ");
  const [state, ppid, pgrp] = fields;
  const startTime = fields[19];
  if (state === undefined || ppid === undefined || pgrp === undefined || startTime === undefined) {
    return undefined;
  }
  return { state, ppid: Number(ppid), pgrp: Number(pgrp), startTime };
}

export function hasProcFs(): boolean {
  return readProcStat(process.pid) !== undefined;
}

export function readStartTime(pid: number): string | undefined {
  return readProcStat(pid)?.startTime;
}

export function currentIdentity(): ProcessIdentity {
  return { pid: process.pid, startTime: readStartTime(process.pid) };
}

function pidExists(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}

export type Liveness = "alive" | "dead" | "reused";

/** "reused": the pid exists but belongs to another process than the one recorded. */
export function liveness(identity: ProcessIdentity): Liveness {
  if (!Number.isInteger(identity.pid) || identity.pid <= 0) return "dead";
  const stat = readProcStat(identity.pid);
  if (stat === undefined) return pidExists(identity.pid) && !hasProcFs() ? "alive" : "dead";
  // A zombie has exited; only its parent has not reaped it yet.
  if (stat.state === "Z" || stat.state === "X") return "dead";
  if (identity.startTime !== undefined && stat.startTime !== identity.startTime) return "reused";
  return "alive";
}

export function isAlive(identity: ProcessIdentity): boolean {
  return liveness(identity) === "alive";
}

/** True when the process is stopped (SIGSTOP, debugger): alive, but not answering. */
export function isStopped(pid: number): boolean {
  const state = readProcStat(pid)?.state;
  return state === "T" || state === "t";
}

/** Every live process whose process group is `pgid`: for the test harness, which started them. */
export function processGroupMembers(pgid: number): number[] {
  if (!hasProcFs()) return [];
  const members: number[] = [];
  for (const entry of readdirSync("/proc")) {
    const pid = Number(entry);
    if (!Number.isInteger(pid)) continue;
    const stat = readProcStat(pid);
    if (stat && stat.pgrp === pgid && stat.state !== "Z") members.push(pid);
  }
  return members;
}

export function commandLine(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").join(" ").trim();
  } catch {
    return "";
  }
}

export type SignalOutcome = "signalled" | "gone" | "unproven";

/**
 * The only way this package signals a process it did not start itself in this run: the pid must
 * still carry the kernel start time that was recorded for it. A pid without a recorded start
 * time, or on a system without /proc, is never signalled ("unproven"): pids are reused.
 */
export function signalIfOurs(identity: ProcessIdentity, signal: NodeJS.Signals): SignalOutcome {
  if (identity.startTime === undefined || !hasProcFs()) return "unproven";
  const state = liveness(identity);
  if (state === "reused") return "unproven";
  if (state === "dead") return "gone";
  try {
    process.kill(identity.pid, signal);
    return "signalled";
  } catch {
    return "gone"; // exited between the check and the signal
  }
}

/** SIGKILLs each identity proven ours (or, with `dryRun`, only checks); returns the pids it applied to. */
export function killIdentities(identities: ProcessIdentity[], dryRun = false): number[] {
  return identities
    .filter((identity) =>
      dryRun
        ? identity.startTime !== undefined && liveness(identity) === "alive"
        : signalIfOurs(identity, "SIGKILL") === "signalled",
    )
    .map((identity) => identity.pid);
}

/** Direct children of `pid` whose command line contains `name`, with their start times. */
export function childProcesses(pid: number, name: string): ProcessIdentity[] {
  if (!hasProcFs()) return [];
  const found: ProcessIdentity[] = [];
  for (const entry of readdirSync("/proc")) {
    const child = Number(entry);
    if (!Number.isInteger(child)) continue;
    const stat = readProcStat(child);
    if (stat?.ppid !== pid || stat.state === "Z" || stat.state === "X") continue;
    if (commandLine(child).includes(name)) found.push({ pid: child, startTime: stat.startTime });
  }
  return found;
}

/** Blocks the thread: for the preload's election, which runs before wrangler builds its Miniflare. */
export function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/** The same, synchronously: for the election, which runs before wrangler builds its Miniflare. */
export function waitUntilGoneSync(identities: ProcessIdentity[], timeoutMs = 2000): boolean {
  const deadline = Date.now() + timeoutMs;
  while (identities.some((identity) => liveness(identity) === "alive")) {
    if (Date.now() > deadline) return false;
    sleepSync(10);
  }
  return true;
}

/** Waits (bounded) until none of `identities` is alive; a SIGKILLed process takes a moment to exit. */
export async function waitUntilGone(
  identities: ProcessIdentity[],
  timeoutMs = 2000,
): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (identities.some((identity) => liveness(identity) === "alive")) {
    if (Date.now() > deadline) return false;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  return true;
}
