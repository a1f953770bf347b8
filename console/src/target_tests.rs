use super::*;
use ironvisor_crds::console::{ConsoleCertificate, ConsoleEndpoint};
use serde_json::json;

fn vm(phase: &str, graphics: &str) -> VirtualMachine {
    serde_json::from_value(json!({
        "apiVersion": "ironvisor.io/v1alpha1", "kind": "VirtualMachine",
        "metadata": {"name": "web", "namespace": "a", "uid": "u-1"},
        "spec": {"cpu": {"cores": 1}, "memory": {"size": "64Mi"}, "graphics": graphics},
        "status": {"phase": phase, "nodeName": "host-1"}
    }))
    .unwrap()
}

#[test]
fn a_running_vm_is_reached_on_its_node_with_its_uid() {
    let p = placement(&vm("Running", "vnc"), Kind::Vnc).unwrap();
    assert_eq!(
        p,
        Placement {
            node: "host-1".into(),
            uid: "u-1".into()
        }
    );
}

#[test]
fn a_stopped_vm_is_a_conflict() {
    let e = placement(&vm("Stopped", "vnc"), Kind::Serial).unwrap_err();
    assert!(
        matches!(e, ApiError::Conflict(ref m) if m.contains("not running")),
        "{e}"
    );
}

#[test]
fn vnc_of_a_vm_without_graphics_is_a_conflict_but_its_serial_console_works() {
    let v = vm("Running", "none");
    assert!(matches!(
        placement(&v, Kind::Vnc),
        Err(ApiError::Conflict(_))
    ));
    assert!(placement(&v, Kind::Serial).is_ok());
}

#[test]
fn a_host_without_a_signed_endpoint_is_a_bad_gateway_saying_why() {
    let mut hv = Hypervisor::new("host-1", Default::default());
    assert!(matches!(
        endpoint(Some(&hv), "host-1"),
        Err(ApiError::BadGateway(_))
    ));
    let mut st = ironvisor_crds::hypervisor::HypervisorStatus {
        console_endpoint: Some(ConsoleEndpoint {
            address: "10.0.0.1:7443".into(),
            csr: String::new(),
        }),
        ..Default::default()
    };
    hv.status = Some(st.clone());
    let e = endpoint(Some(&hv), "host-1").unwrap_err();
    assert!(e.to_string().contains("not signed"), "{e}");
    st.console_certificate = Some(ConsoleCertificate::default());
    hv.status = Some(st);
    assert_eq!(endpoint(Some(&hv), "host-1").unwrap(), "10.0.0.1:7443");
    assert!(endpoint(None, "host-1").is_err());
}
