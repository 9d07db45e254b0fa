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

// f32 → f16 → f32, round to nearest even, overflowing to ±inf as the CPU's conversion does
// (WGSL leaves quantizeToF16 of an out-of-range value indeterminate).
fn to_f16(v: f32) -> f32 {
    if (abs(v) >= 65520.0) {
        return select(bitcast<f32>(0x7f800000u), bitcast<f32>(0xff800000u), v < 0.0);
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
    let d = amax32(xo) / 127.0;
    let id = select(1.0 / d, 0.0, d == 0.0);
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
    let d = amax32(xo) / 127.0;
    let id = select(1.0 / d, 0.0, d == 0.0);
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
    let iscale = -127.0 / mx;
    q[qo] = bitcast<u32>(1.0 / iscale);
    for (var j = 0u; j < 64u; j++) {
        var word = 0u;
        for (var k = 0u; k < 4u; k++) {
            let l = i32(clamp(round_away(iscale * x[xo + 4u * j + k]), -127.0, 127.0));
            word |= (bitcast<u32>(l) & 0xffu) << (8u * k);
        }
        q[qo + 1u + j] = word;
    }
}
