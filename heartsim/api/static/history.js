// Reading a person's buffered messages of the last minutes from GET /heartbeat/history.
//
// The server pages forward only (`since`: messages with a higher seq, oldest first, at most
// 10,000 per request) and numbers each person's messages one by one, so the page that ends
// where the chart's data begin starts `count` seq numbers earlier: chunks are read backwards
// from the newest message until the window is covered, the buffer's oldest message is reached
// or MAX_PAGES requests were made. The server's history is bounded (10 minutes per person by
// default, less under its memory budget): `evicted` says older messages existed but are gone.

const PAGE_LIMIT = 10_000;
const MAX_PAGES = 12;

/**
 * @param {import("./api.js").Api} api
 * @param {string|null} person
 * @param {number} windowS - seconds of simulation time wanted, back from the newest message
 * @param {{before?: {seq: number, t: number}|null, tickHz?: number}} options - `before`: read
 *   only messages older than this one (the chart's first: it has the rest); `tickHz` guesses
 *   how many messages a time span holds
 * @returns {Promise<{messages: object[], newest: object|null, evicted: boolean}>} messages
 *   oldest first; `evicted`: the window reaches back before the oldest message the server
 *   still keeps, and older ones existed
 */
export async function readHistory(api, person, windowS, { before = null, tickHz = 2 } = {}) {
  const head = await api.get("/heartbeat/history", { person, limit: 1 });
  const newest = head.messages.at(-1) ?? null;
  if (newest === null) return { messages: [], newest, evicted: false };
  const start = newest.t - windowS;
  const oldest = head.oldest_seq;
  // Read the messages with seq < next, back from the one at `next` (time `nextT`).
  let next = newest.seq + 1;
  let nextT = newest.t;
  if (before !== null && before.seq <= newest.seq) {
    next = before.seq;
    nextT = before.t;
  }
  const chunks = [];
  for (let page = 0; page < MAX_PAGES && next > oldest && nextT > start; page += 1) {
    const want = Math.ceil((nextT - start) * tickHz) + 1; // one more: the line reaches the edge
    const count = Math.min(PAGE_LIMIT, want, next - oldest);
    const since = next - 1 - count;
    const answer = await api.get("/heartbeat/history", {
      person,
      since,
      limit: count,
      epoch: head.epoch,
    });
    if (answer.restarted) break; // the server restarted meanwhile: its numbering is new
    const messages = answer.messages.filter((m) => m.seq < next);
    if (messages.length === 0) break;
    chunks.unshift(messages);
    next = messages[0].seq;
    nextT = messages[0].t;
  }
  const messages = chunks.flat();
  if (before === null && messages.at(-1)?.seq !== newest.seq) messages.push(newest);
  // seq starts at 1: an oldest buffered message above it means older ones were dropped.
  return { messages, newest, evicted: next <= oldest && oldest > 1 && nextT > start };
}
