//! Scores: rank the hosts that passed the filters. Integer arithmetic, 0..=1000 per resource.

use std::str::FromStr;

use super::{Capacity, HostSnapshot, Request};

/// The cluster's placement strategy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Strategy {
    /// Prefer the host with the most free capacity after placement (kube-scheduler's
    /// LeastAllocated): VMs spread out, a host failure takes fewer of them.
    #[default]
    Spread,
    /// Prefer the fullest host that still fits (MostAllocated): keeps hosts free for big VMs.
    BinPack,
}

impl FromStr for Strategy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "spread" => Ok(Strategy::Spread),
            "binpack" => Ok(Strategy::BinPack),
            other => Err(format!(
                "placement strategy must be spread or binpack, not {other:?}"
            )),
        }
    }
}

/// Score of one resource: the allocated share after placement in thousandths (bin-pack),
/// or its complement (spread). A host with zero allocatable scores 0.
fn resource_score(allocatable: i128, allocated: i128, requested: i128, strategy: Strategy) -> i128 {
    if allocatable <= 0 {
        return 0;
    }
    let used = allocated.saturating_add(requested).clamp(0, allocatable);
    let used_share = used.saturating_mul(1000) / allocatable;
    match strategy {
        Strategy::Spread => 1000 - used_share,
        Strategy::BinPack => used_share,
    }
}

/// The host's score for the request: the mean of the vCPU and memory scores.
pub fn score(h: &HostSnapshot, req: &Request, strategy: Strategy) -> i128 {
    let a = h.allocatable.unwrap_or_default();
    let Capacity { vcpus, memory } = req.compute;
    (resource_score(a.vcpus, h.allocated.vcpus, vcpus, strategy)
        + resource_score(a.memory, h.allocated.memory, memory, strategy))
        / 2
}

#[cfg(test)]
mod tests {
    use super::super::tests::{GI, host, req};
    use super::*;

    #[test]
    fn spread_scores_an_empty_host_highest() {
        let empty = host("a", 10, 10);
        let mut half = host("b", 10, 10);
        half.allocated = Capacity {
            vcpus: 5,
            memory: 5 * GI,
        };
        let r = req(1, 1);
        assert_eq!(score(&empty, &r, Strategy::Spread), 900);
        assert_eq!(score(&half, &r, Strategy::Spread), 400);
    }

    #[test]
    fn binpack_scores_the_fuller_host_highest() {
        let empty = host("a", 10, 10);
        let mut half = host("b", 10, 10);
        half.allocated = Capacity {
            vcpus: 5,
            memory: 5 * GI,
        };
        let r = req(1, 1);
        assert_eq!(score(&empty, &r, Strategy::BinPack), 100);
        assert_eq!(score(&half, &r, Strategy::BinPack), 600);
    }

    #[test]
    fn vcpus_and_memory_weigh_the_same() {
        let mut h = host("a", 10, 10);
        h.allocated = Capacity {
            vcpus: 10,
            memory: 0,
        };
        assert_eq!(score(&h, &req(0, 0), Strategy::Spread), 500);
    }

    #[test]
    fn a_host_without_allocatable_scores_zero_rather_than_dividing_by_zero() {
        let mut h = host("a", 0, 0);
        h.allocatable = None;
        assert_eq!(score(&h, &req(1, 1), Strategy::Spread), 0);
        assert_eq!(score(&h, &req(1, 1), Strategy::BinPack), 0);
    }

    #[test]
    fn strategies_parse_from_the_flag_spelling() {
        assert_eq!("spread".parse::<Strategy>(), Ok(Strategy::Spread));
        assert_eq!("binpack".parse::<Strategy>(), Ok(Strategy::BinPack));
        assert!("random".parse::<Strategy>().is_err());
    }
}
