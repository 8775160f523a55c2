//! The operator's console in a real browser: headless Chromium (driven over
//! WebDriver) against the real server on `127.0.0.1:0`, with real workers
//! and producers on the gRPC side. Every wait is on what the page shows,
//! with a timeout.

#![allow(clippy::unwrap_used)]

mod common;

use common::{TestServer, TestWorker, WorkerOptions, browser::Browser, test_config, within};
use contact_server::{
    auth::Role,
    proto::{Outcome, v1},
};

/// Task text, a result and a status that would run script if they were
/// ever taken as markup.
const HOSTILE: &str = r#"<script>window.__pwned=1</script><img src=x onerror="window.__pwned=2">"#;

fn console(server: &TestServer, page: &str) -> String {
    format!("http://{}/#/{page}", server.metrics_addr)
}

/// Opens `page` and waits until the console has drawn it from the API.
async fn show(browser: &Browser, server: &TestServer, page: &str, name: &str) {
    browser.goto(&console(server, page)).await;
    browser
        .wait_for(
            &format!("the {name} page to be drawn"),
            &format!(
                "return document.body.dataset.page === '{name}' \
                 && document.getElementById('updated').textContent !== 'never' \
                 && !document.getElementById('load-error')"
            ),
        )
        .await;
}

/// A script's JSON-quoted string literal.
fn js(text: &str) -> String {
    serde_json::to_string(text).unwrap()
}

#[tokio::test]
async fn every_page_renders() {
    let server = TestServer::start().await;
    let browser = Browser::start().await;
    for (page, name, heading) in [
        ("", "overview", "Overview"),
        ("queues", "queues", "Queues"),
        ("workers", "workers", "Workers"),
        ("task", "task", "Task"),
        ("dead-letters", "dead-letters", "Dead letters"),
        ("broadcasts", "broadcasts", "Broadcasts"),
    ] {
        show(&browser, &server, page, name).await;
        let shown = browser
            .eval("return document.querySelector('#main h1').textContent")
            .await;
        assert_eq!(shown, heading, "{page}");
    }
    // The overview's chart has a line per rate.
    show(&browser, &server, "", "overview").await;
    let lines = browser
        .eval("return document.querySelectorAll('svg.chart polyline').length")
        .await;
    assert_eq!(lines, 3);
    browser.close().await;
    server.stop().await;
}

/// A queue's depth, and a connected worker with its credit and the task it
/// holds, as the pages show them.
#[tokio::test]
async fn queues_and_workers_show_what_the_server_holds() {
    let server = TestServer::start().await;
    for i in 0..3 {
        server.submit("images", &format!("resize {i}")).await;
    }
    let browser = Browser::start().await;
    show(&browser, &server, "queues", "queues").await;
    browser
        .wait_for(
            "the images queue with 3 pending",
            "const c = document.querySelector('tr[data-queue=\"images\"] .pending'); \
             return c && c.textContent === '3'",
        )
        .await;

    let mut worker = TestWorker::connect(
        &server,
        WorkerOptions::id("console-w")
            .queues("images")
            .max_in_flight(1),
    )
    .await;
    let held = worker.next_task().await;
    show(&browser, &server, "workers", "workers").await;
    let credit = browser
        .wait_for(
            "the worker with one task in flight",
            "const c = document.querySelector('tr[data-worker=\"console-w\"] .credit'); \
             return c && c.textContent === '1 / 1' && c.textContent",
        )
        .await;
    assert_eq!(credit, "1 / 1");
    let row = browser
        .wait_for(
            "the task it holds",
            &format!(
                "const r = document.querySelector('tr[data-held={}]'); return r && r.textContent",
                js(&held.task_id)
            ),
        )
        .await;
    assert!(row.as_str().unwrap().contains(&held.task), "{row}");
    // And the queue page: two left, and the worker subscribed.
    show(&browser, &server, "queues", "queues").await;
    browser
        .wait_for(
            "two pending and the worker listed",
            "const r = document.querySelector('tr[data-queue=\"images\"]'); \
             return r && r.querySelector('.pending').textContent === '2' \
                 && r.textContent.includes('console-w')",
        )
        .await;
    browser.close().await;
    server.stop().await;
}

