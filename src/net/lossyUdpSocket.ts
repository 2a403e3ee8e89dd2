/**
 * A dgram socket whose outgoing datagrams cross a LinkEmulator before the real send, so
 * `halo cluster --local N --loss … --delay …` can emulate each worker link on loopback.
 * Receiving is untouched: listen on `socket` as usual. The emulator sits on the sending side
 * only, so an emulated link between two processes is the pair of their send directions.
 *
 * With a zero profile (no loss, no delay or jitter, no bandwidth limit) `send()` calls the real
 * `socket.send()` inside the call, with no timer and no copy.
 *
 * The wrapper owns the socket: it attaches an 'error' listener at once (an unhandled 'error'
 * event would end the process), and `close()` / `destroy()` close it.
 */
import type { Socket } from "node:dgram";
import { debuglog } from "node:util";
import { UsageError } from "../base/index.js";
import type { Clock } from "../base/index.js";
import { LinkEmulator } from "./linkEmulator.js";
import type { LinkEmulatorCounters, LinkFate, LinkProfile } from "./linkEmulator.js";

const debug = debuglog("halo:net");

export interface LossyUdpSocketOptions {
  /** The socket to send through (bound or not); the wrapper takes ownership of it. */
  socket: Socket;
  /** The emulated outgoing link. */
  profile: LinkProfile;
  /** Seed of the emulator's PRNG. */
  seed: number;
  /** Time source for the emulator. */
  clock: Clock;
  /** See LinkEmulatorOptions.queueLimitBytes. Defaults to 262,144. */
  queueLimitBytes?: number;
  /** See LinkEmulatorOptions.burstBytes. Defaults to 1,500. */
  burstBytes?: number;
  /** See LinkEmulatorOptions.allowReordering. Defaults to false. */
  allowReordering?: boolean;
  /**
   * Receives socket errors: 'error' events, failed sends (send callback errors, or a send that
   * throws because the socket is closed). Defaults to logging them on NODE_DEBUG=halo:net;
   * they are always counted in `nSocketErrors`.
   */
  onError?: (error: Error) => void;
}

export class LossyUdpSocket {
  /** The real socket: listen for 'message' on it directly. */
  readonly socket: Socket;
  /** The outgoing link. */
  readonly emulator: LinkEmulator;
  private readonly onErrorOption: ((error: Error) => void) | undefined;
  private nSocketErrorsValue = 0;
  private closed = false;
  private readonly sendCallback = (error: Error | null): void => {
    if (error !== null) this.reportError(error);
  };

  constructor(options: LossyUdpSocketOptions) {
    this.socket = options.socket;
    this.onErrorOption = options.onError;
    this.socket.on("error", (error) => this.reportError(error));
    const emulatorOptions = {
      profile: options.profile,
      seed: options.seed,
      clock: options.clock,
      allowReordering: options.allowReordering ?? false,
      onDeliverError: (error: unknown) => this.reportError(error instanceof Error ? error : new Error(String(error))),
      ...(options.queueLimitBytes === undefined ? {} : { queueLimitBytes: options.queueLimitBytes }),
      ...(options.burstBytes === undefined ? {} : { burstBytes: options.burstBytes }),
    };
    this.emulator = new LinkEmulator(emulatorOptions);
  }

  /** Socket errors seen so far (events and failed sends). */
  get nSocketErrors(): number {
    return this.nSocketErrorsValue;
  }

  /** The emulator's counters. */
  counters(): LinkEmulatorCounters {
    return this.emulator.counters();
  }

  /** Replaces the outgoing link profile for datagrams sent from now on. */
  setProfile(profile: LinkProfile): void {
    this.emulator.setProfile(profile);
  }

  /**
   * Sends `buffer` to `address:port` through the emulated link. The caller may reuse `buffer`
   * once this returns when the fate is not "delivered"; when it is, the same rule as for
   * `dgram.Socket.send` applies.
   */
  send(buffer: Uint8Array, port: number, address: string): LinkFate {
    if (this.closed) throw new UsageError("lossy UDP socket: send() after close() or destroy()");
    return this.emulator.send(buffer, (datagram) => {
      try {
        this.socket.send(datagram, port, address, this.sendCallback);
      } catch (error) {
        // A delayed datagram can reach a socket that closed meanwhile; that is a failed send, reported, not a crash.
        this.reportError(error instanceof Error ? error : new Error(String(error)));
      }
    });
  }

  /** Delivers the datagrams still in the emulated link, then closes the socket. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.emulator.close();
    await new Promise<void>((resolve) => {
      try {
        this.socket.close(() => resolve());
      } catch (error) {
        // Already closed by its owner before us: nothing left to release.
        debug("lossy UDP socket: close after close: %s", String(error));
        resolve();
      }
    });
  }

  /** Discards the datagrams still in the emulated link and closes the socket at once. */
  destroy(): void {
    if (this.closed) {
      this.emulator.destroy();
      return;
    }
    this.closed = true;
    this.emulator.destroy();
    try {
      this.socket.close();
    } catch (error) {
      // Already closed by its owner before us: nothing left to release.
      debug("lossy UDP socket: close after close: %s", String(error));
    }
  }

  private reportError(error: Error): void {
    this.nSocketErrorsValue++;
    if (this.onErrorOption !== undefined) this.onErrorOption(error);
    else debug("lossy UDP socket: %s", error.message);
  }
}
