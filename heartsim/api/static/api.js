// HTTP access to the heartsim API (same origin as the page) with optional bearer token.
// The token never goes into a URL: REST calls carry it in the Authorization header, the stream
// in a WebSocket subprotocol (browsers cannot set headers on a WebSocket).

/** The stream's subprotocol; the server selects it (it never echoes the token's). */
export const SUBPROTOCOL = "heartsim";
const TOKEN_SUBPROTOCOL_PREFIX = "heartsim.token.";

/** base64url without padding: the only characters a subprotocol name may hold. */
function base64url(text) {
  const bytes = new TextEncoder().encode(text);
  let binary = "";
  for (const byte of bytes) binary += String.fromCharCode(byte);
  return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

/** An error answer of the API: `status` plus the server's `{error, message}` body. */
export class ApiError extends Error {
  constructor(status, title, message, retryAfter = null, body = null) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.title = title;
    this.retryAfter = retryAfter;
    this.body = body; // the decoded answer (e.g. /health's report with a 503), or null
  }

  /** One line for the user, e.g. "422 Invalid parameter: bpm must be between 40 and 120". */
  describe() {
    if (this.status === 0) return `${this.title}: ${this.message}`;
    return `${this.status} ${this.title}: ${this.message}`;
  }
}

export class Api {
  /**
   * @param {string} base - the page's base URL (`document.baseURI`): API paths resolve against
   *   it, so the dashboard also works behind a path prefix (jupyter-server-proxy's /proxy/PORT/)
   * @param {string|null} token - sent as `Authorization: Bearer TOKEN` when set
   */
  constructor(base, token = null) {
    this.base = base;
    this.token = token;
  }

  url(path, query = {}) {
    const url = new URL(path.replace(/^\//, ""), this.base);
    for (const [key, value] of Object.entries(query)) {
      if (value !== null && value !== undefined && value !== "") url.searchParams.set(key, value);
    }
    return url;
  }

  /** WebSocket URL of the stream: ws(s)://host/ws/heartbeat?person=..&since=.. (no token) */
  streamUrl(query = {}) {
    const url = this.url("/ws/heartbeat", query);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    return url.toString();
  }

  /** Subprotocols to offer: `heartsim` first (proxies select the first one offered), then the
   * token's, `heartsim.token.<base64url(token)>`, when there is a token. */
  streamProtocols() {
    if (!this.token) return [SUBPROTOCOL];
    return [SUBPROTOCOL, TOKEN_SUBPROTOCOL_PREFIX + base64url(this.token)];
  }

  get(path, query) {
    return this.request("GET", path, query);
  }

  post(path, query) {
    return this.request("POST", path, query);
  }

  /** The decoded JSON body; throws {@link ApiError} for any non-2xx answer or network failure. */
  async request(method, path, query = {}) {
    const headers = { Accept: "application/json" };
    if (this.token) headers.Authorization = `Bearer ${this.token}`;
    let response;
    try {
      response = await fetch(this.url(path, query), { method, headers, cache: "no-store" });
    } catch (err) {
      throw new ApiError(0, "Network error", `server unreachable (${err.message})`);
    }
    const body = await response.json().catch(() => null);
    if (response.ok) return body;
    const title = body?.error ?? response.statusText ?? "Error";
    const message = body?.message ?? (body ? JSON.stringify(body) : "no details");
    throw new ApiError(response.status, title, message, response.headers.get("Retry-After"), body);
  }
}
