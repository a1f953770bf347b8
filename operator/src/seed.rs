//! What the seed-copy controller decides for one VM, from the VM and the Secrets it
//! references: the `SeedReady` condition and the seed copy to write. Pure: no client.
//!
//! A copy exists only while the VM is placed (`status.nodeName` set, Scheduled=True) and
//! takes something from a Secret. It holds exactly the referenced values, under the keys the
//! agent reads, and records which Secret (and which version of it) each came from and the
//! placed host's public seed key; the controller seals the values to that key just before
//! writing (randomised, so not here). A placed VM whose host has published no key yet waits
//! with `WaitingForHostKey`. When a source Secret disappears the
//! last good copy is kept (a running guest's seed stays as it was) and the condition says
//! what is missing; the copy never holds anything but what the VM references.

use std::collections::BTreeMap;

use ironvisor_crds::VirtualMachine;
use ironvisor_crds::common::{condition_status, condition_type, find_condition};
use ironvisor_crds::labels::NODE;
use ironvisor_crds::seed::{self, Field};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;

/// Condition type the seed-copy controller owns on a VM.
pub const CONDITION: &str = "SeedReady";

/// Reasons of [`CONDITION`]: a fixed set.
pub mod reason {
    /// Every referenced value is copied for the VM's agent.
    pub const COPIED: &str = "Copied";
    /// Every referenced value exists; the copy is made once the VM is placed.
    pub const SECRETS_FOUND: &str = "SecretsFound";
    /// A referenced Secret, or the key in it, does not exist.
    pub const SECRET_NOT_FOUND: &str = "SecretNotFound";
    /// The operator may not read Secrets in the VM's namespace (no Tenant owns it).
    pub const SECRET_NOT_READABLE: &str = "SecretNotReadable";
    /// The VM's host has not published its seed key yet (its agent never reported).
    pub const WAITING_FOR_HOST_KEY: &str = "WaitingForHostKey";
}

/// What reading one referenced Secret gave.
#[derive(Clone, Debug)]
pub enum Fetched {
    /// The Secret.
    Found(Box<Secret>),
    /// 404.
    NotFound,
    /// 403: the operator holds no read right in that namespace.
    Forbidden,
}

/// The condition to show.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// True or False.
    pub ok: bool,
    /// One of [`reason`].
    pub reason: &'static str,
    /// Which Secrets, keys and namespace.
    pub message: String,
}

/// What to do with the VM's seed copy.
#[derive(Clone, Debug, PartialEq)]
pub enum CopyStep {
    /// Write this copy (placed, every value read).
    Write(Box<Secret>),
    /// Leave whatever copy exists (a source could not be read: the last good copy stays).
    Keep,
    /// No copy should exist (nothing comes from Secrets, or the VM is not placed).
    Remove,
}

/// The decision for one VM.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// `None`: the VM takes nothing from Secrets (no condition).
    pub verdict: Option<Verdict>,
    /// The copy.
    pub copy: CopyStep,
}

/// The node the operator placed the VM on: `status.nodeName` with Scheduled=True. Only the
/// status counts (a label is tenant-writable).
pub fn placed_node(vm: &VirtualMachine) -> Option<&str> {
    let s = vm.status.as_ref()?;
    let scheduled = find_condition(&s.conditions, condition_type::SCHEDULED)?;
    if scheduled.status != condition_status::TRUE {
        return None;
    }
    s.node_name.as_deref()
}

/// The value of `field` in `secret`, under its first source key that exists.
fn value(secret: &Secret, field: Field) -> Option<&ByteString> {
    let data = secret.data.as_ref()?;
    field.source_keys().iter().find_map(|k| data.get(*k))
}

/// A source Secret's identity and version, for [`seed::SEALED_FROM_ANNOTATION`].
fn version(s: &Secret) -> String {
    format!(
        "{}@{}",
        s.metadata.uid.as_deref().unwrap_or(""),
        s.metadata.resource_version.as_deref().unwrap_or("")
    )
}

