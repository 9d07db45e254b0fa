//! A small, non-executing pickle reader for the checkpoint files.
//!
//! It walks the opcodes of one pickle held in memory (the file's mmap), accepts only the opcodes
//! and globals that numpy/ml_dtypes/`QuantizedWeight8bit` pickles use, and yields zero-copy views
//! of the array payloads (offset and length into the file). Nothing is executed and nothing is
//! allocated in proportion to the payloads: only the small structural parts are decoded, with
//! bounds on the stack, the memo and string lengths.

#![forbid(unsafe_code)]

use std::cell::RefCell;
use std::fmt;
use std::rc::Rc;

mod objects;

/// Element type of a pickled numpy array.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dtype {
    F32,
    I8,
    BF16,
    /// Any other numpy dtype (its descriptor, e.g. `f8`, `V2`); never a valid checkpoint dtype.
    Other {
        descr: String,
        itemsize: usize,
    },
}

impl Dtype {
    pub fn itemsize(&self) -> usize {
        match self {
            Dtype::F32 => 4,
            Dtype::I8 => 1,
            Dtype::BF16 => 2,
            Dtype::Other { itemsize, .. } => *itemsize,
        }
    }
}

impl fmt::Display for Dtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dtype::F32 => f.write_str("float32"),
            Dtype::I8 => f.write_str("int8"),
            Dtype::BF16 => f.write_str("bfloat16"),
            Dtype::Other { descr, .. } => write!(f, "numpy dtype '{descr}'"),
        }
    }
}

/// A numpy array inside the file: where its raw little-endian, C-order payload lies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArrayView {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    /// Byte offset of the payload in the file.
    pub offset: usize,
    pub len_bytes: usize,
    /// Always false for arrays returned by [`parse`] with more than one dimension (Fortran order
    /// is rejected there); kept so callers can assert it.
    pub fortran_order: bool,
}

impl ArrayView {
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.len_bytes / self.dtype.itemsize().max(1)
    }
}

/// The object a checkpoint file holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PickleObject {
    Array(ArrayView),
    Quantized {
        weight: ArrayView,
        scales: ArrayView,
    },
}

/// Malformed or unsupported pickle: the byte offset of the opcode and what was expected there.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("pickle byte {offset}: {msg}")]
pub struct PickleError {
    pub offset: usize,
    pub msg: String,
}

const MAX_STACK: usize = 4096;
const MAX_MEMO: usize = 1 << 16;
const MAX_STR: usize = 4096;
const MAX_DIMS: usize = 32;
/// Deepest nesting of tuples accepted. Checkpoint pickles nest at most 3 deep (REDUCE
/// arguments holding a shape tuple); without a bound, a run of TUPLE1 opcodes builds a chain
/// whose recursive drop overflows the thread stack.
const MAX_TUPLE_DEPTH: u32 = 16;
/// Most entries a dict may hold (a QuantizedWeight8bit state has 2); keeps SETITEM linear.
const MAX_DICT: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Global {
    Reconstruct,
    FromBuffer,
    Ndarray,
    NpDtype,
    Bf16Type,
    QuantClass,
}

#[derive(Debug)]
struct DtypeObj {
    dtype: Dtype,
    byteorder: u8,
}

#[derive(Debug, Default)]
struct QuantObj {
    weight: Option<ArrayView>,
    scales: Option<ArrayView>,
    built: bool,
}

/// A state dict's items in insertion order.
type DictItems = Vec<(Rc<str>, Value)>;

/// A tuple's items and its nesting depth (1 for a tuple holding no tuple).
#[derive(Debug)]
struct TupleObj {
    items: Vec<Value>,
    depth: u32,
}

impl std::ops::Deref for TupleObj {
    type Target = Vec<Value>;
    fn deref(&self) -> &Vec<Value> {
        &self.items
    }
}

#[derive(Clone, Debug)]
enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float,
    Str(Rc<str>),
    Bytes {
        offset: usize,
        len: usize,
    },
    Tuple(Rc<TupleObj>),
    Global(Global),
    Dtype(Rc<RefCell<DtypeObj>>),
    /// `None` until BUILD gives it its state.
    Array(Rc<RefCell<Option<ArrayView>>>),
    Quant(Rc<RefCell<QuantObj>>),
    /// A state dict: string keys, array values.
    Dict(Rc<RefCell<DictItems>>),
}

impl Value {
    fn kind(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float => "float",
            Value::Str(_) => "str",
            Value::Bytes { .. } => "bytes",
            Value::Tuple(_) => "tuple",
            Value::Global(_) => "class/function",
            Value::Dtype(_) => "numpy.dtype",
            Value::Array(_) => "numpy.ndarray",
            Value::Quant(_) => "QuantizedWeight8bit",
            Value::Dict(_) => "dict",
        }
    }
}

struct Vm<'a> {
    data: &'a [u8],
    pos: usize,
    /// Offset of the opcode being executed, for errors.
    op_at: usize,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: Vec<Option<Value>>,
}

