// src/process-info.ts: the /proc readers the bench counts CPU with and the harness counts pooled
// connections with (real processes and sockets, Linux), and its one cache.
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { describe, expect, it } from "vitest";
import {
  cpuTimeNs,
  infoSource,
  parseUnixSockets,
  processInfoCache,
  processName,
  unixSockets,
} from "../src/process-info.js";

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

describe("processInfoCache", () => {
  it("keeps the source chosen until reset, then chooses again", () => {
    const saved = process.env.WRANGLER_X_PROCESS_INFO;
    try {
      delete process.env.WRANGLER_X_PROCESS_INFO;
      processInfoCache.reset();
      const native = infoSource();
      process.env.WRANGLER_X_PROCESS_INFO = "portable";
      expect(infoSource()).toBe(native); // chosen once per process
      processInfoCache.reset();
      expect(infoSource()).not.toBe("proc");
    } finally {
      if (saved === undefined) delete process.env.WRANGLER_X_PROCESS_INFO;
      else process.env.WRANGLER_X_PROCESS_INFO = saved;
      processInfoCache.reset();
    }
  });
});

describe("unix sockets (/proc/net/unix)", () => {
  it("parses rows with and without a path (spaces in it kept), connected or listening", () => {
    const table = [
      "Num       RefCount Protocol Flags    Type St Inode Path",
      "0000000089d2862e: 00000002 00000000 00010000 0001 01 211909 /tmp/x/kv",
      "0000000006a2254b: 00000003 00000000 00000000 0001 03 212605",
      "0000000039b704b5: 00000003 00000000 00000000 0001 03 211548 /tmp/x/kv",
      "00000000a1b2c3d4: 00000002 00000000 00010000 0001 01 211950 /tmp/My  Dir/kv",
      "",
    ].join("\n");
    expect(parseUnixSockets(table)).toEqual([
      { path: "/tmp/x/kv", connected: false },
      { path: "", connected: true },
      { path: "/tmp/x/kv", connected: true },
      { path: "/tmp/My  Dir/kv", connected: false },
    ]);
  });

  it.runIf(existsSync("/proc/net/unix"))(
    "sees a listening socket and the connection it accepted",
    async () => {
      const dir = mkdtempSync(path.join(os.tmpdir(), "unix-"));
      const file = path.join(dir, "s");
      const server = net.createServer();
      await new Promise<void>((resolve) => server.listen(file, resolve));
      const client = net.connect(file);
      await new Promise<void>((resolve) => server.once("connection", () => resolve()));
      try {
        const bound = unixSockets().filter((socket) => socket.path === file);
        expect(bound.filter((socket) => !socket.connected)).toHaveLength(1);
        expect(bound.filter((socket) => socket.connected)).toHaveLength(1);
      } finally {
        client.destroy();
        await new Promise((resolve) => server.close(resolve));
        rmSync(dir, { recursive: true, force: true });
      }
    },
  );
});
