/**
 * What the scheduler knows of one device: how fast it computes a neuron group, how much memory it
 * may spend on weights, how fast it reads its model file, and how its link to the coordinator
 * behaves. Plain JSON-able data: a worker measures the first four parts (`halo profile`, at join
 * and on demand), the coordinator adds the link from its live statistics, and the scheduler is
 * tested offline on hand-made records.
 */

/** One measured compute figure: one decode token through one group of each phase. */
export interface ComputeSample {
  /** The weights' tensor type, e.g. "Q4_0" (ggml's name). */
  readonly tensorType: string;
  readonly threads: number;
  /** ms for one attention group (a KV-head bundle: its rows of wq/wk/wv and columns of wo). */
  readonly attentionGroupMs: number;
  /** ms for one FFN block (its rows of ffn_gate/ffn_up and columns of ffn_down). */
  readonly ffnGroupMs: number;
}

export interface LinkSample {
  readonly rttMs: number;
  readonly jitterMs: number;
  /** 0..1 */
  readonly lossRatio: number;
  /** Goodput in Mbit/s; 0 when unknown. */
  readonly bandwidthMbit: number;
}

export interface DeviceProfile {
  /** A name for humans and --explain: "worker 127.0.0.1:9101", "coordinator". */
  readonly name: string;
  /** Every figure measured, for each tensor type and thread count tried. */
  readonly compute: readonly ComputeSample[];
  /** The figures the scheduler uses: this model's tensor type at the device's thread count. */
  readonly attentionGroupMs: number;
  readonly ffnGroupMs: number;
  readonly freeMemoryBytes: number;
  /** Bytes of weights the device may keep resident (its --memory-budget, else its free memory). */
  readonly memoryBudgetBytes: number;
  /** Sequential read throughput of the local model file, bytes/s; 0 when it has no file. */
  readonly readBytesPerSecond: number;
  /** The coordinator's view of the device's link; the coordinator itself has a perfect one. */
  readonly link: LinkSample;
}

export const PERFECT_LINK: LinkSample = { rttMs: 0, jitterMs: 0, lossRatio: 0, bandwidthMbit: 0 };
