// A user project as npm builds it: `npm install` of our packed tarball into a project that pins
// its own wrangler. Installs are cached under os.tmpdir() per checkout and wrangler version; a
// changed tarball is reinstalled over the cached wrangler (seconds), a new wrangler version costs
// a full install (~15 s with a warm npm cache).
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { REPO } from "./sandbox.js";

const CACHE = path.join(
  os.tmpdir(),
  "x-shared-storage-fixtures",
  createHash("sha256").update(REPO).digest("hex").slice(0, 8),
);

export interface FixtureProject {
  dir: string;
  /** node_modules/.bin/wrangler of the project. */
  bin: string;
  /** Seconds the install took (0 when cached). */
  installSeconds: number;
}

let packed: { file: string; hash: string } | undefined;

/** Our package as `npm publish` would ship it (dist must be built). */
function pack(env: NodeJS.ProcessEnv): { file: string; hash: string } {
  if (packed) return packed;
  const dir = path.join(CACHE, "pack");
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  const name = execFileSync(
    "npm",
    ["pack", "--ignore-scripts", "--silent", "--pack-destination", dir],
    { cwd: REPO, encoding: "utf8", env },
  )
    .trim()
    .split("\n")
    .pop()!;
  const file = path.join(dir, name);
  packed = { file, hash: createHash("sha256").update(readFileSync(file)).digest("hex") };
  return packed;
}

function npm(args: string[], cwd: string, env: NodeJS.ProcessEnv): void {
  execFileSync(
    "npm",
    [...args, "--prefer-offline", "--no-audit", "--no-fund", "--loglevel=error"],
    { cwd, env, stdio: "pipe", timeout: 300_000 },
  );
}

function installedVersion(dir: string): string | undefined {
  try {
    const json = path.join(dir, "node_modules", "wrangler", "package.json");
    return (JSON.parse(readFileSync(json, "utf8")) as { version: string }).version;
  } catch {
    return undefined;
  }
}

/**
 * A project whose package.json pins `wrangler` and that then ran `npm i -D <our tarball>`.
 * `legacyPeerDeps` installs us beside a wrangler outside our peer range, as `--legacy-peer-deps`
 * (or `--force`) lets a user do.
 */
export function fixtureProject(
  wrangler: string,
  env: NodeJS.ProcessEnv,
  options: { legacyPeerDeps?: boolean; devDependencies?: Record<string, string> } = {},
): FixtureProject {
  const ours = pack(env);
  const extra = options.devDependencies ?? {};
  const dir = path.join(
    CACHE,
    [`wrangler-${wrangler}`, ...Object.entries(extra).map(([n, v]) => `${n}-${v}`)]
      .join("+")
      .replace(/[@/]/g, "_"),
  );
  const marker = path.join(dir, ".installed");
  const bin = path.join(dir, "node_modules", ".bin", "wrangler");
  if (existsSync(marker) && readFileSync(marker, "utf8") === ours.hash) {
    return { dir, bin, installSeconds: 0 };
  }
  const started = Date.now();
  const peers = options.legacyPeerDeps ? ["--legacy-peer-deps"] : [];
  if (installedVersion(dir) !== wrangler) {
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(dir, { recursive: true });
    writeFileSync(
      path.join(dir, "package.json"),
      JSON.stringify({
        name: "fixture",
        private: true,
        devDependencies: { wrangler, ...extra },
      }),
    );
    npm(["install", ...peers], dir, env);
  }
  rmSync(marker, { force: true });
  npm(["install", "-D", ...peers, ours.file], dir, env);
  writeFileSync(marker, ours.hash);
  return { dir, bin, installSeconds: (Date.now() - started) / 1000 };
}
