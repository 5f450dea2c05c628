//! A lab removes what runs in its namespaces when it goes, including processes it did not start itself (a command
//! the demo prints, run by hand), so Ctrl-C on `cargo xtask run` leaves nothing behind.
use lb_lab::{Lab, LabOptions};
use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn dropping_a_lab_ends_processes_started_by_hand_in_its_namespaces() {
    // SAFETY: trivial libc call.
    assert_eq!(unsafe { libc::geteuid() }, 0, "the lab makes network namespaces: run as root");
    let lab = Lab::up(&LabOptions { reals: 1, vip_on_lb: false }).unwrap();
    let mut by_hand =
        Command::new("ip").args(["netns", "exec", &lab.real(0), "sleep", "600"]).stdin(Stdio::null()).spawn().unwrap();
    let pids = Command::new("ip").args(["netns", "pids", &lab.real(0)]).output().unwrap();
    assert!(String::from_utf8_lossy(&pids.stdout).contains(&by_hand.id().to_string()), "{pids:?}");
    drop(lab);
    let ended = lb_lab::wait::wait_for(Duration::from_secs(5), "the hand-started process to end", || {
        by_hand.try_wait().unwrap()
    });
    let status = ended.unwrap().0;
    assert!(!status.success(), "it ended by itself: {status}");
}
