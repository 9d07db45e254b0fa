//! The dispatching entry points (AVX2 on x86-64, NEON on aarch64, the scalar reference with
//! `QUANT_FORCE_SCALAR`) against the scalar references on raw blocks: random bytes wherever a
//! block holds integers (levels, packed 6-bit scales and mins, high bits, activation bytes −128
//! included where the kernel is exact for it), finite f16/f32 scales. Every unpacking path
//! then sees bit patterns the quantizers rarely or never write.
//!
//! Integer sums are exact on every path, and the K-quants' float steps follow the scalar
//! reference everywhere, so they are compared bit for bit. The legacy types' NEON kernels
//! also keep the reference's float order (bit for bit on aarch64); the AVX2 ones sum in
//! lanes, held to the tolerance the other tests use.

use quant::*;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn bytes(&mut self, out: &mut [u8]) {
        out.iter_mut().for_each(|b| *b = self.next() as u8);
    }

    /// A finite f16 of either sign with magnitude in [2^-10, 2).
    fn f16(&mut self) -> [u8; 2] {
        let mag = 2f32.powi((self.next() % 11) as i32 - 10)
            * (1.0 + (self.next() % 1000) as f32 / 1000.0);
        let v = if self.next() & 1 == 0 { mag } else { -mag };
        half::f16::from_f32(v).to_le_bytes()
    }
}

/// Whether the legacy types' dot kernel of this build keeps the scalar reference's float
/// order (and is exact for activation bytes of −128).
const LEGACY_EXACT: bool = cfg!(target_arch = "aarch64");

/// Byte offsets of each block's f16 fields.
fn f16_fields(ty: GgmlType) -> &'static [usize] {
    use GgmlType::*;
    match ty {
        Q8_0 | Q4_0 | Q5_0 => &[0],
        Q4_1 | Q4_K | Q5_K => &[0, 2],
        Q6_K => &[208],
        _ => unreachable!("{ty}"),
    }
}

/// `nblk` blocks of `ty`: random bytes with finite f16 scales.
fn raw_weights(ty: GgmlType, nblk: usize, rng: &mut Rng) -> Vec<u8> {
    let ts = ty.type_size();
    let mut w = vec![0u8; nblk * ts];
    rng.bytes(&mut w);
    for b in w.chunks_exact_mut(ts) {
        for &off in f16_fields(ty) {
            b[off..off + 2].copy_from_slice(&rng.f16());
        }
    }
    w
}

/// An activation of `n` values for `ty` made of random bytes (−128 only where `full`), with
/// finite scales and, for Q8_1 and Q8_K, the sums their format defines.
fn raw_activation(ty: GgmlType, n: usize, full: bool, rng: &mut Rng) -> Vec<u8> {
    let at = vec_dot_type(ty);
    let mut a = vec![0u8; at.row_bytes(n).unwrap()];
    let q = |rng: &mut Rng| loop {
        let b = rng.next() as u8;
        if full || b != 0x80 {
            return b;
        }
    };
    for blk in a.chunks_exact_mut(at.type_size()) {
        match at {
            GgmlType::Q8_0 => {
                blk[..2].copy_from_slice(&rng.f16());
                blk[2..].iter_mut().for_each(|b| *b = q(rng));
            }
            GgmlType::Q8_1 => {
                let d = rng.f16();
                blk[..2].copy_from_slice(&d);
                blk[4..].iter_mut().for_each(|b| *b = q(rng));
                let sum: i32 = blk[4..].iter().map(|&b| b as i8 as i32).sum();
                let s = half::f16::from_le_bytes(d).to_f32() * sum as f32;
                blk[2..4].copy_from_slice(&half::f16::from_f32(s).to_le_bytes());
            }
            GgmlType::Q8_K => {
                let d = 2f32.powi(-((rng.next() % 12) as i32));
                blk[..4].copy_from_slice(&d.to_le_bytes());
                blk[4..4 + QK_K].iter_mut().for_each(|b| *b = q(rng));
                for g in 0..QK_K / 16 {
                    let s: i16 = blk[4 + 16 * g..4 + 16 * (g + 1)]
                        .iter()
                        .map(|&b| b as i8 as i16)
                        .sum();
                    let at = 4 + QK_K + 2 * g;
                    blk[at..at + 2].copy_from_slice(&s.to_le_bytes());
                }
            }
            _ => unreachable!("{at}"),
        }
    }
    a
}

