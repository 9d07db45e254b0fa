//! `quantize`: re-quantize an existing GGUF (F32/F16/BF16/Q8_0 source) to another type or a
//! mixed-precision recipe, optionally weighted by an importance matrix. Streams tensor by tensor,
//! bands of rows in parallel, into `OUT.part`, renamed when complete.

use crate::gguf::{
    GgufError, GgufFile, GgufFileWriter, GgufLayout, GgufValue, Metadata, TensorSpec,
};
use crate::imatrix::Imatrix;
use crate::naming::Role;
use crate::recipe::Recipe;
use quant::GgmlType;
use rayon::prelude::*;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Debug, thiserror::Error)]
pub enum QuantizeError {
    #[error("{path}: {source}")]
    Gguf { path: PathBuf, source: GgufError },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} exists; pass --force to overwrite it")]
    Exists(PathBuf),
    #[error("tensor '{tensor}': {what}")]
    Tensor { tensor: String, what: String },
}

pub struct QuantizeOptions<'a> {
    pub input: &'a Path,
    pub output: &'a Path,
    pub recipe: Recipe,
    pub imatrix: Option<&'a Imatrix>,
    pub force: bool,
}

#[derive(Clone, Debug)]
pub struct QuantizeSummary {
    pub tensors: usize,
    pub bytes_out: u64,
    pub seconds: f64,
    /// Tensors quantized with importance weights.
    pub weighted: usize,
    /// Of those, tensors quantized with error feedback through their input covariance.
    pub with_cov: usize,
    /// Per tensor: name and type written.
    pub types: Vec<(String, GgmlType)>,
}

fn target_type(
    name: &str,
    src: GgmlType,
    n_in: usize,
    recipe: &Recipe,
    n_layers: usize,
) -> GgmlType {
    let want = match Role::from_gguf_name(name) {
        Some((Role::TokenEmbd, _)) => recipe.embd_type(),
        Some((role, layer)) => recipe
            .matrix_type(role, layer.unwrap_or(0), n_layers)
            .unwrap_or(src),
        None if name == "output.weight" => recipe.embd_type(),
        None => src,
    };
    if n_in % want.block_size() == 0 {
        want
    } else if n_in % 32 == 0 {
        GgmlType::Q8_0
    } else {
        src
    }
}

/// Re-quantize `opts.input` into `opts.output`.
pub fn quantize_gguf(opts: &QuantizeOptions) -> Result<QuantizeSummary, QuantizeError> {
    let t0 = Instant::now();
    if opts.output.exists() && !opts.force {
        return Err(QuantizeError::Exists(opts.output.to_path_buf()));
    }
    let gguf_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| QuantizeError::Gguf { path, source }
    };
    let src = GgufFile::open(opts.input).map_err(gguf_err(opts.input))?;
    let n_layers = src.get_uint("grok.block_count").unwrap_or(1) as usize;
    let mut specs = Vec::new();
    for t in src.tensors() {
        let n_in = t.shape[0] as usize;
        let ty = target_type(&t.name, t.ty, n_in, &opts.recipe, n_layers);
        specs.push(TensorSpec::new(t.name.clone(), t.shape.clone(), ty));
    }
    let mut md = Metadata::new();
    for (k, v) in src.metadata().iter() {
        if k != "general.alignment" {
            md.insert(k, v.clone());
        }
    }
    md.insert("general.file_type", GgufValue::U32(opts.recipe.file_type()));
    md.insert("grok1_quant.recipe", GgufValue::String(opts.recipe.name()));
    md.insert(
        "grok1_quant.tensor_types",
        GgufValue::Array(crate::gguf::GgufArray::String(
            specs
                .iter()
                .map(|s| format!("{}:{}", s.name, s.ty.name()))
                .collect(),
        )),
    );
    if let Some(im) = opts.imatrix {
        md.insert(
            "grok1_quant.imatrix_datasets",
            GgufValue::Array(crate::gguf::GgufArray::String(im.datasets.clone())),
        );
    }
    let layout = GgufLayout::new(md, specs.clone(), 32).map_err(gguf_err(opts.output))?;
    let mut part = opts.output.as_os_str().to_owned();
    part.push(".part");
    let part = PathBuf::from(part);
    let writer = GgufFileWriter::create(&part, layout).map_err(gguf_err(&part))?;
    let mut weighted = 0;
    let mut with_cov = 0;
    for (i, t) in src.tensors().iter().enumerate() {
        let view = src.tensor_at(i);
        let dst_ty = specs[i].ty;
        if dst_ty == t.ty {
            writer.write_tensor(i, view.data).map_err(gguf_err(&part))?;
            continue;
        }
        let n_in = t.shape[0] as usize;
        let rows = (t.n_elements() as usize) / n_in.max(1);
        let n_mat = t.shape.get(2).copied().unwrap_or(1) as usize;
        let rows_per_mat = rows / n_mat.max(1);
        let src_rb = t.ty.row_bytes(n_in).unwrap_or(0);
        let dst_rb = dst_ty.row_bytes(n_in).unwrap_or(0);
        let weights: Vec<Option<Vec<f32>>> = (0..n_mat)
            .map(|m| opts.imatrix.and_then(|im| im.importance(&t.name, m)))
            .collect();
        if weights
            .iter()
            .any(|w| w.as_ref().is_some_and(|w| w.len() == n_in))
        {
            weighted += 1;
        }
        let factors = match opts.imatrix {
            Some(im) if quant::gptq::supports(dst_ty) => {
                im.factors(&t.name, n_mat, n_in)
                    .map_err(|what| QuantizeError::Tensor {
                        tensor: t.name.clone(),
                        what,
                    })?
            }
            _ => vec![None; n_mat],
        };
        if factors.iter().any(Option::is_some) {
            with_cov += 1;
        }
        let band = ((1 << 20) / (n_in * 4)).clamp(1, rows_per_mat.max(1));
        let bands: Vec<(usize, usize)> = (0..n_mat)
            .flat_map(|m| {
                (0..rows_per_mat)
                    .step_by(band)
                    .map(move |r| (m * rows_per_mat + r, band.min(rows_per_mat - r)))
            })
            .collect();
        bands
            .par_iter()
            .try_for_each(|&(r0, nr)| -> Result<(), QuantizeError> {
                let terr = |what: String| QuantizeError::Tensor {
                    tensor: t.name.clone(),
                    what,
                };
                let mut f = vec![0f32; nr * n_in];
                quant::dequantize_row(t.ty, &view.data[r0 * src_rb..(r0 + nr) * src_rb], &mut f)
                    .map_err(|e| terr(e.to_string()))?;
                let m = r0 / rows_per_mat.max(1);
                let w = weights[m].as_deref().filter(|w| w.len() == n_in);
                let mut out = vec![0u8; nr * dst_rb];
                quant::quantize_rows_fed(dst_ty, &f, n_in, &mut out, w, factors[m].as_ref())
                    .map_err(|e| terr(e.to_string()))?;
                writer
                    .write_tensor_part(i, (r0 * dst_rb) as u64, &out)
                    .map_err(gguf_err(&part))
            })?;
    }
    let bytes_out = writer.layout().file_size();
    writer.finish().map_err(gguf_err(&part))?;
    std::fs::rename(&part, opts.output).map_err(|source| QuantizeError::Io {
        path: opts.output.to_path_buf(),
        source,
    })?;
    Ok(QuantizeSummary {
        tensors: specs.len(),
        bytes_out,
        seconds: t0.elapsed().as_secs_f64(),
        weighted,
        with_cov,
        types: specs.iter().map(|s| (s.name.clone(), s.ty)).collect(),
    })
}
