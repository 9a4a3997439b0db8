// Process identity and liveness. A pid alone is not an identity: pids are reused, so every record
// that names a process also stores when it started, and "alive" means both match.
//
// Three sources, chosen once per process (the first that works):
//   "proc"  Linux: /proc/<pid>/stat (start in clock ticks since boot, state, parent, group).
//   "ps"    macOS, or Linux with WRANGLER_X_PROCESS_INFO=portable: `ps -o stat=,ppid=,pgid=,lstart=`.
//   "none"  neither (no /proc and no working ps): kill(pid, 0) only; nothing is signalled on a pid
//           alone, see `leftoverGroup` for the one proof that needs no process table.
// Records stay comparable across sources: each carries `started` (whole seconds since the epoch,
// what `ps -o lstart=` prints; /proc gives the same value as btime + ticks / 100, which is how
// procps computes lstart) and, where /proc was read, `startTime` (ticks, exact). Ticks are compared
// when both sides have them, else `started`.
import { errnoCode } from "./errors.js";
import { sleep, sleepSync } from "./wait.js";
import { execFileSync } from "node:child_process";
import { readFileSync, readdirSync, readlinkSync } from "node:fs";
import os from "node:os";

export interface ProcessIdentity {
  pid: number;
  /** Start time in clock ticks since boot (field 22 of /proc/<pid>/stat); absent where /proc is not read. */
  startTime?: string;
  /** Start time in whole seconds since the epoch (`ps -o lstart=`; /proc: btime + ticks / 100). */
  started?: string;
  /**
   * Never recorded: the members left in the process group that dead `pid` led (its workerd),
   * from `leftoverGroup`. Signalling it signals the group.
   */
  group?: true;
}

export type InfoSource = "proc" | "ps" | "none";

interface ProcStat {
  state: string;
  ppid: number;
  pgrp: number;
  startTime?: string;
  started: string;
  /** CPU time used so far, user + system, in clock ticks (/proc only). */
  cpuTicks?: number;
}

/** Linux's USER_HZ, the unit of /proc's start times (100 on every architecture Node runs on). */
const CLOCK_TICKS_PER_SECOND = 100;
/** A `ps` that takes longer than this counts as unavailable for that call (the answer "unknown"). */
const PS_TIMEOUT_MS = 3000;
/** How long one `ps` answer about a pid is reused: liveness checks run every 50 ms in loops. */
const PS_ANSWER_TTL_MS = 250;

/**
 * This module's one process-wide cache, as one object: facts fixed for the life of the process
 * (which source works, our own identity, the boot time) and recent `ps` answers, none of them
 * ever stale beyond PS_ANSWER_TTL_MS. Process-wide on purpose: every caller asks about the same
 * process table, and liveness checks run every 50 ms in loops. Filled on first use, never at import.
 */
class ProcessInfoCache {
  source?: InfoSource;
  self?: ProcessIdentity;
  btime?: number;
  readonly answers = new Map<number, { at: number; stat: ProcStat | null | undefined }>();

  /** Forgets everything, for a test that changes WRANGLER_X_PROCESS_INFO within one process. */
  reset(): void {
    this.source = undefined;
    this.self = undefined;
    this.btime = undefined;
    this.answers.clear();
  }
}

const cache = new ProcessInfoCache();
/** For tests: `processInfoCache.reset()`. */
export { cache as processInfoCache };

/** WRANGLER_X_PROCESS_INFO=portable: behave exactly as where there is no /proc. */
export function portableForced(env: NodeJS.ProcessEnv = process.env): boolean {
  return env.WRANGLER_X_PROCESS_INFO === "portable";
}

export function infoSource(): InfoSource {
  if (cache.source === undefined) {
    if (!portableForced() && readProcStat(process.pid) !== undefined) cache.source = "proc";
    else {
      const self = psStat(process.pid);
      cache.source = self ? "ps" : "none";
      if (self) cache.answers.set(process.pid, { at: Date.now(), stat: self });
    }
  }
  return cache.source;
}