/// Requeueing a dead letter from its page, after confirming, puts it back
/// in its queue.
#[tokio::test]
async fn requeueing_a_dead_letter_moves_it_back() {
    let server = TestServer::start().await;
    let id = server.submit("mail", "send newsletter").await;
    {
        let mut worker =
            TestWorker::connect(&server, WorkerOptions::id("mailer").queues("mail")).await;
        let task = worker.next_task().await;
        worker
            .ack(&task.task_id, Outcome::FailedPermanently, "smtp down")
            .await;
        worker.finish_acks().await.unwrap();
    }
    let dead = server.wait_finished(&id).await;
    assert_eq!(dead.state(), v1::TaskState::DeadLettered);

    let browser = Browser::start().await;
    show(&browser, &server, "dead-letters", "dead-letters").await;
    let row = format!("tr[data-dead={}]", js(&id));
    browser
        .wait_for(
            "the dead letter listed",
            &format!(
                "return !!document.querySelector('{}')",
                row.replace('\'', "\\'")
            ),
        )
        .await;
    browser.click(&format!("{row} input[type=checkbox]")).await;
    browser.click("#requeue-selected").await;
    let question = browser.confirm_dialog().await;
    assert!(question.contains("Requeue 1"), "{question}");
    browser
        .wait_for(
            "the row to go",
            &format!(
                "return !document.querySelector('{}')",
                row.replace('\'', "\\'")
            ),
        )
        .await;
    let info = server.get(&id).await;
    assert_eq!(
        (info.state(), info.queue.as_str()),
        (v1::TaskState::Pending, "mail"),
        "{info:?}"
    );
    let notice = browser
        .eval("return document.getElementById('notice').textContent")
        .await;
    assert_eq!(notice, "requeued 1");
    browser.close().await;
    server.stop().await;
}

/// A page follows the server without a reload.
#[tokio::test]
async fn pages_update_live() {
    let server = TestServer::start().await;
    let browser = Browser::start().await;
    show(&browser, &server, "queues", "queues").await;
    browser.eval("window.__same_page = 42").await;
    server.submit("live", "appears by itself").await;
    browser
        .wait_for(
            "the new queue to appear on the same page",
            "return window.__same_page === 42 \
                 && !!document.querySelector('tr[data-queue=\"live\"]')",
        )
        .await;
    // The overview's rate follows too.
    show(&browser, &server, "", "overview").await;
    browser.eval("window.__same_page = 43").await;
    for i in 0..20 {
        server.submit("live", &format!("more {i}")).await;
    }
    browser
        .wait_for(
            "the pending count to follow",
            "return window.__same_page === 43 \
                 && document.querySelector('#depth .value').textContent.startsWith('21')",
        )
        .await;
    // The submissions show in the rate (for the second they fell in) and
    // in the totals since start, from the server's own counts.
    browser
        .wait_for(
            "a submitted rate above 0",
            "return Number(document.querySelector('#rate-submitted .value').textContent) > 0",
        )
        .await;
    browser
        .wait_for(
            "the totals",
            "return document.querySelector('#main').textContent.includes('Since start: 21 submitted')",
        )
        .await;
    browser.close().await;
    server.stop().await;
}