const QUANT_TYPES: [GgmlType; 7] = [
    GgmlType::Q8_0,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
];

#[test]
fn dots_and_dequantization_on_raw_blocks_match_scalar() {
    let mut rng = Rng(0x0123_4567_89ab_cdef);
    for ty in QUANT_TYPES {
        let kquant = ty.block_size() == QK_K;
        for case in 0..200 {
            let nblk = 1 + case % 9;
            let n = nblk * ty.block_size();
            let w = raw_weights(ty, nblk, &mut rng);
            let full = kquant || LEGACY_EXACT;
            let act = raw_activation(ty, n, full, &mut rng);
            let got = vec_dot(ty, n, &w, &act).unwrap();
            let want = vec_dot_scalar(ty, n, &w, &act).unwrap();
            let (mut x, mut y) = (vec![0f32; n], vec![0f32; n]);
            dequantize_row_scalar(ty, &w, &mut y).unwrap();
            dequantize_row(ty, &w, &mut x).unwrap();
            assert!(
                x.iter().zip(&y).all(|(p, q)| p.to_bits() == q.to_bits()),
                "{ty} case {case}: dequantize"
            );
            if kquant || LEGACY_EXACT {
                assert_eq!(
                    got.to_bits(),
                    want.to_bits(),
                    "{ty} case {case}: {got} vs {want}"
                );
            } else {
                let mut ya = vec![0f32; n];
                dequantize_row(vec_dot_type(ty), &act, &mut ya).unwrap();
                let mag: f32 = x.iter().zip(&ya).map(|(p, q)| (p * q).abs()).sum();
                assert!(
                    (got - want).abs() <= 1e-5 * mag + 1e-30,
                    "{ty} case {case}: {got} vs {want} (mag {mag})"
                );
            }
        }
    }
}

#[test]
fn half_widening_is_exact_for_every_bit_pattern() {
    // All 65536 patterns: zeros, subnormals, normals, infinities and NaNs (signalling ones
    // come out quiet on every path).
    let bytes: Vec<u8> = (0..=u16::MAX).flat_map(|h| h.to_le_bytes()).collect();
    for ty in [GgmlType::F16, GgmlType::BF16] {
        let (mut got, mut want) = (vec![0f32; 1 << 16], vec![0f32; 1 << 16]);
        dequantize_row(ty, &bytes, &mut got).unwrap();
        dequantize_row_scalar(ty, &bytes, &mut want).unwrap();
        for (h, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g.to_bits(), w.to_bits(), "{ty} {h:#06x}: {g} vs {w}");
        }
    }
}

#[test]
fn float_dots_match_scalar_within_rounding() {
    // F32/F16/BF16 rows of lengths around the kernels' 16- and 32-value steps.
    let mut rng = Rng(0xfeed_beef_1234_5678);
    for ty in [GgmlType::F32, GgmlType::F16, GgmlType::BF16] {
        for n in [1usize, 7, 15, 16, 17, 31, 32, 33, 100, 257, 1024] {
            let xs: Vec<f32> = (0..n)
                .map(|_| (rng.next() % 2001) as f32 / 1000.0 - 1.0)
                .collect();
            let ws: Vec<f32> = (0..n)
                .map(|_| (rng.next() % 2001) as f32 / 100.0 - 10.0)
                .collect();
            let mut w = vec![0u8; ty.row_bytes(n).unwrap()];
            quantize_row(ty, &ws, &mut w, None).unwrap();
            let mut act = Vec::new();
            quantize_activation(ty, &xs, &mut act).unwrap();
            let got = vec_dot(ty, n, &w, &act).unwrap();
            let want = vec_dot_scalar(ty, n, &w, &act).unwrap();
            let mut wd = vec![0f32; n];
            dequantize_row_scalar(ty, &w, &mut wd).unwrap();
            let mag: f32 = wd.iter().zip(&xs).map(|(p, q)| (p * q).abs()).sum();
            assert!(
                (got - want).abs() <= 1e-5 * mag + 1e-30,
                "{ty} n {n}: {got} vs {want}"
            );
            let f = vec_dot_f32(ty, n, &w, &xs).unwrap();
            assert!((f - want).abs() <= 1e-5 * mag + 1e-30, "{ty} f32 n {n}");
        }
    }
}
