//! Single manifest values: quantities, CAN ids, image references, names. Each parser says what is wrong
//! with the value; the caller adds the file and field path.

use super::model::ImageRef;

/// Why one manifest value (a quantity, a CAN id, an image reference, a name) is not valid; the caller adds
/// the file and field path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error("`{0}` is not a memory quantity (e.g. 64Mi, 1G)")]
    NotMemory(String),
    #[error("`{0}` must be a positive quantity")]
    NotPositive(String),
    #[error("`{0}` is not a CPU quantity (e.g. 500m, 0.5, 2)")]
    NotCpu(String),
    #[error("`{0}` must be more than 0")]
    Zero(String),
    #[error("`{0}` is not a hex CAN id")]
    NotCanId(String),
    #[error("{0}")]
    CanIdRange(String),
    #[error("`{0}` is not an image reference")]
    NotImage(String),
    #[error("`{0}` is not an image digest (`sha256:` and 64 lowercase hex digits, or `sha512:` and 128)")]
    Digest(String),
    #[error("`{0}` is not a valid name (lowercase letters, digits and `-`, at most 63)")]
    NotName(String),
}

/// Parses a Kubernetes memory quantity (`128Mi`, `1G`, `65536`) into bytes.
pub fn parse_memory(text: &str) -> Result<u64, ValueError> {
    const SUFFIXES: &[(&str, u64)] = &[
        ("Ki", 1 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
        ("k", 1_000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
        ("T", 1_000_000_000_000),
    ];
    let (number, scale) = SUFFIXES
        .iter()
        .find_map(|(s, m)| text.strip_suffix(s).map(|n| (n, *m)))
        .unwrap_or((text, 1));
    let value: f64 = number
        .parse()
        .map_err(|_| ValueError::NotMemory(text.to_string()))?;
    if !value.is_finite() || value <= 0.0 {
        return Err(ValueError::NotPositive(text.to_string()));
    }
    Ok((value * scale as f64).round() as u64)
}

/// Parses a Kubernetes CPU quantity (`500m`, `0.5`, `2`) into millicores.
pub fn parse_cpu(text: &str) -> Result<u64, ValueError> {
    let bad = || ValueError::NotCpu(text.to_string());
    let millis = match text.strip_suffix('m') {
        Some(n) => n.parse::<u64>().map_err(|_| bad())?,
        None => {
            let cores: f64 = text.parse().map_err(|_| bad())?;
            if !cores.is_finite() || cores <= 0.0 {
                return Err(bad());
            }
            (cores * 1000.0).round() as u64
        }
    };
    if millis == 0 {
        return Err(ValueError::Zero(text.to_string()));
    }
    Ok(millis)
}

/// Parses a hex CAN id (`0x3A0`, `3A0`, `18FF0010`) into the Linux `can_id` (EFF flag for 8 digits).
pub fn parse_can_id(text: &str) -> Result<u32, ValueError> {
    let digits = text.trim().trim_start_matches("0x").trim_start_matches("0X");
    let id = u32::from_str_radix(digits, 16).map_err(|_| ValueError::NotCanId(text.to_string()))?;
    if digits.len() > 3 || id > vcan::frame::SFF_MAX {
        vcan::CanId::extended(id)
            .map(|i| i.to_linux())
            .map_err(|e| ValueError::CanIdRange(e.to_string()))
    } else {
        Ok(id)
    }
}

pub fn parse_image(text: &str) -> Result<ImageRef, ValueError> {
    if text.is_empty() || text.contains(char::is_whitespace) {
        return Err(ValueError::NotImage(text.to_string()));
    }
    // `repository[:tag]@algorithm:hex`: the digest names the image; a tag beside it is informational.
    let (name, digest) = match text.split_once('@') {
        Some((name, digest)) => (name, Some(digest)),
        None => (text, None),
    };
    let (repository, tag) = match name.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo, tag),
        _ => (name, "latest"),
    };
    if repository.is_empty() || tag.is_empty() {
        return Err(ValueError::NotImage(text.to_string()));
    }
    let tag = match digest {
        Some(digest) => digest_tag(digest).ok_or_else(|| ValueError::Digest(digest.to_string()))?,
        None => tag.to_string(),
    };
    Ok(ImageRef {
        repository: repository.to_string(),
        tag,
    })
}

/// The local tag standing for a digest (`sha256:<hex>` → `sha256-<hex>`, a valid tag; see
/// [`ImageRef::digest`]), if `digest` is one.
fn digest_tag(digest: &str) -> Option<String> {
    let (algorithm, hex) = digest.split_once(':')?;
    let len = match algorithm {
        "sha256" => 64,
        "sha512" => 128,
        _ => return None,
    };
    let hex_ok = hex.len() == len
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    hex_ok.then(|| format!("{algorithm}-{hex}"))
}

/// A Kubernetes DNS label: lowercase alphanumerics and `-`, 1-63 characters.
pub fn check_name(name: &str) -> Result<(), ValueError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(ValueError::NotName(name.to_string()))
    }
}
