//! Row-major decode kernels for the 32-value nibble types (Q4_0, Q4_1, Q5_0) on AVX-512: eight
//! rows a step, each row read as groups of four whole blocks.
//!
//! The eight-row kernels of these types read eight rows side by side, one 18-22-byte block of
//! each per step, and transpose the eight rows' bytes and gather their scales every step; over
//! row-major memory (the `mmap` expert cache's and `--no-repack`'s layout) that read 0.78-0.87
//! of the memory bandwidth on the Xeon of 2026-11-23, against 0.9-1.0 for the same kernels over
//! the packed layout (quant/README.md). Here each step reads one 72-88-byte group of four
//! blocks from each of eight rows, as two halves of four: per row one word permute puts a block
//! in each 16-byte lane and `vpdpbusd` sums every block's products against the activation laid
//! out the same way; a half's four rows' partial sums are reduced together so that lane
//! `4j + r` holds row `r`'s block `j`. The float steps are then the eight-row kernels', per row
//! and in block order: `d_w·d_a` rounded, one FMA of it and the block's integer sum into the
//! row's sum (Q4_1: and one FMA of `m_w·s_a` into a second sum, the two added at the end), so
//! every row has the same bits as in the eight-row kernels — and as in the packed layout and in
//! prefill (`tests/rows.rs`, `tests/interleaved.rs`).
//!
//! Hints: each row `AHEAD` (352) bytes ahead into L1, and from that far before a row's end the
//! row eight on (the next group of eight rows, which the thread reads next); rows under 3 KiB
//! also hint the next group of eight rows into L2 as one stream. Until 2026-11-24 the kernel
//! took four rows a step and hinted only that stream, and read 0.81-0.93 of the triad; the
//! access pattern, not the arithmetic, was what held it there (quant/README.md, "eight rows a
//! step, hinted per row"). Kernel bench, rows of 8192, all threads ÷ the STREAM triad, ten
//! alternating runs against the four-row kernel: Q5_0 0.93-1.04 (median 1.01) against
//! 0.84-0.92 (0.895), Q4_0 0.95-1.01 (0.99) against 0.82-0.98 (0.92), Q4_1 1.03-1.08 (1.055)
//! against 0.86-1.01 (0.97).
//!
//! Q5_0 takes its nibbles from its group's first and last 64 bytes with two single-source word
//! permutes (which LLVM merges into one `vpermt2w`), its fifth bits straight into two 64-bit byte
//! masks built in general registers from four reads and four `pext` (no `qh` permute, no bit
//! shuffles; in cache 1.28x the vector form, quant/README.md "Q5_0's fifth bits as masks"), and
//! its scales, which lie in both of a row's loads, by one `vpgatherdd` a half (with eight rows a
//! step, the masked permute a row that Q4_0 and Q4_1 keep left LLVM short of mask registers:
//! in cache 0.88 of the four-row kernel's speed with them, 0.95 with the gather).
//!
//! Only whole groups of four blocks go through the vector steps; a row's last `nb mod 4`
//! blocks are summed by scalar code with the same float steps.

use crate::common::f16_at;

/// An activation laid out for the row-major kernels here (`rows8`), once per activation
/// (decode dots it with every row of several matrices): its whole groups of four blocks with
/// each block's values 0..15 in 16-byte lane `j` of one 64-byte vector and its values 16..31 in
/// lane `j` of the next, and the per-block numbers each four times (lanes `4j..4j+3`, one per
/// row of a half): `d` as f32, and the block sums Σq (Q8_0, for Q4_0's and Q5_0's offsets) or
/// `s` as f32 (Q8_1, for Q4_1's).
// Read only by the x86-64 kernels (elsewhere `wanted` is false and none is made).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub struct Lanes {
    /// Made from Q8_1 blocks (`s` set), not Q8_0 (`sum` set).
    q8_1: bool,
    halves: Vec<i8>,
    d: Vec<f32>,
    sum: Vec<i32>,
    s: Vec<f32>,
}

