//! The .deb packages `cargo xtask package` built (`cargo xtask test` builds them first and names
//! their directory in FLAGPROBE_DEBS): what each holds and what lintian says; the amd64 package
//! installed on this machine, upgraded over a local edit, removed and purged; and the arm64
//! binary run under qemu-user, replaying every shared capture exactly as the amd64 one does.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use tests::{privileged, shared_dir, tool};

/// (amd64, arm64) packages, or None (with a loud skip; under CI a failure) when none were built.
fn debs(test: &str) -> Option<(PathBuf, PathBuf)> {
    let dir = std::env::var_os("FLAGPROBE_DEBS").map(PathBuf::from);
    let find = |arch: &str| {
        let dir = dir.as_ref()?;
        let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name().is_some_and(|n| {
                    n.to_string_lossy().starts_with("flagprobe_") && n.to_string_lossy().ends_with(&format!("_{arch}.deb"))
                })
            })
            .collect();
        assert!(found.len() <= 1, "one {arch} package in {}: {found:?}", dir.display());
        found.pop()
    };
    match (find("amd64"), find("arm64")) {
        (Some(a), Some(b)) => Some((a, b)),
        _ => {
            assert!(std::env::var_os("CI").is_none(), "{test}: no packages in FLAGPROBE_DEBS ({dir:?}): cargo xtask test builds them");
            eprintln!("skipping: {test}: no packages (cargo xtask package, then FLAGPROBE_DEBS=target/debian)");
            None
        }
    }
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    out
}

fn stdout(cmd: &mut Command) -> String {
    String::from_utf8_lossy(&run(cmd).stdout).into_owned()
}

/// Every file a package must hold (dpkg-deb -c's paths, without the leading `.`).
const CONTENTS: [&str; 19] = [
    "/usr/sbin/flagprobe",
    "/usr/lib/systemd/system/flagprobe.service",
    "/usr/share/doc/flagprobe/examples/flagprobe-sensor.conf",
    "/etc/flagprobe/flagprobe.toml",
    "/etc/logrotate.d/flagprobe",
    "/usr/share/man/man8/flagprobe.8.gz",
    "/usr/share/man/man8/flagprobe-run.8.gz",
    "/usr/share/man/man8/flagprobe-replay.8.gz",
    "/usr/share/man/man8/flagprobe-check-config.8.gz",
    "/usr/share/man/man8/flagprobe-sessions.8.gz",
    "/usr/share/bash-completion/completions/flagprobe",
    "/usr/share/zsh/vendor-completions/_flagprobe",
    "/usr/share/fish/vendor_completions.d/flagprobe.fish",
    "/usr/share/flagprobe/grafana/flagprobe-dashboard.json",
    "/usr/share/flagprobe/prometheus/flagprobe-rules.yml",
    "/usr/share/doc/flagprobe/copyright",
    "/usr/share/doc/flagprobe/changelog.Debian.gz",
    "/usr/share/doc/flagprobe/README.md",
    "/usr/share/doc/flagprobe/runbook.md",
];

/// The regular files a package holds (not its directories, which it may share with others).
fn files_of(deb: &Path) -> Vec<String> {
    stdout(Command::new("dpkg-deb").arg("-c").arg(deb))
        .lines()
        .filter(|l| l.starts_with('-'))
        .filter_map(|l| l.split_whitespace().nth(5))
        .map(|p| p.trim_start_matches('.').trim_end_matches('/').to_string())
        .collect()
}

