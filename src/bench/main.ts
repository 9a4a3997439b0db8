// `npm run bench`: shared storage against plain wrangler and miniflare's own shared storage
// (the oldest session owns), every figure measured for every contender in this one run.
//   npm run bench              full run (several minutes)
//   npm run bench -- --quick   under three minutes
//   npm run bench -- --smoke   one tiny iteration of everything (the test suite runs this)
//   npm run bench -- --profile where the time of a call through the owner goes (profile.ts);
//                              with --quick or --smoke, shorter; writes bench/profile.json
//   --out FILE                 write the JSON there instead of bench/results.json
// Prints a table and writes bench/results.json. Figures are never asserted anywhere.
import { spawn } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { versions } from "../environment.js";
import { failedWindow, steadyLoad, waitForCleanTraffic } from "../harness/load.js";
import {
  killGroup,
  NODE,
  OUR_BIN,
  REAL_BIN,
  REPO,
  Sandbox,
  type Session,
  cleanUpOnSignal,
  sleep,
  waitFor,
} from "../harness/sandbox.js";
import { inspectRoot } from "../owner/inspect.js";
import { ownerGone } from "../owner/lifecycle.js";
import { processGroupMembers } from "../process-info.js";
import { median, percentile, round } from "./stats.js";
import { profile } from "./profile.js";
import { storageRoutes } from "./route.js";

type Contender = "plain" | "upstream" | "ours";
const CONTENDERS: Contender[] = ["plain", "upstream", "ours"];
const LABEL: Record<Contender, string> = {
  plain: "plain wrangler",
  upstream: "miniflare shared",
  ours: "ours",
};

const mode = process.argv.includes("--smoke")
  ? "smoke"
  : process.argv.includes("--quick")
    ? "quick"
    : "full";
const SIZES = {
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
  },
}[mode];
const WORKERS = ["api", "jobs", "admin"];
const workerFor = (i: number) => WORKERS[i % WORKERS.length]!;

function sandboxFor(contender: Contender): Sandbox {
  const sandbox = new Sandbox({ graceMs: 2000, idleMs: 1000 });
  if (contender === "upstream")
    Object.assign(sandbox.env, { WRANGLER_X_BENCH_UPSTREAM_SHARED_STORAGE: "1" });
  return sandbox;
}
const flagFor = (contender: Contender) => contender !== "plain";

const signed = (n: number) => (n >= 0 ? `+${n}` : `${n}`);
const outArg = process.argv.indexOf("--out");
const OUT =
  outArg > 0 && process.argv[outArg + 1]
    ? path.resolve(process.argv[outArg + 1]!)
    : path.join(REPO, "bench", "results.json");
