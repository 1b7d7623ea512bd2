// The live event stream: GET /api/events through an EventSource, opened with a token (an
// EventSource sends no Authorization header) and resumed after the last event it saw.
//
// EventSource reconnects by itself when a stream drops, sending Last-Event-ID; what it cannot
// do is come back from a refusal (an expired token: 401), after which it gives up for good. Then
// a new token is asked for and a new EventSource opened with ?last_event_id=, so nothing that
// happened in between is missed.

import { api, query } from "./api.js";

export const TYPES = ["media.created", "media.deleted", "item.queued", "item.started",
  "item.retrying", "item.completed", "item.failed", "item.cancelled"];
const RETRY_MS = 3000;

export class LiveEvents {
  // onEvent(type, body) for each event; onState(up) when the stream opens or goes down.
  constructor({ onEvent, onState, types = "item.*,media.*" }) {
    Object.assign(this, { onEvent, onState, types });
    this.lastId = null;
    this.source = null;
    this.up = false;
  }

  async start() {
    this.close();
    let token;
    try {
      ({ token } = await api("/api/events/token", { method: "POST" }));
    } catch {
      this.retryLater();
      return;
    }
    const source = new EventSource(`/api/events${query({
      token, types: this.types, last_event_id: this.lastId })}`);
    this.source = source;
    source.onopen = () => this.state(true);
    source.onerror = () => {
      if (source !== this.source) return;
      this.state(false);
      // CONNECTING: the browser retries by itself; CLOSED: it was refused and will not.
      if (source.readyState === EventSource.CLOSED) this.retryLater();
    };
    for (const type of TYPES) {
      source.addEventListener(type, (e) => {
        this.lastId = e.lastEventId;
        this.onEvent(type, JSON.parse(e.data));
      });
    }
  }

  retryLater() {
    this.close();
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.start(), RETRY_MS);
  }

  close() {
    if (this.source) this.source.close();
    this.source = null;
    this.state(false);
  }

  state(up) {
    if (up === this.up) return;
    this.up = up;
    this.onState(up);
  }
}
