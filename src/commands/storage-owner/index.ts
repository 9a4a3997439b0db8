export async function runStorageOwnerCli(args: string[]): Promise<void> {
  console.log(args);
}
