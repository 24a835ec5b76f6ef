//! The criu worker helper for this crate's tests and bench (a burrow install uses
//! `burrow-launch --criu-worker`); see `burrow_standby::criu::helper_main`.

fn main() {
    burrow_standby::criu::helper_main(std::env::args_os().skip(1));
}
