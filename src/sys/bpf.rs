//! Raw bpf(2): just the commands a cgroup device program needs (load, query, fetch by id, dump,
//! attach, detach). No libbpf: the attribute structs below mirror `union bpf_attr` in
//! linux/bpf.h for those commands only.
//!
//! RLIMIT_MEMLOCK is left alone: since 5.11 BPF memory is charged to the memory cgroup, not to
//! the locked-memory limit, and the kernels we target (6.x) all do that.

use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

pub const BPF_PROG_LOAD: u32 = 5;
pub const BPF_PROG_ATTACH: u32 = 8;
pub const BPF_PROG_DETACH: u32 = 9;
pub const BPF_PROG_GET_FD_BY_ID: u32 = 13;
pub const BPF_OBJ_GET_INFO_BY_FD: u32 = 15;
pub const BPF_PROG_QUERY: u32 = 16;

pub const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
pub const BPF_CGROUP_DEVICE: u32 = 6;

#[allow(dead_code)] // uapi table kept whole
pub const BPF_F_ALLOW_OVERRIDE: u32 = 1 << 0;
pub const BPF_F_ALLOW_MULTI: u32 = 1 << 1;
pub const BPF_F_REPLACE: u32 = 1 << 2;

/// One eBPF instruction, `struct bpf_insn`: the register byte holds dst in its low nibble and
/// src in its high nibble (the little-endian bitfield layout).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Insn {
    pub code: u8,
    pub regs: u8,
    pub off: i16,
    pub imm: i32,
}

impl Insn {
    pub fn new(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Self {
        Insn {
            code,
            regs: (src << 4) | (dst & 0x0f),
            off,
            imm,
        }
    }
    pub fn dst(&self) -> u8 {
        self.regs & 0x0f
    }
    pub fn src(&self) -> u8 {
        self.regs >> 4
    }
    /// The instruction as the kernel stores it, read as one little-endian u64.
    #[cfg(test)]
    pub fn to_u64(self) -> u64 {
        u64::from(self.code)
            | u64::from(self.regs) << 8
            | u64::from(self.off as u16) << 16
            | u64::from(self.imm as u32) << 32
    }
}

/// The kernel may write fields past the ones a command documents (BPF_PROG_QUERY writes
/// `revision` on recent kernels), so every call passes a zeroed buffer this large and the typed
/// struct is copied in and out of its head.
const ATTR_SIZE: usize = 256;

#[repr(C, align(8))]
struct AttrBuf([u8; ATTR_SIZE]);

/// Marker for the attribute structs: plain old data with explicit padding, no holes.
trait Attr: Copy {}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}
impl Attr for ProgLoadAttr {}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct AttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
    relative_fd: u32,
}
impl Attr for AttachAttr {}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct QueryAttr {
    target_fd: u32,
    attach_type: u32,
    query_flags: u32,
    attach_flags: u32,
    prog_ids: u64,
    prog_cnt: u32,
    _pad: u32,
}
impl Attr for QueryAttr {}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct GetIdAttr {
    prog_id: u32,
    next_id: u32,
    open_flags: u32,
}
impl Attr for GetIdAttr {}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}
impl Attr for InfoAttr {}

/// The head of `struct bpf_prog_info` up to the instruction dumps; the kernel accepts a short
/// `info_len` and fills only that much.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct ProgInfoHead {
    prog_type: u32,
    id: u32,
    tag: [u8; 8],
    jited_prog_len: u32,
    xlated_prog_len: u32,
    jited_prog_insns: u64,
    xlated_prog_insns: u64,
}

fn sys_bpf<T: Attr>(cmd: u32, attr: &mut T) -> io::Result<i64> {
    const { assert!(size_of::<T>() <= ATTR_SIZE) };
    let mut buf = AttrBuf([0; ATTR_SIZE]);
    // SAFETY: T is a repr(C) struct of integers with no padding holes (Attr), no larger than the
    // buffer (checked above); both regions are valid and do not overlap.
    unsafe {
        std::ptr::copy_nonoverlapping(
            (attr as *const T).cast::<u8>(),
            buf.0.as_mut_ptr(),
            size_of::<T>(),
        );
    }
    // SAFETY: the buffer is ATTR_SIZE bytes, 8-aligned, zero past T, and lives across the call;
    // any user pointers inside it come from the callers below and point at live buffers.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, buf.0.as_mut_ptr(), ATTR_SIZE) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: copying back the same head; every bit pattern is a valid T (integers only).
    unsafe {
        std::ptr::copy_nonoverlapping(
            buf.0.as_ptr(),
            (attr as *mut T).cast::<u8>(),
            size_of::<T>(),
        );
    }
    Ok(rc)
}

fn fd_from(rc: i64) -> OwnedFd {
    // SAFETY: a successful fd-returning bpf command hands us a new descriptor we alone own.
    unsafe { OwnedFd::from_raw_fd(rc as RawFd) }
}

