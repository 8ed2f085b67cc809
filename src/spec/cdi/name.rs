//! CDI device names: `vendor/class=name`. Vendor and class start with a letter, end with a
//! letter or digit and use `[A-Za-z0-9_.-]` between; a device name starts and ends with a
//! letter or digit and may also use `:` between. Error texts are the CDI library's.

use anyhow::{Result, anyhow, bail};

/// Split `vendor/class` at the first `/`; `None` when either side is empty.
pub fn parse_qualifier(kind: &str) -> Option<(&str, &str)> {
    let (vendor, class) = kind.split_once('/')?;
    (!vendor.is_empty() && !class.is_empty()).then_some((vendor, class))
}

/// Split a fully qualified device name into (vendor, class, name), each validated.
pub fn parse_qualified_name(device: &str) -> Result<(String, String, String)> {
    // A path is never a CDI name, even one containing '='.
    let split = (!device.starts_with('/'))
        .then(|| device.split_once('='))
        .flatten()
        .filter(|(kind, name)| !kind.is_empty() && !name.is_empty())
        .and_then(|(kind, name)| parse_qualifier(kind).map(|(v, c)| (v, c, name)));
    let Some((vendor, class, name)) = split else {
        // The library's checks in order: without a qualifier, the vendor is what is missing.
        bail!("unqualified device {device:?}, missing vendor");
    };
    let invalid = |e: anyhow::Error| anyhow!("invalid device {device:?}: {e}");
    validate_vendor_name(vendor).map_err(invalid)?;
    validate_class_name(class).map_err(invalid)?;
    validate_device_name(name).map_err(invalid)?;
    Ok((vendor.to_string(), class.to_string(), name.to_string()))
}

/// Whether `device` parses as a valid fully qualified CDI name.
pub fn is_qualified_name(device: &str) -> bool {
    parse_qualified_name(device).is_ok()
}

pub fn validate_vendor_name(vendor: &str) -> Result<()> {
    check_vendor_or_class(vendor).map_err(|e| anyhow!("invalid vendor. {e}"))
}

pub fn validate_class_name(class: &str) -> Result<()> {
    check_vendor_or_class(class).map_err(|e| anyhow!("invalid class. {e}"))
}

fn check_vendor_or_class(name: &str) -> Result<()> {
    let bytes = name.as_bytes();
    let (Some(&first), Some(&last)) = (bytes.first(), bytes.last()) else {
        bail!("empty name");
    };
    if !first.is_ascii_alphabetic() {
        bail!("{name:?}, should start with letter");
    }
    if let Some(c) = inner_chars(name).find(|&c| !(c.is_ascii_alphanumeric() || "_-.".contains(c)))
    {
        bail!("invalid character '{c}' in name {name:?}");
    }
    if !last.is_ascii_alphanumeric() {
        bail!("{name:?}, should end with a letter or digit");
    }
    Ok(())
}

pub fn validate_device_name(name: &str) -> Result<()> {
    let bytes = name.as_bytes();
    let (Some(&first), Some(&last)) = (bytes.first(), bytes.last()) else {
        bail!("invalid (empty) device name");
    };
    if !first.is_ascii_alphanumeric() {
        bail!("invalid class {name:?}, should start with a letter or digit");
    }
    if let Some(c) = inner_chars(name).find(|&c| !(c.is_ascii_alphanumeric() || "_-.:".contains(c)))
    {
        bail!("invalid character '{c}' in device name {name:?}");
    }
    if !last.is_ascii_alphanumeric() {
        bail!("invalid name {name:?}, should end with a letter or digit");
    }
    Ok(())
}

/// Every character but the first and the last (none for names of one or two).
fn inner_chars(name: &str) -> impl Iterator<Item = char> + '_ {
    let mut chars = name.chars();
    chars.next();
    chars.next_back();
    chars
}
