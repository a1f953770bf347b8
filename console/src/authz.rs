//! May this user open this console? Asked of the cluster with a SubjectAccessReview (verb
//! `get` on `virtualmachines/console` or `virtualmachines/vnc` in `subresources.ironvisor.io`),
//! as every delegated-authorization aggregated API server does.

use ironvisor_crds::console::SUBRESOURCE_GROUP;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};

use crate::authn::Identity;
use crate::status::ApiError;
use crate::target::Kind;

/// The review asking whether `who` may open `kind` of VM `namespace/name`.
pub fn review(who: &Identity, namespace: &str, name: &str, kind: Kind) -> SubjectAccessReview {
    SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(who.user.clone()),
            uid: who.uid.clone(),
            groups: Some(who.groups.clone()),
            extra: (!who.extra.is_empty()).then(|| who.extra.clone()),
            resource_attributes: Some(ResourceAttributes {
                group: Some(SUBRESOURCE_GROUP.into()),
                resource: Some("virtualmachines".into()),
                subresource: Some(kind.subresource().into()),
                verb: Some("get".into()),
                namespace: Some(namespace.into()),
                name: Some(name.into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Ok when RBAC allows it; 403 with the cluster's reason otherwise.
pub async fn authorize(
    client: &kube::Client,
    who: &Identity,
    namespace: &str,
    name: &str,
    kind: Kind,
) -> Result<(), ApiError> {
    let api: Api<SubjectAccessReview> = Api::all(client.clone());
    let answer = api
        .create(&PostParams::default(), &review(who, namespace, name, kind))
        .await
        .map_err(|e| ApiError::Unavailable(format!("the SubjectAccessReview failed: {e}")))?;
    let status = answer.status.unwrap_or_default();
    if status.allowed && status.denied != Some(true) {
        return Ok(());
    }
    let mut msg = format!(
        "virtualmachines.{SUBRESOURCE_GROUP} \"{name}\" is forbidden: User \"{}\" cannot get \
         resource \"virtualmachines/{}\" in API group \"{SUBRESOURCE_GROUP}\" in the namespace \
         \"{namespace}\"",
        who.user,
        kind.subresource()
    );
    if let Some(r) = status.reason.filter(|r| !r.is_empty()) {
        msg.push_str(&format!(": {r}"));
    }
    Err(ApiError::Forbidden(msg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_review_asks_for_get_on_the_console_subresource_of_that_vm() {
        let who = Identity {
            user: "alice".into(),
            groups: vec!["devs".into()],
            ..Default::default()
        };
        let r = review(&who, "team-a", "web", Kind::Vnc);
        let a = r.spec.resource_attributes.unwrap();
        assert_eq!(a.group.as_deref(), Some("subresources.ironvisor.io"));
        assert_eq!(a.resource.as_deref(), Some("virtualmachines"));
        assert_eq!(a.subresource.as_deref(), Some("vnc"));
        assert_eq!(a.verb.as_deref(), Some("get"));
        assert_eq!(a.namespace.as_deref(), Some("team-a"));
        assert_eq!(a.name.as_deref(), Some("web"));
        assert_eq!(r.spec.user.as_deref(), Some("alice"));
        assert_eq!(r.spec.extra, None);
    }
}
