// Activation quantization for the 4/5/6-bit weight types, bit-for-bit as the CPU does it (quant
// crate): Q8_0 blocks of 32 (d = amax/127 rounded to f16, q = round-half-away(x/d)) stored as
// 9 words [d as f32, 32 i8]; Q8_1 blocks of 32 (Q8_0 plus s = d·Σq rounded to f16, d before its
// own rounding) stored as 10 words [d, s, 32 i8]; Q8_K blocks of 256 (iscale = -127/signed-absmax, d = 1/iscale,
// q = clamp(round-half-away(iscale*x), ±127)) stored as 65 words [d, 256 i8].
// Each thread takes 4 consecutive values (one output word): a workgroup of 64 threads does
// 8 blocks of 32 or one block of 256, the block's maximum and level sum reduced in workgroup
// memory (max and integer sums are exact in any order, so the result is the CPU's).

struct Params {
    n: u32,
    rows: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> q: array<u32>;

fn round_away(v: f32) -> f32 {
    let a = abs(v);
    var t = trunc(a);
    if (a - t >= 0.5) {
        t += 1.0;
    }
    return select(t, -t, v < 0.0);
}

fn finite(v: f32) -> bool {
    return (bitcast<u32>(v) & 0x7f800000u) != 0x7f800000u;
}

// (biased exponent, significand with the implicit bit at 23) of a finite non-zero f32's bits,
// a subnormal normalized (its exponent then below 1).
fn significand(u: u32) -> vec2<i32> {
    let e = i32((u >> 23u) & 0xffu);
    let m = u & 0x7fffffu;
    if (e == 0) {
        let s = countLeadingZeros(m) - 8u;
        return vec2(1 - i32(s), i32(m << s));
    }
    return vec2(e, i32(m | 0x800000u));
}

// a / b correctly rounded (round to nearest even), as IEEE division on the CPU. WGSL lets `/`
// be off by 2.5 ULP, and real drivers use that (NVIDIA's Vulkan driver gave a different Q8_K
// scale for 1 block in 36): the quotient's significand by long division on integers instead.
fn div_rn(a: f32, b: f32) -> f32 {
    let ua = bitcast<u32>(a);
    let ub = bitcast<u32>(b);
    // Zeros tested on the bits: a GPU that flushes subnormals (NVIDIA's does) would call a
    // subnormal operand zero.
    if ((ua & 0x7fffffffu) == 0u || (ub & 0x7fffffffu) == 0u || !finite(a) || !finite(b)) {
        return a / b; // exact in IEEE terms for zeros and infinities
    }
    let sign = (ua ^ ub) & 0x80000000u;
    // Significands with the implicit bit at 23 (subnormals normalized) and unbiased exponents.
    let na = significand(ua);
    let nb = significand(ub);
    var ma = u32(na.y);
    let mb = u32(nb.y);
    // Biased exponent of the result, with ma scaled into [mb, 2mb).
    var e = na.x - nb.x + 127;
    if (ma < mb) {
        ma <<= 1u;
        e -= 1;
    }
    // 25 quotient bits: the leading 1, 23 fraction bits, a guard bit; the rest is sticky.
    var rem = ma;
    var q = 0u;
    for (var i = 0u; i < 25u; i++) {
        q <<= 1u;
        if (rem >= mb) {
            rem -= mb;
            q |= 1u;
        }
        rem <<= 1u;
    }
    var sticky = rem != 0u;
    if (e <= 0) {
        // Subnormal result: shift the guard position down to the subnormal's last bit.
        let sh = u32(1 - e);
        if (sh >= 25u) {
            sticky = sticky || q != 0u;
            q = 0u;
        } else {
            sticky = sticky || (q & ((1u << sh) - 1u)) != 0u;
            q >>= sh;
        }
        e = 0;
    }
    var m = q >> 1u;
    if ((q & 1u) != 0u && (sticky || (m & 1u) != 0u)) {
        m += 1u; // may carry into the exponent field, which is what IEEE rounding does
    }
    var bits: u32;
    if (e == 0) {
        bits = m;
    } else {
        bits = (u32(e) << 23u) + (m - 0x800000u);
    }
    if (bits >= 0x7f800000u) {
        bits = 0x7f800000u;
    }
    return bitcast<f32>(sign | bits);
}

// f32 → f16 → f32, round to nearest even, overflowing to ±inf as the CPU's conversion does
// (WGSL leaves quantizeToF16 of an out-of-range value indeterminate). Below f16's smallest
// normal (2^-14) the result is a multiple of 2^-24 rounded by hand: quantizeToF16 may flush
// f16 subnormals to zero (lavapipe does), and a block of small activations (amax < 7.8e-3)
// has a subnormal d.
fn to_f16(v: f32) -> f32 {
    if (abs(v) >= 65520.0) {
        return select(bitcast<f32>(0x7f800000u), bitcast<f32>(0xff800000u), v < 0.0);
    }
    if (abs(v) < 6.103515625e-05) {
        // Both scalings by powers of two are exact; `round` ties to even.
        return round(v * 16777216.0) * 5.9604644775390625e-08;
    }
    return quantizeToF16(v);
}

var<workgroup> red_f: array<f32, 64>;
var<workgroup> red_u: array<u32, 64>;

// Level of v at inverse scale id, as the CPU rounds it; non-finite products give 0.
fn level(v: f32, id: f32, lo: f32) -> i32 {
    let s = v * id;
    if (!finite(s)) {
        return 0;
    }
    return i32(clamp(round_away(s), lo, 127.0));
}

// The four levels of `v` packed into one word (byte k = level of v[k]) and their sum.
fn pack4(v: vec4<f32>, id: f32, lo: f32) -> vec2<i32> {
    let l = vec4<i32>(level(v.x, id, lo), level(v.y, id, lo), level(v.z, id, lo),
                      level(v.w, id, lo));
    let word = (bitcast<u32>(l.x) & 0xffu) | ((bitcast<u32>(l.y) & 0xffu) << 8u)
        | ((bitcast<u32>(l.z) & 0xffu) << 16u) | ((bitcast<u32>(l.w) & 0xffu) << 24u);
    return vec2(bitcast<i32>(word), l.x + l.y + l.z + l.w);
}

// The 32-value block this thread helps with: 8 threads per block, 8 blocks per workgroup.
fn block32(wg: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wg.x + wg.y * nwg.x) * 8u + lid / 8u;
}

