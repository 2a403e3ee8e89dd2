/**
 * The KV cache, split by attention group (KV head), so a device holds only its groups' cache.
 * Each (layer, group) slab is allocated when the group first runs here. A position a device
 * never computed (its broadcast was lost) stays invalid and is masked out of the softmax: a
 * zero key would still receive attention weight.
 */
import { HaloError } from "../base/index.js";

export class KvCache {
  /** [layer][group] → (contextLength, headDim), or undefined until the group first runs here. */
  private readonly keys: Array<Array<Float32Array | undefined>>;
  private readonly values: Array<Array<Float32Array | undefined>>;
  /** [layer][group] → (contextLength) 1 where the position's key and value were written. */
  private readonly valid: Array<Array<Uint8Array | undefined>>;

  constructor(
    readonly nLayers: number,
    readonly nGroups: number,
    readonly contextLength: number,
    readonly headDim: number,
  ) {
    const grid = <T>(): Array<Array<T | undefined>> => Array.from({ length: nLayers }, () => new Array<T | undefined>(nGroups).fill(undefined));
    this.keys = grid();
    this.values = grid();
    this.valid = grid();
  }

  private slab<T>(table: Array<Array<T | undefined>>, layer: number, group: number, create: () => T): T {
    const row = table[layer]!;
    let slab = row[group];
    if (slab === undefined) {
      slab = create();
      row[group] = slab;
    }
    return slab;
  }

  keysOf(layer: number, group: number): Float32Array {
    return this.slab(this.keys, layer, group, () => new Float32Array(this.contextLength * this.headDim));
  }
  valuesOf(layer: number, group: number): Float32Array {
    return this.slab(this.values, layer, group, () => new Float32Array(this.contextLength * this.headDim));
  }
  validityOf(layer: number, group: number): Uint8Array {
    return this.slab(this.valid, layer, group, () => new Uint8Array(this.contextLength));
  }

  /**
   * Takes over `from`'s cache of one (layer, group), as its `toGroup` here: a device whose groups
   * changed mid-sequence keeps what it had computed for the attention groups it still holds.
   */
  adopt(from: KvCache, layer: number, fromGroup: number, toGroup: number): void {
    if (from.contextLength !== this.contextLength || from.headDim !== this.headDim) throw new HaloError("HALO_ERR_USAGE", `a KV cache of ${from.contextLength} × ${from.headDim} cannot be adopted by one of ${this.contextLength} × ${this.headDim}`);
    this.keys[layer]![toGroup] = from.keys[layer]![fromGroup];
    this.values[layer]![toGroup] = from.values[layer]![fromGroup];
    this.valid[layer]![toGroup] = from.valid[layer]![fromGroup];
  }

  /** Forgets positions ≥ position (a new sequence, or a rewind). */
  truncate(position: number): void {
    for (const row of this.valid) for (const v of row) v?.fill(0, position);
  }

  /** Bytes currently allocated. */
  get allocatedBytes(): number {
    let bytes = 0;
    for (const table of [this.keys, this.values, this.valid]) for (const row of table) for (const s of row) bytes += s?.byteLength ?? 0;
    return bytes;
  }
}
