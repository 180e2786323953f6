//! End-to-end tests of the runner: the real binary on temporary projects with fixture phases.

mod common;

use common::{TestProject, pid_alive};
use std::time::{Duration, Instant};

#[test]
fn phases_run_in_numeric_order() {
    let p = TestProject::new();
    for (name, _) in [("100-last", 0), ("05-first", 0), ("20-middle", 0)] {
        p.phase(name, "echo \"$PHASE\" >> \"$BUILD_DIR/order\"");
    }
    p.run(&["build"]).ok();
    assert_eq!(p.read("build/order"), "05-first\n20-middle\n100-last\n");
}

#[test]
fn phases_get_the_documented_environment_and_nothing_else() {
    let p = TestProject::with_conf(
        "IMAGE_ID=test\nIMAGE_VERSION=1.0\nSOURCE_DATE_EPOCH=1700000000\nGREETING=\"hello world\"\n\
         PACKAGES=( one \"two words\" 'it'\\''s' )\n",
    );
    p.phase(
        "10-env",
        "env -0 | sort -z | tr '\\0' '\\n' > \"$OUTPUT/env.txt\"\n\
         source \"$LOISTO_ENV\"\n\
         printf '%s|' \"${#PACKAGES[@]}\" \"${PACKAGES[@]}\" > \"$OUTPUT/arrays.txt\"\n\
         pwd > \"$OUTPUT/cwd.txt\"\n\
         if read -r -t 1 line; then echo \"stdin had: $line\"; fi > \"$OUTPUT/stdin.txt\"",
    );
    let out = p
        .cmd(&["build"])
        .env("SECRET_FROM_CALLER", "leak")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let env = p.read("output/env.txt");
    let keys: Vec<&str> = env
        .lines()
        .filter_map(|l| l.split_once('=').map(|kv| kv.0))
        .collect();
    let root = p.path().to_str().unwrap();
    let expect = [
        "BUILD_DIR",
        "CACHE_DIR",
        "GREETING",
        "HOME",
        "IMAGE_ID",
        "IMAGE_VERSION",
        "LOISTO_CACHE",
        "LOISTO_ENV",
        "LOISTO_IMAGE",
        "OUTPUT",
        "PATH",
        "PHASE",
        "PROJECT_DIR",
        "PWD",
        "ROOTFS",
        "SCRIPT_DIR",
        "SHLVL",
        "SOURCE_DATE_EPOCH",
        "TERM",
        "_",
    ];
    assert_eq!(keys, expect, "{env}");
    for line in [
        format!("PROJECT_DIR={root}"),
        format!("SCRIPT_DIR={root}"),
        format!("ROOTFS={root}/build/rootfs"),
        format!("OUTPUT={root}/output.staging"),
        format!("BUILD_DIR={root}/build"),
        format!("CACHE_DIR={root}/cache"),
        "PHASE=10-env".to_string(),
        "LOISTO_CACHE=on".to_string(),
        format!("LOISTO_IMAGE={}", env!("CARGO_BIN_EXE_loisto-image")),
        "SOURCE_DATE_EPOCH=1700000000".to_string(),
        "GREETING=hello world".to_string(),
    ] {
        assert!(env.lines().any(|l| l == line), "missing {line:?} in\n{env}");
    }
    assert_eq!(p.read("output/arrays.txt"), "3|one|two words|it's|");
    assert_eq!(p.read("output/cwd.txt").trim(), root);
    assert_eq!(p.read("output/stdin.txt"), "");
}

#[test]
fn sourcing_loisto_env_keeps_the_runner_paths() {
    let p =
        TestProject::with_conf("IMAGE_ID=t\nIMAGE_VERSION=1\nOUTPUT=out\nROOTFS=tree\nSOURCE_DATE_EPOCH=5\n");
    p.phase("10-env", "before=\"$OUTPUT $ROOTFS\"; source \"$LOISTO_ENV\"; echo \"$before|$OUTPUT $ROOTFS\" > \"$OUTPUT/paths\"");
    p.run(&["build"]).ok();
    let root = p.path().display();
    assert_eq!(
        p.read("out/paths"),
        format!("{root}/out.staging {root}/tree|{root}/out.staging {root}/tree\n")
    );
}

