use super::*;
use http::HeaderValue;

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

#[test]
fn the_front_proxy_headers_give_user_groups_and_decoded_extra() {
    let h = headers(&[
        ("X-Remote-User", "alice"),
        ("X-Remote-Group", "devs"),
        ("X-Remote-Group", "system:authenticated"),
        ("X-Remote-Extra-Scopes%2fa", "s1"),
    ]);
    let id = FrontProxy::default().identity(&h).unwrap();
    assert_eq!(id.user, "alice");
    assert_eq!(id.groups, ["devs", "system:authenticated"]);
    assert_eq!(id.extra["scopes/a"], ["s1"]);
}

#[test]
fn a_front_proxy_request_without_a_user_header_is_unauthorized() {
    let h = headers(&[("X-Remote-Group", "devs")]);
    assert!(matches!(
        FrontProxy::default().identity(&h),
        Err(ApiError::Unauthorized(_))
    ));
}

#[test]
fn the_configmap_names_other_headers_and_allowed_names() {
    let data = BTreeMap::from([
        (
            "requestheader-allowed-names".to_owned(),
            r#"["aggregator"]"#.to_owned(),
        ),
        (
            "requestheader-username-headers".to_owned(),
            r#"["X-User"]"#.to_owned(),
        ),
    ]);
    let fp = FrontProxy::from_configmap(&data);
    assert!(fp.allows("aggregator"));
    assert!(!fp.allows("front-proxy-client"));
    let id = fp.identity(&headers(&[("X-User", "bob")])).unwrap();
    assert_eq!(id.user, "bob");
}

#[test]
fn an_empty_allowed_names_list_allows_any_verified_name() {
    let fp = FrontProxy {
        allowed_names: vec![],
        ..Default::default()
    };
    assert!(fp.allows("anything"));
}

#[test]
fn the_bearer_token_comes_from_authorization_or_the_subprotocol() {
    let h = headers(&[("Authorization", "Bearer abc")]);
    assert_eq!(bearer_token(&h).unwrap().as_deref(), Some("abc"));
    let encoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("tok/en+1");
    let h = headers(&[(
        "Sec-WebSocket-Protocol",
        &format!("binary.ironvisor.io, {BEARER_PROTOCOL_PREFIX}{encoded}"),
    )]);
    assert_eq!(bearer_token(&h).unwrap().as_deref(), Some("tok/en+1"));
    assert_eq!(bearer_token(&HeaderMap::new()).unwrap(), None);
}

#[test]
fn hostile_bearer_values_are_refused_not_trusted() {
    let h = headers(&[("Authorization", "Basic dXNlcjpwYXNz")]);
    assert!(matches!(bearer_token(&h), Err(ApiError::Unauthorized(_))));
    let h = headers(&[(
        "Sec-WebSocket-Protocol",
        &format!("{BEARER_PROTOCOL_PREFIX}!!notbase64!!"),
    )]);
    assert!(matches!(bearer_token(&h), Err(ApiError::Unauthorized(_))));
}

#[test]
fn malformed_percent_escapes_stay_literal() {
    assert_eq!(percent_decode("a%2Fb%zz%4"), "a/b%zz%4");
}
