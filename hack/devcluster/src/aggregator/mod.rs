//! API aggregation, as kube-apiserver's kube-aggregator does it: `APIService` objects
//! (`apiregistration.k8s.io/v1`) register a group/version served by a Service; the devcluster
//! lists those groups in discovery and proxies every request under `/apis/<group>/<version>`
//! to an endpoint of the Service (resolved from its EndpointSlices, like
//! `--enable-aggregator-routing=true`), after authenticating and authorising the request
//! itself, with the caller's identity in front-proxy headers and the front-proxy client
//! certificate.
//!
//! Owns the APIService model, endpoint resolution, the proxy, the availability check and the
//! front-proxy PKI. Never serves the aggregated resources itself.

pub mod apiservice;
pub mod availability;
pub mod backend_tls;
pub mod discovery;
pub mod endpoints;
pub mod front_proxy;
pub mod proxy;
