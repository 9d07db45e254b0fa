//! Helpers shared by the quantizers and kernels: rounding, scale searches, f16 access and CPU
//! feature detection.

use half::f16;

/// Round half away from zero (C's `roundf`), as ggml's reference quantizers do.
///
/// Same result as `f32::round` for every input (sign of zero included) without the libm call
/// that `round` compiles to on baseline x86-64 (no SSE4.1).
#[inline]
pub(crate) fn round_away(x: f32) -> f32 {
    if x.abs() < 8_388_608.0 {
        // |x| < 2^23: truncation through i32 is exact, and so is the fraction x - t.
        let t = (x as i32) as f32;
        let f = x - t;
        // Branch-free: the fraction of real data is unpredictable.
        let up = (f >= 0.5) as i32 as f32;
        let down = (f <= -0.5) as i32 as f32;
        (t + up - down).copysign(x)
    } else {
        // Already integral, infinite or NaN.
        x
    }
}

/// Float to small unsigned level the way ggml's reference (x86 C) and gguf-py's numpy casts
/// behave: truncation toward zero, and 0 for a non-finite value (a scale so small that its
/// inverse overflows makes every product infinite or NaN; both references then store 0).
#[inline]
pub(crate) fn trunc_level(v: f32) -> u8 {
    if v.is_finite() {
        v as u8
    } else {
        0
    }
}

/// Round half away from zero to i8, 0 for a non-finite value (see [`trunc_level`]).
#[inline]
pub(crate) fn round_level_i8(v: f32) -> i8 {
    if v.is_finite() {
        round_away(v) as i8
    } else {
        0
    }
}

/// Read a little-endian f16 at `off` and widen it.
#[inline]
pub(crate) fn f16_at(b: &[u8], off: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([b[off], b[off + 1]])).to_f32()
}

/// Whether AVX2, FMA and F16C are available (detected once): whether the x86 kernels run,
/// the eight-row kernels for [`crate::Layout::Interleaved8`] among them. `QUANT_FORCE_SCALAR`
/// (set at all) turns every SIMD path off.
#[cfg(target_arch = "x86_64")]
#[inline]
pub(crate) fn has_avx2() -> bool {
    use std::sync::OnceLock;
    static DETECTED: OnceLock<bool> = OnceLock::new();
    *DETECTED.get_or_init(|| {
        std::env::var_os("QUANT_FORCE_SCALAR").is_none()
            && is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
    })
}

/// Whether the AVX-512 kernels run (detected once): AVX-512 F, BW and VL with VNNI (`vpdpbusd`
/// sums byte products straight into i32 lanes, one instruction for AVX2's `maddubs` + `add` +
/// `madd`), BITALG (`vpshufbitqmb` gathers one bit per byte into a mask), GFNI and BMI2, on top of
/// [`has_avx2`]'s features: Intel Ice Lake and later, AMD Zen 4 and later. The kernels that
/// have such a version ("where it pays": the byte-dot kernels whose AVX2 versions are limited
/// by their instruction count) take it; the rest stay on AVX2. `QUANT_NO_AVX512` (set at all)
/// keeps every kernel on AVX2, so one machine tests and measures both tiers.
#[cfg(target_arch = "x86_64")]
#[inline]
pub(crate) fn has_avx512() -> bool {
    use std::sync::OnceLock;
    static DETECTED: OnceLock<bool> = OnceLock::new();
    *DETECTED.get_or_init(|| {
        has_avx2()
            && std::env::var_os("QUANT_NO_AVX512").is_none()
            && is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vl")
            && is_x86_feature_detected!("avx512vnni")
            && is_x86_feature_detected!("avx512bitalg")
            && is_x86_feature_detected!("gfni")
            // `pext` in Q5_0's `nib4` kernel (every AVX-512 CPU so far has BMI2).
            && is_x86_feature_detected!("bmi2")
    })
}

/// Whether the CPU is Intel's (CPUID vendor, detected once): the key of the tuning choices that
/// measured differently on the two kinds of machine this project has run on (the Zen 3 of the
/// earlier sessions, the Intel Xeon of 2026-11-23) — how row-major eight-row groups prefetch
/// (here) and from which row length K-quant rows go eight at a time ([`k_eight_rows_from`]).
///
/// Prefetch: on Intel, row-major Q8_0 groups hint each row's own stream a fixed distance
/// ahead into L1 ([`x86::prefetch_group`]) and the K-quant groups, which hint each row two
/// super-blocks ahead anyway, add nothing; elsewhere both add the next group of eight rows as
/// one stream into L2 ([`x86::prefetch_next_group`]). The Zen 3 read row-major groups best
/// with the group stream (Q4_1 rows 0.66-0.68 of the triad per row, 0.86-0.88 per group); on
/// the Xeon (Sapphire Rapids class), whose L2 streamer follows eight rows itself, the group
/// stream cost a tenth of the speed (kernel bench, three alternating runs, all threads ÷
/// triad, group → per row: Q8_0 rows 0.87-0.88 → 1.01-1.03; Q8_0 × f32 0.84-0.85 →
/// 0.94-0.97; group → none: Q4_K 0.77-0.80 → 0.87-0.92, Q5_K 0.76-0.80 → 0.83-0.89, Q6_K
/// 0.83-0.86 → 0.90-0.96). The nibble types' kernels (Q4_0, Q4_1, Q5_0; 18-22 byte blocks)
/// kept the group stream everywhere (per row, Q4_0 read 0.73-0.76 against 0.82-0.86 per group,
/// four alternating pairs of bench binaries, 2026-11-23) until the per-row hints ran on into
/// the next group ([`x86::hint_at`], 2026-11-24): now rows of [`x86::ROW_HINTS_FROM`] bytes or
/// more hint per row on Intel too ([`x86::row_hints`]), shorter ones keep the group stream.
#[cfg(target_arch = "x86_64")]
pub(crate) fn intel_cpu() -> bool {
    use std::sync::OnceLock;
    static DETECTED: OnceLock<bool> = OnceLock::new();
    *DETECTED.get_or_init(|| {
        // `__cpuid` is a safe function from Rust 1.94 and unsafe before.
        #[allow(unused_unsafe)]
        // SAFETY: CPUID leaf 0 exists on every x86-64 CPU.
        let r = unsafe { std::arch::x86_64::__cpuid(0) };
        let vendor: Vec<u8> = [r.ebx, r.edx, r.ecx]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        vendor == b"GenuineIntel"
    })
}

/// The kernels this process runs: "avx512" (with AVX2 for the kernels that have no AVX-512
/// version), "avx2", "neon" or "scalar" (after the switches above).
pub fn simd_tier() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if has_avx512() {
            return "avx512";
        }
        if has_avx2() {
            return "avx2";
        }
    }
    #[cfg(target_arch = "aarch64")]
    if has_neon() {
        return "neon";
    }
    "scalar"
}

/// Whether the NEON kernels run (detected once; NEON is baseline on aarch64, but detection
/// costs one load and keeps the switch in one place). `QUANT_FORCE_SCALAR` (set at all) turns
/// them off, as it does the x86 ones.
#[cfg(target_arch = "aarch64")]
#[inline]
pub(crate) fn has_neon() -> bool {
    use std::sync::OnceLock;
    static DETECTED: OnceLock<bool> = OnceLock::new();
    *DETECTED.get_or_init(|| {
        std::env::var_os("QUANT_FORCE_SCALAR").is_none()
            && std::arch::is_aarch64_feature_detected!("neon")
    })
}

/// Never on other architectures: no x86 kernel, so interleaved rows go through
/// de-interleaving ([`crate::layout`]) and the single-row paths.
#[cfg(not(target_arch = "x86_64"))]
#[inline]
pub(crate) fn has_avx2() -> bool {
    false
}

/// The size check every `vec_dot_rows`-style entry point makes before its SIMD path: `w` holds
/// `rows` rows of `row_bytes` bytes made of whole `block_bytes` blocks. Returns the blocks per
/// row; panics naming `name` otherwise (these are safe functions over raw pointers inside).
pub(crate) fn check_rows(
    name: &str,
    w: &[u8],
    row_bytes: usize,
    block_bytes: usize,
    rows: usize,
) -> usize {
    assert!(
        row_bytes % block_bytes == 0 && w.len() / row_bytes.max(1) >= rows,
        "{name}: {rows} rows of {row_bytes} bytes need whole blocks and {} weight bytes, got {}",
        rows * row_bytes,
        w.len()
    );
    row_bytes / block_bytes
}

/// After a `_rows` entry point's eight-row loop: with interleaved groups every whole group must
/// have gone through it (the row-by-row tail reads rows in ggml's layout; the library entry
/// points send interleaved data here only when the AVX2 kernel runs).
pub(crate) fn assert_il_covered(il: bool, r: usize, rows: usize, row_bytes: usize, name: &str) {
    assert!(
        !il || rows - r < 8 || row_bytes == 0,
        "{name}: interleaved rows {r}..{rows} reached the row-by-row path"
    );
}

/// Row-major K-quant rows of at least this many super-blocks go through the eight-row kernels,
/// which read each activation block once for eight rows; shorter ones go row by row. The
/// single-row kernels read the whole Q8_K activation (292 bytes a super-block) for every row.
/// On the Zen 3 of the earlier sessions: from 32 super-blocks (8192 values) — single rows read
/// 0.82-0.95 of the triad at 8192 values, 0.41-0.50 at 16384, 0.33-0.62 at 32768, where the
/// eight-row Q4_K kernel reads 0.86-0.94; at 2048 values the single-row Q4_K kernel read a
/// little more (0.80 against 0.78), at 6144 the same (0.87 / 0.88), at 8192 less (0.84 / 0.89).
/// On Intel ([`intel_cpu`]) from 1: on the Xeon of 2026-11-23 the single-row kernels
/// read 0.52-0.62 of the triad at 6144 values (Grok-1's width) against 0.74-0.87 for the
/// eight-row ones, and 0.53-0.79 against 0.61-0.69 at 2048 (kernel bench, Q4_K / Q5_K / Q6_K
/// rows, two alternating runs of each binary).
pub(crate) fn k_eight_rows_from() -> usize {
    #[cfg(target_arch = "x86_64")]
    if intel_cpu() {
        return 1;
    }
    32
}

/// An eight-row K-quant kernel: `(group, nb, activation, out)` for a group of eight rows of
/// `nb` super-blocks each at `group` (row-major, back to back, or one packed group of
/// [`crate::Layout::Interleaved8`], as the kernel is made for) against `nb` Q8_K blocks. It
/// needs AVX2, FMA and F16C and reads exactly those bytes (its callers check both).
pub(crate) type EightRows = unsafe fn(*const u8, usize, *const u8, &mut [f32; 8]);

/// `out[r] = w_r · a` for K-quant rows of type `ty` (`rb` bytes each) against one Q8_K
/// activation. Row-major (`il` false): with AVX2 and rows of at least [`k_eight_rows_from`]
/// super-blocks eight at a time through `eight[0]`; packed (`il`): every whole group through
/// `eight[1]`, or where there is none (no AVX2) unpacked a group at a time; the rest through
/// `one` (the single-row dot). Each kernel must give each row exactly `one`'s bits.
#[allow(clippy::too_many_arguments)]
pub(crate) fn k_rows_by_eight(
    name: &str,
    ty: crate::GgmlType,
    w: &[u8],
    rb: usize,
    il: bool,
    a: &[u8],
    out: &mut [f32],
    eight: [Option<EightRows>; 2],
    one: fn(&[u8], &[u8]) -> f32,
) {
    let nb = check_rows(name, w, rb, ty.type_size(), out.len());
    assert!(
        a.len() >= nb * crate::q8_k::BLOCK_BYTES,
        "{name}: {nb} blocks per row need {} activation bytes, got {}",
        nb * crate::q8_k::BLOCK_BYTES,
        a.len()
    );
    let kernel = eight[il as usize].filter(|_| has_avx2() && (il || nb >= k_eight_rows_from()));
    let whole = out.len() / 8 * 8;
    let mut r = 0;
    if let Some(k) = kernel.filter(|_| nb > 0) {
        while r < whole {
            let mut o = [0f32; 8];
            // SAFETY: an `EightRows` kernel for this layout with AVX2/FMA/F16C present
            // (`has_avx2()` above); rows r..r+8 (8·nb blocks in either layout) lie in `w`
            // (`check_rows`) and `a` holds nb activation blocks (asserted above).
            unsafe { k(w[r * rb..].as_ptr(), nb, a.as_ptr(), &mut o) };
            out[r..r + 8].copy_from_slice(&o);
            r += 8;
        }
    }
    if il && r < whole {
        // No kernel for the packed groups here: the layout's own unpacking, then rows.
        crate::layout::via_rows(ty, &w[..whole * rb], rb, whole, |plain, r0| {
            for (k, row) in plain.chunks_exact(rb).enumerate() {
                out[r0 + k] = one(row, a);
            }
            Ok(())
        })
        .expect("rows into a slice of the right size cannot fail");
        r = whole;
    }
    for (o, row) in out[r..].iter_mut().zip(w[r * rb..].chunks_exact(rb.max(1))) {
        *o = one(row, a);
    }
}

/// An eight-row kernel over up to four tokens' activations in the form `P` its type takes (Q4_0
/// and Q5_0: [`crate::q8_0::PreparedQ8`]; Q4_1: the Q8_1 bytes): `(il, group, rb, nb, acts,
/// out)` writes `out[t][r]` = row r of the group (eight rows `rb` bytes apart, or one packed
/// group with `il`) dotted with `acts[t]`, for `t < acts.len()` (1 to 4). It needs AVX2, FMA
/// and F16C and reads exactly those bytes: `nb` blocks of each row and of each activation (its
/// callers check both).
pub(crate) type TokensKernel<P> =
    unsafe fn(bool, *const u8, usize, usize, &[&P], &mut [[f32; 8]; 4]);

