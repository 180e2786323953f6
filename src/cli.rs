//! The command line, as clap types. Doc comments here are the `--help` text.

use crate::phase::Selection;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "loisto-image",
    version,
    about = "Build immutable appliance OS images from plain shell phases",
    long_about = "Build immutable appliance OS images from plain shell phases.\n\n\
        An image project is a directory with image.conf (shell-style KEY=value config) and \
        phases/NN-name.sh scripts. `loisto-image build` runs the phases in order with a documented \
        environment, logs each one, and promotes the result to the output directory only when \
        every phase succeeded.",
    after_help = "Examples:\n  loisto-image build\n  loisto-image -C ~/my-image build --from 50\n  \
        loisto-image plan --json\n  loisto-image vm --headless"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args, Clone)]
pub struct Global {
    /// The image project directory [default: the nearest directory with an image.conf, from
    /// the current one upwards].
    #[arg(short = 'C', long = "project", global = true, value_name = "DIR")]
    pub project: Option<PathBuf>,
    /// The config file [default: DIR/image.conf].
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Override a config value (repeatable). An array key takes shell words: --set 'PACKAGES=a b'.
    #[arg(long = "set", global = true, value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Show every phase's output live.
    #[arg(short, long, global = true, conflicts_with = "quiet")]
    pub verbose: bool,
    /// Print only errors.
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write a new image project (config, phases, overlay, partitions, RAUC, CI workflow).
    #[command(
        long_about = "Write a new image project: image.conf, phases/, overlay/, repart.d/, rauc/, sysext/, \
        test-vm.sh, enter-chroot.sh, scripts/install-host-deps.sh, a README, a .gitignore and a GitHub \
        Actions workflow (.github/workflows/image.yml). The files are the ones this version of loisto-image \
        builds its own default image from. Existing files are never overwritten without --force.",
        after_help = "Examples:\n  loisto-image init my-console\n  loisto-image init --distro arch\n  \
        cd my-console && sudo loisto-image build && sudo loisto-image vm"
    )]
    Init(InitArgs),
    /// Run the phases and promote the result to the output directory.
    #[command(
        after_help = "Examples:\n  loisto-image build\n  loisto-image build --from 50-verity\n  \
        loisto-image build --only 40 --only 50 -v\n  loisto-image build --skip 70-disk --dry-run"
    )]
    Build(BuildArgs),
    /// Show the phases that would run, in order, and the environment they get.
    #[command(after_help = "Examples:\n  loisto-image plan\n  loisto-image plan --from 40 --json")]
    Plan(PlanArgs),
    /// Print the resolved config (after --set overrides).
    #[command(after_help = "Examples:\n  loisto-image config\n  loisto-image config --json | jq .PACKAGES")]
    Config(ConfigArgs),
    /// Re-hash the artifacts a build recorded and report missing or changed files.
    #[command(after_help = "Examples:\n  loisto-image verify\n  loisto-image verify /srv/images/output")]
    Verify(VerifyArgs),
    /// List every host tool each phase (and `vm`) needs: found with its version, or missing.
    #[command(after_help = "Examples:\n  loisto-image doctor\n  loisto-image -C ~/my-image doctor")]
    Doctor,
    /// Boot an image in QEMU with UEFI firmware (default: the last build's disk image).
    #[command(
        after_help = "Examples:\n  loisto-image vm\n  loisto-image vm --headless --memory 2G --disk-size 8G\n  \
        loisto-image vm --headless --expect 'LOISTO-HEALTH .* dm=verity' --timeout 180\n  \
        loisto-image vm --state /var/tmp/dev1 --usb output/loisto_0.2.0.raucb --expect 'LOISTO-HEALTH .*slot=B' --reboots 2\n  \
        loisto-image build && loisto-image vm --state /var/tmp/dev1 --refresh --headless\n  \
        loisto-image vm --secure-boot --headless --expect 'LOISTO-HEALTH .*secureboot=on'\n  \
        LOISTO_VM_ACCEL=tcg loisto-image vm output/loisto_0.1.0.img --qemu-arg=-s"
    )]
    Vm(VmArgs),
    /// Open a shell, or run a command, inside the build's rootfs (private mount namespace).
    #[command(
        after_help = "Examples:\n  loisto-image chroot\n  loisto-image chroot -- dpkg -l\n  \
        loisto-image chroot --rootfs /tmp/tree --no-network -- sh -c 'ls /usr/lib/modules'\n\n\
        Changes land in the build's rootfs: `build --from 50` seals them into the image, and the next \
        full build (which bootstraps afresh) discards them."
    )]
    Chroot(ChrootArgs),
    /// Create development signing keys under keys/ and the public rauc/keyring.pem.
    #[command(after_help = "Examples:\n  loisto-image keys\n  loisto-image keys --force")]
    Keys(KeysArgs),
    /// Make a signed RAUC bundle (format=verity) from the last build.
    #[command(after_help = "Examples:\n  loisto-image bundle\n  \
        loisto-image bundle --output update.raucb --cert /run/secrets/release.crt --key /run/secrets/release.key")]
    Bundle(BundleArgs),
    /// Sign a build's UKIs, disk image and RAUC bundle with keys kept elsewhere (offline, second stage).
    #[command(
        long_about = "Sign a build's UKIs, disk image and RAUC bundle with keys kept elsewhere.\n\n\
        The second stage of a release: CI builds without private keys, and this runs on a machine that has \
        them (no rootfs, bootstrap tools or network needed). Both UKIs are signed with sbsign, the boot image \
        is remade with them and written into the disk image's boot partition, the RAUC bundle is made, signed \
        and checked against the keyring inside the OS image, and manifest.json and SHA256SUMS are re-recorded. \
        The OS image and its verity data are not touched. Refuses (exit 2, nothing changed) when a key is \
        missing, a key does not match its certificate or the image's keyring, or the output is signed \
        already (unless --resign).",
        after_help = "Examples:\n  loisto-image sign --keys /media/release-keys ./output\n  \
        loisto-image sign --keys /media/release-keys --resign /srv/releases/loisto_1.2.0"
    )]
    Sign(SignArgs),
    /// Build systemd-sysext images from sysext/NAME.conf against the last build's rootfs.
    #[command(after_help = "Examples:\n  loisto-image sysext\n  loisto-image sysext gpu-mesa -v")]
    Sysext(SysextArgs),
    /// Write a squashfs image (zstd or lz4hc) of a tree, taking unchanged blocks from the last image.
    #[command(
        long_about = "Write a squashfs image (zstd or lz4hc) of a tree, taking unchanged blocks from the last image.\n\n\
        The result is what the kernel mounts and what mksquashfs would write for the same tree, \
        except for layout choices (fragment packing, inode order). With --block-cache, every data and \
        fragment block is remembered by the SHA-256 of its bytes: the next run compresses only blocks \
        whose bytes changed and writes the same image a run without the cache writes. \
        SOURCE_DATE_EPOCH (or --mtime) sets every timestamp.",
        after_help = "Examples:\n  loisto-image squashfs build/rootfs root.squashfs --level 15\n  \
        loisto-image squashfs \"$ROOTFS\" \"$img\" --exclude boot/initrd.img --block-cache \"$CACHE_DIR/squashfs-blocks\""
    )]
    Squashfs(SquashfsArgs),
    /// Write a FAT32 boot partition image (an EFI system partition) holding the given files.
    #[command(
        long_about = "Write a FAT32 boot partition image (an EFI system partition) holding the given files.\n\n\
        Made with mkfs.vfat and mtools under a clock stopped at SOURCE_DATE_EPOCH (or --mtime), \
        directories and files added in path order: the same files give the same bytes. 70-disk makes \
        the boot image with it, and `sign` remakes it the same way with signed UKIs.",
        after_help = "Examples:\n  loisto-image esp boot.vfat --size 128M --volume-id 1dbefe70 \\\n      \
        EFI/BOOT/BOOTX64.EFI=out/slot-a.efi EFI/loisto/slot-b.efi=out/slot-b.efi"
    )]
    Esp(EspArgs),
    /// Write a disk image in the forms people flash: zstd-compressed and a block map (bmaptool).
    #[command(
        long_about = "Write a disk image in the forms people flash: DISK.zst (zstd, with the image size in \
        its frame header) and a block map (the .bmap format of bmaptool) listing the blocks that hold data, \
        each range with its SHA-256, so `bmaptool copy DISK.zst /dev/sdX` writes only those blocks and checks \
        them. 80-flash and `sign` make them this way.",
        after_help = "Examples:\n  loisto-image flash-files output/loisto_0.1.0.img\n  \
        bmaptool copy output/loisto_0.1.0.img.zst /dev/sdX"
    )]
    FlashFiles(FlashFilesArgs),
    /// Remove build results (output, staging, build dir); --cache also the snapshots.
    #[command(after_help = "Examples:\n  loisto-image clean\n  loisto-image clean --cache")]
    Clean(CleanArgs),
    /// Print a shell completion script.
    #[command(
        after_help = "Examples:\n  loisto-image completions bash > /etc/bash_completion.d/loisto-image\n  \
        loisto-image completions zsh > ~/.zfunc/_loisto-image"
    )]
    Completions(CompletionsArgs),
    /// Print the man page (roff).
    #[command(after_help = "Examples:\n  loisto-image man > loisto-image.1 && man ./loisto-image.1")]
    Man,
}

