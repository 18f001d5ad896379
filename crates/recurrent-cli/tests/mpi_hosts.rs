//! `mpirun` over TCP between two hosts: two network namespaces made by the test (`ip netns`,
//! a veth pair, addresses of their own, hostnames of their own), rank 0 on one and rank 1
//! on the other, Open MPI's launcher reaching the second host through `ip netns exec`
//! where a cluster would use ssh. Needs root (feature `mpi`, iproute2 and util-linux).

#![cfg(feature = "mpi")]

mod common;

use common::mpi::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Two network namespaces joined by a veth pair, removed on drop.
struct Hosts {
    names: [String; 2],
    addresses: [String; 2],
}

fn ip(args: &[&str]) {
    succeed(Command::new("ip").args(args));
}

impl Hosts {
    fn new() -> Hosts {
        // SAFETY: geteuid has no preconditions.
        assert_eq!(
            unsafe { libc::geteuid() },
            0,
            "this test makes network namespaces and needs root"
        );
        let id = std::process::id();
        let names = [format!("rcA{id}"), format!("rcB{id}")];
        let subnet = format!("10.231.{}", id % 250);
        let addresses = [format!("{subnet}.1"), format!("{subnet}.2")];
        let veth = [format!("rva{id}"), format!("rvb{id}")];
        let hosts = Hosts { names, addresses };
        for n in &hosts.names {
            ip(&["netns", "add", n]);
        }
        ip(&[
            "link", "add", &veth[0], "type", "veth", "peer", "name", &veth[1],
        ]);
        for ((ns, dev), address) in hosts.names.iter().zip(&veth).zip(&hosts.addresses) {
            let address = format!("{address}/24");
            ip(&["link", "set", dev, "netns", ns]);
            ip(&["-n", ns, "addr", "add", &address, "dev", dev]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        hosts
    }

    /// The launcher Open MPI calls as `AGENT HOST COMMAND...` (as it would call ssh):
    /// runs the command in that host's namespace with its own hostname, and logs the host.
    fn agent(&self, dir: &Path) -> PathBuf {
        let path = dir.join("agent.sh");
        let script = format!(
            "#!/bin/sh\nhost=\"$1\"; shift\necho \"$host\" >> '{log}'\n\
             case \"$host\" in\n  {b}) ns={nb}; name=host-b ;;\n  *) ns={na}; name=host-a ;;\nesac\n\
             exec ip netns exec \"$ns\" unshare --uts sh -c \"hostname $name; $*\"\n",
            log = dir.join("agent.log").display(),
            b = self.addresses[1],
            na = self.names[0],
            nb = self.names[1],
        );
        std::fs::write(&path, script).unwrap();
        succeed(Command::new("chmod").arg("+x").arg(&path));
        path
    }

    /// `mpirun -np 2 recurrent train ARGS` started on the first host, one rank per host,
    /// MPI's messages over TCP on the veth subnet only.
    fn mpirun(&self, dir: &Path, args: &[&str]) -> Command {
        let agent = self.agent(dir);
        let subnet = format!("{}/24", self.addresses[0]);
        let mut c = Command::new("ip");
        c.current_dir(dir)
            .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
            .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
            .args([
                "netns",
                "exec",
                &self.names[0],
                "unshare",
                "--uts",
                "sh",
                "-c",
            ])
            .arg("hostname host-a; exec \"$@\"")
            .arg("sh")
            .arg("mpirun")
            .args([
                "--host",
                &format!("{},{}", self.addresses[0], self.addresses[1]),
            ])
            .args(["-np", "2", "--mca", "plm_rsh_agent"])
            .arg(&agent)
            .args([
                "--mca",
                "btl",
                "tcp,self",
                "--mca",
                "btl_tcp_if_include",
                &subnet,
            ])
            .args(["--mca", "oob_tcp_if_include", &subnet, RECURRENT, "train"])
            .args(args);
        c
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

/// The pid of the rank `rank` working in `dir` (wherever its parent is: on the second
/// host it is Open MPI's daemon).
fn rank_in(dir: &Path, rank: usize) -> Option<i32> {
    let wanted = format!("OMPI_COMM_WORLD_RANK={rank}");
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        let cwd = std::fs::read_link(e.path().join("cwd")).ok()?;
        let environ = std::fs::read(e.path().join("environ")).ok()?;
        let is_rank = environ.split(|&b| b == 0).any(|v| v == wanted.as_bytes());
        (cwd == dir && is_rank).then_some(pid)
    })
}

/// Two ranks on two hosts train the model one process trains; then rank 1, on the second
/// host, killed mid-run ends the job with a failure naming it, and the previous model
/// survives.
#[test]
fn two_hosts_over_tcp() {
    let hosts = Hosts::new();
    let dir = tempfile::tempdir().unwrap();
    let dir_path = dir.path().canonicalize().unwrap();
    let task = ["classify", "--model", "lstm", "--ensemble", "1"];
    let with = |rest: &[&'static str]| [&task[..], rest].concat();
    let epoch = ["--epochs", "1"];
    one_process(
        &dir_path,
        &with(
            &[
                &epoch[..],
                &["--out", "one.safetensors", "--report", "one.json"],
            ]
            .concat(),
        ),
    );
    succeed(
        &mut hosts.mpirun(
            &dir_path,
            &with(
                &[
                    &epoch[..],
                    &["--out", "two.safetensors", "--report", "two.json"],
                ]
                .concat(),
            ),
        ),
    );
    let log = std::fs::read_to_string(dir_path.join("agent.log")).unwrap();
    assert!(
        log.contains(&hosts.addresses[1]),
        "the second host was not used: {log}"
    );
    assert_same_run(&dir_path.join("one"), &dir_path.join("two"));

    std::fs::write(dir_path.join("two.safetensors"), b"the previous model").unwrap();
    let mut job = hosts
        .mpirun(
            &dir_path,
            &with(&["--epochs", "1000", "--out", "two.safetensors"]),
        )
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The checkpoint of the ensemble's only member.
    let checkpoint = dir_path.join("two.safetensors.checkpoint.m0");
    let start = Instant::now();
    let victim = loop {
        if checkpoint.exists() {
            if let Some(pid) = rank_in(&dir_path, 1) {
                break pid;
            }
        }
        if let Some(status) = job.try_wait().unwrap() {
            let out = job.wait_with_output().unwrap();
            panic!(
                "the job ended ({status}): {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no checkpoint or rank 1"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    // SAFETY: a signal to a process this test started.
    assert_eq!(unsafe { libc::kill(victim, libc::SIGKILL) }, 0);
    let out = job.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("rank 1"), "mpirun's message: {stderr}");
    assert_eq!(
        std::fs::read(dir_path.join("two.safetensors")).unwrap(),
        b"the previous model"
    );
    recurrent::io::TensorFile::read(&checkpoint).unwrap();
}
