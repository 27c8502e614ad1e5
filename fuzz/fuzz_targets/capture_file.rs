//! Capture files (`stripwatch::capture::CaptureFile`): compression detection (gzip, zstd, none),
//! the pcap and pcapng readers and the timestamp conversions, on hostile files.
//!
//! The input is written to a temporary file (one per fuzzing process, rewritten every run) and
//! read to the end. Checks: the statistics agree with what the callback saw, and nothing panics,
//! hangs or exhausts memory.

#![no_main]

use libfuzzer_sys::fuzz_target;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::OnceLock;
use stripwatch::capture::CaptureFile;

fn temp_path() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        // /dev/shm keeps the per-run write off the disk when it exists.
        let dir = if std::path::Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        dir.join(format!("stripwatch-fuzz-capture-{}.bin", std::process::id()))
    })
}

fuzz_target!(|data: &[u8]| {
    let path = temp_path();
    std::fs::write(path, data).expect("write the temporary capture");
    let Ok(file) = CaptureFile::open(path.to_str().expect("utf-8 temp path")) else {
        return;
    };
    assert_eq!(file.size(), Some(data.len() as u64));
    let (mut packets, mut bytes) = (0u64, 0u64);
    let result = file.for_each_packet(|p| {
        packets += 1;
        bytes += p.data.len() as u64;
        ControlFlow::Continue(())
    });
    if let Ok(stats) = result {
        assert_eq!(stats.packets, packets);
        assert_eq!(stats.bytes, bytes);
        assert!(stats.snapped <= stats.packets);
    }
});
