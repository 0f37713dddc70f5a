// The persons overview: a compact grid, one cell per person with the heart rate, the label and
// a sparkline of the last minutes; a click focuses the dashboard on that person.
//
// The cells poll GET /heartbeat/current (each answer is the person's last message, already
// encoded by the server) rather than open one WebSocket per person: the load stays bounded
// and predictable whatever the tick rate, at most MAX_CELLS requests per POLL_EVERY_MS, at
// most IN_FLIGHT at a time, only while the simulation runs and the page is visible. (A stream
// per person would send every tick of every person, 20 per second each by default, and the
// server's per-address handshake limit would refuse a burst of fifty connections.)

import { ApiError } from "./api.js";
import { segmentsOf } from "./series.js";

/** Most cells shown; the others are reachable through the Person menu. */
export const MAX_CELLS = 48;
const POLL_EVERY_MS = 2_000;
const IN_FLIGHT = 4;
/** Sparkline length: two minutes of polls. */
const SPARK_POINTS = 60;

export class PersonsGrid {
  /**
   * @param {HTMLElement} grid - the cells' container
   * @param {HTMLElement} note - says how many persons are left out
   * @param {import("./api.js").Api} api
   * @param {{onFocus: (person: string) => void, onError: (text: string) => void}} handlers
   */
  constructor(grid, note, api, { onFocus, onError }) {
    this.grid = grid;
    this.note = note;
    this.api = api;
    this.onFocus = onFocus;
    this.onError = onError;
    this.cells = new Map(); // person id -> {element, points, ...}
    this.focused = null;
    this.simState = "unknown";
    this.timer = null;
    this.polling = false;
    this.again = false; // a round was asked for while one ran
    this.failing = false;
    this.polls = 0;
    document.addEventListener("visibilitychange", () => this.schedule(0));
  }

  /** Show the persons of GET /persons (the first MAX_CELLS, and always the focused one). */
  setPersons(persons) {
    const ids = persons.map((p) => p.person_id);
    let shown = ids.slice(0, MAX_CELLS);
    if (this.focused && ids.includes(this.focused) && !shown.includes(this.focused)) {
      shown = [...shown.slice(0, MAX_CELLS - 1), this.focused];
    }
    for (const [id, cell] of this.cells) {
      if (!shown.includes(id)) {
        cell.element.remove();
        this.cells.delete(id);
      }
    }
    const elements = shown.map((id) => (this.cells.get(id) ?? this.makeCell(id)).element);
    this.grid.replaceChildren(...elements);
    const hidden = ids.length - shown.length;
    this.note.hidden = hidden === 0;
    this.note.textContent =
      hidden === 0
        ? ""
        : `Showing ${shown.length} of ${ids.length} persons: choose the others in the Person menu.`;
    this.grid.dataset.persons = String(ids.length);
    this.setFocus(this.focused);
    this.schedule(0);
  }

  setFocus(person) {
    this.focused = person;
    for (const [id, cell] of this.cells) {
      cell.element.setAttribute("aria-pressed", String(id === person));
    }
  }

  /** Poll while the simulation runs; otherwise refresh once (values no longer change). */
  setSimState(state) {
    if (state === this.simState) return;
    this.simState = state;
    this.grid.dataset.sim = state;
    this.schedule(0);
  }

  makeCell(id) {
    const element = document.createElement("button");
    element.type = "button";
    element.className = "person-cell";
    element.dataset.person = id;
    element.setAttribute("aria-pressed", "false");
    element.title = `Show ${id}`;
    const name = document.createElement("span");
    name.className = "person-name";
    name.textContent = id;
    const label = document.createElement("span");
    label.className = "badge";
    label.dataset.label = "";
    label.textContent = "–";
    const value = document.createElement("span");
    value.className = "person-bpm";
    const bpm = document.createElement("b");
    bpm.className = "placeholder";
    bpm.textContent = "–";
    const unit = document.createElement("small");
    unit.textContent = "bpm";
    value.append(bpm, unit);
    const spark = document.createElement("canvas");
    spark.className = "sparkline";
    spark.setAttribute("aria-hidden", "true");
    element.append(name, label, value, spark);
    element.addEventListener("click", () => this.onFocus(id));
    const cell = { element, label, bpm, spark, points: [] };
    this.cells.set(id, cell);
    return cell;
  }

