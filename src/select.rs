//! `--device` selection against the discovered GPUs (reference libnvidia-container.md §5.4):
//! comma-separated tokens — `all`, `GPU-<uuid>`, a PCI bus id, an index, `MIG-<uuid>`, `<gpu>:<mig>`.

use anyhow::{Result, bail};

use crate::discover::gpus::{BusId, Gpu};

/// A MIG device, by position: (index into the GPU list, index into that GPU's MIG devices).
pub type MigRef = (usize, usize);

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// GPU list indices, in selection order, without duplicates.
    pub gpus: Vec<usize>,
    /// MIG devices, in selection order, without duplicates.
    pub migs: Vec<MigRef>,
    /// `all` was given (it also selects every MIG device).
    pub all: bool,
}

impl Selection {
    fn add_gpu(&mut self, i: usize) {
        if !self.gpus.contains(&i) {
            self.gpus.push(i);
        }
    }

    fn add_mig(&mut self, m: MigRef) {
        // A MIG device brings its parent GPU along.
        self.add_gpu(m.0);
        if !self.migs.contains(&m) {
            self.migs.push(m);
        }
    }
}

/// `--mig-config`/`--mig-monitor` take only `all`, and not together with specific MIG devices.
/// Returns whether either was given.
pub fn check_mig_all(
    mig_config: Option<&str>,
    mig_monitor: Option<&str>,
    sel: &Selection,
) -> Result<bool> {
    for (value, what) in [(mig_config, "mig-config"), (mig_monitor, "mig-monitor")] {
        let Some(value) = value else { continue };
        if !value
            .split(',')
            .all(|t| t.trim().eq_ignore_ascii_case("all"))
        {
            bail!("{what} error: only 'all' devices are currently supported");
        }
        if !sel.migs.is_empty() && !sel.all {
            bail!("{what} error: cannot enable {what} with specific MIG devices selected");
        }
    }
    Ok(mig_config.is_some() || mig_monitor.is_some())
}

/// Select devices. Tokens are matched in upstream's order of tests; an unknown token is an error
/// naming it. With zero GPUs nothing is selected and nothing is an error.
pub fn select_devices(gpus: &[Gpu], spec: &str) -> Result<Selection> {
    let mut sel = Selection::default();
    if gpus.is_empty() {
        return Ok(sel);
    }
    for token in spec.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        if token.eq_ignore_ascii_case("all") {
            for (i, gpu) in gpus.iter().enumerate() {
                sel.add_gpu(i);
                for m in 0..gpu.mig.devices.len() {
                    sel.add_mig((i, m));
                }
            }
            sel.all = true;
            break;
        }
        match find_token(gpus, token) {
            Some(Found::Gpu(i)) => sel.add_gpu(i),
            Some(Found::Mig(m)) => sel.add_mig(m),
            None => bail!("{token}: unknown device"),
        }
    }
    Ok(sel)
}

enum Found {
    Gpu(usize),
    Mig(MigRef),
}

fn find_token(gpus: &[Gpu], token: &str) -> Option<Found> {
    if has_prefix_ignore_case(token, "GPU-") {
        return gpus
            .iter()
            .position(|g| g.uuid.eq_ignore_ascii_case(token))
            .map(Found::Gpu);
    }
    if let Some(bus) = parse_bus_token(token) {
        return gpus.iter().position(|g| g.bus_id == bus).map(Found::Gpu);
    }
    if !token.is_empty() && token.bytes().all(|b| b.is_ascii_digit()) {
        return token
            .parse::<usize>()
            .ok()
            .filter(|i| *i < gpus.len())
            .map(Found::Gpu);
    }
    if has_prefix_ignore_case(token, "MIG-") {
        // MIG UUIDs are minted by the driver and only NVML reports them; procfs has none.
        return None;
    }
    let (g, m) = token.split_once(':')?;
    let (g, m): (usize, usize) = (g.parse().ok()?, m.parse().ok()?);
    let gpu = gpus.get(g)?;
    (m < gpu.mig.devices.len()).then_some(Found::Mig((g, m)))
}

/// A bus id token is `domain:bus:device[.function]` in hex; two fields (`1:0`) are a MIG pair.
fn parse_bus_token(token: &str) -> Option<BusId> {
    if token.split(':').count() != 3 {
        return None;
    }
    let mut id = BusId::parse(token)?;
    // The function is not compared: NVML reports function 0 for every GPU.
    id.function = 0;
    Some(id)
}

