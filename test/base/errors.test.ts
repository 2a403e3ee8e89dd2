/** The error registry, its classes and docs/errors.md must agree. */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import * as errors from "../../src/base/errors.js";
import { projectRoot } from "../helpers/paths.js";

const instances: errors.HaloError[] = [
  new errors.GgufHeaderError("x"),
  new errors.GgufTensorError("x", "t"),
  new errors.GgufShapeError("t", [1, 2], [2, 1]),
  new errors.UnsupportedTypeError("x"),
  new errors.ModelConfigError("llama.block_count", "x"),
  new errors.TokenizerError("x"),
  new errors.FileError("/p", "x"),
  new errors.UsageError("x"),
  new errors.ContextOverflowError(10, 5),
  new errors.ConvertError("x"),
  new errors.NativeKernelError("x"),
  new errors.FrameError("x"),
  new errors.FrameMacError(3),
  new errors.MessageInvalidError("type", "x"),
  new errors.UnexpectedMessageError("x", ["auth"], "join"),
  new errors.AuthError("x"),
  new errors.ProtocolVersionError(1, 2),
  new errors.DeadlineExceededError("x", 5),
  new errors.PeerLostError(1500, 3, 500),
  new errors.ConnectionClosedError("x"),
  new errors.PeerRejectedError("HALO_ERR_AUTH", "x"),
  new errors.SliceAlignmentError("t", 32, 8, 40, "x"),
  new errors.ShardInvalidError("/p", "x"),
  new errors.ShardTransferError("hash-mismatch", "ab".repeat(32), "x"),
  new errors.TestbedError(["nft", "list", "ruleset"], "x"),
  new errors.PredictorFileError("/p", "x"),
  new errors.ScheduleError("insufficient-memory", "x"),
  new errors.MemoryBudgetError(1 << 20, 3 << 20, "x"),
  new errors.FileChangedError("/p", "x"),
  new errors.ChatTemplateError("x"),
  new errors.ReplanError("x"),
  new errors.RequestError(400, "x", { param: "messages" }),
];

test("every error class carries a registered code and its own name", () => {
  const codes = new Set(Object.keys(errors.ERROR_CODES));
  for (const error of instances) {
    assert.ok(error instanceof errors.HaloError && error instanceof Error);
    assert.ok(codes.has(error.code), error.code);
    assert.equal(error.name, error.constructor.name);
  }
  assert.deepEqual(new Set(instances.map((e) => e.code)), codes, "one class per code");
});

test("docs/errors.md documents exactly the registered codes, each with its class", () => {
  const doc = readFileSync(join(projectRoot(), "docs", "errors.md"), "utf8");
  const rows = [...doc.matchAll(/^\| `(HALO_ERR_[A-Z_0-9]+)` \| `(\w+)` \|/gm)].map((m) => [m[1]!, m[2]!] as const);
  assert.deepEqual(rows.map(([code]) => code).sort(), Object.keys(errors.ERROR_CODES).sort());
  for (const [code, className] of rows) {
    const instance = instances.find((e) => e.code === code);
    assert.equal(instance?.name, className, `${code} is documented as ${className}`);
  }
});

test("messages carry what was expected and what was found", () => {
  assert.equal(new errors.GgufShapeError("blk.0.attn_q.weight", [64, 64], [64, 32]).message, "tensor 'blk.0.attn_q.weight' has shape [64, 32], expected [64, 64]");
  assert.equal(new errors.ContextOverflowError(600, 512).message, "600 tokens do not fit in the context of 512 tokens");
  assert.equal(new errors.ModelConfigError("llama.block_count", "missing").message, "llama.block_count: missing");
});
