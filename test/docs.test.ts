// docs/experimental.md describes what the code does today: every command, flag and environment
// variable it names exists (wrangler's own commands checked against wrangler's command tree).
import { readFileSync, readdirSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { parseCommandLine } from "../src/command-line.js";
import { COMMANDS } from "../src/commands/storage-owner/index.js";
import { REPO, Sandbox } from "./harness/sandbox.js";

interface Node {
  definition?: { args?: Record<string, { alias?: string | string[] }> };
  subtree: Map<string, Node>;
}

const docs = ["docs/experimental.md", "README.md"]
  .map((f) => readFileSync(path.join(REPO, f), "utf8"))
  .join("\n");
const wrangler = createRequire(path.join(REPO, "package.json"))("wrangler") as {
  experimental_getWranglerCommands: () => { registry: Node; globalFlags: Record<string, unknown> };
};
const { registry, globalFlags } = wrangler.experimental_getWranglerCommands();

function flagNames(args: Record<string, { alias?: string | string[] }> = {}): Set<string> {
  return new Set(Object.entries(args).flatMap(([name, a]) => [name, ...[a.alias ?? []].flat()]));
}

const STORAGE_OWNER_COMMANDS = ["status", "stop", "gc"];

/**
 * The flags docs/experimental.md and README name for each storage-owner command: in every
 * `wrangler storage-owner status|stop|gc …` invocation (bracketed ones too), in its section
 * (`### stop`), and for all three in the section's introduction (the scope flags).
 */
function storageOwnerFlags(): Map<string, Set<string>> {
  const named = new Map(STORAGE_OWNER_COMMANDS.map((c) => [c, new Set<string>()]));
  const add = (commands: string[], text: string) => {
    for (const flag of text.matchAll(/--([a-z][a-z-]*)/g))
      for (const command of commands) named.get(command)?.add(flag[1]!);
  };
  for (const match of docs.matchAll(/wrangler storage-owner ([a-z|]+)([^`\n]*)/g))
    add(match[1]!.split("|"), match[2]!);
  const guide = readFileSync(path.join(REPO, "docs/experimental.md"), "utf8");
  const section = (heading: string) => {
    const start = guide.indexOf(`\n${heading}\n`);
    expect(start, heading).toBeGreaterThan(-1);
    const rest = guide.slice(start + heading.length + 2);
    return rest.slice(0, rest.search(/\n##/) + 1 || undefined);
  };
  add(STORAGE_OWNER_COMMANDS, section("## `wrangler storage-owner`"));
  for (const command of STORAGE_OWNER_COMMANDS) add([command], section(`### ${command}`));
  return named;
}

/** Every `wrangler …` invocation in code blocks and code spans. */
function invocations(): string[][] {
  const found: string[][] = [];
  for (const match of docs.matchAll(/(?:`|\$ |npx )wrangler((?: +[^\s`|]+)+)/g)) {
    found.push(match[1]!.trim().split(/\s+/));
  }
  return found;
}

describe("docs/experimental.md", () => {
  it("names only commands and flags that exist", () => {
    const checked: string[] = [];
    for (const tokens of invocations()) {
      // Read as our bin reads it: global options (`-c file`) may come before the command.
      const { words } = parseCommandLine(tokens);
      const flags = tokens.filter((t) => t.startsWith("--")).map((t) => t.slice(2).split("=")[0]!);
      // Checked against each command's real --help below, bracketed flags and "status|stop|gc" too.
      if (words[0] === "storage-owner") continue;
      let node: Node = registry;
      for (const word of words) {
        const next = node.subtree.get(word);
        if (!next) break;
        node = next;
      }
      expect(node, tokens.join(" ")).not.toBe(registry);
      const known = flagNames(node.definition?.args);
      for (const flag of flags) {
        const ok =
          known.has(flag) || flag in globalFlags || flag === "x-shared-storage" || flag === "help";
        expect(ok, `--${flag} in \`wrangler ${tokens.join(" ")}\``).toBe(true);
      }
      checked.push(tokens.join(" "));
    }
    expect(checked.length).toBeGreaterThan(8);
  });

  it("names only environment variables the code reads", () => {
    const source = readdirSync(path.join(REPO, "src"), { recursive: true })
      .filter((f) => /\.c?ts$/.test(String(f)))
      .map((f) => readFileSync(path.join(REPO, "src", String(f)), "utf8"))
      .join("\n");
    const named = new Set(docs.match(/\b(?:WRANGLER|CLOUDFLARE)_[A-Z_]+\b/g));
    expect(named.size).toBeGreaterThan(5);
    for (const name of named) expect(source, name).toContain(name);
  });
});

describe("--help of our commands", () => {
  const sandbox = new Sandbox();
  afterAll(() => sandbox.cleanup());
  it("every flag the docs and README name for status, stop and gc is in that command's --help", async () => {
    const named = storageOwnerFlags();
    for (const command of STORAGE_OWNER_COMMANDS) {
      const flags = [...named.get(command)!];
      // Each names its own flags and the scope flags (--persist-to, --config, --all) at least.
      expect(flags.length, command).toBeGreaterThan(3);
      const { code, stdout } = await sandbox.run(["storage-owner", command, "--help"]);
      expect(code).toBe(0);
      for (const flag of flags)
        expect(stdout, `--${flag} named for storage-owner ${command}`).toMatch(
          new RegExp(`(^|\\s)--${flag}\\b`, "m"),
        );
    }
  });
  it.each(COMMANDS.map((c) => [c.command, c.metadata.description] as const))(
    "storage-owner %s --help says what it does and shows an example",
    async (command, description) => {
      const { code, stdout } = await sandbox.run(["storage-owner", command, "--help"]);
      expect(code).toBe(0);
      expect(stdout).toContain(description);
      expect(stdout).toContain("Examples:");
      expect(stdout).toContain(`wrangler storage-owner ${command}`);
    },
  );
});
