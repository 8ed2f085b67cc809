//! The cgroup v2 device program: pure instruction building, no syscalls.
//!
//! Layout: a prologue that decodes `struct bpf_cgroup_dev_ctx` into R2..R5, one allow block per
//! rule, then the program that was attached before (its instructions as the kernel dumped
//! them). Relative jumps inside that old program stay valid because it is only prepended to.
//! R1 (the context pointer) is never written, since the old program expects it on entry.

use anyhow::{Result, bail};

use super::DeviceRule;
use crate::sys::bpf::Insn;

// Opcode pieces from linux/bpf_common.h and linux/bpf.h.
const BPF_LD: u8 = 0x00;
const BPF_LDX: u8 = 0x01;
const BPF_JMP: u8 = 0x05;
const BPF_ALU64: u8 = 0x07;
const BPF_W: u8 = 0x00;
const BPF_DW: u8 = 0x18;
const BPF_IMM: u8 = 0x00;
const BPF_MEM: u8 = 0x60;
const BPF_K: u8 = 0x00;
const BPF_AND: u8 = 0x50;
const BPF_RSH: u8 = 0x70;
const BPF_MOV: u8 = 0xb0;
const BPF_JSET: u8 = 0x40;
const BPF_JNE: u8 = 0x50;
const BPF_CALL: u8 = 0x80;
const BPF_EXIT: u8 = 0x90;

// From linux/bpf.h: access_type = (BPF_DEVCG_ACC_* << 16) | BPF_DEVCG_DEV_*.
const BPF_DEVCG_ACC_READ: i32 = 1 << 1;
const BPF_DEVCG_ACC_WRITE: i32 = 1 << 2;
const BPF_DEVCG_DEV_CHAR: i32 = 2;

/// R0..R10 are what a program may name; the verifier's hidden scratch register (BPF_REG_AX,
/// 11) only shows up in a dump after constant blinding rewrote the program.
const MAX_USER_REG: u8 = 10;

/// Linux dev_t: 12-bit major, 20-bit minor. Checked so the 64-bit immediate compares below
/// can never meet a sign-extended value.
const MAJOR_LIMIT: u32 = 1 << 12;
const MINOR_LIMIT: u32 = 1 << 20;

const R0: u8 = 0;
const R1: u8 = 1;
const R_TYPE: u8 = 2;
const R_ACCESS: u8 = 3;
const R_MAJOR: u8 = 4;
const R_MINOR: u8 = 5;

fn ldx_w(dst: u8, src: u8, off: i16) -> Insn {
    Insn::new(BPF_LDX | BPF_W | BPF_MEM, dst, src, off, 0)
}
fn alu64_imm(op: u8, dst: u8, imm: i32) -> Insn {
    Insn::new(BPF_ALU64 | op | BPF_K, dst, 0, 0, imm)
}
fn jmp_imm(op: u8, dst: u8, imm: i32, off: i16) -> Insn {
    Insn::new(BPF_JMP | op | BPF_K, dst, 0, off, imm)
}
fn exit() -> Insn {
    Insn::new(BPF_JMP | BPF_EXIT, 0, 0, 0, 0)
}

/// Decode the context: R2 = device type, R3 = requested access, R4 = major, R5 = minor.
pub fn prologue() -> [Insn; 6] {
    [
        ldx_w(R_TYPE, R1, 0),
        alu64_imm(BPF_AND, R_TYPE, 0xffff),
        ldx_w(R_ACCESS, R1, 0),
        alu64_imm(BPF_RSH, R_ACCESS, 16),
        ldx_w(R_MAJOR, R1, 4),
        ldx_w(R_MINOR, R1, 8),
    ]
}

/// "c MAJ:MIN rw": return 1 when the request matches, else fall through to what follows.
pub fn allow_block(rule: &DeviceRule) -> Result<[Insn; 6]> {
    if rule.major >= MAJOR_LIMIT || rule.minor >= MINOR_LIMIT {
        bail!(
            "invalid device rule c {}:{} rw: major or minor out of range",
            rule.major,
            rule.minor
        );
    }
    // Each skip lands on the first instruction after the block (index 6).
    Ok([
        jmp_imm(BPF_JNE, R_TYPE, BPF_DEVCG_DEV_CHAR, 5),
        jmp_imm(
            BPF_JSET,
            R_ACCESS,
            !(BPF_DEVCG_ACC_READ | BPF_DEVCG_ACC_WRITE),
            4,
        ),
        jmp_imm(BPF_JNE, R_MAJOR, rule.major as i32, 3),
        jmp_imm(BPF_JNE, R_MINOR, rule.minor as i32, 2),
        alu64_imm(BPF_MOV, R0, 1),
        exit(),
    ])
}

