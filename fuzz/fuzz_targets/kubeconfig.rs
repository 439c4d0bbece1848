//! cargo-fuzz target `kubeconfig`: see tests/it/fuzz_entry.rs.
#![no_main]

#[path = "../../tests/it/fuzz_entry.rs"]
mod fuzz_entry;

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_entry::kubeconfig(data));
