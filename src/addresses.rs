//! VIP addresses on the loopback interface (`--manage-addresses`), through rtnetlink.
//!
//! Owns: the set of addresses vipd itself added to `--address-interface` (default `lo`), the
//! netlink socket it adds and removes them with, the CAP_NET_ADMIN check, and the clap flags.
//! Each VIP listen IP of the table (frontends with `kind: vip`) is added as a /32 (IPv4) or /128
//! (IPv6) so the data plane can bind it, and removed when the VIP leaves the table and on exit
//! ([`AddressManager::cleanup`], which the daemon calls after SIGTERM/SIGINT).
//!
//! Must not: touch an address it did not add. An address already on the interface when vipd
//! first wants it is recorded as pre-existing and never removed; loopback (127.0.0.0/8, ::1),
//! unspecified and multicast addresses are never managed. It must not shell out to `ip`, panic,
//! or let one failing address stop the others: each failure is logged with the address and the
//! kernel's reason, reported, and retried on the next reconcile.
//!
//! Ordering is the caller's: reconcile addresses before the data plane binds the table's
//! listeners (a VIP listener cannot bind an address that is not local yet). Dropping the manager
//! does not remove anything (removal is async); call [`AddressManager::cleanup`] first.

use crate::table::{FrontendKind, Table};
use futures::TryStreamExt;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::{AddressMessageBuilder, Handle};
use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub use crate::cli::AddressArgs;

/// Linux capability number of CAP_NET_ADMIN (`linux/capability.h`).
const CAP_NET_ADMIN: u32 = 12;

/// Setup errors of the address manager. Per-address failures are [`AddressFailure`]s instead.
#[derive(Debug, thiserror::Error)]
pub enum AddressError {
    #[error(
        "--manage-addresses needs CAP_NET_ADMIN, which this process does not have \
         (run as root, or grant it with `setcap cap_net_admin+ep` or systemd AmbientCapabilities=CAP_NET_ADMIN)"
    )]
    MissingCapability,
    #[error("cannot read this process's capabilities from /proc/self/status: {0}")]
    CapabilityUnknown(String),
    #[error("cannot open a netlink route socket: {0}")]
    Netlink(#[source] std::io::Error),
    #[error("--address-interface {interface:?}: no such interface")]
    InterfaceNotFound { interface: String },
    #[error("--address-interface {interface:?}: lookup failed: {reason}")]
    InterfaceLookup { interface: String, reason: String },
}

/// What a failed operation was doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressOp {
    Add,
    Remove,
    List,
}

impl fmt::Display for AddressOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AddressOp::Add => "add",
            AddressOp::Remove => "remove",
            AddressOp::List => "list",
        })
    }
}

/// One address operation that failed (the address is retried on the next reconcile).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressFailure {
    /// `None` for a failed listing of the interface's addresses.
    pub address: Option<IpAddr>,
    pub op: AddressOp,
    pub reason: String,
}

impl fmt::Display for AddressFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.address {
            Some(a) => write!(f, "{} {}/{}: {}", self.op, a, prefix_len(a), self.reason),
            None => write!(f, "{}: {}", self.op, self.reason),
        }
    }
}

/// The outcome of one [`AddressManager::reconcile`] or [`AddressManager::cleanup`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Added by vipd in this call.
    pub added: Vec<IpAddr>,
    /// Removed by vipd in this call (only ever addresses vipd added).
    pub removed: Vec<IpAddr>,
    /// Wanted, but already on the interface: recorded as pre-existing, never removed.
    pub pre_existing: Vec<IpAddr>,
    pub errors: Vec<AddressFailure>,
}

impl ReconcileReport {
    pub fn is_noop(&self) -> bool {
        self.added.is_empty()
            && self.removed.is_empty()
            && self.pre_existing.is_empty()
            && self.errors.is_empty()
    }
}

