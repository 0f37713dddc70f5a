// The live chart on one <canvas>: small multiples sharing the time axis (simulation time, the
// last `windowS` seconds): heart rate with the stress level (0–1, right axis), RMSSD, blood
// pressure (systolic and diastolic) and breathing rate. The ground-truth label shades every
// panel (stress, recovery); the line breaks where the data do (see series.js), and a dashed
// "start" line marks each new run. Long windows are thinned to at most four vertices per pixel
// column (its first, lowest, highest and last values). Redraws only when data or size changed,
// at most once per animation frame and no faster than the data move half a pixel.

import { Series } from "./series.js";

const PAD = { left: 50, right: 44, top: 4, bottom: 24 };
const HEADER = 18; // panel title strip, px
const GAP = 8; // between panels, px
const MAX_DRAW_INTERVAL_MS = 500;
/** The data-* attributes describing the points (removed when there are none). */
const DESCRIBED = [
  "firstSeq",
  "lastSeq",
  "lastBpm",
  "lastStress",
  "maxStress",
  "spanS",
  "segments",
];

/** The panels, top to bottom: `weight` shares the height; `span` is the smallest y range. */
const PANELS = [
  {
    key: "hr",
    title: "Heart rate",
    unit: "bpm",
    weight: 2,
    span: 40,
    lines: [{ value: (p) => p.bpm, color: "bpm", width: 2, name: "heart rate" }],
    stress: true,
  },
  {
    key: "rmssd",
    title: "RMSSD",
    unit: "ms",
    weight: 1,
    span: 20,
    lines: [{ value: (p) => p.rmssd, color: "rmssd", width: 2, name: "RMSSD" }],
  },
  {
    key: "bp",
    title: "Blood pressure",
    unit: "mmHg",
    weight: 1,
    span: 40,
    lines: [
      { value: (p) => p.systolic, color: "systolic", width: 2, name: "systolic" },
      { value: (p) => p.diastolic, color: "diastolic", width: 2, name: "diastolic" },
    ],
  },
  {
    key: "resp",
    title: "Breathing",
    unit: "breaths/min",
    weight: 1,
    span: 6,
    lines: [{ value: (p) => p.resp, color: "resp", width: 2, name: "breathing rate" }],
  },
];

/** Colours come from CSS custom properties on the canvas, so the theme lives in the stylesheet. */
function palette(canvas) {
  const style = getComputedStyle(canvas);
  const read = (name, fallback) => style.getPropertyValue(name).trim() || fallback;
  return {
    bpm: read("--chart-bpm", "#d6334a"),
    stress: read("--chart-stress", "#7b5cd6"),
    stressFill: read("--chart-stress-fill", "rgba(123, 92, 214, 0.14)"),
    rmssd: read("--chart-rmssd", "#1f9d55"),
    systolic: read("--chart-systolic", "#9d174d"),
    diastolic: read("--chart-diastolic", "#0e7490"),
    resp: read("--chart-resp", "#a16207"),
    restart: read("--chart-restart", "#6b7280"),
    grid: read("--chart-grid", "#e6e8ee"),
    text: read("--chart-text", "#6b7280"),
    band: {
      stress: read("--band-stress", "rgba(214, 51, 74, 0.08)"),
      recovery: read("--band-recovery", "rgba(217, 146, 30, 0.10)"),
    },
    font: `12px ${style.fontFamily || "sans-serif"}`,
  };
}

/** A y range around [lo, hi] at least `span` wide, on round numbers, and its tick step. */
function niceRange(lo, hi, span) {
  if (!Number.isFinite(lo)) return { lo: 0, hi: span, step: span / 2 };
  const mid = (lo + hi) / 2;
  const half = Math.max(span, (hi - lo) * 1.15) / 2;
  const raw = (2 * half) / 3; // about three intervals
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((k) => k * magnitude).find((s) => s >= raw);
  const low = Math.floor((mid - half) / step) * step;
  const high = Math.ceil((mid + half) / step) * step;
  return { lo: Math.max(0, low), hi: high, step };
}

/** A time-axis step (s) giving at most six labels over `windowS`. */
function timeStep(windowS) {
  return [15, 30, 60, 120, 300, 600, 900].find((s) => windowS / s <= 6) ?? 1800;
}

function agoText(ago, windowS) {
  if (ago === 0) return "now";
  return windowS > 300 ? `−${ago / 60} min` : `−${ago} s`;
}

