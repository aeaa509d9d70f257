//! Traffic weights as an operator writes them (`1=0.9,2=0.1`) and as they are stored
//! (hundredths, [`Weight`]): exact parsing, no float rounding, and the text form back.

use std::collections::BTreeMap;

use super::{RegistryError, Weight};

/// Parses a weight written `0`, `1`, `0.9`, `0.25`, `1.00` into hundredths, exactly (no
/// float rounding): more than two significant decimals or a value above 1 is refused.
pub fn parse_weight(text: &str) -> Result<Weight, RegistryError> {
    let bad = || RegistryError::Weight(text.to_string());
    let (whole, frac) = text.trim().split_once('.').unwrap_or((text.trim(), ""));
    if whole.is_empty() && frac.is_empty() {
        return Err(bad());
    }
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || !digits(frac) {
        return Err(bad());
    }
    let frac = frac.trim_end_matches('0');
    if frac.len() > 2 {
        return Err(bad());
    }
    let whole: u32 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| bad())?
    };
    let frac: u32 = format!("{frac:0<2}").parse().map_err(|_| bad())?;
    let hundredths = whole.checked_mul(100).ok_or_else(bad)? + frac;
    if hundredths > 100 {
        return Err(bad());
    }
    Ok(hundredths as Weight)
}

/// Parses `v1=0.9,v2=0.1` into weights per version (not yet checked against a model).
pub fn parse_weights(text: &str) -> Result<BTreeMap<String, Weight>, RegistryError> {
    let mut out = BTreeMap::new();
    for pair in text.split(',').filter(|p| !p.trim().is_empty()) {
        let (version, weight) = pair
            .split_once('=')
            .ok_or_else(|| RegistryError::WeightsSyntax(text.to_string()))?;
        let version = version.trim().to_string();
        if out.insert(version, parse_weight(weight)?).is_some() {
            return Err(RegistryError::WeightsSyntax(text.to_string()));
        }
    }
    if out.is_empty() {
        return Err(RegistryError::WeightsSyntax(text.to_string()));
    }
    Ok(out)
}

/// Weights as an operator writes them: `1=0.90,2=0.10`.
pub fn format_weights(weights: &BTreeMap<String, Weight>) -> String {
    let pairs: Vec<String> = weights
        .iter()
        .map(|(v, w)| format!("{v}={}.{:02}", w / 100, w % 100))
        .collect();
    pairs.join(",")
}
