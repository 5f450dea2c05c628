//! The loop never waits for a provider: a slow start runs beside the rounds (nodes polled, no second start), and its
//! outcome is recorded when it ends. Everything on loopback; the provider is a shell script.

use super::*;
use std::os::unix::fs::PermissionsExt;

fn closed_port() -> u16 {
    // Bound then released: nothing listens there, so a poll is refused at once.
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test]
async fn a_slow_provider_runs_beside_the_rounds() {
    let dir = std::env::temp_dir().join(format!("sm-driver-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("token"), "0123456789abcdef-token\n").unwrap();
    let calls = dir.join("calls");
    let script = dir.join("provider");
    std::fs::write(&script, format!("#!/bin/sh\necho \"$1 $2\" >> {}\nsleep 3\necho started\n", calls.display()))
        .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let text = format!(
        r#"
listen = "127.0.0.1:0"
token_file = "token"
keepalive = "1s"
failover_time = "1s"
[lb]
api = "http://127.0.0.1:{lb}"
services = ["10.0.0.100:1935"]
[[node]]
name = "o1"
role = "origin"
api = "http://127.0.0.1:{o1}"
rtmp = "127.0.0.1:1935"
[[pool]]
name = "edges"
min = 1
max = 2
[pool.scale]
signal = "players"
capacity = 100
scale_out_at = 0.7
scale_in_at = 0.3
provider = "{script}"
provider_timeout = "30s"
"#,
        lb = closed_port(),
        o1 = closed_port(),
        script = script.display()
    );
    let config = Config::parse(&text, &dir.join("m.toml")).unwrap();
    // Started long enough ago that the manager has settled and may scale.
    let cluster = Cluster::new(config.clone(), Default::default(), Instant::now() - Duration::from_secs(30));
    let shared = Shared::new(cluster, crate::history::History::new(Duration::from_secs(10)));
    let lb: LbClients = BTreeMap::new();

    let t = Instant::now();
    let taken = round(&shared, &config, &lb, &BTreeSet::new()).await;
    let first = t.elapsed();
    let starts: Vec<&Action> = taken.iter().filter(|a| matches!(a, Action::ProviderStart { .. })).collect();
    assert_eq!(starts.len(), 1, "{taken:?}");
    assert!(first < Duration::from_secs(2), "the round waited {first:?} for the provider");

    // While the provider runs, rounds go on (o1 is polled) and do not start a second edge.
    let t = Instant::now();
    let taken = round(&shared, &config, &lb, &taken).await;
    assert!(t.elapsed() < Duration::from_secs(2), "the second round took {:?}", t.elapsed());
    assert!(!taken.iter().any(|a| matches!(a, Action::ProviderStart { .. })), "{taken:?}");
    assert!(shared.lock().nodes["o1"].last_error.is_some(), "o1 was not polled");

    // The outcome lands when the provider ends, without a round waiting for it.
    let end = Instant::now() + Duration::from_secs(15);
    loop {
        let done = shared
            .lock()
            .log
            .events(50, None, Some("edges"))
            .iter()
            .any(|e| e.message.contains("provider started") && e.message.contains("waiting for it to register"));
        if done {
            break;
        }
        assert!(Instant::now() < end, "the provider's outcome was never recorded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let lines = std::fs::read_to_string(&calls).unwrap();
    assert_eq!(lines.lines().count(), 1, "provider calls: {lines:?}");
    assert!(lines.starts_with("start "), "{lines:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_provider_is_done_when_it_exits_even_if_what_it_started_keeps_its_output_open() {
    let dir = std::env::temp_dir().join(format!("sm-provider-pipes-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pid_file = dir.join("edge.pid");
    let script = dir.join("provider");
    // The "edge" it starts inherits stdout and stderr and outlives the provider.
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nsleep 30 &\necho $! > {}\necho \"edge $2 started\"\necho 'warming up' >&2\nexit ${{EXIT:-0}}\n",
            pid_file.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let call = |exit: &str| ProviderCall {
        exe: script.clone(),
        args: ["start".into(), "edges-1".into(), "edges".into()],
        env: vec![("EXIT".into(), exit.into())],
        timeout: Duration::from_secs(20),
    };
    let kill_edge = || {
        let pid: i32 = std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
        // SAFETY: kill(2) of the sleep this test's script started.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    };

    let t = Instant::now();
    let r = call("0").run().await;
    let took = t.elapsed();
    kill_edge();
    assert_eq!(r, Ok(()));
    assert!(took < Duration::from_secs(3), "waited {took:?} for pipes the started edge holds");

    let t = Instant::now();
    let r = call("4").run().await;
    let took = t.elapsed();
    kill_edge();
    let err = r.unwrap_err();
    assert!(err.contains("exit status: 4 warming up"), "{err}");
    assert!(took < Duration::from_secs(3), "waited {took:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
