//! How much of a row-major decode kernel's compute this machine's memory system hides: a
//! synthetic kernel with the row-major nibble kernels' access pattern (four rows side by side,
//! one 88-byte group of each a step — Q5_0's groups at rows of 8192 values — and the next eight
//! rows hinted into L2, a group's share a step, as `nib4` does) and a tunable amount of
//! register-only work a row and group (a chain of `vpermd`), read from a working set much
//! larger than the caches. For each amount of work it prints the kernel's speed in cache (one
//! thread, fastest of many samples) and from memory (all threads) as a ratio to a STREAM-like
//! triad run right before each pass, as the kernel bench does; with the hint and without.
//!
//! `cargo run --release -p quant --example overlap [ROUNDS]` (default 15 rounds; in each round
//! the hinted and the unhinted pass run once, so they share the machine's slow and fast
//! stretches;
//! `QUANT_BENCH_MIB` sets the working set, default 512). x86-64 with AVX2 only.
//!
//! What it showed on the Intel Xeon VM (2026-11-24, two runs of 45 rounds): no work, 1.03 of
//! the triad (a read moves fewer bytes than the triad, which also writes); work that leaves
//! 30-35 GB/s a core in cache, 0.97-0.98; 20 GB/s, 0.85-0.86; 15 GB/s (where the row-major
//! Q5_0 kernel computes in a busy stretch), 0.80-0.83; 12.5 GB/s, 0.75-0.76 — while one
//! thread's triad is 12-14 GB/s.
//! About a third of the compute time is not hidden, so a row-major kernel reaches 0.85 only
//! at about 20 GB/s a core in cache (quant/README.md, "why row-major Q5_0 sits at 0.85").

#[cfg(target_arch = "x86_64")]
mod x86 {
    use rayon::prelude::*;
    use std::arch::x86_64::*;
    use std::time::Instant;

    /// Bytes of one group (four Q5_0 blocks) and of one row (8192 values).
    const GROUP: usize = 88;
    const ROW: usize = 256 * 22;
    const GROUPS: usize = ROW / GROUP;

    /// Four rows `ROW` bytes apart, one group of each a step, `work` dependent `vpermd` a row
    /// and group; with `hint`, `hint_bytes` bytes from `hint` into L2, spread evenly over the
    /// steps. Returns a sum of what was read, so nothing is optimized away.
    ///
    /// # Safety
    ///
    /// AVX2 must be available; `w` must be readable for four rows.
    #[target_feature(enable = "avx2")]
    unsafe fn rows4(w: *const u8, hint: Option<(*const u8, usize)>, work: usize) -> __m256i {
        let mut acc = [_mm256_setzero_si256(); 4];
        // Opaque to the compiler, which would otherwise fold the chain of constant shuffles.
        let idx = std::hint::black_box(_mm256_setr_epi32(3, 1, 4, 1, 5, 2, 6, 5));
        for e in 0..GROUPS {
            if let Some((h, bytes)) = hint {
                let per = bytes / GROUPS;
                let at = h.wrapping_add(e * per);
                let mut k = 0;
                while k < per {
                    _mm_prefetch(at.wrapping_add(k) as *const i8, _MM_HINT_T1);
                    k += 64;
                }
            }
            for (r, a) in acc.iter_mut().enumerate() {
                let g = w.add(r * ROW + e * GROUP);
                let x0 = _mm256_loadu_si256(g as *const _);
                let x1 = _mm256_loadu_si256(g.add(32) as *const _);
                let x2 = _mm256_loadu_si256(g.add(GROUP - 32) as *const _);
                let mut v = _mm256_xor_si256(_mm256_xor_si256(x0, x1), x2);
                for _ in 0..work {
                    v = _mm256_permutevar8x32_epi32(v, idx);
                }
                *a = _mm256_add_epi64(*a, _mm256_sad_epu8(v, _mm256_setzero_si256()));
            }
        }
        _mm256_add_epi64(
            _mm256_add_epi64(acc[0], acc[1]),
            _mm256_add_epi64(acc[2], acc[3]),
        )
    }

    /// Eight rows at `r8` (readable), as two calls of [`rows4`] that hint the next eight rows.
    ///
    /// # Safety
    ///
    /// AVX2 must be available.
    #[target_feature(enable = "avx2")]
    unsafe fn rows8(r8: &[u8], hint: bool, work: usize) -> u64 {
        let p = r8.as_ptr();
        let next = p.wrapping_add(8 * ROW);
        let h = |i: usize| hint.then(|| (next.wrapping_add(4 * ROW * i), 4 * ROW));
        let s = _mm256_add_epi64(rows4(p, h(0), work), rows4(p.add(4 * ROW), h(1), work));
        let mut o = [0u64; 4];
        _mm256_storeu_si256(o.as_mut_ptr() as *mut _, s);
        o.iter().fold(0, |a, b| a.wrapping_add(*b))
    }

