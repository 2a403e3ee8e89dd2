/**
 * How long a live re-plan takes, and what it costs the tokens around it: a coordinator and three
 * workers (in this process, each with its own copy of the model file) generate on a synthetic
 * TinyLlama-1.1B-shape Q4_0 model (4 layers); after `killAt` tokens worker 3 is closed, the
 * coordinator re-plans on the leave and gives its groups to workers 1 and 2, which load them while
 * generation goes on. Reported: the time loading took (prepare), the stall at the switch
 * (activate), and ms per token before the leave, while the workers load, and after the switch.
 */
import { setTimeout as sleep } from "node:timers/promises";
import { ClusterCoordinator, WorkerNode, modelSha256, type ReplanContext } from "../../src/cluster/index.js";
import { Engine, argmax } from "../../src/engine/index.js";
import { createKernels } from "../../src/kernels/index.js";
import { loadModel } from "../../src/model/index.js";
import type { Placement } from "../../src/partition/index.js";
import { mean } from "../report.js";

export interface MigrationResult {
  groupsMoved: number;
  workersChanged: number;
  prepareMs: number;
  activateMs: number;
  /** Tokens generated while the workers loaded. */
  tokensWhilePreparing: number;
  msPerTokenBefore: number;
  msPerTokenPreparing: number;
  msPerTokenAfter: number;
}

/** The lost device's free groups go to the surviving workers in turn; everything else stays. */
function spreadLostGroups(context: ReplanContext): Placement {
  if (context.trigger.kind !== "leave") return context.current;
  const lost = context.trigger.device;
  const survivors = Array.from({ length: context.current.nDevices - 1 }, (_, i) => i + 1).filter((d) => d !== lost);
  let next = 0;
  const take = (d: number, pin: number): number => (pin >= 0 ? pin : d === lost ? survivors[next++ % survivors.length]! : d);
  return {
    nDevices: context.current.nDevices,
    layers: context.current.layers.map((layer, l) => ({
      attention: layer.attention.map((d, g) => take(d, context.pinned[l]!.attention[g]!)),
      ffn: layer.ffn.map((d, g) => take(d, context.pinned[l]!.ffn[g]!)),
    })),
  };
}

export async function benchMigration(modelPath: string, options: { nTokens?: number; killAt?: number } = {}): Promise<MigrationResult> {
  const nTokens = options.nTokens ?? 48;
  const killAt = options.killAt ?? 8;
  const kernels = createKernels({ nThreads: 1 });
  const sha256 = modelSha256(modelPath);
  const clusterKey = Buffer.from("bench: live re-plan cluster key!");
  const models = await Promise.all([0, 1, 2, 3].map(() => loadModel(modelPath)));
  const workers = await Promise.all(models.slice(1).map((m) => WorkerNode.start({ model: { file: m.file, config: m.config, sha256 }, kernels, clusterKey, contextLength: 256 })));
  const model = models[0]!;
  const coordinator = await ClusterCoordinator.connect({
    model, modelSha256: sha256, clusterKey, mode: "relaxed", workers: workers.map((w) => ({ host: "127.0.0.1", port: w.tcpPort })),
    rejoinIntervalMs: 0, deadlines: { minMs: 50, hardMs: 500 },
    plan: (_profiles, context) => (context === undefined ? undefined : { placement: spreadLostGroups(context) }),
  });
  try {
    const engine = new Engine(model.config, model.weights, { kernels, contextLength: 256, synchronizer: coordinator });
    const prompt = model.tokenizer.encode("Once upon a time", { addBos: true });
    let logits = (await engine.evaluate(prompt, 0, "last"))!;
    const phases: Record<"before" | "preparing" | "after", number[]> = { before: [], preparing: [], after: [] };
    for (let n = 0; n < nTokens; n++) {
      if (n === killAt) await workers[2]!.close();
      const phase = n < killAt ? "before" : coordinator.liveReplans.length === 0 ? "preparing" : "after";
      const started = performance.now();
      logits = await engine.step(argmax(logits), prompt.length + n);
      phases[phase].push(performance.now() - started);
      // The in-process workers load on this event loop: give them their turns as separate devices would have.
      await sleep(0);
    }
    const [replan] = coordinator.liveReplans;
    if (replan === undefined) throw new Error(`no live re-plan happened in ${nTokens} tokens`);
    return {
      groupsMoved: replan.groupsMoved, workersChanged: replan.workersChanged, prepareMs: replan.prepareMs, activateMs: replan.activateMs,
      tokensWhilePreparing: phases.preparing.length,
      msPerTokenBefore: mean(phases.before), msPerTokenPreparing: mean(phases.preparing), msPerTokenAfter: mean(phases.after),
    };
  } finally {
    await coordinator.close();
    for (const worker of workers) await worker.close();
    for (const m of models) m.file.close();
  }
}

export function renderMigration(r: MigrationResult): string {
  return [
    `| groups moved | workers loading | prepare ms (generation goes on) | tokens meanwhile | activate stall ms | ms/token before | while loading | after |`,
    `| --- | --- | --- | --- | --- | --- | --- | --- |`,
    `| ${r.groupsMoved} | ${r.workersChanged} | ${r.prepareMs.toFixed(0)} | ${r.tokensWhilePreparing} | ${r.activateMs.toFixed(1)} | ${r.msPerTokenBefore.toFixed(1)} | ${r.msPerTokenPreparing.toFixed(1)} | ${r.msPerTokenAfter.toFixed(1)} |`,
  ].join("\n");
}
