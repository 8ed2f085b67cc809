//! Requirement expressions (`--require`, NVIDIA_REQUIRE_*), reference libnvidia-container.md §5.12.
//!
//! A predicate is space-separated alternatives (OR), each a comma-separated list of terms (AND);
//! empty tokens are skipped. A term is `<name><op><value>`.
//!
//! Unknown names: the toolkit document (§3.2) says they are ignored, but the one evaluator of
//! record, nvidia-container-cli, rejects them as `invalid expression`; that rule governs here, so
//! a typo fails loudly instead of silently passing.
//!
//! Every term of every predicate is validated before anything is evaluated, so an invalid term
//! is reported even when an earlier alternative would have satisfied the predicate.

use std::cmp::Ordering;

use anyhow::{Result, bail};

/// Upstream's cap on `--require` arguments.
const MAX_PREDICATES: usize = 32;

/// What the host offers, as discovered. `None` = unknown, which satisfies any term on it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostFacts {
    /// The driver's CUDA version, e.g. "12.2".
    pub cuda: Option<String>,
    /// The kernel driver (NVRM) version, e.g. "535.104.05".
    pub driver: Option<String>,
}

/// One selected device (a MIG device reports its parent GPU's facts).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceFacts {
    /// Compute capability, e.g. "9.0".
    pub arch: Option<String>,
    /// Brand name, e.g. "Nvidia", "Tesla".
    pub brand: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Name {
    Cuda,
    Driver,
    Arch,
    Brand,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug)]
struct Term<'a> {
    name: Name,
    op: Op,
    value: &'a str,
}

#[derive(Debug)]
struct Alternative<'a> {
    /// The alternative as written, for the failure message.
    text: &'a str,
    terms: Vec<Term<'a>>,
}

/// Check that every predicate holds for each device (once with no device when `devices` is
/// empty). The error text is without the caller's "requirement error: " prefix.
pub fn check_requirements(
    predicates: &[String],
    host: &HostFacts,
    devices: &[DeviceFacts],
) -> Result<()> {
    if predicates.len() > MAX_PREDICATES {
        bail!("too many requirements");
    }
    let parsed = predicates
        .iter()
        .map(|p| parse_predicate(p))
        .collect::<Result<Vec<_>>>()?;
    let no_device = [None];
    let scopes: Vec<Option<&DeviceFacts>> = if devices.is_empty() {
        no_device.to_vec()
    } else {
        devices.iter().map(Some).collect()
    };
    for device in scopes {
        for alternatives in &parsed {
            if alternatives.iter().any(|a| holds(a, host, device)) {
                continue;
            }
            // parse_predicate guarantees at least one alternative.
            let first = alternatives[0].text;
            if first.starts_with("cuda>=") {
                bail!(
                    "unsatisfied condition: {first}, please update your driver to a newer \
                     version, or use an earlier cuda container"
                );
            }
            bail!("unsatisfied condition: {first}");
        }
    }
    Ok(())
}

fn invalid() -> anyhow::Error {
    anyhow::anyhow!("invalid expression")
}

/// A predicate with no alternative at all (empty or only spaces) is rejected rather than read
/// as an unsatisfiable OR of nothing: it can only come from a malformed argument.
fn parse_predicate(predicate: &str) -> Result<Vec<Alternative<'_>>> {
    let alternatives = predicate
        .split(' ')
        .filter(|t| !t.is_empty())
        .map(|text| {
            let terms = text
                .split(',')
                .filter(|t| !t.is_empty())
                .map(parse_term)
                .collect::<Result<Vec<_>>>()?;
            Ok(Alternative { text, terms })
        })
        .collect::<Result<Vec<_>>>()?;
    if alternatives.is_empty() {
        return Err(invalid());
    }
    Ok(alternatives)
}

fn is_op_char(c: char) -> bool {
    matches!(c, '<' | '>' | '=' | '!')
}

fn parse_term(term: &str) -> Result<Term<'_>> {
    let start = term.find(is_op_char).ok_or_else(invalid)?;
    let (name, rest) = term.split_at(start);
    let end = rest.find(|c| !is_op_char(c)).unwrap_or(rest.len());
    let (op, value) = rest.split_at(end);
    let name = match name.to_ascii_lowercase().as_str() {
        "cuda" => Name::Cuda,
        "driver" => Name::Driver,
        "arch" => Name::Arch,
        "brand" => Name::Brand,
        _ => return Err(invalid()),
    };
    let op = match op {
        "=" => Op::Eq,
        "!=" => Op::Ne,
        "<" => Op::Lt,
        "<=" => Op::Le,
        ">" => Op::Gt,
        ">=" => Op::Ge,
        _ => return Err(invalid()),
    };
    if value.is_empty() {
        return Err(invalid());
    }
    match name {
        Name::Brand if !matches!(op, Op::Eq | Op::Ne) => return Err(invalid()),
        Name::Brand => {}
        _ if !is_version(value) => return Err(invalid()),
        _ => {}
    }
    Ok(Term { name, op, value })
}

/// All terms true; a term whose fact is unknown (or needs a device when there is none) is true.
/// Facts that are known but not versions cannot be compared, and count as false.
fn holds(alt: &Alternative, host: &HostFacts, device: Option<&DeviceFacts>) -> bool {
    alt.terms.iter().all(|term| {
        let fact = match term.name {
            Name::Cuda => host.cuda.as_deref(),
            Name::Driver => host.driver.as_deref(),
            Name::Arch => device.and_then(|d| d.arch.as_deref()),
            Name::Brand => device.and_then(|d| d.brand.as_deref()),
        };
        let Some(fact) = fact else {
            return true;
        };
        if term.name == Name::Brand {
            let equal = fact.eq_ignore_ascii_case(term.value);
            return (term.op == Op::Eq) == equal;
        }
        if !is_version(fact) {
            return false;
        }
        let ord = compare_versions(fact, term.value);
        match term.op {
            Op::Eq => ord == Ordering::Equal,
            Op::Ne => ord != Ordering::Equal,
            Op::Lt => ord == Ordering::Less,
            Op::Le => ord != Ordering::Greater,
            Op::Gt => ord == Ordering::Greater,
            Op::Ge => ord != Ordering::Less,
        }
    })
}

/// Digits and dots: components non-empty, at least one.
fn is_version(v: &str) -> bool {
    v.split('.')
        .all(|c| !c.is_empty() && c.bytes().all(|b| b.is_ascii_digit()))
}

/// Component-wise numeric comparison; missing components read as 0, so trailing `.0`s do not
/// matter (`12.0` = `12`). Components of any length compare without overflow.
fn compare_versions(a: &str, b: &str) -> Ordering {
    let mut left = a.split('.');
    let mut right = b.split('.');
    loop {
        match (left.next(), right.next()) {
            (None, None) => return Ordering::Equal,
            (l, r) => {
                let ord = compare_numbers(l.unwrap_or("0"), r.unwrap_or("0"));
                if ord != Ordering::Equal {
                    return ord;
                }
            }
        }
    }
}

fn compare_numbers(a: &str, b: &str) -> Ordering {
    let a = a.trim_start_matches('0');
    let b = b.trim_start_matches('0');
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

#[cfg(test)]
#[path = "require_tests.rs"]
mod tests;
