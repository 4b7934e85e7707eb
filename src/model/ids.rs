//! Marathon task and instance ids of every era, reduced to a key that matches across them.
//!
//! Owns: the mapping from a task id (`app.<uuid>`, `app.instance-<uuid>._app`,
//! `app.instance-<uuid>._app.<incarnation>`) or an instance id (`app.marathon-<uuid>`,
//! `app.instance-<uuid>`) to an [`InstanceKey`]. Health results and `instance_*` events carry
//! instance ids while tasks carry task ids (../shared/reference/marathon/FACTS.md §2), so they are
//! matched by key, never by
//! string equality.
//!
//! Must not: allocate on the common path beyond the returned key, or guess when no UUID is present
//! (the caller then falls back to comparing the raw ids).

/// What identifies one Marathon instance across the task-id and instance-id spellings: the app
/// part of the id (with `/` already mapped to `_` by Marathon) and the instance UUID.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InstanceKey {
    pub app_part: String,
    pub uuid: String,
}

/// Returns the key for a task id or an instance id, or `None` if the id holds no UUID.
pub fn instance_key(id: &str) -> Option<InstanceKey> {
    let (start, uuid) = find_uuid(id)?;
    // Everything before the UUID, minus its separator and era marker.
    let mut prefix = &id[..start];
    for marker in ["instance-", "marathon-"] {
        if let Some(p) = prefix.strip_suffix(marker) {
            prefix = p;
            break;
        }
    }
    let prefix = prefix
        .strip_suffix('.')
        .or_else(|| prefix.strip_suffix('_'))
        .unwrap_or(prefix);
    Some(InstanceKey {
        app_part: prefix.to_string(),
        uuid: uuid.to_ascii_lowercase(),
    })
}

/// True when a task id and an instance id (or two ids of any era) name the same instance.
pub fn same_instance(a: &str, b: &str) -> bool {
    if a == b {
        return true;
    }
    match (instance_key(a), instance_key(b)) {
        (Some(x), Some(y)) => x == y,
        _ => false,
    }
}

/// Finds the first 8-4-4-4-12 hex UUID in `s` and returns its start offset and text.
fn find_uuid(s: &str) -> Option<(usize, &str)> {
    const LEN: usize = 36;
    let b = s.as_bytes();
    if b.len() < LEN {
        return None;
    }
    'outer: for start in 0..=b.len() - LEN {
        // A UUID starts at a boundary: the id's start or after a separator/marker.
        if start > 0 && b[start - 1].is_ascii_hexdigit() {
            continue;
        }
        for (i, &c) in b[start..start + LEN].iter().enumerate() {
            let ok = match i {
                8 | 13 | 18 | 23 => c == b'-',
                _ => c.is_ascii_hexdigit(),
            };
            if !ok {
                continue 'outer;
            }
        }
        if b.get(start + LEN).is_some_and(|c| c.is_ascii_hexdigit()) {
            continue;
        }
        return Some((start, &s[start..start + LEN]));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const U: &str = "01da9a15-68a7-11e7-a229-e6a514ca0c21";

    #[test]
    fn every_era_maps_to_one_key() {
        let legacy_task = format!("nginx-green.{U}");
        let legacy_instance = format!("nginx-green.marathon-{U}");
        let task_14 = format!("nginx-green.instance-{U}._app");
        let task_19 = format!("nginx-green.instance-{U}._app.3");
        let instance = format!("nginx-green.instance-{U}");
        let k = instance_key(&legacy_task).unwrap();
        assert_eq!(k.app_part, "nginx-green");
        assert_eq!(k.uuid, U);
        for id in [&legacy_instance, &task_14, &task_19, &instance] {
            assert_eq!(instance_key(id).unwrap(), k, "{id}");
        }
        assert!(same_instance(&legacy_task, &legacy_instance));
        assert!(same_instance(&task_19, &instance));
    }

    #[test]
    fn grouped_app_ids_and_legacy_underscore_separator() {
        let k = instance_key(&format!("prod_web_{U}")).unwrap();
        assert_eq!(k.app_part, "prod_web");
        let k2 = instance_key(&format!("prod_web.instance-{U}._app.1")).unwrap();
        assert_eq!(k, k2);
    }

    #[test]
    fn different_apps_or_uuids_differ() {
        let other = "11111111-2222-3333-4444-555555555555";
        assert!(!same_instance(&format!("a.{U}"), &format!("a.{other}")));
        assert!(!same_instance(&format!("a.{U}"), &format!("b.{U}")));
        assert!(instance_key("no-uuid-here").is_none());
        assert!(same_instance("no-uuid-here", "no-uuid-here"));
    }
}