const log = (message: string) =>
  process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${message}\n`);

function rssKiB(pid: number): number {
  try {
    return Number(readFileSync(`/proc/${pid}/status`, "utf8").match(/VmRSS:\s+(\d+)/)?.[1] ?? 0);
  } catch {
    return 0;
  }
}
const groupRssMiB = (pgid: number) =>
  processGroupMembers(pgid).reduce((sum, pid) => sum + rssKiB(pid), 0) / 1024;

async function startSessions(
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

const results: Record<string, unknown> = {};

/** N sessions x M concurrent D1 inserts plus a KV/R2 mix; then reloads; then a kill -9 of the owner. */
async function correctness(contender: Contender) {
  const sandbox = sandboxFor(contender);
  try {
    // Sequential starts so that, for miniflare's own mode, the first session owns storage.
    const sessions = await startSessions(sandbox, contender, SIZES.sessions, true);
    const tag = "burst";
    const mix = Math.ceil(SIZES.inserts / 4);
    const [inserts, others] = await Promise.all([
      Promise.all(
        sessions.flatMap((s) =>
          Array.from({ length: SIZES.inserts }, () =>
            fetchOk(s.url(`/d1/insert?who=${tag}`), "POST"),
          ),
        ),
      ),
      Promise.all(
        sessions.flatMap((s, i) => [
          ...Array.from({ length: mix }, (_, j) => fetchOk(s.url(`/kv/k${i}-${j}`), "PUT", "v")),
          ...Array.from({ length: mix }, (_, j) => fetchOk(s.url(`/r2/o${i}-${j}`), "PUT", "v")),
        ]),
      ),
    ]);
    const outcomes = [...inserts, ...others];
    const failed = outcomes.filter((ok) => !ok).length;
    const okInserts = inserts.filter(Boolean).length;
    const count = await countOf(sessions[0]!, tag);
    const burst = {
      sessionsStarted: sessions.length,
      requests: outcomes.length,
      failed,
      d1SuccessfulInserts: okInserts,
      d1FinalCount: count,
      exact: count === okInserts,
    };
    log(
      `${contender}: burst ${failed}/${outcomes.length} failed, D1 count ${count} vs ${okInserts} acknowledged`,
    );

    // Reloads of the first (for miniflare's own mode: the owning) session under steady load.
    let reload:
      | { reloads: number; requests: number; failed: number; sampleFailure?: string }
      | undefined;
    if (sessions.length >= 2) {
      const edited = sessions[0]!;
      // Sessions of the edited worker reload too (same source); load only the others.
      const others = sessions.filter((s) => s.worker !== edited.worker);
      const source = path.join(sandbox.workerDir(edited.worker), "src", "index.js");
      const original = readFileSync(source, "utf8");
      const load = steadyLoad(others, "reload");
      for (let i = 1; i <= SIZES.reloads; i++) {
        writeFileSync(
          source,
          original.replace(
            `createHandler("${edited.worker}")`,
            `createHandler("${edited.worker}-v${i}")`,
          ),
        );
        await waitFor(
          `reload ${i}`,
          async () => (await whoami(edited)) === `${edited.worker}-v${i}`,
          60_000,
          100,
        );
        await sleep(500);
      }
      await load.stop();
      const failures = load.results.filter((r) => !r.ok);
      reload = {
        reloads: SIZES.reloads,
        requests: load.results.length,
        failed: failures.length,
        sampleFailure: failures[0]?.body,
      };
      log(
        `${contender}: ${reload.failed}/${reload.requests} failed during ${SIZES.reloads} reloads`,
      );
    }

    // kill -9 of the owner's process group under steady load (not for plain: no owner).
    let kill: Record<string, number> | undefined;
    if (contender !== "plain" && sessions.length >= 2) {
      const victim = contender === "ours" ? sandbox.owner()!.pid : sessions[0]!.pid;
      const survivors = contender === "ours" ? sessions : sessions.slice(1);
      const load = steadyLoad(survivors, "kill");
      await sleep(1000);
      const killedAt = Date.now();
      killGroup(victim, "SIGKILL");
      await waitForCleanTraffic(load, killedAt);
      await load.stop();
      const window = failedWindow(load.results, killedAt);
      kill = {
        failed: window.failures,
        succeeded: window.successes,
        windowMs: window.windowMs,
        recoveredAfterMs: window.recoveredAfterMs,
      };
      log(
        `${contender}: kill -9 of the owner: failed window ${window.windowMs} ms (${window.failures} failed)`,
      );
    }
    return { burst, reload, kill };
  } finally {
    await sandbox.cleanup();
  }
}

/**
 * Milliseconds from `since` until the first session prints that it follows a new owner (or
 * elects one): output is polled every 2 ms, so this includes the pipe, not only the detection.
 */
async function firstSessionNotice(sessions: Session[], since: number): Promise<number | undefined> {
  const marks = sessions.map((s) => s.output().length);
  const notice = /storage owner is now pid|is gone; this session takes over/;
  while (Date.now() - since < 30_000) {
    if (sessions.some((s, i) => notice.test(s.output().slice(marks[i])))) return Date.now() - since;
    await sleep(2);
  }
  return undefined;
}

/**
 * kill -9 of our owner 1 s after the sessions are ready (its standby was started beside it, not
 * later), and how long until the first process of ours noticed (the standby's log line).
 */
async function earlyCrash() {
  const sandbox = sandboxFor("ours");
  try {
    const sessions = await startSessions(sandbox, "ours", SIZES.sessions);
    const owner = sandbox.owner()!;
    const load = steadyLoad(sessions, "early");
    await sleep(1000);
    const killedAt = Date.now();
    const sessionNotice = firstSessionNotice(sessions, killedAt);
    killGroup(owner.pid, "SIGKILL");
    await waitForCleanTraffic(load, killedAt);
    await load.stop();
    const window = failedWindow(load.results, killedAt);
    const noticed = readFileSync(owner.logFile, "utf8").match(
      new RegExp(`\\[([^\\]]+)\\] \\w+ \\d+: owner pid ${owner.pid} is gone`),
    )?.[1];
    const detectionMs = noticed ? Date.parse(noticed) - killedAt : undefined;
    const sessionNoticeMs = await sessionNotice;
    log(
      `ours: kill -9 1 s after ready: last failure ${window.recoveredAfterMs} ms after the kill, noticed after ${detectionMs} ms (standby), ${sessionNoticeMs} ms (first session names the new owner)`,
    );

    // Then the new owner's workerd alone (its own standby booted): storage back within 1 s?
    const next = await waitFor(
      "the new owner and its booted standby",
      () => {
        const record = sandbox.owner();
        const standby = inspectRoot(sandbox.persistRoot).owner?.standby;
        return record && record.pid !== owner.pid && standby?.phase === "ready"
          ? record
          : undefined;
      },
      30_000,
    );
    const workerdLoad = steadyLoad(sessions, "workerd");
    await sleep(1000);
    const workerdKilledAt = Date.now();
    process.kill(next.workerd![0]!.pid, "SIGKILL");
    await waitForCleanTraffic(workerdLoad, workerdKilledAt);
    await workerdLoad.stop();
    const workerdWindow = failedWindow(workerdLoad.results, workerdKilledAt);
    log(`ours: owner's workerd killed: last failure ${workerdWindow.recoveredAfterMs} ms after`);
    return {
      failed: window.failures,
      windowMs: window.windowMs,
      recoveredAfterMs: window.recoveredAfterMs,
      detectionMs,
      sessionNoticeMs,
      workerdKilled: {
        failed: workerdWindow.failures,
        recoveredAfterMs: workerdWindow.recoveredAfterMs,
      },
    };
  } finally {
    await sandbox.cleanup();
  }
}