#[derive(Debug, Args, Clone, Default)]
pub struct SelectArgs {
    /// Start at this phase (number `50` or name `50-verity`).
    #[arg(long, value_name = "PHASE")]
    pub from: Option<String>,
    /// Stop after this phase.
    #[arg(long, value_name = "PHASE")]
    pub to: Option<String>,
    /// Run only this phase (repeatable).
    #[arg(long, value_name = "PHASE")]
    pub only: Vec<String>,
    /// Do not run this phase (repeatable).
    #[arg(long, value_name = "PHASE")]
    pub skip: Vec<String>,
}

impl SelectArgs {
    pub fn to_selection(&self) -> Selection {
        Selection {
            from: self.from.clone(),
            to: self.to.clone(),
            only: self.only.clone(),
            skip: self.skip.clone(),
        }
    }
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    #[command(flatten)]
    pub select: SelectArgs,
    /// Run nothing; print the plan.
    #[arg(long)]
    pub dry_run: bool,
    /// Use no cache: neither restore nor store rootfs snapshots (run every selected phase),
    /// and phases get LOISTO_CACHE=off (the squashfs writer then ignores its block cache).
    #[arg(long)]
    pub no_cache: bool,
    /// Build twice into separate directories (the second without the cache) and compare
    /// every artifact byte for byte.
    #[arg(long)]
    pub check_reproducible: bool,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub select: SelectArgs,
    /// For every phase: restored from a snapshot or run, and which input changed.
    #[arg(long)]
    pub explain: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// Print one line that changes when what the cached phases depend on changes (their
    /// scripts, declared inputs and tool versions): a key for CI caches of CACHE_DIR.
    #[arg(long, conflicts_with_all = ["explain", "json"])]
    pub cache_key: bool,
}