/// Decide from the VM, for each `(field, secret name)` of [`seed::references`] what reading
/// that Secret gave (same order), and the public seed key of the host the VM is placed on
/// (`None`: not published).
pub fn decide(
    vm: &VirtualMachine,
    fetched: &[(Field, &str, Fetched)],
    host_key: Option<&str>,
) -> Decision {
    if fetched.is_empty() {
        return Decision {
            verdict: None,
            copy: CopyStep::Remove,
        };
    }
    let ns = vm.namespace().unwrap_or_default();
    let mut values = BTreeMap::new();
    for (field, name, got) in fetched {
        let keys = field.source_keys();
        let problem = match got {
            Fetched::Forbidden => Some((
                reason::SECRET_NOT_READABLE,
                format!(
                    "{} names Secret {ns}/{name}, which the operator may not read: it reads Secrets only in namespaces a Tenant owns",
                    field.spec_field()
                ),
            )),
            Fetched::NotFound => Some((
                reason::SECRET_NOT_FOUND,
                format!(
                    "{} names Secret {ns}/{name} (key {:?}), which does not exist",
                    field.spec_field(),
                    keys[0]
                ),
            )),
            Fetched::Found(s) => match value(s, *field) {
                Some(v) => {
                    values.insert(*field, (name.to_string(), version(s), v.clone()));
                    None
                }
                None => Some((
                    reason::SECRET_NOT_FOUND,
                    format!(
                        "{} names Secret {ns}/{name}, which has no key {:?} (nor {:?})",
                        field.spec_field(),
                        keys[0],
                        keys[1]
                    ),
                )),
            },
        };
        if let Some((reason, message)) = problem {
            return Decision {
                verdict: Some(Verdict {
                    ok: false,
                    reason,
                    message,
                }),
                copy: CopyStep::Keep,
            };
        }
    }
    let sources: Vec<String> = values
        .iter()
        .map(|(f, (name, _, _))| format!("{} from Secret {ns}/{name}", f.copy_key()))
        .collect();
    let sources = sources.join(", ");
    match placed_node(vm).zip(vm.uid()) {
        Some((node, _)) if host_key.is_none() => Decision {
            verdict: Some(Verdict {
                ok: false,
                reason: reason::WAITING_FOR_HOST_KEY,
                message: format!(
                    "{sources}; waiting for the agent of {node} to publish its seed key \
                     (Hypervisor {node} status.seedKey) to seal them to"
                ),
            }),
            copy: CopyStep::Keep,
        },
        Some((node, uid)) => Decision {
            verdict: Some(Verdict {
                ok: true,
                reason: reason::COPIED,
                message: format!(
                    "{sources} copied to {}/{}, sealed for the agent of {node}",
                    seed::NAMESPACE,
                    seed::secret_name(&uid)
                ),
            }),
            copy: CopyStep::Write(Box::new(copy(
                vm,
                &uid,
                node,
                host_key.unwrap_or_default(),
                values,
            ))),
        },
        None => Decision {
            verdict: Some(Verdict {
                ok: true,
                reason: reason::SECRETS_FOUND,
                message: format!("{sources}; copied for the agent once the VM is placed"),
            }),
            copy: CopyStep::Remove,
        },
    }
}

