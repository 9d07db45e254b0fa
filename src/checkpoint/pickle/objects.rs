//! The objects the pickle VM may build: globals, numpy dtypes and arrays, QuantizedWeight8bit.

use super::*;

impl Vm<'_> {
    pub(super) fn global(&self, module: &Value, name: &Value) -> Result<Global, PickleError> {
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

    pub(super) fn set_items(&mut self, items: Vec<Value>) -> Result<(), PickleError> {
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
            d.retain(|(old, _)| *old != k);
            if d.len() >= MAX_DICT {
                return self.err(format!("dict with more than {MAX_DICT} entries"));
            }
            d.push((k, v));
        }
        Ok(())
    }

    pub(super) fn int(&self, v: &Value, what: &str) -> Result<i64, PickleError> {
        match v {
            Value::Int(i) => Ok(*i),
            Value::Bool(b) => Ok(*b as i64),
            _ => self.err(format!("{what} is {}; expected int", v.kind())),
        }
    }

    pub(super) fn reduce(&self, func: &Value, args: &Value) -> Result<Value, PickleError> {
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

    pub(super) fn dtype_from_descr(&self, s: &str) -> Result<DtypeObj, PickleError> {
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
    pub(super) fn array_view(
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

    pub(super) fn build(&self, obj: &Value, state: &Value) -> Result<(), PickleError> {
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

    pub(super) fn stop(&mut self) -> Result<PickleObject, PickleError> {
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
