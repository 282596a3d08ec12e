//! Data files read back from escrow are decompressed as a stream under a
//! cap: a gzip bomb (200 MiB of zeros, or of empty lines, in a few hundred
//! KB) is refused with an error naming the file and the cap, and reading it
//! never holds more than a line's worth of it. The peak resident memory of
//! the process (Linux VmHWM, reset through /proc/self/clear_refs) measures
//! what the read held; this file has one test, so nothing else runs
//! meanwhile.

use flate2::read::GzDecoder;

use escrow_sync_dynamodb::export::{
    LINE_CAP, count_data_file, read_data_file, read_data_file_capped,
};

/// The peak resident memory (VmHWM) in bytes.
fn peak_rss() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kb: usize = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/self/status");
    kb * 1024
}

/// The current resident memory (VmRSS) in bytes.
fn rss() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kb: usize = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status");
    kb * 1024
}

/// Runs `f`, returning its result and how far the peak resident memory
/// rose above the resident memory before it.
fn peak_of<T>(f: impl FnOnce() -> T) -> (T, usize) {
    // "5" resets the peak resident set size to the current one.
    std::fs::write("/proc/self/clear_refs", "5").expect("reset VmHWM");
    let base = rss();
    let out = f();
    (out, peak_rss().saturating_sub(base))
}

/// A gzip file of at least `total` bytes of `fill`, written directly as
/// one fixed-Huffman deflate block: the byte once, then matches of 258 bytes
/// at distance 1 (13 bits each), so building it costs no compression pass.
fn bomb(fill: u8, total: usize) -> Vec<u8> {
    struct Bits {
        out: Vec<u8>,
        acc: u64,
        n: u32,
    }
    impl Bits {
        /// `n` bits of `v`, least significant first (header fields).
        fn put(&mut self, v: u64, n: u32) {
            self.acc |= v << self.n;
            self.n += n;
            while self.n >= 8 {
                self.out.push(self.acc as u8);
                self.acc >>= 8;
                self.n -= 8;
            }
        }
        /// A Huffman code of `n` bits, most significant first.
        fn code(&mut self, code: u64, n: u32) {
            let reversed = (0..n).fold(0, |r, i| r | (((code >> i) & 1) << (n - 1 - i)));
            self.put(reversed, n);
        }
    }
    let matches = (total - 1).div_ceil(258);
    let len = 1 + 258 * matches;
    let mut bits = Bits { out: vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff], acc: 0, n: 0 };
    bits.put(1, 1); // BFINAL
    bits.put(1, 2); // BTYPE = fixed Huffman
    assert!(fill < 144);
    bits.code(0x30 + u64::from(fill), 8); // the literal
    for _ in 0..matches {
        bits.code(0xc5, 8); // length 258 (code 285)
        bits.code(0, 5); // distance 1
    }
    bits.code(0, 7); // end of block
    bits.put(0, 7); // pad to a byte
    let mut out = bits.out;
    // CRC-32 of the whole, by doubling: the byte, then 258-byte runs.
    let mut crc = flate2::Crc::new();
    crc.update(&[fill]);
    let mut run = flate2::Crc::new();
    run.update(&[fill; 258]);
    let mut k = matches;
    let mut runs = flate2::Crc::new(); // `matches` runs, built bit by bit
    while k > 0 {
        if k & 1 == 1 {
            runs.combine(&run);
        }
        let mut copy = flate2::Crc::new();
        copy.combine(&run);
        run.combine(&copy);
        k >>= 1;
    }
    crc.combine(&runs);
    out.extend_from_slice(&crc.sum().to_le_bytes());
    out.extend_from_slice(&(len as u32).to_le_bytes());
    out
}

#[test]
fn gzip_bombs_are_refused_without_holding_them() {
    const MIB: usize = 1 << 20;
    let zeros = bomb(0, 200 * MIB);
    assert!(zeros.len() < 2 * MIB, "a bomb: {} bytes compressed", zeros.len());
    let name = "s3://escrow-exports/dynamodb/orders/g/data/00000-00000.json.gz";

    // The bomb is a valid gzip file (checked whole on a small one: the same
    // construction), and the measure sees a read that holds 64 MiB of it.
    let mut small = Vec::new();
    std::io::Read::read_to_end(&mut GzDecoder::new(&bomb(0, MIB)[..]), &mut small).unwrap();
    assert!(small.len() >= MIB && small.iter().all(|b| *b == 0));
    let (held, peak) = peak_of(|| {
        let mut held = Vec::new();
        let mut first = std::io::Read::take(GzDecoder::new(&zeros[..]), 64 * MIB as u64);
        std::io::Read::read_to_end(&mut first, &mut held).unwrap();
        held
    });
    assert_eq!(held.len(), 64 * MIB);
    assert!(peak >= 64 * MIB, "held {peak} bytes");
    drop(held);

    // 200 MiB on one line: refused at the line cap (8 MiB) under the
    // default cap (256 MiB), having held about a line.
    let (res, peak) = peak_of(|| read_data_file(&zeros, name));
    let err = res.unwrap_err().to_string();
    assert!(
        err.contains(name) && err.contains(&format!("over the cap of {LINE_CAP} bytes")),
        "{err}"
    );
    assert!(peak < 3 * LINE_CAP as usize, "held {peak} bytes");

    // 200 MiB of empty lines: no line is long, the file is; refused at the
    // cap given (8 MiB) having held next to nothing.
    let newlines = bomb(b'\n', 200 * MIB);
    let cap = 8 * MIB as u64;
    let (res, peak) = peak_of(|| read_data_file_capped(&newlines, name, cap));
    let err = res.unwrap_err().to_string();
    assert!(err.contains("the decompressed file is over the cap of 8388608 bytes"), "{err}");
    assert!(peak < 4 * MIB, "held {peak} bytes");
    let (res, peak) = peak_of(|| count_data_file(&newlines, name, cap));
    assert!(res.unwrap_err().to_string().contains("over the cap of 8388608 bytes"));
    assert!(peak < 4 * MIB, "held {peak} bytes");
}
