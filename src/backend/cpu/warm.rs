//! Keeping the rayon pool's workers awake through a forward pass.
//!
//! A decode step is a few dozen short parallel regions (each matmul or group of matmuls, the
//! attention heads) with a little serial work between them. Between two regions rayon's idle
//! workers go to sleep after a short spin, and the next region waits for the kernel to wake
//! them — on the 2-core Intel Xeon VM of 2026-11-23, 18-190 µs on average per region (33
//! regions a token on a 1.66 B Q4_0 file), and some regions ran on one thread alone.
//! [`with_warm_pool`] keeps them polling for work instead: the second thread then joined each
//! region 2-4 µs after it began, and decode ran faster in 13 of 15 alternating pairs of runs
//! (Q4_0 and Q4_K_M; README, "Speed").
//!
//! The polling is a scoped job per extra worker that runs pending pool work itself
//! (`rayon::yield_now`) until the pass ends. It never blocks anything: a worker that picks one
//! up on the caller's own thread, or while it is already polling, drops it at once, and one
//! that finds no work for [`IDLE_LIMIT`] goes back to rayon's normal sleep — so a worker that
//! took the job while inside another job's join (possible with more than two threads) holds that
//! join up for at most this long.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How long a polling worker waits with nothing to do before it sleeps as rayon would. Longer
/// than the serial stretches between a decode step's regions (tens of µs), short enough that a
/// long serial step (sampling, printing) does not keep a core busy for nothing.
pub const IDLE_LIMIT: Duration = Duration::from_millis(2);

thread_local! {
    /// Whether this thread is inside a polling job already (a nested one returns at once).
    static POLLING: Cell<bool> = const { Cell::new(false) };
}

/// Run `f` on a rayon worker (this thread, if it is one) while the pool's other workers poll
/// for work, so each parallel region inside `f` starts on every thread at once.
pub fn with_warm_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    let done = AtomicBool::new(false);
    rayon::scope(|s| {
        let home = rayon::current_thread_index();
        for _ in 1..rayon::current_num_threads() {
            let done = &done;
            s.spawn(move |_| poll(done, home));
        }
        let r = f();
        done.store(true, Ordering::Release);
        r
    })
}

/// One worker's polling: run what the pool has until `done` or [`IDLE_LIMIT`] without work.
fn poll(done: &AtomicBool, home: Option<usize>) {
    if rayon::current_thread_index() == home || POLLING.with(|p| p.replace(true)) {
        return;
    }
    // Cleared on the way out, also if a job run here panics.
    struct Clear;
    impl Drop for Clear {
        fn drop(&mut self) {
            POLLING.with(|p| p.set(false));
        }
    }
    let _clear = Clear;
    let mut idle_since: Option<Instant> = None;
    while !done.load(Ordering::Acquire) {
        if rayon::yield_now() == Some(rayon::Yield::Executed) {
            idle_since = None;
            continue;
        }
        let since = *idle_since.get_or_insert_with(Instant::now);
        if since.elapsed() >= IDLE_LIMIT {
            break;
        }
        std::hint::spin_loop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rayon::prelude::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn regions_inside_run_on_every_thread_and_give_the_same_result() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        let (sum, threads) = pool.install(|| {
            with_warm_pool(|| {
                let seen: Vec<AtomicUsize> = (0..3).map(|_| AtomicUsize::new(0)).collect();
                let mut total = 0u64;
                for round in 0..200u64 {
                    total += (0..4096u32)
                        .into_par_iter()
                        .with_max_len(64)
                        .map(|i| {
                            let i = i as u64;
                            if let Some(t) = rayon::current_thread_index() {
                                seen[t].fetch_add(1, Ordering::Relaxed);
                            }
                            // Nested joins, as the matmul bridges make.
                            let (a, b) = rayon::join(|| i * round, || i + round);
                            a ^ b
                        })
                        .sum::<u64>();
                }
                let threads = seen
                    .iter()
                    .filter(|s| s.load(Ordering::Relaxed) > 0)
                    .count();
                (total, threads)
            })
        });
        let want: u64 = (0..200u64)
            .map(|round| (0..4096u64).map(|i| (i * round) ^ (i + round)).sum::<u64>())
            .sum();
        assert_eq!(sum, want);
        assert!(threads >= 2, "work ran on {threads} thread(s) of 3");
    }

    #[test]
    fn returns_when_idle_and_from_outside_the_pool() {
        // Called from a plain thread (the global pool), with a serial stretch longer than
        // IDLE_LIMIT inside: the pollers sleep again and the call still returns.
        let r = with_warm_pool(|| {
            std::thread::sleep(IDLE_LIMIT * 3);
            (0..1000u32).into_par_iter().map(|x| x as u64).sum::<u64>()
        });
        assert_eq!(r, 999 * 1000 / 2);
        // Nested use (a pass inside a pass) neither deadlocks nor polls twice on one thread.
        let r = with_warm_pool(|| with_warm_pool(|| 7));
        assert_eq!(r, 7);
    }

    #[test]
    fn a_panic_inside_reaches_the_caller_and_the_pool_still_works() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pool.install(|| {
                with_warm_pool(|| {
                    (0..4096u32)
                        .into_par_iter()
                        .with_max_len(1)
                        .for_each(|i| assert_ne!(i, 3000, "task {i} fails"))
                })
            })
        }));
        assert!(caught.is_err());
        let r = pool.install(|| {
            with_warm_pool(|| (0..4096u32).into_par_iter().map(u64::from).sum::<u64>())
        });
        assert_eq!(r, 4095 * 4096 / 2);
    }
}
