//! Row layouts for the multi-row kernels.
//!
//! GGUF stores a matrix row after row. The eight-row kernels (F32, F16, BF16, Q4_0, Q4_1, Q5_0,
//! Q8_0, Q4_K, Q5_K, Q6_K) walk eight rows side by side, one block of each per step: eight short streams, which
//! the hardware prefetcher serves poorly when rows are short, and per step a transpose of the eight
//! rows' bytes and a gather of their eight scales. [`Layout::Interleaved8`] is a load-time
//! repacking of the same bytes (of the same bits, for Q5_0's high bits): each whole group of eight
//! rows becomes `nb` columns, column b holding block b of the eight rows field by field (the eight
//! f16 scales together, Q5_0's eight high-bit words together and bit-transposed, the 4-bit values
//! already in the transposed order the kernel works in; see each type's `PACK`). The float types
//! have no blocks: their columns hold 32 bytes of each row (8 F32 or 16 F16/BF16 values), so only
//! rows of whole columns are interleaved ([`can_interleave_rows`]). A group is one sequential
//! stream, consecutive groups one long one, and the kernel loads what it used to shuffle. Every
//! value keeps its bits and the kernels compute the same integer sums in the same order, so results
//! are bit-identical to the row-major kernels. Measured (quant/README.md, 2 threads, rows of 8192):
//! Q4_0 0.59 → 0.93 of the triad, Q5_0 0.58 → 0.86, Q8_0 × f32 0.77 → 0.85; Q4_K (whole blocks per
//! column, an eight-row kernel bit-identical to the single-row one) 0.87 single-row → 0.93; Q5_K
//! and Q6_K likewise (whole super-blocks per column) at short rows (see [`interleave_pays`]).
//!
//! A range of rows of an interleaved matrix is itself an interleaved matrix when it starts at a
//! multiple of eight rows and ends at a multiple of eight or at the matrix's end (the rows after
//! the last whole group stay row-major).

use crate::common::{has_avx2, pack8, Field};
use crate::{check_aligned, check_bytes, dequantize_row, ActPrep, GgmlType, QuantError};

/// How a matrix's rows lie in memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Layout {
    /// ggml's: row after row (what GGUF files hold).
    #[default]
    Rows,
    /// Whole groups of eight rows block-interleaved (see the module documentation).
    Interleaved8,
}

/// Whether this CPU has kernels that compute over [`Layout::Interleaved8`] (x86-64 with
/// AVX2, FMA and F16C, unless `QUANT_FORCE_SCALAR` is set). Elsewhere (aarch64, whose NEON
/// kernels take rows one by one, or the scalar fallback) every use of an interleaved matrix
/// de-interleaves it a group at a time: correct, but slower than keeping the row layout, so a
/// loader should repack only when this holds.
pub fn packed_kernels() -> bool {
    has_avx2()
}

/// Whether `ty` has the interleaved layout (the types with eight-row kernels).
pub fn can_interleave(ty: GgmlType) -> bool {
    use GgmlType::*;
    matches!(
        ty,
        F32 | F16 | BF16 | Q4_0 | Q4_1 | Q5_0 | Q8_0 | Q4_K | Q5_K | Q6_K
    )
}

/// Whether a matrix of `ty` with rows of `n` elements can be interleaved: a type with the
/// layout and rows of whole columns (every row of whole blocks does for the block types; the
/// float types' columns hold 32 bytes of each row).
pub fn can_interleave_rows(ty: GgmlType, n: usize) -> bool {
    can_interleave(ty) && ty.row_bytes(n).is_some_and(|rb| rb % unit(ty) == 0)
}

