//! Every apply-time rule of the API, each with an object it accepts and one it rejects,
//! asserting that the error names the field and says why.

mod support;

use ironvisor_crds::{Hypervisor, Quota, Tenant, VirtualMachine};
use kube::CustomResourceExt;
use serde_json::{Value, json};
use support::{errors, remove, set};

fn vm() -> Value {
    json!({
        "apiVersion": "ironvisor.io/v1alpha1",
        "kind": "VirtualMachine",
        "metadata": {"name": "web-1", "namespace": "finance"},
        "spec": {
            "runStrategy": "Always",
            "cpu": {"cores": 2, "sockets": 1, "threads": 1, "model": "host-model"},
            "memory": {"size": "2Gi"},
            "firmware": "bios",
            "kernelBoot": {
                "kernel": {"hostPath": {"path": "/var/lib/ironvisor/images/vmlinuz"}},
                "initrd": {"http": {"url": "http://images.example/initrd.gz",
                                     "sha256": "a".repeat(64)}},
                "cmdline": "console=ttyS0"
            },
            "disks": [
                {"name": "root", "bus": "virtio", "bootOrder": 1, "size": "20Gi",
                 "source": {"hostPath": {"path": "/var/lib/ironvisor/images/debian.qcow2"}}},
                {"name": "data", "bus": "scsi", "size": "10Gi", "source": {"blank": {}}}
            ],
            "networks": [
                {"name": "default", "model": "virtio", "macAddress": "52:54:00:12:34:56",
                 "user": {"portForwards": [{"protocol": "TCP", "hostPort": 2222, "guestPort": 22}]}},
                {"name": "lan", "bridge": {"name": "br0"}}
            ],
            "cloudInit": {"userData": "#cloud-config\n"},
            "terminationGracePeriodSeconds": 60,
            "evictionStrategy": "None"
        }
    })
}

fn tenant() -> Value {
    json!({
        "apiVersion": "ironvisor.io/v1alpha1",
        "kind": "Tenant",
        "metadata": {"name": "finance"},
        "spec": {
            "displayName": "Finance",
            "namespaces": ["finance", "finance-dev"],
            "owners": [{"kind": "Group", "name": "finance-admins"},
                       {"kind": "ServiceAccount", "name": "ci", "namespace": "finance"}],
            "parent": "acme"
        }
    })
}

fn quota() -> Value {
    json!({
        "apiVersion": "ironvisor.io/v1alpha1",
        "kind": "Quota",
        "metadata": {"name": "finance-compute"},
        "spec": {"tenant": "finance",
                 "hard": {"virtualMachines": 10, "vcpus": 32, "memory": "64Gi", "storage": "1Ti"}}
    })
}

fn hypervisor() -> Value {
    json!({
        "apiVersion": "ironvisor.io/v1alpha1",
        "kind": "Hypervisor",
        "metadata": {"name": "host-1"},
        "spec": {"unschedulable": false, "overcommit": {"cpu": 4.0, "memory": 1.0},
                 "reserved": {"vcpus": 2, "memory": "4Gi"}}
    })
}

fn crd_for(
    object: &Value,
) -> k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition {
    match object["kind"].as_str() {
        Some("VirtualMachine") => VirtualMachine::crd(),
        Some("Tenant") => Tenant::crd(),
        Some("Quota") => Quota::crd(),
        Some("Hypervisor") => Hypervisor::crd(),
        other => panic!("no CRD for {other:?}"),
    }
}

#[track_caller]
fn assert_accepted(object: &Value) {
    let errs = errors(&crd_for(object), object, None);
    assert!(
        errs.is_empty(),
        "expected the object to be accepted, got {errs:#?}"
    );
}

#[track_caller]
fn assert_rejected(object: &Value, field: &str, reason: &str) {
    let errs = errors(&crd_for(object), object, None);
    assert!(
        errs.iter().any(|e| e.contains(field) && e.contains(reason)),
        "expected an error naming {field:?} with {reason:?}, got {errs:#?}"
    );
}

/// One test per rule: the baseline object is accepted, the mutated one rejected.
macro_rules! rule {
    ($name:ident, $base:expr, |$o:ident| $mutate:expr, $field:expr, $reason:expr) => {
        #[test]
        fn $name() {
            let base = $base;
            assert_accepted(&base);
            let mut $o = base;
            $mutate;
            assert_rejected(&$o, $field, $reason);
        }
    };
}

// Quantities.
rule!(
    vm_with_malformed_memory_quantity_is_rejected,
    vm(),
    |o| set(&mut o, "spec.memory.size", json!("2GB")),
    "spec.memory.size",
    "quantity"
);
rule!(
    vm_with_malformed_disk_size_is_rejected,
    vm(),
    |o| set(&mut o, "spec.disks.1.size", json!("ten gigs")),
    "spec.disks[1].size",
    "quantity"
);
rule!(
    quota_with_malformed_memory_is_rejected,
    quota(),
    |o| set(&mut o, "spec.hard.memory", json!("lots")),
    "spec.hard.memory",
    "quantity"
);

