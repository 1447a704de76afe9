//! vixen-k8s against a mocked API server at the kube-rs client level (tower-test), in the style of
//! kube-rs/controller-rs' `ApiServerVerifier`: each test lists the calls that must happen, in
//! order, with what they must carry, and fails if one does not come within 3 s.

use std::time::Duration;

use http::{Request, Response};
use kube::client::Body;
use serde_json::{Value, json};
use tokio::sync::watch;
use vixen_k8s::{
    CiliumApi, Error, Journal, LeaderElector, LeaseConfig, NetworkObjects, PoolVersion, PushSignal,
};

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

fn mock() -> (kube::Client, Handle) {
    let (svc, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (kube::Client::new(svc, "vixen-system"), handle)
}

/// One expected call: method, path (and query, when given), and the answer.
struct Call {
    method: &'static str,
    path: &'static str,
    query_has: &'static [&'static str],
    status: u16,
    answer: Value,
    check: fn(&Value),
}

fn call(method: &'static str, path: &'static str, status: u16, answer: Value) -> Call {
    Call {
        method,
        path,
        query_has: &[],
        status,
        answer,
        check: |_| {},
    }
}

fn api_status(code: u16, reason: &str, message: &str) -> Value {
    json!({ "kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code, "reason": reason, "message": message })
}

/// Serves `calls` in order; returns the request bodies.
async fn verify(mut handle: Handle, calls: Vec<Call>) -> Vec<Value> {
    let mut bodies = Vec::new();
    for c in calls {
        let (req, send) = tokio::time::timeout(Duration::from_secs(3), handle.next_request())
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {} {}", c.method, c.path))
            .expect("client dropped");
        assert_eq!(req.method().as_str(), c.method, "method of {}", req.uri());
        assert_eq!(req.uri().path(), c.path);
        let query = req.uri().query().unwrap_or("").to_owned();
        for q in c.query_has {
            assert!(query.contains(q), "query {query:?} lacks {q:?}");
        }
        let bytes = req.into_body().collect_bytes().await.unwrap();
        let body: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        };
        (c.check)(&body);
        bodies.push(body);
        let resp = Response::builder()
            .status(c.status)
            .body(Body::from(serde_json::to_vec(&c.answer).unwrap()))
            .unwrap();
        send.send_response(resp);
    }
    bodies
}

const LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/vixen-system/leases/vixen";
const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/vixen-system/leases";

fn lease(holder: &str, rv: &str, renew: &str, transitions: i32) -> Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": { "name": "vixen", "namespace": "vixen-system", "resourceVersion": rv },
        "spec": { "holderIdentity": holder, "leaseDurationSeconds": 15, "renewTime": renew, "acquireTime": renew, "leaseTransitions": transitions }
    })
}

#[tokio::test]
async fn lease_absent_is_created_and_this_replica_leads() {
    let (client, handle) = mock();
    let mut el = LeaderElector::new(client, LeaseConfig::new("vixen-system", "vixen", "pod-a"));
    let rx = el.subscribe();
    let server = tokio::spawn(verify(
        handle,
        vec![
            call(
                "GET",
                LEASE,
                404,
                api_status(404, "NotFound", "leases \"vixen\" not found"),
            ),
            Call {
                check: |b| {
                    assert_eq!(b["spec"]["holderIdentity"], "pod-a");
                    assert_eq!(b["spec"]["leaseDurationSeconds"], 15);
                    assert_eq!(
                        b["metadata"]["labels"]["app.kubernetes.io/managed-by"],
                        "vixen"
                    );
                },
                ..call(
                    "POST",
                    LEASES,
                    201,
                    lease("pod-a", "1", "2026-01-01T00:00:00.000000Z", 0),
                )
            },
        ],
    ));
    assert!(el.try_acquire_or_renew().await.unwrap());
    assert!(*rx.borrow());
    server.await.unwrap();
}

