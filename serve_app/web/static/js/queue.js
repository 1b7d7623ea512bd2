// The queue panel: counts, throughput and ETA, the worker with pause/resume, failed items with
// their errors (retry one, retry all) and waiting ones (cancel).

import { api, query } from "./api.js";

const ORDER = ["pending", "queued", "processing", "completed", "failed", "cancelled"];

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  if (seconds < 90) return `${Math.round(seconds)} s`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

function button(label, onClick, description) {
  const b = Object.assign(document.createElement("button"), { type: "button", textContent: label });
  if (description) b.setAttribute("aria-label", description);
  b.addEventListener("click", onClick);
  return b;
}

export class QueuePanel {
  constructor(root, { onChange, notify }) {
    Object.assign(this, { root, onChange, notify });
    this.counts = root.querySelector("[data-part=counts]");
    this.rate = root.querySelector("[data-part=rate]");
    this.worker = root.querySelector("[data-part=worker]");
    this.toggle = root.querySelector("[data-part=toggle]");
    this.failed = root.querySelector("[data-part=failed]");
    this.waiting = root.querySelector("[data-part=waiting]");
    root.querySelector("[data-part=retry-all]").addEventListener("click", () => this.act(
      api("/api/queue/retry-failed", { method: "POST" }), "every failed item is queued again"));
    this.toggle.addEventListener("click", () => this.act(api(
      `/api/queue/worker/${this.paused ? "start" : "stop"}`, { method: "POST" }),
      this.paused ? "worker resumed" : "worker paused"));
  }

  async act(request, done) {
    try {
      await request;
      this.notify(done);
    } catch (e) {
      this.notify(e.message, true);
    }
    await this.refresh();
    this.onChange();
  }

  async refresh() {
    const [stats, worker, failed, waiting] = await Promise.all([
      api("/api/queue/stats"), api("/api/queue/worker/status"),
      api(`/api/queue/items${query({ status: "failed", limit: 50 })}`),
      api(`/api/queue/items?status=queued&status=processing&limit=20`),
    ]);
    this.counts.replaceChildren(...ORDER.map((s) => {
      const n = stats.counts[s] ? stats.counts[s].photo + stats.counts[s].video : 0;
      const row = document.createElement("div");
      row.dataset.status = s;
      row.append(Object.assign(document.createElement("dt"), { textContent: s }),
                 Object.assign(document.createElement("dd"), { textContent: n.toLocaleString() }));
      return row;
    }));
    this.rate.textContent = `${stats.throughput_per_minute.toFixed(1)} per minute · ` +
      `${stats.remaining.toLocaleString()} left · ETA ${duration(stats.eta_seconds)}`;
    this.paused = worker.paused || !worker.running;
    this.worker.textContent = !worker.running ? "worker not running"
      : worker.paused ? "worker paused" : `worker running, ${worker.in_flight} of ${worker.max_in_flight} in flight`;
    if (!worker.depth_available && worker.depth_error) this.worker.textContent += ` · depth model: ${worker.depth_error}`;
    this.toggle.textContent = this.paused ? "Resume" : "Pause";
    this.failed.replaceChildren(...failed.items.map((item) => this.itemRow(item, "Retry",
      () => this.act(api(`/api/queue/items/${item.id}/retry`, { method: "POST" }), "queued again"))));
    this.waiting.replaceChildren(...waiting.items.map((item) => this.itemRow(item, "Cancel",
      () => this.act(api(`/api/queue/items/${item.id}/cancel`, { method: "POST" }), "cancelled"))));
  }

  itemRow(item, label, action) {
    const li = document.createElement("li");
    const link = Object.assign(document.createElement("a"), {
      href: `/view/${item.media_id}`, textContent: `${item.kind} ${item.media_id.slice(0, 8)}` });
    const info = Object.assign(document.createElement("span"), { className: "info",
      textContent: item.last_error ? `${item.last_error} (attempt ${item.attempts}/${item.max_attempts})` : item.status });
    li.append(link, info, button(label, action, `${label} ${item.kind} ${item.media_id}`));
    return li;
  }
}
