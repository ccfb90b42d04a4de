//! The harness itself: etcd starts, serves, snapshots, and is gone after drop.

use crate::common::{put_raw, EtcdServer};

#[tokio::test]
async fn etcd_starts_serves_and_stops() {
    let server = EtcdServer::start();
    let mut client = server.client().await;
    let rev = put_raw(
        &mut client,
        b"/registry/secrets/default/a",
        b"k8s\0\x01\x02",
    )
    .await;
    assert!(rev >= 2);
    let resp = client
        .get("/registry/secrets/default/a", None)
        .await
        .unwrap();
    assert_eq!(resp.kvs()[0].value(), b"k8s\0\x01\x02");
    let snap = server.snapshot_save("s.db");
    let len = std::fs::metadata(&snap).unwrap().len();
    assert_eq!(len % 512, 32, "etcdctl snapshots carry a sha256 trailer");
    let endpoint = server.endpoint.clone();
    drop(server);
    let addr = endpoint.trim_start_matches("http://");
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "etcd still listening after drop"
    );
}