/// A [`TokensKernel`]'s split by token count: binds `$arr` to the 1 to 4 items of the slice
/// `$items` as an array of that length and `$o` to a `&mut [[f32; 8]; N]`, evaluates `$call` (a
/// kernel generic over the count, which it infers from the array) and copies the N results
/// into `$out[..N]`; no items, nothing. A macro, so that each count is an expansion of its own
/// (a closure cannot be generic over it, and one out of line would lose the kernel's target
/// features — see tools/check_inlined_intrinsics.sh).
#[cfg(target_arch = "x86_64")]
macro_rules! per_token_count {
    ($items:expr, $out:expr, |$arr:ident, $o:ident| $call:expr) => {
        match $items {
            [a, b, c, d] => per_token_count!(@run $out, [a, b, c, d], 4, $arr, $o, $call),
            [a, b, c] => per_token_count!(@run $out, [a, b, c], 3, $arr, $o, $call),
            [a, b] => per_token_count!(@run $out, [a, b], 2, $arr, $o, $call),
            [a] => per_token_count!(@run $out, [a], 1, $arr, $o, $call),
            _ => {}
        }
    };
    (@run $out:expr, $items:expr, $n:literal, $arr:ident, $o:ident, $call:expr) => {{
        let $arr = $items;
        let mut res = [[0f32; 8]; $n];
        {
            let $o = &mut res;
            $call;
        }
        $out[..$n].copy_from_slice(&res);
    }};
}
#[cfg(target_arch = "x86_64")]
pub(crate) use per_token_count;

/// The batched loop over a [`TokensKernel`]: `out[r·acts.len() + t] = w_r · acts[t]` for the
/// `rows` rows of `nb` blocks ([`check_rows_multi`] of `w` and `acts` done by the caller),
/// every whole group of eight through `kernel` (when given: the caller has checked the CPU and
/// that each of `items`, one per token, holds `nb` blocks) four tokens a call, the rows after
/// through `one` per token.
#[allow(clippy::too_many_arguments)]
pub(crate) fn rows_multi_by<P: ?Sized>(
    name: &str,
    w: &[u8],
    row_bytes: usize,
    (rows, nb): (usize, usize),
    il: bool,
    acts: &[&[u8]],
    items: &[&P],
    out: &mut [f32],
    kernel: Option<TokensKernel<P>>,
    one: fn(&[u8], &[u8]) -> f32,
) {
    let tokens = acts.len();
    let mut r = 0;
    if let Some(kernel) = kernel {
        assert_eq!(items.len(), tokens, "{name}: one kernel input per token");
        while r + 8 <= rows {
            let wr = w[r * row_bytes..].as_ptr();
            let mut t0 = 0;
            while t0 < tokens {
                let k = (tokens - t0).min(4);
                let mut o = [[0f32; 8]; 4];
                // SAFETY: a `TokensKernel`, whose CPU features and activation sizes the caller
                // checked (see above); rows r..r+8 lie inside `w` (`check_rows_multi`); k is 1
                // to 4.
                unsafe { kernel(il, wr, row_bytes, nb, &items[t0..t0 + k], &mut o) };
                for (dt, ot) in o.iter().take(k).enumerate() {
                    for (dr, v) in ot.iter().enumerate() {
                        out[(r + dr) * tokens + t0 + dt] = *v;
                    }
                }
                t0 += k;
            }
            r += 8;
        }
    }
    assert_il_covered(il, r, rows, row_bytes, name);
    for rr in r..rows {
        let row = &w[rr * row_bytes..(rr + 1) * row_bytes];
        for (t, a) in acts.iter().enumerate() {
            out[rr * tokens + t] = one(row, a);
        }
    }
}

/// Bytes of one Q8_K activation block (the K-quants' activations).
pub(crate) const Q8K_BYTES: usize = crate::q8_k::BLOCK_BYTES;

/// The batched (several-token) entry points' checks: `out` holds whole rows of `acts.len()`
/// tokens, `w` that many rows of `rb` bytes of `block_bytes`-byte blocks ([`check_rows`]), and
/// every activation at least `act_block_bytes` per block. Returns the rows and the blocks per
/// row.
pub(crate) fn check_rows_multi(
    name: &str,
    w: &[u8],
    rb: usize,
    block_bytes: usize,
    acts: &[&[u8]],
    out_len: usize,
    act_block_bytes: usize,
) -> (usize, usize) {
    let tokens = acts.len();
    assert!(
        tokens > 0 && out_len % tokens == 0,
        "{name}: {out_len} outputs for {tokens} activations"
    );
    let rows = out_len / tokens;
    let nb = check_rows(name, w, rb, block_bytes, rows);
    let need = nb * act_block_bytes;
    for (t, a) in acts.iter().enumerate() {
        assert!(
            a.len() >= need,
            "{name}: activation {t} has {} bytes, {nb} blocks need {need}",
            a.len()
        );
    }
    (rows, nb)
}

/// A kernel dotting one row of `nb` K-quant super-blocks at the pointer with eight Q8_K
/// activations (lane t for the t-th): it needs AVX2, FMA and F16C and reads exactly those
/// bytes (its callers check both).
pub(crate) type EightTokens = unsafe fn(*const u8, usize, &[*const u8; 8]) -> [f32; 8];

/// Batched prefill over row-major K-quant rows (`rb` bytes of `block_bytes`-byte super-blocks):
/// `out[r·acts.len() + t] = w_r · acts[t]`, eight tokens at a time through `eight` with AVX2,
/// the remaining tokens through `one` (the single-row dot). `eight` must give every token
/// exactly `one`'s bits.
#[allow(clippy::too_many_arguments)]
pub(crate) fn k_rows_multi8(
    name: &str,
    w: &[u8],
    rb: usize,
    block_bytes: usize,
    acts: &[&[u8]],
    out: &mut [f32],
    eight: Option<EightTokens>,
    one: fn(&[u8], &[u8]) -> f32,
) {
    let tokens = acts.len();
    let (_, nb) = check_rows_multi(name, w, rb, block_bytes, acts, out.len(), Q8K_BYTES);
    let kernel = eight.filter(|_| has_avx2());
    for (res, row) in out.chunks_exact_mut(tokens).zip(w.chunks_exact(rb.max(1))) {
        let mut t0 = 0;
        if let Some(k) = kernel {
            while t0 + 8 <= tokens {
                let a: [*const u8; 8] = std::array::from_fn(|j| acts[t0 + j].as_ptr());
                // SAFETY: an `EightTokens` kernel with AVX2/FMA/F16C present (`has_avx2()`
                // above); the row holds nb blocks (`check_rows`) and every activation nb Q8_K
                // blocks (asserted above).
                res[t0..t0 + 8].copy_from_slice(&unsafe { k(row.as_ptr(), nb, &a) });
                t0 += 8;
            }
        }
        for (o, a) in res[t0..].iter_mut().zip(&acts[t0..]) {
            *o = one(row, a);
        }
    }
}

/// The eight-row driver of the `_rows` entry points: with `simd`, `eight(group, out8)` for every
/// whole group of eight rows (`group` starts at the group's first row), then `one(row)` for the
/// rest, row-major (all rows without `simd`). Interleaved groups must all have gone through
/// `eight` ([`assert_il_covered`]).
#[allow(clippy::too_many_arguments)]
pub(crate) fn by_eight(
    name: &str,
    w: &[u8],
    row_bytes: usize,
    il: bool,
    simd: bool,
    out: &mut [f32],
    mut eight: impl FnMut(&[u8], &mut [f32; 8]),
    one: impl Fn(&[u8]) -> f32,
) {
    let mut r = 0;
    if simd {
        while r + 8 <= out.len() {
            let mut o = [0f32; 8];
            eight(&w[r * row_bytes..], &mut o);
            out[r..r + 8].copy_from_slice(&o);
            r += 8;
        }
    }
    assert_il_covered(il, r, out.len(), row_bytes, name);
    for (o, row) in out[r..]
        .iter_mut()
        .zip(w[r * row_bytes..].chunks_exact(row_bytes.max(1)))
    {
        *o = one(row);
    }
}

/// One field of a block as [`pack8`] lays it out in a column of eight rows: `len` bytes at
/// `off` in the block, stored as [`Pack`] says.
#[derive(Clone, Copy)]
pub(crate) struct Field {
    pub off: usize,
    pub len: usize,
    pub pack: Pack,
}

/// How a [`Field`]'s bytes of the eight rows lie in a packed column.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pack {
    /// Row after row.
    Rows,
    /// In 4-byte groups, group k of rows 0..7 together (one 32-byte vector per group, row r
    /// in lane r).
    Dwords,
    /// Q5_0's 32-bit high-bit words, bit-transposed for the nibble vectors of a following
    /// `Dwords` field: 32 bytes, byte 4r + j holding in bit s the fifth bit of row r's value
    /// 4s + j (s < 4) or 16 + 4(s − 4) + j (s ≥ 4) — the values whose low 4 bits sit in byte
    /// 4r + j of nibble vector s mod 4 (low nibble for s < 4, high for s ≥ 4). A kernel then
    /// moves bit s of every byte to bit 4 with one shift, where the word layout costs a
    /// shuffle, a test and a mask per vector.
    HighBits,
}

impl Field {
    /// `len` bytes at `off`, row after row.
    pub const fn rows(off: usize, len: usize) -> Field {
        Field {
            off,
            len,
            pack: Pack::Rows,
        }
    }

    /// `len` bytes at `off`, in 4-byte groups of the eight rows.
    pub const fn dwords(off: usize, len: usize) -> Field {
        Field {
            off,
            len,
            pack: Pack::Dwords,
        }
    }

    /// The 4-byte high-bit word at `off`, bit-transposed ([`Pack::HighBits`]).
    pub const fn high_bits(off: usize) -> Field {
        Field {
            off,
            len: 4,
            pack: Pack::HighBits,
        }
    }
}

/// Bits 0, 4, 8, 12 of `x` (others zero) as bits 0..3.
#[inline]
fn gather4(x: u32) -> u8 {
    ((x | x >> 3 | x >> 6 | x >> 9) & 0xF) as u8
}

/// Bits 0..3 of `n` to bits 0, 4, 8, 12.
#[inline]
fn deposit4(n: u8) -> u32 {
    let n = n as u32;
    (n & 1) | (n & 2) << 3 | (n & 4) << 6 | (n & 8) << 9
}

/// Eight rows' high-bit words → the [`Pack::HighBits`] bytes.
pub(crate) fn spread_high_bits(words: &[u32; 8]) -> [u8; 32] {
    std::array::from_fn(|p| {
        let (w, j) = (words[p / 4], p % 4);
        gather4(w >> j & 0x1111) | gather4(w >> (16 + j) & 0x1111) << 4
    })
}

/// The inverse of [`spread_high_bits`].
pub(crate) fn gather_high_bits(bytes: &[u8; 32]) -> [u32; 8] {
    std::array::from_fn(|r| {
        (0..4).fold(0u32, |w, j| {
            let b = bytes[4 * r + j];
            w | deposit4(b & 0xF) << j | deposit4(b >> 4) << (16 + j)
        })
    })
}

/// The f16 block scale every legacy block starts with, packed eight scales together.
pub(crate) const SCALE: Field = Field::rows(0, 2);

/// Permute `src` (`rows` rows of `row_bytes` bytes, ggml layout) into `dst` with every whole
/// group of eight rows stored as columns: column b holds block b of the eight rows, field by
/// field as `fields` says (the fields must tile the block). The rows after the last whole
/// group are copied as they are. `inverse` undoes it.
pub(crate) fn pack8(
    src: &[u8],
    dst: &mut [u8],
    row_bytes: usize,
    block_bytes: usize,
    fields: &[Field],
    inverse: bool,
) {
    assert!(
        src.len() == dst.len()
            && block_bytes > 0
            && row_bytes % block_bytes == 0
            && src.len() % row_bytes.max(1) == 0
            && fields.iter().map(|f| f.len).sum::<usize>() == block_bytes,
        "pack8: {} source bytes, {} destination bytes, rows of {row_bytes}",
        src.len(),
        dst.len()
    );
    let nb = row_bytes / block_bytes;
    let group = 8 * row_bytes;
    let whole = src.len().checked_div(group).unwrap_or(0) * group;
    for (s, d) in src[..whole]
        .chunks_exact(group)
        .zip(dst[..whole].chunks_exact_mut(group))
    {
        for b in 0..nb {
            let col = 8 * b * block_bytes;
            let mut at = col;
            for f in fields {
                if f.pack == Pack::HighBits {
                    let plain = |r: usize| r * row_bytes + b * block_bytes + f.off;
                    if inverse {
                        let words = gather_high_bits(s[at..at + 32].try_into().expect("32"));
                        for (r, w) in words.iter().enumerate() {
                            d[plain(r)..plain(r) + 4].copy_from_slice(&w.to_le_bytes());
                        }
                    } else {
                        let words = std::array::from_fn(|r| {
                            u32::from_le_bytes(s[plain(r)..plain(r) + 4].try_into().expect("4"))
                        });
                        d[at..at + 32].copy_from_slice(&spread_high_bits(&words));
                    }
                    at += 32;
                    continue;
                }
                let unit = if f.pack == Pack::Dwords { 4 } else { f.len };
                for k in 0..f.len / unit {
                    for r in 0..8 {
                        let plain = r * row_bytes + b * block_bytes + f.off + k * unit;
                        let (from, to) = if inverse { (at, plain) } else { (plain, at) };
                        // Fixed sizes for the common units, so they are moves, not memcpy calls.
                        match unit {
                            2 => copy_n::<2>(s, from, d, to),
                            4 => copy_n::<4>(s, from, d, to),
                            32 => copy_n::<32>(s, from, d, to),
                            _ => d[to..to + unit].copy_from_slice(&s[from..from + unit]),
                        }
                        at += unit;
                    }
                }
            }
        }
    }
    dst[whole..].copy_from_slice(&src[whole..]);
}

