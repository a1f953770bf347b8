//! The agent SIGKILLed in the middle of a backup, a snapshot delete (merge) and a snapshot:
//! restarted on the same directories, it converges with no dangling layer, no half-written
//! backup and no lost data. The moment is found from the outside, never from a pause point
//! in the agent: a backup's copy is caught by its status (`progress` between 0 and 100 %,
//! with the location's bandwidth limit making the copy last seconds), a merge by the
//! `qemu-img commit` child process of the agent.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use ironvisor_tests::backup_hosts::{QUICK, TwoHosts, URI, backup_dir};
use ironvisor_tests::guest_disk::{guest_write_at, layers, reads, sha256};
use ironvisor_tests::system::{uid, wait_for};

/// The percentage of a progress line such as `disk 1/1 (data): 43%`.
fn percent(progress: &str) -> Option<u32> {
    progress
        .rsplit_once(": ")?
        .1
        .strip_suffix('%')?
        .parse()
        .ok()
}

/// Write `mib` MiB of `pattern` from the start of the guest's disk, 32 MiB per write.
fn fill(domain: &str, pattern: u8, mib: u32) {
    for i in 0..mib / 32 {
        guest_write_at(URI, domain, pattern, &format!("{}M", i * 32), "32M");
    }
}

#[test]
fn an_agent_killed_mid_backup_restarts_and_writes_the_whole_backup_again() {
    let mut h = TwoHosts::start("bkk", "{storage: 2Gi}");
    // 16 MiB/s: 128 MiB of data take about 8 s to copy.
    h.location("slow", "  bandwidthLimit: 16Mi\n");
    let (vm, domain) = h.vm("big", &h.a.node.clone(), "256Mi");
    let vm_dir = h.a.vm_dir(&uid(&vm));
    fill(&domain, 0x41, 128);
    h.backup("full", "big", "slow");
    let seen = wait_for("the copy half-way", QUICK, || {
        let b = h.sys.get("vmbackup", Some(&h.ns), "full").ok_or("gone")?;
        let p = b["status"]["progress"].as_str().unwrap_or("").to_owned();
        match percent(&p) {
            Some(n) if n > 0 && n < 100 => Ok(p),
            _ => Err(b["status"].to_string()),
        }
    });
    eprintln!("killing the agent at {seen}");
    h.sys.restart_agent(&mut h.a);
    let b = h.wait_backup("full", "Succeeded", Duration::from_secs(240));
    let dir = backup_dir(&h.share, &b);
    let disk = &b["status"]["disks"][0];
    let image = dir.join(disk["file"].as_str().unwrap());
    assert_eq!(sha256(&image), disk["sha256"].as_str().unwrap());
    assert!(
        reads(&image, 0x41, "0", "128M"),
        "every byte written before the backup"
    );
    let entries: Vec<String> = std::fs::read_dir(h.share.join("ironvisor-backups"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with(".probe-"))
        .collect();
    assert_eq!(
        entries,
        [b["metadata"]["uid"].as_str().unwrap()],
        "no staging directory left"
    );
    wait_for("the backup's snapshot merged away", QUICK, || {
        let l = layers(&vm_dir);
        (l == ["disk-data.qcow2"])
            .then_some(())
            .ok_or(format!("{l:?}"))
    });
    assert_eq!(h.sys.vm(&h.ns, "big")["status"]["phase"], "Running");
}

/// The pid of a `qemu-img commit` child of `parent`, if one runs.
fn qemu_img_child(parent: u32) -> Option<u32> {
    for entry in std::fs::read_dir("/proc").ok()? {
        let Ok(entry) = entry else { continue };
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid ...
        let Some((comm, rest)) = stat.split_once(") ") else {
            continue;
        };
        let ppid = rest.split(' ').nth(1).and_then(|p| p.parse::<u32>().ok());
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let commit = cmdline.split(|b| *b == 0).any(|arg| arg == b"commit");
        if comm.ends_with("(qemu-img") && ppid == Some(parent) && commit {
            return Some(pid);
        }
    }
    None
}

#[test]
fn an_agent_killed_mid_merge_restarts_and_finishes_it_with_the_data_intact() {
    let mut h = TwoHosts::start("bkm", "{storage: 4Gi}");
    let (vm, domain) = h.vm("db", &h.a.node.clone(), "512Mi");
    let vm_dir = h.a.vm_dir(&uid(&vm));
    h.sys.apply(&format!(
        "apiVersion: ironvisor.io/v1alpha1\nkind: VirtualMachineSnapshot\n\
         metadata: {{name: s1, namespace: {}}}\nspec: {{vmName: db}}\n",
        h.ns
    ));
    wait_for("snapshot s1 taken and the lock free", QUICK, || {
        let s = h.sys.get("vmsnap", Some(&h.ns), "s1").ok_or("gone")?;
        let vm = h.sys.vm(&h.ns, "db");
        (s["status"]["phase"] == "Succeeded" && vm["status"]["operation"].is_null())
            .then_some(())
            .ok_or(s["status"].to_string())
    });
    // 384 MiB in the layer above the snapshot: its merge down takes a while.
    fill(&domain, 0x42, 384);
    h.halt("db");
    assert_eq!(layers(&vm_dir).len(), 2);
    h.sys
        .kubectl_ok(&["delete", "vmsnap", "s1", "-n", &h.ns, "--wait=false"]);
    let agent_pid = h.a.proc.pid();
    let start = Instant::now();
    let commit = loop {
        if let Some(pid) = qemu_img_child(agent_pid) {
            break pid;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60) && layers(&vm_dir).len() == 2,
            "no merge was seen running: {:?}",
            layers(&vm_dir)
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    eprintln!("killing the agent while qemu-img (pid {commit}) merges");
    h.sys.restart_agent(&mut h.a);
    wait_for(
        "the snapshot gone and one layer left",
        Duration::from_secs(180),
        || {
            let gone = h.sys.get("vmsnap", Some(&h.ns), "s1").is_none();
            let l = layers(&vm_dir);
            (gone && l == ["disk-data.qcow2"])
                .then_some(())
                .ok_or(format!("{gone} {l:?}"))
        },
    );
    assert!(reads(&vm_dir.join("disk-data.qcow2"), 0x42, "0", "384M"));
    no_staging_files(&vm_dir);
}

fn no_staging_files(vm_dir: &Path) {
    let hidden: Vec<String> = std::fs::read_dir(vm_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(hidden.is_empty(), "{hidden:?}");
}

/// A snapshot is quick (two qemu-img creates and one libvirt call), so its agent is killed
/// at several moments after it could start: frozen (SIGSTOP) before the snapshot exists,
/// thawed, and killed 0, 40 and 150 ms later. Every time, the restarted agent finishes the
/// snapshot with exactly one new layer and the guest keeps its data.
#[test]
fn an_agent_killed_while_taking_a_snapshot_converges_to_one_new_layer() {
    let mut h = TwoHosts::start("bkn", "{storage: 4Gi}");
    let (vm, domain) = h.vm("app", &h.a.node.clone(), "32Mi");
    let vm_dir = h.a.vm_dir(&uid(&vm));
    for (i, delay) in [0u64, 40, 150].into_iter().enumerate() {
        guest_write_at(URI, &domain, 0x50 + i as u8, &format!("{i}M"), "64k");
        let pid = h.a.proc.pid().to_string();
        assert!(
            Command::new("kill")
                .args(["-STOP", &pid])
                .status()
                .unwrap()
                .success()
        );
        let name = format!("s{i}");
        h.sys.apply(&format!(
            "apiVersion: ironvisor.io/v1alpha1\nkind: VirtualMachineSnapshot\n\
             metadata: {{name: {name}, namespace: {}}}\nspec: {{vmName: app}}\n",
            h.ns
        ));
        wait_for("the operator handed the snapshot over", QUICK, || {
            let s = h.sys.get("vmsnap", Some(&h.ns), &name).ok_or("gone")?;
            (s["status"]["phase"] == "InProgress")
                .then_some(())
                .ok_or(s["status"].to_string())
        });
        assert!(
            Command::new("kill")
                .args(["-CONT", &pid])
                .status()
                .unwrap()
                .success()
        );
        std::thread::sleep(Duration::from_millis(delay));
        h.sys.restart_agent(&mut h.a);
        wait_for(
            &format!("snapshot {name} taken after the restart"),
            QUICK,
            || {
                let s = h.sys.get("vmsnap", Some(&h.ns), &name).ok_or("gone")?;
                (s["status"]["phase"] == "Succeeded")
                    .then_some(())
                    .ok_or(s["status"].to_string())
            },
        );
        let l = layers(&vm_dir);
        assert_eq!(
            l.len(),
            i + 2,
            "one new layer per snapshot, none dangling: {l:?}"
        );
        no_staging_files(&vm_dir);
    }
    h.halt("app");
    let active = std::fs::read_to_string(vm_dir.join("active-layer")).unwrap();
    let top = vm_dir.join(format!("disk-data.{}.qcow2", active.trim()));
    for i in 0..3u8 {
        assert!(reads(&top, 0x50 + i, &format!("{i}M"), "64k"), "marker {i}");
    }
}
