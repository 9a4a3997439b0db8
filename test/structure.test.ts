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
