//! Human-readable byte sizes: `20GiB`, `4MiB`, `500MB`, `1.5G`, plain bytes.

/// Parse a size. Binary suffixes (KiB, MiB, GiB, TiB; K/M/G/T alone are binary too, as in
/// llama.cpp and `ulimit`) and decimal ones (KB, MB, GB, TB); `B` or nothing means bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let unit = unit.trim();
    let mult: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => {
            return Err(format!(
                "size '{s}': unknown unit '{unit}' (use e.g. 20GiB, 4MiB, 500MB or plain bytes)"
            ))
        }
    };
    if num.is_empty() {
        return Err(format!("size '{s}': no number"));
    }
    let bytes = if num.contains('.') {
        let v: f64 = num
            .parse()
            .map_err(|_| format!("size '{s}': '{num}' is not a number"))?;
        let b = v * mult as f64;
        if !b.is_finite() || b >= u64::MAX as f64 {
            return Err(format!("size '{s}' is too large"));
        }
        b as u64
    } else {
        let v: u64 = num
            .parse()
            .map_err(|_| format!("size '{s}': '{num}' is not a number"))?;
        v.checked_mul(mult)
            .ok_or_else(|| format!("size '{s}' is too large"))?
    };
    Ok(bytes)
}

/// `1.50 GiB`-style rendering.
pub fn fmt_size(b: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < U.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b} B")
    } else {
        format!("{v:.2} {}", U[i])
    }
}
