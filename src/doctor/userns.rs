//! User namespaces: an engine that maps container ids needs a subordinate range for its user in
//! /etc/subuid and /etc/subgid: a rootless engine (rootlesskit, or dockerd, containerd, podman
//! or conmon running as a user) for every container, and dockerd's `userns-remap` user.
//! Without one, containers fail before nvbox is ever called, with errors that do not say why.

use std::path::Path;

use super::{Context, Finding};

pub fn check(ctx: &Context, out: &mut Vec<Finding>) {
    let subuid = std::fs::read_to_string("/etc/subuid").unwrap_or_default();
    let subgid = std::fs::read_to_string("/etc/subgid").unwrap_or_default();
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    for (pid, comm, uid) in rootless_engines(&ctx.procs) {
        let name = user_name(&passwd, uid);
        let what = format!(
            "rootless {comm} (pid {pid}, user {})",
            name.as_deref().unwrap_or("?")
        );
        out.push(check_ranges(&what, name.as_deref(), uid, &subuid, &subgid));
    }
    if let Some(user) = remap_user(&ctx.docker_config) {
        // `default` is dockremap, which dockerd creates with its ranges when it does not exist.
        let name = if user == "default" {
            "dockremap".to_owned()
        } else {
            user
        };
        if let Some(uid) = user_id(&passwd, &name) {
            let what = format!("docker userns-remap user {name}");
            out.push(check_ranges(&what, Some(&name), uid, &subuid, &subgid));
        }
    }
}

/// Non-root engine processes: (pid, comm, uid).
fn rootless_engines(procs: &Path) -> Vec<(u32, String, u32)> {
    let mut found = Vec::new();
    for e in std::fs::read_dir(procs).into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
        let comm = comm.trim();
        if !matches!(
            comm,
            "rootlesskit" | "dockerd" | "containerd" | "podman" | "conmon"
        ) {
            continue;
        }
        let status = std::fs::read_to_string(e.path().join("status")).unwrap_or_default();
        let uid = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|v| v.split_whitespace().nth(1))
            .and_then(|u| u.parse::<u32>().ok());
        if let Some(uid) = uid.filter(|u| *u != 0)
            && !found.iter().any(|(_, _, u)| *u == uid)
        {
            found.push((pid, comm.to_owned(), uid));
        }
    }
    found
}

/// daemon.json's `userns-remap` (a user, `user:group`, or `default`).
fn remap_user(daemon_json: &Path) -> Option<String> {
    let text = std::fs::read_to_string(daemon_json).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    let user = v.get("userns-remap")?.as_str()?;
    let user = user.split(':').next().unwrap_or(user);
    Some(user.to_owned()).filter(|u| !u.is_empty())
}

fn user_name(passwd: &str, uid: u32) -> Option<String> {
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() > 2 && f[2] == uid.to_string()).then(|| f[0].to_owned())
    })
}

fn user_id(passwd: &str, name: &str) -> Option<u32> {
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() > 2 && f[0] == name).then(|| f[2].parse().ok())?
    })
}

/// The ids a user may map, summed over its lines (`name:start:count` or `uid:start:count`).
pub fn range_size(file: &str, name: Option<&str>, uid: u32) -> u64 {
    file.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.trim().split(':').collect();
            let owner = *f.first()?;
            let mine = Some(owner) == name || owner == uid.to_string();
            mine.then(|| f.get(2)?.parse::<u64>().ok())?
        })
        .sum()
}

pub fn check_ranges(
    what: &str,
    name: Option<&str>,
    uid: u32,
    subuid: &str,
    subgid: &str,
) -> Finding {
    let u = range_size(subuid, name, uid);
    let g = range_size(subgid, name, uid);
    let who = name.map_or_else(|| uid.to_string(), str::to_owned);
    if u == 0 || g == 0 {
        let missing = match (u, g) {
            (0, 0) => "/etc/subuid and /etc/subgid",
            (0, _) => "/etc/subuid",
            _ => "/etc/subgid",
        };
        return Finding::warn(
            "user namespace",
            format!(
                "{what} has no subordinate id range in {missing}: containers cannot map their ids and fail to start (`cannot find mappings for user`, `newuidmap … write to uid_map failed`)"
            ),
            format!("usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {who}"),
        );
    }
    Finding::ok(
        "user namespace",
        format!("{what} maps {u} subordinate uids and {g} gids"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Status;

    #[test]
    fn ranges_by_name_or_uid() {
        let sub = "alice:100000:65536\n1001:200000:1000\n1001:300000:1000\n";
        assert_eq!(range_size(sub, Some("alice"), 1000), 65536);
        assert_eq!(range_size(sub, Some("bob"), 1001), 2000);
        assert_eq!(range_size(sub, Some("carol"), 1002), 0);
    }

    #[test]
    fn a_user_without_ranges_is_a_warning_with_the_fix() {
        let f = check_ranges(
            "rootless podman",
            Some("carol"),
            1002,
            "alice:1:5\n",
            "carol:1:5\n",
        );
        assert_eq!(f.status, Status::Warn);
        assert!(f.message.contains("in /etc/subuid:"), "{}", f.message);
        assert!(f.fix.ends_with("carol"), "{}", f.fix);
        let ok = check_ranges("x", Some("alice"), 1000, "alice:1:5\n", "alice:1:5\n");
        assert_eq!(ok.status, Status::Ok);
    }
}
