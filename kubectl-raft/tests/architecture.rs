//! Dependencies between this crate's modules point one way: no two modules import each other,
//! directly or in a circle (see `raft_testkit::modules` for what counts as an import).

#[test]
fn no_two_modules_import_each_other() {
    raft_testkit::modules::assert_no_import_cycles(env!("CARGO_MANIFEST_DIR"));
}