#[test]
fn both_packages_hold_every_file_and_pass_lintian() {
    let Some((amd64, arm64)) = debs("both_packages_hold_every_file_and_pass_lintian") else { return };
    for (deb, arch, machine) in [(&amd64, "amd64", "X86-64"), (&arm64, "arm64", "AArch64")] {
        let files = files_of(deb);
        for want in CONTENTS {
            assert!(files.iter().any(|f| f == want), "{arch}: {want} in the package: {files:#?}");
        }
        let field = |name: &str| stdout(Command::new("dpkg-deb").arg("-f").arg(deb).arg(name)).trim().to_string();
        assert_eq!(field("Architecture"), arch);
        assert_eq!(field("Package"), "flagprobe");
        // Computed from the binary (dpkg-shlibdeps, or for arm64 the ELF's symbol versions).
        let depends = field("Depends");
        assert!(depends.starts_with("libc6 (>= 2."), "{arch}: Depends: {depends}");
        let conffiles = stdout(Command::new("dpkg-deb").arg("--info").arg(deb).arg("conffiles"));
        assert_eq!(conffiles.lines().collect::<Vec<_>>(), ["/etc/flagprobe/flagprobe.toml", "/etc/logrotate.d/flagprobe"]);
        // The binary inside is the architecture's.
        let dir = tempdir(&format!("contents-{arch}"));
        run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&dir));
        let elf = stdout(Command::new("readelf").arg("-h").arg(dir.join("usr/sbin/flagprobe")));
        assert!(elf.contains(machine), "{arch}: {elf}");
        let _ = std::fs::remove_dir_all(&dir);
        if tool("both_packages_pass_lintian", "lintian") {
            let out = Command::new("lintian").arg(deb).output().unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            println!("lintian {arch}:\n{text}");
            assert!(!text.lines().any(|l| l.starts_with("E: ")), "{arch}: lintian errors:\n{text}");
        }
    }
    // Both depend on the same C library version: the arm64 rule agrees with dpkg-shlibdeps.
    let depends = |deb: &Path| stdout(Command::new("dpkg-deb").arg("-f").arg(deb).arg("Depends"));
    assert_eq!(depends(&amd64), depends(&arm64));
}

