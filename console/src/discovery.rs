//! The discovery documents of `subresources.ironvisor.io/v1`, so kubectl and the API
//! server's aggregator see the console subresources.

use ironvisor_crds::console::{SUBRESOURCE_GROUP, SUBRESOURCE_VERSION};
use serde_json::{Value, json};

/// `GET /apis/subresources.ironvisor.io/v1`.
pub fn resource_list() -> Value {
    let sub = |name: &str| {
        json!({
            "name": format!("virtualmachines/{name}"),
            "singularName": "",
            "namespaced": true,
            "kind": "VirtualMachine",
            "verbs": ["get"],
        })
    };
    json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": format!("{SUBRESOURCE_GROUP}/{SUBRESOURCE_VERSION}"),
        "resources": [sub("console"), sub("vnc")],
    })
}

/// `GET /apis/subresources.ironvisor.io`.
pub fn group() -> Value {
    let gv = json!({
        "groupVersion": format!("{SUBRESOURCE_GROUP}/{SUBRESOURCE_VERSION}"),
        "version": SUBRESOURCE_VERSION,
    });
    json!({
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": SUBRESOURCE_GROUP,
        "versions": [gv.clone()],
        "preferredVersion": gv,
    })
}

/// `GET /apis`.
pub fn group_list() -> Value {
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": [group()]})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_resource_list_names_both_console_subresources_as_get_only() {
        let l = resource_list();
        assert_eq!(l["groupVersion"], "subresources.ironvisor.io/v1");
        let names: Vec<&str> = l["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["virtualmachines/console", "virtualmachines/vnc"]);
        assert!(l["resources"][0]["verbs"] == json!(["get"]));
    }
}
