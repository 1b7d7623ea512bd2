"""The web app's pure modules (16-bit PNG decoding, mesh and cut, paging), run in the browser
they are written for. No system needed: the modules are served by a bare gateway app."""

from __future__ import annotations

import base64
import io
import threading

import numpy as np
import pytest
import uvicorn
from PIL import Image

from cluster.runtime import free_port
from serve_app.api.main import create_api


@pytest.fixture(scope="module")
def origin() -> str:
    # Static files need no context: the app's routes alone, on a port of their own.
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_api(), host="127.0.0.1", port=port, log_config=None))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        thread.join(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def js(browser, origin):
    context = browser.new_context()
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{origin}/app/js/mesh.js")  # any page of the origin, so modules import

    def run(module: str, body: str, arg=None):
        return page.evaluate(f"async (arg) => {{ const m = await import('/app/js/{module}'); {body} }}", arg)

    yield run
    context.close()
    assert not errors


def png_bytes(values: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(values).save(buf, "PNG")
    return buf.getvalue()


def decode(js, png: bytes) -> dict:
    return js("png16.js", """
        const bytes = Uint8Array.from(atob(arg), (c) => c.charCodeAt(0));
        const out = await m.decodeGray16(bytes.buffer);
        return { width: out.width, height: out.height, data: Array.from(out.data) };""",
        base64.b64encode(png).decode())


def test_png16_keeps_all_sixteen_bits(js):
    rng = np.random.default_rng(7)
    # A smooth ramp (Pillow picks the Sub/Up/Average/Paeth filters for it) plus noise (None).
    ramp = np.linspace(0, 65535, 97 * 61).reshape(61, 97)
    values = np.clip(ramp + rng.normal(0, 300, ramp.shape), 0, 65535).astype(np.uint16)
    values[0, 0], values[-1, -1] = 0, 65535
    out = decode(js, png_bytes(values))
    assert (out["width"], out["height"]) == (97, 61)
    np.testing.assert_array_equal(np.array(out["data"]).reshape(61, 97), values)
    # Values an 8-bit decode would merge stay apart.
    assert len(set(out["data"])) > 256


def test_png16_widens_8_bit_and_refuses_colour(js):
    gray8 = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    out = decode(js, png_bytes(gray8))
    np.testing.assert_array_equal(np.array(out["data"]).reshape(8, 8), gray8.astype(np.int64) * 257)
    rgb = png_bytes(np.zeros((4, 4, 3), dtype=np.uint8))
    with pytest.raises(Exception, match="grayscale"):
        decode(js, rgb)


def test_grid_samples_the_corners_and_scales_to_unit(js):
    out = js("mesh.js", """
        const values = Uint16Array.from([0, 65535, 32768, 65535]);  // 2 x 2
        const z = m.sampleGrid(values, 2, 2, 3, 3);
        const size = m.gridSize(4000, 3000, 256);
        const grid = m.gridVertices(3, 2, 2.0);
        return { z: Array.from(z), size, pos: Array.from(grid.positions), uv: Array.from(grid.uvs) };""")
    z = out["z"]
    assert z[0] == 0 and z[2] == 1 and z[6] == pytest.approx(32768 / 65535) and z[8] == 1
    assert z[4] == pytest.approx((0 + 1 + 32768 / 65535 + 1) / 4)  # centre: bilinear
    assert out["size"] == {"gw": 256, "gh": 192}
    assert out["pos"][:2] == [-1.0, 0.5] and out["pos"][-2:] == [1.0, -0.5]
    assert out["uv"][:2] == [0, 0] and out["uv"][-2:] == [1, 1]


def test_cut_removes_exactly_the_triangles_across_a_depth_jump(js):
    out = js("mesh.js", """
        // 6 x 4 grid: columns 0-2 far (0.1), columns 3-5 near (0.9); a smooth slope elsewhere.
        const gw = 6, gh = 4, depth = new Float32Array(gw * gh);
        for (let j = 0; j < gh; j++) for (let i = 0; i < gw; i++) depth[j * gw + i] = (i < 3 ? 0.1 : 0.9) + 0.01 * j;
        const kept = m.cutIndices(depth, gw, gh, 0.05);
        const all = m.cutIndices(depth, gw, gh, 1.0);
        const spans = [];
        for (let t = 0; t < kept.length; t += 3) {
          const cols = [kept[t], kept[t + 1], kept[t + 2]].map((v) => v % gw);
          spans.push([Math.min(...cols), Math.max(...cols)]);
        }
        return { kept: kept.length / 3, all: all.length / 3, spans };""")
    assert out["all"] == 5 * 3 * 2
    # The cells between columns 2 and 3 (two triangles per row of cells, three rows) are cut.
    assert out["kept"] == out["all"] - 3 * 2
    assert all(not (lo <= 2 and hi >= 3) for lo, hi in out["spans"])


def test_pager_follows_cursors_without_repeating_items(js):
    out = js("pager.js", """
        const pages = {
          null: { items: [{ id: "a" }, { id: "b" }], next_cursor: "c1", total: 4 },
          c1: { items: [{ id: "b" }, { id: "c" }], next_cursor: "c2" },  // b shifted by an upload
          c2: { items: [{ id: "d" }], next_cursor: null },
        };
        const asked = [];
        const pager = new m.Pager(async (cursor) => { asked.push(cursor); return pages[cursor]; });
        const first = await Promise.all([pager.next(), pager.next()]);  // one request shared
        const second = await pager.next(), third = await pager.next(), after = await pager.next();
        const addedNew = pager.add("e"), addedOld = pager.add("a");
        const day = m.dayOf({ taken_at: null, created_at: "2026-05-04T10:00:00+00:00" }, "taken");
        return { first: first.map((p) => p.map((i) => i.id)), second: second.map((i) => i.id),
                 third: third.map((i) => i.id), after, asked, done: pager.done, total: pager.total,
                 addedNew, addedOld, day };""")
    assert out["first"] == [["a", "b"], ["a", "b"]]
    assert out["second"] == ["c"] and out["third"] == ["d"] and out["after"] == []
    assert out["asked"] == [None, "c1", "c2"]
    assert out["done"] is True
    assert out["addedNew"] is True and out["addedOld"] is False and out["total"] == 5
    assert out["day"] == "2026-05-04"