function cpuTicks(pid: number): number {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields = text.slice(text.lastIndexOf(")") + 2).split(" ");
    return Number(fields[11]) + Number(fields[12]); // utime + stime
  } catch {
    return 0;
  }
}

/** CPU-seconds of every process a contender started, over an idle window after start-up. */
async function idleCost(contender: "plain" | "ours") {
  const sandbox = sandboxFor(contender);
  try {
    const sessions = await startSessions(sandbox, contender, 2, true);
    if (contender === "ours") await bootedStandby(sandbox);
    await sleep(2000); // let start-up work settle
    const processes = () => sandbox.leftovers();
    const before = new Map(processes().map((pid) => [pid, cpuTicks(pid)]));
    await sleep(SIZES.idleSeconds * 1000);
    const pids = processes();
    const ticks = pids.reduce((sum, pid) => sum + cpuTicks(pid) - (before.get(pid) ?? 0), 0);
    const cpuSeconds = round(ticks / 100, 2); // USER_HZ is 100 on Linux
    log(`${contender}: idle ${SIZES.idleSeconds} s: ${pids.length} processes, ${cpuSeconds} CPU-s`);
    await Promise.all(sessions.map((s) => sandbox.stopSession(s)));
    return { processes: pids.length, cpuSeconds, seconds: SIZES.idleSeconds };
  } finally {
    await sandbox.cleanup();
  }
}

async function fetchOk(url: string, method: string, body?: string): Promise<boolean> {
  try {
    const response = await fetch(url, { method, body });
    await response.arrayBuffer();
    return response.ok;
  } catch {
    return false;
  }
}
async function whoami(session: Session): Promise<string | undefined> {
  try {
    return ((await (await fetch(session.url("/whoami"))).json()) as { worker: string }).worker;
  } catch {
    return undefined;
  }
}
async function countOf(session: Session, who: string): Promise<number> {
  return ((await (await fetch(session.url(`/d1/count?who=${who}`))).json()) as { count: number })
    .count;
}

