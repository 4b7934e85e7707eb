//! The file source: `vipd run --apps FILE`, the embedded default.