/// Whether a loader should keep a matrix of `ty` with rows of `n` values in
/// [`Layout::Interleaved8`] on this CPU: [`packed_kernels`] and [`can_interleave_rows`], except
/// for K-quant rows of 8192 values or more on Intel (`intel_cpu`), which read faster row-major.
/// There the eight-row K-quant kernels read 144-210 contiguous bytes of each row a step, which
/// long rows stream well and short ones do not (kernel bench on the Xeon of 2026-11-23, all
/// threads ÷ triad, rows → packed: Q6_K at 2048 values 0.69 → 0.90, 3840 0.76 → 0.93, 6144
/// 0.80 → 0.88, 8192 0.92 → 0.89, 16384 0.97 → 0.89, 32768 0.99 → 0.85; Q5_K at 2048 0.60 →
/// 0.88, 3840 0.72 → 0.88, 6144 0.81 → 0.89, 8192 0.87 → 0.84, 32768 1.04 → 0.85; Q4_K at 8192
/// 0.91 → 0.89, 16384 0.96 → 0.89, 32768 1.00 → 0.87). Elsewhere the packed layout measured
/// better at every length (the nibble types, and Q4_K on the Zen 3 of the earlier sessions).
/// Since the row-major kernels' hints run on into the next group (`hint_at`, 2026-11-24) the
/// rows read as well as or better than packed below 8192 values too (two runs, `med`, rows /
/// packed: at 6144 Q4_K 0.92-0.98 / 0.92-0.93, Q5_K 0.99-1.00 / 0.88-0.93, Q6_K 1.08-1.11 /
/// 0.97; at 2048 alike), but batched prefill still runs about 1.2-1.3x faster packed
/// (`q4_k×8` 0.25-0.27 of the triad against `q4_k×8 il` 0.31-0.34 at 2048 and 6144), so the
/// boundary stays at 8192.
pub fn interleave_pays(ty: GgmlType, n: usize) -> bool {
    if !packed_kernels() || !can_interleave_rows(ty, n) {
        return false;
    }
    #[cfg(target_arch = "x86_64")]
    {
        let k_quant = matches!(ty, GgmlType::Q4_K | GgmlType::Q5_K | GgmlType::Q6_K);
        if k_quant && n >= 8192 && crate::common::intel_cpu() {
            return false;
        }
    }
    true
}

/// The bytes of one row in one column.
fn unit(ty: GgmlType) -> usize {
    match ty {
        GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => crate::float::PACK_BYTES,
        _ => ty.type_size(),
    }
}

/// How a column of eight blocks of `ty` is packed.
fn fields(ty: GgmlType) -> &'static [Field] {
    match ty {
        GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => crate::float::PACK,
        GgmlType::Q4_0 => crate::q4_0::PACK,
        GgmlType::Q4_1 => crate::q4_1::PACK,
        GgmlType::Q5_0 => crate::q5_0::PACK,
        GgmlType::Q4_K => crate::q4_k::PACK,
        GgmlType::Q5_K => crate::q5_k::PACK,
        GgmlType::Q6_K => crate::q6_k::PACK,
        _ => crate::q8_0::PACK,
    }
}

fn check_layout(ty: GgmlType, n: usize, layout: Layout) -> Result<bool, QuantError> {
    match layout {
        Layout::Rows => Ok(false),
        Layout::Interleaved8 if can_interleave_rows(ty, n) => Ok(true),
        Layout::Interleaved8 if can_interleave(ty) => Err(QuantError::Unsupported {
            ty,
            what: "the interleaved row layout with rows of this length",
        }),
        Layout::Interleaved8 => Err(QuantError::Unsupported {
            ty,
            what: "the interleaved row layout",
        }),
    }
}

/// Rows of `n` elements in `src` (ggml layout) → `dst` in [`Layout::Interleaved8`].
pub fn interleave_rows(
    ty: GgmlType,
    n: usize,
    src: &[u8],
    dst: &mut [u8],
) -> Result<(), QuantError> {
    permute(ty, n, src, dst, false)
}

/// The inverse of [`interleave_rows`].
pub fn deinterleave_rows(
    ty: GgmlType,
    n: usize,
    src: &[u8],
    dst: &mut [u8],
) -> Result<(), QuantError> {
    permute(ty, n, src, dst, true)
}

fn permute(
    ty: GgmlType,
    n: usize,
    src: &[u8],
    dst: &mut [u8],
    inverse: bool,
) -> Result<(), QuantError> {
    let rb = check_aligned(ty, n)?;
    check_layout(ty, n, Layout::Interleaved8)?;
    if rb == 0 || src.len() % rb != 0 || dst.len() != src.len() {
        return Err(QuantError::SizeMismatch {
            ty,
            expected: src.len(),
            found: dst.len(),
        });
    }
    pack8(src, dst, rb, unit(ty), fields(ty), inverse);
    Ok(())
}

