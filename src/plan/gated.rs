//! The gated devices (GDS, MOFED, GDRCOPY, NVSWITCH) in a plan.

use super::{Kind, Options, Plan, Root};
use crate::discover::gated::GatedDevices;

/// The gated devices the container asked for and the host has: their nodes, and GDS's files
/// at their host paths. A kind the host lacks adds nothing (upstream fails the container on an
/// empty CDI device instead).
pub fn add_gated(p: &mut Plan, o: &Options, gated: &GatedDevices) {
    for node in &gated.nodes {
        p.add_device(o, &node.path, node.major, node.minor);
    }
    for file in &gated.files {
        p.bind(Root::Driver, file, file, Kind::File);
    }
    for dir in &gated.dirs {
        p.bind(Root::Driver, dir, dir, Kind::Dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discover::devices::DeviceNode;

    fn gds() -> GatedDevices {
        GatedDevices {
            nodes: vec![DeviceNode {
                path: "/dev/nvidia-fs0".into(),
                major: 241,
                minor: 0,
            }],
            files: vec!["/etc/cufile.json".into()],
            dirs: vec!["/run/udev".into()],
        }
    }

    #[test]
    fn gated_nodes_and_files_in_the_plan() {
        let mut p = Plan::default();
        add_gated(&mut p, &Options::default(), &gds());
        assert_eq!(
            p.to_string(),
            "tmpfs /proc/driver/nvidia ()\n\
             device /dev/nvidia-fs0 <- dev-root:/dev/nvidia-fs0 (c 241:0)\n\
             bind /etc/cufile.json <- driver-root:/etc/cufile.json (ro,nosuid,nodev)\n\
             bind /run/udev <- driver-root:/run/udev (ro,nosuid,nodev,rec)\n\
             cgroup c 241:0 rw\n"
        );
        // --no-devbind / --no-cgroups apply to them as to the driver's nodes.
        let mut p = Plan::default();
        let o = Options {
            no_devbind: true,
            no_cgroups: true,
            ..Options::default()
        };
        add_gated(&mut p, &o, &gds());
        assert_eq!(p.binds.len(), 2);
        assert!(p.cgroup.is_empty());
    }
}