export class LiveChart {
  /**
   * @param {HTMLCanvasElement} canvas
   * @param {number} windowS - seconds of simulation time shown
   */
  constructor(canvas, windowS = 120) {
    this.canvas = canvas;
    this.series = new Series(windowS);
    this.frame = null;
    this.timer = null;
    this.drawnAt = -Infinity;
    this.drawnVertices = 0;
    new ResizeObserver(() => this.resize()).observe(canvas);
    this.resize();
  }

  get windowS() {
    return this.series.windowS;
  }

  get points() {
    return this.series.points;
  }

  clear() {
    this.series.clear();
    this.requestDraw();
  }

  /** Add heartbeat messages (live ones, a replay or history); duplicates by seq are ignored. */
  add(messages) {
    this.series.add(messages);
    this.requestDraw();
  }

  setWindow(windowS) {
    this.series.setWindow(windowS);
    this.requestDraw();
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

  /**
   * Draw at the next animation frame, but not sooner than the data can move half a pixel:
   * a long window (30 min over ~1,000 px: 1.8 s a pixel) is not redrawn at the tick rate.
   */
  requestDraw() {
    if (this.frame !== null || this.timer !== null) return;
    const pixels = Math.max(1, this.canvas.clientWidth - PAD.left - PAD.right);
    const intervalMs = Math.min(MAX_DRAW_INTERVAL_MS, (this.windowS * 1000) / pixels / 2);
    const waitMs = this.drawnAt + intervalMs - performance.now();
    if (waitMs > 0) {
      this.timer = setTimeout(() => {
        this.timer = null;
        this.requestDraw();
      }, waitMs);
      return;
    }
    this.frame = requestAnimationFrame(() => {
      this.frame = null;
      this.drawnAt = performance.now();
      this.draw();
    });
  }

  /** The panels' rectangles (CSS px) for a canvas `w` × `h`. */
  layout(w, h) {
    const x0 = PAD.left;
    const x1 = w - PAD.right;
    const total = PANELS.reduce((sum, p) => sum + p.weight, 0);
    const free = h - PAD.top - PAD.bottom - PANELS.length * HEADER - (PANELS.length - 1) * GAP;
    let y = PAD.top;
    return PANELS.map((panel) => {
      const head = y;
      const y0 = y + HEADER;
      const y1 = y0 + (free * panel.weight) / total;
      y = y1 + GAP;
      return { panel, head, x0, x1, y0, y1 };
    });
  }

  draw() {
    const { canvas } = this;
    const points = this.series.points;
    const ctx = canvas.getContext("2d");
    const ratio = window.devicePixelRatio || 1;
    const w = canvas.width / ratio;
    const h = canvas.height / ratio;
    const colors = palette(canvas);
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, w, h);
    ctx.font = colors.font;
    const segments = this.series.segments();
    this.drawnVertices = 0;
    if (w < PAD.left + PAD.right + 20 || h < 200) {
      this.describe(segments); // hidden or too small to draw: still say what it holds
      return;
    }

    const rects = this.layout(w, h);
    const last = points.at(-1);
    const tEnd = last ? last.t : 0;
    const { x0, x1 } = rects[0];
    const x = (t) => x0 + ((t - (tEnd - this.windowS)) / this.windowS) * (x1 - x0);

    for (const rect of rects) {
      const range = this.yRange(rect.panel);
      const y = (v) => rect.y1 - ((v - range.lo) / (range.hi - range.lo)) * (rect.y1 - rect.y0);
      rect.y = y;
      this.clipTo(ctx, rect, () => this.drawBands(ctx, colors, segments, x, rect));
      this.drawGrid(ctx, colors, rect, range, y);
      this.drawTitle(ctx, colors, rect);
      if (points.length === 0) continue;
      this.clipTo(ctx, rect, () => {
        if (rect.panel.stress) this.drawStress(ctx, colors, segments, x, rect);
        for (const line of rect.panel.lines) {
          this.drawLine(ctx, segments, x, y, line.value, colors[line.color], line.width);
        }
        this.drawRestarts(ctx, colors, segments, x, rect);
      });
    }
    const hr = rects[0];
    if (last) {
      ctx.fillStyle = colors.bpm;
      ctx.beginPath();
      ctx.arc(x(last.t), hr.y(last.bpm), 3.5, 0, 2 * Math.PI);
      ctx.fill();
    } else {
      ctx.fillStyle = colors.text;
      ctx.textAlign = "center";
      ctx.textBaseline = "middle";
      ctx.fillText("Waiting for data: start the simulation", (x0 + x1) / 2, (hr.y0 + hr.y1) / 2);
    }
    this.drawTimeAxis(ctx, colors, rects.at(-1));
    this.describe(segments);
  }

