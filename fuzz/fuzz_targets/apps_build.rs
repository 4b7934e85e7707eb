//! Target 1: an apps document (`GET /v2/apps?embed=apps.tasks`) through the model and the build.
//!
//! Properties: parsing never panics; a parsed snapshot builds deterministically (two builds equal,
//! as values and JSON), the incremental `BuildCache` agrees with `build`, and when every app id is
//! unique the table does not depend on the order of the apps in the document.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vipd::model::parse_apps_document;
use vipd::table::{build, BuildOptions};
use vipd_fuzz::{check_build, ids_unique, resolve, reversed};

fuzz_target!(|data: &[u8]| {
    let Ok(snapshot) = parse_apps_document(data) else {
        return;
    };
    let opts = BuildOptions::default();
    let resolved = resolve(&snapshot);
    let built = check_build(&snapshot, &resolved, &opts);
    if ids_unique(&snapshot) {
        let other = build(&reversed(&snapshot), &resolved, &opts);
        assert_eq!(other, built, "the table depends on the order of the apps");
    }
});
