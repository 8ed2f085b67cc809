//! Who owns what nvbox creates in a rootfs: the container's root. In a user namespace that is
//! not host root: Docker's `userns-remap`, Podman's `--userns=auto` and Kubernetes map uid 0 to
//! an unprivileged host id (say 300000), and an inode created as host root has no owner inside
//! the namespace (EOVERFLOW on a tmpfs the namespace mounted, `nobody` elsewhere). Like
//! libnvidia-container, files are created with the fsuid/fsgid of the container's root,
//! found from the id maps of the container's init.

use std::os::unix::fs::MetadataExt;

use anyhow::{Result, bail};

/// Host ids (in our own user namespace) of the container's root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

/// The owner for the container whose init is `pid`: `None` when the init shares our user
/// namespace (its root is ours, nothing changes), or when its namespace cannot be seen (a
/// process that has gone, a pid from another pid namespace). An init whose root is not mapped
/// into our namespace cannot be served: that is an error.
pub fn container_owner(pid: i32) -> Result<Option<Owner>> {
    if pid <= 0 {
        return Ok(None);
    }
    let ns = |p: &str| std::fs::metadata(p).map(|m| (m.dev(), m.ino()));
    let (Ok(ours), Ok(theirs)) = (
        ns("/proc/self/ns/user"),
        ns(&format!("/proc/{pid}/ns/user")),
    ) else {
        return Ok(None);
    };
    if ours == theirs {
        return Ok(None);
    }
    let read = |name: &str| std::fs::read_to_string(format!("/proc/{pid}/{name}"));
    let (Ok(uid_map), Ok(gid_map)) = (read("uid_map"), read("gid_map")) else {
        return Ok(None);
    };
    let (Some(uid), Some(gid)) = (map_root(&uid_map), map_root(&gid_map)) else {
        bail!(
            "container error: the container's root is not mapped to a user of the host \
             (user namespace of pid {pid}); nvbox cannot create files it would own"
        );
    };
    Ok(Some(Owner { uid, gid }))
}

/// The id that 0 inside maps to, from a `uid_map`/`gid_map` as read from outside the
/// namespace (lines `inside outside count`, outside in the reader's namespace).
pub fn map_root(map: &str) -> Option<u32> {
    map.lines().find_map(|line| {
        let f: Vec<u64> = line
            .split_whitespace()
            .map(str::parse)
            .collect::<Result<_, _>>()
            .ok()?;
        match f.as_slice() {
            &[inside, outside, count] if inside == 0 && count > 0 => u32::try_from(outside).ok(),
            _ => None,
        }
    })
}

/// Create files as `owner` from now on (this process only: the live path calls it in its
/// forked child). The kernel drops the file capabilities from the effective set when the fsuid
/// leaves 0, so the caller re-enters its phase afterwards.
pub fn become_owner(owner: Owner) -> Result<()> {
    crate::sys::caps::set_fs_ids(owner.uid, owner.gid).map_err(|e| {
        anyhow::anyhow!(
            "container error: create files as {}:{}: {}",
            owner.uid,
            owner.gid,
            crate::discover::files::lower_io(&e)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_found_in_any_line() {
        assert_eq!(map_root("         0     300000      65536\n"), Some(300000));
        assert_eq!(map_root("1000 1000 1\n0 100000 1000\n"), Some(100000));
        assert_eq!(map_root("1 100000 65536\n"), None);
        assert_eq!(map_root(""), None);
        assert_eq!(map_root("0 5 0\n"), None);
    }
}
