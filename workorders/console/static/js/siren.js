/**
 * The console's sound: one AudioContext per page, shared by the alarm board (a siren while an
 * emergency waits for a person) and the hand-over alerts (a chirp for supervisors).
 */

/** A two-tone beep every 1.2 s while any emergency waits for a person. */
class Siren {
  constructor() {
    this.ctx = null;
    this.timer = null;
  }

  async unlock() {
    this.ctx ??= new AudioContext();
    if (this.ctx.state !== "running") {
      // Without a user gesture the browser may keep the context suspended: do not wait forever.
      await Promise.race([this.ctx.resume(), new Promise((r) => setTimeout(r, 500))]);
    }
    return this.ctx.state === "running";
  }

  beep(at, frequency) {
    const osc = this.ctx.createOscillator();
    const gain = this.ctx.createGain();
    osc.type = "square";
    osc.frequency.value = frequency;
    gain.gain.setValueAtTime(0.0001, at);
    gain.gain.exponentialRampToValueAtTime(0.25, at + 0.02);
    gain.gain.exponentialRampToValueAtTime(0.0001, at + 0.28);
    osc.connect(gain).connect(this.ctx.destination);
    osc.start(at);
    osc.stop(at + 0.3);
  }

  cycle() {
    const t = this.ctx.currentTime + 0.01;
    this.beep(t, 880);
    this.beep(t + 0.35, 660);
  }

  /** Returns "true" (sounding), "blocked" (the browser refuses sound) or "false". */
  async set(on) {
    if (!on) {
      clearInterval(this.timer);
      this.timer = null;
      return "false";
    }
    if (this.timer) return "true";
    if (!(await this.unlock())) return "blocked";
    this.cycle();
    this.timer = setInterval(() => this.cycle(), 1200);
    return "true";
  }

  /** A short cue for news about an emergency someone already took on. */
  async chirp() {
    if (await this.unlock()) this.beep(this.ctx.currentTime + 0.01, 990);
  }
}

/** The page's one siren. */
export const siren = new Siren();
