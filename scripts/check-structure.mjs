// Structure check, part of `npm test`: no import cycles among the package's modules (type-only
// imports included: a cycle of types is still two modules that cannot be read apart), and the
// package never imports the tests, the harness or the bench.
import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
// `node scripts/check-structure.mjs [dir]`: another tree, for the check's own test.
const src = path.resolve(process.argv[2] ?? path.join(root, "src"));
const files = readdirSync(src, { recursive: true })
  .map(String)
  .filter((f) => /\.c?ts$/.test(f))
  .map((f) => path.join(src, f));

const IMPORT =
  /(?:^|\n)\s*(?:import|export)\s[^;]*?from\s+"(\.{1,2}\/[^"]+)"|import\(\s*"(\.{1,2}\/[^"]+)"\s*\)|require\(\s*"(\.{1,2}\/[^"]+)"\s*\)/g;

/** The .ts/.cts file a relative specifier names (`./x.js` → `x.ts`, `./x.cjs` → `x.cts`). */
function target(from, specifier) {
  const resolved = path.resolve(path.dirname(from), specifier);
  return resolved.replace(/\.js$/, ".ts").replace(/\.cjs$/, ".cts");
}

const graph = new Map();
const problems = [];
for (const file of files) {
  const text = readFileSync(file, "utf8");
  const edges = [];
  for (const match of text.matchAll(IMPORT)) {
    const to = target(file, match[1] ?? match[2] ?? match[3]);
    if (!to.startsWith(src + path.sep))
      problems.push(
        `${path.relative(root, file)} imports ${path.relative(root, to)}, outside src/`,
      );
    else edges.push(to);
  }
  graph.set(file, edges);
}

// Depth-first search; a back edge is a cycle.
const state = new Map();
const stack = [];
function visit(file) {
  state.set(file, "open");
  stack.push(file);
  for (const next of graph.get(file) ?? []) {
    if (state.get(next) === "open") {
      const cycle = stack.slice(stack.indexOf(next)).concat(next);
      problems.push(`import cycle: ${cycle.map((f) => path.relative(src, f)).join(" → ")}`);
    } else if (!state.has(next)) visit(next);
  }
  stack.pop();
  state.set(file, "done");
}
for (const file of graph.keys()) if (!state.has(file)) visit(file);

if (problems.length > 0) {
  for (const problem of problems) console.error(`✘ ${problem}`);
  process.exit(1);
}
console.log(`structure: ${files.length} modules, no import cycle`);
