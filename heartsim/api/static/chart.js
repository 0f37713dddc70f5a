// A small live chart on <canvas>: heart rate (left axis), stress level 0–1 (right axis) and the
// ground-truth label as background bands, over the last `windowS` seconds of simulation time.
// Redraws at most once per animation frame, only when data or size changed.

const PAD = { left: 46, right: 40, top: 12, bottom: 26 };
const BPM_MIN_SPAN = 40;

/** Colours come from CSS custom properties on the canvas, so the theme lives in the stylesheet. */
function palette(canvas) {
  const style = getComputedStyle(canvas);
  const read = (name, fallback) => style.getPropertyValue(name).trim() || fallback;
  return {
    bpm: read("--chart-bpm", "#d6334a"),
    stress: read("--chart-stress", "#7b5cd6"),
    stressFill: read("--chart-stress-fill", "rgba(123, 92, 214, 0.14)"),
    grid: read("--chart-grid", "#e6e8ee"),
    text: read("--chart-text", "#6b7280"),
    band: {
      stress: read("--band-stress", "rgba(214, 51, 74, 0.08)"),
      recovery: read("--band-recovery", "rgba(217, 146, 30, 0.10)"),
    },
    font: `12px ${style.fontFamily || "sans-serif"}`,
  };
}

export class LiveChart {
  /**
   * @param {HTMLCanvasElement} canvas
   * @param {number} windowS - seconds of simulation time shown
   */
  constructor(canvas, windowS = 120) {
    this.canvas = canvas;
    this.windowS = windowS;
    this.points = []; // {seq, t, bpm, stress, label}, sorted by seq
    this.frame = null;
    new ResizeObserver(() => this.resize()).observe(canvas);
    this.resize();
  }

  clear() {
    this.points = [];
    this.requestDraw();
  }

  /** Add heartbeat messages (live ones or a backfill); duplicates by seq are ignored. */
  add(messages) {
    for (const m of messages) this.insert(m);
    this.trim();
    this.requestDraw();
  }

  insert(m) {
    const point = { seq: m.seq, t: m.t, bpm: m.bpm, stress: m.stress_level, label: m.label };
    const last = this.points.at(-1);
    if (!last || point.seq > last.seq) {
      if (last && point.t < last.t) this.points = []; // simulation time restarted
      this.points.push(point);
      return;
    }
    const i = this.points.findIndex((p) => p.seq >= point.seq);
    if (this.points[i].seq !== point.seq) this.points.splice(i, 0, point);
  }

  trim() {
    const last = this.points.at(-1);
    if (!last) return;
    const start = last.t - this.windowS;
    // Keep one point left of the window, so lines run to the edge.
    let i = 0;
    while (i + 1 < this.points.length && this.points[i + 1].t <= start) i += 1;
    if (i > 0) this.points.splice(0, i);
  }

  resize() {
    const ratio = window.devicePixelRatio || 1;
    const width = Math.round(this.canvas.clientWidth * ratio);
    const height = Math.round(this.canvas.clientHeight * ratio);
    if (width && height && (width !== this.canvas.width || height !== this.canvas.height)) {
      this.canvas.width = width;
      this.canvas.height = height;
    }
    this.requestDraw();
  }

  requestDraw() {
    if (this.frame === null) {
      this.frame = requestAnimationFrame(() => {
        this.frame = null;
        this.draw();
      });
    }
  }

  draw() {
    const { canvas, points } = this;
    const ctx = canvas.getContext("2d");
    const ratio = window.devicePixelRatio || 1;
    const w = canvas.width / ratio;
    const h = canvas.height / ratio;
    const colors = palette(canvas);
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, w, h);
    ctx.font = colors.font;

    const plot = { x0: PAD.left, x1: w - PAD.right, y0: PAD.top, y1: h - PAD.bottom };
    const last = points.at(-1);
    const tEnd = last ? last.t : 0;
    const x = (t) => plot.x0 + ((t - (tEnd - this.windowS)) / this.windowS) * (plot.x1 - plot.x0);
    const [lo, hi] = this.bpmRange();
    const yBpm = (bpm) => plot.y1 - ((bpm - lo) / (hi - lo)) * (plot.y1 - plot.y0);
    const yStress = (s) => plot.y1 - s * (plot.y1 - plot.y0);

    ctx.save();
    ctx.beginPath();
    ctx.rect(plot.x0, plot.y0, plot.x1 - plot.x0, plot.y1 - plot.y0);
    ctx.clip();
    this.drawBands(ctx, colors, x, plot);
    ctx.restore();
    this.drawAxes(ctx, colors, plot, lo, hi, yBpm, yStress);

