/**
 * The dashboard's routes: the page and its assets (self-contained, public), and the event stream
 * (under the API key rule): a snapshot with devices, links and placement on connect, then a token
 * event per generated token and a periodic status, on one device and on a 2-device cluster.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import type { DashboardSnapshot, TokenSample, ClusterStatus } from "../../src/server/index.js";
import { SseReader, startDashboardServer } from "./dashboardHarness.js";
import { postJson } from "./serverHarness.js";

const chat = { model: "stories260K", messages: [{ role: "user", content: "Once upon a time" }], max_tokens: 6, temperature: 0 };

test("GET / serves the page, its script and its style from this server only, without the API key", async () => {
  const dash = await startDashboardServer({ nDevices: 1, apiKey: "sesame" });
  try {
    const page = await fetch(`${dash.url}/`);
    assert.equal(page.status, 200);
    assert.equal(page.headers.get("content-type"), "text/html; charset=utf-8");
    assert.match(page.headers.get("content-security-policy") ?? "", /default-src 'self'/);
    const html = await page.text();
    assert.match(html, /<script type="module" src="\/dashboard\/app\.js"><\/script>/);
    assert.match(html, /href="\/dashboard\/app\.css"/);
    const served = [["/", html]];
    for (const [path, type] of [["/dashboard/app.js", "text/javascript; charset=utf-8"], ["/dashboard/app.css", "text/css; charset=utf-8"]] as const) {
      const response = await fetch(dash.url + path);
      assert.equal(response.status, 200, path);
      assert.equal(response.headers.get("content-type"), type, path);
      served.push([path, await response.text()]);
    }
    for (const [path, text] of served) {
      assert.ok(text!.length > 500, `${path} is too short to be the real thing`);
      assert.doesNotMatch(text!, /https?:\/\//, `${path} refers to another origin`);
    }
    // The script reads the stream with fetch (EventSource cannot send the key) and sends it as Bearer.
    assert.match(served[1]![1]!, /fetch\("\/dashboard\/events"/);
    assert.match(served[1]![1]!, /"Bearer "/);

    const refused = await fetch(`${dash.url}/dashboard/events`);
    assert.equal(refused.status, 401);
    assert.equal(((await refused.json()) as { error: { code: string } }).error.code, "invalid_api_key");
    const inQuery = await fetch(`${dash.url}/dashboard/events?key=sesame`);
    assert.equal(inQuery.status, 401, "a key in the query string does not count, as for the API");
    await inQuery.body?.cancel();
    const accepted = await fetch(`${dash.url}/dashboard/events`, { headers: { authorization: "Bearer sesame" } });
    assert.equal(accepted.status, 200);
    assert.equal(accepted.headers.get("content-type"), "text/event-stream; charset=utf-8");
    const events = new SseReader(accepted);
    assert.equal((await events.next()).event, "snapshot");
    await events.cancel();
  } finally {
    await dash.close();
  }
});

test("on one device: a snapshot of the device and its placement, then token, end and status events", async () => {
  const dash = await startDashboardServer({ nDevices: 1, statusIntervalMs: 100 });
  try {
    const events = new SseReader(await fetch(`${dash.url}/dashboard/events`));
    const first = await events.next();
    assert.equal(first.event, "snapshot");
    const snapshot = JSON.parse(first.data) as DashboardSnapshot;
    assert.equal(snapshot.model, "stories260K");
    assert.deepEqual(snapshot.devices, [{ index: 0, name: "this machine", attentionGroupMs: null, ffnGroupMs: null, memoryBudgetBytes: null, status: "active" }]);
    assert.deepEqual(snapshot.links, []);
    assert.equal(snapshot.placement.nDevices, 1);
    assert.equal(snapshot.placement.layers.length, 5, "stories260K has 5 layers");
    assert.equal(snapshot.placement.layers[0]!.attention.length, 4, "one attention group per KV head");
    assert.ok(snapshot.placement.layers.every((l) => [...l.attention, ...l.ffn].every((d) => d === 0)));
    assert.deepEqual(snapshot.recentTokens, []);

    const reply = await postJson(`${dash.url}/v1/chat/completions`, chat);
    assert.equal(reply.status, 200);
    const tokens: TokenSample[] = [];
    for (let i = 1; i <= 6; i++) {
      const token = JSON.parse((await events.nextOf("token")).data) as TokenSample;
      assert.equal(token.index, i);
      assert.equal(token.syncWaitMs, 0, "a single node waits for no one");
      assert.ok(token.ms > 0 && Math.abs(token.computeMs - token.ms) < 1e-9, JSON.stringify(token));
      tokens.push(token);
    }
    const end = JSON.parse((await events.nextOf("end")).data) as { id: string; completionTokens: number };
    assert.deepEqual([end.id, end.completionTokens], [tokens[0]!.id, 6]);
    const status = JSON.parse((await events.nextOf("status")).data) as ClusterStatus;
    assert.equal(status.devices.length, 1);
    assert.deepEqual(status.queue, { active: 0, waiting: 0, capacity: 16 });

    // A page opened later sees the tokens so far in its snapshot.
    const late = new SseReader(await fetch(`${dash.url}/dashboard/events`));
    assert.equal((JSON.parse((await late.next()).data) as DashboardSnapshot).recentTokens.length, 6);
    await late.cancel();
    await events.cancel();
  } finally {
    await dash.close();
  }
});

test("on a 2-device cluster: devices with profiles, the worker's link, the split placement, per-token sync wait", { timeout: 60_000 }, async () => {
  const dash = await startDashboardServer({ nDevices: 2, statusIntervalMs: 200 });
  try {
    const events = new SseReader(await fetch(`${dash.url}/dashboard/events`));
    const snapshot = JSON.parse((await events.next()).data) as DashboardSnapshot;
    assert.equal(snapshot.devices.length, 2);
    for (const device of snapshot.devices) {
      assert.equal(device.status, "active");
      assert.ok(device.attentionGroupMs! > 0 && device.ffnGroupMs! > 0 && device.memoryBudgetBytes! > 0, JSON.stringify(device));
    }
    assert.equal(snapshot.links.length, 1);
    assert.equal(snapshot.links[0]!.worker, 1);
    assert.match(snapshot.links[0]!.address, /^127\.0\.0\.1:\d+$/);
    assert.equal(snapshot.links[0]!.state, "active");
    assert.equal(snapshot.placement.nDevices, 2);
    const owners = new Set(snapshot.placement.layers.flatMap((l) => [...l.attention, ...l.ffn]));
    assert.deepEqual([...owners].sort(), [0, 1], "both devices own groups");

    const reply = await postJson(`${dash.url}/v1/chat/completions`, chat);
    assert.equal(reply.status, 200);
    const tokens: TokenSample[] = [];
    for (let i = 0; i < 6; i++) tokens.push(JSON.parse((await events.nextOf("token")).data) as TokenSample);
    assert.deepEqual(tokens.map((t) => t.index), [1, 2, 3, 4, 5, 6]);
    for (const t of tokens) assert.ok(t.syncWaitMs >= 0 && t.computeMs >= 0 && Math.abs(t.computeMs + t.syncWaitMs - t.ms) < 1e-6, JSON.stringify(t));
    assert.ok(tokens.some((t) => t.syncWaitMs > 0), "a worker's partial sums are waited for");
    const status = JSON.parse((await events.nextOf("status")).data) as ClusterStatus;
    assert.equal(status.links.length, 1);
    assert.ok(status.links[0]!.rttMs === null || status.links[0]!.rttMs >= 0);
    assert.ok(status.totals.expectedContributions > 0);
    await events.cancel();
  } finally {
    await dash.close();
  }
});

test("a live re-plan shows: a placement event carries the new grid", { timeout: 60_000 }, async () => {
  const dash = await startDashboardServer({
    nDevices: 2, statusIntervalMs: 50,
    // Uniform at join; the requested re-plan moves the worker's FFN blocks to the coordinator.
    plan: (_profiles, context) => (context === undefined ? undefined : { placement: { nDevices: 2, layers: context.current.layers.map((l) => ({ attention: [...l.attention], ffn: l.ffn.map(() => 0) })) } }),
  });
  try {
    const events = new SseReader(await fetch(`${dash.url}/dashboard/events`));
    const snapshot = JSON.parse((await events.next()).data) as DashboardSnapshot;
    assert.ok(snapshot.placement.layers.some((l) => l.ffn.includes(1)));
    dash.coordinator!.requestReplan();
    assert.equal((await postJson(`${dash.url}/v1/chat/completions`, { ...chat, max_tokens: 12 })).status, 200);
    const placement = JSON.parse((await events.nextOf("placement")).data) as DashboardSnapshot["placement"];
    assert.equal(dash.coordinator!.liveReplans.length, 1);
    assert.ok(placement.layers.every((l) => l.ffn.every((d) => d === 0)));
    assert.deepEqual(placement.layers.map((l) => l.attention), snapshot.placement.layers.map((l) => l.attention));
    await events.cancel();
  } finally {
    await dash.close();
  }
});
