//! `cargo xtask demo` in CI: the demo plays every story and each one raises its alert.

use std::process::Command;

#[test]
fn the_demo_plays_every_story_and_raises_its_alerts() {
    if !tests::privileged("the_demo_plays_every_story") || !tests::tool("the_demo", "hping3") {
        return;
    }
    // The demo builds its own labs in another process and floods one of them: it runs alone.
    let _alone = tests::lab::exclusive();
    let out = Command::new(env!("CARGO_BIN_EXE_flagprobe-demo")).arg("--check").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "demo failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    for heading in
        ["Backscatter", "Go away", "Forged resets", "A port scan", "A SYN flood", "Metrics summary", "every story raised its alert"]
    {
        assert!(stdout.contains(heading), "{heading} missing from the demo:\n{stdout}");
    }
    assert!(stdout.contains("bystander, not compromised"), "the backscatter alert is shown in words:\n{stdout}");
}
