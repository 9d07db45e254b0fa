//! A small, non-executing pickle reader for the checkpoint files.
//!
//! It walks the opcodes of one pickle held in memory (the file's mmap), accepts only the opcodes
//! and globals that numpy/ml_dtypes/`QuantizedWeight8bit` pickles use, and yields zero-copy views
//! of the array payloads (offset and length into the file). Nothing is executed and nothing is
//! allocated in proportion to the payloads: only the small structural parts are decoded, with
//! bounds on the stack, the memo and string lengths.

use std::cell::RefCell;
use std::fmt;
use std::rc::Rc;

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
    Tuple(Rc<Vec<Value>>),
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
                b')' => self.push(Value::Tuple(Rc::new(Vec::new())))?,
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.pop("a tuple item")?);
                    }
                    items.reverse();
                    self.push(Value::Tuple(Rc::new(items)))?;
                }
                b'(' => {
                    if self.marks.len() >= MAX_STACK {
                        return self.err("too many MARKs");
                    }
                    self.marks.push(self.stack.len());
                }
                b't' => {
                    let items = self.pop_mark()?;
                    self.push(Value::Tuple(Rc::new(items)))?;
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

    fn global(&self, module: &Value, name: &Value) -> Result<Global, PickleError> {
        let (Value::Str(m), Value::Str(n)) = (module, name) else {
            return self.err(format!(
                "STACK_GLOBAL of {} and {}; expected two strings",
                module.kind(),
                name.kind()
            ));
        };
        Ok(match (&**m, &**n) {
            ("numpy.core.multiarray" | "numpy._core.multiarray", "_reconstruct") => {
                Global::Reconstruct
            }
            ("numpy.core.numeric" | "numpy._core.numeric", "_frombuffer") => Global::FromBuffer,
            ("numpy", "ndarray") => Global::Ndarray,
            ("numpy", "dtype") => Global::NpDtype,
            ("ml_dtypes", "bfloat16") => Global::Bf16Type,
            ("__main__" | "model", "QuantizedWeight8bit") => Global::QuantClass,
            _ => {
                return self.err(format!(
                    "global {m}.{n} is not allowed (expected numpy, ml_dtypes or \
                     QuantizedWeight8bit)"
                ))
            }
        })
    }

    fn set_items(&mut self, items: Vec<Value>) -> Result<(), PickleError> {
        let Value::Dict(d) = self.top("a dict")?.clone() else {
            return self.err(format!(
                "SETITEM(S) on {}; expected a dict",
                self.top("a dict")?.kind()
            ));
        };
        let mut it = items.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            let Value::Str(k) = k else {
                return self.err(format!("dict key is {}; expected str", k.kind()));
            };
            if !matches!(v, Value::Array(_)) {
                return self.err(format!(
                    "dict value for '{k}' is {}; expected numpy.ndarray",
                    v.kind()
                ));
            }
            let mut d = d.borrow_mut();
            if d.len() >= MAX_STACK {
                return self.err("dict too large");
            }
            d.retain(|(old, _)| *old != k);
            d.push((k, v));
        }
        Ok(())
    }

    fn int(&self, v: &Value, what: &str) -> Result<i64, PickleError> {
        match v {
            Value::Int(i) => Ok(*i),
            Value::Bool(b) => Ok(*b as i64),
            _ => self.err(format!("{what} is {}; expected int", v.kind())),
        }
    }

    fn reduce(&self, func: &Value, args: &Value) -> Result<Value, PickleError> {
        let Value::Tuple(args) = args else {
            return self.err(format!(
                "REDUCE arguments are {}; expected a tuple",
                args.kind()
            ));
        };
        match func {
            Value::Global(Global::Reconstruct) => {
                if args.len() != 3 || !matches!(args[0], Value::Global(Global::Ndarray)) {
                    return self
                        .err("_reconstruct arguments are not (numpy.ndarray, shape, dtype)");
                }
                Ok(Value::Array(Rc::new(RefCell::new(None))))
            }
            Value::Global(Global::NpDtype) => {
                let Some(arg) = args.first() else {
                    return self.err("numpy.dtype() without arguments");
                };
                let dtype = match arg {
                    Value::Global(Global::Bf16Type) => DtypeObj {
                        dtype: Dtype::BF16,
                        byteorder: b'=',
                    },
                    Value::Str(s) => self.dtype_from_descr(s)?,
                    other => {
                        return self.err(format!(
                            "numpy.dtype({}); expected a type string or ml_dtypes.bfloat16",
                            other.kind()
                        ))
                    }
                };
                Ok(Value::Dtype(Rc::new(RefCell::new(dtype))))
            }
            Value::Global(Global::FromBuffer) => {
                // numpy protocol-5 reduce: _frombuffer(buffer, dtype, shape, order)
                if args.len() != 4 {
                    return self.err("_frombuffer arguments are not (buffer, dtype, shape, order)");
                }
                let order = match &args[3] {
                    Value::Str(s) if &**s == "C" => false,
                    Value::Str(s) if &**s == "F" => true,
                    _ => return self.err("_frombuffer order is not 'C' or 'F'"),
                };
                let view = self.array_view(&args[1], &args[2], &args[0], order)?;
                Ok(Value::Array(Rc::new(RefCell::new(Some(view)))))
            }
            other => self.err(format!(
                "REDUCE of {}; expected numpy _reconstruct, _frombuffer or dtype",
                other.kind()
            )),
        }
    }

    fn dtype_from_descr(&self, s: &str) -> Result<DtypeObj, PickleError> {
        let (byteorder, body) = match s.as_bytes().first() {
            Some(c @ (b'<' | b'>' | b'=' | b'|')) => (*c, &s[1..]),
            _ => (b'=', s),
        };
        let dtype = match body {
            "f4" | "float32" => Dtype::F32,
            "i1" | "int8" => Dtype::I8,
            _ => {
                let mut chars = body.chars();
                let kind = chars.next();
                let size: Option<usize> = chars.as_str().parse().ok();
                match (kind, size) {
                    (Some(k), Some(n)) if "biufcVSUmM".contains(k) && (1..=64).contains(&n) => {
                        Dtype::Other {
                            descr: body.to_string(),
                            itemsize: if k == 'U' { n * 4 } else { n },
                        }
                    }
                    _ => return self.err(format!("unsupported numpy dtype descriptor '{s}'")),
                }
            }
        };
        Ok(DtypeObj { dtype, byteorder })
    }

    /// Checks a (dtype, shape, bytes, order) quadruple and makes the view.
    fn array_view(
        &self,
        dtype: &Value,
        shape: &Value,
        data: &Value,
        fortran: bool,
    ) -> Result<ArrayView, PickleError> {
        let Value::Dtype(dt) = dtype else {
            return self.err(format!(
                "array dtype is {}; expected numpy.dtype",
                dtype.kind()
            ));
        };
        let dt = dt.borrow();
        let Value::Tuple(dims) = shape else {
            return self.err(format!("array shape is {}; expected a tuple", shape.kind()));
        };
        if dims.len() > MAX_DIMS {
            return self.err(format!("array has {} dimensions", dims.len()));
        }
        let mut shape = Vec::with_capacity(dims.len());
        let mut numel: usize = 1;
        for d in dims.iter() {
            let n = self.int(d, "array dimension")?;
            let Ok(n) = usize::try_from(n) else {
                return self.err(format!("negative array dimension {n}"));
            };
            numel = match numel.checked_mul(n) {
                Some(v) => v,
                None => return self.err(format!("array shape {shape:?}x{n} overflows")),
            };
            shape.push(n);
        }
        let itemsize = dt.dtype.itemsize();
        if dt.byteorder == b'>' && itemsize > 1 {
            return self.err(format!("big-endian {} array is not supported", dt.dtype));
        }
        if fortran && shape.iter().filter(|&&d| d > 1).count() > 1 {
            return self.err(format!(
                "Fortran-order array of shape {shape:?} is not supported; expected C order"
            ));
        }
        let (offset, len) = match data {
            Value::Bytes { offset, len } => (*offset, *len),
            other => {
                return self.err(format!("array data is {}; expected bytes", other.kind()));
            }
        };
        let expected = numel.checked_mul(itemsize);
        if expected != Some(len) {
            return self.err(format!(
                "array payload is {len} bytes; expected {} for shape {shape:?} of {}",
                expected.map_or("an overflowing number of".to_string(), |e| e.to_string()),
                dt.dtype
            ));
        }
        Ok(ArrayView {
            dtype: dt.dtype.clone(),
            shape,
            offset,
            len_bytes: len,
            fortran_order: fortran,
        })
    }

    fn build(&self, obj: &Value, state: &Value) -> Result<(), PickleError> {
        match obj {
            Value::Dtype(d) => {
                let Value::Tuple(t) = state else {
                    return self.err(format!("dtype state is {}; expected a tuple", state.kind()));
                };
                if !(8..=9).contains(&t.len()) {
                    return self.err(format!(
                        "dtype state has {} items; expected 8 or 9",
                        t.len()
                    ));
                }
                let version = self.int(&t[0], "dtype state version")?;
                if !(3..=4).contains(&version) {
                    return self.err(format!("dtype state version {version}; expected 3 or 4"));
                }
                let order = match &t[1] {
                    Value::Str(s) if s.len() == 1 && "<>=|".contains(&**s) => s.as_bytes()[0],
                    _ => return self.err("dtype byte order is not one of '<', '>', '=', '|'"),
                };
                if !t[2..5].iter().all(|v| matches!(v, Value::None)) {
                    return self.err("structured or sub-array dtype; expected a plain dtype");
                }
                d.borrow_mut().byteorder = order;
                Ok(())
            }
            Value::Array(a) => {
                if a.borrow().is_some() {
                    return self.err("ndarray state set twice");
                }
                let Value::Tuple(t) = state else {
                    return self.err(format!(
                        "ndarray state is {}; expected a tuple",
                        state.kind()
                    ));
                };
                let t: &[Value] = match t.len() {
                    5 => {
                        if self.int(&t[0], "ndarray state version")? != 1 {
                            return self.err("ndarray state version is not 1");
                        }
                        &t[1..]
                    }
                    4 => &t[..],
                    n => {
                        return self.err(format!(
                            "ndarray state has {n} items; expected (version, shape, dtype, \
                             is_fortran, data)"
                        ))
                    }
                };
                let fortran = match t[2] {
                    Value::Bool(b) => b,
                    _ => return self.err("ndarray is_fortran flag is not a bool"),
                };
                let view = self.array_view(&t[1], &t[0], &t[3], fortran)?;
                *a.borrow_mut() = Some(view);
                Ok(())
            }
            Value::Quant(q) => {
                let Value::Dict(d) = state else {
                    return self.err(format!(
                        "QuantizedWeight8bit state is {}; expected a dict",
                        state.kind()
                    ));
                };
                let mut q = q.borrow_mut();
                if q.built {
                    return self.err("QuantizedWeight8bit state set twice");
                }
                for (k, v) in d.borrow().iter() {
                    let Value::Array(a) = v else {
                        return self.err("QuantizedWeight8bit field is not an ndarray");
                    };
                    let Some(view) = a.borrow().clone() else {
                        return self.err(format!("QuantizedWeight8bit '{k}' array has no data"));
                    };
                    match &**k {
                        "weight" => q.weight = Some(view),
                        "scales" => q.scales = Some(view),
                        other => {
                            return self.err(format!(
                                "QuantizedWeight8bit has field '{other}'; expected only weight \
                                 and scales"
                            ))
                        }
                    }
                }
                q.built = true;
                Ok(())
            }
            other => self.err(format!(
                "BUILD on {}; expected ndarray, dtype or QuantizedWeight8bit",
                other.kind()
            )),
        }
    }

    fn stop(&mut self) -> Result<PickleObject, PickleError> {
        if !self.marks.is_empty() {
            return self.err("STOP with an open MARK");
        }
        if self.stack.len() != 1 {
            return self.err(format!(
                "STOP with {} values on the stack; expected exactly one",
                self.stack.len()
            ));
        }
        if self.pos != self.data.len() {
            return self.err(format!(
                "{} trailing bytes after STOP",
                self.data.len() - self.pos
            ));
        }
        let top = self.stack.pop().expect("checked length");
        match &top {
            Value::Array(a) => match a.borrow().clone() {
                Some(v) => Ok(PickleObject::Array(v)),
                None => self.err("top-level ndarray was never given its data"),
            },
            Value::Quant(q) => {
                let q = q.borrow();
                match (&q.weight, &q.scales) {
                    (Some(w), Some(s)) => Ok(PickleObject::Quantized {
                        weight: w.clone(),
                        scales: s.clone(),
                    }),
                    _ => self.err("QuantizedWeight8bit lacks 'weight' or 'scales'"),
                }
            }
            other => self.err(format!(
                "top-level object is {}; expected numpy.ndarray or QuantizedWeight8bit",
                other.kind()
            )),
        }
    }
}
