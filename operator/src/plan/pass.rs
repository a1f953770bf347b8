//! The per-VM decisions of a pass: admit, place, re-place, reserve or release compute.

use std::collections::BTreeMap;

use ironvisor_crds::common::{Condition, condition_status, condition_type};
use ironvisor_crds::vm::{OperationKind, Phase, VmOperation};
use jiff::Timestamp;

use super::network::NetBook;
use super::{Announce, Config, Plan, VmStatus, VmWrite, condition};
use crate::hosts::{HOST_LOST, HOST_RETURNED, Health, RESCHEDULED, operator_ready_reason};
use crate::index::*;
use crate::placement::{self, Capacity, HostSnapshot, Request, filters};
use crate::quota::Ledger;
use crate::units::Units;

/// Whether a placed VM with no transition pending already shows exactly what `placed_status`
/// would write (checked without building the status).
fn steady_and_recorded(vm: &VmEntry, p: &Assumed, d: &Units) -> bool {
    let reason = if p.compute {
        REASON_SCHEDULED
    } else {
        REASON_SCHEDULED_HALTED
    };
    let scheduled_ok = vm.scheduled.as_ref().is_some_and(|c| {
        c.status == condition_status::TRUE
            && c.reason == reason
            && c.message
                .strip_prefix("placed on host ")
                .is_some_and(|rest| {
                    rest.strip_prefix(p.node.as_str()).is_some_and(|tail| {
                        tail.is_empty() || (!p.compute && tail.starts_with(';'))
                    })
                })
    });
    let phase_ok = if vm.agents.contains(&p.node) {
        !vm.operator_owns_phase
    } else {
        vm.phase == Some(Phase::Scheduled) && vm.printable.as_deref() == Some("Scheduled")
    };
    // A Ready condition the operator wrote while the host was lost must be rewritten.
    let ready_ok = vm.ready.as_ref().is_none_or(|c| c.reason != HOST_LOST);
    scheduled_ok
        && phase_ok
        && ready_ok
        && vm.status_node.as_deref() == Some(p.node.as_str())
        && vm.status_vcpus == u32::try_from(d.vcpus).ok()
        && vm.admitted.as_ref() == Some(d)
        && vm.admitted_ports.as_deref() == Some(vm.request.host_ports.as_slice())
}

/// A size as people read it: `vcpus=4, memory=2Gi, storage=10Gi`.
fn size_text(u: &Units) -> String {
    use crate::units::Resource;
    [Resource::Vcpus, Resource::Memory, Resource::Storage]
        .iter()
        .map(|r| format!("{}={}", r.as_str(), r.format(u.get(*r))))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Count a VM's compute and group membership on a host snapshot.
pub(super) fn take(s: &mut HostSnapshot, vm: &VmEntry, counted: Units) {
    s.allocated.vcpus += counted.vcpus;
    s.allocated.memory += counted.memory;
    s.host_ports.extend(vm.counted_ports().iter().copied());
    if let Some(g) = &vm.request.anti_affinity_group {
        *s.groups
            .entry((vm.key.namespace.clone(), g.clone()))
            .or_default() += 1;
    }
}

/// Event reason for a placed VM whose namespace has no tenant (it keeps running).
pub(super) const EVENT_RUNNING_WITHOUT_TENANT: &str = "RunningWithoutTenant";

pub(super) struct Pass<'a> {
    pub(super) cfg: Config,
    pub(super) now: Timestamp,
    pub(super) ledger: &'a mut Ledger,
    pub(super) snaps: &'a mut BTreeMap<String, HostSnapshot>,
    pub(super) health: &'a BTreeMap<&'a str, Health>,
    pub(super) net: NetBook<'a>,
    /// Where backups are and which hosts can read their locations.
    pub(super) backups: &'a BackupIndex,
    /// Where the clone sources of unplaced VMs are.
    pub(super) clone_sources: BTreeMap<VmKey, placement::CloneSource>,
}

