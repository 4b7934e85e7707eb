//! Flags of the VIP address manager (`--manage-addresses`, `--address-interface`).

use super::defaults;

/// Flags of the address manager.
#[derive(Debug, Clone, clap::Args)]
pub struct AddressArgs {
    /// Add each VIP address the table needs to --address-interface (and remove it when the VIP
    /// goes away, and on exit). Needs CAP_NET_ADMIN.
    #[arg(long, env = "VIPD_MANAGE_ADDRESSES")]
    pub manage_addresses: bool,
    /// Interface that VIP addresses are added to.
    #[arg(long, env = "VIPD_ADDRESS_INTERFACE", default_value = "lo")]
    pub address_interface: String,
}

impl Default for AddressArgs {
    /// The defaults of the flags.
    fn default() -> Self {
        defaults::<AddressArgs>()
    }
}
