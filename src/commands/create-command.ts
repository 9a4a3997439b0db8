// One declarative object per command, in the shape of wrangler's own `createCommand`.
import type { InferredOptionTypes, Options } from "yargs";

export interface CommandDefinition<A extends Record<string, Options>> {
  /** The sub-command word, e.g. "status". */
  command: string;
  metadata: {
    description: string;
    examples: [command: string, description: string][];
    epilogue?: string;
  };
  args: A;
  /** Resolves to the exit code. */
  handler: (args: InferredOptionTypes<A>) => Promise<number>;
}

export function createCommand<A extends Record<string, Options>>(
  definition: CommandDefinition<A>,
): CommandDefinition<A> {
  return definition;
}

/** Errors a user can act on: printed as one clear message, no stack, exit code 1. */
export class UserError extends Error {}
