//! The console port's request, parsed and checked before anything is looked up: the method,
//! the path `/v1/namespaces/{ns}/virtualmachines/{name}/{console|vnc}?uid={uid}` and the
//! WebSocket upgrade headers (RFC 6455, subprotocol `binary.ironvisor.io`). Pure.
//!
//! Names are checked against Kubernetes' own rules and percent-encoding is refused, so no
//! value that reaches a path or a libvirt lookup can carry a separator or `..`.

/// The only WebSocket subprotocol the port speaks: binary frames carry raw bytes.
pub const SUBPROTOCOL: &str = "binary.ironvisor.io";

/// Which console of the VM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The serial console (libvirt's console stream).
    Serial,
    /// The graphical display (the VNC socket, RFB protocol).
    Vnc,
}

impl Kind {
    /// The label used in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Serial => "serial",
            Kind::Vnc => "vnc",
        }
    }
}

/// A checked request: which console of which VM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The VM's namespace.
    pub namespace: String,
    /// The VM's name.
    pub name: String,
    /// The VM's `metadata.uid` (the connection is refused when the VM here has another).
    pub uid: String,
    /// Serial or VNC.
    pub kind: Kind,
}

/// A request refused before the upgrade, with the HTTP status it is answered with.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RequestError {
    /// Not a GET.
    #[error("only GET is served here")]
    Method,
    /// The path names nothing this port serves.
    #[error("no such console: {0}")]
    NotFound(String),
    /// The request is malformed or not a WebSocket upgrade this port speaks.
    #[error("bad request: {0}")]
    Bad(&'static str),
}

impl RequestError {
    /// The HTTP status code of the answer.
    pub fn status(&self) -> u16 {
        match self {
            RequestError::Method => 405,
            RequestError::NotFound(_) => 404,
            RequestError::Bad(_) => 400,
        }
    }
}

/// The headers the upgrade needs, as received.
#[derive(Clone, Debug, Default)]
pub struct UpgradeHeaders<'a> {
    /// `Upgrade`.
    pub upgrade: Option<&'a str>,
    /// `Connection`.
    pub connection: Option<&'a str>,
    /// `Sec-WebSocket-Version`.
    pub version: Option<&'a str>,
    /// `Sec-WebSocket-Key`.
    pub key: Option<&'a str>,
    /// Every `Sec-WebSocket-Protocol` header.
    pub protocols: Vec<&'a str>,
}

/// Check the method and the path; the target it names.
pub fn parse_target(method: &str, path: &str) -> Result<Target, RequestError> {
    if method != "GET" {
        return Err(RequestError::Method);
    }
    let not_found = || RequestError::NotFound(printable(path));
    if path.contains('%') || path.contains('#') {
        return Err(not_found());
    }
    let (path_only, query) = path.split_once('?').unwrap_or((path, ""));
    let parts: Vec<&str> = path_only.split('/').collect();
    let ["", "v1", "namespaces", ns, "virtualmachines", name, sub] = parts.as_slice() else {
        return Err(not_found());
    };
    let kind = match *sub {
        "console" => Kind::Serial,
        "vnc" => Kind::Vnc,
        _ => return Err(not_found()),
    };
    if !is_dns_label(ns) || !is_dns_subdomain(name) {
        return Err(not_found());
    }
    let mut uid = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("uid", v)) if uid.is_none() => uid = Some(v),
            Some(("uid", _)) => return Err(RequestError::Bad("uid is given twice")),
            _ => {}
        }
    }
    let uid = uid.ok_or(RequestError::Bad("the query must name the VM's uid"))?;
    if !is_uid(uid) {
        return Err(RequestError::Bad("the uid is malformed"));
    }
    Ok(Target {
        namespace: (*ns).to_owned(),
        name: (*name).to_owned(),
        uid: uid.to_owned(),
        kind,
    })
}

/// Check the upgrade headers; the `Sec-WebSocket-Key` to answer.
pub fn check_upgrade<'a>(h: &UpgradeHeaders<'a>) -> Result<&'a str, RequestError> {
    let has_token = |v: Option<&str>, token: &str| {
        v.is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    };
    if !has_token(h.upgrade, "websocket") || !has_token(h.connection, "upgrade") {
        return Err(RequestError::Bad(
            "this port serves WebSocket upgrades only",
        ));
    }
    if h.version.map(str::trim) != Some("13") {
        return Err(RequestError::Bad("Sec-WebSocket-Version must be 13"));
    }
    let key = h
        .key
        .map(str::trim)
        .filter(|k| k.len() == 24 && k.ends_with("=="))
        .ok_or(RequestError::Bad(
            "Sec-WebSocket-Key is missing or malformed",
        ))?;
    let offered = h
        .protocols
        .iter()
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == SUBPROTOCOL);
    if !offered {
        return Err(RequestError::Bad(
            "the client must offer the subprotocol binary.ironvisor.io",
        ));
    }
    Ok(key)
}

