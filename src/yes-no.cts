// How we read a yes/no value, in `--x-shared-storage=<v>` and `WRANGLER_X_SHARED_STORAGE`.
// CommonJS and dependency-free: the register (register.cts) loads it in every Node process where
// the env var is set, so it must cost nothing and resolve no wrangler.

const TRUE = ["true", "1", "yes", "on"];
const FALSE = ["false", "0", "no", "off", ""];

/** A yes/no value as we accept it, or undefined if it is neither. */
export function yesNo(value: string): boolean | undefined {
  const lower = value.toLowerCase();
  if (TRUE.includes(lower)) return true;
  if (FALSE.includes(lower)) return false;
  return undefined;
}
