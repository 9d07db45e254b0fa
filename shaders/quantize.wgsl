// Activation quantization for the 4/5/6-bit weight types, bit-for-bit as the CPU does it (quant
// crate): Q8_0 blocks of 32 (d = amax/127 rounded to f16, q = round-half-away(x/d)) stored as
// 9 words [d as f32, 32 i8]; Q8_1 blocks of 32 (Q8_0 plus s = d·Σq rounded to f16, d before its
// own rounding) stored as 10 words [d, s, 32 i8]; Q8_K blocks of 256 (iscale = -127/signed-absmax, d = 1/iscale,
// q = clamp(round-half-away(iscale*x), ±127)) stored as 65 words [d, 256 i8].
// One thread per block.

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

// a / b correctly rounded (round to nearest even), as IEEE division on the CPU. WGSL lets `/`
// be off by 2.5 ULP, and real drivers use that (NVIDIA's Vulkan driver gave a different Q8_K
// scale for 1 block in 36): the quotient's significand by long division on integers instead.
fn div_rn(a: f32, b: f32) -> f32 {
    if (a == 0.0 || b == 0.0 || !finite(a) || !finite(b)) {
        return a / b; // exact in IEEE terms for zeros and infinities
    }
    let ua = bitcast<u32>(a);
    let ub = bitcast<u32>(b);
    let sign = (ua ^ ub) & 0x80000000u;
    // Significands with the implicit bit at 23 (subnormals normalized) and unbiased exponents.
    var ea = i32((ua >> 23u) & 0xffu);
    var ma = ua & 0x7fffffu;
    if (ea == 0) {
        let s = countLeadingZeros(ma) - 8u;
        ma <<= s;
        ea = 1 - i32(s);
    } else {
        ma |= 0x800000u;
    }
    var eb = i32((ub >> 23u) & 0xffu);
    var mb = ub & 0x7fffffu;
    if (eb == 0) {
        let s = countLeadingZeros(mb) - 8u;
        mb <<= s;
        eb = 1 - i32(s);
    } else {
        mb |= 0x800000u;
    }
    // Biased exponent of the result, with ma scaled into [mb, 2mb).
    var e = ea - eb + 127;
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

// The 32 levels of block `xo` at inverse scale `id`, packed as 8 words at q[qo..]; returns Σq.
fn pack_levels(xo: u32, id: f32, qo: u32) -> i32 {
    var sum = 0i;
    for (var j = 0u; j < 8u; j++) {
        var word = 0u;
        for (var k = 0u; k < 4u; k++) {
            let v = x[xo + 4u * j + k] * id;
            var l = 0i;
            if (finite(v)) {
                l = i32(clamp(round_away(v), -128.0, 127.0));
            }
            sum += l;
            word |= (bitcast<u32>(l) & 0xffu) << (8u * k);
        }
        q[qo + j] = word;
    }
    return sum;
}

fn amax32(xo: u32) -> f32 {
    var amax = 0.0;
    for (var i = 0u; i < 32u; i++) {
        amax = max(amax, abs(x[xo + i]));
    }
    return amax;
}

@compute @workgroup_size(64)
fn q8_0(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let blk = gid.x + gid.y * nwg.x * 64u;
    let nb = p.n / 32u;
    if (blk >= nb * p.rows) {
        return;
    }
    let xo = blk * 32u;
    let d = div_rn(amax32(xo), 127.0);
    let id = select(div_rn(1.0, d), 0.0, d == 0.0);
    let qo = blk * 9u;
    q[qo] = bitcast<u32>(to_f16(d));
    pack_levels(xo, id, qo + 1u);
}

@compute @workgroup_size(64)
fn q8_1(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let blk = gid.x + gid.y * nwg.x * 64u;
    let nb = p.n / 32u;
    if (blk >= nb * p.rows) {
        return;
    }
    let xo = blk * 32u;
    let d = div_rn(amax32(xo), 127.0);
    let id = select(div_rn(1.0, d), 0.0, d == 0.0);
    let qo = blk * 10u;
    let sum = pack_levels(xo, id, qo + 2u);
    q[qo] = bitcast<u32>(to_f16(d));
    q[qo + 1u] = bitcast<u32>(to_f16(f32(sum) * d));
}

@compute @workgroup_size(64)
fn q8_k(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let blk = gid.x + gid.y * nwg.x * 64u;
    let nb = p.n / 256u;
    if (blk >= nb * p.rows) {
        return;
    }
    let xo = blk * 256u;
    let qo = blk * 65u;
    var amax = 0.0;
    var mx = 0.0;
    for (var i = 0u; i < 256u; i++) {
        let v = x[xo + i];
        if (abs(v) > amax) {
            amax = abs(v);
            mx = v;
        }
    }
    if (mx == 0.0 || !finite(mx)) {
        for (var j = 0u; j < 65u; j++) {
            q[qo + j] = 0u;
        }
        return;
    }
    let iscale = div_rn(-127.0, mx);
    q[qo] = bitcast<u32>(div_rn(1.0, iscale));
    for (var j = 0u; j < 64u; j++) {
        var word = 0u;
        for (var k = 0u; k < 4u; k++) {
            let l = i32(clamp(round_away(iscale * x[xo + 4u * j + k]), -127.0, 127.0));
            word |= (bitcast<u32>(l) & 0xffu) << (8u * k);
        }
        q[qo + 1u + j] = word;
    }
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
