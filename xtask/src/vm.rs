//! `cargo xtask vm-test`: the kernel matrix. Boots Debian's own kernels under qemu and runs the
//! kernel-facing tests inside each, so "it loads on 6.1" is known, not hoped.
//!
//! How: a kernel package is downloaded by name from Debian's archive (`apt-get download`) and
//! unpacked; a small initramfs (busybox and the modules the tests need, from the same package)
//! mounts this machine's root file system read-only over virtio-9p, puts tmpfs on the writable
//! places, and `chroot`s into it. The guest therefore runs the very binaries built here (the
//! release agent, the integration-test binary) with this machine's tools (tshark, hping3, scapy),
//! on the guest's kernel. A second 9p share, writable, carries the job script in and the output
//! and exit code out. qemu runs under TCG: KVM is not usable in this VM (it hangs at boot).

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

use crate::{build, setup};

/// The kernels of the matrix when none is named: Debian 12's own 6.1 and the 6.12 LTS line
/// (Debian 13's kernel, also built for Debian 12), the newest package of each line.
const DEFAULT_KERNELS: &[&str] = &["6.1", "6.12"];

/// Modules the initramfs loads itself, to reach the host's root: virtio's PCI transport (built in
/// on 6.12) and 9p. Everything else (veth, clsact's sch_ingress, cls_bpf, bridge) the guest's
/// kernel loads on demand through modprobe from the package's own module tree, as on a Debian
/// system: a kernel whose modules do not autoload is a finding, not something to paper over.
const BOOT_MODULES: &[&str] = &["virtio_pci", "9pnet_virtio", "9p"];

/// The tests that run inside each kernel: everything that loads, verifies or attaches the
/// programs with crafted frames and short stories. The rest (replay in userspace, config,
/// packaging) does not depend on the kernel and runs once, on the host; so do the 51 real
/// captures through `--kernel`, whose cost under TCG is tshark's (about 20 minutes a kernel), not
/// the kernel's: the scenario captures cover `replay --kernel` here.
pub const GUEST_TESTS: &[&str] = &[
    "kernel_load::",
    "kernel_test_run::",
    "replay::kernel_and_userspace_replay_agree",
    "detect_live::spoofed_victims_syn_acks_and_resets_are_backscatter",
    "detect_live::go_away_responder_is_a_storm_reset_cause",
    "flood::a_spoofed_flood_is_counted_never_silent",
    "live_traffic::",
    "sensor::",
    "inline_drop::",
    // Session records and IPFIX from a live agent: the history letters the kernel logs, and the
    // new connection a SYN opens on a closed flow's endpoints.
    "sessions::live_records_of_the_stories_match_replay_and_reach_the_collector",
    // Tunnels through the kernel (replay --kernel), live VXLAN and PPPoE, and a tun device whose
    // frames start at the IP header (the verifier prunes by that setting: its own walk).
    "tunnels::",
];

/// The tests that need systemd as PID 1 (the shipped unit, run as it is): the guest boots the
/// host's own systemd instead of running the job from the initramfs. They run in the newest kernel
/// of the default matrix only; naming them as a filter runs them in every kernel named.
pub const SYSTEMD_TESTS: &[&str] = &["under_systemd::"];

/// Where kernel packages are cached between runs (`FLAGPROBE_VM_CACHE` overrides).
fn cache_dir() -> PathBuf {
    std::env::var_os("FLAGPROBE_VM_CACHE").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/var/cache/flagprobe/vm"))
}

/// The packages the matrix needs on the host.
fn host_tools() -> Result<()> {
    let mut missing = Vec::new();
    for (cmd, package) in [("qemu-system-x86_64", "qemu-system-x86"), ("depmod", "kmod"), ("cpio", "cpio"), ("xz", "xz-utils")] {
        if !setup::have(cmd) {
            missing.push(package);
        }
    }
    if !Path::new("/bin/busybox").exists() || !is_static("/bin/busybox") {
        missing.push("busybox-static");
    }
    setup::apt_install(&missing)
}