function bootSeconds(): number | undefined {
  if (cache.btime === undefined) {
    try {
      cache.btime = Number(/^btime (\d+)$/m.exec(readFileSync("/proc/stat", "utf8"))?.[1]);
    } catch {
      return undefined;
    }
  }
  return Number.isFinite(cache.btime) ? cache.btime : undefined;
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
  const btime = bootSeconds();
  if (
    state === undefined ||
    ppid === undefined ||
    pgrp === undefined ||
    startTime === undefined ||
    btime === undefined
  ) {
    return undefined;
  }
  const started = String(btime + Math.floor(Number(startTime) / CLOCK_TICKS_PER_SECOND));
  const cpuTicks = Number(fields[11]) + Number(fields[12]); // utime + stime
  return { state, ppid: Number(ppid), pgrp: Number(pgrp), startTime, started, cpuTicks };
}

const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/** `ps -o lstart=` as printed with TZ=UTC LC_ALL=C ("Wed Dec  2 04:59:03 2026"): epoch seconds. */
export function parseLstart(text: string): string | undefined {
  const m = /^\w{3}\s+(\w{3})\s+(\d{1,2})\s+(\d{2}):(\d{2}):(\d{2})\s+(\d{4})$/.exec(text.trim());
  const month = m ? MONTHS.indexOf(m[1]!) : -1;
  if (!m || month < 0) return undefined;
  const [day, h, min, s, year] = [m[2], m[3], m[4], m[5], m[6]].map(Number) as number[];
  return String(Date.UTC(year!, month, day!, h!, min!, s!) / 1000);
}

const LSTART = String.raw`(\w{3}\s+\w{3}\s+\d{1,2}\s+\d{2}:\d{2}:\d{2}\s+\d{4})`;

/** One line of `ps -o stat=,ppid=,pgid=,lstart=`. */
export function parsePsStat(line: string): ProcStat | undefined {
  const m = new RegExp(String.raw`^\s*(\S+)\s+(\d+)\s+(\d+)\s+${LSTART}\s*$`).exec(line);
  const started = m ? parseLstart(m[4]!) : undefined;
  if (!m || started === undefined) return undefined;
  // ps prints the state with flags ("Ss", "Sl+", "T"): the first letter is /proc's state.
  return { state: m[1]![0]!, ppid: Number(m[2]), pgrp: Number(m[3]), started };
}

export interface PsProcess {
  pid: number;
  ppid: number;
  state: string;
  started: string;
  command: string;
}

/** `ps -A -o pid=,ppid=,stat=,lstart=,command=`, one process a line; unparsable lines skipped. */
export function parsePsList(text: string): PsProcess[] {
  const line = new RegExp(String.raw`^\s*(\d+)\s+(\d+)\s+(\S+)\s+${LSTART}\s+(.*)$`);
  return text.split("\n").flatMap((row) => {
    const m = line.exec(row);
    const started = m ? parseLstart(m[4]!) : undefined;
    if (!m || started === undefined) return [];
    return [
      { pid: Number(m[1]), ppid: Number(m[2]), state: m[3]![0]!, started, command: m[5]!.trim() },
    ];
  });
}

/** Runs ps; "" when it ran and found nothing (exit 1), undefined when it could not answer. */
function runPs(args: string[]): string | undefined {
  try {
    return execFileSync("ps", args, {
      encoding: "utf8",
      timeout: PS_TIMEOUT_MS,
      stdio: ["ignore", "pipe", "ignore"],
      // Fixed zone and language: every reader turns lstart into the same epoch second.
      env: { ...process.env, TZ: "UTC", LC_ALL: "C" },
    });
  } catch (error) {
    const { status, stdout } = error as { status?: number; stdout?: string };
    return status === 1 && !stdout ? "" : undefined;
  }
}

/** null: no such process; undefined: ps could not say. */
function psStat(pid: number): ProcStat | null | undefined {
  const out = runPs(["-o", "stat=,ppid=,pgid=,lstart=", "-p", String(pid)]);
  if (out === undefined) return undefined;
  if (out.trim() === "") return null;
  return parsePsStat(out.trim().split("\n")[0]!) ?? undefined;
}

/** What the current source says about `pid`: null if it has no such process, undefined if unknown. */
function stat(pid: number): ProcStat | null | undefined {
  const source = infoSource();
  if (source === "proc") return readProcStat(pid) ?? null;
  if (source === "none") return undefined;
  const now = Date.now();
  const cached = cache.answers.get(pid);
  if (cached && now - cached.at < PS_ANSWER_TTL_MS) return cached.stat;
  const answer = psStat(pid);
  if (cache.answers.size > 256) cache.answers.clear();
  cache.answers.set(pid, { at: now, stat: answer });
  return answer;
}

export function hasProcFs(): boolean {
  return infoSource() === "proc";
}

