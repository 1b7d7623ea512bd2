// The viewer: one item as a 3D surface (photo or moving video), parallax from the mouse, touch or
// the phone's tilt, depth strength and focus, the flat originals a key away, and VR.

import { api, authHeaders, errorOf, sameOrigin } from "./api.js";
import { lookAt, multiply, perspective } from "./mat4.js";
import { cutIndices, gridSize, gridVertices, sampleGrid } from "./mesh.js";
import { decodeGray16 } from "./png16.js";
import { Surface } from "./surface.js";
import { enterVR, vrSupport } from "./xr.js";

const VIDEO_GRID = 160; // vertices along a video's longer side: rebuilt every frame
const FOV = (40 * Math.PI) / 180;

function loadImage(url) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.decoding = "async";
    img.crossOrigin = "anonymous"; // S3 URLs are another origin: WebGL needs the bucket's CORS
    img.onload = () => resolve(img);
    img.onerror = () => reject(new Error("the picture could not be loaded"));
    img.src = url;
  });
}

async function fetchBytes(url) {
  const res = await fetch(url);
  if (!res.ok) throw new Error(`the depth map could not be loaded (${res.status})`);
  return res.arrayBuffer();
}

function mediaReady(video) {
  return new Promise((resolve, reject) => {
    if (video.readyState >= 2) return resolve();
    video.addEventListener("loadeddata", () => resolve(), { once: true });
    video.addEventListener("error", () => reject(new Error(
      "this browser cannot play the video's format; download it from the list below")), { once: true });
  });
}

export class Viewer {
  constructor(root, { neighbours, close, notify }) {
    Object.assign(this, { root, neighbours, close, notify });
    const $ = (part) => root.querySelector(`[data-part=${part}]`);
    this.canvas = $("stage");
    this.flat = $("flat");
    this.title = $("title");
    this.message = $("message");
    this.strength = $("strength");
    this.focus = $("focus");
    this.modes = $("modes");
    this.downloads = $("downloads");
    this.vrButton = $("vr");
    this.vrNote = $("vr-note");
    this.tiltButton = $("tilt");
    this.video = $("video");
    this.depthVideo = $("depth-video");
    this.gl = this.canvas.getContext("webgl2", { antialias: true, xrCompatible: true });
    this.surface = this.gl ? new Surface(this.gl) : null;
    this.pointer = { x: 0, y: 0 };
    this.offset = { x: 0, y: 0 };
    this.mode = "3d";
    this.bind($);
    this.setUpVR();
  }

  bind($) {
    $("back").addEventListener("click", () => this.close());
    $("previous").addEventListener("click", () => this.step("previous"));
    $("next").addEventListener("click", () => this.step("next"));
    this.modes.addEventListener("change", () => this.show(this.modes.value));
    const follow = (e) => {
      const r = this.canvas.getBoundingClientRect();
      this.pointer = { x: ((e.clientX - r.left) / r.width) * 2 - 1, y: ((e.clientY - r.top) / r.height) * 2 - 1 };
    };
    this.canvas.addEventListener("pointermove", follow);
    this.canvas.addEventListener("pointerdown", follow);
    this.canvas.addEventListener("pointerleave", () => { this.pointer = { x: 0, y: 0 }; });
    addEventListener("keydown", (e) => this.key(e));
    if (window.DeviceOrientationEvent) {
      this.tiltButton.hidden = false;
      this.tiltButton.addEventListener("click", () => this.followTilt());
    }
  }

  key(e) {
    if (this.root.hidden || e.target.closest?.("input, select, textarea, dialog")) return;
    const actions = {
      ArrowLeft: () => this.step("previous"), ArrowRight: () => this.step("next"), Escape: () => this.close(),
      3: () => this.show("3d"), o: () => this.show("original"), d: () => this.show("depth"),
      c: () => this.show("colour"),
    };
    const action = actions[e.key];
    if (action) { e.preventDefault(); action(); }
  }

  async followTilt() {
    // iOS asks the person first, and only from a tap.
    if (typeof DeviceOrientationEvent.requestPermission === "function") {
      const answer = await DeviceOrientationEvent.requestPermission().catch(() => "denied");
      if (answer !== "granted") return this.notify("motion sensors were not allowed", true);
    }
    addEventListener("deviceorientation", (e) => {
      if (e.beta === null) return;
      this.pointer = { x: Math.max(-1, Math.min(1, (e.gamma || 0) / 30)),
                       y: Math.max(-1, Math.min(1, ((e.beta || 0) - 45) / 30)) };
    });
    this.tiltButton.setAttribute("aria-pressed", "true");
  }

  async setUpVR() {
    const support = await vrSupport();
    this.vrButton.disabled = !support.ok || !this.gl;
    this.vrNote.textContent = support.ok ? "" : support.reason;
    this.vrButton.addEventListener("click", async () => {
      try {
        this.vr = await enterVR(this.gl, {
          draw: (mvp) => this.surface.draw(mvp, this.depthScale(), Number(this.focus.value)),
          next: () => this.step("next"), previous: () => this.step("previous"),
          onEnd: () => { this.vr = null; },
        });
      } catch (e) {
        this.notify(`VR could not start: ${e.message}`, true);
      }
    });
  }