impl Pass<'_> {
    fn vcpus(d: &Units) -> Option<u32> {
        u32::try_from(d.vcpus).ok()
    }

    /// The VM's placement constraints with the locations of the backups it restores from.
    fn request(&self, vm: &VmEntry, compute: Capacity) -> Request {
        let mut req = vm.request.clone();
        req.compute = compute;
        if !req.restores_from.is_empty() {
            req.backups = self.backups.need(&vm.key.namespace, &req.restores_from);
        }
        req
    }

    /// A VM not admitted yet: quota, then placement.
    pub(super) fn admit(&mut self, vm: &VmEntry, out: &mut Plan) -> Option<VmWrite> {
        let d = match &vm.demand {
            Ok(d) => *d,
            Err(msg) => return Some(self.pending(vm, None, REASON_INVALID_SPEC, msg.clone(), out)),
        };
        if let Err(r) = self.net.check(self.ledger.tree(), vm) {
            return Some(self.pending(vm, Some(&d), r.reason, r.message, out));
        }
        let wants = vm.run_strategy.counts_compute();
        let request = if wants { d } else { d.non_compute() };
        let ns = &vm.key.namespace;
        if let Err(e) = self.ledger.tenant_of(ns) {
            return Some(self.pending(vm, Some(&d), REASON_NO_TENANT, e.to_string(), out));
        }
        // A VM that does not fit never holds back a younger one that does (as ResourceQuota):
        // VMs are only *considered* oldest first, so room goes to the oldest that fits.
        if let Err(e) = self.ledger.check(ns, &request) {
            let msg = clones::quota_message(&e, !vm.clones.is_empty());
            return Some(self.pending(vm, Some(&d), REASON_QUOTA_EXCEEDED, msg, out));
        }
        let mut req = self.request(
            vm,
            Capacity {
                vcpus: request.vcpus,
                memory: request.memory,
            },
        );
        req.clone_source = self.clone_sources.get(&vm.key).cloned().unwrap_or_default();
        let node = match placement::place(self.snaps.values(), &req, self.cfg.strategy) {
            Ok(h) => h.name.clone(),
            Err(u) => {
                return Some(self.pending(vm, Some(&d), REASON_UNSCHEDULABLE, u.to_string(), out));
            }
        };
        self.ledger.add(ns, request);
        self.net.record(self.ledger.tree(), vm);
        if let Some(s) = self.snaps.get_mut(&node) {
            take(s, vm, request);
            s.host_ports.extend(vm.request.host_ports.iter().copied());
        }
        out.placed.push(vm.key.clone());
        let status = self.placed_status(vm, &node, &d, wants, None, None);
        Some(VmWrite {
            key: vm.key.clone(),
            uid: vm.uid.clone(),
            status,
            reserves: true,
            assume: Some(Assumed {
                node: node.clone(),
                compute: wants,
            }),
            announce: Some(Announce {
                warning: false,
                reason: "Scheduled",
                note: format!("placed on host {node}"),
            }),
        })
    }

    fn pending(
        &self,
        vm: &VmEntry,
        d: Option<&Units>,
        reason: &'static str,
        message: String,
        out: &mut Plan,
    ) -> VmWrite {
        *out.pending.entry(reason).or_default() += 1;
        let changed = vm.scheduled.as_ref().is_none_or(|c| c.reason != reason);
        let event_reason = if reason == REASON_UNSCHEDULABLE {
            "FailedScheduling"
        } else {
            reason
        };
        VmWrite {
            key: vm.key.clone(),
            uid: vm.uid.clone(),
            reserves: false,
            status: VmStatus {
                node_name: None,
                vcpus: d.and_then(Self::vcpus),
                admitted: None,
                host_ports: None,
                scheduled: condition(
                    condition_type::SCHEDULED,
                    false,
                    reason,
                    message.clone(),
                    vm.scheduled.as_ref(),
                    self.now,
                ),
                phase: Some((Phase::Pending, reason.to_owned())),
                ready: None,
                tenant: None,
            },
            assume: None,
            announce: changed.then_some(Announce {
                warning: true,
                reason: event_reason,
                note: message,
            }),
        }
    }

    /// The status of a VM placed on `node` and admitted at `d`. `blocked` is a compute
    /// admission that failed (reason, message); `lost` the HostLost Ready condition message.
    pub(super) fn placed_status(
        &self,
        vm: &VmEntry,
        node: &str,
        d: &Units,
        compute: bool,
        blocked: Option<(&str, String)>,
        lost: Option<String>,
    ) -> VmStatus {
        let scheduled = match &blocked {
            Some((reason, msg)) => condition(
                condition_type::SCHEDULED,
                false,
                reason,
                msg.clone(),
                vm.scheduled.as_ref(),
                self.now,
            ),
            None if compute => condition(
                condition_type::SCHEDULED,
                true,
                REASON_SCHEDULED,
                format!("placed on host {node}"),
                vm.scheduled.as_ref(),
                self.now,
            ),
            None => condition(
                condition_type::SCHEDULED,
                true,
                REASON_SCHEDULED_HALTED,
                format!("placed on host {node}; halted, so no vCPUs or memory are reserved"),
                vm.scheduled.as_ref(),
                self.now,
            ),
        };
        let (phase, ready) = match lost {
            Some(msg) => (
                Some((Phase::Unknown, HOST_LOST.to_owned())),
                Some(condition(
                    condition_type::READY,
                    false,
                    HOST_LOST,
                    msg,
                    vm.ready.as_ref(),
                    self.now,
                )),
            ),
            None if vm.agents.contains(node) => (None, self.operator_ready(vm, node)),
            None => {
                let printable = blocked.as_ref().map_or("Scheduled", |(r, _)| r);
                (
                    Some((Phase::Scheduled, printable.to_owned())),
                    self.operator_ready(vm, node),
                )
            }
        };
        VmStatus {
            node_name: Some(node.to_owned()),
            vcpus: Self::vcpus(d),
            admitted: Some(*d),
            host_ports: Some(vm.request.host_ports.clone()),
            scheduled,
            phase,
            ready,
            tenant: self.tenant_condition(vm),
        }
    }

    /// `Tenant=False NoTenant` for a placed VM whose namespace belongs to no tenant (and no
    /// default tenant counts it): reported, never stopped. `None` while it has one.
    fn tenant_condition(&self, vm: &VmEntry) -> Option<Condition> {
        let e = self.ledger.tenant_of(&vm.key.namespace).err()?;
        Some(condition(
            condition_type::TENANT,
            false,
            REASON_NO_TENANT,
            format!(
                "{e}. This VM was admitted before and keeps running; starting it after a halt \
                 or growing it waits for a tenant too"
            ),
            vm.tenant.as_ref(),
            self.now,
        ))
    }

    /// Why growth or a start in `ns` is refused before any quota: the namespace has no
    /// tenant (reason `NoTenant`); else the quota check's reason.
    fn refusal(&self, ns: &str, request: &Units) -> Option<(&'static str, String)> {
        if let Err(e) = self.ledger.tenant_of(ns) {
            return Some((REASON_NO_TENANT, e.to_string()));
        }
        self.ledger
            .check(ns, request)
            .err()
            .map(|e| (REASON_QUOTA_EXCEEDED, e.to_string()))
    }

    /// The Ready condition the operator still owns on a VM whose host is not lost: `None`
    /// once an agent has taken it over (its reason is no longer one the operator writes) or
    /// when there never was one. A HostLost mark becomes `Unknown/HostReturned`; a
    /// `Rescheduled` mark stays until the new host's agent reports. Never left out while the
    /// operator owns it: releasing a list item it alone owns would delete the condition (and
    /// a partly owned item would lose its required fields), so the hand-off is the agent's
    /// forced apply, as for `phase`.
    fn operator_ready(&self, vm: &VmEntry, node: &str) -> Option<Condition> {
        let old = vm.ready.as_ref()?;
        if !operator_ready_reason(&old.reason) {
            return None;
        }
        if old.reason == RESCHEDULED {
            return Some(old.clone());
        }
        let mut c = condition(
            condition_type::READY,
            false,
            HOST_RETURNED,
            format!("host {node} reports again; waiting for its agent to report this VM"),
            None,
            self.now,
        );
        c.status = condition_status::UNKNOWN.into();
        if old.reason == HOST_RETURNED {
            c.last_transition_time = old.last_transition_time.clone();
        }
        Some(c)
    }

    /// A VM already admitted and placed.
    /// `admitted` is the size it was admitted at, when recorded.
    pub(super) fn placed(
        &mut self,
        vm: &VmEntry,
        p: &Assumed,
        admitted: Option<Units>,
    ) -> Option<VmWrite> {
        let d = vm.demand.as_ref().ok().copied()?;
        let base = admitted.unwrap_or(d);
        let wants = vm.run_strategy.counts_compute();
        let write = |status, reserves, assume, announce| VmWrite {
            key: vm.key.clone(),
            uid: vm.uid.clone(),
            status,
            reserves,
            assume,
            announce,
        };
        if self.health.get(p.node.as_str()) == Some(&Health::Lost) {
            return Some(self.lost(vm, p, &base));
        }
        if let Err(r) = self.net.check(self.ledger.tree(), vm) {
            return Some(self.interfaces_refused(vm, p, &base, r));
        }
        if let Err(r) = self.new_host_ports(vm, p) {
            return Some(self.interfaces_refused(vm, p, &base, r));
        }
        // A VM with no recorded size (admitted before the size was recorded, or built
        // directly by a test or benchmark) counts at its spec, as before.
        // A VM being halted releases its compute first; its size is checked after.
        let releasing = !wants && p.compute;
        if admitted.is_some_and(|a| a != d) && !releasing {
            if let Some(op) = vm
                .operation
                .as_ref()
                .filter(|o| o.kind != OperationKind::Resize)
            {
                return Some(self.resize_waits(vm, p, &base, &d, op));
            }
            return Some(self.resize(vm, p, &base, &d));
        }
        if wants && !p.compute {
            // Starting a Halted (or blocked) VM: quota and its host's capacity again. Its
            // disks are on that host, so it cannot move.
            let compute = d.compute();
            let blocked = match self.refusal(&vm.key.namespace, &compute) {
                Some(r) => Some(r),
                None => self.snaps.get(&p.node).and_then(|s| {
                    let req = Request {
                        compute: Capacity {
                            vcpus: compute.vcpus,
                            memory: compute.memory,
                        },
                        ..Request::default()
                    };
                    filters::capacity(s, &req).err().map(|rs| {
                        let what: Vec<String> = rs.iter().map(ToString::to_string).collect();
                        (
                            REASON_UNSCHEDULABLE,
                            format!("host {}: {}", p.node, what.join(", ")),
                        )
                    })
                }),
            };
            if let Some((reason, msg)) = blocked {
                let changed = vm.scheduled.as_ref().is_none_or(|c| c.reason != reason);
                let ann = changed.then(|| Announce {
                    warning: true,
                    reason: if reason == REASON_UNSCHEDULABLE {
                        "FailedScheduling"
                    } else {
                        reason
                    },
                    note: msg.clone(),
                });
                return Some(write(
                    self.placed_status(vm, &p.node, &d, false, Some((reason, msg)), None),
                    false,
                    None,
                    ann,
                ));
            }
            self.ledger.add(&vm.key.namespace, compute);
            if let Some(s) = self.snaps.get_mut(&p.node) {
                s.allocated.vcpus += compute.vcpus;
                s.allocated.memory += compute.memory;
            }
            let assume = Some(Assumed {
                node: p.node.clone(),
                compute: true,
            });
            let ann = Some(Announce {
                warning: false,
                reason: "Admitted",
                note: "vCPUs and memory reserved to start".into(),
            });
            return Some(write(
                self.placed_status(vm, &p.node, &d, true, None, None),
                true,
                assume,
                ann,
            ));
        }
        if !wants && p.compute {
            // Halted: release vCPUs and memory. They stay counted in this pass; the next
            // pass, after the write, no longer counts them. The admitted size stays: a grown
            // spec is checked by the next pass.
            let assume = Some(Assumed {
                node: p.node.clone(),
                compute: false,
            });
            return Some(write(
                self.placed_status(vm, &p.node, &base, false, None, None),
                false,
                assume,
                None,
            ));
        }
        let tenant = self.tenant_condition(vm);
        if tenant.is_none() && vm.tenant.is_none() && steady_and_recorded(vm, p, &d) {
            // The common case at scale: nothing to say, and no strings to build.
            return None;
        }
        // A running VM whose namespace lost its tenant is reported once, never stopped. Its
        // own Event reason: Events of one reason on one object are folded into a series.
        let ann = tenant.filter(|_| vm.tenant.is_none()).map(|c| Announce {
            warning: true,
            reason: EVENT_RUNNING_WITHOUT_TENANT,
            note: c.message,
        });
        Some(write(
            self.placed_status(vm, &p.node, &d, p.compute, None, None),
            false,
            None,
            ann,
        ))
    }

    /// A placed VM whose spec differs from its recorded admitted size `base`. Growth is checked against quota and,
    /// for reserved vCPUs and memory, its host's free capacity; a shrink always fits. Fits:
    /// the new size is recorded (`status.admitted`) and counted. Does not fit: the
    /// VM keeps its admitted size counted and gets `Scheduled=False`, reason
    /// `ResizeQuotaExceeded` (compute still reserved; the agent runs on, but starts it again
    /// only once admitted) or `QuotaExceeded` when nothing is reserved (Halted).
    fn resize(&mut self, vm: &VmEntry, p: &Assumed, base: &Units, d: &Units) -> VmWrite {
        let ns = &vm.key.namespace;
        let mut grow = d.growth_over(base);
        if !p.compute {
            // Compute is checked in full when a Halted VM starts.
            grow.vcpus = 0;
            grow.memory = 0;
        }
        let blocked = if grow.is_zero() {
            None
        } else {
            match self.refusal(ns, &grow) {
                Some((_, why)) => Some(why),
                None => self.snaps.get(&p.node).and_then(|s| {
                    let req = Request {
                        compute: Capacity {
                            vcpus: grow.vcpus,
                            memory: grow.memory,
                        },
                        ..Request::default()
                    };
                    filters::capacity(s, &req).err().map(|rs| {
                        let what: Vec<String> = rs.iter().map(ToString::to_string).collect();
                        format!("host {}: {}", p.node, what.join(", "))
                    })
                }),
            }
        };
        if let Some(why) = blocked {
            let reason = if p.compute {
                REASON_RESIZE_QUOTA_EXCEEDED
            } else {
                REASON_QUOTA_EXCEEDED
            };
            let msg = format!(
                "resize to {} not admitted: {why}; the VM keeps its admitted size {}",
                size_text(d),
                size_text(base)
            );
            let changed = vm.scheduled.as_ref().is_none_or(|c| c.reason != reason);
            return VmWrite {
                key: vm.key.clone(),
                uid: vm.uid.clone(),
                reserves: false,
                status: self.placed_status(
                    vm,
                    &p.node,
                    base,
                    false,
                    Some((reason, msg.clone())),
                    None,
                ),
                assume: None,
                announce: changed.then_some(Announce {
                    warning: true,
                    reason: REASON_RESIZE_QUOTA_EXCEEDED,
                    note: msg,
                }),
            };
        }
        self.ledger.add(ns, grow);
        if let Some(s) = self.snaps.get_mut(&p.node) {
            s.allocated.vcpus += grow.vcpus;
            s.allocated.memory += grow.memory;
        }
        VmWrite {
            key: vm.key.clone(),
            uid: vm.uid.clone(),
            reserves: true,
            status: self.placed_status(vm, &p.node, d, p.compute, None, None),
            assume: Some(p.clone()),
            announce: Some(Announce {
                warning: false,
                reason: "Resized",
                note: format!("size {} admitted (was {})", size_text(d), size_text(base)),
            }),
        }
    }

    /// A resize while another operation holds the VM's lock (a migration reserved its target
    /// at the admitted size; a snapshot records it): the VM keeps its admitted size, the
    /// Scheduled condition's message says what it waits for (announced once), and the next
    /// pass after the lock is released admits it.
    fn resize_waits(
        &self,
        vm: &VmEntry,
        p: &Assumed,
        base: &Units,
        d: &Units,
        op: &VmOperation,
    ) -> VmWrite {
        let mut status = self.placed_status(vm, &p.node, base, p.compute, None, None);
        let note = format!(
            "resize to {} waits: {op} holds the VM; it keeps its admitted size {} until then",
            size_text(d),
            size_text(base)
        );
        status.scheduled.message = format!("{}; {note}", status.scheduled.message);
        let changed = vm
            .scheduled
            .as_ref()
            .is_none_or(|c| c.message != status.scheduled.message);
        VmWrite {
            key: vm.key.clone(),
            uid: vm.uid.clone(),
            status,
            reserves: false,
            assume: None,
            announce: changed.then_some(Announce {
                warning: false,
                reason: "ResizeWaiting",
                note,
            }),
        }
    }

    /// A VM whose host is lost: re-place it if it may move, else mark it HostLost.
    fn lost(&mut self, vm: &VmEntry, p: &Assumed, d: &Units) -> VmWrite {
        let mut why = format!("host {} stopped reporting", p.node);
        if vm.restart_elsewhere {
            let counted = if p.compute { *d } else { d.non_compute() };
            let req = self.request(
                vm,
                Capacity {
                    vcpus: counted.vcpus,
                    memory: counted.memory,
                },
            );
            match placement::place(
                self.snaps.values().filter(|s| s.name != p.node),
                &req,
                self.cfg.strategy,
            ) {
                Ok(h) => {
                    let node = h.name.clone();
                    if let Some(s) = self.snaps.get_mut(&node) {
                        take(s, vm, counted);
                        // Placed anew: the filters checked its spec's ports, recorded now.
                        s.host_ports.extend(vm.request.host_ports.iter().copied());
                    }
                    let mut status = self.placed_status(vm, &node, d, p.compute, None, None);
                    status.ready = Some(condition(
                        condition_type::READY,
                        false,
                        RESCHEDULED,
                        format!(
                            "host {} was lost; restarting on host {node}, waiting for its agent",
                            p.node
                        ),
                        vm.ready.as_ref(),
                        self.now,
                    ));
                    return VmWrite {
                        key: vm.key.clone(),
                        uid: vm.uid.clone(),
                        reserves: true,
                        status,
                        assume: Some(Assumed {
                            node: node.clone(),
                            compute: p.compute,
                        }),
                        announce: Some(Announce {
                            warning: true,
                            reason: "Rescheduled",
                            note: format!("host {} was lost; restarting on host {node}", p.node),
                        }),
                    };
                }
                Err(u) => why = format!("{why}; cannot restart elsewhere: {u}"),
            }
        } else if vm.run_strategy.counts_compute() {
            why = format!("{why}; waiting for it (disks are local or evictionStrategy is None)");
        }
        let changed = vm.ready.as_ref().is_none_or(|c| c.reason != HOST_LOST);
        VmWrite {
            key: vm.key.clone(),
            uid: vm.uid.clone(),
            reserves: false,
            status: VmStatus {
                // Nothing is admitted while the host is away: the ports stay as they were.
                host_ports: Some(vm.counted_ports().to_vec()),
                ..self.placed_status(vm, &p.node, d, p.compute, None, Some(why.clone()))
            },
            assume: None,
            announce: changed.then_some(Announce {
                warning: true,
                reason: HOST_LOST,
                note: why,
            }),
        }
    }
}