/// The copy as it should be, its values still in the clear (the controller seals them).
fn copy(
    vm: &VirtualMachine,
    uid: &str,
    node: &str,
    host_key: &str,
    values: BTreeMap<Field, (String, String, ByteString)>,
) -> Secret {
    let mut s = Secret::default();
    s.metadata.name = Some(seed::secret_name(uid));
    s.metadata.namespace = Some(seed::NAMESPACE.into());
    s.metadata.labels = Some(BTreeMap::from([
        (seed::VM_UID_LABEL.into(), uid.into()),
        (
            seed::VM_NAMESPACE_LABEL.into(),
            vm.namespace().unwrap_or_default(),
        ),
        (NODE.into(), node.into()),
        ("app.kubernetes.io/part-of".into(), "ironvisor".into()),
    ]));
    let mut annotations = BTreeMap::from([
        (seed::VM_NAME_ANNOTATION.into(), vm.name_any()),
        (seed::SEALED_FOR_ANNOTATION.into(), host_key.to_owned()),
    ]);
    let mut data = BTreeMap::new();
    let mut versions = Vec::new();
    for (field, (name, version, v)) in values {
        annotations.insert(field.source_annotation().into(), name);
        versions.push(format!("{}={version}", field.copy_key()));
        data.insert(field.copy_key().into(), v);
    }
    annotations.insert(seed::SEALED_FROM_ANNOTATION.into(), versions.join(","));
    s.metadata.annotations = Some(annotations);
    s.type_ = Some(seed::SECRET_TYPE.into());
    s.data = Some(data);
    s
}

/// The incoming copy while a live migration moves the VM to `target` (the target host and
/// its public seed key): the placed host's copy as [`decide`] wants it, renamed
/// ([`seed::incoming_secret_name`]), labelled with the target and sealed to its key. No
/// migration target (or no copy wanted): none. A target that has not published a key, or a
/// copy that must stay as it is: whatever exists stays (the target agent waits).
pub fn incoming(main: &CopyStep, uid: &str, target: Option<(&str, Option<&str>)>) -> CopyStep {
    let Some((node, key)) = target else {
        return CopyStep::Remove;
    };
    match (main, key) {
        (CopyStep::Remove, _) => CopyStep::Remove,
        (CopyStep::Keep, _) | (CopyStep::Write(_), None) => CopyStep::Keep,
        (CopyStep::Write(copy), Some(key)) => {
            let mut c = (**copy).clone();
            c.metadata.name = Some(seed::incoming_secret_name(uid));
            c.metadata
                .labels
                .get_or_insert_with(Default::default)
                .insert(NODE.into(), node.into());
            c.metadata
                .annotations
                .get_or_insert_with(Default::default)
                .insert(seed::SEALED_FOR_ANNOTATION.into(), key.into());
            CopyStep::Write(Box::new(c))
        }
    }
}

