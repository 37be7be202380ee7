//! `MockTokenStore` (feature `mock`) stands in for a store behind `Arc<dyn TokenStore>`.
#![cfg(all(feature = "mock", feature = "conformance"))]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers outside #[test] functions"
)]

use std::sync::Arc;

use sfauth_storage::conformance::Namespace;
use sfauth_storage::{Error, ErrorKind, MockTokenStore, TokenStore};

#[tokio::test]
async fn mock_answers_as_told() {
    let ns = Namespace::new();
    let (key, record) = ns.fresh("mock");
    let mut mock = MockTokenStore::new();
    let stored = record.clone();
    mock.expect_get()
        .withf(move |asked| *asked == key)
        .times(1)
        .returning(move |_| Ok(Some(stored.clone())));
    mock.expect_put()
        .withf(|_, expected, lease| *expected == 1 && lease.is_none())
        .times(1)
        .returning(|_, _, _| Err(Error::new(ErrorKind::Conflict, "stale")));
    let store: Arc<dyn TokenStore> = Arc::new(mock);
    let got = store.get(&record.key).await.unwrap().unwrap();
    assert_eq!(got, record);
    let error = store.put(got, 1, None).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Conflict);
}
