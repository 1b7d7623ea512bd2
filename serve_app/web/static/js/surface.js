// Draws the depth-displaced picture with WebGL2: one vertex buffer of grid positions and texture
// coordinates, one of depth per vertex (rewritten per frame for video), the cut index buffer.

const VERTEX = `#version 300 es
in vec2 a_pos;
in vec2 a_uv;
in float a_depth;
uniform mat4 u_mvp;
uniform float u_strength;
uniform float u_focus;
out vec2 v_uv;
void main() {
  v_uv = a_uv;
  // The focus plane stays at z = 0 (the screen); nearer comes out of it, farther goes behind.
  gl_Position = u_mvp * vec4(a_pos, (a_depth - u_focus) * u_strength, 1.0);
}`;

const FRAGMENT = `#version 300 es
precision mediump float;
in vec2 v_uv;
uniform sampler2D u_image;
out vec4 colour;
void main() { colour = texture(u_image, v_uv); }`;

function compile(gl, type, source) {
  const shader = gl.createShader(type);
  gl.shaderSource(shader, source);
  gl.compileShader(shader);
  if (!gl.getShaderParameter(shader, gl.COMPILE_STATUS)) throw new Error(gl.getShaderInfoLog(shader));
  return shader;
}

export class Surface {
  constructor(gl) {
    this.gl = gl;
    const program = gl.createProgram();
    gl.attachShader(program, compile(gl, gl.VERTEX_SHADER, VERTEX));
    gl.attachShader(program, compile(gl, gl.FRAGMENT_SHADER, FRAGMENT));
    gl.linkProgram(program);
    if (!gl.getProgramParameter(program, gl.LINK_STATUS)) throw new Error(gl.getProgramInfoLog(program));
    this.program = program;
    this.uniforms = Object.fromEntries(["u_mvp", "u_strength", "u_focus", "u_image"].map(
      (n) => [n, gl.getUniformLocation(program, n)]));
    this.vao = gl.createVertexArray();
    this.buffers = { pos: gl.createBuffer(), uv: gl.createBuffer(), depth: gl.createBuffer(), index: gl.createBuffer() };
    this.texture = gl.createTexture();
    this.count = 0;
  }

  attribute(name, buffer, size) {
    const gl = this.gl;
    const at = gl.getAttribLocation(this.program, name);
    gl.bindBuffer(gl.ARRAY_BUFFER, buffer);
    gl.enableVertexAttribArray(at);
    gl.vertexAttribPointer(at, size, gl.FLOAT, false, 0, 0);
  }

  setGrid({ positions, uvs }) {
    const gl = this.gl;
    gl.bindVertexArray(this.vao);
    gl.bindBuffer(gl.ARRAY_BUFFER, this.buffers.pos);
    gl.bufferData(gl.ARRAY_BUFFER, positions, gl.STATIC_DRAW);
    this.attribute("a_pos", this.buffers.pos, 2);
    gl.bindBuffer(gl.ARRAY_BUFFER, this.buffers.uv);
    gl.bufferData(gl.ARRAY_BUFFER, uvs, gl.STATIC_DRAW);
    this.attribute("a_uv", this.buffers.uv, 2);
    this.attribute("a_depth", this.buffers.depth, 1);
    gl.bindVertexArray(null);
  }

  setDepth(depth, indices) {
    const gl = this.gl;
    gl.bindVertexArray(this.vao);
    gl.bindBuffer(gl.ARRAY_BUFFER, this.buffers.depth);
    gl.bufferData(gl.ARRAY_BUFFER, depth, gl.DYNAMIC_DRAW);
    gl.bindBuffer(gl.ELEMENT_ARRAY_BUFFER, this.buffers.index);
    gl.bufferData(gl.ELEMENT_ARRAY_BUFFER, indices, gl.DYNAMIC_DRAW);
    gl.bindVertexArray(null);
    this.count = indices.length;
  }

  // An <img>, <video> or canvas: a video's current frame each time it is called.
  setImage(source) {
    const gl = this.gl;
    gl.bindTexture(gl.TEXTURE_2D, this.texture);
    gl.pixelStorei(gl.UNPACK_FLIP_Y_WEBGL, false);
    gl.texImage2D(gl.TEXTURE_2D, 0, gl.RGBA, gl.RGBA, gl.UNSIGNED_BYTE, source);
    gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_MIN_FILTER, gl.LINEAR);
    gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_MAG_FILTER, gl.LINEAR);
    gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_WRAP_S, gl.CLAMP_TO_EDGE);
    gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_WRAP_T, gl.CLAMP_TO_EDGE);
  }

  draw(mvp, strength, focus) {
    const gl = this.gl;
    if (!this.count) return false;
    gl.useProgram(this.program);
    gl.uniformMatrix4fv(this.uniforms.u_mvp, false, mvp);
    gl.uniform1f(this.uniforms.u_strength, strength);
    gl.uniform1f(this.uniforms.u_focus, focus);
    gl.activeTexture(gl.TEXTURE0);
    gl.bindTexture(gl.TEXTURE_2D, this.texture);
    gl.uniform1i(this.uniforms.u_image, 0);
    gl.bindVertexArray(this.vao);
    gl.drawElements(gl.TRIANGLES, this.count, gl.UNSIGNED_INT, 0);
    gl.bindVertexArray(null);
    return true;
  }
}