/// Runs `f(rows_in_ggml_layout, first_row)` over `w` (`rows` rows of `rb` bytes, interleaved):
/// each whole group de-interleaved into a scratch buffer, then the row-major tail. The paths
/// without an interleaved kernel (scalar fallback, dequantization) go through it.
pub(crate) fn via_rows(
    ty: GgmlType,
    w: &[u8],
    rb: usize,
    rows: usize,
    mut f: impl FnMut(&[u8], usize) -> Result<(), QuantError>,
) -> Result<(), QuantError> {
    let whole = rows / 8 * 8;
    let mut scratch = vec![0u8; 8 * rb];
    for g in 0..whole / 8 {
        pack8(
            &w[g * 8 * rb..(g + 1) * 8 * rb],
            &mut scratch,
            rb,
            unit(ty),
            fields(ty),
            true,
        );
        f(&scratch, 8 * g)?;
    }
    if whole < rows {
        f(&w[whole * rb..rows * rb], whole)?;
    }
    Ok(())
}

/// [`crate::vec_dot_rows_with`] for a matrix in `layout`.
pub fn vec_dot_rows_in(
    weight_ty: GgmlType,
    n: usize,
    w: &[u8],
    layout: Layout,
    act: &[u8],
    prep: Option<&ActPrep>,
    out: &mut [f32],
) -> Result<(), QuantError> {
    if !check_layout(weight_ty, n, layout)? || has_avx2() {
        return crate::rows_with(
            weight_ty,
            n,
            w,
            layout == Layout::Interleaved8,
            act,
            prep,
            out,
        );
    }
    let rb = check_aligned(weight_ty, n)?;
    check_bytes(weight_ty, n * out.len(), w.len())?;
    let rows = out.len();
    via_rows(weight_ty, w, rb, rows, |plain, r0| {
        let k = plain.len() / rb.max(1);
        crate::vec_dot_rows_with(weight_ty, n, plain, act, prep, &mut out[r0..r0 + k])
    })
}

/// [`crate::vec_dot_rows_multi_with`] for a matrix in `layout` (`out[r·acts.len() + t]`).
pub fn vec_dot_rows_multi_in(
    weight_ty: GgmlType,
    n: usize,
    w: &[u8],
    layout: Layout,
    acts: &[&[u8]],
    preps: Option<&[ActPrep]>,
    out: &mut [f32],
) -> Result<(), QuantError> {
    if !check_layout(weight_ty, n, layout)? || has_avx2() {
        let il = layout == Layout::Interleaved8;
        return crate::rows_multi_with(weight_ty, n, w, il, acts, preps, out);
    }
    let t = acts.len();
    let (rb, rows) = crate::check_multi(weight_ty, n, w, t, out.len())?;
    via_rows(weight_ty, w, rb, rows, |plain, r0| {
        let k = plain.len() / rb.max(1);
        crate::vec_dot_rows_multi_with(
            weight_ty,
            n,
            plain,
            acts,
            preps,
            &mut out[r0 * t..(r0 + k) * t],
        )
    })
}

/// [`crate::vec_dot_f32_rows`] for a matrix in `layout`.
pub fn vec_dot_f32_rows_in(
    weight_ty: GgmlType,
    n: usize,
    w: &[u8],
    layout: Layout,
    x: &[f32],
    out: &mut [f32],
) -> Result<(), QuantError> {
    let il = check_layout(weight_ty, n, layout)?;
    if il && x.len() != n {
        return Err(QuantError::SizeMismatch {
            ty: GgmlType::F32,
            expected: n * 4,
            found: x.len() * 4,
        });
    }
    // Only Q8_0 has an eight-row f32 kernel; Q4_0/Q5_0 go through de-interleaving.
    if !il || (has_avx2() && weight_ty == GgmlType::Q8_0) {
        return crate::f32_rows(weight_ty, n, w, il, x, out);
    }
    let rb = check_aligned(weight_ty, n)?;
    check_bytes(weight_ty, n * out.len(), w.len())?;
    via_rows(weight_ty, w, rb, out.len(), |plain, r0| {
        let k = plain.len() / rb.max(1);
        crate::vec_dot_f32_rows(weight_ty, n, plain, x, &mut out[r0..r0 + k])
    })
}