/// A fixed answer: 1 allows, 0 denies.
#[cfg(test)]
pub fn verdict(allow: bool) -> [Insn; 2] {
    [alu64_imm(BPF_MOV, R0, i32::from(allow)), exit()]
}

/// Prologue, one allow block per rule, then `base` (the old program, or a verdict).
pub fn build_program(rules: &[DeviceRule], base: &[Insn]) -> Result<Vec<Insn>> {
    let mut insns = Vec::with_capacity(6 + 6 * rules.len() + base.len());
    insns.extend(prologue());
    for rule in rules {
        insns.extend(allow_block(rule)?);
    }
    insns.extend_from_slice(base);
    Ok(insns)
}

/// A dumped program can only be loaded again if the dump is the program as written: not
/// withheld, not rewritten by constant blinding, and free of helper calls and map references
/// (their immediates are kernel addresses in a dump). Loading anything else would at best be
/// refused with a bare EINVAL and at worst install a different policy.
pub fn check_reusable(insns: &[Insn]) -> Result<()> {
    if insns.is_empty() {
        bail!("the kernel returned no instructions (dump needs CAP_SYS_ADMIN)");
    }
    if insns.iter().all(|i| *i == Insn::default()) {
        bail!("dumped instructions are all zeros (constant blinding; see net.core.bpf_jit_harden)");
    }
    for (n, insn) in insns.iter().enumerate() {
        if insn.dst() > MAX_USER_REG || insn.src() > MAX_USER_REG {
            bail!(
                "instruction {n} uses the verifier's scratch register (constant blinding; see net.core.bpf_jit_harden)"
            );
        }
        if insn.code == BPF_JMP | BPF_CALL {
            bail!("instruction {n} calls a helper, which a dump cannot reproduce");
        }
        if insn.code == BPF_LD | BPF_IMM | BPF_DW && insn.src() != 0 {
            bail!("instruction {n} references a map, which a dump cannot reproduce");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (code, dst, src, off, imm) of each instruction.
    fn fields(insns: &[Insn]) -> Vec<(u8, u8, u8, i16, i32)> {
        insns
            .iter()
            .map(|i| (i.code, i.dst(), i.src(), i.off, i.imm))
            .collect()
    }

    const PROLOGUE: [(u8, u8, u8, i16, i32); 6] = [
        (0x61, 2, 1, 0, 0),      // r2 = *(u32 *)(r1 + 0)
        (0x57, 2, 0, 0, 0xffff), // r2 &= 0xffff
        (0x61, 3, 1, 0, 0),      // r3 = *(u32 *)(r1 + 0)
        (0x77, 3, 0, 0, 16),     // r3 >>= 16
        (0x61, 4, 1, 4, 0),      // r4 = *(u32 *)(r1 + 4)
        (0x61, 5, 1, 8, 0),      // r5 = *(u32 *)(r1 + 8)
    ];

    fn block(major: i32, minor: i32) -> [(u8, u8, u8, i16, i32); 6] {
        [
            (0x55, 2, 0, 5, 2),     // if r2 != BPF_DEVCG_DEV_CHAR goto +5
            (0x45, 3, 0, 4, -7),    // if r3 & ~(READ|WRITE) goto +4
            (0x55, 4, 0, 3, major), // if r4 != major goto +3
            (0x55, 5, 0, 2, minor), // if r5 != minor goto +2
            (0xb7, 0, 0, 0, 1),     // r0 = 1
            (0x95, 0, 0, 0, 0),     // exit
        ]
    }

    const DENY: [(u8, u8, u8, i16, i32); 2] = [(0xb7, 0, 0, 0, 0), (0x95, 0, 0, 0, 0)];

    #[test]
    fn cgroup_program_one_rule_on_a_verdict() {
        let insns = build_program(&[DeviceRule { major: 1, minor: 5 }], &verdict(false)).unwrap();
        let mut want = PROLOGUE.to_vec();
        want.extend(block(1, 5));
        want.extend(DENY);
        assert_eq!(fields(&insns), want);
        // The raw encoding the kernel sees: code, dst|src<<4, off, imm, little-endian.
        assert_eq!(insns[0].to_u64(), 0x0000_0000_0000_1261);
        assert_eq!(insns[1].to_u64(), 0x0000_ffff_0000_0257);
        assert_eq!(insns[5].to_u64(), 0x0000_0000_0008_1561);
        assert_eq!(insns[7].to_u64(), 0xffff_fff9_0004_0345);
        assert_eq!(insns[9].to_u64(), 0x0000_0005_0002_0555);
        assert_eq!(insns[12].to_u64(), 0x0000_0000_0000_00b7);
        assert_eq!(insns[13].to_u64(), 0x0000_0000_0000_0095);
    }

    #[test]
    fn cgroup_program_two_rules_on_an_existing_program() {
        // Stand-in for a dumped program: r0 = 0; if r4 == 136 r0 = 1; exit.
        let old = [
            Insn::new(0xb7, 0, 0, 0, 0),
            Insn::new(0x55, 4, 0, 1, 136),
            Insn::new(0xb7, 0, 0, 0, 1),
            Insn::new(0x95, 0, 0, 0, 0),
        ];
        let rules = [
            DeviceRule {
                major: 195,
                minor: 255,
            },
            DeviceRule {
                major: 195,
                minor: 0,
            },
        ];
        let insns = build_program(&rules, &old).unwrap();
        let mut want = PROLOGUE.to_vec();
        want.extend(block(195, 255));
        want.extend(block(195, 0));
        want.extend([
            (0xb7, 0, 0, 0, 0),
            (0x55, 4, 0, 1, 136),
            (0xb7, 0, 0, 0, 1),
            (0x95, 0, 0, 0, 0),
        ]);
        assert_eq!(fields(&insns), want);
    }

    #[test]
    fn cgroup_program_two_rules_on_a_verdict_and_no_rules() {
        let rules = [
            DeviceRule { major: 1, minor: 3 },
            DeviceRule { major: 1, minor: 9 },
        ];
        let insns = build_program(&rules, &verdict(true)).unwrap();
        let mut want = PROLOGUE.to_vec();
        want.extend(block(1, 3));
        want.extend(block(1, 9));
        want.extend([(0xb7, 0, 0, 0, 1), (0x95, 0, 0, 0, 0)]);
        assert_eq!(fields(&insns), want);

        let bare = build_program(&[], &verdict(false)).unwrap();
        let mut want = PROLOGUE.to_vec();
        want.extend(DENY);
        assert_eq!(fields(&bare), want);
    }

    #[test]
    fn cgroup_program_rejects_out_of_range_rules() {
        let too_big_major = DeviceRule {
            major: 4096,
            minor: 0,
        };
        let too_big_minor = DeviceRule {
            major: 1,
            minor: 1 << 20,
        };
        for rule in [too_big_major, too_big_minor] {
            let err = build_program(&[rule], &verdict(false)).unwrap_err();
            assert!(
                err.to_string().starts_with("invalid device rule c "),
                "{err}"
            );
        }
        let largest = DeviceRule {
            major: 4095,
            minor: (1 << 20) - 1,
        };
        let insns = build_program(&[largest], &verdict(false)).unwrap();
        assert_eq!((insns[8].imm, insns[9].imm), (4095, 0xfffff));
    }

    #[test]
    fn cgroup_program_reuse_checks() {
        let good = [Insn::new(0xb7, 0, 0, 0, 1), Insn::new(0x95, 0, 0, 0, 0)];
        check_reusable(&good).unwrap();

        let cases: [(&[Insn], &str); 5] = [
            (&[], "no instructions"),
            (&[Insn::default(); 4], "all zeros"),
            // Blinded: r11 (BPF_REG_AX) = imm ^ key.
            (
                &[
                    Insn::new(0xb7, 11, 0, 0, 0x1234),
                    Insn::new(0x95, 0, 0, 0, 0),
                ],
                "scratch register",
            ),
            (
                &[Insn::new(0x85, 0, 0, 0, 0x777), Insn::new(0x95, 0, 0, 0, 0)],
                "calls a helper",
            ),
            (
                &[
                    Insn::new(0x18, 1, 1, 0, 7),
                    Insn::default(),
                    Insn::new(0x95, 0, 0, 0, 0),
                ],
                "references a map",
            ),
        ];
        for (insns, want) in cases {
            let err = check_reusable(insns).unwrap_err().to_string();
            assert!(err.contains(want), "{err} lacks {want}");
        }
        // A plain 64-bit immediate load (src 0) is fine.
        let ld_imm64 = [
            Insn::new(0x18, 0, 0, 0, 1),
            Insn::default(),
            Insn::new(0x95, 0, 0, 0, 0),
        ];
        check_reusable(&ld_imm64).unwrap();
    }
}
