/**
 * A halo server in this process on an ephemeral loopback port, serving stories260K, and the
 * official OpenAI client pointed at it. `phaseDelayMs` slows every layer phase (as a slow
 * network would), so a generation lasts long enough to queue behind or to abort mid-way.
 */
import assert from "node:assert/strict";
import OpenAI from "openai";
import { Engine, LocalSynchronizer, type PhaseStep, type Synchronizer } from "../../src/engine/index.js";
import { ChatTemplate, loadModel, type LoadedModel } from "../../src/model/index.js";
import { createGroupLayout, type GroupKind, type GroupRange } from "../../src/partition/index.js";
import { HaloServer, TextGenerator, type HaloServerOptions } from "../../src/server/index.js";
import { stories260KPath, testKernels } from "../helpers/golden.js";

/** Every group local, but each phase ends only after `delayMs` (a timer: the event loop runs meanwhile). */
class DelayedSynchronizer implements Synchronizer {
  constructor(private readonly inner: LocalSynchronizer, private readonly delayMs: number) {}
  localGroups(layerIndex: number, phase: GroupKind): readonly GroupRange[] {
    return this.inner.localGroups(layerIndex, phase);
  }
  beginPhase(step: PhaseStep): void {
    this.inner.beginPhase(step);
  }
  endPhase(): Promise<void> {
    return new Promise((resolve) => setTimeout(resolve, this.delayMs));
  }
}

export interface HarnessOptions extends Partial<Omit<HaloServerOptions, "generator">> {
  phaseDelayMs?: number;
  contextLength?: number;
  /** Instead of the model's (stories260K has none: the fallback). */
  chatTemplate?: ChatTemplate;
}

export interface Harness {
  url: string;
  model: LoadedModel;
  generator: TextGenerator;
  server: HaloServer;
  client: OpenAI;
  /** A client with another key (or none: "unused"). */
  clientWithKey(apiKey: string): OpenAI;
  /** GET /metrics as text. */
  metrics(): Promise<string>;
  close(): Promise<void>;
}

export const MODEL_ID = "stories260K";

export async function startServer(options: HarnessOptions = {}): Promise<Harness> {
  const model = await loadModel(stories260KPath());
  const layout = createGroupLayout(model.config);
  const synchronizer = options.phaseDelayMs === undefined ? undefined : new DelayedSynchronizer(new LocalSynchronizer(layout), options.phaseDelayMs);
  const engine = new Engine(model.config, model.weights, { kernels: testKernels(), contextLength: options.contextLength, synchronizer });
  const generator = new TextGenerator({ modelId: MODEL_ID, engine, tokenizer: model.tokenizer, chatTemplate: options.chatTemplate ?? ChatTemplate.fromGguf(model.file.metadata), sampling: { temperature: 0.8, topK: 40, topP: 0.95, minP: 0.05 } });
  const { phaseDelayMs: _delay, contextLength: _context, chatTemplate: _template, ...serverOptions } = options;
  const server = await HaloServer.create({ generator, ...serverOptions });
  const { url } = await server.listen("127.0.0.1", 0);
  const clientWithKey = (apiKey: string) => new OpenAI({ baseURL: `${url}/v1`, apiKey, maxRetries: 0, timeout: 30_000 });
  return {
    url, model, generator, server, clientWithKey,
    client: clientWithKey(options.apiKey ?? "unused"),
    metrics: async () => {
      const response = await fetch(`${url}/metrics`, { headers: options.apiKey === undefined ? {} : { authorization: `Bearer ${options.apiKey}` } });
      assert.equal(response.status, 200);
      return response.text();
    },
    close: async () => {
      await server.close();
      model.file.close();
    },
  };
}

/** The value of a sample line `name{labels} value` (labels matched as written, in order), or undefined. */
export function metricValue(text: string, name: string, labels = ""): number | undefined {
  const prefix = labels === "" ? `${name} ` : `${name}{${labels}} `;
  const line = text.split("\n").find((l) => l.startsWith(prefix));
  return line === undefined ? undefined : Number(line.slice(prefix.length));
}

/** Polls `read` every 10 ms until `done` holds of its value, failing after `limitMs`. */
export async function waitFor<T>(what: string, read: () => Promise<T>, done: (value: T) => boolean, limitMs = 10_000): Promise<T> {
  const until = performance.now() + limitMs;
  for (;;) {
    const value = await read();
    if (done(value)) return value;
    if (performance.now() > until) assert.fail(`${what}: still ${JSON.stringify(value)} after ${limitMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** POSTs `body` (an object is sent as JSON) and returns the status, headers and parsed JSON. */
export async function postJson(url: string, body: unknown, headers: Record<string, string> = {}): Promise<{ status: number; headers: Headers; json: unknown }> {
  const response = await fetch(url, { method: "POST", headers: { "content-type": "application/json", ...headers }, body: typeof body === "string" ? body : JSON.stringify(body) });
  return { status: response.status, headers: response.headers, json: await response.json() };
}
