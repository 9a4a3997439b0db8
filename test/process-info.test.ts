// The /proc readers the bench counts CPU with (src/process-info.ts): real processes, Linux.
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { cpuTimeNs, processName } from "../src/process-info.js";

describe.runIf(existsSync("/proc/self/task"))("cpuTimeNs / processName", () => {
  it("counts every thread's CPU time, grows with work, and is undefined once the process is gone", async () => {
    const before = cpuTimeNs(process.pid);
    expect(before).toBeGreaterThan(0);
    const until = Date.now() + 50;
    while (Date.now() < until); // 50 ms of CPU on this thread
    expect(cpuTimeNs(process.pid)! - before!).toBeGreaterThan(20e6);

    const child = spawn("sleep", ["30"], { stdio: "ignore" });
    const pid = child.pid!;
    expect(processName(pid)).toBe("sleep");
    expect(cpuTimeNs(pid)).toBeGreaterThanOrEqual(0);
    child.kill("SIGKILL");
    await new Promise((resolve) => child.once("exit", resolve)); // reaped: /proc/<pid> is gone
    expect(cpuTimeNs(pid)).toBeUndefined();
    expect(processName(pid)).toBeUndefined();
  });
});