#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// Print one JSON object: key -> string or array of strings.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Output directory to check [default: the project's output directory].
    pub output: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct VmArgs {
    /// Disk image to boot [default: the last build's IMAGE_ID_IMAGE_VERSION.img].
    pub image: Option<PathBuf>,
    /// Accelerator: auto (KVM only if a guest really runs on it), kvm or tcg.
    #[arg(long, env = "LOISTO_VM_ACCEL", default_value = "auto", value_parser = ["auto", "kvm", "tcg"])]
    pub accel: String,
    /// Guest memory (QEMU -m syntax: 1024, 2G).
    #[arg(long, default_value = "1G")]
    pub memory: String,
    /// Virtual CPUs.
    #[arg(long, default_value_t = 2)]
    pub cpus: u32,
    /// Boot a copy-on-write disk of this size (e.g. 8G) so first boot can grow into it.
    #[arg(long, value_name = "SIZE")]
    pub disk_size: Option<String>,
    /// Serial console only, no window.
    #[arg(long)]
    pub headless: bool,
    /// Boot the image file itself, keeping what the guest writes (default: a throwaway overlay).
    #[arg(long, conflicts_with = "state")]
    pub persist: bool,
    /// Keep the machine in DIR: its disk (made from IMAGE on first use) and its UEFI variables
    /// carry over to the next run with the same DIR, like a power cycle. Remove DIR to start over.
    #[arg(long, value_name = "DIR")]
    pub state: Option<PathBuf>,
    /// With --state: first write the build's slot A (boot-a, root-a, root-a-verity; only the
    /// blocks that changed) into the machine's disk and make it the slot that boots next, as an
    /// update would; /var, /data, slot B and the UEFI variables stay. The development loop:
    /// edit, build, `vm --state DIR --refresh`, which is a later boot, not a first one.
    #[arg(long, requires = "state")]
    pub refresh: bool,
    /// Plug in a USB stick holding FILE (repeatable), e.g. an update bundle.
    #[arg(long, value_name = "FILE")]
    pub usb: Vec<PathBuf>,
    /// With --expect: how many guest reboots to follow before giving up (each reboot is a new
    /// power-on of the same machine); without it, a reboot or panic ends the run.
    #[arg(long, value_name = "N", default_value_t = 0, requires = "expect")]
    pub reboots: u32,
    /// Extra QEMU argument (repeatable), e.g. --qemu-arg=-s.
    #[arg(long = "qemu-arg", value_name = "ARG", allow_hyphen_values = true)]
    pub qemu_args: Vec<String>,
    /// Exit 0 as soon as a serial console line matches REGEX; non-zero on timeout or power-off.
    #[arg(long, value_name = "REGEX")]
    pub expect: Option<String>,
    /// Seconds to wait for --expect.
    #[arg(long, value_name = "SECS", default_value_t = 300, requires = "expect")]
    pub timeout: u64,
    /// Boot with firmware that enforces UEFI Secure Boot, with the PK, KEK and db certificates
    /// from --keys enrolled: a UKI signed with the db key boots, anything else is refused.
    #[arg(long)]
    pub secure_boot: bool,
    /// Where --secure-boot finds pk.crt, kek.crt and secureboot.crt [default: the project's keys/].
    #[arg(long, value_name = "DIR", requires = "secure_boot")]
    pub keys: Option<PathBuf>,
    /// Start slot A's kernel directly (QEMU -kernel/-initrd/-append from the UKI), skipping the
    /// UEFI firmware: seconds faster for the development loop, but not how a device boots
    /// (no Secure Boot, no UEFI variables or boot entries, no A/B switching).
    #[arg(long, conflicts_with_all = ["secure_boot", "state"])]
    pub direct_kernel: bool,
    /// OVMF firmware code file [default: searched in Debian, Arch, Fedora and Homebrew paths].
    #[arg(long, value_name = "PATH")]
    pub firmware: Option<PathBuf>,
    /// QEMU binary.
    #[arg(long, env = "LOISTO_QEMU", default_value = "qemu-system-x86_64")]
    pub qemu: String,
}