  clipTo(ctx, rect, draw) {
    ctx.save();
    ctx.beginPath();
    ctx.rect(rect.x0, rect.y0 - 2, rect.x1 - rect.x0 + 4, rect.y1 - rect.y0 + 4);
    ctx.clip();
    draw();
    ctx.restore();
  }

  /** The panel's y range: its data's extent (all lines), widened to its smallest span. */
  yRange(panel) {
    let lo = Infinity;
    let hi = -Infinity;
    for (const p of this.series.points) {
      for (const line of panel.lines) {
        const v = line.value(p);
        if (v == null) continue;
        if (v < lo) lo = v;
        if (v > hi) hi = v;
      }
    }
    return niceRange(lo, hi, panel.span);
  }

  drawTitle(ctx, colors, rect) {
    const { panel } = rect;
    ctx.textBaseline = "middle";
    ctx.textAlign = "left";
    let xPos = rect.x0;
    const yPos = rect.head + HEADER / 2;
    const write = (text, color) => {
      ctx.fillStyle = color;
      ctx.fillText(text, xPos, yPos);
      xPos += ctx.measureText(text).width;
    };
    write(`${panel.title} (${panel.unit})`, colors.text);
    if (panel.lines.length > 1) {
      panel.lines.forEach((line, i) => {
        write(i === 0 ? ": " : " / ", colors.text);
        write(line.name, colors[line.color]);
      });
    }
    if (panel.stress) {
      ctx.textAlign = "right";
      ctx.fillStyle = colors.stress;
      ctx.fillText("stress level (0–1, right)", rect.x1, yPos);
    }
  }

  drawGrid(ctx, colors, rect, range, y) {
    ctx.strokeStyle = colors.grid;
    ctx.fillStyle = colors.text;
    ctx.lineWidth = 1;
    ctx.textBaseline = "middle";
    ctx.textAlign = "right";
    for (let v = range.lo; v <= range.hi + 1e-9; v += range.step) {
      const yPos = Math.round(y(v)) + 0.5;
      ctx.beginPath();
      ctx.moveTo(rect.x0, yPos);
      ctx.lineTo(rect.x1, yPos);
      ctx.stroke();
      ctx.fillText(String(Math.round(v * 10) / 10), rect.x0 - 8, yPos);
    }
    if (rect.panel.stress) {
      ctx.textAlign = "left";
      ctx.fillStyle = colors.stress;
      for (const s of [0, 0.5, 1]) {
        ctx.fillText(s.toFixed(1), rect.x1 + 8, rect.y1 - s * (rect.y1 - rect.y0));
      }
    }
  }

  drawTimeAxis(ctx, colors, rect) {
    ctx.fillStyle = colors.text;
    ctx.textAlign = "center";
    ctx.textBaseline = "top";
    const width = rect.x1 - rect.x0;
    const step = timeStep(this.windowS);
    for (let ago = this.windowS; ago >= 0; ago -= step) {
      const xPos = rect.x1 - (ago / this.windowS) * width;
      ctx.fillText(agoText(ago, this.windowS), xPos, rect.y1 + 8);
    }
  }

  /** Shade each stretch of `stress` / `recovery` samples (one rectangle per stretch). */
  drawBands(ctx, colors, segments, x, rect) {
    for (const run of segments) {
      let i = 0;
      while (i < run.length) {
        const label = run[i].label;
        let j = i;
        while (j + 1 < run.length && run[j + 1].label === label) j += 1;
        // A stretch lasts until the next sample of the segment.
        const end = (run[j + 1] ?? run[j]).t;
        const fill = colors.band[label];
        if (fill) {
          const left = Math.round(x(run[i].t));
          ctx.fillStyle = fill;
          ctx.fillRect(left, rect.y0, Math.max(1, Math.round(x(end)) - left), rect.y1 - rect.y0);
        }
        i = j + 1;
      }
    }
  }

  drawStress(ctx, colors, segments, x, rect) {
    const yStress = (s) => rect.y1 - s * (rect.y1 - rect.y0);
    ctx.fillStyle = colors.stressFill;
    for (const run of segments) {
      ctx.beginPath();
      ctx.moveTo(x(run[0].t), rect.y1);
      for (const [t, s] of thinned(run, x, (p) => p.stress)) ctx.lineTo(x(t), yStress(s));
      ctx.lineTo(x(run.at(-1).t), rect.y1);
      ctx.closePath();
      ctx.fill();
    }
    this.drawLine(ctx, segments, x, yStress, (p) => p.stress, colors.stress, 1.5);
  }

