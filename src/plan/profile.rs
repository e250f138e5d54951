//! Cluster profiles (`clusters/*.yaml`): what to rewrite so a case written for a GPU cluster can be
//! submitted to this one. Every rewrite is recorded as a human-readable override line.

use std::path::Path;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterProfile {
    pub name: String,
    /// Replaces `slurm.partition`.
    #[serde(default)]
    pub partition: Option<String>,
    /// Replaces `slurm.account`; `""` drops `--account`.
    #[serde(default)]
    pub account: Option<String>,
    /// Caps `slurm.job_time`.
    #[serde(default)]
    pub time_limit: Option<String>,
    /// `false`: the cluster has no GPUs; GPU requests are dropped.
    #[serde(default = "yes")]
    pub gpus: bool,
    /// `false`: container image and mounts are dropped.
    #[serde(default = "yes")]
    pub containers: bool,
    /// Scales the node count down to at most this.
    #[serde(default)]
    pub max_nodes: Option<u64>,
    /// Address the serving roles bind and advertise: an IP, or `hostname` for the node's own name
    /// (multi-node clusters). Default 127.0.0.1.
    #[serde(default)]
    pub serve_host: Option<String>,
    /// The cluster's private network (CIDR): servers, routers and clients of a job may listen on
    /// and send to its addresses without `--allow-remote` (src/netscope.rs).
    #[serde(default)]
    pub network: Option<String>,
    /// Where private runtime files (the case environment a job sources) are written: a directory
    /// every node sees, outside OUTPUT_PATH. Default: see `secrets::runtime_root`.
    #[serde(default)]
    pub runtime_dir: Option<std::path::PathBuf>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("failed to read cluster profile {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid cluster profile {path}: {reason}")]
    Invalid { path: String, reason: String },
}

impl ClusterProfile {
    pub fn load(path: &Path) -> Result<ClusterProfile, ProfileError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ProfileError::Read {
            path: shown.clone(),
            source,
        })?;
        let profile: ClusterProfile =
            serde_yaml::from_str(&text).map_err(|e| ProfileError::Invalid {
                path: shown.clone(),
                reason: e.to_string(),
            })?;
        let invalid = |reason: String| ProfileError::Invalid {
            path: shown.clone(),
            reason,
        };
        let network = match &profile.network {
            Some(n) => Some(crate::netscope::parse(n).map_err(invalid)?),
            None => None,
        };
        if let Some(host) = &profile.serve_host {
            crate::netscope::check_serve_host(host, network.as_ref())
                .map_err(|r| invalid(format!("serve_host: {r}")))?;
        }
        if let Some(t) = &profile.time_limit {
            crate::case::common::parse_slurm_time(t).map_err(|reason| ProfileError::Invalid {
                path: shown,
                reason: format!("time_limit: {reason}"),
            })?;
        }
        Ok(profile)
    }

    /// True for an `extra_args` word that asks for GPUs.
    pub fn is_gpu_request(arg: &str) -> bool {
        [
            "--gres",
            "--gpus",
            "--gpus-per-node",
            "--gpus-per-task",
            "--gpu",
            "-G",
        ]
        .iter()
        .any(|flag| arg == *flag || arg.starts_with(&format!("{flag}=")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<ClusterProfile, String> {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("p.yaml");
        std::fs::write(&path, text).unwrap();
        ClusterProfile::load(&path).map_err(|e| e.to_string())
    }

    #[test]
    fn serve_host_must_be_an_address_other_roles_can_reach() {
        assert!(load("name: a\nserve_host: 127.0.0.1\n").is_ok());
        assert!(load("name: a\nserve_host: hostname\nnetwork: 10.231.0.0/24\n").is_ok());
        assert!(load("name: a\nserve_host: 10.231.0.5\nnetwork: 10.231.0.0/24\n").is_ok());
        let e = load("name: a\nserve_host: 0.0.0.0\n").unwrap_err();
        assert!(
            e.contains("serve_host: 0.0.0.0 binds every interface"),
            "{e}"
        );
        let e = load("name: a\nserve_host: 10.9.0.5\nnetwork: 10.231.0.0/24\n").unwrap_err();
        assert!(
            e.contains("outside the profile's network 10.231.0.0/24"),
            "{e}"
        );
        let e = load("name: a\nnetwork: 0.0.0.0/0\n").unwrap_err();
        assert!(e.contains("not a private network"), "{e}");
    }
}