  depthScale() { return Number(this.strength.value) * 0.35; }

  async step(direction) {
    const id = await this.neighbours(this.id, direction);
    if (!id) {
      this.notify(direction === "next" ? "this is the last item" : "this is the first item");
      return;
    }
    history.pushState({}, "", `/view/${id}`);
    await this.open(id);
  }

  // The item's detail, asked for as soon as the pointer is on its tile: by the click it is here.
  prefetch(id) {
    this.prefetched ??= new Map();
    if (!this.prefetched.has(id)) {
      const detail = api(`/api/media/${id}`);
      detail.catch(() => this.prefetched.delete(id));
      this.prefetched.set(id, detail);
      setTimeout(() => this.prefetched.delete(id), 10_000); // states move: never older than this
    }
  }

  detail(id) {
    const early = this.prefetched?.get(id);
    this.prefetched?.delete(id);
    return early || api(`/api/media/${id}`);
  }

  async open(id) {
    this.id = id;
    this.drawn = false;
    this.stop();
    this.root.hidden = false;
    this.surface?.setDepth(new Float32Array(0), new Uint32Array(0));
    this.say("loading…");
    let item;
    try {
      item = await this.detail(id);
    } catch (e) {
      return this.say(e.status === 404 ? "this item is not in the library (it may have been deleted)" : e.message);
    }
    if (this.id !== id) return;
    this.item = item;
    this.title.textContent = item.original_name || item.id;
    document.title = `${this.title.textContent} · depthmill`;
    this.listDownloads(item);
    if (item.status !== "completed" || !(item.urls.depth || item.urls.depth_video)) {
      this.show("original");
      return this.say(item.status === "failed"
        ? `no depth: processing failed (${item.queue[0]?.last_error || "see the queue panel"})`
        : `no depth yet: the item is ${item.status || "not queued"}`);
    }
    try {
      if (item.kind === "video") await this.loadVideo(item, id);
      else await this.loadPhoto(item, id);
    } catch (e) {
      if (this.id === id) this.say(e.message);
      return;
    }
    if (this.id !== id) return;
    this.say("");
    this.show(this.mode);
    this.loop();
  }

  async loadPhoto(item, id) {
    if (!this.surface) throw new Error("this browser has no WebGL2: the 3D view cannot be drawn");
    const [image, depth] = await Promise.all([
      loadImage(sameOrigin(item.urls.preview || item.urls.original)),
      fetchBytes(sameOrigin(item.urls.depth)).then(decodeGray16),
    ]);
    if (this.id !== id) return;
    const { gw, gh } = gridSize(depth.width, depth.height);
    const z = sampleGrid(depth.data, depth.width, depth.height, gw, gh);
    this.aspect = image.naturalWidth / image.naturalHeight;
    this.surface.setGrid(gridVertices(gw, gh, this.aspect));
    this.surface.setDepth(z, cutIndices(z, gw, gh));
    this.surface.setImage(image);
    this.videoFrame = null;
  }

  async loadVideo(item, id) {
    if (!this.surface) throw new Error("this browser has no WebGL2: the 3D view cannot be drawn");
    for (const [video, url] of [[this.video, item.urls.original], [this.depthVideo, item.urls.depth_video]]) {
      Object.assign(video, { crossOrigin: "anonymous", muted: true, loop: true, playsInline: true });
      video.src = sameOrigin(url);
    }
    await Promise.all([mediaReady(this.video), mediaReady(this.depthVideo)]);
    if (this.id !== id) return;
    this.aspect = this.video.videoWidth / this.video.videoHeight;
    const { gw, gh } = gridSize(this.video.videoWidth, this.video.videoHeight, VIDEO_GRID);
    this.surface.setGrid(gridVertices(gw, gh, this.aspect));
    const scratch = new OffscreenCanvas(gw, gh).getContext("2d", { willReadFrequently: true });
    const z = new Float32Array(gw * gh);
    // The depth video's frames carry the source's timestamps, so the two play in step; a drift
    // (one stalled while loading) is corrected by seeking the depth to the picture.
    this.videoFrame = () => {
      if (Math.abs(this.depthVideo.currentTime - this.video.currentTime) > 0.25) {
        this.depthVideo.currentTime = this.video.currentTime;
      }
      scratch.drawImage(this.depthVideo, 0, 0, gw, gh);
      const pixels = scratch.getImageData(0, 0, gw, gh).data;
      for (let i = 0; i < z.length; i++) z[i] = pixels[4 * i] / 255;
      this.surface.setDepth(z, cutIndices(z, gw, gh, 0.08));
      this.surface.setImage(this.video);
    };
    await Promise.all([this.video.play(), this.depthVideo.play()]).catch(() => {
      this.say("press play: this browser does not start videos by itself");
    });
  }

