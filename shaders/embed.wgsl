// Embedding lookup: out[t][i] = deq(W[ids[t]][i]) * scale for the ids that fall in this chunk
// of the table (rows row0 .. row0 + n_rows). One thread per (token, element).

struct Params {
    n_in: u32,
    n_rows: u32,
    row0: u32,
    tokens: u32,
    scale: f32,
    id_offset: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(2) var<storage, read> ids: array<u32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(6) var<storage, read> xf: array<f32>;
@group(0) @binding(7) var<storage, read> xq: array<u32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = gid.x + gid.y * nwg.x * 64u;
    let t = idx / p.n_in;
    let i = idx % p.n_in;
    if (t >= p.tokens) {
        return;
    }
    let id = ids[p.id_offset + t];
    if (id < p.row0 || id >= p.row0 + p.n_rows) {
        return;
    }
    let row_bytes = (p.n_in / QK) * BLOCK_BYTES;
    out[t * p.n_in + i] = deq((id - p.row0) * row_bytes, i) * p.scale;
}
