/**
 * The wire form of a device profile (plan-ok, profile): what a worker measured of itself, the
 * scheduler's DeviceProfile (scheduler/deviceProfile.ts) without the name and link, which the
 * coordinator supplies. Times include the worker's emulated slowdown. Every number is bounded
 * and every string capped, like the rest of the control messages.
 */
import { z } from "zod";

export const PROFILE_LIMITS = {
  /** Most compute samples (tensor type × thread count) in one profile. */
  maxComputeSamples: 64,
  /** Bound on a time per group: an hour, far past any device worth scheduling on. */
  maxGroupMs: 3_600_000,
  /** Bound on a read throughput (1 PB/s). */
  maxReadBytesPerSecond: 1e15,
  /** Bound on a thread count. */
  maxThreads: 4096,
  /** Longest tensor type label. */
  maxTensorTypeChars: 32,
} as const;

const groupMs = z.number().min(0).max(PROFILE_LIMITS.maxGroupMs);
const byteCount = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);

/** One timed configuration (ComputeSample). */
const computeSampleSchema = z.strictObject({
  /** ggml's type name, or several joined by "+" for a model whose layer mixes types. */
  tensorType: z.string().max(PROFILE_LIMITS.maxTensorTypeChars).regex(/^[A-Z0-9_]+(\+[A-Z0-9_]+)*$/),
  threads: z.number().int().min(1).max(PROFILE_LIMITS.maxThreads),
  attentionGroupMs: groupMs,
  ffnGroupMs: groupMs,
});

export const measuredProfileSchema = z.strictObject({
  compute: z.array(computeSampleSchema).min(1).max(PROFILE_LIMITS.maxComputeSamples),
  /** This model's tensor type at the worker's thread count. */
  attentionGroupMs: groupMs,
  ffnGroupMs: groupMs,
  freeMemoryBytes: byteCount,
  memoryBudgetBytes: byteCount,
  /** 0 when the worker has no model file. */
  readBytesPerSecond: z.number().min(0).max(PROFILE_LIMITS.maxReadBytesPerSecond),
});

export type MeasuredProfile = z.infer<typeof measuredProfileSchema>;
