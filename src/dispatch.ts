// Entry of our `wrangler` bin. Decides "ours or not" from argv alone, importing nothing heavy:
// every command we do not add goes to the real wrangler unchanged, at the cost of this file.
import { envFlagEnabled, SHARED_STORAGE_FLAG } from "./environment.js";
import { runRealWrangler } from "./real-wrangler.js";

/** Local-storage commands that open the persist root's files and so can go through the owner. */
export const LOCAL_STORAGE_COMMANDS = [
  ["d1", "execute"],
  ["d1", "migrations", "apply"],
  ["kv", "key", "put"],
  ["kv", "key", "get"],
  ["kv", "key", "delete"],
  ["kv", "key", "list"],
  ["kv", "bulk", "put"],
  ["kv", "bulk", "delete"],
  ["r2", "object", "put"],
  ["r2", "object", "get"],
  ["r2", "object", "delete"],
] as const;

export type Route =
  | { kind: "passthrough"; args: string[] }
  | { kind: "storage-owner"; args: string[] }
  | { kind: "shared"; command: string; args: string[] }
  | { kind: "error"; message: string };

const FLAG = `--${SHARED_STORAGE_FLAG}`;

function flagValue(arg: string): boolean | undefined {
  if (arg === FLAG) return true;
  if (arg === `--no-${SHARED_STORAGE_FLAG}`) return false;
  if (arg.startsWith(`${FLAG}=`)) return !["false", "0", "no"].includes(arg.slice(FLAG.length + 1));
  return undefined;
}

/** The leading words of argv (`d1 migrations apply`), which is how wrangler names a command. */
function commandWords(args: string[]): string[] {
  const words: string[] = [];
  for (const arg of args) {
    if (arg.startsWith("-")) break;
    words.push(arg);
  }
  return words;
}

export function route(argv: string[], env: NodeJS.ProcessEnv): Route {
  const words = commandWords(argv);
  if (words[0] === "storage-owner") return { kind: "storage-owner", args: argv };
  let explicit: boolean | undefined;
  const args = argv.filter((arg) => {
    const value = flagValue(arg);
    if (value === undefined) return true;
    explicit = value;
    return false;
  });
  const enabled = explicit ?? envFlagEnabled(env);
  if (!enabled) return { kind: "passthrough", args: explicit === undefined ? argv : args };
  const command =
    words[0] === "dev"
      ? "dev"
      : LOCAL_STORAGE_COMMANDS.find((path) => path.every((word, i) => words[i] === word))?.join(
          " ",
        );
  if (command !== undefined) return { kind: "shared", command, args };
  if (explicit === undefined) return { kind: "passthrough", args: argv };
  return {
    kind: "error",
    message:
      `${FLAG} applies to \`wrangler dev\` and to the local storage commands ` +
      `(${LOCAL_STORAGE_COMMANDS.map((c) => c.join(" ")).join(", ")}), not to \`wrangler ${words.join(" ") || "(no command)"}\`.`,
  };
}

export async function main(argv: string[]): Promise<void> {
  const decided = route(argv, process.env);
  switch (decided.kind) {
    case "passthrough":
      return runRealWrangler(decided.args);
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
