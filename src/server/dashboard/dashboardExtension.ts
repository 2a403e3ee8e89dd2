/**
 * The live dashboard, mounted by `halo serve` through the server's extension hook:
 *   GET /                   the page (public: it holds no data, only code)
 *   GET /dashboard/app.js   its script, /dashboard/app.css its style (public likewise)
 *   GET /dashboard/events   server-sent events: `snapshot` on connect, then `token`, `end`, and
 *                           `status` every second; under the API's key rule like every data route.
 * The server accepts the key only as `Authorization: Bearer`, which EventSource cannot send, so
 * the page reads this stream with fetch and sends the key it keeps in localStorage.
 */
import type { ServerResponse } from "node:http";
import type { FastifyInstance } from "fastify";
import type { ServerContext } from "../serverContext.js";
import { DashboardFeed } from "./dashboardFeed.js";
import { DASHBOARD_CSP, DASHBOARD_CSS, DASHBOARD_HTML } from "./dashboardPage.js";
import { DASHBOARD_SCRIPT } from "./dashboardScript.js";

export interface DashboardOptions {
  /** Between two status events, ms. Defaults to 1,000. */
  statusIntervalMs?: number;
}

/** A page that stops reading gets cut off rather than buffered without bound. */
const MAX_BUFFERED_BYTES = 1 << 20;

export function dashboardExtension(options: DashboardOptions = {}): (app: FastifyInstance, context: ServerContext) => void {
  return (app, context) => {
    const feed = new DashboardFeed(context, options.statusIntervalMs);
    const streams = new Set<ServerResponse>();
    const asset = (path: string, type: string, body: string): void => {
      app.get(path, { config: { public: true } }, async (_request, reply) => reply.type(type).header("content-security-policy", DASHBOARD_CSP).header("x-content-type-options", "nosniff").send(body));
    };
    asset("/", "text/html; charset=utf-8", DASHBOARD_HTML);
    asset("/dashboard/app.js", "text/javascript; charset=utf-8", DASHBOARD_SCRIPT);
    asset("/dashboard/app.css", "text/css; charset=utf-8", DASHBOARD_CSS);

    app.get("/dashboard/events", async (request, reply) => {
      reply.hijack();
      const res = reply.raw;
      res.writeHead(200, { "content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache", connection: "keep-alive", "x-accel-buffering": "no" });
      const send = (type: string, data: unknown): void => {
        if (res.destroyed) return;
        res.write(`event: ${type}\ndata: ${JSON.stringify(data)}\n\n`);
        if (res.writableLength > MAX_BUFFERED_BYTES) res.destroy();
      };
      send("snapshot", feed.snapshot());
      const stop = feed.listen((event) => send(event.type, event.data));
      streams.add(res);
      res.once("close", () => {
        stop();
        streams.delete(res);
        request.log.debug("dashboard stream closed");
      });
    });

    // Event streams never end on their own: end them first so that close() need not wait them out.
    app.addHook("preClose", async () => {
      for (const res of streams) res.end();
    });
  };
}
