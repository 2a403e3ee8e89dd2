/**
 * What live re-planning buys when a device slows down mid-run. Three `halo worker` processes
 * (each with its own copy of the model, one thread) and a coordinator in this process run the
 * synthetic TinyLlama-1.1B-shape model from the uniform split; worker 1 runs with
 * `--slowdown-after S:X`, so S seconds into the run it becomes X times slower. With re-planning
 * (the default policy, the halo scheduler) the coordinator sees the drift and moves FFN blocks off
 * it; with `--no-replan` the split stays. Reported: ms per token before the slowdown and over the
 * last quarter of the run, both ways, in the same run.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { createInterface } from "node:readline";
import { join } from "node:path";
import { placementPlanner } from "../../src/cli/generationSession.js";
import type { CommandIo } from "../../src/cli/io.js";
import { ClusterCoordinator, modelSha256, type LiveReplan } from "../../src/cluster/index.js";
import { Engine, argmax } from "../../src/engine/index.js";
import { createKernels } from "../../src/kernels/index.js";
import { loadModel } from "../../src/model/index.js";
import { mean } from "../report.js";

export interface DriftRun {
  replan: boolean;
  msPerTokenBefore: number;
  msPerTokenLastQuarter: number;
  replans: readonly LiveReplan[];
}

const KEY = "bench: drift re-plan cluster key";

async function startWorker(haloMain: string, modelPath: string, extra: readonly string[]): Promise<{ child: ChildProcess; port: number }> {
  const child = spawn(process.execPath, [haloMain, "worker", "--host", "127.0.0.1", "--port", "0", "--model", modelPath, "--cluster-key", KEY, "--threads", "1", "--ctx-size", "512", ...extra], { stdio: ["ignore", "pipe", "ignore"] });
  const line = await new Promise<string>((resolve, reject) => {
    child.once("exit", (code) => reject(new Error(`worker exited with ${code} before listening`)));
    createInterface({ input: child.stdout! }).once("line", resolve);
  });
  return { child, port: (JSON.parse(line) as { tcpPort: number }).tcpPort };
}

async function driftRun(haloMain: string, modelPath: string, replan: boolean, options: { nTokens: number; afterSeconds: number; slowdown: number }): Promise<DriftRun> {
  const workers = [
    await startWorker(haloMain, modelPath, ["--slowdown-after", `${options.afterSeconds}:${options.slowdown}`]),
    await startWorker(haloMain, modelPath, []),
    await startWorker(haloMain, modelPath, []),
  ];
  const kernels = createKernels({ nThreads: 1 });
  const model = await loadModel(modelPath);
  const quiet = { stdout: () => undefined, stderr: () => undefined } as unknown as CommandIo;
  const halo = placementPlanner("halo", false, { wire: "q8_0" }, model, undefined, quiet)!;
  let coordinator: ClusterCoordinator | undefined;
  try {
    coordinator = await ClusterCoordinator.connect({
      model, modelSha256: modelSha256(modelPath), clusterKey: Buffer.from(KEY), mode: "relaxed",
      workers: workers.map((w) => ({ host: "127.0.0.1", port: w.port })), rejoinIntervalMs: 0, profileKernels: [kernels],
      // Uniform at join, so both runs start alike; the halo scheduler when re-planning.
      plan: (profiles, context) => (context === undefined ? undefined : halo(profiles, context)),
      replan: replan ? undefined : false,
    });
    const engine = new Engine(model.config, model.weights, { kernels, contextLength: 512, synchronizer: coordinator });
    const prompt = model.tokenizer.encode("Once upon a time", { addBos: true });
    let logits = (await engine.evaluate(prompt, 0, "last"))!;
    const runStarted = performance.now();
    const before: number[] = [];
    const times: number[] = [];
    for (let n = 0; n < options.nTokens; n++) {
      const started = performance.now();
      logits = await engine.step(argmax(logits), prompt.length + n);
      const ms = performance.now() - started;
      times.push(ms);
      if (started - runStarted < options.afterSeconds * 1000 * 0.9) before.push(ms);
    }
    return { replan, msPerTokenBefore: mean(before), msPerTokenLastQuarter: mean(times.slice(Math.floor((3 * options.nTokens) / 4))), replans: [...coordinator.liveReplans] };
  } finally {
    await coordinator?.close();
    model.file.close();
    for (const worker of workers) worker.child.kill("SIGKILL");
  }
}

export async function benchDrift(root: string, modelPath: string, options: { nTokens?: number; afterSeconds?: number; slowdown?: number } = {}): Promise<DriftRun[]> {
  const haloMain = join(root, "dist", "src", "cli", "main.js");
  const settings = { nTokens: options.nTokens ?? 120, afterSeconds: options.afterSeconds ?? 2, slowdown: options.slowdown ?? 6 };
  return [await driftRun(haloMain, modelPath, true, settings), await driftRun(haloMain, modelPath, false, settings)];
}

export function renderDrift(runs: readonly DriftRun[]): string {
  const rows = runs.map((r) => `| ${r.replan ? "on" : "off (--no-replan)"} | ${r.msPerTokenBefore.toFixed(1)} | ${r.msPerTokenLastQuarter.toFixed(1)} | ${r.replans.map((p) => `${p.trigger} (at position ${p.position}: ${p.groupsMoved} groups moved, ${p.prepareMs.toFixed(0)} ms loading, ${p.activateMs.toFixed(1)} ms switch)`).join("; ") || "-"} |`);
  const [on, off] = runs;
  const ratio = on === undefined || off === undefined ? "" : `\nlast quarter, tok/s with re-planning ÷ without: ${(off.msPerTokenLastQuarter / on.msPerTokenLastQuarter).toFixed(2)}x`;
  return [`| live re-planning | ms/token before the slowdown | ms/token, last quarter | re-plans |`, `| --- | --- | --- | --- |`, ...rows].join("\n") + ratio;
}
