// One string per persist directory, however it was spelt: `C:\state` and `c:\State` in two
// terminals, `../State` beside `../state` on APFS, a symlink beside its target. Every persist
// root that is recorded, hashed (the owner candidate's name, the registry pointer), compared or
// handed to miniflare (which elects by its `storageScope` string) goes through `canonicalRoot`.
//
// - Symlinks and `..` are resolved by the native realpath.
// - Case: whether the file system is case-insensitive is probed, not assumed from the platform
//   (APFS and NTFS may be either, and a case-insensitive volume can be mounted anywhere): the
//   root's last name with its case swapped is looked up, and the same inode means insensitive.
//   There, each name is replaced by its spelling in the directory listing, so every spelling
//   gives the one the file system stores. The string keeps the real case (users read it in
//   messages), and stays a working path on mixed mounts, which a lowercased one would not.
// - A path that does not exist (yet) is canonical up to its nearest existing ancestor.
//
// The path rules (path.win32 or path.posix) and file operations are a parameter, so that the
// win32 and darwin cases are unit-tested on Linux against a file system that ignores case.
import { lstatSync, mkdirSync, readdirSync, realpathSync } from "node:fs";
import path from "node:path";

/** The file operations `canonicalRoot` needs, injectable for tests of other platforms' rules. */
export interface RootFs {
  path: path.PlatformPath;
  realpath: (dir: string) => string;
  /** dev:ino of a path, or undefined when it does not exist. */
  identity: (file: string) => string | undefined;
  readdir: (dir: string) => string[];
}

export const nodeRootFs: RootFs = {
  path,
  realpath: (dir) => realpathSync.native(dir),
  identity: (file) => {
    try {
      const stat = lstatSync(file, { bigint: true });
      return `${stat.dev}:${stat.ino}`;
    } catch {
      return undefined;
    }
  },
  readdir: (dir) => readdirSync(dir),
};

function swapCase(name: string): string {
  return [...name].map((c) => (c === c.toLowerCase() ? c.toUpperCase() : c.toLowerCase())).join("");
}

/**
 * Whether the file system holding `file`'s last name ignores case: the same name with its case
 * swapped names the same inode. Undefined when the name has no letter to swap.
 */
export function ignoresCase(file: string, fs: RootFs = nodeRootFs): boolean | undefined {
  const name = fs.path.basename(file);
  const swapped = swapCase(name);
  if (swapped === name) return undefined;
  const own = fs.identity(file);
  if (own === undefined) return undefined;
  return fs.identity(fs.path.join(fs.path.dirname(file), swapped)) === own;
}

/** `real` with every name spelt as its directory lists it (only where case is ignored). */
function storedSpelling(real: string, fs: RootFs): string {
  const { root } = fs.path.parse(real);
  const names = real.slice(root.length).split(fs.path.sep).filter(Boolean);
  // Windows drive letters: `c:\` and `C:\` are one drive; the upper case is what Windows shows.
  let spelt = fs.path === path.win32 ? root.toUpperCase() : root;
  for (const name of names) {
    let listed: string[] = [];
    try {
      listed = fs.readdir(spelt);
    } catch {
      // unreadable: keep the name as given
    }
    const match = listed.includes(name)
      ? name
      : listed.find((entry) => entry.toLowerCase() === name.toLowerCase());
    spelt = fs.path.join(spelt, match ?? name);
  }
  return spelt;
}

/** Probes from the root's own name upwards for one that has a letter to swap. */
function directoryIgnoresCase(real: string, fs: RootFs): boolean {
  for (let dir = real; dir !== fs.path.dirname(dir); dir = fs.path.dirname(dir)) {
    const answer = ignoresCase(dir, fs);
    if (answer !== undefined) return answer;
  }
  return false;
}

/** The one spelling of an existing directory (throws, naming it, when it cannot be resolved). */
export function canonicalRoot(dir: string, fs: RootFs = nodeRootFs): string {
  const real = fs.realpath(fs.path.resolve(dir));
  return directoryIgnoresCase(real, fs) ? storedSpelling(real, fs) : real;
}

/** `canonicalRoot` of a directory created first when missing (what sessions persist into). */
export function ensureCanonicalRoot(dir: string): string {
  mkdirSync(dir, { recursive: true });
  return canonicalRoot(dir);
}

/** Two paths name the same directory, however spelt (compared as `canonicalRootIfExists`). */
export function sameDirectory(a: string, b: string, fs: RootFs = nodeRootFs): boolean {
  return a === b || canonicalRootIfExists(a, fs) === canonicalRootIfExists(b, fs);
}

/**
 * `canonicalRoot` where the directory exists; otherwise the nearest existing ancestor's,
 * with the rest appended as given (what `storage-owner` reports for a root not created yet).
 */
export function canonicalRootIfExists(dir: string, fs: RootFs = nodeRootFs): string {
  const resolved = fs.path.resolve(dir);
  const rest: string[] = [];
  for (let at = resolved; ; at = fs.path.dirname(at)) {
    try {
      return fs.path.join(canonicalRoot(at, fs), ...rest.reverse());
    } catch {
      if (at === fs.path.dirname(at)) return resolved;
      rest.push(fs.path.basename(at));
    }
  }
}
