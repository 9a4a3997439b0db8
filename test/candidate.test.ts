// The invariant's building blocks, on real files and real processes: the root's storage
// candidate (storage-candidate.ts), record validation, and the one way we signal a process.
import { spawn } from "node:child_process";
import {
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  statSync,
  utimesSync,
  writeFileSync,
} from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { ownerRecordFixture } from "./harness/records.js";
import { liveness, readStartTime, signalIfOurs } from "../src/process-info.js";
import {
  readOwner,
  rootPaths,
  SCHEMA_VERSION,
  validateOwner,
  validateStandby,
  writeRecordAtomic,
} from "../src/records.js";
import {
  keepFresh,
  oursIsOldest,
  ownerCandidateFile,
  ownerCandidateName,
  publish,
  storageCandidates,
  withdraw,
} from "../src/storage-candidate.js";

const tmp = mkdtempSync(path.join(os.tmpdir(), "x-shared-storage-candidate-"));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
const quiet = () => {};

describe("the root's storage candidate", () => {
  const registry = path.join(tmp, "registry");
  const root = "/projects/state/v3";

  it("is created, withdraws older candidates of its scope only, and is rewritten in place", async () => {
    mkdirSync(registry, { recursive: true });
    const session = (name: string, scope = root) =>
      writeFileSync(
        path.join(registry, `__miniflare_storage_candidate__-${name}`),
        JSON.stringify({ debugPortAddress: "127.0.0.1:1", storageScope: scope, instanceId: name }),
      );
    session("older-session");
    session("other-root", "/elsewhere/v3");
    await new Promise((resolve) => setTimeout(resolve, 20)); // distinct birthtimes
    const logged: string[] = [];
    expect(
      publish(registry, root, { debugAddress: "127.0.0.1:2000", instanceId: "a" }, (m) =>
        logged.push(m),
      ),
    ).toBe("created");
    expect(logged.join("\n")).toContain("older-session");
    expect(storageCandidates(registry, root).map((c) => c.name)).toEqual([
      ownerCandidateName(root),
    ]);
    expect(storageCandidates(registry, "/elsewhere/v3")).toHaveLength(1); // another root: untouched
    session("younger-session");
    const file = ownerCandidateFile(registry, root);
    const before = statSync(file);
    // A successor with a shorter address: same inode (so same birthtime), padded, still the oldest.
    expect(publish(registry, root, { debugAddress: "127.0.0.1:9", instanceId: "b" }, quiet)).toBe(
      "rewritten in place",
    );
    const after = statSync(file);
    expect(after.ino).toBe(before.ino);
    expect(after.birthtimeMs).toBe(before.birthtimeMs);
    expect(after.size).toBeGreaterThanOrEqual(before.size);
    expect(JSON.parse(readFileSync(file, "utf8"))).toMatchObject({
      debugPortAddress: "127.0.0.1:9",
      storageScope: root,
      instanceId: "b",
    });
    expect(oursIsOldest(registry, root)).toBe(true);
    expect(storageCandidates(registry, root)).toHaveLength(2); // the younger session stays
  });

  it("is kept fresh but never created by keepFresh, and withdrawn only by withdraw", () => {
    const file = ownerCandidateFile(registry, root);
    const past = new Date(Date.now() - 60_000);
    utimesSync(file, past, past);
    expect(keepFresh(registry, root)).toBe(true);
    expect(Date.now() - statSync(file).mtimeMs).toBeLessThan(5000);
    expect(withdraw(registry, root)).toBe(true);
    expect(keepFresh(registry, root)).toBe(false);
    expect(() => statSync(file)).toThrow();
  });

  it("derives its name from the root alone, within miniflare's candidate namespace", () => {
    expect(ownerCandidateName(root)).toMatch(
      /^__miniflare_storage_candidate__-x-shared-storage-[0-9a-f]{16}$/,
    );
    expect(ownerCandidateName(root)).toBe(ownerCandidateName(root));
    expect(ownerCandidateName("/other/v3")).not.toBe(ownerCandidateName(root));
  });
});

describe("records that name processes and paths", () => {
  const base = ownerRecordFixture({ heartbeatAt: new Date(0).toISOString() });

  it("rejects workerd identities that are not {pid, startTime} and paths that are not absolute", () => {
    expect(validateOwner({ ...base, workerd: [{ pid: 7, startTime: "9" }] })).toBeUndefined();
    expect(validateOwner({ ...base, workerd: [{ pid: 7 }] })).toContain('"workerd"');
    expect(validateOwner({ ...base, workerd: [{ pid: -1, startTime: "9" }] })).toContain(
      '"workerd"',
    );
    expect(validateOwner({ ...base, workerd: "7" })).toContain('"workerd"');
    expect(validateOwner({ ...base, registryPath: "../../etc" })).toContain("not an absolute path");
    expect(validateOwner({ ...base, persistRoot: "v3" })).toContain("not an absolute path");
    expect(
      validateStandby({
        schema: SCHEMA_VERSION,
        phase: "starting",
        pid: 5,
        backs: 4,
        since: "x",
        versions: base.versions,
      }),
    ).toBeUndefined();
  });

  it("treats an owner record that names another persist root as unreadable, naming both", () => {
    const root = path.join(tmp, "state", "v3");
    const paths = rootPaths(root);
    writeRecordAtomic(paths.ownerRecord, { ...base, persistRoot: "/somewhere/else/v3" });
    const read = readOwner(paths);
    expect(read?.ok).toBe(false);
    expect(read && !read.ok && read.problem).toContain("/somewhere/else/v3");
    writeRecordAtomic(paths.ownerRecord, { ...base, persistRoot: root });
    expect(readOwner(paths)?.ok).toBe(true);
  });
});

describe("signalIfOurs", () => {
  it("signals only a pid whose recorded start time matches", async () => {
    const child = spawn("sleep", ["30"], { stdio: "ignore" });
    try {
      const real = { pid: child.pid!, startTime: readStartTime(child.pid!) };
      expect(signalIfOurs({ pid: child.pid!, startTime: "1" }, "SIGKILL")).toBe("unproven");
      expect(signalIfOurs({ pid: child.pid! }, "SIGKILL")).toBe("unproven");
      expect(liveness(real)).toBe("alive");
      expect(signalIfOurs(real, "SIGKILL")).toBe("signalled");
      await new Promise((resolve) => child.once("exit", resolve));
      expect(signalIfOurs(real, "SIGKILL")).toBe("gone");
    } finally {
      child.kill("SIGKILL");
    }
  });
});
