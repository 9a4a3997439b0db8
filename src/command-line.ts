// How wrangler reads a command line, as far as we need it: which command it names, our flag, and
// the few options that decide whether and where it opens local storage. Parsed by yargs-parser
// (the parser yargs, and so wrangler, uses) with wrangler 4.x's global options declared, so that
// `wrangler -c api/wrangler.jsonc dev` names `dev`. This runs on every command: it imports
// yargs-parser alone (4 small modules), not `yargs/helpers`, which also loads yargs' i18n and
// terminal layout (~30 modules).
import parse from "yargs-parser";
import { SHARED_STORAGE_ENV, SHARED_STORAGE_FLAG } from "./environment.js";
import { yesNo } from "./yes-no.cjs";

/** wrangler 4.x's global options (`createCLIParser` in wrangler-dist/cli.js), by type. */
const GLOBAL_STRING_OPTIONS = ["config", "cwd", "env", "profile"];
const GLOBAL_BOOLEAN_OPTIONS = [
  "help",
  "version",
  "install-skills",
  "experimental-provision",
  "experimental-auto-create",
];
const GLOBAL_ALIASES: Record<string, string[]> = {
  config: ["c"],
  env: ["e"],
  help: ["h"],
  version: ["v"],
  "experimental-provision": ["x-provision"],
  "experimental-auto-create": ["x-auto-create"],
};
/** Command options that decide whether and where a command opens local storage. */
const COMMAND_BOOLEAN_OPTIONS = ["remote", "local", "disable-dev-registry"];

export interface CommandLine {
  /** Positional words, the command's first: `["d1", "migrations", "apply", "db"]`. */
  words: string[];
  /** --x-shared-storage as given (true, false), or undefined when absent. */
  flag: boolean | undefined;
  /** argv without our flag (and the `true`/`false` that belongs to it): what wrangler gets. */
  args: string[];
  options: {
    remote?: boolean;
    local?: boolean;
    disableDevRegistry?: boolean;
    /** --help or --version: wrangler prints and exits, opening nothing. */
    helpOrVersion: boolean;
    persistTo?: string;
    config?: string;
    cwd?: string;
  };
  /** A problem with our flag's value, e.g. `--x-shared-storage=maybe`. */
  problem?: string;
}

const FLAG = `--${SHARED_STORAGE_FLAG}`;

function lastString(value: unknown): string | undefined {
  const last: unknown = Array.isArray(value) ? value[value.length - 1] : value;
  return typeof last === "string" ? last : undefined;
}

function optionalBoolean(value: unknown): boolean | undefined {
  return typeof value === "boolean" ? value : undefined;
}

export function parseCommandLine(argv: string[]): CommandLine {
  const end = argv.indexOf("--");
  const options = end === -1 ? argv : argv.slice(0, end);
  // An `--experimental-*`/`--x-*` option we do not know is a switch: declaring it boolean keeps
  // yargs-parser from taking the command that follows it as its value.
  const switches = options
    .filter((arg) => /^--(experimental|x)-[\w-]+$/.test(arg))
    .map((arg) => arg.slice(2));
  const parsed = parse(argv, {
    boolean: [
      SHARED_STORAGE_FLAG,
      ...GLOBAL_BOOLEAN_OPTIONS,
      ...COMMAND_BOOLEAN_OPTIONS,
      ...switches,
    ],
    string: [...GLOBAL_STRING_OPTIONS, "persist-to"],
    array: ["env-file"],
    alias: { ...GLOBAL_ALIASES, remote: ["r"] },
    configuration: {
      "camel-case-expansion": false,
      "duplicate-arguments-array": false,
      "parse-numbers": false,
      "parse-positional-numbers": false,
      "populate--": true,
    },
  });
  let problem: string | undefined;
  let flag: boolean | undefined;
  const args: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (end !== -1 && i >= end) {
      args.push(arg);
      continue;
    }
    // The last occurrence wins, as in yargs.
    if (arg === FLAG) {
      // yargs-parser, like wrangler's yargs, takes a following true/false as the switch's value
      // (declared boolean above, so it takes nothing else).
      const next = argv[i + 1];
      flag = next !== "false";
      if (next === "true" || next === "false") i++;
    } else if (arg.startsWith(`${FLAG}=`)) {
      const value = arg.slice(FLAG.length + 1);
      flag = yesNo(value);
      if (flag === undefined)
        problem = `${FLAG} takes true or false, not ${JSON.stringify(value)}.`;
    } else if (arg === `--no-${SHARED_STORAGE_FLAG}`) {
      flag = false;
    } else {
      args.push(arg);
    }
  }
  return {
    words: parsed._.map(String),
    flag,
    args,
    options: {
      remote: optionalBoolean(parsed.remote),
      local: optionalBoolean(parsed.local),
      disableDevRegistry: optionalBoolean(parsed["disable-dev-registry"]),
      helpOrVersion: parsed.help === true || parsed.version === true,
      persistTo: lastString(parsed["persist-to"]),
      config: lastString(parsed.config),
      cwd: lastString(parsed.cwd),
    },
    problem,
  };
}

/** WRANGLER_X_SHARED_STORAGE: on, off, or a problem to report for commands it applies to. */
export function envFlag(env: NodeJS.ProcessEnv): boolean | { problem: string } {
  const raw = env[SHARED_STORAGE_ENV];
  if (raw === undefined) return false;
  return (
    yesNo(raw.trim()) ?? {
      problem: `${SHARED_STORAGE_ENV} takes true or false, not ${JSON.stringify(raw)}.`,
    }
  );
}