fn is_static(path: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("file -L {path} 2>/dev/null | grep -q 'statically linked' || ! ldd {path} >/dev/null 2>&1"))
        .status()
        .is_ok_and(|s| s.success())
}

/// A kernel named on the command line: a line ("6.1", "6.12"), a package name, or a `.deb`.
/// Returns the package's `.deb` in the cache.
fn kernel_deb(name: &str) -> Result<PathBuf> {
    if name.ends_with(".deb") {
        return Ok(PathBuf::from(name));
    }
    let package = if name.starts_with("linux-image-") { name.to_string() } else { newest_package(name)? };
    let cache = cache_dir();
    fs::create_dir_all(&cache)?;
    if let Some(deb) = cached_deb(&cache, &package) {
        return Ok(deb);
    }
    eprintln!("xtask: downloading {package} from Debian's archive");
    let ok = Command::new("apt-get").args(["download", "-q", &package]).current_dir(&cache).status()?.success();
    if !ok {
        // The package lists may be older than the archive: refresh once and try again.
        setup::sh(Command::new("apt-get").args(["update", "-qq"]))?;
        setup::sh(Command::new("apt-get").args(["download", "-q", &package]).current_dir(&cache))?;
    }
    cached_deb(&cache, &package).with_context(|| format!("apt-get download {package} left no .deb in {}", cache.display()))
}

fn cached_deb(cache: &Path, package: &str) -> Option<PathBuf> {
    let prefix = format!("{package}_");
    fs::read_dir(cache)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".deb")))
}

/// The newest `linux-image-*-amd64` package of a kernel line, as Debian names them: `6.1.0-N-amd64`
/// for bookworm's 6.1, `6.12.N+deb12-amd64` for the 6.12 line.
fn newest_package(line: &str) -> Result<String> {
    let pattern = match line {
        "6.1" => r"^linux-image-6\.1\.0-[0-9]+-amd64$".to_string(),
        other => format!(r"^linux-image-{}\.[0-9]+\+deb[0-9]+-amd64$", other.replace('.', r"\.")),
    };
    let search = |pattern: &str| -> Result<Vec<String>> {
        let out = Command::new("apt-cache").args(["search", "--names-only", pattern]).output()?;
        Ok(String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| l.split_whitespace().next()).map(str::to_string).collect())
    };
    let mut found = search(&pattern)?;
    if found.is_empty() {
        setup::sh(Command::new("apt-get").args(["update", "-qq"]))?;
        found = search(&pattern)?;
    }
    let out = Command::new("sh").arg("-c").arg(format!("printf '%s\\n' {} | sort -V | tail -1", found.join(" "))).output()?;
    let newest = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if newest.is_empty() {
        bail!("no Debian kernel package matches {pattern} (is the archive reachable?)");
    }
    Ok(newest)
}

/// An unpacked kernel package: its image and its modules directory (with modules.dep).
struct Kernel {
    release: String,
    image: PathBuf,
    modules: PathBuf,
}

fn unpack(deb: &Path) -> Result<Kernel> {
    let dir = cache_dir().join(deb.file_stem().context("a .deb file name")?);
    if !dir.join("lib/modules").exists() {
        fs::create_dir_all(&dir)?;
        setup::sh(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&dir))?;
    }
    let release = fs::read_dir(dir.join("lib/modules"))?
        .flatten()
        .find_map(|e| e.file_name().to_str().map(str::to_string))
        .context("the package has no lib/modules")?;
    let modules = dir.join("lib/modules").join(&release);
    if !modules.join("modules.dep").exists() {
        setup::sh(Command::new("depmod").arg("-b").arg(&dir).arg(&release))?;
    }
    Ok(Kernel { image: dir.join(format!("boot/vmlinuz-{release}")), release, modules })
}

