//! Health observations vipd makes itself: the pure state machines and the active probes.
//!
//! Owns: the pure state machines ([`outlier`] for passive ejection, [`counter`] for active
//! rise/fall), the health vocabulary ([`HealthReason`]), the local/remote classification of
//! connect and probe failures ([`fault`]: local faults never count against a backend), one probe of one address ([`probe`],
//! with [`ProbeKind`] and [`ProbeSpec`]). The active checker task that runs the probes and writes
//! verdicts into the per-backend runtime state is control plane: [`crate::control::checker`].
//!
//! Must not: pick backends or decide eligibility ([`crate::balance`] does), touch the table, or
//! log per connection above `debug`. Nothing here imports a module above it: the state
//! machines and the probe depend only on `std`, tokio and the table types.

pub mod counter;
pub mod fault;
pub mod outlier;
pub mod probe;

pub use counter::{ActiveState, RiseFall};
pub use fault::LocalFault;
pub use outlier::{Outlier, OutlierConfig};
pub use probe::{ProbeKind, ProbeSpec};

use serde::Serialize;

/// Why vipd considers a backend unhealthy. Stable label strings for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthReason {
    /// Passive: consecutive connects refused.
    ConnectRefused,
    /// Passive: consecutive connects timed out.
    ConnectTimeout,
    /// Passive: consecutive connects failed otherwise.
    ConnectOther,
    /// Active: the probe's connect was refused.
    ProbeRefused,
    /// Active: the probe did not finish within its timeout.
    ProbeTimeout,
    /// Active: the HTTP probe got a status other than 2xx/3xx.
    ProbeStatus,
    /// Active: any other probe error (reset, malformed response, ...).
    ProbeError,
}

impl HealthReason {
    pub fn as_str(self) -> &'static str {
        match self {
            HealthReason::ConnectRefused => "connect_refused",
            HealthReason::ConnectTimeout => "connect_timeout",
            HealthReason::ConnectOther => "connect_other",
            HealthReason::ProbeRefused => "probe_refused",
            HealthReason::ProbeTimeout => "probe_timeout",
            HealthReason::ProbeStatus => "probe_status",
            HealthReason::ProbeError => "probe_error",
        }
    }

    pub(crate) fn code(self) -> u8 {
        match self {
            HealthReason::ConnectRefused => 1,
            HealthReason::ConnectTimeout => 2,
            HealthReason::ConnectOther => 3,
            HealthReason::ProbeRefused => 4,
            HealthReason::ProbeTimeout => 5,
            HealthReason::ProbeStatus => 6,
            HealthReason::ProbeError => 7,
        }
    }

    pub(crate) fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            1 => HealthReason::ConnectRefused,
            2 => HealthReason::ConnectTimeout,
            3 => HealthReason::ConnectOther,
            4 => HealthReason::ProbeRefused,
            5 => HealthReason::ProbeTimeout,
            6 => HealthReason::ProbeStatus,
            7 => HealthReason::ProbeError,
            _ => return None,
        })
    }
}
