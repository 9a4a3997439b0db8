// `npm run bench -- --profile`: where the extra time of a storage call through the owner goes.
// Everything is measured in one run, on live processes, and reported as medians and ratios:
//   A. the same HTTP request (KV get/put, D1 insert, R2 put) against four sessions running side
//      by side, interleaved round by round so machine noise hits all alike: plain wrangler,
//      miniflare's owning session (its storage calls go through miniflare's dev-registry proxy
//      but stay in-process, `debugPort.current()`), miniflare's non-owning session (proxy + a TCP
//      connection to the owning workerd per call) and ours (proxy + a TCP connection to our owner
//      per call);
//   B. the same storage calls made in a loop inside one request of those sessions: the per-call
//      cost without the client's HTTP request to the session;
//   C. a probe workerd (our config, `workerdDebugPort` binding) talking to our owner's debug port:
//      a new connection per call (what miniflare's proxy does) against one connection reused
//      across calls, for the owner's trivial entry and for KV get/put, and a Durable Object that
//      keeps its connection across requests (the only workerd object that may outlive a request).
// Figures are never asserted anywhere; compare ratios within one run.
import { spawn, type ChildProcess } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { freePort, Sandbox, type Session, sleep, waitFor } from "../test/harness/sandbox.js";
import { inspectRoot } from "../src/owner/inspect.js";
import { storageRoutes } from "./route.js";
import { cpuDuring, processesOf } from "./cpu.js";
import { median, percentile, round } from "./stats.js";

/** Rounds of interleaved requests, calls per loop, loop repeats: by the bench's mode. */
const SIZES = {
  full: { rounds: 200, loop: 100, loopRepeats: 9 },
  quick: { rounds: 60, loop: 50, loopRepeats: 5 },
  smoke: { rounds: 5, loop: 5, loopRepeats: 1 },
};

const log = (message: string) =>
  process.stderr.write(`[profile ${new Date().toISOString().slice(11, 19)}] ${message}\n`);

/** The example worker plus `/loop/<op>?n=N`: N storage calls in one request, elapsed ms. */
const LOOP_WORKER = `import { createHandler } from "../../shared/handler.js";
const inner = createHandler("NAME");
const ops = {
  "kv-get": (env) => env.KV.get("bench"),
  "kv-put": (env) => env.KV.put("bench", "value"),
  "d1-insert": (env) => env.DB.prepare("INSERT INTO items (who, at) VALUES (?, ?) RETURNING id").bind("loop", "t").first(),
  "r2-put": (env) => env.BUCKET.put("bench", "value"),
};
export default {
  async fetch(request, env, ctx) {
    const url = new URL(request.url);
    const [, area, op] = url.pathname.split("/");
    if (area === "loop" && ops[op]) {
      const n = Number(url.searchParams.get("n") ?? "100");
      await ops[op](env);
      const started = Date.now();
      for (let i = 0; i < n; i++) await ops[op](env);
      return Response.json({ ms: Date.now() - started, n });
    }
    return inner.fetch(request, env, ctx);
  },
};
`;

