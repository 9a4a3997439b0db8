// The table `npm run bench` prints: one row per figure, one column per contender, and the
// ratio of ours to plain beside the goal.
import os from "node:os";
import type { Sizes } from "./context.js";
import { LABEL, type Contender } from "./context.js";
import type { cacheLoad } from "./scenarios/cache.js";
import type { correctness } from "./scenarios/correctness.js";
import type { earlyCrash } from "./scenarios/early-crash.js";
import type { idleCost } from "./scenarios/idle.js";
import type { latencyAndMemory } from "./scenarios/latency.js";
import type { passthrough } from "./scenarios/passthrough.js";
import type { readiness } from "./scenarios/readiness.js";
import type { scaling, singleSessionThroughput } from "./scenarios/throughput.js";
import { round } from "./stats.js";

export interface Figures {
  correctness: Partial<Record<Contender, Awaited<ReturnType<typeof correctness>>>>;
  cache: Awaited<ReturnType<typeof cacheLoad>>;
  latency: Awaited<ReturnType<typeof latencyAndMemory>>;
  ready: Awaited<ReturnType<typeof readiness>>;
  single: Awaited<ReturnType<typeof singleSessionThroughput>>;
  scaling: Record<"plain" | "ours", Awaited<ReturnType<typeof scaling>>>;
  earlyCrash: Awaited<ReturnType<typeof earlyCrash>>;
  idle: Record<"plain" | "ours", Awaited<ReturnType<typeof idleCost>>>;
  passthrough: Awaited<ReturnType<typeof passthrough>>;
}

const perInsert = (cpu: Record<string, number>) =>
  Object.entries(cpu)
    .map(([label, ms]) => `${label} ${ms}`)
    .join(", ");

const signed = (n: number) => (n >= 0 ? `+${n}` : `${n}`);

export function ratio(a: number | undefined, b: number | undefined): string {
  return a === undefined || b === undefined || !b ? "-" : `${(a / b).toFixed(2)}×`;
}

type Latency = { p50: number; p95: number } | undefined;
const sumOf = (cpu: Record<string, number>, prefix: string) =>
  round(
    Object.entries(cpu)
      .filter(([label]) => label.startsWith(prefix))
      .reduce((sum, [, ms]) => sum + ms, 0),
    2,
  );

/** Ours against plain beside the issue's goal (1.05×) and floor (1.10×); a miss says what it costs. */
function latencyVerdict(o: Latency, p: Latency, cpu: Record<string, number> | undefined): string {
  const verdict = `${ratio(o?.p50, p?.p50)} p50 (${ratio(o?.p95, p?.p95)} p95), goal ≤ 1.05× (floor 1.10×)`;
  if (!o || !p || o.p50 <= p.p50 * 1.05) return verdict;
  const extra = `+${round(o.p50 - p.p50, 2)} ms p50`;
  if (!cpu) return `${verdict}; ${extra}`;
  // CPU-ms per call, measured over the same interleaved samples (bench/cpu.ts).
  return (
    `${verdict}; ${extra}: CPU/call session ${sumOf(cpu, "ours session")} vs plain ` +
    `${sumOf(cpu, "plain session")}, owner workerd ${sumOf(cpu, "ours owner workerd")}, owner node ${sumOf(cpu, "ours owner node")} ms`
  );
}

/**
 * Where the first session's cold start goes, measured (ms): the session's own output (see
 * readiness.ts `coldSplit`) and the owner log's phases. The owner starts at the preload, beside
 * wrangler's own start; what the session adds over plain is any wait for it to serve beyond that.
 */
function coldCost(ready: Figures["ready"]): string {
  const split = ready.coldSplitMs;
  const phases = ready.coldPhasesMs;
  const owner = phases
    ? ` (owner's node loads ${phases.ownerLoadMs}, its miniflare serves after ${phases.ownerMiniflareMs}: ` +
      `require ${phases.miniflareRequireMs}, workerd ${phases.workerdReadyMs})`
    : "";
  if (!split) return phases ? `; cold: owner${owner}` : "";
  return (
    `; cold, ms from spawn: owner started at ${split.ownerStartedMs}${owner}, ` +
    `the session's Miniflare found it serving at ${split.servedMs}, "Ready on" at ${split.readyLineMs}` +
    (ready.plainReadyLineMs === undefined ? "" : ` (plain's at ${ready.plainReadyLineMs})`) +
    `, first answer at ${split.answeredMs}`
  );
}

/** The readiness rows: ours' cold and warm start against plain, and the owner's exit. */
export function readyRows(ready: Figures["ready"]): string[][] {
  return [
    [
      `dev ready ms, median of ${ready.runs}`,
      `${ready.plainMs}`,
      "-",
      `cold ${ready.coldMs}, warm ${ready.warmMs}`,
      `${signed(ready.coldOverPlainMs)} cold (goal ≤ +500), ${signed(ready.warmOverPlainMs)} warm (≤ +200)` +
        coldCost(ready),
    ],
    [
      "owner exit after last client leaves",
      "-",
      "-",
      `${ready.ownerExitAfterLastClientMs} ms, ${ready.orphans} orphans`,
      `bound ${ready.ownerExitBoundMs} ms (grace+idle)`,
    ],
  ];
}

