// The structure check of `npm test` finds what it is there to find.
import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, expect, it } from "vitest";
import { REPO } from "./harness/sandbox.js";

const SCRIPT = path.join(REPO, "scripts", "check-structure.mjs");
const dir = mkdtempSync(path.join(os.tmpdir(), "structure-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function check(files: Record<string, string>): { code: number; output: string } {
  const tree = mkdtempSync(path.join(dir, "src-"));
  for (const [name, text] of Object.entries(files)) {
    mkdirSync(path.dirname(path.join(tree, name)), { recursive: true });
    writeFileSync(path.join(tree, name), text);
  }
  try {
    return {
      code: 0,
      output: execFileSync(process.execPath, [SCRIPT, tree], { encoding: "utf8", stdio: "pipe" }),
    };
  } catch (error) {
    const failed = error as { status: number; stderr: string };
    return { code: failed.status, output: failed.stderr };
  }
}

it("passes the package itself", () => {
  expect(execFileSync(process.execPath, [SCRIPT], { encoding: "utf8" })).toMatch(/no import cycle/);
});

it("finds a cycle through a type-only import across directories", () => {
  const { code, output } = check({
    "a.ts": 'import { b } from "./dev/b.js";\nexport const a = b;\n',
    "dev/b.ts": 'import type {\n  A,\n} from "../a.js";\nexport const b = 1;\nexport type B = A;\n',
  });
  expect(code).toBe(1);
  expect(output).toContain("import cycle: a.ts → dev/b.ts → a.ts");
});

it("finds an import of something outside the package", () => {
  const { code, output } = check({ "a.ts": 'export { x } from "../test/harness/sandbox.js";\n' });
  expect(code).toBe(1);
  expect(output).toMatch(/a\.ts imports .*test\/harness\/sandbox\.ts, outside src\//);
});

it("keeps the layers: dev and commands import neither each other nor anything above them", () => {
  const { code, output } = check({
    "records.ts": "export const r = 1;\n",
    "dispatch.ts": 'import "./dev/preload.js";\nimport "./commands/status.js";\n',
    "pooled/sockets.ts": 'import { r } from "../records.js";\nexport const p = r;\n',
    "owner/succession.ts": 'import { p } from "../pooled/sockets.js";\nexport const s = p;\n',
    "dev/preload.ts":
      'import { s } from "../owner/succession.js";\nimport "../commands/scope.js";\n',
    "commands/status.ts": 'import type { X } from "../dev/continuity.js";\nexport type Y = X;\n',
    "commands/scope.ts": "export const scope = 1;\n",
    "dev/continuity.ts": "export type X = 1;\n",
    "owner/garbage.ts": 'import "../dev/continuity.js";\n',
    "environment.ts": 'import "./owner/succession.js";\n',
  });
  expect(code).toBe(1);
  const problems = output.trim().split("\n");
  expect(problems).toHaveLength(4);
  expect(problems).toEqual(
    expect.arrayContaining([
      expect.stringMatching(
        /dev\/preload\.ts imports .*commands\/scope\.ts: src\/commands is beside src\/dev/,
      ),
      expect.stringMatching(
        /commands\/status\.ts imports .*dev\/continuity\.ts: src\/dev is beside src\/commands/,
      ),
      expect.stringMatching(
        /owner\/garbage\.ts imports .*dev\/continuity\.ts: src\/dev is a layer above src\/owner/,
      ),
      expect.stringMatching(
        /environment\.ts imports .*owner\/succession\.ts: src\/owner is a layer above src\/ \(the base\)/,
      ),
    ]),
  );
});
