// The one place an unknown thrown value is read as a Node.js system error.

/** The errno code of a Node.js system error (`ENOENT`, `EPERM`…), if it is one. */
export function errnoCode(error: unknown): string | undefined {
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  return typeof code === "string" ? code : undefined;
}

/** For messages: the errno code, or else the error itself as text. */
export function errorCode(error: unknown): string {
  return errnoCode(error) ?? String(error);
}
