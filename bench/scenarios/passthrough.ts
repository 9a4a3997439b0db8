// Wall time and peak memory of commands that pass through to the real wrangler, and of `status`.
import { spawn } from "node:child_process";
import os from "node:os";
import { NODE, OUR_BIN, REAL_BIN, Sandbox } from "../../test/harness/sandbox.js";
import { median, round } from "../stats.js";
import { type Bench, groupRssMiB } from "../context.js";

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

export async function passthrough(bench: Bench) {
  const sandbox = new Sandbox();
  try {
    const commands = [["--version"], ["d1", "--help"], ["whoami"]];
    const rows: Record<string, unknown>[] = [];
    for (const args of commands) {
      const ours: { ms: number; peakMiB: number }[] = [];
      const real: { ms: number; peakMiB: number }[] = [];
      for (let i = 0; i < bench.sizes.cliRuns; i++) {
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
        runs: bench.sizes.cliRuns,
      });
      bench.log(`passthrough ${JSON.stringify(rows.at(-1))}`);
    }
    const status: number[] = [];
    const statusJson: number[] = [];
    for (let i = 0; i < bench.sizes.cliRuns; i++) {
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