const PROBE_WORKER = `import { DurableObject, WorkerEntrypoint } from "cloudflare:workers";
const owner = (env, service, props) => env.DP.connect(env.ADDR).getEntrypoint(service, undefined, props);
const KV = ["kv:ns:entry", { MINIFLARE_NAMESPACE: "shared-kv" }];
// miniflare's proxy, as it works today: a new debug-port connection for every call.
export class PerCall extends WorkerEntrypoint {
  fetch(request) { return owner(this.env, ...KV).fetch(request); }
}
// The same through a Durable Object that keeps one connection across requests.
export class ViaHolder extends WorkerEntrypoint {
  fetch(request) { return this.env.HOLDER.get(this.env.HOLDER.idFromName("kv")).fetch(request); }
}
export class Holder extends DurableObject {
  fetch(request) {
    this.kv ??= owner(this.env, ...KV);
    return this.kv.fetch(request).catch((error) => { this.kv = undefined; throw error; });
  }
}
// Kept at module scope: does workerd let it serve a later request?
const moduleScope = {};
const KV_GET = "https://fake-host/bench?urlencoded=true";
const ops = {
  // The KV entry with a raw request (what the KV binding sends), no binding and no Durable Object.
  "kv-raw-new": async (env) => { await (await owner(env, ...KV).fetch(KV_GET)).arrayBuffer(); },
  "kv-raw-reuse": async (env, held) => { held.kv ??= owner(env, ...KV); await (await held.kv.fetch(KV_GET)).arrayBuffer(); },
  "kv-raw-module-scope": async (env) => { moduleScope.kv ??= owner(env, ...KV); await (await moduleScope.kv.fetch(KV_GET)).arrayBuffer(); },
  // The owner's own entry (its placeholder worker answers 404): transport only.
  "entry-new": async (env) => { await (await owner(env, "core:entry").fetch("http://localhost/")).arrayBuffer(); },
  "entry-reuse": async (env, held) => { held.entry ??= owner(env, "core:entry"); await (await held.entry.fetch("http://localhost/")).arrayBuffer(); },
  "entry-reuse-connection": async (env, held) => { held.client ??= env.DP.connect(env.ADDR); await (await held.client.getEntrypoint("core:entry").fetch("http://localhost/")).arrayBuffer(); },
  "kv-get-new": (env) => env.KV_PER_CALL.get("bench"),
  "kv-get-held": (env) => env.KV_HELD.get("bench"),
  "kv-put-new": (env) => env.KV_PER_CALL.put("bench", "value"),
  "kv-put-held": (env) => env.KV_HELD.put("bench", "value"),
};
export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    const op = ops[url.pathname.slice(1)];
    if (!op) return new Response("no such op", { status: 404 });
    const n = Number(url.searchParams.get("n") ?? "1");
    const held = {};
    try {
      await op(env, held);
      const started = Date.now();
      for (let i = 0; i < n; i++) await op(env, held);
      return Response.json({ ms: Date.now() - started, n });
    } catch (error) {
      return Response.json({ error: String(error) }, { status: 500 });
    }
  },
};
`;

function probeConfig(port: number, ownerAddress: string): string {
  return `using Workerd = import "/workerd/workerd.capnp";
const config :Workerd.Config = (
  services = [ (name = "probe", worker = .probe) ],
  sockets = [ (name = "http", address = "127.0.0.1:${port}", http = (), service = "probe") ],
);
const probe :Workerd.Worker = (
  modules = [ (name = "probe.js", esModule = embed "probe.js") ],
  compatibilityDate = "2025-01-01",
  bindings = [
    (name = "DP", workerdDebugPort = void),
    (name = "ADDR", text = ${JSON.stringify(ownerAddress)}),
    (name = "KV_PER_CALL", kvNamespace = (name = "probe", entrypoint = "PerCall")),
    (name = "KV_HELD", kvNamespace = (name = "probe", entrypoint = "ViaHolder")),
    (name = "HOLDER", durableObjectNamespace = "Holder"),
  ],
  durableObjectNamespaces = [ (className = "Holder", uniqueKey = "x-shared-storage-probe-holder") ],
  durableObjectStorage = (inMemory = void),
);
`;
}

async function timed(url: string, method = "GET", body?: string): Promise<number> {
  const started = performance.now();
  const response = await fetch(url, { method, body });
  await response.arrayBuffer();
  if (!response.ok) throw new Error(`${method} ${url}: ${response.status}`);
  return performance.now() - started;
}

async function loopMs(url: string): Promise<number> {
  const response = await fetch(url);
  const text = await response.text();
  if (!response.ok) throw new Error(`${url}: ${response.status} ${text}`);
  const { ms, n } = JSON.parse(text) as { ms: number; n: number };
  return ms / n;
}

const HTTP_OPS: Record<string, { method: string; path: string; body?: string }> = {
  "KV get": { method: "GET", path: "/kv/bench" },
  "KV put": { method: "PUT", path: "/kv/bench", body: "value" },
  "D1 insert": { method: "POST", path: "/d1/insert?who=profile" },
  "R2 put": { method: "PUT", path: "/r2/bench", body: "value" },
};
const LOOP_OPS: Record<string, string> = {
  "KV get": "kv-get",
  "KV put": "kv-put",
  "D1 insert": "d1-insert",
  "R2 put": "r2-put",
};

type Target = "plain" | "mfOwning" | "mfNonOwning" | "ours";
const TARGET_LABEL: Record<Target, string> = {
  plain: "plain session",
  mfOwning: "miniflare owning session (proxy, in-process)",
  mfNonOwning: "miniflare non-owning session (proxy + TCP)",
  ours: "ours (route as recorded: pooled socket to the owner's workerd, else proxy + TCP)",
};

function withLoopWorkers(sandbox: Sandbox): Sandbox {
  for (const worker of ["api", "jobs"])
    writeFileSync(
      path.join(sandbox.workerDir(worker), "src", "index.js"),
      LOOP_WORKER.replace("NAME", worker),
    );
  return sandbox;
}

