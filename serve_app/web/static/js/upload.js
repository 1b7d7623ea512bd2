// Uploads: files or whole folders, dropped anywhere on the page or picked, each with its progress
// and the server's verdict. XMLHttpRequest, not fetch, because only it reports upload progress.

import { authHeaders, errorOf, keyRefused, query, refusesKey } from "./api.js";

const PARALLEL = 3;

// Every file in a drop, folders walked; hidden files (.DS_Store and the like) left out.
export async function droppedFiles(dataTransfer) {
  const entries = [...dataTransfer.items].map((i) => i.webkitGetAsEntry?.()).filter(Boolean);
  if (!entries.length) return [...dataTransfer.files];
  const files = [];
  const walk = async (entry) => {
    if (entry.name.startsWith(".")) return;
    if (entry.isFile) {
      files.push(await new Promise((ok, fail) => entry.file(ok, fail)));
    } else if (entry.isDirectory) {
      const reader = entry.createReader();
      for (;;) {
        const batch = await new Promise((ok, fail) => reader.readEntries(ok, fail));
        if (!batch.length) break;
        for (const child of batch) await walk(child);
      }
    }
  };
  for (const entry of entries) await walk(entry);
  return files;
}

export class Uploader {
  // model(): the depth model of the files being added ("" for the default).
  constructor({ panel, list, onCreated, model = () => "" }) {
    Object.assign(this, { panel, list, onCreated, model });
    this.waiting = [];
    this.running = 0;
  }

  add(files) {
    const wanted = [...files].filter((f) => !f.name.startsWith("."));
    if (!wanted.length) return;
    this.panel.hidden = false;
    const model = this.model();  // the choice when they were added, not when each one starts
    for (const file of wanted) this.waiting.push({ file, model, row: this.row(file) });
    this.pump();
  }

  row(file) {
    const li = document.createElement("li");
    const name = Object.assign(document.createElement("span"), {
      className: "name", textContent: file.webkitRelativePath || file.name });
    const progress = Object.assign(document.createElement("progress"), { max: 1, value: 0 });
    progress.setAttribute("aria-label", `upload of ${file.name}`);
    const outcome = Object.assign(document.createElement("span"), { className: "outcome", textContent: "waiting" });
    li.append(name, progress, outcome);
    this.list.prepend(li);
    return { li, progress, outcome };
  }

  pump() {
    while (this.running < PARALLEL && this.waiting.length) {
      const job = this.waiting.shift();
      this.running += 1;
      this.send(job).finally(() => { this.running -= 1; this.pump(); });
    }
  }

  async send({ file, model, row }) {
    row.outcome.textContent = "uploading";
    for (;;) {
      const { status, text } = await post(file, model, (done) => { row.progress.value = done; });
      if (refusesKey(status)) {
        const error = await errorOf(status, text);
        try {
          await keyRefused(error);
        } catch {
          return this.verdict(row, "rejected", error.message);
        }
        continue;
      }
      return this.show(row, status, text);
    }
  }

  async show(row, status, text) {
    row.progress.value = 1;
    if (status >= 200 && status < 300) {
      const result = JSON.parse(text).results[0];
      if (result.status === "rejected") return this.verdict(row, "rejected", result.error.message);
      this.verdict(row, result.status === "created" ? "accepted" : "duplicate",
                   result.status === "created" ? "accepted" : "already in the library");
      return this.onCreated(result.media_id);
    }
    const error = status === 0 ? { message: "the connection failed" } : await errorOf(status, text);
    this.verdict(row, "rejected", error.message);
  }

  verdict(row, kind, message) {
    row.li.dataset.outcome = kind;
    row.outcome.textContent = message;
  }
}

function post(file, model, onProgress) {
  return new Promise((resolve) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", `/api/media/upload${query({ model })}`);
    for (const [k, v] of Object.entries(authHeaders())) xhr.setRequestHeader(k, v);
    xhr.upload.onprogress = (e) => { if (e.lengthComputable) onProgress(e.loaded / e.total); };
    xhr.onload = () => resolve({ status: xhr.status, text: xhr.responseText });
    xhr.onerror = () => resolve({ status: 0, text: "" });
    const form = new FormData();
    form.append("files", file, file.name);
    xhr.send(form);
  });
}
