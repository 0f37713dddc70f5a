// The heartsim dashboard: wires the API, the live stream, the chart and the persons overview.
// Page URL options: ?person=ID (whom to show first); ?minutes=2|10|30 (the chart's time range);
// #token=T for servers that require a token (a fragment never reaches a server or its logs;
// ?token=T works too). The token is read once and removed from the address bar, so it stays
// out of the history, bookmarks and screenshots.

import { Api, ApiError } from "./api.js";
import { LiveChart } from "./chart.js";
import { readHistory } from "./history.js";
import { PersonsGrid } from "./persons.js";
import { HeartbeatStream } from "./stream.js";

const RANGES_S = [120, 600, 1800];
const HEALTH_EVERY_MS = 5_000;
const MAX_MESSAGES = 8;
const STATUS_TEXT = {
  connecting: "connecting…",
  live: "live",
  reconnecting: "reconnecting…",
};

const $ = (id) => document.getElementById(id);
const pageParams = new URLSearchParams(window.location.search);
const api = new Api(document.baseURI, takeTokenFromPageUrl());

/** The token of `#token=` (or `?token=`), removed from the address bar; null without one. */
function takeTokenFromPageUrl() {
  const url = new URL(window.location.href);
  const fragment = new URLSearchParams(url.hash.replace(/^#/, ""));
  const token = fragment.get("token") || url.searchParams.get("token");
  if (fragment.has("token") || url.searchParams.has("token")) {
    fragment.delete("token");
    url.searchParams.delete("token");
    url.hash = fragment.toString();
    window.history.replaceState(null, "", url);
  }
  return token || null;
}

/** Change one query parameter of the address bar (null removes it), without a reload. */
function setPageParam(name, value) {
  const url = new URL(window.location.href);
  if (value === null) url.searchParams.delete(name);
  else url.searchParams.set(name, value);
  window.history.replaceState(null, "", url);
}

const initialRangeS = RANGES_S.find((s) => s === 60 * Number(pageParams.get("minutes"))) ?? 120;
const chart = new LiveChart($("chart"), initialRangeS);
let tickHz = 2; // of the stream, from its `connected` message
let historyLoad = 0; // bumps with every history read; a stale read is dropped
const stream = new HeartbeatStream(api, {
  onStatus: showStatus,
  onConnected: connected,
  onHeartbeat: (message) => {
    chart.add([message]);
    showHeartbeat(message);
  },
  onNotice: say,
});
const grid = new PersonsGrid($("persons"), $("persons-note"), api, {
  onFocus: (person) => {
    if (person !== stream.person) switchPerson(person);
  },
  onError: (text) => say(text, "error"),
});

// ----- messages for the user ------------------------------------------------------------------
/** Show `text` in the message area (newest first); kind: "ok" | "info" | "error". */
function say(text, kind = "info") {
  const list = $("messages");
  const newest = list.firstElementChild;
  if (newest && newest.dataset.text === text) {
    // The same news again (e.g. a refused stream retrying): count it instead of repeating it.
    newest.dataset.count = String(Number(newest.dataset.count) + 1);
    newest.querySelector("time").textContent = new Date().toLocaleTimeString();
    newest.querySelector(".count").textContent = `×${newest.dataset.count}`;
    return;
  }
  const item = document.createElement("li");
  item.className = `msg msg-${kind}`;
  item.dataset.kind = kind;
  item.dataset.text = text;
  item.dataset.count = "1";
  const time = document.createElement("time");
  time.textContent = new Date().toLocaleTimeString();
  const body = document.createElement("span");
  body.textContent = text;
  const count = document.createElement("span");
  count.className = "count";
  item.append(time, body, count);
  list.prepend(item);
  while (list.children.length > MAX_MESSAGES) list.lastElementChild.remove();
}

function describeError(err) {
  return err instanceof ApiError ? err.describe() : `Unexpected error: ${err}`;
}

// ----- live values ----------------------------------------------------------------------------
function setText(id, text) {
  const element = $(id);
  if (element.textContent !== text) element.textContent = text;
  element.classList.toggle("placeholder", text === "–");
}

/** `value` with `digits` decimals, or a dash for null (e.g. HRV before 30 s of beats). */
const fixed = (value, digits) => (value == null ? "–" : value.toFixed(digits));

function showHeartbeat(m) {
  setText("bpm", String(m.bpm));
  document.body.style.setProperty("--beat-s", `${(60 / m.bpm).toFixed(3)}s`);
  setText("hrv", fixed(m.variability, 1));
  setText("bp", `${m.systolic}/${m.diastolic}`);
  setText("resp", fixed(m.respiration_rate, 1));
  setText("stress-level", fixed(m.stress_level, 2));
  const gauge = $("stress-gauge");
  gauge.setAttribute("aria-valuenow", m.stress_level.toFixed(2));
  gauge.style.setProperty("--level", String(m.stress_level));
  setText("label", m.label);
  $("label").dataset.label = m.label;
  document.querySelector(".tile-stress").dataset.label = m.label;
  const hasPrediction = m.prediction !== null && m.prediction !== undefined;
  $("prediction-tile").hidden = !hasPrediction;
  if (hasPrediction) {
    const { prediction } = m;
    const shown = typeof prediction === "number" ? fixed(prediction, 2) : String(prediction);
    setText("prediction", shown);
    setText("confidence", m.confidence == null ? "–" : `${Math.round(m.confidence * 100)} %`);
  }
  showSimState(m.state);
  setText("stream-info", `/ws/heartbeat · person ${m.person_id} · seq ${m.seq}`);
}

function resetValues() {
  for (const id of ["bpm", "hrv", "bp", "resp", "stress-level", "label", "base-bpm"]) {
    setText(id, "–");
  }
  $("label").dataset.label = "";
  document.querySelector(".tile-stress").dataset.label = "";
  $("stress-gauge").style.setProperty("--level", "0");
  $("prediction-tile").hidden = true;
}

/** The simulation's state on the pill, the page and the buttons (the active one pressed). */
function showSimState(state) {
  const pill = $("sim-state");
  pill.dataset.state = state;
  setText("sim-state", `simulation: ${state}`);
  document.body.dataset.sim = state;
  for (const button of document.querySelectorAll("#sim-buttons [data-state]")) {
    button.setAttribute("aria-pressed", String(button.dataset.state === state));
  }
  grid.setSimState(state);
}

function showStatus({ state, detail, retryInS }) {
  const pill = $("status");
  pill.dataset.state = state;
  const text =
    retryInS === null ? STATUS_TEXT[state] : `reconnecting in ${retryInS.toFixed(1)} s`;
  setText("status", text);
  pill.title = detail ? `Stream: ${detail}` : `Stream: ${text}`;
}

function showBaseline(bpm, { fillInput = false } = {}) {
  setText("base-bpm", String(Math.round(bpm)));
  const input = $("baseline-input");
  if (fillInput && document.activeElement !== input) input.value = String(Math.round(bpm));
}

// ----- stream lifecycle -----------------------------------------------------------------------
function connected(message) {
  if (message.restarted) chart.clear(); // the old run's line must not run into the new one
  tickHz = message.tick_hz;
  showSimState(message.state);
  showBaseline(message.base_bpm, { fillInput: stream.lastSeq === null });
  selectPerson(message.person_id);
  if (stream.lastSeq === null) loadHistory(message.person_id, { fresh: true });
}

/**
 * Fill the chart with the buffered history of its time range (a fresh subscription only gets
 * new messages). `fresh`: the first read of a subscription, which also sets its resume point.
 */
async function loadHistory(person, { fresh = false } = {}) {
  const load = ++historyLoad;
  const windowS = chart.windowS;
  const before = fresh ? null : (chart.series.first ?? null);
  $("chart").dataset.loading = "true";
  let history;
  try {
    history = await readHistory(api, person, windowS, { before, tickHz });
  } catch (err) {
    say(`Could not load the recent history: ${describeError(err)}`, "error");
    return;
  } finally {
    if (load === historyLoad) delete $("chart").dataset.loading;
  }
  if (load !== historyLoad || person !== stream.person) return; // switched meanwhile
  chart.add(history.messages);
  showRangeNote(history, windowS);
  if (fresh && history.newest) {
    if (stream.lastSeq === null) showHeartbeat(history.newest);
    stream.advanceTo(history.newest.seq);
  }
}

function showRangeNote(history, windowS) {
  const note = $("range-note");
  const { first, last } = chart.series;
  note.hidden = !(history.evicted && first);
  if (!note.hidden) {
    const keptMin = (last.t - first.t) / 60;
    note.textContent =
      `The server keeps about the last ${keptMin.toFixed(1)} min of this person's messages: ` +
      `the rest of the ${windowS / 60} min fills in live.`;
  }
}

function setRange(windowS) {
  for (const button of $("range").querySelectorAll("button")) {
    button.setAttribute("aria-pressed", String(Number(button.dataset.rangeS) === windowS));
  }
  setText("chart-title", `Last ${windowS / 60} minutes`);
  setPageParam("minutes", windowS === 120 ? null : String(windowS / 60));
  const wider = windowS > chart.windowS;
  chart.setWindow(windowS);
  $("range-note").hidden = true;
  if (wider && stream.person !== null) loadHistory(stream.person);
}

function switchPerson(person) {
  setPageParam("person", person);
  historyLoad += 1; // drop a history read of the previous person
  resetValues();
  chart.clear();
  grid.setFocus(person);
  selectPerson(person);
  stream.open(person);
}

// ----- persons and health ---------------------------------------------------------------------
async function loadPersons() {
  let list;
  try {
    list = await api.get("/persons");
  } catch (err) {
    say(`Could not list persons: ${describeError(err)}`, "error");
    return;
  }
  const options = list.persons.map((p) => {
    const rest = Math.round(p.resting_hr_bpm);
    const text = `${p.person_id}${p.is_default ? " (default)" : ""} · rest ${rest} bpm`;
    return new Option(text, p.person_id);
  });
  $("person-select").replaceChildren(...options);
  selectPerson(stream.person ?? list.default_person);
  grid.setPersons(list.persons);
}

function selectPerson(person) {
  const select = $("person-select");
  if ([...select.options].some((option) => option.value === person)) select.value = person;
  grid.setFocus(person);
}

let serverHealth = "healthy";

async function pollHealth() {
  let health;
  try {
    health = await api.get("/health", { person: stream.person });
  } catch (err) {
    // A 503 still carries the report (status "degraded" or "unhealthy" and its reasons). Other
    // failures: the connection status already tells the user when the server is unreachable.
    if (!(err instanceof ApiError && err.status === 503 && err.body?.status)) return;
    health = err.body;
  }
  if (health.status !== serverHealth) {
    if (health.status === "healthy") say("Server healthy again", "ok");
    else say(`Server ${health.status}: ${(health.reasons ?? []).join("; ")}`, "error");
    serverHealth = health.status;
  }
  showSimState(health.simulation_state);
  showBaseline(health.base_bpm);
  if (health.persons !== $("person-select").options.length) await loadPersons();
}

// ----- controls -------------------------------------------------------------------------------
/** POST a control route for the selected person; reports the outcome in the message area. */
async function command(button, path, query = {}) {
  button.disabled = true;
  try {
    const body = await api.post(path, { ...query, person: stream.person });
    say(body.message, "ok");
    return body;
  } catch (err) {
    say(describeError(err), "error");
    return null;
  } finally {
    button.disabled = false;
  }
}

function wireControls() {
  for (const [id, path] of [
    ["start", "/simulation/start"],
    ["pause", "/simulation/pause"],
    ["resume", "/simulation/resume"],
    ["stop", "/simulation/stop"],
  ]) {
    $(id).addEventListener("click", async (event) => {
      const body = await command(event.currentTarget, path);
      if (body) showSimState(body.state);
    });
  }
  for (const button of $("range").querySelectorAll("button")) {
    button.addEventListener("click", () => setRange(Number(button.dataset.rangeS)));
  }

  const slider = $("stress-slider");
  const showLevel = () => setText("stress-slider-value", Number(slider.value).toFixed(2));
  slider.addEventListener("input", showLevel);
  showLevel();
  $("stress-form").addEventListener("submit", (event) => {
    event.preventDefault();
    command($("trigger-stress"), "/simulation/trigger-stress", {
      stress_level: slider.value,
      duration_s: $("stress-duration").value.trim(),
    });
  });

  $("baseline-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = await command($("set-baseline"), "/simulation/set-baseline", {
      bpm: $("baseline-input").value.trim(),
    });
    if (body) {
      showBaseline(body.base_bpm);
      loadPersons(); // the selector shows each person's resting heart rate
    }
  });

  $("person-select").addEventListener("change", (event) => switchPerson(event.target.value));
  $("clear-messages").addEventListener("click", () => $("messages").replaceChildren());
}

wireControls();
resetValues();
setRange(initialRangeS);
stream.open(pageParams.get("person"));
loadPersons();
pollHealth();
setInterval(pollHealth, HEALTH_EVERY_MS);