/// The module files to load, dependencies first, for the wanted names (built-in ones need none).
fn module_closure(kernel: &Kernel) -> Result<Vec<String>> {
    let dep = fs::read_to_string(kernel.modules.join("modules.dep"))?;
    let deps: Vec<(String, Vec<String>)> = dep
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(m, d)| (m.to_string(), d.split_whitespace().map(str::to_string).collect()))
        .collect();
    let name_of = |path: &str| path.rsplit('/').next().unwrap_or(path).split(".ko").next().unwrap_or_default().replace('-', "_");
    let mut order = Vec::new();
    fn visit(path: &str, deps: &[(String, Vec<String>)], order: &mut Vec<String>) {
        if order.iter().any(|p| p == path) {
            return;
        }
        if let Some((_, ds)) = deps.iter().find(|(m, _)| m == path) {
            for d in ds {
                visit(d, deps, order);
            }
        }
        order.push(path.to_string());
    }
    for want in BOOT_MODULES {
        if let Some((path, _)) = deps.iter().find(|(m, _)| name_of(m) == *want) {
            visit(path, &deps, &mut order);
        }
    }
    Ok(order)
}

/// The guest's /init: modules, the host root over 9p, tmpfs where the tests write, then the job.
const INIT: &str = r#"#!/bin/sh
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in $(cat /modules.list); do insmod /$m 2>/dev/null || echo "vm: insmod $m failed"; done
mkdir -p /host
o=trans=virtio,version=9p2000.L,msize=262144
if ! mount -t 9p -o $o,ro,cache=loose hostroot /host || ! mount -t 9p -o $o job /host/mnt; then
  echo "vm: cannot mount the host's file systems"; poweroff -f
