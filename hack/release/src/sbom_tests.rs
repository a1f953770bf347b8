use super::*;

const SHA: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// agent -> serde (normal), cc (build), proptest (dev); proptest -> rand (normal); an
/// unrelated crate nobody ships.
fn metadata() -> Metadata {
    let reg = "registry+https://github.com/rust-lang/crates.io-index";
    serde_json::from_value(json!({
        "packages": [
            {"name": "ironvisor-agent", "version": "0.1.0", "id": "agent", "source": null, "license": "Apache-2.0"},
            {"name": "serde", "version": "1.0.1", "id": "serde", "source": reg, "license": "MIT OR Apache-2.0"},
            {"name": "cc", "version": "1.2.0", "id": "cc", "source": reg, "license": "MIT"},
            {"name": "proptest", "version": "1.0.0", "id": "proptest", "source": reg},
            {"name": "rand", "version": "0.9.0", "id": "rand", "source": reg},
            {"name": "unused", "version": "2.0.0+meta", "id": "unused", "source": reg},
        ],
        "resolve": {"nodes": [
            {"id": "agent", "deps": [
                {"pkg": "serde", "dep_kinds": [{"kind": null}]},
                {"pkg": "cc", "dep_kinds": [{"kind": "build"}]},
                {"pkg": "proptest", "dep_kinds": [{"kind": "dev"}]},
            ]},
            {"id": "serde", "deps": []},
            {"id": "cc", "deps": []},
            {"id": "proptest", "deps": [{"pkg": "rand", "dep_kinds": [{"kind": null}]}]},
            {"id": "rand", "deps": []},
            {"id": "unused", "deps": []},
        ]}
    }))
    .unwrap()
}

fn release() -> Release {
    Release {
        version: "0.1.0".into(),
        commit: "abc123".into(),
        created: 1_700_000_000,
    }
}

fn pin(name: &str, version: &str) -> Pinned {
    Pinned {
        name: name.into(),
        version: version.into(),
        arch: "amd64".into(),
        sha256: SHA.into(),
    }
}

fn names(bom: &Value) -> Vec<String> {
    bom["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn shipped_crates_are_listed_and_dev_only_ones_are_not() {
    let bom = sbom(&release(), &metadata(), &["ironvisor-agent"], &[]).unwrap();
    assert_eq!(names(&bom), ["cc", "ironvisor-agent", "serde"]);
    let serde = &bom["components"][2];
    assert_eq!(serde["purl"], "pkg:cargo/serde@1.0.1");
    assert_eq!(serde["licenses"][0]["expression"], "MIT OR Apache-2.0");
    assert_eq!(bom["components"][1]["type"], "application");
    assert!(
        bom["components"][1].get("purl").is_none(),
        "our own crates have no registry URL"
    );
    assert_eq!(
        bom["metadata"]["component"]["properties"][0]["value"],
        "abc123"
    );
    assert_eq!(bom["metadata"]["timestamp"], "2023-11-14T22:13:20Z");
}

#[test]
fn debian_packages_name_every_image_they_are_in_with_an_escaped_purl() {
    let images = vec![
        (
            "ironvisor-agent".to_owned(),
            vec![
                pin("libc6", "2.36-9+deb12u14"),
                pin("qemu-utils", "1:7.2+dfsg-7"),
            ],
        ),
        (
            "ironvisor-operator".to_owned(),
            vec![pin("libc6", "2.36-9+deb12u14")],
        ),
    ];
    let bom = sbom(&release(), &metadata(), &["ironvisor-agent"], &images).unwrap();
    let comps = bom["components"].as_array().unwrap();
    let libc = comps.iter().find(|c| c["name"] == "libc6").unwrap();
    assert_eq!(
        libc["purl"],
        "pkg:deb/debian/libc6@2.36-9%2Bdeb12u14?arch=amd64&distro=debian-12"
    );
    let in_images: Vec<&str> = libc["properties"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["value"].as_str().unwrap())
        .collect();
    assert_eq!(in_images, ["ironvisor-agent", "ironvisor-operator"]);
    assert_eq!(libc["hashes"][0]["content"], SHA);
    let qemu = comps.iter().find(|c| c["name"] == "qemu-utils").unwrap();
    assert_eq!(
        qemu["purl"],
        "pkg:deb/debian/qemu-utils@7.2%2Bdfsg-7?arch=amd64&distro=debian-12&epoch=1"
    );
    assert_eq!(comps.iter().filter(|c| c["name"] == "libc6").count(), 1);
}

#[test]
fn the_same_inputs_give_the_same_bytes() {
    let images = vec![(
        "a".to_owned(),
        vec![pin("zlib1g", "1.2"), pin("libc6", "2.36")],
    )];
    let a = sbom(&release(), &metadata(), &["ironvisor-agent"], &images).unwrap();
    let b = sbom(&release(), &metadata(), &["ironvisor-agent"], &images).unwrap();
    assert_eq!(
        serde_json::to_vec(&a).unwrap(),
        serde_json::to_vec(&b).unwrap()
    );
}

#[test]
fn an_unknown_binary_package_is_an_error() {
    let err = sbom(&release(), &metadata(), &["ivctl"], &[]).unwrap_err();
    assert!(err.to_string().contains("ivctl"), "{err}");
}