/// A DNS-1123 label (namespaces).
fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A DNS-1123 subdomain (object names): labels joined by dots.
fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// A Kubernetes uid: a UUID, hex digits and dashes.
fn is_uid(s: &str) -> bool {
    (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
}

/// The path as it may appear in an error body: printable ASCII, bounded.
fn printable(path: &str) -> String {
    path.chars()
        .filter(|c| c.is_ascii_graphic())
        .take(200)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "0b5e8c1e-3c1a-4c59-9f3e-6d1c1f0e2a11";

    fn path(rest: &str) -> String {
        format!("/v1/namespaces/team-a/virtualmachines/{rest}")
    }

    #[test]
    fn the_serial_and_vnc_paths_name_their_vm_and_uid() {
        let t = parse_target("GET", &path(&format!("web-1/console?uid={UID}"))).unwrap();
        assert_eq!(
            t,
            Target {
                namespace: "team-a".into(),
                name: "web-1".into(),
                uid: UID.into(),
                kind: Kind::Serial
            }
        );
        let t = parse_target("GET", &path(&format!("web.1/vnc?x=1&uid={UID}"))).unwrap();
        assert_eq!((t.name.as_str(), t.kind), ("web.1", Kind::Vnc));
    }

    #[test]
    fn other_methods_are_refused() {
        let p = path(&format!("web-1/console?uid={UID}"));
        assert_eq!(parse_target("POST", &p), Err(RequestError::Method));
        assert_eq!(RequestError::Method.status(), 405);
    }

    #[test]
    fn traversal_encoding_and_unknown_paths_are_not_found() {
        for p in [
            format!("/v1/namespaces/../virtualmachines/x/console?uid={UID}"),
            path(&format!("../../etc/console?uid={UID}")),
            path(&format!("%2e%2e/console?uid={UID}")),
            path(&format!("web-1/console/extra?uid={UID}")),
            path(&format!("web-1/exec?uid={UID}")),
            path(&format!("Web/console?uid={UID}")),
            path(&format!("web_1/console?uid={UID}")),
            format!("/v1/namespaces/team-a/pods/web-1/console?uid={UID}"),
            format!("//v1/namespaces/team-a/virtualmachines/web-1/console?uid={UID}"),
            "/metrics".to_owned(),
            String::new(),
        ] {
            let err = parse_target("GET", &p).unwrap_err();
            assert_eq!(err.status(), 404, "{p}: {err}");
        }
    }

    #[test]
    fn a_missing_repeated_or_malformed_uid_is_a_bad_request() {
        for q in [
            String::new(),
            "?uid=".into(),
            format!("?uid={UID}&uid={UID}"),
            "?uid=../x".into(),
            "?uid=zz".into(),
        ] {
            let err = parse_target("GET", &path(&format!("web-1/console{q}"))).unwrap_err();
            assert_eq!(err.status(), 400, "{q}: {err}");
        }
    }

    fn headers() -> UpgradeHeaders<'static> {
        UpgradeHeaders {
            upgrade: Some("websocket"),
            connection: Some("keep-alive, Upgrade"),
            version: Some("13"),
            key: Some("dGhlIHNhbXBsZSBub25jZQ=="),
            protocols: vec!["base64url.bearer.authorization.k8s.io.x, binary.ironvisor.io"],
        }
    }

    #[test]
    fn a_websocket_upgrade_offering_the_binary_subprotocol_is_accepted() {
        assert_eq!(check_upgrade(&headers()), Ok("dGhlIHNhbXBsZSBub25jZQ=="));
    }

    #[test]
    fn upgrades_without_websocket_version_13_a_key_or_the_subprotocol_are_refused() {
        type Change = Box<dyn Fn(&mut UpgradeHeaders<'static>)>;
        let cases: Vec<Change> = vec![
            Box::new(|h| h.upgrade = None),
            Box::new(|h| h.upgrade = Some("h2c")),
            Box::new(|h| h.connection = Some("close")),
            Box::new(|h| h.version = Some("8")),
            Box::new(|h| h.key = None),
            Box::new(|h| h.key = Some("short")),
            Box::new(|h| h.protocols = vec!["base64.channel.k8s.io"]),
            Box::new(|h| h.protocols = vec![]),
        ];
        for (i, change) in cases.iter().enumerate() {
            let mut h = headers();
            change(&mut h);
            let err = check_upgrade(&h).unwrap_err();
            assert_eq!(err.status(), 400, "case {i}: {err}");
        }
    }
}