#[derive(Debug, Args)]
pub struct ChrootArgs {
    /// Root tree to enter [default: the project's ROOTFS, e.g. build/rootfs].
    #[arg(long, value_name = "DIR")]
    pub rootfs: Option<PathBuf>,
    /// Do not give the chroot the host's resolv.conf.
    #[arg(long)]
    pub no_network: bool,
    /// Command and arguments, after `--` [default: an interactive bash].
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct KeysArgs {
    /// Replace existing keys.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct BundleArgs {
    /// Bundle file [default: OUTPUT/IMAGE_ID_IMAGE_VERSION.raucb].
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Signing certificate [default: keys/rauc-release.crt]; needs --key.
    #[arg(long, value_name = "PEM", requires = "key")]
    pub cert: Option<PathBuf>,
    /// Signing key [default: keys/rauc-release.key]; needs --cert.
    #[arg(long, value_name = "PEM", requires = "cert")]
    pub key: Option<PathBuf>,
    /// Keyring the new bundle is checked against [default: rauc/keyring.pem].
    #[arg(long, value_name = "PEM")]
    pub keyring: Option<PathBuf>,
    /// Leave out the adaptive update index (block-hash-index) on the OS and verity images.
    #[arg(long)]
    pub no_adaptive: bool,
}

#[derive(Debug, Args)]
pub struct SignArgs {
    /// Directory with secureboot.key/.crt (Secure Boot db) and rauc-release.key/.crt, as
    /// `loisto-image keys` lays them out.
    #[arg(long, value_name = "DIR")]
    pub keys: PathBuf,
    /// The build's output directory (or a copy of it) [default: the project's output].
    pub output: Option<PathBuf>,
    /// The db key instead of DIR/secureboot.key: a PEM file or a PKCS#11 URI
    /// (pkcs11:token=...;object=...;pin-value=...), e.g. a key in an HSM.
    #[arg(long, value_name = "FILE|URI")]
    pub db_key: Option<std::ffi::OsString>,
    /// The update-signing key instead of DIR/rauc-release.key: a PEM file or a PKCS#11 URI.
    #[arg(long, value_name = "FILE|URI")]
    pub release_key: Option<std::ffi::OsString>,
    /// Replace existing signatures (the UKIs are signed again from their unsigned bytes).
    #[arg(long)]
    pub resign: bool,
    /// Leave out the adaptive update index (block-hash-index) in the bundle.
    #[arg(long)]
    pub no_adaptive: bool,
}

#[derive(Debug, Args)]
pub struct SysextArgs {
    /// Extensions to build [default: every sysext/*.conf].
    pub names: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Compression {
    Zstd,
    Lz4hc,
}

#[derive(Debug, Args)]
pub struct SquashfsArgs {
    /// Directory to pack.
    pub source: PathBuf,
    /// Image file to write (replaced only when the new one is complete).
    pub output: PathBuf,
    /// Compressor: zstd (smallest image) or lz4hc (larger, unpacked several times faster at
    /// every read, and written faster).
    #[arg(long, value_enum, default_value_t = Compression::Zstd)]
    pub compression: Compression,
    /// zstd level, 1-22 (with --compression zstd).
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(i32).range(1..=22))]
    pub level: i32,
    /// Data block size in bytes (a power of two from 4096 to 1048576).
    #[arg(long, default_value_t = 131072)]
    pub block_size: u32,
    /// Leave out this path, relative to SOURCE (repeatable).
    #[arg(long, value_name = "PATH")]
    pub exclude: Vec<PathBuf>,
    /// Remember compressed blocks in DIR and take unchanged ones from it.
    #[arg(long, value_name = "DIR")]
    pub block_cache: Option<PathBuf>,
    /// Make root the owner of every entry.
    #[arg(long)]
    pub all_root: bool,
    /// Timestamp for every inode and the superblock [default: the files' own, and now].
    #[arg(long, env = "SOURCE_DATE_EPOCH", value_name = "SECS")]
    pub mtime: Option<u32>,
}