#[test]
fn source_date_epoch_defaults_to_the_last_commit() {
    let p = TestProject::new();
    p.file("image.conf", "IMAGE_ID=test\nIMAGE_VERSION=1.0\n");
    p.phase("10-sde", "echo \"$SOURCE_DATE_EPOCH\" > \"$OUTPUT/sde\"");
    let git = |args: &[&str]| {
        let st = std::process::Command::new("git")
            .args(["-C", p.path().to_str().unwrap()])
            .args(args)
            .env("GIT_COMMITTER_DATE", "1600000000 +0000")
            .env("GIT_AUTHOR_DATE", "1600000000 +0000")
            .output()
            .unwrap();
        assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
    };
    git(&["init", "-q"]);
    git(&["add", "-A"]);
    git(&["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x"]);
    p.run(&["build"]).ok();
    assert_eq!(p.read("output/sde").trim(), "1600000000");
}

#[test]
fn each_phase_has_a_log_with_header_and_interleaved_output() {
    let p = TestProject::new();
    p.phase("10-talk", "echo one; echo two >&2; echo three; echo four >&2");
    p.run(&["build"]).ok();
    let log = p.read("output/logs/10-talk.log");
    assert!(
        log.starts_with("# loisto-image phase 10-talk\n# command: bash "),
        "{log}"
    );
    assert!(log.contains("phases/10-talk.sh\n# cwd: "), "{log}");
    assert!(log.contains("# started: 20"), "{log}");
    assert!(log.contains("one\ntwo\nthree\nfour\n"), "{log}");
    assert!(log.contains("# exit code 0 after "), "{log}");
}

#[test]
fn selection_flags_pick_phases_by_number_or_name() {
    let p = TestProject::new();
    for n in ["10-a", "20-b", "30-c", "40-d"] {
        p.phase(n, "echo \"$PHASE\" >> \"$BUILD_DIR/ran\"");
    }
    let ran = |args: &[&str]| {
        let _ = std::fs::remove_file(p.path().join("build/ran"));
        p.run(args).ok();
        std::fs::read_to_string(p.path().join("build/ran"))
            .unwrap_or_default()
            .replace('\n', " ")
    };
    assert_eq!(ran(&["build", "--from", "20", "--to", "30-c"]), "20-b 30-c ");
    assert_eq!(ran(&["build", "--only", "40", "--only", "10-a"]), "10-a 40-d ");
    assert_eq!(ran(&["build", "--skip", "20-b", "--skip", "30"]), "10-a 40-d ");
    assert_eq!(ran(&["build", "--dry-run"]), "");
    let plan = p.run(&["build", "--dry-run", "--from", "30"]).ok().stdout();
    assert!(
        plan.contains("30-c") && plan.contains("40-d") && !plan.contains("20-b"),
        "{plan}"
    );
    p.run(&["build", "--only", "99"]).fails_exactly(
        2,
        p.path(),
        "error: --only 99: no such phase (phases: 10-a, 20-b, 30-c, 40-d)\n",
    );
    p.run(&["build", "--from", "30", "--to", "10"])
        .fails_with(2, "comes after");
}

#[test]
fn plan_lists_phases_and_environment_as_text_and_json() {
    let p = TestProject::new();
    p.phase("10-a", "true").phase("20-b", "true");
    let text = p.run(&["plan", "--skip", "10"]).ok().stdout();
    assert!(text.contains("  20-b") && !text.contains("10-a"), "{text}");
    assert!(text.contains("IMAGE_ID=test"), "{text}");
    let json: serde_json::Value = serde_json::from_str(&p.run(&["plan", "--json"]).ok().stdout()).unwrap();
    assert_eq!(json["phases"][1]["id"], "20-b");
    assert_eq!(json["environment"]["SOURCE_DATE_EPOCH"], "1700000000");
}

#[test]
fn a_failing_phase_reports_code_time_tail_and_log_and_stops() {
    let p = TestProject::new();
    p.phase("10-ok", "echo fine > \"$OUTPUT/first\"")
        .phase(
            "20-bad",
            "for i in $(seq 1 30); do echo \"line $i\"; done; exit 7",
        )
        .phase("30-never", "touch \"$BUILD_DIR/never\"");
    let r = p.run(&["build"]);
    r.fails_with(1, "phase 20-bad failed with exit code 7");
    let err = r.stderr();
    assert!(
        err.contains("line 11\n") && err.contains("line 30\n") && !err.contains("line 10\n"),
        "{err}"
    );
    assert!(err.contains("output.staging/logs/20-bad.log"), "{err}");
    assert!(!p.path().join("build/never").exists());
    assert!(!p.output().exists(), "a failed build must not create the output");
    assert!(!err.contains("hint:"), "{err}");
}