  show(mode) {
    this.mode = mode;
    this.modes.value = mode;
    const urls = this.item?.urls || {};
    const flat = { original: urls.original, depth: urls.depth, colour: urls.depth_preview }[mode];
    const isVideoOriginal = mode === "original" && this.item?.kind === "video";
    this.canvas.hidden = mode !== "3d";
    this.flat.hidden = mode === "3d" || isVideoOriginal;
    this.video.hidden = !isVideoOriginal;
    this.video.controls = isVideoOriginal;
    if (mode !== "3d" && !isVideoOriginal) {
      if (flat) { this.flat.src = sameOrigin(flat); this.flat.alt = `${mode} of ${this.title.textContent}`; }
      else this.say(`no ${mode} image for this item yet`);
    }
  }

  // Stereo renders and the GDepth JPEG are made on request, behind the API key: fetched with it,
  // then saved (a plain link cannot send the key).
  async saveRender(path, name) {
    this.notify("rendering…");
    try {
      const res = await fetch(path, { headers: authHeaders() });
      if (!res.ok) throw await errorOf(res.status, await res.text());
      const link = Object.assign(document.createElement("a"), {
        href: URL.createObjectURL(await res.blob()), download: name });
      link.click();
      setTimeout(() => URL.revokeObjectURL(link.href), 10_000);
    } catch (e) {
      this.notify(e.message, true);
    }
  }

  renderLinks(item, base) {
    if (item.kind !== "photo" || item.status !== "completed") return [];
    const renders = [["sbs", "_SBS"], ["sbs-half", "_HSBS"], ["tb", "_TB"], ["tb-half", "_HTB"],
      ["crosseye", "_CROSS"], ["anaglyph", "_ANAGLYPH"], ["rgbd", "_RGBD"]].map(([layout, suffix]) => [
      `Stereo ${layout}`, `/api/media/${item.id}/stereo?layout=${layout}`, `${base}${suffix}.jpg`]);
    renders.push(["JPEG with depth (GDepth)", `/api/media/${item.id}/depth?format=gdepth`, `${base}.gdepth.jpg`]);
    return renders.map(([label, path, name]) => {
      const li = document.createElement("li");
      const button = Object.assign(document.createElement("button"), { type: "button", textContent: label });
      button.addEventListener("click", () => this.saveRender(path, name));
      li.append(button);
      return li;
    });
  }

  listDownloads(item) {
    const names = { original: "Original", preview: "Preview (JPEG)", thumbnail: "Thumbnail",
      depth: "Depth map (16-bit PNG)", depth_preview: "Depth, coloured (WebP)", depth_video: "Depth video (MP4)",
      depth_video16: "Depth video, 16-bit lossless (MKV)" };
    const base = (item.original_name || item.id).replace(/\.[^.]+$/, "");
    this.downloads.replaceChildren(...Object.entries(item.urls).filter(([, u]) => u).map(([key, url]) => {
      const li = document.createElement("li");
      const a = Object.assign(document.createElement("a"), { href: sameOrigin(url), textContent: names[key] || key });
      a.download = key === "original" ? (item.original_name || "") : `${base}.${key}`;
      li.append(a);
      return li;
    }), ...this.renderLinks(item, base));
  }

  say(text) {
    this.message.textContent = text;
    this.message.hidden = !text;
  }

  stop() {
    cancelAnimationFrame(this.frame);
    this.frame = null;
    this.videoFrame = null;
    for (const v of [this.video, this.depthVideo]) { v.pause(); v.removeAttribute("src"); v.load(); }
  }

  hide() {
    this.stop();
    this.root.hidden = true;
    this.vr?.end();
  }

  loop() {
    const render = () => {
      this.frame = requestAnimationFrame(render);
      if (this.vr) return; // the headset's own frame loop draws
      if (this.mode === "3d") this.draw();
    };
    this.frame = requestAnimationFrame(render);
  }

  draw() {
    const gl = this.gl;
    const canvas = this.canvas;
    const dpr = Math.min(devicePixelRatio, 2);
    const w = Math.round(canvas.clientWidth * dpr), h = Math.round(canvas.clientHeight * dpr);
    if (canvas.width !== w || canvas.height !== h) Object.assign(canvas, { width: w, height: h });
    this.videoFrame?.();
    // Eased toward the pointer, so the view glides rather than jumps.
    this.offset.x += (this.pointer.x - this.offset.x) * 0.15;
    this.offset.y += (this.pointer.y - this.offset.y) * 0.15;
    const viewAspect = w / h;
    const distance = (Math.max(0.5, this.aspect / 2 / viewAspect) / Math.tan(FOV / 2)) * 1.08;
    const eye = [this.offset.x * 0.35 * distance, -this.offset.y * 0.25 * distance, distance];
    const mvp = multiply(perspective(FOV, viewAspect, 0.05, 50), lookAt(eye, [0, 0, 0]));
    gl.viewport(0, 0, w, h);
    gl.enable(gl.DEPTH_TEST);
    gl.clearColor(0.05, 0.05, 0.07, 1);
    gl.clear(gl.COLOR_BUFFER_BIT | gl.DEPTH_BUFFER_BIT);
    if (this.surface.draw(mvp, this.depthScale(), Number(this.focus.value)) && !this.drawn) {
      this.drawn = true;
      performance.mark("depthmill:first-3d-frame");
    }
  }
}