/// Dequantize `dst.len() / n` rows of `n` elements from a matrix in `layout`.
pub fn dequantize_rows_in(
    ty: GgmlType,
    n: usize,
    w: &[u8],
    layout: Layout,
    dst: &mut [f32],
) -> Result<(), QuantError> {
    if !check_layout(ty, n, layout)? {
        return dequantize_row(ty, w, dst);
    }
    let rb = check_aligned(ty, n)?;
    check_bytes(ty, dst.len(), w.len())?;
    let rows = dst.len().checked_div(n).unwrap_or(0);
    if ty == GgmlType::F32 {
        // The values are the bytes: un-permute straight into `dst`.
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(dst);
        pack8(w, bytes, rb, unit(ty), fields(ty), true);
        return Ok(());
    }
    if ty == GgmlType::Q8_0 {
        // The prefill GEMM's tiles: straight from the packed columns.
        let whole = rows / 8 * 8;
        for (g, d) in w[..whole * rb]
            .chunks_exact(8 * rb)
            .zip(dst.chunks_exact_mut(8 * n))
        {
            crate::q8_0::dequantize_packed_group(g, n / 32, d);
        }
        return dequantize_row(ty, &w[whole * rb..], &mut dst[whole * n..]);
    }
    via_rows(ty, w, rb, rows, |plain, r0| {
        let k = plain.len() / rb.max(1);
        dequantize_row(ty, plain, &mut dst[r0 * n..(r0 + k) * n])
    })
}

/// Dequantize row `r` of a matrix of `rows` rows of `n` elements in `layout` (an embedding
/// lookup in an interleaved tied embedding) into `dst` (`n` values).
pub fn dequantize_row_at(
    ty: GgmlType,
    n: usize,
    w: &[u8],
    rows: usize,
    layout: Layout,
    r: usize,
    dst: &mut [f32],
) -> Result<(), QuantError> {
    let il = check_layout(ty, n, layout)?;
    let rb = check_aligned(ty, n)?;
    check_bytes(ty, n * rows, w.len())?;
    if r >= rows || dst.len() != n {
        return Err(QuantError::OutLen {
            expected: n,
            found: if r >= rows { 0 } else { dst.len() },
        });
    }
    if !il || r >= rows / 8 * 8 {
        return dequantize_row(ty, &w[r * rb..(r + 1) * rb], dst);
    }
    // Unpack the row's group (8 rows; a row lookup per token, not a hot path).
    let mut plain = vec![0u8; 8 * rb];
    let g = r / 8;
    pack8(
        &w[g * 8 * rb..(g + 1) * 8 * rb],
        &mut plain,
        rb,
        unit(ty),
        fields(ty),
        true,
    );
    dequantize_row(ty, &plain[r % 8 * rb..(r % 8 + 1) * rb], dst)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interleave_pays_by_type_and_row_length() {
        use GgmlType::*;
        if !packed_kernels() {
            // No kernels over the layout (aarch64, QUANT_FORCE_SCALAR): never.
            for ty in [Q4_0, Q4_K, F16] {
                assert!(!interleave_pays(ty, 4096));
            }
            return;
        }
        // Short rows: every type with the layout, whatever the CPU.
        for ty in [F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q8_0, Q4_K, Q5_K, Q6_K] {
            assert!(interleave_pays(ty, 6144), "{ty}");
        }
        // Rows that are not whole columns, and types without the layout: never.
        assert!(!interleave_pays(F16, 24));
        assert!(!interleave_pays(Q8_K, 256));
        // Grok-1's expert down rows (32768 values): the nibble types packed; the K-quants
        // row-major on Intel, where long rows read faster so.
        #[cfg(target_arch = "x86_64")]
        let intel = crate::common::intel_cpu();
        #[cfg(not(target_arch = "x86_64"))]
        let intel = false;
        assert!(interleave_pays(Q4_0, 32768));
        for ty in [Q4_K, Q5_K, Q6_K] {
            assert_eq!(interleave_pays(ty, 32768), !intel, "{ty}");
            assert_eq!(interleave_pays(ty, 8192), !intel, "{ty}");
        }
    }
}