#[test]
fn a_phase_that_runs_a_missing_command_gets_a_hint_about_tools() {
    let p = TestProject::new();
    p.phase("10-typo", "mksquahsfs rootfs out.img");
    p.run(&["build"]).fails_exactly(
        1,
        p.path(),
        "==> [1/1] 10-typo\n\
         FAILED [1/1] 10-typo ([T])\n\
         \n\
         10-typo failed: exit code 127 after [T]\n\
         last 1 lines of [PROJECT]/output.staging/logs/10-typo.log:\n\
         \x20 | [PROJECT]/phases/10-typo.sh: line 2: mksquahsfs: command not found\n\
         hint: exit code 127: a command was not found. Is it installed, and listed under `# Tools:` in the \
         phase's header (so the build checks for it before anything runs)? `loisto-image doctor` lists them\n\
         error: phase 10-typo failed with exit code 127 after [T]; full log: [PROJECT]/output.staging/logs/10-typo.log\n\
         the last good output in [PROJECT]/output was left as it was\n",
    );
}

#[test]
fn config_errors_name_file_and_line_and_exit_2_before_any_phase() {
    let p = TestProject::new();
    p.phase("10-a", "touch \"$BUILD_DIR/ran\"");
    p.file("image.conf", "IMAGE_ID=test\nIMAGE_VERSION=1.0\nNOW=$(date)\n");
    p.run(&["build"]).fails_exactly(
        2,
        p.path(),
        "error: [PROJECT]/image.conf:3: command substitution `$(...)` is not allowed\n",
    );
    p.file("image.conf", "IMAGE_ID='bad id'\nIMAGE_VERSION=1.0\n");
    p.run(&["build"])
        .fails_with(2, "image.conf:1: IMAGE_ID=\"bad id\" is not allowed");
    p.file("image.conf", "IMAGE_VERSION=1.0\n");
    p.run(&["config"]).fails_with(2, "IMAGE_ID is not set");
    assert!(!p.path().join("build/ran").exists());
}

#[test]
fn malformed_phase_names_and_duplicates_are_errors() {
    let p = TestProject::new();
    p.phase("10-a", "true").file("phases/5-short.sh", "true");
    p.run(&["build"])
        .fails_with(2, "5-short.sh: malformed phase name");
    let p = TestProject::new();
    p.phase("10-a", "true").phase("010-b", "true");
    p.run(&["plan"]).fails_with(2, "share the number 10");
}

#[test]
fn unsafe_rootfs_or_output_is_refused() {
    for (key, value) in [("ROOTFS", "/"), ("OUTPUT", "."), ("ROOTFS", ".."), ("OUTPUT", "")] {
        let p = TestProject::new();
        p.phase("10-a", "true");
        p.file(
            "image.conf",
            &format!("IMAGE_ID=t\nIMAGE_VERSION=1\n{key}={value}\n"),
        );
        p.run(&["build"]).fails_with(2, &format!("{key} resolves to"));
    }
}

#[test]
fn failed_build_keeps_the_last_good_output() {
    let p = TestProject::new();
    p.phase(
        "10-art",
        "echo \"$MARK\" > \"$OUTPUT/artifact\"; [ \"$MARK\" != bad ]",
    );
    p.run(&["build", "--set", "MARK=good"]).ok();
    p.run(&["build", "--set", "MARK=bad"])
        .fails_with(1, "phase 10-art failed");
    assert_eq!(p.read("output/artifact"), "good\n");
    assert_eq!(p.read("output.staging/artifact"), "bad\n");
    p.run(&["build", "--set", "MARK=new"]).ok();
    assert_eq!(p.read("output/artifact"), "new\n");
    assert!(!p.path().join("output.staging").exists());
}

#[test]
fn partial_builds_see_earlier_artifacts() {
    let p = TestProject::new();
    p.phase("10-make", "echo base > \"$OUTPUT/base\"");
    p.phase("20-use", "cp \"$OUTPUT/base\" \"$OUTPUT/derived\"");
    p.run(&["build"]).ok();
    std::fs::remove_file(p.path().join("output/derived")).unwrap();
    p.run(&["build", "--from", "20"]).ok();
    assert_eq!(p.read("output/derived"), "base\n");
}