/// Parse one checkpoint pickle held in `data`.
pub fn parse(data: &[u8]) -> Result<PickleObject, PickleError> {
    let mut vm = Vm {
        data,
        pos: 0,
        op_at: 0,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: Vec::new(),
    };
    vm.run()
}

impl<'a> Vm<'a> {
    fn err<T>(&self, msg: impl Into<String>) -> Result<T, PickleError> {
        Err(PickleError {
            offset: self.op_at,
            msg: msg.into(),
        })
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], PickleError> {
        let end = match self.pos.checked_add(n) {
            Some(e) if e <= self.data.len() => e,
            _ => {
                return self.err(format!(
                    "truncated: {what} needs {n} bytes at byte {}, file has {}",
                    self.pos,
                    self.data.len()
                ))
            }
        };
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self, what: &str) -> Result<u8, PickleError> {
        Ok(self.take(1, what)?[0])
    }

    fn u32(&mut self, what: &str) -> Result<u32, PickleError> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self, what: &str) -> Result<u64, PickleError> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    fn len64(&mut self, what: &str) -> Result<usize, PickleError> {
        let n = self.u64(what)?;
        match usize::try_from(n) {
            Ok(n) => Ok(n),
            Err(_) => self.err(format!("{what} length {n} does not fit in memory")),
        }
    }

    fn push(&mut self, v: Value) -> Result<(), PickleError> {
        if self.stack.len() >= MAX_STACK {
            return self.err(format!("stack deeper than {MAX_STACK} items"));
        }
        self.stack.push(v);
        Ok(())
    }

    fn pop(&mut self, what: &str) -> Result<Value, PickleError> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return self.err(format!("stack underflow: expected {what}"));
        }
        Ok(self.stack.pop().expect("checked length"))
    }

    fn top(&self, what: &str) -> Result<&Value, PickleError> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return self.err(format!("stack underflow: expected {what}"));
        }
        Ok(self.stack.last().expect("checked length"))
    }

    fn pop_mark(&mut self) -> Result<Vec<Value>, PickleError> {
        let Some(m) = self.marks.pop() else {
            return self.err("no MARK on the stack");
        };
        Ok(self.stack.split_off(m))
    }

    /// A tuple of `items`, refused when it would nest deeper than [`MAX_TUPLE_DEPTH`].
    fn tuple(&self, items: Vec<Value>) -> Result<Value, PickleError> {
        let inner = items
            .iter()
            .map(|v| match v {
                Value::Tuple(t) => t.depth,
                _ => 0,
            })
            .max()
            .unwrap_or(0);
        if inner >= MAX_TUPLE_DEPTH {
            return self.err(format!(
                "tuples nested deeper than {MAX_TUPLE_DEPTH} levels"
            ));
        }
        Ok(Value::Tuple(Rc::new(TupleObj {
            items,
            depth: inner + 1,
        })))
    }

    fn string(&mut self, n: usize) -> Result<Value, PickleError> {
        if n > MAX_STR {
            return self.err(format!("string of {n} bytes is longer than {MAX_STR}"));
        }
        let b = self.take(n, "string")?;
        match std::str::from_utf8(b) {
            Ok(s) => Ok(Value::Str(Rc::from(s))),
            Err(_) => self.err("string is not valid UTF-8"),
        }
    }

    fn bytes(&mut self, n: usize) -> Result<Value, PickleError> {
        let offset = self.pos;
        self.take(n, "bytes payload")?;
        Ok(Value::Bytes { offset, len: n })
    }

    fn memo_put(&mut self, idx: usize) -> Result<(), PickleError> {
        if idx >= MAX_MEMO {
            return self.err(format!("memo index {idx} exceeds the limit {MAX_MEMO}"));
        }
        // Every memo entry costs at least one opcode byte, so a real pickle's indices stay
        // below the bytes read so far; this keeps the memo proportional to the input.
        if idx > self.op_at {
            return self.err(format!(
                "memo index {idx} at byte {}: more entries than opcodes so far",
                self.op_at
            ));
        }
        let v = self.top("a value to memoize")?.clone();
        if self.memo.len() <= idx {
            self.memo.resize(idx + 1, None);
        }
        self.memo[idx] = Some(v);
        Ok(())
    }

    fn memo_get(&mut self, idx: usize) -> Result<(), PickleError> {
        match self.memo.get(idx).and_then(|v| v.clone()) {
            Some(v) => self.push(v),
            None => self.err(format!(
                "memo index {idx} was never stored ({} entries)",
                self.memo.len()
            )),
        }
    }

    fn run(&mut self) -> Result<PickleObject, PickleError> {
        loop {
            self.op_at = self.pos;
            let op = self.u8("opcode")?;
            match op {
                0x80 => {
                    let p = self.u8("protocol")?;
                    if !(4..=5).contains(&p) {
                        return self.err(format!("pickle protocol {p}; expected 4 or 5"));
                    }
                }
                0x95 => {
                    let n = self.len64("frame")?;
                    let fits = matches!(self.pos.checked_add(n), Some(e) if e <= self.data.len());
                    if !fits {
                        return self.err(format!(
                            "truncated: frame of {n} bytes runs past the end of the file ({} bytes)",
                            self.data.len()
                        ));
                    }
                }
                0x8c => {
                    let n = self.u8("length")? as usize;
                    let v = self.string(n)?;
                    self.push(v)?;
                }
                b'X' => {
                    let n = self.u32("length")? as usize;
                    let v = self.string(n)?;
                    self.push(v)?;
                }
                0x8d => {
                    let n = self.len64("length")?;
                    let v = self.string(n)?;
                    self.push(v)?;
                }
                b'C' => {
                    let n = self.u8("length")? as usize;
                    let v = self.bytes(n)?;
                    self.push(v)?;
                }
                b'B' => {
                    let n = self.u32("length")? as usize;
                    let v = self.bytes(n)?;
                    self.push(v)?;
                }
                0x8e | 0x96 => {
                    let n = self.len64("length")?;
                    let v = self.bytes(n)?;
                    self.push(v)?;
                }
                0x94 => self.memo_put(self.memo.len())?,
                b'q' => {
                    let i = self.u8("memo index")? as usize;
                    self.memo_put(i)?
                }
                b'r' => {
                    let i = self.u32("memo index")? as usize;
                    self.memo_put(i)?
                }
                b'h' => {
                    let i = self.u8("memo index")? as usize;
                    self.memo_get(i)?
                }
                b'j' => {
                    let i = self.u32("memo index")? as usize;
                    self.memo_get(i)?
                }
                0x93 => {
                    let name = self.pop("global name")?;
                    let module = self.pop("global module")?;
                    let g = self.global(&module, &name)?;
                    self.push(Value::Global(g))?;
                }
                b')' => {
                    let t = self.tuple(Vec::new())?;
                    self.push(t)?
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.pop("a tuple item")?);
                    }
                    items.reverse();
                    let t = self.tuple(items)?;
                    self.push(t)?;
                }
                b'(' => {
                    if self.marks.len() >= MAX_STACK {
                        return self.err("too many MARKs");
                    }
                    self.marks.push(self.stack.len());
                }
                b't' => {
                    let items = self.pop_mark()?;
                    let t = self.tuple(items)?;
                    self.push(t)?;
                }
                b'}' => self.push(Value::Dict(Rc::new(RefCell::new(Vec::new()))))?,
                b'u' => {
                    let items = self.pop_mark()?;
                    if items.len() % 2 != 0 {
                        return self.err("SETITEMS with an odd number of items");
                    }
                    self.set_items(items)?;
                }
                b's' => {
                    let v = self.pop("a dict value")?;
                    let k = self.pop("a dict key")?;
                    self.set_items(vec![k, v])?;
                }
                b'K' => {
                    let v = self.u8("int")?;
                    self.push(Value::Int(v as i64))?;
                }
                b'M' => {
                    let b = self.take(2, "int")?;
                    let v = u16::from_le_bytes([b[0], b[1]]);
                    self.push(Value::Int(v as i64))?;
                }
                b'J' => {
                    let v = self.u32("int")? as i32;
                    self.push(Value::Int(v as i64))?;
                }
                b'G' => {
                    // Only its presence matters: no accepted structure uses a float's value.
                    self.take(8, "float")?;
                    self.push(Value::Float)?;
                }
                0x88 => self.push(Value::Bool(true))?,
                0x89 => self.push(Value::Bool(false))?,
                b'N' => self.push(Value::None)?,
                0x81 => {
                    let args = self.pop("NEWOBJ arguments")?;
                    let cls = self.pop("NEWOBJ class")?;
                    match (&cls, &args) {
                        (Value::Global(Global::QuantClass), Value::Tuple(t)) if t.is_empty() => {
                            self.push(Value::Quant(Rc::default()))?
                        }
                        _ => {
                            return self.err(format!(
                                "NEWOBJ of {} with {}; expected QuantizedWeight8bit with ()",
                                cls.kind(),
                                args.kind()
                            ))
                        }
                    }
                }
                b'R' => {
                    let args = self.pop("REDUCE arguments")?;
                    let func = self.pop("REDUCE callable")?;
                    let v = self.reduce(&func, &args)?;
                    self.push(v)?;
                }
                b'b' => {
                    let state = self.pop("BUILD state")?;
                    let obj = self.top("an object to BUILD")?.clone();
                    self.build(&obj, &state)?;
                }
                b'.' => return self.stop(),
                other => {
                    return self.err(format!(
                        "unsupported pickle opcode 0x{other:02x}; this reader accepts only numpy \
                         arrays and QuantizedWeight8bit objects"
                    ))
                }
            }
        }
    }
}