    if (points.length === 0) {
      ctx.fillStyle = colors.text;
      ctx.textAlign = "center";
      ctx.textBaseline = "middle";
      ctx.fillText("Waiting for data: start the simulation", (plot.x0 + plot.x1) / 2, h / 2);
    } else {
      ctx.save();
      ctx.beginPath();
      ctx.rect(plot.x0, plot.y0 - 4, plot.x1 - plot.x0 + 4, plot.y1 - plot.y0 + 8);
      ctx.clip();
      this.drawStress(ctx, colors, x, yStress, plot);
      this.drawLine(ctx, (p) => yBpm(p.bpm), x, colors.bpm, 2);
      ctx.fillStyle = colors.bpm;
      ctx.beginPath();
      ctx.arc(x(last.t), yBpm(last.bpm), 3.5, 0, 2 * Math.PI);
      ctx.fill();
      ctx.restore();
    }
    this.describe();
  }

  bpmRange() {
    if (this.points.length === 0) return [50, 110];
    let lo = Infinity;
    let hi = -Infinity;
    for (const p of this.points) {
      lo = Math.min(lo, p.bpm);
      hi = Math.max(hi, p.bpm);
    }
    lo = Math.floor((lo - 5) / 10) * 10;
    hi = Math.ceil((hi + 5) / 10) * 10;
    if (hi - lo < BPM_MIN_SPAN) {
      lo = Math.floor(((lo + hi) / 2 - BPM_MIN_SPAN / 2) / 10) * 10;
      hi = lo + BPM_MIN_SPAN;
    }
    return [Math.max(0, lo), hi];
  }

  /** Largest spacing between points still drawn as a connected line, s. */
  gapS() {
    const n = this.points.length;
    if (n < 2) return Infinity;
    const typical = (this.points[n - 1].t - this.points[0].t) / (n - 1);
    return Math.max(5, 3 * typical);
  }

  /** Shade each stretch of `stress` / `recovery` samples (one rectangle per stretch). */
  drawBands(ctx, colors, x, plot) {
    const { points } = this;
    const gap = this.gapS();
    let i = 0;
    while (i < points.length) {
      const label = points[i].label;
      let j = i;
      const continues = (k) => points[k].label === label && points[k].t - points[k - 1].t <= gap;
      while (j + 1 < points.length && continues(j + 1)) j += 1;
      // A stretch lasts until the next sample (unless the stream had a gap there).
      const next = points[j + 1];
      const end = next && next.t - points[j].t <= gap ? next.t : points[j].t;
      const fill = colors.band[label];
      if (fill) {
        const left = Math.round(x(points[i].t));
        ctx.fillStyle = fill;
        ctx.fillRect(left, plot.y0, Math.max(1, Math.round(x(end)) - left), plot.y1 - plot.y0);
      }
      i = j + 1;
    }
  }

  drawAxes(ctx, colors, plot, lo, hi, yBpm, yStress) {
    ctx.strokeStyle = colors.grid;
    ctx.fillStyle = colors.text;
    ctx.lineWidth = 1;
    const step = hi - lo > 80 ? 20 : 10;
    ctx.textBaseline = "middle";
    for (let bpm = lo; bpm <= hi; bpm += step) {
      const y = Math.round(yBpm(bpm)) + 0.5;
      ctx.beginPath();
      ctx.moveTo(plot.x0, y);
      ctx.lineTo(plot.x1, y);
      ctx.stroke();
      ctx.textAlign = "right";
      ctx.fillText(String(bpm), plot.x0 - 8, y);
    }
    ctx.textAlign = "left";
    for (const s of [0, 0.5, 1]) ctx.fillText(s.toFixed(1), plot.x1 + 8, yStress(s));
    ctx.textAlign = "center";
    ctx.textBaseline = "top";
    const width = plot.x1 - plot.x0;
    for (let ago = this.windowS; ago >= 0; ago -= 30) {
      const xPos = plot.x1 - (ago / this.windowS) * width;
      ctx.fillText(ago === 0 ? "now" : `−${ago} s`, xPos, plot.y1 + 8);
    }
  }

  drawStress(ctx, colors, x, yStress, plot) {
    this.forEachRun((run) => {
      ctx.beginPath();
      ctx.moveTo(x(run[0].t), plot.y1);
      for (const p of run) ctx.lineTo(x(p.t), yStress(p.stress));
      ctx.lineTo(x(run.at(-1).t), plot.y1);
      ctx.closePath();
      ctx.fillStyle = colors.stressFill;
      ctx.fill();
    });
    this.drawLine(ctx, (p) => yStress(p.stress), x, colors.stress, 1.5);
  }

  drawLine(ctx, y, x, color, width) {
    ctx.strokeStyle = color;
    ctx.lineWidth = width;
    ctx.lineJoin = "round";
    this.forEachRun((run) => {
      ctx.beginPath();
      run.forEach((p, i) => (i === 0 ? ctx.moveTo(x(p.t), y(p)) : ctx.lineTo(x(p.t), y(p))));
      ctx.stroke();
    });
  }

  /** Call `draw(run)` for each stretch of points without a gap (e.g. while stopped). */
  forEachRun(draw) {
    const gap = this.gapS();
    let run = [];
    for (const p of this.points) {
      if (run.length && p.t - run.at(-1).t > gap) {
        draw(run);
        run = [];
      }
      run.push(p);
    }
    if (run.length) draw(run);
  }

  /** What the chart shows, for assistive technology and tests (data-* attributes). */
  describe() {
    const { canvas, points } = this;
    const last = points.at(-1);
    canvas.dataset.points = String(points.length);
    if (!last) {
      canvas.setAttribute("aria-label", "Chart of heart rate and stress level: no data yet");
      for (const key of ["firstSeq", "lastSeq", "lastBpm", "lastStress", "maxStress"]) {
        delete canvas.dataset[key];
      }
      return;
    }
    canvas.dataset.firstSeq = String(points[0].seq);
    canvas.dataset.lastSeq = String(last.seq);
    canvas.dataset.lastBpm = String(last.bpm);
    canvas.dataset.lastStress = last.stress.toFixed(3);
    canvas.dataset.maxStress = Math.max(...points.map((p) => p.stress)).toFixed(3);
    canvas.setAttribute(
      "aria-label",
      `Chart of the last ${this.windowS} s: heart rate ${last.bpm} bpm, ` +
        `stress level ${last.stress.toFixed(2)} (${last.label})`,
    );
  }
}
