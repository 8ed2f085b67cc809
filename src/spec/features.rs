//! upstream's nvcdi feature flags (`cdi generate --feature-flag`, `[nvidia-container-runtime.modes.jit-cdi]
//! nvcdi-feature-flags`): each one is honoured or refused by name, never ignored.

use anyhow::{Result, bail};

/// The flags that change a spec made by nvbox.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Features {
    /// `disable-ipc-discoverer`: no persistenced, fabricmanager or MPS sockets.
    pub no_ipc: bool,
    /// `no-additional-gids-for-device-nodes`: a node's group stays on the node only.
    pub no_additional_gids: bool,
    /// `enable-explicit-driver-libraries`: the GLVND and OpenCL loaders and a few unversioned
    /// driver libraries too.
    pub explicit_libraries: bool,
}

impl Features {
    pub fn parse<S: AsRef<str>>(flags: &[S]) -> Result<Features> {
        let mut f = Features::default();
        for flag in flags.iter().map(AsRef::as_ref) {
            match flag {
                "disable-ipc-discoverer" => f.no_ipc = true,
                "no-additional-gids-for-device-nodes" => f.no_additional_gids = true,
                "enable-explicit-driver-libraries" => f.explicit_libraries = true,
                // What this turns off is never done: nvbox does not use nvsandboxutils.
                "disable-nvsandboxutils" => {}
                "disable-multiple-csv-devices" => bail!(
                    "feature flag {flag:?} is not supported by nvbox: csv mode always makes one \
                     device per GPU"
                ),
                "enable-coherent-annotations" => bail!(
                    "feature flag {flag:?} is not supported by nvbox: it needs the GPUs' ATS \
                     addressing mode, which only NVML reports"
                ),
                other => bail!("unknown feature flag {other:?}"),
            }
        }
        Ok(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_flag_is_honoured_or_refused_by_name() {
        let f = Features::parse(&[
            "disable-ipc-discoverer",
            "no-additional-gids-for-device-nodes",
            "enable-explicit-driver-libraries",
            "disable-nvsandboxutils",
        ])
        .unwrap();
        assert!(f.no_ipc && f.no_additional_gids && f.explicit_libraries);
        assert_eq!(Features::parse::<&str>(&[]).unwrap(), Features::default());
        let e = Features::parse(&["enable-coherent-annotations"]).unwrap_err();
        assert!(e.to_string().contains("enable-coherent-annotations"), "{e}");
        let e = Features::parse(&["typo-flag"]).unwrap_err();
        assert_eq!(e.to_string(), "unknown feature flag \"typo-flag\"");
    }
}
