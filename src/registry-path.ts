// Where wrangler and miniflare keep the dev registry, on each platform, derived as they derive it
// (wrangler 4.164.0 and miniflare 5.20261117.0-beta, both from workers-utils: `getRegistryPath`,
// `getGlobalConfigPath`, `xdgAppPaths`; miniflare's `resolveDevRegistryPath`):
//
//   CLOUDFLARE_DEV_REGISTRY_PATH        miniflare prefers it over whatever wrangler hands it
//   WRANGLER_REGISTRY_PATH              wrangler's setting, when present (even "")
//   ~/.wrangler/registry                when ~/.wrangler is a directory (wrangler's legacy home)
//   <config>/.wrangler/registry         otherwise, where <config> is $XDG_CONFIG_HOME when set, else
//                                         macOS:   ~/Library/Preferences
//                                         Windows: %APPDATA%\xdg.config (~\AppData\Roaming\xdg.config)
//                                         others:  ~/.config
//   <config>/cloudflare/dev-registry/v5 miniflare's own default, when wrangler's setting is ""
//
// Pure, so that every platform's case is unit-tested on any platform.
import path from "node:path";

export interface RegistryPathInputs {
  platform: NodeJS.Platform;
  env: Readonly<Record<string, string | undefined>>;
  /** The user's home directory as `os.homedir()` gives it on that platform. */
  homedir: string;
  isDirectory: (dir: string) => boolean;
}

/** Path rules of a platform: wrangler joins with node:path, which is path.win32 on Windows. */
export function pathRulesOf(platform: NodeJS.Platform): path.PlatformPath {
  return platform === "win32" ? path.win32 : path.posix;
}

/** xdg-app-paths' config home, as workers-utils' `xdgConfig()` computes it. */
export function xdgConfigHome({ platform, env, homedir }: RegistryPathInputs): string {
  const rules = pathRulesOf(platform);
  if (env.XDG_CONFIG_HOME) return env.XDG_CONFIG_HOME;
  if (platform === "darwin") return rules.join(homedir, "Library", "Preferences");
  if (platform === "win32")
    return rules.join(env.APPDATA || rules.join(homedir, "AppData", "Roaming"), "xdg.config");
  return rules.join(homedir, ".config");
}

/** The registry a `wrangler dev` started with these inputs registers in. */
export function registryPathFor(inputs: RegistryPathInputs): string {
  const { env, homedir, isDirectory, platform } = inputs;
  const rules = pathRulesOf(platform);
  if (env.CLOUDFLARE_DEV_REGISTRY_PATH) return rules.resolve(env.CLOUDFLARE_DEV_REGISTRY_PATH);
  const legacy = rules.join(homedir, ".wrangler");
  const wrangler =
    env.WRANGLER_REGISTRY_PATH ??
    rules.join(
      isDirectory(legacy) ? legacy : rules.join(xdgConfigHome(inputs), ".wrangler"),
      "registry",
    );
  if (wrangler) return rules.resolve(wrangler);
  // wrangler handed miniflare "": miniflare's default, which never looks at ~/.wrangler.
  return rules.resolve(xdgConfigHome(inputs), "cloudflare", "dev-registry", "v5");
}

/**
 * The home directory a process started with `env` sees (`os.homedir()` reads HOME on POSIX and
 * USERPROFILE on Windows before asking the system), so that an env meant for a child resolves
 * the child's registry.
 */
export function homedirFor(
  platform: NodeJS.Platform,
  env: Readonly<Record<string, string | undefined>>,
  systemHomedir: string,
): string {
  return (platform === "win32" ? env.USERPROFILE : env.HOME) || systemHomedir;
}
