// out[t][r] = Σ_i x[t][i] · W[r][i] for one weight chunk (rows row0.. of the whole matrix),
// dequantizing in registers. One workgroup per (weight row, tile of up to TILE tokens): the
// 64 threads stride over the row's blocks, each keeping one partial sum per token, then a
// tree reduction in workgroup memory. Each weight row is read once per tile.
//
// Grouped expert mode (mode == 1): the "tokens" are routing slots s = t*n_slots + k, grouped
// by expert (see ops.wgsl group_experts): grp[e]..grp[e+1] index grp[n_exp+1+..], the slots
// routed to expert e in ascending order. This chunk holds experts e0..e1 (n_rows rows each);
// workgroup z = (e - e0) * tiles_per_e + tile takes up to TILE of expert e's slots, so each
// expert row is read once per TILE tokens routed to it. Activation row of slot s is
// t*xs_t + k*xs_k; output row = s.

struct Params {
    n_in: u32,
    n_rows: u32,
    row0: u32,
    out_stride: u32,
    tokens: u32,
    tile: u32,
    mode: u32,
    n_slots: u32,
    e0: u32,
    e1: u32,
    xs_t: u32,
    xs_k: u32,
    n_exp: u32,
    tiles_per_e: u32,
    pad0: u32,
    pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<storage, read> grp: array<u32>;

const WG: u32 = 64u;
// Tokens per tile (the host builds a variant with 1 for a single token, where the per-token
// arrays below shrink to one register each).
const TILE: u32 = 8u;
var<workgroup> partial: array<f32, WG * TILE>;

fn act_row_len() -> u32 {
    if (ACT_QUANT == 0u) {
        return p.n_in;
    }
    return (p.n_in / QK) * ACT_WORDS;
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let r = wg.x + wg.y * nwg.x;
    let t0 = wg.z * p.tile;
    let nb = p.n_in / QK;
    let row_bytes = nb * BLOCK_BYTES;
    var acc = array<f32, TILE>();
    var wrow = 0u;
    var live = r < p.n_rows;
    var xrow = array<u32, TILE>();
    var orow = array<u32, TILE>();
    var nt = min(p.tile, p.tokens - min(t0, p.tokens));
    if (p.mode == 1u) {
        let e = p.e0 + wg.z / p.tiles_per_e;
        let first = grp[e] + (wg.z % p.tiles_per_e) * TILE;
        let end = grp[e + 1u];
        nt = min(TILE, end - min(first, end));
        live = live && nt > 0u;
        wrow = ((e - p.e0) * p.n_rows + r) * row_bytes;
        for (var j = 0u; j < TILE; j++) {
            if (j < nt) {
                let s = grp[p.n_exp + 1u + first + j];
                let t = s / p.n_slots;
                let k = s % p.n_slots;
                xrow[j] = (t * p.xs_t + k * p.xs_k) * act_row_len();
                orow[j] = s;
            }
        }
    } else {
        wrow = r * row_bytes;
        for (var j = 0u; j < TILE; j++) {
            xrow[j] = (t0 + j) * act_row_len();
            orow[j] = t0 + j;
        }
    }
    if (live) {
        // Work items are (block, part) pairs: a type whose blocks are large (the K-quants'
        // 256 values) splits each into PARTS, so short rows still keep every thread busy.
        for (var u = lid; u < nb * PARTS; u += WG) {
            let b = u / PARTS;
            let wb = wrow + b * BLOCK_BYTES;
            var ab = b * QK;
            if (ACT_QUANT != 0u) {
                ab = b * ACT_WORDS;
            }
            for (var j = 0u; j < TILE; j++) {
                if (j < nt) {
                    acc[j] += block_dot(wb, xrow[j] + ab, u % PARTS);
                }
            }
        }
    }
    // Only the tile's nt tokens are reduced (decode: one).
    for (var j = 0u; j < nt; j++) {
        partial[j * WG + lid] = acc[j];
    }
    workgroupBarrier();
    for (var step = WG / 2u; step > 0u; step >>= 1u) {
        if (lid < step) {
            for (var j = 0u; j < nt; j++) {
                partial[j * WG + lid] += partial[j * WG + lid + step];
            }
        }
        workgroupBarrier();
    }
    if (lid == 0u && live) {
        for (var j = 0u; j < TILE; j++) {
            if (j < nt) {
                out[orow[j] * p.out_stride + p.row0 + r] = partial[j * WG];
            }
        }
    }
}
