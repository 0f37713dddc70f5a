// The chart's data: one point per heartbeat message, in seq order, over a window of simulation
// time, cut into segments wherever the line must not be joined.
//
// Where the line breaks: simulation time `t` goes on across a stop/start (and seq too), but the
// start puts every person back at baseline, so consecutive messages of different runs (the
// messages' `run`) are never joined. Nor are messages with seq numbers missing between them
// (not buffered any more, dropped), nor a `t` going backwards. Pause freezes `t` and keeps the
// run: the line goes on. A late tick catches up in one step (its message holds every beat), so
// a larger step in `t` with consecutive seq is data, not a gap.

/** The fields the chart draws, from one heartbeat message. */
export function pointOf(m) {
  return {
    seq: m.seq,
    t: m.t,
    run: m.run,
    bpm: m.bpm,
    stress: m.stress_level,
    label: m.label,
    rmssd: m.variability,
    systolic: m.systolic,
    diastolic: m.diastolic,
    resp: m.respiration_rate,
  };
}

/**
 * Why the line must not join `a` to the point `b` after it: "restart" (a new run: the
 * physiology was reset), "gap" (seq numbers missing between them; with `consecutive` false,
 * as for polled samples, only `t` going backwards counts) or null when they join.
 */
export function breakBetween(a, b, consecutive = true) {
  if (a.run !== b.run) return "restart";
  if (b.t < a.t || (consecutive && b.seq !== a.seq + 1)) return "gap";
  return null;
}

/** Split `points` into the runs drawn as one line each. */
export function segmentsOf(points, consecutive = true) {
  const segments = [];
  let current = [];
  for (const p of points) {
    if (current.length && breakBetween(current.at(-1), p, consecutive)) {
      segments.push(current);
      current = [];
    }
    current.push(p);
  }
  if (current.length) segments.push(current);
  return segments;
}

export class Series {
  /** @param {number} windowS - seconds of simulation time kept, back from the newest point */
  constructor(windowS) {
    this.windowS = windowS;
    this.points = []; // sorted by seq, no duplicates
  }

  clear() {
    this.points = [];
  }

  get first() {
    return this.points[0];
  }

  get last() {
    return this.points.at(-1);
  }

  /** Add heartbeat messages (live ones, a replay or history pages, in any order). */
  add(messages) {
    const fresh = messages.map(pointOf);
    if (fresh.length === 0) return;
    fresh.sort((a, b) => a.seq - b.seq);
    const last = this.last;
    if (last && fresh[0].seq > last.seq && fresh[0].t < last.t) {
      // Newer seq but earlier time: another numbering (a restarted server), not a continuation.
      this.points = [];
    }
    if (!this.last || fresh[0].seq > this.last.seq) {
      this.points.push(...dedupe(fresh));
    } else {
      this.points = merge(this.points, fresh);
    }
    this.trim();
  }

  /** Keep `windowS` seconds from now on (a shorter window drops the older points at once). */
  setWindow(windowS) {
    this.windowS = windowS;
    this.trim();
  }

  trim() {
    const last = this.last;
    if (!last) return;
    const start = last.t - this.windowS;
    // Keep the last point left of the window, so a line runs to the edge.
    let i = 0;
    while (i + 1 < this.points.length && this.points[i + 1].t <= start) i += 1;
    if (i > 0) this.points.splice(0, i);
  }

  segments() {
    return segmentsOf(this.points);
  }
}

function dedupe(sorted) {
  return sorted.filter((p, i) => i === 0 || p.seq !== sorted[i - 1].seq);
}

/** Merge two seq-sorted arrays into one, without duplicates (the existing point wins). */
function merge(existing, fresh) {
  const out = [];
  let i = 0;
  let j = 0;
  while (i < existing.length || j < fresh.length) {
    const a = existing[i];
    const b = fresh[j];
    let next;
    if (b === undefined || (a !== undefined && a.seq <= b.seq)) {
      next = a;
      i += 1;
      if (b !== undefined && b.seq === a.seq) j += 1;
    } else {
      next = b;
      j += 1;
    }
    if (out.length === 0 || out.at(-1).seq !== next.seq) out.push(next);
  }
  return out;
}