  /**
   * One polyline per segment (and per stretch without null values), thinned per pixel:
   * `value(point)` is what is drawn, `y(value)` its pixel row.
   */
  drawLine(ctx, segments, x, y, value, color, width) {
    ctx.strokeStyle = color;
    ctx.lineWidth = width;
    ctx.lineJoin = "round";
    for (const run of segments) {
      ctx.beginPath();
      let pen = false;
      for (const [t, v] of thinned(run, x, value)) {
        if (v == null) {
          pen = false;
          continue;
        }
        const yPos = y(v);
        if (pen) ctx.lineTo(x(t), yPos);
        else ctx.moveTo(x(t), yPos);
        pen = true;
        this.drawnVertices += 1;
      }
      ctx.stroke();
    }
  }

  /** A dashed line where a new run starts (the physiology was reset to baseline). */
  drawRestarts(ctx, colors, segments, x, rect) {
    ctx.save();
    ctx.strokeStyle = colors.restart;
    ctx.fillStyle = colors.restart;
    ctx.setLineDash([4, 3]);
    ctx.lineWidth = 1;
    ctx.textAlign = "left";
    ctx.textBaseline = "top";
    segments.forEach((run, i) => {
      if (i === 0 || run[0].run === segments[i - 1].at(-1).run) return;
      const xPos = Math.round(x(run[0].t)) + 0.5;
      ctx.beginPath();
      ctx.moveTo(xPos, rect.y0);
      ctx.lineTo(xPos, rect.y1);
      ctx.stroke();
      if (rect.panel.stress) ctx.fillText("start", xPos + 4, rect.y0 + 2);
    });
    ctx.restore();
  }

  /** What the chart shows, for assistive technology and tests (data-* attributes). */
  describe(segments) {
    const { canvas } = this;
    const points = this.series.points;
    const last = points.at(-1);
    const data = canvas.dataset;
    data.points = String(points.length);
    data.windowS = String(this.windowS);
    data.drawnVertices = String(this.drawnVertices);
    if (!last) {
      canvas.setAttribute(
        "aria-label",
        "Chart of heart rate, RMSSD, blood pressure and breathing: no data yet",
      );
      for (const key of DESCRIBED) delete data[key];
      return;
    }
    data.firstSeq = String(points[0].seq);
    data.lastSeq = String(last.seq);
    data.lastBpm = String(last.bpm);
    data.lastStress = last.stress.toFixed(3);
    data.maxStress = Math.max(...points.map((p) => p.stress)).toFixed(3);
    data.spanS = (last.t - points[0].t).toFixed(1);
    // Each drawn line as "firstSeq-lastSeq:run", e.g. "1-240:1 241-300:2" after a stop/start.
    data.segments = segments.map((s) => `${s[0].seq}-${s.at(-1).seq}:${s[0].run}`).join(" ");
    const rmssd = last.rmssd == null ? "not yet known" : `${last.rmssd.toFixed(1)} ms`;
    canvas.setAttribute(
      "aria-label",
      `Chart of the last ${this.windowS / 60} min: heart rate ${last.bpm} bpm, ` +
        `stress level ${last.stress.toFixed(2)} (${last.label}), RMSSD ${rmssd}, ` +
        `blood pressure ${last.systolic}/${last.diastolic} mmHg, ` +
        `breathing ${last.resp} breaths/min`,
    );
  }
}

/**
 * The (t, value) vertices to draw for `run`: every point while there are fewer points than
 * pixel columns; otherwise per column its first, lowest, highest and last value (in time
 * order), so peaks survive thinning. A null value is passed through (it breaks the line).
 */
function* thinned(run, x, value) {
  const first = run[0];
  const lastPoint = run.at(-1);
  const columns = Math.abs(x(lastPoint.t) - x(first.t));
  if (run.length <= 2 * columns + 2) {
    for (const p of run) yield [p.t, value(p)];
    return;
  }
  let column = null;
  let bucket = [];
  const flush = function* () {
    if (bucket.length === 0) return;
    let lo = bucket[0];
    let hi = bucket[0];
    for (const p of bucket) {
      if (p[1] < lo[1]) lo = p;
      if (p[1] > hi[1]) hi = p;
    }
    const chosen = new Set([bucket[0], lo, hi, bucket.at(-1)]);
    for (const p of bucket) if (chosen.has(p)) yield p;
    bucket = [];
  };
  for (const p of run) {
    const v = value(p);
    if (v == null) {
      yield* flush();
      yield [p.t, null];
      continue;
    }
    const col = Math.floor(x(p.t));
    if (col !== column) {
      yield* flush();
      column = col;
    }
    bucket.push([p.t, v]);
  }
  yield* flush();
}
