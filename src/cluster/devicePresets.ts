/**
 * Pi-class device presets for `halo cluster --local --devices …`: how fast a device reads its
 * weights, how much memory it has, and its typical link. Decode is memory-bound, so a device's
 * speed is the weight bytes it streams per second; the local cluster slows each process by the
 * ratio of the fastest listed device's speed to its own, as a sleep in proportion to the compute
 * it really did (never a faked timing).
 */
import type { LinkProfile } from "../net/index.js";

export const DEVICE_PRESET_NAMES = ["pi4", "pi5", "jetson-nano", "x86"] as const;
export type DevicePresetName = (typeof DEVICE_PRESET_NAMES)[number];

export interface DevicePreset {
  readonly name: DevicePresetName;
  /** Weight bytes read per second during decode, all cores (GB/s). */
  readonly weightGBps: number;
  readonly memoryBytes: number;
  /** Its usual link to the others. */
  readonly link: LinkProfile;
  /** Where the figures come from. */
  readonly source: string;
}

/** Llama-2 7B in Q4_0 (Q40): 6.74 G weights at 4.5 bits. */
const LLAMA2_7B_Q40_BYTES = 6.74e9 * 4.5 / 8;

/** 802.11ac between boards in one room: a few ms of RTT, ms-scale jitter, ~100 Mbit/s of goodput. */
const WIFI_LINK: LinkProfile = { lossRatio: 0, delayMs: 2, jitterMs: 1, bandwidthMbit: 100 };
/** Gigabit Ethernet through one switch. */
const ETHERNET_LINK: LinkProfile = { lossRatio: 0, delayMs: 0.1, jitterMs: 0.02, bandwidthMbit: 940 };

export const DEVICE_PRESETS: Readonly<Record<DevicePresetName, DevicePreset>> = {
  /** Raspberry Pi 4B (4× Cortex-A72 1.8 GHz, 8 GB): distributed-llama's single-node Llama-2 7B Q40, 1312 ms/token. */
  pi4: { name: "pi4", weightGBps: LLAMA2_7B_Q40_BYTES / 1.312 / 1e9, memoryBytes: 8 * 2 ** 30, link: WIFI_LINK, source: "distributed-llama README: Llama-2 7B Q40 on one Raspberry Pi 4B, 1312 ms/token" },
  /** Raspberry Pi 5 (4× Cortex-A76 2.4 GHz, 8 GB): distributed-llama's single-node Llama-2 7B Q40, 441 ms/token. */
  pi5: { name: "pi5", weightGBps: LLAMA2_7B_Q40_BYTES / 0.441 / 1e9, memoryBytes: 8 * 2 ** 30, link: WIFI_LINK, source: "distributed-llama README: Llama-2 7B Q40 on one Raspberry Pi 5, 441 ms/token" },
  /**
   * Jetson Nano (4× Cortex-A57 1.43 GHz, 4 GB LPDDR4 at 25.6 GB/s per NVIDIA's datasheet), CPU
   * only. No comparable single-node figure is published; this is the datasheet bandwidth at the
   * fraction the Pi 4 reaches of its own (2.7 of 12.8 GB/s): an estimate, marked as one.
   */
  "jetson-nano": { name: "jetson-nano", weightGBps: 25.6 * (LLAMA2_7B_Q40_BYTES / 1.312 / 1e9 / 12.8), memoryBytes: 4 * 2 ** 30, link: ETHERNET_LINK, source: "NVIDIA Jetson Nano datasheet (25.6 GB/s) × the Pi 4's measured share of its peak bandwidth (estimate)" },
  /** A desktop-class x86 node on Ethernet: dual-channel DDR4 streaming ~20 GB/s in practice. */
  x86: { name: "x86", weightGBps: 20, memoryBytes: 32 * 2 ** 30, link: ETHERNET_LINK, source: "dual-channel DDR4-3200 (51 GB/s peak) at the ~40% a CPU decode loop streams" },
};

/** How much slower each listed device runs than the fastest one (1 for the fastest). */
export function slowdownFactors(devices: readonly DevicePresetName[]): number[] {
  const fastest = Math.max(...devices.map((d) => DEVICE_PRESETS[d].weightGBps));
  return devices.map((d) => fastest / DEVICE_PRESETS[d].weightGBps);
}
