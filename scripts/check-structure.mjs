// Structure check, part of `npm test`: no import cycles among the package's modules (type-only
// imports included: a cycle of types is still two modules that cannot be read apart), the
// package never imports the tests, the harness or the bench, and the layers (LAYERS) hold.
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
  /(?:^|\n)\s*(?:import|export)\s[^;]*?from\s+"(\.{1,2}\/[^"]+)"|import\(\s*"(\.{1,2}\/[^"]+)"\s*\)|require\(\s*"(\.{1,2}\/[^"]+)"\s*\)|(?:^|\n)\s*import\s+"(\.{1,2}\/[^"]+)"/g;

/** The .ts/.cts file a relative specifier names (`./x.js` → `x.ts`, `./x.cjs` → `x.cts`). */
function target(from, specifier) {
  const resolved = path.resolve(path.dirname(from), specifier);
  return resolved.replace(/\.js$/, ".ts").replace(/\.cjs$/, ".cts");
}

/**
 * The rooms of src/, each importing only from those below it: the modules directly in src/
 * (records, process identity, environment: the base), src/pooled, src/owner, and on top, side by
 * side, src/dev (the session) and src/commands (storage-owner), which never import each other.
 * What both need lives below them. The entries (dispatch.ts, register.cts) may import any room.
 */
const LAYERS = { base: 0, pooled: 1, owner: 2, dev: 3, commands: 3 };
const ENTRIES = new Set(["dispatch.ts", "register.cts"]);

/** The room of a file under src/: its first directory, or "base"; undefined for an entry. */
function roomOf(file) {
  const rel = path.relative(src, file);
  const [first, ...rest] = rel.split(path.sep);
  if (rest.length === 0) return ENTRIES.has(first) ? undefined : "base";
  return first;
}

/** Why an import from `from` of `to` breaks the layers, if it does. */
function layerProblem(from, to) {
  const [a, b] = [roomOf(from), roomOf(to)];
  if (a === undefined || a === b) return undefined;
  if (b === undefined) return "an entry";
  const [la, lb] = [LAYERS[a], LAYERS[b]];
  if (la === undefined || lb === undefined) return undefined; // a room the layers do not name
  const name = (room) => (room === "base" ? "src/ (the base)" : `src/${room}`);
  if (lb > la) return `${name(b)} is a layer above ${name(a)}`;
  if (lb === la) return `${name(b)} is beside ${name(a)}: what both need belongs below them`;
  return undefined;
}

const graph = new Map();
const problems = [];
for (const file of files) {
  const text = readFileSync(file, "utf8");
  const edges = [];
  for (const match of text.matchAll(IMPORT)) {
    const to = target(file, match[1] ?? match[2] ?? match[3] ?? match[4]);
    if (!to.startsWith(src + path.sep))
      problems.push(
        `${path.relative(root, file)} imports ${path.relative(root, to)}, outside src/`,
      );
    else {
      edges.push(to);
      const problem = layerProblem(file, to);
      if (problem)
        problems.push(
          `${path.relative(root, file)} imports ${path.relative(root, to)}: ${problem}`,
        );
    }
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
console.log(`structure: ${files.length} modules, no import cycle, layers kept`);
