// The 3D surface: a grid over the picture displaced by its depth, with the triangles that span a
// depth jump cut out, so the foreground stands free of the background instead of being joined
// to it by a stretched "rubber sheet".

// Grid vertices across and down, at most maxSide along the longer side.
export function gridSize(width, height, maxSide = 256) {
  const scale = Math.min(1, maxSide / Math.max(width, height));
  return { gw: Math.max(2, Math.round(width * scale)), gh: Math.max(2, Math.round(height * scale)) };
}

// The depth at each grid vertex, bilinearly sampled, scaled to 0..1 (near = 1).
export function sampleGrid(values, width, height, gw, gh, maxValue = 65535) {
  const out = new Float32Array(gw * gh);
  for (let j = 0; j < gh; j++) {
    const fy = (j / (gh - 1)) * (height - 1);
    const y0 = Math.floor(fy), y1 = Math.min(height - 1, y0 + 1), ty = fy - y0;
    for (let i = 0; i < gw; i++) {
      const fx = (i / (gw - 1)) * (width - 1);
      const x0 = Math.floor(fx), x1 = Math.min(width - 1, x0 + 1), tx = fx - x0;
      const top = values[y0 * width + x0] * (1 - tx) + values[y0 * width + x1] * tx;
      const bottom = values[y1 * width + x0] * (1 - tx) + values[y1 * width + x1] * tx;
      out[j * gw + i] = (top * (1 - ty) + bottom * ty) / maxValue;
    }
  }
  return out;
}

// Positions (x, y in a plane aspect wide and 1 high, centred) and texture coordinates per vertex.
export function gridVertices(gw, gh, aspect) {
  const positions = new Float32Array(gw * gh * 2);
  const uvs = new Float32Array(gw * gh * 2);
  for (let j = 0; j < gh; j++) {
    for (let i = 0; i < gw; i++) {
      const k = 2 * (j * gw + i);
      const u = i / (gw - 1), v = j / (gh - 1);
      positions[k] = (u - 0.5) * aspect;
      positions[k + 1] = 0.5 - v;
      uvs[k] = u;
      uvs[k + 1] = v;
    }
  }
  return { positions, uvs };
}

// Triangle indices of the grid, leaving out every triangle whose corners differ in depth by
// more than maxJump (in the 0..1 depth range): those span an edge between objects.
export function cutIndices(depth, gw, gh, maxJump = 0.05) {
  const indices = new Uint32Array((gw - 1) * (gh - 1) * 6);
  let n = 0;
  const keep = (a, b, c) => {
    const da = depth[a], db = depth[b], dc = depth[c];
    return Math.max(da, db, dc) - Math.min(da, db, dc) <= maxJump;
  };
  for (let j = 0; j < gh - 1; j++) {
    for (let i = 0; i < gw - 1; i++) {
      const a = j * gw + i, b = a + 1, c = a + gw, d = c + 1;
      if (keep(a, c, b)) { indices[n++] = a; indices[n++] = c; indices[n++] = b; }
      if (keep(b, c, d)) { indices[n++] = b; indices[n++] = c; indices[n++] = d; }
    }
  }
  return indices.subarray(0, n);
}
