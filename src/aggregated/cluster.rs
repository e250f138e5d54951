//! The seed's SSH cluster: commands on cluster nodes through the system `ssh` client, Ray started on
//! as many nodes as a model needs (tp·pp·dp / GPUs per node) and stopped afterwards.
//!
//! Every remote command is an argv joined with shell quoting (the remote side runs it through a
//! shell), so values from YAML stay inert. Passwords go to `sshpass -e` through its environment
//! variable, never into an argument list or a log; `Debug` of a node redacts it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::aggregated::case::{AuthType, ClusterNode};

/// Where Ray's head listens on the first node.
pub const RAY_PORT: u16 = 6379;

pub struct Node {
    pub spec: ClusterNode,
    /// Resolved from `password` / `password_env`; kept out of `Debug`.
    password: Option<String>,
    /// SSH's known-hosts file for this run (host keys accepted on first use, then pinned).
    known_hosts: PathBuf,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("spec", &self.spec)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

fn expand_home(p: &str) -> PathBuf {
    match (p.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => PathBuf::from(p),
    }
}

impl Node {
    pub fn new(spec: &ClusterNode, work_dir: &Path) -> Result<Node, String> {
        let password = match spec.ssh.auth_type {
            AuthType::Key => None,
            AuthType::Password => Some(match (&spec.ssh.password_env, &spec.ssh.password) {
                (Some(var), _) => std::env::var(var)
                    .map_err(|_| format!("{}: password_env {var} is not set", spec.ssh.hostname))?,
                (None, Some(p)) => p.clone(),
                (None, None) => {
                    return Err(format!(
                        "{}: auth_type password without a password",
                        spec.ssh.hostname
                    ))
                }
            }),
        };
        if let Some(p) = &password {
            crate::secrets::mask(p);
        }
        Ok(Node {
            spec: spec.clone(),
            password,
            known_hosts: work_dir.join("known_hosts"),
        })
    }

    /// `user@host:port`, for messages.
    pub fn name(&self) -> String {
        format!(
            "{}@{}:{}",
            self.spec.ssh.user, self.spec.ssh.hostname, self.spec.ssh.port
        )
    }

