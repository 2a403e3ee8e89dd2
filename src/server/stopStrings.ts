/**
 * Stop strings over streamed text. A stop string may arrive split across tokens, so the text
 * that could still turn out to begin one is held back until it is decided; nothing past the
 * first stop string is ever emitted, and the stop string itself is cut.
 */
export class StopMatcher {
  #held = "";
  #stopped = false;

  constructor(private readonly stops: readonly string[]) {}

  get stopped(): boolean {
    return this.#stopped;
  }

  /** Adds generated text; returns what may be shown now and whether a stop string was reached. */
  push(text: string): { emit: string; stopped: boolean } {
    if (this.#stopped) return { emit: "", stopped: true };
    const buffer = this.#held + text;
    let cut = -1;
    for (const stop of this.stops) {
      const at = buffer.indexOf(stop);
      if (at >= 0 && (cut < 0 || at < cut)) cut = at;
    }
    if (cut >= 0) {
      this.#stopped = true;
      this.#held = "";
      return { emit: buffer.slice(0, cut), stopped: true };
    }
    const keep = this.#partialStopLength(buffer);
    this.#held = buffer.slice(buffer.length - keep);
    return { emit: buffer.slice(0, buffer.length - keep), stopped: false };
  }

  /** The text held back at the end of generation (it began a stop string that never finished). */
  flush(): string {
    const rest = this.#stopped ? "" : this.#held;
    this.#held = "";
    return rest;
  }

  /** The length of the longest tail of `buffer` that is a proper prefix of some stop string. */
  #partialStopLength(buffer: string): number {
    let longest = 0;
    for (const stop of this.stops) {
      for (let n = Math.min(stop.length - 1, buffer.length); n > longest; n--) {
        if (buffer.endsWith(stop.slice(0, n))) {
          longest = n;
          break;
        }
      }
    }
    return longest;
  }
}
