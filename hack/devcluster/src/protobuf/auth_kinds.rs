//! The review and token-request kinds in protobuf: kubectl's typed clients send them so
//! (`kubectl auth can-i`, `auth whoami`, `create token`). Field bridges only; pure.

use super::bridge::{Bridge, BridgeError, bridge, mode};
use k8s_openapi::api::authentication::v1 as authn_js;
use k8s_openapi::api::authorization::v1 as authz_js;
use k8s_pb::api::authentication::v1 as authn_pb;
use k8s_pb::api::authorization::v1 as authz_pb;

bridge!(authz_pb::SelfSubjectAccessReview => authz_js::SelfSubjectAccessReview {
    metadata => metadata: msg_req,
    spec => spec: msg_req,
    status => status: msg,
});

bridge!(authz_pb::SelfSubjectAccessReviewSpec => authz_js::SelfSubjectAccessReviewSpec {
    non_resource_attributes => non_resource_attributes: msg,
    resource_attributes => resource_attributes: msg,
});

bridge!(authz_pb::SubjectAccessReview => authz_js::SubjectAccessReview {
    metadata => metadata: msg_req,
    spec => spec: msg_req,
    status => status: msg,
});

bridge!(authz_pb::LocalSubjectAccessReview => authz_js::LocalSubjectAccessReview {
    metadata => metadata: msg_req,
    spec => spec: msg_req,
    status => status: msg,
});

bridge!(authz_pb::SubjectAccessReviewSpec => authz_js::SubjectAccessReviewSpec {
    extra => extra: extra_authz,
    groups => groups: list,
    non_resource_attributes => non_resource_attributes: msg,
    resource_attributes => resource_attributes: msg,
    uid => uid: s,
    user => user: s,
});

bridge!(authz_pb::SubjectAccessReviewStatus => authz_js::SubjectAccessReviewStatus {
    allowed => allowed: req,
    denied => denied: p,
    evaluation_error => evaluation_error: s,
    reason => reason: s,
});

bridge!(authz_pb::ResourceAttributes => authz_js::ResourceAttributes {
    field_selector => field_selector: msg,
    group => group: s,
    label_selector => label_selector: msg,
    name => name: s,
    namespace => namespace: s,
    resource => resource: s,
    subresource => subresource: s,
    verb => verb: s,
    version => version: s,
});

bridge!(authz_pb::FieldSelectorAttributes => authz_js::FieldSelectorAttributes {
    raw_selector => raw_selector: s,
    requirements => requirements: msgs,
});

bridge!(authz_pb::LabelSelectorAttributes => authz_js::LabelSelectorAttributes {
    raw_selector => raw_selector: s,
    requirements => requirements: msgs,
});

bridge!(authz_pb::NonResourceAttributes => authz_js::NonResourceAttributes {
    path => path: s,
    verb => verb: s,
});

bridge!(authz_pb::SelfSubjectRulesReview => authz_js::SelfSubjectRulesReview {
    metadata => metadata: msg_req,
    spec => spec: msg_req,
    status => status: msg,
});

bridge!(authz_pb::SelfSubjectRulesReviewSpec => authz_js::SelfSubjectRulesReviewSpec {
    namespace => namespace: s,
});

bridge!(authz_pb::SubjectRulesReviewStatus => authz_js::SubjectRulesReviewStatus {
    evaluation_error => evaluation_error: s,
    incomplete => incomplete: req,
    non_resource_rules => non_resource_rules: vec_msgs,
    resource_rules => resource_rules: vec_msgs,
});

bridge!(authz_pb::ResourceRule => authz_js::ResourceRule {
    api_groups => api_groups: list,
    resource_names => resource_names: list,
    resources => resources: list,
    verbs => verbs: vec,
});

bridge!(authz_pb::NonResourceRule => authz_js::NonResourceRule {
    non_resource_ur_ls => non_resource_urls: list,
    verbs => verbs: vec,
});

bridge!(authn_pb::TokenReview => authn_js::TokenReview {
    metadata => metadata: msg_req,
    spec => spec: msg_req,
    status => status: msg,
});

bridge!(authn_pb::TokenReviewSpec => authn_js::TokenReviewSpec {
    audiences => audiences: list,
    token => token: s,
});

bridge!(authn_pb::TokenReviewStatus => authn_js::TokenReviewStatus {
    audiences => audiences: list,
    authenticated => authenticated: p,
    error => error: s,
    user => user: msg,
});

bridge!(authn_pb::UserInfo => authn_js::UserInfo {
    extra => extra: extra_authn,
    groups => groups: list,
    uid => uid: s,
    username => username: s,
});

bridge!(authn_pb::SelfSubjectReview => authn_js::SelfSubjectReview {
    metadata => metadata: msg_req,
    status => status: msg,
});

bridge!(authn_pb::SelfSubjectReviewStatus => authn_js::SelfSubjectReviewStatus {
    user_info => user_info: msg,
});

/// By hand: a request's status is Go's empty one (no token, zero time), which has no JSON
/// form, so a status without a token is left out.
impl Bridge for authn_pb::TokenRequest {
    type Json = authn_js::TokenRequest;
    fn to_json(self) -> Result<Self::Json, BridgeError> {
        let status = self
            .status
            .filter(|s| s.token.as_deref().is_some_and(|t| !t.is_empty()));
        Ok(authn_js::TokenRequest {
            metadata: mode::msg_req::to(self.metadata)?,
            spec: mode::msg_req::to(self.spec)?,
            status: mode::msg::to(status)?,
        })
    }
    fn from_json(j: Self::Json) -> Self {
        Self {
            metadata: mode::msg_req::from(j.metadata),
            spec: mode::msg_req::from(j.spec),
            status: mode::msg::from(j.status),
        }
    }
}

bridge!(authn_pb::TokenRequestSpec => authn_js::TokenRequestSpec {
    audiences => audiences: vec,
    bound_object_ref => bound_object_ref: msg,
    expiration_seconds => expiration_seconds: p,
});

bridge!(authn_pb::TokenRequestStatus => authn_js::TokenRequestStatus {
    expiration_timestamp => expiration_timestamp: time_req,
    token => token: req,
});

bridge!(authn_pb::BoundObjectReference => authn_js::BoundObjectReference {
    api_version => api_version: s,
    kind => kind: s,
    name => name: s,
    u_id => uid: s,
});
