// One small HTTP API over the three shared storage kinds and the Cache API. Every example worker
// serves it under its own name, so requests show which session answered and what all of them see.
let tableReady;

async function ensureTable(db) {
  // Normally the migration creates it; this keeps a fresh persist root usable without one.
  // A failed attempt is forgotten, so the next request tries again.
  tableReady ??= db
    .prepare(
      "CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY AUTOINCREMENT, who TEXT NOT NULL, at TEXT NOT NULL)",
    )
    .run()
    .catch((error) => {
      tableReady = undefined;
      throw error;
    });
  await tableReady;
}

const json = (value, status = 200) =>
  new Response(JSON.stringify(value), { status, headers: { "content-type": "application/json" } });

export function createHandler(workerName) {
  return {
    async fetch(request, env) {
      const url = new URL(request.url);
      const [, area, key] = url.pathname.split("/");
      try {
        if (area === "whoami") return json({ worker: workerName });
        if (area === "d1" && key === "insert" && request.method === "POST") {
          await ensureTable(env.DB);
          const who = url.searchParams.get("who") ?? workerName;
          const row = await env.DB.prepare("INSERT INTO items (who, at) VALUES (?, ?) RETURNING id")
            .bind(who, new Date().toISOString())
            .first();
          return json({ id: row.id, worker: workerName });
        }
        if (area === "d1" && key === "count") {
          await ensureTable(env.DB);
          const who = url.searchParams.get("who");
          const row = who
            ? await env.DB.prepare("SELECT COUNT(*) AS n FROM items WHERE who = ?")
                .bind(who)
                .first()
            : await env.DB.prepare("SELECT COUNT(*) AS n FROM items").first();
          return json({ count: row.n, worker: workerName });
        }
        if (area === "kv" && key) {
          if (request.method === "PUT") {
            await env.KV.put(key, await request.text());
            return json({ ok: true, worker: workerName });
          }
          const value = await env.KV.get(key);
          return value === null ? json({ error: "not found" }, 404) : new Response(value);
        }
        if (area === "r2" && key) {
          if (request.method === "PUT") {
            await env.BUCKET.put(key, await request.arrayBuffer());
            return json({ ok: true, worker: workerName });
          }
          const object = await env.BUCKET.get(key);
          return object === null ? json({ error: "not found" }, 404) : new Response(object.body);
        }
        if (area === "cache" && key) {
          // One cache per persist root, as with plain wrangler: every worker's caches.default.
          const cacheKey = new Request(`https://cache.example/${key}`);
          if (request.method === "PUT") {
            const headers = { "cache-control": "max-age=3600" };
            await caches.default.put(cacheKey, new Response(await request.text(), { headers }));
            return json({ ok: true, worker: workerName });
          }
          if (request.method === "DELETE")
            return json({ deleted: await caches.default.delete(cacheKey), worker: workerName });
          const cached = await caches.default.match(cacheKey);
          return cached ? new Response(cached.body) : json({ error: "not cached" }, 404);
        }
        return json(
          {
            error: "no such route",
            routes: [
              "/whoami",
              "POST /d1/insert",
              "/d1/count",
              "/kv/:key",
              "/r2/:key",
              "/cache/:key",
            ],
          },
          404,
        );
      } catch (error) {
        return json({ error: String(error?.message ?? error), worker: workerName }, 500);
      }
    },
  };
}