// CPU and memory ranges.
rule!(
    vm_with_zero_cores_is_rejected,
    vm(),
    |o| set(&mut o, "spec.cpu.cores", json!(0)),
    "spec.cpu.cores",
    "minimum"
);
rule!(
    vm_with_more_than_256_vcpus_is_rejected,
    vm(),
    |o| {
        set(&mut o, "spec.cpu.sockets", json!(4));
        set(&mut o, "spec.cpu.cores", json!(128))
    },
    "spec.cpu",
    "at most 256 vCPUs"
);
rule!(
    vm_with_memory_below_64mi_is_rejected,
    vm(),
    |o| set(&mut o, "spec.memory.size", json!("32Mi")),
    "spec.memory.size",
    "at least 64Mi"
);
rule!(
    vm_with_memory_above_16ti_is_rejected,
    vm(),
    |o| set(&mut o, "spec.memory.size", json!("17Ti")),
    "spec.memory.size",
    "at most 16Ti"
);

// Enums.
rule!(
    vm_with_unknown_run_strategy_is_rejected,
    vm(),
    |o| set(&mut o, "spec.runStrategy", json!("Sometimes")),
    "spec.runStrategy",
    "Sometimes"
);
rule!(
    vm_with_unknown_disk_bus_is_rejected,
    vm(),
    |o| set(&mut o, "spec.disks.0.bus", json!("ide")),
    "spec.disks.0.bus",
    "ide"
);
rule!(
    vm_with_unknown_nic_model_is_rejected,
    vm(),
    |o| set(&mut o, "spec.networks.0.model", json!("vmxnet3")),
    "spec.networks.0.model",
    "vmxnet3"
);
rule!(
    vm_with_unknown_firmware_is_rejected,
    vm(),
    |o| set(&mut o, "spec.firmware", json!("efi")),
    "spec.firmware",
    "efi"
);

// Uniqueness.
rule!(
    vm_with_duplicate_disk_names_is_rejected,
    vm(),
    |o| set(&mut o, "spec.disks.1.name", json!("root")),
    "spec.disks[1]",
    "Duplicate value"
);
rule!(
    vm_with_duplicate_network_names_is_rejected,
    vm(),
    |o| set(&mut o, "spec.networks.1.name", json!("default")),
    "spec.networks[1]",
    "Duplicate value"
);
rule!(
    vm_with_duplicate_boot_orders_is_rejected,
    vm(),
    |o| set(&mut o, "spec.disks.1.bootOrder", json!(1)),
    "spec.disks",
    "bootOrder must be unique"
);

// Disk sources.
rule!(
    disk_with_no_source_kind_is_rejected,
    vm(),
    |o| set(&mut o, "spec.disks.1.source", json!({})),
    "spec.disks[1].source",
    "exactly one of"
);
rule!(
    disk_with_two_source_kinds_is_rejected,
    vm(),
    |o| set(&mut o, "spec.disks.0.source.blank", json!({})),
    "spec.disks[0].source",
    "exactly one of"
);
rule!(
    blank_disk_without_size_is_rejected,
    vm(),
    |o| remove(&mut o, "spec.disks.1.size"),
    "spec.disks[1].size",
    "required for a blank disk"
);
rule!(
    host_path_with_dotdot_component_is_rejected,
    vm(),
    |o| set(
        &mut o,
        "spec.disks.0.source.hostPath.path",
        json!("/var/lib/ironvisor/images/../../../etc/shadow")
    ),
    "spec.disks[0].source.hostPath.path",
    "'..'"
);
rule!(
    relative_host_path_is_rejected,
    vm(),
    |o| set(
        &mut o,
        "spec.disks.0.source.hostPath.path",
        json!("images/debian.qcow2")
    ),
    "spec.disks.0.source.hostPath.path",
    "does not match"
);
rule!(
    kernel_host_path_with_dotdot_is_rejected,
    vm(),
    |o| set(
        &mut o,
        "spec.kernelBoot.kernel.hostPath.path",
        json!("/images/..")
    ),
    "spec.kernelBoot.kernel.hostPath.path",
    "'..'"
);
rule!(
    sha256_that_is_not_64_hex_digits_is_rejected,
    vm(),
    |o| set(
        &mut o,
        "spec.kernelBoot.initrd.http.sha256",
        json!("abc123")
    ),
    "spec.kernelBoot.initrd.http.sha256",
    "does not match"
);