impl Lanes {
    /// Whether the kernels that take a [`Lanes`] run on this CPU (the AVX-512 tier).
    pub fn wanted() -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            crate::common::has_avx512()
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    }

    /// From a Q8_0 activation prepared by [`crate::q8_0::PreparedQ8::new`].
    pub fn from_q8_0(p: &crate::q8_0::PreparedQ8) -> Self {
        let groups = p.blocks() / 4;
        let mut halves = Vec::with_capacity(groups * 128);
        for g in p.qs[..groups * 128].chunks_exact(128) {
            for h in 0..2 {
                for b in g.chunks_exact(32) {
                    halves.extend_from_slice(&b[16 * h..16 * h + 16]);
                }
            }
        }
        Lanes {
            q8_1: false,
            halves,
            d: p.d[..groups * 4].iter().flat_map(|&d| [d; 4]).collect(),
            sum: p.sum[..groups * 4].iter().flat_map(|&s| [s; 4]).collect(),
            s: Vec::new(),
        }
    }

    /// From Q8_1 blocks (whole blocks of `a`; a trailing partial block is ignored).
    pub fn from_q8_1(a: &[u8]) -> Self {
        let bb = crate::q8_1::BLOCK_BYTES;
        let groups = a.len() / bb / 4;
        let mut halves = Vec::with_capacity(groups * 128);
        let mut d = Vec::with_capacity(groups * 16);
        let mut s = Vec::with_capacity(groups * 16);
        for g in a[..groups * 4 * bb].chunks_exact(4 * bb) {
            for h in 0..2 {
                for b in g.chunks_exact(bb) {
                    halves.extend(b[4 + 16 * h..4 + 16 * h + 16].iter().map(|&q| q as i8));
                }
            }
            for b in g.chunks_exact(bb) {
                d.extend([f16_at(b, 0); 4]);
                s.extend([f16_at(b, 2); 4]);
            }
        }
        Lanes {
            q8_1: true,
            halves,
            d,
            sum: Vec::new(),
            s,
        }
    }

    /// Whole groups of four blocks held.
    pub fn groups(&self) -> usize {
        self.halves.len() / 128
    }

    /// The lanes a Q4_0 or Q5_0 call over row groups (`nb` blocks a row, Q8_0 activation
    /// `prep`) computes with: none for packed (`il`) groups or where the kernels do not run,
    /// else `given`, or ones made from `prep` (kept in `own`). Panics, naming `name`, when they
    /// are too short or were made from Q8_1 blocks. (Called from x86-64 code only.)
    #[cfg(target_arch = "x86_64")]
    pub(crate) fn for_q8_0<'a>(
        given: Option<&'a Lanes>,
        own: &'a mut Option<Lanes>,
        il: bool,
        nb: usize,
        prep: &crate::q8_0::PreparedQ8,
        name: &str,
    ) -> Option<&'a Lanes> {
        Self::pick(given, own, il, (nb, false), name, || Self::from_q8_0(prep))
    }

    /// [`Lanes::for_q8_0`] for a Q4_1 call: made from the Q8_1 blocks `a`.
    pub(crate) fn for_q8_1<'a>(
        given: Option<&'a Lanes>,
        own: &'a mut Option<Lanes>,
        il: bool,
        nb: usize,
        a: &[u8],
        name: &str,
    ) -> Option<&'a Lanes> {
        Self::pick(given, own, il, (nb, true), name, || Self::from_q8_1(a))
    }

    /// What [`Lanes::for_q8_0`] and [`Lanes::for_q8_1`] share: `nb` blocks a row, `q8_1` the
    /// activation type the lanes must come from.
    fn pick<'a>(
        given: Option<&'a Lanes>,
        own: &'a mut Option<Lanes>,
        il: bool,
        (nb, q8_1): (usize, bool),
        name: &str,
        make: impl FnOnce() -> Lanes,
    ) -> Option<&'a Lanes> {
        // Rows so long that a half's block offsets (Q5_0's gather, `rows8`) leave an i32 go to
        // the eight-row kernels (at 22 bytes a block: rows of more than 24 million blocks).
        if il || !Self::wanted() || nb > i32::MAX as usize / (4 * crate::q5_0::BLOCK_BYTES) {
            return None;
        }
        let lanes: &Lanes = match given {
            Some(l) => l,
            None => own.insert(make()),
        };
        assert_eq!(
            lanes.q8_1, q8_1,
            "{name}: activation lanes made from the other activation type"
        );
        assert!(
            lanes.groups() >= nb / 4,
            "{name}: activation lanes hold {} groups of four blocks, rows need {}",
            lanes.groups(),
            nb / 4
        );
        Some(lanes)
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) use x86::{rows8, Q4_0, Q4_1, Q5_0};

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::*;
    use std::arch::x86_64::*;

    /// Which type a kernel instance reads (const generic parameter).
    pub(crate) const Q4_0: u8 = 0;
    pub(crate) const Q4_1: u8 = 1;
    pub(crate) const Q5_0: u8 = 2;

    /// Bytes of one block.
    const fn block_bytes(kind: u8) -> usize {
        match kind {
            Q4_0 => crate::q4_0::BLOCK_BYTES,
            Q4_1 => crate::q4_1::BLOCK_BYTES,
            _ => crate::q5_0::BLOCK_BYTES,
        }
    }

    /// Where a block's 16 nibble bytes start.
    const fn nibbles_at(kind: u8) -> usize {
        match kind {
            Q4_0 => 2,
            Q4_1 => 4,
            _ => 6,
        }
    }

    /// Where a group's second load, `z1`, starts (the first, `z0`, is its first 64 bytes): Q5_0
    /// loads its last 64 bytes (two single-source permutes take its nibbles), the others their
    /// last 32 (one two-source permute; 64 there measured slower, Q4_1 by a sixth in cache).
    const fn z1_at(kind: u8) -> usize {
        if kind == Q5_0 {
            4 * block_bytes(kind) - 64
        } else {
            4 * block_bytes(kind) - 32
        }
    }

    /// The word index, for `vpermt2w`/`vpermi2w` over `z0` (words 0..32) and `z1` (32..), of the
    /// word at (even) byte `byte` of a group: from `z0` where it lies there.
    const fn word_at(kind: u8, byte: usize) -> u16 {
        if byte + 2 <= 64 {
            (byte / 2) as u16
        } else {
            word_in_z1(kind, byte)
        }
    }

    /// The word index, as [`word_at`], of the word at (even) byte `byte` read from `z1`.
    const fn word_in_z1(kind: u8, byte: usize) -> u16 {
        (32 + (byte - z1_at(kind)) / 2) as u16
    }

    /// Q5_0: blocks whose nibbles lie wholly in `z0` (the rest come from `z1`).
    const Q5_0_FROM_Z0: usize = (64 - nibbles_at(Q5_0) - 16) / block_bytes(Q5_0) + 1;

    /// Permute indices putting block `j`'s 16 nibble bytes in 16-byte lane `j` (for Q5_0 a
    /// lane's words all from one load, `vpermw` reading the low five bits), then the scales:
    /// block `j`'s `d` at word lane `4j + r` (filled row by row), Q4_1's `m` at `16 + 4j + r`
    /// (the other types use lanes 0..15 only).
    const fn indices(kind: u8) -> [[u16; 32]; 2] {
        let bb = block_bytes(kind);
        let mut t = [[0u16; 32]; 2];
        let mut l = 0;
        while l < 32 {
            let j = l / 8;
            let byte = bb * j + nibbles_at(kind) + 2 * (l % 8);
            t[0][l] = if kind == Q5_0 && j >= Q5_0_FROM_Z0 {
                word_in_z1(kind, byte)
            } else {
                word_at(kind, byte)
            };
            let m = if kind == Q4_1 { 2 * (l / 16) } else { 0 };
            t[1][l] = word_at(kind, bb * ((l % 16) / 4) + m);
            l += 1;
        }
        t
    }

    /// Lane `4j + r` of the result: the total of `g[r]`'s 16-byte lane `j` (exact i32 sums).
    ///
    /// # Safety
    ///
    /// Inlined into a caller with AVX-512 F; registers only.
    #[inline(always)]
    unsafe fn reduce_rows(g: [__m512i; 4]) -> __m512i {
        let ab = _mm512_add_epi32(
            _mm512_unpacklo_epi32(g[0], g[1]),
            _mm512_unpackhi_epi32(g[0], g[1]),
        );
        let cd = _mm512_add_epi32(
            _mm512_unpacklo_epi32(g[2], g[3]),
            _mm512_unpackhi_epi32(g[2], g[3]),
        );
        _mm512_add_epi32(_mm512_unpacklo_epi64(ab, cd), _mm512_unpackhi_epi64(ab, cd))
    }

    /// How far ahead of each row's current group (bytes) [`rows8`] hints that row into L1: four
    /// groups of Q5_0, as far as the Q5_K eight-row kernel hints (two super-blocks). Between
    /// 264 and 528 bytes measured alike (paired passes from memory, Q5_0, 2026-11-24).
    const AHEAD: usize = 352;

    /// `out[r] = w_r · a` for eight rows `rb` bytes apart, `nb` blocks each, of type `KIND`,
    /// against the activation `a` (Q8_0 blocks for Q4_0 and Q5_0, Q8_1 for Q4_1) and its
    /// [`Lanes`]: bit-identical to that row's lane of the type's eight-row kernel (see the module
    /// documentation). The eight rows go a group at a time, as two halves of four rows
    /// (`reduce_rows` makes a half's sixteen lanes); each row is hinted [`AHEAD`] bytes ahead
    /// into L1.
    ///
    /// # Safety
    ///
    /// The CPU must support the AVX-512 features `has_avx512()` checks (and AVX2, FMA, F16C);
    /// `w` must be readable for eight rows of `nb` blocks `rb` bytes apart; `a` must hold `nb`
    /// blocks and `lanes` be made from it, with `nb / 4` groups.
    #[target_feature(
        enable = "avx2,fma,f16c,bmi2,avx512f,avx512bw,avx512vl,avx512vnni,avx512bitalg,gfni"
    )]
    pub(crate) unsafe fn rows8<const KIND: u8>(
        w: *const u8,
        rb: usize,
        nb: usize,
        a: &[u8],
        lanes: &Lanes,
        out: &mut [f32; 8],
    ) {
        let bb = block_bytes(KIND);
        let gbytes = 4 * bb;
        let idx = indices(KIND);
        let idx_n = _mm512_loadu_si512(idx[0].as_ptr() as *const _);
        // Q4_0's and Q4_1's scales are permuted into place row by row (`idx_d`); Q5_0's, which
        // lie in both of a row's loads, are gathered, a half's sixteen at once: lane `4j + r` of
        // `vidx` is where row `r`'s block `j` starts (from the half's first row, at most
        // `3·rb + 3·bb`, inside an i32: `Lanes::pick`), and `idx_dw` takes the low word (`d`)
        // of each gathered dword into word lanes 0..15.
        let idx_d = _mm512_loadu_si512(idx[1].as_ptr() as *const _);
        let mut starts = [0i32; 16];
        let mut low_words = [0u16; 32];
        for l in 0..16 {
            starts[l] = ((l % 4) * rb + (l / 4) * bb) as i32;
            low_words[l] = 2 * l as u16;
        }
        let vidx = _mm512_loadu_si512(starts.as_ptr() as *const _);
        let idx_dw = _mm512_loadu_si512(low_words.as_ptr() as *const _);
        // Q5_0: the word lanes whose nibbles come from `z1`.
        let k_z1: __mmask32 = !0 << (8 * Q5_0_FROM_Z0);
        let m4 = _mm512_set1_epi8(0x0F);
        let x10 = _mm512_set1_epi8(0x10);
        // GF(2) affine matrices: bits 4..7 of each byte to bits 0..3 (the high nibble), and bits
        // 0..3 kept (the low nibble; Q5_0's, where an `and` would let LLVM turn the masked add
        // of its fifth bits into three instructions).
        let high = _mm512_set1_epi64(0x1020_4080_0000_0000);
        let low = _mm512_set1_epi64(0x0102_0408_0000_0000);
        let zero = _mm512_setzero_si512();
        let groups = nb / 4;
        debug_assert!(lanes.groups() >= groups);
        let group_stream = nb * bb < crate::common::x86::ROW_HINTS_FROM;
        // Each half's sums: `d_w·d_a` and the integer sums (Q4_1: and `m_w`) FMA'd in.
        let mut acc = [_mm_setzero_ps(); 2];
        let mut accm = [_mm_setzero_ps(); 2];
        // Each group's `d_w·d_a` and integer sums (Q4_1: and `m_w`) go through a ring of four
        // slots (a half each) and into the rows' sums `LAG` groups later: the FMAs then read
        // each block's four rows with a plain load from memory the stores have long reached,
        // where taking lanes out of registers cost two shuffles a block (kernel bench, rows of
        // 8192, five alternating rounds: Q4_1 0.86 -> 0.93 of the triad, Q4_0 0.87 -> 0.90).
        const LAG: usize = 2;
        #[repr(align(64))]
        struct Ring([[[f32; 48]; 2]; 4]);
        let mut ring = Ring([[[0.0; 48]; 2]; 4]);
        let rp = ring.0.as_mut_ptr() as *mut f32;
        // Runs `$body` for half 0, then half 1, with `$h` a constant (a loop left LLVM an
        // indexed array of accumulators in memory).
        macro_rules! each_half {
            ($h:ident, $body:block) => {{
                {
                    let $h: usize = 0;
                    $body
                }
                {
                    let $h: usize = 1;
                    $body
                }
            }};
        }
        // Group `e`'s four blocks into each row's sum(s), in block order: the eight-row kernels'
        // FMAs. Volatile reads, or LLVM forwards the stored vectors and takes the lanes out with
        // shuffles again. (A macro, not a closure: a closure is a function of its own, without
        // the target features, and may be left out of line.)
        macro_rules! add_group {
            ($e:expr) => {{
                let e: usize = $e;
                each_half!(h, {
                    let slot = rp.add(96 * (e % 4) + 48 * h) as *const f32;
                    for j in 0..4 {
                        let dj = std::ptr::read_volatile(slot.add(4 * j) as *const __m128);
                        let fj = std::ptr::read_volatile(slot.add(16 + 4 * j) as *const __m128);
                        acc[h] = _mm_fmadd_ps(dj, fj, acc[h]);
                        if KIND == Q4_1 {
                            let mj =
                                std::ptr::read_volatile(slot.add(32 + 4 * j) as *const __m128);
                            let sj = _mm_loadu_ps(lanes.s.as_ptr().add(16 * e + 4 * j));
                            accm[h] = _mm_fmadd_ps(mj, sj, accm[h]);
                        }
                    }
                });
            }};
        }
        for e in 0..groups {
            // Each row's stream `AHEAD` bytes ahead into L1 (two lines: a group spans at most
            // two); from `AHEAD` bytes before a row's end, the start of the row eight on (the
            // next call's, where the rows past these are read next; past the matrix a hint never
            // faults, and its address is formed with `wrapping_add`).
            let at = crate::common::x86::hint_at(e * gbytes, AHEAD, nb * bb, rb);
            for r in 0..8 {
                let p = w.wrapping_add(r * rb + at);
                _mm_prefetch(p as *const i8, _MM_HINT_T0);
                _mm_prefetch(p.wrapping_add(64) as *const i8, _MM_HINT_T0);
            }
            // Rows under `ROW_HINTS_FROM` bytes: also the next group of eight rows, this step's
            // share of it, into L2 as one sequential stream (what the kernel did for every row
            // length before 2026-11-24). Kernel bench, all threads ÷ triad, two alternating
            // rounds a length (Q4_0 / Q4_1 / Q5_0): rows of 1024 and 2048 values (at most 1408
            // bytes) read 0.68-0.88 with the per-row hints alone against 0.86-0.97 with both;
            // 4096 (2304-2816 bytes) about alike; 6144 (3456-4224 bytes) and up the per-row hints
            // alone ahead (8192: 0.98-1.06 against 0.86-0.98; 32768: 1.04-1.08 against
            // 0.88-0.98).
            if group_stream {
                crate::common::x86::prefetch_next_group(w, rb, 8 * gbytes, e);
            }
            let q = lanes.halves.as_ptr().add(128 * e);
            let alo = _mm512_loadu_si512(q as *const _);
            let ahi = _mm512_loadu_si512(q.add(64) as *const _);
            each_half!(h, {
                let mut g = [zero; 4];
                let mut sd = idx_d;
                for (r, gr) in g.iter_mut().enumerate() {
                    let gb = w.add((4 * h + r) * rb + e * gbytes);
                    let z0 = _mm512_loadu_si512(gb as *const _);
                    let v = if KIND == Q5_0 {
                        let z1 = _mm512_loadu_si512(gb.add(z1_at(KIND)) as *const _);
                        _mm512_mask_permutexvar_epi16(
                            _mm512_permutexvar_epi16(idx_n, z0),
                            k_z1,
                            idx_n,
                            z1,
                        )
                    } else {
                        let z1 = _mm512_castsi256_si512(_mm256_loadu_si256(
                            gb.add(z1_at(KIND)) as *const _
                        ));
                        _mm512_permutex2var_epi16(z0, idx_n, z1)
                    };
                    let hi = _mm512_gf2p8affine_epi64_epi8::<0>(v, high);
                    let (lo, hi) = if KIND == Q5_0 {
                        // The fifth bits as byte masks: bit `16j + i` of `klo` is bit `i` of
                        // block `j`'s `qh` (its values 0..15, lane `j` of `lo`), of `khi` bit
                        // `16 + i`. `x01` holds blocks 0 and 1's `qh` (block `j`'s at byte
                        // `bb·j + 2` of the group; the 8-byte read four bytes before block 1's
                        // has it in its upper half), `x23` blocks 2 and 3's; `pext` takes their
                        // low or high halves (on port 1, which 512-bit code leaves idle: from
                        // memory 2-4 % faster than eight reads, `and`s and `or`s).
                        let at = |o: usize| std::ptr::read_unaligned(gb.add(o) as *const u64);
                        let at32 =
                            |o: usize| std::ptr::read_unaligned(gb.add(o) as *const u32) as u64;
                        let qh = |j: usize| bb * j + 2;
                        const HI: u64 = 0xFFFF_FFFF_0000_0000;
                        const LO16: u64 = 0x0000_FFFF_0000_FFFF;
                        let x01 = at32(qh(0)) | (at(qh(1) - 4) & HI);
                        let x23 = at32(qh(2)) | (at(qh(3) - 4) & HI);
                        let klo: __mmask64 = _pext_u64(x01, LO16) | (_pext_u64(x23, LO16) << 32);
                        let khi: __mmask64 = _pext_u64(x01, !LO16) | (_pext_u64(x23, !LO16) << 32);
                        let lo = _mm512_gf2p8affine_epi64_epi8::<0>(v, low);
                        (
                            _mm512_mask_add_epi8(lo, klo, lo, x10),
                            _mm512_mask_add_epi8(hi, khi, hi, x10),
                        )
                    } else {
                        (_mm512_and_si512(v, m4), hi)
                    };
                    *gr = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(zero, lo, alo), hi, ahi);
                    // Q4_0's and Q4_1's scales into their lanes by a masked single-source
                    // `vpermw` (all lie in `z0`; lanes outside the mask keep what `sd` holds —
                    // the indices of the rows still to come, or earlier rows' scales).
                    if KIND != Q5_0 {
                        sd = _mm512_mask_permutexvar_epi16(sd, 0x1111_1111 << r, idx_d, z0);
                    }
                }
                let t = reduce_rows(g);
                if KIND == Q5_0 {
                    sd = _mm512_permutexvar_epi16(
                        idx_dw,
                        _mm512_i32gather_epi32::<1>(
                            vidx,
                            w.add(4 * h * rb + e * gbytes) as *const _,
                        ),
                    );
                }
                let dw = _mm512_cvtph_ps(_mm512_castsi512_si256(sd));
                let d = _mm512_mul_ps(dw, _mm512_loadu_ps(lanes.d.as_ptr().add(16 * e)));
                let slot = rp.add(96 * (e % 4) + 48 * h);
                _mm512_store_ps(slot, d);
                let f = if KIND == Q4_1 {
                    _mm512_store_ps(
                        slot.add(32),
                        _mm512_cvtph_ps(_mm512_extracti64x4_epi64::<1>(sd)),
                    );
                    _mm512_cvtepi32_ps(t)
                } else {
                    let sum = _mm512_loadu_si512(lanes.sum.as_ptr().add(16 * e) as *const _);
                    // The weights' offset: 16 (Q5_0) or 8 (Q4_0) times the activation's sum.
                    let off = if KIND == Q5_0 {
                        _mm512_slli_epi32::<4>(sum)
                    } else {
                        _mm512_slli_epi32::<3>(sum)
                    };
                    _mm512_cvtepi32_ps(_mm512_sub_epi32(t, off))
                };
                _mm512_store_ps(slot.add(16), f);
            });
            if e >= LAG {
                add_group!(e - LAG);
            }
        }
        for e in groups.saturating_sub(LAG)..groups {
            add_group!(e);
        }
        let mut sums = [0f32; 8];
        let mut sums_m = [0f32; 8];
        for h in 0..2 {
            _mm_storeu_ps(sums.as_mut_ptr().add(4 * h), acc[h]);
            _mm_storeu_ps(sums_m.as_mut_ptr().add(4 * h), accm[h]);
        }
        for (r, o) in out.iter_mut().enumerate() {
            let row = std::slice::from_raw_parts(w.add(r * rb), nb * bb);
            for b in 4 * groups..nb {
                tail_block::<KIND>(
                    &row[b * bb..(b + 1) * bb],
                    a,
                    b,
                    &mut sums[r],
                    &mut sums_m[r],
                );
            }
            *o = if KIND == Q4_1 {
                sums[r] + sums_m[r]
            } else {
                sums[r]
            };
        }
    }

    /// Block `b` of a row (`wb`, its bytes) added into the row's sums with the vector steps' float
    /// operations (for Q4_0 and Q5_0 `a` is the Q8_0 activation, for Q4_1 the Q8_1 one).
    fn tail_block<const KIND: u8>(wb: &[u8], a: &[u8], b: usize, acc: &mut f32, accm: &mut f32) {
        let nib = &wb[nibbles_at(KIND)..nibbles_at(KIND) + 16];
        let qh = u32::from_le_bytes([wb[2], wb[3], wb[4], wb[5]]);
        let value = |i: usize| -> i32 {
            let q = if i < 16 {
                nib[i] & 0x0F
            } else {
                nib[i - 16] >> 4
            } as i32;
            if KIND == Q5_0 {
                q | (((qh >> i) & 1) as i32) << 4
            } else {
                q
            }
        };
        if KIND == Q4_1 {
            let ab = &a[b * crate::q8_1::BLOCK_BYTES..(b + 1) * crate::q8_1::BLOCK_BYTES];
            let t: i32 = (0..32).map(|i| value(i) * ab[4 + i] as i8 as i32).sum();
            let d = f16_at(wb, 0) * f16_at(ab, 0);
            *acc = d.mul_add(t as f32, *acc);
            *accm = f16_at(wb, 2).mul_add(f16_at(ab, 2), *accm);
        } else {
            let ab = &a[b * crate::q8_0::BLOCK_BYTES..(b + 1) * crate::q8_0::BLOCK_BYTES];
            let q = |i: usize| ab[2 + i] as i8 as i32;
            let t: i32 = (0..32).map(|i| value(i) * q(i)).sum();
            let sum: i32 = (0..32).map(q).sum();
            let off = if KIND == Q5_0 { 16 } else { 8 } * sum;
            let d = f16_at(wb, 0) * f16_at(ab, 0);
            *acc = d.mul_add((t - off) as f32, *acc);
        }
    }
}