#[inline(always)]
fn copy_n<const N: usize>(s: &[u8], from: usize, d: &mut [u8], to: usize) {
    let v: [u8; N] = s[from..from + N].try_into().expect("N bytes");
    d[to..to + N].copy_from_slice(&v);
}

/// Per-element weights for a block from its importance weights `qw`: `qw · sqrt(σ² + x²)`
/// (ggml's rule for the legacy types and Q6_K; Q4_K/Q5_K use `qw` as it is).
pub(crate) fn element_weights(x: &[f32], qw: &[f32], sigma2: f32, out: &mut [f32]) {
    for ((o, &v), &q) in out.iter_mut().zip(x).zip(qw) {
        *o = q * (sigma2 + v * v).sqrt();
    }
}

/// Mean square of `x` times 2 (ggml's `sigma2` for importance weighting).
pub(crate) fn sigma2(x: &[f32]) -> f32 {
    if x.is_empty() {
        return 0.0;
    }
    2.0 * x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32
}

/// Inverse scales tried by [`search_scale_signed`]: around `lo/max` and `hi/max`.
const SIGNED_STEPS: usize = 19;
const SIGNED_CANDS: usize = 2 * SIGNED_STEPS;
/// Steps tried by [`search_scale_min`].
const MIN_CANDS: usize = 21;

#[inline]
pub(crate) fn level(iscale_times_v: f32, lo: i32, hi: i32) -> i32 {
    (round_away(iscale_times_v) as i32).clamp(lo, hi)
}

/// Symmetric scale search: find `d` and integers `l` in `[lo, hi]` with `x ≈ d*l`, minimising
/// `Σ w (x - d l)²`. Candidate inverse scales around `lo/max` and `hi/max` are tried; for each,
/// the least-squares optimal `d` for the resulting `l` is taken. Returns `d`; `l` is filled.
///
/// Every candidate's sums are accumulated element by element in the same order as a plain
/// sequential loop (the SIMD path puts one candidate per lane), so the choice — and therefore
/// the output — does not depend on the path. No allocation.
pub(crate) fn search_scale_signed(x: &[f32], w: &[f32], lo: i32, hi: i32, l: &mut [i32]) -> f32 {
    let mut amax = 0.0f32;
    let mut max = 0.0f32;
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax < 1e-30 || !amax.is_finite() {
        l.iter_mut().for_each(|q| *q = 0);
        return 0.0;
    }
    let mut iscales = [0.0f32; SIGNED_CANDS];
    for (b, base) in [lo as f32, hi as f32].into_iter().enumerate() {
        for s in 0..SIGNED_STEPS {
            let step = s as i32 - 9;
            iscales[b * SIGNED_STEPS + s] = (base + 0.1 * step as f32 * base.signum()) / max;
        }
    }
    let mut sumlx = [0.0f32; SIGNED_CANDS];
    let mut suml2 = [0.0f32; SIGNED_CANDS];
    signed_sums(x, w, lo, hi, &iscales, &mut sumlx, &mut suml2);
    let mut best_score = -1.0f32; // sumlx^2 / suml2, larger is better
    let mut best_d = 0.0f32;
    let mut best = None;
    for c in 0..SIGNED_CANDS {
        if suml2[c] > 0.0 {
            let score = sumlx[c] * sumlx[c] / suml2[c];
            if score > best_score {
                best_score = score;
                best_d = sumlx[c] / suml2[c];
                best = Some(c);
            }
        }
    }
    let Some(c) = best else {
        // All weights zero: fall back to plain max scaling.
        let iscale = lo as f32 / max;
        for (q, &v) in l.iter_mut().zip(x) {
            *q = level(iscale * v, lo, hi);
        }
        return 1.0 / iscale;
    };
    for (q, &v) in l.iter_mut().zip(x) {
        *q = level(iscales[c] * v, lo, hi);
    }
    best_d
}

fn signed_sums(
    x: &[f32],
    w: &[f32],
    lo: i32,
    hi: i32,
    iscales: &[f32; SIGNED_CANDS],
    sumlx: &mut [f32; SIGNED_CANDS],
    suml2: &mut [f32; SIGNED_CANDS],
) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: features checked.
        unsafe { x86::signed_sums(x, w, lo, hi, iscales, sumlx, suml2) };
        return;
    }
    for c in 0..SIGNED_CANDS {
        let (mut slx, mut sl2) = (0.0f32, 0.0f32);
        for (&v, &wi) in x.iter().zip(w) {
            let q = level(iscales[c] * v, lo, hi);
            slx += wi * v * q as f32;
            sl2 += wi * (q * q) as f32;
        }
        sumlx[c] = slx;
        suml2[c] = sl2;
    }
}

/// Asymmetric scale+offset search: `x ≈ scale*l + min` with `l` in `[0, nmax]`, minimising the
/// weighted squared error. With `clamp_min`, `min` is kept `<= 0` (K-quants store `-min`).
/// Returns `(scale, min)`; `l` is filled. Sums per candidate in sequential element order on
/// every path (see [`search_scale_signed`]); no allocation.
pub(crate) fn search_scale_min(
    x: &[f32],
    w: &[f32],
    nmax: i32,
    clamp_min: bool,
    l: &mut [i32],
) -> (f32, f32) {
    let mut min = x.iter().copied().fold(f32::INFINITY, f32::min);
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if clamp_min && min > 0.0 {
        min = 0.0;
    }
    if max.is_nan() || min.is_nan() || max <= min || !(max - min).is_finite() {
        l.iter_mut().for_each(|q| *q = 0);
        return (0.0, if min.is_finite() { min } else { 0.0 });
    }
    let iscale0 = nmax as f32 / (max - min);
    for (q, &v) in l.iter_mut().zip(x) {
        *q = level(iscale0 * (v - min), 0, nmax);
    }
    let mut best = (1.0 / iscale0, min);
    let mut best_err = 0.0f32;
    for ((&v, &wi), &q) in x.iter().zip(w).zip(l.iter()) {
        let e = best.0 * q as f32 + best.1 - v;
        best_err += wi * e * e;
    }
    let mut iscales = [0.0f32; MIN_CANDS];
    for (step, is) in iscales.iter_mut().enumerate() {
        *is = (nmax as f32 - 1.0 + 0.1 * step as f32) / (max - min);
    }
    let mut sums = [[0.0f32; MIN_CANDS]; 5];
    min_sums(x, w, nmax, min, &iscales, &mut sums);
    let mut fits = [(0.0f32, 0.0f32); MIN_CANDS];
    let mut ok = [false; MIN_CANDS];
    for c in 0..MIN_CANDS {
        let s = [sums[0][c], sums[1][c], sums[2][c], sums[3][c], sums[4][c]];
        if let Some(f) = fit_scale_min(s, clamp_min) {
            fits[c] = f;
            ok[c] = true;
        }
    }
    let mut errs = [0.0f32; MIN_CANDS];
    min_errs(x, w, nmax, min, &iscales, &fits, &mut errs);
    let mut winner = None;
    for c in 0..MIN_CANDS {
        if ok[c] && errs[c] < best_err {
            best_err = errs[c];
            best = fits[c];
            winner = Some(c);
        }
    }
    if let Some(c) = winner {
        for (q, &v) in l.iter_mut().zip(x) {
            *q = level(iscales[c] * (v - min), 0, nmax);
        }
    }
    refine_scale_min(x, w, nmax, clamp_min, l, best, best_err)
}

/// Weighted least-squares `(scale, min)` for fixed levels from the sums
/// `[Σw, Σw·l, Σw·l², Σw·x, Σw·x·l]`; with `clamp_min` a positive min is replaced by 0 and the
/// scale refitted. `None` when the levels do not determine a usable (finite, non-negative)
/// scale.
fn fit_scale_min(s: [f32; 5], clamp_min: bool) -> Option<(f32, f32)> {
    let [sw, sl, sl2, sx, sxl] = s;
    let det = sw * sl2 - sl * sl;
    if det <= 0.0 {
        return None;
    }
    let mut scale = (sw * sxl - sx * sl) / det;
    let mut mn = (sl2 * sx - sl * sxl) / det;
    if clamp_min && mn > 0.0 {
        mn = 0.0;
        scale = if sl2 > 0.0 { sxl / sl2 } else { 0.0 };
    }
    if scale.is_nan() || scale < 0.0 || !scale.is_finite() || !mn.is_finite() {
        return None;
    }
    Some((scale, mn))
}

/// Rounds of [`refine_scale_min`] at most.
const REFINE_ROUNDS: usize = 1;
/// Longest block [`refine_scale_min`] handles (the asymmetric blocks have 32 values).
const REFINE_MAX: usize = 32;

/// Polish an asymmetric fit `x ≈ scale*l + min` whose weighted error is `err`: alternately
/// re-round the levels for the current `(scale, min)` and refit `(scale, min)` by weighted least
/// squares for those levels, keeping each step only while the weighted error drops. Each half
/// step can only lower the error of the exact arithmetic, so this never returns a worse fit
/// than it was given; it moves the offset too, which the candidate grid (fixed to the block's
/// own minimum) cannot. Scalar and shared by every path.
fn refine_scale_min(
    x: &[f32],
    w: &[f32],
    nmax: i32,
    clamp_min: bool,
    l: &mut [i32],
    mut best: (f32, f32),
    mut best_err: f32,
) -> (f32, f32) {
    if x.len() > REFINE_MAX {
        return best;
    }
    let mut cand = [0i32; REFINE_MAX];
    let cand = &mut cand[..x.len()];
    for _ in 0..REFINE_ROUNDS {
        let (scale, mn) = best;
        if scale <= 0.0 {
            break;
        }
        let is = 1.0 / scale;
        let mut s = [0.0f32; 5];
        for (c, (&v, &wi)) in cand.iter_mut().zip(x.iter().zip(w)) {
            let q = level(is * (v - mn), 0, nmax);
            *c = q;
            let qf = q as f32;
            s[0] += wi;
            s[1] += wi * qf;
            s[2] += wi * qf * qf;
            s[3] += wi * v;
            s[4] += wi * v * qf;
        }
        let Some(fit) = fit_scale_min(s, clamp_min) else {
            break;
        };
        let mut err = 0.0f32;
        for ((&v, &wi), &q) in x.iter().zip(w).zip(cand.iter()) {
            let e = fit.0 * q as f32 + fit.1 - v;
            err += wi * e * e;
        }
        if err.is_nan() || err >= best_err {
            break;
        }
        best = fit;
        best_err = err;
        l.copy_from_slice(cand);
    }
    best
}

fn min_sums(
    x: &[f32],
    w: &[f32],
    nmax: i32,
    min: f32,
    iscales: &[f32; MIN_CANDS],
    sums: &mut [[f32; MIN_CANDS]; 5],
) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: features checked.
        unsafe { x86::min_sums(x, w, nmax, min, iscales, sums) };
        return;
    }
    for c in 0..MIN_CANDS {
        let (mut sw, mut sl, mut sl2, mut sx, mut sxl) = (0.0f32, 0.0f32, 0.0f32, 0.0f32, 0.0f32);
        for (&v, &wi) in x.iter().zip(w) {
            let qf = level(iscales[c] * (v - min), 0, nmax) as f32;
            sw += wi;
            sl += wi * qf;
            sl2 += wi * qf * qf;
            sx += wi * v;
            sxl += wi * v * qf;
        }
        for (s, v) in sums.iter_mut().zip([sw, sl, sl2, sx, sxl]) {
            s[c] = v;
        }
    }
}

fn min_errs(
    x: &[f32],
    w: &[f32],
    nmax: i32,
    min: f32,
    iscales: &[f32; MIN_CANDS],
    fits: &[(f32, f32); MIN_CANDS],
    errs: &mut [f32; MIN_CANDS],
) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: features checked.
        unsafe { x86::min_errs(x, w, nmax, min, iscales, fits, errs) };
        return;
    }
    for c in 0..MIN_CANDS {
        let (scale, mn) = fits[c];
        let mut err = 0.0f32;
        for (&v, &wi) in x.iter().zip(w) {
            let q = level(iscales[c] * (v - min), 0, nmax);
            let e = scale * q as f32 + mn - v;
            err += wi * e * e;
        }
        errs[c] = err;
    }
}

/// The scale searches as first written (one allocation per call, candidate after candidate),
/// kept to check that the lane-parallel versions choose exactly the same levels.
#[cfg(test)]
mod reference {

