//! Linux capabilities at start: vipd is capability-aware.
//!
//! Owns: [`raise_permitted`], which copies the process's permitted capabilities into its
//! effective set on the main thread before any other thread exists (capabilities are per
//! thread; threads started later inherit them). This is what makes file capabilities set as
//! permitted-only (`setcap cap_net_bind_service,cap_net_admin+p`, the container image's way)
//! work: the kernel grants what the bounding set allows, so `docker run` without
//! `--cap-add NET_ADMIN` still starts, and with it `--manage-addresses` works, all as a non-root
//! user. Under systemd's `AmbientCapabilities=` the effective set is already full and this
//! changes nothing.
//!
//! Must not: gain anything the kernel did not already permit, or fail the start (a capability
//! missing is an error only where a feature needs it, e.g. `--manage-addresses`).

use caps::{CapSet, Capability};

/// The capabilities vipd can use, and what for.
pub const USED: [(Capability, &str); 2] = [
    (
        Capability::CAP_NET_BIND_SERVICE,
        "service ports and VIPs below 1024",
    ),
    (
        Capability::CAP_NET_ADMIN,
        "--manage-addresses (VIP addresses on the loopback interface)",
    ),
];

/// What [`raise_permitted`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Raised {
    /// The effective set now, lowercase without the `cap_` prefix, sorted (`net_admin`, …).
    pub effective: Vec<String>,
}

/// Copies the permitted set into the effective set of the calling thread. Call it on the main
/// thread before starting any other.
pub fn raise_permitted() -> Result<Raised, caps::errors::CapsError> {
    let permitted = caps::read(None, CapSet::Permitted)?;
    let effective = caps::read(None, CapSet::Effective)?;
    if !permitted.is_subset(&effective) {
        caps::set(None, CapSet::Effective, &permitted)?;
    }
    let mut names: Vec<String> = caps::read(None, CapSet::Effective)?
        .iter()
        .map(|c| {
            let name = c.to_string().to_ascii_lowercase();
            name.strip_prefix("cap_").unwrap_or(&name).to_string()
        })
        .collect();
    names.sort();
    Ok(Raised { effective: names })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raising_keeps_effective_equal_to_permitted() {
        // Whatever this test runs with (root: everything; a user: nothing), afterwards the
        // effective set is the permitted one, and raising again changes nothing.
        let first = raise_permitted().unwrap();
        let permitted = caps::read(None, CapSet::Permitted).unwrap();
        assert_eq!(first.effective.len(), permitted.len());
        assert_eq!(raise_permitted().unwrap(), first);
    }
}
