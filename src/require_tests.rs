use super::*;

const CUDA_IMAGE: &str =
    "cuda>=12.2 brand=tesla,driver>=470,driver<471 brand=unknown,driver>=470,driver<471";
const UPDATE_HINT: &str =
    ", please update your driver to a newer version, or use an earlier cuda container";

fn host(cuda: &str, driver: &str) -> HostFacts {
    let known = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    HostFacts {
        cuda: known(cuda),
        driver: known(driver),
    }
}

fn device(arch: &str, brand: &str) -> DeviceFacts {
    let known = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    DeviceFacts {
        arch: known(arch),
        brand: known(brand),
    }
}

fn check(preds: &[&str], host: &HostFacts, devices: &[DeviceFacts]) -> Result<(), String> {
    let preds: Vec<String> = preds.iter().map(|&p| p.to_owned()).collect();
    check_requirements(&preds, host, devices).map_err(|e| format!("{e:#}"))
}

#[test]
fn expression_table() {
    let h = host("12.2", "535.104.05");
    let tesla = [device("9.0", "Tesla")];
    // (predicate, satisfied on h with one Tesla 9.0 device)
    let cases: &[(&str, bool)] = &[
        ("cuda>=12.2", true),
        ("cuda>12.2", false),
        ("cuda<=12.2", true),
        ("cuda<12.2", false),
        ("cuda=12.2", true),
        ("cuda=12.2.0", true),
        ("cuda!=12.2.0.0", false),
        ("cuda>=12.10", false),
        ("cuda>=9.9", true),
        ("CUDA>=12", true),
        ("driver>=535.104", true),
        ("driver>=535.104.5", true),
        ("driver>535.104.5", false),
        ("driver=535.104.05", true),
        ("driver<535.104.6", true),
        ("arch>=8.0", true),
        ("arch=9", true),
        ("arch<9.0", false),
        ("brand=tesla", true),
        ("brand=TESLA", true),
        ("brand!=tesla", false),
        ("brand=geforce", false),
        ("Brand!=geforce", true),
        // OR between alternatives, AND inside one.
        ("cuda>=13.0 driver>=535", true),
        ("cuda>=12.0,driver>=600", false),
        (
            "cuda>=13.0 cuda>=12.0,driver>=600 arch>=9.0,brand=tesla",
            true,
        ),
        // Empty tokens are skipped; an alternative of only commas has no terms and holds.
        ("  cuda>=12.2  ", true),
        ("cuda>=12.2,,driver>=535,", true),
        ("cuda>=99 ,,", true),
        (CUDA_IMAGE, true),
    ];
    for (pred, want) in cases {
        let got = check(&[pred], &h, &tesla);
        assert_eq!(got.is_ok(), *want, "{pred:?}: {got:?}");
        if let Err(e) = got {
            assert!(e.starts_with("unsatisfied condition: "), "{pred}: {e}");
        }
    }
}

#[test]
fn typical_cuda_image_predicate() {
    // New enough CUDA: the first alternative holds on any device.
    assert!(
        check(
            &[CUDA_IMAGE],
            &host("12.4", "550.54"),
            &[device("7.0", "GeForce")]
        )
        .is_ok()
    );
    // Old CUDA but the R470 branch on a Tesla: the second alternative holds.
    assert!(
        check(
            &[CUDA_IMAGE],
            &host("11.4", "470.82.01"),
            &[device("7.0", "Tesla")]
        )
        .is_ok()
    );
    // R470 on a GeForce: neither branch alternative names it.
    let e = check(
        &[CUDA_IMAGE],
        &host("11.4", "470.82.01"),
        &[device("7.0", "GeForce")],
    );
    assert_eq!(
        e.unwrap_err(),
        format!("unsatisfied condition: cuda>=12.2{UPDATE_HINT}")
    );
    // R470 with no device selected: brand terms are true, so the branch alternative holds.
    assert!(check(&[CUDA_IMAGE], &host("11.4", "470.82.01"), &[]).is_ok());
    // Old and outside the branch.
    let e = check(&[CUDA_IMAGE], &host("11.8", "520.61.05"), &[]);
    assert_eq!(
        e.unwrap_err(),
        format!("unsatisfied condition: cuda>=12.2{UPDATE_HINT}")
    );
}