#[tokio::test]
async fn lease_held_by_a_live_peer_is_left_alone() {
    let (client, handle) = mock();
    let mut el = LeaderElector::new(client, LeaseConfig::new("vixen-system", "vixen", "pod-b"));
    let server = tokio::spawn(verify(
        handle,
        vec![call(
            "GET",
            LEASE,
            200,
            lease("pod-a", "7", "2026-01-01T00:00:00.000000Z", 0),
        )],
    ));
    assert!(!el.try_acquire_or_renew().await.unwrap());
    assert!(!el.is_leader());
    server.await.unwrap();
}

#[tokio::test]
async fn lease_unchanged_for_its_duration_is_taken_over_with_its_resource_version() {
    let (client, handle) = mock();
    let mut el = LeaderElector::new(client, LeaseConfig::new("vixen-system", "vixen", "pod-b"));
    // The peer's record says 1 s; this replica must see it unchanged for 1 s by its own clock.
    let mut stale = lease("pod-a", "7", "2020-01-01T00:00:00.000000Z", 3);
    stale["spec"]["leaseDurationSeconds"] = json!(1);
    let s1 = stale.clone();
    let server = tokio::spawn(async move {
        let mut calls = vec![call("GET", LEASE, 200, s1.clone())];
        calls.push(call("GET", LEASE, 200, s1));
        calls.push(Call {
            check: |b| {
                assert_eq!(
                    b["metadata"]["resourceVersion"], "7",
                    "takeover must be conditional"
                );
                assert_eq!(b["spec"]["holderIdentity"], "pod-b");
                assert_eq!(b["spec"]["leaseTransitions"], 4);
            },
            ..call(
                "PUT",
                LEASE,
                200,
                lease("pod-b", "8", "2026-01-01T00:00:01.000000Z", 4),
            )
        });
        verify(handle, calls).await
    });
    // An old renewTime alone is not enough (clocks may differ): first sight starts the clock.
    assert!(!el.try_acquire_or_renew().await.unwrap());
    tokio::time::sleep(Duration::from_millis(1050)).await;
    assert!(el.try_acquire_or_renew().await.unwrap());
    assert!(el.is_leader());
    server.await.unwrap();
}

#[tokio::test]
async fn lost_race_on_takeover_is_not_leadership() {
    let (client, handle) = mock();
    let mut el = LeaderElector::new(client, LeaseConfig::new("vixen-system", "vixen", "pod-b"));
    let server = tokio::spawn(verify(
        handle,
        vec![
            call(
                "GET",
                LEASE,
                200,
                lease("", "7", "2026-01-01T00:00:00.000000Z", 1),
            ),
            call(
                "PUT",
                LEASE,
                409,
                api_status(409, "Conflict", "the object has been modified"),
            ),
        ],
    ));
    assert!(!el.try_acquire_or_renew().await.unwrap());
    assert!(!el.is_leader());
    server.await.unwrap();
}

#[tokio::test]
async fn holder_renews_and_releases_on_shutdown() {
    let (client, handle) = mock();
    let mut el = LeaderElector::new(client, LeaseConfig::new("vixen-system", "vixen", "pod-a"));
    let server = tokio::spawn(verify(
        handle,
        vec![
            call(
                "GET",
                LEASE,
                200,
                lease("pod-a", "5", "2026-01-01T00:00:00.000000Z", 2),
            ),
            Call {
                check: |b| {
                    assert_eq!(b["spec"]["holderIdentity"], "pod-a");
                    assert_eq!(
                        b["spec"]["leaseTransitions"], 2,
                        "a renewal is not a transition"
                    );
                    assert_ne!(b["spec"]["renewTime"], "2026-01-01T00:00:00.000000Z");
                },
                ..call(
                    "PUT",
                    LEASE,
                    200,
                    lease("pod-a", "6", "2026-01-01T00:00:02.000000Z", 2),
                )
            },
            call(
                "GET",
                LEASE,
                200,
                lease("pod-a", "6", "2026-01-01T00:00:02.000000Z", 2),
            ),
            Call {
                check: |b| {
                    assert!(b["spec"]["holderIdentity"].is_null());
                    assert_eq!(b["spec"]["leaseDurationSeconds"], 1);
                },
                ..call(
                    "PUT",
                    LEASE,
                    200,
                    lease("", "7", "2026-01-01T00:00:02.000000Z", 2),
                )
            },
        ],
    ));
    assert!(el.try_acquire_or_renew().await.unwrap());
    el.release().await.unwrap();
    assert!(!el.is_leader());
    server.await.unwrap();
}