/// The host prefix length of an address: 32 or 128.
pub fn prefix_len(ip: IpAddr) -> u8 {
    match ip {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

/// Whether vipd may manage `ip` at all: not loopback (already local on `lo`), not unspecified,
/// not multicast.
pub fn manageable(ip: IpAddr) -> bool {
    !(ip.is_loopback() || ip.is_unspecified() || ip.is_multicast())
}

/// The addresses the table needs on the interface: the listen IPs of its VIP frontends.
pub fn wanted_addresses(table: &Table) -> BTreeSet<IpAddr> {
    table
        .frontends
        .iter()
        .filter(|f| f.kind == FrontendKind::Vip)
        .map(|f| f.listen.ip())
        .filter(|ip| manageable(*ip))
        .collect()
}

/// Parses the `CapEff:` line of `/proc/<pid>/status` and says whether CAP_NET_ADMIN is in it.
pub fn status_has_net_admin(status: &str) -> Result<bool, AddressError> {
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .ok_or_else(|| AddressError::CapabilityUnknown("no CapEff line".into()))?;
    let bits = u64::from_str_radix(line.trim(), 16)
        .map_err(|e| AddressError::CapabilityUnknown(format!("CapEff {:?}: {e}", line.trim())))?;
    Ok(bits & (1u64 << CAP_NET_ADMIN) != 0)
}

/// Fails with [`AddressError::MissingCapability`] unless this process has CAP_NET_ADMIN in its
/// effective set. Called by [`AddressManager::new`]; the daemon may call it earlier to fail
/// before doing anything else.
pub fn check_capability() -> Result<(), AddressError> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| AddressError::CapabilityUnknown(e.to_string()))?;
    if status_has_net_admin(&status)? {
        Ok(())
    } else {
        Err(AddressError::MissingCapability)
    }
}

/// The kernel's errno in a netlink error, if any.
fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.to_io().raw_os_error(),
        _ => None,
    }
}

fn describe(e: &rtnetlink::Error) -> String {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.to_io().to_string(),
        other => other.to_string(),
    }
}

fn host_message(index: u32, ip: IpAddr) -> AddressMessage {
    match ip {
        IpAddr::V4(v4) => AddressMessageBuilder::<Ipv4Addr>::new()
            .index(index)
            .address(v4, 32)
            .build(),
        IpAddr::V6(v6) => AddressMessageBuilder::<Ipv6Addr>::new()
            .index(index)
            .address(v6, 128)
            .build(),
    }
}

/// Adds and removes VIP addresses on one interface, remembering which ones it added.
#[derive(Debug)]
pub struct AddressManager {
    handle: Handle,
    connection: tokio::task::JoinHandle<()>,
    interface: String,
    index: u32,
    /// Added by vipd and (as far as we know) still on the interface.
    added: BTreeSet<IpAddr>,
    /// Wanted, but already there when vipd first wanted it: never removed.
    pre_existing: BTreeSet<IpAddr>,
}

impl AddressManager {
    /// Checks CAP_NET_ADMIN, opens a netlink socket (its task runs on the current tokio
    /// runtime) and looks up `args.address_interface`. Does not look at `manage_addresses`: the
    /// caller creates a manager only when that flag is on.
    pub async fn new(args: &AddressArgs) -> Result<Self, AddressError> {
        check_capability()?;
        let (connection, handle, _) = rtnetlink::new_connection().map_err(AddressError::Netlink)?;
        let connection = tokio::spawn(connection);
        let interface = args.address_interface.clone();
        let found = handle
            .link()
            .get()
            .match_name(interface.clone())
            .execute()
            .try_next()
            .await;
        let index = match found {
            Ok(Some(link)) => link.header.index,
            Ok(None) => {
                connection.abort();
                return Err(AddressError::InterfaceNotFound { interface });
            }
            Err(e) if errno(&e) == Some(libc::ENODEV) => {
                connection.abort();
                return Err(AddressError::InterfaceNotFound { interface });
            }
            Err(e) => {
                connection.abort();
                return Err(AddressError::InterfaceLookup {
                    interface,
                    reason: describe(&e),
                });
            }
        };
        tracing::info!(interface = %interface, index, "managing VIP addresses");
        Ok(AddressManager {
            handle,
            connection,
            interface,
            index,
            added: BTreeSet::new(),
            pre_existing: BTreeSet::new(),
        })
    }

    /// Addresses vipd added and has not removed yet.
    pub fn added(&self) -> &BTreeSet<IpAddr> {
        &self.added
    }

    /// Addresses vipd wanted but found already present (it will never remove them).
    pub fn pre_existing(&self) -> &BTreeSet<IpAddr> {
        &self.pre_existing
    }

    pub fn interface(&self) -> &str {
        &self.interface
    }

