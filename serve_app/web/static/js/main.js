// The page: the library at /, the viewer at /view/{id} (a deep link that works in a new tab),
// uploads anywhere, the queue panel, the key prompt and the headset QR code.

import { api, onKeyNeeded, query } from "./api.js";
import { LiveEvents } from "./events.js";
import { Library } from "./library.js";
import { QueuePanel } from "./queue.js";
import { Uploader, droppedFiles } from "./upload.js";
import { Viewer } from "./viewer.js";

const $ = (id) => document.getElementById(id);
const POLL_MS = 2500;

function notify(text, isError = false) {
  const toast = $("toast");
  toast.textContent = text;
  toast.dataset.kind = isError ? "error" : "info";
  toast.hidden = false;
  clearTimeout(notify.timer);
  notify.timer = setTimeout(() => { toast.hidden = true; }, 4000);
}

onKeyNeeded((reason, { mayKeep }) => new Promise((resolve) => {
  const dialog = $("key-dialog");
  $("key-reason").textContent = reason;
  $("key-input").value = "";
  $("key-keep").hidden = !mayKeep;
  dialog.onclose = () => resolve(dialog.returnValue === "keep" ? "" : $("key-input").value.trim());
  dialog.returnValue = "";
  if (!dialog.open) dialog.showModal();
}));

const library = new Library({ grid: $("grid"), sentinel: $("sentinel"), count: $("count"), empty: $("empty") });
const queuePanel = new QueuePanel($("queue-panel"), { onChange: () => library.refresh(), notify });
const uploader = new Uploader({ panel: $("uploads"), list: $("upload-list"), onCreated: (id) => library.added(id),
                                model: () => $("model").value });

// Serving several depth models, the page lets uploads name theirs; "default" names none.
api("/api/ai/models").then(({ models }) => {
  if (models.length < 2) return;
  $("model").append(...models.map((m) => new Option(m.id, m.id)));
  $("model-choice").hidden = false;
}).catch((e) => notify(`could not list the depth models: ${e.message}`, true));

async function neighbour(id, direction) {
  const ids = library.ids();
  const at = ids.indexOf(id);
  if (at >= 0 && direction === "previous") return ids[at - 1] || null;
  if (at >= 0 && at + 1 < ids.length) return ids[at + 1];
  const found = await api(`/api/media/${id}/neighbours${library.listQuery()}`);
  return found[direction];
}

const viewer = new Viewer($("viewer"), {
  neighbours: neighbour, notify,
  close: () => { history.pushState({}, "", "/"); route(); },
});

let libraryLoaded = false;
function route() {
  const match = location.pathname.match(/^\/view\/([0-9a-f-]{36})$/i);
  if (match) {
    $("library").hidden = true;
    return viewer.open(match[1].toLowerCase());
  }
  viewer.hide();
  $("library").hidden = false;
  document.title = "depthmill";
  if (!libraryLoaded) {
    libraryLoaded = true;
    return library.reset().catch((e) => notify(e.message, true));
  }
}

$("grid").addEventListener("click", (e) => {
  const tile = e.target.closest("a.tile");
  if (!tile || e.ctrlKey || e.metaKey || e.shiftKey || e.button !== 0) return;
  e.preventDefault();
  history.pushState({}, "", tile.getAttribute("href"));
  route();
});
$("grid").addEventListener("pointerover", (e) => {
  const tile = e.target.closest("a.tile");
  if (tile) viewer.prefetch(tile.dataset.id);
});
addEventListener("popstate", route);

for (const [id, key] of [["filter-kind", "kind"], ["filter-status", "status"], ["order", "order"]]) {
  $(id).addEventListener("change", (e) => library.reset({ [key]: e.target.value }).catch((err) => notify(err.message, true)));
}

$("pick-files").addEventListener("click", () => $("file-input").click());
$("pick-folder").addEventListener("click", () => $("folder-input").click());
for (const input of [$("file-input"), $("folder-input")]) {
  input.addEventListener("change", () => { uploader.add(input.files); input.value = ""; });
}
let dragDepth = 0;
addEventListener("dragenter", (e) => { if (e.dataTransfer?.types.includes("Files")) { dragDepth += 1; $("drop").hidden = false; } });
addEventListener("dragleave", () => { dragDepth = Math.max(0, dragDepth - 1); if (!dragDepth) $("drop").hidden = true; });
addEventListener("dragover", (e) => e.preventDefault());
addEventListener("drop", async (e) => {
  e.preventDefault();
  dragDepth = 0;
  $("drop").hidden = true;
  uploader.add(await droppedFiles(e.dataTransfer));
});

$("queue-button").addEventListener("click", () => {
  const panel = $("queue-panel");
  panel.hidden = !panel.hidden;
  $("queue-button").setAttribute("aria-expanded", String(!panel.hidden));
  if (!panel.hidden) queuePanel.refresh().catch((e) => notify(e.message, true));
});

$("connect-button").addEventListener("click", async () => {
  try {
    const info = await api("/api/app/connect");
    $("connect-qr").innerHTML = info.qr_svg || "";
    $("connect-urls").replaceChildren(...info.urls.map((u) => {
      const li = document.createElement("li");
      li.append(Object.assign(document.createElement("a"), { href: u, textContent: u }));
      return li;
    }));
    $("connect-note").textContent = info.note || "";
    $("connect-dialog").showModal();
  } catch (e) {
    notify(e.message, true);
  }
});

async function refreshShown() {
  try {
    if (!$("library").hidden) await library.refresh();
    if (!$("queue-panel").hidden) await queuePanel.refresh();
  } catch (e) {
    if (e.status !== 401) notify(`could not refresh: ${e.message}`, true);
  }
}

// The queue panel redraws at most once a second however many events arrive.
let panelTimer = null;
function queueMoved() {
  if ($("queue-panel").hidden || panelTimer) return;
  panelTimer = setTimeout(() => {
    panelTimer = null;
    queuePanel.refresh().catch((e) => notify(e.message, true));
  }, 1000);
}

// States arrive live; polling runs only while the stream is down. Each time it opens, one
// refresh covers whatever moved before it did.
const live = new LiveEvents({
  onEvent: (type, event) => {
    library.applyEvent(type, event).catch((e) => notify(e.message, true));
    if (type.startsWith("item.")) queueMoved();
  },
  onState: (up) => { if (up) refreshShown(); },
});

async function poll() {
  if (!live.up) await refreshShown();
  setTimeout(poll, POLL_MS);
}

window.depthmill = { library, viewer, query, live };
route();
live.start();
setTimeout(poll, POLL_MS);