const CM: &str = "/api/v1/namespaces/vixen-system/configmaps/vixen-state";

fn configmap(rv: &str, json: &str) -> Value {
    json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "vixen-state", "namespace": "vixen-system", "resourceVersion": rv }, "data": { "state.json": json } })
}

#[tokio::test]
async fn journal_is_resumed_then_written_with_the_version_read() {
    let (client, handle) = mock();
    let (_tx, leading) = watch::channel(true);
    let j = Journal::new(client, "vixen-system", "vixen-state", Some(leading));
    let server = tokio::spawn(verify(
        handle,
        vec![
            call("GET", CM, 200, configmap("41", r#"{"run":{"done":2}}"#)),
            Call {
                check: |b| {
                    assert_eq!(b["metadata"]["resourceVersion"], "41");
                    assert_eq!(b["data"]["state.json"], r#"{"run":{"done":3}}"#);
                },
                ..call("PUT", CM, 200, configmap("42", r#"{"run":{"done":3}}"#))
            },
            Call {
                check: |b| assert_eq!(b["metadata"]["resourceVersion"], "42"),
                ..call("PUT", CM, 409, api_status(409, "Conflict", "modified"))
            },
        ],
    ));
    assert_eq!(
        j.load().await.unwrap().as_deref(),
        Some(r#"{"run":{"done":2}}"#)
    );
    j.save(r#"{"run":{"done":3}}"#).await.unwrap();
    let err = j.save("{}").await.unwrap_err();
    assert!(matches!(err, Error::Conflict { .. }), "{err}");
    assert_eq!(err.category(), "kube_conflict");
    server.await.unwrap();
}

#[tokio::test]
async fn journal_absent_is_created_and_never_written_by_a_follower() {
    let (client, handle) = mock();
    let (tx, leading) = watch::channel(true);
    let j = Journal::new(client, "vixen-system", "vixen-state", Some(leading));
    let server = tokio::spawn(verify(
        handle,
        vec![
            call("GET", CM, 404, api_status(404, "NotFound", "not found")),
            Call {
                check: |b| assert!(b["metadata"]["resourceVersion"].is_null()),
                ..call(
                    "POST",
                    "/api/v1/namespaces/vixen-system/configmaps",
                    201,
                    configmap("1", "{}"),
                )
            },
        ],
    ));
    assert_eq!(j.load().await.unwrap(), None);
    j.save("{}").await.unwrap();
    server.await.unwrap();
    tx.send(false).unwrap();
    // No request may go out: the mock has no more answers and would time the test out.
    assert!(matches!(j.save("{}").await, Err(Error::NotLeader(_))));
}

const PUSH: &str = "/api/v1/namespaces/vixen-system/configmaps/vixen-push";

fn push_cm(rv: &str, revision: &str) -> Value {
    json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "vixen-push", "namespace": "vixen-system", "resourceVersion": rv },
            "data": { "revision": revision, "ref": "refs/heads/main", "receivedAt": "2026-01-01T00:00:00Z", "receivedBy": "pod-b" } })
}

#[tokio::test]
async fn a_standby_records_a_push_unconditionally_creating_it_the_first_time() {
    let (client, handle) = mock();
    let signal = PushSignal::new(client, "vixen-system", "vixen-push");
    let server = tokio::spawn(verify(
        handle,
        vec![
            Call {
                check: |b| {
                    assert!(
                        b["metadata"]["resourceVersion"].is_null(),
                        "last writer wins: no precondition"
                    );
                    assert_eq!(b["data"]["revision"], "c0ffee");
                    assert_eq!(b["data"]["receivedBy"], "pod-b");
                    assert_eq!(
                        b["metadata"]["labels"]["app.kubernetes.io/managed-by"],
                        "vixen"
                    );
                },
                ..call("PUT", PUSH, 404, api_status(404, "NotFound", "not found"))
            },
            call(
                "POST",
                "/api/v1/namespaces/vixen-system/configmaps",
                201,
                push_cm("5", "c0ffee"),
            ),
            call("PUT", PUSH, 200, push_cm("6", "beef")),
        ],
    ));
    signal
        .record("c0ffee", "refs/heads/main", "pod-b")
        .await
        .unwrap();
    signal
        .record("beef", "refs/heads/main", "pod-b")
        .await
        .unwrap();
    server.await.unwrap();
}

#[tokio::test]
async fn the_leader_sees_a_new_push_once_and_only_after_its_first_look() {
    let (client, handle) = mock();
    let mut signal = PushSignal::new(client, "vixen-system", "vixen-push");
    let server = tokio::spawn(verify(
        handle,
        vec![
            call("GET", PUSH, 200, push_cm("5", "old")),
            call("GET", PUSH, 200, push_cm("5", "old")),
            call("GET", PUSH, 200, push_cm("9", "new")),
            call("GET", PUSH, 200, push_cm("9", "new")),
            call("GET", PUSH, 200, push_cm("12", "newer")),
        ],
    ));
    assert_eq!(
        signal.changed().await.unwrap(),
        None,
        "the first look only remembers"
    );
    assert_eq!(signal.changed().await.unwrap(), None);
    let push = signal.changed().await.unwrap().expect("a new push");
    assert_eq!(
        (push.revision.as_str(), push.received_by.as_str()),
        ("new", "pod-b")
    );
    assert_eq!(signal.changed().await.unwrap(), None, "seen once");
    signal.forget();
    assert_eq!(
        signal.changed().await.unwrap(),
        None,
        "a new term starts from what is there"
    );
    server.await.unwrap();
}

const POOLS: &str = "/apis/cilium.io/v2alpha1/ciliumloadbalancerippools";
const L2S: &str = "/apis/cilium.io/v2alpha1/ciliuml2announcementpolicies";

fn network() -> vixen_model::NetworkFile {
    serde_yaml_ng::from_str(include_str!("../../../examples/homelab/network.yaml")).unwrap()
}

#[test]
fn pools_and_policies_are_built_from_network_yaml() {
    let objs = NetworkObjects::from_network(&network(), PoolVersion::V2Alpha1);
    assert_eq!(objs.pools.len(), 2);
    assert_eq!(
        objs.pools[0],
        json!({
            "apiVersion": "cilium.io/v2alpha1", "kind": "CiliumLoadBalancerIPPool",
            "metadata": { "name": "default", "labels": { "app.kubernetes.io/managed-by": "vixen" } },
            "spec": { "blocks": [{ "cidr": "127.0.30.0/28" }] }
        })
    );
    assert_eq!(
        objs.pools[1]["spec"]["blocks"],
        json!([{ "start": "127.0.20.200", "stop": "127.0.20.220" }])
    );
    assert_eq!(
        objs.pools[1]["spec"]["serviceSelector"],
        json!({ "matchLabels": { "vixen.dev/pool": "vlan20" } })
    );
    let l2 = &objs.l2_policies[0];
    assert_eq!(l2["apiVersion"], "cilium.io/v2alpha1");
    assert_eq!(l2["spec"]["interfaces"], json!(["^eth[0-9]+"]));
    assert_eq!(l2["spec"]["loadBalancerIPs"], true);
    assert_eq!(
        l2["spec"]["nodeSelector"]["matchExpressions"][0]["operator"],
        "DoesNotExist"
    );
    let v2 = NetworkObjects::from_network(&network(), PoolVersion::V2);
    assert_eq!(v2.pools[0]["apiVersion"], "cilium.io/v2");
    assert_eq!(
        v2.l2_policies[0]["apiVersion"], "cilium.io/v2alpha1",
        "L2 policies exist only as v2alpha1"
    );
}

#[tokio::test]
async fn cilium_objects_are_applied_conflicts_reported_and_strays_pruned() {
    let (client, handle) = mock();
    let api = CiliumApi::new(client, PoolVersion::V2Alpha1, false);
    let ok = |kind: &str, name: &str| json!({ "apiVersion": "cilium.io/v2alpha1", "kind": kind, "metadata": { "name": name } });
    let list = |names: &[&str]| {
        json!({
            "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList", "metadata": {},
            "items": names.iter().map(|n| json!({ "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": { "name": n } })).collect::<Vec<_>>(),
        })
    };
    let server = tokio::spawn(verify(
        handle,
        vec![
            Call {
                query_has: &["fieldManager=vixen"],
                check: |b| assert_eq!(b["metadata"]["name"], "default"),
                ..call(
                    "PATCH",
                    "/apis/cilium.io/v2alpha1/ciliumloadbalancerippools/default",
                    200,
                    ok("CiliumLoadBalancerIPPool", "default"),
                )
            },
            Call {
                query_has: &["fieldManager=vixen"],
                ..call(
                    "PATCH",
                    "/apis/cilium.io/v2alpha1/ciliumloadbalancerippools/vlan20",
                    409,
                    api_status(
                        409,
                        "Conflict",
                        "Apply failed with 1 conflict: conflict with \"helm\": .spec.blocks",
                    ),
                )
            },
            Call {
                query_has: &["labelSelector=app.kubernetes.io%2Fmanaged-by%3Dvixen"],
                ..call("GET", POOLS, 200, list(&["default", "vlan20", "old"]))
            },
            call(
                "DELETE",
                "/apis/cilium.io/v2alpha1/ciliumloadbalancerippools/old",
                200,
                ok("CiliumLoadBalancerIPPool", "old"),
            ),
            call(
                "PATCH",
                "/apis/cilium.io/v2alpha1/ciliuml2announcementpolicies/default",
                200,
                ok("CiliumL2AnnouncementPolicy", "default"),
            ),
            call("GET", L2S, 200, list(&["default"])),
        ],
    ));
    let report = api
        .apply(&NetworkObjects::from_network(
            &network(),
            PoolVersion::V2Alpha1,
        ))
        .await
        .unwrap();
    assert_eq!(
        report.applied,
        [
            "CiliumLoadBalancerIPPool/default",
            "CiliumL2AnnouncementPolicy/default"
        ]
    );
    assert_eq!(report.deleted, ["CiliumLoadBalancerIPPool/old"]);
    assert_eq!(report.conflicts.len(), 1);
    assert_eq!(
        report.conflicts[0].object,
        "CiliumLoadBalancerIPPool/vlan20"
    );
    assert!(report.conflicts[0].message.contains("helm"));
    assert!(
        report
            .summary()
            .contains("1 in conflict (CiliumLoadBalancerIPPool/vlan20)")
    );
    server.await.unwrap();
}

#[tokio::test]
async fn forced_apply_says_force_and_missing_crds_with_nothing_wanted_are_fine() {
    let (client, handle) = mock();
    let api = CiliumApi::new(client, PoolVersion::V2, true);
    let mut net = network();
    net.l2_policies.clear();
    net.pools.truncate(1);
    let server = tokio::spawn(verify(
        handle,
        vec![
            Call {
                query_has: &["force=true", "fieldManager=vixen"],
                ..call(
                    "PATCH",
                    "/apis/cilium.io/v2/ciliumloadbalancerippools/default",
                    200,
                    json!({ "apiVersion": "cilium.io/v2", "kind": "CiliumLoadBalancerIPPool", "metadata": { "name": "default" } }),
                )
            },
            call(
                "GET",
                "/apis/cilium.io/v2/ciliumloadbalancerippools",
                200,
                json!({ "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList", "metadata": {}, "items": [] }),
            ),
            call(
                "GET",
                L2S,
                404,
                api_status(
                    404,
                    "NotFound",
                    "the server could not find the requested resource",
                ),
            ),
        ],
    ));
    let report = api
        .apply(&NetworkObjects::from_network(&net, PoolVersion::V2))
        .await
        .unwrap();
    assert_eq!(report.applied.len(), 1);
    server.await.unwrap();
}
