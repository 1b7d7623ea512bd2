// The library: a timeline of thumbnails under day headings, paged as it scrolls, with each item's
// state kept current (by the live stream's events; by polling while the stream is down).

import { api, query, sameOrigin } from "./api.js";
import { Pager, dayOf } from "./pager.js";

const PAGE = 120;
const dayFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "long", timeZone: "UTC" });

export class Library {
  constructor({ grid, sentinel, count, empty }) {
    Object.assign(this, { grid, sentinel, countEl: count, empty });
    this.filters = { kind: "", status: "", order: "taken" };
    this.items = new Map();
    this.tiles = new Map();
    this.observer = new IntersectionObserver((entries) => {
      if (entries.some((e) => e.isIntersecting)) this.more();
    }, { rootMargin: "800px" });
    this.observer.observe(sentinel);
  }

  listQuery(extra = {}) {
    const { kind, status, order } = this.filters;
    return query({ kind, status, order, ...extra });
  }

  // The ids in list order, for the viewer's previous/next.
  ids() { return [...this.items.keys()]; }

  async reset(filters) {
    if (filters) this.filters = { ...this.filters, ...filters };
    this.items.clear();
    this.tiles.clear();
    this.grid.replaceChildren();
    this.loading = null;
    this.pager = new Pager((cursor) => api(`/api/media${this.listQuery({
      limit: PAGE, cursor, total: cursor ? "" : "true" })}`));
    await this.more();
  }

  // One page at a time: the scroll observer and a reset may both ask.
  more() {
    if (!this.loading) this.loading = this.loadPage().finally(() => { this.loading = null; });
    return this.loading;
  }

  async loadPage() {
    const pager = this.pager;
    if (!pager || pager.done) return;
    const fresh = await pager.next();
    if (pager !== this.pager) return; // filters changed meanwhile
    for (const item of fresh) this.place(item, "end");
    this.showCount();
    // A tall screen may show the sentinel still: keep filling it.
    const rect = this.sentinel.getBoundingClientRect();
    if (!pager.done && rect.top < innerHeight + 800) await this.loadPage();
  }

  showCount() {
    const total = this.pager?.total;
    const shown = this.items.size;
    this.countEl.textContent = total === null || total === undefined ? `${shown} items`
      : `${shown.toLocaleString()} of ${total.toLocaleString()} items`;
    this.empty.hidden = shown > 0 || !this.pager?.done;
  }

  matches(item) {
    const { kind, status } = this.filters;
    return (!kind || item.kind === kind) && (!status || item.status === status);
  }

  section(day, where) {
    const at = where === "start" ? this.grid.firstElementChild : this.grid.lastElementChild;
    if (at && at.dataset.day === day) return at.querySelector(".tiles");
    const section = document.createElement("section");
    section.className = "day";
    section.dataset.day = day;
    const heading = document.createElement("h2");
    heading.textContent = dayFormat.format(new Date(`${day}T00:00:00Z`));
    const tiles = document.createElement("div");
    tiles.className = "tiles";
    section.append(heading, tiles);
    if (where === "start") this.grid.prepend(section);
    else this.grid.append(section);
    return tiles;
  }

  place(item, where) {
    this.items.set(item.id, item);
    const tile = this.tile(item);
    this.tiles.set(item.id, tile);
    const tiles = this.section(dayOf(item, this.filters.order), where);
    if (where === "start") tiles.prepend(tile);
    else tiles.append(tile);
  }

  tile(item) {
    const a = document.createElement("a");
    a.className = "tile";
    a.href = `/view/${item.id}`;
    a.dataset.id = item.id;
    this.fill(a, item);
    return a;
  }

  fill(a, item) {
    const name = item.original_name || `${item.kind} ${item.id.slice(0, 8)}`;
    a.dataset.status = item.status || "none";
    a.title = `${name} (${item.status || "not queued"})`;
    a.setAttribute("aria-label", a.title);
    const picture = item.thumbnail_url
      ? Object.assign(document.createElement("img"), {
        src: sameOrigin(item.thumbnail_url), alt: name, loading: "lazy", decoding: "async" })
      : Object.assign(document.createElement("span"), { className: "placeholder", textContent: name });
    const badge = Object.assign(document.createElement("span"), {
      className: "badge", textContent: item.status || "new" });
    const kind = item.kind === "video"
      ? [Object.assign(document.createElement("span"), { className: "kind", textContent: "▶ video" })] : [];
    a.replaceChildren(picture, badge, ...kind);
  }

  // An item uploaded from this page: shown at once at the top.
  async added(mediaId) {
    if (!this.pager || !this.pager.add(mediaId)) return;
    const item = await api(`/api/media/${mediaId}`);
    if (this.matches(item)) this.place({ ...item, thumbnail_url: item.urls.thumbnail }, "start");
    this.showCount();
  }

  // Asks for the current state of every item not done (failed and cancelled ones can be
  // retried from anywhere), and redraws those that moved.
  async refresh() {
    const active = [...this.items.values()].filter((i) => i.status !== "completed");
    for (let at = 0; at < active.length; at += 200) {
      const ids = active.slice(at, at + 200).map((i) => i.id);
      const { statuses } = await api(`/api/media/status${query({ ids: ids.join(",") })}`);
      for (const id of ids) {
        const item = this.items.get(id);
        if (!(id in statuses)) { this.removed(id); continue; }
        if (statuses[id] === item.status) continue;
        let next = { ...item, status: statuses[id] };
        if (next.status === "completed") {
          const detail = await api(`/api/media/${id}`);
          next = { ...next, thumbnail_url: detail.urls.thumbnail };
        }
        this.items.set(id, next);
        this.fill(this.tiles.get(id), next);
      }
    }
  }

  // An event of the live stream (events.js): a new item is placed, a deleted one goes, and a
  // queue item's move redraws its media's tile.
  async applyEvent(type, { data }) {
    if (type === "media.created") return this.added(data.media_id);
    if (type === "media.deleted") return this.removed(data.media_id);
    const item = this.items.get(data.media_id);
    if (!item || item.status === data.status) return;
    let next = { ...item, status: data.status };
    if (next.status === "completed") {
      const detail = await api(`/api/media/${data.media_id}`);
      next = { ...next, thumbnail_url: detail.urls.thumbnail };
    }
    if (!this.items.has(data.media_id)) return; // deleted meanwhile
    this.items.set(data.media_id, next);
    this.fill(this.tiles.get(data.media_id), next);
  }

  removed(id) {
    this.items.delete(id);
    this.tiles.get(id)?.remove();
    this.tiles.delete(id);
    this.showCount();
  }
}