/// Compared as bytes: the token is the container's, and its `prefix.len()`-th byte may fall
/// inside a multi-byte character, where slicing the `str` would panic.
fn has_prefix_ignore_case(s: &str, prefix: &str) -> bool {
    s.as_bytes()
        .get(..prefix.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(prefix.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discover::gpus::{Mig, MigDevice};

    fn gpu(i: usize, bus: u8, migs: u32) -> Gpu {
        Gpu {
            index: i,
            minor: i as u32,
            uuid: format!("GPU-0000000{i}-aaaa-bbbb-cccc-dddddddddddd"),
            bus_id: BusId {
                domain: 0,
                bus,
                device: 0,
                function: 0,
            },
            model: "NVIDIA A100-SXM4-80GB".into(),
            proc_dir: format!("0000:{bus:02x}:00.0"),
            pci_device_id: Some(0x20b2),
            arch: Some((8, 0)),
            brand: "Nvidia",
            mig: Mig {
                capable: true,
                devices: (0..migs)
                    .map(|g| MigDevice {
                        gi: g + 1,
                        ci: 0,
                        gi_access: String::new(),
                        ci_access: String::new(),
                    })
                    .collect(),
            },
        }
    }

    fn host() -> Vec<Gpu> {
        vec![gpu(0, 0x07, 0), gpu(1, 0x0f, 2), gpu(2, 0xb7, 0)]
    }

    /// Found by fuzz/fuzz_targets/devices.rs: a non-ASCII character across the length of the
    /// `GPU-`/`MIG-` prefixes (`NVIDIA_VISIBLE_DEVICES=DIS\u{fffd}…`) made selection panic.
    #[test]
    fn multibyte_token_is_an_unknown_device() {
        for token in [
            "DIS\u{fffd}srR%",
            "GPU\u{e9}",
            "MI\u{1f600}",
            "\u{e9}\u{e9}",
        ] {
            let err = select_devices(&host(), token).unwrap_err();
            assert_eq!(err.to_string(), format!("{token}: unknown device"));
        }
        assert!(has_prefix_ignore_case("gpu-\u{e9}", "GPU-"));
        assert!(!has_prefix_ignore_case("GP\u{e9}", "GPU-"));
    }

    #[test]
    fn all_selects_gpus_and_migs() {
        let s = select_devices(&host(), "all").unwrap();
        assert_eq!(s.gpus, vec![0, 1, 2]);
        assert_eq!(s.migs, vec![(1, 0), (1, 1)]);
        assert!(s.all);
        // `all` stops processing: a bad token after it is never looked at.
        assert!(select_devices(&host(), "ALL,bogus").is_ok());
    }

    #[test]
    fn indices_uuids_and_bus_ids() {
        let s = select_devices(
            &host(),
            "2,gpu-00000000-AAAA-bbbb-cccc-dddddddddddd,0000:0f:00.0",
        )
        .unwrap();
        assert_eq!(s.gpus, vec![2, 0, 1]);
        assert!(s.migs.is_empty());
        let s = select_devices(&host(), "00000000:B7:00.1").unwrap();
        assert_eq!(s.gpus, vec![2]);
    }

    #[test]
    fn duplicates_leave_no_empty_slot() {
        let s = select_devices(&host(), "1,1,,GPU-00000001-aaaa-bbbb-cccc-dddddddddddd").unwrap();
        assert_eq!(s.gpus, vec![1]);
    }

    #[test]
    fn mig_pairs_bring_their_parent() {
        let s = select_devices(&host(), "1:1,1:0,1:1").unwrap();
        assert_eq!(s.gpus, vec![1]);
        assert_eq!(s.migs, vec![(1, 1), (1, 0)]);
    }

    #[test]
    fn unknown_tokens() {
        for bad in [
            "3",
            "0:0",
            "GPU-nope",
            "MIG-1234",
            "none",
            "1:5",
            "0000:99:00.0",
        ] {
            let err = select_devices(&host(), bad).unwrap_err();
            assert_eq!(err.to_string(), format!("{bad}: unknown device"));
        }
    }

    #[test]
    fn no_gpus_no_error() {
        let s = select_devices(&[], "0,bogus").unwrap();
        assert_eq!(s, Selection::default());
    }
}