    /// Symmetric scale search: find `d` and integers `l` in `[lo, hi]` with `x ≈ d*l`, minimising
    /// `Σ w (x - d l)²`. Candidate inverse scales around `lo/max` and `hi/max` are tried; for each,
    /// the least-squares optimal `d` for the resulting `l` is taken. Returns `d`; `l` is filled.
    pub(crate) fn search_scale_signed(
        x: &[f32],
        w: &[f32],
        lo: i32,
        hi: i32,
        l: &mut [i32],
    ) -> f32 {
        let mut amax = 0.0f32;
        let mut max = 0.0f32;
        for &v in x {
            if v.abs() > amax {
                amax = v.abs();
                max = v;
            }
        }
        if amax < 1e-30 || !amax.is_finite() {
            l.iter_mut().for_each(|q| *q = 0);
            return 0.0;
        }
        let mut best_score = -1.0f32; // sumlx^2 / suml2, larger is better
        let mut best_d = 0.0f32;
        let mut cand = vec![0i32; x.len()];
        let mut try_scale = |iscale: f32, l: &mut [i32], best_score: &mut f32, best_d: &mut f32| {
            let mut sumlx = 0.0f32;
            let mut suml2 = 0.0f32;
            for ((c, &v), &wi) in cand.iter_mut().zip(x).zip(w) {
                let q = (f32::round(iscale * v) as i32).clamp(lo, hi);
                *c = q;
                sumlx += wi * v * q as f32;
                suml2 += wi * (q * q) as f32;
            }
            if suml2 > 0.0 {
                let score = sumlx * sumlx / suml2;
                if score > *best_score {
                    *best_score = score;
                    *best_d = sumlx / suml2;
                    l.copy_from_slice(&cand);
                }
            }
        };
        for base in [lo as f32, hi as f32] {
            for step in -9..=9 {
                let iscale = (base + 0.1 * step as f32 * base.signum()) / max;
                try_scale(iscale, l, &mut best_score, &mut best_d);
            }
        }
        if best_score < 0.0 {
            // All weights zero: fall back to plain max scaling.
            let iscale = lo as f32 / max;
            for (q, &v) in l.iter_mut().zip(x) {
                *q = (f32::round(iscale * v) as i32).clamp(lo, hi);
            }
            return 1.0 / iscale;
        }
        best_d
    }

    /// Asymmetric scale+offset search: `x ≈ scale*l + min` with `l` in `[0, nmax]`, minimising the
    /// weighted squared error. With `clamp_min`, `min` is kept `<= 0` (K-quants store `-min`).
    /// Returns `(scale, min)`; `l` is filled.
    pub(crate) fn search_scale_min(
        x: &[f32],
        w: &[f32],
        nmax: i32,
        clamp_min: bool,
        l: &mut [i32],
    ) -> (f32, f32) {
        let mut min = x.iter().copied().fold(f32::INFINITY, f32::min);
        let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        if clamp_min && min > 0.0 {
            min = 0.0;
        }
        if max.is_nan() || min.is_nan() || max <= min || !(max - min).is_finite() {
            l.iter_mut().for_each(|q| *q = 0);
            return (0.0, if min.is_finite() { min } else { 0.0 });
        }
        let err_of = |scale: f32, mn: f32, l: &[i32]| -> f32 {
            x.iter()
                .zip(w)
                .zip(l)
                .map(|((&v, &wi), &q)| {
                    let e = scale * q as f32 + mn - v;
                    wi * e * e
                })
                .sum()
        };
        let iscale0 = nmax as f32 / (max - min);
        for (q, &v) in l.iter_mut().zip(x) {
            *q = (f32::round(iscale0 * (v - min)) as i32).clamp(0, nmax);
        }
        let mut best = (1.0 / iscale0, min);
        let mut best_err = err_of(best.0, best.1, l);
        let mut cand = vec![0i32; x.len()];
        for step in 0..=20 {
            let iscale = (nmax as f32 - 1.0 + 0.1 * step as f32) / (max - min);
            let (mut sw, mut sl, mut sl2, mut sx, mut sxl) =
                (0.0f32, 0.0f32, 0.0f32, 0.0f32, 0.0f32);
            for ((c, &v), &wi) in cand.iter_mut().zip(x).zip(w) {
                let q = (f32::round(iscale * (v - min)) as i32).clamp(0, nmax);
                *c = q;
                let qf = q as f32;
                sw += wi;
                sl += wi * qf;
                sl2 += wi * qf * qf;
                sx += wi * v;
                sxl += wi * v * qf;
            }
            let det = sw * sl2 - sl * sl;
            if det <= 0.0 {
                continue;
            }
            let mut scale = (sw * sxl - sx * sl) / det;
            let mut mn = (sl2 * sx - sl * sxl) / det;
            if clamp_min && mn > 0.0 {
                mn = 0.0;
                scale = if sl2 > 0.0 { sxl / sl2 } else { 0.0 };
            }
            if scale.is_nan() || scale < 0.0 || !scale.is_finite() || !mn.is_finite() {
                continue;
            }
            let err = err_of(scale, mn, &cand);
            if err < best_err {
                best_err = err;
                best = (scale, mn);
                l.copy_from_slice(&cand);
            }
        }
        super::refine_scale_min(x, w, nmax, clamp_min, l, best, best_err)
    }
}

#[cfg(test)]
mod high_bits_tests {
    use super::*;

    #[test]
    fn spread_high_bits_puts_each_value_bit_where_the_kernel_reads_it() {
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..200 {
            let words: [u32; 8] = std::array::from_fn(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                (seed >> 16) as u32
            });
            let bytes = spread_high_bits(&words);
            for (p, byte) in bytes.iter().enumerate() {
                let (r, j) = (p / 4, p % 4);
                for s in 0..8 {
                    let v = if s < 4 {
                        4 * s + j
                    } else {
                        16 + 4 * (s - 4) + j
                    };
                    assert_eq!(
                        byte >> s & 1,
                        (words[r] >> v & 1) as u8,
                        "row {r} byte {j} bit {s}"
                    );
                }
            }
            assert_eq!(gather_high_bits(&bytes), words);
        }
    }
}

#[cfg(test)]
mod search_tests {
    use super::*;

