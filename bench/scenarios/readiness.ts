// Time to the first answer of `wrangler dev`, cold and warm, and the owner's exit after the last session.
import { readFileSync } from "node:fs";
import { ownerGone } from "../../src/owner/assessment.js";
import { type Sandbox, type Session, waitFor } from "../../test/harness/sandbox.js";
import { median, round } from "../stats.js";
import { type Bench, type Contender, flagFor, sandboxFor } from "../context.js";

/**
 * Where a cold start's time went, ms from the session's spawn, from the owner log's timestamps:
 * when the owner program was spawned (the session's own start and election before it), how long
 * its node took to load our code, its miniflare to serve, and the session after that.
 */
function coldPhases(logFile: string, spawnedAt: number, readyAt: number) {
  let text = "";
  try {
    text = readFileSync(logFile, "utf8");
  } catch {
    return undefined;
  }
  const at = (pattern: RegExp) => {
    const line = text.split("\n").find((l) => pattern.test(l));
    const stamp = line && /^\[([^\]]+)\]/.exec(line)?.[1];
    return stamp ? { time: Date.parse(stamp), line } : undefined;
  };
  const starting = at(/ owner \d+: starting for /);
  const serving = at(/ owner \d+: serving storage at /);
  if (!starting || !serving) return undefined;
  const upMs = Number(/process up (\d+) ms/.exec(starting.line)?.[1] ?? 0);
  // The owner logs how long requiring miniflare took, and its workerd's start after that.
  const split = /miniflare loaded in (\d+) ms, its workerd ready (\d+) ms later/.exec(text);
  return {
    ownerSpawnedMs: starting.time - upMs - spawnedAt,
    ownerLoadMs: upMs,
    ownerMiniflareMs: serving.time - starting.time,
    miniflareRequireMs: split ? Number(split[1]) : -1,
    workerdReadyMs: split ? Number(split[2]) : -1,
    sessionAfterServingMs: readyAt - serving.time,
  };
}

/** What a session's output says, and when it said it (ms from `since`): the first line of each. */
const MARKS = {
  /** The owner was started (by the head start at the preload, else by the session's election). */
  ownerStarted: /started storage owner pid \d+/,
  /** The owner serves: the session's election returned, its own Miniflare starts. */
  served: /storage for .* is served by owner pid/,
  /** wrangler's "Ready on": the session's Miniflare is ready (requests are held until then). */
  ready: /Ready on /,
};
type Marks = Partial<Record<keyof typeof MARKS, number>>;

function watchMarks(session: Session, since: number): Marks {
  const marks: Marks = {};
  const look = (chunk: Buffer) => {
    const now = performance.now() - since;
    const text = chunk.toString();
    for (const [name, pattern] of Object.entries(MARKS) as [keyof typeof MARKS, RegExp][])
      if (marks[name] === undefined && pattern.test(text)) marks[name] = now;
  };
  session.child.stdout?.on("data", look);
  session.child.stderr?.on("data", look);
  return marks;
}

/**
 * The first session's cold start as its output shows it, ms from its spawn: the owner started
 * (the head start, at the preload: src/dev/head-start.ts), the session's Miniflare found it
 * serving (its election returned), wrangler's "Ready on", the first answer.
 */
function coldSplit(marks: Marks, answeredMs: number) {
  const { ownerStarted, served, ready } = marks;
  if (ownerStarted === undefined || served === undefined || ready === undefined) return undefined;
  return {
    ownerStartedMs: ownerStarted,
    servedMs: served,
    readyLineMs: ready,
    answeredMs,
  };
}

/** Time to first answer of `wrangler dev`: plain, ours with the owner spawned (cold), ours with it running (warm). */
export async function readiness(bench: Bench) {
  const timed = async (sandbox: Sandbox, contender: Contender, worker: string) => {
    const spawnedAt = Date.now();
    const started = performance.now();
    const session = await sandbox.startSession(worker, { flag: flagFor(contender), wait: false });
    const marks = watchMarks(session, started);
    await sandbox.waitReady(session);
    sandbox.rememberOwner();
    const ms = performance.now() - started;
    return { ms, session, spawnedAt, readyAt: Date.now(), marks };
  };
  const splits: NonNullable<ReturnType<typeof coldSplit>>[] = [];
  const plainReadyLine: number[] = [];
  const phases: NonNullable<ReturnType<typeof coldPhases>>[] = [];
  const plain: number[] = [];
  const cold: number[] = [];
  const warm: number[] = [];
  const ownerExit: number[] = [];
  let orphans = 0;
  for (let run = 0; run < bench.sizes.readyRuns; run++) {
    const p = sandboxFor("plain");
    try {
      const { ms, session, marks } = await timed(p, "plain", "api");
      plain.push(ms);
      if (marks.ready !== undefined) plainReadyLine.push(marks.ready);
      await p.stopSession(session);
    } finally {
      await p.cleanup();
    }
    const o = sandboxFor("ours");
    try {
      const first = await timed(o, "ours", "api");
      cold.push(first.ms);
      const phase = coldPhases(o.owner()!.logFile, first.spawnedAt, first.readyAt);
      if (phase) phases.push(phase);
      const split = coldSplit(first.marks, first.ms);
      if (split) splits.push(split);
      const second = await timed(o, "ours", "jobs");
      warm.push(second.ms);
      const owner = o.owner()!;
      await o.stopSession(second.session);
      await o.stopSession(first.session);
      const stoppedAt = performance.now();
      await waitFor("the owner to exit", () => ownerGone(owner), 30_000, 20);
      ownerExit.push(performance.now() - stoppedAt);
      orphans += (await o.settledLeftovers(2000)).length;
    } finally {
      await o.cleanup();
    }
  }
  const figures = {
    plainMs: round(median(plain)),
    coldMs: round(median(cold)),
    warmMs: round(median(warm)),
    coldOverPlainMs: round(median(cold) - median(plain)),
    warmOverPlainMs: round(median(warm) - median(plain)),
    runs: plain.length,
    ownerExitAfterLastClientMs: round(median(ownerExit)),
    ownerExitBoundMs: 2000 + 1000,
    orphans,
    coldPhasesMs: medians(phases),
    /** From the cold session's own output (ms): see `coldSplit`. */
    coldSplitMs: medians(splits),
    /** Plain's "Ready on", ms from spawn: its whole start, for the cold split to compare with. */
    plainReadyLineMs: plainReadyLine.length ? round(median(plainReadyLine)) : undefined,
  };
  bench.log(`ready: ${JSON.stringify(figures)}`);
  return figures;
}

/** Per key, the median over samples of the same shape; undefined with none. */
function medians<T extends Record<string, number>>(samples: T[]): T | undefined {
  if (samples.length === 0) return undefined;
  return Object.fromEntries(
    Object.keys(samples[0]!).map((k) => [k, round(median(samples.map((s) => s[k]!)))]),
  ) as T;
}