#[test]
fn manifest_records_artifacts_and_verify_catches_a_flipped_byte() {
    let p = TestProject::new();
    p.phase(
        "10-art",
        "head -c 4096 /dev/zero > \"$OUTPUT/disk.img\"\n\
         mkdir -p \"$OUTPUT/sub\"\n\
         echo x > \"$OUTPUT/sub/f\"",
    );
    p.run(&["build"]).ok();
    let m: serde_json::Value = serde_json::from_str(&p.read("output/manifest.json")).unwrap();
    assert_eq!(m["artifacts"][0]["path"], "disk.img");
    assert_eq!(m["artifacts"][0]["size"], 4096);
    assert_eq!(m["artifacts"][1]["path"], "sub/f");
    assert_eq!(m["phases"][0]["id"], "10-art");
    assert_eq!(m["phases"][0]["exit_code"], 0);
    assert_eq!(m["config_digest"].as_str().unwrap().len(), 64);
    assert_eq!(m["tool_version"], env!("CARGO_PKG_VERSION"));
    p.run(&["verify"]).ok();

    let img = p.path().join("output/disk.img");
    let mut bytes = std::fs::read(&img).unwrap();
    bytes[1000] ^= 0x01;
    std::fs::write(&img, bytes).unwrap();
    let r = p.run(&["verify"]);
    assert_eq!(r.code(), 1);
    r.stdout_has("changed  disk.img  (sha256");
    std::fs::remove_file(p.path().join("output/sub/f")).unwrap();
    assert!(
        p.run(&["verify", p.output().to_str().unwrap()])
            .stdout()
            .contains("missing  sub/f")
    );
}

#[test]
fn a_second_build_on_the_same_output_fails_at_once() {
    let p = TestProject::new();
    p.phase("10-slow", "touch \"$BUILD_DIR/started\"; sleep 30");
    let mut first = p
        .cmd(&["build", "-q"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for(&p.path().join("build/started"));
    let t = Instant::now();
    p.run(&["build"]).fails_with(2, "another build (pid ");
    assert!(t.elapsed() < Duration::from_secs(5));
    unsafe { libc::kill(first.id() as i32, libc::SIGTERM) };
    assert_eq!(first.wait().unwrap().code(), Some(130));
}

#[test]
fn ctrl_c_stops_the_whole_phase_group_and_exits_130() {
    let p = TestProject::new();
    p.phase(
        "10-spawn",
        "sleep 300 & echo $! > \"$BUILD_DIR/pids\"\n\
         bash -c 'sleep 300' & echo $! >> \"$BUILD_DIR/pids\"\n\
         echo $$ >> \"$BUILD_DIR/pids\"\n\
         sleep 300",
    );
    let (mut child, pids) = build_recording_pids(&p);
    assert_eq!(pids.len(), 3);
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    std::thread::sleep(Duration::from_millis(200));
    for pid in pids {
        assert!(!pid_alive(pid), "process {pid} outlived the interrupted build");
    }
    assert!(!p.output().exists());
}

#[test]
fn background_processes_do_not_outlive_their_phase() {
    let p = TestProject::new();
    p.phase("10-leak", "sleep 300 & echo $! > \"$BUILD_DIR/pid\"");
    p.run(&["build"]).ok();
    let pid: i32 = p.read("build/pid").trim().parse().unwrap();
    // SIGKILL is sent before the build returns; give a loaded machine a moment to deliver it.
    let until = std::time::Instant::now() + Duration::from_secs(3);
    while pid_alive(pid) && std::time::Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!pid_alive(pid));
}

#[test]
fn plain_output_has_no_escape_codes_and_github_gets_groups() {
    let p = TestProject::new();
    p.phase("10-a", "echo inside");
    let plain = p.run(&["build"]).ok().stderr();
    assert!(!plain.contains('\x1b'), "{plain:?}");
    assert!(
        plain.contains("==> [1/1] 10-a") && plain.contains("ok [1/1] 10-a"),
        "{plain}"
    );
    assert!(plain.contains("phase") && plain.contains("total"), "{plain}");
    let gh = p.cmd(&["build"]).env("GITHUB_ACTIONS", "true").output().unwrap();
    let gh = String::from_utf8_lossy(&gh.stderr);
    assert!(gh.contains("::group::[1/1] 10-a\ninside\n::endgroup::"), "{gh}");
    let quiet = p.run(&["build", "-q"]).ok().stderr();
    assert_eq!(quiet, "");
}

#[test]
fn config_prints_the_resolved_values_with_overrides() {
    let p = TestProject::with_conf("IMAGE_ID=test\nIMAGE_VERSION=1.0\nP=(a b)\nX=\"$IMAGE_ID-x\"\n");
    let json: serde_json::Value =
        serde_json::from_str(&p.run(&["config", "--json", "--set", "P=c 'd e'"]).ok().stdout()).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"IMAGE_ID": "test", "IMAGE_VERSION": "1.0", "P": ["c", "d e"], "X": "test-x"})
    );
    let text = p.run(&["config"]).ok().stdout();
    assert_eq!(
        text,
        "IMAGE_ID='test'\nIMAGE_VERSION='1.0'\nP=(\n    'a'\n    'b'\n)\nX='test-x'\n"
    );
    // Global options work after the subcommand too.
    let other = tempfile::tempdir().unwrap();
    let r = common::Run(
        std::process::Command::new(common::BIN)
            .current_dir(other.path())
            .args(["config", "-C", p.path().to_str().unwrap(), "--json"])
            .output()
            .unwrap(),
    );
    assert!(r.ok().stdout().contains("\"IMAGE_ID\": \"test\""));
}

