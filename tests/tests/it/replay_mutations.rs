//! A quick, always-on cousin of the cargo-fuzz target (`cargo xtask fuzz`): thousands of seeded
//! mutations of the shared captures — flipped bytes, cut files, spliced garbage — through the whole
//! userspace path. None may panic, and the untouched captures must still read completely.

use tests::shared_dir;

/// xorshift64*: reproducible without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn captures() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for dir in ["pcaps/scenarios", "pcaps/zeek"] {
        for e in std::fs::read_dir(shared_dir().join(dir)).unwrap().flatten() {
            out.push(std::fs::read(e.path()).unwrap());
        }
    }
    out
}

#[test]
fn mutated_captures_never_panic() {
    let seeds = captures();
    assert!(seeds.len() >= 12);
    for s in &seeds {
        assert!(probe::replay::exercise(s) > 0, "an intact capture reads");
    }
    let mut rng = Rng(0x5eed_f1a9_9e0b_e000);
    for round in 0..1500 {
        let mut data = seeds[rng.below(seeds.len())].clone();
        for _ in 0..1 + rng.below(8) {
            match rng.below(4) {
                0 => {
                    let i = rng.below(data.len());
                    data[i] ^= 1 << rng.below(8);
                }
                1 => {
                    let i = rng.below(data.len());
                    data[i] = [0x00, 0xff, 0x7f, 0x80][rng.below(4)];
                }
                2 => data.truncate(rng.below(data.len() + 1)),
                _ => {
                    let i = rng.below(data.len() + 1);
                    let junk: Vec<u8> = (0..rng.below(64)).map(|_| rng.next() as u8).collect();
                    data.splice(i..i, junk);
                }
            }
            if data.is_empty() {
                break;
            }
        }
        let outcome = std::panic::catch_unwind(|| probe::replay::exercise(&data));
        assert!(
            outcome.is_ok(),
            "round {round}: a mutated capture panicked ({} bytes: {:02x?}...)",
            data.len(),
            &data[..data.len().min(64)]
        );
    }
}