/// Hostile text in a task, a result and a worker's status is shown as
/// text: no element is made from it and no script of it runs.
#[tokio::test]
async fn hostile_data_renders_as_text() {
    let server = TestServer::start().await;
    let mut worker = TestWorker::connect(
        &server,
        WorkerOptions::id("evil-w").queues("evil").max_in_flight(2),
    )
    .await;
    let mut control = worker.control().await;
    control
        .send(contact_server::proto::ClientMsg {
            msg: HOSTILE.into(),
            ..Default::default()
        })
        .await;
    let done = server.submit("evil", HOSTILE).await;
    let task = worker.next_task().await;
    assert_eq!(task.task_id, done);
    worker.ack(&done, Outcome::Done, HOSTILE).await;
    server.wait_finished(&done).await;
    let held = server.submit("evil", HOSTILE).await;
    assert_eq!(worker.next_task().await.task_id, held);
    // A dead letter and a broadcast copy with the same text, error and result.
    let dead = server.submit("evil", HOSTILE).await;
    assert_eq!(worker.next_task().await.task_id, dead);
    worker.ack(&dead, Outcome::FailedPermanently, HOSTILE).await;
    server.wait_finished(&dead).await;
    let mut tasks = server.tasks().await;
    within(
        "broadcast",
        tasks.broadcast(v1::BroadcastRequest {
            queue: "evil".into(),
            text: HOSTILE.into(),
            ..Default::default()
        }),
    )
    .await
    .unwrap();
    let copy = worker.next_task().await;
    worker.ack(&copy.task_id, Outcome::Done, HOSTILE).await;
    server.wait_finished(&copy.task_id).await;

    let browser = Browser::start().await;
    let untouched = "return window.__pwned === undefined \
                     && document.querySelectorAll('#main img, #main script').length === 0";
    show(&browser, &server, "workers", "workers").await;
    let status = browser
        .wait_for(
            "the worker's status",
            "const c = document.querySelector('tr[data-worker=\"evil-w\"] .status'); \
             return c && c.textContent",
        )
        .await;
    assert_eq!(status, HOSTILE);
    let held_text = browser
        .wait_for(
            "the held task's text",
            &format!(
                "const r = document.querySelector('tr[data-held={}]'); return r && r.textContent",
                js(&held)
            ),
        )
        .await;
    assert!(held_text.as_str().unwrap().contains(HOSTILE), "{held_text}");
    assert_eq!(browser.eval(untouched).await, true);

    show(&browser, &server, &format!("task/{done}"), "task").await;
    let ret = browser
        .wait_for(
            "the result",
            &format!(
                "const c = document.querySelector('[data-task={}] [data-field=\"ret\"]'); \
                 return c && c.textContent",
                js(&done)
            ),
        )
        .await;
    assert_eq!(ret, HOSTILE);
    assert_eq!(browser.eval(untouched).await, true);

    show(&browser, &server, &format!("task/{held}"), "task").await;
    let text = browser
        .wait_for(
            "the task's text",
            &format!(
                "const c = document.querySelector('[data-task={}] [data-field=\"text\"]'); \
                 return c && c.textContent",
                js(&held)
            ),
        )
        .await;
    assert_eq!(text, HOSTILE);
    assert_eq!(browser.eval(untouched).await, true);

    show(&browser, &server, "dead-letters", "dead-letters").await;
    let row = browser
        .wait_for(
            "the dead letter",
            &format!(
                "const r = document.querySelector('tr[data-dead={}]'); \
                 return r && [...r.querySelectorAll('td.text')].map(c => c.textContent)",
                js(&dead)
            ),
        )
        .await;
    // Queue, text, and the error the worker reported.
    assert_eq!(row[1], HOSTILE, "{row}");
    assert!(row[2].as_str().unwrap().starts_with(HOSTILE), "{row}");
    assert_eq!(browser.eval(untouched).await, true);

    show(&browser, &server, "broadcasts", "broadcasts").await;
    let result = browser
        .wait_for(
            "the broadcast copy's result",
            &format!(
                "const r = document.querySelector('tr[data-copy={}]'); \
                 return r && r.querySelectorAll('td.text')[1].textContent",
                js(&copy.task_id)
            ),
        )
        .await;
    assert_eq!(result, HOSTILE);
    assert_eq!(browser.eval(untouched).await, true);
    browser.close().await;
    server.stop().await;
}

/// With principals configured the console needs the admin role: nothing
/// without signing in, a producer's token does not sign in, an admin's
/// does and its actions are carried out; a request without the console's
/// header is refused whoever sends it; the sign-in cookie is out of the
/// page's reach.
#[tokio::test]
async fn actions_need_the_admin_role() {
    let mut config = test_config();
    config.auth.principals = vec![
        common::principal("ops", "ct_console-admin", &[Role::Admin]),
        common::principal("app", "ct_console-producer", &[Role::Producer]),
    ];
    let server = TestServer::with_config(config).await;
    let browser = Browser::start().await;
    browser.goto(&console(&server, "")).await;
    browser
        .wait_for(
            "the sign-in form",
            "return !!document.getElementById('sign-in')",
        )
        .await;
    let post = |path: &str, header: bool| {
        format!(
            "return fetch('{path}', {{method: 'POST', body: '{{}}', headers: {}}}) \
             .then(r => r.json().then(b => [r.status, b.error || '']))",
            if header {
                "{'x-contact-console': '1'}"
            } else {
                "{}"
            }
        )
    };
    let read = "return fetch('/api/overview').then(r => r.status)";
    assert_eq!(browser.eval(read).await, 401);
    let anonymous = browser.eval(&post("/api/dead-letters/purge", true)).await;
    assert_eq!(anonymous[0], 401, "{anonymous}");

    browser
        .type_into("#sign-in input[name=token]", "ct_console-producer")
        .await;
    browser.click("#sign-in button").await;
    let refusal = browser
        .wait_for(
            "the producer's sign-in refused",
            "const n = document.getElementById('notice'); \
             return n.textContent.startsWith('Sign-in refused') && n.textContent",
        )
        .await;
    assert!(
        refusal.as_str().unwrap().contains("admin role"),
        "{refusal}"
    );
    assert_eq!(browser.eval(read).await, 401);
    let refused = browser.eval(&post("/api/dead-letters/purge", true)).await;
    assert_eq!(refused[0], 401, "{refused}");

    browser
        .eval("document.querySelector('#sign-in input[name=token]').value = ''")
        .await;
    browser
        .type_into("#sign-in input[name=token]", "ct_console-admin")
        .await;
    browser.click("#sign-in button").await;
    browser
        .wait_for(
            "signed in as ops",
            "return document.getElementById('who').textContent.includes('signed in as ops (admin)')",
        )
        .await;
    assert_eq!(browser.eval(read).await, 200);
    assert_eq!(
        browser
            .eval("return document.cookie.includes('contact_console')")
            .await,
        false,
        "the sign-in cookie is HttpOnly"
    );
    let purged = browser.eval(&post("/api/dead-letters/purge", true)).await;
    assert_eq!(purged[0], 200, "{purged}");
    let forged = browser.eval(&post("/api/dead-letters/purge", false)).await;
    assert_eq!(forged[0], 403, "{forged}");
    assert!(
        forged[1].as_str().unwrap().contains("cross-site"),
        "{forged}"
    );

    browser.click("#who button").await;
    browser
        .wait_for(
            "the sign-in form again",
            "return !!document.getElementById('sign-in')",
        )
        .await;
    assert_eq!(browser.eval(read).await, 401);
    browser.close().await;
    within("server stop", server.stop()).await;
}

