//! Which nodes of a job's allocation each step runs on, as upstream's disaggregated submit script
//! places them (TensorRT-LLM `examples/disaggregated/slurm/benchmark/submit.py`):
//!
//! - every worker instance owns whole nodes, `ceil(tp·pp·cp / gpus_per_node)` of them; CTX instances
//!   come first, then GEN (the rank order of upstream's `split_world_comm`);
//! - the job asks for the sum of those nodes;
//! - the router (DISAGG_SERVER) runs on the first node of GEN_0; the benchmark client on the
//!   allocation's first node (upstream leaves it to SLURM, which picks the batch host: node 0).
//!
//! The job script turns an index range into host names with `scontrol show hostnames`; a cluster
//! profile that caps the node count folds ranges onto the nodes it allows.

use crate::disagg::role::Role;
use crate::disagg::schema::DisaggSpec;

/// A step's nodes: indices `first .. first + count` of the allocation's sorted node list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Nodes {
    pub first: u64,
    pub count: u64,
}

impl Nodes {
    pub const FIRST: Nodes = Nodes { first: 0, count: 1 };

    /// The same share on an allocation of `cap` nodes: ranges past the end move back so they fit
    /// (roles then share nodes, as on a smaller cluster).
    pub fn fold(self, cap: u64) -> Nodes {
        let cap = cap.max(1);
        let count = self.count.clamp(1, cap);
        Nodes {
            first: self.first.min(cap - count),
            count,
        }
    }
}

/// A step to place: its name, the nodes it owns, and whether it runs one process (a serving role).
pub struct Share<'a> {
    pub name: &'a str,
    pub nodes: Nodes,
    pub one_process: bool,
}

/// The nodes each step's `srun` gets on an allocation of `cap` nodes, and what the user should know
/// about the difference (one line each, for overrides.txt):
/// - ranges past the end fold back (roles share nodes, as on a smaller cluster);
/// - a serving role whose engine is not launched across nodes here (`one_process`: vLLM, SGLang)
///   runs one server process, on the first of its nodes, and it says so rather than asking SLURM
///   for one task on several nodes. (TensorRT-LLM workers run as MPI ranks: `PlannedStep::ranks`.)
pub fn fit(steps: &[Share], cap: u64) -> (Vec<Nodes>, Vec<String>) {
    let mut folded = Vec::new();
    let mut notes = Vec::new();
    let fitted = steps
        .iter()
        .map(|s| {
            let fit = s.nodes.fold(cap);
            if fit != s.nodes {
                folded.push(s.name);
            }
            if s.one_process && fit.count > 1 {
                notes.push(format!(
                    "placement: {} owns nodes {}-{} of the allocation; servetest starts its one server process on node {} (its engine's multi-node launch is not run yet)",
                    s.name,
                    fit.first,
                    fit.first + fit.count - 1,
                    fit.first
                ));
                Nodes {
                    first: fit.first,
                    count: 1,
                }
            } else {
                fit
            }
        })
        .collect();
    if !folded.is_empty() {
        notes.insert(
            0,
            format!(
                "placement: {} share nodes on the {cap}-node allocation",
                folded.join(", ")
            ),
        );
    }
    (fitted, notes)
}

/// Each role of a disaggregated case with its nodes, and the job's node count.
pub fn disagg(spec: &DisaggSpec) -> (Vec<(Role, Nodes)>, u64) {
    let per_node = spec.hardware.gpus_per_node.max(1);
    let mut next = 0;
    let mut placed = Vec::new();
    let mut gen0 = None;
    for role in Role::workers(spec) {
        let gpus = match role {
            Role::Ctx(_) => spec.worker_config.ctx.gpus(),
            _ => spec.worker_config.gen.gpus(),
        };
        let nodes = Nodes {
            first: next,
            count: gpus.div_ceil(per_node).max(1),
        };
        next += nodes.count;
        if role == Role::Gen(0) {
            gen0 = Some(nodes.first);
        }
        placed.push((role, nodes));
    }
    let router = Nodes {
        first: gen0.unwrap_or(0),
        count: 1,
    };
    placed.push((Role::DisaggServer, router));
    placed.push((Role::Benchmark, Nodes::FIRST));
    (placed, next.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::case::{family, Case};

    fn spec(file: &str) -> DisaggSpec {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let case = Case::load(&root.join(file), family("disagg").unwrap(), "perf");
        case.disagg()
            .unwrap_or_else(|| panic!("{file} did not load"))
            .clone()
    }

    #[test]
    fn workers_own_whole_nodes_ctx_first_router_on_gen0() {
        // ctx: 1 × TP4, gen: 4 × TP8, 4 GPUs per node → 1 + 4·2 = 9 nodes.
        let s =
            spec("test_configs/disagg/perf/deepseek-r1-fp4_1k1k_ctx1_gen4_tep8_bs32_eplb0_mtp0_ccb-NIXL.yaml");
        let (placed, total) = disagg(&s);
        assert_eq!(total, 9);
        let at = |r: Role| placed.iter().find(|(x, _)| *x == r).unwrap().1;
        assert_eq!(at(Role::Ctx(0)), Nodes { first: 0, count: 1 });
        assert_eq!(at(Role::Gen(0)), Nodes { first: 1, count: 2 });
        assert_eq!(at(Role::Gen(3)), Nodes { first: 7, count: 2 });
        assert_eq!(at(Role::DisaggServer), Nodes { first: 1, count: 1 });
        assert_eq!(at(Role::Benchmark), Nodes::FIRST);
    }

    #[test]
    fn serving_roles_run_one_process_on_their_first_node_and_say_so() {
        let steps = [
            Share {
                name: "CTX_0",
                nodes: Nodes { first: 0, count: 1 },
                one_process: true,
            },
            Share {
                name: "GEN_0",
                nodes: Nodes { first: 1, count: 2 },
                one_process: true,
            },
            Share {
                name: "both",
                nodes: Nodes { first: 1, count: 2 },
                one_process: false,
            },
        ];
        let (fitted, notes) = fit(&steps, 3);
        assert_eq!(fitted[1], Nodes { first: 1, count: 1 });
        assert_eq!(fitted[2], Nodes { first: 1, count: 2 });
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(
            notes[0].starts_with("placement: GEN_0 owns nodes 1-2"),
            "{notes:?}"
        );
        let (fitted, notes) = fit(&steps, 1);
        assert!(fitted.iter().all(|n| *n == Nodes::FIRST));
        assert_eq!(
            notes,
            ["placement: GEN_0, both share nodes on the 1-node allocation"]
        );
    }

    #[test]
    fn folding_keeps_every_range_inside_the_allocation() {
        let gen3 = Nodes { first: 7, count: 2 };
        assert_eq!(gen3.fold(1), Nodes { first: 0, count: 1 });
        assert_eq!(gen3.fold(3), Nodes { first: 1, count: 2 });
        assert_eq!(gen3.fold(9), gen3);
        assert_eq!(
            Nodes { first: 2, count: 5 }.fold(3),
            Nodes { first: 0, count: 3 }
        );
    }
}