/** /proc's start time in ticks (Linux, for tests and the harness); undefined elsewhere. */
export function readStartTime(pid: number): string | undefined {
  return readProcStat(pid)?.startTime;
}

/** Who `pid` is now, as a record should store it; only the pid where no source can tell. */
export function identityOf(pid: number): ProcessIdentity {
  const found = stat(pid);
  return {
    pid,
    ...(found?.startTime === undefined ? {} : { startTime: found.startTime }),
    ...(found?.started === undefined ? {} : { started: found.started }),
  };
}

export function currentIdentity(): ProcessIdentity {
  cache.self ??= identityOf(process.pid);
  return { ...cache.self };
}

function pidExists(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return errnoCode(error) === "EPERM";
  }
}

/** A process group `pgid` has members we may signal (EPERM: someone else's; treated as none). */
function groupExists(pgid: number): boolean {
  try {
    process.kill(-pgid, 0);
    return true;
  } catch {
    return false;
  }
}

export type Liveness = "alive" | "dead" | "reused";

type Match = "same" | "other" | "unknown";

/** Compares a recorded identity with what the source says now: ticks if both have them, else seconds. */
function compare(identity: ProcessIdentity, now: ProcStat): Match {
  if (identity.startTime !== undefined && now.startTime !== undefined)
    return identity.startTime === now.startTime ? "same" : "other";
  if (identity.started !== undefined) return identity.started === now.started ? "same" : "other";
  return "unknown";
}

/**
 * "reused": the pid exists but belongs to another process than the one recorded. A record that
 * carries no start time the source can compare counts as alive while its pid exists (never as
 * proof: see `signalIfOurs`).
 */
export function liveness(identity: ProcessIdentity): Liveness {
  if (!Number.isInteger(identity.pid) || identity.pid <= 0) return "dead";
  if (identity.group) return groupExists(identity.pid) ? "alive" : "dead";
  // kill(pid, 0) first: a gone pid needs no process table (and no ps spawn).
  if (!pidExists(identity.pid)) return "dead";
  const now = stat(identity.pid);
  if (now === null) return "dead";
  if (now === undefined) return "alive";
  // A zombie has exited; only its parent has not reaped it yet.
  if (now.state === "Z" || now.state === "X") return "dead";
  return compare(identity, now) === "other" ? "reused" : "alive";
}

export function isAlive(identity: ProcessIdentity): boolean {
  return liveness(identity) === "alive";
}

/** Alive and proven to be the process recorded: its start time matches. */
function proven(identity: ProcessIdentity): boolean {
  if (identity.group) return groupExists(identity.pid);
  if (!pidExists(identity.pid)) return false;
  // A signal rests on a fresh answer, never on one up to PS_ANSWER_TTL_MS old.
  cache.answers.delete(identity.pid);
  const now = stat(identity.pid);
  return !!now && now.state !== "Z" && now.state !== "X" && compare(identity, now) === "same";
}

/** True when the process is stopped (SIGSTOP, debugger): alive, but not answering. */
export function isStopped(pid: number): boolean {
  const state = stat(pid)?.state;
  return state === "T" || state === "t";
}

// Linux /proc reads for gc's orphan search, the test harness and the bench. They read the host's
// /proc whatever the source chosen above (callers that must honour it check `hasProcFs()`), and
// answer nothing where there is none.

/** Every pid in /proc; [] where there is no /proc. */
export function procPids(): number[] {
  let entries: string[];
  try {
    entries = readdirSync("/proc");
  } catch {
    return [];
  }
  return entries.map(Number).filter((pid) => Number.isInteger(pid));
}

/** /proc/<pid>/stat's state, parent, group and CPU ticks; undefined when unreadable (gone, no /proc). */
export function procStat(
  pid: number,
): { state: string; ppid: number; pgrp: number; cpuTicks: number } | undefined {
  const found = readProcStat(pid);
  return (
    found && {
      state: found.state,
      ppid: found.ppid,
      pgrp: found.pgrp,
      cpuTicks: found.cpuTicks ?? 0,
    }
  );
}

/** What each of `pid`'s file descriptors points at (/proc/<pid>/fd); undefined when unreadable. */
export function openFiles(pid: number): string[] | undefined {
  let fds: string[];
  try {
    fds = readdirSync(`/proc/${pid}/fd`);
  } catch {
    return undefined;
  }
  return fds.flatMap((fd) => {
    try {
      return [readlinkSync(`/proc/${pid}/fd/${fd}`)];
    } catch {
      return []; // closed while we looked
    }
  });
}

