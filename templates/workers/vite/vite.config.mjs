import { cloudflare } from "@cloudflare/vite-plugin";
import { defineConfig } from "vite";

// Shares storage with the wrangler sessions when started with
//   NODE_OPTIONS="--require shared-storage-wrangler/register" vite dev
// Nothing here is specific to that: the persist directory is the one the others use.
export default defineConfig({
  plugins: [
    cloudflare({
      persistState: { path: process.env.X_PERSIST_TO ?? "../../.wrangler/state" },
    }),
  ],
});