#[test]
fn failure_names_the_first_alternative_verbatim() {
    let h = host("12.2", "535.104.05");
    let e = check(
        &["  arch>=10.0,brand=Tesla driver>=600"],
        &h,
        &[device("9.0", "Tesla")],
    );
    assert_eq!(
        e.unwrap_err(),
        "unsatisfied condition: arch>=10.0,brand=Tesla"
    );
    // The hint goes only with an alternative that starts with `cuda>=`.
    let e = check(&["CUDA>=13"], &h, &[]);
    assert_eq!(e.unwrap_err(), "unsatisfied condition: CUDA>=13");
    let e = check(&["cuda>=13,driver>=1"], &h, &[]);
    assert_eq!(
        e.unwrap_err(),
        format!("unsatisfied condition: cuda>=13,driver>=1{UPDATE_HINT}")
    );
    let e = check(&["cuda>13"], &h, &[]);
    assert_eq!(e.unwrap_err(), "unsatisfied condition: cuda>13");
    // The first failing predicate is reported.
    let e = check(
        &["driver>=1", "arch>=99", "driver>=999"],
        &h,
        &[device("9.0", "")],
    );
    assert_eq!(e.unwrap_err(), "unsatisfied condition: arch>=99");
}

#[test]
fn invalid_expressions() {
    let h = host("12.2", "535.104.05");
    for pred in [
        "cuda==12.2",
        "cuda=>12",
        "cuda<>12",
        "cuda!12",
        "cuda=!12",
        "cuda>=",
        ">=12",
        "cuda12",
        "cuda",
        "foo>=1",
        "cuda>=12.x",
        "cuda>=12..2",
        "cuda>=.2",
        "cuda>=v12",
        "driver>=-1",
        "brand>=tesla",
        "brand<tesla",
        "",
        "   ",
        // Validated even though the first alternative would hold.
        "cuda>=1 foo=bar",
        "cuda>=1,arch>=x",
    ] {
        let e = check(&[pred], &h, &[device("9.0", "Tesla")]);
        assert_eq!(e, Err("invalid expression".to_owned()), "{pred:?}");
    }
    // Anywhere in the list, even after a failing predicate's position.
    let e = check(&["cuda>=99", "cuda==1"], &h, &[]);
    assert_eq!(e, Err("invalid expression".to_owned()));
}

#[test]
fn unknown_facts_satisfy_their_terms() {
    let unknown = HostFacts::default();
    assert!(check(&["cuda>=99", "driver<1"], &unknown, &[]).is_ok());
    // arch/brand with no device are true, and so is a device that does not report them.
    let h = host("12.2", "535.104.05");
    assert!(check(&["arch>=99,brand=quadro"], &h, &[]).is_ok());
    assert!(check(&["arch>=99,brand=quadro"], &h, &[DeviceFacts::default()]).is_ok());
    // A known host value that is not a version cannot satisfy a version term.
    let odd = host("12.2", "535.104.05-custom");
    assert!(check(&["driver>=1"], &odd, &[]).is_err());
}

#[test]
fn every_device_must_satisfy() {
    let h = host("12.2", "535.104.05");
    let devices = [
        device("9.0", "Tesla"),
        device("7.5", "GeForce"),
        device("8.6", "Tesla"),
    ];
    assert!(check(&["arch>=7.5"], &h, &devices).is_ok());
    let e = check(&["arch>=8.0"], &h, &devices);
    assert_eq!(e.unwrap_err(), "unsatisfied condition: arch>=8.0");
    let e = check(&["brand=tesla"], &h, &devices);
    assert_eq!(e.unwrap_err(), "unsatisfied condition: brand=tesla");
    // Alternatives are chosen per device.
    assert!(check(&["brand=tesla arch<8.0"], &h, &devices).is_ok());
}

#[test]
fn predicate_count_limit() {
    let h = host("12.2", "535.104.05");
    let max: Vec<&str> = vec!["cuda>=1"; 32];
    assert!(check(&max, &h, &[]).is_ok());
    let over: Vec<&str> = vec!["cuda>=1"; 33];
    assert_eq!(
        check(&over, &h, &[]),
        Err("too many requirements".to_owned())
    );
    assert!(check(&[], &h, &[]).is_ok());
}

#[test]
fn version_comparison() {
    use std::cmp::Ordering::*;
    for (a, b, want) in [
        ("12.0", "12", Equal),
        ("12.0.0", "12", Equal),
        ("12", "12.0.1", Less),
        ("12.10", "12.9", Greater),
        ("535.104.05", "535.104.5", Equal),
        ("007", "7", Equal),
        ("99999999999999999999999", "1", Greater),
        ("0", "0.0", Equal),
    ] {
        assert_eq!(compare_versions(a, b), want, "{a} vs {b}");
        assert_eq!(compare_versions(b, a), want.reverse(), "{b} vs {a}");
    }
}
