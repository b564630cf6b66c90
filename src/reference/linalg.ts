/**
 * Float64 kernels for the reference encoder. Plain loops over typed arrays: the JIT turns them into
 * tight scalar code, and float64 accumulation in a fixed order keeps the reference deterministic.
 */

/** y[rows, out] = x[rows, in] · Wᵀ + b, with W stored [out, in] as torch.nn.Linear keeps it. */
export function linear(x: Float64Array, rows: number, inDim: number, w: Float64Array, b: Float64Array, outDim: number): Float64Array {
  const y = new Float64Array(rows * outDim);
  for (let r = 0; r < rows; r++) {
    const xo = r * inDim;
    const yo = r * outDim;
    let o = 0;
    // Four output rows per pass share each load of x.
    for (; o + 3 < outDim; o += 4) {
      const w0 = o * inDim;
      const w1 = w0 + inDim;
      const w2 = w1 + inDim;
      const w3 = w2 + inDim;
      let s0 = 0;
      let s1 = 0;
      let s2 = 0;
      let s3 = 0;
      for (let k = 0; k < inDim; k++) {
        const xv = x[xo + k]!;
        s0 += xv * w[w0 + k]!;
        s1 += xv * w[w1 + k]!;
        s2 += xv * w[w2 + k]!;
        s3 += xv * w[w3 + k]!;
      }
      y[yo + o] = s0 + b[o]!;
      y[yo + o + 1] = s1 + b[o + 1]!;
      y[yo + o + 2] = s2 + b[o + 2]!;
      y[yo + o + 3] = s3 + b[o + 3]!;
    }
    for (; o < outDim; o++) {
      const wo = o * inDim;
      let s = 0;
      for (let k = 0; k < inDim; k++) s += x[xo + k]! * w[wo + k]!;
      y[yo + o] = s + b[o]!;
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
