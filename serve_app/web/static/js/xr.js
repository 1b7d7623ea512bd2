// VR in a headset's browser (WebXR immersive-vr): the picture about 1.5 m ahead, a metre tall,
// drawn once per eye from the same geometry, so the stereo is real. Controllers: trigger (or a
// pinch) for the next item, grip for the previous, the thumbstick to push/pull and scale, B or Y
// to leave.

import { multiply, scaling, translation } from "./mat4.js";

export async function vrSupport() {
  if (!window.isSecureContext) {
    return { ok: false, reason: "VR needs a secure page: open it over https (depthmill up --tls) or on localhost" };
  }
  if (!navigator.xr) return { ok: false, reason: "this browser has no WebXR: open the page in a headset's browser" };
  const ok = await navigator.xr.isSessionSupported("immersive-vr").catch(() => false);
  return ok ? { ok: true } : { ok: false, reason: "no VR headset is available to this browser" };
}

export async function enterVR(gl, { draw, next, previous, onEnd }) {
  await gl.makeXRCompatible();
  const session = await navigator.xr.requestSession("immersive-vr", {
    optionalFeatures: ["local-floor", "hand-tracking"] });
  session.updateRenderState({ baseLayer: new XRWebGLLayer(session, gl) });
  let space, eyeHeight = 0;
  try {
    space = await session.requestReferenceSpace("local-floor");
    eyeHeight = 1.5;
  } catch {
    space = await session.requestReferenceSpace("local");
  }
  const placement = { distance: 1.5, size: 1.0 };
  session.addEventListener("select", () => next());
  session.addEventListener("squeeze", () => previous());
  session.addEventListener("end", () => onEnd());

  const steer = (frame, dt) => {
    for (const source of frame.session.inputSources) {
      const pad = source.gamepad;
      if (!pad) continue;
      const [x, y] = pad.axes.length >= 4 ? [pad.axes[2], pad.axes[3]] : [pad.axes[0] ?? 0, pad.axes[1] ?? 0];
      if (Math.abs(y) > 0.2) placement.distance = Math.min(6, Math.max(0.5, placement.distance + y * dt));
      if (Math.abs(x) > 0.2) placement.size = Math.min(4, Math.max(0.2, placement.size * (1 + x * dt)));
      if (pad.buttons[5]?.pressed) session.end();
    }
  };

  let last = performance.now();
  const onFrame = (time, frame) => {
    session.requestAnimationFrame(onFrame);
    steer(frame, Math.min(0.1, (time - last) / 1000));
    last = time;
    const pose = frame.getViewerPose(space);
    if (!pose) return;
    const layer = session.renderState.baseLayer;
    gl.bindFramebuffer(gl.FRAMEBUFFER, layer.framebuffer);
    gl.clearColor(0.05, 0.05, 0.07, 1);
    gl.clear(gl.COLOR_BUFFER_BIT | gl.DEPTH_BUFFER_BIT);
    const model = multiply(translation(0, eyeHeight, -placement.distance), scaling(placement.size));
    for (const view of pose.views) {
      const vp = layer.getViewport(view);
      gl.viewport(vp.x, vp.y, vp.width, vp.height);
      draw(multiply(view.projectionMatrix, multiply(view.transform.inverse.matrix, model)));
    }
  };
  session.requestAnimationFrame(onFrame);
  return session;
}
