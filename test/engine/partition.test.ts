/**
 * The seam the cluster is built on: a layer's output is the sum of its neuron groups'
 * contributions, so any partition of the groups, computed separately and added, equals the
 * full layer; and a forward pass whose groups are split across two engines (two simulated
 * devices, each with its own KV cache) reproduces the single-device logits.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { Engine, attentionContribution, ffnContribution, type GroupComputeContext, type PhaseStep, type Synchronizer } from "../../src/engine/index.js";
import { SeededRandom } from "../../src/base/random.js";
import { createGroupLayout, groupCount, rangesFromIndices, type GroupKind, type GroupRange } from "../../src/partition/index.js";
import { loadStories, maxAbsDiff, readGolden, testKernels } from "../helpers/golden.js";

const FC_SEED = 20261126;

function contextOf(engine: Engine): GroupComputeContext {
  return { config: engine.config, layout: engine.layout, kernels: engine.kernels, state: engine.state, kvCache: engine.kvCache };
}

function contribution(engine: Engine, kind: GroupKind, layerIndex: number, position: number, input: Float32Array, groups: readonly GroupRange[]): Float32Array {
  const ctx = contextOf(engine);
  ctx.state.normed.set(input);
  const batch = { layerIndex, positionStart: position, nTokens: 1 };
  const layer = engine.weights.layers[layerIndex]!;
  if (kind === "attention") attentionContribution(ctx, layer, batch, groups);
  else ffnContribution(ctx, layer, batch, groups);
  return ctx.state.partial.slice(0, engine.config.dim);
}

/** A random assignment of each group to one of nParts parts. */
const partitionArbitrary = (nGroups: number) => fc.integer({ min: 1, max: nGroups }).chain((nParts) => fc.array(fc.integer({ min: 0, max: nParts - 1 }), { minLength: nGroups, maxLength: nGroups }));

for (const kind of ["attention", "ffn"] as const) {
  test(`${kind}: the sum of partial sums over any partition of the groups equals the full layer`, async () => {
    const { model, engine } = await loadStories({ ffnBlockSize: 16 });
    const prompt = readGolden().greedy_prompt.prompt_ids;
    await engine.evaluate(prompt, 0, "none");
    const position = prompt.length;
    const nGroups = groupCount(engine.layout, kind);
    const random = new SeededRandom(7);
    let checked = 0;
    fc.assert(
      fc.property(fc.integer({ min: 0, max: engine.config.nLayers - 1 }), partitionArbitrary(nGroups), (layerIndex, assignment) => {
        const input = Float32Array.from({ length: engine.config.dim }, () => random.nextGaussian());
        const full = contribution(engine, kind, layerIndex, position, input, [{ start: 0, end: nGroups }]);
        const summed = new Float32Array(engine.config.dim);
        for (const part of new Set(assignment)) {
          const indices = assignment.flatMap((p, g) => (p === part ? [g] : []));
          const partial = contribution(engine, kind, layerIndex, position, input, rangesFromIndices(indices, nGroups));
          for (let i = 0; i < summed.length; i++) summed[i] = summed[i]! + partial[i]!;
        }
        const scale = Math.max(...full.map(Math.abs));
        assert.ok(scale > 0);
        assert.ok(maxAbsDiff(summed, full) <= 1e-5 * scale, `max diff ${maxAbsDiff(summed, full)} at scale ${scale}`);
        checked++;
      }),
      { seed: FC_SEED, numRuns: 100 },
    );
    assert.equal(checked, 100);
    model.file.close();
  });
}

test("the empty group set contributes exactly zero", async () => {
  const { model, engine } = await loadStories();
  const input = Float32Array.from({ length: engine.config.dim }, (_, i) => Math.sin(i));
  assert.deepEqual([...contribution(engine, "ffn", 0, 0, input, [])], new Array(engine.config.dim).fill(0));
  assert.deepEqual([...contribution(engine, "attention", 0, 0, input, [])], new Array(engine.config.dim).fill(0));
  model.file.close();
});

/** Two simulated devices: this one computes `mine`, the other engine the rest, and endPhase adds them. */
class TwoDeviceSynchronizer implements Synchronizer {
  constructor(private readonly other: Engine, private readonly mine: Record<GroupKind, GroupRange[]>, private readonly theirs: Record<GroupKind, GroupRange[]>) {}
  localGroups(_layerIndex: number, phase: GroupKind): readonly GroupRange[] {
    return this.mine[phase];
  }
  beginPhase(): void {}
  endPhase(step: PhaseStep, partial: Float32Array): void {
    const ctx = contextOf(this.other);
    const n = step.nTokens * this.other.config.dim;
    ctx.state.normed.set(step.input.subarray(0, n));
    const batch = { layerIndex: step.layerIndex, positionStart: step.positionStart, nTokens: step.nTokens };
    const layer = this.other.weights.layers[step.layerIndex]!;
    if (step.phase === "attention") attentionContribution(ctx, layer, batch, this.theirs.attention);
    else ffnContribution(ctx, layer, batch, this.theirs.ffn);
    for (let i = 0; i < n; i++) partial[i] = partial[i]! + ctx.state.partial[i]!;
  }
}

test("a forward pass split across two devices' groups matches the reference logits and greedy tokens", async () => {
  const golden = readGolden();
  const { model, engine: other } = await loadStories();
  const mine = { attention: [{ start: 0, end: 1 }, { start: 3, end: 4 }], ffn: [{ start: 1, end: 4 }] };
  const theirs = { attention: [{ start: 1, end: 3 }], ffn: [{ start: 0, end: 1 }, { start: 4, end: 6 }] };
  const engine = new Engine(model.config, model.weights, { kernels: testKernels(), synchronizer: new TwoDeviceSynchronizer(other, mine, theirs) });
  const logits = (await engine.evaluate(golden.logits.input_ids, 0, "last"))!;
  assert.ok(maxAbsDiff(logits, golden.logits.last) < 1e-4);
  const tokens: number[] = [];
  let token = golden.greedy_prompt.generated_ids[0]!;
  for (let p = golden.logits.input_ids.length; tokens.length < 30; p++) {
    tokens.push(token);
    const next = await engine.step(token, p);
    token = next.indexOf(Math.max(...next));
  }
  assert.deepEqual(tokens, golden.greedy_prompt.generated_ids.slice(0, 30));
  model.file.close();
});

test("the engine takes its FFN grouping from a synchronizer that fixes one, and refuses a conflicting one", async () => {
  const { model } = await loadStories();
  const layout = createGroupLayout(model.config, 16);
  const synchronizer: Synchronizer = { layout, localGroups: (_l, phase) => [{ start: 0, end: groupCount(layout, phase) }], beginPhase: () => undefined, endPhase: () => undefined };
  assert.equal(new Engine(model.config, model.weights, { synchronizer }).layout.ffnBlockSize, 16);
  assert.throws(() => new Engine(model.config, model.weights, { synchronizer, ffnBlockSize: 32 }), /FFN block size 32 differs from the synchronizer's 16/);
});
