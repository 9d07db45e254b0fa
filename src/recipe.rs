//! Mixed-precision recipes: which tensors of a file get which type.
//!
//! `pure` gives every matrix the file's type. `q4_k_m` / `q5_k_m` follow the rules llama.cpp
//! applies for an 8-expert model: attention K and V in Q8_0 (tiny next to the experts), the
//! expert down projection one step up (Q6_K) in the layers where it matters most (the first and
//! last eighth and every third layer between), Q6_K for the tied embeddings/output; everything
//! else in the base type. Norms and the router always stay F32.

use crate::naming::Role;
use quant::GgmlType;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recipe {
    /// Every matrix in `ty`.
    Pure(GgmlType),
    /// Q4_K base, more bits where it matters.
    Q4KM,
    /// Q5_K base, more bits where it matters.
    Q5KM,
}

impl Recipe {
    /// `q4_k_m`, `q5_k_m`, or any type name (pure).
    pub fn parse(s: &str) -> Option<Recipe> {
        match s.to_ascii_lowercase().as_str() {
            "q4_k_m" => Some(Recipe::Q4KM),
            "q5_k_m" => Some(Recipe::Q5KM),
            other => GgmlType::from_name(other).map(Recipe::Pure),
        }
    }

    pub fn name(&self) -> String {
        match self {
            Recipe::Pure(t) => t.name().to_string(),
            Recipe::Q4KM => "q4_k_m".into(),
            Recipe::Q5KM => "q5_k_m".into(),
        }
    }

    /// The base type (what the experts mostly get).
    pub fn base(&self) -> GgmlType {
        match self {
            Recipe::Pure(t) => *t,
            Recipe::Q4KM => GgmlType::Q4_K,
            Recipe::Q5KM => GgmlType::Q5_K,
        }
    }

    /// llama.cpp's `general.file_type` for this recipe.
    pub fn file_type(&self) -> u32 {
        match self {
            Recipe::Pure(t) => crate::convert::metadata::llama_file_type(*t),
            Recipe::Q4KM => 15,
            Recipe::Q5KM => 17,
        }
    }

    /// Type of the matrix `role` in `layer` of `n_layers`; `None` for tensors that are not
    /// matrices (norms, router: F32) or the embeddings (decided by the caller).
    pub fn matrix_type(&self, role: Role, layer: usize, n_layers: usize) -> Option<GgmlType> {
        if !role.is_matmul_weight() {
            return None;
        }
        let base = self.base();
        Some(match self {
            Recipe::Pure(_) => base,
            Recipe::Q4KM | Recipe::Q5KM => match role {
                Role::AttnK | Role::AttnV => GgmlType::Q8_0,
                Role::FfnDownExps if more_bits(layer, n_layers) => GgmlType::Q6_K,
                _ => base,
            },
        })
    }

    /// Type of `token_embd` (the tied output projection).
    pub fn embd_type(&self) -> GgmlType {
        match self {
            Recipe::Pure(t) => crate::convert::embd_type_for(*t),
            Recipe::Q4KM | Recipe::Q5KM => GgmlType::Q6_K,
        }
    }
}

/// llama.cpp's layer rule: the first and last eighth, and every third layer in between.
pub fn more_bits(layer: usize, n_layers: usize) -> bool {
    let eighth = n_layers / 8;
    layer < eighth || layer >= 7 * n_layers / 8 || (layer - eighth) % 3 == 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q4_k_m_rules() {
        let r = Recipe::parse("Q4_K_M").unwrap();
        assert_eq!(r.matrix_type(Role::AttnV, 3, 64), Some(GgmlType::Q8_0));
        assert_eq!(
            r.matrix_type(Role::FfnGateExps, 0, 64),
            Some(GgmlType::Q4_K)
        );
        assert_eq!(
            r.matrix_type(Role::FfnDownExps, 0, 64),
            Some(GgmlType::Q6_K)
        );
        assert_eq!(
            r.matrix_type(Role::FfnDownExps, 9, 64),
            Some(GgmlType::Q4_K)
        );
        assert_eq!(
            r.matrix_type(Role::FfnDownExps, 10, 64),
            Some(GgmlType::Q6_K)
        );
        assert_eq!(r.matrix_type(Role::FfnNorm, 0, 64), None);
        let n: usize = (0..64).filter(|&l| more_bits(l, 64)).count();
        assert_eq!(n, 8 + 8 + 16);
        assert_eq!(Recipe::parse("q4_0"), Some(Recipe::Pure(GgmlType::Q4_0)));
        assert_eq!(Recipe::parse("q9"), None);
    }
}
