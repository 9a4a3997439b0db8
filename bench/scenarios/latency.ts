// p50/p95 of single storage requests, all contenders interleaved, and the memory behind them.
import { sleep, type Session } from "../../test/harness/sandbox.js";
import { storageRoutes } from "../route.js";
import { median, percentile, round } from "../stats.js";
import { cpuDuring, processesOf } from "../cpu.js";
import {
  type Bench,
  bootedStandby,
  type Contender,
  CONTENDERS,
  fetchOk,
  groupRssMiB,
  sandboxFor,
  startSessions,
} from "../context.js";

/**
 * p50/p95 of single requests through one session of each contender, and the memory of what
 * serves them. All contenders run at once and their samples are interleaved (the order rotating
 * each round), so the load of this shared machine hits all alike and the ratios compare like
 * with like; measured one contender after the other, minutes apart, they moved by ±30 %.
 */
export async function latencyAndMemory(bench: Bench) {
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
    // Who spends the CPU of a call: plain's session, our session and our owner (its workerd
    // serves the pooled sockets, its node is idle unless the proxy path is taken).
    const roles = processesOf({
      "plain session": session.plain.pid,
      "ours session": session.ours.pid,
      "ours owner": sandboxes.ours.owner()?.pid,
    });
    const cpuPerCallMs: Record<string, Record<string, number>> = {};
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
      // CPU of each process while the interleaved samples ran, per call of its contender.
      const spent = await cpuDuring(roles, async () => {
        for (let i = 0; i < bench.sizes.latencySamples; i++) {
          for (let k = 0; k < CONTENDERS.length; k++) {
            const contender = CONTENDERS[(i + k) % CONTENDERS.length]!;
            const started = performance.now();
            await op(session[contender]);
            samples[contender].push(performance.now() - started);
          }
        }
      });
      cpuPerCallMs[name] = Object.fromEntries(
        Object.entries(spent).map(([label, ms]) => [
          label,
          round(ms / bench.sizes.latencySamples, 3),
        ]),
      );
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
        cpuPerCallMs?: typeof cpuPerCallMs;
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
      bench.log(
        `${contender}: latency ${JSON.stringify(latency[contender])}; session RSS ${round(sessionRss)} MiB${ownerRss ? `, owner RSS ${round(ownerRss)} MiB` : ""}`,
      );
      result[contender] = {
        latency: latency[contender],
        sessionRssMiB: round(sessionRss, 1),
        ownerRssMiB: ownerRss === undefined ? undefined : round(ownerRss, 1),
        storageRoute: contender === "ours" ? storageRoutes(sandboxes.ours.persistRoot) : undefined,
        cpuPerCallMs: contender === "ours" ? cpuPerCallMs : undefined,
      };
    }
    return result;
  } finally {
    for (const sandbox of Object.values(sandboxes)) await sandbox.cleanup();
  }
}