    fn data(seed: u64, n: usize) -> (Vec<f32>, Vec<f32>) {
        let mut s = seed | 1;
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        };
        let scale = 10f32.powf(next() * 8.0);
        let x: Vec<f32> = (0..n)
            .map(|_| (next() + next() + next()) * scale + next() * scale * 0.1)
            .collect();
        let w: Vec<f32> = (0..n)
            .map(|_| next().abs() + if seed % 3 == 0 { 0.0 } else { 0.01 })
            .collect();
        (x, w)
    }

    #[test]
    fn fast_searches_match_reference_exactly() {
        for seed in 0..3000u64 {
            for n in [16usize, 32] {
                let (mut x, w) = data(seed, n);
                if seed % 97 == 5 {
                    x[3] = f32::NAN;
                }
                if seed % 89 == 7 {
                    x.iter_mut().for_each(|v| *v = 0.25);
                }
                for (lo, hi) in [(-32, 31), (-8, 7), (-16, 15), (-127, 127)] {
                    let (mut a, mut b) = (vec![0i32; n], vec![0i32; n]);
                    let da = search_scale_signed(&x, &w, lo, hi, &mut a);
                    let db = reference::search_scale_signed(&x, &w, lo, hi, &mut b);
                    assert_eq!((da.to_bits(), &a), (db.to_bits(), &b), "signed seed {seed}");
                }
                for nmax in [15, 31] {
                    for clamp in [true, false] {
                        let (mut a, mut b) = (vec![0i32; n], vec![0i32; n]);
                        let ra = search_scale_min(&x, &w, nmax, clamp, &mut a);
                        let rb = reference::search_scale_min(&x, &w, nmax, clamp, &mut b);
                        assert_eq!(
                            (ra.0.to_bits(), ra.1.to_bits(), &a),
                            (rb.0.to_bits(), rb.1.to_bits(), &b),
                            "min seed {seed}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn round_away_matches_std() {
        let specials = [
            0.0f32,
            -0.0,
            0.5,
            -0.5,
            1.5,
            -1.5,
            2.5,
            0.49999997,
            -0.49999997,
            8388607.5,
            8388608.0,
            -8388609.0,
            1e30,
            -1e30,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::MIN_POSITIVE,
        ];
        for v in specials {
            assert_eq!(round_away(v).to_bits(), v.round().to_bits(), "{v}");
        }
        assert!(round_away(f32::NAN).is_nan());
        let mut s = 12345u32;
        for _ in 0..1_000_000 {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            let v = f32::from_bits(s);
            if v.is_nan() {
                continue;
            }
            assert_eq!(round_away(v).to_bits(), v.round().to_bits(), "{v}");
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod x86 {
    use std::arch::x86_64::*;

    /// # Safety
    ///
    /// The CPU must support AVX2, FMA and F16C (callers check `has_avx2()` first); nothing else
    /// (registers only).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn hsum_ps(v: __m256) -> f32 {
        let lo = _mm256_castps256_ps128(v);
        let hi = _mm256_extractf128_ps(v, 1);
        let s = _mm_add_ps(lo, hi);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }

    /// # Safety
    ///
    /// The CPU must support AVX2, FMA and F16C (callers check `has_avx2()` first); nothing else
    /// (registers only).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn hsum_epi32(v: __m256i) -> i32 {
        let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01));
        _mm_cvtsi128_si32(s)
    }

    /// `acc` plus the products of unsigned bytes `u` and signed bytes `s`, summed within each
    /// 4-byte group, for kernels compiled twice (`VNNI` false under AVX2, true under the
    /// AVX-512 features of `has_avx512()`): with VNNI one `vpdpbusd` into i32 lanes; without,
    /// `maddubs` pairs added into i16 lanes, which the caller must keep from overflowing (the
    /// pair sums saturate at ±2^15) and [`u8i8_total`] widens. Either way [`u8i8_total`] of the
    /// accumulated value is the same exact i32 per 4-byte group.
    ///
    /// # Safety
    ///
    /// Inlined into its caller, whose target features must include AVX2 (`VNNI` false) or
    /// AVX-512 F/BW/VL and VNNI (`VNNI` true); registers only.
    #[inline(always)]
    pub unsafe fn u8i8_acc<const VNNI: bool>(acc: __m256i, u: __m256i, s: __m256i) -> __m256i {
        if VNNI {
            _mm256_dpbusd_epi32(acc, u, s)
        } else {
            _mm256_add_epi16(acc, _mm256_maddubs_epi16(u, s))
        }
    }

    /// The i32 sums per 4-byte group of a [`u8i8_acc`] accumulator.
    ///
    /// # Safety
    ///
    /// As [`u8i8_acc`].
    #[inline(always)]
    pub unsafe fn u8i8_total<const VNNI: bool>(acc: __m256i) -> __m256i {
        if VNNI {
            acc
        } else {
            _mm256_madd_epi16(acc, _mm256_set1_epi16(1))
        }
    }

    /// Σ x·y of 32 signed byte pairs as 8 f32 lanes (pair sums of the i16 products), via
    /// `maddubs` on |x| and y·sign(x). Exact provided no y byte is -128 (activations from
    /// `quantize_activation` are within ±127); x may be -128 (|x| = 128 read as unsigned and
    /// pair sums stay ≤ 2·128·127 < 2^15).
    ///
    /// # Safety
    ///
    /// The CPU must support AVX2, FMA and F16C (callers check `has_avx2()` first); nothing else
    /// (registers only).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_i8_ps(x: __m256i, y: __m256i) -> __m256 {
        let p = _mm256_maddubs_epi16(_mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x));
        _mm256_cvtepi32_ps(_mm256_madd_epi16(p, _mm256_set1_epi16(1)))
    }

    /// Hint the line `off` bytes past `p` into cache (a hint only: never faults).
    ///
    /// # Safety
    ///
    /// The CPU must support AVX2, FMA and F16C (callers check `has_avx2()` first); nothing else:
    /// the address is formed with `wrapping_add` and a prefetch never faults.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn prefetch(p: *const u8, off: usize) {
        _mm_prefetch(p.wrapping_add(off) as *const i8, _MM_HINT_T0);
    }

    /// Hint into L2 the part of the next group of eight rows that step `step` of this group
    /// reads: a group is `8·rb` contiguous bytes in either layout (row-major or packed), so
    /// the group after it starts `8·rb` past `group`, and `step_bytes` per step (the eight
    /// rows' bytes one step consumes) walk it front to back as one sequential stream, a whole
    /// group ahead. The eight-row kernels read a row-major group as eight streams at once,
    /// which this machine's prefetchers follow poorly: Q4_1 rows read 0.66-0.68 of the triad
    /// with a per-row prefetch into L1 and 0.86-0.88 with this (kernel bench, alternating
    /// runs, 2026-11-23). Into L1 (`_MM_HINT_T0`) the same stream measured no better than the
    /// per-row prefetch; the packed float kernels measured worse with it (they prefetch their
    /// own stream further ahead). On Intel the row-major groups hint otherwise: see
    /// [`crate::common::intel_cpu`].
    ///
    /// # Safety
    ///
    /// The CPU must support AVX2, FMA and F16C (callers check `has_avx2()` first); nothing else:
    /// addresses are formed with `wrapping_add` and a prefetch never faults (past the last
    /// group it only wastes a hint).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn prefetch_next_group(group: *const u8, rb: usize, step_bytes: usize, step: usize) {
        let at = group.wrapping_add(8 * rb + step * step_bytes);
        // Hints at most 64 bytes apart, across steps too, so no line of the group is missed.
        let mut k = 0;
        while k < step_bytes {
            _mm_prefetch(at.wrapping_add(k) as *const i8, _MM_HINT_T1);
            k += 64;
        }
    }

    /// Where (bytes from a row's start) a row-major eight-row kernel at byte `pos` of its rows
    /// hints each row: `ahead` bytes on while that stays inside the row's `len` bytes, else as
    /// far into the row eight on (rows `rb` bytes apart) — the next group of eight rows, which
    /// the same thread reads next, where the hint used to land in the next row of this group,
    /// read already. Kernel bench on the Intel Xeon (2026-11-24, all threads ÷ triad, `med`,
    /// alternating rounds against the hints that stayed in the group): rows of 2048 values,
    /// Q8_0 0.75-0.78 → 0.89-0.93, Q5_K 0.70-0.74 → 0.87-0.89; 6144, Q4_K 0.87-0.90 →
    /// 0.92-1.06, Q5_K 0.85-0.92 → 0.94-1.10; rows of 32768 alike. Past the matrix a hint only
    /// wastes itself (addresses formed with `wrapping_add`; a prefetch never faults).
    #[inline(always)]
    pub fn hint_at(pos: usize, ahead: usize, len: usize, rb: usize) -> usize {
        let at = pos + ahead;
        if at >= len {
            8 * rb + (at - len)
        } else {
            at
        }
    }

    /// Rows of at least this many bytes are long enough for per-row hints (each row its own
    /// stream into L1, [`hint_at`]) to read faster than the next-group stream into L2
    /// ([`prefetch_next_group`]) on Intel; shorter rows keep the group stream.
    pub const ROW_HINTS_FROM: usize = 3072;

    /// Whether row-major groups of rows `rb` bytes long hint each row on its own: on Intel
    /// ([`crate::common::intel_cpu`]) from [`ROW_HINTS_FROM`] bytes a row. The 32-value nibble
    /// types' eight-row kernels (Q4_0/Q4_1/Q5_0) use it for the AVX2 tier's decode, not for
    /// several tokens: the four-token kernels read 0.40-0.54 of the triad so against 0.50-0.63
    /// with the group stream (`q4_0×4` / `q4_1×4` / `q5_0×4`, rows of 6144 and 8192, three
    /// alternating rounds). Kernel bench with `QUANT_NO_AVX512=1` on the
    /// Xeon (2026-11-24, `med`, eight to twelve alternating rounds a length, group stream →
    /// per row): rows of 8192 Q4_0 0.81-0.87 → 0.91-1.05, Q4_1 0.76-0.90 → 0.77-1.02, Q5_0
    /// 0.68-0.84 → 0.72-0.89; 6144 Q4_0 0.77-0.85 → 0.82-0.97, Q5_0 0.70-0.84 → 0.60-0.84
    /// (medians 0.76 → 0.785); 32768 (four rounds) Q4_0 0.76-0.82 → 0.86-1.02, Q5_0
    /// 0.69-0.76 → 0.85-0.91. Rows of 2048 (1152-1408 bytes) read 0.75-0.83 with the group
    /// stream and 0.69-0.74 per row, hence the boundary (`nib4`'s kernels measured alike).
    #[inline]
    pub fn row_hints(rb: usize) -> bool {
        rb >= ROW_HINTS_FROM && crate::common::intel_cpu()
    }

    /// How far ahead (bytes) of each row's block [`prefetch_group`] hints, per row.
    pub const ROW_AHEAD: usize = 512;

    /// The weight prefetch of the 32-value eight-row kernels at block `b` of a group (`w`, rows
    /// `rows`, `rb` bytes apart, blocks of `block_bytes`): each row's line [`ROW_AHEAD`] bytes
    /// ahead ([`hint_at`]) into L1 when `per_row` (row-major groups where
    /// [`crate::common::intel_cpu`]); else the next group ([`prefetch_next_group`]), as
    /// packed groups always do (one stream).
    ///
    /// # Safety
    ///
    /// As [`prefetch_next_group`] (addresses formed with `wrapping_add`; a prefetch never
    /// faults).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn prefetch_group(
        w: *const u8,
        rb: usize,
        rows: &[*const u8; 8],
        block_bytes: usize,
        b: usize,
        per_row: bool,
    ) {
        if per_row {
            let at = hint_at(b * block_bytes, ROW_AHEAD, rb, rb);
            for r in rows {
                let p = r.wrapping_add(at);
                _mm_prefetch(p as *const i8, _MM_HINT_T0);
            }
        } else {
            prefetch_next_group(w, rb, 8 * block_bytes, b);
        }
    }

    /// A 64-byte-aligned local: a kernel holding one (`let _frame = align_frame();`) realigns its
    /// stack frame, so the compiler's 32-byte vector spill slots sit at the same place in a
    /// cache line whatever the callers' stack depth. Without it the Q6_K single-row kernel ran
    /// 2× slower (single-threaded 1.66 B Q4_K decode 56 → 44 tok/s) after an unrelated change
    /// up the call chain moved the stack by 16 bytes: its spills then straddled cache lines.
    #[repr(C, align(64))]
    pub struct FrameAlign(pub [u8; 64]);

    /// See [`FrameAlign`].
    #[inline(always)]
    pub fn align_frame() -> FrameAlign {
        std::hint::black_box(FrameAlign([0; 64]))
    }

    /// How far ahead (bytes) a packed-column kernel prefetches its one weight stream where the
    /// per-column work leaves the hardware prefetcher too little lead at two threads: Q8_0's
    /// (kernel bench, Q8_0 × f32: 0.84-0.86 of the triad without, 0.88-0.93 with). The nibble
    /// types' packed kernels measured no better with it (Q4_0/Q4_1/Q5_0, 3 alternating runs).
    pub const PACKED_AHEAD: usize = 3072;

    /// Prefetch `PACKED_AHEAD` bytes past a packed column of `len` bytes. Columns lie back to
    /// back, so `len / 64 + 1` lines from each column's start leave no line out.
    ///
    /// # Safety
    ///
    /// As [`prefetch`].
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn prefetch_column(col: *const u8, len: usize) {
        for k in 0..len / 64 + 1 {
            prefetch(col, PACKED_AHEAD + 64 * k);
        }
    }

    /// The f16 values at byte `off` of eight rows, as eight f32 lanes (row r in lane r): packed
    /// into two u64 with integer shifts (idle ALU ports), then one `vcvtph2ps`. The eight-row
    /// kernels use it for the rows' block scales.
    ///
    /// # Safety
    ///
    /// The CPU must support AVX2, FMA and F16C (callers check `has_avx2()` first); each
    /// `rows[r] + off` must be readable for 2 bytes.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn f16_8rows(rows: &[*const u8; 8], off: usize) -> __m256 {
        let h = |r: usize| std::ptr::read_unaligned(rows[r].add(off) as *const u16) as u64;
        let lo = h(0) | h(1) << 16 | h(2) << 32 | h(3) << 48;
        let hi = h(4) | h(5) << 16 | h(6) << 32 | h(7) << 48;
        _mm256_cvtph_ps(_mm_set_epi64x(hi as i64, lo as i64))
    }

    /// The 16 bytes at byte `off` of eight rows, transposed in 4-byte groups: vector k holds
    /// bytes 4k..4k+3 of rows 0..3 in its low lane and of rows 4..7 in its high lane (row r's
    /// dword in lane r), so a byte operation on vector k treats every row at once.
    ///
    /// # Safety
    ///
    /// The CPU must support AVX2, FMA and F16C (callers check `has_avx2()` first); each
    /// `rows[r] + off` must be readable for 16 bytes.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn transpose16_8rows(rows: &[*const u8; 8], off: usize) -> [__m256i; 4] {
        let ld = |r: usize| _mm_loadu_si128(rows[r].add(off) as *const __m128i);
        let pair = |r: usize| _mm256_inserti128_si256(_mm256_castsi128_si256(ld(r)), ld(r + 4), 1);
        let (r04, r15, r26, r37) = (pair(0), pair(1), pair(2), pair(3));
        let t0 = _mm256_unpacklo_epi32(r04, r15);
        let t1 = _mm256_unpackhi_epi32(r04, r15);
        let t2 = _mm256_unpacklo_epi32(r26, r37);
        let t3 = _mm256_unpackhi_epi32(r26, r37);
        [
            _mm256_unpacklo_epi64(t0, t2),
            _mm256_unpackhi_epi64(t0, t2),
            _mm256_unpacklo_epi64(t1, t3),
            _mm256_unpackhi_epi64(t1, t3),
        ]
    }

    /// Lane `r` of the result: the total of `v[r]`'s eight lanes (exact integer sums).
    ///
    /// # Safety
    ///
    /// The CPU must support AVX2 (callers check `has_avx2()` first); registers only.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn totals8(v: &[__m256i; 8]) -> __m256i {
        let a = _mm256_hadd_epi32(_mm256_hadd_epi32(v[0], v[1]), _mm256_hadd_epi32(v[2], v[3]));
        let b = _mm256_hadd_epi32(_mm256_hadd_epi32(v[4], v[5]), _mm256_hadd_epi32(v[6], v[7]));
        // a: lanes 0-3 partial (low 128 / high 128 halves); b: lanes 4-7.
        _mm256_add_epi32(
            _mm256_permute2x128_si256(a, b, 0x20),
            _mm256_permute2x128_si256(a, b, 0x31),
        )
    }

    /// The Q4_K/Q5_K float step in eight lanes: lane k is `da·d·isum − da·dmin·summ` for the
    /// k-th pair of exact integer sums (`totals8` of `iv` and `mv`) and f16 scales `d[k]`,
    /// `dmin[k]` — the scalar reference's operations in its order, so each lane is
    /// bit-identical to it.
    ///
    /// # Safety
    ///
    /// The CPU must support AVX2, FMA and F16C (callers check `has_avx2()` first); registers
    /// and the given arrays only.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn k_step8(
        iv: &[__m256i; 8],
        mv: &[__m256i; 8],
        d: &[u16; 8],
        dmin: &[u16; 8],
        da: __m256,
    ) -> __m256 {
        let isum = _mm256_cvtepi32_ps(totals8(iv));
        let summ = _mm256_cvtepi32_ps(totals8(mv));
        let d = _mm256_cvtph_ps(_mm_loadu_si128(d.as_ptr() as *const __m128i));
        let dmin = _mm256_cvtph_ps(_mm_loadu_si128(dmin.as_ptr() as *const __m128i));
        _mm256_sub_ps(
            _mm256_mul_ps(_mm256_mul_ps(da, d), isum),
            _mm256_mul_ps(_mm256_mul_ps(da, dmin), summ),
        )
    }

    /// Eight consecutive super-blocks of one row ([`k_step8`] with their own activation scales
    /// `da`) added to `sum` one by one in super-block order, as the scalar reference adds them:
    /// the single-row Q4_K/Q5_K kernels reduce eight super-blocks' integer sums together (one
    /// transpose-add instead of two horizontal sums each) and stay bit-identical.
    ///
    /// # Safety
    ///
    /// As [`k_step8`].
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn k_add8(
        sum: &mut f32,
        iv: &[__m256i; 8],
        mv: &[__m256i; 8],
        d: &[u16; 8],
        dmin: &[u16; 8],
        da: &[f32; 8],
    ) {
        add_in_order(sum, k_step8(iv, mv, d, dmin, _mm256_loadu_ps(da.as_ptr())));
    }

    /// One chunk `c` (64 values: runs 2c and 2c + 1) of a Q4_K/Q5_K super-block against `T`
    /// Q8_K blocks (`aps`): `acc[t] += s0·Σ lo·y + s1·Σ hi·y` in exact i32 lanes, the run
    /// values (`lo`, `hi`, unsigned) and scales (`s0`, `s1`, i16 broadcast) staying in registers
    /// while the tokens pass — the AVX2 batched kernels' inner step (AVX-512 CPUs take a pair
    /// of runs a 512-bit vector: [`k_multi8_512!`]).
    ///
    /// # Safety
    ///
    /// Inlined into a caller with AVX2; each of `aps` must point to one readable Q8_K block and
    /// `c` must be below 4.
    #[inline(always)]
    pub unsafe fn k_chunk_tokens<const T: usize>(
        acc: &mut [__m256i; T],
        aps: &[*const u8; T],
        c: usize,
        lo: __m256i,
        hi: __m256i,
        s0: __m256i,
        s1: __m256i,
    ) {
        for (acc_t, ap) in acc.iter_mut().zip(aps) {
            let yp = ap.add(crate::q8_k::QS_OFF + 64 * c);
            let y0 = _mm256_loadu_si256(yp as *const __m256i);
            let y1 = _mm256_loadu_si256(yp.add(32) as *const __m256i);
            let p0 = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, y0), s0);
            let p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, y1), s1);
            *acc_t = _mm256_add_epi32(*acc_t, _mm256_add_epi32(p0, p1));
        }
    }

    /// One Q4_K/Q5_K row against eight Q8_K activations (batched prefill), lane t for token
    /// t: per super-block the scales and mins are unpacked once, and each chunk's two 32-value
    /// runs (`runs(block, c)`, unsigned values) stay in registers with their scales while the
    /// eight tokens pass; then the eight tokens' exact integer sums are reduced together and
    /// [`k_step8`]'s float step `d_a·d·isum − d_a·dmin·summ` runs in lane t, accumulated in
    /// super-block order — the scalar reference's operations, so lane t is bit-identical to the
    /// single-row kernel for token t.
    ///
    /// # Safety
    ///
    /// The CPU must support AVX2, FMA and F16C (callers check `has_avx2()` first); `w` must be
    /// readable for `nb` blocks of `block_bytes`, each of `a` for `nb` Q8_K blocks, and `runs`
    /// must be safe to call on any of the blocks with `c` below 4. (AVX-512 CPUs take
    /// [`k_multi8_512!`].)
    #[inline(always)]
    pub unsafe fn k_multi8(
        w: *const u8,
        nb: usize,
        block_bytes: usize,
        a: &[*const u8; 8],
        runs: impl Fn(*const u8, usize) -> (__m256i, __m256i),
    ) -> [f32; 8] {
        const AB: usize = crate::q8_k::BLOCK_BYTES;
        let mut sum = _mm256_setzero_ps();
        for i in 0..nb {
            let bp = w.add(i * block_bytes);
            let aps: [*const u8; 8] = std::array::from_fn(|t| a[t].add(i * AB));
            let sm = k_scales_mins(bp.add(4));
            let scl = _mm256_permute2x128_si256(sm, sm, 0x00);
            let mut acc = [_mm256_setzero_si256(); 8];
            for c in 0..4 {
                let (lo, hi) = runs(bp, c);
                // Scale word j broadcast: bytes 2j, 2j + 1 of each 128-bit half.
                let bc = |j: usize| {
                    _mm256_shuffle_epi8(
                        scl,
                        _mm256_set1_epi16(((2 * j) | ((2 * j + 1) << 8)) as i16),
                    )
                };
                let (s0, s1) = (bc(2 * c), bc(2 * c + 1));
                k_chunk_tokens::<8>(&mut acc, &aps, c, lo, hi, s0, s1);
            }
            let mv: [__m256i; 8] =
                std::array::from_fn(|t| _mm256_madd_epi16(sm, k_bsum_pairs(aps[t])));
            let f = |t: usize| (aps[t] as *const f32).read_unaligned();
            let da = _mm256_setr_ps(f(0), f(1), f(2), f(3), f(4), f(5), f(6), f(7));
            let dh = [(bp as *const u16).read_unaligned(); 8];
            let dmh = [(bp.add(2) as *const u16).read_unaligned(); 8];
            sum = _mm256_add_ps(sum, k_step8(&acc, &mv, &dh, &dmh, da));
        }
        let mut out = [0f32; 8];
        _mm256_storeu_ps(out.as_mut_ptr(), sum);
        out
    }

    /// The scales of pairs `c` and `c + 1` of a Q4_K/Q5_K super-block laid out for the words
    /// `_mm512_packs_epi32` makes of their two `vpdpbusd` results (each pair's low sub-block in
    /// the low 256 bits, its high one in the high): 128-bit lane `k` holds words from sub-block
    /// `2c + k / 2` (words 0..3) and `2c + 2 + k / 2` (words 4..7), so their scales, from the
    /// scale words 0..7 of `sm` ([`k_scales_mins`]).
    ///
    /// # Safety
    ///
    /// Inlined into a caller with the AVX-512 features `has_avx512()` checks; registers only.
    #[inline(always)]
    pub unsafe fn k_scale_words_512(sm: __m256i, c: usize) -> __m512i {
        let idx: [u16; 32] = std::array::from_fn(|l| (2 * c + (l / 16) + 2 * ((l % 8) / 4)) as u16);
        let idx = _mm512_loadu_si512(idx.as_ptr() as *const _);
        _mm512_permutexvar_epi16(idx, _mm512_castsi256_si512(sm))
    }

    /// The exact integer sums of a 256-value super-block held as four 512-bit vectors of
    /// unsigned values (`v[c]`: values `64c..64c + 64`) against one Q8_K block at `ap`, in
    /// eight i32 lanes: one `vpdpbusd` a vector against its 64 activation bytes (each i32 lane
    /// four products, at most 4·63·128 in magnitude, so an i16), two vectors' results packed
    /// into words and scaled by one `madd` against `s[0]` (vectors 0 and 1) or `s[1]` (2 and
    /// 3), the scale words laid out as `_mm512_packs_epi32` lays the words out
    /// ([`k_scale_words_512`] for Q4_K/Q5_K). The step every AVX-512 K-quant kernel takes per
    /// block and token.
    ///
    /// # Safety
    ///
    /// Inlined into a caller with the AVX-512 features `has_avx512()` checks; `ap` must point
    /// to one readable Q8_K block.
    #[inline(always)]
    pub unsafe fn k_pairs_dot_512(v: &[__m512i; 4], s: &[__m512i; 2], ap: *const u8) -> __m256i {
        let yp = ap.add(crate::q8_k::QS_OFF);
        let zero = _mm512_setzero_si512();
        let mut p = [zero; 4];
        for (c, pc) in p.iter_mut().enumerate() {
            let y = _mm512_loadu_si512(yp.add(64 * c) as *const _);
            *pc = _mm512_dpbusd_epi32(zero, v[c], y);
        }
        let acc = _mm512_add_epi32(
            _mm512_madd_epi16(_mm512_packs_epi32(p[0], p[1]), s[0]),
            _mm512_madd_epi16(_mm512_packs_epi32(p[2], p[3]), s[1]),
        );
        _mm256_add_epi32(
            _mm512_castsi512_si256(acc),
            _mm512_extracti64x4_epi64::<1>(acc),
        )
    }

    /// A Q4_K/Q5_K super-block's exact integer sums on AVX-512 (the AVX2 kernels' `int_sums`),
    /// its four pairs of sub-blocks given as vectors `v` (the type's `pair_512`): the weights
    /// `ahead` bytes past the block at `bp` hinted into L1, then [`k_pairs_dot_512`] with the
    /// scales ([`k_scale_words_512`]) and `Σ m·bsum` from the mins and `bs2`
    /// ([`k_bsum_pairs`]) in one `madd`.
    ///
    /// # Safety
    ///
    /// Inlined into a caller with the AVX-512 features `has_avx512()` checks; `bp` must point
    /// to one readable Q4_K/Q5_K block and `ap` to one readable Q8_K block.
    #[inline(always)]
    pub unsafe fn k_int_sums_512(
        bp: *const u8,
        ahead: usize,
        ap: *const u8,
        bs2: __m256i,
        v: [__m512i; 4],
    ) -> (__m256i, __m256i) {
        prefetch(bp, ahead);
        prefetch(bp, ahead + 64);
        prefetch(bp, ahead + 128);
        let sm = k_scales_mins(bp.add(4));
        let s = [k_scale_words_512(sm, 0), k_scale_words_512(sm, 2)];
        (k_pairs_dot_512(&v, &s, ap), _mm256_madd_epi16(sm, bs2))
    }

    /// [`k_multi8`] on AVX-512, `k_multi8_512!(w, nb, block_bytes, a, pair)`: per super-block
    /// each pair of sub-blocks' 64 unsigned values as one 512-bit vector (`pair(block, c)`, an
    /// `#[inline(always)]` function) and two scale vectors ([`k_scale_words_512`]) stay in
    /// registers while the eight tokens pass ([`k_pairs_dot_512`] a token). The same exact sums and [`k_step8`]'s float steps, so lane
    /// t is bit-identical to [`k_multi8`]'s. A macro, not a function taking a closure: a
    /// closure is a function of its own without the caller's target features, and LLVM left
    /// this one out of line (every intrinsic in it a call: twelve times slower).
    ///
    /// Safety (of the expansion, in `unsafe` code): inside a function with the AVX-512
    /// features `has_avx512()` checks; `w` must be readable for `nb` blocks of `block_bytes`,
    /// each of `a` (`&[*const u8; 8]`) for `nb` Q8_K blocks, and `pair` must be safe to call
    /// on any of the blocks with `c` below 4.
    macro_rules! k_multi8_512 {
        ($w:expr, $nb:expr, $block_bytes:expr, $a:expr, $pair:ident) => {{
            const AB: usize = crate::q8_k::BLOCK_BYTES;
            let (w, nb, block_bytes, a): (*const u8, usize, usize, &[*const u8; 8]) =
                ($w, $nb, $block_bytes, $a);
            let mut sum = _mm256_setzero_ps();
            for i in 0..nb {
                let bp = w.add(i * block_bytes);
                let mut aps = [std::ptr::null::<u8>(); 8];
                for t in 0..8 {
                    aps[t] = a[t].add(i * AB);
                }
                let sm = k_scales_mins(bp.add(4));
                let v = [$pair(bp, 0), $pair(bp, 1), $pair(bp, 2), $pair(bp, 3)];
                let s = [k_scale_words_512(sm, 0), k_scale_words_512(sm, 2)];
                let mut acc = [_mm256_setzero_si256(); 8];
                let mut mv = [_mm256_setzero_si256(); 8];
                let mut da = [0f32; 8];
                for t in 0..8 {
                    acc[t] = k_pairs_dot_512(&v, &s, aps[t]);
                    mv[t] = _mm256_madd_epi16(sm, k_bsum_pairs(aps[t]));
                    da[t] = (aps[t] as *const f32).read_unaligned();
                }
                let dh = [(bp as *const u16).read_unaligned(); 8];
                let dmh = [(bp.add(2) as *const u16).read_unaligned(); 8];
                let da = _mm256_loadu_ps(da.as_ptr());
                sum = _mm256_add_ps(sum, k_step8(&acc, &mv, &dh, &dmh, da));
            }
            let mut out = [0f32; 8];
            _mm256_storeu_ps(out.as_mut_ptr(), sum);
            out
        }};
    }
    pub(crate) use k_multi8_512;

    /// One Q4_K/Q5_K row's dot product over `nb` super-blocks of `block_bytes` at `w` against
    /// Q8_K blocks at `a`, from each super-block's exact integer sums (`sums(block,
    /// activation)`: eight lanes each, totalling `Σ sc·q·y` and `Σ m·bsum`): eight super-blocks
    /// at a time through [`k_add8`], the rest one by one with the scalar reference's float
    /// steps, so the result is bit-identical to it.
    ///
    /// # Safety
    ///
    /// The CPU must support AVX2, FMA and F16C (callers check `has_avx2()` first); `w` must be
    /// readable for `nb` blocks, `a` for `nb` Q8_K blocks, and `sums` must be safe to call on
    /// any block and activation block among them.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn k_vec_dot(
        w: *const u8,
        a: *const u8,
        nb: usize,
        block_bytes: usize,
        sums: impl Fn(*const u8, *const u8) -> (__m256i, __m256i),
    ) -> f32 {
        use std::mem::MaybeUninit;
        const AB: usize = crate::q8_k::BLOCK_BYTES;
        let mut sum = 0.0f32;
        let mut i = 0;
        while i + 8 <= nb {
            let mut iv = [MaybeUninit::<__m256i>::uninit(); 8];
            let mut mv = [MaybeUninit::<__m256i>::uninit(); 8];
            let (mut dh, mut dmh, mut da) = ([0u16; 8], [0u16; 8], [0f32; 8]);
            for k in 0..8 {
                let (bp, bap) = (w.add((i + k) * block_bytes), a.add((i + k) * AB));
                let (s, m) = sums(bp, bap);
                iv[k].write(s);
                mv[k].write(m);
                dh[k] = (bp as *const u16).read_unaligned();
                dmh[k] = (bp.add(2) as *const u16).read_unaligned();
                da[k] = (bap as *const f32).read_unaligned();
            }
            // SAFETY: the loop above wrote all eight entries of iv and mv;
            // MaybeUninit<__m256i> has __m256i's layout.
            let (iv, mv) = (
                &*(iv.as_ptr() as *const [__m256i; 8]),
                &*(mv.as_ptr() as *const [__m256i; 8]),
            );
            k_add8(&mut sum, iv, mv, &dh, &dmh, &da);
            i += 8;
        }
        while i < nb {
            let (bp, bap) = (w.add(i * block_bytes), a.add(i * AB));
            let (s, m) = sums(bp, bap);
            let (isum, summ) = (hsum_epi32(s), hsum_epi32(m));
            let da = (bap as *const f32).read_unaligned();
            sum += da * f16_load(bp) * isum as f32 - da * f16_load(bp.add(2)) * summ as f32;
            i += 1;
        }
        sum
    }

    /// Eight rows of a Q4_K/Q5_K type against one Q8_K activation, lane r for row r: per
    /// super-block the eight rows' exact integer sums (`sums(block, hint, activation)`, as the
    /// single-row kernels compute them; `hint` is how far ahead of the block to prefetch) and
    /// the float step `d_a·d·isum − d_a·dmin·summ` in eight lanes ([`k_step8`]), accumulated in
    /// super-block order from 0, so every row is bit-identical to [`k_vec_dot`] from 0. Each
    /// activation block is read once for the eight rows. `PACKED`: the group is in
    /// [`crate::Layout::Interleaved8`] (column i holds block i of the eight rows; hint two
    /// columns ahead, the next in the stream); else rows `nb` blocks apart (hint two blocks of
    /// the row ahead, [`hint_at`], the next group prefetched as one stream unless
    /// `intel_cpu()`).
    ///
    /// # Safety
    ///
    /// The CPU must support AVX2, FMA and F16C (callers check `has_avx2()` first); `w` must hold
    /// `8·nb` readable blocks of `block_bytes`, `a` `nb` readable Q8_K blocks, and `sums` must be
    /// safe to call on any of them.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn k_8rows<const PACKED: bool>(
        w: *const u8,
        nb: usize,
        block_bytes: usize,
        a: *const u8,
        out: &mut [f32; 8],
        sums: impl Fn(*const u8, usize, *const u8, __m256i) -> (__m256i, __m256i),
    ) {
        let mut acc = _mm256_setzero_ps();
        let rb = nb * block_bytes;
        let group_prefetch = !crate::common::intel_cpu();
        for i in 0..nb {
            if !PACKED && group_prefetch {
                prefetch_next_group(w, rb, 8 * block_bytes, i);
            }
            let row_ahead = hint_at(i * block_bytes, 2 * block_bytes, rb, rb) - i * block_bytes;
            let ap = a.add(i * crate::q8_k::BLOCK_BYTES);
            // Once per column: the activation's bsums in pairs, for all eight rows.
            let bs2 = k_bsum_pairs(ap);
            let mut iv = [_mm256_setzero_si256(); 8];
            let mut mv = [_mm256_setzero_si256(); 8];
            let (mut dh, mut dmh) = ([0u16; 8], [0u16; 8]);
            for r in 0..8 {
                let (bp, ahead) = if PACKED {
                    (w.add((8 * i + r) * block_bytes), 16 * block_bytes)
                } else {
                    (w.add(r * rb + i * block_bytes), row_ahead)
                };
                (iv[r], mv[r]) = sums(bp, ahead, ap, bs2);
                dh[r] = (bp as *const u16).read_unaligned();
                dmh[r] = (bp.add(2) as *const u16).read_unaligned();
            }
            let da = _mm256_set1_ps((ap as *const f32).read_unaligned());
            acc = _mm256_add_ps(acc, k_step8(&iv, &mv, &dh, &dmh, da));
        }
        _mm256_storeu_ps(out.as_mut_ptr(), acc);
    }

    /// `sum` plus lanes 0, 1, …, 7 of `v`, one at a time (a scalar loop's order).
    ///
    /// # Safety
    ///
    /// The CPU must support AVX2 (callers check `has_avx2()` first); registers only.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn add_in_order(sum: &mut f32, v: __m256) {
        let mut lanes = [0f32; 8];
        _mm256_storeu_ps(lanes.as_mut_ptr(), v);
        for x in lanes {
            *sum += x;
        }
    }

    /// Q4_K/Q5_K packed 6-bit scales and mins (12 bytes at `p`) as eight i16 scales (low
    /// 128 bits) and eight i16 mins (high 128 bits), unpacked in vector registers (the
    /// scalar version's three inserts from general registers cost more than these nine
    /// operations).
    ///
    /// # Safety
    ///
    /// The CPU must support AVX2, FMA and F16C (callers check `has_avx2()` first); `p` must be
    /// readable for 16 bytes (the 12 of the scales and 4 after them, which are not used).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn k_scales_mins(p: *const u8) -> __m256i {
        // v = [a, b, c, -] as 32-bit words.
        let v = _mm_loadu_si128(p as *const __m128i);
        // [sc_lo, m_lo] = [a, b] & 0x3f3f3f3f.
        let lo = _mm_and_si128(v, _mm_set1_epi8(0x3f));
        // [sc_hi, m_hi] = [c & 0x0f.., (c >> 4) & 0x0f..] | [(a >> 2) & 0x30.., (b >> 2) & 0x30..].
        let cc = _mm_srlv_epi32(
            _mm_shuffle_epi32(v, 0b10_10_10_10),
            _mm_set_epi32(0, 0, 4, 0),
        );
        let hi = _mm_or_si128(
            _mm_and_si128(cc, _mm_set1_epi8(0x0f)),
            _mm_and_si128(_mm_srli_epi32(v, 2), _mm_set1_epi8(0x30)),
        );
        // [sc_lo, sc_hi, m_lo, m_hi] widened to words.
        _mm256_cvtepu8_epi16(_mm_unpacklo_epi32(lo, hi))
    }

    /// A Q8_K block's sixteen `bsums` added in pairs (each sub-block of 32 values: at most
    /// 2·16·127 in magnitude, so an i16) as words in the high 128 bits, zeros in the low: one
    /// `madd` with [`k_scales_mins`]'s vector (scales low, mins high) gives lanes whose total
    /// is `Σ m·bsum`, exactly — without spreading each row's mins over the sixteen bsums.
    ///
    /// # Safety
    ///
    /// The CPU must support AVX2, FMA and F16C (callers check `has_avx2()` first); `ap` must
    /// point to one readable Q8_K block.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn k_bsum_pairs(ap: *const u8) -> __m256i {
        let bs = _mm256_loadu_si256(ap.add(crate::q8_k::BSUMS_OFF) as *const __m256i);
        // Pairs 0..3 in the low 128 bits, 4..7 in the high, as i32; packed to words (no
        // saturation: |pair| ≤ 4064) each 128-bit half holds its four twice.
        let w = _mm256_packs_epi32(
            _mm256_madd_epi16(bs, _mm256_set1_epi16(1)),
            _mm256_setzero_si256(),
        );
        // Qwords [p0..3, 0, p4..7, 0] → [0, 0, p0..3, p4..7].
        _mm256_permute4x64_epi64(w, 0b10_00_01_01)
    }

    /// Broadcast i16 lane `j` (0..8) of the low 128 bits of `v` to all 16 lanes.
    ///
    /// # Safety
    ///
    /// The CPU must support AVX2, FMA and F16C (callers check `has_avx2()` first); nothing else
    /// (registers only).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn bcast_i16<const J: i32>(v128: __m256i) -> __m256i {
        let b = (2 * J) as i8;
        _mm256_shuffle_epi8(
            v128,
            _mm256_set1_epi16(i16::from_le_bytes([b as u8, b as u8 + 1])),
        )
    }

    /// f16 bits at `p` (unaligned) widened with F16C.
    ///
    /// # Safety
    ///
    /// The CPU must support AVX2, FMA and F16C (callers check `has_avx2()` first); `p` must be
    /// readable for 2 bytes.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn f16_load(p: *const u8) -> f32 {
        let bits = (p as *const u16).read_unaligned();
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
    }

    /// 16 packed bytes of nibbles -> 32 bytes: low nibbles in the low lane, high in the high lane.
    ///
    /// # Safety
    ///
    /// The CPU must support AVX2, FMA and F16C (callers check `has_avx2()` first); `p` must be
    /// readable for 16 bytes.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn unpack_nibbles_16(p: *const u8) -> __m256i {
        let b = _mm_loadu_si128(p as *const __m128i);
        let m = _mm_set1_epi8(0x0F);
        let lo = _mm_and_si128(b, m);
        let hi = _mm_and_si128(_mm_srli_epi16(b, 4), m);
        _mm256_set_m128i(hi, lo)
    }

    /// 32 bits -> 32 bytes, 0xFF where the bit is set (bit i -> byte i).
    ///
    /// # Safety
    ///
    /// The CPU must support AVX2, FMA and F16C (callers check `has_avx2()` first); nothing else
    /// (registers only).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn bits_to_bytes(bits: u32) -> __m256i {
        let v = _mm256_set1_epi32(bits as i32);
        let shuf = _mm256_set_epi64x(
            0x0303030303030303,
            0x0202020202020202,
            0x0101010101010101,
            0x0000000000000000,
        );
        let bytes = _mm256_shuffle_epi8(v, shuf);
        let mask = _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe_u64 as i64);
        _mm256_cmpeq_epi8(_mm256_or_si256(bytes, mask), _mm256_set1_epi64x(-1))
    }

    /// Round half away from zero (exactly like the scalar `round_away`), map NaN to 0, clamp
    /// to `[lo, hi]`.
    ///
    /// # Safety
    ///
    /// The CPU must support AVX2, FMA and F16C (callers check `has_avx2()` first); nothing else
    /// (registers only).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn level_ps(y: __m256, lo: __m256, hi: __m256) -> __m256 {
        let one = _mm256_set1_ps(1.0);
        let t = _mm256_round_ps(y, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
        let f = _mm256_sub_ps(y, t);
        let up = _mm256_and_ps(_mm256_cmp_ps(f, _mm256_set1_ps(0.5), _CMP_GE_OQ), one);
        let down = _mm256_and_ps(_mm256_cmp_ps(f, _mm256_set1_ps(-0.5), _CMP_LE_OQ), one);
        let r = _mm256_sub_ps(_mm256_add_ps(t, up), down);
        let r = _mm256_and_ps(r, _mm256_cmp_ps(r, r, _CMP_ORD_Q));
        _mm256_min_ps(_mm256_max_ps(r, lo), hi)
    }

    /// Per-candidate sums of the signed search, candidate `c` in lane `c % 8` of group `c / 8`;
    /// each lane adds the elements in order with separate multiplies and adds (no FMA), exactly
    /// as the scalar loop does.
    ///
    /// # Safety
    ///
    /// The CPU must support AVX2, FMA and F16C (callers check `has_avx2()` first); nothing else
    /// (slices only, indexed within bounds).
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn signed_sums(
        x: &[f32],
        w: &[f32],
        lo: i32,
        hi: i32,
        iscales: &[f32; super::SIGNED_CANDS],
        sumlx: &mut [f32; super::SIGNED_CANDS],
        suml2: &mut [f32; super::SIGNED_CANDS],
    ) {
        const G: usize = super::SIGNED_CANDS.div_ceil(8);
        let mut is = [0.0f32; 8 * G];
        is[..super::SIGNED_CANDS].copy_from_slice(iscales);
        let (lov, hiv) = (_mm256_set1_ps(lo as f32), _mm256_set1_ps(hi as f32));
        let mut slx = [_mm256_setzero_ps(); G];
        let mut sl2 = [_mm256_setzero_ps(); G];
        let isv: [__m256; G] = std::array::from_fn(|g| _mm256_loadu_ps(is.as_ptr().add(8 * g)));
        for (&v, &wi) in x.iter().zip(w) {
            let (vv, wv) = (_mm256_set1_ps(v), _mm256_set1_ps(wi));
            let wx = _mm256_mul_ps(wv, vv);
            for g in 0..G {
                let q = level_ps(_mm256_mul_ps(isv[g], vv), lov, hiv);
                slx[g] = _mm256_add_ps(slx[g], _mm256_mul_ps(wx, q));
                sl2[g] = _mm256_add_ps(sl2[g], _mm256_mul_ps(wv, _mm256_mul_ps(q, q)));
            }
        }
        let (mut a, mut b) = ([0.0f32; 8 * G], [0.0f32; 8 * G]);
        for g in 0..G {
            _mm256_storeu_ps(a.as_mut_ptr().add(8 * g), slx[g]);
            _mm256_storeu_ps(b.as_mut_ptr().add(8 * g), sl2[g]);
        }
        sumlx.copy_from_slice(&a[..super::SIGNED_CANDS]);
        suml2.copy_from_slice(&b[..super::SIGNED_CANDS]);
    }

    /// Lane-parallel sums of the asymmetric search (see [`signed_sums`]).
    ///
    /// # Safety
    ///
    /// The CPU must support AVX2, FMA and F16C (callers check `has_avx2()` first); nothing else
    /// (slices only, indexed within bounds).
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn min_sums(
        x: &[f32],
        w: &[f32],
        nmax: i32,
        min: f32,
        iscales: &[f32; super::MIN_CANDS],
        sums: &mut [[f32; super::MIN_CANDS]; 5],
    ) {
        const G: usize = super::MIN_CANDS.div_ceil(8);
        let mut is = [0.0f32; 8 * G];
        is[..super::MIN_CANDS].copy_from_slice(iscales);
        let (lov, hiv) = (_mm256_setzero_ps(), _mm256_set1_ps(nmax as f32));
        let minv = _mm256_set1_ps(min);
        let isv: [__m256; G] = std::array::from_fn(|g| _mm256_loadu_ps(is.as_ptr().add(8 * g)));
        let mut acc = [[_mm256_setzero_ps(); G]; 3];
        // sw and sx do not depend on the candidate: plain sequential sums.
        let (mut sw, mut sx) = (0.0f32, 0.0f32);
        for (&v, &wi) in x.iter().zip(w) {
            sw += wi;
            sx += wi * v;
            let (vv, wv) = (_mm256_set1_ps(v), _mm256_set1_ps(wi));
            let d = _mm256_sub_ps(vv, minv);
            let wx = _mm256_mul_ps(wv, vv);
            for g in 0..G {
                let q = level_ps(_mm256_mul_ps(isv[g], d), lov, hiv);
                let wq = _mm256_mul_ps(wv, q);
                acc[0][g] = _mm256_add_ps(acc[0][g], wq);
                acc[1][g] = _mm256_add_ps(acc[1][g], _mm256_mul_ps(wq, q));
                acc[2][g] = _mm256_add_ps(acc[2][g], _mm256_mul_ps(wx, q));
            }
        }
        sums[0] = [sw; super::MIN_CANDS];
        sums[3] = [sx; super::MIN_CANDS];
        for (k, row) in [1usize, 2, 4].into_iter().enumerate() {
            let mut buf = [0.0f32; 8 * G];
            for g in 0..G {
                _mm256_storeu_ps(buf.as_mut_ptr().add(8 * g), acc[k][g]);
            }
            sums[row].copy_from_slice(&buf[..super::MIN_CANDS]);
        }
    }

    /// Lane-parallel weighted squared errors of the asymmetric search's fits.
    ///
    /// # Safety
    ///
    /// The CPU must support AVX2, FMA and F16C (callers check `has_avx2()` first); nothing else
    /// (slices only, indexed within bounds).
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn min_errs(
        x: &[f32],
        w: &[f32],
        nmax: i32,
        min: f32,
        iscales: &[f32; super::MIN_CANDS],
        fits: &[(f32, f32); super::MIN_CANDS],
        errs: &mut [f32; super::MIN_CANDS],
    ) {
        const G: usize = super::MIN_CANDS.div_ceil(8);
        let (mut is, mut sc, mut mn) = ([0.0f32; 8 * G], [0.0f32; 8 * G], [0.0f32; 8 * G]);
        is[..super::MIN_CANDS].copy_from_slice(iscales);
        for (c, &(s, m)) in fits.iter().enumerate() {
            sc[c] = s;
            mn[c] = m;
        }
        let (lov, hiv) = (_mm256_setzero_ps(), _mm256_set1_ps(nmax as f32));
        let minv = _mm256_set1_ps(min);
        let ld = |a: &[f32; 8 * G], g: usize| _mm256_loadu_ps(a.as_ptr().add(8 * g));
        let isv: [__m256; G] = std::array::from_fn(|g| ld(&is, g));
        let scv: [__m256; G] = std::array::from_fn(|g| ld(&sc, g));
        let mnv: [__m256; G] = std::array::from_fn(|g| ld(&mn, g));
        let mut err = [_mm256_setzero_ps(); G];
        for (&v, &wi) in x.iter().zip(w) {
            let (vv, wv) = (_mm256_set1_ps(v), _mm256_set1_ps(wi));
            let d = _mm256_sub_ps(vv, minv);
            for g in 0..G {
                let q = level_ps(_mm256_mul_ps(isv[g], d), lov, hiv);
                let e = _mm256_sub_ps(_mm256_add_ps(_mm256_mul_ps(scv[g], q), mnv[g]), vv);
                err[g] = _mm256_add_ps(err[g], _mm256_mul_ps(_mm256_mul_ps(wv, e), e));
            }
        }
        let mut buf = [0.0f32; 8 * G];
        for g in 0..G {
            _mm256_storeu_ps(buf.as_mut_ptr().add(8 * g), err[g]);
        }
        errs.copy_from_slice(&buf[..super::MIN_CANDS]);
    }
}