    /// The local command that runs `argv` on the node (password, if any, only in the environment).
    pub fn command(&self, argv: &[String]) -> Command {
        let ssh = &self.spec.ssh;
        let mut cmd = match &self.password {
            Some(_) => {
                let mut c = Command::new("sshpass");
                c.arg("-e").arg("ssh");
                c
            }
            None => Command::new("ssh"),
        };
        cmd.args(["-p", &ssh.port.to_string()])
            .args(["-o", "StrictHostKeyChecking=accept-new"])
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", self.known_hosts.display()))
            .args(["-o", "ConnectTimeout=10"]);
        match (&self.password, &ssh.private_key) {
            (Some(pw), _) => {
                cmd.env("SSHPASS", pw).args([
                    "-o",
                    "PreferredAuthentications=password,keyboard-interactive",
                    "-o",
                    "PubkeyAuthentication=no",
                ]);
            }
            (None, key) => {
                cmd.args(["-o", "BatchMode=yes"]);
                if let Some(k) = key {
                    cmd.arg("-i").arg(expand_home(k));
                }
            }
        }
        cmd.arg("-l")
            .arg(&ssh.user)
            .arg(&ssh.hostname)
            .arg("--")
            .arg(shell_words::join(argv))
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `argv` on the node; a failure names the node, the command and what it printed.
    pub fn run(&self, argv: &[&str]) -> Result<Output, String> {
        let argv: Vec<String> = argv.iter().map(|s| (*s).to_owned()).collect();
        let out = self.command(&argv).output().map_err(|e| {
            let tool = if self.password.is_some() {
                "sshpass"
            } else {
                "ssh"
            };
            format!(
                "{}: cannot start {tool}: {e}{}",
                self.name(),
                if self.password.is_some() {
                    " (auth_type password needs sshpass: apt-get install sshpass)"
                } else {
                    ""
                }
            )
        })?;
        if out.status.success() {
            Ok(out)
        } else {
            Err(format!(
                "{}: `{}` failed ({}): {}",
                self.name(),
                shell_words::join(&argv),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// The node's hostname, and its Ray NIC checked to exist.
    pub fn probe(&self) -> Result<String, String> {
        let out = self.run(&["hostname"])?;
        let host = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if let Some(nic) = self.spec.nic() {
            let path = format!("/sys/class/net/{nic}");
            self.run(&["test", "-e", &path]).map_err(|_| {
                format!(
                    "{}: ray.nic `{}` does not exist on {host}",
                    self.name(),
                    nic
                )
            })?;
        }
        Ok(host)
    }

    fn ray_env(&self) -> Vec<String> {
        let mut v = vec!["env".to_owned()];
        if let Some(nic) = self.spec.nic() {
            v.push(format!("GLOO_SOCKET_IFNAME={nic}"));
        }
        v
    }

    pub fn ray_start(&self, head: Option<&str>) -> Result<(), String> {
        let mut argv = self.ray_env();
        // No usage report: cluster nodes often cannot reach the internet, and the attempt stalls.
        argv.extend(["ray".into(), "start".into(), "--disable-usage-stats".into()]);
        match head {
            None => argv.extend(["--head".into(), "--port".into(), RAY_PORT.to_string()]),
            Some(addr) => argv.extend(["--address".into(), format!("{addr}:{RAY_PORT}")]),
        }
        // Ray takes its node's address from the default route; a node without one, or with
        // several networks, would advertise an address the others cannot reach. The address
        // servetest reaches the node at is one they can.
        let host = &self.spec.ssh.hostname;
        if host.parse::<std::net::IpAddr>().is_ok() {
            argv.extend(["--node-ip-address".into(), host.clone()]);
        }
        let refs: Vec<&str> = argv.iter().map(String::as_str).collect();
        self.run(&refs)
            .map(|_| ())
            .map_err(|e| format!("starting Ray: {e}"))
    }

    pub fn ray_stop(&self) {
        let _ = self.run(&["ray", "stop", "--force"]);
    }
}

/// Brings up the nodes a model needs: probes each (the first must be this machine), starts Ray
/// there when the backend is Ray. Returns the nodes in use (stop them with `release`).
pub fn acquire(
    cluster: &[ClusterNode],
    needed: usize,
    ray: bool,
    work_dir: &Path,
) -> Result<Vec<Node>, String> {
    if needed > cluster.len() {
        return Err(format!(
            "the model needs {needed} node(s) (tp·pp·dp / gpus_per_node) but the cluster has {}",
            cluster.len()
        ));
    }
    let nodes: Vec<Node> = cluster[..needed]
        .iter()
        .map(|n| Node::new(n, work_dir))
        .collect::<Result<_, _>>()?;
    let here = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();
    for (i, node) in nodes.iter().enumerate() {
        let host = node.probe()?;
        println!("cluster: {} is {host}", node.name());
        if i == 0 && host != here {
            return Err(format!(
                "the first cluster node must be the machine this runs on ({here}); {} is {host}",
                node.name()
            ));
        }
    }
    if ray {
        let head = &nodes[0];
        head.ray_start(None)?;
        for node in &nodes[1..] {
            if let Err(e) = node.ray_start(Some(&head.spec.ssh.hostname)) {
                release(&nodes, true);
                return Err(e);
            }
        }
        // A worker that started but never joined would leave the engine waiting for resources;
        // it is named here instead.
        if let Err(e) = wait_for_ray(head, nodes.len()) {
            release(&nodes, true);
            return Err(e);
        }
    }
    Ok(nodes)
}

/// Polls `ray status` on the head until `want` nodes are active (60 s).
fn wait_for_ray(head: &Node, want: usize) -> Result<(), String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let text = head
            .run(&["ray", "status"])
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_else(|e| e);
        let active = ray_active_nodes(&text);
        if active >= want {
            println!("cluster: Ray up with {active} active node(s)");
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            return Err(format!(
                "{}: the Ray cluster has {active} of {want} node(s) active after 60 s; `ray status`:\n{}",
                head.name(),
                text.trim()
            ));
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}

/// Active nodes in `ray status` output: the `node_…` lines of its `Active:` list.
pub fn ray_active_nodes(text: &str) -> usize {
    text.lines()
        .skip_while(|l| l.trim() != "Active:")
        .skip(1)
        .take_while(|l| l.starts_with(' '))
        .filter(|l| l.contains("node_"))
        .count()
}

pub fn release(nodes: &[Node], ray: bool) {
    if ray {
        for node in nodes.iter().rev() {
            node.ray_stop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregated::case::{RayNode, SshTarget};

    fn node(auth: AuthType) -> ClusterNode {
        ClusterNode {
            ssh: SshTarget {
                hostname: "host1".into(),
                port: 2222,
                user: "root".into(),
                auth_type: auth,
                private_key: Some("/k/id".into()),
                password: Some("hunter2; rm -rf /".into()),
                password_env: None,
            },
            ray: Some(RayNode { nic: "eth0".into() }),
            nic: None,
        }
    }

    #[test]
    fn ray_status_active_nodes_are_counted() {
        let text = "======== Autoscaler status ========\nNode status\n------\nActive:\n 1 node_09c0\n 1 node_2b52\nPending:\n (no pending nodes)\n";
        assert_eq!(ray_active_nodes(text), 2);
        assert_eq!(
            ray_active_nodes("Active:\n (no active nodes)\nPending:\n"),
            0
        );
        assert_eq!(ray_active_nodes("ray: command not found"), 0);
    }

    #[test]
    fn passwords_stay_out_of_argv_and_debug_and_commands_are_quoted() {
        let n = Node::new(&node(AuthType::Password), Path::new("/w")).unwrap();
        let cmd = n.command(&["echo".into(), "a b; $(touch x)".into()]);
        let argv: Vec<String> = std::iter::once(cmd.get_program())
            .chain(cmd.get_args())
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(argv[0], "sshpass");
        assert!(!argv.iter().any(|a| a.contains("hunter2")), "{argv:?}");
        assert_eq!(argv.last().unwrap(), "echo 'a b; $(touch x)'");
        assert!(cmd
            .get_envs()
            .any(|(k, v)| k == "SSHPASS" && v.is_some_and(|v| v == "hunter2; rm -rf /")));
        let debug = format!("{n:?} {:?}", node(AuthType::Password));
        assert!(
            !debug.contains("hunter2") && debug.contains("<redacted>"),
            "{debug}"
        );
        let key = Node::new(&node(AuthType::Key), Path::new("/w")).unwrap();
        let argv: Vec<String> = key
            .command(&["hostname".into()])
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert!(
            argv.windows(2).any(|w| w == ["-i", "/k/id"]) && argv.contains(&"BatchMode=yes".into())
        );
    }
}