/** p50/p95 of single requests through one session, and the memory of what serves them. */
function bootedStandby(sandbox: Sandbox) {
  return waitFor(
    "the standby to be ready",
    () => {
      const booted = inspectRoot(sandbox.persistRoot).owner?.standby;
      return booted?.phase === "ready" ? booted : undefined;
    },
    30_000,
  );
}

/**
 * p50/p95 of single requests through one session of each contender, and the memory of what
 * serves them. All contenders run at once and their samples are interleaved (the order rotating
 * each round), so the load of this shared machine hits all alike and the ratios compare like
 * with like; measured one contender after the other, minutes apart, they moved by ±30 %.
 */
async function latencyAndMemory() {
  const sandboxes = {
    plain: sandboxFor("plain"),
    upstream: sandboxFor("upstream"),
    ours: sandboxFor("ours"),
  };
  try {
    // In miniflare's own mode the first session owns storage; measure a second, non-owning one,
    // whose calls cross processes exactly as every session's calls to our owner do.
    const session: Record<Contender, Session> = {} as Record<Contender, Session>;
    for (const contender of CONTENDERS) {
      const started = await startSessions(
        sandboxes[contender],
        contender,
        contender === "upstream" ? 2 : 1,
        true,
      );
      session[contender] = started[started.length - 1]!;
    }
    // Steady state, as a user works: our standby boots after the first session's workerd, so
    // wait for it (and give every contender the same settling time) before measuring.
    await bootedStandby(sandboxes.ours);
    await sleep(2000);
    const ops: Record<string, (s: Session) => Promise<boolean>> = {
      "KV get": (s) => fetchOk(s.url("/kv/bench"), "GET"),
      "KV put": (s) => fetchOk(s.url("/kv/bench"), "PUT", "value"),
      "D1 insert": (s) => fetchOk(s.url("/d1/insert?who=latency"), "POST"),
      "R2 put": (s) => fetchOk(s.url("/r2/bench"), "PUT", "value"),
    };
    for (const contender of CONTENDERS) await ops["KV put"]!(session[contender]);
    const latency = Object.fromEntries(
      CONTENDERS.map((c) => [
        c,
        {} as Record<string, { p50: number; p95: number; samples: number }>,
      ]),
    ) as Record<Contender, Record<string, { p50: number; p95: number; samples: number }>>;
    for (const [name, op] of Object.entries(ops)) {
      for (const contender of CONTENDERS) for (let i = 0; i < 5; i++) await op(session[contender]); // warm-up
      const samples = Object.fromEntries(CONTENDERS.map((c) => [c, [] as number[]])) as Record<
        Contender,
        number[]
      >;
      for (let i = 0; i < SIZES.latencySamples; i++) {
        for (let k = 0; k < CONTENDERS.length; k++) {
          const contender = CONTENDERS[(i + k) % CONTENDERS.length]!;
          const started = performance.now();
          await op(session[contender]);
          samples[contender].push(performance.now() - started);
        }
      }
      for (const contender of CONTENDERS)
        latency[contender][name] = {
          p50: round(median(samples[contender]), 2),
          p95: round(percentile(samples[contender], 95), 2),
          samples: samples[contender].length,
        };
    }
    const result = {} as Record<
      Contender,
      {
        latency: (typeof latency)[Contender];
        sessionRssMiB: number;
        ownerRssMiB?: number;
        storageRoute?: string;
      }
    >;
    for (const contender of CONTENDERS) {
      const sessionRss = groupRssMiB(session[contender].pid);
      const owner = contender === "ours" ? sandboxes.ours.owner() : undefined;
      // The owner's footprint includes its standby (a second node + workerd), once it is booted.
      const standby = owner ? await bootedStandby(sandboxes.ours) : undefined;
      const ownerRss = owner
        ? groupRssMiB(owner.pid) + (standby?.alive ? groupRssMiB(standby.pid) : 0)
        : undefined;
      log(
        `${contender}: latency ${JSON.stringify(latency[contender])}; session RSS ${round(sessionRss)} MiB${ownerRss ? `, owner RSS ${round(ownerRss)} MiB` : ""}`,
      );
      result[contender] = {
        latency: latency[contender],
        sessionRssMiB: round(sessionRss, 1),
        ownerRssMiB: ownerRss === undefined ? undefined : round(ownerRss, 1),
        storageRoute: contender === "ours" ? storageRoutes(sandboxes.ours.persistRoot) : undefined,
      };
    }
    return result;
  } finally {
    for (const sandbox of Object.values(sandboxes)) await sandbox.cleanup();
  }
}

