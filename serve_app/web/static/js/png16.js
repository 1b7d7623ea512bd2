// Decodes a 16-bit grayscale PNG (the depth maps depthmill writes) to its full 16-bit values.
// A browser's <img> or canvas reduces such a PNG to 8 bits, which bands a depth surface into
// terraces; the deflate stream is inflated by the browser's own DecompressionStream and the
// scanline filters are undone here.

const SIGNATURE = [137, 80, 78, 71, 13, 10, 26, 10];

export function readChunks(bytes) {
  for (let i = 0; i < 8; i++) {
    if (bytes[i] !== SIGNATURE[i]) throw new Error("not a PNG file");
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let header = null;
  const data = [];
  for (let at = 8; at + 8 <= bytes.length;) {
    const length = view.getUint32(at);
    const type = String.fromCharCode(...bytes.subarray(at + 4, at + 8));
    const body = bytes.subarray(at + 8, at + 8 + length);
    if (type === "IHDR") {
      header = {
        width: view.getUint32(at + 8), height: view.getUint32(at + 12),
        bitDepth: body[8], colorType: body[9], interlace: body[12],
      };
    } else if (type === "IDAT") {
      data.push(body);
    } else if (type === "IEND") {
      break;
    }
    at += 12 + length;
  }
  if (!header) throw new Error("PNG without a header");
  return { header, data };
}

async function inflate(parts) {
  const stream = new Blob(parts).stream().pipeThrough(new DecompressionStream("deflate"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

function paeth(a, b, c) {
  const p = a + b - c;
  const pa = Math.abs(p - a), pb = Math.abs(p - b), pc = Math.abs(p - c);
  return pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
}

// Undoes the per-scanline filters in place; bpp is bytes per pixel.
export function unfilter(raw, width, height, bpp) {
  const stride = width * bpp;
  const out = new Uint8Array(stride * height);
  for (let y = 0; y < height; y++) {
    const type = raw[y * (stride + 1)];
    const line = raw.subarray(y * (stride + 1) + 1, (y + 1) * (stride + 1));
    const row = y * stride;
    for (let x = 0; x < stride; x++) {
      const a = x >= bpp ? out[row + x - bpp] : 0;
      const b = y > 0 ? out[row - stride + x] : 0;
      const c = x >= bpp && y > 0 ? out[row - stride + x - bpp] : 0;
      let v = line[x];
      if (type === 1) v += a;
      else if (type === 2) v += b;
      else if (type === 3) v += (a + b) >> 1;
      else if (type === 4) v += paeth(a, b, c);
      else if (type !== 0) throw new Error(`bad PNG filter type ${type} on row ${y}`);
      out[row + x] = v & 0xff;
    }
  }
  return out;
}

// -> {width, height, data: Uint16Array (row-major, 0..65535)}. 8-bit grayscale is widened.
export async function decodeGray16(buffer) {
  const { header, data } = readChunks(new Uint8Array(buffer));
  const { width, height, bitDepth, colorType, interlace } = header;
  if (colorType !== 0 || interlace !== 0 || (bitDepth !== 16 && bitDepth !== 8)) {
    throw new Error(`expected a non-interlaced grayscale PNG, got colour type ${colorType}, ` +
                    `${bitDepth} bits, interlace ${interlace}`);
  }
  const bpp = bitDepth / 8;
  const pixels = unfilter(await inflate(data), width, height, bpp);
  const values = new Uint16Array(width * height);
  for (let i = 0; i < values.length; i++) {
    values[i] = bpp === 2 ? (pixels[2 * i] << 8) | pixels[2 * i + 1] : pixels[i] * 257;
  }
  return { width, height, data: values };
}
