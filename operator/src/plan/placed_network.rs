//! A placed VM whose interfaces are no longer admitted: the network admission of
//! [`super::network`] applied to a VM that already runs.

use super::network::{REASON_HOST_PORT_TAKEN, Refusal};
use super::pass::Pass;
use super::{Announce, VmStatus, VmWrite};
use crate::index::{Assumed, HostPort, REASON_CHANGE_NOT_ADMITTED, VmEntry};
use crate::units::Units;

impl Pass<'_> {
    /// A placed VM whose interfaces are no longer admitted (its spec was edited, or its
    /// tenant's allowances changed). Running (compute reserved): `ChangeNotAdmitted`, it
    /// keeps what it holds and its agent applies nothing new. Halted: nothing runs, so it
    /// waits with the refusal's own reason, reserving nothing.
    pub(super) fn interfaces_refused(
        &self,
        vm: &VmEntry,
        p: &Assumed,
        base: &Units,
        r: Refusal,
    ) -> VmWrite {
        let (reason, message) = if p.compute {
            (
                REASON_CHANGE_NOT_ADMITTED,
                format!(
                    "the edited spec is not admitted ({}: {}); the VM runs on as admitted, and \
                     its agent applies no change until the spec is admitted",
                    r.reason, r.message
                ),
            )
        } else {
            (r.reason, r.message)
        };
        let changed = vm.scheduled.as_ref().is_none_or(|c| c.reason != reason);
        let announce = changed.then(|| Announce {
            warning: true,
            reason,
            note: message.clone(),
        });
        VmWrite {
            key: vm.key.clone(),
            uid: vm.uid.clone(),
            status: VmStatus {
                // The refused edit's ports are not admitted: the recorded ones stay.
                host_ports: Some(vm.counted_ports().to_vec()),
                ..self.placed_status(vm, &p.node, base, p.compute, Some((reason, message)), None)
            },
            reserves: false,
            assume: None,
            announce,
        }
    }

    /// The host ports a placed VM's edited spec forwards beyond those admitted on its host:
    /// each must be free there (no other VM on the host holds it), else the edit is refused
    /// with `HostPortTaken`. Free ones are taken on the host's snapshot at once, so a second
    /// VM edited to the same port in the same pass is refused. A VM whose ports were never
    /// recorded (placed by an older operator) has its spec's ports adopted as they are.
    pub(super) fn new_host_ports(&mut self, vm: &VmEntry, p: &Assumed) -> Result<(), Refusal> {
        let Some(admitted) = &vm.admitted_ports else {
            return Ok(());
        };
        let new: Vec<HostPort> = vm
            .request
            .host_ports
            .iter()
            .filter(|hp| !admitted.contains(hp))
            .copied()
            .collect();
        let Some(snap) = self.snaps.get_mut(&p.node) else {
            return Ok(());
        };
        let taken: Vec<String> = new
            .iter()
            .filter(|hp| snap.host_ports.contains(hp))
            .map(|(proto, port)| format!("{proto:?}/{port}"))
            .collect();
        if !taken.is_empty() {
            return Err(Refusal {
                reason: REASON_HOST_PORT_TAKEN,
                message: format!(
                    "host port {} is already forwarded by another VM on host {}; choose \
                     another hostPort",
                    taken.join(", "),
                    p.node
                ),
            });
        }
        snap.host_ports.extend(new);
        Ok(())
    }
}