#[test]
fn help_completions_and_man_page_come_from_the_cli_definition() {
    let p = TestProject::new();
    for sub in ["build", "plan", "config", "verify", "completions", "man"] {
        let help = p.run(&[sub, "--help"]).ok().stdout();
        assert!(
            help.contains("Examples:"),
            "{sub} --help has no examples:\n{help}"
        );
    }
    for shell in ["bash", "zsh", "fish"] {
        let out = p.run(&["completions", shell]).ok().stdout();
        assert!(out.contains("loisto-image") && out.contains("dry-run"), "{shell}");
    }
    let man = p.run(&["man"]).ok().stdout();
    assert!(
        man.starts_with(".ie") || man.contains(".TH loisto-image"),
        "{}",
        &man[..200.min(man.len())]
    );
    assert!(man.contains("LOISTO-IMAGE BUILD"));
    p.run(&["frobnicate"]).fails_with(2, "unrecognized subcommand");
}

/// Starts `build` and waits until its phase has written its process ids to build/pids.
fn build_recording_pids(p: &TestProject) -> (std::process::Child, Vec<i32>) {
    let child = p
        .cmd(&["build"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for(&p.path().join("build/pids"));
    std::thread::sleep(Duration::from_millis(300));
    let pids = p.read("build/pids").lines().map(|l| l.parse().unwrap()).collect();
    (child, pids)
}

fn wait_for(path: &std::path::Path) {
    let t = Instant::now();
    while !path.exists() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_missing_host_tool_stops_the_build_before_any_phase_naming_tool_and_phase() {
    let p = TestProject::new();
    p.phase("10-first", "touch \"$BUILD_DIR/ran\"");
    p.file(
        "phases/20-seal.sh",
        "# Seals things.\n# Tools: sh surely-not-installed-tool|neither-this-one optional-tool-xyz?\nexit 0\n",
    );
    p.run(&["build"]).fails_with(
        1,
        "phase 20-seal needs `surely-not-installed-tool|neither-this-one`",
    );
    assert!(!p.path().join("build/ran").exists());
    let doctor = p.run(&["doctor"]);
    assert_eq!(doctor.code(), 1);
    let out = doctor.stdout();
    assert!(
        out.contains("surely-not-installed-tool|neither-this-one  MISSING"),
        "{out}"
    );
    assert!(
        out.contains("optional-tool-xyz?") && out.contains("not installed (optional)"),
        "{out}"
    );
    assert!(out.contains("ok  /"), "{out}");
}

#[test]
fn an_unchanged_build_is_skipped_only_when_every_phase_declares_its_inputs() {
    let p = TestProject::new();
    // Written whole: `phase` would put `set -euo pipefail` above the header comment.
    let declares_mark = "# Inputs: MARK\necho \"$MARK\" > \"$OUTPUT/a\"\n";
    p.file("phases/10-a.sh", declares_mark);
    p.run(&["build", "--set", "MARK=1"]).ok();
    assert!(
        p.run(&["build", "--set", "MARK=1"])
            .ok()
            .stderr()
            .contains("up to date")
    );
    assert!(
        !p.run(&["build", "--set", "MARK=2"])
            .ok()
            .stderr()
            .contains("up to date")
    );
    assert_eq!(p.read("output/a"), "2\n");
    // A phase without an Inputs line may read anything, so it always runs.
    p.file("phases/20-b.sh", "echo b > \"$OUTPUT/b\"\n");
    p.run(&["build", "--set", "MARK=2"]).ok();
    assert!(
        !p.run(&["build", "--set", "MARK=2"])
            .ok()
            .stderr()
            .contains("up to date")
    );
}

/// The phase cache with fake phases: a rebuild resyncs the rootfs to the snapshot instead of
/// extracting it, the next one takes the changed files from the hot set, and `clean` removes a
/// rootfs kept outside the build directory together with its stamp and hot set.
#[test]
fn cached_rebuilds_resync_the_rootfs_and_clean_takes_the_stamp_along() {
    let p = TestProject::with_conf("IMAGE_ID=t\nIMAGE_VERSION=1\nSOURCE_DATE_EPOCH=1\nROOTFS=tree\n");
    p.file(
        "phases/10-base.sh",
        "#!/bin/bash\n# Inputs: none\n# Cache: snapshot\nset -eu\nmkdir -p \"$ROOTFS/etc\" \"$ROOTFS/usr\"\n\
         echo base > \"$ROOTFS/etc/a\"\necho usr > \"$ROOTFS/usr/b\"\n",
    );
    // Fails unless it starts from exactly the snapshot, then changes it like an overlay would.
    p.file(
        "phases/20-edit.sh",
        "#!/bin/bash\nset -eu\ntest \"$(cat \"$ROOTFS/etc/a\")\" = base\ntest ! -e \"$ROOTFS/etc/new\"\n\
         echo edited > \"$ROOTFS/etc/a\"\necho new > \"$ROOTFS/etc/new\"\nrm \"$ROOTFS/usr/b\"\n",
    );
    p.run(&["build"]).ok();
    let r = p.run(&["build"]);
    assert!(
        r.ok().stderr().contains("rootfs resynced: ") && r.stderr().contains("from the snapshot"),
        "{}",
        r.stderr()
    );
    let r = p.run(&["build"]);
    assert!(r.ok().stderr().contains("from the hot set"), "{}", r.stderr());
    // A rootfs replaced behind the runner's back is noticed and restored whole, still right.
    std::fs::remove_dir_all(p.path().join("tree")).unwrap();
    std::fs::create_dir_all(p.path().join("tree/etc")).unwrap();
    std::fs::write(p.path().join("tree/etc/a"), "stale\n").unwrap();
    p.run(&["build"]).ok();

    for f in ["tree", "tree.stamp", "tree.hot.tar"] {
        assert!(p.path().join(f).exists(), "{f} missing before clean");
    }
    // Caches beside the snapshots (a phase's own, like the squashfs block cache) are counted.
    std::fs::create_dir_all(p.path().join("cache/blocks")).unwrap();
    std::fs::write(p.path().join("cache/blocks/pack"), vec![0u8; 3 << 20]).unwrap();
    let r = p.run(&["clean"]);
    assert!(
        r.ok().stdout().contains("block caches and downloads 3 MiB"),
        "{}",
        r.stdout()
    );
    for f in ["tree", "tree.stamp", "tree.hot.tar"] {
        assert!(!p.path().join(f).exists(), "clean left {f}");
    }
}

#[test]
fn a_failing_phase_tail_shows_control_bytes_escaped_and_a_huge_line_cut() {
    let p = TestProject::new();
    p.phase(
        "10-noisy",
        "printf 'colour \\033[31mred\\007 bell\\rcarriage\\n'\n\
         head -c 20000000 /dev/zero | tr '\\0' x\n\
         exit 3",
    );
    let r = p.run(&["build"]);
    r.fails_with(1, "10-noisy failed: exit code 3");
    let err = r.0.stderr.clone();
    for raw in [0x1bu8, 0x07, b'\r'] {
        assert!(!err.contains(&raw), "raw byte {raw:#x} reached the terminal");
    }
    let err = r.stderr();
    assert!(err.contains(r"colour \x1b[31mred\x07 bell\x0dcarriage"), "{err}");
    assert!(
        err.contains(&format!("({} more bytes)", 20_000_000 - 4096)),
        "{}",
        &err[..err.len().min(2000)]
    );
    assert!(
        err.len() < 20_000,
        "the failure report is {} bytes long",
        err.len()
    );
}

#[test]
fn a_closed_output_pipe_stops_the_build_and_its_phase_quietly() {
    let p = TestProject::new();
    let pidfile = p.path().join("phase.pid");
    p.phase(
        "10-chatty",
        &format!(
            "echo $$ > {}\nwhile :; do echo line; sleep 0.05; done",
            pidfile.display()
        ),
    );
    let mut child = p
        .cmd(&["-v", "build"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Read until the phase runs, then close the pipe, as `| grep -m1 line` or `| head` do.
    let mut err = child.stderr.take().unwrap();
    let mut buf = [0u8; 64];
    while !pidfile.exists() {
        std::io::Read::read(&mut err, &mut buf).unwrap();
    }
    drop(err);
    drop(child.stdout.take());
    let status = child.wait().unwrap();
    assert_ne!(status.code(), Some(101), "the runner panicked");
    assert_eq!(status.code(), Some(141), "{status:?}");
    let phase: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
    let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while common::pid_alive(phase) && std::time::Instant::now() < until {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(!common::pid_alive(phase), "the phase ({phase}) still runs");
}

#[test]
fn output_and_work_dirs_never_replace_what_the_runner_did_not_make() {
    let p = TestProject::new();
    p.phase("10-touch", "echo made > \"$OUTPUT/artifact\"");
    p.file("docs/thesis.txt", "years of work\n");
    p.file("notes.txt", "notes\n");
    for (key, value, why) in [
        ("OUTPUT", "docs", "was not made by loisto-image"),
        ("BUILD_DIR", "docs", "was not made by loisto-image"),
        ("CACHE_DIR", "docs", "was not made by loisto-image"),
        ("ROOTFS", "docs", "was not made by loisto-image"),
        ("OUTPUT", "phases", "inside the project's own sources"),
        ("OUTPUT", "phases/out", "inside the project's own sources"),
        ("OUTPUT", "image.conf", "is the config file"),
        ("OUTPUT", "notes.txt", "is a file"),
    ] {
        let set = format!("{key}={value}");
        p.run(&["--set", &set, "build"]).fails_with(2, why);
    }
    assert_eq!(p.read("docs/thesis.txt"), "years of work\n");
    assert!(p.path().join("phases/10-touch.sh").is_file());
    assert!(p.path().join("image.conf").is_file());
    assert_eq!(p.read("notes.txt"), "notes\n");
    // A new directory is the runner's from then on, and a second build may replace it.
    p.run(&["--set", "OUTPUT=fresh", "build"]).ok();
    p.run(&["--set", "OUTPUT=fresh", "build"]).ok();
    assert_eq!(p.read("fresh/artifact"), "made\n");
}

#[test]
fn a_second_build_into_another_output_waits_for_the_shared_build_dir() {
    let p = TestProject::new();
    let started = p.path().join("started");
    p.phase("10-slow", &format!("touch {}; sleep 3", started.display()));
    let mut first = p.cmd(&["build"]).spawn().unwrap();
    let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !started.exists() && std::time::Instant::now() < until {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let second = p.run(&["--set", "OUTPUT=out2", "--set", "IMAGE_VERSION=2", "build"]);
    second.fails_with(2, "another build");
    assert!(second.stderr().contains("build"), "{}", second.stderr());
    assert!(first.wait().unwrap().success());
}

#[test]
fn every_artifact_is_readable_by_everyone() {
    let p = TestProject::new();
    p.phase(
        "10-private",
        "install -m 600 /dev/null \"$OUTPUT/hash\"; install -m 700 /dev/null \"$OUTPUT/tool\"",
    );
    p.run(&["build"]).ok();
    let mode = |f: &str| common::mode_of(&p.output().join(f));
    assert_eq!(mode("hash"), 0o644);
    assert_eq!(mode("tool"), 0o755);
}

#[test]
fn shell_special_names_are_refused_in_image_conf_and_in_set() {
    let p = TestProject::new();
    p.phase("10-x", "true");
    p.file("image.conf", "IMAGE_ID=test\nIMAGE_VERSION=1.0\nIFS=,\n");
    p.run(&["build"])
        .fails_with(2, "image.conf:3: IFS is special to bash");
    p.file("image.conf", "IMAGE_ID=test\nIMAGE_VERSION=1.0\n");
    p.run(&["--set", "BASH_ENV=/tmp/evil", "build"])
        .fails_with(2, "--set BASH_ENV: BASH_ENV is special to bash");
    assert!(!p.output().exists());
}

#[test]
fn sha256sums_checks_with_sha256sum_for_any_file_name_and_verify_sees_extra_files() {
    let p = TestProject::new();
    p.phase(
        "10-names",
        "echo a > \"$OUTPUT/new
line\"; echo b > \"$OUTPUT/back\\\\slash\"; echo c > \"$OUTPUT/plain\"",
    );
    p.run(&["build"]).ok();
    let check = common::host_in(&p.output(), "sha256sum", &[&"--strict", &"-c", &"SHA256SUMS"]);
    assert_eq!(check.stdout().matches(": OK").count(), 3);
    p.run(&["verify"]).ok();
    std::fs::write(p.output().join("dropped-in"), "x").unwrap();
    let r = p.run(&["verify"]);
    assert_eq!(r.code(), 1, "{}", r.stderr());
    assert!(r.stdout().contains("unlisted dropped-in"), "{}", r.stdout());
}

#[test]
fn a_killed_runner_takes_its_phase_along() {
    let p = TestProject::new();
    p.phase(
        "10-spawn",
        "echo $$ > \"$BUILD_DIR/pids\"\n\
         sleep 300 & echo $! >> \"$BUILD_DIR/pids\"\n\
         sleep 300",
    );
    let (mut child, pids) = build_recording_pids(&p);
    assert_eq!(pids.len(), 2);
    // SIGKILL: no handler runs, nothing in the runner can clean up.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    child.wait().unwrap();
    let until = Instant::now() + Duration::from_secs(5);
    while pids.iter().any(|p| pid_alive(*p)) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
    }
    for pid in pids {
        assert!(!pid_alive(pid), "phase process {pid} outlived the killed runner");
    }
}

#[test]
fn a_phase_log_that_cannot_be_written_stops_the_phase_and_names_it() {
    let p = TestProject::new();
    // 600 KB of output against a 256 KB file size limit: the log write fails (EFBIG) long
    // before the phase ends on its own.
    p.phase(
        "10-chatty",
        "echo $$ > \"$BUILD_DIR/pid\"\nfor i in $(seq 1 20000); do echo \"line $i of a chatty phase\"; done\nsleep 300",
    );
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg("ulimit -f 256; trap '' XFSZ; exec \"$@\"")
        .arg("bash")
        .arg(common::BIN)
        .arg("-C")
        .arg(p.path())
        .arg("build")
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("10-chatty") && err.contains("10-chatty.log"),
        "{err}"
    );
    let pid: i32 = p.read("build/pid").trim().parse().unwrap();
    assert!(!pid_alive(pid), "the phase still runs");
    assert!(!p.output().exists());
}

#[test]
fn a_config_key_nothing_reads_is_named_with_the_key_it_may_mean() {
    let p = TestProject::with_conf(
        "IMAGE_ID=test\nIMAGE_VERSION=1.0\nSOURCE_DATE_EPOCH=1700000000\nROOT_SIZE=1\nROOT_SZIE=2\n",
    );
    p.phase("10-size", "echo \"$ROOT_SIZE\" > \"$OUTPUT/size\"");
    let r = p.run(&["build"]);
    r.ok();
    assert_eq!(
        r.stderr()
            .lines()
            .filter(|l| l.starts_with("warning:"))
            .collect::<Vec<_>>(),
        [format!(
            "warning: {}:5: ROOT_SZIE is set, but no phase and nothing in loisto-image reads it (did you mean ROOT_SIZE?)",
            p.path().join("image.conf").display()
        )]
    );
    let r = p.run(&["--set", "IMAGE_VERISON=2", "plan"]);
    r.ok().stderr_has("warning: --set: IMAGE_VERISON is set, but no phase and nothing in loisto-image reads it (did you mean IMAGE_VERSION?)");
}

#[test]
fn an_output_that_is_a_mount_point_is_refused_before_any_phase() {
    let p = TestProject::new();
    p.phase("10-mark", "touch \"$BUILD_DIR/ran\"; echo x > \"$OUTPUT/x\"");
    std::fs::create_dir(p.output()).unwrap();
    // A private mount namespace: the tmpfs on output/ is gone with the command.
    let out = std::process::Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg("mount -t tmpfs none \"$1/output\" && exec \"$0\" -C \"$1\" build")
        .arg(common::BIN)
        .arg(p.path())
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("output is a mount point"), "{err}");
    assert!(!p.path().join("build/ran").exists(), "a phase ran");
}
