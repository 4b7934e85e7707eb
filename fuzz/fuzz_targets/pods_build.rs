//! Target 2: pods, as `GET /v2/pods/::status` (a JSON array of `PodStatus`) and inside the file
//! source's document `{"apps": [...], "pods": [...]}`.
//!
//! Input: the first byte picks the form (even: the status array, odd: the file document); the
//! rest is the document. Properties: parsing never panics; the status array and the same array
//! wrapped as `{"pods": ...}` give the same pods; the build is deterministic and the incremental
//! `BuildCache` agrees with `build`; with unique ids the table does not depend on document order.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vipd::model::{parse_apps_document, pod::parse_pods_status, AppsSnapshot};
use vipd::table::{build, BuildOptions};
use vipd_fuzz::{check_build, ids_unique, resolve, reversed};

fuzz_target!(|data: &[u8]| {
    let Some((&form, body)) = data.split_first() else {
        return;
    };
    let snapshot = if form % 2 == 0 {
        let Ok(parsed) = parse_pods_status(body) else {
            return;
        };
        let mut wrapped = b"{\"pods\":".to_vec();
        wrapped.extend_from_slice(body);
        wrapped.push(b'}');
        let doc = match parse_apps_document(&wrapped) {
            Ok(doc) => doc,
            // One more level of nesting than the array itself.
            Err(e) if e.to_string().contains("recursion limit") => return,
            Err(e) => panic!("a pods array is not a file document: {e}"),
        };
        assert_eq!(doc.pods, parsed.pods, "pods differ between the two forms");
        assert_eq!(
            doc.rejected_pods, parsed.rejected,
            "rejections differ between the two forms"
        );
        assert!(doc.apps.is_empty() && doc.rejected.is_empty());
        AppsSnapshot {
            pods: parsed.pods,
            rejected_pods: parsed.rejected,
            ..AppsSnapshot::default()
        }
    } else {
        let Ok(snapshot) = parse_apps_document(body) else {
            return;
        };
        snapshot
    };
    let opts = BuildOptions::default();
    let resolved = resolve(&snapshot);
    let built = check_build(&snapshot, &resolved, &opts);
    if ids_unique(&snapshot) {
        let other = build(&reversed(&snapshot), &resolved, &opts);
        assert_eq!(other, built, "the table depends on the order of the owners");
    }
});