/// Helpers of the aarch64 NEON kernels. Every kernel here and in the type modules keeps the
/// scalar reference's integer sums exact (widening multiplies and pairwise adds: no
/// saturation for any input bytes) and does the reference's float steps in its order, so
/// results are bit-identical to it except where a kernel's documentation says otherwise.
#[cfg(target_arch = "aarch64")]
pub(crate) mod neon {
    use std::arch::aarch64::*;

    /// `acc` plus Σ x·y of 16 signed byte pairs, in four i32 lanes: products widened to i16
    /// (|x·y| ≤ 2^14), then pairwise added into the i32 lanes. Exact for every input.
    ///
    /// # Safety
    ///
    /// The CPU must support NEON (callers check `has_neon()` first); nothing else (registers
    /// only).
    #[inline]
    #[target_feature(enable = "neon")]
    pub unsafe fn dot16(acc: int32x4_t, x: int8x16_t, y: int8x16_t) -> int32x4_t {
        let lo = vmull_s8(vget_low_s8(x), vget_low_s8(y));
        let hi = vmull_high_s8(x, y);
        vpadalq_s16(vpadalq_s16(acc, lo), hi)
    }

    /// The 16 bytes at `p` as their low nibbles and their high nibbles.
    ///
    /// # Safety
    ///
    /// The CPU must support NEON (callers check `has_neon()` first); `p` must be readable for
    /// 16 bytes.
    #[inline]
    #[target_feature(enable = "neon")]
    pub unsafe fn nibbles(p: *const u8) -> (uint8x16_t, uint8x16_t) {
        let b = vld1q_u8(p);
        (vandq_u8(b, vdupq_n_u8(0x0F)), vshrq_n_u8::<4>(b))
    }

