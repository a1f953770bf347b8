//! Glue for `ivctl host check`: gather, evaluate, print, exit.
//!
//! Exit codes: 0 the host qualifies for the profile, 1 it does not (or the check could not
//! run at all), 2 usage; 130 when interrupted (the test domain is removed first).

use std::process::ExitCode;

use super::args::{CheckArgs, CheckOutput};
use super::domain_test;
use super::evaluate::evaluate;
use super::facts::{DomainTestFacts, HostFacts, LibvirtFacts, LibvirtUnavailable};
use super::gather::{self, HostRoot};
use super::gather_dirs;
use super::{eval_cpu, render, virsh};

/// Exit status when interrupted (128 + SIGINT).
const EXIT_INTERRUPTED: u8 = 130;

/// Ask libvirt: versions, then the probe, then the domain test (as `name`).
async fn libvirt(
    a: &CheckArgs,
    name: &str,
    virt_type: super::facts::VirtType,
) -> Result<LibvirtFacts, LibvirtUnavailable> {
    let uri = a.libvirt_uri.as_str();
    let versions = virsh::versions(uri).await?;
    let probe = domain_test::probe(uri).await;
    let domain = if a.skip_domain_test {
        DomainTestFacts::Skipped
    } else {
        DomainTestFacts::Ran(domain_test::run(uri, name, virt_type).await)
    };
    Ok(LibvirtFacts {
        versions,
        probe,
        domain,
    })
}

/// Every fact, the local ones first.
async fn gather_all(a: &CheckArgs, name: &str) -> HostFacts {
    let root = HostRoot::system();
    let cpu = gather::cpu(&root);
    let kvm = gather::kvm_device(&root);
    let qemu_user = gather::qemu_user(&a.qemu_conf);
    let virt_type = eval_cpu::acceleration(&cpu, &kvm, qemu_user.as_ref());
    HostFacts {
        iommu: gather::iommu(&root),
        hugepages: gather::hugepages(&root),
        numa: gather::numa(&root),
        cgroup: gather::cgroup(&root),
        libvirt: libvirt(a, name, virt_type).await,
        state_dir: gather_dirs::dir(&a.state_dir),
        images_dir: gather_dirs::dir(&a.images_dir),
        cpu,
        kvm,
        qemu_user,
    }
}

/// `ivctl host check`.
pub fn check(a: &CheckArgs) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let name = domain_test::unique_name();
    let facts = rt.block_on(async {
        tokio::select! {
            f = gather_all(a, &name) => Some(f),
            _ = tokio::signal::ctrl_c() => {
                // The running virsh is killed on drop; remove what it may have defined.
                if !a.skip_domain_test {
                    let _ = domain_test::cleanup(&a.libvirt_uri, &name).await;
                }
                None
            }
        }
    });
    let Some(facts) = facts else {
        eprintln!("interrupted");
        return ExitCode::from(EXIT_INTERRUPTED);
    };
    let report = evaluate(a.profile, &a.libvirt_uri, &facts);
    match a.output {
        CheckOutput::Table => print!("{}", render::table(&report)),
        CheckOutput::Json => println!("{}", render::json(&report)),
    }
    if report.qualifies {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