/** Time to first answer of `wrangler dev`: plain, ours with the owner spawned (cold), ours with it running (warm). */
async function readiness() {
  const timed = async (sandbox: Sandbox, contender: Contender, worker: string) => {
    const started = performance.now();
    const session = await sandbox.startSession(worker, { flag: flagFor(contender) });
    return { ms: performance.now() - started, session };
  };
  const plain: number[] = [];
  const cold: number[] = [];
  const warm: number[] = [];
  const ownerExit: number[] = [];
  let orphans = 0;
  for (let run = 0; run < SIZES.readyRuns; run++) {
    const p = sandboxFor("plain");
    try {
      const { ms, session } = await timed(p, "plain", "api");
      plain.push(ms);
      await p.stopSession(session);
    } finally {
      await p.cleanup();
    }
    const o = sandboxFor("ours");
    try {
      const first = await timed(o, "ours", "api");
      cold.push(first.ms);
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
  };
  log(`ready: ${JSON.stringify(figures)}`);
  return figures;
}

/** Total D1 inserts/s with 2, 4, 8 sessions writing at once (1 session: `singleSessionThroughput`). */
async function scaling(
  contender: "plain" | "ours",
  single: Awaited<ReturnType<typeof singleSessionThroughput>>,
) {
  const rows: { sessions: number; insertsPerSecond: number; failed: number; started: number }[] =
    [];
  for (const count of SIZES.scaling) {
    if (count === 1) {
      rows.push(single[contender]);
      continue;
    }
    const sandbox = sandboxFor(contender);
    try {
      const sessions = await startSessions(sandbox, contender, count);
      const load = steadyLoad(sessions, "scale", 4, 0);
      await sleep(SIZES.scalingSeconds * 1000);
      await load.stop();
      const ok = load.results.filter((r) => r.ok).length;
      rows.push({
        sessions: count,
        started: sessions.length,
        insertsPerSecond: round(ok / SIZES.scalingSeconds),
        failed: load.results.length - ok,
      });
      log(
        `${contender}: ${count} sessions -> ${rows.at(-1)!.insertsPerSecond} inserts/s, ${rows.at(-1)!.failed} failed`,
      );
    } finally {
      await sandbox.cleanup();
    }
  }
  return rows;
}

/**
 * One session's D1 inserts/s, plain against ours: both run at once and take turns in 1 s windows
 * (the order alternating), so both see the same machine; the scaling rows above 1 session are
 * measured one contender after the other.
 */
async function singleSessionThroughput() {
  const sandboxes = { plain: sandboxFor("plain"), ours: sandboxFor("ours") };
  try {
    const session = {
      plain: (await startSessions(sandboxes.plain, "plain", 1))[0]!,
      ours: (await startSessions(sandboxes.ours, "ours", 1))[0]!,
    };
    await bootedStandby(sandboxes.ours);
    await sleep(2000);
    const ok = { plain: 0, ours: 0 };
    const failed = { plain: 0, ours: 0 };
    // Full: 10 windows each (10 s of load per contender); quick: 6; smoke: 1.
    const windows = mode === "smoke" ? 1 : SIZES.scalingSeconds * 2;
    for (let w = 0; w < windows; w++) {
      for (const contender of w % 2 ? (["ours", "plain"] as const) : (["plain", "ours"] as const)) {
        const load = steadyLoad([session[contender]], "scale", 4, 0);
        await sleep(1000);
        await load.stop();
        ok[contender] += load.results.filter((r) => r.ok).length;
        failed[contender] += load.results.filter((r) => !r.ok).length;
      }
    }
    const rows = (["plain", "ours"] as const).map((contender) => ({
      contender,
      sessions: 1,
      started: 1,
      insertsPerSecond: round(ok[contender] / windows),
      failed: failed[contender],
      windows,
    }));
    log(`1 session, interleaved 1 s windows: ${JSON.stringify(rows)}`);
    return { plain: rows[0]!, ours: rows[1]! };
  } finally {
    for (const sandbox of Object.values(sandboxes)) await sandbox.cleanup();
  }
}

/** Wall time and peak memory of a whole command (its process group), sampled every 5 ms. */
async function measureCommand(bin: string, args: string[], env: NodeJS.ProcessEnv) {
  const started = performance.now();
  const child = spawn(NODE, [bin, ...args], {
    cwd: os.tmpdir(),
    env,
    stdio: "ignore",
    detached: true,
  });
  let peak = 0;
  const sampler = setInterval(() => (peak = Math.max(peak, groupRssMiB(child.pid!))), 5);
  const code = await new Promise<number | null>((resolve) => child.on("close", resolve));
  clearInterval(sampler);
  return { ms: performance.now() - started, peakMiB: peak, code };
}

async function passthrough() {
  const sandbox = new Sandbox();
  try {
    const commands = [["--version"], ["d1", "--help"], ["whoami"]];
    const rows: Record<string, unknown>[] = [];
    for (const args of commands) {
      const ours: { ms: number; peakMiB: number }[] = [];
      const real: { ms: number; peakMiB: number }[] = [];
      for (let i = 0; i < SIZES.cliRuns; i++) {
        // Interleaved, so that machine noise hits both alike.
        real.push(await measureCommand(REAL_BIN, args, sandbox.env));
        ours.push(await measureCommand(OUR_BIN, args, sandbox.env));
      }
      const m = (xs: { ms: number; peakMiB: number }[], k: "ms" | "peakMiB") =>
        median(xs.map((x) => x[k]));
      rows.push({
        command: `wrangler ${args.join(" ")}`,
        realMs: round(m(real, "ms")),
        oursMs: round(m(ours, "ms")),
        overheadMs: round(m(ours, "ms") - m(real, "ms")),
        realPeakMiB: round(m(real, "peakMiB"), 1),
        oursPeakMiB: round(m(ours, "peakMiB"), 1),
        overheadMiB: round(m(ours, "peakMiB") - m(real, "peakMiB"), 1),
        runs: SIZES.cliRuns,
      });
      log(`passthrough ${JSON.stringify(rows.at(-1))}`);
    }
    const status: number[] = [];
    const statusJson: number[] = [];
    for (let i = 0; i < SIZES.cliRuns; i++) {
      status.push((await measureCommand(OUR_BIN, ["storage-owner", "status"], sandbox.env)).ms);
      statusJson.push(
        (await measureCommand(OUR_BIN, ["storage-owner", "status", "--json"], sandbox.env)).ms,
      );
    }
    return {
      commands: rows,
      statusMs: round(median(status)),
      statusJsonMs: round(median(statusJson)),
    };
  } finally {
    await sandbox.cleanup();
  }
}

function ratio(a: number | undefined, b: number | undefined): string {
  return a === undefined || b === undefined || !b ? "-" : `${(a / b).toFixed(2)}×`;
}

async function main(): Promise<void> {
  cleanUpOnSignal();
  const startedAt = Date.now();
  if (process.argv.includes("--profile")) {
    const figures = await profile();
    const out = outArg > 0 ? OUT : path.join(REPO, "bench", "profile.json");
    mkdirSync(path.dirname(out), { recursive: true });
    writeFileSync(
      out,
      JSON.stringify(
        { mode, date: new Date().toISOString(), versions: versions(), ...figures },
        null,
        2,
      ) + "\n",
    );
    console.log(`Written to ${out}`);
    return;
  }
  log(`mode ${mode}: ${JSON.stringify(SIZES)}`);
  const correctnessBy: Partial<Record<Contender, Awaited<ReturnType<typeof correctness>>>> = {};
  for (const contender of CONTENDERS) correctnessBy[contender] = await correctness(contender);
  const latencyBy = await latencyAndMemory();
  const ready = await readiness();
  // 1 session: both contenders at once, taking turns; more: one contender after the other.
  const single = await singleSessionThroughput();
  const scalingBy = {
    plain: await scaling("plain", single),
    ours: await scaling("ours", single),
  };
  const early = await earlyCrash();
  const idle = { plain: await idleCost("plain"), ours: await idleCost("ours") };
  const cli = await passthrough();

  Object.assign(results, {
    mode,
    sizes: SIZES,
    durationSeconds: round((Date.now() - startedAt) / 1000),
    date: new Date().toISOString(),
    machine: {
      cpus: os.cpus().length,
      cpuModel: os.cpus()[0]?.model,
      memoryGiB: round(os.totalmem() / 2 ** 30, 1),
      platform: `${os.platform()} ${os.release()}`,
      node: process.version,
    },
    versions: versions(),
    correctness: correctnessBy,
    latency: latencyBy,
    ready,
    scaling: scalingBy,
    earlyCrash: early,
    idle,
    passthrough: cli,
  });
  mkdirSync(path.dirname(OUT), { recursive: true });
  writeFileSync(OUT, JSON.stringify(results, null, 2) + "\n");

  const c = correctnessBy;
  const lines: string[][] = [
    ["figure", LABEL.plain, LABEL.upstream, LABEL.ours, "ours vs plain / goal"],
  ];
  const burst = (k: Contender) => {
    const b = c[k]?.burst;
    return b
      ? `${b.failed}/${b.requests} failed${b.exact ? ", exact" : `, count ${b.d1FinalCount}≠${b.d1SuccessfulInserts}`}`
      : "-";
  };
  lines.push([
    `failed: ${SIZES.sessions} sessions × ${SIZES.inserts} D1 inserts + KV/R2`,
    burst("plain"),
    burst("upstream"),
    burst("ours"),
    "goal 0",
  ]);
  const rel = (k: Contender) =>
    c[k]?.reload ? `${c[k]!.reload!.failed}/${c[k]!.reload!.requests} failed` : "-";
  lines.push([
    `failed during ${SIZES.reloads} reloads of one session`,
    rel("plain"),
    rel("upstream"),
    rel("ours"),
    "goal 0",
  ]);
  const kill = (k: Contender) =>
    c[k]?.kill ? `${c[k]!.kill!.windowMs} ms (${c[k]!.kill!.failed} failed)` : "n/a";
  lines.push([
    "failed window after kill -9 of the owner",
    "n/a",
    kill("upstream"),
    kill("ours"),
    "goal ≤ 500 ms",
  ]);
  lines.push([
    "kill -9 of the owner 1 s after the sessions are ready: last failure",
    "n/a",
    "-",
    `${early.recoveredAfterMs} ms (${early.failed} failed)`,
    "goal ≤ 500 ms",
  ]);
  lines.push([
    "owner's workerd killed alone (standby ready): last failure",
    "n/a",
    "-",
    `${early.workerdKilled.recoveredAfterMs} ms (${early.workerdKilled.failed} failed)`,
    "goal ≤ 1000 ms",
  ]);
  lines.push([
    "failover detection: owner death → standby notices",
    "n/a",
    "-",
    `${early.detectionMs ?? "?"} ms`,
    "event (pipe closed), no polling",
  ]);
  lines.push([
    "failover: owner death → first session routes to the new owner",
    "n/a",
    "-",
    `${early.sessionNoticeMs ?? "?"} ms`,
    "event (lifeline closed), then the standby's takeover",
  ]);
  lines.push([
    `idle CPU-s over ${idle.plain.seconds} s, 2 sessions (processes)`,
    `${idle.plain.cpuSeconds} (${idle.plain.processes})`,
    "-",
    `${idle.ours.cpuSeconds} (${idle.ours.processes}, with owner + standby)`,
    `${ratio(idle.ours.cpuSeconds, idle.plain.cpuSeconds)}, goal ≤ 1.2×`,
  ]);
  for (const op of ["KV get", "KV put", "D1 insert", "R2 put"]) {
    const p = latencyBy.plain.latency[op];
    const u = latencyBy.upstream.latency[op];
    const o = latencyBy.ours.latency[op];
    lines.push([
      `${op} p50 / p95 ms (n=${p?.samples}, interleaved; miniflare shared: a non-owning session; ours: ${latencyBy.ours.storageRoute})`,
      `${p?.p50} / ${p?.p95}`,
      `${u?.p50} / ${u?.p95}`,
      `${o?.p50} / ${o?.p95}`,
      `${ratio(o?.p50, p?.p50)} p50 (${ratio(o?.p95, p?.p95)} p95), goal ≤ 1.10×; ` +
        `+${o && p ? round(o.p50 - p.p50, 2) : "?"} ms: the hop through two workerds (CPU; docs: Where the time goes)`,
    ]);
  }
  lines.push([
    `dev ready ms, median of ${ready.runs}`,
    `${ready.plainMs}`,
    "-",
    `cold ${ready.coldMs}, warm ${ready.warmMs}`,
    `${signed(ready.coldOverPlainMs)} cold (≤ +1000), ${signed(ready.warmOverPlainMs)} warm (≤ +200)`,
  ]);
  lines.push([
    "owner exit after last client leaves",
    "-",
    "-",
    `${ready.ownerExitAfterLastClientMs} ms, ${ready.orphans} orphans`,
    `bound ${ready.ownerExitBoundMs} ms (grace+idle)`,
  ]);
  const ownerRss = latencyBy.ours.ownerRssMiB;
  lines.push([
    "RSS MiB: one plain session / our owner + standby",
    `${latencyBy.plain.sessionRssMiB}`,
    "-",
    `owner ${ownerRss}`,
    `${ratio(ownerRss, latencyBy.plain.sessionRssMiB)}, goal ≤ 1.0×`,
  ]);
  for (const [i, n] of SIZES.scaling.entries()) {
    const p = scalingBy.plain[i];
    const o = scalingBy.ours[i];
    lines.push([
      n === 1
        ? `D1 inserts/s, 1 session (4 loops; interleaved 1 s windows, ${single.ours.windows} each)`
        : `D1 inserts/s, ${n} session(s)`,
      `${p?.insertsPerSecond} (${p?.failed} failed${p && p.started < n ? `, ${n - p.started} died` : ""})`,
      "-",
      `${o?.insertsPerSecond} (${o?.failed} failed)`,
      n === 1
        ? `${ratio(o?.insertsPerSecond, p?.insertsPerSecond)}, goal ≥ 0.95×`
        : ratio(o?.insertsPerSecond, p?.insertsPerSecond),
    ]);
  }
  for (const row of cli.commands as {
    command: string;
    realMs: number;
    oursMs: number;
    overheadMs: number;
    realPeakMiB: number;
    oursPeakMiB: number;
    overheadMiB: number;
  }[]) {
    lines.push([
      `${row.command}: ms / peak MiB (real wrangler in the plain column)`,
      `${row.realMs} / ${row.realPeakMiB}`,
      "-",
      `${row.oursMs} / ${row.oursPeakMiB}`,
      `${signed(row.overheadMs)} ms (≤ +50), ${signed(row.overheadMiB)} MiB (≤ +10)`,
    ]);
  }
  const versionMs = (cli.commands[0] as { realMs: number }).realMs;
  lines.push([
    "storage-owner status ms (--json)",
    "-",
    "-",
    `${cli.statusMs} (${cli.statusJsonMs})`,
    `${ratio(cli.statusMs, versionMs)} of real --version, goal ≤ 300 ms`,
  ]);

  const widths = lines[0]!.map((_, i) => Math.max(...lines.map((l) => l[i]!.length)));
  const table = lines.map((l) =>
    l
      .map((cell, i) => cell.padEnd(widths[i]!))
      .join(" | ")
      .trimEnd(),
  );
  table.splice(1, 0, widths.map((w) => "-".repeat(w)).join("-|-"));
  console.log(
    `\nBench (${mode}) on ${os.cpus().length} cores, node ${process.version}, wrangler ${versions().wrangler}, ${round((Date.now() - startedAt) / 1000)} s\n`,
  );
  console.log(table.join("\n"));
  console.log(`\nWritten to ${OUT}`);
}

await main();
