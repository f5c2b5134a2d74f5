#![no_main]
use libfuzzer_sys::fuzz_target;
fuzz_target!(|data: &[u8]| {
    // Parse, check and format arbitrary bytes: must never panic.
    let _ = mythos_compiler::fuzz_entry(data);
});