    /// Byte k of the result is 0x10 where bit k of the 16-bit `bits` is set, else 0 (the
    /// fifth bits of Q5_0 values).
    ///
    /// # Safety
    ///
    /// The CPU must support NEON (callers check `has_neon()` first); nothing else (registers
    /// only).
    #[inline]
    #[target_feature(enable = "neon")]
    pub unsafe fn bits_to_0x10(bits: u16) -> uint8x16_t {
        let [lo, hi] = bits.to_le_bytes();
        let bytes = vcombine_u8(vdup_n_u8(lo), vdup_n_u8(hi));
        // Byte k tests bit k mod 8 of its byte.
        let mask = vreinterpretq_u8_u64(vdupq_n_u64(0x8040_2010_0804_0201));
        vandq_u8(vtstq_u8(bytes, mask), vdupq_n_u8(0x10))
    }

    /// f16 bits at `p` (unaligned) widened as the scalar reference widens them.
    ///
    /// # Safety
    ///
    /// `p` must be readable for 2 bytes.
    #[inline]
    pub unsafe fn f16_load(p: *const u8) -> f32 {
        half::f16::from_bits((p as *const u16).read_unaligned()).to_f32()
    }

    /// Four f16 bit patterns widened to f32 exactly, with integer operations (`vcvt_f32_f16`
    /// is stable only from Rust 1.94, newer than the workspace's 1.87): exponent and mantissa
    /// moved to f32's positions give the value times 2^-112 (f16 subnormals become f32
    /// subnormals), which one multiply by 2^112 restores exactly; infinities and NaNs get
    /// f32's all-ones exponent, NaNs quieted as `half` and FCVT quiet them.
    ///
    /// # Safety
    ///
    /// The CPU must support NEON (callers check `has_neon()` first); nothing else (registers
    /// only).
    #[inline]
    #[target_feature(enable = "neon")]
    pub unsafe fn f16x4_to_f32(h: uint16x4_t) -> float32x4_t {
        let w = vmovl_u16(h);
        let sign = vshlq_n_u32::<16>(vandq_u32(w, vdupq_n_u32(0x8000)));
        let em = vandq_u32(w, vdupq_n_u32(0x7fff));
        let two_112 = vdupq_n_f32(f32::from_bits((127 + 112) << 23));
        let finite = vmulq_f32(vreinterpretq_f32_u32(vshlq_n_u32::<13>(em)), two_112);
        let mant = vshlq_n_u32::<13>(vandq_u32(w, vdupq_n_u32(0x03ff)));
        let quiet = vandq_u32(vtstq_u32(mant, mant), vdupq_n_u32(0x0040_0000));
        let inf_nan = vorrq_u32(vorrq_u32(vdupq_n_u32(0x7f80_0000), mant), quiet);
        let special = vcgeq_u32(em, vdupq_n_u32(0x7c00));
        let bits = vbslq_u32(special, inf_nan, vreinterpretq_u32_f32(finite));
        vreinterpretq_f32_u32(vorrq_u32(bits, sign))
    }

