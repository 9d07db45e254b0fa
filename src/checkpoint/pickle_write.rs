//! The exact byte layout CPython's C pickler (protocol 4, numpy 1.x module paths) gives a numpy
//! array or a `__main__.QuantizedWeight8bit`, as in the Grok-1 release files.
//!
//! The layout is computed from dtypes and shapes alone; the payloads are streamed in by the caller,
//! so a multi-GB tensor never has to be in memory. Framing follows CPython: small opcodes are
//! grouped in `FRAME`s; a bytes payload of 64 KiB or more ends the current frame and is written
//! outside any frame; a frame is also ended between dict items once it holds 64 KiB or more.

use super::pickle::Dtype;
use std::collections::HashMap;
use std::io::{self, Write};

const FRAME_SIZE_TARGET: usize = 64 * 1024;
const FRAME_SIZE_MIN: usize = 4;

/// Dtype and shape of one array to be pickled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArraySpec {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
}

impl ArraySpec {
    pub fn len_bytes(&self) -> usize {
        self.shape.iter().product::<usize>() * self.dtype.itemsize()
    }
}

/// The object one checkpoint file holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ObjectSpec {
    Array(ArraySpec),
    Quantized {
        weight: ArraySpec,
        scales: ArraySpec,
    },
}

#[derive(Debug)]
enum Seg {
    Bytes(Vec<u8>),
    /// The payload with this index (0 = array or weight, 1 = scales).
    Payload(usize),
}

/// Opcode bytes with placeholders for the payloads.
#[derive(Debug)]
pub struct PickleLayout {
    segs: Vec<Seg>,
    payload_lens: Vec<usize>,
}

struct Emitter {
    out: Vec<Seg>,
    frame: Vec<Seg>,
    frame_len: usize,
    memo: HashMap<String, usize>,
    next_memo: usize,
    payload_lens: Vec<usize>,
}

impl Emitter {
    fn write(&mut self, b: &[u8]) {
        self.frame_len += b.len();
        if let Some(Seg::Bytes(last)) = self.frame.last_mut() {
            last.extend_from_slice(b);
        } else {
            self.frame.push(Seg::Bytes(b.to_vec()));
        }
    }

    fn commit(&mut self, force: bool) {
        if self.frame_len < FRAME_SIZE_TARGET && !force {
            return;
        }
        if self.frame_len >= FRAME_SIZE_MIN {
            let mut h = vec![0x95];
            h.extend_from_slice(&(self.frame_len as u64).to_le_bytes());
            self.out.push(Seg::Bytes(h));
        }
        self.out.append(&mut self.frame);
        self.frame_len = 0;
    }

    fn memoize(&mut self, key: Option<String>) {
        self.write(&[0x94]);
        if let Some(k) = key {
            self.memo.insert(k, self.next_memo);
        }
        self.next_memo += 1;
    }

    /// BINGET of a memoized object; false if it is not in the memo.
    fn get(&mut self, key: &str) -> bool {
        let Some(&i) = self.memo.get(key) else {
            return false;
        };
        if i < 256 {
            self.write(&[b'h', i as u8]);
        } else {
            self.write(b"j");
            self.write(&(i as u32).to_le_bytes());
        }
        true
    }

    fn str(&mut self, s: &str) {
        let key = format!("s:{s}");
        if self.get(&key) {
            return;
        }
        assert!(s.len() < 256, "only short strings are written");
        self.write(&[0x8c, s.len() as u8]);
        self.write(s.as_bytes());
        self.memoize(Some(key));
    }

    fn global(&mut self, module: &str, name: &str) {
        let key = format!("g:{module}.{name}");
        if self.get(&key) {
            return;
        }
        self.str(module);
        self.str(name);
        self.write(&[0x93]);
        self.memoize(Some(key));
    }

    fn int(&mut self, v: i64) {
        if (0..256).contains(&v) {
            self.write(&[b'K', v as u8]);
        } else if (0..65536).contains(&v) {
            self.write(b"M");
            self.write(&(v as u16).to_le_bytes());
        } else {
            let v = i32::try_from(v).expect("dimensions fit in i32");
            self.write(b"J");
            self.write(&v.to_le_bytes());
        }
    }

    fn tuple_end(&mut self, n: usize) {
        match n {
            1 => self.write(&[0x85]),
            2 => self.write(&[0x86]),
            3 => self.write(&[0x87]),
            _ => self.write(b"t"),
        }
        self.memoize(None);
    }

