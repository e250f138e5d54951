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
        if let Some(n) = &profile.network {
            crate::netscope::parse(n).map_err(|reason| ProfileError::Invalid {
                path: shown.clone(),
                reason,
            })?;
        }
        if let Some(t) = &profile.time_limit {
            crate::case::validate::parse_slurm_time(t).map_err(|reason| ProfileError::Invalid {
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
