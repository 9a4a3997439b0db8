// `wrangler storage-owner …`: parsed by yargs, one declarative command per file.
import type { Argv, Options } from "yargs";
import yargs from "yargs";
import { type CommandDefinition, UserError } from "../create-command.js";
import { gcCommand } from "./gc.js";
import { statusCommand } from "./status.js";
import { stopCommand } from "./stop.js";

// Each definition's handler is typed by its own args; the registry only needs the shape.
export const COMMANDS = [statusCommand, stopCommand, gcCommand] as unknown as CommandDefinition<
  Record<string, Options>
>[];

export async function runStorageOwnerCli(argv: string[]): Promise<void> {
  let exitCode = 0;
  const register = (y: Argv) => {
    for (const command of COMMANDS) {
      y.command(
        command.command,
        command.metadata.description,
        (sub: Argv) => {
          sub.options(command.args).strictOptions();
          for (const [example, description] of command.metadata.examples)
            sub.example(example, description);
          if (command.metadata.epilogue) sub.epilogue(command.metadata.epilogue);
          return sub;
        },
        async (args) => {
          exitCode = await command.handler(args as never);
        },
      );
    }
    return y
      .demandCommand(1, "Name a storage-owner command: status, stop or gc.")
      .example(
        "wrangler storage-owner status",
        "Who owns storage for this project, and who is connected",
      )
      .epilogue(
        "Storage owners are started by `wrangler dev --x-shared-storage`. See docs/experimental.md.",
      );
  };
  try {
    await yargs(argv)
      .scriptName("wrangler")
      .command(
        "storage-owner",
        "Inspect and manage the shared-storage owner processes of local dev",
        register,
      )
      .demandCommand(1)
      .strict()
      .help()
      .version(false)
      .wrap(Math.min(110, process.stdout.columns || 110))
      .fail((message, error, y) => {
        if (error) throw error;
        y.showHelp((help: string) => console.error(help));
        console.error(`\n✘ [ERROR] ${message}`);
        process.exit(1);
      })
      .parseAsync();
  } catch (error) {
    if (error instanceof UserError) {
      console.error(`✘ [ERROR] ${error.message}`);
      exitCode = 1;
    } else {
      throw error;
    }
  }
  process.exitCode = exitCode;
}