    /// GB/s of one pass over `w` (tasks of 32 rows across the threads, as the kernel bench).
    fn pass(w: &[u8], hint: bool, work: usize) -> f64 {
        let t = Instant::now();
        let s = w
            .par_chunks(32 * ROW)
            .map(|task| {
                task.chunks_exact(8 * ROW)
                    // SAFETY: AVX2 was checked in `main`; each chunk holds eight whole rows.
                    .map(|r8| unsafe { rows8(r8, hint, work) })
                    .fold(0u64, u64::wrapping_add)
            })
            .reduce(|| 0, u64::wrapping_add);
        std::hint::black_box(s);
        w.len() as f64 / t.elapsed().as_secs_f64() / 1e9
    }

    /// GB/s of one pass of a[i] = b[i] + 3 c[i] (12 bytes an element counted, as the bench).
    fn triad(a: &mut [f32], b: &[f32], c: &[f32]) -> f64 {
        let t = Instant::now();
        a.par_chunks_mut(1 << 16)
            .zip(b.par_chunks(1 << 16))
            .zip(c.par_chunks(1 << 16))
            .for_each(|((a, b), c)| {
                for i in 0..a.len() {
                    a[i] = b[i] + 3.0 * c[i];
                }
            });
        std::hint::black_box(&a[a.len() / 2]);
        (12 * a.len()) as f64 / t.elapsed().as_secs_f64() / 1e9
    }

    fn median(v: &mut [f64]) -> f64 {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    }

    pub fn main() {
        if !is_x86_feature_detected!("avx2") {
            eprintln!("overlap: needs AVX2");
            std::process::exit(1);
        }
        let rounds: usize = std::env::args()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(15)
            .max(1);
        let mib: usize = std::env::var("QUANT_BENCH_MIB")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(512);
        let rows = ((mib << 20) / ROW / 32 * 32).max(32);
        let w: Vec<u8> = (0..rows * ROW).map(|i| (i * 7 + i / 5) as u8).collect();
        let n = (mib << 20) / 12;
        let (mut a, b, c) = (vec![0f32; n], vec![1f32; n], vec![2f32; n]);
        let works = [0usize, 4, 8, 12, 16, 20];
        println!(
            "{} MiB of rows, {} threads, {rounds} rounds; ratio = pass GB/s / triad GB/s right before it",
            (rows * ROW) >> 20,
            rayon::current_num_threads()
        );
        println!(
            "{:>5} | {:>14} | {:>22} | {:>22}",
            "work", "in cache GB/s", "hint: median [q25-q75]", "none: median [q25-q75]"
        );
        for work in works {
            // In cache: 32 rows (180 KB), one thread, fastest of 300 samples of four passes.
            let small = &w[..32 * ROW];
            let mut best = f64::MAX;
            for _ in 0..300 {
                let t = Instant::now();
                for _ in 0..4 {
                    for r8 in small.chunks_exact(8 * ROW) {
                        // SAFETY: AVX2 checked above; eight whole rows.
                        std::hint::black_box(unsafe { rows8(r8, false, work) });
                    }
                }
                best = best.min(t.elapsed().as_secs_f64() / 4.0);
            }
            let mut r = [Vec::new(), Vec::new()];
            for _ in 0..rounds {
                for (i, hint) in [true, false].into_iter().enumerate() {
                    let t = triad(&mut a, &b, &c);
                    r[i].push(pass(&w, hint, work) / t);
                }
            }
            let q = |v: &mut Vec<f64>| {
                let m = median(v);
                format!(
                    "{m:.3} [{:.3}-{:.3}]",
                    v[v.len() / 4],
                    v[(3 * v.len() / 4).min(v.len() - 1)]
                )
            };
            println!(
                "{work:>5} | {:>14.1} | {:>22} | {:>22}",
                small.len() as f64 / best / 1e9,
                q(&mut r[0]),
                q(&mut r[1])
            );
        }
    }
}

fn main() {
    #[cfg(target_arch = "x86_64")]
    x86::main();
    #[cfg(not(target_arch = "x86_64"))]
    eprintln!("overlap: x86-64 only");
}
