/**
 * A halo server with the dashboard, in this process, on an ephemeral loopback port: over one
 * device (stories260K, every group local) or over a real loopback cluster of a coordinator and
 * in-process workers, the way `halo serve --local N` builds one (profiles measured, so the devices
 * table has figures). Also: an SSE reader for the dashboard's event stream.
 */
import assert from "node:assert/strict";
import { ClusterCoordinator, WorkerNode, modelSha256, type ClusterOptions } from "../../src/cluster/index.js";
import { Engine } from "../../src/engine/index.js";
import { ChatTemplate, loadModel } from "../../src/model/index.js";
import { HaloServer, TextGenerator, dashboardExtension } from "../../src/server/index.js";
import { stories260KPath, testKernels } from "../helpers/golden.js";

export interface DashboardServer {
  url: string;
  server: HaloServer;
  /** The cluster's coordinator, with more than one device. */
  coordinator: ClusterCoordinator | undefined;
  close(): Promise<void>;
}

const CLUSTER_KEY = Buffer.from("a dashboard test cluster key 32B");

export async function startDashboardServer(options: { nDevices: number; apiKey?: string; statusIntervalMs?: number; plan?: ClusterOptions["plan"] }): Promise<DashboardServer> {
  const cleanups: Array<() => Promise<void> | void> = [];
  const closeAll = async (): Promise<void> => {
    for (const cleanup of cleanups.reverse()) await cleanup();
  };
  try {
    const model = await loadModel(stories260KPath());
    cleanups.push(() => model.file.close());
    let coordinator: ClusterCoordinator | undefined;
    if (options.nDevices > 1) {
      const sha = modelSha256(stories260KPath());
      const workers: WorkerNode[] = [];
      for (let i = 1; i < options.nDevices; i++) {
        const workerModel = await loadModel(stories260KPath());
        const worker = await WorkerNode.start({ model: { file: workerModel.file, config: workerModel.config, sha256: sha }, kernels: testKernels(), clusterKey: CLUSTER_KEY, contextLength: 256 });
        cleanups.push(async () => {
          await worker.close();
          workerModel.file.close();
        });
        workers.push(worker);
      }
      coordinator = await ClusterCoordinator.connect({
        model, modelSha256: sha, clusterKey: CLUSTER_KEY, mode: "relaxed", wire: "f32",
        workers: workers.map((w) => ({ host: "127.0.0.1", port: w.tcpPort })),
        profileKernels: [testKernels()],
        plan: options.plan,
      });
      const connected = coordinator;
      cleanups.push(() => connected.close());
    }
    const engine = new Engine(model.config, model.weights, { kernels: testKernels(), contextLength: 256, synchronizer: coordinator });
    const generator = new TextGenerator({ modelId: "stories260K", engine, tokenizer: model.tokenizer, chatTemplate: ChatTemplate.fromGguf(model.file.metadata), sampling: { temperature: 0.8, topK: 40, topP: 0.95, minP: 0.05 }, cluster: coordinator });
    const server = await HaloServer.create({ generator, apiKey: options.apiKey, extensions: [dashboardExtension({ statusIntervalMs: options.statusIntervalMs })] });
    cleanups.push(() => server.close());
    const { url } = await server.listen("127.0.0.1", 0);
    return { url, server, coordinator, close: closeAll };
  } catch (error) {
    await closeAll();
    throw error;
  }
}

export interface SseEvent {
  event: string;
  data: string;
}

/** Reads server-sent events from a fetch response, one `next()` at a time. */
export class SseReader {
  readonly #reader: ReadableStreamDefaultReader<string>;
  #buffer = "";
  readonly #ready: SseEvent[] = [];

  constructor(response: Response) {
    assert.ok(response.body !== null);
    this.#reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  }

  /** The next event; fails when the stream ends first or none comes within `limitMs`. */
  async next(limitMs = 10_000): Promise<SseEvent> {
    const until = performance.now() + limitMs;
    while (this.#ready.length === 0) {
      const left = until - performance.now();
      assert.ok(left > 0, `no event within ${limitMs} ms`);
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`no event within ${limitMs} ms`)), left)));
      const { value, done } = await Promise.race([this.#reader.read(), timeout]).finally(() => clearTimeout(timer));
      assert.ok(!done, "the event stream ended");
      this.#buffer += value;
      let end: number;
      while ((end = this.#buffer.indexOf("\n\n")) >= 0) {
        const block = this.#buffer.slice(0, end);
        this.#buffer = this.#buffer.slice(end + 2);
        const lines = block.split("\n");
        const event = lines.find((l) => l.startsWith("event: "))?.slice(7) ?? "message";
        const data = lines.filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n");
        this.#ready.push({ event, data });
      }
    }
    return this.#ready.shift()!;
  }

  /** Skips events until one named `name` comes. */
  async nextOf(name: string, limitMs = 10_000): Promise<SseEvent> {
    const until = performance.now() + limitMs;
    for (;;) {
      const event = await this.next(Math.max(1, until - performance.now()));
      if (event.event === name) return event;
    }
  }

  async cancel(): Promise<void> {
    await this.#reader.cancel();
  }
}