    /// Every address currently on the interface (any prefix length).
    async fn present(&self) -> Result<BTreeSet<IpAddr>, rtnetlink::Error> {
        let mut stream = self
            .handle
            .address()
            .get()
            .set_link_index_filter(self.index)
            .execute();
        let mut present = BTreeSet::new();
        while let Some(message) = stream.try_next().await? {
            let mut address = None;
            for attribute in &message.attributes {
                match attribute {
                    // IFA_LOCAL is the interface's own address for IPv4; IFA_ADDRESS otherwise.
                    AddressAttribute::Local(ip) => address = Some(*ip),
                    AddressAttribute::Address(ip) if address.is_none() => address = Some(*ip),
                    _ => {}
                }
            }
            present.extend(address);
        }
        Ok(present)
    }

    async fn add(&self, ip: IpAddr) -> Result<(), rtnetlink::Error> {
        self.handle
            .address()
            .add(self.index, ip, prefix_len(ip))
            .execute()
            .await
    }

    /// Removes exactly the host address vipd added (a same-IP address with another prefix length
    /// is a different address to the kernel and is left alone). Gone already counts as removed.
    async fn remove(&mut self, ip: IpAddr, report: &mut ReconcileReport) {
        let result = self
            .handle
            .address()
            .del(host_message(self.index, ip))
            .execute()
            .await;
        match result {
            Ok(()) => {
                tracing::info!(interface = %self.interface, address = %ip, "removed VIP address");
                self.added.remove(&ip);
                report.removed.push(ip);
            }
            Err(e)
                if matches!(
                    errno(&e),
                    Some(libc::EADDRNOTAVAIL | libc::ENOENT | libc::ESRCH)
                ) =>
            {
                tracing::info!(interface = %self.interface, address = %ip, "VIP address was already gone");
                self.added.remove(&ip);
            }
            Err(e) => {
                let reason = describe(&e);
                tracing::warn!(interface = %self.interface, address = %ip, %reason, "cannot remove VIP address; will retry");
                report.errors.push(AddressFailure {
                    address: Some(ip),
                    op: AddressOp::Remove,
                    reason,
                });
            }
        }
    }

    /// Makes the interface hold exactly the VIP addresses `table` needs, among those vipd
    /// manages. Never panics; one failing address does not stop the others.
    pub async fn reconcile(&mut self, table: &Table) -> ReconcileReport {
        let wanted = wanted_addresses(table);
        let mut report = ReconcileReport::default();
        let present = match self.present().await {
            Ok(present) => Some(present),
            Err(e) => {
                let reason = describe(&e);
                tracing::warn!(interface = %self.interface, %reason, "cannot list addresses");
                report.errors.push(AddressFailure {
                    address: None,
                    op: AddressOp::List,
                    reason,
                });
                None
            }
        };
        for &ip in &wanted {
            let is_present = match &present {
                Some(p) => p.contains(&ip),
                // Listing failed: assume what we believe, and let EEXIST sort out the rest.
                None => self.added.contains(&ip) || self.pre_existing.contains(&ip),
            };
            if is_present {
                if !self.added.contains(&ip) && self.pre_existing.insert(ip) {
                    tracing::info!(interface = %self.interface, address = %ip, "VIP address already present; vipd will not remove it");
                    report.pre_existing.push(ip);
                }
                continue;
            }
            // Missing: new, or removed behind our back (ours or a pre-existing one that vanished;
            // either way the address we add now is ours).
            match self.add(ip).await {
                Ok(()) => {
                    tracing::info!(interface = %self.interface, address = %ip, prefix = prefix_len(ip), "added VIP address");
                    self.pre_existing.remove(&ip);
                    self.added.insert(ip);
                    report.added.push(ip);
                }
                Err(e) if errno(&e) == Some(libc::EEXIST) && !self.added.contains(&ip) => {
                    tracing::info!(interface = %self.interface, address = %ip, "VIP address appeared concurrently; vipd will not remove it");
                    self.pre_existing.insert(ip);
                    report.pre_existing.push(ip);
                }
                Err(e) if errno(&e) == Some(libc::EEXIST) => {}
                Err(e) => {
                    let reason = describe(&e);
                    tracing::warn!(interface = %self.interface, address = %ip, %reason, "cannot add VIP address; will retry");
                    report.errors.push(AddressFailure {
                        address: Some(ip),
                        op: AddressOp::Add,
                        reason,
                    });
                }
            }
        }
        let leaving: Vec<IpAddr> = self.added.difference(&wanted).copied().collect();
        for ip in leaving {
            self.remove(ip, &mut report).await;
        }
        self.pre_existing.retain(|ip| wanted.contains(ip));
        report
    }

