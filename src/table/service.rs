//! The source-neutral description that `table::build` reads: services, their ports, their
//! endpoints.
//!
//! Owns: the types every source translates into ([`Service`], [`ServicePort`], [`Endpoint`]).
//! Marathon apps reach it through `table::marathon::marathon_service` (networking modes, port
//! declarations, legacy fields, task state and health); pods and Mesos tasks are meant to add
//! one translation each and nothing else.
//!
//! Must not: know where a service came from beyond [`OwnerKind`] and the framework name, do
//! I/O, or own what it can borrow: a service borrows from its source's model (an `Arc<App>`
//! held by the build cache), so a translation allocates one `Vec` of ports and one of
//! endpoints per service, nothing per backend.

use super::options::PortOptions;
use super::{BackendState, Protocol};
use crate::model::Labels;
use std::borrow::Cow;

/// What kind of run spec a service is. JSON: `"app"`, `"pod"`, `"task"` (a frontend's
/// `owner_kind`).
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum OwnerKind {
    /// A Marathon app.
    #[default]
    App,
    /// A Marathon pod (issue 14).
    Pod,
    /// A Mesos task of any framework (issue 15).
    Task,
}

impl OwnerKind {
    /// The JSON and label form: `app`, `pod`, `task`.
    pub fn as_str(self) -> &'static str {
        match self {
            OwnerKind::App => "app",
            OwnerKind::Pod => "pod",
            OwnerKind::Task => "task",
        }
    }
}

/// One service: an app, a pod, or a framework's task group.
#[derive(Debug, Clone)]
pub struct Service<'a> {
    pub kind: OwnerKind,
    /// The owner's id (`/web`): a backend's `app`, the frontends' `app`/`apps`.
    pub id: &'a str,
    /// The framework part of a named VIP's DNS name (`marathon` for Marathon apps and pods).
    pub framework: &'a str,
    /// The usable ports (a port with an unknown protocol was warned about and left out), in
    /// declaration order.
    pub ports: Vec<ServicePort<'a>>,
    /// The endpoints that get backends (tasks in a routable state), in source order.
    pub endpoints: Vec<Endpoint<'a>>,
    /// What was wrong with endpoints that were left out (an unknown task state). The builder
    /// reports them only for a service that has a frontend.
    pub endpoint_warnings: Vec<String>,
}

/// One declared port of a service.
#[derive(Debug, Clone)]
pub struct ServicePort<'a> {
    /// The port's index `{n}` (position among the owner's ports, counting skipped ones).
    pub index: usize,
    pub name: Option<&'a str>,
    pub protocols: &'static [Protocol],
    /// Non-zero service port (marathon-lb style frontend), if any.
    pub service_port: Option<u16>,
    /// The labels VIPs are read from (`VIP_n` keys); `None` for a port without labels. Owned
    /// only where a source has no such map to lend (a Mesos task's legacy `vip_port<i>` label).
    pub vip_labels: Option<Cow<'a, Labels>>,
    /// Typed options, already read in the precedence order.
    pub options: PortOptions,
    /// What was wrong with this port's option labels (each left unset). The builder reports
    /// them only for a port that becomes a frontend.
    pub option_warnings: Vec<String>,
    /// Where each endpoint's address for this port comes from.
    pub address: PortAddress,
}

/// Where an endpoint's backend address for one port comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortAddress {
    /// The endpoint's agent address and `host_ports[k]` (host and bridge networking, and
    /// container networking with a host port).
    AgentPort(usize),
    /// The endpoint's own IP and this port number (container networking, IP per task).
    EndpointIp(u16),
}

/// One running instance of a service (a Marathon task, a pod container, a Mesos task).
#[derive(Debug, Clone)]
pub struct Endpoint<'a> {
    /// The task id: a backend's `task`.
    pub task: &'a str,
    /// The agent's hostname or IP literal, resolved before the build.
    pub agent: Option<&'a str>,
    /// The endpoint's own IP, unparsed (the builder warns when it is not an IP).
    pub ip: Option<&'a str>,
    /// Host ports in slot order ([`PortAddress::AgentPort`] indexes it).
    pub host_ports: Cow<'a, [u16]>,
    pub state: BackendState,
    /// Agent zone (`agentZone` of a pod instance, a Mesos agent's zone); not used yet.
    pub zone: Option<&'a str>,
    /// A dual-stack task's address of its other family (its IPv6 address beside an IPv4 one).
    /// Its backends feed only the VIP side of their own family (IP VIPs of that family, and named
    /// VIPs with `--vip-cidr6`), never a service port or a single-family named VIP, so that a
    /// task is counted once wherever both families meet.
    pub secondary_family: bool,
}
