// What every bench scenario shares: the contenders, the sizes of each mode, and the sessions,
// requests and process figures they are measured with.
import { inspectRoot } from "../src/owner/inspect.js";
import { processGroupMembers, procStat, rssKiB } from "../src/process-info.js";
import { Sandbox, type Session, waitFor } from "../test/harness/sandbox.js";

export type Contender = "plain" | "upstream" | "ours";
export const CONTENDERS: Contender[] = ["plain", "upstream", "ours"];
export const LABEL: Record<Contender, string> = {
  plain: "plain wrangler",
  upstream: "miniflare shared",
  ours: "ours",
};

export type Mode = "full" | "quick" | "smoke";
export const SIZES = {
  full: {
    sessions: 4,
    inserts: 100,
    reloads: 10,
    latencySamples: 300,
    readyRuns: 5,
    scaling: [1, 2, 4, 8],
    scalingSeconds: 5,
    cliRuns: 7,
    idleSeconds: 30,
    cacheOps: 100,
  },
  quick: {
    sessions: 3,
    inserts: 60,
    reloads: 3,
    latencySamples: 100,
    readyRuns: 2,
    scaling: [1, 2, 4],
    scalingSeconds: 3,
    cliRuns: 5,
    idleSeconds: 15,
    cacheOps: 100,
  },
  smoke: {
    sessions: 2,
    inserts: 5,
    reloads: 1,
    latencySamples: 5,
    readyRuns: 1,
    scaling: [1, 2],
    scalingSeconds: 1,
    cliRuns: 1,
    idleSeconds: 2,
    cacheOps: 10,
  },
};
export type Sizes = (typeof SIZES)[Mode];

/** One run of the bench: its mode, the sizes that mode gives, and its log on stderr. */
export interface Bench {
  mode: Mode;
  sizes: Sizes;
  log(message: string): void;
}

const WORKERS = ["api", "jobs", "admin"];
export const workerFor = (i: number) => WORKERS[i % WORKERS.length]!;

export function sandboxFor(contender: Contender): Sandbox {
  const sandbox = new Sandbox({ graceMs: 2000, idleMs: 1000 });
  if (contender === "upstream")
    Object.assign(sandbox.env, { WRANGLER_X_BENCH_UPSTREAM_SHARED_STORAGE: "1" });
  return sandbox;
}
export const flagFor = (contender: Contender) => contender !== "plain";

export const groupRssMiB = (pgid: number) =>
  processGroupMembers(pgid).reduce((sum, pid) => sum + rssKiB(pid), 0) / 1024;

export async function startSessions(
  sandbox: Sandbox,
  contender: Contender,
  count: number,
  sequential = false,
): Promise<Session[]> {
  if (sequential) {
    const sessions: Session[] = [];
    for (let i = 0; i < count; i++)
      sessions.push(await sandbox.startSession(workerFor(i), { flag: flagFor(contender) }));
    return sessions;
  }
  // Plain sessions started together can die at startup (SQLITE_BUSY while migrating metadata):
  // count those as failed sessions rather than abort the bench.
  const settled = await Promise.allSettled(
    Array.from({ length: count }, (_, i) =>
      sandbox.startSession(workerFor(i), { flag: flagFor(contender) }),
    ),
  );
  return settled.flatMap((s) => (s.status === "fulfilled" ? [s.value] : []));
}

export const cpuTicks = (pid: number): number => procStat(pid)?.cpuTicks ?? 0;

export async function fetchOk(url: string, method: string, body?: string): Promise<boolean> {
  try {
    const response = await fetch(url, { method, body });
    await response.arrayBuffer();
    return response.ok;
  } catch {
    return false;
  }
}
export async function whoami(session: Session): Promise<string | undefined> {
  try {
    return ((await (await fetch(session.url("/whoami"))).json()) as { worker: string }).worker;
  } catch {
    return undefined;
  }
}
export async function countOf(session: Session, who: string): Promise<number> {
  return ((await (await fetch(session.url(`/d1/count?who=${who}`))).json()) as { count: number })
    .count;
}

/** The standby of our owner, once its workerd is up (the steady state a user works in). */
export function bootedStandby(sandbox: Sandbox) {
  return waitFor(
    "the standby to be ready",
    () => {
      const booted = inspectRoot(sandbox.persistRoot).owner?.standby;
      return booted?.phase === "ready" ? booted : undefined;
    },
    30_000,
  );
}