#[derive(Debug, Args)]
pub struct EspArgs {
    /// Image file to write (replaced only when the new one is complete).
    pub output: PathBuf,
    /// PATH_IN_IMAGE=FILE, one per file (e.g. EFI/BOOT/BOOTX64.EFI=slot-a.efi).
    #[arg(value_name = "PATH=FILE")]
    pub files: Vec<String>,
    /// Image size (e.g. 128M); FAT32 needs at least 33M.
    #[arg(long)]
    pub size: String,
    /// FAT volume label.
    #[arg(long, default_value = "BOOT")]
    pub label: String,
    /// FAT volume serial number, 8 hex digits.
    #[arg(long, value_name = "HEX")]
    pub volume_id: String,
    /// Timestamp of every file and directory.
    #[arg(long, env = "SOURCE_DATE_EPOCH", value_name = "SECS")]
    pub mtime: u64,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Where to write the project [default: -C DIR, or the current directory].
    pub dir: Option<PathBuf>,
    /// Overwrite files that exist already.
    #[arg(long)]
    pub force: bool,
    /// The distribution to bootstrap [default: the build host's, decided at build time].
    #[arg(long, value_enum)]
    pub distro: Option<Distro>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Distro {
    Debian,
    Arch,
}

#[derive(Debug, Args)]
pub struct FlashFilesArgs {
    /// The disk image.
    pub disk: PathBuf,
    /// The compressed image [default: DISK.zst].
    #[arg(long, value_name = "FILE")]
    pub zst: Option<PathBuf>,
    /// The block map [default: DISK without .img, plus .bmap].
    #[arg(long, value_name = "FILE")]
    pub bmap: Option<PathBuf>,
    /// zstd level.
    #[arg(long, default_value_t = crate::flash::DEFAULT_LEVEL, value_parser = clap::value_parser!(i32).range(1..=19))]
    pub level: i32,
}

#[derive(Debug, Args)]
pub struct CleanArgs {
    /// Also remove the rootfs snapshots in CACHE_DIR.
    #[arg(long)]
    pub cache: bool,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    pub shell: clap_complete::Shell,
}