  /** Run the next poll round in `delayMs` (replacing a scheduled one). */
  schedule(delayMs = POLL_EVERY_MS) {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.poll(), delayMs);
  }

  async poll() {
    this.timer = null;
    if (document.hidden) return; // a visibilitychange restarts it
    if (this.polling) {
      this.again = true;
      return;
    }
    this.polling = true;
    this.again = false;
    const ids = [...this.cells.keys()];
    let next = 0;
    const worker = async () => {
      while (next < ids.length) {
        const id = ids[next];
        next += 1;
        await this.refresh(id);
      }
    };
    try {
      await Promise.all(Array.from({ length: IN_FLIGHT }, worker));
    } finally {
      this.polling = false;
      this.polls += 1;
      this.grid.dataset.polls = String(this.polls);
    }
    if (this.again) this.schedule(0);
    else if (this.simState === "running") this.schedule();
  }

  async refresh(id) {
    let message;
    try {
      message = await this.api.get("/heartbeat/current", { person: id });
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) return; // no data yet, or removed
      if (!this.failing) this.onError(`Persons overview: ${err.describe?.() ?? err}`);
      this.failing = true;
      return;
    }
    this.failing = false;
    const cell = this.cells.get(id);
    if (cell) this.show(cell, message);
  }

  show(cell, m) {
    const last = cell.points.at(-1);
    if (!last || m.seq !== last.seq) {
      cell.points.push({ seq: m.seq, t: m.t, run: m.run, bpm: m.bpm });
      if (cell.points.length > SPARK_POINTS) cell.points.shift();
    }
    cell.bpm.textContent = String(m.bpm);
    cell.bpm.classList.remove("placeholder");
    cell.label.textContent = m.label;
    cell.label.dataset.label = m.label;
    Object.assign(cell.element.dataset, {
      bpm: String(m.bpm),
      label: m.label,
      seq: String(m.seq),
      points: String(cell.points.length),
    });
    cell.element.title = `Show ${m.person_id}: ${m.bpm} bpm, ${m.label}`;
    drawSparkline(cell.spark, cell.points);
  }
}

/** Heart rate over the polled points; a new run (reset to baseline) breaks the line. */
function drawSparkline(canvas, points) {
  const ratio = window.devicePixelRatio || 1;
  const width = Math.round(canvas.clientWidth * ratio);
  const height = Math.round(canvas.clientHeight * ratio);
  if (!width || !height) return;
  if (canvas.width !== width || canvas.height !== height) {
    canvas.width = width;
    canvas.height = height;
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  const w = width / ratio;
  const h = height / ratio;
  ctx.clearRect(0, 0, w, h);
  if (points.length < 2) return;
  const style = getComputedStyle(canvas);
  ctx.strokeStyle = style.getPropertyValue("--chart-bpm").trim() || "#d6334a";
  ctx.lineWidth = 1.5;
  ctx.lineJoin = "round";
  const t0 = points[0].t;
  const span = Math.max(1e-6, points.at(-1).t - t0);
  const bpms = points.map((p) => p.bpm);
  const lo = Math.min(...bpms) - 2;
  const hi = Math.max(...bpms) + 2;
  const x = (t) => 1 + ((t - t0) / span) * (w - 2);
  const y = (bpm) => h - 1 - ((bpm - lo) / (hi - lo)) * (h - 2);
  for (const run of segmentsOf(points, false)) {
    ctx.beginPath();
    run.forEach((p, i) => (i === 0 ? ctx.moveTo(x(p.t), y(p.bpm)) : ctx.lineTo(x(p.t), y(p.bpm))));
    ctx.stroke();
  }
}