/// Drain and Disconnect on the workers page and Cancel on a task's page,
/// each after its confirmation, do what Admin and Tasks do.
#[tokio::test]
async fn workers_and_tasks_are_acted_on_from_their_pages() {
    let server = TestServer::start().await;
    let mut draining = TestWorker::connect(&server, WorkerOptions::id("to-drain")).await;
    let mut leaving = TestWorker::connect(&server, WorkerOptions::id("to-disconnect")).await;
    let browser = Browser::start().await;
    show(&browser, &server, "workers", "workers").await;
    browser
        .wait_for(
            "both workers",
            "return document.querySelectorAll('tr[data-worker]').length === 2",
        )
        .await;
    browser
        .click("tr[data-worker=\"to-drain\"] button:not(.danger)")
        .await;
    let question = browser.confirm_dialog().await;
    assert!(question.starts_with("Drain worker to-drain?"), "{question}");
    // A drained worker that holds nothing is sent off at once.
    let end = draining.next_event().await;
    assert!(matches!(end, Ok(None) | Err(_)), "{end:?}");
    browser
        .click("tr[data-worker=\"to-disconnect\"] button.danger")
        .await;
    let question = browser.confirm_dialog().await;
    assert!(
        question.starts_with("Disconnect worker to-disconnect"),
        "{question}"
    );
    let end = leaving.next_event().await;
    assert!(matches!(end, Ok(None) | Err(_)), "{end:?}");
    browser
        .wait_for(
            "no worker left",
            "return document.querySelectorAll('tr[data-worker]').length === 0",
        )
        .await;

    let id = server.submit("nobody-here", "cancel me").await;
    show(&browser, &server, &format!("task/{id}"), "task").await;
    browser
        .wait_for(
            "the task's Cancel button",
            &format!(
                "return !!document.querySelector('[data-task={}]') \
                     && !!document.querySelector('#main button.danger')",
                js(&id)
            ),
        )
        .await;
    browser.click("#main button.danger").await;
    let question = browser.confirm_dialog().await;
    assert!(question.starts_with("Cancel task"), "{question}");
    browser
        .wait_for(
            "the state to read cancelled",
            "const c = document.querySelector('[data-field=\"state\"]'); \
             return c && c.textContent === 'cancelled'",
        )
        .await;
    assert_eq!(server.get(&id).await.state(), v1::TaskState::Cancelled);
    browser.close().await;
    server.stop().await;
}

/// Without principals, the console answers only requests addressed to an
/// IP address or localhost: a hostile page whose name was made to resolve
/// here (DNS rebinding) gets nothing.
#[tokio::test]
async fn other_host_names_are_refused_without_principals() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let server = TestServer::start().await;
    let addr = server.metrics_addr;
    let get = |host: &'static str| async move {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request =
            format!("GET /api/queues HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        tcp.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        within("the answer", tcp.read_to_string(&mut response))
            .await
            .unwrap();
        response
    };
    assert!(get("127.0.0.1").await.starts_with("HTTP/1.1 200"));
    assert!(get("localhost:9464").await.starts_with("HTTP/1.1 200"));
    let rebound = get("attacker.example:9464").await;
    assert!(rebound.starts_with("HTTP/1.1 421"), "{rebound}");
    server.stop().await;
}

