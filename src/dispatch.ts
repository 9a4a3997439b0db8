// Entry of our `wrangler` bin. Decides "ours or not" from argv alone, importing nothing heavy:
// every command we do not add goes to the real wrangler unchanged, at the cost of this file.
import { type CommandLine, envFlag, parseCommandLine } from "./command-line.js";
import { SHARED_STORAGE_ENV, SHARED_STORAGE_FLAG } from "./environment.js";
import { DISPATCHED_ENV, runRealWrangler } from "./real-wrangler.js";
import type { DirectStorageUse } from "./dev/direct-access.js";

/**
 * Commands that open the persist root's files and work through the owner with the preload (each
 * is run beside a live dev session in local-commands.test.ts). A path names the command and,
 * when shorter, all its subcommands: `kv key` is `kv key put|get|delete|list`.
 */
export const LOCAL_STORAGE_COMMANDS = [
  ["d1", "execute"],
  ["d1", "export"],
  ["d1", "migrations", "apply"],
  ["d1", "migrations", "list"],
  ["kv", "key"],
  ["kv", "bulk"],
  ["r2", "object"],
  ["r2", "bulk", "put"],
  ["secrets-store", "secret"],
  ["flagship", "flags"],
] as const;

/**
 * Commands that open local storage files but that --x-shared-storage does not cover: while an
 * owner serves their root they get a warning (so does a command above run without the flag).
 * `hello-world` is wrangler's hidden example of a local command.
 */
export const DIRECT_STORAGE_COMMANDS = [["pages", "dev"], ["hello-world"]] as const;

/** flagship's local store is opt-in (`--local`); the others are local unless `--remote`. */
const LOCAL_ONLY_WITH_FLAG = ["flagship"];

export type Route =
  | {
      kind: "passthrough";
      args: string[];
      direct?: DirectStorageUse;
      /** `--x-shared-storage=false` (or `--no-…`) was given: no sharing, not even the register's. */
      off?: boolean;
    }
  | { kind: "storage-owner"; args: string[] }
  | { kind: "shared"; command: string; args: string[] }
  | { kind: "error"; message: string };

const FLAG = `--${SHARED_STORAGE_FLAG}`;

function matching(
  words: string[],
  commands: readonly (readonly string[])[],
): readonly string[] | undefined {
  return commands.find((path) => path.every((word, i) => words[i] === word));
}

/** Paths above that stand for all their subcommands. */
const GROUPS = ["kv key", "kv bulk", "r2 object", "secrets-store secret", "flagship flags"];

/** How we name the command a listed path matched: `kv key put` for `kv key put k v`. */
function commandName(words: string[], path: readonly string[]): string {
  const name = path.join(" ");
  const sub = words[path.length];
  return GROUPS.includes(name) && sub !== undefined ? `${name} ${sub}` : name;
}

function opensLocalStorage(line: CommandLine): boolean {
  const { remote, local } = line.options;
  if (LOCAL_ONLY_WITH_FLAG.includes(line.words[0] ?? "")) return local === true || remote === false;
  return remote !== true;
}

function directUse(line: CommandLine, cwd: string): DirectStorageUse | undefined {
  const sharable = line.words[0] === "dev" ? ["dev"] : matching(line.words, LOCAL_STORAGE_COMMANDS);
  const path = sharable ?? matching(line.words, DIRECT_STORAGE_COMMANDS);
  if (!path || line.options.helpOrVersion || !opensLocalStorage(line)) return undefined;
  return {
    command: commandName(line.words, path),
    sharable: sharable !== undefined,
    persistTo: line.options.persistTo,
    config: line.options.config,
    cwd: line.options.cwd ?? cwd,
  };
}

export function route(argv: string[], env: NodeJS.ProcessEnv, cwd = process.cwd()): Route {
  const line = parseCommandLine(argv);
  const { words } = line;
  if (words[0] === "storage-owner") return { kind: "storage-owner", args: argv };
  const path = words[0] === "dev" ? ["dev"] : matching(words, LOCAL_STORAGE_COMMANDS);
  const fromEnv = line.flag === undefined ? envFlag(env) : line.flag;
  if (line.problem) return { kind: "error", message: line.problem };
  if (typeof fromEnv === "object") {
    // A bad env value matters only to the commands it would turn the flag on for.
    if (path === undefined) return { kind: "passthrough", args: line.args };
    return { kind: "error", message: fromEnv.problem };
  }
  if (!fromEnv) {
    const off = line.flag === false ? { off: true } : {};
    return { kind: "passthrough", args: line.args, direct: directUse(line, cwd), ...off };
  }
  if (path !== undefined)
    return { kind: "shared", command: commandName(words, path), args: line.args };
  if (line.flag === undefined) return { kind: "passthrough", args: line.args };
  return {
    kind: "error",
    message:
      `${FLAG} applies to \`wrangler dev\` and to the local storage commands ` +
      `(${LOCAL_STORAGE_COMMANDS.map((c) => c.join(" ")).join(", ")}), not to \`wrangler ${words.slice(0, 3).join(" ") || "(no command)"}\`.`,
  };
}

/**
 * The register inside a real wrangler's own process, whose bin pnpm and yarn link as `wrangler`
 * instead of ours: a command line that needs us (our flag, `storage-owner`, a local storage
 * command beside a serving owner) is run by `main`, as our bin would; returns whether it was.
 * Everything else is left to that wrangler, untouched.
 */
export function takeOverRealWrangler(argv: string[], env = process.env): boolean {
  if (env[DISPATCHED_ENV] === String(process.ppid)) return false; // we started it: routed
  const decided = route(argv, env);
  const untouched =
    decided.kind === "passthrough" &&
    decided.direct === undefined &&
    decided.args.length === argv.length;
  if (untouched) return false;
  main(argv).catch((error: unknown) => {
    console.error(`✘ [ERROR] ${(error as Error).message}`);
    process.exitCode = 1;
  });
  return true;
}

/**
 * The register shares storage in this process (NODE_OPTIONS, pnpm's nodeOptions), and so in the
 * real wrangler we start, which inherits it: a command we pass through unflagged goes through the
 * owner all the same (src/register.cts sets the mark).
 */
function registerShares(): boolean {
  const mark = (globalThis as Record<symbol, unknown>)[
    Symbol.for("shared-storage-wrangler.register-shares")
  ];
  return mark === true;
}

export async function main(argv: string[]): Promise<void> {
  const decided = route(argv, process.env);
  switch (decided.kind) {
    case "passthrough":
      // Commands --x-shared-storage does not cover keep their warning: not shown to share.
      if (decided.direct && !(decided.direct.sharable && !decided.off && registerShares())) {
        const { warnIfOwnerServes } = await import("./dev/direct-access.js");
        warnIfOwnerServes(decided.direct);
      }
      return runRealWrangler(decided.args, {
        // Asked for no sharing: a register inherited through NODE_OPTIONS leaves it off too.
        env: decided.off ? { ...process.env, [SHARED_STORAGE_ENV]: "false" } : undefined,
      });
    case "storage-owner": {
      const { runStorageOwnerCli } = await import("./commands/storage-owner/index.js");
      return runStorageOwnerCli(decided.args);
    }
    case "shared": {
      const { runWithSharedStorage } = await import("./dev/shared-storage.js");
      return runWithSharedStorage(decided.command, decided.args);
    }
    case "error":
      console.error(`✘ [ERROR] ${decided.message}`);
      process.exitCode = 1;
  }
}