export async function profile(mode: "full" | "quick" | "smoke"): Promise<Record<string, unknown>> {
  const { rounds: ROUNDS, loop: LOOP, loopRepeats: LOOP_REPEATS } = SIZES[mode];
  const smoke = mode === "smoke";
  const sandboxes: Sandbox[] = [];
  let probe: ChildProcess | undefined;
  try {
    const plainBox = withLoopWorkers(new Sandbox({ graceMs: 2000, idleMs: 1000 }));
    const upstreamBox = withLoopWorkers(new Sandbox({ graceMs: 2000, idleMs: 1000 }));
    Object.assign(upstreamBox.env, { WRANGLER_X_BENCH_UPSTREAM_SHARED_STORAGE: "1" });
    const oursBox = withLoopWorkers(new Sandbox({ graceMs: 2000, idleMs: 1000 }));
    sandboxes.push(plainBox, upstreamBox, oursBox);
    log("starting a plain session, two miniflare-shared sessions, one of ours");
    const sessions: Record<Target, Session> = {
      plain: await plainBox.startSession("api", { flag: false }),
      mfOwning: await upstreamBox.startSession("api"),
      mfNonOwning: await upstreamBox.startSession("jobs"),
      ours: await oursBox.startSession("api"),
    };
    await waitFor(
      "our standby to be ready",
      () => inspectRoot(oursBox.persistRoot).owner?.standby?.phase === "ready",
      30_000,
    );
    await sleep(2000);
    const targets = Object.keys(sessions) as Target[];
    for (const target of targets) {
      const s = sessions[target];
      await timed(s.url("/kv/bench"), "PUT", "value");
      await timed(s.url("/d1/insert?who=warm"), "POST");
      await timed(s.url("/r2/bench"), "PUT", "value");
    }

    // A. HTTP request per call, interleaved.
    log(`A: ${ROUNDS} interleaved rounds of single HTTP requests`);
    const http: Record<string, Record<Target, number[]>> = {};
    for (const op of Object.keys(HTTP_OPS))
      http[op] = { plain: [], mfOwning: [], mfNonOwning: [], ours: [] };
    for (let r = 0; r < ROUNDS; r++) {
      for (const [op, { method, path: p, body }] of Object.entries(HTTP_OPS)) {
        // Rotate the order so no target always goes first.
        for (let k = 0; k < targets.length; k++) {
          const target = targets[(r + k) % targets.length]!;
          http[op]![target].push(await timed(sessions[target].url(p), method, body));
        }
      }
    }
    const whoami: Record<Target, number[]> = {
      plain: [],
      mfOwning: [],
      mfNonOwning: [],
      ours: [],
    };
    for (let r = 0; r < ROUNDS; r++)
      for (const target of targets)
        whoami[target].push(await timed(sessions[target].url("/whoami")));

    // B. Storage calls in a loop inside one request.
    log(`B: ${LOOP_REPEATS} × ${LOOP} storage calls inside one request`);
    const loop: Record<string, Record<Target, number[]>> = {};
    for (const op of Object.keys(LOOP_OPS))
      loop[op] = { plain: [], mfOwning: [], mfNonOwning: [], ours: [] };
    const standbyPid = () => inspectRoot(oursBox.persistRoot).owner?.standby?.pid;
    const processesByTarget: Record<Target, Map<number, string>> = {
      plain: processesOf({ session: sessions.plain.pid }),
      mfOwning: processesOf({ session: sessions.mfOwning.pid, other: sessions.mfNonOwning.pid }),
      mfNonOwning: processesOf({
        session: sessions.mfNonOwning.pid,
        owning: sessions.mfOwning.pid,
      }),
      ours: processesOf({
        session: sessions.ours.pid,
        owner: oursBox.owner()?.pid,
        standby: standbyPid(),
      }),
    };
    // CPU-ms per call of each process, for each target and op.
    const cpu: Record<string, Record<Target, Record<string, number>>> = {};
    for (const op of Object.keys(LOOP_OPS))
      cpu[op] = { plain: {}, mfOwning: {}, mfNonOwning: {}, ours: {} };
    for (let r = 0; r < LOOP_REPEATS; r++)
      for (const [op, name] of Object.entries(LOOP_OPS))
        for (const target of targets) {
          const spent = await cpuDuring(processesByTarget[target], async () => {
            loop[op]![target].push(await loopMs(sessions[target].url(`/loop/${name}?n=${LOOP}`)));
          });
          const into = cpu[op]![target];
          for (const [label, ms] of Object.entries(spent))
            into[label] = (into[label] ?? 0) + ms / (LOOP + 1) / LOOP_REPEATS;
        }

    // CPU-ms of a whole HTTP request (one D1 insert, or none: /whoami), all processes of the
    // target summed: what one session's throughput under concurrent load is made of.
    const HTTP_CPU_REQUESTS = smoke ? 5 : 60;
    const httpCpu: Record<string, Record<Target, number>> = {
      whoami: { plain: 0, mfOwning: 0, mfNonOwning: 0, ours: 0 },
      "D1 insert": { plain: 0, mfOwning: 0, mfNonOwning: 0, ours: 0 },
    };
    for (let r = 0; r < 3; r++)
      for (const target of ["plain", "ours"] as const)
        for (const [op, requestPath, method] of [
          ["whoami", "/whoami", "GET"],
          ["D1 insert", "/d1/insert?who=cpu", "POST"],
        ] as const) {
          const spent = await cpuDuring(processesByTarget[target], async () => {
            for (let i = 0; i < HTTP_CPU_REQUESTS; i++)
              await timed(sessions[target].url(requestPath), method);
          });
          const total = Object.values(spent).reduce((sum, ms) => sum + ms, 0);
          httpCpu[op]![target] += total / HTTP_CPU_REQUESTS / 3;
        }

    // C. A probe workerd against our owner's debug port.
    const owner = oursBox.owner();
    if (!owner?.debugAddress) throw new Error("our owner has no debug address");
    const probePort = await freePort();
    const probeDir = path.join(oursBox.dir, "probe");
    mkdirSync(probeDir, { recursive: true });
    writeFileSync(path.join(probeDir, "probe.js"), PROBE_WORKER);
    writeFileSync(path.join(probeDir, "config.capnp"), probeConfig(probePort, owner.debugAddress));
    // The workerd package's default export is its binary's path.
    const workerdBin = (createRequire(import.meta.url)("workerd") as { default: string }).default;
    probe = spawn(workerdBin, ["serve", path.join(probeDir, "config.capnp"), "--experimental"], {
      cwd: probeDir,
      stdio: ["ignore", "ignore", "pipe"],
    });
    const killProbe = () => probe?.kill("SIGKILL");
    process.once("exit", killProbe);
    let probeErr = "";
    probe.stderr!.on("data", (d) => (probeErr += d));
    await waitFor(
      "the probe workerd",
      async () => {
        try {
          await fetch(`http://127.0.0.1:${probePort}/none`);
          return true;
        } catch {
          if (probe?.exitCode !== null) throw new Error(`probe exited: ${probeErr}`);
          return false;
        }
      },
      20_000,
      100,
    );
    // A client kept at module scope, used by a second request.
    const moduleScope = [];
    for (let r = 0; r < 2; r++) {
      const response = await fetch(`http://127.0.0.1:${probePort}/kv-raw-module-scope?n=1`);
      moduleScope.push(`${response.status} ${(await response.text()).slice(0, 300)}`);
    }
    log(`C: a debug-port client kept at module scope, two requests: ${moduleScope.join(" / ")}`);
    const probeOps = [
      "kv-raw-new",
      "kv-raw-reuse",
      "entry-new",
      "entry-reuse-connection",
      "entry-reuse",
      "kv-get-new",
      "kv-get-held",
      "kv-put-new",
      "kv-put-held",
    ];
    log(`C: probe workerd → owner ${owner.debugAddress}`);
    const probeLoop: Record<string, number[]> = {};
    const probeHttp: Record<string, number[]> = {};
    for (const op of probeOps) {
      probeLoop[op] = [];
      probeHttp[op] = [];
    }
    for (let r = 0; r < LOOP_REPEATS; r++)
      for (const op of probeOps)
        probeLoop[op]!.push(await loopMs(`http://127.0.0.1:${probePort}/${op}?n=${LOOP}`));
    // One call per HTTP request: a held connection must survive across requests to count.
    for (let r = 0; r < ROUNDS; r++)
      for (const op of probeOps)
        probeHttp[op]!.push(await timed(`http://127.0.0.1:${probePort}/${op}?n=1`));
    if (probeErr.trim()) log(`probe stderr: ${probeErr.trim().slice(0, 500)}`);

    const oursRoute = storageRoutes(oursBox.persistRoot);

    // Report.
    const summary = (xs: number[]) => ({
      p50: round(median(xs), 2),
      p95: round(percentile(xs, 95), 2),
      n: xs.length,
    });
    const result = {
      rounds: ROUNDS,
      loop: { calls: LOOP, repeats: LOOP_REPEATS },
      ownerAddress: owner.debugAddress,
      http: Object.fromEntries(
        Object.entries(http).map(([op, by]) => [
          op,
          Object.fromEntries(targets.map((t) => [t, summary(by[t])])),
        ]),
      ),
      whoami: Object.fromEntries(targets.map((t) => [t, summary(whoami[t])])),
      loopPerCallMs: Object.fromEntries(
        Object.entries(loop).map(([op, by]) => [
          op,
          Object.fromEntries(targets.map((t) => [t, round(median(by[t]), 3)])),
        ]),
      ),
      cpuPerCallMs: Object.fromEntries(
        Object.entries(cpu).map(([op, by]) => [
          op,
          Object.fromEntries(
            targets.map((t) => [
              t,
              Object.fromEntries(
                Object.entries(by[t])
                  .filter(([, ms]) => ms >= 0.005)
                  .map(([label, ms]) => [label, round(ms, 3)]),
              ),
            ]),
          ),
        ]),
      ),
      httpCpuPerRequestMs: Object.fromEntries(
        Object.entries(httpCpu).map(([op, by]) => [
          op,
          { plain: round(by.plain, 2), ours: round(by.ours, 2) },
        ]),
      ),
      // Per call, from the loops of B: what plain costs, what miniflare's proxy adds in-process,
      // what crossing to another process adds; from C, what a new connection per call costs.
      breakdownMs: Object.fromEntries(
        Object.entries(loop).map(([op, by]) => {
          const [plain, proxy, ours] = [by.plain, by.mfOwning, by.ours].map((xs) => median(xs));
          return [
            op,
            {
              plain: round(plain!, 3),
              proxyInProcess: round(proxy! - plain!, 3),
              crossProcess: round(ours! - proxy!, 3),
              extra: round(ours! - plain!, 3),
            },
          ];
        }),
      ),
      // Ours per call, from the loops of B: the time over plain and the CPU each process spends
      // on it (a session's workerd over plain's, the owner's workerd that serves the socket, the
      // owner's node, which the pooled path should leave idle).
      oursRoute,
      oursOverPlain: Object.fromEntries(
        Object.entries(loop).map(([op, by]) => {
          const mine = cpu[op]!.ours;
          const plainCpu = cpu[op]!.plain;
          const sum = (by: Record<string, number>, prefix: string) =>
            Object.entries(by)
              .filter(([label]) => label.startsWith(prefix))
              .reduce((total, [, ms]) => total + ms, 0);
          return [
            op,
            {
              extraMs: round(median(by.ours)! - median(by.plain)!, 3),
              sessionWorkerdExtraCpuMs: round(
                sum(mine, "session workerd") - sum(plainCpu, "session workerd"),
                3,
              ),
              sessionNodeExtraCpuMs: round(
                sum(mine, "session node") - sum(plainCpu, "session node"),
                3,
              ),
              ownerWorkerdCpuMs: round(sum(mine, "owner workerd"), 3),
              ownerNodeCpuMs: round(sum(mine, "owner node"), 3),
            },
          ];
        }),
      ),
      newConnectionMs: {
        kvGet: round(median(probeLoop["kv-raw-new"]!) - median(probeLoop["kv-raw-reuse"]!), 3),
        entry: round(median(probeLoop["entry-new"]!) - median(probeLoop["entry-reuse"]!), 3),
      },
      probe: {
        moduleScope,
        loopPerCallMs: Object.fromEntries(
          probeOps.map((op) => [op, round(median(probeLoop[op]!), 3)]),
        ),
        httpPerCall: Object.fromEntries(probeOps.map((op) => [op, summary(probeHttp[op]!)])),
      },
    };
    printProfile(result, targets);
    return result;
  } finally {
    if (probe && probe.exitCode === null) probe.kill("SIGKILL");
    for (const sandbox of sandboxes) await sandbox.cleanup();
  }
}