/// A broadcast's copies, one per worker, with each one's result.
#[tokio::test]
async fn broadcasts_show_each_copy_and_its_result() {
    let server = TestServer::start().await;
    let mut first = TestWorker::connect(&server, WorkerOptions::id("cache-a")).await;
    let mut second = TestWorker::connect(&server, WorkerOptions::id("cache-b")).await;
    let mut tasks = server.tasks().await;
    let reply = within(
        "broadcast",
        tasks.broadcast(v1::BroadcastRequest {
            text: "flush caches".into(),
            ..Default::default()
        }),
    )
    .await
    .unwrap()
    .into_inner();
    assert_eq!(reply.copy_count, 2);
    let copy = first.next_task().await;
    first.ack(&copy.task_id, Outcome::Done, "flushed a").await;
    server.wait_finished(&copy.task_id).await;
    let pending = second.next_task().await;

    let browser = Browser::start().await;
    show(&browser, &server, "broadcasts", "broadcasts").await;
    let rows = browser
        .wait_for(
            "both copies",
            &format!(
                "const rows = [...document.querySelectorAll('tr[data-copy]')]; \
                 return rows.length === 2 && !!document.querySelector('[data-broadcast={}]') \
                     && rows.map(r => r.textContent).sort()",
                js(&reply.broadcast_id)
            ),
        )
        .await;
    let rows: Vec<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert!(
        rows[0].starts_with("cache-a") && rows[0].contains("done") && rows[0].contains("flushed a"),
        "{rows:?}"
    );
    assert!(
        rows[1].starts_with("cache-b") && rows[1].contains("delivered"),
        "{rows:?}"
    );
    assert!(rows[1].contains(&pending.task_id), "{rows:?}");
    browser.close().await;
    server.stop().await;
}

/// Not a check: makes the README's screenshots (docs/console/*.png) from a
/// real run. `docs/console/make-screenshots.sh` runs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "writes docs/console/*.png; run by docs/console/make-screenshots.sh"]
async fn make_screenshots() {
    let server = TestServer::start().await;
    let mut workers = Vec::new();
    for (id, queues, credit) in [
        ("resizer-1", "images", 4),
        ("resizer-2", "images", 4),
        ("mailer", "mail", 2),
    ] {
        workers.push(
            TestWorker::connect(
                &server,
                WorkerOptions::id(id).queues(queues).max_in_flight(credit),
            )
            .await,
        );
    }
    // A steady trickle for the rates, some tasks held, some dead letters.
    for i in 0..40 {
        server
            .submit("images", &format!("resize img-{i}.png 800x600"))
            .await;
    }
    for i in 0..6 {
        server
            .submit("mail", &format!("send welcome mail #{i}"))
            .await;
    }
    for i in 0..3 {
        server
            .submit("reports", &format!("monthly report {i}"))
            .await;
    }
    let mut control = workers[0].control().await;
    control
        .send(contact_server::proto::ClientMsg {
            msg: "resizing 4 images".into(),
            running: 4,
            ..Default::default()
        })
        .await;
    let mut held = Vec::new();
    for worker in &mut workers {
        let task = worker.next_task().await;
        held.push(task.task_id);
    }
    let mailer = &mut workers[2];
    let task = mailer.next_task().await;
    mailer
        .ack(
            &task.task_id,
            Outcome::FailedPermanently,
            "550 mailbox unavailable",
        )
        .await;
    for _ in 0..8 {
        let task = workers[1].next_task().await;
        workers[1]
            .ack(&task.task_id, Outcome::Done, "resized")
            .await;
    }
    let browser = Browser::start().await;
    // Twenty seconds of a varying load for the overview's rates (the
    // pause is the pace of the workload, not a wait for a state).
    show(&browser, &server, "", "overview").await;
    for second in 0..20u32 {
        let burst = 5 + (second * 7) % 23;
        for i in 0..burst {
            server
                .submit("images", &format!("resize late-{second}-{i}.png"))
                .await;
            let task = workers[1].next_task().await;
            workers[1]
                .ack(&task.task_id, Outcome::Done, "resized")
                .await;
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
    let dir = common::browser::screenshot_dir();
    std::fs::create_dir_all(&dir).unwrap();
    for (page, name) in [
        ("", "overview"),
        ("queues", "queues"),
        ("workers", "workers"),
        ("dead-letters", "dead-letters"),
        (&format!("task/{}", held[0]) as &str, "task"),
    ] {
        show(&browser, &server, page, name).await;
        let png = browser.screenshot().await;
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }
    browser.close().await;
    server.stop().await;
}