/**
 * CPU time `pid` has spent, all its threads, in ns (the first field of each
 * /proc/<pid>/task/<tid>/schedstat; a thread that ends while we look counts nothing). undefined
 * where it cannot be read: no /proc (macOS, Windows), a kernel without schedstats, or the process gone.
 */
export function cpuTimeNs(pid: number): number | undefined {
  let tids: string[];
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch {
    return undefined;
  }
  let sum = 0;
  let read = 0;
  for (const tid of tids) {
    try {
      const ns = Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, "utf8").split(" ")[0]);
      if (!Number.isFinite(ns)) continue;
      sum += ns;
      read++;
    } catch {
      // the thread ended while we looked
    }
  }
  return read > 0 ? sum : undefined;
}

/** The process's name (/proc/<pid>/comm); undefined where /proc is absent or the process gone. */
export function processName(pid: number): string | undefined {
  try {
    return readFileSync(`/proc/${pid}/comm`, "utf8").trim();
  } catch {
    return undefined;
  }
}

/** Resident memory of `pid` in KiB (VmRSS of /proc/<pid>/status); 0 when unreadable. */
export function rssKiB(pid: number): number {
  try {
    return Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1] ?? 0);
  } catch {
    return 0;
  }
}

/**
 * Remote ports of the established TCP (IPv4) connections that `pids` hold: their socket fds
 * matched against /proc/net/tcp. [] where there is no /proc.
 */
export function establishedRemotePortsOf(pids: number[]): number[] {
  const inodes = new Set<string>();
  for (const pid of pids) {
    for (const target of openFiles(pid) ?? []) {
      const inode = /^socket:\[(\d+)\]$/.exec(target)?.[1];
      if (inode) inodes.add(inode);
    }
  }
  let table: string;
  try {
    table = readFileSync("/proc/net/tcp", "utf8");
  } catch {
    return [];
  }
  const ports: number[] = [];
  for (const line of table.split("\n").slice(1)) {
    const fields = line.trim().split(/\s+/);
    // sl local_address rem_address st … inode (field 9); state 01 is ESTABLISHED.
    if (fields.length < 10 || fields[3] !== "01" || !inodes.has(fields[9]!)) continue;
    ports.push(parseInt(fields[2]!.split(":")[1]!, 16));
  }
  return ports;
}

export interface UnixSocket {
  /** The path it is bound at ("" when unnamed; abstract names start with "@"). */
  path: string;
  /** Connected (an accepted or a connecting end), not listening. */
  connected: boolean;
}

/** The rows of /proc/net/unix: `Num RefCount Protocol Flags Type St Inode [Path]`; St 03 = connected. */
export function parseUnixSockets(table: string): UnixSocket[] {
  return table
    .split("\n")
    .slice(1)
    .flatMap((line) => {
      // Seven fixed fields, then the path, which may itself contain spaces (kept as they are).
      const match = /^\s*(\S+\s+){5}(\S+)\s+\S+(?: (.*))?$/.exec(line);
      if (!match) return [];
      return [{ path: match[3] ?? "", connected: match[2] === "03" }];
    });
}

/** Every Unix socket on the host (/proc/net/unix); [] where there is no /proc. */
export function unixSockets(): UnixSocket[] {
  try {
    return parseUnixSockets(readFileSync("/proc/net/unix", "utf8"));
  } catch {
    return [];
  }
}

/** Every live process whose process group is `pgid`: for the test harness, which started them (Linux). */
export function processGroupMembers(pgid: number): number[] {
  if (readProcStat(process.pid) === undefined) return [];
  return procPids().filter((pid) => {
    const found = readProcStat(pid);
    return found && found.pgrp === pgid && found.state !== "Z";
  });
}

/** A process's command line from /proc; "" where /proc is not read. */
export function commandLine(pid: number): string {
  if (infoSource() !== "proc") return "";
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").join(" ").trim();
  } catch {
    return "";
  }
}

export type SignalOutcome = "signalled" | "gone" | "unproven";

/**
 * The only way this package signals a process it did not start itself in this run: the pid must
 * still carry the start time recorded for it (ticks from /proc or seconds from ps). A record
 * without one, or a source that cannot tell (no /proc, no ps), is never signalled ("unproven"):
 * pids are reused. A `group` identity (from `leftoverGroup`) signals that group.
 */
