// The pooled storage path (src/pooled) with real sessions: KV/R2/D1 calls reach the owner's
// workerd over its Unix sockets through the root's stable link; the link moves to a promoted
// standby only once the old owner's workerd is gone; nothing reaches the standby before it serves.
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { inspectRoot } from "../src/owner/inspect.js";
import { ownerLeftovers } from "../src/owner/assessment.js";
import { linkTarget } from "../src/pooled/sockets.js";
import { isAlive, type ProcessIdentity, unixSockets } from "../src/process-info.js";
import { steadyLoad, waitForCleanTraffic, waitUntilAllWrite } from "./harness/load.js";
import {
  getJson,
  isDatabaseFile,
  parentPid,
  post,
  processesWithOpen,
  Sandbox,
  type Session,
  sleep,
  waitFor,
  acceptedConnections,
} from "./harness/sandbox.js";

async function roundTrips(a: Session, b: Session, tag: string): Promise<void> {
  expect((await fetch(a.url(`/kv/${tag}`), { method: "PUT", body: `kv ${tag}` })).ok).toBe(true);
  expect(await (await fetch(b.url(`/kv/${tag}`))).text()).toBe(`kv ${tag}`);
  expect((await fetch(b.url(`/r2/${tag}`), { method: "PUT", body: `r2 ${tag}` })).ok).toBe(true);
  expect(await (await fetch(a.url(`/r2/${tag}`))).text()).toBe(`r2 ${tag}`);
  for (const s of [a, b]) expect((await post(s.url(`/d1/insert?who=${tag}`))).ok).toBe(true);
  expect((await getJson<{ count: number }>(a.url(`/d1/count?who=${tag}`))).count).toBe(2);
}

function readyStandby(sandbox: Sandbox, backs: number) {
  return waitFor(
    "the standby to be ready",
    () => {
      const report = inspectRoot(sandbox.persistRoot);
      return report.standby?.alive &&
        report.standby.phase === "ready" &&
        report.standby.backs === backs
        ? report.standby
        : undefined;
    },
    30_000,
  );
}

const socketDirOf = (stable: string, pid: number) =>
  path.join(path.dirname(stable), `${path.basename(stable)}.${pid}-`);

describe.skipIf(process.platform === "win32")("pooled storage sockets", () => {
  const sandbox = new Sandbox({ graceMs: 3000, idleMs: 1000 });
  const cli = (...args: string[]) =>
    sandbox.run(["storage-owner", ...args, "--persist-to", sandbox.persistTo]);
  let sessions: Session[];
  beforeAll(async () => {
    sessions = await Promise.all(["api", "jobs"].map((w) => sandbox.startSession(w)));
  });
  afterAll(() => sandbox.cleanup());

  it("routes every session's KV, R2 and D1 over the owner's sockets, and says so", async () => {
    const [a, b] = sessions as [Session, Session];
    const owner = sandbox.owner()!;
    const stable = owner.pooledSockets!;
    expect(stable).toBeDefined();
    expect(linkTarget(stable)?.startsWith(socketDirOf(stable, owner.pid))).toBe(true);
    await roundTrips(a, b, "first");
    // Each session's workerd keeps its own pooled connection(s) to each kind's socket.
    const dir = linkTarget(stable)!;
    for (const kind of ["kv", "r2", "d1"])
      expect(acceptedConnections(path.join(dir, kind))).toBeGreaterThanOrEqual(2);
    const report = inspectRoot(sandbox.persistRoot);
    expect(report.clients.map((c) => c.storageRoute)).toEqual(["pooled", "pooled"]);
    const { code, stdout } = await cli("status");
    expect(code).toBe(0);
    expect(stdout).toMatch(/STORAGE/);
    expect(stdout.match(/ pooled /g)).toHaveLength(2);
  });

  it("keeps the database files with the owner's workerd alone, the standby's sockets unused", async () => {
    const owner = sandbox.owner()!;
    const standby = await readyStandby(sandbox, owner.pid);
    await roundTrips(sessions[0]!, sessions[1]!, "holders");
    const holders = processesWithOpen(isDatabaseFile(sandbox.persistRoot));
    expect(holders).toHaveLength(1);
    expect(parentPid(holders[0]!)).toBe(owner.pid);
    const stable = owner.pooledSockets!;
    const standbyDir = await waitFor(
      "the standby's sockets",
      () => {
        const prefix = socketDirOf(stable, standby.pid);
        const kv = new RegExp(`^${prefix.replace(/[.]/g, "\\.")}\\d+(?=/kv$)`);
        return unixSockets()
          .map((socket) => kv.exec(socket.path)?.[0])
          .find((dir) => dir !== undefined);
      },
      10_000,
    );
    expect(linkTarget(stable)).not.toBe(standbyDir);
    for (const kind of ["kv", "r2", "d1"])
      expect(acceptedConnections(path.join(standbyDir, kind))).toBe(0);
  });

  it("moves the link to the promoted standby only after the old owner's workerd is gone", async () => {
    const old = sandbox.owner()!;
    const stable = old.pooledSockets!;
    const oldDir = linkTarget(stable)!;
    const standby = await readyStandby(sandbox, old.pid);
    const oldWorkerd: ProcessIdentity[] = ownerLeftovers(old);
    expect(oldWorkerd.length).toBeGreaterThan(0);
    // The old workerd, stopped, stays alive after its owner dies until the successor kills it:
    // pooled connections to it stay open meanwhile, and the link must not move before it is gone.
    for (const w of oldWorkerd) process.kill(w.pid, "SIGSTOP");
    const violations: string[] = [];
    let watching = true;
    let looks = 0;
    const watcher = (async () => {
      while (watching) {
        looks++;
        const target = linkTarget(stable);
        if (target !== oldDir && oldWorkerd.some(isAlive))
          violations.push(`link at ${target} while old workerd lives`);
        await sleep(2);
      }
    })();
    const load = steadyLoad(sessions, "swap");
    await sleep(500);
    const killedAt = Date.now();
    process.kill(old.pid, "SIGKILL");
    const next = await waitFor(
      "the standby to serve",
      () => {
        const owner = sandbox.owner();
        return owner?.pid === standby.pid && owner.phase === "running" ? owner : undefined;
      },
      20_000,
    );
    await waitForCleanTraffic(load, killedAt);
    await load.stop();
    watching = false;
    await watcher;
    expect(looks).toBeGreaterThan(10);
    expect(violations).toEqual([]);
    expect(oldWorkerd.some(isAlive)).toBe(false);
    expect(next.pooledSockets).toBe(stable);
    expect(linkTarget(stable)?.startsWith(socketDirOf(stable, standby.pid))).toBe(true);
    await roundTrips(sessions[0]!, sessions[1]!, "after");
    const holders = processesWithOpen(isDatabaseFile(sandbox.persistRoot));
    expect(holders.map(parentPid)).toEqual([standby.pid]);
    // Every session writes again, over the same (stable) config: no session's workerd restarted.
    expect(await waitUntilAllWrite(sessions, "after-swap", 10_000)).toBe(true);
    for (const kind of ["kv", "r2", "d1"])
      expect(acceptedConnections(path.join(linkTarget(stable)!, kind))).toBeGreaterThanOrEqual(2);
    console.log(
      `[pooled] ${load.results.filter((r) => !r.ok).length} of ${load.results.length} calls failed around the swap`,
    );
  });
});
