//! The first-party field-map plugin built into the binary (`plugins.builtin`): installed on a
//! fresh store with no upload, usable at once, installed only once, an admin's rollback kept
//! across restarts, and a `[[plugins.load]]` file of the same name winning.

use std::time::Duration;

use serde_json::{json, Value};

use crate::common::*;
use crate::plugins::{rust_plugin, upload_ok};

fn with_builtin(dir: &std::path::Path) -> hookyard::config::Config {
    let mut config = test_config(dir);
    config.plugins.builtin = vec!["field-map".into()];
    config
}

/// Waits until no built-in install runs (the gauge the gateway keeps of them).
async fn installs_done(gw: &Api) {
    eventually(
        Duration::from_secs(60),
        "the built-in installs end",
        || async {
            (gw.metric("hookyard_plugin_installs_running").await == Some(0.0)).then_some(())
        },
    )
    .await;
}

async fn versions(gw: &Api) -> Value {
    let (status, record) = gw.admin("GET", "/admin/v1/plugins/field-map", None).await;
    assert_eq!(status, 200, "{record}");
    record
}

#[tokio::test(flavor = "multi_thread")]
async fn field_map_is_there_on_a_fresh_install_and_installed_once() {
    let dir = temp_dir();
    let config = with_builtin(dir.path());
    let gw = TestGateway::start(config.clone()).await;
    let rx = Receiver::start().await;
    // No upload: creating the webhook waits for the background install if it is still running.
    gw.create_webhook(
        json!({"name": "hr", "events": ["user.*"], "url": rx.url("/users"),
        "plugin": {"name": "field-map", "config": {"request": [
            {"api_field": "emp_id", "field": "employee_id"},
            {"api_field": "mail", "field": "email", "convert": "lower"}
        ]}}}),
    )
    .await;
    gw.post_event(
        json!({"type": "user.created", "data": {"employee_id": 7, "email": "Ada@X.org"}}),
    )
    .await;
    let got = rx.wait_for(1).await;
    assert_eq!(got[0].json(), json!({"emp_id": 7, "mail": "ada@x.org"}));
    installs_done(&gw).await;
    assert!(
        gw.metrics()
            .await
            .contains("hookyard_plugin_compilations_total 1"),
        "the first start compiles the built-in plugin once"
    );
    let record = versions(&gw).await;
    assert_eq!(record["active"], 1, "{record}");
    let built_in = record["versions"][0]["sha256"].clone();
    // An admin uploads another version and rolls forward to it.
    let mine = upload_ok(&gw, "field-map", rust_plugin("passthrough")).await;
    assert_eq!(mine, 2);
    gw.stop().await;

    // A restart with the same binary adds nothing and keeps the admin's choice.
    let gw = TestGateway::start(config).await;
    installs_done(&gw).await;
    let record = versions(&gw).await;
    assert_eq!(record["active"], 2, "{record}");
    assert_eq!(record["versions"].as_array().unwrap().len(), 2, "{record}");
    assert_eq!(record["versions"][0]["sha256"], built_in);
    assert!(
        gw.metrics()
            .await
            .contains("hookyard_plugin_compilations_total 0"),
        "a restart does not compile the built-in plugin again"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plugins_load_file_of_the_same_name_wins() {
    let dir = temp_dir();
    let mut config = with_builtin(dir.path());
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("plugins/target/wasm32-wasip2/release/passthrough.wasm");
    config.plugins.load = vec![hookyard::config::PluginFile {
        name: "field-map".into(),
        path,
    }];
    let gw = TestGateway::start(config).await;
    installs_done(&gw).await;
    let record = versions(&gw).await;
    assert_eq!(record["versions"].as_array().unwrap().len(), 1, "{record}");
    let passthrough = hex_sha256(&rust_plugin("passthrough"));
    assert_eq!(record["versions"][0]["sha256"], passthrough);
    gw.stop().await;
}

#[test]
fn an_unknown_builtin_is_a_config_error() {
    let err = hookyard::config::Config::from_layers(
        Some((
            "test".into(),
            "[plugins]\nbuiltin = [\"field-mapp\"]\n".into(),
        )),
        [],
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("field-mapp") && err.contains("field-map"),
        "{err}"
    );
}

fn hex_sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
