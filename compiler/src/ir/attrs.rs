//! An op's attributes as one typed list (`Op::attrs`, declared in
//! `ir/decl.rs`): the text form prints it (`ir/print.rs`) and CSE compares
//! it (`Op::cse_key`), so an op declares its attributes once and both agree
//! by construction.

use super::{Fusion, WeightId};
use std::fmt;

/// One attribute of an op.
#[derive(Clone, Debug, PartialEq)]
pub enum Attr {
    /// A loop or group parameter's index (printed bare).
    Index(usize),
    /// A weight of the module (the printer writes `w3 name`, from the table).
    Weight(WeightId),
    /// `key=n`.
    Int(&'static str, u64),
    /// `key=x` in Rust's shortest round-trip form.
    Float(&'static str, f64),
    /// `key=x` in exponent form (epsilons).
    Exp(&'static str, f64),
    /// `key=true` or `key=false`.
    Bool(&'static str, bool),
    /// `key` when set; nothing when not.
    Flag(&'static str, bool),
    /// What `fuse` folded in: `prenorm(eps=..)`, `residual`, as set.
    Fusion(Fusion),
    /// Printed, never compared (a cache slot's name, a region's layout, a
    /// group's op list): an op with one is never merged by CSE.
    Text(String),
}

impl Attr {
    /// The words CSE compares (floats by their bits); `None` for text.
    pub fn words(&self) -> Option<Vec<u64>> {
        Some(match self {
            Attr::Index(i) => vec![*i as u64],
            Attr::Weight(id) => vec![u64::from(id.0)],
            Attr::Int(_, n) => vec![*n],
            Attr::Float(_, x) | Attr::Exp(_, x) => vec![x.to_bits()],
            Attr::Bool(_, b) | Attr::Flag(_, b) => vec![u64::from(*b)],
            Attr::Fusion(f) => vec![
                f.prenorm.map_or(u64::MAX, f64::to_bits),
                u64::from(f.residual),
            ],
            Attr::Text(_) => return None,
        })
    }
}

/// The text form of one attribute (empty for an unset flag or no fusion).
/// A weight prints as its id here; the printer adds the name.
impl fmt::Display for Attr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Attr::Index(i) => write!(f, "{i}"),
            Attr::Weight(id) => write!(f, "w{}", id.0),
            Attr::Int(k, n) => write!(f, "{k}={n}"),
            Attr::Float(k, x) => write!(f, "{k}={x}"),
            Attr::Exp(k, x) => write!(f, "{k}={x:e}"),
            Attr::Bool(k, b) => write!(f, "{k}={b}"),
            Attr::Flag(k, true) => f.write_str(k),
            Attr::Flag(_, false) => Ok(()),
            Attr::Fusion(fusion) => f.write_str(fusion.describe().trim_start()),
            Attr::Text(t) => f.write_str(t),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_print_and_compare() {
        let fused = Fusion {
            prenorm: Some(1e-6),
            residual: true,
        };
        assert_eq!(
            Attr::Fusion(fused).to_string(),
            "prenorm(eps=1e-6) residual"
        );
        assert_eq!(Attr::Fusion(Fusion::default()).to_string(), "");
        assert_eq!(Attr::Flag("absorb", false).to_string(), "");
        assert_eq!(Attr::Exp("eps", 1e-5).to_string(), "eps=1e-5");
        assert_eq!(Attr::Float("theta", 10000.0).to_string(), "theta=10000");
        assert_ne!(
            Attr::Exp("eps", 1e-5).words(),
            Attr::Exp("eps", 1e-6).words()
        );
        assert_eq!(Attr::Text("cache=prelude_0".into()).words(), None);
    }
}
