//! [`Quant`]: how a model's linear layers are stored (the model dtype, or GGML blocks), as a
//! flag names it and as a quantized checkpoint records it.

use candle_core::quantized::GgmlDType;

use crate::error::{Error, Result};

/// How the linear layers of the language model and of `gen_head` are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Quant {
    /// The model dtype, exact (the default).
    #[default]
    None,
    /// 8-bit blocks of 32 with an f16 scale (8.5 bits per weight).
    Q8_0,
    /// 6-bit k-quant (6.56 bits per weight).
    Q6k,
    /// 5-bit k-quant (5.5 bits per weight).
    Q5k,
    /// 4-bit k-quant (4.5 bits per weight).
    Q4k,
}

impl Quant {
    pub const ALL: [Quant; 5] = [Quant::None, Quant::Q8_0, Quant::Q6k, Quant::Q5k, Quant::Q4k];

    pub fn name(self) -> &'static str {
        match self {
            Quant::None => "none",
            Quant::Q8_0 => "q8_0",
            Quant::Q6k => "q6k",
            Quant::Q5k => "q5k",
            Quant::Q4k => "q4k",
        }
    }

    /// The GGML block type, `None` for unquantized weights.
    pub fn ggml(self) -> Option<GgmlDType> {
        match self {
            Quant::None => None,
            Quant::Q8_0 => Some(GgmlDType::Q8_0),
            Quant::Q6k => Some(GgmlDType::Q6K),
            Quant::Q5k => Some(GgmlDType::Q5K),
            Quant::Q4k => Some(GgmlDType::Q4K),
        }
    }

    /// The block type for a weight whose rows hold `in_dim` values: the requested one when
    /// `in_dim` is a multiple of its block, else q8_0 (blocks of 32) when that fits, else none
    /// (the layer stays unquantized). Janus-Pro's widths are all multiples of 256; only small
    /// test models fall back.
    pub fn block_type_for(self, in_dim: usize) -> Option<GgmlDType> {
        let want = self.ggml()?;
        [want, GgmlDType::Q8_0].into_iter().find(|d| in_dim.is_multiple_of(d.block_size()))
    }
}

impl std::fmt::Display for Quant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Quant {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim().to_ascii_lowercase();
        Quant::ALL.into_iter().find(|q| q.name() == s || q.name().replace('_', "") == s).ok_or_else(|| {
            Error::InvalidInput(format!(
                "unknown quantization {s:?}: expected one of {}",
                Quant::ALL.map(Quant::name).join(", ")
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for q in Quant::ALL {
            assert_eq!(q.name().parse::<Quant>().unwrap(), q);
            assert_eq!(serde_json::to_string(&q).unwrap(), format!("\"{}\"", q.name()));
        }
        assert_eq!("Q4_K".replace('_', "").parse::<Quant>().unwrap(), Quant::Q4k);
        assert_eq!("q80".parse::<Quant>().unwrap(), Quant::Q8_0);
        let err = "q3".parse::<Quant>().unwrap_err().to_string();
        assert!(err.contains("none, q8_0, q6k, q5k, q4k"), "{err}");
    }
}
