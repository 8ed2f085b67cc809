use super::*;

#[test]
fn names_come_out_alphabetical() {
    let caps = Caps::parse_list("video,display").unwrap();
    assert_eq!(caps.names(), ["display", "video"]);
    assert_eq!(
        Caps::ALL.names(),
        [
            "compat32", "compute", "display", "graphics", "ngx", "utility", "video"
        ]
    );
    assert!(Caps::default().names().is_empty());
}

#[test]
fn parse_list_trims_and_skips_empty_entries() {
    let caps = Caps::parse_list(" compute , ,utility,").unwrap();
    assert_eq!(caps, Caps::COMPUTE.union(Caps::UTILITY));
    assert_eq!(caps, Caps::DEFAULT);
    assert!(Caps::parse_list("").unwrap().is_empty());
    assert!(Caps::parse_list(" , ").unwrap().is_empty());
}

#[test]
fn parse_list_all_is_every_capability() {
    assert_eq!(Caps::parse_list("all").unwrap(), Caps::ALL);
    assert_eq!(Caps::parse_list("compute,all").unwrap(), Caps::ALL);
    for (name, cap) in CAP_NAMES {
        assert!(Caps::ALL.contains(cap), "{name}");
        assert_eq!(Caps::parse_list(name).unwrap(), cap);
    }
}

#[test]
fn parse_list_names_an_unknown_capability() {
    let err = Caps::parse_list("compute,profile").unwrap_err().to_string();
    assert!(err.contains("\"profile\""), "{err}");
    // Names are exact: upstream compares them case-sensitively.
    assert!(Caps::parse_list("Compute").is_err());
}

#[test]
fn set_operations() {
    let cu = Caps::COMPUTE.union(Caps::UTILITY);
    assert!(cu.contains(Caps::COMPUTE));
    assert!(cu.contains(cu));
    assert!(!cu.contains(Caps::VIDEO));
    assert!(!cu.contains(Caps::COMPUTE.union(Caps::VIDEO)));
    assert!(cu.contains(Caps::default()));
    assert_eq!(
        cu.intersection(Caps::UTILITY.union(Caps::NGX)),
        Caps::UTILITY
    );
    assert!(Caps::default().is_empty());
    assert!(!Caps::NGX.is_empty());
}

#[test]
fn device_spec_per_kind() {
    let mut req = Request::unrequested();
    assert!(!req.is_gpu_container());
    assert_eq!(req.device_spec(), None);
    req.devices = Devices::DriverOnly;
    assert!(req.is_gpu_container());
    assert_eq!(req.device_spec().as_deref(), Some(""));
    req.devices = Devices::All;
    assert_eq!(req.device_spec().as_deref(), Some("all"));
    req.devices = Devices::Ids(vec!["0".into(), "GPU-abc".into(), "1:0".into()]);
    assert_eq!(req.device_spec().as_deref(), Some("0,GPU-abc,1:0"));
}
