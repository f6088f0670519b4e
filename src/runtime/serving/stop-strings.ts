/**
 * Stop strings over streamed text: text is released as soon as it cannot be the start of a stop string, held back
 * while it might be, and cut where a stop string begins.
 * @module
 */

/** What {@link StopStringMatcher.push} returns. */
export interface StopStringStep {
  /** Text that can be released now. */
  readonly text: string;
  /** Whether a stop string matched (the text before it is released; nothing after it ever is). */
  readonly stopped: boolean;
}

/** Tracks generated text against stop strings and says what can be released. */
export class StopStringMatcher {
  private text = '';
  private sent = 0;
  private readonly longest: number;

  constructor(
    /** The stop strings (empty ones are ignored). */
    readonly stops: readonly string[],
  ) {
    this.stops = stops.filter((s) => s.length > 0);
    this.longest = Math.max(0, ...this.stops.map((s) => s.length));
  }

  /** Adds text; returns the text that can be released now and whether a stop string matched (then nothing follows). */
  push(piece: string): StopStringStep {
    this.text += piece;
    if (this.stops.length === 0) return { text: this.release(this.text.length), stopped: false };
    const from = Math.max(0, this.sent - this.longest + 1);
    let at = -1;
    for (const s of this.stops) {
      const i = this.text.indexOf(s, from);
      if (i >= 0 && (at < 0 || i < at)) at = i;
    }
    if (at >= 0) {
      const out = this.release(at);
      this.sent = this.text.length;
      return { text: out, stopped: true };
    }
    let hold = 0;
    for (const s of this.stops)
      for (let k = Math.min(s.length - 1, this.text.length); k > hold; k--)
        if (this.text.endsWith(s.slice(0, k))) {
          hold = k;
          break;
        }
    return { text: this.release(Math.max(this.sent, this.text.length - hold)), stopped: false };
  }

  /** The text held back (at the end of generation it is released). */
  flush(): string {
    return this.release(this.text.length);
  }

  private release(to: number): string {
    const out = this.text.slice(this.sent, to);
    this.sent = Math.max(this.sent, to);
    return out;
  }
}