fi
mount -t proc proc /host/proc; mount -t sysfs sys /host/sys; mount -t devtmpfs dev /host/dev
mkdir -p /host/dev/pts /host/dev/shm; mount -t devpts devpts /host/dev/pts; mount -t tmpfs tmpfs /host/dev/shm
# The static device nodes of modules not loaded yet (kmod static-nodes, as a Debian boot creates
# them): opening one loads its module on demand. /dev/net/tun is the one the tests open.
mkdir -p /host/dev/net; [ -e /host/dev/net/tun ] || mknod /host/dev/net/tun c 10 200
mount -t bpf bpf /host/sys/fs/bpf; mount -t debugfs debugfs /host/sys/kernel/debug 2>/dev/null
# The checkout and ../shared stay visible where they are, even under a tmpfs mounted below
# (a CI clone may live in /tmp): bound aside first, then back at their paths.
i=0; for p in $(cat /host/mnt/keep); do i=$((i+1)); mkdir -p /keep/$i; mount --bind /host$p /keep/$i; done
for d in tmp run var/tmp var/lib var/log root; do mount -t tmpfs tmpfs /host/$d; done
i=0; for p in $(cat /host/mnt/keep); do i=$((i+1)); mkdir -p /host$p; mount --bind /keep/$i /host$p; done
# The kernel package's modules under /run/kmods (the host may have no /lib/modules to mount on),
# and the kernel's module loader pointed at the host's modprobe, in the chroot, with that root
# (the kernel runs the loader from this initramfs's root).
mkdir -p /host/run/kmods/lib/modules/$(uname -r)
mount -t 9p -o $o,ro modules /host/run/kmods/lib/modules/$(uname -r)
echo /bin/modprobe >/proc/sys/kernel/modprobe
if [ -e /host/mnt/systemd ]; then
  # systemd as PID 1, as on a Debian system: /etc becomes a writable copy (the unit's
  # ConfigurationDirectory, a drop-in), the job's units go in /run/systemd/system, and the job
  # unit powers the guest off when it ends. The kernel's module loader keeps working after the
  # chroot of PID 1 (which moves the root the kernel's helpers see): the same path exists on both
  # sides.
  mkdir /etc.copy; cp -a /host/etc/. /etc.copy/; mount -t tmpfs tmpfs /host/etc; cp -a /etc.copy/. /host/etc/
  mkdir -p /host/run/systemd/system /run/kmods; cp /host/mnt/units/* /host/run/systemd/system/
  cp /bin/modprobe /run/kmods/modprobe
  printf '#!/bin/sh\nexec /sbin/modprobe -d /run/kmods "$@"\n' >/host/run/kmods/modprobe
  chmod +x /run/kmods/modprobe /host/run/kmods/modprobe
  echo /run/kmods/modprobe >/proc/sys/kernel/modprobe
  echo "vm: kernel $(uname -r) up; starting systemd"
  exec chroot /host /lib/systemd/systemd --unit=flagprobe-vmtest.target
fi
echo "vm: kernel $(uname -r) up; running the job"
chroot /host /bin/sh -c 'cd /mnt && exec /bin/sh ./job.sh' >/host/mnt/out.log 2>&1
echo $? >/host/mnt/rc
sync; poweroff -f
"#;

/// The kernel's module loader, run from the initramfs: modprobe of the host, in the chroot.
const MODPROBE: &str = "#!/bin/sh\nexec chroot /host /sbin/modprobe -d /run/kmods \"$@\"\n";

fn initramfs(kernel: &Kernel, out: &Path) -> Result<PathBuf> {
    let root = out.join("initrd");
    let _ = fs::remove_dir_all(&root);
    for d in ["bin", "proc", "sys", "dev", "host", "lib", "keep"] {
        fs::create_dir_all(root.join(d))?;
    }
    fs::copy("/bin/busybox", root.join("bin/busybox"))?;
    for applet in
        ["sh", "mount", "insmod", "mkdir", "cat", "echo", "chroot", "poweroff", "sync", "uname", "[", "cp", "chmod", "printf", "mknod"]
    {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet))?;
    }
    let mut list = Vec::new();
    for (i, module) in module_closure(kernel)?.iter().enumerate() {
        // busybox's insmod reads plain ELF: decompress here (6.12's modules are .ko.xz).
        let target = format!("lib/{i:02}.ko");
        let src = kernel.modules.join(module);
        if module.ends_with(".xz") {
            let out = Command::new("xz").arg("-dc").arg(&src).output()?;
            fs::write(root.join(&target), out.stdout)?;
        } else {
            fs::copy(&src, root.join(&target))?;
        }
        list.push(target);
    }
    fs::write(root.join("modules.list"), list.join("\n"))?;
    let init = root.join("init");
    fs::write(&init, INIT)?;
    let modprobe = root.join("bin/modprobe");
    fs::write(&modprobe, MODPROBE)?;
    setup::sh(Command::new("chmod").arg("+x").arg(&init).arg(&modprobe))?;
    let image = out.join("initrd.gz");
    setup::sh(Command::new("sh").arg("-c").arg(format!(
        "cd {} && find . | cpio -o -H newc 2>/dev/null | gzip -1 >{}",
        root.display(),
        image.display()
    )))?;
    Ok(image)
}

/// What the guest runs, with the host's paths (the guest sees the host's root).
struct Job {
    /// Directories the job reads that must stay visible under the guest's tmpfs mounts.
    keep: Vec<PathBuf>,
    /// Environment for the job.
    env: Vec<(String, String)>,
    /// The shell script's body.
    script: String,
    /// Run the job as a unit of the host's systemd, booted as PID 1 (see [`SYSTEMD_TESTS`]).
    systemd: bool,
}

/// The job as a systemd unit: a oneshot service whose end, either way, powers the guest off, and
/// a target that starts it after the ordinary early boot (sysinit, basic) and nothing else.
const JOB_SERVICE: &str = "[Unit]
Description=flagprobe vm-test job
SuccessAction=poweroff-force
FailureAction=poweroff-force

[Service]
Type=oneshot
TimeoutStartSec=infinity
ExecStart=/bin/sh /mnt/run-job.sh
";
const JOB_TARGET: &str = "[Unit]
Description=flagprobe vm-test
Wants=flagprobe-vmtest.service
AllowIsolate=yes
";
const RUN_JOB: &str = "cd /mnt && /bin/sh ./job.sh >/mnt/out.log 2>&1; echo $? >/mnt/rc; sync\n";

/// Boot `kernel`, run `job`, and return what it printed and whether it exited 0.
fn boot(kernel: &Kernel, job: &Job, out: &Path) -> Result<(String, bool)> {
    let initrd = initramfs(kernel, out)?;
    let share = out.join("share");
    let _ = fs::remove_dir_all(&share);
    fs::create_dir_all(&share)?;
    let mut script = String::from("#!/bin/sh\n");
    for (k, v) in &job.env {
        script.push_str(&format!("export {k}='{v}'\n"));
    }
    script.push_str(&job.script);
    fs::write(share.join("job.sh"), script)?;
    let keep: Vec<String> = job.keep.iter().map(|p| p.display().to_string()).collect();
    fs::write(share.join("keep"), keep.join("\n"))?;
    if job.systemd {
        fs::write(share.join("systemd"), "")?;
        fs::create_dir_all(share.join("units"))?;
        fs::write(share.join("units/flagprobe-vmtest.service"), JOB_SERVICE)?;
        fs::write(share.join("units/flagprobe-vmtest.target"), JOB_TARGET)?;
        fs::write(share.join("run-job.sh"), RUN_JOB)?;
    }
    let console = out.join("console.log");
    // A guest kernel that dies before our init has run (seen once in ~20 boots: an int3 oops in
    // sched_clock_cpu while the kernel patches its own code, a race of multi-threaded TCG) ran no
    // test: boot it once more. A failure after the job started is the tests' and is reported.
    let mut attempt = 0;
    let status = loop {
        attempt += 1;
        let status = Command::new("timeout")
            .arg("1500")
            .arg("qemu-system-x86_64")
            .args(["-machine", "q35", "-accel", "tcg,thread=multi", "-cpu", "max", "-smp", "2", "-m", "2048"])
            .args(["-nographic", "-no-reboot", "-nic", "none"])
            .arg("-kernel")
            .arg(&kernel.image)
            .arg("-initrd")
            .arg(&initrd)
            .args(["-append", "console=ttyS0 panic=-1 quiet loglevel=3"])
            .arg("-virtfs")
            .arg("local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap")
            .arg("-virtfs")
            .arg(format!("local,path={},mount_tag=job,security_model=none", share.display()))
            .arg("-virtfs")
            .arg(format!("local,path={},mount_tag=modules,security_model=none,readonly=on", kernel.modules.display()))
            .stdin(std::process::Stdio::null())
            .stdout(fs::File::create(&console)?)
            .stderr(std::process::Stdio::inherit())
            .status()
            .context("running qemu-system-x86_64")?;
        let started = fs::read_to_string(&console).unwrap_or_default().contains("vm: kernel ");
        if started || attempt == 2 {
            break status;
        }
        eprintln!("xtask: kernel {} died before the job started (console {}); booting it again", kernel.release, console.display());
        let _ = fs::copy(&console, out.join("console-first-boot.log"));
    };
    let printed = fs::read_to_string(share.join("out.log")).unwrap_or_default();
    let rc = fs::read_to_string(share.join("rc")).unwrap_or_default();
    if rc.trim().is_empty() {
        let tail = fs::read_to_string(&console).unwrap_or_default();
        let tail: Vec<&str> = tail.lines().rev().take(15).collect();
        bail!(
            "kernel {}: the guest did not finish (qemu {status}); console {}:\n{}",
            kernel.release,
            console.display(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    Ok((printed, rc.trim() == "0"))
}

/// The integration-test binary that `cargo test` built (the guest runs it as it is).
fn test_binary() -> Result<PathBuf> {
    let out = Command::new("cargo")
        .current_dir(build::workspace_root())
        .args(["test", "-q", "-p", "tests", "--test", "it", "--no-run", "--message-format=json"])
        .env("FLAGPROBE_EBPF_OBJECT", build::ebpf_object())
        .output()
        .context("cargo test --no-run")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let exe = text
        .lines()
        .rev()
        .filter(|l| l.contains("\"executable\":\"") && l.contains("\"name\":\"it\""))
        .find_map(|l| l.split("\"executable\":\"").nth(1)?.split('"').next())
        .context("cargo test --no-run named no `it` binary")?;
    Ok(PathBuf::from(exe))
}

/// One kernel's results: its release and the test runner's output.
pub struct KernelRun {
    pub release: String,
    pub output: String,
    pub passed: bool,
}

/// Boot each kernel (lines like "6.1", package names or `.deb` files; the default matrix when
/// empty) and run the guest tests (`filters`, or [`GUEST_TESTS`] in each and [`SYSTEMD_TESTS`] in
/// the newest) inside it. Filters naming systemd tests run in a second boot, under systemd.
pub fn run(kernels: &[String], filters: &[String]) -> Result<Vec<KernelRun>> {
    setup::all()?;
    host_tools()?;
    build::all(false)?;
    let test = test_binary()?;
    let root = build::workspace_root();
    let shared = std::env::var("FLAGPROBE_SHARED").unwrap_or_else(|_| root.join("../shared").display().to_string());
    let shared = fs::canonicalize(&shared).map(|p| p.display().to_string()).unwrap_or(shared);
    let mut env = vec![
        ("PATH".to_string(), "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string()),
        ("HOME".to_string(), "/root".to_string()),
        ("FLAGPROBE_EBPF_OBJECT".to_string(), build::ebpf_object().display().to_string()),
        ("FLAGPROBE_BIN".to_string(), build::agent_binary(false).display().to_string()),
        ("FLAGPROBE_SHARED".to_string(), shared.clone()),
        // A guest that cannot run a privileged test has failed it: nothing is skipped in there.
        ("FLAGPROBE_REQUIRE_PRIVILEGED".to_string(), "1".to_string()),
    ];
    if std::env::var_os("CI").is_some() {
        env.push(("CI".to_string(), "true".to_string()));
    }
    let job = |filters: &[String], systemd: bool| {
        let quoted: Vec<String> = filters.iter().map(|f| format!("'{f}'")).collect();
        let mut env = env.clone();
        if systemd {
            // The systemd tests install units and mounts: they run only where this is set.
            env.push(("FLAGPROBE_VM_SYSTEMD".to_string(), "1".to_string()));
        }
        Job {
            keep: vec![root.clone(), PathBuf::from(&shared)],
            env,
            script: format!(
                "cd {root}/tests\necho \"kernel $(uname -r)\"\n{test} --test-threads=1 --nocapture {filters}\n",
                root = root.display(),
                test = test.display(),
                filters = quoted.join(" ")
            ),
            systemd,
        }
    };
    let under_systemd = |f: &String| SYSTEMD_TESTS.iter().any(|s| f.starts_with(s));
    let (systemd, plain): (Vec<String>, Vec<String>) = filters.iter().cloned().partition(under_systemd);
    let defaults = filters.is_empty();
    let plain = if defaults { GUEST_TESTS.iter().map(|s| s.to_string()).collect() } else { plain };
    let systemd = if defaults { SYSTEMD_TESTS.iter().map(|s| s.to_string()).collect() } else { systemd };
    let names: Vec<String> = if kernels.is_empty() { DEFAULT_KERNELS.iter().map(|s| s.to_string()).collect() } else { kernels.to_vec() };
    let mut runs = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let kernel = unpack(&kernel_deb(name)?)?;
        let newest = i + 1 == names.len();
        for (filters, under) in [(&plain, false), (&systemd, true)] {
            if filters.is_empty() || (under && defaults && !newest) {
                continue;
            }
            let how = if under { "under systemd" } else { "" };
            eprintln!("xtask: booting {} under qemu (TCG) for {} test filters {how}", kernel.release, filters.len());
            let label = if under { format!("{}-systemd", kernel.release) } else { kernel.release.clone() };
            let out = root.join("target/vm").join(&label);
            fs::create_dir_all(&out)?;
            let (output, passed) = boot(&kernel, &job(filters, under), &out)?;
            runs.push(KernelRun { release: label, output, passed });
        }
    }
    Ok(runs)
}