fn block32_live(blk: u32) -> bool {
    return blk < (p.n / 32u) * p.rows;
}

// This thread's 4 values of block `blk` (zeros past the end).
fn load32(blk: u32, lid: u32) -> vec4<f32> {
    if (!block32_live(blk)) {
        return vec4(0.0);
    }
    let o = blk * 32u + (lid % 8u) * 4u;
    return vec4(x[o], x[o + 1u], x[o + 2u], x[o + 3u]);
}

// The block's scale d = amax/127 and its inverse (0 for an all-zero block).
fn scales32(v: vec4<f32>, lid: u32) -> vec2<f32> {
    let d = div_rn(amax8(v, lid), 127.0);
    return vec2(d, select(div_rn(1.0, d), 0.0, d == 0.0));
}

// max |v| over the 8 threads of this thread's block.
fn amax8(v: vec4<f32>, lid: u32) -> f32 {
    red_f[lid] = max(max(abs(v.x), abs(v.y)), max(abs(v.z), abs(v.w)));
    workgroupBarrier();
    for (var s = 4u; s > 0u; s >>= 1u) {
        if (lid % 8u < s) {
            red_f[lid] = max(red_f[lid], red_f[lid + s]);
        }
        workgroupBarrier();
    }
    return red_f[lid & ~7u];
}

