import { DurableObject, WorkflowEntrypoint } from "cloudflare:workers";
import { createHandler } from "../../shared/handler.js";

// A SQLite-backed Durable Object counter, as in Cloudflare's hello-world-do template.
export class Counter extends DurableObject {
  async increment() {
    const count = ((await this.ctx.storage.get("count")) ?? 0) + 1;
    await this.ctx.storage.put("count", count);
    return count;
  }
}

// A one-step Workflow whose instances (and their output) persist.
export class Greeting extends WorkflowEntrypoint {
  async run(event, step) {
    return step.do("greet", async () => `hello ${event.payload.name}`);
  }
}

const json = (value, status = 200) =>
  new Response(JSON.stringify(value), { status, headers: { "content-type": "application/json" } });

const shared = createHandler("counter");

export default {
  async fetch(request, env, ctx) {
    const url = new URL(request.url);
    const [, area, key] = url.pathname.split("/");
    if (area === "do" && key && request.method === "POST") {
      const count = await env.COUNTER.get(env.COUNTER.idFromName(key)).increment();
      return json({ count });
    }
    if (area === "cache" && key && request.method === "POST") {
      // A counter kept only in the Cache API: each call reads the cached value and caches value + 1.
      const cacheKey = new Request(`https://counter.example/${key}`);
      const cached = await caches.default.match(cacheKey);
      const count = (cached ? Number(await cached.text()) : 0) + 1;
      await caches.default.put(
        cacheKey,
        new Response(String(count), { headers: { "cache-control": "max-age=86400" } }),
      );
      return json({ count });
    }
    if (area === "workflow" && key && request.method === "POST") {
      const instance = await env.GREETING.create({ id: key, params: { name: key } });
      return json({ id: instance.id });
    }
    if (area === "workflow" && key) {
      const status = await (await env.GREETING.get(key)).status();
      return json(status);
    }
    return shared.fetch(request, env, ctx);
  },
};