    /// Eight f16 or BF16 values at `p` (`BF16` selects) widened to f32, in order.
    ///
    /// # Safety
    ///
    /// The CPU must support NEON (callers check `has_neon()` first); `p` must be readable for
    /// 16 bytes.
    #[inline]
    #[target_feature(enable = "neon")]
    pub unsafe fn half8_to_f32<const BF16: bool>(p: *const u8) -> [float32x4_t; 2] {
        let h = vld1q_u16(p as *const u16);
        if BF16 {
            [
                vreinterpretq_f32_u32(vshll_n_u16::<16>(vget_low_u16(h))),
                vreinterpretq_f32_u32(vshll_high_n_u16::<16>(h)),
            ]
        } else {
            [
                f16x4_to_f32(vget_low_u16(h)),
                f16x4_to_f32(vget_high_u16(h)),
            ]
        }
    }

    /// The 16 signed bytes `q` as four vectors of f32, in order (exact).
    ///
    /// # Safety
    ///
    /// The CPU must support NEON (callers check `has_neon()` first); nothing else (registers
    /// only).
    #[inline]
    #[target_feature(enable = "neon")]
    pub unsafe fn widen_i8x16(q: int8x16_t) -> [float32x4_t; 4] {
        let (lo, hi) = (vmovl_s8(vget_low_s8(q)), vmovl_high_s8(q));
        [
            vcvtq_f32_s32(vmovl_s16(vget_low_s16(lo))),
            vcvtq_f32_s32(vmovl_high_s16(lo)),
            vcvtq_f32_s32(vmovl_s16(vget_low_s16(hi))),
            vcvtq_f32_s32(vmovl_high_s16(hi)),
        ]
    }

    /// The 16 unsigned bytes `q` as four vectors of f32, in order (exact).
    ///
    /// # Safety
    ///
    /// The CPU must support NEON (callers check `has_neon()` first); nothing else (registers
    /// only).
    #[inline]
    #[target_feature(enable = "neon")]
    pub unsafe fn widen_u8x16(q: uint8x16_t) -> [float32x4_t; 4] {
        let (lo, hi) = (vmovl_u8(vget_low_u8(q)), vmovl_high_u8(q));
        [
            vcvtq_f32_u32(vmovl_u16(vget_low_u16(lo))),
            vcvtq_f32_u32(vmovl_high_u16(lo)),
            vcvtq_f32_u32(vmovl_u16(vget_low_u16(hi))),
            vcvtq_f32_u32(vmovl_high_u16(hi)),
        ]
    }

    /// A row of legacy 32-value blocks (`block_bytes` each, f16 scale at byte 0, values
    /// `values(block)` as signed bytes in order) against Q8_0 activation blocks: per block the
    /// exact integer sum, then `sum += isum·(d_w·d_a)` block after block — the scalar
    /// references' float steps in their order (Q8_0, Q4_0, Q5_0).
    ///
    /// # Safety
    ///
    /// The CPU must support NEON (callers check `has_neon()` first); `a` must hold at least as
    /// many Q8_0 blocks as `w` holds whole weight blocks, and `values` must read only inside
    /// the block it is given.
    #[inline]
    #[target_feature(enable = "neon")]
    pub unsafe fn scaled_blocks_dot(
        w: &[u8],
        a: &[u8],
        block_bytes: usize,
        values: impl Fn(*const u8) -> [int8x16_t; 2],
    ) -> f32 {
        const AB: usize = crate::q8_0::BLOCK_BYTES;
        let nb = w.len() / block_bytes;
        let (wp, ap) = (w.as_ptr(), a.as_ptr());
        let mut sum = 0.0f32;
        for i in 0..nb {
            let (wb, ab) = (wp.add(i * block_bytes), ap.add(i * AB));
            let [lo, hi] = values(wb);
            let y = |k: usize| vld1q_s8(ab.add(2 + 16 * k) as *const i8);
            let isum = vaddvq_s32(dot16(dot16(vdupq_n_s32(0), lo, y(0)), hi, y(1)));
            sum += isum as f32 * (f16_load(wb) * f16_load(ab));
        }
        sum
    }

    /// Dequantize legacy 32-value blocks (`block_bytes` each, f16 scale `d` at byte 0, values
    /// `values(block)` as signed bytes in order) as `q·d`, one rounding each (Q8_0, Q4_0,
    /// Q5_0).
    ///
    /// # Safety
    ///
    /// The CPU must support NEON (callers check `has_neon()` first); `dst` must hold at least
    /// 32 values per whole block of `src`, and `values` must read only inside the block it is
    /// given.
    #[inline]
    #[target_feature(enable = "neon")]
    pub unsafe fn scaled_blocks_dequantize(
        src: &[u8],
        dst: &mut [f32],
        block_bytes: usize,
        values: impl Fn(*const u8) -> [int8x16_t; 2],
    ) {
        let nb = src.len() / block_bytes;
        for i in 0..nb {
            let p = src.as_ptr().add(i * block_bytes);
            let d = vdupq_n_f32(f16_load(p));
            let o = dst.as_mut_ptr().add(i * 32);
            let [lo, hi] = values(p);
            store_i8x16_scaled(lo, d, o);
            store_i8x16_scaled(hi, d, o.add(16));
        }
    }

    /// The 16 signed bytes `q` as f32, each times `d` (`q·d`, one rounding), stored at `o`.
    ///
    /// # Safety
    ///
    /// The CPU must support NEON (callers check `has_neon()` first); `o` must be writable for
    /// 16 `f32`.
    #[inline]
    #[target_feature(enable = "neon")]
    pub unsafe fn store_i8x16_scaled(q: int8x16_t, d: float32x4_t, o: *mut f32) {
        for (k, f) in widen_i8x16(q).into_iter().enumerate() {
            vst1q_f32(o.add(4 * k), vmulq_f32(f, d));
        }
    }

    /// The 16 unsigned bytes `q` as `dl·q − ml` (multiply, then subtract: no fusing, as the
    /// scalar reference), stored at `o`.
    ///
    /// # Safety
    ///
    /// The CPU must support NEON (callers check `has_neon()` first); `o` must be writable for
    /// 16 `f32`.
    #[inline]
    #[target_feature(enable = "neon")]
    pub unsafe fn store_u8x16_affine(q: uint8x16_t, dl: float32x4_t, ml: float32x4_t, o: *mut f32) {
        for (k, f) in widen_u8x16(q).into_iter().enumerate() {
            vst1q_f32(o.add(4 * k), vsubq_f32(vmulq_f32(dl, f), ml));
        }
    }

    /// Round half away from zero to i32 (FCVTAS: NaN to 0, saturating), then saturate to i8;
    /// for the 16 values of `v`. Equal to the scalar `round_away(v) as i8` for every finite
    /// value and to 0 for NaN.
    ///
    /// # Safety
    ///
    /// The CPU must support NEON (callers check `has_neon()` first); nothing else (registers
    /// only).
    #[inline]
    #[target_feature(enable = "neon")]
    pub unsafe fn round_i8x16(v: [float32x4_t; 4]) -> int8x16_t {
        let i = v.map(|x| vcvtaq_s32_f32(x));
        let lo = vcombine_s16(vqmovn_s32(i[0]), vqmovn_s32(i[1]));
        let hi = vcombine_s16(vqmovn_s32(i[2]), vqmovn_s32(i[3]));
        vcombine_s8(vqmovn_s16(lo), vqmovn_s16(hi))
    }

    /// The largest |x| of `x` (a multiple of 4 values), NaNs skipped as `f32::max` skips them
    /// (0 when all are NaN; +∞ when one is infinite).
    ///
    /// # Safety
    ///
    /// The CPU must support NEON (callers check `has_neon()` first); nothing else (slices
    /// only, indexed within bounds).
    #[inline]
    #[target_feature(enable = "neon")]
    pub unsafe fn abs_max(x: &[f32]) -> f32 {
        debug_assert!(x.len() % 4 == 0);
        let mut m = vdupq_n_f32(0.0);
        for k in 0..x.len() / 4 {
            m = vmaxnmq_f32(m, vabsq_f32(vld1q_f32(x.as_ptr().add(4 * k))));
        }
        vmaxnmvq_f32(m)
    }
}

/// Test data for the SIMD-vs-scalar quantizer checks: a xorshift stream and blocks of values
/// at magnitudes from 2⁻¹⁵⁰ to 2¹⁵⁰.
#[cfg(all(test, any(target_arch = "x86_64", target_arch = "aarch64")))]
pub(crate) struct TestRng(pub u64);

#[cfg(all(test, any(target_arch = "x86_64", target_arch = "aarch64")))]
impl TestRng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// `n` values in ±mag/2 for a random power-of-two `mag`.
    pub fn block(&mut self, n: usize) -> Vec<f32> {
        let mag = 2f32.powi((self.next() % 300) as i32 - 150);
        (0..n)
            .map(|_| ((self.next() >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * mag)
            .collect()
    }
}
