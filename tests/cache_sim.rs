//! Replacement policies, Belady's optimum and size parsing.

use grok1_quant::cache::sim::{accesses, belady, parse_trace, simulate, Granularity};
use grok1_quant::cache::{parse_size, PolicyKind};

#[test]
fn sizes_parse_with_binary_and_decimal_units() {
    assert_eq!(parse_size("20GiB").unwrap(), 20 << 30);
    assert_eq!(parse_size("4MiB").unwrap(), 4 << 20);
    assert_eq!(parse_size("500MB").unwrap(), 500_000_000);
    assert_eq!(parse_size("12345").unwrap(), 12345);
    assert_eq!(parse_size("1.5KiB").unwrap(), 1536);
    assert_eq!(parse_size("2g").unwrap(), 2 << 30);
    for bad in ["", "GiB", "12 parsecs", "1e9", "99999999999999999999"] {
        assert!(parse_size(bad).is_err(), "{bad}");
    }
}

#[test]
fn lru_thrashes_on_a_cycle_and_belady_does_not() {
    // A cycle of 3 units with room for 2: LRU always evicts the next one needed.
    let acc: Vec<u32> = (0..30).map(|i| i % 3).collect();
    assert_eq!(simulate(&acc, 2, PolicyKind::Lru), 0);
    // Belady keeps one of the pair every other step: 27 accesses after warm-up, half hit.
    let b = belady(&acc, 2);
    assert!(b >= 13, "belady {b}");
    // Everything fits: only compulsory misses.
    assert_eq!(simulate(&acc, 3, PolicyKind::Lru), 27);
    assert_eq!(simulate(&acc, 3, PolicyKind::Lfu), 27);
    assert_eq!(belady(&acc, 3), 27);
}

#[test]
fn lfu_keeps_the_hot_unit_that_lru_drops() {
    // Unit 0 is hot; a scan of cold units between its uses flushes it from LRU.
    let mut acc = Vec::new();
    for i in 0..50u32 {
        acc.push(0);
        acc.push(0);
        acc.push(100 + 2 * i);
        acc.push(101 + 2 * i);
    }
    let lru = simulate(&acc, 2, PolicyKind::Lru);
    let lfu = simulate(&acc, 2, PolicyKind::Lfu);
    assert!(lfu > lru, "lfu {lfu} lru {lru}");
}

#[test]
fn belady_bounds_every_policy_on_random_traces() {
    let mut x = 7u64;
    for cap in [1, 2, 4, 8, 16] {
        let acc: Vec<u32> = (0..3000)
            .map(|_| {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                let r = (x >> 33) % 100;
                // Skewed: a quarter of the units take most accesses.
                (if r < 70 { r % 8 } else { r % 32 }) as u32
            })
            .collect();
        let opt = belady(&acc, cap);
        for p in [PolicyKind::Lru, PolicyKind::Lfu] {
            let h = simulate(&acc, cap, p);
            assert!(h <= opt, "cap {cap} {p:?}: {h} > belady {opt}");
        }
    }
}

#[test]
fn traces_parse_and_group_by_granularity() {
    let t = "{\"batch\":0,\"pos\":0,\"layer\":0,\"experts\":[3,1]}\n\
             {\"batch\":0,\"pos\":1,\"layer\":0,\"experts\":[1,2]}\n\
             {\"batch\":0,\"pos\":0,\"layer\":1,\"experts\":[0,1]}\n";
    let r = parse_trace(t).unwrap();
    assert_eq!(r.len(), 3);
    let (tok, n) = accesses(&r, Granularity::Token);
    assert_eq!(n, 4);
    // Token-major: position 0's layers 0 and 1, then position 1.
    assert_eq!(tok, vec![1, 3, 4, 5, 1, 2]);
    let (bat, _) = accesses(&r, Granularity::Batch);
    assert_eq!(bat, vec![1, 2, 3, 4, 5]);
    let e = parse_trace("{\"batch\":0}\n").unwrap_err();
    assert!(e.contains("line 1"), "{e}");
}
