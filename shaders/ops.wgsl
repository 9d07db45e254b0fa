// Row and elementwise operations of the forward pass, the GPU twins of backend::cpu::ops.
// One module, one entry point per operation; every entry point reads the same Params block
// (fields are named for attention, the other kernels reuse them as documented per kernel).

struct Params {
    n: u32,          // row length
    rows: u32,       // rows (tokens)
    p0: u32,         // position of the first row
    n_heads: u32,
    n_kv_heads: u32,
    head_dim: u32,
    k: u32,          // experts per token
    pad: u32,        // pad token id
    f0: f32,         // eps | scale
    f1: f32,         // softcap
    capacity: u32,   // KV positions per layer
    n_exp: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read> c: array<f32>;
@group(0) @binding(4) var<storage, read> toks: array<u32>;
@group(0) @binding(5) var<storage, read_write> e: array<f32>;
@group(0) @binding(6) var<storage, read_write> idx: array<u32>;
@group(0) @binding(7) var<storage, read> vc: array<f32>;
@group(0) @binding(8) var<storage, read_write> grp: array<u32>;

const WG: u32 = 64u;
var<workgroup> red: array<f32, 64>;

fn lin(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * WG;
}

fn reduce_sum(lid: u32, v: f32) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            red[lid] += red[lid + s];
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

fn reduce_max(lid: u32, v: f32) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            red[lid] = max(red[lid], red[lid + s]);
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

// a[row] = a[row] * rsqrt(mean(a[row]²) + f0) * b; one workgroup per row.
@compute @workgroup_size(64)
fn rms_norm(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let o = wg.x * p.n;
    var ss = 0.0;
    for (var i = lid; i < p.n; i += WG) {
        ss += a[o + i] * a[o + i];
    }
    let total = reduce_sum(lid, ss) / f32(p.n);
    let inv = 1.0 / sqrt(total + p.f0);
    for (var i = lid; i < p.n; i += WG) {
        a[o + i] = a[o + i] * inv * b[i];
    }
}

// Rotate-half RoPE of a (rows × n_heads × head_dim) at positions p0 + row; b = inv_freq.
@compute @workgroup_size(64)
fn rope(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let half = p.head_dim / 2u;
    let id = lin(gid, nwg);
    if (id >= p.rows * p.n_heads * half) {
        return;
    }
    let i = id % half;
    let hrow = id / half;
    let t = hrow / p.n_heads;
    let base = hrow * p.head_dim;
    let ang = f32(p.p0 + t) * b[i];
    let s = sin(ang);
    let co = cos(ang);
    let x0 = a[base + i];
    let x1 = a[base + i + half];
    a[base + i] = x0 * co - x1 * s;
    a[base + i + half] = x1 * co + x0 * s;
}

// Attention of query rows b (rows × n_heads × head_dim, positions p0..) over the KV cache
// c (keys) / vc (values) of `capacity × kv_dim`; keys whose token (toks) is the pad id are
// masked (-1e30). Scores × f0, soft-capped at f1, softmax, · V into a. One workgroup per
// (row, head) walks the positions in tiles of 64 with a running max and sum (online softmax),
// so nothing grows with the context but the cache itself. head_dim ≤ 4·64.
var<workgroup> tile_p: array<f32, 64>;

@compute @workgroup_size(64)
fn attention(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let t = wg.x / p.n_heads;
    let head = wg.x % p.n_heads;
    let hd = p.head_dim;
    let kv_dim = p.n_kv_heads * hd;
    let g = head / (p.n_heads / p.n_kv_heads);
    let pos = p.p0 + t;
    let qo = (t * p.n_heads + head) * hd;
    var m = -3.0e38;
    var l = 0.0;
    var acc = array<f32, 4>(0.0, 0.0, 0.0, 0.0);
    for (var s0 = 0u; s0 <= pos; s0 += WG) {
        let s = s0 + lid;
        let valid = s <= pos;
        var sc = -3.0e38;
        if (valid) {
            sc = -1.0e30;
            if (toks[s] != p.pad) {
                let ko = s * kv_dim + g * hd;
                var dot = 0.0;
                for (var i = 0u; i < hd; i++) {
                    dot += b[qo + i] * c[ko + i];
                }
                sc = p.f1 * tanh(dot * p.f0 / p.f1);
            }
        }
        let m_new = max(m, reduce_max(lid, sc));
        var pr = 0.0;
        if (valid) {
            pr = exp(sc - m_new);
        }
        tile_p[lid] = pr;
        let tile_sum = reduce_sum(lid, pr);
        let corr = exp(m - m_new);
        l = l * corr + tile_sum;
        let n = min(WG, pos + 1u - s0);
        for (var j = 0u; j < 4u; j++) {
            let d = lid + j * WG;
            if (d < hd) {
                var part = 0.0;
                for (var k = 0u; k < n; k++) {
                    part += tile_p[k] * vc[(s0 + k) * kv_dim + g * hd + d];
                }
                acc[j] = acc[j] * corr + part;
            }
        }
        m = m_new;
        workgroupBarrier();
    }
    let inv = 1.0 / l;
    for (var j = 0u; j < 4u; j++) {
        let d = lid + j * WG;
        if (d < hd) {
            a[qo + d] = acc[j] * inv;
        }
    }
}

// Softmax of each row of a (rows × n), one thread per row.
@compute @workgroup_size(64)
fn softmax_rows(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = lin(gid, nwg);
    if (r >= p.rows) {
        return;
    }
    let o = r * p.n;
    var mx = -3.0e38;
    for (var i = 0u; i < p.n; i++) {
        mx = max(mx, a[o + i]);
    }
    var sum = 0.0;
    for (var i = 0u; i < p.n; i++) {
        let v = exp(a[o + i] - mx);
        a[o + i] = v;
        sum += v;
    }
    let inv = 1.0 / sum;
    for (var i = 0u; i < p.n; i++) {
        a[o + i] *= inv;
    }
}

// Router: softmax of each row of a (rows × n_exp router logits), then the top k experts by
// probability (ties to the lower index) into idx (rows × k) and their probabilities into e.
@compute @workgroup_size(64)
fn route(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = lin(gid, nwg);
    if (r >= p.rows) {
        return;
    }
    let o = r * p.n_exp;
    var mx = -3.0e38;
    for (var i = 0u; i < p.n_exp; i++) {
        mx = max(mx, a[o + i]);
    }
    var sum = 0.0;
    for (var i = 0u; i < p.n_exp; i++) {
        let v = exp(a[o + i] - mx);
        a[o + i] = v;
        sum += v;
    }
    let inv = 1.0 / sum;
    for (var i = 0u; i < p.n_exp; i++) {
        a[o + i] *= inv;
    }
    for (var j = 0u; j < p.k; j++) {
        var best = 0xffffffffu;
        var bv = -1.0;
        for (var i = 0u; i < p.n_exp; i++) {
            var used = false;
            for (var q = 0u; q < j; q++) {
                used = used || idx[r * p.k + q] == i;
            }
            if (!used && (best == 0xffffffffu || a[o + i] > bv)) {
                best = i;
                bv = a[o + i];
            }
        }
        idx[r * p.k + j] = best;
        e[r * p.k + j] = bv;
    }
}

// Group the routing slots (idx: rows × k expert ids) by expert for the grouped expert matmul:
// grp[0..=n_exp] are offsets (grp[e]..grp[e+1] is expert e's range), grp[n_exp+1+..] the slot
// ids s = t*k + j, ascending within each expert. One workgroup; thread i counts and fills the
// experts i, i+64, ...; thread 0 makes the prefix sums in between.
@compute @workgroup_size(64)
fn group_experts(@builtin(local_invocation_index) lid: u32) {
    let slots = p.rows * p.k;
    for (var ex = lid; ex < p.n_exp; ex += WG) {
        var c = 0u;
        for (var s = 0u; s < slots; s++) {
            c += select(0u, 1u, idx[s] == ex);
        }
        grp[ex + 1u] = c;
    }
    storageBarrier();
    workgroupBarrier();
    if (lid == 0u) {
        grp[0] = 0u;
        for (var ex = 0u; ex < p.n_exp; ex++) {
            grp[ex + 1u] += grp[ex];
        }
    }
    storageBarrier();
    workgroupBarrier();
    for (var ex = lid; ex < p.n_exp; ex += WG) {
        var o = p.n_exp + 1u + grp[ex];
        for (var s = 0u; s < slots; s++) {
            if (idx[s] == ex) {
                grp[o] = s;
                o += 1u;
            }
        }
    }
}

fn gelu_tanh(x: f32) -> f32 {
    return 0.5 * x * (1.0 + tanh(0.7978846 * (x + 0.044715 * x * x * x)));
}

// a = gelu_tanh(a) ⊙ b over n·rows elements.
@compute @workgroup_size(64)
fn gelu_mul(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = lin(gid, nwg);
    if (i >= p.n * p.rows) {
        return;
    }
    a[i] = gelu_tanh(a[i]) * b[i];
}

// a[t] = Σ_k c[t*k + j] · b[(t*k + j)] (expert outputs weighted by their gates), rows × n.
@compute @workgroup_size(64)
fn combine(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let id = lin(gid, nwg);
    if (id >= p.n * p.rows) {
        return;
    }
    let t = id / p.n;
    let i = id % p.n;
    var acc = 0.0;
    for (var j = 0u; j < p.k; j++) {
        let s = t * p.k + j;
        acc += c[s] * b[s * p.n + i];
    }
    a[id] = acc;
}

// a += b over n·rows elements.
@compute @workgroup_size(64)
fn add(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = lin(gid, nwg);
    if (i >= p.n * p.rows) {
        return;
    }
    a[i] += b[i];
}

// a *= f0 over n·rows elements.
@compute @workgroup_size(64)
fn scale(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = lin(gid, nwg);
    if (i >= p.n * p.rows) {
        return;
    }
    a[i] *= p.f0;
}
