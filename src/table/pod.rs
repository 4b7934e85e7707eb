//! The Marathon pod translation: one pod → one neutral [`Service`]. Pure.

use super::service::Service;
use super::Warning;
use crate::model::Pod;

/// Stub (the seam): the translation comes next.
pub fn pod_service<'a>(_pod: &'a Pod, _warnings: &mut Vec<Warning>) -> Option<Service<'a>> {
    None
}
