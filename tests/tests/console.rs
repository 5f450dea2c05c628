//! The operator console in a real browser: headless Chromium (through chromedriver) opens the stream manager's page
//! in the lab cluster; what it shows must match the API, a graph must have samples, and an origin failover must
//! appear (as an event and as the new active member) without anyone reloading the page. lbd's own console is
//! checked the same way. A screenshot is saved as a test artefact (target/test-artifacts/console.png).
use lb_lab::browser::Browser;
use lb_lab::cluster::{origin_ip, Cluster, Options, LBD_API_PORT, MANAGER_PORT};
use lb_lab::LB_IP;
use lb_tests::*;
use std::time::Duration;

/// The most samples any graph of a console page has (its charts' `data-points`).
fn most_points(html: &str) -> usize {
    html.split("data-points=\"").skip(1).filter_map(|s| s.split('"').next()?.parse::<usize>().ok()).max().unwrap_or(0)
}

/// `smctl check ARGS` from the LB host against the lab's manager: (exit code, status line).
fn check(lab: &lb_lab::Lab, c: &Cluster, args: &[&str]) -> (i32, String) {
    let smctl = lb_lab::bin_path("smctl");
    let api = format!("http://{LB_IP}:{MANAGER_PORT}");
    let token = c.token_file.display().to_string();
    let mut all = vec![smctl.to_str().unwrap(), "--api", &api, "--token-file", &token, "check"];
    all.extend_from_slice(args);
    let out = lab.exec_status(&lab.lb(), &all).unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[test]
fn the_console_shows_the_cluster_and_a_failover_without_a_reload() {
    require_root();
    let opts = Options { console_refresh: "2s", failover_time: "3s", ..Default::default() };
    let (mut l, mut c) = cluster_lab(opts);
    let lab = &mut l.lab;
    // A stream to show: a publisher on the active origin, pre-pulled by every edge.
    let push = format!("rtmp://{}:1935/live/show", origin_ip(0));
    let args: Vec<&str> = lb_lab::FFMPEG_PUBLISH.iter().copied().chain([push.as_str()]).collect();
    let client = lab.client();
    context(lab.spawn(&client, "push.log", &args), "publisher");
    context(
        Cluster::wait("o1 active, every edge in the LB with live/show", Duration::from_secs(30), || {
            c.active(lab).as_deref() == Some("o1")
                && (0..3).all(|i| c.edge_pulls_from(lab, i, "show", &origin_ip(0)))
                && c.manager(lab, "nodes").is_ok_and(|v| v.as_array().unwrap().iter().all(|n| n["state"] == "up"))
        }),
        "cluster up",
    );
    // Two samples for a graph (one every 2 s here), seen in the page the browser will open.
    let page = format!("http://{LB_IP}:{MANAGER_PORT}/");
    let samples = Cluster::wait("a graph with two samples", Duration::from_secs(10), || {
        lab.exec_status(&lab.lb(), &["curl", "-sS", "--max-time", "3", &page])
            .is_ok_and(|out| most_points(&String::from_utf8_lossy(&out.stdout)) >= 2)
    });
    context(samples, "graph samples");

    let lb = lab.lb();
    let browser = context(Browser::start(lab, &lb, 9515), "chromium");
    context(browser.open(lab, &page), "open the console");
    let html = context(browser.source(lab), "page source");
    // What the page shows matches the API: every node with its state, the group's active member, every stream.
    let nodes = c.manager(lab, "nodes").unwrap();
    for n in nodes.as_array().unwrap() {
        let name = n["name"].as_str().unwrap();
        assert!(html.contains(&format!("<span data-node=\"{name}\">{name}</span>")), "node {name} missing");
        let row = html.split(&format!("data-node=\"{name}\"")).nth(1).unwrap().split("</tr>").next().unwrap();
        assert!(row.contains(&format!(">{}</span>", n["state"].as_str().unwrap())), "node {name}'s state: {row}");
    }
    let groups = c.manager(lab, "groups").unwrap();
    assert!(html.contains(&format!("data-active=\"cams\">{}</b>", groups[0]["active"].as_str().unwrap())));
    for s in c.manager(lab, "streams").unwrap().as_array().unwrap() {
        let name = format!("{}/{}", s["app"].as_str().unwrap(), s["key"].as_str().unwrap());
        assert!(html.contains(&format!("data-stream=\"{name}\"")), "stream {name} missing");
    }
    for i in 0..3 {
        assert!(html.contains(&lb_lab::real_ip(i)), "the LB section lists real {}", lb_lab::real_ip(i));
    }
    // A graph has data points: players and outbound bit rate per edge were sampled.
    assert!(most_points(&html) >= 2, "no graph has two samples");
    // Drawn, not only present: the browser lays the charts out with a real size.
    let width =
        browser.eval(lab, "return document.querySelector('figure.chart svg').getBoundingClientRect().width").unwrap();
    assert!(width.as_f64().unwrap_or(0.0) > 200.0, "chart width {width}");
    let shot = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts");
    std::fs::create_dir_all(&shot).unwrap();
    context(browser.screenshot(lab, &shot.join("console.png")), "screenshot");
    // On a phone: nothing wider than the screen (wide tables scroll inside their box).
    browser.set_window(lab, 390, 844).unwrap();
    let fits = browser.eval(lab, "return document.documentElement.scrollWidth <= window.innerWidth + 1").unwrap();
    assert_eq!(fits, true, "the page is wider than a phone");
    context(browser.screenshot(lab, &shot.join("console-phone.png")), "screenshot");
    browser.set_window(lab, 1280, 2400).unwrap();

    // Read-only without the token: no action buttons; a wrong token is refused and changes nothing; the right
    // one puts e3 into maintenance from the page and takes it out again.
    let shown =
        "return Array.from(document.querySelectorAll('button[data-post]')).filter(b => b.offsetParent !== null).length";
    assert_eq!(browser.eval(lab, shown).unwrap(), 0, "action buttons without a token");
    // The old page carries a mark that the reloaded one does not have.
    let sign_in = |t: &str| {
        format!("window.beforeSignIn = 1; sessionStorage.setItem('token', '{t}'); location.reload(); return 1")
    };
    let reloaded = "return window.beforeSignIn === undefined && document.readyState === 'complete' \
                    && document.body.innerHTML.includes('sign out')";
    let click = |node: &str, what: &str| {
        format!("document.querySelector('button[data-post=\"/api/v1/nodes/{node}/{what}\"]').click(); return 1")
    };
    browser.eval(lab, &sign_in("wrong-token-0123456789")).unwrap();
    browser.wait_for(lab, "the signed-in page", Duration::from_secs(5), |h| h.contains("sign out")).unwrap();
    browser.eval(lab, &click("e3", "maintenance")).unwrap();
    browser
        .wait_for(lab, "the refusal", Duration::from_secs(5), |h| {
            h.contains("/api/v1/nodes/e3/maintenance: missing or wrong bearer token")
        })
        .unwrap();
    assert_eq!(c.manager(lab, "nodes/e3").unwrap()["state"], "up", "a wrong token changed something");
    browser.eval(lab, &sign_in(Cluster::TOKEN)).unwrap();
    let signed_in = lb_lab::wait::wait_within(Duration::from_secs(5), "the page reloaded with the token", || {
        browser.eval(lab, reloaded).is_ok_and(|v| v == true)
    });
    context(signed_in, "sign in");
    browser.eval(lab, &click("e3", "maintenance")).unwrap();
    Cluster::wait("e3 in maintenance from the page", Duration::from_secs(5), || {
        c.manager(lab, "nodes/e3").is_ok_and(|n| n["state"] != "up")
    })
    .unwrap();
    browser
        .wait_for(lab, "the resume button", Duration::from_secs(5), |h| h.contains("/api/v1/nodes/e3/resume"))
        .unwrap();
    browser.eval(lab, &click("e3", "resume")).unwrap();
    Cluster::wait("e3 back", Duration::from_secs(5), || c.manager(lab, "nodes/e3").is_ok_and(|n| n["state"] == "up"))
        .unwrap();

    // The Nagios checks agree, with perfdata.
    let (code, line) = check(lab, &c, &["group", "cams"]);
    assert_eq!(code, 0, "{line}");
    assert!(
        line.starts_with("STREAM OK - group cams: o1 active, 2 of 2 members healthy | healthy_members=2;2:;1:;0;2"),
        "{line}"
    );
    let (code, line) = check(lab, &c, &["pool", "edges"]);
    assert_eq!(code, 0, "{line}");
    assert!(line.contains("3 of 3 edges in service (min 2) | edges_in_service=3;;2:;0"), "{line}");
    let (code, line) = check(lab, &c, &["stream", "live/show", "-c", "3:"]);
    assert_eq!(code, 0, "{line}");
    assert!(line.contains("ingested at o1, on 3 edges") && line.contains("| edges=3;;3:;0"), "{line}");
    let (code, line) = check(lab, &c, &["group", "cams", "-w", "bogus"]);
    assert_eq!(code, 3, "{line}");
    assert!(line.starts_with("STREAM UNKNOWN - bad argument: --warning"), "{line}");
    let (code, line) = check(lab, &c, &["stream"]);
    assert_eq!(code, 3, "{line}");

    // Kill the active origin: the open page reloads itself on the new events and shows o2 active and the failover.
    c.kill_origin(lab, 0).unwrap();
    let took = context(
        browser.wait_for(lab, "o2 active and the failover event", Duration::from_secs(12), |h| {
            h.contains("data-active=\"cams\">o2</b>") && h.contains("o1 is down: o2 takes the group")
        }),
        "failover on the page",
    );
    println!("the open console showed the failover {took:?} after the kill (failover_time 3 s, refresh 2 s)");
    context(browser.screenshot(lab, &shot.join("console-failover.png")), "screenshot");
    let (code, line) = check(lab, &c, &["group", "cams"]);
    assert_eq!(code, 1, "{line}");
    assert!(line.contains("o2 active, 1 of 2 members healthy, running on a standby (preferred o1)"), "{line}");
    let (code, line) = check(lab, &c, &["stream", "live/show"]);
    assert_eq!(code, 2, "{line}");
    // The edges still hold it (their grace period), but nothing feeds it.
    assert!(line.starts_with("STREAM CRITICAL - stream live/show: NOT INGESTED by any origin | edges="), "{line}");
    for e in ["e1", "e2"] {
        c.manager_post(lab, &format!("nodes/{e}/maintenance")).unwrap();
    }
    let (code, line) = check(lab, &c, &["pool", "edges"]);
    assert_eq!(code, 2, "{line}");
    assert!(line.contains("1 of 3 edges in service (min 2)"), "{line}");
    for e in ["e1", "e2"] {
        c.manager_post(lab, &format!("nodes/{e}/resume")).unwrap();
    }
    let (code, line) = {
        let smctl = lb_lab::bin_path("smctl");
        let token = c.token_file.display().to_string();
        let args =
            [smctl.to_str().unwrap(), "--api", "http://10.99.0.2:9", "--token-file", &token, "check", "pool", "edges"];
        let out = lab.exec_status(&lab.lb(), &args).unwrap();
        (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    assert_eq!(code, 3, "{line}");
    assert!(line.starts_with("STREAM UNKNOWN - the manager did not answer"), "{line}");

    // lbd's reduced console lists its services and the edges as reals.
    context(browser.open(lab, &format!("http://{LB_IP}:{LBD_API_PORT}/console")), "lbd console");
    let html = browser.source(lab).unwrap();
    assert!(
        html.contains("10.99.0.100:1935") && html.contains(&lb_lab::real_ip(2)),
        "{}",
        &html[..html.len().min(3000)]
    );
    browser.quit(lab);
}