fn tempdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("fp-package-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn dpkg_status() -> String {
    let out = Command::new("dpkg-query").args(["-W", "-f=${db:Status-Abbrev}${Version}", "flagprobe"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A copy of `deb` with a higher version and its shipped config changed (a comment added), as the
/// next release would be: dpkg must then keep the operator's edited file.
fn next_release(deb: &Path, dir: &Path) -> PathBuf {
    let tree = dir.join("tree");
    run(Command::new("dpkg-deb").arg("-R").arg(deb).arg(&tree));
    let control = tree.join("DEBIAN/control");
    let text = std::fs::read_to_string(&control).unwrap();
    let version = text.lines().find_map(|l| l.strip_prefix("Version: ")).unwrap().to_string();
    std::fs::write(&control, text.replace(&format!("Version: {version}"), &format!("Version: {version}+next1"))).unwrap();
    let conf = tree.join("etc/flagprobe/flagprobe.toml");
    let mut shipped = std::fs::read_to_string(&conf).unwrap();
    shipped.push_str("\n# A comment the next release added.\n");
    std::fs::write(&conf, shipped).unwrap();
    // The conffile's checksum is in DEBIAN/md5sums only for non-conffiles; dpkg computes its own.
    let out = dir.join("next.deb");
    run(Command::new("dpkg-deb").args(["--root-owner-group", "-Zxz", "-b"]).arg(&tree).arg(&out));
    out
}

#[test]
fn the_amd64_package_installs_upgrades_over_an_edit_and_purges_clean() {
    if !privileged("the_amd64_package_installs_upgrades_over_an_edit_and_purges_clean") {
        return;
    }
    let Some((amd64, _)) = debs("the_amd64_package_installs_upgrades_over_an_edit_and_purges_clean") else { return };
    let _ = Command::new("dpkg").args(["-P", "flagprobe"]).output();
    let files = files_of(&amd64);
    let dir = tempdir("install");
    run(Command::new("dpkg").arg("-i").arg(&amd64));
    assert!(dpkg_status().starts_with("ii "), "{}", dpkg_status());

    let version = stdout(Command::new("/usr/sbin/flagprobe").arg("--version"));
    assert_eq!(version.trim(), format!("flagprobe {}", env!("CARGO_PKG_VERSION")));
    for page in ["flagprobe", "flagprobe-run", "flagprobe-replay", "flagprobe-sessions", "flagprobe-check-config"] {
        let found = stdout(Command::new("man").args(["-w", page]));
        assert_eq!(found.trim(), format!("/usr/share/man/man8/{page}.8.gz"));
    }
    // The page renders without a groff warning.
    let page = Command::new("man")
        .args(["--warnings", "-E", "UTF-8", "-l", "/usr/share/man/man8/flagprobe-run.8.gz"])
        .env("MANWIDTH", "80")
        .output()
        .unwrap();
    assert!(
        page.status.success() && String::from_utf8_lossy(&page.stdout).contains("--syslog"),
        "{}",
        String::from_utf8_lossy(&page.stderr)
    );
    run(Command::new("systemd-analyze").args(["verify", "/usr/lib/systemd/system/flagprobe.service"]));
    // Installed, not enabled: Debian's convention until the operator has configured it.
    assert!(!Path::new("/etc/systemd/system/multi-user.target.wants/flagprobe.service").exists(), "enabled on install");
    let bash =
        stdout(Command::new("bash").args(["-c", "source /usr/share/bash-completion/completions/flagprobe && complete -p flagprobe"]));
    assert!(bash.contains("flagprobe"), "{bash}");
    run(Command::new("logrotate").args(["-d", "/etc/logrotate.d/flagprobe"]));
    let check = stdout(Command::new("/usr/sbin/flagprobe").arg("check-config"));
    assert!(check.starts_with("# /etc/flagprobe/flagprobe.toml: valid."), "{check}");

    // The operator edits the config; the next release changes the shipped one too.
    let conf = Path::new("/etc/flagprobe/flagprobe.toml");
    let mut edited = std::fs::read_to_string(conf).unwrap();
    edited.push_str("\n# Site edit.\n[detectors.scan]\nmin-ports = 20\n");
    std::fs::write(conf, &edited).unwrap();
    let next = next_release(&amd64, &dir);
    // What an unattended upgrade answers (apt's Dpkg::Options): keep the local file.
    run(Command::new("dpkg").args(["-i", "--force-confdef", "--force-confold"]).arg(&next));
    assert!(dpkg_status().starts_with("ii ") && dpkg_status().ends_with("+next1"), "{}", dpkg_status());
    assert_eq!(std::fs::read_to_string(conf).unwrap(), edited, "the edit survives the upgrade");
    assert!(std::fs::read_to_string("/etc/flagprobe/flagprobe.toml.dpkg-dist").unwrap().contains("A comment the next release added"));
    let check = stdout(Command::new("/usr/sbin/flagprobe").arg("check-config"));
    assert!(check.contains("min-ports = 20"), "{check}");
    let _ = std::fs::remove_file("/etc/flagprobe/flagprobe.toml.dpkg-dist");

    // What the agent writes while it runs, for the purge to find.
    std::fs::create_dir_all("/var/log/flagprobe").unwrap();
    std::fs::write("/var/log/flagprobe/alerts.jsonl", "{}\n").unwrap();
    std::fs::create_dir_all("/var/lib/flagprobe/evidence").unwrap();

    // Removed: the program and its documentation go, the conffiles stay (Debian policy 10.7.3).
    run(Command::new("dpkg").args(["-r", "flagprobe"]));
    assert!(dpkg_status().starts_with("rc "), "{}", dpkg_status());
    for f in files.iter().filter(|f| !f.starts_with("/etc/")) {
        assert!(!Path::new(f).exists(), "{f} left after dpkg -r");
    }
    assert!(conf.exists() && Path::new("/etc/logrotate.d/flagprobe").exists(), "conffiles kept after dpkg -r");

    // Purged: nothing of the package's, nor what its agent wrote.
    run(Command::new("dpkg").args(["-P", "flagprobe"]));
    assert_eq!(dpkg_status(), "", "no trace in dpkg's database");
    for f in &files {
        assert!(!Path::new(f).exists(), "{f} left after dpkg -P");
    }
    for d in ["/etc/flagprobe", "/var/log/flagprobe", "/var/lib/flagprobe", "/usr/share/flagprobe", "/usr/share/doc/flagprobe"] {
        assert!(!Path::new(d).exists(), "{d} left after dpkg -P");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Every capture under ../shared/pcaps, sorted.
fn shared_captures() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "pcap" || e == "pcapng") {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&shared_dir().join("pcaps"), &mut out);
    out.sort();
    out
}

/// The replay's written outputs (alerts, flows, metrics) for one capture, as one text; `wrapper`
/// runs the binary (qemu-user for arm64).
fn replay_outputs(wrapper: &[&str], binary: &Path, capture: &Path, dir: &Path) -> String {
    let (alerts, flows, metrics) = (dir.join("alerts.jsonl"), dir.join("flows.jsonl"), dir.join("metrics.prom"));
    for f in [&alerts, &flows, &metrics] {
        let _ = std::fs::remove_file(f);
    }
    let mut cmd = Command::new(wrapper.first().map_or(binary.as_os_str(), |w| w.as_ref()));
    cmd.args(wrapper.iter().skip(1));
    if !wrapper.is_empty() {
        cmd.arg(binary);
    }
    let out = cmd
        .arg("replay")
        .arg(capture)
        .args(["--format", "json", "--alerts"])
        .arg(&alerts)
        .arg("--flows-out")
        .arg(&flows)
        .arg("--metrics-out")
        .arg(&metrics)
        .output()
        .unwrap();
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    // The metrics, but for the process's own (start time, build): the traffic's counts.
    let counts: String = read(&metrics).lines().filter(|l| !l.contains("start_time_seconds")).map(|l| format!("{l}\n")).collect();
    format!("exit {:?}\n--- alerts\n{}--- flows\n{}--- metrics\n{counts}", out.status.code(), read(&alerts), read(&flows))
}

#[test]
fn the_arm64_binary_under_qemu_replays_every_shared_capture_as_amd64_does() {
    if !tool("the_arm64_binary_under_qemu", "qemu-aarch64-static") {
        return;
    }
    let Some((amd64, arm64)) = debs("the_arm64_binary_under_qemu_replays_every_shared_capture_as_amd64_does") else { return };
    let dir = tempdir("arm64");
    let (x86, arm) = (dir.join("amd64"), dir.join("arm64"));
    run(Command::new("dpkg-deb").arg("-x").arg(&amd64).arg(&x86));
    run(Command::new("dpkg-deb").arg("-x").arg(&arm64).arg(&arm));
    let qemu = ["qemu-aarch64-static", "-L", "/usr/aarch64-linux-gnu"];
    let x86_bin = x86.join("usr/sbin/flagprobe");
    let arm_bin = arm.join("usr/sbin/flagprobe");
    let arm_cmd = || {
        let mut c = Command::new(qemu[0]);
        c.args(&qemu[1..]).arg(&arm_bin);
        c
    };
    assert_eq!(stdout(arm_cmd().arg("--version")), stdout(Command::new(&x86_bin).arg("--version")));
    let shipped = arm.join("etc/flagprobe/flagprobe.toml");
    let check = |c: &mut Command| stdout(c.arg("check-config").arg(&shipped));
    assert_eq!(check(&mut arm_cmd()), check(&mut Command::new(&x86_bin)), "check-config on the shipped file");

    let captures = shared_captures();
    assert!(captures.len() >= 60, "the shared captures: {}", captures.len());
    let mut alerts = 0;
    for capture in &captures {
        let a = replay_outputs(&[], &x86_bin, capture, &dir);
        let b = replay_outputs(&qemu, &arm_bin, capture, &dir);
        assert_eq!(a, b, "{}: arm64's replay differs from amd64's", capture.display());
        alerts += a.split("--- alerts\n").nth(1).unwrap_or("").split("--- flows").next().unwrap_or("").lines().count();
    }
    println!("{} captures, {alerts} alert lines: the same bytes from arm64 (qemu-user) and amd64", captures.len());
    let _ = std::fs::remove_dir_all(&dir);
}