    fn tuple_of_ints(&mut self, v: &[usize]) {
        if v.is_empty() {
            self.write(b")");
            return;
        }
        if v.len() > 3 {
            self.write(b"(");
        }
        for &d in v {
            self.int(d as i64);
        }
        self.tuple_end(v.len());
    }

    fn payload(&mut self, len: usize) {
        let idx = self.payload_lens.len();
        self.payload_lens.push(len);
        let mut header = Vec::with_capacity(9);
        if len < 256 {
            header.extend_from_slice(&[b'C', len as u8]);
        } else if let Ok(n) = u32::try_from(len) {
            header.push(b'B');
            header.extend_from_slice(&n.to_le_bytes());
        } else {
            header.push(0x8e);
            header.extend_from_slice(&(len as u64).to_le_bytes());
        }
        if len >= FRAME_SIZE_TARGET {
            self.commit(true);
            self.out.push(Seg::Bytes(header));
            self.out.push(Seg::Payload(idx));
        } else {
            self.write(&header);
            self.frame.push(Seg::Payload(idx));
            self.frame_len += len;
        }
        self.memoize(None);
    }

    fn dtype(&mut self, dtype: &Dtype) -> io::Result<()> {
        self.global("numpy", "dtype");
        let (order, state): (&str, [i64; 3]) = match dtype {
            Dtype::F32 => {
                self.str("f4");
                ("<", [-1, -1, 0])
            }
            Dtype::I8 => {
                self.str("i1");
                ("|", [-1, -1, 0])
            }
            Dtype::BF16 => {
                self.global("ml_dtypes", "bfloat16");
                ("<", [2, 2, 80])
            }
            Dtype::Other { descr, .. } => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("cannot write numpy dtype '{descr}'"),
                ))
            }
        };
        self.write(&[0x89, 0x88]);
        self.tuple_end(3);
        self.write(b"R");
        self.memoize(None);
        self.write(b"(");
        self.int(3);
        self.str(order);
        self.write(b"NNN");
        for v in state {
            self.int(v);
        }
        self.tuple_end(8);
        self.write(b"b");
        Ok(())
    }

    fn array(&mut self, a: &ArraySpec) -> io::Result<()> {
        self.global("numpy.core.multiarray", "_reconstruct");
        self.global("numpy", "ndarray");
        self.tuple_of_ints(&[0]);
        if !self.get("b:b") {
            self.write(b"C\x01b");
            self.memoize(Some("b:b".into()));
        }
        self.tuple_end(3);
        self.write(b"R");
        self.memoize(None);
        self.write(b"(");
        self.int(1);
        self.tuple_of_ints(&a.shape);
        self.dtype(&a.dtype)?;
        self.write(&[0x89]);
        let len = a
            .shape
            .iter()
            .try_fold(a.dtype.itemsize(), |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "array too large"))?;
        self.payload(len);
        self.tuple_end(5);
        self.write(b"b");
        Ok(())
    }
}

impl PickleLayout {
    /// The layout of `obj`, as `pickle.dump(obj, f, protocol=4)` writes it.
    pub fn new(obj: &ObjectSpec) -> io::Result<PickleLayout> {
        let mut e = Emitter {
            out: Vec::new(),
            frame: Vec::new(),
            frame_len: 0,
            memo: HashMap::new(),
            next_memo: 0,
            payload_lens: Vec::new(),
        };
        e.out.push(Seg::Bytes(vec![0x80, 4]));
        match obj {
            ObjectSpec::Array(a) => e.array(a)?,
            ObjectSpec::Quantized { weight, scales } => {
                e.global("__main__", "QuantizedWeight8bit");
                e.write(&[b')', 0x81]);
                e.memoize(None);
                e.write(b"}");
                e.memoize(None);
                e.write(b"(");
                for (key, a) in [("weight", weight), ("scales", scales)] {
                    // CPython ends a full frame between the items of a dict.
                    e.commit(false);
                    e.str(key);
                    e.array(a)?;
                }
                e.write(b"u");
                e.write(b"b");
            }
        }
        e.write(b".");
        e.commit(true);
        Ok(PickleLayout {
            segs: e.out,
            payload_lens: e.payload_lens,
        })
    }

    /// Lengths of the payloads in the order they are written.
    pub fn payload_lens(&self) -> &[usize] {
        &self.payload_lens
    }

    /// Size of the whole file.
    pub fn total_len(&self) -> u64 {
        self.segs
            .iter()
            .map(|s| match s {
                Seg::Bytes(b) => b.len() as u64,
                Seg::Payload(i) => self.payload_lens[*i] as u64,
            })
            .sum()
    }