@compute @workgroup_size(64)
fn q8_0(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let blk = block32(wg, nwg, lid);
    let v = load32(blk, lid);
    let ds = scales32(v, lid);
    if (!block32_live(blk)) {
        return;
    }
    let qo = blk * 9u;
    if (lid % 8u == 0u) {
        q[qo] = bitcast<u32>(to_f16(ds.x));
    }
    q[qo + 1u + lid % 8u] = bitcast<u32>(pack4(v, ds.y, -128.0).x);
}

@compute @workgroup_size(64)
fn q8_1(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let blk = block32(wg, nwg, lid);
    let v = load32(blk, lid);
    let ds = scales32(v, lid);
    let packed = pack4(v, ds.y, -128.0);
    // Σq over the block's 8 threads (integers: exact).
    red_u[lid] = bitcast<u32>(packed.y);
    workgroupBarrier();
    for (var s = 4u; s > 0u; s >>= 1u) {
        if (lid % 8u < s) {
            red_u[lid] = bitcast<u32>(bitcast<i32>(red_u[lid]) + bitcast<i32>(red_u[lid + s]));
        }
        workgroupBarrier();
    }
    if (!block32_live(blk)) {
        return;
    }
    let qo = blk * 10u;
    if (lid % 8u == 0u) {
        q[qo] = bitcast<u32>(to_f16(ds.x));
        q[qo + 1u] = bitcast<u32>(to_f16(f32(bitcast<i32>(red_u[lid])) * ds.x));
    }
    q[qo + 2u + lid % 8u] = bitcast<u32>(packed.x);
}

@compute @workgroup_size(64)
fn q8_k(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let blk = wg.x + wg.y * nwg.x;
    let live = blk < (p.n / 256u) * p.rows;
    let xo = blk * 256u;
    var v = vec4(0.0);
    if (live) {
        v = vec4(x[xo + 4u * lid], x[xo + 4u * lid + 1u], x[xo + 4u * lid + 2u],
                 x[xo + 4u * lid + 3u]);
    }
    // The value of largest magnitude, the first such in order (as the CPU's scan, which
    // takes strictly greater ones only): this thread's, then (max, lowest index) reduced.
    var best = 0.0;
    var at = 0xffffffffu;
    for (var k = 0u; k < 4u; k++) {
        if (abs(v[k]) > best) {
            best = abs(v[k]);
            at = 4u * lid + k;
        }
    }
    red_f[lid] = best;
    red_u[lid] = at;
    workgroupBarrier();
    for (var s = 32u; s > 0u; s >>= 1u) {
        if (lid < s) {
            let b = red_f[lid + s];
            let i = red_u[lid + s];
            if (b > red_f[lid] || (b == red_f[lid] && i < red_u[lid])) {
                red_f[lid] = b;
                red_u[lid] = i;
            }
        }
        workgroupBarrier();
    }
    let top = red_u[0];
    if (!live) {
        return;
    }
    let qo = blk * 65u;
    var mx = 0.0;
    if (top != 0xffffffffu) {
        mx = x[xo + top];
    }
    if (mx == 0.0 || !finite(mx)) {
        q[qo + 1u + lid] = 0u;
        if (lid == 0u) {
            q[qo] = 0u;
        }
        return;
    }
    let iscale = div_rn(-127.0, mx);
    if (lid == 0u) {
        q[qo] = bitcast<u32>(div_rn(1.0, iscale));
    }
    q[qo + 1u + lid] = bitcast<u32>(pack4(v, iscale, -127.0).x);
}

// Test entry: q[i] = div_rn(x[2i], x[2i + 1]) for i < p.n (checked bit for bit against the CPU's
// division in tests/gpu_kernels.rs).
@compute @workgroup_size(64)
fn divide(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    if (i >= p.n) {
        return;
    }
    q[i] = bitcast<u32>(div_rn(x[2u * i], x[2u * i + 1u]));
}