/// BPF_PROG_LOAD. On failure the verifier's complaint (its last log line) is appended, since the bare errno
/// (usually EINVAL or EACCES) says nothing about which instruction was refused.
pub fn prog_load(
    prog_type: u32,
    expected_attach_type: u32,
    insns: &[Insn],
    license: &std::ffi::CStr,
) -> io::Result<OwnedFd> {
    let mut attr = ProgLoadAttr {
        prog_type,
        insn_cnt: u32::try_from(insns.len())
            .map_err(|_| io::Error::from_raw_os_error(libc::E2BIG))?,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        expected_attach_type,
        ..Default::default()
    };
    match sys_bpf(BPF_PROG_LOAD, &mut attr) {
        Ok(rc) => Ok(fd_from(rc)),
        Err(err) => {
            let mut log = vec![0u8; 64 * 1024];
            attr.log_level = 1;
            attr.log_size = log.len() as u32;
            attr.log_buf = log.as_mut_ptr() as u64;
            if let Ok(rc) = sys_bpf(BPF_PROG_LOAD, &mut attr) {
                return Ok(fd_from(rc));
            }
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            let text = String::from_utf8_lossy(&log[..end]);
            // The log ends with a "processed N insns" statistics line; the complaint precedes it.
            let complaint = text
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty() && !l.starts_with("processed "));
            match complaint {
                Some(line) => Err(io::Error::new(
                    err.kind(),
                    format!("{err}: verifier: {line}"),
                )),
                None => Err(err),
            }
        }
    }
}

/// BPF_PROG_QUERY on a cgroup: the attach flags of that cgroup and the ids of the programs
/// attached to it directly (not inherited ones).
pub fn prog_query(cgroup: BorrowedFd, attach_type: u32) -> io::Result<(u32, Vec<u32>)> {
    let mut ids = vec![0u32; 64];
    // A program may be attached between two calls; a few retries on ENOSPC cover that race.
    for _ in 0..10 {
        let mut attr = QueryAttr {
            target_fd: cgroup.as_raw_fd() as u32,
            attach_type,
            prog_ids: ids.as_mut_ptr() as u64,
            prog_cnt: ids.len() as u32,
            ..Default::default()
        };
        match sys_bpf(BPF_PROG_QUERY, &mut attr) {
            Ok(_) => {
                ids.truncate(attr.prog_cnt as usize);
                return Ok((attr.attach_flags, ids));
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => {
                ids = vec![0; (attr.prog_cnt as usize).max(ids.len() * 2)];
            }
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::from_raw_os_error(libc::ENOSPC))
}

/// BPF_PROG_GET_FD_BY_ID.
pub fn prog_get_fd_by_id(id: u32) -> io::Result<OwnedFd> {
    let mut attr = GetIdAttr {
        prog_id: id,
        ..Default::default()
    };
    sys_bpf(BPF_PROG_GET_FD_BY_ID, &mut attr).map(fd_from)
}

/// The program as the verifier left it (BPF_OBJ_GET_INFO_BY_FD, xlated instructions). Returns
/// None when the kernel withholds the dump (a constant-blinded program and a caller that may
/// not see raw kernel values): the buffer would stay all zeros.
pub fn prog_get_xlated(prog: BorrowedFd) -> io::Result<Option<Vec<Insn>>> {
    let mut head = ProgInfoHead::default();
    get_info(prog, &mut head)?;
    let n = head.xlated_prog_len as usize / size_of::<Insn>();
    let mut insns = vec![Insn::default(); n];
    let mut head = ProgInfoHead {
        xlated_prog_len: (n * size_of::<Insn>()) as u32,
        xlated_prog_insns: insns.as_mut_ptr() as u64,
        ..Default::default()
    };
    get_info(prog, &mut head)?;
    if head.xlated_prog_insns == 0 {
        return Ok(None);
    }
    // The program cannot change once loaded, so the second length is the first one.
    insns.truncate(head.xlated_prog_len as usize / size_of::<Insn>());
    Ok(Some(insns))
}

fn get_info(prog: BorrowedFd, head: &mut ProgInfoHead) -> io::Result<()> {
    let mut attr = InfoAttr {
        bpf_fd: prog.as_raw_fd() as u32,
        info_len: size_of::<ProgInfoHead>() as u32,
        info: head as *mut ProgInfoHead as u64,
    };
    sys_bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr).map(drop)
}

/// BPF_PROG_ATTACH; `replace` is the program to swap out atomically (needs BPF_F_REPLACE).
pub fn prog_attach(
    cgroup: BorrowedFd,
    prog: BorrowedFd,
    attach_type: u32,
    flags: u32,
    replace: Option<BorrowedFd>,
) -> io::Result<()> {
    let mut attr = AttachAttr {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type,
        attach_flags: flags,
        replace_bpf_fd: replace.map_or(0, |fd| fd.as_raw_fd() as u32),
        ..Default::default()
    };
    sys_bpf(BPF_PROG_ATTACH, &mut attr).map(drop)
}

/// BPF_PROG_DETACH of one program from a cgroup.
pub fn prog_detach(cgroup: BorrowedFd, prog: BorrowedFd, attach_type: u32) -> io::Result<()> {
    let mut attr = AttachAttr {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type,
        ..Default::default()
    };
    sys_bpf(BPF_PROG_DETACH, &mut attr).map(drop)
}