    /// Write the pickle; `payload(i, w)` must write exactly `payload_lens()[i]` bytes.
    pub fn write<W: Write>(
        &self,
        w: &mut W,
        mut payload: impl FnMut(usize, &mut dyn Write) -> io::Result<()>,
    ) -> io::Result<()> {
        for s in &self.segs {
            match s {
                Seg::Bytes(b) => w.write_all(b)?,
                Seg::Payload(i) => {
                    let mut c = Counting { inner: w, n: 0 };
                    payload(*i, &mut c)?;
                    if c.n != self.payload_lens[*i] as u64 {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!(
                                "payload {i} wrote {} bytes; expected {}",
                                c.n, self.payload_lens[*i]
                            ),
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

struct Counting<'a, W: Write> {
    inner: &'a mut W,
    n: u64,
}

impl<W: Write> Write for Counting<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let k = self.inner.write(buf)?;
        self.n += k as u64;
        Ok(k)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::pickle::{parse, PickleObject};
    use std::path::PathBuf;

    fn spec_of(v: &crate::checkpoint::pickle::ArrayView) -> ArraySpec {
        ArraySpec {
            dtype: v.dtype.clone(),
            shape: v.shape.clone(),
        }
    }

    /// Re-emitting every fixture file with its own payloads gives the fixture byte for byte.
    #[test]
    fn layout_reproduces_the_fixture_files_exactly() {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures");
        let mut checked = 0;
        for fx in ["grok-tiny", "grok-mini-trained"] {
            let dir = root.join(fx).join("ckpt-0");
            let Ok(rd) = std::fs::read_dir(&dir) else {
                assert!(
                    std::env::var_os("CI").is_none(),
                    "fixtures missing: {dir:?}"
                );
                eprintln!("note: skipping, {} not found", dir.display());
                continue;
            };
            for ent in rd {
                let path = ent.unwrap().path();
                let data = std::fs::read(&path).unwrap();
                let obj = parse(&data).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                let (spec, views) = match &obj {
                    PickleObject::Array(a) => (ObjectSpec::Array(spec_of(a)), vec![a.clone()]),
                    PickleObject::Quantized { weight, scales } => (
                        ObjectSpec::Quantized {
                            weight: spec_of(weight),
                            scales: spec_of(scales),
                        },
                        vec![weight.clone(), scales.clone()],
                    ),
                };
                let layout = PickleLayout::new(&spec).unwrap();
                assert_eq!(layout.total_len(), data.len() as u64, "{}", path.display());
                let mut out = Vec::new();
                layout
                    .write(&mut out, |i, w| {
                        let v = &views[i];
                        w.write_all(&data[v.offset..v.offset + v.len_bytes])
                    })
                    .unwrap();
                assert!(
                    out == data,
                    "{} differs from its re-emission",
                    path.display()
                );
                checked += 1;
            }
        }
        eprintln!("{checked} fixture files re-emitted byte for byte");
    }

    #[test]
    fn small_and_large_payloads_frame_like_cpython() {
        // Payloads under 64 KiB stay inside the frame; larger ones are written outside it.
        let small = ObjectSpec::Array(ArraySpec {
            dtype: Dtype::F32,
            shape: vec![16],
        });
        let l = PickleLayout::new(&small).unwrap();
        assert_eq!(l.payload_lens(), &[64]);
        let mut out = Vec::new();
        l.write(&mut out, |_, w| w.write_all(&[0u8; 64])).unwrap();
        assert_eq!(out[2], 0x95);
        let frame = u64::from_le_bytes(out[3..11].try_into().unwrap()) as usize;
        assert_eq!(frame + 11, out.len(), "one frame holds everything");
        let big = ObjectSpec::Array(ArraySpec {
            dtype: Dtype::F32,
            shape: vec![16384],
        });
        let l = PickleLayout::new(&big).unwrap();
        let mut out = Vec::new();
        l.write(&mut out, |_, w| w.write_all(&vec![0u8; 65536]))
            .unwrap();
        let frame = u64::from_le_bytes(out[3..11].try_into().unwrap()) as usize;
        assert_eq!(
            out[11 + frame],
            b'B',
            "payload header follows the first frame"
        );
        assert!(matches!(parse(&out), Ok(PickleObject::Array(a)) if a.shape == vec![16384]));
        // A payload writer that writes the wrong amount is an error.
        let mut out = Vec::new();
        assert!(l.write(&mut out, |_, w| w.write_all(&[0u8; 3])).is_err());
    }
}