// Networks.
rule!(
    network_with_no_kind_is_rejected,
    vm(),
    |o| remove(&mut o, "spec.networks.1.bridge"),
    "spec.networks[1]",
    "exactly one of"
);
rule!(
    network_with_two_kinds_is_rejected,
    vm(),
    |o| set(
        &mut o,
        "spec.networks.1.network",
        json!({"name": "default"})
    ),
    "spec.networks[1]",
    "exactly one of"
);
rule!(
    malformed_mac_address_is_rejected,
    vm(),
    |o| set(
        &mut o,
        "spec.networks.0.macAddress",
        json!("52:54:00:12:34")
    ),
    "spec.networks.0.macAddress",
    "does not match"
);
rule!(
    multicast_mac_address_is_rejected,
    vm(),
    |o| set(
        &mut o,
        "spec.networks.0.macAddress",
        json!("01:00:5e:00:00:01")
    ),
    "spec.networks[0].macAddress",
    "unicast"
);

// Kernel boot.
rule!(
    initrd_without_kernel_is_rejected,
    vm(),
    |o| remove(&mut o, "spec.kernelBoot.kernel"),
    "spec.kernelBoot",
    "\"kernel\" is a required property"
);

// Quota.
rule!(
    negative_vm_count_in_quota_is_rejected,
    quota(),
    |o| set(&mut o, "spec.hard.virtualMachines", json!(-1)),
    "spec.hard.virtualMachines",
    "minimum"
);
rule!(
    negative_vcpus_in_quota_is_rejected,
    quota(),
    |o| set(&mut o, "spec.hard.vcpus", json!(-4)),
    "spec.hard.vcpus",
    "minimum"
);
rule!(
    negative_memory_in_quota_is_rejected,
    quota(),
    |o| set(&mut o, "spec.hard.memory", json!("-1Gi")),
    "spec.hard.memory",
    "must not be negative"
);
rule!(
    negative_storage_in_quota_is_rejected,
    quota(),
    |o| set(&mut o, "spec.hard.storage", json!("-5Ti")),
    "spec.hard.storage",
    "must not be negative"
);

// Tenant.
rule!(
    tenant_with_invalid_namespace_name_is_rejected,
    tenant(),
    |o| set(&mut o, "spec.namespaces.1", json!("Finance_Dev")),
    "spec.namespaces.1",
    "does not match"
);
rule!(
    tenant_service_account_owner_without_namespace_is_rejected,
    tenant(),
    |o| remove(&mut o, "spec.owners.1.namespace"),
    "spec.owners[1]",
    "namespace is required"
);
rule!(
    tenant_that_is_its_own_parent_is_rejected,
    tenant(),
    |o| set(&mut o, "spec.parent", json!("finance")),
    "",
    "must name another tenant"
);

// Hypervisor.
rule!(
    zero_cpu_overcommit_is_rejected,
    hypervisor(),
    |o| set(&mut o, "spec.overcommit.cpu", json!(0.0)),
    "spec.overcommit.cpu",
    "above zero"
);
rule!(
    negative_memory_overcommit_is_rejected,
    hypervisor(),
    |o| set(&mut o, "spec.overcommit.memory", json!(-1.0)),
    "spec.overcommit.memory",
    "above zero"
);

// Grace period.
rule!(
    negative_grace_period_is_rejected,
    vm(),
    |o| set(&mut o, "spec.terminationGracePeriodSeconds", json!(-1)),
    "spec.terminationGracePeriodSeconds",
    "minimum"
);

#[test]
fn quota_tenant_cannot_change_after_creation() {
    let old = quota();
    let mut new = quota();
    set(&mut new, "spec.tenant", json!("marketing"));
    let errs = errors(&Quota::crd(), &new, Some(&old));
    assert!(
        errs.iter()
            .any(|e| e.contains("spec.tenant") && e.contains("immutable")),
        "{errs:#?}"
    );
    assert!(errors(&Quota::crd(), &old, Some(&old)).is_empty());
}

#[test]
fn minimal_vm_is_accepted_and_defaults_are_declared() {
    let minimal = json!({
        "apiVersion": "ironvisor.io/v1alpha1", "kind": "VirtualMachine",
        "metadata": {"name": "tiny", "namespace": "default"},
        "spec": {"memory": {"size": "64Mi"}}
    });
    assert_accepted(&minimal);
    let schema = support::schema_of(&VirtualMachine::crd());
    let spec = &schema["properties"]["spec"]["properties"];
    assert_eq!(spec["runStrategy"]["default"], "Always");
    assert_eq!(spec["terminationGracePeriodSeconds"]["default"], 60);
    assert_eq!(spec["cpu"]["properties"]["model"]["default"], "host-model");
}

#[test]
fn integer_memory_sizes_are_accepted_as_quantities() {
    let mut o = vm();
    set(&mut o, "spec.memory.size", json!(1_073_741_824));
    assert_accepted(&o);
}

#[test]
fn errors_read_as_field_and_reason() {
    let mut o = vm();
    set(&mut o, "spec.memory.size", json!("32Mi"));
    let errs = errors(&VirtualMachine::crd(), &o, None);
    assert_eq!(
        errs,
        vec!["spec.memory.size: size must be at least 64Mi".to_owned()]
    );
}
