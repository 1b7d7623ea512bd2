// Keyset paging through a list: follows the server's cursors, never shows an item twice (an
// item uploaded while paging can shift a page), and knows when the list is done.

export class Pager {
  constructor(fetchPage) {
    this.fetchPage = fetchPage; // (cursor | null) => Promise<{items, next_cursor, total?}>
    this.cursor = null;
    this.done = false;
    this.seen = new Set();
    this.total = null;
    this.pending = null;
  }

  // The next page's new items; concurrent calls share one request.
  next() {
    if (this.done) return Promise.resolve([]);
    if (!this.pending) {
      this.pending = this.fetchPage(this.cursor).then((page) => {
        this.cursor = page.next_cursor;
        this.done = !page.next_cursor;
        if (page.total !== undefined && page.total !== null) this.total = page.total;
        const fresh = page.items.filter((item) => !this.seen.has(item.id));
        fresh.forEach((item) => this.seen.add(item.id));
        return fresh;
      }).finally(() => { this.pending = null; });
    }
    return this.pending;
  }

  // An item that appeared elsewhere (an upload): true if it is new to this list.
  add(id) {
    if (this.seen.has(id)) return false;
    this.seen.add(id);
    if (this.total !== null) this.total += 1;
    return true;
  }
}

// The heading an item is listed under: its capture day (or upload day).
export function dayOf(item, order) {
  const at = order === "taken" ? item.taken_at || item.created_at : item.created_at;
  return at.slice(0, 10);
}