    /// Removes every address vipd added (never a pre-existing one). Keeps going past failures;
    /// what could not be removed stays in [`Self::added`] and in the report's errors. Idempotent.
    pub async fn cleanup(&mut self) -> ReconcileReport {
        let mut report = ReconcileReport::default();
        let ours: Vec<IpAddr> = self.added.iter().copied().collect();
        for ip in ours {
            self.remove(ip, &mut report).await;
        }
        self.pre_existing.clear();
        if report.errors.is_empty() {
            tracing::info!(interface = %self.interface, removed = report.removed.len(), "VIP addresses cleaned up");
        } else {
            tracing::warn!(interface = %self.interface, removed = report.removed.len(), failed = report.errors.len(), "VIP address cleanup incomplete");
        }
        report
    }
}

impl Drop for AddressManager {
    fn drop(&mut self) {
        if !self.added.is_empty() {
            tracing::warn!(
                interface = %self.interface,
                left = self.added.len(),
                "address manager dropped without cleanup; vipd's VIP addresses stay on the interface"
            );
        }
        self.connection.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::{Frontend, Protocol};

    fn frontend(kind: FrontendKind, listen: &str) -> Frontend {
        Frontend {
            protocol: Protocol::Tcp,
            listen: listen.parse().unwrap(),
            kind,
            vip_name: None,
            app: "/a".into(),
            owner_kind: crate::table::OwnerKind::App,
            apps: vec!["/a".into()],
            port_index: 0,
            port_name: None,
            options: Default::default(),
            backends: std::sync::Arc::from([]),
        }
    }

    #[test]
    fn wanted_addresses_are_vip_listen_ips_minus_loopback_unspecified_multicast() {
        let table = Table {
            frontends: vec![
                frontend(FrontendKind::ServicePort, "0.0.0.0:10000"),
                frontend(FrontendKind::ServicePort, "10.1.1.1:10001"),
                frontend(FrontendKind::Vip, "11.1.2.3:80"),
                frontend(FrontendKind::Vip, "11.1.2.3:443"),
                frontend(FrontendKind::Vip, "127.0.0.5:80"),
                frontend(FrontendKind::Vip, "[::1]:80"),
                frontend(FrontendKind::Vip, "0.0.0.0:81"),
                frontend(FrontendKind::Vip, "224.0.0.9:520"),
                frontend(FrontendKind::Vip, "[fd01:c::5]:80"),
            ],
        };
        let wanted: Vec<String> = wanted_addresses(&table)
            .into_iter()
            .map(|ip| ip.to_string())
            .collect();
        assert_eq!(wanted, vec!["11.1.2.3", "fd01:c::5"]);
    }

    #[test]
    fn cap_eff_parsing() {
        let with = "Name:\tvipd\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n";
        assert!(status_has_net_admin(with).unwrap());
        let without = "CapEff:\t0000000000000000\n";
        assert!(!status_has_net_admin(without).unwrap());
        // Only bit 12 matters: every other bit set is still "without".
        let others = format!("CapEff:\t{:016x}\n", !(1u64 << 12) & 0x1ff_ffff_ffff);
        assert!(!status_has_net_admin(&others).unwrap());
        assert!(status_has_net_admin("CapEff:\t0000000000001000\n").unwrap());
        assert!(matches!(
            status_has_net_admin("Name: x\n"),
            Err(AddressError::CapabilityUnknown(_))
        ));
        assert!(matches!(
            status_has_net_admin("CapEff:\tzz\n"),
            Err(AddressError::CapabilityUnknown(_))
        ));
    }

    #[test]
    fn missing_capability_message_names_the_capability_and_the_fix() {
        let msg = AddressError::MissingCapability.to_string();
        assert!(
            msg.contains("--manage-addresses needs CAP_NET_ADMIN"),
            "{msg}"
        );
        assert!(
            msg.contains("setcap") && msg.contains("AmbientCapabilities"),
            "{msg}"
        );
    }

    #[test]
    fn failures_display_address_prefix_and_reason() {
        let f = AddressFailure {
            address: Some("fd01:c::5".parse().unwrap()),
            op: AddressOp::Add,
            reason: "Permission denied (os error 13)".into(),
        };
        assert_eq!(
            f.to_string(),
            "add fd01:c::5/128: Permission denied (os error 13)"
        );
    }
}