/// Whether `existing` already is `desired` (type, labels, annotations, the same data keys):
/// no write. Sealed values differ at every sealing, so the values themselves are not
/// compared: the annotations say which source versions were sealed to which key.
pub fn up_to_date(existing: &Secret, desired: &Secret) -> bool {
    let ours = |m: &Option<BTreeMap<String, String>>, want: &Option<BTreeMap<String, String>>| {
        let have = m.clone().unwrap_or_default();
        want.iter().flatten().all(|(k, v)| have.get(k) == Some(v))
    };
    let keys = |s: &Secret| {
        s.data
            .iter()
            .flatten()
            .map(|(k, _)| k.clone())
            .collect::<Vec<_>>()
    };
    existing.type_ == desired.type_
        && keys(existing) == keys(desired)
        && ours(&existing.metadata.labels, &desired.metadata.labels)
        && ours(
            &existing.metadata.annotations,
            &desired.metadata.annotations,
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm(placed: bool) -> VirtualMachine {
        let status = if placed {
            serde_json::json!({"nodeName": "h1", "conditions": [{"type": "Scheduled",
                "status": "True", "reason": "Scheduled", "message": "",
                "lastTransitionTime": "2026-01-01T00:00:00Z"}]})
        } else {
            serde_json::json!({})
        };
        serde_json::from_value(serde_json::json!({
            "apiVersion": "ironvisor.io/v1alpha1", "kind": "VirtualMachine",
            "metadata": {"name": "db", "namespace": "fin", "uid": "u1"},
            "spec": {"memory": {"size": "1Gi"},
                     "cloudInit": {"userDataSecretRef": {"name": "init"}}},
            "status": status,
        }))
        .expect("valid VM")
    }

    const KEY: &str = "cHVibGljIGtleSBvZiBob3N0IGgxIChiYXNlNjQpIQ==";

    fn secret_rv(key: &str, value: &str, rv: &str) -> Fetched {
        let mut s = Secret {
            data: Some(BTreeMap::from([(
                key.to_string(),
                ByteString(value.as_bytes().to_vec()),
            )])),
            ..Secret::default()
        };
        s.metadata.uid = Some("s-uid".into());
        s.metadata.resource_version = Some(rv.into());
        Fetched::Found(Box::new(s))
    }

    fn secret(key: &str, value: &str) -> Fetched {
        secret_rv(key, value, "7")
    }

    #[test]
    fn a_placed_vm_gets_a_copy_of_exactly_the_referenced_value() {
        let d = decide(
            &vm(true),
            &[(
                Field::UserData,
                "init",
                secret("userdata", "#cloud-config\n"),
            )],
            Some(KEY),
        );
        let v = d.verdict.expect("a condition");
        assert!(v.ok);
        assert_eq!(v.reason, reason::COPIED);
        let CopyStep::Write(c) = d.copy else {
            panic!("a copy");
        };
        assert_eq!(c.metadata.name.as_deref(), Some("ironvisor-seed-u1"));
        assert_eq!(c.metadata.namespace.as_deref(), Some("ironvisor-seeds"));
        assert_eq!(c.type_.as_deref(), Some("ironvisor.io/seed"));
        let data = c.data.clone().expect("data");
        assert_eq!(data.keys().collect::<Vec<_>>(), vec!["userData"]);
        assert_eq!(data["userData"].0, b"#cloud-config\n");
        let labels = c.metadata.labels.clone().expect("labels");
        assert_eq!(labels["ironvisor.io/vm-uid"], "u1");
        assert_eq!(labels["ironvisor.io/vm-namespace"], "fin");
        assert_eq!(labels["ironvisor.io/node"], "h1");
        let ann = c.metadata.annotations.clone().expect("annotations");
        assert_eq!(ann["ironvisor.io/user-data-secret"], "init");
        assert_eq!(ann["ironvisor.io/vm-name"], "db");
        assert_eq!(ann["ironvisor.io/sealed-for"], KEY);
        assert_eq!(ann["ironvisor.io/sealed-from"], "userData=s-uid@7");
        assert!(up_to_date(&c, &c));
    }

    #[test]
    fn a_placed_vm_whose_host_published_no_key_waits_and_keeps_any_copy() {
        let d = decide(
            &vm(true),
            &[(Field::UserData, "init", secret("userdata", "x"))],
            None,
        );
        let v = d.verdict.expect("a condition");
        assert_eq!((v.ok, v.reason), (false, reason::WAITING_FOR_HOST_KEY));
        assert!(
            v.message.contains("Hypervisor h1 status.seedKey"),
            "{}",
            v.message
        );
        assert_eq!(d.copy, CopyStep::Keep);
    }

    #[test]
    fn an_unplaced_vm_gets_the_condition_but_no_copy() {
        let d = decide(
            &vm(false),
            &[(Field::UserData, "init", secret("userData", "x"))],
            Some(KEY),
        );
        assert_eq!(
            d.verdict.expect("a condition").reason,
            reason::SECRETS_FOUND
        );
        assert_eq!(d.copy, CopyStep::Remove);
    }

    #[test]
    fn a_missing_secret_or_key_is_named_with_namespace_name_and_key() {
        let d = decide(
            &vm(true),
            &[(Field::UserData, "init", Fetched::NotFound)],
            Some(KEY),
        );
        let v = d.verdict.expect("a condition");
        assert_eq!((v.ok, v.reason), (false, reason::SECRET_NOT_FOUND));
        assert!(v.message.contains("Secret fin/init"), "{}", v.message);
        assert!(v.message.contains("\"userdata\""), "{}", v.message);
        assert_eq!(d.copy, CopyStep::Keep, "the last good copy stays");
        let d = decide(
            &vm(true),
            &[(Field::UserData, "init", secret("other", "x"))],
            Some(KEY),
        );
        let v = d.verdict.expect("a condition");
        assert_eq!(v.reason, reason::SECRET_NOT_FOUND);
        assert!(
            v.message.contains("has no key \"userdata\""),
            "{}",
            v.message
        );
        let d = decide(
            &vm(true),
            &[(Field::UserData, "init", Fetched::Forbidden)],
            Some(KEY),
        );
        assert_eq!(
            d.verdict.expect("a condition").reason,
            reason::SECRET_NOT_READABLE
        );
    }

    #[test]
    fn a_vm_without_secret_references_gets_nothing() {
        assert_eq!(
            decide(&vm(true), &[], Some(KEY)),
            Decision {
                verdict: None,
                copy: CopyStep::Remove
            }
        );
    }

    #[test]
    fn a_migrating_vm_gets_an_incoming_copy_sealed_for_its_target_only() {
        let d = decide(
            &vm(true),
            &[(Field::UserData, "init", secret("userdata", "v"))],
            Some(KEY),
        );
        let CopyStep::Write(main) = &d.copy else {
            panic!("a copy");
        };
        let CopyStep::Write(inc) = incoming(&d.copy, "u1", Some(("h2", Some("a2V5Mg==")))) else {
            panic!("an incoming copy");
        };
        assert_eq!(
            inc.metadata.name.as_deref(),
            Some("ironvisor-seed-u1-incoming")
        );
        assert_eq!(inc.metadata.labels.as_ref().unwrap()[NODE], "h2");
        let ann = inc.metadata.annotations.as_ref().unwrap();
        assert_eq!(ann[seed::SEALED_FOR_ANNOTATION], "a2V5Mg==");
        assert_eq!(ann["ironvisor.io/user-data-secret"], "init");
        assert_eq!(inc.data, main.data, "the same values, sealed when written");
        assert_eq!(
            main.metadata.annotations.as_ref().unwrap()[seed::SEALED_FOR_ANNOTATION],
            KEY,
            "the placed host's copy is unchanged"
        );
        assert!(!up_to_date(main, &inc));
    }

    #[test]
    fn no_migration_target_means_no_incoming_copy_and_a_keyless_target_waits() {
        let d = decide(
            &vm(true),
            &[(Field::UserData, "init", secret("userdata", "v"))],
            Some(KEY),
        );
        assert_eq!(incoming(&d.copy, "u1", None), CopyStep::Remove);
        assert_eq!(incoming(&d.copy, "u1", Some(("h2", None))), CopyStep::Keep);
        assert_eq!(
            incoming(&CopyStep::Remove, "u1", Some(("h2", Some(KEY)))),
            CopyStep::Remove
        );
        assert_eq!(
            incoming(&CopyStep::Keep, "u1", Some(("h2", Some(KEY)))),
            CopyStep::Keep
        );
    }

    #[test]
    fn a_changed_source_version_source_or_host_key_is_not_up_to_date() {
        let written = |name: &str, rv: &str, key: &str| match decide(
            &vm(true),
            &[(Field::UserData, name, secret_rv("userdata", "v", rv))],
            Some(key),
        )
        .copy
        {
            CopyStep::Write(c) => *c,
            other => panic!("a copy, not {other:?}"),
        };
        let a = written("init", "7", KEY);
        assert!(up_to_date(&a, &written("init", "7", KEY)));
        assert!(!up_to_date(&a, &written("init", "8", KEY)));
        assert!(!up_to_date(&a, &written("other", "7", KEY)));
        assert!(!up_to_date(&a, &written("init", "7", "another-hosts-key")));
    }
}
