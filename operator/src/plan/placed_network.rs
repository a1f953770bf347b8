//! A placed VM whose interfaces are no longer admitted: the network admission of
//! [`super::network`] applied to a VM that already runs.

use super::network::Refusal;
use super::pass::Pass;
use super::{Announce, VmWrite};
use crate::index::{Assumed, REASON_CHANGE_NOT_ADMITTED, VmEntry};
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
            status: self.placed_status(vm, &p.node, base, p.compute, Some((reason, message)), None),
            reserves: false,
            assume: None,
            announce,
        }
    }
}