export function signalIfOurs(identity: ProcessIdentity, signal: NodeJS.Signals): SignalOutcome {
  const state = liveness(identity);
  if (state === "dead") return "gone";
  if (!proven(identity)) return "unproven";
  try {
    process.kill(identity.group ? -identity.pid : identity.pid, signal);
    // Its state changes now (a SIGKILLed process becomes a zombie): ask ps afresh.
    cache.answers.delete(identity.pid);
    return "signalled";
  } catch {
    return "gone"; // exited between the check and the signal
  }
}

/**
 * Where no start time can be checked: signals `pid` only right after `answersAsOurs` proved it
 * (the owner's lifeline answering with its record's token, src/lifeline.ts).
 */
export async function signalIfAnswers(
  pid: number,
  answersAsOurs: () => Promise<boolean>,
  signal: NodeJS.Signals,
): Promise<SignalOutcome> {
  if (!pidExists(pid)) return "gone";
  if (!(await answersAsOurs())) return "unproven";
  try {
    process.kill(pid, signal);
    return "signalled";
  } catch {
    return "gone";
  }
}

/** SIGKILLs each identity proven ours (or, with `dryRun`, only checks); returns the pids it applied to. */
export function killIdentities(identities: ProcessIdentity[], dryRun = false): number[] {
  return identities
    .filter((identity) =>
      dryRun ? proven(identity) : signalIfOurs(identity, "SIGKILL") === "signalled",
    )
    .map((identity) => identity.pid);
}

/** Direct children of `pid` whose command line contains `name`, with their start times. */
export function childProcesses(pid: number, name: string): ProcessIdentity[] {
  const source = infoSource();
  if (source === "ps") {
    const out = runPs(["-A", "-o", "pid=,ppid=,stat=,lstart=,command="]);
    return parsePsList(out ?? "")
      .filter((p) => p.ppid === pid && p.state !== "Z" && p.command.includes(name))
      .map((p) => ({ pid: p.pid, started: p.started }));
  }
  if (source === "none") return [];
  const found: ProcessIdentity[] = [];
  for (const child of procPids()) {
    const s = readProcStat(child);
    if (s?.ppid !== pid || s.state === "Z" || s.state === "X") continue;
    if (commandLine(child).includes(name))
      found.push({ pid: child, startTime: s.startTime, started: s.started });
  }
  return found;
}

/** How recent a dead leader's last sign of life must be for `leftoverGroup` to trust its group. */
const GROUP_TRUST_MS = 30_000;

/**
 * Without any process table ("none"), the workerd of a dead owner is found as the rest of the
 * owner's process group: the owner is a group leader (started detached), workerd stays in its
 * group, and a group's id cannot be taken by a new process while the group has members (POSIX).
 * So while leader `pid` is gone (ESRCH) but its group lives, the members are what it left, unless
 * the pid was reused by another leader that died too since: excluded by requiring the leader's
 * last heartbeat within 30 s and after this boot. Returns undefined in every other case.
 */
export function leftoverGroup(leader: {
  pid: number;
  heartbeatAt: string;
}): ProcessIdentity | undefined {
  if (infoSource() !== "none" || pidExists(leader.pid) || !groupExists(leader.pid))
    return undefined;
  const lastSeen = Date.parse(leader.heartbeatAt);
  const bootedAt = Date.now() - os.uptime() * 1000;
  const recent = Date.now() - lastSeen < GROUP_TRUST_MS && lastSeen > bootedAt;
  return recent ? { pid: leader.pid, group: true } : undefined;
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

/**
 * Waits (bounded) until none of `identities` is alive; a SIGKILLed process takes a moment to exit.
 * A group (no process table) stays visible until its zombies are reaped, by init, which may take a
 * second or two; `groupExited` (e.g. the dead owner's workerd port refusing connections: the
 * kernel closes every file of a process at once when it exits) ends that wait sooner.
 */
export async function waitUntilGone(
  identities: ProcessIdentity[],
  timeoutMs = 2000,
  groupExited?: () => Promise<boolean>,
): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  let groupsGone = false;
  const alive = (identity: ProcessIdentity) =>
    !(identity.group && groupsGone) && liveness(identity) === "alive";
  while (identities.some(alive)) {
    if (Date.now() > deadline) return false;
    await sleep(10);
    if (groupExited && identities.some((i) => i.group)) groupsGone = await groupExited();
  }
  return true;
}