type ProfileResult = {
  http: Record<string, Record<string, { p50: number; p95: number; n: number }>>;
  whoami: Record<string, { p50: number; p95: number; n: number }>;
  loopPerCallMs: Record<string, Record<string, number>>;
  cpuPerCallMs: Record<string, Record<string, Record<string, number>>>;
  breakdownMs: Record<
    string,
    { plain: number; proxyInProcess: number; crossProcess: number; extra: number }
  >;
  newConnectionMs: { kvGet: number; entry: number };
  oursRoute: string;
  oursOverPlain: Record<
    string,
    {
      extraMs: number;
      sessionWorkerdExtraCpuMs: number;
      sessionNodeExtraCpuMs: number;
      ownerWorkerdCpuMs: number;
      ownerNodeCpuMs: number;
    }
  >;
  httpCpuPerRequestMs: Record<string, { plain: number; ours: number }>;
  probe: {
    moduleScope: string[];
    loopPerCallMs: Record<string, number>;
    httpPerCall: Record<string, { p50: number; p95: number; n: number }>;
  };
};

function printProfile(result: ProfileResult, targets: Target[]): void {
  const lines: string[] = [];
  const ratio = (a: number, b: number) => `${(a / b).toFixed(2)}×`;
  lines.push("A. one HTTP request per call, p50 ms (ratio to plain), interleaved");
  for (const [op, by] of Object.entries({ whoami: result.whoami, ...result.http })) {
    const plain = by.plain!.p50;
    lines.push(
      `  ${op.padEnd(10)} ` +
        targets
          .map((t) => `${TARGET_LABEL[t]}: ${by[t]!.p50} (${ratio(by[t]!.p50, plain)})`)
          .join(" | "),
    );
  }
  lines.push("B. storage calls in a loop inside one request, ms per call (ratio to plain)");
  for (const [op, by] of Object.entries(result.loopPerCallMs)) {
    const plain = by.plain!;
    lines.push(
      `  ${op.padEnd(10)} ` +
        targets.map((t) => `${TARGET_LABEL[t]}: ${by[t]} (${ratio(by[t]!, plain)})`).join(" | "),
    );
  }
  lines.push(
    "   CPU-ms per call by process (the loops of B; a session's group is wrangler's node and its workerd)",
  );
  for (const [op, by] of Object.entries(result.cpuPerCallMs)) {
    for (const t of ["plain", "mfOwning", "ours"]) {
      const parts = Object.entries(by[t] ?? {});
      const total = parts.reduce((sum, [, ms]) => sum + ms, 0);
      lines.push(
        `  ${op.padEnd(10)} ${t.padEnd(9)} total ${total.toFixed(3)}: ` +
          parts.map(([label, ms]) => `${label} ${ms}`).join(", "),
      );
    }
  }
  lines.push(
    "   CPU-ms of one whole HTTP request, every process of the target (the bench client excluded)",
  );
  for (const [op, by] of Object.entries(result.httpCpuPerRequestMs))
    lines.push(
      `  ${op.padEnd(10)} plain ${by.plain} | ours ${by.ours} (${ratio(by.ours, by.plain)})`,
    );
  lines.push("C. probe workerd → our owner's debug port, ms per call");
  lines.push(
    `  a client kept at module scope, 1st / 2nd request: ${result.probe.moduleScope.join(" / ")}`,
  );
  for (const [op, ms] of Object.entries(result.probe.loopPerCallMs)) {
    const http = result.probe.httpPerCall[op]!;
    lines.push(
      `  ${op.padEnd(24)} in a loop: ${ms} | one call per HTTP request: p50 ${http.p50} p95 ${http.p95}`,
    );
  }
  lines.push("Where the time goes, ms per call (B and C):");
  for (const [op, b] of Object.entries(result.breakdownMs))
    lines.push(
      `  ${op.padEnd(10)} plain ${b.plain} + miniflare's proxy in-process ${b.proxyInProcess} + another process over TCP ${b.crossProcess} = +${b.extra}`,
    );
  lines.push(
    `  of which a new debug-port connection per call (probe): ${result.newConnectionMs.kvGet} (KV get), ${result.newConnectionMs.entry} (owner's entry)`,
  );
  lines.push(`Ours (${result.oursRoute}) over plain, per call in a loop (B):`);
  for (const [op, o] of Object.entries(result.oursOverPlain))
    lines.push(
      `  ${op.padEnd(10)} +${o.extraMs} ms; CPU-ms: session workerd +${o.sessionWorkerdExtraCpuMs}, ` +
        `owner workerd ${o.ownerWorkerdCpuMs}, owner node ${o.ownerNodeCpuMs}, session node +${o.sessionNodeExtraCpuMs}`,
    );
  console.log(`\nProfile: where the time goes\n${lines.join("\n")}\n`);
}