export const HEADER = ["figure", LABEL.plain, LABEL.upstream, LABEL.ours, "ours vs plain / goal"];

export function reportTable(sizes: Sizes, figures: Figures): string {
  const {
    correctness: correctnessBy,
    cache,
    latency: latencyBy,
    ready,
    single,
    scaling: scalingBy,
    earlyCrash: early,
    idle,
    passthrough: cli,
  } = figures;
  const c = correctnessBy;
  const lines: string[][] = [HEADER];
  const burst = (k: Contender) => {
    const b = c[k]?.burst;
    return b
      ? `${b.failed}/${b.requests} failed${b.exact ? ", exact" : `, count ${b.d1FinalCount}≠${b.d1SuccessfulInserts}`}`
      : "-";
  };
  lines.push([
    `failed: ${sizes.sessions} sessions × ${sizes.inserts} D1 inserts + KV/R2`,
    burst("plain"),
    burst("upstream"),
    burst("ours"),
    "goal 0",
  ]);
  const found = (k: "plain" | "ours") =>
    `${cache[k].found.join(", ")} of ${cache[k].foundOf} (${cache[k].putFailed} puts failed)`;
  lines.push([
    `cache: 2 workers' sessions × ${sizes.cacheOps} concurrent puts, entries found from each session`,
    found("plain"),
    "-",
    found("ours"),
    `goal ${cache.ours.foundOf} of ${cache.ours.foundOf}`,
  ]);
  const mixed = (k: "plain" | "ours") =>
    `${cache[k].mixedFailed}/${cache[k].mixedRounds} failed, p50 ${cache[k].roundP50Ms} / p95 ${cache[k].roundP95Ms} ms`;
  lines.push([
    `cache: 2 × ${sizes.cacheOps} concurrent put/match/delete rounds: failed, round ms in the worker`,
    mixed("plain"),
    "-",
    mixed("ours"),
    `goal 0 failed; p50 ${ratio(cache.ours.roundP50Ms, cache.plain.roundP50Ms)}`,
  ]);
  const rel = (k: Contender) =>
    c[k]?.reload ? `${c[k]!.reload!.failed}/${c[k]!.reload!.requests} failed` : "-";
  lines.push([
    `failed during ${sizes.reloads} reloads of one session`,
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
    `idle CPU-s over ${idle.plain.seconds} s from ready (start-up GCs included), 2 sessions (processes)`,
    `${idle.plain.cpuSeconds} (${idle.plain.processes})`,
    "-",
    `${idle.ours.cpuSeconds} (${idle.ours.processes}, with owner + standby)`,
    `${ratio(idle.ours.cpuSeconds, idle.plain.cpuSeconds)}, goal ≤ 1.2×` +
      (idle.ours.cpuSeconds > idle.plain.cpuSeconds * 1.2
        ? `; CPU-s by role: ${Object.entries(idle.ours.byRole)
            .map(([role, s]) => `${role} ${s}`)
            .join(", ")} (plain: ${Object.entries(idle.plain.byRole)
            .map(([role, s]) => `${role} ${s}`)
            .join(", ")})`
        : ""),
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
      latencyVerdict(o, p, latencyBy.ours.cpuPerCallMs?.[op]),
    ]);
  }
  lines.push(...readyRows(ready));
  const ownerRss = latencyBy.ours.ownerRssMiB;
  lines.push([
    "RSS MiB: one plain session / our owner + standby",
    `${latencyBy.plain.sessionRssMiB}`,
    "-",
    `owner ${ownerRss}`,
    `${ratio(ownerRss, latencyBy.plain.sessionRssMiB)}, goal ≤ 1.0×`,
  ]);
  for (const [i, n] of sizes.scaling.entries()) {
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
        ? `${ratio(o?.insertsPerSecond, p?.insertsPerSecond)}, goal ≥ 0.95×` +
          (o && p && o.insertsPerSecond < p.insertsPerSecond * 0.95
            ? `; CPU-ms per insert: ${perInsert(single.ours.cpuPerInsertMs)} (plain: ${perInsert(single.plain.cpuPerInsertMs)}) on ${os.cpus().length} cores`
            : "")
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

  return formatTable(lines);
}

/** Rows as a padded text table, the first row the header. */
export function formatTable(lines: string[][]): string {
  const widths = lines[0]!.map((_, i) => Math.max(...lines.map((l) => l[i]!.length)));
  const table = lines.map((l) =>
    l
      .map((cell, i) => cell.padEnd(widths[i]!))
      .join(" | ")
      .trimEnd(),
  );
  table.splice(1, 0, widths.map((w) => "-".repeat(w)).join("-|-"));
  return table.join("\n");
}
