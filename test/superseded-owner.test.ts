// an owner whose record is taken over while its workerd starts
// (gc, `stop --force` and a new election, or a promoted standby) finds itself superseded at
// `OwnerRole.serve`'s first `publish("running")` and exits. Nothing it does on the way may
// touch what the other owner holds: its pointer, the root's candidate, a standby of its own.
import { spawn } from "node:child_process";
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { createRequire } from "node:module";
import os from "node:os";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { currentIdentity } from "../src/process-info.js";
import {
  pointerPath,
  readOwner,
  readStandby,
  rootPaths,
  writeRecordAtomic,
} from "../src/records.js";
import { ownerCandidateFile } from "../src/storage-candidate.js";
import { ownerRecordFixture } from "./harness/records.js";
import { NODE, REPO, waitFor } from "./harness/sandbox.js";

describe("an owner superseded while its workerd starts", () => {
  it("exits touching nothing of the owner that superseded it", async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), "x-shared-storage-superseded-serve-"));
    const root = path.join(dir, "state", "v3");
    const registry = path.join(dir, "registry");
    const paths = rootPaths(root);
    const wrapper = path.join(dir, "slow-workerd.sh");
    const realWorkerd = createRequire(import.meta.url).resolve("workerd/bin/workerd");
    writeFileSync(wrapper, `#!/bin/sh\nsleep 2\nexec "${realWorkerd}" "$@"\n`);
    chmodSync(wrapper, 0o755);
    mkdirSync(paths.stateDir, { recursive: true });
    const child = spawn(
      NODE,
      [path.join(REPO, "dist", "owner", "main.js"), "--persist-root", root, "--registry", registry],
      {
        env: { ...process.env, MINIFLARE_WORKERD_PATH: wrapper, WRANGLER_X_OWNER_GRACE_MS: "3000" },
        stdio: ["ignore", "pipe", "pipe"],
      },
    );
    let log = "";
    child.stdout.on("data", (d) => (log += d));
    child.stderr.on("data", (d) => (log += d));
    const exited = new Promise((resolve) => child.on("exit", resolve));
    try {
      await waitFor(
        "the owner's starting record",
        () => {
          const r = readOwner(paths);
          return r?.ok && r.value.pid === child.pid && r.value.phase === "starting";
        },
        10_000,
        20,
      );
      // Another owner (this test process, alive) now holds the root: its record and pointer.
      writeRecordAtomic(
        paths.ownerRecord,
        ownerRecordFixture({ ...currentIdentity(), persistRoot: root, registryPath: registry }),
      );
      const pointer = pointerPath(registry, root);
      writeRecordAtomic(pointer, {
        schema: 1,
        persistRoot: root,
        ownerPid: process.pid,
        updatedAt: new Date().toISOString(),
      });
      await waitFor("the superseded owner to exit", () => exited.then(() => true), 20_000);
      expect(log).toContain(`owner record now names pid ${process.pid}; exiting`);
      expect(JSON.parse(readFileSync(pointer, "utf8")).ownerPid, log).toBe(process.pid);
      expect(log).not.toContain("started standby pid");
      expect(existsSync(ownerCandidateFile(registry, root)), log).toBe(false);
    } finally {
      child.kill("SIGKILL");
      const standby = readStandby(paths);
      if (standby?.ok && standby.value.backs === child.pid) {
        try {
          process.kill(-standby.value.pid, "SIGKILL");
        } catch {
          // gone
        }
      }
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
